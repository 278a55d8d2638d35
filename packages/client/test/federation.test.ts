/**
 * The client's side of federation (docs/client.md §Topics hosted on other servers), against one
 * real server and the malicious proxy (no second server yet): the server's signing seed is
 * known to the test, a witness server's key is the test's, and `/v1/servers/:name`, topic
 * summaries (witnesses, forks) and submission answers (202 pending) are injected by the proxy.
 *
 * - host keys pinned per server on first use, a list that drops a pinned key refused
 *   (`federation.key_changed`), checkpoints verified with the key their key id names (rotation);
 * - a topic hosted by another server, served through the home server, verified with that
 *   server's pinned keys;
 * - witness cosignatures: agreeing ones listed, a forked one halts (`log.fork`), a forged one is
 *   dropped with an alarm;
 * - fork reports: two host checkpoints of one size with different roots halt, unconfirmed
 *   reports are alarms;
 * - 202 pending posts and topic changes, found in the log by a later sync.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  encodeCheckpoint,
  encodeCosignature,
  fromBase64url,
  isRendezvousError,
  serverKeyId,
  signCheckpoint,
  signCosignature,
  toBase64url,
  type Checkpoint,
  type ErrorCode,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { RunningServer } from '@rendezvous/server';
import { issuePin, overHttp, socketServer } from '../../server/test/helpers.ts';
import { RendezvousClient } from '../src/client.ts';
import { MemoryProfileStore } from '../src/profile-store.ts';
import { TopicMirror } from '../src/topic-mirror.ts';
import { Contacts } from '../src/contacts.ts';
import { MaliciousProxy, type Hooks, type ProxyRequest } from './malicious/proxy.ts';
import { LogBuilder, TestUser } from './log-builder.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));
const serverSeed = random(32);
const WITNESS = 'beta.test';
const witnessSeed = random(32);
const witnessKey = crypto.ed25519PublicKey(witnessSeed);

let running: Awaited<ReturnType<typeof socketServer>>;
let server: RunningServer;
let proxy: MaliciousProxy;
let n = 0;

interface Actor {
  c: RendezvousClient;
  store: MemoryProfileStore;
}

async function user(name: string): Promise<Actor> {
  const local = `${name}-${++n}`;
  const pin = await issuePin(overHttp(server.url), `${local}@${server.name}`);
  const store = new MemoryProfileStore();
  const c = await RendezvousClient.register({ store, crypto, server: proxy.url, user: local, pin, pool: { prekeys: 3, topicKeys: 3 } });
  return { c, store };
}

const keyJson = (k: Uint8Array) => ({ publicKey: toBase64url(k), keyId: toBase64url(serverKeyId(crypto, k)) });

/** Answers `GET /v1/servers/:name` from `keys` (names not listed fall through: 404 on this server). */
function serversAnswer(keys: Record<string, Uint8Array[]>): (req: ProxyRequest) => { status: number; body: unknown } | undefined {
  return (req) => {
    if (req.route !== 'servers' || req.target === undefined || keys[req.target] === undefined) return undefined;
    return { status: 200, body: { server: req.target, keys: keys[req.target]!.map(keyJson) } };
  };
}

/** Hooks that add `witnesses` and `forks` to the topic summary and serve the witness's key. */
function summaryWith(o: { witnesses?: string[]; forks?: unknown[] }, extra: Hooks = {}): Hooks {
  return {
    intercept: serversAnswer({ [WITNESS]: [witnessKey] }),
    rewrite: (req, body) => (req.route === 'topic' ? { ...body, witnesses: o.witnesses ?? [], forks: o.forks ?? [] } : undefined),
    ...extra,
  };
}

/** A host checkpoint of the topic signed with the server's own seed. */
function hostCheckpoint(topic: string, size: number, root: Uint8Array, seed = serverSeed): Checkpoint {
  return signCheckpoint(crypto, seed, { origin: server.name, topicId: fromBase64url(topic), size, root, timestamp: Date.now() });
}

function cosign(cp: Checkpoint, seed = witnessSeed, witness = WITNESS): string {
  return toBase64url(encodeCosignature(signCosignature(crypto, seed, { witness, checkpoint: encodeCheckpoint(cp), timestamp: Date.now() })));
}

/** The topic's real log as alice's device verified it: its root at each size. */
function rootAt(a: Actor, topic: string, size: number): Uint8Array {
  // The mirror is private; a fresh one over the snapshot is the device's own computation.
  const m = (a.c as unknown as { mirrors: Map<string, TopicMirror> }).mirrors.get(topic)!;
  return m.root(size);
}

async function rejectsCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isRendezvousError(e), `expected a RendezvousError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

/** A topic of alice with bob and two messages: size 3. */
async function topicOfTwo(): Promise<{ alice: Actor; bob: Actor; topic: string }> {
  const alice = await user('alice');
  const bob = await user('bob');
  const topic = await alice.c.createTopic({ members: [{ user: bob.c.user, role: 'participant' }] });
  await alice.c.send(topic, { text: 'one' });
  await alice.c.send(topic, { text: 'two' });
  await alice.c.sync();
  assert.equal(alice.c.topic(topic).size, 3);
  return { alice, bob, topic };
}

before(async () => {
  running = await socketServer('fed.test', { serverKey: toBase64url(serverSeed) });
  server = running.server;
  proxy = new MaliciousProxy(new URL(server.url), serverSeed, server.name);
  await proxy.listen();
});
after(async () => {
  await proxy?.close();
  await running?.close();
});

describe('server keys', () => {
  it('pins a server on first use, adds rotated keys, refuses a list that drops a pinned key (federation.key_changed), across restarts', async () => {
    proxy.reset();
    const a = await user('alice');
    const [k1, k2, k3] = [random(32), random(32), random(32)].map((s) => crypto.ed25519PublicKey(s));
    proxy.attack(a.c.user, { intercept: serversAnswer({ [WITNESS]: [k1!] }) });
    assert.deepEqual(await a.c.serverKeys(WITNESS), [k1]);
    proxy.attack(a.c.user, { intercept: serversAnswer({ [WITNESS]: [k1!, k2!] }) });
    assert.deepEqual(await a.c.serverKeys(WITNESS), [k1, k2], 'a rotation adds the new key');
    proxy.attack(a.c.user, { intercept: serversAnswer({ [WITNESS]: [k2!, k3!] }) });
    await rejectsCode(a.c.serverKeys(WITNESS), 'federation.key_changed');
    // The pins survive a restart; the refused list changed nothing.
    const again = await RendezvousClient.open({ store: a.store, crypto });
    await rejectsCode(again.serverKeys(WITNESS), 'federation.key_changed');
    proxy.attack(a.c.user, { intercept: serversAnswer({ [WITNESS]: [k1!, k2!] }) });
    assert.deepEqual(await again.serverKeys(WITNESS), [k1, k2]);
    // The home server's own key, pinned from its well-known document at registration.
    proxy.attack(a.c.user, { intercept: serversAnswer({ [server.name]: [k1!] }) });
    await rejectsCode(a.c.serverKeys(server.name), 'federation.key_changed');
    // An answer about another server than the one asked for.
    proxy.attack(a.c.user, { intercept: (req) => (req.route === 'servers' ? { status: 200, body: { server: 'gamma.test', keys: [keyJson(k1!)] } } : undefined) });
    await rejectsCode(a.c.serverKeys(WITNESS), 'encoding.bad_value');
    proxy.reset();
  });

  it('verifies a checkpoint by a rotated key of the home server once the key list names it', async () => {
    proxy.reset();
    const { alice, topic } = await topicOfTwo();
    const newSeed = random(32);
    const newKey = crypto.ed25519PublicKey(newSeed);
    const oldKey = crypto.ed25519PublicKey(serverSeed);
    const signedByNew = hostCheckpoint(topic, 3, rootAt(alice, topic, 3), newSeed);
    const onEntries = (req: ProxyRequest, body: any) => (req.route === 'entries' ? { ...body, checkpoint: toBase64url(encodeCheckpoint(signedByNew)) } : undefined);
    // Not endorsed through the home server's list: the checkpoint is not by a pinned key.
    proxy.attack(alice.c.user, { intercept: serversAnswer({ [server.name]: [oldKey] }), rewrite: onEntries });
    const r1 = await alice.c.sync();
    assert.equal(r1.topics.find((t) => t.id === topic)?.halted, 'log.bad_checkpoint');
    // Listed (a rotation the home server checked): learnt, pinned, and the checkpoint verifies.
    proxy.attack(alice.c.user, { intercept: serversAnswer({ [server.name]: [oldKey, newKey] }), rewrite: onEntries });
    const r2 = await alice.c.sync();
    assert.equal(r2.topics.find((t) => t.id === topic)?.halted, null);
    assert.equal(alice.c.topic(topic).halted, null);
    proxy.reset();
  });
});

describe('a topic hosted by another server', () => {
  it('is mirrored through the home server and verified with the host keys pinned for it, rotation included', async () => {
    proxy.reset();
    const a = await user('alice');
    const carol = new TestUser('carol@gamma.test');
    const dave = new TestUser('dave@gamma.test');
    const b = new LogBuilder('gamma.test', [
      { user: carol, role: 'admin' },
      { user: dave, role: 'participant' },
    ]);
    b.post(carol, 'hello from gamma');
    const topic = toBase64url(b.topicId);
    const rotatedSeed = random(32);
    let keys = [b.hostKey];
    let seed = b.hostSeed;
    const hooks: Hooks = {
      intercept: (req) => {
        if (req.route === 'servers' && req.target === 'gamma.test') return { status: 200, body: { server: 'gamma.test', keys: keys.map(keyJson) } };
        if (req.route === 'entries' && req.topic === topic) {
          const from = Number(req.query.get('from') ?? 0);
          const page = b.entries.slice(from).map((e, i) => ({ index: from + i, type: i + from === 0 ? 'update' : 'message', entry: toBase64url(e) }));
          return { status: 200, body: { entries: page, checkpoint: toBase64url(encodeCheckpoint(b.checkpoint(b.log.size, seed))) } };
        }
        if (req.route === 'topic' && req.topic === topic) {
          return { status: 200, body: { topicId: topic, host: 'gamma.test', size: b.log.size, checkpoint: toBase64url(encodeCheckpoint(b.checkpoint(b.log.size, seed))), history: 'shared', epoch: 0, epochStartSize: 1, members: [] } };
        }
        return undefined;
      },
      rewrite: (req, body) => (req.route === 'topics' ? { topics: [...body.topics, { topicId: topic, host: 'gamma.test', size: b.log.size, checkpoint: toBase64url(encodeCheckpoint(b.checkpoint())) }] } : undefined),
    };
    proxy.attack(a.c.user, hooks);
    const r1 = await a.c.sync();
    assert.deepEqual(r1.topics.find((t) => t.id === topic), { id: topic, newEntries: 2, alarms: [], halted: null });
    const v = a.c.topic(topic);
    assert.equal(v.host, 'gamma.test');
    assert.deepEqual(v.members.map((m) => m.user), ['carol@gamma.test', 'dave@gamma.test']);
    // The host rotates its key: the new one is listed after the pinned one, and its checkpoints verify.
    b.post(dave, 'after the rotation');
    keys = [b.hostKey, crypto.ed25519PublicKey(rotatedSeed)];
    seed = rotatedSeed;
    const r2 = await a.c.sync();
    assert.deepEqual(r2.topics.find((t) => t.id === topic), { id: topic, newEntries: 1, alarms: [], halted: null });
    // Restored from the profile, the mirror verifies with the pinned keys, old and new.
    const again = await RendezvousClient.open({ store: a.store, crypto });
    b.post(carol, 'third');
    assert.equal((await again.sync()).topics.find((t) => t.id === topic)?.halted, null);
    assert.equal(again.topic(topic).size, 4);
    // A key list that drops the pinned keys: the host's identity changed.
    b.post(carol, 'fourth');
    keys = [crypto.ed25519PublicKey(random(32))];
    seed = random(32);
    const r3 = await again.sync();
    assert.equal(r3.topics.find((t) => t.id === topic)?.halted, 'federation.key_changed');
    proxy.reset();
  });
});

describe('witnesses', () => {
  it('lists a cosignature that agrees, drops a forged one with an alarm, and halts on a cosigned fork (log.fork, kept)', async () => {
    proxy.reset();
    const { alice, topic } = await topicOfTwo();
    const agrees = cosign(hostCheckpoint(topic, 2, rootAt(alice, topic, 2)));
    const forged = fromBase64url(cosign(hostCheckpoint(topic, 3, rootAt(alice, topic, 3))));
    forged[forged.length - 1]! ^= 1;
    const byOtherHostKey = cosign(hostCheckpoint(topic, 3, rootAt(alice, topic, 3), random(32)), witnessSeed, 'delta.test');

    proxy.attack(alice.c.user, summaryWith({ witnesses: [agrees] }));
    const r1 = await alice.c.sync();
    assert.deepEqual(r1.topics.find((t) => t.id === topic), { id: topic, newEntries: 0, alarms: [], halted: null });
    assert.deepEqual(alice.c.topic(topic).witnesses, [{ server: WITNESS, size: 2 }]);

    // delta.test's keys: the witness seed's key (so the cosignature verifies) but the checkpoint is not the host's.
    proxy.attack(alice.c.user, summaryWith({ witnesses: [agrees, toBase64url(forged), byOtherHostKey] }, {
      intercept: serversAnswer({ [WITNESS]: [witnessKey], 'delta.test': [witnessKey] }),
    }));
    const r2 = await alice.c.sync();
    const t2 = r2.topics.find((t) => t.id === topic)!;
    assert.equal(t2.halted, null, 'a cosignature that does not verify never halts the topic');
    assert.deepEqual(t2.alarms.map((a) => [a.index, a.code]), [
      [null, 'crypto.bad_signature'],
      [null, 'log.bad_checkpoint'],
    ]);
    assert.deepEqual(alice.c.topic(topic).witnesses, [{ server: WITNESS, size: 2 }], 'only what verified and agrees is listed');

    const forked = cosign(hostCheckpoint(topic, 2, random(32)));
    proxy.attack(alice.c.user, summaryWith({ witnesses: [forked] }));
    const r3 = await alice.c.sync();
    assert.equal(r3.topics.find((t) => t.id === topic)?.halted, 'log.fork');
    assert.equal(alice.c.topic(topic).halted?.code, 'log.fork');
    assert.deepEqual(alice.c.topic(topic).witnesses, [], 'a halted topic lists no witness');
    proxy.reset();
    const again = await RendezvousClient.open({ store: alice.store, crypto });
    assert.equal(again.topic(topic).halted?.code, 'log.fork', 'the halt is kept in the profile');
  });
});

describe('fork reports', () => {
  it('halts on two host checkpoints of one size with different roots, and only reports what the device cannot confirm', async () => {
    proxy.reset();
    const { alice, topic } = await topicOfTwo();
    const cp = (size: number, root: Uint8Array) => toBase64url(encodeCheckpoint(hostCheckpoint(topic, size, root)));
    const report = (checkpoints: string[], kind = 'fork') => ({ kind, server: WITNESS, checkpoints, detail: 'seen by the witness', detectedAt: Date.now() });

    // Evidence consistent with this device's log (a rollback of the host, as another server saw it): an alarm.
    proxy.attack(alice.c.user, summaryWith({ forks: [report([cp(3, rootAt(alice, topic, 3)), cp(2, rootAt(alice, topic, 2))], 'rollback')] }));
    const r1 = await alice.c.sync();
    const t1 = r1.topics.find((t) => t.id === topic)!;
    assert.equal(t1.halted, null);
    assert.deepEqual(t1.alarms.map((a) => a.code), ['log.rollback']);

    // Evidence that does not verify: reported, not trusted.
    const bad = fromBase64url(cp(9, random(32)));
    bad[bad.length - 1]! ^= 1;
    proxy.attack(alice.c.user, summaryWith({ forks: [report([toBase64url(bad)])] }));
    const r2 = await alice.c.sync();
    const t2 = r2.topics.find((t) => t.id === topic)!;
    assert.equal(t2.halted, null);
    assert.deepEqual(t2.alarms.map((a) => a.code), ['log.bad_checkpoint']);

    // Two host-signed logs of size 9 (ahead of this device): the host equivocated.
    proxy.attack(alice.c.user, summaryWith({ forks: [report([cp(9, random(32)), cp(9, random(32))])] }));
    const r3 = await alice.c.sync();
    assert.equal(r3.topics.find((t) => t.id === topic)?.halted, 'log.fork');
    assert.equal(alice.c.topic(topic).halted?.code, 'log.fork');
    proxy.reset();
  });

  it('halts on a reported host checkpoint that contradicts the log this device holds', async () => {
    proxy.reset();
    const { alice, topic } = await topicOfTwo();
    const evidence = toBase64url(encodeCheckpoint(hostCheckpoint(topic, 2, random(32))));
    proxy.attack(alice.c.user, summaryWith({ forks: [{ kind: 'fork', server: WITNESS, checkpoints: [evidence], detail: '', detectedAt: 1 }] }));
    const r = await alice.c.sync();
    assert.equal(r.topics.find((t) => t.id === topic)?.halted, 'log.fork');
    proxy.reset();
  });
});

describe('pending submissions (202)', () => {
  it('a post queued for an unreachable host returns pending, and a later sync finds it in the log', async () => {
    proxy.reset();
    const { alice, bob, topic } = await topicOfTwo();
    await bob.c.sync();
    // The post goes through to the server, but the answer the device gets is the 202 of a host that is down.
    proxy.attack(bob.c.user, {
      rewrite: (req) => (req.route === 'message' || req.route === 'update' ? { pending: true } : undefined),
      status: (req) => (req.route === 'message' || req.route === 'update' ? 202 : undefined),
    });
    const r = await bob.c.send(topic, { text: 'queued hello' });
    assert.deepEqual([r.pending, r.index], [true, null]);
    assert.equal(typeof r.clientId, 'string');
    proxy.reset();
    const s = await bob.c.sync();
    assert.deepEqual(s.topics.find((t) => t.id === topic), { id: topic, newEntries: 1, alarms: [], halted: null });
    assert.deepEqual(s.refused, [], 'asked again, the server replays the acknowledgement: delivered');
    assert.deepEqual(bob.c.messages(topic).map((m) => m.text), ['one', 'two', 'queued hello']);
    await alice.c.sync();
    assert.equal(alice.c.messages(topic).at(-1)?.text, 'queued hello');
  });

  it('a queued post the host later refuses is reported by the next sync, once', async () => {
    proxy.reset();
    const { bob, topic } = await topicOfTwo();
    await bob.c.sync();
    let asked = 0;
    const keys: string[] = [];
    // A host that never takes it: first "pending", then, asked again with the same key, its refusal.
    proxy.attack(bob.c.user, {
      intercept: (req) => {
        if (req.route !== 'message') return undefined;
        asked++;
        return asked === 1
          ? { status: 202, body: { pending: true } }
          : { status: 409, body: { error: { code: 'topic.stale_epoch', message: 'the topic moved to a new epoch' } } };
      },
    });
    const r = await bob.c.send(topic, { text: 'never delivered' });
    assert.equal(r.pending, true);
    keys.push(r.clientId);
    const s = await bob.c.sync();
    assert.equal(asked, 2, 'the sync asked about the pending post');
    assert.deepEqual(s.refused.map((x) => [x.topic, x.clientId, x.kind, x.code]), [[topic, keys[0], 'message', 'topic.stale_epoch']]);
    const again = await bob.c.sync();
    assert.deepEqual(again.refused, [], 'reported once, then forgotten');
    assert.equal(asked, 2, 'not asked again');
    proxy.reset();
  });

  it('a topic change queued for an unreachable host returns pending, and shows once synced', async () => {
    proxy.reset();
    const { alice, bob, topic } = await topicOfTwo();
    proxy.attack(alice.c.user, {
      rewrite: (req) => (req.route === 'update' ? { pending: true } : undefined),
      status: (req) => (req.route === 'update' ? 202 : undefined),
    });
    assert.deepEqual(await alice.c.setRole(topic, bob.c.user, 'observer'), { pending: true });
    proxy.reset();
    await alice.c.sync();
    assert.equal(alice.c.topic(topic).members.find((m) => m.user === bob.c.user)?.role, 'observer');
    assert.deepEqual(await alice.c.setRole(topic, bob.c.user, 'participant'), {}, 'a change the host acknowledged is not pending');
  });
});

describe('the mirror with per-server host keys', () => {
  const carol = new TestUser('carol@gamma.test');
  const erin = new TestUser('erin@alpha.test');

  it('verifies each checkpoint with the pinned key its key id names, of the topic host only', () => {
    const b = new LogBuilder('gamma.test', [
      { user: carol, role: 'admin' },
      { user: erin, role: 'participant' },
    ]);
    b.post(carol, 'hi');
    const rotated = random(32);
    const pins: Record<string, Uint8Array[]> = { 'gamma.test': [b.hostKey, crypto.ed25519PublicKey(rotated)], 'alpha.test': [crypto.ed25519PublicKey(serverSeed)] };
    const m = new TopicMirror(crypto, b.topicId, (s) => pins[s] ?? [], new Contacts(() => 0), erin.lookup, 'gamma.test');
    m.accept(0, b.entries[0]!);
    m.accept(1, b.entries[1]!);
    m.checkCheckpoint(b.checkpoint());
    m.checkCheckpoint(b.checkpoint(2, rotated));
    assert.equal(m.checkpoint?.size, 2);
    // Signed by the key pinned for another server, with that server as origin: not the host.
    const other = signCheckpoint(crypto, serverSeed, { origin: 'alpha.test', topicId: b.topicId, size: 2, root: b.log.root(), timestamp: 1 });
    assert.throws(() => m.checkCheckpoint(other), (e: unknown) => isRendezvousError(e, 'log.bad_checkpoint'));
    assert.throws(() => m.verifyHostCheckpoint(b.checkpoint(2, random(32))), (e: unknown) => isRendezvousError(e, 'log.bad_checkpoint'));
    assert.equal(m.contradicts(b.checkpoint(1)), false);
    assert.equal(m.contradicts({ size: 1, root: random(32) }), true);
    assert.equal(m.contradicts({ size: 5, root: random(32) }), false, 'past the log, with nothing to compare');
    // A snapshot restores with the lookup and goes on verifying.
    const restored = TopicMirror.restore(crypto, m.snapshot(), new Contacts(() => 0), erin.lookup, (s) => pins[s] ?? []);
    b.post(erin, 'more');
    restored.accept(2, b.entries[2]!);
    restored.checkCheckpoint(b.checkpoint(3, rotated));
    assert.equal(restored.checkpoint?.size, 3);
  });

  it('takes a replica behind a host acknowledgement as lagging, not a rollback; behind the verified head it is one', () => {
    const b = new LogBuilder('gamma.test', [
      { user: carol, role: 'admin' },
      { user: erin, role: 'participant' },
    ]);
    b.post(carol, 'one');
    const pins = (s: string) => (s === 'gamma.test' ? [b.hostKey] : []);
    const m = new TopicMirror(crypto, b.topicId, pins, new Contacts(() => 0), erin.lookup, 'gamma.test');
    m.accept(0, b.entries[0]!);
    m.accept(1, b.entries[1]!);
    const atTwo = b.checkpoint();
    m.checkCheckpoint(atTwo, { replica: true });
    b.post(erin, 'two');
    b.clock += 10;
    const ack = b.checkpoint(); // the host's answer to erin's post, ahead of the replica
    m.checkCheckpoint(ack, { replica: true });
    m.checkCheckpoint(atTwo, { replica: true }); // the replica has not received entry 2 yet
    assert.equal(m.halted, null);
    assert.equal(m.target, 3);
    m.accept(2, b.entries[2]!);
    assert.equal(m.checkpoint?.size, 3, 'the acknowledgement is compared once the entry arrives');
    // Behind the verified head: a rollback, replica or not.
    assert.throws(() => m.checkCheckpoint(atTwo, { replica: true }), (e: unknown) => isRendezvousError(e, 'log.rollback'));
    // A host topic of this server (no replica): an older checkpoint than one held is a rollback at once.
    const local = new TopicMirror(crypto, b.topicId, pins, new Contacts(() => 0), erin.lookup, 'gamma.test');
    local.accept(0, b.entries[0]!);
    local.accept(1, b.entries[1]!);
    local.checkCheckpoint(ack);
    assert.throws(() => local.checkCheckpoint(atTwo), (e: unknown) => isRendezvousError(e, 'log.rollback'));
  });
});
