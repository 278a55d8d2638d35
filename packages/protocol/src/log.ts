/**
 * The topic log (spec §9–§11): log entries, signed checkpoints, and the head comparison and
 * monitor that every member runs against what its server shows it.
 *
 * One log per topic holds its updates and messages in one order. The leaf of entry i is the
 * canonical encoding of its LogEntry; the tree over the leaves is the RFC 9162 Merkle tree of
 * merkle.ts. The host server signs a Checkpoint (size, root) for every append.
 */
import { RendezvousError } from './errors.ts';
import { Reader, Writer, decodeAll } from './encoding.ts';
import { equal, utf8 } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { KdfLabel, SignLabel, signWithLabel, verifyWithLabel } from './sign.ts';
import { MAX_SERVER_NAME_BYTES, isServerName } from './identity.ts';
import { HASH_SIZE, TOPIC_ID_SIZE } from './topic.ts';
import { emptyHash, leafHash, verifyConsistency } from './merkle.ts';

export const LOG_VERSION = 1;
export const KEY_ID_SIZE = 8;
/**
 * Spec §9.1: the largest entry body. A create with 10,000 members of the longest user ids is
 * about 5 MiB (10,000 × (≈ 490-byte member + 82-byte key share)).
 */
export const MAX_ENTRY_BODY = 8 * 1024 * 1024;

export type EntryType = 'update' | 'message';
const ENTRY_CODE: Record<EntryType, number> = { update: 1, message: 2 };
const ENTRY_BY_CODE: Record<number, EntryType> = { 1: 'update', 2: 'message' };

/** struct { u8 version; u8 type; u64 timestamp; opaque body<V>; } (spec §9.1) */
export interface LogEntry {
  type: EntryType;
  /** Milliseconds since the Unix epoch, assigned by the host when it appends. */
  timestamp: number;
  /** The encoded TopicUpdate or Message. */
  body: Uint8Array;
}

export function encodeLogEntry(e: LogEntry): Uint8Array {
  return new Writer(e.body.length + 16).u8(LOG_VERSION).u8(ENTRY_CODE[e.type]).u64(e.timestamp).bytes(e.body).finish();
}

export function decodeLogEntry(b: Uint8Array): LogEntry {
  const e = decodeLogEntryView(b);
  return { type: e.type, timestamp: e.timestamp, body: e.body.slice() };
}

/**
 * decodeLogEntry without copying the body: the same checks, in the same order, with the same
 * errors, but `body` is a view into `b` (valid only while `b` is not changed). For hot paths
 * that read the body at once (the log monitor, a verifying mirror).
 */
export function decodeLogEntryView(b: Uint8Array): LogEntry {
  const r = new Reader(b);
  if (r.u8() !== LOG_VERSION) throw new RendezvousError('encoding.unknown_version');
  const type = ENTRY_BY_CODE[r.u8()];
  if (type === undefined) throw new RendezvousError('encoding.bad_value', 'unknown log entry type');
  const timestamp = r.u64();
  // Reader.bytes(MAX_ENTRY_BODY) then Reader.end(), without the copy.
  const n = r.varint();
  if (n > MAX_ENTRY_BODY) throw new RendezvousError('encoding.too_large');
  if (r.remaining < n) throw new RendezvousError('encoding.truncated');
  if (r.remaining !== n) throw new RendezvousError('encoding.trailing_bytes');
  return { type, timestamp, body: b.subarray(r.offset, r.offset + n) };
}

export function entryLeafHash(crypto: CryptoProvider, e: LogEntry | Uint8Array): Uint8Array {
  return leafHash(crypto, e instanceof Uint8Array ? e : encodeLogEntry(e));
}

// ---------------------------------------------------------------------------------------------
// Checkpoints (spec §10)

export interface Checkpoint {
  /** Name of the host server that signed it. */
  origin: string;
  topicId: Uint8Array;
  size: number;
  root: Uint8Array;
  timestamp: number;
  /** serverKeyId of the signing key, so a verifier can pick among rotated keys. */
  keyId: Uint8Array;
  signature: Uint8Array;
}

export type UnsignedCheckpoint = Omit<Checkpoint, 'signature' | 'keyId'>;

/** key_id = SHA-256("rendezvous/v1/server-key-id" || public_key)[0..8] */
export function serverKeyId(crypto: CryptoProvider, publicKey: Uint8Array): Uint8Array {
  const label = utf8(KdfLabel.serverKeyId);
  const b = new Uint8Array(label.length + publicKey.length);
  b.set(label);
  b.set(publicKey, label.length);
  return crypto.sha256(b).subarray(0, KEY_ID_SIZE);
}

function writeCheckpointTbs(w: Writer, c: Omit<Checkpoint, 'signature'>): void {
  w.u8(LOG_VERSION)
    .string(c.origin)
    .fixed(c.topicId, TOPIC_ID_SIZE)
    .u64(c.size)
    .fixed(c.root, HASH_SIZE)
    .u64(c.timestamp)
    .fixed(c.keyId, KEY_ID_SIZE);
}

export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  const w = new Writer(160);
  writeCheckpointTbs(w, c);
  return w.fixed(c.signature, 64).finish();
}

export function readCheckpoint(r: Reader): Checkpoint {
  if (r.u8() !== LOG_VERSION) throw new RendezvousError('encoding.unknown_version');
  const origin = r.string(MAX_SERVER_NAME_BYTES);
  if (!isServerName(origin)) throw new RendezvousError('encoding.bad_value', 'origin is not a server name');
  return {
    origin,
    topicId: r.fixed(TOPIC_ID_SIZE),
    size: r.u64(),
    root: r.fixed(HASH_SIZE),
    timestamp: r.u64(),
    keyId: r.fixed(KEY_ID_SIZE),
    signature: r.fixed(64),
  };
}

export function decodeCheckpoint(b: Uint8Array): Checkpoint {
  return decodeAll(b, readCheckpoint);
}

export function signCheckpoint(crypto: CryptoProvider, serverSeed: Uint8Array, c: UnsignedCheckpoint): Checkpoint {
  const tbs = { ...c, keyId: seedKeyId(crypto, serverSeed) };
  const w = new Writer(160);
  writeCheckpointTbs(w, tbs);
  return { ...tbs, signature: signWithLabel(crypto, serverSeed, SignLabel.checkpoint, w.finish()) };
}

/**
 * The key id of a server seed, remembered per seed array (and its bytes, should the array
 * change): a server signs one checkpoint per appended entry, and deriving the public key and
 * hashing it each time cost about a quarter of the signing (issue 7).
 */
const seedKeyIds = new WeakMap<Uint8Array, { seed: Uint8Array; keyId: Uint8Array }>();
function seedKeyId(crypto: CryptoProvider, seed: Uint8Array): Uint8Array {
  const hit = seedKeyIds.get(seed);
  if (hit !== undefined && equal(hit.seed, seed)) return hit.keyId.slice();
  const keyId = serverKeyId(crypto, crypto.ed25519PublicKey(seed));
  seedKeyIds.set(seed, { seed: seed.slice(), keyId: keyId.slice() });
  return keyId;
}

/**
 * Verifies a checkpoint against the host's public key (the caller picks the key by
 * `keyId` among the host's current and retired keys). Throws `log.bad_checkpoint`.
 */
export function verifyCheckpoint(crypto: CryptoProvider, c: Checkpoint, serverPublicKey: Uint8Array, topicId?: Uint8Array): void {
  if (topicId !== undefined && !equal(topicId, c.topicId)) throw new RendezvousError('topic.wrong_topic', 'checkpoint names another topic');
  if (!equal(c.keyId, serverKeyId(crypto, serverPublicKey))) {
    throw new RendezvousError('log.bad_checkpoint', 'checkpoint is signed by another key');
  }
  const w = new Writer(160);
  writeCheckpointTbs(w, c);
  if (!verifyWithLabel(crypto, serverPublicKey, SignLabel.checkpoint, w.finish(), c.signature)) {
    throw new RendezvousError('log.bad_checkpoint', 'checkpoint signature does not verify');
  }
}

/**
 * Compares a head the verifier already trusts (`older`) with a new one (spec §11.2):
 * - a smaller size is `log.rollback`;
 * - the same size with another root, or a consistency proof that does not verify, is `log.fork`
 *   (the server cannot show that the new head extends the old one).
 * Both heads must be of the same topic. A newer head of equal size and root needs no proof.
 */
export function compareHeads(
  crypto: CryptoProvider,
  older: Pick<Checkpoint, 'size' | 'root'>,
  newer: Pick<Checkpoint, 'size' | 'root'>,
  consistencyProof: readonly Uint8Array[],
): void {
  if (newer.size < older.size) throw new RendezvousError('log.rollback', `log went back from ${older.size} to ${newer.size} entries`);
  if (newer.size === older.size) {
    if (!equal(newer.root, older.root)) throw new RendezvousError('log.fork', `two different logs of size ${older.size}`);
    return;
  }
  if (older.size === 0) {
    if (!equal(older.root, emptyHash(crypto))) throw new RendezvousError('log.fork', 'an empty log has another root');
    return;
  }
  try {
    verifyConsistency(crypto, older.size, newer.size, consistencyProof, older.root, newer.root);
  } catch {
    throw new RendezvousError('log.fork', `log of size ${newer.size} does not extend the log of size ${older.size}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Log monitor (spec §11.3): what a member checks as entries arrive one by one

export interface MonitorAppend {
  /** false when the entry was already held at this index (a harmless redelivery). */
  appended: boolean;
  leafHash: Uint8Array;
  /**
   * The entry as decoded by the monitor (decodeLogEntryView: `body` is a view into the bytes
   * given to `append`); null for a redelivery, which the monitor does not decode.
   */
  entry: LogEntry | null;
}

/**
 * Tracks the leaf hashes a member has received, in order, and names what is wrong when the
 * server delivers something that cannot be the next entry of one append-only log:
 * - an index past the end: `log.gap` (entries were withheld);
 * - an index already held with other bytes: `log.fork`;
 * - bytes already held at another index: `log.replay`;
 * - a timestamp earlier than its predecessor's: `log.reorder`.
 * The monitor only sees leaves; what they contain is checked by applyUpdate / checkMessage.
 */
export class LogMonitor {
  private readonly leaves: Uint8Array[] = [];
  private readonly seen = new Map<string, number>();
  private lastTimestamp = 0;

  constructor(private readonly crypto: CryptoProvider) {}

  get size(): number {
    return this.leaves.length;
  }

  leafHashes(): readonly Uint8Array[] {
    return this.leaves;
  }

  append(index: number, entry: Uint8Array): MonitorAppend {
    if (!Number.isSafeInteger(index) || index < 0) throw new RendezvousError('encoding.bad_value', 'entry index must be a non-negative integer');
    const h = entryLeafHash(this.crypto, entry);
    if (index < this.leaves.length) {
      if (!equal(this.leaves[index]!, h)) throw new RendezvousError('log.fork', `entry ${index} differs from the one received before`);
      return { appended: false, leafHash: h, entry: null };
    }
    if (index > this.leaves.length) {
      throw new RendezvousError('log.gap', `entry ${index} arrived but ${index - this.leaves.length} before it are missing`);
    }
    const key = toKey(h);
    const earlier = this.seen.get(key);
    if (earlier !== undefined) throw new RendezvousError('log.replay', `entry ${index} repeats entry ${earlier}`);
    const decoded = decodeLogEntryView(entry);
    const timestamp = decoded.timestamp;
    if (timestamp < this.lastTimestamp) throw new RendezvousError('log.reorder', `entry ${index} is older than the entry before it`);
    this.leaves.push(h);
    this.seen.set(key, index);
    this.lastTimestamp = timestamp;
    return { appended: true, leafHash: h, entry: decoded };
  }
}

function toKey(h: Uint8Array): string {
  // One char per byte (the same key as a byte-by-byte loop), built in one call.
  return String.fromCharCode.apply(null, h as unknown as number[]);
}
