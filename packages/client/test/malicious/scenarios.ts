/**
 * Seeded fault scenarios for the malicious-server harness (proxy.ts). Each kind of lie is a
 * small generator: from a seed, a deterministic PRNG picks the variant and what is attacked
 * (which entry, index, member, which device or key), then the scenario
 *
 * - `setup`: builds a topic with honest traffic through the proxy (real server, real clients);
 * - `inject`: installs the lie for the victim only;
 * - `check`: lets the victim do what it normally does (sync, create a topic, add a member) and
 *   returns what its client reported: halts, alarms, thrown errors.
 *
 * `expected` is what the rules say the client must report, derived from docs/protocol.md
 * (§5.1, §6.1, §7.5, §8.4, §10, §11.2, §11.3) and the client's contract (topic-mirror.ts,
 * client.ts); the comment at each kind says which rule. An empty list means the change is
 * harmless and any alarm is a false alarm.
 *
 * Insiders (a participant or observer who colludes with the server) are played by reading their
 * secrets from their own profile store: exactly what such a user could hand the operator.
 */
import {
  decodeLogEntry,
  decodeMessage,
  decodeTopicUpdate,
  deviceId as deviceIdOf,
  encodeDeviceCert,
  encodeLogEntry,
  encodeMessage,
  encodeTopicUpdate,
  epochPrk,
  buildUpdate,
  fromBase64url,
  fromUtf8,
  isRendezvousError,
  sealMessage,
  signDeviceCert,
  signTopicKey,
  toBase64url,
  toHex,
  topicKeyId,
  encodeTopicKey,
  encodeKeyBundle,
  sealKeyBundle,
  utf8,
  decodeCheckpoint,
  type ErrorCode,
  type Role,
  type TopicKeySecret,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { randomBytes } from 'node:crypto';
import { decodeSnapshot, type RendezvousClient, type SyncReport } from '../../src/client.ts';
import type { MemoryProfileStore } from '../../src/profile-store.ts';
import { TopicMirror } from '../../src/topic-mirror.ts';
import type { MaliciousProxy } from './proxy.ts';

// ---- the frame -----------------------------------------------------------------------------------

export type Outcome = `${'halted' | 'alarm' | 'thrown'}:${ErrorCode}`;

export interface Actor {
  user: string;
  client: RendezvousClient;
  store: MemoryProfileStore;
}

export interface World {
  /** A fresh user registered through the proxy (its pin comes from the admin API directly). */
  user(name: string): Promise<Actor>;
}

export interface Observation {
  outcomes: Outcome[];
  /** Anything else the client got wrong (content of a rejected entry shown, …): fails the scenario. */
  violations: string[];
  /** Worth knowing, not failing: a halt reported but not kept by the mirror. */
  notes: string[];
}

export interface Scenario {
  kind: Kind;
  seed: number;
  /** What the seed picked (filled in as the scenario runs). */
  name: string;
  /**
   * What the client must report, every item (an array item: any one of these); [] = harmless,
   * any alarm is a false alarm.
   */
  expected: (Outcome | Outcome[])[];
  setup(w: World): Promise<void>;
  inject(p: MaliciousProxy): void | Promise<void>;
  check(): Promise<Observation>;
}

export type Kind =
  | 'drop'
  | 'reorder'
  | 'replay'
  | 'duplicate'
  | 'forge'
  | 'fork'
  | 'rollback'
  | 'unsigned-change'
  | 'key-substitution'
  | 'unlinked-device'
  | 'observer-post'
  | 'honest';

/** mulberry32: small, deterministic, good enough to pick what to attack. */
export interface Rng {
  int(lo: number, hi: number): number;
  pick<T>(xs: readonly T[]): T;
  chance(p: number): boolean;
}
export function prng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  return { int, pick: (xs) => xs[int(0, xs.length - 1)]!, chance: (p) => next() < p };
}

/** The main variant of a kind goes round with the seed, so a few seeds cover them all. */
export const cycle = <T>(seed: number, xs: readonly T[]): T => xs[seed % xs.length]!;

/** What the client said: a sync report's halts and alarms, or the error an action threw. */
export async function observe(fn: () => Promise<unknown>): Promise<Outcome[]> {
  try {
    const r = await fn();
    if (typeof r !== 'object' || r === null || !('topics' in r)) return [];
    return [
      ...(r as SyncReport).topics.flatMap((t) => [
        ...t.alarms.map((a): Outcome => `alarm:${a.code}`),
        ...(t.halted === null ? [] : [`halted:${t.halted}` as Outcome]),
      ]),
      // A key bundle that does not verify is dropped and reported, not thrown.
      ...((r as SyncReport).rejectedBundles ?? []).map((b): Outcome => `alarm:${b.code}`),
    ];
  } catch (e) {
    if (isRendezvousError(e)) return [`thrown:${e.code}`];
    throw e;
  }
}

/** The outcomes of a victim's sync, with a note for each halt its mirror did not keep (`sync` promises it stays). */
async function syncOf(victim: Actor, topic: string): Promise<Observation> {
  const outcomes = await observe(() => victim.client.sync());
  const halted = victim.client.topic(topic).halted;
  const notes = outcomes
    .filter((o) => o.startsWith('halted:') && halted === null)
    .map((o) => `${o.slice('halted:'.length)} reported as a halt, but TopicMirror.halted is null (not kept)`);
  return { outcomes, violations: [], notes };
}

export function classify(s: Scenario, o: Observation): 'right' | 'wrong' | 'missed' {
  if (s.expected.length === 0) return o.outcomes.length === 0 && o.violations.length === 0 ? 'right' : 'wrong';
  if (o.outcomes.length === 0 && o.violations.length === 0) return 'missed';
  const seen = (e: Outcome | Outcome[]) => (Array.isArray(e) ? e.some((x) => o.outcomes.includes(x)) : o.outcomes.includes(e));
  return s.expected.every(seen) && o.violations.length === 0 ? 'right' : 'wrong';
}

// ---- honest traffic and insiders -------------------------------------------------------------------

const random = (n: number) => new Uint8Array(randomBytes(n));
const name = (a: Actor) => a.user.split('@')[0]!;

interface Base {
  alice: Actor;
  bob: Actor;
  /** An observer who never syncs unless a scenario makes her (a fresh reader, or an insider). */
  carol: Actor;
  mallory?: Actor;
  topic: string;
  topicId: Uint8Array;
}

/**
 * alice (admin) creates a topic with bob (participant), carol (observer) and, if asked, mallory
 * (participant); alice and bob post 2–5 messages, sometimes alice re-keys in between.
 */
async function base(w: World, rng: Rng, o: { mallory?: boolean } = {}): Promise<Base> {
  const alice = await w.user('alice');
  const bob = await w.user('bob');
  const carol = await w.user('carol');
  const mallory = o.mallory === true ? await w.user('mallory') : undefined;
  const members: { user: string; role: Role }[] = [
    { user: bob.user, role: 'participant' },
    { user: carol.user, role: 'observer' },
  ];
  if (mallory !== undefined) members.push({ user: mallory.user, role: 'participant' });
  const history = rng.pick(['shared', 'hidden'] as const);
  const topic = await alice.client.createTopic({ history, members, ...(rng.chance(0.5) && { title: 'plans' }) });
  await bob.client.sync();
  const n = rng.int(2, 5);
  for (let i = 0; i < n; i++) {
    await rng.pick([alice, bob]).client.send(topic, { text: `message ${i}` });
    if (rng.chance(0.2)) await alice.client.rekey(topic);
  }
  return { alice, bob, carol, mallory, topic, topicId: fromBase64url(topic) };
}

/** The real log, as an honest member (who syncs first) holds it. */
async function realLog(a: Actor, topicId: Uint8Array): Promise<Uint8Array[]> {
  await a.client.sync();
  return decodeSnapshot((await a.store.loadPart(`topic-${toHex(topicId)}`))!).entries;
}

/** A colluding member's secrets for a topic, read from its profile store after a sync. */
async function insider(a: Actor, topicId: Uint8Array) {
  await a.client.sync();
  const doc = JSON.parse(fromUtf8((await a.store.load())!)) as { topicKeys: Record<string, { signatureSeed: string; encryptionSecret: string }> };
  const lookup = (id: string): TopicKeySecret | undefined => {
    const k = doc.topicKeys[id];
    return k === undefined ? undefined : { signatureSeed: fromBase64url(k.signatureSeed), encryptionSecret: fromBase64url(k.encryptionSecret) };
  };
  const m = TopicMirror.restore(crypto, decodeSnapshot((await a.store.loadPart(`topic-${toHex(topicId)}`))!), { check() {} }, lookup);
  const me = m.me()!;
  return { mirror: m, state: m.state!, me, seed: lookup(topicKeyId(me.topicKey))!.signatureSeed, epochSecret: m.epochSecret(m.state!.epoch)! };
}

/** One byte flipped where the signature covers it: a message's ciphertext, an update's signature. */
function tamper(rng: Rng, bytes: Uint8Array): Uint8Array {
  const e = decodeLogEntry(bytes);
  if (e.type === 'message') {
    const m = decodeMessage(e.body);
    const c = m.ciphertext.slice();
    c[rng.int(0, c.length - 1)]! ^= 0x01;
    return encodeLogEntry({ ...e, body: encodeMessage({ ...m, ciphertext: c }) });
  }
  const u = decodeTopicUpdate(e.body);
  const sig = u.signature.slice();
  sig[rng.int(0, 31)]! ^= 0x01; // in R
  return encodeLogEntry({ ...e, body: encodeTopicUpdate({ ...u, signature: sig }) });
}

const typeAt = (log: Uint8Array[], i: number) => decodeLogEntry(log[i]!).type;
const entriesOnly = (rewrite: (body: any) => any) => (req: { route: string }, body: any) => (req.route === 'entries' ? rewrite(body) : undefined);

// ---- the fault kinds ---------------------------------------------------------------------------

/**
 * 1. Withholding. `hole`: one entry left out of a page, the others keeping their indices — the
 *    next index is past the end (§11.3 #2: log.gap). `tail`: every page stops before entry k
 *    while the checkpoint covers it — the client must not stop short (client.ts syncTopic:
 *    log.gap). `erase-own`: bob's post is appended and acknowledged with the signed checkpoint
 *    of the log that holds it (docs/server.md: `201 {index, size, checkpoint}`), then left out
 *    of the log served to him, renumbered, under a checkpoint signed anew. That acknowledged
 *    checkpoint is one "the server signs" (topic-mirror.ts): against the served log it is a
 *    fork, or a head the server does not reach (gap), or a rollback, depending on when the
 *    client compares it — any of the three detects the erasure.
 */
function drop(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['hole', 'tail', 'erase-own'] as const);
  const detected: Outcome[] = ['log.gap', 'log.fork', 'log.rollback'].flatMap((c) => [`thrown:${c}`, `halted:${c}`] as Outcome[]);
  let b: Base;
  let erased: number | null = null;
  const s: Scenario = {
    kind: 'drop', seed, name: variant, expected: variant === 'erase-own' ? [detected] : ['halted:log.gap'],
    async setup(w) {
      b = await base(w, rng);
      await b.bob.client.sync();
    },
    async inject(p) {
      const n = (await realLog(b.alice, b.topicId)).length;
      if (variant === 'erase-own') {
        s.name = `erase-own: bob's post at ${n} acknowledged, then left out of his log`;
        p.attack(b.bob.user, {
          history: (_t, real) => (erased === null ? null : real.filter((_, i) => i !== erased)),
          rewrite(req, body) {
            if (req.route === 'message' && req.topic === b.topic) erased = body.index as number; // remembered, passed on as is
            return undefined;
          },
        });
        return;
      }
      const k = variant === 'hole' ? rng.int(1, n - 2) : rng.int(1, n - 1);
      s.name = `${variant}: entry ${k} of ${n} withheld from the fresh observer`;
      p.attack(b.carol.user, {
        rewrite: entriesOnly((body) => ({ ...body, entries: body.entries.filter((e: { index: number }) => (variant === 'hole' ? e.index !== k : e.index < k)) })),
      });
    },
    async check() {
      if (variant !== 'erase-own') return syncOf(b.carol, b.topic);
      const sent = await observe(() => b.bob.client.send(b.topic, { text: 'will the server keep this?' }));
      const o = await syncOf(b.bob, b.topic);
      return { ...o, outcomes: [...sent, ...o.outcomes] };
    },
  };
  return s;
}

/**
 * What a fresh reader must report when entries i and i+1 are served swapped (with a checkpoint
 * over the swapped log), rule by rule. At i it gets entry i+1: an update whose parent is entry i
 * fails applyUpdate (§7.5.2 #3 topic.bad_parent, halt); a message fails checkMessage if entry i
 * started its epoch (§8.4 #4 topic.bad_epoch) or added its sender (#1 topic.not_member), or if its
 * head includes entry i (#5 log.bad_head) — an alarm, the log goes on. At i+1 it gets entry i,
 * older than its predecessor: §11.3 #5 log.reorder. Equal timestamps pass the monitor; then a
 * message of the epoch before an epoch-starting update is §8.4 #3 topic.stale_epoch.
 */
function expectSwap(log: Uint8Array[], i: number): Outcome[] {
  const a = decodeLogEntry(log[i]!);
  const b = decodeLogEntry(log[i + 1]!);
  const aUpdate = a.type === 'update' ? decodeTopicUpdate(a.body) : null;
  const out: Outcome[] = [];
  if (b.type === 'update') {
    if (aUpdate !== null) return ['halted:topic.bad_parent'];
  } else {
    const m = decodeMessage(b.body);
    if (aUpdate?.action.type === 'add' && aUpdate.action.member.id === m.sender) out.push('alarm:topic.not_member');
    else if (aUpdate !== null && aUpdate.commitment !== null) out.push('alarm:topic.bad_epoch');
    else if (m.headSize > i) out.push('alarm:log.bad_head');
  }
  if (a.timestamp < b.timestamp) out.push('halted:log.reorder');
  else if (a.type === 'message' && b.type === 'update' && decodeTopicUpdate(b.body).commitment !== null) out.push('alarm:topic.stale_epoch');
  return out;
}

/** 2. Two neighbouring entries swapped, served with a checkpoint over the swapped log (see expectSwap). */
function reorder(seed: number): Scenario {
  const rng = prng(seed);
  let b: Base;
  const s: Scenario = {
    kind: 'reorder', seed, name: '', expected: [],
    async setup(w) {
      b = await base(w, rng);
    },
    async inject(p) {
      const log = await realLog(b.alice, b.topicId);
      const i = rng.int(1, log.length - 2);
      s.expected = expectSwap(log, i);
      s.name = `entries ${i} (${typeAt(log, i)}) and ${i + 1} (${typeAt(log, i + 1)}) swapped`;
      p.attack(b.carol.user, { history: (_t, real) => [...real.slice(0, i), real[i + 1]!, real[i]!, ...real.slice(i + 2)] });
    },
    check: () => syncOf(b.carol, b.topic),
  };
  return s;
}

/** 3. Entry k served again at a later index j (checkpoint over that log): §11.3 #3 log.replay. */
function replay(seed: number): Scenario {
  const rng = prng(seed);
  const synced = cycle(seed, [true, false]);
  let b: Base;
  let victim: Actor;
  const s: Scenario = {
    kind: 'replay', seed, name: '', expected: ['halted:log.replay'],
    async setup(w) {
      b = await base(w, rng);
      victim = synced ? b.bob : b.carol;
      if (synced) await b.bob.client.sync();
    },
    async inject(p) {
      const n = (await realLog(b.alice, b.topicId)).length;
      const k = rng.int(0, n - 1);
      const j = rng.int(k + 1, n);
      s.name = `entry ${k} replayed at ${j} of ${n + 1} to the ${synced ? 'synced participant' : 'fresh observer'}`;
      p.attack(victim.user, { history: (_t, real) => [...real.slice(0, j), real[k]!, ...real.slice(j)] });
    },
    check: () => syncOf(victim, b.topic),
  };
  return s;
}

/**
 * 4. Redelivery of entries the client already holds, each at its own index: harmless
 *    (§11.3 #1: "the entry is ignored, and this is not an error"). `rewind`: the page starts
 *    at an index before `from`; `twice`: one entry twice in a page.
 */
function duplicate(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['rewind', 'twice'] as const);
  let b: Base;
  const s: Scenario = {
    kind: 'duplicate', seed, name: variant, expected: [],
    async setup(w) {
      b = await base(w, rng);
      await b.bob.client.sync();
    },
    async inject(p) {
      const held = (await realLog(b.alice, b.topicId)).length;
      for (let i = rng.int(1, 2); i > 0; i--) await b.alice.client.send(b.topic, { text: `new ${i}` });
      const log = await realLog(b.alice, b.topicId);
      const k = rng.int(0, held - 1);
      s.name = variant === 'rewind' ? `entries ${k}…${held - 1} sent again before ${held}…` : `entry ${held} twice in the page`;
      const at = (i: number) => ({ index: i, type: typeAt(log, i), entry: toBase64url(log[i]!) });
      p.attack(b.bob.user, {
        rewrite: entriesOnly((body) => {
          if (body.entries.length === 0) return undefined;
          const from = body.entries[0].index as number;
          if (variant === 'rewind') return { ...body, entries: [...log.slice(k, from).map((_, i) => at(k + i)), ...body.entries] };
          return { ...body, entries: [body.entries[0], ...body.entries] };
        }),
      });
    },
    check: () => syncOf(b.bob, b.topic),
  };
  return s;
}

/**
 * 5. Entry k's bytes changed, checkpoint over the changed log. A client that held entry k sees a
 *    checkpoint whose root is not its own (§11.2, topic-mirror compareCheckpoint: log.fork). A
 *    fresh reader checks the entry itself: a message fails §8.4 #7 (crypto.bad_signature, an
 *    alarm: the entry is kept and never shown), an update fails §7.5 (crypto.bad_signature, halt).
 */
function forge(seed: number): Scenario {
  const rng = prng(seed);
  const held = cycle(seed, [true, false]);
  let b: Base;
  let victim: Actor;
  const s: Scenario = {
    kind: 'forge', seed, name: '', expected: [],
    async setup(w) {
      b = await base(w, rng);
      victim = held ? b.bob : b.carol;
      if (held) await b.bob.client.sync();
    },
    async inject(p) {
      const n = (await realLog(b.alice, b.topicId)).length;
      if (held) for (let i = rng.int(0, 2); i > 0; i--) await b.alice.client.send(b.topic, { text: `later ${i}` });
      const log = await realLog(b.alice, b.topicId);
      // The kind of entry attacked goes round too: updates are few in a log, messages many.
      const want = cycle(Math.floor(seed / 2), ['message', 'update'] as const);
      const of = log.slice(0, n).flatMap((_, i) => (typeAt(log, i) === want ? [i] : []));
      const k = rng.pick(of.length > 0 ? of : [0]);
      const forged = tamper(rng, log[k]!);
      s.expected = held ? ['halted:log.fork'] : typeAt(log, k) === 'message' ? ['alarm:crypto.bad_signature'] : ['halted:crypto.bad_signature'];
      s.name = `${typeAt(log, k)} ${k} of ${log.length} altered, ${held ? 'held before by the participant' : 'never seen by the observer'}`;
      p.attack(victim.user, { history: (_t, real) => real.map((e, i) => (i === k ? forged : e)) });
    },
    check: () => syncOf(victim, b.topic),
  };
  return s;
}

/**
 * 6. A forked log: from size n on, bob is shown his own branch (his posts never reach the real
 *    log; the proxy answers them and signs the branch) while alice posts on the real one.
 *    `cross`: bob's second post (signed over the root of his branch at n + 1) reaches alice — it
 *    cannot verify against her log (§8.4 #7, §15.3: crypto.bad_signature alarm). `switch`: alice,
 *    who saw branch A, is then served branch B — a checkpoint whose root is not her log's
 *    (§11.2: log.fork), after a crypto.bad_signature alarm for each of bob's posts past the first.
 */
function fork(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['cross', 'switch'] as const);
  const m = rng.int(variant === 'cross' ? 2 : 1, 3);
  let b: Base;
  const branch: Uint8Array[] = [];
  const s: Scenario = {
    kind: 'fork', seed, name: '', expected: [],
    async setup(w) {
      b = await base(w, rng);
      await b.bob.client.sync();
    },
    async inject(p) {
      const prefix = await realLog(b.alice, b.topicId);
      const n = prefix.length;
      s.expected = variant === 'cross' ? ['alarm:crypto.bad_signature'] : m >= 2 ? ['alarm:crypto.bad_signature', 'halted:log.fork'] : ['halted:log.fork'];
      s.name = `${variant}: fork at ${n}, alice posts 1 on the real log, bob ${m} on his branch`;
      p.attack(b.bob.user, {
        history: () => [...prefix, ...branch],
        intercept(req) {
          if (req.route !== 'message' || req.topic !== b.topic) return undefined;
          const msg = fromBase64url((JSON.parse(req.body.toString('utf8')) as { message: string }).message);
          branch.push(p.forger.entry('message', msg, [...prefix, ...branch]));
          const view = [...prefix, ...branch];
          return { status: 201, body: { index: view.length - 1, size: view.length, checkpoint: p.forger.checkpoint(b.topic, view) } };
        },
      });
      // alice sees the real log until bob has posted on his branch, then the lie.
      p.attack(b.alice.user, {
        history: (_t, real) => (branch.length < m ? null : variant === 'cross' ? [...real, ...branch] : [...prefix, ...branch]),
      });
    },
    async check() {
      await b.alice.client.send(b.topic, { text: 'on the real log' });
      for (let i = 0; i < m; i++) await b.bob.client.send(b.topic, { text: `on bob's branch ${i}` });
      return syncOf(b.alice, b.topic);
    },
  };
  return s;
}

/**
 * 7. Rollback: after bob verified a checkpoint of size n, a smaller one — `replayed`: a genuine
 *    old checkpoint the proxy kept; `forged`: a prefix of the log, signed anew (§11.2 #1:
 *    log.rollback).
 */
function rollback(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['replayed', 'forged'] as const);
  let b: Base;
  const s: Scenario = {
    kind: 'rollback', seed, name: variant, expected: ['halted:log.rollback'],
    async setup(w) {
      b = await base(w, rng);
      await b.bob.client.sync();
    },
    async inject(p) {
      const n = b.bob.client.topic(b.topic).size;
      if (variant === 'forged') {
        const k = rng.int(1, n - 1);
        s.name = `forged: checkpoint of ${k} after ${n}`;
        p.attack(b.bob.user, { history: (_t, real) => real.slice(0, k) });
        return;
      }
      const old = (p.checkpoints.get(b.topic) ?? []).filter((c) => decodeCheckpoint(fromBase64url(c)).size < n);
      if (old.length === 0) throw new Error('harness: the proxy kept no checkpoint older than the head');
      const cp = rng.pick(old);
      s.name = `replayed: genuine checkpoint of ${decodeCheckpoint(fromBase64url(cp)).size} after ${n}`;
      p.attack(b.bob.user, { rewrite: entriesOnly((body) => ({ ...body, entries: [], checkpoint: cp })) });
    },
    check: () => syncOf(b.bob, b.topic),
  };
  return s;
}

/**
 * 8. A membership change no admin signed, appended by the server with a checkpoint over it:
 *    signed by mallory, a participant colluding with the server (`add` of a stranger, or `role`
 *    making herself admin: §7.5.2 #5 topic.not_admin), or naming the admin as signer with a
 *    signature that is not hers (§7.5: crypto.bad_signature). Either halts the mirror.
 */
function unsignedChange(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['participant-add', 'participant-role', 'garbage-signature'] as const);
  const synced = cycle(Math.floor(seed / 3), [true, false]);
  let b: Base;
  let victim: Actor;
  const s: Scenario = {
    kind: 'unsigned-change', seed, name: '', expected: [variant === 'garbage-signature' ? 'halted:crypto.bad_signature' : 'halted:topic.not_admin'],
    async setup(w) {
      b = await base(w, rng, { mallory: true });
      victim = synced ? b.bob : b.carol;
      if (synced) await b.bob.client.sync();
    },
    async inject(p) {
      const x = await insider(b.mallory!, b.topicId);
      const stranger = signTopicKey(crypto, random(32), `eve@${x.state.host}`, { signatureSeed: random(32), encryptionSecret: random(32) });
      const built = buildUpdate(crypto, random, x.state, {
        signer: variant === 'garbage-signature' ? 0 : x.me.id,
        signatureSeed: variant === 'garbage-signature' ? random(32) : x.seed,
        epochSecret: x.epochSecret,
        action: variant === 'participant-role' ? { type: 'role', memberId: x.me.id, role: 'admin' } : { type: 'add', role: 'admin', topicKey: stranger },
      });
      s.name = `${variant} at ${x.mirror.size}, served to the ${synced ? 'synced participant' : 'fresh observer'}`;
      p.attack(victim.user, { history: (_t, real) => [...real, p.forger.entry('update', encodeTopicUpdate(built.update), real)] });
    },
    check: () => syncOf(victim, b.topic),
  };
  return s;
}

/**
 * 9. The claim of bob's topic key answered by the server with a key of its own, for a user alice
 *    has pinned. `identity`: certified by another identity key, presented as bob's
 *    (contacts: identity.changed). `topic-key`: the real identity key, but the topic key is not
 *    certified by it (§6.1 #5: crypto.bad_certificate). Both thrown by createTopic / addMember.
 */
function keySubstitution(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['identity', 'topic-key'] as const);
  const via = cycle(Math.floor(seed / 2), ['createTopic', 'addMember'] as const);
  let alice: Actor;
  let bob: Actor;
  const s: Scenario = {
    kind: 'key-substitution', seed, name: `${variant} via ${via}`,
    expected: [variant === 'identity' ? 'thrown:identity.changed' : 'thrown:crypto.bad_certificate'],
    async setup(w) {
      alice = await w.user('alice');
      bob = await w.user('bob');
      await alice.client.createTopic({ members: [{ user: bob.user, role: 'participant' }] }); // alice pins bob
    },
    inject(p) {
      const impostor = random(32);
      const key = signTopicKey(crypto, impostor, bob.user, { signatureSeed: random(32), encryptionSecret: random(32) });
      p.attack(alice.user, {
        rewrite: (req, body) =>
          req.route === 'claim' && req.target === bob.user
            ? { topicKey: toBase64url(encodeTopicKey(key)), identityKey: variant === 'identity' ? toBase64url(crypto.ed25519PublicKey(impostor)) : body.identityKey }
            : undefined,
      });
    },
    async check() {
      const outcomes = await observe(async () => {
        if (via === 'createTopic') return alice.client.createTopic({ members: [{ user: bob.user, role: 'participant' }] });
        const t = await alice.client.createTopic({});
        return alice.client.addMember(t, bob.user);
      });
      return { outcomes, violations: [], notes: [] };
    },
  };
  return s;
}

/**
 * 10. alice's device list shows a device she never linked. Her client consults it before sealing
 *     topic-key secrets to her other devices (replenish, after a topic key was claimed):
 *     `impostor`: a certificate by another identity key (§5.1 #4: crypto.bad_certificate);
 *     `relabelled`: her own device's genuine certificate under another device id
 *     (client.ts siblings: crypto.bad_certificate); `bad-signature`: her identity key named, the
 *     signature not hers (§5.1 #5: crypto.bad_signature). `bundle`: and a key bundle "from" that
 *     device, carrying a topic key the server made, waits for her: checked against the sender's
 *     certificate before it is opened (§6.2: crypto.bad_certificate).
 */
function unlinkedDevice(seed: number): Scenario {
  const rng = prng(seed);
  const variant = cycle(seed, ['impostor', 'relabelled', 'bad-signature', 'bundle'] as const);
  const via = variant === 'bundle' ? 'sync' : cycle(Math.floor(seed / 4), ['createTopic', 'sync after a claim'] as const);
  let alice: Actor;
  let bob: Actor;
  const s: Scenario = {
    kind: 'unlinked-device', seed, name: `${variant} via ${via}`,
    expected: [
      variant === 'bad-signature' ? 'thrown:crypto.bad_signature' : variant === 'bundle' ? 'alarm:crypto.bad_certificate' : 'thrown:crypto.bad_certificate',
    ],
    async setup(w) {
      alice = await w.user('alice');
      bob = await w.user('bob');
    },
    inject(p) {
      const deviceSeed = random(32);
      const deviceKey = crypto.ed25519PublicKey(deviceSeed);
      const fake = (body: any): string => {
        if (variant === 'relabelled') return body.devices.find((d: { current: boolean }) => d.current).cert;
        if (variant === 'bad-signature') {
          return toBase64url(encodeDeviceCert({ user: alice.user, identityKey: alice.client.identityKey, deviceKey, createdAt: Date.now(), signature: random(64) }));
        }
        return toBase64url(encodeDeviceCert(signDeviceCert(crypto, random(32), { user: alice.user, deviceKey, createdAt: Date.now() })));
      };
      // `bundle`: the unlinked device also "sends" alice topic keys the server would know.
      const k = { signatureSeed: random(32), encryptionSecret: random(32) };
      const bundle = () =>
        sealKeyBundle(crypto, random, {
          user: alice.user,
          senderDeviceSeed: deviceSeed,
          recipientDevice: fromBase64url(alice.client.deviceId),
          recipientPrekey: crypto.x25519PublicKey(random(32)),
          content: { topicKeys: [{ topicKey: signTopicKey(crypto, random(32), alice.user, k), secret: k }], epochSecrets: [] },
        });
      p.attack(alice.user, {
        rewrite(req, body) {
          if (req.route === 'devices') return { devices: [...body.devices, { deviceId: deviceIdOf(deviceKey), cert: fake(body), createdAt: Date.now(), current: false }] };
          if (req.route === 'bundles' && variant === 'bundle') {
            return { bundles: [...body.bundles, { id: 1_000_000, senderDeviceId: deviceIdOf(deviceKey), bundle: toBase64url(encodeKeyBundle(bundle())) }] };
          }
          return undefined;
        },
      });
    },
    async check() {
      if (via === 'sync') return { outcomes: await observe(() => alice.client.sync()), violations: [], notes: [] };
      if (via === 'createTopic') return { outcomes: await observe(() => alice.client.createTopic({})), violations: [], notes: [] };
      await bob.client.createTopic({ members: [{ user: alice.user, role: 'participant' }] }); // claims one of alice's keys
      return { outcomes: await observe(() => alice.client.sync()), violations: [], notes: [] };
    },
  };
  return s;
}

/**
 * 11. An observer's validly signed post (carol colludes with the server, which appends what it
 *     should refuse): §8.4 #2 topic.read_only — an alarm; the entry is kept, never shown, and the
 *     mirror goes on (not halted).
 */
function observerPost(seed: number): Scenario {
  const rng = prng(seed);
  const synced = cycle(seed, [true, false]);
  let b: Base;
  let victim: Actor;
  let at = 0;
  const s: Scenario = {
    kind: 'observer-post', seed, name: '', expected: ['alarm:topic.read_only'],
    async setup(w) {
      b = await base(w, rng, { mallory: !synced }); // mallory: a participant who reads fresh
      victim = synced ? b.bob : b.mallory!;
      if (synced) await b.bob.client.sync();
    },
    async inject(p) {
      const x = await insider(b.carol, b.topicId);
      at = x.mirror.size;
      const msg = sealMessage(crypto, random, {
        topicId: b.topicId,
        epoch: x.state.epoch,
        epochPrk: epochPrk(crypto, b.topicId, x.state.epoch, x.epochSecret),
        sender: x.me.id,
        signatureSeed: x.seed,
        headSize: x.mirror.size,
        headRoot: x.mirror.root(),
        content: { type: 'text', body: utf8('an observer speaks') },
      });
      s.name = `observer's post at ${at}, served to the ${synced ? 'synced' : 'fresh'} participant`;
      p.attack(victim.user, { history: (_t, real) => [...real, p.forger.entry('message', encodeMessage(msg), real)] });
    },
    async check() {
      const outcomes = await observe(() => victim.client.sync());
      const violations: string[] = [];
      const t = victim.client.topic(b.topic);
      const shown = victim.client.messages(b.topic).find((x) => x.index === at);
      if (t.halted !== null) violations.push(`mirror halted (${t.halted.code}): the log should go on`);
      if (shown === undefined || shown.rejected !== 'topic.read_only') violations.push(`entry ${at} not marked topic.read_only (${shown?.rejected ?? 'absent'})`);
      if (shown?.text != null) violations.push(`the observer's post is shown: ${shown.text}`);
      return { outcomes, violations, notes: [] };
    },
  };
  return s;
}

/**
 * Control: honest traffic through the same proxy, no lie. Seeded sequence of sends, syncs, adds,
 * removals, role changes, re-keys and leaves; with `resign` the proxy serves the real log with a
 * checkpoint it signed itself (so a forged-but-true checkpoint is shown to raise no alarm either).
 * Any halt, alarm or error is a false alarm.
 */
function honest(seed: number): Scenario {
  const rng = prng(seed);
  const resign = cycle(seed, [false, true]);
  const outcomes: Outcome[] = [];
  let actors: Actor[] = [];
  const role = new Map<string, Role | null>();
  let topic = '';
  const ops: string[] = [];
  const s: Scenario = {
    kind: 'honest', seed, name: '', expected: [],
    async setup(w) {
      actors = [await w.user('alice'), await w.user('bob'), await w.user('carol'), await w.user('dave')];
      const [alice, bob, carol] = actors as [Actor, Actor, Actor, Actor];
      const r2 = rng.pick(['participant', 'observer'] as const);
      topic = await alice.client.createTopic({ history: rng.pick(['shared', 'hidden'] as const), title: 'control', members: [{ user: bob.user, role: 'participant' }, { user: carol.user, role: r2 }] });
      role.set(alice.user, 'admin').set(bob.user, 'participant').set(carol.user, r2);
    },
    inject(p) {
      if (resign) for (const a of actors) p.attack(a.user, { history: () => null, resign: true });
    },
    async check() {
      const [alice] = actors as [Actor];
      const members = () => actors.filter((a) => (role.get(a.user) ?? null) !== null);
      const step = async (what: string, fn: () => Promise<unknown>) => {
        ops.push(what);
        outcomes.push(...(await observe(fn)));
      };
      for (const a of members()) if (a !== alice) await step(`${name(a)} syncs`, () => a.client.sync());
      for (let i = rng.int(6, 10); i > 0; i--) {
        const op = rng.pick(['send', 'send', 'sync', 'add', 'remove', 'role', 'rekey', 'leave', 'verify'] as const);
        const writers = members().filter((a) => role.get(a.user) !== 'observer');
        const others = members().filter((a) => a !== alice);
        const outsiders = actors.filter((a) => (role.get(a.user) ?? null) === null);
        if (op === 'send' && writers.length > 0) {
          const a = rng.pick(writers);
          await step(`${name(a)} syncs`, () => a.client.sync());
          await step(`${name(a)} sends`, () => a.client.send(topic, { text: `hello ${i}` }));
        } else if (op === 'sync') {
          const a = rng.pick(members());
          await step(`${name(a)} syncs`, () => a.client.sync());
        } else if (op === 'add' && outsiders.length > 0) {
          const a = rng.pick(outsiders);
          const r = rng.pick(['participant', 'observer'] as const);
          await step(`add ${name(a)} as ${r}`, () => alice.client.addMember(topic, a.user, r));
          role.set(a.user, r);
        } else if (op === 'remove' && others.length > 0) {
          const a = rng.pick(others);
          await step(`remove ${name(a)}`, () => alice.client.removeMember(topic, a.user));
          role.set(a.user, null);
        } else if (op === 'role' && others.length > 0) {
          const a = rng.pick(others);
          const r = role.get(a.user) === 'observer' ? 'participant' : 'observer';
          await step(`${name(a)} becomes ${r}`, () => alice.client.setRole(topic, a.user, r));
          role.set(a.user, r);
        } else if (op === 'verify') {
          const a = rng.pick(members());
          await step(`${name(a)} syncs`, () => a.client.sync());
          await step(`${name(a)} re-verifies`, () => a.client.verify(topic));
        } else if (op === 'rekey') {
          await step('rekey', () => alice.client.rekey(topic));
        } else if (op === 'leave' && others.length > 0) {
          const a = rng.pick(others);
          await step(`${name(a)} syncs`, () => a.client.sync());
          await step(`${name(a)} leaves`, () => a.client.leave(topic));
          role.set(a.user, null);
        }
      }
      for (const a of actors) await step(`${name(a)} syncs`, () => a.client.sync());
      s.name = `${resign ? 'checkpoints re-signed by the proxy; ' : ''}${ops.join(', ')}`;
      return { outcomes, violations: [], notes: [] };
    },
  };
  return s;
}

/** Every fault kind, what its rule says, and its generator. */
export const KINDS: { kind: Kind; expect: string; make: (seed: number) => Scenario }[] = [
  { kind: 'drop', expect: 'log.gap (erased own post: gap/fork/rollback)', make: drop },
  { kind: 'reorder', expect: 'log.reorder (+ content alarm at the first)', make: reorder },
  { kind: 'replay', expect: 'log.replay', make: replay },
  { kind: 'duplicate', expect: 'nothing (harmless)', make: duplicate },
  { kind: 'forge', expect: 'log.fork / crypto.bad_signature', make: forge },
  { kind: 'fork', expect: 'crypto.bad_signature / log.fork', make: fork },
  { kind: 'rollback', expect: 'log.rollback', make: rollback },
  { kind: 'unsigned-change', expect: 'topic.not_admin / crypto.bad_signature', make: unsignedChange },
  { kind: 'key-substitution', expect: 'identity.changed / crypto.bad_certificate', make: keySubstitution },
  { kind: 'unlinked-device', expect: 'crypto.bad_certificate / .bad_signature', make: unlinkedDevice },
  { kind: 'observer-post', expect: 'topic.read_only (alarm)', make: observerPost },
];
export const HONEST = { kind: 'honest' as const, expect: 'nothing', make: honest };
