/**
 * The SQLite writer thread (sqlite-threaded.ts): owns the connection that writes, a plain
 * SqliteStore, and runs the write methods it is sent, in the order they arrive. Calls that
 * arrive together share a group commit (SqliteStore.grouped), as they did on the event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.ts';
import { WRITE_METHODS, toWireError, type Reply } from './sqlite-threaded.ts';

const port = parentPort!;
const { path, opts } = workerData as { path: string; opts: SqliteStoreOptions };
const writes = new Set(WRITE_METHODS);

let store: SqliteStore;
try {
  store = await SqliteStore.open(path, opts);
} catch (e) {
  port.postMessage({ error: toWireError(e) });
  process.exit(1);
}
port.postMessage({ ready: true });

/** Answers ready to go back, sent together once the current microtasks have run. */
let replies: Reply[] = [];
function sendReplies(): void {
  if (replies.length === 0) return;
  const out = replies;
  replies = [];
  try {
    port.postMessage(out);
  } catch (e) {
    // A result that cannot be cloned is a programming error; its caller hears of it.
    port.postMessage(out.map((r) => ({ id: r.id, error: toWireError(e) })));
  }
}
function reply(r: Reply): void {
  replies.push(r);
  // Queued after the settle callbacks a group commit has just queued, so a group's answers
  // go back in one message.
  if (replies.length === 1) queueMicrotask(sendReplies);
}

/** Calls running (a group commit may still be waiting for its turn). */
const running = new Set<Promise<void>>();

async function close(): Promise<void> {
  // Every call sent before `close` is answered first; then the store closes.
  await Promise.allSettled([...running]);
  sendReplies();
  await store.close();
  port.close();
}

port.on('message', (calls: { id: number; method: string; args: unknown[] }[]) => {
  for (const c of calls) {
    if (c.method === 'close') {
      void close();
      return;
    }
    if (!writes.has(c.method)) {
      reply({ id: c.id, error: toWireError(new Error(`the writer thread does not run ${c.method}`)) });
      continue;
    }
    const run = (store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[c.method]!;
    const p = run.apply(store, c.args).then(
      (result) => reply({ id: c.id, result }),
      (e: unknown) => reply({ id: c.id, error: toWireError(e) }),
    );
    running.add(p);
    void p.finally(() => running.delete(p));
  }
});
