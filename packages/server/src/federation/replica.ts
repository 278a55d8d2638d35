/**
 * Topics across servers (protocol §17.4–§17.5): the host's replication to member servers, the
 * member server's replica, and witnessing.
 *
 * - Host: every topic it hosts has a replication cursor per member server (created and ended in
 *   the same transaction as the update that adds or removes that server's users, see
 *   `replicationPeers`). The delivery loop of each server (deliveries.ts) sends the entries
 *   from its cursor on, each batch with the checkpoint of its last entry.
 * - Member server: checks a delivery exactly as the host checked the entries (state machine,
 *   §8.4 message checks, timestamps) and as a log monitor checks a head (the checkpoint must be
 *   the host's, and its root the one computed over the replica and the new entries), then
 *   stores it with the same tables and events as a local append, so its devices read and are
 *   woken as for a local topic.
 * - Witnessing: the member server cosigns the checkpoint it verified, answers the host with it
 *   and gossips it to the other member servers; whoever receives a cosignature compares it
 *   with its own log. A conflict is a fork: recorded with its evidence and served to clients.
 */
import {
  MAX_MEMBERS,
  RendezvousError,
  applyUpdate,
  checkMessage,
  decodeCheckpoint,
  decodeCosignature,
  decodeLogEntry,
  decodeMessage,
  decodeTopicUpdate,
  encodeCheckpoint,
  encodeCosignature,
  encodeLogEntry,
  entryLeafHash,
  equal,
  fromBase64url,
  hashReaderFromMap,
  incomingMembers,
  isRendezvousError,
  MemoryLog,
  parseUserId,
  signCheckpoint,
  signCosignature,
  storedHashIndex,
  storedHashesForLeafHash,
  storedHashesIndexes,
  toBase64url,
  toHex,
  treeHash,
  treeHashIndexes,
  verifyCheckpoint,
  verifyCosignature,
  verifyInclusion,
  verifyTopicKey,
  inclusionProof,
  inclusionProofIndexes,
  type Checkpoint,
  type EntryType,
  type TopicState,
} from '@rendezvous/protocol';
import type { Context } from '../context.ts';
import type { AppendBatch, EntryRow, ReplicationRow } from '../storage/store.ts';
import { announce, deleteTopic, loadTopic, memberRows, noPending, readHashes, remember, withTopicLock, type LoadedTopic } from '../topics.ts';
import { liveCommit } from '../events.ts';
import { deliveries } from './deliveries.ts';

/** At most this many entries per delivery (protocol §17.8). */
export const MAX_ENTRIES_PER_DELIVERY = 100;

// ---------------------------------------------------------------------------------------------
// Which servers replicate a topic

const serverSets = new WeakMap<TopicState, Set<string>>();

/** The servers, other than this one, with a user among the state's members (cached per state). */
export function remoteServersOf(ctx: Context, state: TopicState | null): Set<string> {
  if (state === null) return new Set();
  let s = serverSets.get(state);
  if (s === undefined) {
    s = new Set();
    for (const m of state.members.values()) {
      const server = parseUserId(m.topicKey.user).server;
      if (server !== ctx.name) s.add(server);
    }
    serverSets.set(state, s);
  }
  return s;
}

/**
 * Replication cursors an append at `index` creates or ends (host only): servers with a member
 * after it replicate with no end; a server whose last user it removes receives up to and
 * including it (so its users learn they are out), and nothing after. Undefined: no change.
 */
export function replicationPeers(
  ctx: Context,
  before: TopicState | null,
  after: TopicState,
  index: number,
): AppendBatch['peers'] {
  const was = remoteServersOf(ctx, before);
  const is = remoteServersOf(ctx, after);
  const peers: NonNullable<AppendBatch['peers']> = [];
  for (const s of is) if (!was.has(s) || before === null) peers.push({ server: s, until: null });
  for (const s of was) if (!is.has(s)) peers.push({ server: s, until: index });
  return peers.length === 0 ? undefined : peers;
}

/** After a committed append on the host: wake the delivery loop of every server concerned. */
export function wakeReplication(ctx: Context, before: TopicState | null, after: TopicState): void {
  const d = deliveries(ctx);
  for (const s of remoteServersOf(ctx, after)) d.wake(s);
  if (before !== null && before !== after) for (const s of remoteServersOf(ctx, before)) d.wake(s);
}

// ---------------------------------------------------------------------------------------------
// Host: sending

/**
 * Sends the next batch of one topic to one member server and moves its cursor. Returns true
 * if more remains. Throws (for the loop to back off) when the server cannot take it now.
 */
export async function deliverReplication(ctx: Context, r: ReplicationRow): Promise<boolean> {
  const end = Math.min(r.size, r.until === null ? r.size : r.until + 1);
  if (r.nextIndex >= end) return false;
  const rows = await ctx.store.getEntries(r.topicId, r.nextIndex, Math.min(MAX_ENTRIES_PER_DELIVERY, end - r.nextIndex));
  // A batch ends at an entry with a checkpoint (every append signs one for its last entry).
  let cut = -1;
  rows.forEach((e, i) => {
    if (e.checkpoint) cut = i;
  });
  if (cut < 0) throw new Error(`entries ${r.nextIndex}… of topic ${toHex(r.topicId)} have no checkpoint to deliver them with`);
  let batch = rows.slice(0, cut + 1);
  let checkpoint = batch[cut]!.checkpoint!;
  if (ctx.federation.options.testing?.forkFor?.includes(r.server)) ({ batch, checkpoint } = await forkedHistory(ctx, r.topicId, batch));
  const path = `/v1/federation/topics/${toBase64url(r.topicId)}/entries`;
  const res = await ctx.federation.request(r.server, 'POST', path, {
    entries: batch.map((e) => ({ index: e.index, entry: toBase64url(e.entry) })),
    checkpoint: toBase64url(checkpoint),
    ...(r.nextIndex === 0 ? { join: await joinProof(ctx, r.topicId, r.server) } : {}),
  });
  const last = batch[batch.length - 1]!.index;
  ctx.metrics.federation.inc({ kind: 'entries', outcome: res.status === 200 ? 'delivered' : res.status >= 500 ? 'failed' : 'refused' });
  if (res.status === 200) {
    await acceptWitness(ctx, r.topicId, r.server, res.body.cosignature);
    await ctx.store.setReplicationCursor(r.topicId, r.server, last + 1);
    if (r.until !== null && last >= r.until) await deleteIfDeserted(ctx, r.topicId);
    return last + 1 < end;
  }
  const err = errorOf(res.body);
  if (res.status === 409 && err.code === 'federation.gap' && typeof err.details?.have === 'number') {
    // The member server holds fewer entries than the cursor says (restored from a backup, or
    // an answer lost after it stored them): resend from what it has.
    const have = err.details.have;
    if (Number.isSafeInteger(have) && have >= 0 && have < r.nextIndex) {
      ctx.log.warn({ server: r.server, topicId: toBase64url(r.topicId), have }, 'federation: member server is behind its cursor, resending');
      await ctx.store.setReplicationCursor(r.topicId, r.server, have, true);
      return true;
    }
  }
  ctx.log.warn({ server: r.server, topicId: toBase64url(r.topicId), status: res.status, code: err.code, message: err.message }, 'federation: delivery refused');
  const why = `${r.server} refused entries ${r.nextIndex}–${last} of ${toBase64url(r.topicId)}: ${err.code ?? res.status}`;
  // A server that answers, but refuses this topic (it detected a fork, say), must not hold up
  // the other topics it receives: only an error of the server itself backs off the whole loop.
  if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) throw new RefusedTopic(why);
  throw new RendezvousError('federation.unreachable', why);
}

/** A member server refused one topic's delivery (a 4xx): that topic waits, the others go on. */
export class RefusedTopic extends Error {}

/**
 * What a server starting a replica asks for (protocol §17.4): the update that brought its
 * first user in, with an inclusion proof against the host's current checkpoint, so a server
 * never keeps a topic none of its users was ever added to.
 */
async function joinProof(ctx: Context, topicId: Uint8Array, server: string): Promise<Record<string, unknown>> {
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  const cp = decodeCheckpoint(row.checkpoint);
  for (const e of await ctx.store.getUpdates(topicId)) {
    if (e.index >= cp.size) break;
    if (incomingMembers(decodeTopicUpdate(decodeLogEntry(e.entry).body)).some((m) => parseUserId(m.topicKey.user).server === server)) {
      const indexes = inclusionProofIndexes(e.index, cp.size);
      const got = await ctx.store.readHashes(topicId, indexes);
      const proof = inclusionProof(ctx.crypto, e.index, cp.size, hashReaderFromMap(new Map(indexes.map((i, k) => [i, got[k]!]))));
      return { index: e.index, entry: toBase64url(e.entry), proof: proof.map(toBase64url), checkpoint: toBase64url(row.checkpoint) };
    }
  }
  throw new Error(`topic ${toHex(topicId)} never had a member of ${server}`);
}

/**
 * A topic whose last member left is deleted on its host (topics.ts) — once every server of the
 * members who left has received the entries up to their leaving, so none of them keeps a
 * replica in which its users are still members.
 */
async function deleteIfDeserted(ctx: Context, topicId: Uint8Array): Promise<void> {
  if ((await ctx.store.getMembers(topicId)).length > 0 || (await ctx.store.replicationPending(topicId)) > 0) return;
  await deleteTopic(ctx, topicId);
  ctx.log.info({ topicId: toBase64url(topicId) }, 'topic deleted: its last member left and every member server has the log');
}

function errorOf(body: Record<string, unknown>): { code?: string; message?: string; details?: Record<string, unknown> } {
  const e = body.error;
  return typeof e === 'object' && e !== null ? (e as { code?: string; message?: string; details?: Record<string, unknown> }) : {};
}

/**
 * Test mode only (`federation.testing.forkFor`): the history this host shows the named servers
 * differs from the real one — every message entry is re-timestamped one millisecond later — and
 * its checkpoints are signed over that history. A dishonest host, for the fork tests.
 */
async function forkedHistory(ctx: Context, topicId: Uint8Array, batch: EntryRow[]): Promise<{ batch: EntryRow[]; checkpoint: Uint8Array }> {
  const alter = (e: EntryRow): EntryRow => {
    if (e.type !== 'message') return e;
    const le = decodeLogEntry(e.entry);
    return { ...e, entry: encodeLogEntry({ ...le, timestamp: le.timestamp + 1 }) };
  };
  const last = batch[batch.length - 1]!;
  const log = new MemoryLog(ctx.crypto);
  for (const e of await ctx.store.getEntries(topicId, 0, last.index + 1)) log.append(alter(e).entry);
  const real = decodeCheckpoint(last.checkpoint!);
  const cp = signCheckpoint(ctx.crypto, ctx.serverSeed, { origin: ctx.name, topicId, size: log.size, root: log.root(), timestamp: real.timestamp });
  return { batch: batch.map(alter), checkpoint: encodeCheckpoint(cp) };
}

/** A cosignature a member server answered a delivery with: verified, kept, compared (§17.5). */
async function acceptWitness(ctx: Context, topicId: Uint8Array, witness: string, value: unknown): Promise<void> {
  try {
    if (typeof value !== 'string') throw new RendezvousError('federation.bad_response', 'delivery answer without a cosignature');
    const bytes = fromBase64url(value);
    const c = decodeCosignature(bytes);
    if (c.witness !== witness) throw new RendezvousError('federation.bad_response', 'cosignature of another server');
    const cp = verifyCosignature(ctx.crypto, c, await ctx.federation.keyFor(witness, c.keyId));
    await ctx.store.putCosignature(topicId, witness, cp.size, bytes);
    // Compared with the log itself: what a witness vouches for must be this log (it differs
    // only if this host's key signed something else: a fork).
    await compareWithOwnLog(ctx, topicId, witness, cp, c.checkpoint);
  } catch (e) {
    // The entries were delivered; a bad cosignature only means this witness vouches for nothing.
    ctx.log.warn({ witness, topicId: toBase64url(topicId), err: (e as Error).message }, 'federation: cosignature refused');
  }
}

// ---------------------------------------------------------------------------------------------
// Member server: receiving

export interface Delivery {
  entries: { index: number; entry: Uint8Array }[];
  checkpoint: Uint8Array;
  /** Required to start a replica: the update that added a user of this server, proven in the log. */
  join?: { index: number; entry: Uint8Array; proof: Uint8Array[]; checkpoint: Uint8Array };
}

/**
 * A delivery from `origin` (protocol §17.4): checked in the order of the MUST-reject list,
 * stored, announced to this server's devices, cosigned and gossiped. Returns the replica's
 * size and the cosignature.
 */
export async function receiveEntries(ctx: Context, origin: string, topicId: Uint8Array, d: Delivery): Promise<{ size: number; cosignature: string }> {
  if (d.entries.length === 0 || d.entries.length > MAX_ENTRIES_PER_DELIVERY) {
    throw new RendezvousError('request.bad_field', `entries: 1–${MAX_ENTRIES_PER_DELIVERY} per delivery`, { field: 'entries' });
  }
  d.entries.forEach((e, i) => {
    if (e.index !== d.entries[0]!.index + i) throw new RendezvousError('request.bad_field', 'entries must be consecutive', { field: 'entries' });
  });
  return withTopicLock(ctx, toHex(topicId), async () => {
    const row = await ctx.store.getTopic(topicId);
    if (row !== null && row.host === ctx.name) throw new RendezvousError('federation.forbidden', 'this server hosts the topic');
    const t = row === null ? null : await loadTopic(ctx, topicId);
    const host = t?.state.host ?? hostOfCreate(d.entries[0]!);
    if (origin !== host) throw new RendezvousError('federation.forbidden', `${origin} does not host this topic`);
    if ((await ctx.store.listForks(topicId)).length > 0) {
      throw new RendezvousError('log.fork', 'this server detected a fork of the topic and no longer follows its host');
    }
    if (row === null) await checkJoin(ctx, host, topicId, d.join);
    const size = t?.size ?? 0;
    const first = d.entries[0]!.index;
    // 1. Past the end: the host must resend from what this server has.
    if (first > size) throw new RendezvousError('federation.gap', `this server holds ${size} entries`, { have: size });
    // 2. Entries already held must be the same bytes.
    const held = d.entries.filter((e) => e.index < size);
    if (held.length > 0) {
      const stored = await ctx.store.getEntries(topicId, first, held.length);
      for (const [k, e] of held.entries()) {
        if (!equal(stored[k]!.entry, e.entry)) {
          await recordFork(ctx, topicId, 'fork', origin, [row!.checkpoint, d.checkpoint], `entry ${e.index} differs from the one delivered before`);
          throw new RendezvousError('log.fork', `entry ${e.index} differs from the one delivered before`);
        }
      }
    }
    const cp = await hostCheckpoint(ctx, host, topicId, d.checkpoint);
    const fresh = d.entries.filter((e) => e.index >= size);
    const newSize = first + d.entries.length;
    // 3. The host's checkpoint, of the log this delivery ends (one signature, before the entries' many).
    if (cp.size !== newSize) throw new RendezvousError('log.bad_checkpoint', `checkpoint of ${cp.size} entries for a delivery ending at ${newSize}`);
    if (fresh.length === 0) {
      // A redelivery ends at the head it ended at before, at the latest: a host that delivers
      // up to a smaller head than one it already showed this server went back (a restore of
      // an old backup, or a host hiding entries), and whatever it appends next forks the log.
      if (cp.size < size) {
        await recordFork(ctx, topicId, 'rollback', origin, [row!.checkpoint, d.checkpoint], `the host went back from ${size} to ${cp.size} entries`);
        throw new RendezvousError('log.rollback', `this server holds ${size} entries; the host's head is ${cp.size}`);
      }
      // Nothing to store, but its checkpoint must still be of this log.
      await compareWithOwnLog(ctx, topicId, origin, cp, d.checkpoint);
      return { size, cosignature: await cosign(ctx, topicId, d.checkpoint) };
    }
    // 4. Every entry as the host checked it.
    const v = await checkEntries(ctx, topicId, t, fresh);
    // 5. The root over the replica and the new entries is the host's.
    if (!equal(v.root, cp.root)) {
      await recordFork(ctx, topicId, 'fork', origin, row === null ? [d.checkpoint] : [row.checkpoint, d.checkpoint], `the host's checkpoint of ${cp.size} entries does not match the log it delivered`);
      throw new RendezvousError('log.fork', 'the checkpoint root is not the root of the delivered log');
    }
    const batch: AppendBatch = {
      expectedSize: size,
      entries: fresh.map((e, i) => ({ index: e.index, type: v.types[i]!, entry: e.entry })),
      hashes: v.hashes,
      newSize,
      checkpoint: d.checkpoint,
      epochStartSize: v.epochStartSize,
      nonces: v.nonces,
      now: ctx.now(),
      ...(v.membersChanged ? { members: memberRows(v.state) } : {}),
    };
    const written =
      row === null
        ? await ctx.store.createTopic({ topicId, host, createdAt: decodeLogEntry(fresh[0]!.entry).timestamp }, batch)
        : await ctx.store.append(topicId, batch);
    remember(ctx, toHex(topicId), {
      state: v.state,
      size: newSize,
      epochStartSize: v.epochStartSize,
      root: v.root,
      lastTimestamp: v.lastTimestamp,
      pending: t?.pending ?? noPending(),
    });
    announce(ctx, topicId, t?.state ?? null, v.state, '', liveCommit(topicId, batch.entries, batch.checkpoint, written));
    const cosignature = await cosign(ctx, topicId, d.checkpoint);
    await gossip(ctx, topicId, v.state, host, cosignature);
    await recheckWitnesses(ctx, topicId, size, newSize);
    return { size: newSize, cosignature };
  });
}

/**
 * A new replica is only started for a topic one of this server's users was added to: the
 * update that added them, included in a checkpoint the host signed, with the user's topic key
 * certified by the identity key registered here (which the host cannot forge).
 */
async function checkJoin(ctx: Context, host: string, topicId: Uint8Array, join: Delivery['join']): Promise<void> {
  const refuse = (why: string) => new RendezvousError('federation.forbidden', `no user of ${ctx.name} is a member of this topic: ${why}`);
  if (join === undefined) throw refuse('a first delivery must prove the update that added one');
  const cp = await hostCheckpoint(ctx, host, topicId, join.checkpoint);
  if (!Number.isSafeInteger(join.index) || join.index < 0 || join.index >= cp.size) throw refuse('the joining update is outside the checkpoint');
  try {
    verifyInclusion(ctx.crypto, join.index, cp.size, entryLeafHash(ctx.crypto, join.entry), join.proof, cp.root);
  } catch {
    throw refuse('the joining update is not in the log the host signed');
  }
  const le = decodeLogEntry(join.entry);
  if (le.type !== 'update') throw refuse('the joining entry is not an update');
  for (const m of incomingMembers(decodeTopicUpdate(le.body))) {
    if (parseUserId(m.topicKey.user).server !== ctx.name) continue;
    const u = await ctx.store.getUser(m.topicKey.user);
    if (u === null) continue;
    try {
      verifyTopicKey(ctx.crypto, m.topicKey, u.identityKey);
      return;
    } catch {
      // not certified by this user: look at the next member
    }
  }
  throw refuse('the update adds nobody registered here with a key they certified');
}

function hostOfCreate(e: { index: number; entry: Uint8Array }): string {
  if (e.index !== 0) throw new RendezvousError('federation.gap', 'this server holds no entry of the topic', { have: 0 });
  const le = decodeLogEntry(e.entry);
  const u = le.type === 'update' ? decodeTopicUpdate(le.body) : null;
  if (u?.action.type !== 'create') throw new RendezvousError('topic.bad_parent', 'entry 0 of a topic must be its create');
  return u.action.host;
}

/** Decodes and verifies a checkpoint of `host` for the topic (protocol §10, §17.4 rule 4). */
async function hostCheckpoint(ctx: Context, host: string, topicId: Uint8Array, bytes: Uint8Array): Promise<Checkpoint> {
  let cp: Checkpoint;
  try {
    cp = decodeCheckpoint(bytes);
  } catch {
    throw new RendezvousError('log.bad_checkpoint', 'checkpoint does not decode');
  }
  if (cp.origin !== host) throw new RendezvousError('log.bad_checkpoint', `checkpoint signed by ${cp.origin}, the topic is hosted by ${host}`);
  let key: Uint8Array;
  try {
    key = await ctx.federation.keyFor(host, cp.keyId);
  } catch (e) {
    if (isRendezvousError(e, 'federation.unknown_key')) throw new RendezvousError('log.bad_checkpoint', 'checkpoint signed by a key the host does not publish');
    throw e;
  }
  verifyCheckpoint(ctx.crypto, cp, key, topicId);
  return cp;
}

interface Checked {
  state: TopicState;
  types: EntryType[];
  hashes: { index: number; hash: Uint8Array }[];
  root: Uint8Array;
  epochStartSize: number;
  lastTimestamp: number;
  nonces: Uint8Array[];
  membersChanged: boolean;
}

/**
 * Runs the host's checks over new entries, in order, against the replica's state: updates
 * through the state machine (certificates of this server's own users against their
 * registered identity keys), messages through checkMessage with roots of the log as extended
 * so far, timestamps non-decreasing. Builds the stored hashes and the new root on the way.
 */
async function checkEntries(ctx: Context, topicId: Uint8Array, t: LoadedTopic | null, fresh: { index: number; entry: Uint8Array }[]): Promise<Checked> {
  let state = t?.state ?? null;
  let epochStartSize = t?.epochStartSize ?? 0;
  let lastTimestamp = t?.lastTimestamp ?? 0;
  let membersChanged = false;
  const types: EntryType[] = [];
  const nonces: Uint8Array[] = [];
  const seen = new Set<string>();
  const known = new Map<number, Uint8Array>();
  const newHashes: { index: number; hash: Uint8Array }[] = [];
  const hashes = async (indexes: number[]) => {
    const missing = indexes.filter((i) => !known.has(i));
    if (missing.length > 0) for (const [i, h] of await readHashes(ctx, topicId, t, missing)) known.set(i, h);
    return hashReaderFromMap(known);
  };
  const localKeys = await localIdentities(ctx, fresh);
  for (const e of fresh) {
    const n = e.index;
    const le = decodeLogEntry(e.entry);
    if (le.timestamp < lastTimestamp) throw new RendezvousError('log.reorder', `entry ${n} is older than the entry before it`);
    if (le.type === 'update') {
      const u = decodeTopicUpdate(le.body);
      if ((n === 0) !== (u.action.type === 'create')) throw new RendezvousError('topic.bad_parent', 'entry 0, and only entry 0, is a create');
      state = applyUpdate(ctx.crypto, state, u, {
        maxMembers: MAX_MEMBERS,
        checkIdentity: (user, key) => {
          const mine = localKeys.get(user);
          if (parseUserId(user).server === ctx.name && (mine === undefined || !equal(mine, key))) {
            throw new RendezvousError('crypto.bad_certificate', `topic key of ${user} is not certified by their registered identity key`);
          }
        },
      });
      if (u.commitment !== null) epochStartSize = n + 1;
      membersChanged = true;
    } else {
      if (state === null) throw new RendezvousError('topic.bad_parent', 'entry 0 of a topic must be its create');
      const m = decodeMessage(le.body);
      const headRoot = m.headSize >= 1 && m.headSize <= n ? treeHash(ctx.crypto, m.headSize, await hashes(treeHashIndexes(m.headSize))) : null;
      const nonce = toHex(m.nonce);
      const dup = seen.has(nonce) || (await ctx.store.hasNonce(topicId, m.nonce));
      checkMessage(ctx.crypto, state, topicId, m, {
        logSize: n,
        epochStartSize,
        rootAt: () => headRoot!,
        seen: () => dup,
      });
      seen.add(nonce);
      nonces.push(m.nonce);
    }
    types.push(le.type);
    lastTimestamp = le.timestamp;
    const add = storedHashesForLeafHash(ctx.crypto, n, entryLeafHash(ctx.crypto, e.entry), await hashes(storedHashesIndexes(n)));
    const base = storedHashIndex(0, n);
    add.forEach((hash, k) => {
      known.set(base + k, hash);
      newHashes.push({ index: base + k, hash });
    });
  }
  const size = fresh[fresh.length - 1]!.index + 1;
  const root = treeHash(ctx.crypto, size, await hashes(treeHashIndexes(size)));
  return { state: state!, types, hashes: newHashes, root, epochStartSize, lastTimestamp, nonces, membersChanged };
}

/** Registered identity keys of this server's users that the entries' updates bring in. */
async function localIdentities(ctx: Context, entries: { entry: Uint8Array }[]): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const e of entries) {
    const le = decodeLogEntry(e.entry);
    if (le.type !== 'update') continue;
    for (const m of incomingMembers(decodeTopicUpdate(le.body))) {
      const user = m.topicKey.user;
      if (parseUserId(user).server !== ctx.name || out.has(user)) continue;
      const row = await ctx.store.getUser(user);
      if (row === null) throw new RendezvousError('user.unknown', `no user ${user} on ${ctx.name}`);
      out.set(user, row.identityKey);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Witnessing (protocol §17.5)

/** This server's cosignature over a host checkpoint it verified; kept as its own witness entry. */
async function cosign(ctx: Context, topicId: Uint8Array, checkpoint: Uint8Array): Promise<string> {
  const c = signCosignature(ctx.crypto, ctx.serverSeed, { witness: ctx.name, checkpoint, timestamp: ctx.now() });
  const bytes = encodeCosignature(c);
  await ctx.store.putCosignature(topicId, ctx.name, decodeCheckpoint(checkpoint).size, bytes);
  return toBase64url(bytes);
}

/** Sends the cosignature to every other member server (one pending per topic and server). */
async function gossip(ctx: Context, topicId: Uint8Array, state: TopicState, host: string, cosignature: string): Promise<void> {
  const d = deliveries(ctx);
  for (const server of remoteServersOf(ctx, state)) {
    if (server === host) continue;
    await ctx.store.addOutbox({
      destination: server,
      kind: 'witness',
      topicId,
      coalesceKey: `witness:${toHex(topicId)}`,
      payload: JSON.stringify({ path: `/v1/federation/topics/${toBase64url(topicId)}/witness`, body: { cosignature } }),
      createdAt: ctx.now(),
    });
    d.wake(server);
  }
}

/** A cosignature gossiped by another member server (POST /v1/federation/topics/:id/witness). */
export async function receiveCosignature(ctx: Context, origin: string, topicId: Uint8Array, bytes: Uint8Array): Promise<void> {
  const c = decodeCosignature(bytes);
  if (c.witness !== origin) throw new RendezvousError('federation.forbidden', 'a server sends only its own cosignatures');
  const t = await loadTopic(ctx, topicId);
  if (!remoteServersOf(ctx, t.state).has(origin)) throw new RendezvousError('federation.forbidden', `${origin} has no member in this topic`);
  const cp = verifyCosignature(ctx.crypto, c, await ctx.federation.keyFor(origin, c.keyId));
  const host = t.state.host;
  const verified = await hostCheckpoint(ctx, host, topicId, c.checkpoint);
  await ctx.store.putCosignature(topicId, origin, cp.size, bytes);
  await compareWithOwnLog(ctx, topicId, origin, verified, c.checkpoint);
}

/**
 * Compares a host checkpoint that another server vouches for with this server's own log: at a
 * size this server holds, the roots must be equal. A later size is checked when the replica
 * gets there (recheckWitnesses).
 */
async function compareWithOwnLog(ctx: Context, topicId: Uint8Array, server: string, cp: Checkpoint, cpBytes: Uint8Array): Promise<void> {
  const row = await ctx.store.getTopic(topicId);
  if (row === null || cp.size > row.size || cp.size === 0) return;
  const root = await rootAt(ctx, topicId, cp.size);
  if (equal(root, cp.root)) return;
  const [own] = await ctx.store.getEntries(topicId, cp.size - 1, 1);
  const mine = own?.checkpoint ?? row.checkpoint;
  await recordFork(ctx, topicId, 'fork', server, [mine, cpBytes], `a checkpoint of ${cp.size} entries that ${server} saw differs from this server's log`);
}

async function rootAt(ctx: Context, topicId: Uint8Array, size: number): Promise<Uint8Array> {
  const indexes = treeHashIndexes(size);
  const got = await ctx.store.readHashes(topicId, indexes);
  return treeHash(ctx.crypto, size, hashReaderFromMap(new Map(indexes.map((i, k) => [i, got[k]!]))));
}

/** Cosignatures of other witnesses for sizes the replica has just reached. */
async function recheckWitnesses(ctx: Context, topicId: Uint8Array, from: number, to: number): Promise<void> {
  for (const w of await ctx.store.listCosignatures(topicId)) {
    if (w.witness === ctx.name || w.size <= from || w.size > to) continue;
    const c = decodeCosignature(w.cosignature);
    await compareWithOwnLog(ctx, topicId, w.witness, decodeCheckpoint(c.checkpoint), c.checkpoint);
  }
}

/** Records a detected fork or rollback with its evidence, once per conflicting checkpoint. */
export async function recordFork(
  ctx: Context,
  topicId: Uint8Array,
  kind: 'fork' | 'rollback',
  server: string,
  checkpoints: Uint8Array[],
  detail: string,
): Promise<void> {
  const evidence = { checkpoints: checkpoints.map(toBase64url), detail };
  const known = await ctx.store.listForks(topicId);
  if (known.some((f) => f.evidence === JSON.stringify(evidence))) return;
  await ctx.store.addFork({ topicId, kind, server, evidence: JSON.stringify(evidence), createdAt: ctx.now() });
  ctx.metrics.errors.inc({ code: `log.${kind}` });
  ctx.log.error({ topicId: toBase64url(topicId), server, kind, detail }, 'federation: fork detected');
}
