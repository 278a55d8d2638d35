/**
 * HPKE (RFC 9180) over both crypto providers:
 * - every mode_base entry of the RFC 9180 Appendix A vectors for DHKEM(X25519, HKDF-SHA256),
 *   HKDF-SHA256 and AEADs 1–3, checked value by value (key pairs, hpkeEncap, key schedule, all 257
 *   encryptions, all exports);
 * - negative cases: tampering, low-order and malformed keys;
 * - a differential test against @hpke/core, byte for byte where the ephemeral key is shared.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Aes128Gcm, Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';
import { Chacha20Poly1305 } from '@hpke/chacha20poly1305';
import { nodeCrypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import type { CryptoProvider, Random } from '../src/crypto/provider.ts';
import {
  HPKE_AEAD_AES_128_GCM,
  HPKE_AEAD_AES_256_GCM,
  SUITE_X25519_SHA256_AES128GCM,
  SUITE_X25519_SHA256_AES256GCM,
  SUITE_X25519_SHA256_CHACHA,
  hpkeDecap,
  hpkeDeriveKeyPair,
  hpkeEncapDeterministic,
  hpkeOpen,
  hpkeSeal,
  hpkeSuite,
  hpkeKeyScheduleBase,
  setupBaseR,
  setupBaseS,
  type HpkeSuite,
} from '../src/crypto/hpke.ts';
import { concat, fromHex, toHex, utf8 } from '../src/bytes.ts';
import { assertCode, readVector } from './helpers.ts';

const PROVIDERS: CryptoProvider[] = [nodeCrypto, nobleCrypto];

interface VectorEntry {
  mode: number;
  kem_id: number;
  kdf_id: number;
  aead_id: number;
  info: string;
  ikmE: string;
  ikmR: string;
  skEm: string;
  pkEm: string;
  skRm: string;
  pkRm: string;
  enc: string;
  shared_secret: string;
  key_schedule_context: string;
  secret: string;
  key: string;
  base_nonce: string;
  exporter_secret: string;
  encryptions: { aad: string; ct: string; nonce: string; pt: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}

const VECTORS = readVector<VectorEntry[]>('hpke/rfc9180_x25519_hkdf_sha256.json');
const MODE_NAMES = ['base', 'psk', 'auth', 'auth_psk'];

/** A Random that hands out exactly one 32-byte value: the vector's ikmE (RFC 9180 Appendix A). */
function fixedRandom(ikm: Uint8Array): Random {
  let used = false;
  return (n) => {
    assert.equal(n, 32);
    assert.ok(!used, 'the fixed randomness was drawn twice');
    used = true;
    return ikm;
  };
}

const nodeRandom: Random = (n) => new Uint8Array(randomBytes(n));

const hex = (b: Uint8Array) => toHex(b);

for (const crypto of PROVIDERS) {
  describe(`HPKE RFC 9180 Appendix A vectors (${crypto.name})`, () => {
    const counts = { suites: 0, encryptions: 0, exports: 0, skipped: 0 };

    for (const v of VECTORS) {
      const name = `mode ${v.mode} (${MODE_NAMES[v.mode]}), kem ${v.kem_id}, kdf ${v.kdf_id}, aead ${v.aead_id}`;
      if (v.mode !== 0) {
        counts.skipped++;
        test(name, { skip: 'psk/auth modes are not supported by design: hpke.ts offers mode_base only (RFC 9180 §5.1.1)' }, () => {});
        continue;
      }
      test(name, () => {
        const suite = hpkeSuite(v.kem_id, v.kdf_id, v.aead_id);
        const info = fromHex(v.info);
        const ikmE = fromHex(v.ikmE);

        // DeriveKeyPair (§7.1.3)
        const kpE = hpkeDeriveKeyPair(crypto, ikmE);
        assert.equal(hex(kpE.secretKey), v.skEm);
        assert.equal(hex(kpE.publicKey), v.pkEm);
        const kpR = hpkeDeriveKeyPair(crypto, fromHex(v.ikmR));
        assert.equal(hex(kpR.secretKey), v.skRm);
        assert.equal(hex(kpR.publicKey), v.pkRm);

        // Encap / Decap (§4.1)
        const e = hpkeEncapDeterministic(crypto, kpR.publicKey, ikmE);
        assert.equal(hex(e.enc), v.enc);
        assert.equal(hex(e.sharedSecret), v.shared_secret);
        assert.equal(hex(hpkeDecap(crypto, e.enc, kpR.secretKey)), v.shared_secret);

        // HpkeKeySchedule, mode_base (§5.1)
        const ks = hpkeKeyScheduleBase(crypto, suite, e.sharedSecret, info);
        assert.equal(hex(ks.keyScheduleContext), v.key_schedule_context);
        assert.equal(hex(ks.secret), v.secret);
        assert.equal(hex(ks.key), v.key);
        assert.equal(hex(ks.baseNonce), v.base_nonce);
        assert.equal(hex(ks.exporterSecret), v.exporter_secret);

        // Contexts (§5.2): sequence numbers 0..256, sealed and opened in order.
        const { enc, context: sender } = setupBaseS(crypto, suite, kpR.publicKey, info, fixedRandom(ikmE));
        assert.equal(hex(enc), v.enc);
        const recipient = setupBaseR(crypto, suite, kpR.secretKey, enc, info);
        v.encryptions.forEach((x, i) => {
          assert.equal(sender.seq, i);
          assert.equal(recipient.seq, i);
          const aad = fromHex(x.aad);
          assert.equal(hex(sender.seal(aad, fromHex(x.pt))), x.ct, `encryption ${i}`);
          assert.equal(hex(recipient.open(aad, fromHex(x.ct))), x.pt, `decryption ${i}`);
          counts.encryptions++;
        });

        // Secret export (§5.3), from both sides.
        for (const x of v.exports) {
          const ctx = fromHex(x.exporter_context);
          assert.equal(hex(sender.export(ctx, x.L)), x.exported_value);
          assert.equal(hex(recipient.export(ctx, x.L)), x.exported_value);
          counts.exports++;
        }

        // Single-shot API (§6.1) = the first encryption of the context.
        const first = v.encryptions[0]!;
        const sealed = hpkeSeal(crypto, suite, kpR.publicKey, info, fromHex(first.aad), fromHex(first.pt), fixedRandom(ikmE));
        assert.equal(hex(sealed.enc), v.enc);
        assert.equal(hex(sealed.ciphertext), first.ct);
        assert.equal(hex(hpkeOpen(crypto, suite, kpR.secretKey, sealed.enc, info, fromHex(first.aad), sealed.ciphertext)), first.pt);
        counts.suites++;
      });
    }

    test('DeriveKeyPair matches ikmE/ikmR of every entry, all modes (the KEM key derivation has no mode)', () => {
      for (const v of VECTORS) {
        assert.equal(hex(hpkeDeriveKeyPair(crypto, fromHex(v.ikmE)).publicKey), v.pkEm);
        assert.equal(hex(hpkeDeriveKeyPair(crypto, fromHex(v.ikmR)).secretKey), v.skRm);
      }
    });

    test('vector counts', () => {
      assert.deepEqual(counts, { suites: 3, encryptions: 771, exports: 9, skipped: 9 });
    });
  });
}

// ---------------------------------------------------------------------------------------------

// X25519 public keys whose DH output is all zero for every (clamped) scalar: the points of small
// order and their non-canonical encodings (0, 1, the two points of order 8, p - 1, p, p + 1).
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
].map(fromHex);

function flip(b: Uint8Array, i: number, mask = 0x01): Uint8Array {
  const c = b.slice();
  c[i] = c[i]! ^ mask;
  return c;
}

for (const crypto of PROVIDERS) {
  describe(`HPKE failures (${crypto.name})`, () => {
    const suite = SUITE_X25519_SHA256_CHACHA;
    const kp = hpkeDeriveKeyPair(crypto, utf8('recipient ikm, 32 bytes or more..'));
    const info = utf8('info');
    const aad = utf8('aad');
    const pt = utf8('the epoch secret');
    const { enc, ciphertext } = hpkeSeal(crypto, suite, kp.publicKey, info, aad, pt, nodeRandom);
    const open = (e = enc, i = info, a = aad, c = ciphertext, sk = kp.secretKey) => hpkeOpen(crypto, suite, sk, e, i, a, c);

    test('the untampered message opens', () => {
      assert.deepEqual(open(), pt);
    });

    test('tampered enc, ciphertext, tag, aad or info: crypto.decrypt_failed', () => {
      assertCode(() => open(flip(enc, 0)), 'crypto.decrypt_failed');
      // Bit 255 of an X25519 u-coordinate is ignored by the DH (RFC 7748 §5), so this enc gives
      // the same DH output; it must still fail because enc itself is in kem_context (§4.1).
      assertCode(() => open(flip(enc, 31, 0x80)), 'crypto.decrypt_failed');
      assertCode(() => open(enc, utf8('inf0')), 'crypto.decrypt_failed');
      assertCode(() => open(enc, info, utf8('aaD')), 'crypto.decrypt_failed');
      assertCode(() => open(enc, info, aad, flip(ciphertext, 0)), 'crypto.decrypt_failed');
      assertCode(() => open(enc, info, aad, flip(ciphertext, ciphertext.length - 1)), 'crypto.decrypt_failed');
      assertCode(() => open(enc, info, aad, ciphertext.subarray(0, ciphertext.length - 1)), 'crypto.decrypt_failed');
      assertCode(() => open(enc, info, aad, ciphertext.subarray(0, 15)), 'crypto.decrypt_failed');
      assertCode(() => open(enc, info, aad, new Uint8Array(0)), 'crypto.decrypt_failed');
    });

    test('wrong recipient key or wrong suite: crypto.decrypt_failed', () => {
      const other = hpkeDeriveKeyPair(crypto, utf8('another recipient ikm, 32 bytes..'));
      assertCode(() => open(enc, info, aad, ciphertext, other.secretKey), 'crypto.decrypt_failed');
      assertCode(
        () => hpkeOpen(crypto, SUITE_X25519_SHA256_AES256GCM, kp.secretKey, enc, info, aad, ciphertext),
        'crypto.decrypt_failed',
      );
    });

    test('low-order or all-zero recipient public key: crypto.bad_key', () => {
      assertCode(() => hpkeSeal(crypto, suite, new Uint8Array(32), info, aad, pt, nodeRandom), 'crypto.bad_key');
      for (const pk of LOW_ORDER) {
        assertCode(() => hpkeSeal(crypto, suite, pk, info, aad, pt, nodeRandom), 'crypto.bad_key');
      }
    });

    test('low-order enc: crypto.bad_key (all-zero DH output, RFC 9180 §7.1.4)', () => {
      for (const e of LOW_ORDER) assertCode(() => open(e), 'crypto.bad_key');
    });

    test('wrong-length enc, public key or secret key: crypto.bad_key', () => {
      for (const n of [0, 31, 33, 64]) {
        assertCode(() => open(new Uint8Array(n).fill(9)), 'crypto.bad_key');
        assertCode(() => hpkeSeal(crypto, suite, new Uint8Array(n).fill(9), info, aad, pt, nodeRandom), 'crypto.bad_key');
        assertCode(() => open(enc, info, aad, ciphertext, new Uint8Array(n).fill(9)), 'crypto.bad_key');
      }
      assertCode(() => open(enc.subarray(0, 31)), 'crypto.bad_key');
      assertCode(() => open(concat(enc, new Uint8Array(1))), 'crypto.bad_key');
      assertCode(() => hpkeDeriveKeyPair(crypto, new Uint8Array(31)), 'crypto.bad_key');
    });

    test('unsupported suites are refused', () => {
      assertCode(() => hpkeSuite(0x0010, 1, HPKE_AEAD_AES_128_GCM), 'encoding.unknown_version');
      assertCode(() => hpkeSuite(0x0020, 3, HPKE_AEAD_AES_256_GCM), 'encoding.unknown_version');
      assertCode(() => hpkeSuite(0x0020, 1, 0xffff), 'encoding.unknown_version');
      const forged = { ...SUITE_X25519_SHA256_AES128GCM, Nk: 32 } as HpkeSuite;
      assertCode(() => hpkeSeal(crypto, forged, kp.publicKey, info, aad, pt, nodeRandom), 'encoding.unknown_version');
    });

    test('a failed open does not advance the sequence number (§5.2)', () => {
      const s = setupBaseS(crypto, suite, kp.publicKey, info, nodeRandom);
      const r = setupBaseR(crypto, suite, kp.secretKey, s.enc, info);
      const c0 = s.context.seal(aad, utf8('zero'));
      const c1 = s.context.seal(aad, utf8('one'));
      assertCode(() => r.open(aad, c1), 'crypto.decrypt_failed'); // out of order
      assertCode(() => r.open(aad, flip(c0, 2)), 'crypto.decrypt_failed');
      assert.equal(r.seq, 0);
      assert.deepEqual(r.open(aad, c0), utf8('zero'));
      assert.deepEqual(r.open(aad, c1), utf8('one'));
      assertCode(() => r.open(aad, c1), 'crypto.decrypt_failed'); // replay
      assert.equal(r.seq, 2);
    });

    test('export length is bounded by 255 * Nh (§5.3, RFC 5869)', () => {
      const s = setupBaseS(crypto, suite, kp.publicKey, info, nodeRandom);
      assert.equal(s.context.export(new Uint8Array(0), 255 * 32).length, 255 * 32);
      assertCode(() => s.context.export(new Uint8Array(0), 255 * 32 + 1), 'crypto.bad_key');
      assertCode(() => s.context.export(new Uint8Array(0), -1), 'crypto.bad_key');
    });
  });
}

test('node and noble providers interoperate', () => {
  for (const [a, b] of [
    [nodeCrypto, nobleCrypto],
    [nobleCrypto, nodeCrypto],
  ] as const) {
    for (const suite of [SUITE_X25519_SHA256_AES128GCM, SUITE_X25519_SHA256_AES256GCM, SUITE_X25519_SHA256_CHACHA]) {
      const kp = hpkeDeriveKeyPair(b, nodeRandom(32));
      const { enc, ciphertext } = hpkeSeal(a, suite, kp.publicKey, utf8('i'), utf8('a'), utf8('p'), nodeRandom);
      assert.deepEqual(hpkeOpen(b, suite, kp.secretKey, enc, utf8('i'), utf8('a'), ciphertext), utf8('p'));
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Differential test against @hpke/core. It is slow (pure-JS X25519), so the run count is small;
// the RFC vectors above carry most of the weight.

const THEIRS = new Map<HpkeSuite, CipherSuite>([
  [SUITE_X25519_SHA256_AES128GCM, new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() })],
  [SUITE_X25519_SHA256_AES256GCM, new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() })],
  [SUITE_X25519_SHA256_CHACHA, new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Chacha20Poly1305() })],
]);

const u8 = (b: ArrayBuffer) => new Uint8Array(b);

for (const crypto of PROVIDERS) {
  test(`differential against @hpke/core (${crypto.name})`, async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...THEIRS.keys()),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ maxLength: 64 }),
        fc.uint8Array({ maxLength: 64 }),
        fc.uint8Array({ maxLength: 300 }),
        async (suite, ikmR, ikmE, info, aad, pt) => {
          runs++;
          const theirs = THEIRS.get(suite)!;
          const ours = hpkeDeriveKeyPair(crypto, ikmR);
          const theirKp = await theirs.kem.deriveKeyPair(ikmR);
          assert.equal(hex(u8(await theirs.kem.serializePublicKey(theirKp.publicKey))), hex(ours.publicKey));

          // Ours seals, theirs opens.
          const a = hpkeSeal(crypto, suite, ours.publicKey, info, aad, pt, fixedRandom(ikmE));
          assert.deepEqual(u8(await theirs.open({ recipientKey: theirKp, enc: a.enc, info }, a.ciphertext, aad)), pt);

          // Theirs seals with the same ephemeral ikm: the bytes must be identical.
          const b = await theirs.seal({ recipientPublicKey: theirKp.publicKey, info, ekm: ikmE }, pt, aad);
          assert.equal(hex(u8(b.enc)), hex(a.enc));
          assert.equal(hex(u8(b.ct)), hex(a.ciphertext));

          // Theirs seals with its own randomness, ours opens.
          const c = await theirs.seal({ recipientPublicKey: theirKp.publicKey, info }, pt, aad);
          assert.deepEqual(hpkeOpen(crypto, suite, ours.secretKey, u8(c.enc), info, aad, u8(c.ct)), pt);
        },
      ),
      { numRuns: 50 },
    );
    assert.equal(runs, 50);
  });
}
