/**
 * Canonical encoding (spec §2), property-tested with fast-check:
 * - every primitive round-trips and rejects non-canonical forms;
 * - every structure decoder satisfies decode(encode(x)) = x, and for ANY input bytes either
 *   fails with an `encoding.*` RendezvousError (never a TypeError or RangeError) or returns a
 *   value that encodes back to exactly those bytes: no structure has two encodings.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { Reader, Writer, decodeAll, MAX_VARINT } from '../src/encoding.ts';
import { RendezvousError } from '../src/errors.ts';
import { fromBase64url, fromHex, toBase64url } from '../src/bytes.ts';
import {
  decodeDeviceCert,
  decodeDevicePrekey,
  decodeTopicKey,
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeTopicKey,
} from '../src/identity.ts';
import { decodeTopicUpdate, encodeTopicUpdate } from '../src/topic.ts';
import { decodeContent, decodeMessage, encodeContent, encodeMessage } from '../src/message.ts';
import { decodeCheckpoint, decodeLogEntry, encodeCheckpoint, encodeLogEntry } from '../src/log.ts';
import { decodeKeyBundle, encodeKeyBundle } from '../src/bundle.ts';
import { decodeFileRef, encodeFileRef } from '../src/file.ts';
import { VECTORS_PATH } from '../scripts/generate-vectors.ts';
import { assertCode } from './helpers.ts';

const V = JSON.parse(readFileSync(VECTORS_PATH, 'utf8'));

describe('primitives', () => {
  it('varint: round-trips every value in [0, 2^30) in its shortest form', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_VARINT }), (n) => {
        const b = new Writer().varint(n).finish();
        assert.equal(b.length, n < 64 ? 1 : n < 16384 ? 2 : 4);
        assert.equal(decodeAll(b, (r) => r.varint()), n);
      }),
      { numRuns: 2000 },
    );
    for (const n of [0, 63, 64, 16383, 16384, MAX_VARINT]) assert.equal(decodeAll(new Writer().varint(n).finish(), (r) => r.varint()), n);
  });
  it('varint: rejects non-minimal forms, the 8-byte form, and values out of range', () => {
    assertCode(() => decodeAll(Uint8Array.of(0x40, 0x3f), (r) => r.varint()), 'encoding.non_minimal');
    assertCode(() => decodeAll(Uint8Array.of(0x80, 0, 0x3f, 0xff), (r) => r.varint()), 'encoding.non_minimal');
    assertCode(() => decodeAll(Uint8Array.of(0xc0, 0, 0, 0, 0, 0, 0, 1), (r) => r.varint()), 'encoding.bad_value');
    assertCode(() => new Writer().varint(MAX_VARINT + 1), 'encoding.bad_value');
    assertCode(() => new Writer().varint(-1), 'encoding.bad_value');
  });
  it('u64: round-trips safe integers and rejects values ≥ 2^53', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        assert.equal(decodeAll(new Writer().u64(n).finish(), (r) => r.u64()), n);
      }),
    );
    assertCode(() => decodeAll(Uint8Array.of(0, 0x20, 0, 0, 0, 0, 0, 0), (r) => r.u64()), 'encoding.bad_value');
  });
  it('strings: any Unicode string round-trips; invalid UTF-8 is rejected', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        assert.equal(decodeAll(new Writer().string(s).finish(), (r) => r.string()), s);
      }),
    );
    for (const bad of [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xff], [0xe2, 0x82]]) {
      assertCode(() => decodeAll(Uint8Array.of(bad.length, ...bad), (r) => r.string()), 'encoding.bad_value');
    }
  });
  it('opaque<V>, lists and booleans: exact lengths, limits and values', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 80 }), { maxLength: 20 }), (items) => {
        const b = new Writer().list(items, (w, x) => w.bytes(x)).finish();
        assert.deepEqual(decodeAll(b, (r) => r.list((r) => r.bytes())), items);
      }),
    );
    assertCode(() => decodeAll(Uint8Array.of(5, 1, 2), (r) => r.bytes()), 'encoding.truncated');
    assertCode(() => decodeAll(Uint8Array.of(3, 1, 2, 3), (r) => r.bytes(2)), 'encoding.too_large');
    assertCode(() => decodeAll(Uint8Array.of(2, 1, 2), (r) => r.list((r) => r.u8(), 1)), 'encoding.too_large');
    assertCode(() => decodeAll(Uint8Array.of(3, 2, 9, 9), (r) => r.list((r) => r.u16())), 'encoding.truncated');
    assertCode(() => decodeAll(Uint8Array.of(2), (r) => r.bool()), 'encoding.bad_value');
    assertCode(() => decodeAll(Uint8Array.of(1, 0), (r) => r.bool()), 'encoding.trailing_bytes');
    assert.equal(new Reader(Uint8Array.of(1)).bool(), true);
  });
});

/** Every structure with its encoder and decoder, and valid encodings from the vectors. */
const structures: { name: string; decode: (b: Uint8Array) => unknown; encode: (x: any, b: Uint8Array) => Uint8Array; samples: Uint8Array[] }[] = [
  { name: 'DeviceCert', decode: decodeDeviceCert, encode: encodeDeviceCert, samples: [fromHex(V.identity.device_cert.encoded)] },
  { name: 'DevicePrekey', decode: decodeDevicePrekey, encode: encodeDevicePrekey, samples: [fromHex(V.identity.device_prekey.encoded)] },
  { name: 'TopicKey', decode: decodeTopicKey, encode: encodeTopicKey, samples: V.identity.topic_keys.map((k: any) => fromHex(k.encoded)) },
  { name: 'TopicUpdate', decode: decodeTopicUpdate, encode: encodeTopicUpdate, samples: V.topic.updates.map((u: any) => fromHex(u.encoded)) },
  { name: 'Message', decode: decodeMessage, encode: encodeMessage, samples: [fromHex(V.message.encoded)] },
  { name: 'MessageContent', decode: decodeContent, encode: (c, b) => encodeContent(c, b.length), samples: [fromHex(V.message.padded_content)] },
  { name: 'LogEntry', decode: decodeLogEntry, encode: encodeLogEntry, samples: V.log.entries.map((e: any) => fromHex(e.encoded)) },
  { name: 'Checkpoint', decode: decodeCheckpoint, encode: encodeCheckpoint, samples: [fromHex(V.log.checkpoint)] },
  { name: 'KeyBundle', decode: decodeKeyBundle, encode: encodeKeyBundle, samples: [fromHex(V.key_bundle.encoded)] },
  { name: 'FileRef', decode: decodeFileRef, encode: encodeFileRef, samples: [fromHex(V.file.file_ref)] },
];

/** Random edits of a valid encoding: flips, overwrites, insertions, deletions, truncation. */
function mutated(samples: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  );
  return fc.tuple(fc.integer({ min: 0, max: samples.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 3 })).map(([i, edits]) => {
    let b = samples[i]!;
    for (const e of edits) {
      const at = b.length === 0 ? 0 : e.at % b.length;
      const c = Array.from(b);
      if (e.kind === 'flip' && c.length > 0) c[at] = c[at]! ^ (1 << e.bit);
      if (e.kind === 'set' && c.length > 0) c[at] = e.value;
      if (e.kind === 'insert') c.splice(at, 0, ...e.bytes);
      if (e.kind === 'delete') c.splice(at, e.n);
      if (e.kind === 'truncate') c.length = at;
      b = Uint8Array.from(c);
    }
    return b;
  });
}

function checkCanonical(s: (typeof structures)[number], b: Uint8Array): void {
  let value: unknown;
  try {
    value = s.decode(b);
  } catch (e) {
    assert.ok(e instanceof RendezvousError, `${s.name}: decoder threw a non-protocol error: ${String(e)}`);
    assert.ok(e.code.startsWith('encoding.'), `${s.name}: decoder threw ${e.code}`);
    return;
  }
  assert.deepEqual(s.encode(value, b), b, `${s.name}: a decodable input does not re-encode to itself`);
}

describe('base64url (RFC 4648 §5, unpadded)', () => {
  it('encodes as Node does, and decodes back, for every length and any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const s = toBase64url(bytes);
        assert.equal(s, Buffer.from(bytes).toString('base64url'));
        assert.deepEqual(fromBase64url(s), bytes);
      }),
      { numRuns: 2_000 },
    );
  });

  it('refuses padding, other alphabets, impossible lengths and non-zero spare bits', () => {
    for (const bad of ['AA==', 'A', 'AAAAA', 'AB', 'AAB', 'A+A', 'A/A', 'AA AA', 'AA\n', 'Zg=', 'ÿÿ']) {
      assert.throws(() => fromBase64url(bad), (e: unknown) => e instanceof RendezvousError && e.code === 'encoding.bad_value', bad);
    }
    assert.deepEqual(fromBase64url(''), new Uint8Array(0));
    assert.deepEqual(fromBase64url('AA'), new Uint8Array([0]));
    assert.deepEqual(fromBase64url('AAA'), new Uint8Array([0, 0]));
  });
});

describe('structures', () => {
  for (const s of structures) {
    it(`${s.name}: decode(encode(x)) = x and encode(decode(b)) = b for the vectors`, () => {
      for (const b of s.samples) {
        const x = s.decode(b);
        assert.deepEqual(s.encode(x, b), b);
        assert.deepEqual(s.decode(s.encode(x, b)), x);
      }
    });
    it(`${s.name}: any mutation either fails with an encoding.* code or is canonical`, () => {
      fc.assert(fc.property(mutated(s.samples), (b) => checkCanonical(s, b)), { numRuns: 400 });
    });
    it(`${s.name}: random bytes never crash the decoder`, () => {
      fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => checkCanonical(s, b)), { numRuns: 300 });
    });
  }
});
