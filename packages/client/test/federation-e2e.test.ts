/**
 * The SDK across two real server processes (protocol §17, docs/client.md §Topics hosted on other
 * servers): alpha.test and beta.test, each with the other in its `federation.peers`. alice is on
 * alpha, bob on beta; a topic hosted on alpha is followed by bob's device through beta's replica,
 * verified with alpha's key pinned from `GET /v1/servers/alpha.test`; beta's cosignature shows up
 * as a witness in alice's view; a post while alpha is down is pending and lands after its restart.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { TEST_RATES, adminPin, cleanup, freePort, start, tempDir, type ServerProcess, type StartOptions } from '../../server/test/process.ts';
import { until as waitUntil } from '../../server/test/helpers.ts';
import { RendezvousClient } from '../src/client.ts';
import { MemoryProfileStore } from '../src/profile-store.ts';

const NAMES = ['alpha.test', 'beta.test'] as const;
type Name = (typeof NAMES)[number];
const ports = new Map<Name, number>();
const dirs = new Map<Name, string>();
const procs = new Map<Name, ServerProcess>();

const RATES = { ...TEST_RATES, claimTopicKeyPerClaimer: [1_000, 60_000], claimTopicKeyPerTarget: [1_000, 60_000], claimPrekey: [1_000, 60_000] } as const;

function options(name: Name): StartOptions {
  const peers: Record<string, string> = {};
  for (const other of NAMES) if (other !== name) peers[other] = `http://127.0.0.1:${ports.get(other)}`;
  return { name, rates: RATES, logLevel: 'warn', config: { federation: { peers, retryMinMs: 100, retryMaxMs: 1_000 } } };
}

async function boot(name: Name): Promise<ServerProcess> {
  const dir = dirs.get(name) ?? tempDir(`rendezvous-client-fed-${name.split('.')[0]}-`);
  dirs.set(name, dir);
  const p = await start(dir, ports.get(name)!, options(name));
  procs.set(name, p);
  return p;
}

async function user(name: Name, local: string): Promise<RendezvousClient> {
  const p = procs.get(name)!;
  const { pin } = await adminPin(p, local);
  return RendezvousClient.register({ store: new MemoryProfileStore(), crypto, server: p.url, user: local, pin, pool: { prekeys: 3, topicKeys: 3 } });
}

const until = <T>(what: string, f: () => Promise<T | undefined>, ms = 20_000) => waitUntil(what, f, ms, 100);

let alice: RendezvousClient;
let bob: RendezvousClient;
let topic: string;

before(async () => {
  for (const n of NAMES) ports.set(n, await freePort());
  await Promise.all(NAMES.map((n) => boot(n)));
  alice = await user('alpha.test', 'alice');
  bob = await user('beta.test', 'bob');
});
after(cleanup);

describe('a topic hosted on alpha, followed from beta', () => {
  it('bob@beta is added by name@server, follows the topic through beta with alpha’s key pinned, and posts to it', async () => {
    topic = await alice.createTopic({ title: 'across', members: [{ user: 'bob@beta.test', role: 'participant' }] });
    await alice.send(topic, { text: 'hello from alpha' });
    const t = await until('bob to see the topic', async () => {
      const r = await bob.sync();
      const mine = r.topics.find((x) => x.id === topic);
      return mine !== undefined && mine.halted === null && bob.topic(topic).size >= 3 ? mine : undefined;
    });
    assert.deepEqual(t.alarms, []);
    const v = bob.topic(topic);
    assert.equal(v.host, 'alpha.test');
    assert.equal(v.title, 'across');
    assert.deepEqual(bob.messages(topic).filter((m) => m.type === 'text').map((m) => `${m.sender}: ${m.text}`), ['alice@alpha.test: hello from alpha']);
    const wk = (await (await fetch(`${procs.get('alpha.test')!.url}/.well-known/rendezvous`)).json()) as { publicKey: string };
    assert.deepEqual((await bob.serverKeys('alpha.test')).map((k) => Buffer.from(k).toString('base64url')), [wk.publicKey], 'alpha’s key, pinned through beta');
    assert.equal(alice.safetyNumber('bob@beta.test'), bob.safetyNumber('alice@alpha.test'), 'one safety number across servers');

    const sent = await bob.send(topic, { text: 'hello from beta' });
    assert.equal(sent.pending, undefined, 'alpha is up: the host answered');
    assert.equal(sent.index, 3);
    await alice.sync();
    assert.deepEqual(alice.messages(topic).filter((m) => m.type === 'text').map((m) => `${m.sender}: ${m.text}`), ['alice@alpha.test: hello from alpha', 'bob@beta.test: hello from beta']);
  });

  it('beta’s cosignature of alpha’s checkpoint is listed as a witness in alice’s view', async () => {
    const w = await until('a witness in alice’s view', async () => {
      const r = await alice.sync();
      assert.deepEqual(r.topics.find((x) => x.id === topic)?.alarms, []);
      const ws = alice.topic(topic).witnesses;
      return ws.length > 0 ? ws : undefined;
    });
    assert.equal(w[0]!.server, 'beta.test');
    assert.ok(w[0]!.size >= 3 && w[0]!.size <= alice.topic(topic).size, `witnessed at ${w[0]!.size}`);
  });

  it('a post while alpha is down is pending, and lands once alpha is back', async () => {
    await procs.get('alpha.test')!.kill9();
    const r = await bob.send(topic, { text: 'while alpha was down' });
    assert.deepEqual([r.pending, r.index], [true, null]);
    await boot('alpha.test');
    await until('the pending post in bob’s log', async () => {
      const s = await bob.sync();
      assert.equal(s.topics.find((x) => x.id === topic)?.halted, null);
      return bob.messages(topic).some((m) => m.text === 'while alpha was down') ? true : undefined;
    });
    await until('the pending post in alice’s log', async () => {
      await alice.sync();
      return alice.messages(topic).some((m) => m.text === 'while alpha was down') ? true : undefined;
    });
    assert.equal(alice.messages(topic).filter((m) => m.text === 'while alpha was down').length, 1, 'delivered exactly once');
  });
});
