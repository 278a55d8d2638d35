/**
 * In-process route tests for discovery, admin, registration, devices, sessions and key pools:
 * every endpoint, its success path and each of its error paths, asserting stable codes and
 * that a refused request changes nothing.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  decodeDevicePrekey,
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeKeyBundle,
  fromBase64url,
  sealKeyBundle,
  signDeviceCert,
  signDevicePrekey,
  signSessionProof,
  toBase64url,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { ADMIN_TOKEN, ScriptedUser, call, expectError, inProcess, issuePin, testServer, type TestServer, type Transport } from './helpers.ts';
import { submit } from './topic-client.ts';

let s: TestServer;
let t: Transport;
const rand = (n: number) => new Uint8Array(randomBytes(n));

before(async () => {
  s = await testServer('alpha.test');
  t = inProcess(s.app);
});
after(async () => s.close());

describe('discovery and operations', () => {
  it('publishes name, public key and API version at /.well-known/rendezvous', async () => {
    const r = await call(t, 'GET', '/.well-known/rendezvous');
    assert.equal(r.status, 200);
    assert.equal(r.body.server, 'alpha.test');
    assert.deepEqual(fromBase64url(r.body.publicKey), s.ctx.serverKey);
    assert.equal(r.body.apiVersion, 1);
  });
  it('answers health, readiness and metrics; unknown routes are request.not_found', async () => {
    assert.equal((await call(t, 'GET', '/healthz')).status, 200);
    assert.equal((await call(t, 'GET', '/readyz')).status, 200);
    const m = await s.app.request('/metrics');
    assert.match(await m.text(), /rendezvous_http_requests_total/);
    expectError(await call(t, 'GET', '/nope'), 404, 'request.not_found');
  });
});

describe('CORS', () => {
  it('lets browser pages on any origin call the API by default (bearer tokens, no cookies)', async () => {
    const pre = await s.app.request('/v1/topics', {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, idempotency-key' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /idempotency-key/);
    const r = await s.app.request('/.well-known/rendezvous', { headers: { origin: 'https://app.example' } });
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    assert.match(r.headers.get('access-control-expose-headers') ?? '', /idempotent-replayed/);
  });
  it('answers only the configured origins when a list is set', async () => {
    const { createApp } = await import('../src/http/app.ts');
    const app = createApp(s.ctx, { corsOrigins: ['https://chat.example.org'] });
    const ok = await app.request('/.well-known/rendezvous', { headers: { origin: 'https://chat.example.org' } });
    assert.equal(ok.headers.get('access-control-allow-origin'), 'https://chat.example.org');
    const other = await app.request('/.well-known/rendezvous', { headers: { origin: 'https://evil.example' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  });
});

describe('admin', () => {
  it('requires the admin token', async () => {
    expectError(await call(t, 'GET', '/v1/admin/users'), 401, 'auth.required');
    expectError(await call(t, 'GET', '/v1/admin/users', undefined, 'wrong-token-wrong-token'), 401, 'auth.invalid_token');
  });
  it('issues, lists and revokes pins; refuses users of other servers and bad options', async () => {
    const r = await call(t, 'POST', '/v1/admin/pins', { user: 'pinned@alpha.test', tries: 2 }, ADMIN_TOKEN);
    assert.equal(r.status, 201);
    assert.match(r.body.pin, /^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}$/);
    const list = await call(t, 'GET', '/v1/admin/pins', undefined, ADMIN_TOKEN);
    const p = list.body.pins.find((x: any) => x.id === r.body.id);
    assert.equal(p.triesLeft, 2);
    assert.equal(JSON.stringify(list.body).includes(r.body.pin), false, 'listing never shows a pin');
    assert.equal((await call(t, 'DELETE', `/v1/admin/pins/${r.body.id}`, undefined, ADMIN_TOKEN)).status, 200);
    expectError(await call(t, 'DELETE', `/v1/admin/pins/${r.body.id}`, undefined, ADMIN_TOKEN), 404, 'request.not_found');
    expectError(await call(t, 'POST', '/v1/admin/pins', { user: 'bob@beta.test' }, ADMIN_TOKEN), 403, 'auth.forbidden');
    expectError(await call(t, 'POST', '/v1/admin/pins', { user: 'Bob@alpha.test' }, ADMIN_TOKEN), 400, 'encoding.bad_value');
    expectError(await call(t, 'POST', '/v1/admin/pins', { user: 'bob@alpha.test', tries: 0 }, ADMIN_TOKEN), 400, 'request.bad_field');
    expectError(await call(t, 'POST', '/v1/admin/pins', {}, ADMIN_TOKEN), 400, 'request.bad_field');
  });
  it('reports status counts', async () => {
    const r = await call(t, 'GET', '/v1/admin/status', undefined, ADMIN_TOKEN);
    assert.equal(r.body.server, 'alpha.test');
    assert.equal(typeof r.body.counts.users, 'number');
  });
  it('deletes a user: sessions die, the name is gone and never issued again', async () => {
    const u = new ScriptedUser('doomed@alpha.test', t, () => s.clock.t);
    assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
    const tok = await u.login(0);
    expectError(await call(t, 'DELETE', `/v1/admin/users/${u.user}`, undefined, tok), 401, 'auth.invalid_token');
    assert.equal((await call(t, 'DELETE', `/v1/admin/users/${u.user}`, undefined, ADMIN_TOKEN)).status, 200);
    expectError(await call(t, 'GET', '/v1/devices', undefined, tok), 401, 'auth.invalid_token');
    expectError(await call(t, 'GET', `/v1/users/${u.user}`), 404, 'user.unknown');
    expectError(await call(t, 'POST', '/v1/admin/pins', { user: u.user }, ADMIN_TOKEN), 409, 'user.exists');
    expectError(await call(t, 'DELETE', `/v1/admin/users/${u.user}`, undefined, ADMIN_TOKEN), 404, 'user.unknown');
  });
});

describe('registration', () => {
  it('registers with a pin, once; the pin is spent', async () => {
    const u = new ScriptedUser('reg1@alpha.test', t, () => s.clock.t);
    const pin = await issuePin(t, u.user);
    const r = await u.register(pin.toLowerCase().replace(/-/g, ' '));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.deviceId, u.devices[0]!.id);
    expectError(await u.register(pin), 409, 'user.exists');
    const other = new ScriptedUser('reg1b@alpha.test', t, () => s.clock.t);
    expectError(await other.register(pin), 403, 'auth.bad_pin');
    const users = await call(t, 'GET', '/v1/admin/users', undefined, ADMIN_TOKEN);
    assert.ok(users.body.users.some((x: any) => x.user === u.user), 'users.body.users.some((x: any) => x.user === u.user)');
  });
  it('burns a pin after its tries; expired pins do not work', async () => {
    const u = new ScriptedUser('reg2@alpha.test', t, () => s.clock.t);
    const pin = await issuePin(t, u.user, { tries: 2 });
    expectError(await u.register('AAAA-AAAA-AAAA'), 403, 'auth.bad_pin');
    expectError(await u.register('AAAA-AAAA-AAAB'), 403, 'auth.bad_pin');
    expectError(await u.register(pin), 403, 'auth.bad_pin');
    const v = new ScriptedUser('reg3@alpha.test', t, () => s.clock.t);
    const pin2 = await issuePin(t, v.user, { expiresInMs: 60_000 });
    s.clock.t += 61_000;
    expectError(await v.register(pin2), 403, 'auth.bad_pin');
    assert.equal((await s.ctx.store.getUser(v.user)), null);
  });
  it('refuses a stale certificate, another user’s certificate, or one not signed by the identity key', async () => {
    const u = new ScriptedUser('reg4@alpha.test', t, () => s.clock.t);
    const pin = await issuePin(t, u.user);
    const stale = u.newDeviceCert(s.clock.t - 10 * 60_000);
    const body = { user: u.user, pin, identityKey: toBase64url(u.identityKey) };
    expectError(await call(t, 'POST', '/v1/register', { ...body, deviceCert: stale.cert }), 400, 'auth.stale');
    const v = new ScriptedUser('reg5@alpha.test', t, () => s.clock.t);
    expectError(await call(t, 'POST', '/v1/register', { ...body, deviceCert: v.newDeviceCert().cert }), 400, 'crypto.bad_certificate');
    const cert = signDeviceCert(crypto, u.identitySeed, { user: 'reg5@alpha.test', deviceKey: crypto.ed25519PublicKey(rand(32)), createdAt: s.clock.t });
    expectError(await call(t, 'POST', '/v1/register', { ...body, deviceCert: toBase64url(encodeDeviceCert(cert)) }), 400, 'crypto.bad_certificate');
    expectError(await call(t, 'POST', '/v1/register', { ...body, deviceCert: stale.cert.slice(0, 20) }), 400, 'encoding.truncated');
    expectError(await call(t, 'POST', '/v1/register', { ...body, deviceCert: '%%%' }), 400, 'request.bad_field');
    // Nothing was spent: the pin still registers the user.
    assert.equal((await u.register(pin)).status, 201);
  });
  it('rejects bodies that are not JSON objects, and bodies over the cap while streaming', async () => {
    const bad = await s.app.request('/v1/register', { method: 'POST', body: '{"user":' });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, 'request.bad_json');
    expectError(await call(t, 'POST', '/v1/register', [1]), 400, 'request.bad_json');
    const big = new ReadableStream({
      pull(c) {
        c.enqueue(new Uint8Array(64 * 1024).fill(0x20));
      },
    });
    const r = await s.app.request('/v1/register', { method: 'POST', body: big, duplex: 'half' } as RequestInit);
    assert.equal(r.status, 413);
    assert.equal((await r.json()).error.code, 'request.too_large');
  });
});

describe('registration rate limit', () => {
  it('limits registration attempts per peer address before verifying anything', async () => {
    const strict = await testServer('alpha.test', {});
    try {
      const st = inProcess(strict.app);
      const statuses: number[] = [];
      for (let i = 0; i < 11; i++) {
        const u = new ScriptedUser(`flood${i}@alpha.test`, st, () => strict.clock.t);
        statuses.push((await u.register('AAAA-AAAA-AAAA')).status);
      }
      assert.deepEqual(statuses, [...Array(10).fill(403), 429]);
      assert.equal((await call(st, 'GET', '/v1/admin/users', undefined, ADMIN_TOKEN)).body.users.length, 0);
    } finally {
      await strict.close();
    }
  });
});

describe('devices and sessions', () => {
  let u: ScriptedUser;
  before(async () => {
    u = new ScriptedUser('dev@alpha.test', t, () => s.clock.t);
    assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
  });

  it('adds a device with a fresh certificate; a replayed or removed device is device.exists', async () => {
    const d = u.newDeviceCert();
    assert.equal((await call(t, 'POST', `/v1/users/${u.user}/devices`, { cert: d.cert })).status, 201);
    expectError(await call(t, 'POST', `/v1/users/${u.user}/devices`, { cert: d.cert }), 409, 'device.exists');
    const stale = u.newDeviceCert(s.clock.t - 6 * 60_000);
    expectError(await call(t, 'POST', `/v1/users/${u.user}/devices`, { cert: stale.cert }), 400, 'auth.stale');
    const mallory = new ScriptedUser(u.user, t, () => s.clock.t); // same name, another identity key
    expectError(await call(t, 'POST', `/v1/users/${u.user}/devices`, { cert: mallory.newDeviceCert().cert }), 400, 'crypto.bad_certificate');
    expectError(await call(t, 'POST', `/v1/users/nobody@alpha.test/devices`, { cert: d.cert }), 404, 'user.unknown');
  });

  it('authenticates a device with a signed single-use challenge', async () => {
    const token = await u.login(0);
    const list = await call(t, 'GET', '/v1/devices', undefined, token);
    assert.equal(list.status, 200);
    assert.ok(list.body.devices.some((d: any) => d.current), 'list.body.devices.some((d: any) => d.current)');
    expectError(await call(t, 'GET', '/v1/devices'), 401, 'auth.required');
    expectError(await call(t, 'GET', '/v1/devices', undefined, 'x'.repeat(43)), 401, 'auth.invalid_token');
  });

  it('refuses a reused challenge, a proof for another server, a proof by another device, an expired challenge', async () => {
    const d = u.devices[0]!;
    const ch = (await call(t, 'POST', '/v1/auth/challenge', { deviceId: d.id })).body.challenge;
    const proof = (server: string, seed = d.seed) => toBase64url(signSessionProof(crypto, seed, server, fromBase64url(ch)));
    expectError(await call(t, 'POST', '/v1/auth/session', { deviceId: d.id, challenge: ch, signature: proof('beta.test') }), 400, 'crypto.bad_signature');
    expectError(await call(t, 'POST', '/v1/auth/session', { deviceId: d.id, challenge: ch, signature: proof('alpha.test', rand(32)) }), 400, 'crypto.bad_signature');
    assert.equal((await call(t, 'POST', '/v1/auth/session', { deviceId: d.id, challenge: ch, signature: proof('alpha.test') })).status, 201);
    expectError(await call(t, 'POST', '/v1/auth/session', { deviceId: d.id, challenge: ch, signature: proof('alpha.test') }), 401, 'auth.bad_challenge');
    const ch2 = (await call(t, 'POST', '/v1/auth/challenge', { deviceId: d.id })).body.challenge;
    s.clock.t += 3 * 60_000;
    const sig = toBase64url(signSessionProof(crypto, d.seed, 'alpha.test', fromBase64url(ch2)));
    expectError(await call(t, 'POST', '/v1/auth/session', { deviceId: d.id, challenge: ch2, signature: sig }), 401, 'auth.bad_challenge');
    expectError(await call(t, 'POST', '/v1/auth/challenge', { deviceId: 'unknown-device' }), 404, 'device.unknown');
  });

  it('logout revokes the token; removing a device revokes its sessions; other users cannot remove it', async () => {
    const token = await u.login(0);
    assert.equal((await call(t, 'DELETE', '/v1/auth/session', undefined, token)).status, 200);
    expectError(await call(t, 'GET', '/v1/devices', undefined, token), 401, 'auth.invalid_token');
    assert.equal((await u.addDevice()).status, 201);
    const second = u.devices.length - 1;
    const token2 = await u.login(second);
    const first = await u.login(0);
    const eve = new ScriptedUser('eve@alpha.test', t, () => s.clock.t);
    await eve.register(await issuePin(t, eve.user));
    const eveToken = await eve.login(0);
    expectError(await call(t, 'DELETE', `/v1/devices/${u.devices[second]!.id}`, undefined, eveToken), 404, 'device.unknown');
    assert.equal((await call(t, 'DELETE', `/v1/devices/${u.devices[second]!.id}`, undefined, first)).status, 200);
    expectError(await call(t, 'GET', '/v1/devices', undefined, token2), 401, 'auth.invalid_token');
  });
});

describe('key pools', () => {
  let u: ScriptedUser;
  let tok0: string;
  let tok1: string;
  let other: ScriptedUser;
  let otherTok: string;
  before(async () => {
    u = new ScriptedUser('keys@alpha.test', t, () => s.clock.t);
    await u.register(await issuePin(t, u.user));
    await u.addDevice();
    tok0 = await u.login(0);
    tok1 = await u.login(1);
    other = new ScriptedUser('claimer@alpha.test', t, () => s.clock.t);
    await other.register(await issuePin(t, other.user));
    otherTok = await other.login(0);
  });

  it('uploads signed prekeys, counts them, and hands each to a sibling exactly once', async () => {
    const up = await call(t, 'POST', '/v1/prekeys', { prekeys: u.prekeys(1, 5) }, tok1);
    assert.equal(up.status, 201);
    assert.equal(up.body.count, 5);
    assert.equal((await call(t, 'GET', '/v1/keys/counts', undefined, tok1)).body.prekeys, 5);
    const claims = await Promise.all(Array.from({ length: 7 }, () => call(t, 'POST', `/v1/devices/${u.devices[1]!.id}/prekeys/claim`, undefined, tok0)));
    const got = claims.filter((c) => c.status === 200).map((c) => c.body.prekey);
    assert.equal(got.length, 5);
    assert.equal(new Set(got).size, 5);
    for (const c of claims.filter((c) => c.status !== 200)) expectError(c, 409, 'keys.exhausted');
    for (const p of got) {
      const pk = decodeDevicePrekey(fromBase64url(p));
      assert.ok(u.devices[1]!.prekeys.has(toBase64url(pk.prekey)), 'a prekey the device uploaded');
    }
  });
  it('refuses prekeys signed by another device, claims by other users, and oversize uploads', async () => {
    const foreign = toBase64url(encodeDevicePrekey(signDevicePrekey(crypto, u.devices[0]!.seed, crypto.x25519PublicKey(rand(32)))));
    expectError(await call(t, 'POST', '/v1/prekeys', { prekeys: [foreign] }, tok1), 400, 'crypto.bad_certificate');
    expectError(await call(t, 'POST', `/v1/devices/${u.devices[1]!.id}/prekeys/claim`, undefined, otherTok), 404, 'device.unknown');
    expectError(await call(t, 'POST', '/v1/prekeys', { prekeys: u.prekeys(1, 101) }, tok1), 400, 'request.bad_field');
    expectError(await call(t, 'POST', '/v1/prekeys', { prekeys: [] }, tok1), 400, 'request.bad_field');
    assert.equal((await call(t, 'GET', '/v1/keys/counts', undefined, tok1)).body.prekeys, 0, 'nothing stored');
    decodeDevicePrekey(fromBase64url(foreign));
  });
  it('uploads topic keys with bundles for siblings; another user claims each key once', async () => {
    const prekey = (await (async () => {
      await call(t, 'POST', '/v1/prekeys', { prekeys: u.prekeys(1, 1) }, tok1);
      return call(t, 'POST', `/v1/devices/${u.devices[1]!.id}/prekeys/claim`, undefined, tok0);
    })()).body.prekey as string;
    const keys = u.topicKeys(3);
    const bundle = sealKeyBundle(crypto, (n) => rand(n), {
      user: u.user,
      senderDeviceSeed: u.devices[0]!.seed,
      recipientDevice: crypto.ed25519PublicKey(u.devices[1]!.seed),
      recipientPrekey: decodeDevicePrekey(fromBase64url(prekey)).prekey,
      content: { topicKeys: [], epochSecrets: [] },
    });
    const up = await submit(t, '/v1/topic-keys', { keys, bundles: [{ deviceId: u.devices[1]!.id, bundle: toBase64url(encodeKeyBundle(bundle)) }] }, tok0);
    assert.equal(up.status, 201, JSON.stringify(up.body));
    const inbox = await call(t, 'GET', '/v1/bundles', undefined, tok1);
    assert.equal(inbox.body.bundles.length, 1);
    assert.equal((await call(t, 'POST', '/v1/bundles/ack', { upTo: inbox.body.bundles[0].id }, tok1)).body.deleted, 1);
    const claimed = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const c = await call(t, 'POST', `/v1/users/${u.user}/topic-keys/claim`, undefined, otherTok);
      assert.equal(c.status, 200);
      claimed.add(c.body.topicKey);
      assert.deepEqual(fromBase64url(c.body.identityKey), u.identityKey);
    }
    assert.deepEqual(claimed, new Set(keys));
    expectError(await call(t, 'POST', `/v1/users/${u.user}/topic-keys/claim`, undefined, otherTok), 409, 'keys.exhausted');
    expectError(await call(t, 'POST', `/v1/users/nobody@alpha.test/topic-keys/claim`, undefined, otherTok), 404, 'user.unknown');
  });
  it('makes key uploads and bundles idempotent: a retry replays, never stores twice', async () => {
    const bundle = sealKeyBundle(crypto, (n) => rand(n), {
      user: u.user,
      senderDeviceSeed: u.devices[0]!.seed,
      recipientDevice: crypto.ed25519PublicKey(u.devices[1]!.seed),
      recipientPrekey: crypto.x25519PublicKey(rand(32)),
      content: { topicKeys: [], epochSecrets: [] },
    });
    const body = { keys: u.topicKeys(2), bundles: [{ deviceId: u.devices[1]!.id, bundle: toBase64url(encodeKeyBundle(bundle)) }] };
    const before = (await call(t, 'GET', '/v1/bundles', undefined, tok1)).body.bundles.length;
    const first = await submit(t, '/v1/topic-keys', body, tok0, 'key-upload-retry');
    const again = await submit(t, '/v1/topic-keys', body, tok0, 'key-upload-retry');
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal((await call(t, 'GET', '/v1/bundles', undefined, tok1)).body.bundles.length, before + 1, 'the bundle is stored once');
    expectError(await submit(t, '/v1/topic-keys', { ...body, keys: u.topicKeys(1) }, tok0, 'key-upload-retry'), 422, 'request.idempotency_mismatch');
    const sent = await submit(t, '/v1/bundles', { bundles: body.bundles }, tok0, 'bundle-retry-1');
    const resent = await submit(t, '/v1/bundles', { bundles: body.bundles }, tok0, 'bundle-retry-1');
    assert.deepEqual(resent.body, sent.body);
    assert.equal((await call(t, 'GET', '/v1/bundles', undefined, tok1)).body.bundles.length, before + 2);
    expectError(await call(t, 'POST', '/v1/bundles', { bundles: body.bundles }, tok0), 400, 'request.bad_field');
  });
  it('refuses topic keys of another identity and bundles to devices of other users', async () => {
    expectError(await submit(t, '/v1/topic-keys', { keys: other.topicKeys(1), bundles: [] }, tok0), 400, 'crypto.bad_certificate');
    const forged = new ScriptedUser(u.user, t, () => s.clock.t).topicKeys(1);
    expectError(await submit(t, '/v1/topic-keys', { keys: forged, bundles: [] }, tok0), 400, 'crypto.bad_certificate');
    const bundle = sealKeyBundle(crypto, (n) => rand(n), {
      user: u.user,
      senderDeviceSeed: u.devices[0]!.seed,
      recipientDevice: crypto.ed25519PublicKey(other.devices[0]!.seed),
      recipientPrekey: crypto.x25519PublicKey(rand(32)),
      content: { topicKeys: [], epochSecrets: [] },
    });
    expectError(
      await submit(t, '/v1/bundles', { bundles: [{ deviceId: other.devices[0]!.id, bundle: toBase64url(encodeKeyBundle(bundle)) }] }, tok0),
      404,
      'device.unknown',
    );
  });
  it('rate-limits topic-key claims per target before doing any work', async () => {
    let limited = 0;
    for (let i = 0; i < 40 && limited === 0; i++) {
      const r = await call(t, 'POST', `/v1/users/${other.user}/topic-keys/claim`, undefined, tok0);
      if (r.status === 429) {
        limited++;
        expectError(r, 429, 'rate.limited');
        assert.ok(Number(r.headers.get('retry-after')) >= 1, 'Number(r.headers.get(\'retry-after\')) >= 1');
      }
    }
    assert.equal(limited, 1);
  });
});

describe('secrets never reach the logs', () => {
  it('no pin, token or admin token appears in any log line', async () => {
    const u = new ScriptedUser('logs@alpha.test', t, () => s.clock.t);
    const pin = await issuePin(t, u.user);
    await u.register(pin);
    const token = await u.login(0);
    const all = s.logs.join('');
    assert.ok(all.length > 0, 'logs were captured');
    for (const secret of [pin, pin.replace(/-/g, ''), token, ADMIN_TOKEN]) assert.equal(all.includes(secret), false);
  });
});
