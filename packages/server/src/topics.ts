/**
 * Topics and their logs on the host server (docs/server.md §Topics; protocol §7–§11).
 *
 * Every submission is validated with the protocol core before anything is stored: updates
 * through `applyUpdate` (admin signature, roles, epochs, certificates against the identity keys
 * registered here, key shares), messages through `checkMessage` (membership, observers, epoch,
 * head, replay, signature over the log root the sender saw). Then one entry is appended to the
 * topic's single log with its new Merkle stored hashes and a signed checkpoint, atomically with
 * the idempotency record of the request.
 *
 * Appends to one topic are serialized by a per-topic lock, and each topic's state is kept in a
 * bounded in-memory cache, rebuilt by replaying the topic's updates when it is evicted. The
 * cache is only ever changed after the store has committed, so a failed append leaves both as
 * they were.
 */
import {
  MAX_MEMBERS,
  RendezvousError,
  applyUpdate,
  checkMessage,
  decodeCheckpoint,
  decodeLogEntry,
  decodeMessage,
  decodeTopicUpdate,
  encodeCheckpoint,
  encodeLogEntry,
  entryLeafHash,
  equal,
  hashReaderFromMap,
  isRendezvousError,
  incomingMembers,
  memberByUser,
  messageSignedContent,
  parseUserId,
  signCheckpoint,
  storedHashIndex,
  storedHashesForLeafHash,
  storedHashesIndexes,
  toBase64url,
  toHex,
  treeHash,
  treeHashIndexes,
  inclusionProof,
  inclusionProofIndexes,
  consistencyProof,
  consistencyProofIndexes,
  type EntryType,
  type Member,
  type SignatureTriple,
  type TopicState,
  type TopicUpdate,
} from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context } from './context.ts';
import { removeTopic } from './files.ts';
import type { AppendBatch, IdempotencyRow, MemberRow, TopicRow, WrittenEvent } from './storage/store.ts';
import { liveCommit, type LiveCommit } from './events.ts';
import { idempotencyRow, once, type Outcome, type Submission } from './idempotency.ts';
import { forwardSubmission, remoteIdentity } from './federation/forward.ts';
import { remoteServersOf, replicationPeers, wakeReplication } from './federation/replica.ts';

export { submission, type Outcome, type Submission } from './idempotency.ts';

// ---------------------------------------------------------------------------------------------
// Topic cache and per-topic lock

export interface LoadedTopic {
  state: TopicState;
  size: number;
  epochStartSize: number;
  root: Uint8Array;
  /** Timestamp of the last entry: entry timestamps never go backwards (protocol §11.3). */
  lastTimestamp: number;
  /**
   * Stored hashes of appends handed to the store but not yet committed (group commit, see
   * submit): the next append builds on them. Shared by the successive cache values of a topic.
   */
  pending: Pending;
}

interface Pending {
  hashes: Map<number, Uint8Array>;
  /** Nonces (hex) of uncommitted messages: a second post of one is `topic.replay` at once. */
  nonces: Set<string>;
}

export const noPending = (): Pending => ({ hashes: new Map(), nonces: new Set() });

/**
 * The cache is bounded by members, not topics: a topic's state grows with its members, and a
 * miss costs a replay of its updates that grows with them too (a 10-member topic ≈ 10 ms). 10,000
 * topics of 10 members stay cached; so do 200 topics of 1,000. Each topic weighs its member
 * count plus CACHE_TOPIC_WEIGHT for what every topic holds whatever its size.
 */
const CACHE_MEMBERS = 150_000;
const CACHE_TOPIC_WEIGHT = 4;

const weight = (t: LoadedTopic) => t.state.members.size + CACHE_TOPIC_WEIGHT;

interface TopicRuntime {
  /** Least recently used first. */
  cache: Map<string, LoadedTopic>;
  cacheWeight: number;
  locks: Map<string, Promise<unknown>>;
}

const runtimes = new WeakMap<Context, TopicRuntime>();

function runtime(ctx: Context): TopicRuntime {
  let r = runtimes.get(ctx);
  if (r === undefined) {
    r = { cache: new Map(), cacheWeight: 0, locks: new Map() };
    runtimes.set(ctx, r);
  }
  return r;
}

/** Runs `fn` after every earlier call for the same topic has settled. */
export async function withTopicLock<T>(ctx: Context, key: string, fn: () => Promise<T>): Promise<T> {
  const { locks } = runtime(ctx);
  const prev = locks.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.catch(() => undefined);
  locks.set(key, tail);
  try {
    return await run;
  } finally {
    if (locks.get(key) === tail) locks.delete(key);
  }
}

/** The topic's current state, from the cache or rebuilt from its updates; `topic.unknown` if none. */
export async function loadTopic(ctx: Context, topicId: Uint8Array): Promise<LoadedTopic> {
  const { cache } = runtime(ctx);
  const key = toHex(topicId);
  const hit = cache.get(key);
  if (hit !== undefined) {
    remember(ctx, key, hit);
    return hit;
  }
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  let state: TopicState | null = null;
  // Updates were fully validated when they were appended; replaying them through the same
  // state machine (rather than trusting a cached copy) keeps one definition of the state.
  for (const e of await ctx.store.getUpdates(topicId)) {
    state = applyUpdate(ctx.crypto, state, decodeTopicUpdate(decodeLogEntry(e.entry).body), { maxMembers: MAX_MEMBERS });
  }
  if (state === null) throw new Error(`topic ${key} has no create update`);
  const cp = decodeCheckpoint(row.checkpoint);
  const loaded = { state, size: row.size, epochStartSize: row.epochStartSize, root: cp.root, lastTimestamp: cp.timestamp, pending: noPending() };
  remember(ctx, key, loaded);
  return loaded;
}

export function remember(ctx: Context, key: string, t: LoadedTopic): void {
  const r = runtime(ctx);
  drop(r, key);
  r.cache.set(key, t);
  r.cacheWeight += weight(t);
  // Evict the least recently used, but never the topic just remembered.
  while (r.cacheWeight > CACHE_MEMBERS && r.cache.size > 1) drop(r, r.cache.keys().next().value!);
}

function drop(r: TopicRuntime, key: string): void {
  const old = r.cache.get(key);
  if (old === undefined) return;
  r.cache.delete(key);
  r.cacheWeight -= weight(old);
}

export function forget(ctx: Context, topicId: Uint8Array): void {
  drop(runtime(ctx), toHex(topicId));
}

// ---------------------------------------------------------------------------------------------
// Appending (protocol §9–§10)

/** Stored hashes by index: uncommitted ones from the topic's pending map, the rest from the store. */
export async function readHashes(ctx: Context, topicId: Uint8Array, t: LoadedTopic | null, indexes: number[]): Promise<Map<number, Uint8Array>> {
  const out = new Map<number, Uint8Array>();
  const missing: number[] = [];
  for (const i of indexes) {
    const h = t?.pending.hashes.get(i);
    if (h !== undefined) out.set(i, h);
    else missing.push(i);
  }
  const got = await ctx.store.readHashes(topicId, missing);
  missing.forEach((i, k) => out.set(i, got[k]!));
  return out;
}

interface Appended {
  index: number;
  size: number;
  checkpoint: Uint8Array;
  root: Uint8Array;
  timestamp: number;
  batch: AppendBatch;
}

/**
 * What a topic's appends keep for the next ones, by the topic's `pending` object (which the
 * successive cache values of one loaded topic share, and a reload or a create replaces):
 * `edge`, the stored hashes the last append read and made (the roots of the log's perfect
 * subtrees and the new leaf's path), most of what the next append needs; and `roots`, the
 * roots of the ROOTS_KEPT sizes last appended or used by a message sent at an older head
 * (validateMessage). A stored hash never changes once written, and each value here is one
 * this topic's appends build on (read from the pending map or the store, or computed for the
 * entry appended at its index), so a hit is what a read would give. A build that is never
 * enqueued leaves its new leaf's hashes and root here, but the topic's size has not moved: the
 * next build at that size writes its own before anything reads them (the indexes it reads
 * first are older; validateMessage only asks for sizes below the topic's). Replicas of topics
 * hosted elsewhere never build appends here, so they have no memo.
 */
interface AppendMemo {
  edge: Map<number, Uint8Array>;
  roots: Map<number, Uint8Array>;
}
const appendMemos = new WeakMap<Pending, AppendMemo>();
/** Small: a memo lives as long as its topic is cached (≈ 2–4 KiB with the edge). */
const ROOTS_KEPT = 8;

/** The root of the topic's log at `size`, if its memo keeps it. */
const memoRoot = (t: LoadedTopic, size: number) => appendMemos.get(t.pending)?.roots.get(size);

/** Keeps `root` as the most recently used of a memo's roots. */
function keepRoot(roots: Map<number, Uint8Array>, size: number, root: Uint8Array): void {
  roots.delete(size);
  roots.set(size, root);
  if (roots.size > ROOTS_KEPT) roots.delete(roots.keys().next().value!);
}

/**
 * Builds the batch that appends one entry after `size` entries: the log entry, its stored
 * hashes (merkle.ts tlog layout), the new root and a checkpoint signed by this server.
 */
async function buildAppend(
  ctx: Context,
  topicId: Uint8Array,
  prev: LoadedTopic | null,
  type: EntryType,
  body: Uint8Array,
): Promise<Appended> {
  const n = prev?.size ?? 0;
  const timestamp = Math.max(ctx.now(), prev?.lastTimestamp ?? 0);
  const entry = encodeLogEntry({ type, timestamp, body });
  const hashes = new Map<number, Uint8Array>();
  const edge = prev === null ? undefined : appendMemos.get(prev.pending)?.edge;
  const fetch = async (indexes: number[]) => {
    const missing: number[] = [];
    for (const i of indexes) {
      if (hashes.has(i)) continue;
      const h = edge?.get(i);
      if (h !== undefined) hashes.set(i, h);
      else missing.push(i);
    }
    if (missing.length === 0) return;
    const got = await readHashes(ctx, topicId, prev, missing);
    for (const [i, h] of got) hashes.set(i, h);
  };
  await fetch(storedHashesIndexes(n));
  const fresh = storedHashesForLeafHash(ctx.crypto, n, entryLeafHash(ctx.crypto, entry), hashReaderFromMap(hashes));
  const base = storedHashIndex(0, n);
  fresh.forEach((h, k) => hashes.set(base + k, h));
  await fetch(treeHashIndexes(n + 1));
  const root = treeHash(ctx.crypto, n + 1, hashReaderFromMap(hashes));
  if (prev !== null) {
    const memo = appendMemos.get(prev.pending);
    if (memo === undefined) appendMemos.set(prev.pending, { edge: hashes, roots: new Map([[n + 1, root]]) });
    else {
      memo.edge = hashes;
      keepRoot(memo.roots, n + 1, root);
    }
  }
  const checkpoint = encodeCheckpoint(signCheckpoint(ctx.crypto, ctx.serverSeed, { origin: ctx.name, topicId, size: n + 1, root, timestamp }));
  return {
    index: n,
    size: n + 1,
    checkpoint,
    root,
    timestamp,
    batch: {
      expectedSize: n,
      entries: [{ index: n, type, entry }],
      hashes: fresh.map((hash, k) => ({ index: base + k, hash })),
      newSize: n + 1,
      checkpoint,
      epochStartSize: prev?.epochStartSize ?? 0,
      nonces: [],
      now: ctx.now(),
    },
  };
}

export function memberRows(state: TopicState): MemberRow[] {
  return [...state.members.values()].map((m) => ({ memberId: m.id, user: m.topicKey.user, role: m.role }));
}

function appendedBody(a: Appended): Record<string, unknown> {
  return { index: a.index, size: a.size, checkpoint: toBase64url(a.checkpoint) };
}

/**
 * What a validated submission hands back: its answer, and `commit`, which gives the append to
 * the store (synchronously enqueued for the next group commit), updates the cache as if it had
 * committed, and returns the promise of durability.
 */
interface Prepared {
  outcome: Outcome;
  commit: (idem: IdempotencyRow) => Promise<void>;
}

/**
 * Runs a submission with idempotency and per-topic ordering (docs/server.md §Idempotency).
 *
 * The topic lock covers validation and enqueueing only, not the fsync: the next submission to
 * the same topic validates against the state its predecessor will commit, so appends to one
 * topic share group commits too. The answer is sent only once the append is durable. If a
 * commit fails, the cached state is dropped and appends built on it fail with `store.conflict`
 * (the store checks every append's expected size), so nothing is acknowledged that is not stored.
 *
 * Idempotency (replay, concurrent retries) is `once`'s (idempotency.ts).
 */
async function submit(ctx: Context, caller: Caller, sub: Submission, topicId: Uint8Array, run: () => Promise<Prepared>): Promise<Outcome> {
  return once(ctx, caller, sub, async () => {
    const step = await withTopicLock(ctx, toHex(topicId), async () => {
      const { outcome, commit } = await run();
      return { outcome, durable: commit(idempotencyRow(ctx, caller, sub, outcome)) };
    });
    try {
      await step.durable;
    } catch (e) {
      forget(ctx, topicId);
      throw e;
    }
    return step.outcome;
  });
}

/**
 * Enqueues an append and advances the cached topic to `next` at once; on commit, drops the
 * appended hashes from the pending map (they are in the store now) and wakes live delivery.
 */
function enqueue(
  ctx: Context,
  topicId: Uint8Array,
  a: Appended,
  idem: IdempotencyRow,
  next: Omit<LoadedTopic, 'pending'>,
  pending: Pending,
  before: TopicState | null,
  store: (batch: AppendBatch) => Promise<WrittenEvent[]>,
): Promise<void> {
  const end = ctx.metrics.storageSeconds.startTimer({ op: 'append' });
  const durable = store({ ...a.batch, idempotency: idem });
  for (const h of a.batch.hashes) pending.hashes.set(h.index, h.hash);
  for (const n of a.batch.nonces) pending.nonces.add(toHex(n));
  remember(ctx, toHex(topicId), { ...next, pending });
  const settle = () => {
    for (const h of a.batch.hashes) pending.hashes.delete(h.index);
    for (const n of a.batch.nonces) pending.nonces.delete(toHex(n));
  };
  return durable.then(
    (written) => {
      end();
      settle();
      announce(ctx, topicId, before, next.state, idem.deviceId, liveCommit(topicId, a.batch.entries, a.batch.checkpoint, written));
      if (next.state.host === ctx.name) wakeReplication(ctx, before, next.state);
    },
    (e: unknown) => {
      settle();
      throw e;
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Create and update

/**
 * Prefetches the registered identity keys of everyone an update brings in, so the state
 * machine can check certificates against them synchronously (ApplyOptions.checkIdentity).
 */
async function identityChecker(ctx: Context, u: TopicUpdate): Promise<(user: string, key: Uint8Array) => void> {
  const incoming = incomingMembers(u);
  const keys = new Map<string, Uint8Array>();
  for (const m of incoming.slice(0, MAX_MEMBERS)) {
    const user = m.topicKey.user;
    if (keys.has(user)) continue;
    if (parseUserId(user).server !== ctx.name) {
      // A user of another server: the identity key pinned for them, fetched from their home
      // server on first use (protocol §17.4).
      keys.set(user, await remoteIdentity(ctx, user));
      continue;
    }
    const row = await ctx.store.getUser(user);
    if (row === null) throw new RendezvousError('user.unknown', `no user ${user} on ${ctx.name}`);
    keys.set(user, row.identityKey);
  }
  return (user, key) => {
    const known = keys.get(user);
    if (known === undefined || !equal(known, key)) {
      throw new RendezvousError('crypto.bad_certificate', `topic key of ${user} is not certified by their registered identity key`);
    }
  };
}

/** The member who signed `u`, by the state it applies to (or the create's own member list). */
function signerOf(state: TopicState | null, u: TopicUpdate): Member | undefined {
  return u.action.type === 'create' ? u.action.members[u.signer] : state?.members.get(u.signer);
}

export async function createTopic(ctx: Context, caller: Caller, sub: Submission, encoded: Uint8Array): Promise<Outcome> {
  const u = decodeTopicUpdate(encoded);
  if (u.action.type !== 'create') throw new RendezvousError('request.bad_field', 'expected a create update', { field: 'update' });
  const host = u.action.host;
  if (host !== ctx.name) throw new RendezvousError('topic.wrong_host', `this server is ${ctx.name}; the topic names ${host}`);
  if (signerOf(null, u)?.topicKey.user !== caller.user) {
    throw new RendezvousError('auth.forbidden', 'a topic is created by the member who signs its create update');
  }
  // Identity keys of members of other servers may take a federation request: fetched before
  // the topic lock, which must never wait on another server.
  const checkIdentity = await identityChecker(ctx, u);
  return submit(ctx, caller, sub, u.topicId, async () => {
    if ((await ctx.store.getTopic(u.topicId)) !== null) throw new RendezvousError('topic.exists');
    const state = applyUpdate(ctx.crypto, null, u, { checkIdentity, maxMembers: MAX_MEMBERS });
    const a = await buildAppend(ctx, u.topicId, null, 'update', encoded);
    a.batch.epochStartSize = a.size;
    a.batch.members = memberRows(state);
    a.batch.peers = replicationPeers(ctx, null, state, a.index);
    const outcome: Outcome = { status: 201, body: { topicId: toBase64url(u.topicId), ...appendedBody(a) } };
    return {
      outcome,
      commit: (idem) =>
        enqueue(ctx, u.topicId, a, idem, { state, size: a.size, epochStartSize: a.size, root: a.root, lastTimestamp: a.timestamp }, noPending(), null, (b) =>
          ctx.store.createTopic({ topicId: u.topicId, host, createdAt: a.timestamp }, b),
        ),
    };
  });
}

export async function updateTopic(ctx: Context, caller: Caller, sub: Submission, topicId: Uint8Array, encoded: Uint8Array): Promise<Outcome> {
  const u = decodeTopicUpdate(encoded);
  if (!equal(u.topicId, topicId)) throw new RendezvousError('topic.wrong_topic', 'the update names another topic');
  if (u.action.type === 'create') throw new RendezvousError('topic.exists', 'a create update makes a new topic: POST /v1/topics');
  const signedByCaller = (t: LoadedTopic) => {
    requireMember(t.state, caller);
    if (signerOf(t.state, u)?.topicKey.user !== caller.user) {
      throw new RendezvousError('auth.forbidden', 'an update is submitted by the member who signs it');
    }
  };
  if ((await loadTopic(ctx, topicId)).state.host !== ctx.name) {
    // Hosted elsewhere: check what the replica can tell, then forward (protocol §17.4). The
    // host checks certificates against the members' identity keys.
    return forwardSubmission(ctx, caller, sub, topicId, 'update', encoded, async (t) => {
      signedByCaller(t);
      applyUpdate(ctx.crypto, t.state, u, { maxMembers: MAX_MEMBERS });
    });
  }
  const checkIdentity = await identityChecker(ctx, u);
  return submit(ctx, caller, sub, topicId, async () => {
    const t = await loadTopic(ctx, topicId);
    signedByCaller(t);
    const state = applyUpdate(ctx.crypto, t.state, u, { checkIdentity, maxMembers: MAX_MEMBERS });
    const a = await buildAppend(ctx, topicId, t, 'update', encoded);
    const newEpoch = u.commitment !== null;
    if (newEpoch) a.batch.epochStartSize = a.size;
    a.batch.members = memberRows(state);
    a.batch.peers = replicationPeers(ctx, t.state, state, a.index);
    const outcome: Outcome = { status: 201, body: appendedBody(a) };
    return {
      outcome,
      commit: (idem) =>
        enqueue(
          ctx,
          topicId,
          a,
          idem,
          { state, size: a.size, epochStartSize: a.batch.epochStartSize, root: a.root, lastTimestamp: a.timestamp },
          t.pending,
          t.state,
          (b) => ctx.store.append(topicId, b),
        ).then(async () => {
          // The last member left: nobody can read the topic any more, so it goes with its files;
          // once the servers of the members who were here have the last entries (replica.ts).
          if (state.members.size === 0 && remoteServersOf(ctx, t.state).size === 0) await deleteTopic(ctx, topicId);
        }),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Messages (protocol §8.4)

export async function postMessage(ctx: Context, caller: Caller, sub: Submission, topicId: Uint8Array, encoded: Uint8Array): Promise<Outcome> {
  const m = decodeMessage(encoded);
  const cached = await loadTopic(ctx, topicId);
  if (cached.state.host !== ctx.name) {
    return forwardSubmission(ctx, caller, sub, topicId, 'message', encoded, (t) => validateMessage(ctx, caller, topicId, t, m));
  }
  const ahead = await verifyAhead(ctx, topicId, cached, m);
  try {
    return await submit(ctx, caller, sub, topicId, async () => {
      const t = await loadTopic(ctx, topicId);
      await validateMessage(ctx, caller, topicId, t, m);
      const a = await buildAppend(ctx, topicId, t, 'message', encoded);
      a.batch.nonces = [m.nonce];
      const outcome: Outcome = { status: 201, body: appendedBody(a) };
      return {
        outcome,
        commit: (idem) =>
          enqueue(ctx, topicId, a, idem, { ...t, size: a.size, root: a.root, lastTimestamp: a.timestamp }, t.pending, t.state, (b) =>
            ctx.store.append(topicId, b),
          ),
      };
    });
  } finally {
    // Used by checkMessage (taken) or not: nothing outlives its submission.
    if (ahead !== null) ctx.verify.verified.remove(ahead);
  }
}

/**
 * Verifies a message's signature on a worker thread before its submission waits for the topic
 * lock (issue 7: the main thread is the server's bottleneck): a guess, from the cached topic, of
 * the triple checkMessage will verify: the sender's signature key in the current state and the
 * signed bytes over the root at the message's head, when that root is at hand without a read
 * (the current one, or one the append memo keeps). A triple the worker found valid is added to
 * ctx.verify.verified and returned (the caller removes it when the submission ends). A wrong
 * guess (the state or the log moved meanwhile, another sender) never matches what checkMessage
 * asks, so that signature is verified inline: every check still runs under the lock.
 */
async function verifyAhead(ctx: Context, topicId: Uint8Array, t: LoadedTopic, m: ReturnType<typeof decodeMessage>): Promise<SignatureTriple | null> {
  const { pool, verified } = ctx.verify;
  if (pool === null) return null;
  const sender = t.state.members.get(m.sender);
  if (sender === undefined) return null;
  const root = m.headSize === t.size ? t.root : memoRoot(t, m.headSize);
  if (root === undefined) return null;
  const triple: SignatureTriple = { publicKey: sender.topicKey.signatureKey, message: messageSignedContent(topicId, m, root), signature: m.signature };
  if (!(await pool.verify(triple))) return null;
  verified.add(triple);
  return triple;
}

/** Every check of protocol §8.4 against the topic as this server holds it, plus: the caller is the sender. */
async function validateMessage(ctx: Context, caller: Caller, topicId: Uint8Array, t: LoadedTopic, m: ReturnType<typeof decodeMessage>): Promise<void> {
  const me = requireMember(t.state, caller);
  if (m.sender !== me.id) throw new RendezvousError('auth.forbidden', 'a message is submitted by the member who sends it');
  // checkMessage reads these synchronously; fetch the root at the sender's head (usually the
  // current one) and whether the nonce is taken.
  let rootAtHead: Uint8Array | null = null;
  if (m.headSize === t.size) rootAtHead = t.root;
  else if (m.headSize >= 1 && m.headSize < t.size) {
    rootAtHead =
      memoRoot(t, m.headSize) ?? treeHash(ctx.crypto, m.headSize, hashReaderFromMap(await readHashes(ctx, topicId, t, treeHashIndexes(m.headSize))));
    const roots = appendMemos.get(t.pending)?.roots;
    if (roots !== undefined) keepRoot(roots, m.headSize, rootAtHead);
  }
  const seen = t.pending.nonces.has(toHex(m.nonce)) || (await ctx.store.hasNonce(topicId, m.nonce));
  // ctx.verify.crypto: a signature a worker verified ahead (postMessage) is not verified again.
  checkMessage(ctx.verify.crypto, t.state, topicId, m, {
    logSize: t.size,
    epochStartSize: t.epochStartSize,
    rootAt: (size) => {
      if (size !== m.headSize || rootAtHead === null) throw new Error('rootAt called outside the checked head range');
      return rootAtHead;
    },
    seen: () => seen,
  });
}

/**
 * Wakes live connections (and push, push.ts) of everyone the entry concerns: members before and
 * after it. `deviceId` is the device that posted it, which needs no wake-up.
 */
export function announce(
  ctx: Context,
  topicId: Uint8Array,
  before: TopicState | null,
  after: TopicState,
  deviceId: string,
  live: LiveCommit | undefined,
): void {
  const users = new Set<string>();
  for (const m of after.members.values()) users.add(m.topicKey.user);
  if (before !== null && before !== after) for (const m of before.members.values()) users.add(m.topicKey.user);
  ctx.metrics.appends.inc();
  ctx.events.emit({ kind: 'entry', topicId: toHex(topicId), users: [...users], deviceId, ...(live === undefined ? {} : { live }) });
}

// ---------------------------------------------------------------------------------------------
// Reads: current members only (removed members cannot read, protocol §7.5)

function requireMember(state: TopicState, caller: Caller): Member {
  const m = memberByUser(state, caller.user);
  if (m === undefined) throw new RendezvousError('topic.not_member');
  return m;
}

async function memberView(ctx: Context, caller: Caller, topicId: Uint8Array): Promise<LoadedTopic> {
  const t = await loadTopic(ctx, topicId);
  requireMember(t.state, caller);
  return t;
}

/** The committed log size (the cache may be ahead by appends not yet durable). */
async function committedSize(ctx: Context, topicId: Uint8Array): Promise<number> {
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  return row.size;
}

function summary(topicId: Uint8Array, t: LoadedTopic, row: TopicRow) {
  return {
    topicId: toBase64url(topicId),
    host: t.state.host,
    history: t.state.history,
    epoch: t.state.epoch,
    size: row.size,
    epochStartSize: row.epochStartSize,
    checkpoint: toBase64url(row.checkpoint),
    members: [...t.state.members.values()].map((m) => ({ memberId: m.id, user: m.topicKey.user, role: m.role })),
  };
}

export async function getTopic(ctx: Context, caller: Caller, topicId: Uint8Array) {
  const t = await memberView(ctx, caller, topicId);
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  // What this server knows of other servers' views (protocol §17.5), for clients to check.
  const witnesses = (await ctx.store.listCosignatures(topicId)).map((w) => toBase64url(w.cosignature));
  const forks = (await ctx.store.listForks(topicId)).map((f) => {
    const e = JSON.parse(f.evidence) as { checkpoints: string[]; detail: string };
    return { kind: f.kind, server: f.server, checkpoints: e.checkpoints, detail: e.detail, detectedAt: f.createdAt };
  });
  return { ...summary(topicId, t, row), witnesses, forks };
}

export async function listTopics(ctx: Context, caller: Caller) {
  const out = [];
  for (const id of await ctx.store.topicsOf(caller.user)) {
    const row = await ctx.store.getTopic(id);
    if (row !== null) out.push({ topicId: toBase64url(id), host: row.host, size: row.size, checkpoint: toBase64url(row.checkpoint) });
  }
  return { topics: out };
}

export const MAX_ENTRIES_PER_FETCH = 1_000;

/** Entries [from, from + limit) with the current checkpoint, so the reader can verify them. */
export async function getEntries(ctx: Context, caller: Caller, topicId: Uint8Array, from: number, limit: number) {
  await memberView(ctx, caller, topicId);
  if (!Number.isSafeInteger(from) || from < 0) throw new RendezvousError('request.bad_field', 'from: expected an index ≥ 0', { field: 'from' });
  const n = Math.min(Math.max(1, limit), MAX_ENTRIES_PER_FETCH);
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  // Read after the checkpoint: every entry the checkpoint covers is already committed.
  const entries = (await ctx.store.getEntries(topicId, from, n)).filter((e) => e.index < decodeCheckpoint(row.checkpoint).size);
  return {
    entries: entries.map((e) => ({ index: e.index, type: e.type, entry: toBase64url(e.entry) })),
    checkpoint: toBase64url(row.checkpoint),
  };
}

function sizeArg(name: string, v: number, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new RendezvousError('request.bad_field', `${name}: expected an integer in [${min}, ${max}]`, { field: name });
  }
  return v;
}

/** RFC 9162 §2.1.3 inclusion proof of entry `index` in the log of `size` entries. */
export async function getInclusionProof(ctx: Context, caller: Caller, topicId: Uint8Array, index: number, size: number) {
  await memberView(ctx, caller, topicId);
  sizeArg('size', size, 1, await committedSize(ctx, topicId));
  sizeArg('index', index, 0, size - 1);
  const indexes = inclusionProofIndexes(index, size);
  const got = await ctx.store.readHashes(topicId, indexes);
  const proof = inclusionProof(ctx.crypto, index, size, hashReaderFromMap(new Map(indexes.map((i, k) => [i, got[k]!]))));
  return { index, size, proof: proof.map(toBase64url) };
}

/** RFC 9162 §2.1.4 consistency proof between the logs of `from` and `to` entries. */
export async function getConsistencyProof(ctx: Context, caller: Caller, topicId: Uint8Array, from: number, to: number) {
  await memberView(ctx, caller, topicId);
  sizeArg('to', to, 1, await committedSize(ctx, topicId));
  sizeArg('from', from, 1, to);
  const indexes = consistencyProofIndexes(from, to);
  const got = await ctx.store.readHashes(topicId, indexes);
  const proof = consistencyProof(ctx.crypto, from, to, hashReaderFromMap(new Map(indexes.map((i, k) => [i, got[k]!]))));
  return { from, to, proof: proof.map(toBase64url) };
}

/**
 * Deletes a topic with its log, members, events and files (admin action, or its last member
 * left). Runs under the topic lock so no submission is validated against it meanwhile; appends
 * still waiting for their commit fail with `topic.unknown` and are never acknowledged.
 */
export async function deleteTopic(ctx: Context, topicId: Uint8Array): Promise<boolean> {
  return withTopicLock(ctx, toHex(topicId), async () => {
    forget(ctx, topicId);
    return removeTopic(ctx, topicId);
  });
}

/** Whether `user` is a current member (for files and live delivery). */
export async function isMember(ctx: Context, topicId: Uint8Array, user: string): Promise<boolean> {
  try {
    return memberByUser((await loadTopic(ctx, topicId)).state, user) !== undefined;
  } catch (e) {
    if (isRendezvousError(e, 'topic.unknown')) return false;
    throw e;
  }
}
