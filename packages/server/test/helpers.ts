/**
 * Server test helpers: an in-process server (real SQLite file in a temp dir, fake clock,
 * captured logs) and a scripted client built on the protocol core that speaks the HTTP API.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import {
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeTopicKey,
  signDeviceCert,
  signDevicePrekey,
  signSessionProof,
  signTopicKey,
  toBase64url,
  fromBase64url,
  utf8,
  deviceId as deviceIdOf,
  type ErrorCode,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { createApp } from '../src/http/app.ts';
import { createContext, type Context, type ContextOptions } from '../src/context.ts';
import { createLogger } from '../src/server.ts';
import { openThreadedSqliteStore } from '../src/storage/sqlite-threaded.ts';
import { openFsBlobStore } from '../src/storage/blobs.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestServer {
  ctx: Context;
  app: ReturnType<typeof createApp>;
  clock: { t: number };
  logs: string[];
  dir: string;
  close(): Promise<void>;
}

/**
 * `rates` overrides rate limits; by default registration is opened up because every scripted
 * user registers from the same in-process address (the register limit has its own test).
 * `limits` lowers the file caps (a 100 MiB cap is not something to stream in a unit test).
 */
export async function testServer(
  name = 'alpha.test',
  rates: ContextOptions['rates'] = { register: [1000, 60_000] },
  limits?: ContextOptions['limits'],
): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-test-'));
  // The store a server runs with by default (server.ts writerThread): writes on their own thread.
  const store = await openThreadedSqliteStore(join(dir, 'rendezvous.db'));
  await store.migrate();
  const blobs = await openFsBlobStore(join(dir, 'blobs'));
  const clock = { t: 1_764_000_000_000 };
  const now = () => clock.t;
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const ctx = createContext({
    name,
    serverSeed: new Uint8Array(randomBytes(32)),
    crypto,
    store,
    blobs,
    log: createLogger('debug', sink),
    version: 'test',
    now,
    rates,
    limits,
  });
  await store.setMeta('admin_token_sha256', toBase64url(crypto.sha256(utf8(ADMIN_TOKEN))));
  const app = createApp(ctx);
  return {
    ctx,
    app,
    clock,
    logs,
    dir,
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Call {
  status: number;
  body: any;
  headers: Headers;
}

/** Anything that answers a Request: the in-process app, or a real server over fetch. */
export type Transport = (path: string, init: RequestInit) => Promise<Response>;

export function inProcess(app: ReturnType<typeof createApp>): Transport {
  return async (path, init) => app.request(path, init);
}

export function overHttp(base: string): Transport {
  return (path, init) => fetch(base + path, init);
}

export async function call(t: Transport, method: string, path: string, body?: unknown, token?: string): Promise<Call> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await t(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

/** Awaits `p` and checks it rejects with a RendezvousError of `code`. */
export async function rejectsCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof Error && (e as { code?: unknown }).code === code, `expected ${code}, got ${String(e)}`);
    return true;
  });
}

export function expectError(r: Call, status: number, code: ErrorCode): void {
  assert.equal(r.body?.error?.code, code, `expected ${code}, got ${JSON.stringify(r.body)}`);
  assert.equal(r.status, status);
}

/** A user as a client holds it: identity key and devices with their keys, all secrets local. */
export class ScriptedUser {
  readonly identitySeed = new Uint8Array(randomBytes(32));
  readonly identityKey = crypto.ed25519PublicKey(this.identitySeed);
  readonly devices: { seed: Uint8Array; id: string; token?: string; prekeys: Map<string, Uint8Array> }[] = [];

  constructor(
    readonly user: string,
    readonly t: Transport,
    readonly now: () => number,
  ) {}

  newDeviceCert(createdAt = this.now()) {
    const seed = new Uint8Array(randomBytes(32));
    const cert = signDeviceCert(crypto, this.identitySeed, { user: this.user, deviceKey: crypto.ed25519PublicKey(seed), createdAt });
    return { seed, id: deviceIdOf(cert.deviceKey), cert: toBase64url(encodeDeviceCert(cert)) };
  }

  async register(pin: string): Promise<Call> {
    const d = this.newDeviceCert();
    const r = await call(this.t, 'POST', '/v1/register', {
      user: this.user,
      pin,
      identityKey: toBase64url(this.identityKey),
      deviceCert: d.cert,
    });
    if (r.status === 201) this.devices.push({ seed: d.seed, id: d.id, prekeys: new Map() });
    return r;
  }

  async addDevice(): Promise<Call> {
    const d = this.newDeviceCert();
    const r = await call(this.t, 'POST', `/v1/users/${this.user}/devices`, { cert: d.cert });
    if (r.status === 201) this.devices.push({ seed: d.seed, id: d.id, prekeys: new Map() });
    return r;
  }

  async login(i = 0, server?: string): Promise<string> {
    const d = this.devices[i]!;
    const ch = await call(this.t, 'POST', '/v1/auth/challenge', { deviceId: d.id });
    assert.equal(ch.status, 200, JSON.stringify(ch.body));
    const sig = signSessionProof(crypto, d.seed, server ?? this.user.split('@')[1]!, fromBase64url(ch.body.challenge));
    const s = await call(this.t, 'POST', '/v1/auth/session', { deviceId: d.id, challenge: ch.body.challenge, signature: toBase64url(sig) });
    assert.equal(s.status, 201, JSON.stringify(s.body));
    d.token = s.body.token;
    return s.body.token;
  }

  prekeys(i: number, n: number): string[] {
    const d = this.devices[i]!;
    return Array.from({ length: n }, () => {
      const secret = new Uint8Array(randomBytes(32));
      const pk = signDevicePrekey(crypto, d.seed, crypto.x25519PublicKey(secret));
      d.prekeys.set(toBase64url(pk.prekey), secret);
      return toBase64url(encodeDevicePrekey(pk));
    });
  }

  topicKeys(n: number): string[] {
    return Array.from({ length: n }, () => {
      const secret = { signatureSeed: new Uint8Array(randomBytes(32)), encryptionSecret: new Uint8Array(randomBytes(32)) };
      return toBase64url(encodeTopicKey(signTopicKey(crypto, this.identitySeed, this.user, secret)));
    });
  }
}

export async function issuePin(t: Transport, user: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await call(t, 'POST', '/v1/admin/pins', { user, ...extra }, ADMIN_TOKEN);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.pin;
}

/** Rate limits for tests that play many users from one address (the limits have their own tests). */
export const GENEROUS_RATES: ContextOptions['rates'] = {
  register: [1000, 60_000],
  write: [100_000, 60_000],
  authChallenge: [1000, 60_000],
  claimTopicKeyPerClaimer: [1000, 60_000],
  claimTopicKeyPerTarget: [1000, 60_000],
  claimPrekey: [1000, 60_000],
};

/**
 * A server started in this process on a loopback port (real sockets, real SQLite file in a temp
 * dir), with the test admin token and generous rates; `close()` stops it and deletes the data.
 */
export async function socketServer(name: string, extra: Partial<import('../src/server.ts').ServerConfig> = {}) {
  const { startServer } = await import('../src/server.ts');
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-socket-'));
  const server = await startServer({
    dataDir: dir,
    host: '127.0.0.1',
    port: 0,
    name,
    adminToken: ADMIN_TOKEN,
    logLevel: 'silent',
    announce: () => {},
    rates: GENEROUS_RATES,
    ...extra,
  });
  return {
    server,
    dir,
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `f` until it returns something (every `stepMs`), or fails the test after `ms`. */
export async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 10_000, stepMs = 50): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
