/**
 * The client SDK end to end against a real server on a loopback socket: users register, create
 * topics with roles and history policies, post, sync and read, and everything each device
 * shows has been verified by its own mirror.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { type ErrorCode } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { RunningServer } from '@rendezvous/server';
import { socketServer, issuePin, overHttp, rejectsCode } from '../../server/test/helpers.ts';
import { RendezvousClient } from '../src/client.ts';
import { MemoryProfileStore } from '../src/profile-store.ts';
import { NodeWebSocket } from '../src/node/ws.ts';

let server: RunningServer;
let running: Awaited<ReturnType<typeof socketServer>>;

const pin = (user: string) => issuePin(overHttp(server.url), `${user}@${server.name}`);

async function newUser(name: string, store = new MemoryProfileStore()): Promise<{ c: RendezvousClient; store: MemoryProfileStore }> {
  const c = await RendezvousClient.register({ store, crypto, WebSocket: NodeWebSocket, server: server.url, user: name, pin: await pin(name), pool: { prekeys: 5, topicKeys: 5 } });
  return { c, store };
}

const rejects = rejectsCode;

before(async () => {
  running = await socketServer('client.test');
  server = running.server;
});
after(async () => running.close());

describe('a topic between three users', () => {
  it('is created with roles and a title, and every member reads the same verified messages', async () => {
    const { c: alice } = await newUser('alice');
    const { c: bob } = await newUser('bob');
    const { c: carol } = await newUser('carol');
    const id = await alice.createTopic({
      title: 'plans',
      members: [
        { user: 'bob', role: 'participant' },
        { user: 'carol', role: 'observer' },
      ],
    });
    await alice.send(id, { text: 'hello from alice' });
    await bob.sync();
    await bob.send(id, { text: 'hi from bob' });
    await rejects(carol.sync().then(() => carol.send(id, { text: 'may I?' })), 'topic.read_only');
    for (const c of [alice, bob, carol]) {
      await c.sync();
      const t = c.topic(id);
      assert.equal(t.title, 'plans');
      assert.deepEqual(
        t.members.map((m) => [m.user, m.role]),
        [
          ['alice@client.test', 'admin'],
          ['bob@client.test', 'participant'],
          ['carol@client.test', 'observer'],
        ],
      );
      assert.deepEqual(
        c.messages(id).filter((m) => m.type === 'text').map((m) => [m.sender, m.text]),
        [
          ['alice@client.test', 'hello from alice'],
          ['bob@client.test', 'hi from bob'],
        ],
      );
      assert.deepEqual(t.alarms, [], 'an honest server raises no alarm');
    }
    assert.equal(alice.safetyNumber('bob'), bob.safetyNumber('alice'), 'both sides compute the same safety number');
  });

  it('keeps everything in the profile: a reopened client has its topics, messages and session', async () => {
    const { c: erin, store } = await newUser('erin');
    const id = await erin.createTopic({ title: 'notes' });
    await erin.send(id, { text: 'remember this' });
    const again = await RendezvousClient.open({ store, crypto });
    assert.equal(again.user, 'erin@client.test');
    assert.deepEqual(
      again.messages(id).filter((m) => m.type === 'text').map((m) => m.text),
      ['remember this'],
    );
    await again.send(id, { text: 'and this' });
    const v = await again.verify(id);
    assert.equal(v.size, again.topic(id).size);
  });

  it('a removed member reads nothing new; a new member of a shared topic reads the history, of a hidden one not', async () => {
    const { c: alice } = await newUser('frank');
    const { c: bob } = await newUser('grace');
    const { c: dave } = await newUser('heidi');
    await newUser('ivan-extra');
    for (const history of ['shared', 'hidden'] as const) {
      const id = await alice.createTopic({ history, members: [{ user: 'grace', role: 'participant' }] });
      await alice.send(id, { text: `before (${history})` });
      await bob.sync();
      assert.equal(bob.topic(id).role, 'participant');
      await alice.removeMember(id, 'grace');
      await alice.send(id, { text: `after grace (${history})` });
      await bob.sync();
      assert.equal(bob.topic(id).role, null, 'grace is no longer a member');
      assert.equal(bob.topic(id).active, false);
      assert.ok(
        !bob.messages(id).some((m) => m.text === `after grace (${history})`),
        'grace never receives what was posted after her removal',
      );
      await alice.addMember(id, 'heidi');
      await dave.sync();
      const texts = dave.messages(id).map((m) => m.text);
      assert.equal(texts.includes(`after grace (${history})`), history === 'shared', `history ${history}`);
      assert.equal(texts.includes(`before (${history})`), history === 'shared');
    }
  });

  it('never prints its secrets', async () => {
    const { c } = await newUser('ivan');
    const shown = [inspect(c), String(c), JSON.stringify(c), `${c}`].join('\n');
    assert.doesNotMatch(shown, /seed|secret|token/i);
    assert.match(shown, /ivan@client\.test/);
  });
});

describe('devices', () => {
  it('links a new device with a code: it reads every topic, hidden history included, and posts as the same user', async () => {
    const { c: alice } = await newUser('judy');
    const { c: bob } = await newUser('ken');
    const shared = await alice.createTopic({ title: 'shared', members: [{ user: 'ken', role: 'participant' }] });
    const hidden = await alice.createTopic({ title: 'hidden', history: 'hidden', members: [{ user: 'ken', role: 'participant' }] });
    await alice.send(shared, { text: 'old news' });
    await alice.send(hidden, { text: 'old secret' });
    const link = alice.startLink();
    const store2 = new MemoryProfileStore();
    const [alice2] = await Promise.all([
      RendezvousClient.join({ store: store2, crypto, code: link.code, pool: { prekeys: 5, topicKeys: 5 } }),
      link.wait({ timeoutMs: 20_000 }),
    ]);
    assert.equal(alice2.user, alice.user);
    assert.equal(alice2.deviceId, link.deviceId, 'the device the code determines');
    assert.deepEqual(alice2.messages(shared).filter((m) => m.type === 'text').map((m) => m.text), ['old news']);
    assert.deepEqual(alice2.messages(hidden).filter((m) => m.type === 'text').map((m) => m.text), ['old secret']);
    await alice2.send(shared, { text: 'from my second device' });
    await bob.sync();
    assert.equal(bob.messages(shared).at(-1)?.sender, alice.user);
    // A topic created on the second device is readable on the first: the topic key's secret
    // reached it in a bundle, whichever device made the key.
    const fromTwo = await alice2.createTopic({ title: 'made on device 2', members: [{ user: 'ken', role: 'participant' }] });
    await alice2.send(fromTwo, { text: 'hello from device 2' });
    await alice.sync();
    assert.deepEqual(alice.messages(fromTwo).filter((m) => m.type === 'text').map((m) => m.text), ['hello from device 2']);
    assert.equal((await alice.devices()).length, 2);
    // Removing the device: it can do nothing more.
    await alice.removeDevice(alice2.deviceId);
    await rejects(alice2.send(shared, { text: 'still here?' }), 'device.unknown');
    assert.equal((await alice.devices()).length, 1);
  });

  it('a key bundle that does not verify is dropped and reported, and the sync goes on', async () => {
    const { c: alice } = await newUser('tess');
    const link = alice.startLink();
    const store2 = new MemoryProfileStore();
    const [second] = await Promise.all([
      RendezvousClient.join({ store: store2, crypto, WebSocket: NodeWebSocket, code: link.code, pool: { prekeys: 5, topicKeys: 5 } }),
      link.wait({ timeoutMs: 20_000 }),
    ]);
    void second;
    // Device 1 uses up its pool: its replenish sends the new topic keys to device 2 in bundles.
    const id = await alice.createTopic({ title: 'bundles' });
    await alice.send(id, { text: 'hello' });
    await alice.replenish();
    // Device 2, through a server that flips a byte of every bundle it hands out.
    const tamper: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).endsWith('/v1/bundles') || (init?.method ?? 'GET') !== 'GET') return res;
      const body = (await res.json()) as { bundles: { bundle: string }[] };
      for (const b of body.bundles) b.bundle = b.bundle.slice(0, 60) + (b.bundle[60] === 'A' ? 'B' : 'A') + b.bundle.slice(61);
      return new Response(JSON.stringify(body), { status: res.status, headers: res.headers });
    };
    const device2 = await RendezvousClient.open({ store: store2, crypto, fetch: tamper, pool: { prekeys: 5, topicKeys: 5 } });
    const r = await device2.sync();
    assert.ok(r.rejectedBundles.length >= 1, `the forged bundle is reported: ${JSON.stringify(r)}`);
    assert.match(r.rejectedBundles[0]!.code, /^(crypto|encoding)\./);
    assert.deepEqual(
      device2.messages(id).filter((m) => m.type === 'text').map((m) => m.text),
      ['hello'],
      'the sync went on: the topic is there and readable with the keys from the link',
    );
  });

  it('an offline device catches up with everything when it syncs', async () => {
    const { c: alice } = await newUser('leo');
    const { c: bob } = await newUser('mia');
    const id = await alice.createTopic({ members: [{ user: 'mia', role: 'participant' }] });
    for (let i = 0; i < 25; i++) await alice.send(id, { text: `m${i}` });
    await alice.addMember(id, 'ivan');
    await alice.send(id, { text: 'last' });
    const r = await bob.sync();
    assert.equal(r.topics.find((t) => t.id === id)?.newEntries, bob.topic(id).size);
    assert.deepEqual(
      bob.messages(id).filter((m) => m.type === 'text').map((m) => m.text),
      [...Array.from({ length: 25 }, (_, i) => `m${i}`), 'last'],
    );
  });
});

describe('membership changes', () => {
  it('a member leaves and an admin client re-keys on its next sync', async () => {
    const { c: alice } = await newUser('nina');
    const { c: bob } = await newUser('otto');
    const id = await alice.createTopic({ members: [{ user: 'otto', role: 'participant' }] });
    await bob.sync();
    const epoch = bob.topic(id).epoch;
    await bob.leave(id);
    await alice.sync();
    assert.equal(alice.topic(id).epoch, epoch + 1, 'the admin client started a new epoch');
    await alice.send(id, { text: 'after the re-key' });
    await bob.sync();
    assert.equal(bob.topic(id).active, false);
    assert.ok(!bob.messages(id).some((m) => m.text === 'after the re-key'), 'the leaver reads nothing new');
  });
});

describe('watching', () => {
  it('delivers new messages live and resumes from the cursor after a stop', async () => {
    const { c: alice } = await newUser('pam');
    const { c: bob } = await newUser('quin');
    const id = await alice.createTopic({ members: [{ user: 'quin', role: 'participant' }] });
    await bob.sync();
    const seen: string[] = [];
    let notify: () => void = () => {};
    const w = bob.watch({ onMessage: (_t, m) => {
      if (m.text !== null) seen.push(m.text);
      notify();
    } });
    const until = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`saw only ${JSON.stringify(seen)}`)), 10_000);
        notify = () => {
          if (seen.length >= n) {
            clearTimeout(t);
            resolve();
          }
        };
        notify();
      });
    await alice.send(id, { text: 'live 1' });
    await until(1);
    w.stop();
    await w.done;
    await alice.send(id, { text: 'while away' });
    const w2 = bob.watch({ onMessage: (_t, m) => {
      if (m.text !== null) seen.push(m.text);
      notify();
    } });
    await alice.send(id, { text: 'live 2' });
    await until(3);
    w2.stop();
    await w2.done;
    assert.deepEqual(seen, ['live 1', 'while away', 'live 2']);
  });

  it('offers the same as an async iterator', async () => {
    const { c: alice } = await newUser('rita');
    const { c: bob } = await newUser('sam');
    const id = await alice.createTopic({ members: [{ user: 'sam', role: 'participant' }] });
    await bob.sync();
    const got: string[] = [];
    const reading = (async () => {
      for await (const item of bob.live()) {
        if ('message' in item && item.message.text !== null) got.push(item.message.text);
        if (got.length === 2) break;
      }
    })();
    await alice.send(id, { text: 'one' });
    await alice.send(id, { text: 'two' });
    await reading;
    assert.deepEqual(got, ['one', 'two']);
    // A loop with nothing to read ends when its signal aborts.
    const ac = new AbortController();
    const idle = (async () => {
      for await (const _ of bob.live({ signal: ac.signal })) void _;
      return 'ended';
    })();
    setTimeout(() => ac.abort(), 100);
    assert.equal(await idle, 'ended');
  });
});

describe('three users with two devices each', () => {
  it('every device reads everything its user may; an observer posts from neither device; removal reaches both', async () => {
    const people = [];
    for (const [name, role] of [
      ['uma', 'admin'],
      ['vic', 'participant'],
      ['wes', 'observer'],
    ] as const) {
      const { c: first } = await newUser(name);
      const link = first.startLink();
      const [second] = await Promise.all([
        RendezvousClient.join({ store: new MemoryProfileStore(), crypto, WebSocket: NodeWebSocket, code: link.code, pool: { prekeys: 5, topicKeys: 5 } }),
        link.wait({ timeoutMs: 20_000 }),
      ]);
      people.push({ name, role, devices: [first, second] });
    }
    const [uma, vic, wes] = people;
    const id = await uma!.devices[0]!.createTopic({
      title: 'six devices',
      members: [
        { user: 'vic', role: 'participant' },
        { user: 'wes', role: 'observer' },
      ],
    });
    const expected: string[] = [];
    for (const p of [uma!, vic!]) {
      for (const [i, d] of p.devices.entries()) {
        await d.sync();
        await d.send(id, { text: `${p.name} device ${i}` });
        expected.push(`${p.name} device ${i}`);
      }
    }
    for (const d of wes!.devices) {
      await d.sync();
      await rejects(d.send(id, { text: 'observer' }), 'topic.read_only');
    }
    for (const p of people) {
      for (const d of p.devices) {
        await d.sync();
        assert.deepEqual(d.messages(id).filter((m) => m.type === 'text').map((m) => m.text), expected, `${p.name} reads it all`);
        assert.deepEqual(d.topic(id).alarms, []);
      }
    }
    await uma!.devices[1]!.removeMember(id, 'vic');
    await uma!.devices[0]!.send(id, { text: 'after vic' });
    for (const d of vic!.devices) {
      await d.sync();
      assert.equal(d.topic(id).active, false);
      assert.ok(!d.messages(id).some((m) => m.text === 'after vic'), 'neither of vic’s devices reads on');
    }
    for (const d of wes!.devices) {
      await d.sync();
      assert.equal(d.messages(id).at(-1)?.text, 'after vic');
    }
  });
});


describe('push subscriptions through the SDK (docs/server.md §Push)', () => {
  it('reads the providers and the VAPID key, subscribes a browser subscription, lists and removes it', async () => {
    const { c } = await newUser('pusher');
    assert.deepEqual(await c.pushProviders(), ['webpush']);
    const vapid = await c.vapidKey();
    assert.equal(vapid.length, 65, 'an uncompressed P-256 point');
    assert.equal(vapid[0], 4);
    // What a browser's PushSubscription.toJSON() gives (an IP literal: no DNS needed to accept it;
    // nothing is sent, this user is in no topic).
    const ecdh = (await import('node:crypto')).createECDH('prime256v1');
    ecdh.generateKeys();
    const sub = {
      endpoint: 'https://93.184.216.34/push/sdk-test',
      keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: Buffer.alloc(16, 7).toString('base64url') },
    };
    const added = await c.subscribePush(sub);
    assert.equal(added.kind, 'webpush');
    assert.equal(added.endpoint, sub.endpoint);
    assert.deepEqual(await c.subscribePush(sub), added, 'the same subscription again keeps its id');
    assert.deepEqual(await c.pushSubscriptions(), [added]);
    await c.unsubscribePush(added.id);
    assert.deepEqual(await c.pushSubscriptions(), []);
    await rejects(c.unsubscribePush(added.id), 'push.unknown');
    await rejects(c.subscribePush({ kind: 'apns', token: 'ab'.repeat(32) }), 'push.unsupported');
  });
});
