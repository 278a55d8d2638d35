/**
 * A small pool of worker threads that verify Ed25519 signatures (Node only): the
 * SignatureVerifier a Node client gives its sync (ClientOptions.signatureVerifier), so that a
 * new device verifies a long topic on every core (issue 7). See page-verify.ts for how its
 * answers are used, and why a wrong, slow or failed pool can never make a bad signature pass:
 * the mirror takes a "valid" only for the byte-identical triple a worker verified, and
 * verifies everything else inline.
 *
 * Workers run the node provider's own ed25519Verify (strict policy, protocol spec §3.2). A
 * worker that fails (an error, an exit) fails the batches it held; the pool then stops using
 * workers and every later batch is refused, so the mirror verifies inline. Workers are kept
 * referenced only while they hold work, so an idle pool never keeps a process alive.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SignatureVerifier } from '../page-verify.ts';
import type { SignatureTriple } from '../verified-signatures.ts';
import { packTriples } from './verify-pack.ts';

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
   * verified inline), so a stuck worker never stalls a sync. Default 30 s.
   */
  timeoutMs?: number;
}

export class VerifyPool implements SignatureVerifier {
  readonly threads: number;
  private readonly timeoutMs: number;
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private failed: Error | null = null;
  private closed = false;

  constructor(o: VerifyPoolOptions = {}) {
    this.threads = Math.max(1, Math.floor(o.threads ?? availableParallelism()));
    this.timeoutMs = o.timeoutMs ?? 30_000;
    for (let i = 0; i < this.threads; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    // No execArgv: profiling or inspector flags of the parent are not the workers' business.
    const worker = new Worker(new URL('./verify-worker.mjs', import.meta.url), { execArgv: [] });
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
      this.failed ??= e;
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

  /** Stops the workers; pending batches are refused (their signatures are verified inline). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failed ??= new Error('verify pool closed');
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

let shared: VerifyPool | null = null;

/** One pool per process, made on first use (idle workers are unreferenced and cost no CPU). */
export function sharedVerifyPool(): VerifyPool {
  return (shared ??= new VerifyPool());
}
