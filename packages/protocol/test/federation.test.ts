/**
 * Federation structures (spec §17): signed requests, witness cosignatures, server key lists.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { equal, utf8 } from '../src/bytes.ts';
import {
  decodeCosignature,
  encodeCosignature,
  endorseServerKey,
  federationRequestTbs,
  signCosignature,
  signFederationRequest,
  trustServerKeys,
  verifyCosignature,
  verifyFederationRequest,
  type FederationRequest,
  type PublishedServerKey,
} from '../src/federation.ts';
import { encodeCheckpoint, serverKeyId, signCheckpoint } from '../src/log.ts';
import { assertCode } from './helpers.ts';
import { seeded } from './fixtures.ts';

const random = seeded('federation.test');
const seedA = random(32);
const keyA = crypto.ed25519PublicKey(seedA);
const seedB = random(32);
const keyB = crypto.ed25519PublicKey(seedB);

const base: Omit<FederationRequest, 'keyId'> = {
  origin: 'alpha.example',
  destination: 'beta.example:8443',
  method: 'POST',
  path: '/v1/federation/topics/abc/entries?x=1',
  timestamp: 1_764_000_000_000,
  nonce: random(16),
  bodyHash: crypto.sha256(utf8('{"entries":[]}')),
};

describe('signed requests (§17.2)', () => {
  it('signs and verifies with the origin key; the key id is the signing key', () => {
    const { request, signature } = signFederationRequest(crypto, seedA, base);
    assert.deepEqual(request.keyId, serverKeyId(crypto, keyA));
    assert.equal(signature.length, 64);
    verifyFederationRequest(crypto, request, signature, keyA);
  });

  it('the TBS is deterministic and every field changes it and the signature', () => {
    const { request, signature } = signFederationRequest(crypto, seedA, base);
    assert.deepEqual(federationRequestTbs(request), federationRequestTbs({ ...request }));
    const flipped = (b: Uint8Array) => {
      const c = b.slice();
      c[0]! ^= 1;
      return c;
    };
    const changes: Partial<FederationRequest>[] = [
      { origin: 'gamma.example' },
      { destination: 'beta.example' },
      { method: 'GET' },
      { path: '/v1/federation/topics/abc/entries?x=2' },
      { timestamp: base.timestamp + 1 },
      { nonce: flipped(base.nonce) },
      { bodyHash: flipped(base.bodyHash) },
      { keyId: flipped(request.keyId) },
    ];
    for (const change of changes) {
      const other = { ...request, ...change };
      assert.ok(!equal(federationRequestTbs(other), federationRequestTbs(request)), `${Object.keys(change)[0]} changes the TBS`);
      if (change.keyId !== undefined) {
        assertCode(() => verifyFederationRequest(crypto, other, signature, keyA), 'federation.unknown_key');
      } else {
        assertCode(() => verifyFederationRequest(crypto, other, signature, keyA), 'federation.bad_signature');
        const resigned = signFederationRequest(crypto, seedA, other);
        assert.ok(!equal(resigned.signature, signature), `${Object.keys(change)[0]} changes the signature`);
      }
    }
  });

  it('rejects a wrong key, a flipped signature, a changed body hash and a short signature', () => {
    const { request, signature } = signFederationRequest(crypto, seedA, base);
    assertCode(() => verifyFederationRequest(crypto, request, signature, keyB), 'federation.unknown_key');
    const bad = signature.slice();
    bad[10]! ^= 0x40;
    assertCode(() => verifyFederationRequest(crypto, request, bad, keyA), 'federation.bad_signature');
    assertCode(() => verifyFederationRequest(crypto, { ...request, bodyHash: crypto.sha256(utf8('{}')) }, signature, keyA), 'federation.bad_signature');
    assertCode(() => verifyFederationRequest(crypto, request, signature.subarray(0, 63), keyA), 'federation.bad_signature');
  });

  it('rejects malformed fields in the TBS', () => {
    const ok = { ...base, keyId: serverKeyId(crypto, keyA) };
    assertCode(() => federationRequestTbs({ ...ok, origin: 'Alpha.Example' }), 'encoding.bad_value');
    assertCode(() => federationRequestTbs({ ...ok, destination: 'beta.example:0' }), 'encoding.bad_value');
    assertCode(() => federationRequestTbs({ ...ok, method: 'PATCH' }), 'encoding.bad_value');
    assertCode(() => federationRequestTbs({ ...ok, path: 'v1/federation' }), 'encoding.bad_value');
    assertCode(() => federationRequestTbs({ ...ok, path: '/' + 'a'.repeat(2048) }), 'encoding.bad_value');
    assert.throws(() => federationRequestTbs({ ...ok, nonce: random(15) }), 'a 15-byte nonce is refused');
  });
});

describe('cosignatures (§17.5)', () => {
  const checkpoint = signCheckpoint(crypto, seedA, {
    origin: 'alpha.example',
    topicId: random(16),
    size: 7,
    root: random(32),
    timestamp: 1_764_000_000_123,
  });
  const encoded = encodeCheckpoint(checkpoint);

  it('signs, encodes, decodes and verifies with the witness key', () => {
    const c = signCosignature(crypto, seedB, { witness: 'beta.example', checkpoint: encoded, timestamp: 1_764_000_000_500 });
    assert.deepEqual(c.keyId, serverKeyId(crypto, keyB));
    const back = decodeCosignature(encodeCosignature(c));
    assert.deepEqual(back, c);
    const cp = verifyCosignature(crypto, back, keyB);
    assert.equal(cp.size, 7);
    assert.equal(cp.origin, 'alpha.example');
  });

  it('rejects another key, a flipped signature and a changed field', () => {
    const c = signCosignature(crypto, seedB, { witness: 'beta.example', checkpoint: encoded, timestamp: 1_764_000_000_500 });
    assertCode(() => verifyCosignature(crypto, c, keyA), 'crypto.bad_signature');
    const sig = c.signature.slice();
    sig[0]! ^= 1;
    assertCode(() => verifyCosignature(crypto, { ...c, signature: sig }, keyB), 'crypto.bad_signature');
    assertCode(() => verifyCosignature(crypto, { ...c, timestamp: c.timestamp + 1 }, keyB), 'crypto.bad_signature');
    assertCode(() => verifyCosignature(crypto, { ...c, witness: 'gamma.example' }, keyB), 'crypto.bad_signature');
  });

  it('decode rejects truncated input, trailing bytes and a bad witness name', () => {
    const c = signCosignature(crypto, seedB, { witness: 'beta.example', checkpoint: encoded, timestamp: 1_764_000_000_500 });
    const bytes = encodeCosignature(c);
    for (const n of [0, 1, 5, bytes.length - 1]) {
      assert.throws(() => decodeCosignature(bytes.subarray(0, n)), `truncated to ${n} bytes is refused`);
    }
    const trailing = new Uint8Array(bytes.length + 1);
    trailing.set(bytes);
    assert.throws(() => decodeCosignature(trailing), 'trailing bytes are refused');
    // The witness name starts after the version and its length prefix: an upper-case letter is not a server name.
    const badName = bytes.slice();
    const at = badName.indexOf('b'.charCodeAt(0));
    badName[at] = 'B'.charCodeAt(0);
    assertCode(() => decodeCosignature(badName), 'encoding.bad_value');
    const badVersion = bytes.slice();
    badVersion[0] = 2;
    assertCode(() => decodeCosignature(badVersion), 'encoding.unknown_version');
    assertCode(() => signCosignature(crypto, seedB, { witness: 'not a name', checkpoint: encoded, timestamp: 1 }), 'encoding.bad_value');
  });
});

describe('server key lists (§17.1)', () => {
  const server = 'alpha.example';
  const seeds = [random(32), random(32), random(32)];
  const keys = seeds.map((s) => crypto.ed25519PublicKey(s));
  const list: PublishedServerKey[] = keys.map((publicKey, i) => ({
    publicKey,
    createdAt: 1_000 + i,
    endorsement: i === 0 ? null : endorseServerKey(crypto, seeds[i - 1]!, server, { publicKey, createdAt: 1_000 + i }),
  }));

  it('first contact trusts the whole (endorsed) list', () => {
    assert.deepEqual(trustServerKeys(crypto, server, list, []), keys);
    assert.deepEqual(trustServerKeys(crypto, server, list.slice(0, 1), []), keys.slice(0, 1));
  });

  it('a pinned key is followed along the endorsement chain, and pinned keys stay trusted', () => {
    assert.deepEqual(trustServerKeys(crypto, server, list, [keys[0]!]), keys);
    assert.deepEqual(trustServerKeys(crypto, server, list, [keys[1]!]), [keys[1]!, keys[2]!]);
    // A list that dropped its oldest key still chains to a pinned one; the dropped key stays trusted.
    assert.deepEqual(trustServerKeys(crypto, server, list.slice(1), keys.slice(0, 2)), keys);
  });

  it('rejects a broken endorsement', () => {
    const broken = list.map((k) => ({ ...k }));
    broken[2]!.endorsement = endorseServerKey(crypto, seeds[0]!, server, { publicKey: keys[2]!, createdAt: 1_002 });
    assertCode(() => trustServerKeys(crypto, server, broken, []), 'crypto.bad_signature');
    const missing = list.map((k, i) => ({ ...k, endorsement: i === 1 ? null : k.endorsement }));
    assertCode(() => trustServerKeys(crypto, server, missing, [keys[0]!]), 'crypto.bad_signature');
    const changedTime = list.map((k, i) => ({ ...k, createdAt: i === 2 ? 5 : k.createdAt }));
    assertCode(() => trustServerKeys(crypto, server, changedTime, []), 'crypto.bad_signature');
    // An endorsement is bound to the server name.
    assertCode(() => trustServerKeys(crypto, 'beta.example', list, []), 'crypto.bad_signature');
  });

  it('an unpinned replacement is federation.key_changed', () => {
    const other = random(32);
    const replacement = [{ publicKey: crypto.ed25519PublicKey(other), createdAt: 2_000, endorsement: null }];
    assertCode(() => trustServerKeys(crypto, server, replacement, [keys[0]!]), 'federation.key_changed');
  });

  it('rejects a key listed twice and an empty list', () => {
    const dup = [...list, { ...list[2]!, endorsement: endorseServerKey(crypto, seeds[2]!, server, { publicKey: keys[2]!, createdAt: 1_002 }) }];
    assertCode(() => trustServerKeys(crypto, server, dup, []), 'encoding.bad_value');
    assertCode(() => trustServerKeys(crypto, server, [], []), 'encoding.bad_value');
  });
});
