/**
 * In-process route tests for topics and logs (docs/server.md §Topics): create, update, post,
 * read, proofs, idempotency, concurrency, and the replay of every signed object (same topic,
 * other topic, other endpoint). A refused request must leave the log unchanged, which each
 * error test checks by re-syncing the client's verifying mirror.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeCheckpoint,
  encodeMessage,
  encodeTopicUpdate,
  fromBase64url,
  toBase64url,
  verifyConsistency,
  verifyInclusion,
  entryLeafHash,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { ADMIN_TOKEN, ScriptedUser, call, expectError, inProcess, issuePin, testServer, type TestServer, type Transport } from './helpers.ts';
import { ScriptedTopic, newClientId, submit, token } from './topic-client.ts';

let s: TestServer;
let t: Transport;
let alice: ScriptedUser, bob: ScriptedUser, carol: ScriptedUser, dave: ScriptedUser;

async function user(name: string): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}@alpha.test`, t, () => s.clock.t);
  assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
  await u.login(0);
  return u;
}

function create(members: [ScriptedUser, 'admin' | 'participant' | 'observer'][], history: 'shared' | 'hidden' = 'shared') {
  return ScriptedTopic.create(
    t,
    'alpha.test',
    s.ctx.serverKey,
    members.map(([u, role]) => ({ user: u, role })),
    history,
  );
}

async function size(topic: ScriptedTopic, u = alice): Promise<number> {
  const r = await call(t, 'GET', topic.path, undefined, token(u));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.size;
}

before(async () => {
  s = await testServer('alpha.test', { register: [1000, 60_000], write: [100_000, 60_000] });
  t = inProcess(s.app);
  alice = await user('alice');
  bob = await user('bob');
  carol = await user('carol');
  dave = await user('dave');
});
after(async () => s.close());

describe('create', () => {
  it('creates a topic with an observer; every member reads the same verified log', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
      [carol, 'observer'],
    ]);
    assert.equal(topic.log.size, 1);
    for (const u of [bob, carol]) {
      const r = await call(t, 'GET', `${topic.path}/entries`, undefined, token(u));
      assert.equal(r.status, 200);
      assert.equal(r.body.entries.length, 1);
    }
    const info = await call(t, 'GET', topic.path, undefined, token(carol));
    assert.equal(info.status, 200);
    assert.deepEqual(
      info.body.members.map((m: { user: string; role: string }) => [m.user, m.role]),
      [
        ['alice@alpha.test', 'admin'],
        ['bob@alpha.test', 'participant'],
        ['carol@alpha.test', 'observer'],
      ],
    );
    assert.equal(info.body.epoch, 0);
    const list = await call(t, 'GET', '/v1/topics', undefined, token(bob));
    assert.ok(
      list.body.topics.some((x: { topicId: string }) => x.topicId === toBase64url(topic.id)),
      'bob lists the topic',
    );
  });

  it('returns the first checkpoint, signed by this server over the log of one entry', async () => {
    const { topic, update } = ScriptedTopic.build(t, 'alpha.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
    const r = await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(update)) }, token(alice));
    assert.equal(r.status, 201);
    assert.equal(r.body.topicId, toBase64url(topic.id));
    assert.equal(r.body.index, 0);
    assert.equal(r.body.size, 1);
    const cp = decodeCheckpoint(fromBase64url(r.body.checkpoint));
    await topic.sync(alice);
    assert.deepEqual(cp, topic.lastCheckpoint);
  });

  it('refuses a topic hosted elsewhere, a create signed by another user, unknown and remote members, and a key not certified by the registered identity', async () => {
    const before = (await call(t, 'GET', '/v1/topics', undefined, token(alice))).body.topics.length;
    const elsewhere = ScriptedTopic.build(t, 'beta.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
    expectError(await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(elsewhere.update)) }, token(alice)), 400, 'topic.wrong_host');

    const byAlice = ScriptedTopic.build(t, 'alpha.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
    expectError(await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(byAlice.update)) }, token(bob)), 403, 'auth.forbidden');

    const ghost = new ScriptedUser('ghost@alpha.test', t, () => s.clock.t);
    const withGhost = ScriptedTopic.build(t, 'alpha.test', s.ctx.serverKey, [
      { user: alice, role: 'admin' },
      { user: ghost, role: 'participant' },
    ]);
    expectError(await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(withGhost.update)) }, token(alice)), 404, 'user.unknown');

    // A member of another server is checked against the identity key their home server
    // publishes (protocol §17.4); a home server that cannot be reached refuses the create.
    s.ctx.federation.setPeer('beta.test', 'http://127.0.0.1:1');
    const remote = new ScriptedUser('erin@beta.test', t, () => s.clock.t);
    const withRemote = ScriptedTopic.build(t, 'alpha.test', s.ctx.serverKey, [
      { user: alice, role: 'admin' },
      { user: remote, role: 'participant' },
    ]);
    expectError(
      await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(withRemote.update)) }, token(alice)),
      502,
      'federation.unreachable',
    );

    // An impostor identity key certifying a topic key for bob: valid certificate, wrong identity.
    const impostor = new ScriptedUser('bob@alpha.test', t, () => s.clock.t);
    const withImpostor = ScriptedTopic.build(t, 'alpha.test', s.ctx.serverKey, [
      { user: alice, role: 'admin' },
      { user: impostor, role: 'participant' },
    ]);
    expectError(
      await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(withImpostor.update)) }, token(alice)),
      400,
      'crypto.bad_certificate',
    );
    const after = (await call(t, 'GET', '/v1/topics', undefined, token(alice))).body.topics.length;
    assert.equal(after, before, 'no refused create left a topic behind');
  });

  it('refuses malformed bodies and ids at the edge', async () => {
    expectError(await submit(t, '/v1/topics', { update: 'not base64!' }, token(alice)), 400, 'request.bad_field');
    expectError(await submit(t, '/v1/topics', { update: toBase64url(new Uint8Array([1, 2, 3])) }, token(alice)), 400, 'encoding.truncated');
    expectError(await submit(t, '/v1/topics', { nothing: 1 }, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', '/v1/topics/abc', undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', `/v1/topics/${toBase64url(new Uint8Array(16))}`, undefined, token(alice)), 404, 'topic.unknown');
    expectError(await call(t, 'GET', '/v1/topics'), 401, 'auth.required');
  });
});

describe('messages', () => {
  it('members post, observers are refused, and every post returns a checkpoint of the new log', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
      [carol, 'observer'],
    ]);
    for (const [u, text] of [
      [alice, 'hello'],
      [bob, 'hi alice'],
    ] as const) {
      const r = await topic.post(u, topic.message(u, text));
      assert.equal(r.status, 201, JSON.stringify(r.body));
      await topic.sync(u);
      assert.equal(r.body.index, topic.log.size - 1);
      assert.deepEqual(decodeCheckpoint(fromBase64url(r.body.checkpoint)), topic.lastCheckpoint);
    }
    expectError(await topic.post(carol, topic.message(carol, 'may I?')), 403, 'topic.read_only');
    expectError(await topic.post(dave, topic.message(alice, 'not mine')), 403, 'topic.not_member');
    // bob submitting alice's message: the sender must be the caller.
    expectError(await topic.post(bob, topic.message(alice, 'forwarded')), 403, 'auth.forbidden');
    assert.equal(await size(topic), 3, 'refused posts appended nothing');
  });

  it('accepts an older head within the epoch and refuses heads outside the log or a root the log never had', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    assert.equal((await topic.post(alice, topic.message(alice, 'one'))).status, 201);
    await topic.sync(alice);
    const stale = topic.message(bob, 'sent from an older head', { headSize: 1 });
    assert.equal((await topic.post(bob, stale)).status, 201);
    await topic.sync(bob);
    const ahead = topic.message(bob, 'from the future');
    ahead.headSize = 99;
    expectError(await topic.post(bob, ahead), 409, 'log.bad_head');
    // A valid signature over another log's root: the server cannot tell it from a forgery.
    const other = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const forked = topic.message(bob, 'x');
    forked.signature = other.message(bob, 'x').signature;
    expectError(await topic.post(bob, forked), 400, 'crypto.bad_signature');
    assert.equal(await size(topic), 3);
  });

  it('refuses a message for an epoch that is over, and one for an epoch not yet started', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
      [carol, 'participant'],
    ]);
    const old = topic.message(bob, 'old epoch');
    await topic.changeAndSync(alice, { type: 'remove', memberId: topic.memberId(carol) });
    expectError(await topic.post(bob, old), 409, 'topic.stale_epoch');
    const future = topic.message(bob, 'next epoch');
    future.epoch += 1;
    expectError(await topic.post(bob, future), 400, 'topic.bad_epoch');
  });
});

describe('updates and membership', () => {
  it('adds, changes roles and removes; a removed member can neither post nor read', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    await topic.changeAndSync(alice, { type: 'add', role: 'observer', user: carol });
    expectError(await topic.post(carol, topic.message(carol, 'read only')), 403, 'topic.read_only');
    await topic.changeAndSync(alice, { type: 'role', memberId: topic.memberId(carol), role: 'participant' });
    assert.equal((await topic.post(carol, topic.message(carol, 'now I can'))).status, 201);
    await topic.sync(alice);
    const before = topic.message(bob, 'before removal');
    await topic.changeAndSync(alice, { type: 'remove', memberId: topic.memberId(bob) });
    expectError(await topic.post(bob, before), 403, 'topic.not_member');
    expectError(await call(t, 'GET', `${topic.path}/entries`, undefined, token(bob)), 403, 'topic.not_member');
    expectError(await call(t, 'GET', topic.path, undefined, token(bob)), 403, 'topic.not_member');
    expectError(await call(t, 'GET', `${topic.path}/proofs/inclusion?index=0&size=1`, undefined, token(bob)), 403, 'topic.not_member');
    const list = await call(t, 'GET', '/v1/topics', undefined, token(bob));
    assert.ok(!list.body.topics.some((x: { topicId: string }) => x.topicId === toBase64url(topic.id)), 'bob no longer lists it');
    const info = await call(t, 'GET', topic.path, undefined, token(carol));
    assert.equal(info.body.epoch, 1);
    assert.equal(info.body.epochStartSize, topic.log.size);
  });

  it('refuses updates by non-admins and updates that break the state machine, appending nothing', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    // bob signs as himself (not an admin).
    const byBob = topic.change(alice, { type: 'rekey' });
    const forged = { ...byBob.update, signer: topic.memberId(bob) };
    expectError(await topic.update(bob, forged), 403, 'topic.not_admin');
    // alice's update submitted by bob.
    expectError(await topic.update(bob, byBob.update), 403, 'auth.forbidden');
    // dave is no member at all.
    expectError(await topic.update(dave, byBob.update), 403, 'topic.not_member');
    // Tampered after signing.
    const tampered = { ...byBob.update, epoch: byBob.update.epoch };
    tampered.signature = new Uint8Array(64);
    expectError(await topic.update(alice, tampered), 400, 'crypto.bad_signature');
    // A create update on the updates endpoint.
    const other = ScriptedTopic.build(t, 'alpha.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
    expectError(await topic.update(alice, other.update), 400, 'topic.wrong_topic');
    assert.equal(await size(topic), 1);
    // The real one still applies.
    const r = await topic.update(alice, byBob.update);
    assert.equal(r.status, 201, JSON.stringify(r.body));
  });

  it('deletes the topic when its last member leaves', async () => {
    const topic = await create([[alice, 'admin']]);
    assert.equal((await topic.post(alice, topic.message(alice, 'last words'))).status, 201);
    const leave = topic.change(alice, { type: 'leave' });
    assert.equal((await topic.update(alice, leave.update)).status, 201);
    expectError(await call(t, 'GET', topic.path, undefined, token(alice)), 404, 'topic.unknown');
    assert.equal(await s.ctx.store.getTopic(topic.id), null);
    assert.deepEqual(await s.ctx.store.getEntries(topic.id, 0, 10), [], 'the log is gone');
  });

  it('lets the admin API delete a topic; members then find it gone', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const path = `/v1/admin/topics/${toBase64url(topic.id)}`;
    expectError(await call(t, 'DELETE', path), 401, 'auth.required');
    expectError(await call(t, 'DELETE', path, undefined, token(alice)), 401, 'auth.invalid_token');
    assert.equal((await call(t, 'DELETE', path, undefined, ADMIN_TOKEN)).status, 200);
    expectError(await call(t, 'GET', topic.path, undefined, token(bob)), 404, 'topic.unknown');
    expectError(await topic.post(bob, topic.message(bob, 'anyone?')), 404, 'topic.unknown');
    const list = await call(t, 'GET', '/v1/topics', undefined, token(bob));
    assert.ok(!list.body.topics.some((x: { topicId: string }) => x.topicId === toBase64url(topic.id)), 'gone from lists');
    expectError(await call(t, 'DELETE', path, undefined, ADMIN_TOKEN), 404, 'topic.unknown');
  });
});

describe('replay of signed objects', () => {
  it('a message posted again (new client id) is topic.replay; in another topic it does not verify', async () => {
    const t1 = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const t2 = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    // Same key secrets in both topics would be a client bug; the server still must refuse.
    const m = t1.message(bob, 'only once');
    assert.equal((await t1.post(bob, m)).status, 201);
    expectError(await t1.post(bob, m), 409, 'topic.replay');
    const r2 = await submit(t, `${t2.path}/messages`, { message: toBase64url(encodeMessage(m)) }, token(bob));
    expectError(r2, 400, 'crypto.bad_signature');
    assert.equal(await size(t1), 2);
    assert.equal(await size(t2), 1);
  });

  it('an update applied again is topic.bad_parent; in another topic topic.wrong_topic; a create again topic.exists', async () => {
    const t1 = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const t2 = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const u = t1.change(alice, { type: 'role', memberId: t1.memberId(bob), role: 'admin' });
    assert.equal((await t1.update(alice, u.update)).status, 201);
    expectError(await t1.update(alice, u.update), 409, 'topic.bad_parent');
    const r = await submit(t, `${t2.path}/updates`, { update: toBase64url(encodeTopicUpdate(u.update)) }, token(alice));
    expectError(r, 400, 'topic.wrong_topic');
    const create0 = t1.entries[0]!;
    const createUpdate = (await import('@rendezvous/protocol')).decodeLogEntry(create0).body;
    expectError(await submit(t, '/v1/topics', { update: toBase64url(createUpdate) }, token(alice)), 409, 'topic.exists');
  });

  it('a signed object on another endpoint is refused: a message as an update, an update as a message', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const m = encodeMessage(topic.message(alice, 'x'));
    const u = encodeTopicUpdate(topic.change(alice, { type: 'rekey' }).update);
    const asUpdate = await submit(t, `${topic.path}/updates`, { update: toBase64url(m) }, token(alice));
    assert.equal(asUpdate.status, 400);
    assert.match(asUpdate.body.error.code, /^encoding\./);
    const asMessage = await submit(t, `${topic.path}/messages`, { message: toBase64url(u) }, token(alice));
    assert.equal(asMessage.status, 400);
    assert.match(asMessage.body.error.code, /^encoding\./);
    const asCreate = await submit(t, '/v1/topics', { update: toBase64url(m) }, token(alice));
    assert.equal(asCreate.status, 400);
    assert.equal(await size(topic), 1);
  });
});

describe('idempotency', () => {
  it('a retry with the same client id returns the original result and appends nothing', async () => {
    const topic = await create([[alice, 'admin']]);
    const id = newClientId();
    const m = topic.message(alice, 'once');
    const first = await topic.post(alice, m, id);
    const again = await topic.post(alice, m, id);
    assert.equal(first.status, 201);
    assert.equal(again.status, 201);
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(await size(topic), 2);
  });

  it('the same client id with another body, or on another endpoint, is request.idempotency_mismatch', async () => {
    const topic = await create([[alice, 'admin']]);
    const id = newClientId();
    assert.equal((await topic.post(alice, topic.message(alice, 'a'), id)).status, 201);
    expectError(await topic.post(alice, topic.message(alice, 'b'), id), 422, 'request.idempotency_mismatch');
    const other = await create([[alice, 'admin']]);
    expectError(await other.post(alice, other.message(alice, 'a'), id), 422, 'request.idempotency_mismatch');
    assert.equal(await size(topic), 2);
    assert.equal(await size(other), 1);
  });

  it('client ids are per device: another device may use the same id', async () => {
    const topic = await create([[alice, 'admin']]);
    if (alice.devices.length < 2) {
      assert.equal((await alice.addDevice()).status, 201);
      await alice.login(1);
    }
    const id = newClientId();
    assert.equal((await topic.post(alice, topic.message(alice, 'a'), id, 0)).status, 201);
    assert.equal((await topic.post(alice, topic.message(alice, 'b'), id, 1)).status, 201);
    assert.equal(await size(topic), 3);
  });

  it('requires an Idempotency-Key of 8–64 url-safe characters', async () => {
    const topic = await create([[alice, 'admin']]);
    const body = { message: toBase64url(encodeMessage(topic.message(alice, 'x'))) };
    const r = await call(t, 'POST', `${topic.path}/messages`, body, token(alice));
    expectError(r, 400, 'request.bad_field');
    expectError(await submit(t, `${topic.path}/messages`, body, token(alice), 'short'), 400, 'request.bad_field');
    expectError(await submit(t, `${topic.path}/messages`, body, token(alice), 'has spaces in it'), 400, 'request.bad_field');
  });

  it('the same client id sent in parallel appends once and answers every request alike', async () => {
    const topic = await create([[alice, 'admin']]);
    const id = newClientId();
    const m = topic.message(alice, 'parallel');
    const rs = await Promise.all(Array.from({ length: 8 }, () => topic.post(alice, m, id)));
    for (const r of rs) {
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.deepEqual(r.body, rs[0]!.body);
    }
    assert.equal(await size(topic), 2);
  });
});

describe('concurrency', () => {
  it('parallel posts from several members get distinct, gapless indexes and one verifiable log', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
      [dave, 'participant'],
    ]);
    const senders = [alice, bob, dave];
    const rs = await Promise.all(Array.from({ length: 30 }, (_, i) => topic.post(senders[i % 3]!, topic.message(senders[i % 3]!, `m${i}`))));
    const indexes = rs.map((r) => {
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body.index as number;
    });
    assert.deepEqual(
      [...indexes].sort((a, b) => a - b),
      Array.from({ length: 30 }, (_, i) => i + 1),
    );
    await topic.sync(alice);
    assert.equal(topic.log.size, 31);
  });
});

describe('proofs', () => {
  it('serves inclusion and consistency proofs that verify against the checkpoints', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const roots: Uint8Array[] = [];
    for (let i = 0; i < 9; i++) {
      assert.equal((await topic.post(bob, topic.message(bob, `p${i}`))).status, 201);
      await topic.sync(bob);
      roots[topic.log.size] = topic.lastCheckpoint!.root;
    }
    const n = topic.log.size;
    for (let index = 0; index < n; index++) {
      const r = await call(t, 'GET', `${topic.path}/proofs/inclusion?index=${index}&size=${n}`, undefined, token(alice));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      verifyInclusion(crypto, index, n, entryLeafHash(crypto, topic.entries[index]!), r.body.proof.map(fromBase64url), roots[n]!);
    }
    for (let m = 2; m < n; m++) {
      const r = await call(t, 'GET', `${topic.path}/proofs/consistency?from=${m}&to=${n}`, undefined, token(alice));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      verifyConsistency(crypto, m, n, r.body.proof.map(fromBase64url), roots[m]!, roots[n]!);
    }
    expectError(await call(t, 'GET', `${topic.path}/proofs/inclusion?index=${n}&size=${n}`, undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', `${topic.path}/proofs/inclusion?index=0&size=${n + 1}`, undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', `${topic.path}/proofs/consistency?from=0&to=${n}`, undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', `${topic.path}/proofs/consistency?from=3&to=2`, undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', `${topic.path}/proofs/inclusion?index=x&size=2`, undefined, token(alice)), 400, 'request.bad_field');
  });

  it('pages entries with from and limit', async () => {
    const topic = await create([[alice, 'admin']]);
    for (let i = 0; i < 5; i++) assert.equal((await topic.post(alice, topic.message(alice, `e${i}`))).status, 201);
    const r = await call(t, 'GET', `${topic.path}/entries?from=2&limit=2`, undefined, token(alice));
    assert.deepEqual(
      r.body.entries.map((e: { index: number }) => e.index),
      [2, 3],
    );
    const tail = await call(t, 'GET', `${topic.path}/entries?from=99`, undefined, token(alice));
    assert.deepEqual(tail.body.entries, []);
  });
});

describe('limits', () => {
  it('rate-limits posts per device before reading or verifying anything', async () => {
    const strict = await testServer('alpha.test', { register: [1000, 60_000], write: [2, 60_000] });
    try {
      const st = inProcess(strict.app);
      const u = new ScriptedUser('zoe@alpha.test', st, () => strict.clock.t);
      assert.equal((await u.register(await issuePin(st, u.user))).status, 201);
      await u.login(0);
      const path = `/v1/topics/${toBase64url(new Uint8Array(16))}/messages`;
      expectError(await submit(st, path, { message: 'AAAA' }, token(u)), 400, 'encoding.unknown_version');
      expectError(await submit(st, path, { message: 'AAAA' }, token(u)), 400, 'encoding.unknown_version');
      const r = await submit(st, path, { message: 'AAAA' }, token(u));
      expectError(r, 429, 'rate.limited');
      assert.ok(Number(r.headers.get('retry-after')) >= 1, 'retry-after is set');
    } finally {
      await strict.close();
    }
  });

  it('refuses a message body over the cap with 413', async () => {
    const topic = await create([[alice, 'admin']]);
    const big = { message: 'A'.repeat(400 * 1024) };
    expectError(await submit(t, `${topic.path}/messages`, big, token(alice)), 413, 'request.too_large');
  });
});

describe('state rebuild', () => {
  it('a server that restarts rebuilds each topic from its updates and goes on appending', async () => {
    const topic = await create([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    await topic.changeAndSync(alice, { type: 'add', role: 'participant', user: carol });
    await topic.changeAndSync(alice, { type: 'remove', memberId: topic.memberId(bob) });
    assert.equal((await topic.post(carol, topic.message(carol, 'before restart'))).status, 201);
    await topic.sync(carol);
    // A second app over the same store starts with an empty topic cache, as after a restart.
    const { createApp } = await import('../src/http/app.ts');
    const { createContext } = await import('../src/context.ts');
    const ctx2 = createContext({
      name: s.ctx.name,
      serverSeed: s.ctx.serverSeed,
      crypto,
      store: s.ctx.store,
      blobs: s.ctx.blobs,
      log: s.ctx.log,
      version: 'test',
      now: s.ctx.now,
    });
    const t2 = inProcess(createApp(ctx2));
    const r = await submit(t2, `${topic.path}/messages`, { message: toBase64url(encodeMessage(topic.message(carol, 'after restart'))) }, token(carol));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    expectError(await submit(t2, `${topic.path}/messages`, { message: toBase64url(encodeMessage(topic.message(alice, 'x'))) }, token(bob)), 403, 'topic.not_member');
    const info = await call(t2, 'GET', topic.path, undefined, token(carol));
    assert.equal(info.body.epoch, 1);
    assert.equal(info.body.size, topic.log.size + 1);
    await topic.sync(carol);
  });
});

