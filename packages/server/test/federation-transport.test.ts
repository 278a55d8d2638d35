/**
 * The federation transport (protocol §17.1–§17.2, docs/server.md §Federation (operators)):
 * real servers on loopback, each behind a small test endpoint that also answers a signed
 * `/test/echo` through `ctx.federation.authenticate` (no production route is added for it).
 * Every rule of §17.2 with its code and status, signed round trips, key pinning across a
 * rotation, a key replaced without endorsement, and the SSRF rules of discovery.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import { getRequestListener } from '@hono/node-server';
import { RendezvousError, fromBase64url, serverKeyId, toBase64url, utf8 } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { createApp } from '../src/http/app.ts';
import type { Context } from '../src/context.ts';
import { signedHeaders } from '../src/federation/federation.ts';
import { ADMIN_TOKEN, ScriptedUser, call, expectError, issuePin, overHttp, rejectsCode, socketServer } from './helpers.ts';

/** Shared clock of every server here: tests move it forward past the key refetch interval. */
const skew: { ms: number; frozen: number | null } = { ms: 0, frozen: null };
const now = () => (skew.frozen ?? Date.now()) + skew.ms;

type Socket = Awaited<ReturnType<typeof socketServer>>;
const closers: (() => Promise<void>)[] = [];

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

/** A server's test endpoint: `/test/echo` authenticated by its federation, everything else its real API. */
async function endpoint(ctx: Context): Promise<string> {
  const real = createApp(ctx);
  const app = new Hono();
  app.onError((err, c) =>
    err instanceof RendezvousError ? c.json({ error: err.toJSON() }, err.status as 400) : c.json({ error: { code: 'server.internal', message: String(err) } }, 500),
  );
  app.all('/test/echo', async (c) => {
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, 1024);
    return c.json({ origin, body: new TextDecoder().decode(body), path: new URL(c.req.url).pathname + new URL(c.req.url).search });
  });
  app.all('*', (c) => real.fetch(c.req.raw));
  const http = createServer(getRequestListener(app.fetch));
  closers.push(() => new Promise((r) => http.close(() => r())));
  return listen(http);
}

async function start(name: string, extra: Parameters<typeof socketServer>[1] = {}): Promise<Socket & { endpoint: string }> {
  const s = await socketServer(name, { now, ...extra });
  closers.push(() => s.close());
  return { ...s, endpoint: await endpoint(s.server.ctx) };
}

/** Sends a signed request to an endpoint as `from` would, with every part overridable. */
async function signed(
  from: Pick<Context, 'name' | 'crypto' | 'serverSeed' | 'now' | 'random'>,
  url: string,
  o: { destination: string; method?: string; path?: string; body?: string; sentBody?: string; timestamp?: number; nonce?: Uint8Array; headers?: Record<string, string> },
) {
  const method = o.method ?? 'POST';
  const path = o.path ?? '/test/echo';
  const body = o.body ?? '{"hello":"world"}';
  const headers = { ...signedHeaders(from, { destination: o.destination, method, path, body: utf8(body), timestamp: o.timestamp, nonce: o.nonce }), ...o.headers };
  const res = await fetch(url + path, { method, headers: { 'content-type': 'application/json', ...headers }, body: method === 'GET' ? undefined : (o.sentBody ?? body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

let alpha: Awaited<ReturnType<typeof start>>;
let beta: Awaited<ReturnType<typeof start>>;
/** Answers that no Rendezvous server gives: slow, huge, not JSON, a redirect. */
let odd: string;

before(async () => {
  alpha = await start('alpha.test');
  beta = await start('beta.test');
  alpha.server.ctx.federation.setPeer('beta.test', beta.endpoint);
  beta.server.ctx.federation.setPeer('alpha.test', alpha.endpoint);
  const raw = createServer((req, res) => {
    if (req.url === '/slow') return; // never answers
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"x":"${'a'.repeat(9 * 1024 * 1024)}"}`);
    } else if (req.url === '/text') res.writeHead(200, { 'content-type': 'text/plain' }).end('hello');
    else if (req.url === '/redirect') res.writeHead(302, { location: `${beta.endpoint}/test/echo` }).end();
    else res.writeHead(404).end();
  });
  closers.push(
    () =>
      new Promise((r) => {
        raw.closeAllConnections();
        raw.close(() => r());
      }),
  );
  odd = await listen(raw);
});

after(async () => {
  for (const c of closers.reverse()) await c();
});

describe('signed requests in (§17.2, in order)', () => {
  it('a signed request authenticates, pins the origin on first contact and tells the contact listeners', async () => {
    const seen: string[] = [];
    const off = beta.server.ctx.federation.onContact((o) => seen.push(o));
    const r = await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', path: '/test/echo?a=1' });
    off();
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { origin: 'alpha.test', body: '{"hello":"world"}', path: '/test/echo?a=1' });
    assert.deepEqual(seen, ['alpha.test']);
    const pinned = await beta.server.ctx.store.getServerKeys('alpha.test');
    assert.deepEqual(pinned, [alpha.server.ctx.serverKey]);
  });

  it('1. missing or malformed headers: federation.unsigned (401)', async () => {
    const res = await fetch(`${beta.endpoint}/test/echo`, { method: 'POST', body: '{}' });
    expectError({ status: res.status, body: await res.json(), headers: res.headers }, 401, 'federation.unsigned');
    const malformed: Record<string, string>[] = [
      { 'rendezvous-nonce': 'AAAA' },
      { 'rendezvous-key-id': toBase64url(new Uint8Array(9)) },
      { 'rendezvous-signature': 'not base64!' },
      { 'rendezvous-time': '-5' },
      { 'rendezvous-origin': 'Alpha.Test' },
      { 'rendezvous-destination': '' },
    ];
    for (const bad of malformed) {
      expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', headers: bad }), 401, 'federation.unsigned');
    }
  });

  it('2. a refused origin: federation.refused (403), also with federation off', async () => {
    const o = beta.server.ctx.federation.options;
    o.deny.push('alpha.test');
    try {
      expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test' }), 403, 'federation.refused');
    } finally {
      o.deny.pop();
    }
    o.allow = ['gamma.test'];
    try {
      expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test' }), 403, 'federation.refused');
    } finally {
      o.allow = null;
    }
    o.enabled = false;
    try {
      expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test' }), 403, 'federation.refused');
    } finally {
      o.enabled = true;
    }
  });

  it('3. more requests than the origin rate: rate.limited (429), before the key is looked up', async () => {
    // Frozen clock: no token comes back while the request travels.
    skew.frozen = Date.now();
    try {
      for (let i = 0; i < 6000; i++) beta.server.ctx.rate.take('federation', 'flood.test');
      const r = await signed({ ...alpha.server.ctx, name: 'flood.test' }, beta.endpoint, { destination: 'beta.test' });
      expectError(r, 429, 'rate.limited');
    } finally {
      skew.frozen = null;
    }
    assert.equal(await beta.server.ctx.store.getServerKeys('flood.test'), null);
  });

  it('4. a body over the cap: request.too_large (413)', async () => {
    const big = JSON.stringify({ x: 'a'.repeat(2000) });
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', body: big }), 413, 'request.too_large');
  });

  it('5. another destination: federation.wrong_destination (421)', async () => {
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'gamma.test' }), 421, 'federation.wrong_destination');
  });

  it('6. outside ±120 s, or before the process started: federation.stale (401)', async () => {
    const t = now();
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', timestamp: t - 121_000 }), 401, 'federation.stale');
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', timestamp: t + 121_000 }), 401, 'federation.stale');
    const started = beta.server.ctx.federation.startedAt;
    assert.ok(t - started < 100_000, 'the test runs within 100 s of the start');
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', timestamp: started - 1 }), 401, 'federation.stale');
  });

  it('7. a key id the origin does not publish: federation.unknown_key (401); an unreachable origin: federation.unreachable (502)', async () => {
    const impostor = { ...alpha.server.ctx, serverSeed: new Uint8Array(randomBytes(32)) };
    expectError(await signed(impostor, beta.endpoint, { destination: 'beta.test' }), 401, 'federation.unknown_key');
    beta.server.ctx.federation.setPeer('gone.test', 'http://127.0.0.1:1');
    expectError(await signed({ ...alpha.server.ctx, name: 'gone.test' }, beta.endpoint, { destination: 'beta.test' }), 502, 'federation.unreachable');
  });

  it('8. a bad signature or a tampered body: federation.bad_signature (401), and neither burns the nonce', async () => {
    const nonce = new Uint8Array(randomBytes(16));
    const good = signedHeaders(alpha.server.ctx, { destination: 'beta.test', method: 'POST', path: '/test/echo', body: utf8('{}'), nonce });
    const sig = fromBase64url(good['rendezvous-signature']!);
    sig[5]! ^= 1;
    expectError(
      await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', body: '{}', nonce, headers: { 'rendezvous-signature': toBase64url(sig) } }),
      401,
      'federation.bad_signature',
    );
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', body: '{}', sentBody: '{"a":1}', nonce }), 401, 'federation.bad_signature');
    // The path is signed too.
    expectError(
      await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', body: '{}', nonce, path: '/test/echo?x=1', headers: { ...good, 'rendezvous-nonce': toBase64url(nonce) } }),
      401,
      'federation.bad_signature',
    );
    const r = await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', body: '{}', nonce });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });

  it('9. a nonce seen within the window: federation.replayed (401)', async () => {
    const nonce = new Uint8Array(randomBytes(16));
    const timestamp = now();
    const first = await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', nonce, timestamp });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    expectError(await signed(alpha.server.ctx, beta.endpoint, { destination: 'beta.test', nonce, timestamp }), 401, 'federation.replayed');
    // Another origin may use the same nonce bytes.
    const r = await signed(beta.server.ctx, alpha.endpoint, { destination: 'alpha.test', nonce, timestamp });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });
});

describe('signed requests out', () => {
  it('request() signs, sends JSON and returns the answer; a non-2xx answer is returned, not thrown', async () => {
    const f = alpha.server.ctx.federation;
    const r = await f.request('beta.test', 'POST', '/test/echo?q=%20x', { hello: 'beta' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { origin: 'alpha.test', body: '{"hello":"beta"}', path: '/test/echo?q=%20x' });
    const g = await f.request('beta.test', 'GET', '/test/echo');
    assert.equal(g.status, 200, JSON.stringify(g.body));
    assert.equal(g.body.body, '');
    const missing = await f.request('beta.test', 'GET', '/v1/nothing-here');
    assert.equal(missing.status, 404);
    assert.deepEqual((missing.body.error as { code: string }).code, 'request.not_found');
    await assert.rejects(f.request('alpha.test', 'GET', '/x'), /itself/);
  });

  it('refused destinations, timeouts, oversized and non-JSON answers, and no redirects', async () => {
    const f = alpha.server.ctx.federation;
    f.options.deny.push('beta.test');
    try {
      await rejectsCode(f.request('beta.test', 'GET', '/test/echo'), 'federation.refused');
    } finally {
      f.options.deny.pop();
    }
    f.setPeer('odd.test', odd);
    const timeout = f.options.timeoutMs;
    f.options.timeoutMs = 300;
    try {
      await rejectsCode(f.request('odd.test', 'GET', '/slow'), 'federation.unreachable');
    } finally {
      f.options.timeoutMs = timeout;
    }
    await rejectsCode(f.request('odd.test', 'GET', '/big'), 'federation.unreachable');
    await rejectsCode(f.request('odd.test', 'GET', '/text'), 'federation.bad_response');
    const redirect = await f.request('odd.test', 'GET', '/redirect');
    assert.equal(redirect.status, 302);
    f.setPeer('gone.test', 'http://127.0.0.1:1');
    await rejectsCode(f.request('gone.test', 'GET', '/x'), 'federation.unreachable');
  });

  it('peers may use http:// only on loopback', () => {
    const f = alpha.server.ctx.federation;
    assert.throws(() => f.setPeer('x.test', 'http://example.com'), /loopback/);
    assert.throws(() => f.setPeer('x.test', 'http://10.0.0.1:8080'), /loopback/);
    assert.throws(() => f.setPeer('x.test', 'ftp://example.com'), /https/);
    f.setPeer('x.test', 'https://example.com/');
    assert.equal(f.baseUrl('x.test'), 'https://example.com');
    f.setPeer('x.test', 'http://[::1]:9');
    f.setPeer('x.test', 'http://localhost:9');
    assert.equal(f.baseUrl('nopeer.test'), 'https://nopeer.test');
    assert.throws(() => f.baseUrl('Not A Name'), (e: unknown) => (e as RendezvousError).code === 'request.bad_field');
  });

  it('a discovered name that resolves to loopback or a private address is federation.bad_address unless allowPrivate', async () => {
    const f = alpha.server.ctx.federation;
    const port = new URL(beta.endpoint).port;
    await rejectsCode(f.request(`localhost:${port}`, 'GET', '/test/echo'), 'federation.bad_address');
    await rejectsCode(f.request(`127.0.0.1:${port}`, 'GET', '/test/echo'), 'federation.bad_address');
    await rejectsCode(f.serverKeys(`localhost:${port}`), 'federation.bad_address');
    f.options.allowPrivate = true;
    try {
      // Allowed to connect: discovery is https, which this plain-http server cannot speak.
      await rejectsCode(f.request(`localhost:${port}`, 'GET', '/test/echo'), 'federation.unreachable');
    } finally {
      f.options.allowPrivate = false;
    }
  });

  it('discovery checks that the server is who it was asked for', async () => {
    const f = alpha.server.ctx.federation;
    f.setPeer('liar.test', beta.endpoint);
    await rejectsCode(f.serverKeys('liar.test'), 'federation.bad_response');
    assert.equal(await alpha.server.ctx.store.getServerKeys('liar.test'), null);
  });
});

describe('server keys (§17.1)', () => {
  it('/.well-known/rendezvous lists the keys; GET /v1/servers/:name shows what was pinned', async () => {
    const wk = await call(overHttp(beta.server.url), 'GET', '/.well-known/rendezvous');
    assert.equal(wk.body.server, 'beta.test');
    assert.equal(wk.body.publicKey, toBase64url(beta.server.ctx.serverKey));
    assert.deepEqual(wk.body.keys.map((k: { publicKey: string }) => k.publicKey), [wk.body.publicKey]);
    assert.equal(wk.body.keys[0].keyId, toBase64url(serverKeyId(crypto, beta.server.ctx.serverKey)));
    assert.equal(wk.body.keys[0].endorsement, null);

    const t = overHttp(alpha.server.url);
    const user = new ScriptedUser('ann@alpha.test', t, now);
    assert.equal((await user.register(await issuePin(t, 'ann@alpha.test'))).status, 201);
    const token = await user.login();
    const r = await call(t, 'GET', '/v1/servers/beta.test', undefined, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { server: 'beta.test', keys: [{ publicKey: wk.body.publicKey, keyId: wk.body.keys[0].keyId }] });
    const own = await call(t, 'GET', '/v1/servers/alpha.test', undefined, token);
    assert.deepEqual(own.body.keys, [{ publicKey: toBase64url(alpha.server.ctx.serverKey), keyId: toBase64url(serverKeyId(crypto, alpha.server.ctx.serverKey)) }]);
    expectError(await call(t, 'GET', '/v1/servers/Bad_Name', undefined, token), 400, 'request.bad_field');
    expectError(await call(t, 'GET', '/v1/servers/beta.test'), 401, 'auth.required');
  });

  it('a rotation is followed through its endorsement, and the old key still verifies by key id', async () => {
    const ctx = beta.server.ctx;
    const oldSeed = ctx.serverSeed;
    const oldKey = ctx.serverKey;
    assert.deepEqual(await alpha.server.ctx.federation.serverKeys('beta.test'), [oldKey]);
    const r = await call(overHttp(beta.server.url), 'POST', '/v1/admin/server-key/rotate', undefined, ADMIN_TOKEN);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.notDeepEqual(ctx.serverKey, oldKey);
    assert.equal(r.body.publicKey, toBase64url(ctx.serverKey));
    assert.equal(r.body.keys.length, 2);
    assert.equal(typeof r.body.keys[1].endorsement, 'string');
    assert.equal(readFileSync(join(beta.dir, 'server.key'), 'utf8').trim(), toBase64url(ctx.serverSeed));
    const wk = await call(overHttp(beta.server.url), 'GET', '/.well-known/rendezvous');
    assert.equal(wk.body.publicKey, toBase64url(ctx.serverKey));
    assert.deepEqual(wk.body.keys, r.body.keys);

    // Within 30 s of alpha's last fetch, beta's new key is not looked up again.
    const first = await signed(ctx, alpha.endpoint, { destination: 'alpha.test' });
    if (first.status !== 200) expectError(first, 401, 'federation.unknown_key');
    skew.ms += 31_000;
    const r2 = await signed(ctx, alpha.endpoint, { destination: 'alpha.test' });
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
    assert.deepEqual(await alpha.server.ctx.store.getServerKeys('beta.test'), [oldKey, ctx.serverKey]);
    // A request signed by the old key (e.g. sent just before the rotation) verifies by its key id.
    const r3 = await signed({ ...ctx, serverSeed: oldSeed }, alpha.endpoint, { destination: 'alpha.test' });
    assert.equal(r3.status, 200, JSON.stringify(r3.body));
    // Alpha's own requests to beta are unaffected.
    assert.equal((await alpha.server.ctx.federation.request('beta.test', 'POST', '/test/echo', {})).status, 200);
  });

  it('a server whose key was replaced without an endorsement is federation.key_changed', async () => {
    const gamma1 = await start('gamma.test');
    const gamma2 = await start('gamma.test');
    const f = alpha.server.ctx.federation;
    f.setPeer('gamma.test', gamma1.endpoint);
    gamma1.server.ctx.federation.setPeer('alpha.test', alpha.endpoint);
    gamma2.server.ctx.federation.setPeer('alpha.test', alpha.endpoint);
    const ok = await signed(gamma1.server.ctx, alpha.endpoint, { destination: 'alpha.test' });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    f.setPeer('gamma.test', gamma2.endpoint);
    skew.ms += 31_000;
    expectError(await signed(gamma2.server.ctx, alpha.endpoint, { destination: 'alpha.test' }), 502, 'federation.key_changed');
    skew.ms += 31_000;
    await rejectsCode(f.keyFor('gamma.test', serverKeyId(crypto, gamma2.server.ctx.serverKey)), 'federation.key_changed');
    // The pin is kept: the old key still verifies.
    assert.deepEqual(await alpha.server.ctx.store.getServerKeys('gamma.test'), [gamma1.server.ctx.serverKey]);
  });

  it('a rotation is refused for a key from the environment, and a start with a key the server never published is refused', async () => {
    const fromEnv = await start('delta.test', { serverKey: toBase64url(new Uint8Array(randomBytes(32))) });
    expectError(await call(overHttp(fromEnv.server.url), 'POST', '/v1/admin/server-key/rotate', undefined, ADMIN_TOKEN), 400, 'request.bad_field');

    const { startServer } = await import('../src/server.ts');
    const epsilon = await start('epsilon.test');
    await epsilon.server.close();
    const config = { dataDir: epsilon.dir, host: '127.0.0.1', port: 0, name: 'epsilon.test', adminToken: ADMIN_TOKEN, logLevel: 'silent', announce: () => {} };
    // Same key: starts again.
    const again = await startServer(config);
    await again.close();
    writeFileSync(join(epsilon.dir, 'server.key'), toBase64url(new Uint8Array(randomBytes(32))) + '\n');
    await assert.rejects(startServer(config), /not a key this server ever published.*rotate-server-key/s);
  });

  it('an interrupted rotation is finished at the next start', async () => {
    const { startServer } = await import('../src/server.ts');
    const zeta = await start('zeta.test');
    const r = await call(overHttp(zeta.server.url), 'POST', '/v1/admin/server-key/rotate', undefined, ADMIN_TOKEN);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const newSeed = readFileSync(join(zeta.dir, 'server.key'), 'utf8');
    await zeta.server.close();
    // As if the process died after appending the key to the list but before the rename.
    writeFileSync(join(zeta.dir, 'server.key.next'), newSeed);
    writeFileSync(join(zeta.dir, 'server.key'), toBase64url(new Uint8Array(randomBytes(32))) + '\n');
    const config = { dataDir: zeta.dir, host: '127.0.0.1', port: 0, name: 'zeta.test', adminToken: ADMIN_TOKEN, logLevel: 'silent', announce: () => {} };
    const again = await startServer(config);
    assert.equal(toBase64url(again.ctx.serverKey), r.body.publicKey);
    await again.close();
  });
});
