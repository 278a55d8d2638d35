/**
 * Identity structures (spec §4–§6): user ids, device certificates, device prekeys, topic keys
 * and key bundles, each MUST-reject rule with its code.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import {
  decodeDeviceCert,
  decodeDevicePrekey,
  decodeTopicKey,
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeTopicKey,
  parseUserId,
  signDeviceCert,
  signDevicePrekey,
  signTopicKey,
  verifyDeviceCert,
  verifyDevicePrekey,
  verifyTopicKey,
} from '../src/identity.ts';
import { decodeKeyBundle, encodeKeyBundle, openKeyBundle, sealKeyBundle, verifyKeyBundle } from '../src/bundle.ts';
import { assertCode } from './helpers.ts';
import { makeUser, seeded } from './fixtures.ts';

const random = seeded('identity.test');
const alice = makeUser(crypto, random, 'alice@alpha.example');
const bob = makeUser(crypto, random, 'bob@alpha.example');
const flip = (b: Uint8Array, i = 0) => b.map((x, j) => (j === i ? x ^ 1 : x));

describe('user ids', () => {
  it('accepts name@server and rejects everything else (encoding.bad_value)', () => {
    assert.deepEqual(parseUserId('alice@alpha.example'), { name: 'alice', server: 'alpha.example' });
    assert.deepEqual(parseUserId('a.b-c_d@localhost:8080'), { name: 'a.b-c_d', server: 'localhost:8080' });
    for (const bad of ['Alice@alpha.example', 'alice', '@alpha', 'alice@', 'alice@Alpha', 'alice@a..b', 'alice@a:0', 'alice@a:65536', '.a@b', 'a@-b', 'a@b@c']) {
      assertCode(() => parseUserId(bad), 'encoding.bad_value');
    }
  });
});

describe('device certificate', () => {
  const deviceSeed = random(32);
  const cert = signDeviceCert(crypto, alice.identitySeed, { user: alice.name, deviceKey: crypto.ed25519PublicKey(deviceSeed), createdAt: 1_700_000_000_000 });
  it('verifies with both providers and round-trips', () => {
    for (const p of [crypto, nobleCrypto]) verifyDeviceCert(p, decodeDeviceCert(encodeDeviceCert(cert)), alice.identityKey);
  });
  it('rejects another identity key (crypto.bad_certificate), a changed field (crypto.bad_signature), a bad key (crypto.bad_key)', () => {
    assertCode(() => verifyDeviceCert(crypto, cert, bob.identityKey), 'crypto.bad_certificate');
    assertCode(() => verifyDeviceCert(crypto, { ...cert, createdAt: 1 }), 'crypto.bad_signature');
    assertCode(() => verifyDeviceCert(crypto, { ...cert, user: bob.name }), 'crypto.bad_signature');
    assertCode(() => verifyDeviceCert(crypto, { ...cert, deviceKey: new Uint8Array(32) }), 'crypto.bad_key');
    const b = encodeDeviceCert(cert);
    assertCode(() => decodeDeviceCert(Uint8Array.of(2, ...b.subarray(1))), 'encoding.unknown_version');
    assertCode(() => decodeDeviceCert(Uint8Array.of(...b, 0)), 'encoding.trailing_bytes');
  });
});

describe('device prekey', () => {
  const deviceSeed = random(32);
  const deviceKey = crypto.ed25519PublicKey(deviceSeed);
  const pk = signDevicePrekey(crypto, deviceSeed, crypto.x25519PublicKey(random(32)));
  it('verifies and round-trips', () => {
    verifyDevicePrekey(nobleCrypto, decodeDevicePrekey(encodeDevicePrekey(pk)), deviceKey);
  });
  it('rejects another device (crypto.bad_certificate), a bad signature, a low-order prekey (crypto.bad_key)', () => {
    assertCode(() => verifyDevicePrekey(crypto, pk, crypto.ed25519PublicKey(random(32))), 'crypto.bad_certificate');
    assertCode(() => verifyDevicePrekey(crypto, { ...pk, signature: flip(pk.signature) }, deviceKey), 'crypto.bad_signature');
    const low = signDevicePrekey(crypto, deviceSeed, Uint8Array.of(1, ...new Uint8Array(31)));
    assertCode(() => verifyDevicePrekey(crypto, low, deviceKey), 'crypto.bad_key');
  });
});

describe('topic key', () => {
  const { topicKey } = alice.newTopicKey();
  it('verifies and round-trips', () => {
    verifyTopicKey(nobleCrypto, decodeTopicKey(encodeTopicKey(topicKey)), alice.identityKey);
  });
  it('rejects another identity (crypto.bad_certificate), a swapped key (crypto.bad_signature), a bad user id', () => {
    assertCode(() => verifyTopicKey(crypto, topicKey, bob.identityKey), 'crypto.bad_certificate');
    assertCode(() => verifyTopicKey(crypto, { ...topicKey, encryptionKey: crypto.x25519PublicKey(random(32)) }), 'crypto.bad_signature');
    assertCode(() => verifyTopicKey(crypto, { ...topicKey, user: 'ALICE@alpha.example' }), 'encoding.bad_value');
    assertCode(() => verifyTopicKey(crypto, { ...topicKey, encryptionKey: new Uint8Array(32) }), 'crypto.bad_key');
  });
});

describe('key bundle', () => {
  const dev1 = random(32);
  const dev2 = random(32);
  const cert1 = signDeviceCert(crypto, alice.identitySeed, { user: alice.name, deviceKey: crypto.ed25519PublicKey(dev1), createdAt: 1 });
  const prekeySecret = random(32);
  const tk = alice.newTopicKey();
  const content = {
    topicKeys: [{ topicKey: tk.topicKey, secret: tk.secret }],
    epochSecrets: [{ topicId: random(16), epoch: 3, secret: random(32) }],
  };
  const bundle = sealKeyBundle(crypto, random, {
    user: alice.name,
    senderDeviceSeed: dev1,
    recipientDevice: crypto.ed25519PublicKey(dev2),
    recipientPrekey: crypto.x25519PublicKey(prekeySecret),
    content,
  });
  it('verifies, opens and round-trips with both providers', () => {
    for (const p of [crypto, nobleCrypto]) {
      const b = decodeKeyBundle(encodeKeyBundle(bundle));
      verifyKeyBundle(p, b, cert1, alice.identityKey);
      assert.deepEqual(openKeyBundle(p, b, prekeySecret, alice.identityKey), content);
    }
  });
  it('rejects a sender of another user or device (crypto.bad_certificate), tampering (crypto.bad_signature)', () => {
    const bobCert = signDeviceCert(crypto, bob.identitySeed, { user: bob.name, deviceKey: crypto.ed25519PublicKey(dev1), createdAt: 1 });
    assertCode(() => verifyKeyBundle(crypto, bundle, bobCert, alice.identityKey), 'crypto.bad_certificate');
    assertCode(() => verifyKeyBundle(crypto, bundle, bobCert, bob.identityKey), 'crypto.bad_certificate');
    assertCode(() => verifyKeyBundle(crypto, { ...bundle, ciphertext: flip(bundle.ciphertext) }, cert1, alice.identityKey), 'crypto.bad_signature');
  });
  it('fails to open with another prekey (crypto.bad_key) or a tampered ciphertext (crypto.decrypt_failed)', () => {
    assertCode(() => openKeyBundle(crypto, bundle, random(32), alice.identityKey), 'crypto.bad_key');
    assertCode(() => openKeyBundle(crypto, { ...bundle, ciphertext: flip(bundle.ciphertext, 5) }, prekeySecret, alice.identityKey), 'crypto.decrypt_failed');
  });
  it('rejects topic keys of another identity or with secrets that do not match', () => {
    const bobKey = bob.newTopicKey();
    const seal = (c: typeof content) =>
      sealKeyBundle(crypto, random, { user: alice.name, senderDeviceSeed: dev1, recipientDevice: bundle.recipientDevice, recipientPrekey: bundle.recipientPrekey, content: c });
    assertCode(() => openKeyBundle(crypto, seal({ ...content, topicKeys: [bobKey] }), prekeySecret, alice.identityKey), 'crypto.bad_certificate');
    const mismatched = { topicKey: tk.topicKey, secret: { ...tk.secret, encryptionSecret: random(32) } };
    assertCode(() => openKeyBundle(crypto, seal({ ...content, topicKeys: [mismatched] }), prekeySecret, alice.identityKey), 'crypto.bad_key');
  });
});
