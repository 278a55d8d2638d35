/**
 * The SQLite store with every write on a thread of its own (issue 7; docs/performance.md, "The
 * writer thread").
 *
 * better-sqlite3 is synchronous: in the plain SqliteStore a COMMIT, with its fsync, holds the
 * event loop, and under load the group commit was a fifth of the server's busy time. Here one
 * worker thread owns the connection that writes (a plain SqliteStore, with its group commit and
 * synchronous=FULL unchanged) and the event loop keeps a second connection that only reads
 * (`query_only`). Nothing about durability moves: a write's promise resolves when the writer's
 * COMMIT has returned, so an entry is acknowledged, announced and readable only once it is on
 * disk, exactly as before; WAL lets the main connection read while the writer commits.
 *
 * Every Store method is routed by ROUTES, a table the compiler holds complete: a method added to
 * Store without a route does not build, and a write routed to the reader fails at once on
 * `query_only` (the conformance suite runs against this store too).
 *
 * If the writer thread dies, the calls it held fail (their transactions were rolled back or
 * committed; a client's retry with the same idempotency key finds which) and the next write
 * starts a new thread.
 */
import { Worker } from 'node:worker_threads';
import { RendezvousError, type ErrorCode } from '@rendezvous/protocol';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.ts';
import type { Store } from './store.ts';

type Route = 'read' | 'write';

/** Where each Store method runs. `migrate` and `close` are handled by the store itself. */
const ROUTES: Record<Exclude<keyof Store, 'migrate' | 'close'>, Route> = {
  getMeta: 'read',
  setMeta: 'write',
  createPin: 'write',
  listPins: 'read',
  deletePin: 'write',
  registerWithPin: 'write',
  getUser: 'read',
  nameTaken: 'read',
  listUsers: 'read',
  deleteUser: 'write',
  addDevice: 'write',
  getDevice: 'read',
  listDevices: 'read',
  deleteDevice: 'write',
  addPushSubscription: 'write',
  listPushSubscriptions: 'read',
  usersWithPushSubscriptions: 'read',
  pushSubscriptionsOfUser: 'read',
  deletePushSubscription: 'write',
  createSession: 'write',
  getSession: 'read',
  deleteSession: 'write',
  putChallenge: 'write',
  takeChallenge: 'write',
  addPrekeys: 'write',
  countPrekeys: 'read',
  claimPrekey: 'write',
  addTopicKeys: 'write',
  countTopicKeys: 'read',
  claimTopicKey: 'write',
  addBundle: 'write',
  addKeyUpload: 'write',
  listBundles: 'read',
  ackBundles: 'write',
  getIdempotency: 'read',
  putIdempotency: 'write',
  createTopic: 'write',
  getTopic: 'read',
  append: 'write',
  getEntries: 'read',
  getUpdates: 'read',
  readHashes: 'read',
  getMembers: 'read',
  topicsOf: 'read',
  hasNonce: 'read',
  eventsSince: 'read',
  latestEventSeq: 'read',
  eventsPurgedThrough: 'read',
  purgeExpired: 'write',
  counts: 'read',
  // An online backup reads the database page by page; the reader can do that beside the writer.
  backup: 'read',
  putBlob: 'write',
  getBlob: 'read',
  blobBytesOf: 'read',
  deleteTopic: 'write',
  getServerKeys: 'read',
  putServerKeys: 'write',
  getRemoteUser: 'read',
  pinRemoteUser: 'write',
  replicationDue: 'read',
  replicationPending: 'read',
  federationDestinations: 'read',
  setReplicationCursor: 'write',
  addOutbox: 'write',
  nextOutbox: 'read',
  completeOutbox: 'write',
  failOutbox: 'write',
  putCosignature: 'write',
  listCosignatures: 'read',
  addFork: 'write',
  listForks: 'read',
};

/** The methods the writer thread runs, for its own check of what it is asked. */
export const WRITE_METHODS: readonly string[] = Object.entries(ROUTES)
  .filter(([, r]) => r === 'write')
  .map(([m]) => m)
  .concat('migrate');

/** A call's failure as it crosses the thread boundary. */
export type WireError = { code?: string; message: string; name: string; details?: Record<string, unknown>; rendezvous: boolean };

export function toWireError(e: unknown): WireError {
  if (e instanceof RendezvousError) return { rendezvous: true, code: e.code, message: e.message, name: e.name, details: e.details };
  const err = e instanceof Error ? e : new Error(String(e));
  const code = (err as { code?: unknown }).code;
  return { rendezvous: false, message: err.message, name: err.name, ...(typeof code === 'string' ? { code } : {}) };
}

function fromWireError(w: WireError): Error {
  if (w.rendezvous) return new RendezvousError(w.code as ErrorCode, w.message, w.details);
  const e = new Error(w.message);
  e.name = w.name;
  if (w.code !== undefined) (e as Error & { code?: string }).code = w.code;
  return e;
}

/**
 * A typed-array view is cloned with its whole ArrayBuffer (a 1 KiB entry sliced from a request
 * body would carry the body, or Node's 8 KiB buffer pool, across): copy views to their own bytes.
 */
function compact(v: unknown): unknown {
  if (v instanceof Uint8Array) return v.byteOffset === 0 && v.byteLength === v.buffer.byteLength ? v : v.slice();
  if (Array.isArray(v)) return v.map(compact);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = compact(x);
    return out;
  }
  return v;
}

/** The writer's answer to one call. */
export interface Reply {
  id: number;
  result?: unknown;
  error?: WireError;
}

interface Call {
  id: number;
  method: string;
  args: unknown;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  /** The thread the call went to; null while it waits in the outbox. */
  sentTo: Worker | null;
}

/** The writer thread and the calls it holds. Exported for its tests. */
export class SqliteWriter {
  private worker: Worker | null = null;
  private ready: Promise<Worker> | null = null;
  private readonly pending = new Map<number, Pending>();
  /** Calls asked for in this event-loop turn, not yet sent. */
  private outbox: Call[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly opts: SqliteStoreOptions,
  ) {}

  /** Starts the thread (opening, and by default migrating, the database) unless it runs. */
  start(): Promise<Worker> {
    if (this.ready !== null) return this.ready;
    // No execArgv: the parent's profiling or inspector flags are not the writer's business.
    const worker = new Worker(new URL('./sqlite-writer-worker.mjs', import.meta.url), {
      execArgv: [],
      workerData: { path: this.path, opts: this.opts },
    });
    this.worker = worker;
    worker.unref();
    const ready = new Promise<Worker>((resolve, reject) => {
      const onError = (e: Error) => settle(e);
      const onExit = (code: number) => settle(new Error(`the SQLite writer thread exited with code ${code} while opening ${this.path}`));
      const onFirst = (msg: { ready?: true; error?: WireError }) => settle(msg.ready === true ? null : fromWireError(msg.error!));
      const settle = (e: Error | null) => {
        worker.off('message', onFirst).off('error', onError).off('exit', onExit);
        if (e !== null) return reject(e);
        worker.on('message', (replies: Reply[]) => this.answer(replies));
        worker.on('error', (err) => this.lost(worker, err));
        worker.on('exit', (code) => this.lost(worker, new Error(`the SQLite writer thread exited with code ${code}`)));
        resolve(worker);
      };
      worker.on('message', onFirst).on('error', onError).on('exit', onExit);
    });
    this.ready = ready;
    ready.catch(() => {
      if (this.worker === worker) {
        this.worker = null;
        this.ready = null;
      }
    });
    return ready;
  }

  call(method: string, args: unknown[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, sentTo: null });
      // The calls of one event-loop turn cross in one message: a message costs a clone and a
      // wake-up on each side, and under load a turn holds dozens of appends.
      this.outbox.push({ id, method, args: compact(args) });
      if (this.outbox.length === 1) setImmediate(() => void this.send());
    });
  }

  /** Sends the outbox to the thread (starting one if none runs). */
  private async send(): Promise<void> {
    const calls = this.outbox;
    this.outbox = [];
    if (calls.length === 0) return;
    let worker: Worker;
    try {
      worker = await this.start();
    } catch (e) {
      for (const c of calls) this.settle(c.id, e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const sent = (c: Call) => {
      const p = this.pending.get(c.id);
      if (p !== undefined) p.sentTo = worker;
    };
    try {
      worker.postMessage(calls);
      calls.forEach(sent);
    } catch {
      // An argument that cannot be cloned (a function, say) is a programming error. Sent one by
      // one, only that call fails, and the error goes to its caller instead of out of this
      // detached send.
      for (const c of calls) {
        try {
          worker.postMessage([c]);
          sent(c);
        } catch (e) {
          this.settle(c.id, e instanceof Error ? e : new Error(String(e)));
        }
      }
    }
    worker.ref();
  }

  private settle(id: number, error: Error | null, result?: unknown): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    if (error !== null) p.reject(error);
    else p.resolve(result);
  }

  private answer(replies: Reply[]): void {
    for (const r of replies) this.settle(r.id, r.error === undefined ? null : fromWireError(r.error), r.result);
    // An idle writer does not keep the process alive; a closing one does, until it has exited.
    if (this.pending.size === 0 && !this.closed) this.worker?.unref();
  }

  /**
   * The thread failed or exited: fail the calls it held (calls still in the outbox were never
   * sent and go to the next thread); the next send starts a new thread.
   */
  private lost(worker: Worker, e: Error): void {
    if (this.worker === worker) {
      this.worker = null;
      this.ready = null;
    }
    for (const [id, p] of this.pending) if (p.sentTo === worker) this.settle(id, e);
  }

  /** Stops the thread at once, as a crash would (its tests use this). */
  async terminate(): Promise<void> {
    await this.worker?.terminate();
  }

  /** Sends what was asked for, lets the thread answer it and close its connection, and waits for it to exit. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.send();
    if (this.ready === null) return;
    let running: Worker;
    try {
      running = await this.ready;
    } catch {
      return;
    }
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.ref();
    running.postMessage([{ id: 0, method: 'close', args: [] }]);
    await exited;
  }
}

/**
 * Opens the database at `path` (a file: an in-memory database cannot be shared between
 * threads) with its writes on a worker thread. The writer opens first, so it applies any
 * migrations before the reader looks at the schema.
 */
export async function openThreadedSqliteStore(path: string, opts: SqliteStoreOptions = {}): Promise<Store> {
  if (path === ':memory:' || path === '') throw new Error('a threaded SQLite store needs a database file');
  const writer = new SqliteWriter(path, opts);
  await writer.start();
  let reader: SqliteStore;
  try {
    reader = await SqliteStore.open(path, { busyTimeoutMs: opts.busyTimeoutMs, migrate: false, queryOnly: true });
  } catch (e) {
    await writer.close();
    throw e;
  }
  const store: Record<string, unknown> = {
    migrate: () => writer.call('migrate', []),
    close: async () => {
      await writer.close();
      await reader.close();
    },
  };
  for (const [method, route] of Object.entries(ROUTES)) {
    const m = method as keyof typeof ROUTES;
    store[m] = route === 'read' ? (reader[m] as (...a: unknown[]) => unknown).bind(reader) : (...args: unknown[]) => writer.call(m, args);
  }
  return store as unknown as Store;
}
