/**
 * The topics issue's "done when" flow, end to end over real HTTP against a real server process
 * (`rendezvous serve`): the admin CLI issues pins; a scripted client registers alice, bob and
 * carol; alice adds and logs in a second device; alice creates a topic with bob as participant
 * and carol as observer; alice (from both devices) and bob post; every reader fetches the log
 * from scratch, verifies every entry and the signed checkpoint against the key the server
 * publishes, and decrypts every message; inclusion and consistency proofs verify; carol's post
 * is refused read-only; a removed member can neither read nor post.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyUpdate,
  decodeCheckpoint,
  decodeLogEntry,
  decodeMessage,
  decodeTopicUpdate,
  encodeMessage,
  entryLeafHash,
  epochPrk,
  equal,
  fromBase64url,
  memberByUser,
  openKeyShare,
  openMessage,
  toBase64url,
  verifyCheckpoint,
  verifyConsistency,
  verifyInclusion,
  type Checkpoint,
  type TopicState,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { ScriptedUser, call, expectError, overHttp, type Transport } from './helpers.ts';
import { ScriptedTopic, attachTopic, token } from './topic-client.ts';
import { adminPin, cleanup, start, tempDir, type ServerProcess } from './process.ts';

let srv: ServerProcess;
let t: Transport;
let serverKey: Uint8Array;
let alice: ScriptedUser, bob: ScriptedUser, carol: ScriptedUser;
let topic: ScriptedTopic;
/** Every checkpoint a post was acknowledged with, in order. */
const acked: { index: number; checkpoint: Checkpoint; message: Uint8Array }[] = [];

before(async () => {
  srv = await start(tempDir('rendezvous-e2e-topics-'));
  t = overHttp(srv.url);
});
after(async () => {
  await cleanup();
});

/** Decrypts every message of `topic`'s verified mirror as `reader` would: share, then message. */
function readAs(view: ScriptedTopic, reader: string): { sender: string; text: string }[] {
  const out: { sender: string; text: string }[] = [];
  let state: TopicState | null = null;
  let secret: Uint8Array | null = null;
  view.entries.forEach((bytes) => {
    const e = decodeLogEntry(bytes);
    if (e.type === 'update') {
      const u = decodeTopicUpdate(e.body);
      state = applyUpdate(crypto, state, u);
      if (u.commitment !== null) {
        const me = memberByUser(state, reader);
        const share = me === undefined ? undefined : u.shares.find((s) => s.memberId === me.id);
        secret = share === undefined ? null : openKeyShare(crypto, view.id, u.epoch, share, view.keys.get(reader)!.encryptionSecret, u.commitment);
      }
      return;
    }
    const m = decodeMessage(e.body);
    assert.ok(secret !== null, `${reader} holds the secret of epoch ${m.epoch}`);
    const content = openMessage(crypto, view.id, epochPrk(crypto, view.id, m.epoch, secret), m, view.log.root(m.headSize));
    assert.equal(content.type, 'text');
    const sender = state!.members.get(m.sender)!.topicKey.user;
    out.push({ sender, text: new TextDecoder().decode(content.body) });
  });
  return out;
}

describe('the topics flow against a real server process', () => {
  it('the admin CLI issues pins; alice, bob and carol register; alice adds and logs in a second device', async () => {
    const well = await call(t, 'GET', '/.well-known/rendezvous');
    assert.equal(well.status, 200);
    assert.equal(well.body.server, srv.name);
    serverKey = fromBase64url(well.body.publicKey);
    assert.equal(serverKey.length, 32);

    const pins = await Promise.all(['alice', 'bob', 'carol'].map((n) => adminPin(srv, n)));
    assert.deepEqual(
      pins.map((p) => p.user),
      ['alice', 'bob', 'carol'].map((n) => `${n}@${srv.name}`),
    );
    assert.equal(new Set(pins.map((p) => p.pin)).size, 3, 'three different pins');
    [alice, bob, carol] = pins.map((p) => new ScriptedUser(p.user, t, Date.now)) as [ScriptedUser, ScriptedUser, ScriptedUser];
    for (const [i, u] of [alice, bob, carol].entries()) {
      const r = await u.register(pins[i]!.pin);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.user, u.user);
      await u.login(0, srv.name);
    }
    // A pin is good once.
    expectError(await new ScriptedUser(alice.user, t, Date.now).register(pins[0]!.pin), 409, 'user.exists');

    const added = await alice.addDevice();
    assert.equal(added.status, 201, JSON.stringify(added.body));
    assert.equal(added.body.deviceId, alice.devices[1]!.id);
    await alice.login(1, srv.name);
    const devices = await call(t, 'GET', '/v1/devices', undefined, token(alice, 1));
    assert.equal(devices.status, 200);
    assert.deepEqual(
      devices.body.devices.map((d: { deviceId: string; current: boolean }) => [d.deviceId, d.current]).sort(),
      [
        [alice.devices[0]!.id, false],
        [alice.devices[1]!.id, true],
      ].sort(),
    );
  });

  it('alice creates a topic with bob participant and carol observer; alice (both devices) and bob post', async () => {
    topic = await ScriptedTopic.create(t, srv.name, serverKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: carol, role: 'observer' },
    ]);
    assert.equal(topic.log.size, 1);
    const posts: [ScriptedUser, number, string][] = [
      [alice, 0, 'hello from alice (laptop)'],
      [alice, 1, 'hello from alice (phone)'],
      [bob, 0, 'hi alice, bob here'],
      [alice, 1, 'phone again'],
      [bob, 0, 'bob again'],
    ];
    for (const [u, device, text] of posts) {
      const m = topic.message(u, text);
      const r = await topic.post(u, m, undefined, device);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.index, topic.log.size, 'appended at the end of the log the client saw');
      assert.equal(r.body.size, topic.log.size + 1);
      const cp = decodeCheckpoint(fromBase64url(r.body.checkpoint));
      verifyCheckpoint(crypto, cp, serverKey, topic.id);
      assert.equal(cp.size, r.body.size);
      await topic.sync(u);
      assert.ok(equal(cp.root, topic.log.root()), 'the acknowledged checkpoint is the root of the synced log');
      const e = decodeLogEntry(topic.entries[r.body.index]!);
      assert.equal(e.type, 'message');
      assert.deepEqual(e.body, encodeMessage(m), 'the log holds the posted bytes');
      acked.push({ index: r.body.index, checkpoint: cp, message: e.body });
    }
    assert.equal(topic.log.size, 1 + posts.length);
  });

  it('everyone reads the same log, verifies it from scratch, and decrypts every message', async () => {
    const expected = [
      { sender: alice.user, text: 'hello from alice (laptop)' },
      { sender: alice.user, text: 'hello from alice (phone)' },
      { sender: bob.user, text: 'hi alice, bob here' },
      { sender: alice.user, text: 'phone again' },
      { sender: bob.user, text: 'bob again' },
    ];
    for (const u of [alice, bob, carol]) {
      const view = attachTopic(t, srv.name, serverKey, topic.id, topic);
      await view.sync(u);
      assert.equal(view.log.size, topic.log.size, `${u.user} sees every entry`);
      assert.deepEqual(view.entries, topic.entries, `${u.user} sees the same bytes`);
      assert.deepEqual(view.lastCheckpoint, topic.lastCheckpoint);
      assert.deepEqual(readAs(view, u.user), expected, `${u.user} decrypts every message`);
    }
    // alice's second device reads the same entries with its own session.
    const r = await call(t, 'GET', `${topic.path}/entries`, undefined, token(alice, 1));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(
      r.body.entries.map((e: { entry: string }) => fromBase64url(e.entry)),
      topic.entries,
    );
    const info = await call(t, 'GET', topic.path, undefined, token(carol));
    assert.equal(info.status, 200);
    assert.equal(info.body.size, topic.log.size);
    assert.deepEqual(
      info.body.members.map((m: { user: string; role: string }) => [m.user, m.role]),
      [
        [alice.user, 'admin'],
        [bob.user, 'participant'],
        [carol.user, 'observer'],
      ],
    );
  });

  it('inclusion and consistency proofs verify against signed checkpoints', async () => {
    const n = topic.log.size;
    const final = topic.lastCheckpoint!;
    assert.equal(final.size, n);
    for (let index = 0; index < n; index++) {
      const r = await call(t, 'GET', `${topic.path}/proofs/inclusion?index=${index}&size=${n}`, undefined, token(carol));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      verifyInclusion(crypto, index, n, entryLeafHash(crypto, topic.entries[index]!), r.body.proof.map(fromBase64url), final.root);
    }
    for (const a of acked) {
      // The entry is in the log its own acknowledgement signed...
      const inc = await call(t, 'GET', `${topic.path}/proofs/inclusion?index=${a.index}&size=${a.checkpoint.size}`, undefined, token(bob));
      assert.equal(inc.status, 200, JSON.stringify(inc.body));
      verifyInclusion(crypto, a.index, a.checkpoint.size, entryLeafHash(crypto, topic.entries[a.index]!), inc.body.proof.map(fromBase64url), a.checkpoint.root);
      // ...and that log is a prefix of today's.
      const con = await call(t, 'GET', `${topic.path}/proofs/consistency?from=${a.checkpoint.size}&to=${n}`, undefined, token(alice, 1));
      assert.equal(con.status, 200, JSON.stringify(con.body));
      verifyConsistency(crypto, a.checkpoint.size, n, con.body.proof.map(fromBase64url), a.checkpoint.root, final.root);
    }
    // A proof against the wrong root fails: the check above is not vacuous.
    const r = await call(t, 'GET', `${topic.path}/proofs/consistency?from=2&to=${n}`, undefined, token(alice));
    assert.throws(
      () => verifyConsistency(crypto, 2, n, r.body.proof.map(fromBase64url), acked[2]!.checkpoint.root, final.root),
      (e: { code?: string }) => e.code === 'log.bad_proof',
    );
  });

  it("carol's post is refused with topic.read_only, and appends nothing", async () => {
    const before = topic.log.size;
    expectError(await topic.post(carol, topic.message(carol, 'may I?')), 403, 'topic.read_only');
    const info = await call(t, 'GET', topic.path, undefined, token(alice));
    assert.equal(info.body.size, before);
    await topic.sync(alice);
    assert.equal(topic.log.size, before);
  });

  it('a removed member can neither read nor post; the others go on in a new epoch bob has no share of', async () => {
    const bobId = topic.memberId(bob);
    const early = topic.message(bob, 'written before removal');
    const r = await topic.changeAndSync(alice, { type: 'remove', memberId: bobId });
    assert.equal(r.status, 201);
    const removal = decodeTopicUpdate(decodeLogEntry(topic.entries.at(-1)!).body);
    assert.equal(removal.epoch, 1);
    assert.ok(removal.commitment !== null, 'removal starts a new epoch');
    assert.ok(!removal.shares.some((s) => s.memberId === bobId), 'bob gets no share of the new epoch');

    expectError(await topic.post(bob, early), 403, 'topic.not_member');
    expectError(await call(t, 'GET', `${topic.path}/entries`, undefined, token(bob)), 403, 'topic.not_member');
    expectError(await call(t, 'GET', `${topic.path}/entries?from=0&limit=1`, undefined, token(bob)), 403, 'topic.not_member');
    expectError(await call(t, 'GET', topic.path, undefined, token(bob)), 403, 'topic.not_member');
    expectError(await call(t, 'GET', `${topic.path}/proofs/inclusion?index=0&size=1`, undefined, token(bob)), 403, 'topic.not_member');
    expectError(await call(t, 'GET', `${topic.path}/proofs/consistency?from=1&to=2`, undefined, token(bob)), 403, 'topic.not_member');
    const list = await call(t, 'GET', '/v1/topics', undefined, token(bob));
    assert.equal(list.status, 200);
    assert.ok(!list.body.topics.some((x: { topicId: string }) => x.topicId === toBase64url(topic.id)), 'bob no longer lists the topic');

    const after = await topic.post(alice, topic.message(alice, 'without bob'), undefined, 1);
    assert.equal(after.status, 201, JSON.stringify(after.body));
    const carolView = attachTopic(t, srv.name, serverKey, topic.id, topic);
    await carolView.sync(carol);
    const texts = readAs(carolView, carol.user);
    assert.deepEqual(texts.at(-1), { sender: alice.user, text: 'without bob' }, 'carol reads the new epoch');
    assert.equal(texts.length, 6);
    assert.equal(memberByUser(carolView.state!, bob.user), undefined);
  });

  it('the process shuts down cleanly on SIGTERM', async () => {
    const r = await srv.stop();
    assert.deepEqual(r, { code: 0, signal: null }, srv.output());
  });
});

describe('test processes', () => {
  it('take their rate limits from the config file (`rates`), which the other tests rely on', async () => {
    const strict = await start(tempDir('rendezvous-e2e-rates-'), undefined, { rates: { register: [1, 60_000] } });
    const st = overHttp(strict.url);
    // The register bucket is taken before the body is read: the first junk request is refused
    // for what it is, the second by the limit of one.
    const first = await call(st, 'POST', '/v1/register', {});
    assert.equal(first.status, 400, JSON.stringify(first.body));
    expectError(await call(st, 'POST', '/v1/register', {}), 429, 'rate.limited');
    assert.deepEqual(await strict.stop(), { code: 0, signal: null });
  });
});
