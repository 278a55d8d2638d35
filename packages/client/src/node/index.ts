/** Node-only parts of the SDK: file profile store, WebSocket constructor. */
export { FileProfileStore, defaultProfileDir, type PrepareResult } from './file-store.ts';
export { NodeWebSocket } from './ws.ts';
export { VerifyPool, sharedVerifyPool, type VerifyPoolOptions } from './verify-pool.ts';
