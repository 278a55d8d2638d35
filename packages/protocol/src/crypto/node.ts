/**
 * The node:crypto provider (spec §3): OpenSSL behind Node's API. Fast path for the server and
 * Node clients; must agree bit for bit with `noble.ts` (see provider.ts).
 *
 * Key import costs dominate small operations: OpenSSL 3's DER decoder takes ~0.2 ms for an
 * SPKI key and ~0.5 ms for a PKCS#8 key, against ~0.05 ms for an Ed25519 signature. Hence:
 * - public keys are imported as JWK (`{kty: 'OKP', x}`), Node's raw-key path (~0.01 ms);
 * - Ed25519 public keys that passed the policy's byte-level checks are kept in a bounded LRU map;
 * - private keys are imported as JWK too (`{kty: 'OKP', d}`, ~0.05 ms including OpenSSL's
 *   derivation of the public half), falling back to PKCS#8 DER (~0.5 ms) should a Node release
 *   ever refuse that form. Node's JWK import of an OKP private key reads only `d` (the raw
 *   seed, handed to EVP_PKEY_new_raw_private_key, which derives the public key itself); `x`
 *   must merely be a string, so we pass an empty one rather than a value we would have to trust.
 *   No public key is ever read back from a JWK we built: public keys come from OpenSSL's own
 *   derivation, and the RFC 7748 / RFC 8032 / RFC 9180 vectors pin the results.
 *   Private KeyObjects are kept in a WeakMap keyed by the caller's own Uint8Array, so a secret
 *   lives no longer than the caller's array; each hit re-checks the bytes, so a reused or wiped
 *   array is never served a stale key.
 * A fresh X25519 secret (an HPKE ephemeral key) therefore costs one raw import (which computes
 * its public key, RFC 7748 §6.1) and one scalar multiplication per Diffie–Hellman.
 */
import {
  createCipheriv,
  createDecipheriv,
  hash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  sign as nodeSign,
  verify as nodeVerify,
  type KeyObject,
} from 'node:crypto';
import { equal } from '../bytes.ts';
import { RendezvousError } from '../errors.ts';
import { isAcceptablePublicKeyEncoding, precheckSignature } from './ed25519-policy.ts';
import { AEAD_KEY_LENGTH, type Aead, type CryptoProvider } from './provider.ts';

// RFC 8410 §7 / §10: fixed DER prefixes for a 32-byte key of each algorithm.
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

const HASH_LEN = 32;
const TAG_LEN = 16;
const NONCE_LEN = 12;

/** Copies a Node Buffer into a plain Uint8Array (no Buffer prototype, no shared pool slab). */
function plain(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

function b64url(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
}

function fromB64url(s: string | undefined): Uint8Array {
  if (s === undefined) throw new RendezvousError('crypto.bad_key', 'key export has no x');
  return plain(Buffer.from(s, 'base64url'));
}

function badKey(what: string): RendezvousError {
  return new RendezvousError('crypto.bad_key', what);
}

function isAllZero(b: Uint8Array): boolean {
  let d = 0;
  for (let i = 0; i < b.length; i++) d |= b[i]!;
  return d === 0;
}

interface PrivateEntry {
  readonly bytes: Uint8Array;
  readonly key: KeyObject;
}

/** Imports a 32-byte raw secret: the JWK raw-key path, or PKCS#8 DER if that path refuses it. */
function importPrivate(crv: 'Ed25519' | 'X25519', prefix: Buffer, secret: Uint8Array, what: string): KeyObject {
  try {
    return createPrivateKey({ key: { kty: 'OKP', crv, d: b64url(secret), x: '' }, format: 'jwk' });
  } catch {
    // Not expected from any Node release so far; the slow documented path keeps us working.
  }
  const der = Buffer.concat([prefix, secret]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } catch {
    throw badKey(`invalid ${what}`);
  } finally {
    der.fill(0);
  }
}

function privateKeyCache(crv: 'Ed25519' | 'X25519', prefix: Buffer, what: string): (secret: Uint8Array) => KeyObject {
  const cache = new WeakMap<Uint8Array, PrivateEntry>();
  return (secret) => {
    if (!(secret instanceof Uint8Array) || secret.length !== 32) throw badKey(`${what} must be 32 bytes`);
    const hit = cache.get(secret);
    if (hit !== undefined && equal(hit.bytes, secret)) return hit.key;
    const key = importPrivate(crv, prefix, secret, what);
    cache.set(secret, { bytes: new Uint8Array(secret), key });
    return key;
  };
}

export interface NodeCryptoOptions {
  /**
   * How many public keys to keep imported (LRU), for each of Ed25519 (verification keys) and
   * X25519 (key-share recipients). Default 4096; 0 disables.
   */
  publicKeyCacheSize?: number;
}

/** A bounded map that forgets its least recently used entry. */
class Lru<V> {
  readonly #map = new Map<string, V>();
  constructor(readonly max: number) {}

  get(k: string): V | undefined {
    const hit = this.#map.get(k);
    if (hit !== undefined) {
      this.#map.delete(k);
      this.#map.set(k, hit);
    }
    return hit;
  }

  set(k: string, v: V): void {
    if (this.max <= 0) return;
    if (this.#map.size >= this.max) this.#map.delete(this.#map.keys().next().value!);
    this.#map.set(k, v);
  }
}

export function createNodeCrypto(options: NodeCryptoOptions = {}): CryptoProvider {
  const maxPublic = options.publicKeyCacheSize ?? 4096;
  // Only keys that passed the policy's byte-level public-key check are stored, so a hit skips
  // that check. Whether the key decodes to a point is left to OpenSSL's verify (see
  // isAcceptablePublicKeyEncoding): a key that does not verifies nothing, cached or not.
  const edPublic = new Lru<KeyObject>(maxPublic);
  // X25519 public keys as imported: any 32 bytes with bit 255 clear import (the all-zero
  // result of a low-order key is refused after the multiplication), so nothing is checked.
  const xPublic = new Lru<KeyObject>(maxPublic);
  const edPrivate = privateKeyCache('Ed25519', ED25519_PKCS8_PREFIX, 'Ed25519 secret key');
  const xPrivate = privateKeyCache('X25519', X25519_PKCS8_PREFIX, 'X25519 secret key');

  function edPublicKey(publicKey: Uint8Array): KeyObject | undefined {
    const id = b64url(publicKey);
    const hit = edPublic.get(id);
    if (hit !== undefined) return hit;
    if (!isAcceptablePublicKeyEncoding(publicKey)) return undefined;
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: id }, format: 'jwk' });
    edPublic.set(id, key);
    return key;
  }

  /** `u` has bit 255 cleared already (see x25519). */
  function xPublicKey(u: Uint8Array): KeyObject {
    const id = b64url(u);
    let key = xPublic.get(id);
    if (key === undefined) {
      key = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: id }, format: 'jwk' });
      xPublic.set(id, key);
    }
    return key;
  }

  function hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
    const h = createHmac('sha256', key);
    for (const p of parts) h.update(p);
    return plain(h.digest());
  }

  function checkAeadParams(aead: Aead, key: Uint8Array, nonce: Uint8Array): void {
    const keyLen = AEAD_KEY_LENGTH[aead];
    if (keyLen === undefined) throw badKey('unknown AEAD');
    if (key.length !== keyLen) throw badKey(`${aead} key must be ${keyLen} bytes`);
    if (nonce.length !== NONCE_LEN) throw badKey(`${aead} nonce must be ${NONCE_LEN} bytes`);
  }

  return {
    name: 'node',

    // crypto.hash (Node ≥ 20.12): one call, about half the cost of createHash for the short
    // inputs of Merkle nodes and request hashes.
    sha256: (data) => plain(hash('sha256', data, 'buffer')),
    sha512: (data) => plain(hash('sha512', data, 'buffer')),
    hmacSha256: (key, data) => hmac(key, data),

    hkdfExtract(salt, ikm) {
      // RFC 5869 §2.2: an absent salt is HashLen zero bytes.
      return hmac(salt.length === 0 ? new Uint8Array(HASH_LEN) : salt, ikm);
    },

    hkdfExpand(prk, info, length) {
      // RFC 5869 §2.3: L <= 255 * HashLen, and PRK is at least HashLen bytes (noble enforces the
      // latter too, so both providers refuse the same inputs).
      if (!Number.isSafeInteger(length) || length < 0 || length > 255 * HASH_LEN) {
        throw badKey('HKDF output length out of range');
      }
      if (prk.length < HASH_LEN) throw badKey('HKDF PRK shorter than the hash output');
      const out = new Uint8Array(length);
      let t: Uint8Array = new Uint8Array(0);
      for (let i = 1, o = 0; o < length; i++) {
        t = hmac(prk, t, info, Uint8Array.of(i));
        out.set(t.subarray(0, Math.min(HASH_LEN, length - o)), o);
        o += HASH_LEN;
      }
      return out;
    },

    ed25519PublicKey(seed) {
      return fromB64url(createPublicKey(edPrivate(seed)).export({ format: 'jwk' }).x);
    },

    ed25519Sign(seed, message) {
      return plain(nodeSign(null, message, edPrivate(seed)));
    },

    ed25519Verify(publicKey, message, signature) {
      try {
        if (!(signature instanceof Uint8Array) || !precheckSignature(signature)) return false;
        if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return false;
        const key = edPublicKey(publicKey);
        // OpenSSL (RFC 8032 §5.1.7, as in ref10) decodes A (refusing a y with no x), checks
        // S < L and compares encode([S]B − [k]A) with R byte for byte: the cofactorless
        // equation. The prechecks cover the rest.
        return key !== undefined && nodeVerify(null, message, key, signature);
      } catch {
        return false;
      }
    },

    x25519PublicKey(secretKey) {
      return fromB64url(createPublicKey(xPrivate(secretKey)).export({ format: 'jwk' }).x);
    },

    x25519(secretKey, publicKey) {
      const priv = xPrivate(secretKey);
      if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) throw badKey('X25519 public key must be 32 bytes');
      // RFC 7748 §5: mask bit 255 of u. Done here rather than trusted to OpenSSL so the input is
      // unambiguous; values in [p, 2^255) are reduced by the field arithmetic as §5 requires.
      const u = new Uint8Array(publicKey);
      u[31] = u[31]! & 0x7f;
      let shared: Uint8Array;
      try {
        shared = plain(diffieHellman({ privateKey: priv, publicKey: xPublicKey(u) }));
      } catch {
        // OpenSSL refuses an all-zero result itself; any failure here is a bad peer key.
        throw badKey('X25519 failed');
      }
      // RFC 7748 §6.1, RFC 9180 §7.1.4: a small-order peer key gives all zeros.
      if (shared.length !== 32 || isAllZero(shared)) throw badKey('X25519 shared secret is all zero');
      return shared;
    },

    aeadSeal(aead, key, nonce, aad, plaintext) {
      checkAeadParams(aead, key, nonce);
      const c = createCipheriv(aead as 'aes-256-gcm', key, nonce, { authTagLength: TAG_LEN });
      c.setAAD(aad, { plaintextLength: plaintext.length });
      const body = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
      return plain(body);
    },

    aeadOpen(aead, key, nonce, aad, ciphertext) {
      checkAeadParams(aead, key, nonce);
      if (ciphertext.length < TAG_LEN) throw new RendezvousError('crypto.decrypt_failed');
      const split = ciphertext.length - TAG_LEN;
      try {
        const d = createDecipheriv(aead as 'aes-256-gcm', key, nonce, { authTagLength: TAG_LEN });
        d.setAuthTag(ciphertext.subarray(split));
        d.setAAD(aad, { plaintextLength: split });
        // update() output is unauthenticated until final() has checked the tag.
        return plain(Buffer.concat([d.update(ciphertext.subarray(0, split)), d.final()]));
      } catch {
        throw new RendezvousError('crypto.decrypt_failed');
      }
    },
  };
}

export const nodeCrypto: CryptoProvider = createNodeCrypto();
