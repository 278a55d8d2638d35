/**
 * Starting and stopping a Rendezvous server (docs/server.md §Running): opens the store, loads
 * or creates the server key and the admin token, builds the context and the HTTP app, listens,
 * and shuts down gracefully (stop accepting, finish in-flight requests, close the store).
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { fromBase64url, isServerName, toBase64url, utf8, type CryptoProvider } from '@rendezvous/protocol';
import { nodeCrypto } from '@rendezvous/protocol/crypto/node';
import { VerifyPool } from '@rendezvous/protocol/crypto/node-verify-pool';
import { createContext, type Context, type ContextOptions } from './context.ts';
import { createApp } from './http/app.ts';
import { attachWebSocket } from './http/ws.ts';
import { startJanitor } from './janitor.ts';
import { startFederation } from './federation/deliveries.ts';
import { Push, type PushOptions } from './push.ts';
import { openSqliteStore } from './storage/sqlite.ts';
import { openThreadedSqliteStore } from './storage/sqlite-threaded.ts';
import { openFsBlobStore } from './storage/blobs.ts';
import type { Store } from './storage/store.ts';
import type { FederationOptions } from './federation/federation.ts';
import { finishInterruptedRotation, initServerKeys } from './federation/keys.ts';

export const VERSION = '0.1.0';

export interface ServerConfig {
  /** Data directory: database, server key, file blobs (`blobs/`). */
  dataDir: string;
  host: string;
  port: number;
  /** Server name: the part after '@' in user ids; default `host:port` on loopback. */
  name?: string;
  /** Explicit admin token (automation); otherwise one is generated on first start. */
  adminToken?: string;
  /** Server signing key seed (base64url), overriding the key file. */
  serverKey?: string;
  logLevel?: string;
  /** Where first-start secrets (the generated admin token) are shown. Default: stdout. */
  announce?: (line: string) => void;
  crypto?: CryptoProvider;
  now?: () => number;
  /** Origins whose pages may call the API (CORS); default every origin (docs/server.md §CORS). */
  corsOrigins?: '*' | string[];
  /** Take the client address from X-Forwarded-For when the peer is a proxy on loopback (§Behind TLS). */
  trustProxy?: boolean;
  /** Rate-limit overrides (config file `rates`: `{"register": [10, 60000]}`). */
  rates?: ContextOptions['rates'];
  /** File caps (`{"maxBlobBytes": …, "blobBytesPerUser": …}`). */
  limits?: ContextOptions['limits'];
  /**
   * Push (docs/server.md §Push): `{"contact": "mailto:…", "coalesceMs": 2000, "apns": {…}, "fcm": {…}, …}`.
   * `allowInsecure: true` (http and private/loopback endpoints) is for development and tests only.
   */
  push?: PushOptions;
  /**
   * Federation (docs/server.md §Federation (operators)): `{"peers": {"beta.example": "https://…"}, …}`.
   * `allowPrivate` and `testing` are for development and tests only.
   */
  federation?: FederationOptions;
  /**
   * Worker threads that verify message signatures before a post takes its topic's lock (issue 7;
   * every check still runs on the main thread): 0 verifies inline. Default 1 (0 on a single-core
   * machine): the main thread is the bottleneck and needs a core of its own.
   */
  verifyThreads?: number;
  /**
   * SQLite writes on a thread of their own (storage/sqlite-threaded.ts), so a COMMIT's fsync does
   * not hold the event loop (issue 7). Default on (off on a single-core machine, where the thread
   * would only compete with the event loop for the one core).
   */
  writerThread?: boolean;
}

/** The default of ServerConfig.verifyThreads. */
export function defaultVerifyThreads(): number {
  return availableParallelism() > 1 ? 1 : 0;
}

export interface RunningServer {
  url: string;
  name: string;
  ctx: Context;
  /** The push dispatcher (docs/server.md §Push). */
  push: Push;
  close(): Promise<void>;
}

/** Redacts anything that could be a secret, whatever a log call is handed. */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  const redact = ['token', 'pin', 'adminToken', 'authorization', 'headers.authorization', '*.token', '*.pin', 'seed', '*.seed'];
  return pino({ level, redact: { paths: redact, censor: '[redacted]' }, base: { service: 'rendezvous' } }, destination);
}

function loadServerKey(dataDir: string, explicit: string | undefined, crypto: CryptoProvider): Uint8Array {
  if (explicit !== undefined) {
    const seed = fromBase64url(explicit);
    if (seed.length !== 32) throw new Error('RENDEZVOUS_SERVER_KEY must be a 32-byte base64url seed');
    return seed;
  }
  const path = join(dataDir, 'server.key');
  if (existsSync(path)) {
    const seed = fromBase64url(readFileSync(path, 'utf8').trim());
    if (seed.length !== 32) throw new Error(`${path} is not a server key: restore it from a backup or remove it to make a new one`);
    return seed;
  }
  const seed = new Uint8Array(randomBytes(32));
  writeFileSync(path, toBase64url(seed) + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
  void crypto;
  return seed;
}

async function initAdminToken(ctx: Context, explicit: string | undefined, announce: (line: string) => void): Promise<void> {
  const hash = (t: string) => toBase64url(ctx.crypto.sha256(utf8(t)));
  if (explicit !== undefined) {
    if (explicit.length < 16) throw new Error('RENDEZVOUS_ADMIN_TOKEN must be at least 16 characters');
    await ctx.store.setMeta('admin_token_sha256', hash(explicit));
    return;
  }
  if ((await ctx.store.getMeta('admin_token_sha256')) !== null) return;
  const token = toBase64url(ctx.random(32));
  await ctx.store.setMeta('admin_token_sha256', hash(token));
  announce(`admin token (shown once; only its hash is stored): ${token}`);
  announce('  keep it safe, e.g. export RENDEZVOUS_ADMIN_TOKEN=<token> for `rendezvous admin` commands');
}

export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const crypto = config.crypto ?? nodeCrypto;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const log = createLogger(config.logLevel ?? 'info');
  const dbFile = join(config.dataDir, 'rendezvous.db');
  const store: Store = (config.writerThread ?? availableParallelism() > 1) ? await openThreadedSqliteStore(dbFile) : await openSqliteStore(dbFile);
  await store.migrate();

  const name = config.name ?? `localhost:${config.port}`;
  if (!isServerName(name)) throw new Error(`server name "${name}" is not a valid lowercase DNS name[:port]`);
  const storedName = await store.getMeta('server_name');
  if (storedName !== null && storedName !== name) {
    throw new Error(`this data directory belongs to server "${storedName}", not "${name}": pass --name ${storedName}`);
  }
  if (storedName === null) await store.setMeta('server_name', name);

  if (config.serverKey === undefined) await finishInterruptedRotation(config.dataDir, store, crypto);
  const serverSeed = loadServerKey(config.dataDir, config.serverKey, crypto);
  const blobs = await openFsBlobStore(join(config.dataDir, 'blobs'));
  const verifyThreads = config.verifyThreads ?? defaultVerifyThreads();
  if (!Number.isSafeInteger(verifyThreads) || verifyThreads < 0) throw new Error('verifyThreads must be a whole number ≥ 0');
  // Workers start on the first message posted; closed with the server.
  const verifyPool =
    verifyThreads > 0
      ? new VerifyPool({
          threads: verifyThreads,
          timeoutMs: 2_000,
          onFailure: (e) => log.warn({ error: e.message }, 'verify pool: a worker failed; message signatures are verified on the main thread from now on'),
        })
      : null;
  const ctx = createContext({
    name,
    serverSeed,
    crypto,
    store,
    blobs,
    log,
    version: VERSION,
    now: config.now,
    rates: config.rates,
    limits: config.limits,
    serverKeySource: config.serverKey !== undefined ? { kind: 'env' } : { kind: 'file', path: join(config.dataDir, 'server.key') },
    federation: config.federation,
    verifyPool,
  });
  try {
    await initServerKeys(ctx);
  } catch (e) {
    await verifyPool?.close();
    await store.close();
    throw e;
  }
  if (config.federation?.allowPrivate === true) {
    log.warn('federation: allowPrivate is on: discovered servers may resolve to private and loopback addresses (development only)');
  }
  if (config.federation?.testing !== undefined) log.warn({ testing: config.federation.testing }, 'federation: testing hooks are set (tests only)');
  // Before the admin token is announced: a push misconfiguration (a key file, an endpoint) stops the start first.
  const push = await Push.create(ctx, config.push);
  await initAdminToken(ctx, config.adminToken, config.announce ?? ((l) => console.log(l)));

  if (config.push?.allowInsecure === true) log.warn('push: allowInsecure is on: http and private-address push endpoints are accepted (development only)');
  log.info({ providers: push.kinds }, 'push providers');

  let ready = true;
  const app = createApp(ctx, { isReady: () => ready, trustProxy: config.trustProxy ?? false, corsOrigins: config.corsOrigins ?? '*', push });
  const http: HttpServer = createServer(
    // Bodies have their own limits (LIMITS.bodyTimeoutMs, uploadIdleMs); the request timeout
    // only bounds the longest upload.
    { requestTimeout: 3_600_000, headersTimeout: 15_000, keepAliveTimeout: 5_000 },
    getRequestListener(app.fetch),
  );
  http.maxHeadersCount = 100;
  const live = attachWebSocket(http, ctx);
  push.start(live.isConnected);
  const stopJanitor = startJanitor(ctx);
  // Outbound federation (protocol §17.6): resumes what was left undelivered before a restart.
  const stopFederation = await startFederation(ctx);
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.port, config.host, () => resolve());
  });
  const addr = http.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ url, name }, 'listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    name,
    ctx,
    push,
    close() {
      closing ??= (async () => {
        ready = false;
        stopJanitor();
        stopFederation();
        await live.close();
        await push.close();
        // Stop accepting, let in-flight requests finish, then drop idle keep-alive sockets.
        const done = new Promise<void>((resolve) => http.close(() => resolve()));
        http.closeIdleConnections();
        const timer = setTimeout(() => http.closeAllConnections(), 10_000);
        await done;
        clearTimeout(timer);
        await verifyPool?.close();
        await store.close();
        log.info('stopped');
      })();
      return closing;
    },
  };
}
