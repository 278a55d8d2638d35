/**
 * The client's verifying mirror of one topic log (docs/client.md §Verification).
 *
 * The server is not trusted. A member's device holds every entry of the topic's log from
 * index 0 and checks each one as it arrives, in order, with the protocol core:
 *
 * - the log's shape with the LogMonitor (protocol §11.3): `log.gap`, `log.fork`,
 *   `log.replay`, `log.reorder`;
 * - every update with the state machine (protocol §7.5), with the identity keys of new members
 *   checked against the keys this device has pinned (`identity.changed`);
 * - every message with checkMessage (protocol §8.4) against the mirror's own log: the sender
 *   signed the root of the log it saw at `head_size`, so a server that showed the sender another
 *   history fails here (`crypto.bad_signature`);
 * - every checkpoint the server signs (protocol §10–§11): signature by a pinned key of the host
 *   (the one whose key id the checkpoint names: keys rotate, docs/client.md §Topics hosted on
 *   other servers), `origin` the topic's host,
 *   never smaller than one seen before (`log.rollback`), and the root equal to the mirror's own
 *   root at that size (`log.fork`). Holding the whole log, the mirror needs no proofs from the
 *   server: it recomputes every root itself.
 *
 * A message that breaks a rule (an observer's post a server let through, a replayed nonce) is
 * a leaf of the log all the same, so the mirror keeps its hash, marks the entry `rejected` with
 * the code, and never shows its content. An update that breaks a rule halts the mirror: the
 * state after it is unknown, so nothing after it can be checked (`halted`).
 *
 * A page of entries can be accepted with its message signatures verified ahead, in parallel,
 * by an injected SignatureVerifier (`acceptPage`, page-verify.ts): every check is still made
 * here, in order; only an Ed25519 call on a byte-identical (key, signed bytes, signature) triple
 * that the verifier accepted is skipped (VerifiedSignatures, protocol verified-signatures.ts).
 *
 * Pure: no I/O, no clock; crypto and randomness are injected.
 */
import {
  LogMonitor,
  MemoryLog,
  RendezvousError,
  applyUpdate,
  checkMessage,
  decodeLogEntry,
  decodeLogEntryView,
  decodeMessage,
  decodeMessageView,
  decodeTopicUpdate,
  epochPrk,
  equal,
  isRendezvousError,
  openBackwardLink,
  openKeyShare,
  openMessage,
  serverKeyId,
  toHex,
  topicKeyId,
  verifyCheckpoint,
  type Checkpoint,
  type CryptoProvider,
  type ErrorCode,
  type Member,
  type Message,
  type MessageContent,
  type TopicKeySecret,
  type TopicState,
  type TopicUpdate,
  VerifiedSignatures,
  withVerifiedSignatures,
  type SignatureTriple,
} from '@rendezvous/protocol';
import { planSignatureJobs, type PageEntry, type PlannedJob, type SignatureVerifier } from './page-verify.ts';

/**
 * Signatures per verifier call in acceptPage: the first calls small, so that answers come back
 * soon, then larger, so that the mirror waits (and wakes) fewer times per page.
 */
const FIRST_CHUNK = 16;
const MAX_CHUNK = 64;

/** Identity keys this device trusts, by user (pinned on first contact, docs/client.md §Contacts). */
export interface IdentityPins {
  /** Pins `identityKey` for `user` if unknown; throws `identity.changed` if another key is pinned. */
  check(user: string, identityKey: Uint8Array): void;
}

/**
 * The keys this device pinned for a server (oldest first), by server name: a mirror verifies
 * each checkpoint with the one whose key id the checkpoint names.
 */
export type HostKeyLookup = (server: string) => readonly Uint8Array[];

/** Topic-key secrets this user's devices hold, by topic signature key id (protocol topicKeyId). */
export type TopicKeyLookup = (keyId: string) => TopicKeySecret | undefined;

export type MirrorEntry =
  | { index: number; type: 'update'; timestamp: number; update: TopicUpdate }
  | {
      index: number;
      type: 'message';
      timestamp: number;
      message: Message;
      /** The sending member (user, role) at the message's position. */
      sender: Member | null;
      /** Set when the message broke a rule: never shown, only reported. */
      rejected: ErrorCode | null;
    };

/** What a mirror persists: the log itself and what cannot be derived from it. */
export interface MirrorSnapshot {
  topicId: Uint8Array;
  /**
   * A key of the host, pinned when the mirror was made (the only one before host keys were
   * pinned per server; restored mirrors are given the client's pinned keys instead).
   */
  hostKey: Uint8Array;
  entries: Uint8Array[];
  rejected: { index: number; code: ErrorCode }[];
  epochSecrets: { epoch: number; secret: Uint8Array }[];
  checkpoint: Checkpoint | null;
  /** A signed checkpoint ahead of the entries held: compared when they arrive. */
  pendingCheckpoint: Checkpoint | null;
  halted: { code: ErrorCode; message: string } | null;
}

export interface Alarm {
  index: number | null;
  code: ErrorCode;
  message: string;
}

/** Epoch secrets each mirror opened, outside the object: logging it or devtools never show them. */
const secretsOf = new WeakMap<TopicMirror, Map<number, Uint8Array>>();
function epochSecretsOf(m: TopicMirror): Map<number, Uint8Array> {
  let s = secretsOf.get(m);
  if (s === undefined) secretsOf.set(m, (s = new Map()));
  return s;
}

export class TopicMirror {
  readonly log: MemoryLog;
  private readonly monitor: LogMonitor;
  private readonly entries: MirrorEntry[] = [];
  /** The encoded entries, as received (what a snapshot keeps). */
  private readonly monitorEntries: Uint8Array[] = [];
  private readonly nonces = new Set<string>();
  /** Backward link of each epoch that has one (sealed under that epoch's secret). */
  private readonly links = new Map<number, Uint8Array>();
  private _state: TopicState | null = null;
  private _epochStartSize = 0;
  private _checkpoint: Checkpoint | null = null;
  /** The largest checkpoint seen that the mirror could not yet compare (entries missing). */
  private pendingCheckpoint: Checkpoint | null = null;
  private _halted: RendezvousError | null = null;
  /** Rule breaks the server let through (rejected messages); halts are thrown, not listed here. */
  readonly alarms: Alarm[] = [];

  private readonly hostKeys: HostKeyLookup;
  /** The key a snapshot records (MirrorSnapshot.hostKey). */
  private hostKey: Uint8Array;
  /** Message signatures a SignatureVerifier accepted during acceptPage (exact triples only). */
  private readonly verified = new VerifiedSignatures();
  /** `crypto` for checkMessage: answers a triple in `verified` without an Ed25519 call. */
  private readonly messageCrypto: CryptoProvider;

  constructor(
    private readonly crypto: CryptoProvider,
    readonly topicId: Uint8Array,
    /**
     * The pinned keys of the topic's host server (checkpoints are signed by one of them): one
     * key, or the client's pinned keys by server name.
     */
    hostKeys: Uint8Array | HostKeyLookup,
    private readonly pins: IdentityPins,
    private readonly myKeys: TopicKeyLookup,
    /** The host, as listed, until the log's create names it (then the create's word counts). */
    private listedHost: string | null = null,
  ) {
    this.log = new MemoryLog(crypto);
    this.monitor = new LogMonitor(crypto);
    this.messageCrypto = withVerifiedSignatures(crypto, this.verified);
    if (hostKeys instanceof Uint8Array) {
      this.hostKey = hostKeys;
      this.hostKeys = () => [hostKeys];
    } else {
      this.hostKeys = hostKeys;
      this.hostKey = (listedHost === null ? undefined : hostKeys(listedHost)[0]) ?? new Uint8Array(32);
    }
  }

  /** The topic's host: the create's, or the listed one before the create arrived. */
  get host(): string | null {
    return this._state?.host ?? this.listedHost;
  }

  get size(): number {
    return this.log.size;
  }
  get state(): TopicState | null {
    return this._state;
  }
  get epochStartSize(): number {
    return this._epochStartSize;
  }
  /** The newest checkpoint verified against the mirror's own log. */
  get checkpoint(): Checkpoint | null {
    return this._checkpoint;
  }
  get halted(): RendezvousError | null {
    return this._halted;
  }
  root(size = this.log.size): Uint8Array {
    return this.log.root(size);
  }
  entry(index: number): MirrorEntry | undefined {
    return this.entries[index];
  }
  /** The member this device's user is, if any (by the topic key secrets it holds). */
  me(): Member | undefined {
    if (this._state === null) return undefined;
    for (const m of this._state.members.values()) if (this.myKeys(topicKeyId(m.topicKey)) !== undefined) return m;
    return undefined;
  }
  epochSecret(epoch: number): Uint8Array | undefined {
    return epochSecretsOf(this).get(epoch);
  }

  /**
   * Takes the entry at `index` (encoded LogEntry). Returns it once accepted, or null for a
   * harmless redelivery of an entry already held. Throws on a log-shape error or an invalid
   * update (the mirror then stays halted); an invalid message is accepted as `rejected`.
   */
  accept(index: number, bytes: Uint8Array): MirrorEntry | null {
    if (this._halted !== null) throw this._halted;
    // Shape first (protocol §11.3): a rejected entry changes nothing, but an honest server
    // never sends one, so the mirror stops trusting this server's view of the topic.
    let shape: ReturnType<LogMonitor['append']>;
    try {
      shape = this.monitor.append(index, bytes);
    } catch (err) {
      throw this.raise(err);
    }
    if (!shape.appended) return null;
    // The monitor decoded the entry already (its body is a view into `bytes`, which the mirror keeps).
    const e = shape.entry ?? decodeLogEntryView(bytes);
    try {
      const out = e.type === 'update' ? this.acceptUpdate(index, e.timestamp, e.body) : this.acceptMessage(index, e.timestamp, e.body);
      this.log.appendLeafHash(shape.leafHash);
      this.entries.push(out);
      this.monitorEntries.push(bytes);
      if (this.pendingCheckpoint !== null && this.pendingCheckpoint.size === this.log.size) {
        const cp = this.pendingCheckpoint;
        this.pendingCheckpoint = null;
        this.compareCheckpoint(cp);
      }
      return out;
    } catch (err) {
      // The monitor already holds the leaf; the mirror cannot go on without the entry.
      throw this.raise(err);
    }
  }

  /**
   * Halts the mirror with a fault found outside it (a server that signs entries it then does
   * not serve, or acknowledges a post it does not keep): kept in the snapshot, so it survives
   * restarts, and every later accept or checkpoint throws it.
   */
  raise(err: unknown): RendezvousError {
    const e = isRendezvousError(err) ? err : new RendezvousError('encoding.bad_value', String(err));
    this._halted = e;
    return e;
  }

  private acceptUpdate(index: number, timestamp: number, body: Uint8Array): MirrorEntry {
    const u = decodeTopicUpdate(body);
    if (!equal(u.topicId, this.topicId)) throw new RendezvousError('topic.wrong_topic', `entry ${index} is an update of another topic`);
    if (index === 0 && u.action.type !== 'create') throw new RendezvousError('topic.unknown', 'the log does not start with a create');
    const before = this._state;
    const state = applyUpdate(this.crypto, before, u, { checkIdentity: (user, key) => this.pins.check(user, key) });
    this._state = state;
    if (u.commitment !== null) {
      this._epochStartSize = index + 1;
      if (u.backwardLink !== null) this.links.set(u.epoch, u.backwardLink);
    }
    this.learnFromShares(u, state);
    return { index, type: 'update', timestamp, update: u };
  }

  /** Opens this user's key share in `u`, if any, then follows backward links (protocol §7.2–§7.3). */
  private learnFromShares(u: TopicUpdate, state: TopicState): void {
    for (const share of u.shares) {
      const member = state.members.get(share.memberId);
      if (member === undefined) continue;
      const secret = this.myKeys(topicKeyId(member.topicKey));
      if (secret === undefined) continue;
      const commitment = state.commitments[u.epoch];
      if (commitment === undefined) throw new RendezvousError('topic.bad_epoch', 'no commitment for the epoch of a key share');
      const epochSecret = openKeyShare(this.crypto, this.topicId, u.epoch, share, secret.encryptionSecret, commitment);
      this.learnEpoch(u.epoch, epochSecret, state);
    }
  }

  private learnEpoch(epoch: number, secret: Uint8Array, state: TopicState): void {
    epochSecretsOf(this).set(epoch, secret);
    // A shared history walks back through the links; a hidden one has none before the join.
    for (let e = epoch; e > 0 && !epochSecretsOf(this).has(e - 1); e--) {
      const link = this.links.get(e);
      const prevCommitment = state.commitments[e - 1];
      if (link === undefined || prevCommitment === undefined) break;
      epochSecretsOf(this).set(e - 1, openBackwardLink(this.crypto, this.topicId, e, epochSecretsOf(this).get(e)!, link, prevCommitment));
    }
  }

  private acceptMessage(index: number, timestamp: number, body: Uint8Array): MirrorEntry {
    if (this._state === null) throw new RendezvousError('topic.unknown', 'a message before the create');
    // Views into the entry's bytes, which the mirror keeps anyway (monitorEntries).
    const m = decodeMessageView(body);
    const sender = this._state.members.get(m.sender) ?? null;
    const nonce = toHex(m.nonce);
    try {
      checkMessage(this.messageCrypto, this._state, this.topicId, m, {
        logSize: this.log.size,
        epochStartSize: this._epochStartSize,
        rootAt: (s) => this.log.root(s),
        seen: () => this.nonces.has(nonce),
      });
    } catch (err) {
      if (!isRendezvousError(err)) throw err;
      // The server appended a message no correct server accepts: keep the leaf, drop the content.
      this.alarms.push({ index, code: err.code, message: err.message });
      return { index, type: 'message', timestamp, message: m, sender, rejected: err.code };
    }
    this.nonces.add(nonce);
    return { index, type: 'message', timestamp, message: m, sender, rejected: null };
  }

  /**
   * Accepts a page of entries (as `accept` each, in order), with the message signatures
   * verified ahead by `verifier` (a worker pool, say) while earlier entries are accepted.
   * Without a verifier it is exactly a loop of `accept`. With one, every entry still goes
   * through `accept` with every check in the same order, and gets the same result and the same
   * error: only the Ed25519 call on a byte-identical triple the verifier accepted is skipped. A
   * triple it rejected, a wrong guess of the plan, or a verifier that fails is verified inline.
   * Throws what `accept` throws, at the entry that throws it (the entries before it are kept).
   */
  async acceptPage(page: readonly PageEntry[], verifier?: SignatureVerifier | null): Promise<void> {
    if (verifier === undefined || verifier === null) {
      for (const e of page) this.accept(e.index, e.entry);
      return;
    }
    let i = 0;
    while (i < page.length) {
      if (this._halted !== null) throw this._halted;
      const added: SignatureTriple[] = [];
      const chunks: { start: number; done: Promise<void> }[] = [];
      let closed = false;
      let batch: PlannedJob[] = [];
      let chunkSize = FIRST_CHUNK;
      const flush = () => {
        if (batch.length === 0) return;
        const jobs = batch;
        batch = [];
        let done: Promise<void>;
        try {
          done = verifier.verifyBatch(jobs.map((j) => j.triple)).then(
            (ok) => {
              // An answer of another length cannot be matched to the triples: none is used.
              if (closed || !Array.isArray(ok) || ok.length !== jobs.length) return;
              for (let k = 0; k < jobs.length; k++) {
                // Only an explicit true for that very triple; anything else is verified inline.
                if (ok[k] !== true) continue;
                this.verified.add(jobs[k]!.triple);
                added.push(jobs[k]!.triple);
              }
            },
            () => {}, // a failed verifier: every signature of the chunk is verified inline
          );
        } catch {
          done = Promise.resolve();
        }
        chunks.push({ start: jobs[0]!.at, done });
      };
      const { end } = planSignatureJobs(this.crypto, this.topicId, this.log, this._state, page, i, (job) => {
        batch.push(job);
        if (batch.length >= chunkSize) {
          flush();
          chunkSize = Math.min(MAX_CHUNK, chunkSize * 2);
        }
      });
      flush();
      // Entries [i, end) are the planned messages; entry `end` (an update, or one that could not
      // be planned) is accepted inline before planning again with the state after it.
      const last = end < page.length ? end + 1 : end;
      let c = 0;
      try {
        for (let j = i; j < last; j++) {
          while (c < chunks.length && chunks[c]!.start <= j) await chunks[c++]!.done;
          this.accept(page[j]!.index, page[j]!.entry);
        }
      } finally {
        closed = true;
        for (const t of added) this.verified.remove(t);
      }
      i = last;
    }
  }

  /**
   * Decrypts an accepted message, or returns null when this device does not hold the epoch
   * secret (a hidden-history topic before it joined) or the entry was rejected.
   */
  read(index: number): MessageContent | null {
    const e = this.entries[index];
    if (e === undefined || e.type !== 'message' || e.rejected !== null) return null;
    const secret = epochSecretsOf(this).get(e.message.epoch);
    if (secret === undefined) return null;
    const prk = epochPrk(this.crypto, this.topicId, e.message.epoch, secret);
    return openMessage(this.crypto, this.topicId, prk, e.message, this.log.root(e.message.headSize));
  }

  /**
   * Checks a checkpoint the server returned (protocol §10, §11.2): signed by the pinned host
   * key for this topic, never older than the newest seen, and consistent with the mirror's own
   * log. One of a size the mirror has not reached is compared once its entries arrive.
   */
  checkCheckpoint(cp: Checkpoint, o: { replica?: boolean } = {}): void {
    if (this._halted !== null) throw this._halted;
    this.verifyHostSignature(cp);
    if (this._state !== null && cp.origin !== this._state.host) {
      throw this.raise(new RendezvousError('log.bad_checkpoint', `checkpoint signed by ${cp.origin}, the topic is hosted by ${this._state.host}`));
    }
    const newest = this.pendingCheckpoint ?? this._checkpoint;
    // A replica (the home server of a topic hosted elsewhere) may be behind a host checkpoint
    // this device holds but has not reached (an acknowledgement signed by the host): a host
    // checkpoint between the verified head and that one, signed before it, is no rollback. It
    // must still belong to the log this device holds. Behind the verified head it still is one.
    const pending = this.pendingCheckpoint;
    if (o.replica === true && pending !== null && cp.size < pending.size && cp.size >= (this._checkpoint?.size ?? 0) && cp.timestamp <= pending.timestamp) {
      if (this.contradicts(cp)) throw this.raise(new RendezvousError('log.fork', `the server's log of size ${cp.size} is not the one this device holds`));
      return;
    }
    if (newest !== null && cp.size < newest.size) {
      throw this.raise(new RendezvousError('log.rollback', `the server went back from ${newest.size} to ${cp.size} entries`));
    }
    if (newest !== null && cp.size === newest.size && !equal(cp.root, newest.root)) {
      throw this.raise(new RendezvousError('log.fork', `two different logs of size ${cp.size}`));
    }
    if (cp.size > this.log.size) {
      this.pendingCheckpoint = cp;
      return;
    }
    this.compareCheckpoint(cp);
  }

  /**
   * Verifies a host checkpoint of this topic that came from elsewhere (a witness's cosignature,
   * a fork report), without taking it as the mirror's head: signed by a pinned host key, of
   * this topic, with `origin` the host. Throws (`log.bad_checkpoint`, `topic.wrong_topic`);
   * never halts: such evidence is only as good as its signature.
   */
  verifyHostCheckpoint(cp: Checkpoint): void {
    this.verifyHostSignature(cp);
    const host = this.host;
    if (host !== null && cp.origin !== host) throw new RendezvousError('log.bad_checkpoint', `checkpoint signed by ${cp.origin}, the topic is hosted by ${host}`);
  }

  /**
   * Whether a verified host checkpoint cannot belong to the log this device holds: its root is
   * not the mirror's own root at its size, or, past the entries held, it differs from the host
   * checkpoint of that size the mirror is waiting to compare (protocol §11.2).
   */
  contradicts(cp: Pick<Checkpoint, 'size' | 'root'>): boolean {
    if (cp.size <= this.log.size) return !equal(this.log.root(cp.size), cp.root);
    const pending = this.pendingCheckpoint;
    return pending !== null && pending.size === cp.size && !equal(pending.root, cp.root);
  }

  private verifyHostSignature(cp: Checkpoint): void {
    if (!equal(cp.topicId, this.topicId)) throw new RendezvousError('topic.wrong_topic', 'checkpoint names another topic');
    const host = this.host ?? cp.origin;
    const key = this.hostKeys(host).find((k) => equal(serverKeyId(this.crypto, k), cp.keyId));
    if (key === undefined) throw new RendezvousError('log.bad_checkpoint', `checkpoint is not signed by a key pinned for ${host}`);
    verifyCheckpoint(this.crypto, cp, key, this.topicId);
  }

  private compareCheckpoint(cp: Checkpoint): void {
    if (this._state !== null && cp.origin !== this._state.host) {
      throw this.raise(new RendezvousError('log.bad_checkpoint', `checkpoint signed by ${cp.origin}, the topic is hosted by ${this._state.host}`));
    }
    if (!equal(this.log.root(cp.size), cp.root)) {
      throw this.raise(new RendezvousError('log.fork', `the server's log of size ${cp.size} is not the one it sent`));
    }
    if (this._checkpoint === null || cp.size >= this._checkpoint.size) this._checkpoint = cp;
  }

  snapshot(): MirrorSnapshot {
    return {
      topicId: this.topicId,
      hostKey: this.hostKey,
      entries: this.monitorEntries.slice(),
      rejected: this.entries.flatMap((e) => (e.type === 'message' && e.rejected !== null ? [{ index: e.index, code: e.rejected }] : [])),
      epochSecrets: [...epochSecretsOf(this)].map(([epoch, secret]) => ({ epoch, secret })),
      checkpoint: this._checkpoint,
      pendingCheckpoint: this.pendingCheckpoint,
      halted: this._halted === null ? null : { code: this._halted.code, message: this._halted.message },
    };
  }

  /**
   * Rebuilds a mirror from its snapshot without checking signatures of messages again (they
   * were checked when they arrived; the snapshot is the device's own, kept with its secrets).
   * Updates go through the state machine again, which is cheap next to the messages, and every
   * leaf is hashed again, so the roots are the device's own computation.
   */
  static restore(crypto: CryptoProvider, snap: MirrorSnapshot, pins: IdentityPins, myKeys: TopicKeyLookup, hostKeys?: HostKeyLookup): TopicMirror {
    const m = new TopicMirror(crypto, snap.topicId, hostKeys ?? snap.hostKey, pins, myKeys);
    m.hostKey = snap.hostKey;
    const rejected = new Map(snap.rejected.map((r) => [r.index, r.code]));
    const trustPinned: IdentityPins = { check: () => {} };
    snap.entries.forEach((bytes, index) => {
      const shape = m.monitor.append(index, bytes);
      m.monitorEntries.push(bytes);
      const e = decodeLogEntry(bytes);
      if (e.type === 'update') {
        const u = decodeTopicUpdate(e.body);
        m._state = applyUpdate(crypto, m._state, u, { checkIdentity: trustPinned.check });
        if (u.commitment !== null) {
          m._epochStartSize = index + 1;
          if (u.backwardLink !== null) m.links.set(u.epoch, u.backwardLink);
        }
        m.entries.push({ index, type: 'update', timestamp: e.timestamp, update: u });
      } else {
        const msg = decodeMessage(e.body);
        const code = rejected.get(index) ?? null;
        if (code === null) m.nonces.add(toHex(msg.nonce));
        m.entries.push({ index, type: 'message', timestamp: e.timestamp, message: msg, sender: m._state?.members.get(msg.sender) ?? null, rejected: code });
      }
      m.log.appendLeafHash(shape.leafHash);
    });
    for (const { epoch, secret } of snap.epochSecrets) epochSecretsOf(m).set(epoch, secret);
    if (snap.checkpoint !== null) m.compareCheckpoint(snap.checkpoint);
    m.pendingCheckpoint = snap.pendingCheckpoint;
    if (snap.halted !== null) m._halted = new RendezvousError(snap.halted.code, snap.halted.message);
    return m;
  }

  /** Size of the newest checkpoint known, reached or not: how far a sync must go. */
  get target(): number {
    return Math.max(this.pendingCheckpoint?.size ?? 0, this._checkpoint?.size ?? 0, this.log.size);
  }
}
