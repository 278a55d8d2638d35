/**
 * A small pool of worker threads that verify Ed25519 signatures (Node only), so that both a
 * client's sync (a new device verifying a long topic) and a server's message posts verify on
 * every core (issue 7). Its answers are only ever used through VerifiedSignatures
 * (verified-signatures.ts): a "valid" is taken for the byte-identical triple a worker verified,
 * and everything else is verified inline, so a wrong, slow or failed pool can never make a bad
 * signature pass.
 *
 * Workers run the node provider's own ed25519Verify (strict policy, protocol spec §3.2). They
 * are started on the first batch. A worker that fails (an error, an exit) fails the batches it
 * held; the pool then stops using workers and every later batch is refused, so the caller
 * verifies inline. Workers are kept referenced only while they hold work, so an idle pool never
 * keeps a process alive.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SignatureTriple } from '../verified-signatures.ts';
import { packTriples } from './node-verify-pool-pack.ts';

interface Pending {
  resolve: (ok: boolean[]) => void;
  reject: (e: Error) => void;
  count: number;
}

interface Slot {
  worker: Worker;
  /** Triples sent and not answered yet. */
  load: number;
  pending: Map<number, Pending>;
}

export interface VerifyPoolOptions {
  /** Worker threads (default: the machine's available parallelism, at least 1). */
  threads?: number;
  /**
   * A batch not answered within this many milliseconds is refused (its signatures are then
   * verified inline), so a stuck worker never stalls the caller. Default 30 s.
   */
  timeoutMs?: number;
  /** Called once, when the first worker fails (not when the pool is closed). */
  onFailure?: (e: Error) => void;
}

interface Queued {
  triple: SignatureTriple;
  resolve: (ok: boolean) => void;
}

export class VerifyPool {
  readonly threads: number;
  private readonly timeoutMs: number;
  private readonly onFailure: ((e: Error) => void) | undefined;
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private failed: Error | null = null;
  private closed = false;
  /** verify() calls of this event-loop turn, sent as one batch (flushQueue). */
  private queue: Queued[] = [];

  constructor(o: VerifyPoolOptions = {}) {
    this.threads = Math.max(1, Math.floor(o.threads ?? availableParallelism()));
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.onFailure = o.onFailure;
  }

  /** False once a worker failed or the pool was closed: every batch is then refused. */
  get usable(): boolean {
    return this.failed === null && !this.closed;
  }

  private spawn(): Slot {
    // No execArgv: profiling or inspector flags of the parent are not the workers' business.
    const worker = new Worker(new URL('./node-verify-pool-worker.mjs', import.meta.url), { execArgv: [] });
    worker.unref();
    const slot: Slot = { worker, load: 0, pending: new Map() };
    worker.on('message', (msg: { id: number; answer?: Uint8Array; error?: string }) => {
      const p = slot.pending.get(msg.id);
      if (p === undefined) return;
      slot.pending.delete(msg.id);
      slot.load -= p.count;
      if (slot.pending.size === 0) worker.unref();
      if (msg.answer === undefined || msg.answer.length !== p.count) p.reject(new Error(`verify worker: ${msg.error ?? 'bad answer'}`));
      else p.resolve(Array.from(msg.answer, (x) => x === 1));
    });
    const fail = (e: Error) => {
      if (this.failed === null) {
        this.failed = e;
        this.onFailure?.(e);
      }
      for (const p of slot.pending.values()) p.reject(e);
      slot.pending.clear();
      slot.load = 0;
    };
    worker.on('error', (e) => fail(e instanceof Error ? e : new Error(String(e))));
    worker.on('exit', (code) => fail(new Error(`verify worker exited (${code})`)));
    return slot;
  }

  /** One answer per triple (true: valid under the strict policy). Rejects if the pool failed. */
  verifyBatch(triples: readonly SignatureTriple[]): Promise<boolean[]> {
    if (this.closed) return Promise.reject(new Error('verify pool closed'));
    if (this.failed !== null) return Promise.reject(this.failed);
    if (triples.length === 0) return Promise.resolve([]);
    while (this.slots.length < this.threads) this.slots.push(this.spawn());
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.load < slot.load) slot = s;
    const id = this.nextId++;
    const packed = packTriples(triples);
    return new Promise<boolean[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        // Late answers are dropped (the id is no longer pending).
        if (slot.pending.delete(id)) {
          slot.load -= triples.length;
          if (slot.pending.size === 0) slot.worker.unref();
          reject(new Error(`verify worker: no answer in ${this.timeoutMs} ms`));
        }
      }, this.timeoutMs);
      timer.unref();
      slot.pending.set(id, {
        resolve: (ok) => {
          clearTimeout(timer);
          resolve(ok);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        count: triples.length,
      });
      slot.load += triples.length;
      slot.worker.ref();
      try {
        slot.worker.postMessage({ id, packed: packed.buffer }, [packed.buffer]);
      } catch (e) {
        const p = slot.pending.get(id);
        slot.pending.delete(id);
        slot.load -= triples.length;
        p?.reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /**
   * One triple: true iff a worker found it valid; false if it is invalid or the pool could not
   * answer (a failed, closed or timed-out pool), i.e. "not known to be valid". Never rejects.
   * The triples of every call in one event-loop turn go to a worker as one batch (one message
   * each way instead of one per triple).
   */
  verify(triple: SignatureTriple): Promise<boolean> {
    if (!this.usable) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      if (this.queue.push({ triple, resolve }) === 1) setImmediate(() => this.flushQueue());
    });
  }

  private flushQueue(): void {
    const q = this.queue;
    this.queue = [];
    this.verifyBatch(q.map((x) => x.triple)).then(
      (ok) => q.forEach((x, i) => x.resolve(ok[i] === true)),
      () => q.forEach((x) => x.resolve(false)),
    );
  }

  /** Stops the workers; pending batches are refused (their signatures are verified inline). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failed ??= new Error('verify pool closed');
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
