/**
 * Verifying a page of log entries with the message signatures checked ahead, in parallel
 * (issue 7: a new device syncing a long topic spends most of its time in Ed25519).
 *
 * A message's signature covers the root of the log at its head size, so it can only be checked
 * against a log. `planSignatureJobs` computes, for the messages of a page that follow the
 * mirror's log without a gap, what `checkMessage` will verify: the sender's key in the mirror's
 * current state, and messageSignedContent over the root of a scratch copy of the log extended by
 * the page's leaves. These are guesses: if one is wrong (an update in between changes the
 * state, an entry is malformed, a server sent something else), the triple simply never matches
 * what the mirror asks about, and the mirror verifies that signature inline.
 *
 * A `SignatureVerifier` (a worker pool in Node: the protocol package's VerifyPool, through
 * node/verify-pool.ts) verifies the triples; the mirror then accepts every entry in order, on the
 * caller's thread, with every check it always makes, and only a byte-identical triple that
 * verified as valid skips the Ed25519 call (VerifiedSignatures, protocol verified-signatures.ts).
 *
 * Pure: no I/O; the verifier is injected.
 */
import {
  MemoryLog,
  decodeLogEntryView,
  decodeMessageView,
  entryLeafHash,
  messageSignedContent,
  storedHashesForLeafHash,
  treeHash,
  type CryptoProvider,
  type HashReader,
  type TopicState,
} from '@rendezvous/protocol';
import type { SignatureTriple } from '@rendezvous/protocol';

/** Verifies Ed25519 signatures (the provider's strict policy, protocol spec §3.2), in bulk. */
export interface SignatureVerifier {
  /** How many threads verify (for reports). */
  readonly threads: number;
  /**
   * One answer per triple, in order: true iff `crypto.ed25519Verify(publicKey, message,
   * signature)` of the pinned policy is true. May reject (the caller then verifies inline).
   */
  verifyBatch(triples: readonly SignatureTriple[]): Promise<boolean[]>;
}

/** A page entry as the server API returns it. */
export interface PageEntry {
  index: number;
  entry: Uint8Array;
}

export interface PlannedJob {
  /** Position in the page. */
  at: number;
  triple: SignatureTriple;
}

/** The mirror's log, extended by leaves that are not its own (scratch, never the mirror's). */
class ScratchLog implements HashReader {
  private readonly extra: Uint8Array[] = [];
  private readonly baseCount: number;
  private n: number;

  constructor(
    private readonly h: CryptoProvider,
    private readonly base: MemoryLog,
  ) {
    this.baseCount = base.storedCount;
    this.n = base.size;
  }

  get size(): number {
    return this.n;
  }

  readHashes(indexes: number[]): Uint8Array[] {
    const fromBase = indexes.filter((i) => i < this.baseCount);
    const b = fromBase.length === 0 ? [] : this.base.readHashes(fromBase);
    let k = 0;
    return indexes.map((i) => {
      const x = i < this.baseCount ? b[k++] : this.extra[i - this.baseCount];
      if (x === undefined) throw new Error(`scratch log: stored hash ${i} missing`);
      return x;
    });
  }

  append(leaf: Uint8Array): void {
    for (const x of storedHashesForLeafHash(this.h, this.n, leaf, this)) this.extra.push(x);
    this.n++;
  }

  private readonly roots = new Map<number, Uint8Array>();

  root(size: number): Uint8Array {
    if (size <= this.base.size) return this.base.root(size);
    let r = this.roots.get(size);
    if (r === undefined) this.roots.set(size, (r = treeHash(this.h, size, this)));
    return r;
  }
}

/**
 * The signatures `checkMessage` would verify for the page's entries from `from` on, as long as
 * they follow the log (index = log size) and are messages: planning stops before the first
 * update (its state changes who may sign; plan again once the mirror has accepted it), before
 * an entry that is not next in the log, and before anything that does not decode. Messages
 * that checkMessage rejects before it reaches the signature get no job.
 *
 * Returns the jobs and `end`, the page position where planning stopped (entries [from, end)
 * are all messages; entry `end`, if any, is an update or an entry to accept without a plan).
 */
export function planSignatureJobs(
  crypto: CryptoProvider,
  topicId: Uint8Array,
  log: MemoryLog,
  state: TopicState | null,
  page: readonly PageEntry[],
  from: number,
  onJob?: (job: PlannedJob) => void,
): { jobs: PlannedJob[]; end: number } {
  const jobs: PlannedJob[] = [];
  if (state === null) return { jobs, end: from };
  const scratch = new ScratchLog(crypto, log);
  let at = from;
  for (; at < page.length; at++) {
    const { index, entry } = page[at]!;
    if (index !== scratch.size) break;
    let m;
    try {
      const e = decodeLogEntryView(entry);
      if (e.type !== 'message') break;
      m = decodeMessageView(e.body);
    } catch {
      break;
    }
    const sender = state.members.get(m.sender);
    if (sender !== undefined && sender.role !== 'observer' && m.epoch === state.epoch && m.headSize >= 1 && m.headSize <= scratch.size) {
      const job = { at, triple: { publicKey: sender.topicKey.signatureKey, message: messageSignedContent(topicId, m, scratch.root(m.headSize)), signature: m.signature } };
      jobs.push(job);
      onJob?.(job);
    }
    scratch.append(entryLeafHash(crypto, entry));
  }
  return { jobs, end: at };
}
