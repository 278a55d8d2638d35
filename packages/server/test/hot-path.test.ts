/**
 * The post path's shortcuts (issue 7) keep every check they stand in for:
 *
 * - the session cache (accounts.ts) refuses a session on the very next request once it is ended,
 *   its device removed, its user deleted or its time up, and never caches a read that an
 *   invalidation overtook;
 * - the Node body read (http/body.ts) enforces the byte cap while the body arrives, refuses a
 *   declared length over it before reading, and cuts off a stalled body at the deadline, with
 *   the same error codes as the Web-stream read;
 * - the CORS headers (http/app.ts) are the ones Hono's middleware gives, on answers, errors and
 *   preflights, in process and over a socket.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { RendezvousError, toHex, utf8 } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import * as accounts from '../src/accounts.ts';
import { readBody } from '../src/http/body.ts';
import { LIMITS } from '../src/limits.ts';
import { ADMIN_TOKEN, ScriptedUser, call, expectError, inProcess, issuePin, rejectsCode, socketServer, testServer, type TestServer, type Transport } from './helpers.ts';
import { ScriptedTopic, submit, newClientId } from './topic-client.ts';

// ---------------------------------------------------------------------------------------------
// Session cache

describe('session cache: revocation takes effect on the very next request', () => {
  let s: TestServer;
  let t: Transport;
  let reads = 0;

  before(async () => {
    s = await testServer();
    t = inProcess(s.app);
    const real = s.ctx.store.getSession.bind(s.ctx.store);
    s.ctx.store.getSession = async (hash, now) => {
      reads++;
      return real(hash, now);
    };
  });
  after(async () => s.close());

  async function registered(name: string, devices = 1): Promise<ScriptedUser> {
    const u = new ScriptedUser(`${name}@alpha.test`, t, () => s.clock.t);
    assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
    for (let i = 1; i < devices; i++) assert.equal((await u.addDevice()).status, 201);
    return u;
  }
  const devices = (token: string) => call(t, 'GET', '/v1/devices', undefined, token);
  const hashOf = (token: string) => crypto.sha256(utf8(token));

  it('a session found once is not read from the store again while it is cached', async () => {
    const u = await registered('reader');
    const token = await u.login(0);
    const before = reads;
    for (let i = 0; i < 5; i++) assert.equal((await devices(token)).status, 200);
    assert.equal(reads - before, 1, 'one store read for five requests');
  });

  it('logout: the ended session is refused on the next request', async () => {
    const u = await registered('leaver');
    const token = await u.login(0);
    assert.equal((await devices(token)).status, 200);
    assert.equal((await devices(token)).status, 200);
    assert.equal((await call(t, 'DELETE', '/v1/auth/session', undefined, token)).status, 200);
    expectError(await devices(token), 401, 'auth.invalid_token');
  });

  it('device removal: the removed device is refused on its next request; its sibling is not', async () => {
    const u = await registered('owner', 2);
    const keep = await u.login(0);
    const gone = await u.login(1);
    assert.equal((await devices(gone)).status, 200);
    assert.equal((await call(t, 'DELETE', `/v1/devices/${u.devices[1]!.id}`, undefined, keep)).status, 200);
    expectError(await devices(gone), 401, 'auth.invalid_token');
    assert.equal((await devices(keep)).status, 200);
  });

  it('user deletion by the admin: every session of the user is refused on the next request', async () => {
    const u = await registered('deleted', 2);
    const a = await u.login(0);
    const b = await u.login(1);
    assert.equal((await devices(a)).status, 200);
    assert.equal((await devices(b)).status, 200);
    assert.equal((await call(t, 'DELETE', `/v1/admin/users/${u.user}`, undefined, ADMIN_TOKEN)).status, 200);
    expectError(await devices(a), 401, 'auth.invalid_token');
    expectError(await devices(b), 401, 'auth.invalid_token');
  });

  it('expiry: a cached session is refused from the moment it expires, as the store refuses it', async () => {
    const u = await registered('expiring');
    const start = s.clock.t;
    const token = await u.login(0);
    assert.equal((await devices(token)).status, 200);
    try {
      s.clock.t = start + LIMITS.sessionTtlMs - 1;
      assert.equal((await devices(token)).status, 200, 'still valid 1 ms before its expiry');
      s.clock.t = start + LIMITS.sessionTtlMs;
      expectError(await devices(token), 401, 'auth.invalid_token');
    } finally {
      s.clock.t = start;
    }
  });

  it('forgetSessions drops a session, a device or a user at once', async () => {
    const u = await registered('forgotten', 2);
    const a = await u.login(0);
    const b = await u.login(1);
    for (const tok of [a, b]) assert.equal((await devices(tok)).status, 200);
    await s.ctx.store.deleteSession(hashOf(a));
    accounts.forgetSessions(s.ctx, { tokenHash: hashOf(a) });
    expectError(await devices(a), 401, 'auth.invalid_token');
    await s.ctx.store.deleteSession(hashOf(b));
    accounts.forgetSessions(s.ctx, { user: u.user });
    expectError(await devices(b), 401, 'auth.invalid_token');
  });

  it('a store read that an invalidation overtook is not cached', async () => {
    const u = await registered('raced');
    const token = await u.login(0);
    const real = s.ctx.store.getSession;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    s.ctx.store.getSession = async (hash, now) => {
      const row = await real(hash, now);
      await gate;
      return row;
    };
    try {
      const inflight = accounts.authenticate(s.ctx, token);
      const caller = { user: u.user, deviceId: u.devices[0]!.id, tokenHash: hashOf(token) };
      await accounts.endSession(s.ctx, caller);
      release();
      // The request that read the session before it ended goes through, as it would without a cache…
      assert.equal((await inflight).user, u.user);
    } finally {
      s.ctx.store.getSession = real;
    }
    // …but what it read was not kept.
    await rejectsCode(accounts.authenticate(s.ctx, token), 'auth.invalid_token');
  });

  it('an unknown token is refused, and refused again (nothing negative is cached as valid)', async () => {
    expectError(await devices('bm90LWEtdG9rZW4'), 401, 'auth.invalid_token');
    expectError(await devices('bm90LWEtdG9rZW4'), 401, 'auth.invalid_token');
  });
});

// ---------------------------------------------------------------------------------------------
// Body reading from a Node request

/** Sends raw request bytes in parts (`pauseMs` apart) and reads the answer's status and JSON body. */
function raw(port: number, parts: (string | Uint8Array)[], pauseMs = 0) {
  return new Promise<{ status: number; body: any; ms: number }>((resolve, reject) => {
    const started = Date.now();
    const sock = connect(port, '127.0.0.1');
    let got = '';
    let done = false;
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      got += d;
      const end = got.indexOf('\r\n\r\n');
      if (end < 0 || done) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(got.slice(0, end))?.[1] ?? -1);
      if (length >= 0 && got.length - end - 4 >= length) {
        done = true;
        const status = Number(got.slice(9, 12));
        const text = got.slice(end + 4, end + 4 + length);
        sock.destroy();
        resolve({ status, body: text ? JSON.parse(text) : null, ms: Date.now() - started });
      }
    });
    sock.on('error', (e) => (done ? undefined : reject(e)));
    sock.on('close', () => (done ? undefined : reject(new Error(`connection closed after: ${got}`))));
    void (async () => {
      for (const [i, p] of parts.entries()) {
        if (i > 0 && pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
        if (done || sock.destroyed) return;
        sock.write(typeof p === 'string' ? Buffer.from(p, 'latin1') : p);
      }
    })();
  });
}

const head = (path: string, headers: Record<string, string | number>) =>
  `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
const chunk = (b: string | Uint8Array) => {
  const bytes = typeof b === 'string' ? utf8(b) : b;
  return Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), Buffer.from(bytes), Buffer.from('\r\n')]);
};
const lastChunk = '0\r\n\r\n';

describe('readBody on a Node request: cap, deadline and errors as on the Web-stream path', () => {
  const CAP = 100;
  const TIMEOUT = 300;
  let srv: Server;
  let port: number;

  before(async () => {
    srv = createServer((req: IncomingMessage, res) => {
      readBody(req, CAP, Number(req.headers['x-timeout'] ?? TIMEOUT)).then(
        (b) => {
          const body = JSON.stringify({ length: b.length, hex: toHex(b), plain: Object.getPrototypeOf(b) === Uint8Array.prototype, offset: b.byteOffset });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
        },
        (e: unknown) => {
          const status = e instanceof RendezvousError ? e.status : 500;
          const body = JSON.stringify({ code: e instanceof RendezvousError ? e.code : String(e) });
          res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' }).end(body);
        },
      );
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    port = (srv.address() as AddressInfo).port;
  });
  after(async () => {
    srv.closeAllConnections();
    await new Promise((r) => srv.close(r));
  });

  it('a body that came with the headers: all of it, as a fresh Uint8Array', async () => {
    const r = await raw(port, [head('/', { 'content-length': 5 }) + 'hello']);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { length: 5, hex: toHex(utf8('hello')), plain: true, offset: 0 });
  });

  it('a body that arrives in parts: all of it, in order', async () => {
    const r = await raw(port, [head('/', { 'content-length': 12 }), 'abcd', 'efgh', 'ijkl'], 40);
    assert.equal(r.status, 200);
    assert.equal(r.body.hex, toHex(utf8('abcdefghijkl')));
  });

  it('an empty body is empty', async () => {
    const r = await raw(port, [head('/', { 'content-length': 0 })]);
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 0);
  });

  it('exactly the cap is accepted', async () => {
    const r = await raw(port, [head('/', { 'content-length': CAP }) + 'x'.repeat(CAP)]);
    assert.equal(r.status, 200);
    assert.equal(r.body.length, CAP);
  });

  it('a declared length over the cap is request.too_large before any of the body is sent', async () => {
    const r = await raw(port, [head('/', { 'content-length': CAP + 1 })]);
    assert.equal(r.status, 413);
    assert.equal(r.body.code, 'request.too_large');
  });

  it('an undeclared body over the cap that arrived whole is request.too_large', async () => {
    const r = await raw(port, [head('/', { 'transfer-encoding': 'chunked' }) + chunk('y'.repeat(CAP + 1)).toString('latin1') + lastChunk]);
    assert.equal(r.status, 413);
    assert.equal(r.body.code, 'request.too_large');
  });

  it('an undeclared body that crosses the cap while streaming is request.too_large at once, before it ends', async () => {
    const parts = [head('/', { 'transfer-encoding': 'chunked' }), chunk('z'.repeat(60)), chunk('z'.repeat(60))];
    // Never sends the last chunk: the answer must come from crossing the cap, not from the end.
    const r = await raw(port, parts, 40);
    assert.equal(r.status, 413);
    assert.equal(r.body.code, 'request.too_large');
    assert.ok(r.ms < TIMEOUT, `answered when the cap was crossed (${r.ms} ms), not at the deadline`);
  });

  it('a body that stops arriving is request.timeout at the deadline', async () => {
    const r = await raw(port, [head('/', { 'content-length': 50 }) + 'partial']);
    assert.equal(r.status, 408);
    assert.equal(r.body.code, 'request.timeout');
    assert.ok(r.ms >= TIMEOUT - 50 && r.ms < TIMEOUT + 2_000, `cut off at the deadline (${r.ms} ms)`);
  });

  it('reads with different deadlines each end at their own (one shared timer)', async () => {
    const long = raw(port, [head('/', { 'content-length': 50, 'x-timeout': 900 }) + 'partial']);
    await new Promise((r) => setTimeout(r, 50));
    const short = raw(port, [head('/', { 'content-length': 50, 'x-timeout': 100 }) + 'partial']);
    const quick = raw(port, [head('/', { 'content-length': 4 }), 'done'], 20);
    const [l, s, q] = await Promise.all([long, short, quick]);
    assert.equal(q.status, 200);
    assert.equal(s.status, 408);
    assert.ok(s.ms < 600, `the short deadline was kept (${s.ms} ms)`);
    assert.equal(l.status, 408);
    assert.ok(l.ms >= 850, `the long one ran to its own deadline (${l.ms} ms)`);
  });

  it('a body that keeps trickling past the deadline is request.timeout (a deadline for the whole body)', async () => {
    const parts = [head('/', { 'content-length': 90 }), ...Array.from({ length: 9 }, () => '0123456789')];
    const r = await raw(port, parts, 60);
    assert.equal(r.status, 408);
    assert.equal(r.body.code, 'request.timeout');
  });
});

// ---------------------------------------------------------------------------------------------
// The whole server over a socket: the API's caps and deadline on the Node read path

describe('the API over a socket: body caps and deadline', () => {
  let srv: Awaited<ReturnType<typeof socketServer>>;
  let port: number;

  before(async () => {
    srv = await socketServer('alpha.test', { limits: { bodyTimeoutMs: 300 } });
    port = Number(new URL(srv.server.url).port);
  });
  after(async () => srv.close());

  it('a JSON body over the small cap is request.too_large: declared, or crossed while streaming', async () => {
    const declared = await raw(port, [head('/v1/register', { 'content-type': 'application/json', 'content-length': LIMITS.maxSmallBodyBytes + 1 })]);
    assert.equal(declared.status, 413);
    assert.equal(declared.body.error.code, 'request.too_large');
    const piece = chunk(new Uint8Array(64 * 1024).fill(0x20));
    const streamed = await raw(port, [head('/v1/register', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }), ...Array.from({ length: 6 }, () => piece)], 5);
    assert.equal(streamed.status, 413);
    assert.equal(streamed.body.error.code, 'request.too_large');
    // The server goes on answering.
    assert.equal((await fetch(`${srv.server.url}/healthz`)).status, 200);
  });

  it('a JSON body that stops arriving is request.timeout', async () => {
    const r = await raw(port, [head('/v1/register', { 'content-type': 'application/json', 'content-length': 100 }) + '{"user": ']);
    assert.equal(r.status, 408);
    assert.equal(r.body.error.code, 'request.timeout');
  });

  it('a JSON body that is not JSON, or not an object, is request.bad_json', async () => {
    const bad = await raw(port, [head('/v1/register', { 'content-type': 'application/json', 'content-length': 8 }) + '{"user":']);
    assert.equal(bad.body.error.code, 'request.bad_json');
    const list = await raw(port, [head('/v1/register', { 'content-type': 'application/json', 'content-length': 3 }) + '[1]']);
    assert.equal(list.body.error.code, 'request.bad_json');
    const bom = await raw(port, [head('/v1/register', { 'content-type': 'application/json', 'content-length': 5 }) + '\u00ef\u00bb\u00bf{}']);
    assert.equal(bom.body.error.code, 'request.bad_field', 'a UTF-8 BOM is skipped as before; {} then lacks its fields');
  });

  it('messages post, replay and refuse bad base64url over the socket as in process', async () => {
    const t: Transport = (path, init) => fetch(srv.server.url + path, init);
    const alice = new ScriptedUser('alice@alpha.test', t, () => Date.now());
    assert.equal((await alice.register(await issuePin(t, alice.user))).status, 201);
    await alice.login(0);
    const topic = await ScriptedTopic.create(t, 'alpha.test', srv.server.ctx.serverKey, [{ user: alice, role: 'admin' }]);
    const id = newClientId();
    const m = topic.message(alice, 'hello');
    const first = await topic.post(alice, m, id);
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.equal(first.headers.get('idempotent-replayed'), null);
    const again = await topic.post(alice, m, id);
    assert.equal(again.status, 201);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(again.body, first.body);
    for (const bad of ['AAA=', 'AB', 'A', 'AA*A', 'AAB']) {
      const r = await submit(t, `${topic.path}/messages`, { message: bad }, alice.devices[0]!.token!);
      expectError(r, 400, 'request.bad_field');
    }
  });
});

// ---------------------------------------------------------------------------------------------
// CORS and the other headers: what Hono's middleware gave

const EXPOSE = 'idempotent-replayed,retry-after,etag';

/** Response headers without the per-connection ones. */
function headerList(h: Headers): [string, string][] {
  return [...h].filter(([k]) => !['date', 'connection', 'keep-alive'].includes(k)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

for (const where of ['in process', 'over a socket'] as const) {
  describe(`CORS and headers (${where})`, () => {
    let t: Transport;
    let listT: Transport;
    let now: () => number;
    let close: () => Promise<void>;

    before(async () => {
      if (where === 'in process') {
        const s = await testServer();
        const { createApp } = await import('../src/http/app.ts');
        const listed = createApp(s.ctx, { corsOrigins: ['https://chat.example.org'] });
        t = inProcess(s.app);
        listT = inProcess(listed);
        now = () => s.clock.t;
        close = () => s.close();
      } else {
        const any = await socketServer('alpha.test');
        const listed = await socketServer('beta.test', { corsOrigins: ['https://chat.example.org'] });
        t = (path, init) => fetch(any.server.url + path, init);
        listT = (path, init) => fetch(listed.server.url + path, init);
        now = Date.now;
        close = async () => {
          await any.close();
          await listed.close();
        };
      }
    });
    after(async () => close());

    const socketOnly = (length: string): [string, string][] => (where === 'over a socket' ? [['content-length', length]] : []);

    it('an answer: JSON with Allow-Origin * and the exposed headers', async () => {
      const r = await t('/healthz', { headers: { origin: 'https://app.example' } });
      assert.equal(r.status, 200);
      assert.deepEqual(headerList(r.headers), [
        ['access-control-allow-origin', '*'],
        ['access-control-expose-headers', EXPOSE],
        ...socketOnly('11'),
        ['content-type', 'application/json'],
      ]);
      assert.equal(await r.text(), '{"ok":true}');
    });

    it('an error and an unknown route: the same headers', async () => {
      const e = await t('/v1/devices', { headers: { origin: 'https://app.example' } });
      assert.equal(e.status, 401);
      const body = await e.text();
      assert.equal(JSON.parse(body).error.code, 'auth.required');
      assert.deepEqual(headerList(e.headers), [
        ['access-control-allow-origin', '*'],
        ['access-control-expose-headers', EXPOSE],
        ...socketOnly(String(Buffer.byteLength(body))),
        ['content-type', 'application/json'],
      ]);
      const n = await t('/nope', {});
      const nBody = await n.text();
      assert.equal(n.status, 404);
      assert.deepEqual(headerList(n.headers), [
        ['access-control-allow-origin', '*'],
        ['access-control-expose-headers', EXPOSE],
        ...socketOnly(String(Buffer.byteLength(nBody))),
        ['content-type', 'application/json'],
      ]);
    });

    it('a preflight: 204 with the allowed methods and headers', async () => {
      const r = await t('/v1/topics', {
        method: 'OPTIONS',
        headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, idempotency-key' },
      });
      assert.equal(r.status, 204);
      assert.deepEqual(headerList(r.headers), [
        ['access-control-allow-headers', 'authorization,content-type,idempotency-key'],
        ['access-control-allow-methods', 'GET,POST,PUT,DELETE'],
        ['access-control-allow-origin', '*'],
        ['access-control-expose-headers', EXPOSE],
        ['access-control-max-age', '600'],
        ['vary', 'Access-Control-Request-Headers'],
      ]);
    });

    it('a list of origins: the allowed one is echoed, any other is not, and both vary by Origin', async () => {
      const ok = await listT('/healthz', { headers: { origin: 'https://chat.example.org' } });
      assert.deepEqual(headerList(ok.headers), [
        ['access-control-allow-origin', 'https://chat.example.org'],
        ['access-control-expose-headers', EXPOSE],
        ...socketOnly('11'),
        ['content-type', 'application/json'],
        ['vary', 'Origin'],
      ]);
      const other = await listT('/healthz', { headers: { origin: 'https://evil.example' } });
      assert.deepEqual(headerList(other.headers), [
        ['access-control-expose-headers', EXPOSE],
        ...socketOnly('11'),
        ['content-type', 'application/json'],
        ['vary', 'Origin'],
      ]);
      const none = await listT('/healthz', {});
      assert.equal(none.headers.get('access-control-allow-origin'), null);
      const pre = await listT('/v1/topics', { method: 'OPTIONS', headers: { origin: 'https://chat.example.org', 'access-control-request-method': 'POST' } });
      assert.equal(pre.status, 204);
      assert.deepEqual(headerList(pre.headers), [
        ['access-control-allow-headers', 'authorization,content-type,idempotency-key'],
        ['access-control-allow-methods', 'GET,POST,PUT,DELETE'],
        ['access-control-allow-origin', 'https://chat.example.org'],
        ['access-control-expose-headers', EXPOSE],
        ['access-control-max-age', '600'],
        ['vary', 'Origin, Access-Control-Request-Headers'],
      ]);
    });

    it('a submission replay keeps idempotent-replayed next to the CORS headers; the metrics text keeps its type', async () => {
      const alice = new ScriptedUser(`carol${where === 'in process' ? 1 : 2}@alpha.test`, t, now);
      assert.equal((await alice.register(await issuePin(t, alice.user))).status, 201);
      const token = await alice.login(0);
      const id = newClientId();
      const keys = { keys: alice.topicKeys(1) };
      const first = await submit(t, '/v1/topic-keys', keys, token, id);
      assert.equal(first.status, 201, JSON.stringify(first.body));
      const again = await submit(t, '/v1/topic-keys', keys, token, id);
      assert.equal(again.status, 201);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal(again.headers.get('access-control-allow-origin'), '*');
      assert.equal(again.headers.get('access-control-expose-headers'), EXPOSE);
      const m = await t('/metrics', {});
      assert.match(m.headers.get('content-type') ?? '', /^text\/plain/);
      assert.equal(m.headers.get('access-control-allow-origin'), '*');
    });
  });
}
