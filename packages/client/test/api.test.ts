/**
 * ServerApi (src/api.ts) against a real server started in process on a loopback port: every
 * route a device uses, with real signed protocol objects; retries that replay instead of
 * appending twice; error mapping; malformed answers; live delivery with header and first-frame
 * authentication; blob round trips with progress.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import {
  MemoryLog,
  applyUpdate,
  buildCreate,
  checkBlob,
  decodeDeviceCert,
  decodeLogEntry,
  decodeTopicUpdate,
  deviceId as deviceIdOf,
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeKeyBundle,
  encodeMessage,
  encodeTopicKey,
  encodeTopicUpdate,
  epochPrk,
  fileRefFor,
  isRendezvousError,
  leafHash,
  newTopicId,
  openFile,
  sealFile,
  sealKeyBundle,
  sealMessage,
  signDeviceCert,
  signDevicePrekey,
  signSessionProof,
  signTopicKey,
  toBase64url,
  utf8,
  verifyConsistency,
  verifyInclusion,
  type ErrorCode,
  type Role,
  type TopicKeySecret,
  type TopicState,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { RunningServer } from '@rendezvous/server';
import { ADMIN_TOKEN, issuePin, overHttp, socketServer } from '../../server/test/helpers.ts';
import { ServerApi, isPending, type Appended, type EventBatch, type Pending, type ServerApiOptions, type WebSocketLike } from '../src/api.ts';
import { NodeWebSocket } from '../src/node/ws.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));
const FAST_RETRY = { attempts: 3, baseDelayMs: 2, maxDelayMs: 10, maxRetryAfterMs: 2_000 };

let server: RunningServer;
let running: Awaited<ReturnType<typeof socketServer>>;

function api(extra: Partial<ServerApiOptions> = {}): ServerApi {
  return new ServerApi({ baseUrl: server.url, WebSocket: NodeWebSocket, retry: FAST_RETRY, ...extra });
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<any> {
  try {
    await p;
  } catch (e) {
    assert.ok(isRendezvousError(e, code), `expected ${code}, got ${String(e)} ${JSON.stringify(e)}`);
    return e;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** A registration pin from the admin API (plain fetch: the admin routes are not the SDK's). */
const pin = (user: string) => issuePin(overHttp(server.url), user);

/** A user as a client holds one: identity seed, and one ServerApi per logged-in device. */
class User {
  readonly identitySeed = random(32);
  readonly identityKey = crypto.ed25519PublicKey(this.identitySeed);
  readonly devices: { seed: Uint8Array; id: string; api: ServerApi }[] = [];
  constructor(readonly user: string) {}

  cert() {
    const seed = random(32);
    const cert = signDeviceCert(crypto, this.identitySeed, { user: this.user, deviceKey: crypto.ed25519PublicKey(seed), createdAt: Date.now() });
    return { seed, id: deviceIdOf(cert.deviceKey), cert: encodeDeviceCert(cert) };
  }

  async login(seed: Uint8Array, id: string, a = api()): Promise<ServerApi> {
    const ch = await a.challenge(id);
    await a.createSession({ deviceId: id, challenge: ch.challenge, signature: signSessionProof(crypto, seed, server.name, ch.challenge) });
    return a;
  }

  static async register(name: string): Promise<User> {
    const u = new User(`${name}@${server.name}`);
    const d = u.cert();
    const a = api();
    const r = await a.register({ user: u.user, pin: await pin(u.user), identityKey: u.identityKey, deviceCert: d.cert });
    assert.deepEqual(r, { user: u.user, deviceId: d.id });
    u.devices.push({ seed: d.seed, id: d.id, api: await u.login(d.seed, d.id, a) });
    return u;
  }

  get api(): ServerApi {
    return this.devices[0]!.api;
  }

  topicKey(): { topicKey: ReturnType<typeof signTopicKey>; secret: TopicKeySecret } {
    const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
    return { topicKey: signTopicKey(crypto, this.identitySeed, this.user, secret), secret };
  }
}

/** A topic as its creator's client sees it: state, epoch secret and a mirror of the log. */
class Topic {
  state: TopicState | null = null;
  readonly log = new MemoryLog(crypto);
  readonly entries: Uint8Array[] = [];
  readonly secrets = new Map<string, TopicKeySecret>();
  epochSecret: Uint8Array = new Uint8Array(0);
  readonly id = newTopicId(random);

  static async create(members: [User, Role][]): Promise<Topic> {
    const t = new Topic();
    const ms = members.map(([u, role]) => {
      const k = u.topicKey();
      t.secrets.set(u.user, k.secret);
      return { role, topicKey: k.topicKey };
    });
    const built = buildCreate(crypto, random, { topicId: t.id, host: server.name, history: 'shared', members: ms, signer: 0, signatureSeed: t.secrets.get(members[0]![0].user)!.signatureSeed });
    t.epochSecret = built.epochSecret;
    const r = await members[0]![0].api.createTopic(encodeTopicUpdate(built.update));
    assert.deepEqual([r.topicId, r.index, r.size, r.replayed], [t.id, 0, 1, false]);
    await t.sync(members[0]![0].api);
    return t;
  }

  async sync(a: ServerApi): Promise<void> {
    const r = await a.entries(this.id, this.log.size);
    for (const e of r.entries) {
      const entry = decodeLogEntry(e.entry);
      if (entry.type === 'update') this.state = applyUpdate(crypto, this.state, decodeTopicUpdate(entry.body));
      this.log.append(e.entry);
      this.entries.push(e.entry);
    }
  }

  message(u: User, text: string): Uint8Array {
    const sender = [...this.state!.members.values()].find((m) => m.topicKey.user === u.user)!.id;
    return encodeMessage(
      sealMessage(crypto, random, {
        topicId: this.id,
        epoch: this.state!.epoch,
        epochPrk: epochPrk(crypto, this.id, this.state!.epoch, this.epochSecret),
        sender,
        signatureSeed: this.secrets.get(u.user)!.signatureSeed,
        headSize: this.log.size,
        headRoot: this.log.root(),
        content: { type: 'text', body: utf8(text) },
      }),
    );
  }
}

/** An injected fetch that answers `answer` for requests matching `match`, else the real server. */
function fakeFetch(match: (url: string, init?: RequestInit) => boolean, answer: () => Response): typeof fetch & { calls: number } {
  const f = Object.assign(
    async (input: string | URL | Request, init?: RequestInit) => {
      if (!match(String(input), init)) return fetch(input, init);
      f.calls++;
      return answer();
    },
    { calls: 0 },
  );
  return f;
}
/** A 201 answer of a submission (a local topic never answers 202 pending). */
function appended<T extends object>(r: T | (Pending & { clientId: string; replayed: boolean })): T {
  if ('pending' in r) assert.fail('a topic of this server is never pending');
  return r as T;
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

let alice: User, bob: User, carol: User;

before(async () => {
  running = await socketServer('api.test');
  server = running.server;
  alice = await User.register('alice');
  bob = await User.register('bob');
  carol = await User.register('carol');
});
after(async () => running.close());

describe('discovery, registration, devices, sessions', () => {
  it('wellKnown answers the server name and its signing key', async () => {
    const w = await api().wellKnown();
    assert.equal(w.server, 'api.test');
    assert.deepEqual(w.publicKey, server.ctx.serverKey);
    assert.equal(w.apiVersion, 1);
  });

  it('registers, logs in, adds, lists and removes devices, and logs out', async () => {
    const dave = await User.register('dave');
    assert.deepEqual(await api().identityOf(dave.user), { user: dave.user, identityKey: dave.identityKey });
    const d2 = dave.cert();
    assert.deepEqual(await api().addDevice(dave.user, d2.cert), { deviceId: d2.id });
    const second = await dave.login(d2.seed, d2.id);
    const list = await dave.api.listDevices();
    assert.deepEqual(list.map((d) => [d.deviceId, d.current]).sort(), [[dave.devices[0]!.id, true], [d2.id, false]].sort());
    assert.equal(decodeDeviceCert(list.find((d) => d.deviceId === d2.id)!.cert).user, dave.user);
    await expectCode(dave.api.addDevice(dave.user, d2.cert), 'device.exists');

    await dave.api.deleteDevice(d2.id);
    await expectCode(second.keyCounts(), 'auth.invalid_token');
    await expectCode(dave.api.deleteDevice(d2.id), 'device.unknown');

    const token = dave.api.token;
    await dave.api.logout();
    assert.equal(dave.api.token, null, 'logout forgets the token');
    await expectCode(dave.api.listDevices(), 'auth.required');
    dave.api.token = token;
    await expectCode(dave.api.listDevices(), 'auth.invalid_token');
  });
});

describe('key pools and bundles', () => {
  it('uploads and claims prekeys and topic keys, and delivers bundles to a sibling device', async () => {
    const erin = await User.register('erin');
    const d2 = erin.cert();
    await api().addDevice(erin.user, d2.cert);
    const second = await erin.login(d2.seed, d2.id);
    const prekeySecrets = [random(32), random(32)];
    const prekeys = prekeySecrets.map((s) => encodeDevicePrekey(signDevicePrekey(crypto, d2.seed, crypto.x25519PublicKey(s))));
    const up = await second.uploadPrekeys(prekeys);
    assert.equal(up.count, 2);
    assert.equal((await second.uploadPrekeys(prekeys)).count, 2, 'a prekey already held is ignored');
    assert.equal((await second.keyCounts()).prekeys, 2);

    const claimed = await erin.api.claimPrekey(d2.id);
    assert.ok(prekeys.some((p) => toBase64url(p) === toBase64url(claimed.prekey)), 'one of the uploaded prekeys');
    assert.equal(decodeDeviceCert(claimed.cert).user, erin.user);
    const prekey = claimed.prekey.subarray(33, 65); // version, device key, then the X25519 prekey
    const bundle = sealKeyBundle(crypto, random, {
      user: erin.user,
      senderDeviceSeed: erin.devices[0]!.seed,
      recipientDevice: crypto.ed25519PublicKey(d2.seed),
      recipientPrekey: prekey,
      content: { topicKeys: [], epochSecrets: [] },
    });
    const keys = [erin.topicKey(), erin.topicKey()].map((k) => encodeTopicKey(k.topicKey));
    const tk = await erin.api.uploadTopicKeys({ keys, bundles: [{ deviceId: d2.id, bundle: encodeKeyBundle(bundle) }] });
    assert.equal(tk.count, 2);
    assert.equal(tk.replayed, false);
    assert.match(tk.clientId, /^[A-Za-z0-9_-]{22}$/);
    const again = await erin.api.uploadTopicKeys({ keys, bundles: [{ deviceId: d2.id, bundle: encodeKeyBundle(bundle) }] }, { clientId: tk.clientId });
    assert.deepEqual(again, { ...tk, replayed: true });

    const sent = await erin.api.sendBundles([{ deviceId: d2.id, bundle: encodeKeyBundle(bundle) }]);
    assert.equal(sent.sent, 1);
    const pending = await second.listBundles();
    assert.equal(pending.length, 2, 'one with the keys, one sent alone');
    assert.ok(pending.every((b) => b.senderDeviceId === erin.devices[0]!.id && toBase64url(b.bundle) === toBase64url(encodeKeyBundle(bundle))), 'bundles as sent');
    assert.equal((await second.ackBundles(pending[1]!.id)).deleted, 2);
    assert.deepEqual(await second.listBundles(), []);

    const k = await bob.api.claimTopicKey(erin.user);
    assert.ok(keys.some((x) => toBase64url(x) === toBase64url(k.topicKey)), 'one of the uploaded topic keys');
    assert.deepEqual(k.identityKey, erin.identityKey);
    await bob.api.claimTopicKey(erin.user);
    await expectCode(bob.api.claimTopicKey(erin.user), 'keys.exhausted');
  });
});

describe('topics, logs and events', () => {
  it('creates a topic, posts, and reads entries, proofs, topics and events', async () => {
    const start = (await bob.api.events(0)).cursor;
    const topic = await Topic.create([[alice, 'admin'], [bob, 'participant']]);
    const hello = topic.message(bob, 'hello');
    const m = appended(await bob.api.postMessage(topic.id, hello));
    assert.deepEqual([m.index, m.size, m.replayed], [1, 2, false]);
    await topic.sync(bob.api);
    assert.equal(topic.log.size, 2);

    const info = await bob.api.getTopic(topic.id);
    assert.equal(info.host, 'api.test');
    assert.equal(info.history, 'shared');
    assert.equal(info.size, 2);
    assert.deepEqual(info.members.map((x) => [x.user, x.role]), [[alice.user, 'admin'], [bob.user, 'participant']]);
    assert.ok((await alice.api.listTopics()).some((t) => toBase64url(t.topicId) === toBase64url(topic.id) && t.size === 2), 'listed');

    const inc = await bob.api.inclusionProof(topic.id, 1, 2);
    verifyInclusion(crypto, 1, 2, leafHash(crypto, topic.entries[1]!), inc.proof, topic.log.root(2));
    const cons = await bob.api.consistencyProof(topic.id, 1, 2);
    verifyConsistency(crypto, 1, 2, cons.proof, topic.log.root(1), topic.log.root(2));

    const batch = await bob.api.events(start);
    const mine = batch.events.filter((e) => 'topicId' in e && toBase64url(e.topicId) === toBase64url(topic.id));
    assert.deepEqual(mine.map((e) => [e.kind, e.kind === 'entry' ? e.index : e.kind === 'membership' ? e.user : null]), [['entry', 0], ['membership', bob.user], ['entry', 1]]);
    const e1 = mine[2]!;
    assert.ok(e1.kind === 'entry' && e1.type === 'message', 'the message entry');
    assert.deepEqual(e1.entry, topic.entries[1], 'entry bytes decoded');
    assert.ok(batch.checkpoints.some((c) => toBase64url(c.topicId) === toBase64url(topic.id)), 'checkpoint of the topic');
    assert.equal(batch.resync, false);
    assert.equal((await bob.api.events(batch.cursor)).events.length, 0, 'nothing after the cursor');

    await expectCode(carol.api.getTopic(topic.id), 'topic.not_member');
    // The same message under a new key is refused by its nonce; a key reused for another request too.
    await expectCode(bob.api.postMessage(topic.id, hello), 'topic.replay');
    await expectCode(bob.api.postMessage(topic.id, topic.message(bob, 'other'), { clientId: m.clientId }), 'request.idempotency_mismatch');
    await expectCode(bob.api.postMessage(topic.id, hello, { clientId: 'short' }), 'request.bad_field');
  });

  it('retries a submission whose answer was lost, with the same key: replayed, appended once', async () => {
    const topic = await Topic.create([[alice, 'admin']]);
    const keys: string[] = [];
    let failed = false;
    const flaky = async (input: string | URL | Request, init?: RequestInit) => {
      const res = await fetch(input, init);
      if (String(input).endsWith('/messages')) {
        keys.push(new Headers(init?.headers).get('idempotency-key')!);
        if (!failed) {
          failed = true;
          await res.arrayBuffer(); // the server appended and answered; the answer is lost
          throw new TypeError('fetch failed', { cause: new Error('socket hang up') });
        }
      }
      return res;
    };
    const a = api({ fetch: flaky, token: alice.api.token });
    const r = appended(await a.postMessage(topic.id, topic.message(alice, 'once')));
    assert.equal(keys.length, 2);
    assert.equal(keys[0], keys[1], 'the retry carries the same Idempotency-Key');
    assert.equal(r.clientId, keys[0]);
    assert.deepEqual([r.index, r.size, r.replayed], [1, 2, true]);
    const entries = await alice.api.entries(topic.id);
    assert.equal(entries.entries.length, 2, 'one message appended, not two');
  });

  it('does not retry a claim, and gives up after the configured attempts', async () => {
    const f = fakeFetch((u) => u.includes('/claim') || u.includes('/keys/counts'), () => {
      throw new TypeError('fetch failed');
    });
    const a = api({ fetch: f, token: bob.api.token });
    const e = await expectCode(a.claimTopicKey(alice.user), 'server.unavailable');
    assert.match(e.message, /^cannot reach http:\/\/127\.0\.0\.1:\d+\/v1\/users\/.*: fetch failed/);
    assert.equal(f.calls, 1, 'a claim is sent once');
    await expectCode(a.keyCounts(), 'server.unavailable');
    assert.equal(f.calls, 1 + FAST_RETRY.attempts, 'a read is retried up to the attempt limit');
  });
});

describe('errors', () => {
  it('maps a known code, an unknown code, a non-JSON 502 and an unreachable server', async () => {
    const e = await expectCode(api().identityOf(`nobody@${server.name}`), 'user.unknown');
    assert.equal(e.status, 404);

    const odd = fakeFetch(() => true, () => json(418, { error: { code: 'teapot.brewing', message: 'short and stout', details: { spout: 1 } } }));
    const u = await expectCode(api({ fetch: odd }).wellKnown(), 'server.internal');
    assert.deepEqual(u.details, { code: 'teapot.brewing', status: 418, details: { spout: 1 } });
    assert.equal(u.message, 'short and stout');

    const gateway = fakeFetch(() => true, () => new Response('<html>Bad Gateway</html>', { status: 502 }));
    const g = await expectCode(api({ fetch: gateway }).wellKnown(), 'server.unavailable');
    assert.equal(g.details.status, 502);
    assert.equal(gateway.calls, FAST_RETRY.attempts, 'a 502 is transient: retried');

    const closed = new ServerApi({ baseUrl: 'http://127.0.0.1:1', retry: { attempts: 1 } });
    const c = await expectCode(closed.wellKnown(), 'server.unavailable');
    assert.match(c.message, /^cannot reach http:\/\/127\.0\.0\.1:1\/\.well-known\/rendezvous: /);
  });

  it('waits a short Retry-After, and throws rate.limited at once for one beyond the cap', async () => {
    let n = 0;
    const limited = fakeFetch((u) => u.endsWith('/.well-known/rendezvous') && n++ === 0, () => json(429, { error: { code: 'rate.limited', message: 'slow down' } }, { 'retry-after': '0' }));
    assert.equal((await api({ fetch: limited }).wellKnown()).server, 'api.test');
    assert.equal(limited.calls, 1);

    const long = fakeFetch(() => true, () => json(429, { error: { code: 'rate.limited', message: 'slow down', details: { retryAfterMs: 60_000 } } }, { 'retry-after': '60' }));
    const e = await expectCode(api({ fetch: long }).wellKnown(), 'rate.limited');
    assert.equal(e.details.retryAfterMs, 60_000);
    assert.equal(long.calls, 1, 'not retried: Retry-After is beyond maxRetryAfterMs');
  });

  it('reads 202 pending for posts and updates (a topic whose host is unreachable), and the federation fields of a topic', async () => {
    const pending = fakeFetch(() => true, () => json(202, { pending: true }));
    const m = await api({ fetch: pending, token: 't' }).postMessage(random(16), random(8), { clientId: 'pending-1' });
    assert.deepEqual(m, { pending: true, clientId: 'pending-1', replayed: false });
    assert.equal(isPending(m as Appended | Pending), true);
    const u = await api({ fetch: pending, token: 't' }).postUpdate(random(16), random(8));
    assert.equal('pending' in u && u.pending, true);
    const keys = fakeFetch(() => true, () => json(200, { server: 'beta.test', keys: [{ publicKey: toBase64url(new Uint8Array(32).fill(9)), keyId: toBase64url(new Uint8Array(8).fill(1)) }] }));
    const k = await api({ fetch: keys, token: 't' }).serverKeys('beta.test');
    assert.equal(k.server, 'beta.test');
    assert.deepEqual(k.keys[0]!.keyId, new Uint8Array(8).fill(1));
    const summary = { topicId: toBase64url(random(16)), host: 'alpha.test', size: 3, checkpoint: 'AA', history: 'shared', epoch: 0, epochStartSize: 1, members: [] };
    const old = await api({ fetch: fakeFetch(() => true, () => json(200, summary)), token: 't' }).getTopic(random(16));
    assert.deepEqual([old.witnesses, old.forks], [[], []], 'absent on an older server: empty');
    const fed = await api({
      fetch: fakeFetch(() => true, () => json(200, { ...summary, witnesses: ['AQID'], forks: [{ kind: 'rollback', server: 'beta.test', checkpoints: ['BAUG'], detail: '', detectedAt: 5 }] })),
      token: 't',
    }).getTopic(random(16));
    assert.deepEqual(fed.witnesses, [new Uint8Array([1, 2, 3])]);
    assert.deepEqual(fed.forks, [{ kind: 'rollback', server: 'beta.test', checkpoints: [new Uint8Array([4, 5, 6])], detail: '', detectedAt: 5 }]);
  });

  it('refuses malformed answers with encoding.bad_value', async () => {
    const answers: [() => Promise<unknown>, unknown][] = [
      [() => api({ fetch: fakeFetch(() => true, () => json(200, { server: 'x', publicKey: toBase64url(random(31)), apiVersion: 1, version: 'v' })) }).wellKnown(), 'publicKey'],
      [() => api({ fetch: fakeFetch(() => true, () => json(200, { server: 'x', publicKey: 'not base64url!', apiVersion: 1, version: 'v' })) }).wellKnown(), 'publicKey'],
      [() => api({ fetch: fakeFetch(() => true, () => new Response('{"server":', { status: 200 })) }).wellKnown(), 'JSON'],
      // Out-of-order indexes are well-formed here: the mirror judges them (protocol §11.3).
      [() => api({ fetch: fakeFetch(() => true, () => json(200, { entries: [{ index: -1, type: 'message', entry: 'AA' }], checkpoint: 'AA' })), token: 't' }).entries(random(16), 0), 'index'],
      [() => api({ fetch: fakeFetch(() => true, () => json(201, { index: 3, size: 2, checkpoint: 'AA' })), token: 't' }).postMessage(random(16), random(8)), 'index'],
      [() => api({ fetch: fakeFetch(() => true, () => json(200, { events: [{ seq: 5, kind: 'entry', topicId: toBase64url(random(16)), index: 0, type: 'message', entry: 'AA' }, { seq: 4, kind: 'bundle' }], cursor: 5, checkpoints: {} })), token: 't' }).events(0), 'seq'],
      [() => api({ fetch: fakeFetch(() => true, () => json(200, { events: [], cursor: 1, checkpoints: { short: 'AA' } })), token: 't' }).events(0), 'checkpoints'],
      [() => api({ fetch: fakeFetch(() => true, () => json(202, { pending: false })), token: 't' }).postMessage(random(16), random(8)), 'pending'],
      [() => api({ fetch: fakeFetch(() => true, () => json(202, { pending: true })), token: 't' }).createTopic(random(8)), 'size'],
      [() => api({ fetch: fakeFetch(() => true, () => json(200, { server: 'x.test', keys: [{ publicKey: toBase64url(random(32)), keyId: toBase64url(random(7)) }] })), token: 't' }).serverKeys('x.test'), 'keyId'],
    ];
    for (const [call, field] of answers) {
      const e = await expectCode(call(), 'encoding.bad_value');
      assert.ok(e.message.includes(String(field)), `${e.message} names ${String(field)}`);
    }
  });
});

describe('live delivery', () => {
  /** Opens a live connection and collects what it delivers. */
  function live(a: ServerApi, after: number) {
    const got = { ready: null as null | { user: string; cursor: number }, batches: [] as EventBatch[], closed: null as null | { code: number; error?: unknown } };
    let wake = () => {};
    const conn = a.connectLive(after, {
      onOpen: (r) => ((got.ready = r), wake()),
      onBatch: (b) => (got.batches.push(b), wake()),
      onClose: (c) => ((got.closed = c), wake()),
    });
    const until = async (pred: () => boolean, ms = 5_000) => {
      const deadline = Date.now() + ms;
      while (!pred()) {
        if (Date.now() > deadline) assert.fail(`timed out; closed=${JSON.stringify(got.closed)} batches=${got.batches.length}`);
        await new Promise<void>((r) => ((wake = r), setTimeout(r, 50)));
      }
    };
    return { got, conn, until };
  }

  const hasEntry = (bs: EventBatch[], topic: Topic, index: number) =>
    bs.some((b) => b.events.some((e) => e.kind === 'entry' && e.index === index && toBase64url(e.topicId) === toBase64url(topic.id)));

  it('streams a batch after a post, authenticated by header (ws)', async () => {
    const opened: unknown[] = [];
    const frames: string[] = [];
    class Spy extends WebSocket {
      constructor(url: string, options?: ConstructorParameters<typeof WebSocket>[1]) {
        super(url, options);
        opened.push(options);
      }
      override send(data: string): void {
        frames.push(data);
        super.send(data);
      }
    }
    const topic = await Topic.create([[alice, 'admin'], [bob, 'participant']]);
    const a = api({ WebSocket: Spy, token: bob.api.token });
    const cursor = (await a.events(0)).cursor;
    const l = live(a, cursor);
    try {
      await l.until(() => l.got.ready !== null);
      assert.deepEqual(l.got.ready, { user: bob.user, deviceId: bob.devices[0]!.id, cursor });
      assert.deepEqual(opened, [{ headers: { authorization: `Bearer ${bob.api.token}` } }]);
      assert.deepEqual(frames, [], 'no auth frame: the upgrade carried the token');
      const m = appended(await alice.api.postMessage(topic.id, topic.message(alice, 'live')));
      await l.until(() => hasEntry(l.got.batches, topic, m.index));
      const e = l.got.batches.flatMap((b) => b.events).find((x) => x.kind === 'entry' && x.index === m.index)!;
      assert.ok(e.kind === 'entry' && e.type === 'message' && e.entry instanceof Uint8Array && decodeLogEntry(e.entry).type === 'message', 'decoded entry bytes');
      assert.ok(l.got.batches.every((b) => b.checkpoints.length > 0 && b.cursor > cursor), 'each batch has its checkpoint and moves the cursor');
    } finally {
      l.conn.close();
    }
    await l.until(() => l.got.closed !== null);
    assert.equal(l.got.closed!.code, 1000);
  });

  it('authenticates with a first frame where the WebSocket refuses headers (browsers)', async () => {
    const sent: string[] = [];
    /** Like a browser's: the second argument is subprotocols, and an object is a SyntaxError. */
    class BrowserLikeWebSocket extends WebSocket {
      constructor(url: string, protocols?: unknown) {
        if (protocols !== undefined && typeof protocols !== 'string' && !Array.isArray(protocols)) throw new SyntaxError('invalid subprotocol');
        super(url);
      }
      override send(data: string): void {
        sent.push(data);
        super.send(data);
      }
    }
    const topic = await Topic.create([[alice, 'admin'], [carol, 'observer']]);
    const a = api({ WebSocket: BrowserLikeWebSocket as never, token: carol.api.token });
    const cursor = (await a.events(0)).cursor;
    const l = live(a, cursor);
    try {
      await l.until(() => l.got.ready !== null);
      assert.deepEqual(JSON.parse(sent[0]!), { type: 'auth', token: carol.api.token });
      const m = appended(await alice.api.postMessage(topic.id, topic.message(alice, 'to the observer')));
      await l.until(() => hasEntry(l.got.batches, topic, m.index));
    } finally {
      l.conn.close();
    }

    const bad = live(api({ WebSocket: BrowserLikeWebSocket as never, token: 'not-a-token' }), 0);
    await bad.until(() => bad.got.closed !== null);
    assert.equal(bad.got.closed!.code, 4001);
  });

  it('closes with encoding.bad_value on a malformed batch from the server', async () => {
    /** A server that sends a batch whose sequence numbers go backwards. */
    class Lying implements WebSocketLike {
      onopen: ((ev: unknown) => void) | null = null;
      onmessage: ((ev: unknown) => void) | null = null;
      onclose: ((ev: unknown) => void) | null = null;
      onerror: ((ev: unknown) => void) | null = null;
      constructor(_url: string, _options?: unknown) {
        setTimeout(() => {
          this.onopen?.({});
          this.onmessage?.({ data: JSON.stringify({ type: 'ready', user: bob.user, deviceId: bob.devices[0]!.id, cursor: 7 }) });
          this.onmessage?.({ data: JSON.stringify({ type: 'events', events: [{ seq: 3, kind: 'bundle' }], cursor: 3, checkpoints: {} }) });
        }, 1);
      }
      send(): void {}
      close(code = 1005, reason = ''): void {
        setTimeout(() => this.onclose?.({ code, reason }), 1);
      }
    }
    const batches: EventBatch[] = [];
    const closed = await new Promise<{ code: number; error?: unknown }>((resolve) => {
      api({ WebSocket: Lying, token: 't' }).connectLive(7, { onBatch: (b) => void batches.push(b), onClose: resolve });
    });
    assert.equal(batches.length, 0);
    assert.ok(isRendezvousError(closed.error, 'encoding.bad_value'), `malformed batch: ${String(closed.error)}`);
  });

  it('closes and reports the error when a batch handler throws', async () => {
    const topic = await Topic.create([[alice, 'admin']]);
    const cursor = (await alice.api.events(0)).cursor;
    let closed: { code: number; error?: unknown } | null = null;
    const conn = alice.api.connectLive(cursor, {
      onBatch: () => {
        throw new Error('handler broke');
      },
      onClose: (c) => (closed = c),
    });
    await alice.api.postMessage(topic.id, topic.message(alice, 'boom'));
    const deadline = Date.now() + 5_000;
    while (closed === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    conn.close();
    assert.equal((closed as { error?: Error } | null)?.error?.message, 'handler broke');
  });
});

describe('files', () => {
  it('uploads and downloads a sealed blob with progress; observers cannot upload', async () => {
    const topic = await Topic.create([[alice, 'admin'], [bob, 'participant'], [carol, 'observer']]);
    const key = random(32);
    const plain = random(200_000);
    const blob = sealFile(crypto, key, plain);
    const ref = fileRefFor(crypto, key, blob, 'application/octet-stream', 'test.bin');

    const sent: number[] = [];
    const up = await bob.api.uploadBlob(topic.id, ref.blobId, blob, { onProgress: (n) => sent.push(n) });
    assert.deepEqual(up, { blobId: ref.blobId, size: blob.length, created: true });
    assert.equal(sent.at(-1), blob.length);
    assert.ok(sent.length > 1 && sent.every((n, i) => i === 0 || n > sent[i - 1]!), 'progress grows chunk by chunk');
    const again = await alice.api.uploadBlob(topic.id, ref.blobId, blob);
    assert.equal(again.created, false, 'the topic already has it');

    const got: number[] = [];
    const dl = await carol.api.downloadBlob(topic.id, ref.blobId, { onProgress: (n) => got.push(n), expectedSize: blob.length });
    assert.equal(dl.size, blob.length);
    const parts: Uint8Array[] = [];
    for await (const c of dl.stream as unknown as AsyncIterable<Uint8Array>) parts.push(c);
    const bytes = new Uint8Array(Buffer.concat(parts));
    checkBlob(crypto, ref, bytes);
    assert.deepEqual(openFile(crypto, key, bytes), plain);
    assert.equal(got.at(-1), blob.length);
    checkBlob(crypto, ref, await alice.api.downloadBlobBytes(topic.id, ref.blobId));

    await expectCode(carol.api.downloadBlob(topic.id, ref.blobId, { expectedSize: blob.length + 1 }), 'file.bad_blob');
    await expectCode(carol.api.uploadBlob(topic.id, ref.blobId, blob), 'topic.read_only');
    await expectCode(alice.api.downloadBlob(topic.id, random(32)), 'blob.unknown');

    // A stream body with its size: sent once, with content-length.
    const blob2 = sealFile(crypto, key, random(70_000));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(blob2.slice(0, 50_000));
        c.enqueue(blob2.slice(50_000));
        c.close();
      },
    });
    const up2 = await alice.api.uploadBlob(topic.id, crypto.sha256(blob2), stream, { size: blob2.length });
    assert.equal(up2.created, true);
    assert.deepEqual(await bob.api.downloadBlobBytes(topic.id, up2.blobId), blob2);
  });
});
