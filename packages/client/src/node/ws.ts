/**
 * The WebSocket for ServerApi in Node: the `ws` package, which takes `{headers}` so live
 * delivery authenticates on the upgrade (docs/server.md §Events and the WebSocket) instead of
 * with a first frame. `new ServerApi({ baseUrl, WebSocket: NodeWebSocket })`.
 */
import { WebSocket } from 'ws';
import type { WebSocketConstructor } from '../api.ts';

export const NodeWebSocket: WebSocketConstructor = WebSocket;
export default NodeWebSocket;
