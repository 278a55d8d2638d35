/**
 * Message signatures verified ahead on a worker thread (topics.ts postMessage, issue 7): with the
 * pool on, off, or failed, posts get the same answers (a bad signature is still
 * crypto.bad_signature), a signature a worker verified is not verified again on the main thread,
 * and nothing is left in the server's VerifiedSignatures once requests have ended, whether they
 * succeeded or failed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { withVerifiedSignatures, type CryptoProvider } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { VerifyPool } from '@rendezvous/protocol/crypto/node-verify-pool';
import { ScriptedUser, call, expectError, inProcess, issuePin, overHttp, socketServer, testServer, type TestServer, type Transport } from './helpers.ts';
import { ScriptedTopic, newClientId, token } from './topic-client.ts';

let s: TestServer;
let t: Transport;
let alice: ScriptedUser, bob: ScriptedUser;
let pool: VerifyPool;
/** Ed25519 verifications checkMessage made on the main thread (not answered by the set). */
let inline = 0;

async function user(tr: Transport, name: string, server = 'alpha.test', clock = () => s.clock.t): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}@${server}`, tr, clock);
  assert.equal((await u.register(await issuePin(tr, u.user))).status, 201);
  await u.login(0);
  return u;
}

function create(): Promise<ScriptedTopic> {
  return ScriptedTopic.create(t, 'alpha.test', s.ctx.serverKey, [
    { user: alice, role: 'admin' },
    { user: bob, role: 'participant' },
  ]);
}

async function size(topic: ScriptedTopic): Promise<number> {
  const r = await call(t, 'GET', topic.path, undefined, token(alice));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.size;
}

/** `who` posts its own message with one bit of the signature flipped: crypto.bad_signature. */
async function postFlippedSignature(topic: ScriptedTopic, who: ScriptedUser, text: string, byte: number): Promise<void> {
  const m = topic.message(who, text);
  m.signature = Uint8Array.from(m.signature);
  m.signature[byte]! ^= 1;
  expectError(await topic.post(who, m), 400, 'crypto.bad_signature');
}

function assertSetEmpty(what: string): void {
  assert.equal(s.ctx.verify.verified.size, 0, `${what}: nothing left in VerifiedSignatures`);
}

before(async () => {
  s = await testServer('alpha.test', { register: [1000, 60_000], write: [100_000, 60_000] });
  t = inProcess(s.app);
  const counting: CryptoProvider = Object.create(crypto) as CryptoProvider;
  Object.defineProperty(counting, 'ed25519Verify', {
    value: (k: Uint8Array, m: Uint8Array, sig: Uint8Array) => {
      inline++;
      return crypto.ed25519Verify(k, m, sig);
    },
  });
  s.ctx.verify.crypto = withVerifiedSignatures(counting, s.ctx.verify.verified);
  pool = new VerifyPool({ threads: 1 });
  alice = await user(t, 'alice');
  bob = await user(t, 'bob');
});
after(async () => {
  await pool.close();
  await s.close();
});

describe('message signatures verified on a worker', () => {
  it('with the pool: posts (current and older heads, concurrent) are accepted and verified only on the worker', async () => {
    s.ctx.verify.pool = pool;
    const topic = await create();
    inline = 0;
    assert.equal((await topic.post(alice, topic.message(alice, 'one'))).status, 201);
    assert.equal(inline, 0, 'the worker verified it: no inline verification');
    await topic.sync(alice);
    // An older head: its root is kept in the append memo once a message used it.
    assert.equal((await topic.post(bob, topic.message(bob, 'older', { headSize: 1 }))).status, 201);
    // Concurrent posts at one head: they are verified in one batch; the log moves on meanwhile.
    const head = topic.log.size;
    inline = 0;
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => topic.post(i % 2 ? alice : bob, topic.message(i % 2 ? alice : bob, `c${i}`, { headSize: head }))));
    assert.deepEqual(
      rs.map((r) => r.status),
      rs.map(() => 201),
    );
    assert.ok(inline <= 1, `at most the first post at a head not yet in the memo verifies inline (${inline})`);
    await topic.sync(alice);
    assert.equal(topic.log.size, 15, 'every post appended');
    assertSetEmpty('after successful posts');
  });

  it('with the pool: a bad signature is still crypto.bad_signature, and refusals leave nothing behind', async () => {
    s.ctx.verify.pool = pool;
    const topic = await create();
    const other = await create();
    // A valid signature over another log's root.
    const forked = topic.message(bob, 'x');
    forked.signature = other.message(bob, 'x').signature;
    expectError(await topic.post(bob, forked), 400, 'crypto.bad_signature');
    // One flipped bit of the signature.
    await postFlippedSignature(topic, alice, 'y', 5);
    assertSetEmpty('after bad signatures');
    // A valid signature the worker accepts, on a post refused for another reason: bob
    // submitting alice's message, then a replay of an accepted message (new client id).
    expectError(await topic.post(bob, topic.message(alice, 'forwarded')), 403, 'auth.forbidden');
    assertSetEmpty('after auth.forbidden');
    const m = topic.message(alice, 'once');
    assert.equal((await topic.post(alice, m)).status, 201);
    expectError(await topic.post(alice, m, newClientId()), 409, 'topic.replay');
    assertSetEmpty('after topic.replay');
    assert.equal(await size(topic), 2, 'only the one good message was appended');
  });

  it('without the pool: posts are verified inline with the same answers', async () => {
    s.ctx.verify.pool = null;
    const topic = await create();
    inline = 0;
    assert.equal((await topic.post(alice, topic.message(alice, 'inline'))).status, 201);
    assert.equal(inline, 1, 'verified on the main thread');
    await postFlippedSignature(topic, bob, 'z', 0);
    assertSetEmpty('without the pool');
  });

  it('a pool whose worker died: every post is verified inline, with the same answers', async () => {
    const failures: Error[] = [];
    const dying = new VerifyPool({ threads: 1, onFailure: (e) => failures.push(e) });
    s.ctx.verify.pool = dying;
    try {
      const topic = await create();
      assert.equal((await topic.post(alice, topic.message(alice, 'before'))).status, 201);
      const slots = (dying as unknown as { slots: { worker: Worker }[] }).slots;
      assert.equal(slots.length, 1, 'the worker was started by the first post');
      await slots[0]!.worker.terminate();
      assert.equal(dying.usable, false, 'a dead worker makes the pool refuse batches');
      assert.equal(failures.length, 1, 'the failure is reported once');
      await topic.sync(alice);
      inline = 0;
      assert.equal((await topic.post(alice, topic.message(alice, 'after'))).status, 201);
      assert.equal(inline, 1, 'verified inline');
      await postFlippedSignature(topic, bob, 'w', 9);
      assert.equal(await size(topic), 3);
      assertSetEmpty('with a dead worker');
    } finally {
      s.ctx.verify.pool = pool;
      await dying.close();
    }
  });
});

describe('verifyThreads (startServer)', () => {
  for (const verifyThreads of [0, 1]) {
    it(`verifyThreads ${verifyThreads}: posts over HTTP are accepted; the pool is closed with the server`, async () => {
      const srv = await socketServer('alpha.test', { verifyThreads });
      const clock = () => Date.now();
      try {
        const h = overHttp(srv.server.url);
        const a = await user(h, 'alice', 'alpha.test', clock);
        const b = await user(h, 'bob', 'alpha.test', clock);
        const topic = await ScriptedTopic.create(h, 'alpha.test', srv.server.ctx.serverKey, [
          { user: a, role: 'admin' },
          { user: b, role: 'participant' },
        ]);
        assert.equal((await topic.post(a, topic.message(a, 'hello'))).status, 201);
        const bad = topic.message(b, 'forged');
        bad.signature = Uint8Array.from(bad.signature);
        bad.signature[3]! ^= 1;
        expectError(await topic.post(b, bad), 400, 'crypto.bad_signature');
        assert.equal(srv.server.ctx.verify.verified.size, 0, 'nothing left in VerifiedSignatures');
        assert.equal(srv.server.ctx.verify.pool === null, verifyThreads === 0, 'a pool iff verifyThreads > 0');
      } finally {
        await srv.close();
      }
      const p = srv.server.ctx.verify.pool as VerifyPool | null;
      if (p !== null) assert.equal(p.usable, false, 'closed with the server');
    });
  }
});
