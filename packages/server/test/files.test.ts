/**
 * Files (protocol §12, docs/server.md §Files): upload and download of encrypted blobs, in
 * process and over a real socket. Every refusal is checked for its code and for leaving
 * nothing behind: no row, no file, no temp file.
 *
 * Topics are created directly through the store with a hand-made first batch rather than
 * through the topic routes: the file routes only read the topic row and its member list, and
 * this keeps these tests independent of the topic protocol's fixtures.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { checkBlob, fileRefFor, openFile, sealFile, toBase64url, toHex, type FileRef } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import {
  ADMIN_TOKEN,
  ScriptedUser,
  call,
  expectError,
  inProcess,
  issuePin,
  overHttp,
  testServer,
  type Call,
  type TestServer,
  type Transport,
} from './helpers.ts';
import * as files from '../src/files.ts';
import { startServer, type RunningServer } from '../src/server.ts';
import { openFsBlobStore } from '../src/storage/blobs.ts';
import type { AppendBatch, MemberRow, Store } from '../src/storage/store.ts';

const rand = (n: number) => new Uint8Array(randomBytes(n));

/** A sealed file as a client makes one: random plaintext, fresh key, its FileRef. */
function sealed(plainSize: number): { plain: Uint8Array; blob: Uint8Array; ref: FileRef } {
  const plain = rand(plainSize);
  const key = rand(32);
  const blob = sealFile(crypto, key, plain);
  return { plain, blob, ref: fileRefFor(crypto, key, blob, 'application/octet-stream', 'test.bin') };
}

/** A topic with the given members, written straight to the store (see the file comment). */
async function newTopic(store: Store, host: string, members: [string, MemberRow['role']][]): Promise<Uint8Array> {
  const topicId = rand(16);
  const batch: AppendBatch = {
    expectedSize: 0,
    entries: [{ index: 0, type: 'update', entry: rand(8) }],
    hashes: [{ index: 0, hash: rand(32) }],
    newSize: 1,
    checkpoint: rand(8),
    epochStartSize: 1,
    members: members.map(([user, role], memberId) => ({ memberId, user, role })),
    nonces: [],
  };
  await store.createTopic({ topicId, host, createdAt: Date.now() }, batch);
  return topicId;
}

const blobPath = (topicId: Uint8Array, blobId: Uint8Array) => `/v1/topics/${toBase64url(topicId)}/blobs/${toBase64url(blobId)}`;

async function json(res: Response): Promise<Call> {
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

async function put(
  t: Transport,
  token: string | undefined,
  topicId: Uint8Array,
  blobId: Uint8Array,
  body: Uint8Array | ReadableStream<Uint8Array> | null,
  headers: Record<string, string> = {},
): Promise<Call> {
  const h: Record<string, string> = { 'content-type': 'application/octet-stream', ...headers };
  if (token !== undefined) h.authorization = `Bearer ${token}`;
  return json(await t(blobPath(topicId, blobId), { method: 'PUT', headers: h, body, duplex: 'half' } as RequestInit));
}

async function get(t: Transport, token: string, topicId: Uint8Array, blobId: Uint8Array, method = 'GET'): Promise<Response> {
  return t(blobPath(topicId, blobId), { method, headers: { authorization: `Bearer ${token}` } });
}

/** A body that streams `chunk`-byte pieces up to `limit` bytes, recording what was pulled. */
function source(chunk: number, limit = Infinity, bytes?: Uint8Array) {
  const state = { sent: 0, cancelled: false };
  const total = bytes?.length ?? limit;
  // highWaterMark 0: nothing is pulled until the server reads, so `sent` is what it read.
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(c) {
        if (state.sent >= total) return c.close();
        const n = Math.min(chunk, total - state.sent);
        c.enqueue(bytes ? bytes.slice(state.sent, state.sent + n) : new Uint8Array(n));
        state.sent += n;
      },
      cancel() {
        state.cancelled = true;
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, state };
}

/** Every file under the blobs directory, temp files included. */
function blobFiles(dataDir: string): string[] {
  const root = join(dataDir, 'blobs');
  return (readdirSync(root, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath ?? d.path, d.name).slice(root.length + 1))
    .sort();
}

const fileOf = (topicId: Uint8Array, blobId: Uint8Array) => `${toHex(topicId)}/${toHex(blobId)}`;

/** Registered, logged-in users of a test server. */
async function users(t: Transport, clock: () => number, server: string, names: string[]): Promise<Record<string, { user: string; token: string }>> {
  const out: Record<string, { user: string; token: string }> = {};
  for (const n of names) {
    const u = new ScriptedUser(`${n}@${server}`, t, clock);
    assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
    out[n] = { user: u.user, token: await u.login() };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('files in process', () => {
  let s: TestServer;
  let t: Transport;
  let u: Awaited<ReturnType<typeof users>>;
  let topic: Uint8Array;

  before(async () => {
    s = await testServer('alpha.test');
    t = inProcess(s.app);
    u = await users(t, () => s.clock.t, 'alpha.test', ['alice', 'bob', 'olga', 'mallory', 'carol']);
    topic = await newTopic(s.ctx.store, 'alpha.test', [
      [u.alice!.user, 'admin'],
      [u.bob!.user, 'participant'],
      [u.olga!.user, 'observer'],
      [u.carol!.user, 'participant'],
    ]);
  });
  after(async () => s.close());

  it('uploads a sealed file streamed in pieces and serves it back to members, byte for byte', async () => {
    const f = sealed(300 * 1024); // 5 chunks
    const src = source(10_000, Infinity, f.blob);
    const r = await put(t, u.alice!.token, topic, f.ref.blobId, src.stream);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.deepEqual(r.body, { blobId: toBase64url(f.ref.blobId), size: f.blob.length });
    assert.deepEqual(blobFiles(s.dir), [fileOf(topic, f.ref.blobId)]);
    const row = await s.ctx.store.getBlob(topic, f.ref.blobId);
    assert.equal(row?.user, u.alice!.user);
    assert.equal(row?.size, f.blob.length);

    // Every member may read, observers included.
    for (const who of [u.alice!, u.bob!, u.olga!]) {
      const res = await get(t, who.token, topic, f.ref.blobId);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/octet-stream');
      assert.equal(res.headers.get('content-length'), String(f.blob.length));
      const got = new Uint8Array(await res.arrayBuffer());
      checkBlob(crypto, f.ref, got);
      assert.deepEqual(openFile(crypto, f.ref.key, got), f.plain);
    }
    const head = await get(t, u.bob!.token, topic, f.ref.blobId, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(f.blob.length));
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it('an empty file (one empty chunk) is a valid blob', async () => {
    const f = sealed(0);
    const r = await put(t, u.bob!.token, topic, f.ref.blobId, f.blob);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const got = new Uint8Array(await (await get(t, u.alice!.token, topic, f.ref.blobId)).arrayBuffer());
    checkBlob(crypto, f.ref, got);
  });

  it('a re-upload of the same blob is 200 with the same answer, charges nobody twice and keeps the first uploader', async () => {
    const f = sealed(70_000);
    const first = await put(t, u.alice!.token, topic, f.ref.blobId, f.blob);
    assert.equal(first.status, 201);
    const used = { alice: await s.ctx.store.blobBytesOf(u.alice!.user), bob: await s.ctx.store.blobBytesOf(u.bob!.user) };
    const again = await put(t, u.alice!.token, topic, f.ref.blobId, f.blob);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, first.body);
    const byBob = await put(t, u.bob!.token, topic, f.ref.blobId, f.blob);
    assert.equal(byBob.status, 200);
    assert.equal((await s.ctx.store.getBlob(topic, f.ref.blobId))?.user, u.alice!.user);
    assert.deepEqual(
      { alice: await s.ctx.store.blobBytesOf(u.alice!.user), bob: await s.ctx.store.blobBytesOf(u.bob!.user) },
      used,
    );
    assert.equal(blobFiles(s.dir).filter((p) => p === fileOf(topic, f.ref.blobId)).length, 1);
  });

  it('concurrent uploads of one blob store it once: one 201, the rest 200', async () => {
    const f = sealed(100_000);
    const rs = await Promise.all([0, 1, 2].map(() => put(t, u.bob!.token, topic, f.ref.blobId, source(8192, Infinity, f.blob).stream)));
    assert.deepEqual(rs.map((r) => r.status).sort(), [200, 200, 201]);
    assert.equal(blobFiles(s.dir).includes(fileOf(topic, f.ref.blobId)), true, 'the blob is in place');
    assert.equal(blobFiles(s.dir).some((p) => p.startsWith('tmp/')), false, 'no temp file is left');
  });

  it('a blob that does not hash to its id is file.bad_blob, and nothing is left on disk or in the store', async () => {
    const f = sealed(150_000);
    const before = blobFiles(s.dir);
    const used = await s.ctx.store.blobBytesOf(u.alice!.user);
    const wrongId = crypto.sha256(rand(10));
    expectError(await put(t, u.alice!.token, topic, wrongId, source(16_384, Infinity, f.blob).stream), 400, 'file.bad_blob');
    // One flipped byte: the hash tells.
    const tampered = f.blob.slice();
    tampered[1000]! ^= 1;
    expectError(await put(t, u.alice!.token, topic, f.ref.blobId, tampered), 400, 'file.bad_blob');
    assert.deepEqual(blobFiles(s.dir), before);
    assert.equal(await s.ctx.store.getBlob(topic, wrongId), null);
    assert.equal(await s.ctx.store.getBlob(topic, f.ref.blobId), null);
    assert.equal(await s.ctx.store.blobBytesOf(u.alice!.user), used);
  });

  it('a size no file encrypts to is file.bad_blob: before reading when declared, after when streamed', async () => {
    const before = blobFiles(s.dir);
    for (const n of [0, 10, 65_536 + 16 + 5]) {
      const body = rand(n);
      expectError(await put(t, u.alice!.token, topic, crypto.sha256(body), body), 400, 'file.bad_blob');
      const src = source(4096, Infinity, body);
      expectError(await put(t, u.alice!.token, topic, crypto.sha256(body), src.stream, { 'content-length': String(n) }), 400, 'file.bad_blob');
      assert.equal(src.state.sent, 0, 'a declared bad size is refused before any byte is read');
    }
    assert.deepEqual(blobFiles(s.dir), before);
  });

  it('only current members may upload or download; observers may not upload', async () => {
    const f = sealed(1000);
    expectError(await put(t, u.mallory!.token, topic, f.ref.blobId, f.blob), 403, 'topic.not_member');
    expectError(await put(t, u.olga!.token, topic, f.ref.blobId, f.blob), 403, 'topic.read_only');
    assert.equal(await s.ctx.store.getBlob(topic, f.ref.blobId), null);
    assert.equal((await put(t, u.bob!.token, topic, f.ref.blobId, f.blob)).status, 201);
    expectError(await json(await get(t, u.mallory!.token, topic, f.ref.blobId)), 403, 'topic.not_member');
    assert.equal((await get(t, u.mallory!.token, topic, f.ref.blobId, 'HEAD')).status, 403);
    // A member of another topic cannot reach this topic's blob through theirs: blobs are per topic.
    const other = await newTopic(s.ctx.store, 'alpha.test', [[u.mallory!.user, 'admin']]);
    expectError(await json(await get(t, u.mallory!.token, other, f.ref.blobId)), 404, 'blob.unknown');
  });

  it('unknown blob is blob.unknown; unknown topic is topic.unknown', async () => {
    expectError(await json(await get(t, u.alice!.token, topic, rand(32))), 404, 'blob.unknown');
    expectError(await json(await get(t, u.alice!.token, rand(16), rand(32))), 404, 'topic.unknown');
    const f = sealed(10);
    expectError(await put(t, u.alice!.token, rand(16), f.ref.blobId, f.blob), 404, 'topic.unknown');
  });

  it('validates the request at the edge: ids, content type, content-length, authentication', async () => {
    const f = sealed(10);
    const path = (a: string, b: string) => `/v1/topics/${a}/blobs/${b}`;
    const req = async (p: string, headers: Record<string, string> = {}) =>
      json(await s.app.request(p, { method: 'PUT', headers: { authorization: `Bearer ${u.alice!.token}`, ...headers }, body: f.blob as BodyInit }));
    const tid = toBase64url(topic);
    const bid = toBase64url(f.ref.blobId);
    expectError(await req(path('not-base64!', bid)), 400, 'request.bad_field');
    expectError(await req(path(toBase64url(rand(15)), bid)), 400, 'request.bad_field');
    expectError(await req(path(tid, toBase64url(rand(31)))), 400, 'request.bad_field');
    expectError(await req(path(tid, bid), { 'content-type': 'application/json' }), 400, 'request.bad_field');
    expectError(await req(path(tid, bid), { 'content-length': '-1' }), 400, 'request.bad_field');
    expectError(await put(t, undefined, topic, f.ref.blobId, f.blob), 401, 'auth.required');
    expectError(await json(await s.app.request(path(tid, bid))), 401, 'auth.required');
    // No content type at all is fine: the body is raw bytes either way.
    const ok = await json(await s.app.request(path(tid, bid), { method: 'PUT', headers: { authorization: `Bearer ${u.alice!.token}` }, body: f.blob as BodyInit }));
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
  });

  it('admin delete-user removes the files and rows of the blobs that user uploaded, and only those', async () => {
    const c1 = sealed(5000);
    const c2 = sealed(90_000);
    const a1 = sealed(6000);
    for (const [who, f] of [
      [u.carol!, c1],
      [u.carol!, c2],
      [u.alice!, a1],
    ] as const) {
      assert.equal((await put(t, who.token, topic, f.ref.blobId, f.blob)).status, 201);
    }
    assert.equal(await s.ctx.store.blobBytesOf(u.carol!.user), c1.blob.length + c2.blob.length);
    const r = await call(t, 'DELETE', `/v1/admin/users/${u.carol!.user}`, undefined, ADMIN_TOKEN);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const onDisk = blobFiles(s.dir);
    assert.equal(onDisk.includes(fileOf(topic, c1.ref.blobId)), false, 'carol’s first file is gone');
    assert.equal(onDisk.includes(fileOf(topic, c2.ref.blobId)), false, 'carol’s second file is gone');
    assert.equal(onDisk.includes(fileOf(topic, a1.ref.blobId)), true, 'alice’s file stays');
    assert.equal(await s.ctx.store.getBlob(topic, c1.ref.blobId), null);
    assert.equal(await s.ctx.store.blobBytesOf(u.carol!.user), 0);
    expectError(await json(await get(t, u.alice!.token, topic, c2.ref.blobId)), 404, 'blob.unknown');
    checkBlob(crypto, a1.ref, new Uint8Array(await (await get(t, u.bob!.token, topic, a1.ref.blobId)).arrayBuffer()));
  });

  it('removeTopic deletes the topic, its blob rows and its blob directory; other topics keep theirs', async () => {
    const gone = await newTopic(s.ctx.store, 'alpha.test', [
      [u.alice!.user, 'admin'],
      [u.bob!.user, 'participant'],
    ]);
    const f1 = sealed(1000);
    const f2 = sealed(2000);
    assert.equal((await put(t, u.alice!.token, gone, f1.ref.blobId, f1.blob)).status, 201);
    assert.equal((await put(t, u.bob!.token, gone, f2.ref.blobId, f2.blob)).status, 201);
    // The same content in the kept topic is its own copy.
    assert.equal((await put(t, u.bob!.token, topic, f2.ref.blobId, f2.blob)).status, 201);
    const bobBefore = await s.ctx.store.blobBytesOf(u.bob!.user);
    assert.equal(existsSync(join(s.dir, 'blobs', toHex(gone))), true);

    assert.equal(await files.removeTopic(s.ctx, gone), true);
    assert.equal(existsSync(join(s.dir, 'blobs', toHex(gone))), false, 'the topic’s blob directory is gone');
    assert.equal(await s.ctx.store.getTopic(gone), null);
    assert.equal(await s.ctx.store.getBlob(gone, f1.ref.blobId), null);
    assert.equal(await s.ctx.store.blobBytesOf(u.bob!.user), bobBefore - f2.blob.length);
    expectError(await json(await get(t, u.alice!.token, gone, f1.ref.blobId)), 404, 'topic.unknown');
    const kept = new Uint8Array(await (await get(t, u.alice!.token, topic, f2.ref.blobId)).arrayBuffer());
    checkBlob(crypto, f2.ref, kept);
    assert.equal(await files.removeTopic(s.ctx, gone), false);
  });
});

describe('file limits', () => {
  it('over the per-blob cap is request.too_large: before reading when declared, as soon as crossed when streamed', async () => {
    const s = await testServer('alpha.test', undefined, { maxBlobBytes: 100_000 });
    try {
      const t = inProcess(s.app);
      const u = await users(t, () => s.clock.t, 'alpha.test', ['alice']);
      const topic = await newTopic(s.ctx.store, 'alpha.test', [[u.alice!.user, 'admin']]);
      const big = sealed(120_000);

      const declared = source(16_384, Infinity, big.blob);
      const r1 = await put(t, u.alice!.token, topic, big.ref.blobId, declared.stream, { 'content-length': String(big.blob.length) });
      expectError(r1, 413, 'request.too_large');
      assert.equal(declared.state.sent, 0, 'a declared oversize body is not read at all');

      const endless = source(16_384);
      expectError(await put(t, u.alice!.token, topic, big.ref.blobId, endless.stream), 413, 'request.too_large');
      assert.equal(endless.state.cancelled, true, 'the body is cancelled once the cap is crossed');
      assert.ok(endless.state.sent <= 100_000 + 3 * 16_384, `read ${endless.state.sent} bytes past a 100,000-byte cap`);

      expectError(await put(t, u.alice!.token, topic, big.ref.blobId, big.blob), 413, 'request.too_large');
      assert.deepEqual(blobFiles(s.dir), [], 'no file and no temp file is left');
      // Just under the cap is fine.
      const fits = sealed(100_000 - 32);
      assert.equal((await put(t, u.alice!.token, topic, fits.ref.blobId, fits.blob)).status, 201);
    } finally {
      await s.close();
    }
  });

  it('the per-user quota is blob.quota_exceeded, counts only new blobs, and is per user', async () => {
    const s = await testServer('alpha.test', undefined, { blobBytesPerUser: 200_000 });
    try {
      const t = inProcess(s.app);
      const u = await users(t, () => s.clock.t, 'alpha.test', ['alice', 'bob']);
      const topic = await newTopic(s.ctx.store, 'alpha.test', [
        [u.alice!.user, 'admin'],
        [u.bob!.user, 'participant'],
      ]);
      const [f1, f2, f3] = [sealed(90_000), sealed(90_000), sealed(90_000)];
      assert.equal((await put(t, u.alice!.token, topic, f1.ref.blobId, f1.blob)).status, 201);
      assert.equal((await put(t, u.alice!.token, topic, f2.ref.blobId, f2.blob)).status, 201);
      const files0 = blobFiles(s.dir);

      const declared = source(16_384, Infinity, f3.blob);
      const r = await put(t, u.alice!.token, topic, f3.ref.blobId, declared.stream, { 'content-length': String(f3.blob.length) });
      expectError(r, 413, 'blob.quota_exceeded');
      assert.equal(declared.state.sent, 0, 'refused before reading');
      expectError(await put(t, u.alice!.token, topic, f3.ref.blobId, source(16_384, Infinity, f3.blob).stream), 413, 'blob.quota_exceeded');
      assert.deepEqual(blobFiles(s.dir), files0, 'nothing stored, no temp file left');
      assert.equal(await s.ctx.store.blobBytesOf(u.alice!.user), f1.blob.length + f2.blob.length);

      // A re-upload of what she has costs nothing; bob has his own quota.
      assert.equal((await put(t, u.alice!.token, topic, f1.ref.blobId, f1.blob)).status, 200);
      assert.equal((await put(t, u.bob!.token, topic, f3.ref.blobId, f3.blob)).status, 201);
    } finally {
      await s.close();
    }
  });

  it('uploads take the device write rate limit first', async () => {
    const s = await testServer('alpha.test', { register: [1000, 60_000], write: [2, 60_000] });
    try {
      const t = inProcess(s.app);
      const u = await users(t, () => s.clock.t, 'alpha.test', ['alice']);
      const f = sealed(10);
      // Unknown topic, yet the rate limit answers first once the bucket is empty.
      expectError(await put(t, u.alice!.token, rand(16), f.ref.blobId, f.blob), 404, 'topic.unknown');
      expectError(await put(t, u.alice!.token, rand(16), f.ref.blobId, f.blob), 404, 'topic.unknown');
      const r = await put(t, u.alice!.token, rand(16), f.ref.blobId, f.blob);
      expectError(r, 429, 'rate.limited');
    } finally {
      await s.close();
    }
  });
});

describe('blob store', () => {
  it('clears leftover temp files on open and keeps committed blobs', async () => {
    const root = join(mkdtempSync(join(tmpdir(), 'rendezvous-blobs-')), 'blobs');
    try {
      const store = await openFsBlobStore(root);
      const f = sealed(1000);
      const topicId = rand(16);
      const staged = await store.stage(topicId, source(100, Infinity, f.blob).stream, 1 << 20);
      assert.deepEqual(staged.blobId, f.ref.blobId);
      await staged.commit();
      writeFileSync(join(root, 'tmp', 'crashed-upload.part'), rand(100));
      mkdirSync(join(root, 'tmp', 'odd-dir'));
      await openFsBlobStore(root);
      assert.deepEqual(readdirSync(join(root, 'tmp')), []);
      const opened = await store.open(topicId, f.ref.blobId);
      assert.equal(opened?.size, f.blob.length);
      checkBlob(crypto, f.ref, new Uint8Array(await new Response(opened!.stream).arrayBuffer()));
    } finally {
      rmSync(join(root, '..'), { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('files over a real socket', () => {
  let srv: RunningServer;
  let dir: string;
  let t: Transport;
  let u: Awaited<ReturnType<typeof users>>;
  let topic: Uint8Array;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rendezvous-files-e2e-'));
    srv = await startServer({
      dataDir: dir,
      host: '127.0.0.1',
      port: 0,
      name: 'localhost:1',
      adminToken: ADMIN_TOKEN,
      logLevel: 'warn',
      announce: () => {},
      rates: { register: [1000, 60_000] },
      limits: { maxBlobBytes: 400_000 },
    });
    t = overHttp(srv.url);
    u = await users(t, Date.now, 'localhost:1', ['alice', 'mallory']);
    topic = await newTopic(srv.ctx.store, 'localhost:1', [[u.alice!.user, 'admin']]);
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('streams a sealed file up and down over HTTP', async () => {
    const f = sealed(250 * 1024);
    const r = await put(t, u.alice!.token, topic, f.ref.blobId, source(16_384, Infinity, f.blob).stream);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const res = await get(t, u.alice!.token, topic, f.ref.blobId);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(f.blob.length));
    const got = new Uint8Array(await res.arrayBuffer());
    checkBlob(crypto, f.ref, got);
    assert.deepEqual(openFile(crypto, f.ref.key, got), f.plain);
    expectError(await json(await get(t, u.mallory!.token, topic, f.ref.blobId)), 403, 'topic.not_member');
  });

  it('answers 413 to an oversize body, declared or streamed, and the socket stays usable', async () => {
    const big = sealed(500_000);
    // fetch declares the length of a byte body.
    expectError(await put(t, u.alice!.token, topic, big.ref.blobId, big.blob), 413, 'request.too_large');
    expectError(await put(t, u.alice!.token, topic, big.ref.blobId, source(16_384, 2_000_000).stream), 413, 'request.too_large');
    assert.equal((await call(t, 'GET', '/healthz')).status, 200);
    assert.deepEqual(blobFiles(dir).filter((p) => p.startsWith('tmp/')), []);
  });

  it('an upload the client aborts midway leaves no temp file', async () => {
    const f = sealed(300_000);
    // node:http rather than fetch: it sends part of a body and then drops the socket, exactly.
    const req = request(srv.url + blobPath(topic, f.ref.blobId), {
      method: 'PUT',
      headers: { authorization: `Bearer ${u.alice!.token}`, 'content-type': 'application/octet-stream' },
    });
    const closed = new Promise<void>((r) => req.on('close', () => r()));
    req.on('error', () => {});
    req.write(f.blob.subarray(0, 100_000));
    for (let i = 0; i < 100 && !blobFiles(dir).some((p) => p.startsWith('tmp/')); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(blobFiles(dir).some((p) => p.startsWith('tmp/')), true, 'the upload is streaming into a temp file');
    req.destroy();
    await closed;
    for (let i = 0; i < 100 && blobFiles(dir).some((p) => p.startsWith('tmp/')); i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(blobFiles(dir).filter((p) => p.startsWith('tmp/')), []);
    assert.equal(await srv.ctx.store.getBlob(topic, f.ref.blobId), null);
  });
});
