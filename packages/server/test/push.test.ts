/**
 * Push (docs/server.md §Push) over real sockets: a server in process on a loopback port, and a
 * LOCAL Web Push service (node:http on loopback, allowed by the server's `allowInsecure`) that
 * records each push and decrypts it as a browser would (RFC 8291, http_ece with the
 * subscriber's own P-256 key and auth secret), and checks its VAPID JWT (RFC 8292) against the
 * key the server publishes. Asserts that every push is the same constant-size wake-up carrying
 * nothing identifying, the subscription life-cycle and its checks (no http, no private
 * address), removal on 410, retry on 503, coalescing, no push to the sender's device or to a
 * live-connected device, and that a woken device syncs and gets the entry.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createECDH, createPublicKey, randomBytes, verify, type ECDH } from 'node:crypto';
import { createRequire } from 'node:module';
import { WebSocket } from 'ws';
import { fromBase64url, toBase64url, toHex } from '@rendezvous/protocol';
import type { RunningServer } from '../src/server.ts';
import { PUSH_LIMITS, Push, WAKE_PAYLOAD, checkEndpoint, isNonPublicAddress, retryDelay } from '../src/push.ts';
import { createApp } from '../src/http/app.ts';
import { ADMIN_TOKEN, GENEROUS_RATES, ScriptedUser, call, expectError, inProcess, issuePin, overHttp, socketServer, testServer, type Transport } from './helpers.ts';
import { ScriptedTopic, attachTopic, token, postAndSync, topicOf as topicOfMembers } from './topic-client.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ece = createRequire(import.meta.url)('http_ece') as {
  decrypt(buffer: Buffer, params: { version: 'aes128gcm'; privateKey: ECDH; authSecret: string }): Buffer;
};

const COALESCE_MS = 800;
const CONTACT = 'mailto:ops@push.test';

// ---------------------------------------------------------------------------------------------
// The local push service

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  at: number;
}

class PushService {
  readonly received: Received[] = [];
  /** Scripted answers per path, consumed in order; 201 once a path's script is used up. */
  readonly answers = new Map<string, number[]>();
  private readonly http: Server;
  private waiters: (() => void)[] = [];
  origin = '';

  constructor() {
    this.http = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const path = req.url ?? '/';
        this.received.push({ path, headers: req.headers, body: Buffer.concat(chunks), at: Date.now() });
        const status = this.answers.get(path)?.shift() ?? 201;
        res.writeHead(status, status === 503 ? { 'retry-after': '0' } : {}).end();
        for (const w of this.waiters.splice(0)) w();
      });
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.http.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${(this.http.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(() => resolve()));
  }

  to(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }

  /** Waits until `path` has received `n` pushes. */
  async until(path: string, n: number, timeoutMs = 10_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.to(path).length < n) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`${path}: ${this.to(path).length} of ${n} pushes within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.to(path);
  }
}

/** A browser's side of a subscription: its own P-256 key pair and auth secret (RFC 8291 §3). */
class Subscriber {
  readonly ecdh = createECDH('prime256v1');
  readonly auth = toBase64url(new Uint8Array(randomBytes(16)));
  readonly path = `/push/${toBase64url(new Uint8Array(randomBytes(12)))}`;
  id = '';

  constructor() {
    this.ecdh.generateKeys();
  }

  json(origin: string) {
    return { endpoint: origin + this.path, expirationTime: null, keys: { p256dh: toBase64url(this.ecdh.getPublicKey()), auth: this.auth } };
  }

  decrypt(r: Received): Buffer {
    assert.equal(r.headers['content-encoding'], 'aes128gcm');
    return ece.decrypt(r.body, { version: 'aes128gcm', privateKey: this.ecdh, authSecret: this.auth });
  }
}

// ---------------------------------------------------------------------------------------------

let running: Awaited<ReturnType<typeof socketServer>>;
let server: RunningServer;
let t: Transport;
let service: PushService;
let vapidKey: string;
let n = 0;

async function user(name: string, devices = 1): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}${++n}@${server.name}`, t, Date.now);
  assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
  await u.login(0);
  for (let i = 1; i < devices; i++) {
    assert.equal((await u.addDevice()).status, 201);
    await u.login(i);
  }
  return u;
}

async function subscribe(u: ScriptedUser, device = 0): Promise<Subscriber> {
  const s = new Subscriber();
  const r = await call(t, 'POST', '/v1/push/subscriptions', s.json(service.origin), token(u, device));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  s.id = r.body.id;
  return s;
}

const topicOf = (...members: ScriptedUser[]) => topicOfMembers(t, server, ...members);
const post = postAndSync;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Long enough for any wake-up a test caused to have been sent. */
const settle = () => sleep(COALESCE_MS + 400);

async function metric(outcome: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Number(new RegExp(`^rendezvous_push_total\\{outcome="${outcome}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
}

/** Verifies `Authorization: vapid t=JWT, k=KEY` (RFC 8292 §3) with the key the server publishes. */
function checkVapid(r: Received): { aud: string; exp: number; sub: string } {
  const m = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(String(r.headers.authorization));
  assert.ok(m !== null, `vapid authorization header: ${r.headers.authorization}`);
  assert.equal(m[2], vapidKey, 'k is the published VAPID key');
  const [h, p, sig] = m[1]!.split('.') as [string, string, string];
  assert.deepEqual(JSON.parse(Buffer.from(h, 'base64url').toString()), { typ: 'JWT', alg: 'ES256' });
  const point = Buffer.from(vapidKey, 'base64url');
  const key = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33, 65).toString('base64url') },
    format: 'jwk',
  });
  const ok = verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'));
  assert.equal(ok, true, 'the JWT signature verifies with the published VAPID key');
  return JSON.parse(Buffer.from(p, 'base64url').toString()) as { aud: string; exp: number; sub: string };
}

before(async () => {
  service = new PushService();
  await service.start();
  running = await socketServer('push.test', {
    push: { allowInsecure: true, contact: CONTACT, coalesceMs: COALESCE_MS, retryBaseMs: 50, timeoutMs: 2_000, maxAttempts: 3 },
  });
  server = running.server;
  t = overHttp(server.url);
  const r = await call(t, 'GET', '/v1/push/vapid');
  assert.equal(r.status, 200);
  vapidKey = r.body.publicKey;
});

after(async () => {
  await running?.close();
  await service?.close();
});

describe('push: VAPID key', () => {
  it('is published, an uncompressed P-256 point, and kept across restarts of the same data', async () => {
    const key = fromBase64url(vapidKey);
    assert.equal(key.length, 65);
    assert.equal(key[0], 4);
    assert.equal(await server.ctx.store.getMeta('push_vapid_keys') !== null, true, 'kept in the store with the subscriptions');
    assert.equal((await Push.create(server.ctx)).publicKey, vapidKey, 'loaded, not generated again');
  });
});

describe('push: subscriptions', () => {
  it('add, list, re-add (same id), delete; device auth required', async () => {
    const u = await user('sub');
    const s = new Subscriber();
    const a = await call(t, 'POST', '/v1/push/subscriptions', s.json(service.origin), token(u));
    assert.equal(a.status, 201, JSON.stringify(a.body));
    assert.equal(typeof a.body.id, 'string');
    assert.equal(a.body.endpoint, service.origin + s.path);
    const l = await call(t, 'GET', '/v1/push/subscriptions', undefined, token(u));
    assert.deepEqual(l.body, { subscriptions: [a.body] });
    // A browser re-subscribing with the same endpoint (new keys) keeps the subscription.
    const again = await call(t, 'POST', '/v1/push/subscriptions', { ...s.json(service.origin), keys: new Subscriber().json('').keys }, token(u));
    assert.deepEqual(again.body, a.body);
    assert.equal((await call(t, 'GET', '/v1/push/subscriptions', undefined, token(u))).body.subscriptions.length, 1);

    expectError(await call(t, 'POST', '/v1/push/subscriptions', s.json(service.origin)), 401, 'auth.required');
    expectError(await call(t, 'GET', '/v1/push/subscriptions'), 401, 'auth.required');
    // Another user cannot delete it.
    const other = await user('other');
    expectError(await call(t, 'DELETE', `/v1/push/subscriptions/${a.body.id}`, undefined, token(other)), 404, 'push.unknown');

    assert.deepEqual((await call(t, 'DELETE', `/v1/push/subscriptions/${a.body.id}`, undefined, token(u))).body, { deleted: true });
    expectError(await call(t, 'DELETE', `/v1/push/subscriptions/${a.body.id}`, undefined, token(u)), 404, 'push.unknown');
    assert.deepEqual((await call(t, 'GET', '/v1/push/subscriptions', undefined, token(u))).body, { subscriptions: [] });
  });

  it('refuses malformed subscriptions, and more than 5 per device', async () => {
    const u = await user('bad');
    const good = new Subscriber().json(service.origin);
    const bad = async (body: unknown, code: Parameters<typeof expectError>[2], status = 400) =>
      expectError(await call(t, 'POST', '/v1/push/subscriptions', body, token(u)), status, code);
    await bad({ ...good, endpoint: 'not a url' }, 'push.bad_endpoint');
    await bad({ ...good, endpoint: 'ftp://127.0.0.1/x' }, 'push.bad_endpoint');
    await bad({ ...good, endpoint: 'https://user:pass@127.0.0.1/x' }, 'push.bad_endpoint');
    await bad({ ...good, endpoint: `https://push.example/${'x'.repeat(PUSH_LIMITS.endpointMaxLength)}` }, 'request.bad_field');
    await bad({ ...good, endpoint: 5 }, 'request.bad_field');
    await bad({ endpoint: good.endpoint }, 'request.bad_field');
    await bad({ ...good, keys: { p256dh: good.keys.p256dh } }, 'request.bad_field');
    await bad({ ...good, keys: { ...good.keys, auth: toBase64url(new Uint8Array(8)) } }, 'push.bad_keys');
    const notOnCurve = new Uint8Array(65).fill(1);
    notOnCurve[0] = 4;
    await bad({ ...good, keys: { ...good.keys, p256dh: toBase64url(notOnCurve) } }, 'push.bad_keys');
    await bad({ ...good, keys: { ...good.keys, p256dh: '!!!' } }, 'push.bad_keys');
    for (let i = 0; i < PUSH_LIMITS.subscriptionsPerDevice; i++) await subscribe(u);
    await bad(new Subscriber().json(service.origin), 'push.too_many', 409);
    assert.equal((await call(t, 'GET', '/v1/push/subscriptions', undefined, token(u))).body.subscriptions.length, 5);
  });

  it('adding subscriptions is rate-limited per device, before the body is read', async () => {
    const u = await user('rate');
    const bad = { ...new Subscriber().json(service.origin), keys: { p256dh: 'AA', auth: 'AA' } };
    for (let i = 0; i < 30; i++) expectError(await call(t, 'POST', '/v1/push/subscriptions', bad, token(u)), 400, 'push.bad_keys');
    const r = await call(t, 'POST', '/v1/push/subscriptions', 'not even json', token(u));
    expectError(r, 429, 'rate.limited');
    assert.equal(typeof r.headers.get('retry-after'), 'string');
    // Another device of the same user has its own bucket.
    const other = await user('rate');
    await subscribe(other);
  });

  it('removing a device removes its subscriptions', async () => {
    const u = await user('gone', 2);
    await subscribe(u, 1);
    assert.equal((await server.ctx.store.pushSubscriptionsOfUser(u.user)).length, 1);
    const r = await call(t, 'DELETE', `/v1/devices/${u.devices[1]!.id}`, undefined, token(u, 0));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await server.ctx.store.pushSubscriptionsOfUser(u.user), []);
  });
});

describe('push: no request forgery through a subscription (without allowInsecure)', () => {
  let safe: Awaited<ReturnType<typeof socketServer>>;
  before(async () => {
    safe = await socketServer('safe.test');
  });
  after(async () => {
    await safe?.close();
  });

  it('refuses http endpoints and private, loopback and link-local hosts', async () => {
    const st = overHttp(safe.server.url);
    const u = new ScriptedUser(`safe@${safe.server.name}`, st, Date.now);
    assert.equal((await u.register(await issuePin(st, u.user))).status, 201);
    await u.login(0);
    const keys = new Subscriber().json('').keys;
    for (const endpoint of [
      'http://push.example.com/x',
      service.origin + '/x',
      'https://127.0.0.1/x',
      'https://localhost/x',
      'https://10.1.2.3/x',
      'https://172.20.0.1/x',
      'https://192.168.1.1/x',
      'https://169.254.169.254/latest/meta-data',
      'https://[::1]/x',
      'https://[fd00::1]/x',
      'https://[fe80::1]/x',
      'https://[::ffff:10.0.0.1]/x',
      'https://0.0.0.0/x',
      'https://2130706433/x', // 127.0.0.1 as one number
    ]) {
      const r = await call(st, 'POST', '/v1/push/subscriptions', { endpoint, keys }, token(u));
      expectError(r, 400, 'push.bad_endpoint');
    }
    assert.deepEqual((await call(st, 'GET', '/v1/push/subscriptions', undefined, token(u))).body, { subscriptions: [] });
  });

  it('classifies addresses and resolved names', async () => {
    for (const a of ['127.0.0.1', '10.0.0.1', '100.64.0.1', '172.31.255.255', '192.168.0.1', '169.254.1.1', '224.0.0.1', '::1', '::', 'fc00::1', 'fe80::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '64:ff9b::a00:1', 'nonsense']) {
      assert.equal(isNonPublicAddress(a), true, `${a} is not public`);
    }
    for (const a of ['8.8.8.8', '172.32.0.1', '2001:4860:4860::8888', '::ffff:8.8.8.8']) assert.equal(isNonPublicAddress(a), false, `${a} is public`);
    // A name is refused if any of its addresses is not public, or if it does not resolve.
    await checkEndpoint('https://push.example/x', false, async () => ['93.184.216.34']);
    await assert.rejects(checkEndpoint('https://push.example/x', false, async () => ['93.184.216.34', '10.0.0.1']), /not a public address/);
    await assert.rejects(
      checkEndpoint('https://push.example/x', false, async () => {
        throw new Error('ENOTFOUND');
      }),
      /does not resolve/,
    );
  });
});

describe('push: wake-ups', () => {
  it('every push is the same constant-size wake-up, with a valid VAPID JWT and nothing identifying', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const carol = await user('carol');
    const sb = await subscribe(bob);
    const sc = await subscribe(carol);
    const t1 = await topicOf(alice, bob);
    const t2 = await topicOf(alice, carol);
    await service.until(sb.path, 1);
    await service.until(sc.path, 1);
    const before = { b: service.to(sb.path).length, c: service.to(sc.path).length };

    await post(t1, alice, 'hi');
    await service.until(sb.path, before.b + 1);
    await settle();
    await post(t2, alice, 'x'.repeat(20_000));
    await service.until(sc.path, before.c + 1);
    await settle();
    await post(t1, alice, 'a much longer message '.repeat(100));
    await service.until(sb.path, before.b + 2);
    await settle();

    const pushes = [...service.to(sb.path), ...service.to(sc.path)];
    assert.ok(pushes.length >= 3, `three or more pushes (${pushes.length})`);
    assert.equal(WAKE_PAYLOAD.length, PUSH_LIMITS.payloadBytes);
    const sizes = new Set(pushes.map((r) => r.body.length));
    assert.deepEqual([...sizes], [WAKE_PAYLOAD.length + 86 + 1 + 16], 'RFC 8291: header 86 + payload + delimiter + tag, always the same');
    const ids = [t1.id, t2.id].flatMap((id) => [Buffer.from(id), Buffer.from(toHex(id)), Buffer.from(toBase64url(id))]);
    const names = [alice, bob, carol].flatMap((u) => [u.user, u.user.split('@')[0]!]).map((s) => Buffer.from(s));
    for (const r of pushes) {
      const sub = r.path === sb.path ? sb : sc;
      const plain = sub.decrypt(r);
      assert.deepEqual(plain, WAKE_PAYLOAD, 'the payload is the wake-up, byte for byte');
      assert.deepEqual(JSON.parse(plain.toString()), { v: 1, t: 'wake', p: JSON.parse(WAKE_PAYLOAD.toString()).p });
      const wire = Buffer.concat([r.body, Buffer.from(JSON.stringify(r.headers)), Buffer.from(r.path)]);
      for (const secret of [...ids, ...names]) {
        assert.equal(plain.includes(secret), false, 'no topic id or user name in the payload');
        assert.equal(wire.includes(secret), false, 'no topic id or user name on the wire');
      }
      assert.equal(r.headers.ttl, String(PUSH_LIMITS.ttlSeconds));
      assert.equal(r.headers.urgency, 'high');
      assert.equal(r.headers.topic, 'wake');
      const claims = checkVapid(r);
      assert.equal(claims.aud, service.origin, 'audience is the push service origin');
      assert.equal(claims.sub, CONTACT);
      assert.ok(claims.exp > Date.now() / 1000 && claims.exp <= Date.now() / 1000 + 24 * 3600, `exp within 24 h (${claims.exp})`);
    }
  });

  it('a burst coalesces: 10 posts within the window are one push', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const sb = await subscribe(bob);
    // Ten topics, so the ten posts can go at once (posts to one topic are sequential).
    const topics: ScriptedTopic[] = [];
    for (let i = 0; i < 10; i++) topics.push(await topicOf(alice, bob));
    await service.until(sb.path, 1);
    await settle();
    // On a loaded machine ten posts may take longer than the window; then the burst proves
    // nothing about coalescing, so it is sent again (at most three times) until it fits.
    let start = 0;
    for (let attempt = 1; ; attempt++) {
      start = service.to(sb.path).length;
      const t0 = Date.now();
      await Promise.all(topics.map((topic, i) => post(topic, alice, `burst ${attempt}.${i}`)));
      const took = Date.now() - t0;
      await service.until(sb.path, start + 1);
      await settle();
      if (took < COALESCE_MS) break;
      assert.ok(attempt < 3, `three bursts of 10 posts each took longer than the ${COALESCE_MS} ms window (last: ${took} ms)`);
    }
    assert.equal(service.to(sb.path).length, start + 1, 'exactly one push for the burst');
    // After the window, a new entry is a new push.
    await post(topics[0]!, alice, 'later');
    await service.until(sb.path, start + 2);
  });

  it("no push to the sender's device; its user's other devices are woken", async () => {
    const alice = await user('alice', 2);
    const bob = await user('bob');
    const a0 = await subscribe(alice, 0);
    const a1 = await subscribe(alice, 1);
    const sb = await subscribe(bob);
    const topic = await topicOf(alice, bob);
    await service.until(sb.path, 1); // the topic's creation woke bob
    await service.until(a1.path, 1); // and alice's other device
    const was = { a0: service.to(a0.path).length, a1: service.to(a1.path).length, b: service.to(sb.path).length };
    await post(topic, alice, 'from device 0', 0);
    await service.until(sb.path, was.b + 1);
    await service.until(a1.path, was.a1 + 1);
    await settle();
    assert.equal(service.to(a0.path).length, was.a0, 'the posting device gets no push');
  });

  it('no push to a device connected live over the WebSocket', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const sb = await subscribe(bob);
    const topic = await topicOf(alice, bob);
    await service.until(sb.path, 1); // the topic's creation woke bob
    const was = service.to(sb.path).length;
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${token(bob)}` } });
    const got: any[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.on('message', (d) => {
        const m = JSON.parse(String(d));
        got.push(m);
        if (m.type === 'ready') resolve();
      });
      ws.on('error', reject);
    });
    try {
      const index = await post(topic, alice, 'you are online');
      await settle();
      assert.equal(service.to(sb.path).length, was, 'no push while connected');
      assert.ok(
        got.some((m) => m.type === 'events' && m.events.some((e: any) => e.kind === 'entry' && e.index === index)),
        'the entry came over the socket',
      );
    } finally {
      ws.close();
      await new Promise((resolve) => ws.once('close', resolve));
    }
    await sleep(100);
    await post(topic, alice, 'you went offline');
    await service.until(sb.path, was + 1);
  });

  it('a woken device syncs and gets the entry', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const sb = await subscribe(bob);
    const topic = await topicOf(alice, bob);
    await service.until(sb.path, 1); // the topic's creation woke bob
    const cursor = (await call(t, 'GET', '/v1/events?after=0', undefined, token(bob))).body.cursor;
    const was = service.to(sb.path).length;
    const index = await post(topic, alice, 'wake up and read this');
    const [push] = (await service.until(sb.path, was + 1)).slice(was);
    assert.deepEqual(sb.decrypt(push!), WAKE_PAYLOAD);
    // What a service worker does on the wake-up: read the events after its cursor.
    const r = await call(t, 'GET', `/v1/events?after=${cursor}`, undefined, token(bob));
    const entry = r.body.events.find((e: any) => e.kind === 'entry' && e.topicId === toBase64url(topic.id) && e.index === index);
    assert.ok(entry !== undefined, `the entry is in the events: ${JSON.stringify(r.body.events)}`);
    assert.deepEqual(fromBase64url(entry.entry), topic.entries[index]);
  });
});

describe('push: restart', () => {
  it('subscriptions made before a restart still wake their devices', async () => {
    const { startServer } = await import('../src/server.ts');
    const dir = mkdtempSync(join(tmpdir(), 'rendezvous-push-restart-'));
    const config = {
      dataDir: dir,
      host: '127.0.0.1',
      port: 0,
      name: 'restart.test',
      adminToken: ADMIN_TOKEN,
      logLevel: 'silent',
      announce: () => {},
      rates: GENEROUS_RATES,
      push: { allowInsecure: true, contact: CONTACT, coalesceMs: COALESCE_MS, retryBaseMs: 50, timeoutMs: 2_000, maxAttempts: 3 },
    };
    let s = await startServer(config);
    try {
      const first = overHttp(s.url);
      const [alice, bob] = await Promise.all(
        ['alice', 'bob'].map(async (name) => {
          const u = new ScriptedUser(`${name}@restart.test`, first, Date.now);
          assert.equal((await u.register(await issuePin(first, u.user))).status, 201);
          await u.login(0);
          return u;
        }),
      );
      const sb = new Subscriber();
      assert.equal((await call(first, 'POST', '/v1/push/subscriptions', sb.json(service.origin), token(bob!))).status, 201);
      const topic = await topicOfMembers(first, s, alice!, bob!);
      await service.until(sb.path, 1);
      await s.close();
      s = await startServer(config);
      const was = service.to(sb.path).length;
      const again = attachTopic(overHttp(s.url), s.name, s.ctx.serverKey, topic.id, topic);
      await again.sync(alice!);
      await post(again, alice!, 'after the restart');
      const [push] = (await service.until(sb.path, was + 1)).slice(was);
      assert.deepEqual(sb.decrypt(push!), WAKE_PAYLOAD, 'the restarted server knew bob had subscribed');
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('push: failures', () => {
  it('410 Gone removes the subscription', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const sb = await subscribe(bob);
    const topic = await topicOf(alice, bob);
    await service.until(sb.path, 1); // the topic's creation woke bob
    const removed = await metric('removed');
    service.answers.set(sb.path, [410]);
    const was = service.to(sb.path).length;
    await post(topic, alice, 'to a browser that unsubscribed');
    await service.until(sb.path, was + 1);
    await settle();
    assert.deepEqual((await call(t, 'GET', '/v1/push/subscriptions', undefined, token(bob))).body, { subscriptions: [] });
    assert.equal(await metric('removed'), removed + 1);
    // Nothing more is sent to it.
    await post(topic, alice, 'again');
    await settle();
    assert.equal(service.to(sb.path).length, was + 1);
  });

  it('503 then success: retried, and the retry is the same wake-up', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const sb = await subscribe(bob);
    const topic = await topicOf(alice, bob);
    await service.until(sb.path, 1); // the topic's creation woke bob
    const [retried, sent] = [await metric('retried'), await metric('sent')];
    service.answers.set(sb.path, [503]);
    const was = service.to(sb.path).length;
    await post(topic, alice, 'the push service is busy');
    const got = (await service.until(sb.path, was + 2)).slice(was);
    assert.deepEqual(sb.decrypt(got[1]!), WAKE_PAYLOAD);
    await settle();
    assert.equal(service.to(sb.path).length, was + 2, 'no more sends after the success');
    assert.equal(await metric('retried'), retried + 1);
    assert.ok((await metric('sent')) >= sent + 1, 'the success is counted');
    assert.equal((await call(t, 'GET', '/v1/push/subscriptions', undefined, token(bob))).body.subscriptions.length, 1, 'kept');
  });

  it('gives up after maxAttempts', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const sb = await subscribe(bob);
    const topic = await topicOf(alice, bob);
    await service.until(sb.path, 1); // the topic's creation woke bob
    const failed = await metric('failed');
    service.answers.set(sb.path, [500, 500, 500, 500]);
    const was = service.to(sb.path).length;
    await post(topic, alice, 'never delivered');
    await service.until(sb.path, was + 3);
    await settle();
    assert.equal(service.to(sb.path).length, was + 3, 'three attempts, then no more');
    assert.equal(await metric('failed'), failed + 1);
  });

  it('a slow push service never slows posts', async () => {
    const slow = createServer(() => undefined); // never answers
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    try {
      const alice = await user('alice');
      const bob = await user('bob');
      const s = new Subscriber();
      const endpoint = `http://127.0.0.1:${(slow.address() as AddressInfo).port}${s.path}`;
      const r = await call(t, 'POST', '/v1/push/subscriptions', { ...s.json(''), endpoint }, token(bob));
      assert.equal(r.status, 201);
      const topic = await topicOf(alice, bob);
      for (let i = 0; i < 5; i++) {
        const t0 = Date.now();
        await post(topic, alice, `post ${i}`);
        assert.ok(Date.now() - t0 < 500, `a post answers at once (${Date.now() - t0} ms)`);
        await sleep(COALESCE_MS / 2);
      }
    } finally {
      slow.closeAllConnections();
      await new Promise((resolve) => slow.close(resolve));
    }
  });

  it('back-off doubles and honours Retry-After, up to a minute', () => {
    assert.equal(retryDelay(1000, 0, undefined), 1000);
    assert.equal(retryDelay(1000, 3, undefined), 8000);
    assert.equal(retryDelay(1000, 0, '30'), 30_000);
    assert.equal(retryDelay(1000, 0, '3600'), 60_000);
    assert.equal(retryDelay(1000, 10, undefined), 60_000);
    assert.equal(retryDelay(1000, 1, 'Wed, 21 Oct 2015 07:28:00 GMT'), 2000);
  });
});

describe('push: logs', () => {
  it('name an endpoint by its origin only, never its path (a capability)', async () => {
    const ts = await testServer('logs.test', GENEROUS_RATES);
    const push = await Push.create(ts.ctx, { allowInsecure: true, coalesceMs: 20, retryBaseMs: 10, maxAttempts: 2, timeoutMs: 2_000 });
    push.start(() => false);
    const lt = inProcess(createApp(ts.ctx, { push }));
    try {
      const make = async (name: string) => {
        const u = new ScriptedUser(`${name}@logs.test`, lt, () => ts.clock.t);
        assert.equal((await u.register(await issuePin(lt, u.user))).status, 201);
        await u.login(0);
        return u;
      };
      const alice = await make('alice');
      const bob = await make('bob');
      const subs: Subscriber[] = [];
      for (const answers of [[], [500, 500], [410], [400]]) {
        const s = new Subscriber();
        const r = await call(lt, 'POST', '/v1/push/subscriptions', s.json(service.origin), token(bob));
        assert.equal(r.status, 201, JSON.stringify(r.body));
        service.answers.set(s.path, [...answers]);
        subs.push(s);
      }
      await ScriptedTopic.create(lt, 'logs.test', ts.ctx.serverKey, [
        { user: alice, role: 'admin' },
        { user: bob, role: 'participant' },
      ]);
      await service.until(subs[0]!.path, 1);
      await service.until(subs[1]!.path, 2);
      await service.until(subs[2]!.path, 1);
      await service.until(subs[3]!.path, 1);
      await sleep(100);
      await push.idle();
      const text = ts.logs.join('');
      for (const what of ['push subscription added', 'push failed; giving up', 'push subscription gone', 'push refused']) {
        assert.ok(text.includes(what), `logged: ${what}`);
      }
      assert.ok(text.includes(service.origin), 'the origin is logged');
      for (const s of subs) assert.equal(text.includes(s.path.slice('/push/'.length)), false, 'no endpoint path in the logs');
    } finally {
      await push.close();
      await ts.close();
    }
  });
});
