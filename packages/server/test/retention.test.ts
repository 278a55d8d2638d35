/**
 * Retention (docs/server.md §Retention) through the API: after the janitor purges old events a
 * device with an old cursor is told to resync, and a retry after its idempotency record expired
 * is still refused as a replay by the message nonce, never appended twice.
 */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ScriptedUser, call, expectError, inProcess, issuePin, testServer, type TestServer, type Transport } from './helpers.ts';
import { ScriptedTopic, token } from './topic-client.ts';
import { purgeExpired } from '../src/janitor.ts';

let s: TestServer;
let t: Transport;
let alice: ScriptedUser;
const DAY = 24 * 60 * 60 * 1000;

before(async () => {
  s = await testServer('alpha.test', { register: [1000, 60_000], write: [100_000, 60_000] });
  t = inProcess(s.app);
  alice = new ScriptedUser('alice@alpha.test', t, () => s.clock.t);
  assert.equal((await alice.register(await issuePin(t, alice.user))).status, 201);
  await alice.login(0);
});
after(async () => s.close());

it('a cursor older than the retained events gets resync, then carries on from the horizon', async () => {
  const topic = await ScriptedTopic.create(t, 'alpha.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
  assert.equal((await topic.post(alice, topic.message(alice, 'old news'))).status, 201);
  const fresh = await call(t, 'GET', '/v1/events?after=0', undefined, token(alice));
  assert.equal(fresh.body.resync, undefined, 'nothing purged yet');
  s.clock.t += 31 * DAY;
  await alice.login(0); // the 30-day session expired meanwhile
  const r = await purgeExpired(s.ctx);
  assert.ok(r.events >= 3, `events purged: ${JSON.stringify(r)}`);
  const stale = await call(t, 'GET', '/v1/events?after=0', undefined, token(alice));
  assert.equal(stale.status, 200);
  assert.equal(stale.body.resync, true);
  assert.deepEqual(stale.body.events, []);
  const horizon = await s.ctx.store.eventsPurgedThrough();
  assert.equal(stale.body.cursor, horizon);
  // The topics still hold everything the purged events pointed at.
  await topic.sync(alice);
  assert.equal(topic.log.size, 2);
  assert.equal((await topic.post(alice, topic.message(alice, 'new'))).status, 201);
  const next = await call(t, 'GET', `/v1/events?after=${stale.body.cursor}`, undefined, token(alice));
  assert.equal(next.body.resync, undefined);
  assert.deepEqual(
    next.body.events.map((e: { kind: string; index: number }) => [e.kind, e.index]),
    [['entry', 2]],
  );
});

it('a retry after its idempotency record expired is topic.replay, not a second entry', async () => {
  const topic = await ScriptedTopic.create(t, 'alpha.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
  const m = topic.message(alice, 'once only');
  assert.equal((await topic.post(alice, m, 'retry-after-a-week')).status, 201);
  s.clock.t += 8 * DAY;
  await purgeExpired(s.ctx);
  assert.equal(await s.ctx.store.getIdempotency(alice.devices[0]!.id, 'retry-after-a-week'), null);
  expectError(await topic.post(alice, m, 'retry-after-a-week'), 409, 'topic.replay');
  await topic.sync(alice);
  assert.equal(topic.log.size, 2);
});
