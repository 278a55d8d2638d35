/**
 * Files end to end against a real server on a loopback socket: sendFile seals and uploads in
 * two streamed passes and posts the FileRef; fetchFile downloads, checks and decrypts chunk by
 * chunk. Sizes around the 64 KiB chunk boundary, progress, observers, a server that tampers
 * with, truncates or reorders a blob, a sender who shares the wrong key, and a 32 MiB file read
 * lazily from its source.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  FILE_CHUNK_SIZE,
  encodeFileRef,
  encryptedFileSize,
  fromBase64url,
  isRendezvousError,
  sealFile,
  toHex,
  type ErrorCode,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { RunningServer } from '@rendezvous/server';
import { socketServer, issuePin, overHttp, rejectsCode } from '../../server/test/helpers.ts';
import { RendezvousClient } from '../src/client.ts';
import { MemoryProfileStore } from '../src/profile-store.ts';
import { fetchFile, fileInfo, sendFile, type FileProgress } from '../src/files.ts';

let server: RunningServer;
let running: Awaited<ReturnType<typeof socketServer>>;
let alice: RendezvousClient;
let bob: RendezvousClient;
let carol: RendezvousClient;
let topic: string;

/** What bob's fetch does to blob downloads: a stand-in for a dishonest server. */
let tamper: ((blob: Uint8Array) => { body: Uint8Array; contentLength: number }) | null = null;

async function bobFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const res = await fetch(input, init);
  if (tamper === null || init?.method !== 'GET' || !String(input).includes('/blobs/') || !res.ok) return res;
  const t = tamper(new Uint8Array(await res.arrayBuffer()));
  const headers = new Headers(res.headers);
  headers.set('content-length', String(t.contentLength));
  return new Response(t.body as unknown as BodyInit, { status: res.status, headers });
}

const pin = (user: string) => issuePin(overHttp(server.url), `${user}@${server.name}`);

async function newUser(name: string, f?: typeof fetch): Promise<RendezvousClient> {
  return RendezvousClient.register({ store: new MemoryProfileStore(), crypto, fetch: f, server: server.url, user: name, pin: await pin(name), pool: { prekeys: 5, topicKeys: 5 } });
}

const rejects = rejectsCode;

/** Deterministic bytes that differ from chunk to chunk. */
function pattern(size: number, seed = 1): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** A factory of streams of `data` in awkward pieces (not aligned with 64 KiB chunks). */
function pieces(data: Uint8Array, piece = 70_001): () => ReadableStream<Uint8Array> {
  return () => {
    let at = 0;
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (at >= data.length) return c.close();
        c.enqueue(data.slice(at, Math.min(data.length, at + piece)));
        at += piece;
      },
    }, { highWaterMark: 0 });
  };
}

/** Checks every phase's reports only grow and the last one is the phase's total. */
function checkProgress(reports: FileProgress[], phases: Record<string, number>): void {
  for (const [phase, total] of Object.entries(phases)) {
    const r = reports.filter((p) => p.phase === phase);
    assert.ok(r.length > 0, `${phase}: some progress was reported`);
    for (let i = 1; i < r.length; i++) assert.ok(r[i]!.bytes >= r[i - 1]!.bytes, `${phase}: progress never goes back`);
    assert.ok(r.every((p) => p.total === total && p.bytes <= total), `${phase}: every report has the total ${total}`);
    assert.equal(r.at(-1)!.bytes, total, `${phase}: the last report is the total`);
  }
}

/** A WritableStream sink that remembers what it got and whether it was closed or aborted. */
function collector() {
  const parts: Uint8Array[] = [];
  const state = { closed: false, aborted: null as unknown, bytes: () => Buffer.concat(parts) };
  const stream = new WritableStream<Uint8Array>({
    write: (c) => void parts.push(c.slice()),
    close: () => void (state.closed = true),
    abort: (e) => void (state.aborted = e ?? 'aborted'),
  });
  return { stream, state };
}

function blobPath(blobId: string): string {
  return join(running.dir, 'blobs', toHex(fromBase64url(topic)), toHex(fromBase64url(blobId)));
}

before(async () => {
  running = await socketServer('files.test');
  server = running.server;
  alice = await newUser('alice');
  bob = await newUser('bob', bobFetch);
  carol = await newUser('carol');
  topic = await alice.createTopic({ title: 'files', members: [{ user: 'bob', role: 'participant' }, { user: 'carol', role: 'observer' }] });
  await bob.sync();
  await carol.sync();
});
after(async () => running.close());

describe('sending and fetching files', () => {
  const sizes = [0, 1, FILE_CHUNK_SIZE, FILE_CHUNK_SIZE + 1, 1024 * 1024 + 3];
  for (const size of sizes) {
    it(`round-trips a ${size}-byte file, byte for byte, with progress`, async () => {
      const data = pattern(size, size + 7);
      const sent: FileProgress[] = [];
      // Bytes for some sizes, a stream factory in odd pieces for the others.
      const source = size % 2 === 0 ? data : pieces(data);
      const r = await sendFile(alice, topic, source, { name: `f-${size}.bin`, size, crypto, onProgress: (p) => void sent.push({ ...p }) });
      assert.equal(r.size, size);
      assert.equal(r.encryptedSize, encryptedFileSize(size));
      assert.equal(r.mediaType, 'application/octet-stream');
      checkProgress(sent, { hashing: size, uploading: encryptedFileSize(size) });
      assert.ok(sent.findIndex((p) => p.phase === 'uploading') > sent.findLastIndex((p) => p.phase === 'hashing'), 'hashing comes before uploading');

      // What the server stores is the ciphertext whose SHA-256 is the blob id, and no plaintext.
      const stored = readFileSync(blobPath(r.blobId));
      assert.equal(stored.length, encryptedFileSize(size));
      assert.equal(createHash('sha256').update(stored).digest('base64url'), r.blobId);

      const info = await fileInfo(bob, topic, r.index!);
      assert.deepEqual({ name: info.name, size: info.size, blobId: info.blobId, sender: info.sender }, { name: `f-${size}.bin`, size, blobId: r.blobId, sender: alice.user });

      const got: FileProgress[] = [];
      const { stream, state } = collector();
      const f = await fetchFile(bob, topic, r.index!, stream, { crypto, onProgress: (p) => void got.push({ ...p }) });
      assert.equal(f.data, undefined, 'with a sink, nothing is returned whole');
      assert.ok(state.closed && state.aborted === null, 'the sink is closed after a verified transfer');
      assert.ok(state.bytes().equals(data), 'the receiver gets byte-identical data');
      checkProgress(got, { downloading: encryptedFileSize(size) });

      const whole = await fetchFile(bob, topic, r.index!, undefined, { crypto });
      assert.ok(Buffer.from(whole.data!).equals(data), 'without a sink, the whole file is returned');
    });
  }

  it('agrees across crypto providers: sealed with @noble (the default), opened with node:crypto', async () => {
    const data = pattern(FILE_CHUNK_SIZE * 2 + 5, 99);
    const r = await sendFile(alice, topic, data, { name: 'noble.bin', mediaType: 'application/x-test' });
    await bob.sync();
    const f = await fetchFile(bob, topic, r.index!, undefined, { crypto });
    assert.equal(f.mediaType, 'application/x-test');
    assert.ok(Buffer.from(f.data!).equals(data), 'same plaintext');
  });

  it('refuses a source whose length is not the size given, and an observer', async () => {
    await rejects(sendFile(alice, topic, pieces(pattern(1000)), { name: 'short', size: 1001, crypto }), 'request.bad_field');
    await rejects(sendFile(alice, topic, pieces(pattern(1000)), { name: 'long', size: 999, crypto }), 'request.bad_field');
    let opened = 0;
    const src = () => {
      opened++;
      return pieces(pattern(10))();
    };
    await rejects(sendFile(carol, topic, src, { name: 'nope', size: 10, crypto }), 'topic.read_only');
    assert.equal(opened, 0, 'an observer is refused before the source is read');
    // The server refuses the upload on its own too.
    const blob = sealFile(crypto, new Uint8Array(32), pattern(10));
    await carol.ensureSession();
    await rejects(carol.api.uploadBlob(fromBase64url(topic), crypto.sha256(blob), blob), 'topic.read_only');
  });

  it('rejects a file that is not a file message, or not there', async () => {
    const { index: text } = await alice.send(topic, { text: 'not a file' });
    await bob.sync();
    await rejects(fetchFile(bob, topic, text!), 'request.bad_field');
    await rejects(fetchFile(bob, topic, 0), 'request.bad_field'); // the topic's creation
    await rejects(fetchFile(bob, topic, 1_000_000), 'request.bad_field');
  });
});

describe('a blob that does not match its FileRef', () => {
  const size = 3 * FILE_CHUNK_SIZE + 100;
  const data = pattern(size, 5);
  let index: number;
  let blobId: string;

  before(async () => {
    const r = await sendFile(alice, topic, data, { name: 'victim.bin', crypto });
    index = r.index!;
    blobId = r.blobId;
    await bob.sync();
  });

  async function refused(code: ErrorCode, at = index) {
    const { stream, state } = collector();
    await rejects(fetchFile(bob, topic, at, stream, { crypto }), code);
    assert.ok(!state.closed && state.aborted !== null, 'the sink is aborted, never closed: its partial output must be discarded');
    return state;
  }

  it('is refused when the server changes a byte of the stored blob', async () => {
    const path = blobPath(blobId);
    const good = readFileSync(path);
    const bad = Buffer.from(good);
    bad[FILE_CHUNK_SIZE + 16 + 10]! ^= 1; // in the second chunk: the first was already written out
    writeFileSync(path, bad);
    try {
      // The chunk does not open, the rest is still hashed, and the hash names the server.
      const state = await refused('file.bad_blob');
      assert.equal(state.bytes().length, FILE_CHUNK_SIZE, 'the first, authentic chunk was written before the bad one was found');
    } finally {
      writeFileSync(path, good);
    }
    assert.ok((await fetchFile(bob, topic, index, undefined, { crypto })).data!.length === size, 'the restored blob fetches again');
  });

  it('is refused when the server truncates, extends or reorders it', async () => {
    const cases: [string, (b: Uint8Array) => { body: Uint8Array; contentLength: number }][] = [
      ['shorter, honest length', (b) => ({ body: b.subarray(0, b.length - 16), contentLength: b.length - 16 })],
      ['shorter than its content-length', (b) => ({ body: b.subarray(0, b.length - 1000), contentLength: b.length })],
      ['last chunk dropped', (b) => ({ body: b.subarray(0, 3 * (FILE_CHUNK_SIZE + 16)), contentLength: 3 * (FILE_CHUNK_SIZE + 16) })],
      ['longer, honest length', (b) => ({ body: Buffer.concat([b, new Uint8Array(16)]), contentLength: b.length + 16 })],
      [
        'first two chunks swapped',
        (b) => {
          const n = FILE_CHUNK_SIZE + 16;
          const out = Buffer.from(b);
          out.set(b.subarray(n, 2 * n), 0);
          out.set(b.subarray(0, n), n);
          return { body: out, contentLength: out.length };
        },
      ],
    ];
    for (const [what, t] of cases) {
      tamper = t;
      try {
        await refused('file.bad_blob').catch((e: Error) => {
          throw new Error(`${what}: ${e.message}`);
        });
      } finally {
        tamper = null;
      }
    }
  });

  it('blames the sender (crypto.decrypt_failed) when the blob is the one uploaded but the key is wrong', async () => {
    const ref = { blobId: fromBase64url(blobId), key: pattern(32, 77), size, mediaType: 'application/octet-stream', name: 'wrong-key.bin' };
    const i = (await alice.postContent(topic, { type: 'file', body: encodeFileRef(ref) })).index!;
    await bob.sync();
    await refused('crypto.decrypt_failed', i);
    const parts: Uint8Array[] = [];
    await rejects(fetchFile(bob, topic, i, (c) => void parts.push(c), { crypto }), 'crypto.decrypt_failed');
    assert.equal(parts.length, 0, 'nothing that failed to open reaches the sink');
  });
});

describe('memory', () => {
  it('sends and fetches a 32 MiB file reading its source lazily, a few chunks at a time', async () => {
    const size = 32 * 1024 * 1024;
    const piece = 64 * 1024;
    const block = pattern(piece, 3);
    let produced = 0;
    let opened = 0;
    let worst = 0;
    let hashed = 0;
    let uploaded = 0;
    const source = () => {
      opened++;
      produced = 0;
      let at = 0;
      return new ReadableStream<Uint8Array>({
        pull(c) {
          if (at >= size) return c.close();
          const n = Math.min(piece, size - at);
          const b = block.slice(0, n);
          b[0] = at / piece; // every piece differs a little
          c.enqueue(b);
          at += n;
          produced += n;
          // How far the source is ahead of what the current pass has sealed and passed on.
          worst = Math.max(worst, produced - (opened === 1 ? hashed : uploaded));
        },
      }, { highWaterMark: 0 });
    };
    const heapBefore = process.memoryUsage();
    const r = await sendFile(alice, topic, source, {
      name: 'big.bin',
      size,
      crypto,
      onProgress: (p) => {
        if (p.phase === 'hashing') hashed = p.bytes;
        else uploaded = p.bytes - Math.ceil(p.bytes / (FILE_CHUNK_SIZE + 16)) * 16; // plaintext bytes sent, about
      },
    });
    assert.equal(opened, 2, 'the source is read twice: to hash, then to upload');
    assert.ok(worst <= 4 * piece, `the source is never read far ahead of what was sent (at most ${worst} bytes were)`);

    await bob.sync();
    const h = createHash('sha256');
    let received = 0;
    let written = 0;
    let lag = 0;
    await fetchFile(
      bob,
      topic,
      r.index!,
      (c) => {
        written += c.length;
        lag = Math.max(lag, received - written);
        h.update(c);
      },
      { crypto, onProgress: (p) => void (received = p.bytes) },
    );
    assert.equal(written, size);
    assert.ok(lag <= 4 * piece, `plaintext is written as the blob arrives (the download was at most ${lag} bytes ahead)`);
    const expected = createHash('sha256');
    for (let at = 0; at < size; at += piece) {
      const b = block.slice(0, Math.min(piece, size - at));
      b[0] = at / piece;
      expected.update(b);
    }
    assert.equal(h.digest('hex'), expected.digest('hex'), 'the 32 MiB file arrives intact');
    const heapAfter = process.memoryUsage();
    // Informational: without --expose-gc these numbers include garbage not yet collected.
    console.log(`# heapUsed ${((heapAfter.heapUsed - heapBefore.heapUsed) / 2 ** 20).toFixed(1)} MiB, arrayBuffers ${((heapAfter.arrayBuffers - heapBefore.arrayBuffers) / 2 ** 20).toFixed(1)} MiB after a 32 MiB round trip`);
  });
});
