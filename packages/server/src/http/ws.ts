/**
 * The device WebSocket (docs/server.md §Events): `GET /v1/ws?after=CURSOR`, one per device
 * session, streaming the same event batches as `GET /v1/events` as they happen.
 *
 * Authentication: a session token in the `Authorization: Bearer` header of the upgrade, or,
 * for browsers that cannot set headers, in a first message `{"type":"auth","token":…}` within
 * AUTH_TIMEOUT_MS. Either way a bad token is the close code 4001.
 *
 * Delivery reads the store: the connection reads every event after its cursor, sends it, and
 * waits for a bus signal that concerns it before reading again. A batch is sent only after the
 * previous one was written to the socket, so a slow reader holds at most one batch in memory
 * instead of an unbounded queue. Events carry their sequence numbers; the client resumes with
 * the last one it processed.
 *
 * The shortcut (events.ts LiveCommit): a connection that is caught up — it has read the store
 * since it subscribed, is not reading now, and the bus says every earlier event was announced
 * (`inOrder`) — sends an append's shared batch as it is, without reading anything. That batch
 * is what the store read would return: the commit's entry events, for a user whose membership
 * the commit did not change (those read the store). A connection whose socket has more than
 * MAX_BUFFERED unsent bytes reads the store instead, which waits for each write: the shortcut
 * never queues without bound.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { RendezvousError, isRendezvousError, toHex } from '@rendezvous/protocol';
import type { Context, ServerEvent } from '../context.ts';
import * as accounts from '../accounts.ts';
import { readEvents } from '../events.ts';
import { LIMITS } from '../limits.ts';

export const WS_PATH = '/v1/ws';
/** Client frames are small control messages; posts will share the message envelope cap. */
export const WS_MAX_PAYLOAD = LIMITS.maxSmallBodyBytes;
const AUTH_TIMEOUT_MS = 10_000;
const HEARTBEAT_MS = 30_000;
const MAX_CONNECTIONS_PER_DEVICE = 4;
/** Unsent bytes on a socket above which the shortcut stops and the connection reads the store. */
const MAX_BUFFERED = 1 << 20;

/** Close codes (RFC 6455 §7.4.2: 4000–4999 are for applications). */
export const CloseCode = {
  goingAway: 1001,
  policy: 1008,
  authFailed: 4001,
  revoked: 4003,
  tooMany: 4029,
} as const;

export interface LiveDelivery {
  /** Number of open, authenticated connections. */
  connections(): number;
  /** Whether the device has an open, authenticated connection (push skips it, push.ts). */
  isConnected(deviceId: string): boolean;
  /** Closes every connection with 1001 (server shutdown). */
  close(): Promise<void>;
}

function parseCursor(url: URL): number | null {
  const v = url.searchParams.get('after');
  if (v === null) return 0;
  return /^[0-9]{1,15}$/.test(v) ? Number(v) : null;
}

function reject(socket: Duplex, status: number, err: RendezvousError): void {
  const body = JSON.stringify({ error: err.toJSON() });
  socket.end(
    `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Bad Request'}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function attachWebSocket(http: HttpServer, ctx: Context): LiveDelivery {
  const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD, perMessageDeflate: false });
  const perDevice = new Map<string, number>();
  let open = 0;
  // Everything written before live delivery starts counts as announced (EventBus.start); every
  // connection's first store read comes after this.
  const started = ctx.store.latestEventSeq().then(
    (seq) => ctx.events.start(seq),
    // Without a start every signal reads the store: slower, never wrong.
    (err: unknown) => ctx.log.warn({ err }, 'live delivery: could not read the latest event; every connection reads the store'),
  );

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== WS_PATH) return reject(socket, 404, new RendezvousError('request.not_found'));
    const cursor = parseCursor(url);
    if (cursor === null) return reject(socket, 400, new RendezvousError('request.bad_field', 'after: expected a sequence number', { field: 'after' }));
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    const authed = m?.[1] === undefined ? Promise.resolve(null) : accounts.authenticate(ctx, m[1]);
    authed.then(
      (caller) => wss.handleUpgrade(req, socket, head, (ws) => void serve(ws, caller, cursor)),
      // Upgrade, then close with 4001: a WebSocket client (browsers above all) never sees the
      // status of a refused upgrade, only 1006, which looks like a network failure to retry.
      () =>
        wss.handleUpgrade(req, socket, head, (ws) => {
          ws.on('error', () => undefined);
          ws.close(CloseCode.authFailed, 'session token is unknown, expired or revoked');
        }),
    );
  });

  async function serve(ws: WebSocket, preAuthed: accounts.Caller | null, after: number): Promise<void> {
    // Protocol errors (an oversize frame: 1009, bad framing: 1002) close the socket; without a
    // listener `ws` would rethrow them and one bad client would take the process down.
    ws.on('error', (e) => ctx.log.debug({ err: e.message }, 'websocket protocol error'));
    const caller = preAuthed ?? (await firstMessageAuth(ws));
    if (caller === null) return;
    const count = perDevice.get(caller.deviceId) ?? 0;
    if (count >= MAX_CONNECTIONS_PER_DEVICE) {
      ws.close(CloseCode.tooMany, 'too many connections for this device');
      return;
    }
    perDevice.set(caller.deviceId, count + 1);
    open++;
    ctx.metrics.connectedDevices.inc();

    let cursor = after;
    let pumping = false;
    let again = false;
    let closed = false;
    // The bus generation of the last store read completed after the subscription (null: none
    // yet): the shortcut applies only while it is the bus's current one.
    let caughtUp: number | null = null;
    const pump = async () => {
      if (pumping) {
        again = true;
        return;
      }
      pumping = true;
      const generation = ctx.events.generation;
      try {
        do {
          again = false;
          for (;;) {
            const batch = await readEvents(ctx, caller, cursor);
            if (closed || (batch.events.length === 0 && batch.resync === undefined)) break;
            await new Promise<void>((resolve, reject) => ws.send(JSON.stringify({ type: 'events', ...batch }), (e) => (e ? reject(e) : resolve())));
            ctx.metrics.liveBatches.inc({ path: 'store' });
            cursor = batch.cursor;
          }
        } while (again && !closed);
        caughtUp = generation;
      } catch (e) {
        if (!closed) {
          ctx.log.warn({ err: e, deviceId: caller.deviceId }, 'live delivery failed; closing the connection');
          ws.close(1011, 'internal error');
        }
      } finally {
        pumping = false;
      }
    };
    const tokenHash = toHex(caller.tokenHash);
    const off = ctx.events.onDevice(caller.user, caller.deviceId, (e: ServerEvent, inOrder: boolean) => {
      if (closed) return;
      if (e.kind === 'device-removed') ws.close(CloseCode.revoked, 'device removed');
      else if (e.kind === 'session-ended') {
        if (e.tokenHash === tokenHash) ws.close(CloseCode.revoked, 'session ended');
      } else if (e.kind === 'entry' && e.live !== undefined && inOrder && caughtUp === ctx.events.generation && !pumping && !e.live.changed.has(caller.user) && ws.bufferedAmount <= MAX_BUFFERED) {
        // Already read from the store (the read ran between the commit and this signal).
        if (cursor >= e.live.lastEntrySeq) return;
        if (cursor >= e.live.first) return void pump();
        ws.send(e.live.frame(), { binary: false }, (err) => {
          if (err && !closed) ctx.log.debug({ err: err.message, deviceId: caller.deviceId }, 'live delivery: send failed');
        });
        ctx.metrics.liveBatches.inc({ path: 'shared' });
        cursor = e.live.lastEntrySeq;
      } else void pump();
    });
    // Heartbeat: drop peers that stopped answering, and sessions that expired or were revoked.
    let alive = true;
    ws.on('pong', () => (alive = true));
    const heartbeat = setInterval(() => {
      if (!alive) return ws.terminate();
      alive = false;
      ws.ping();
      ctx.store.getSession(caller.tokenHash, ctx.now()).then(
        (s) => s === null && ws.close(CloseCode.revoked, 'session expired or revoked'),
        () => undefined,
      );
    }, HEARTBEAT_MS);
    heartbeat.unref();
    ws.on('message', () => {
      // Nothing to say after authentication yet; frames are read only to enforce maxPayload.
    });
    ws.on('close', () => {
      closed = true;
      off();
      clearInterval(heartbeat);
      open--;
      ctx.metrics.connectedDevices.dec();
      const n = (perDevice.get(caller.deviceId) ?? 1) - 1;
      if (n === 0) perDevice.delete(caller.deviceId);
      else perDevice.set(caller.deviceId, n);
    });
    ws.send(JSON.stringify({ type: 'ready', user: caller.user, deviceId: caller.deviceId, cursor }));
    await started;
    await pump();
  }

  function firstMessageAuth(ws: WebSocket): Promise<accounts.Caller | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        ws.close(CloseCode.authFailed, 'authentication timed out');
        resolve(null);
      }, AUTH_TIMEOUT_MS);
      ws.once('message', (data) => {
        clearTimeout(timer);
        let token: unknown;
        try {
          const msg = JSON.parse(String(data)) as { type?: unknown; token?: unknown };
          token = msg.type === 'auth' ? msg.token : undefined;
        } catch {
          token = undefined;
        }
        if (typeof token !== 'string') {
          ws.close(CloseCode.authFailed, 'expected {"type":"auth","token":…}');
          return resolve(null);
        }
        accounts.authenticate(ctx, token).then(resolve, () => {
          ws.close(CloseCode.authFailed, 'session token is unknown, expired or revoked');
          resolve(null);
        });
      });
      ws.once('close', () => {
        clearTimeout(timer);
        resolve(null);
      });
    });
  }

  return {
    connections: () => open,
    isConnected: (deviceId) => perDevice.has(deviceId),
    async close() {
      for (const ws of wss.clients) ws.close(CloseCode.goingAway, 'server shutting down');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
