/**
 * The @noble/* provider (spec §3): pure JavaScript, for the browser. Must agree bit for bit with
 * `node.ts` (see provider.ts); every difference in input handling between the two libraries is
 * settled by an explicit check on this side or that one.
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { gcm } from '@noble/ciphers/aes.js';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE } from '@noble/curves/utils.js';
import { expand, extract } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { concat, equal } from '../bytes.ts';
import { RendezvousError } from '../errors.ts';
import { ED25519_L, isAcceptablePublicKey, precheckSignature } from './ed25519-policy.ts';
import { AEAD_KEY_LENGTH, type Aead, type CryptoProvider } from './provider.ts';

const HASH_LEN = 32;
const NONCE_LEN = 12;
const TAG_LEN = 16;

function badKey(what: string): RendezvousError {
  return new RendezvousError('crypto.bad_key', what);
}

function need32(b: Uint8Array, what: string): void {
  if (!(b instanceof Uint8Array) || b.length !== 32) throw badKey(`${what} must be 32 bytes`);
}

function cipher(aead: Aead, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array) {
  const keyLen = AEAD_KEY_LENGTH[aead];
  if (keyLen === undefined) throw badKey('unknown AEAD');
  if (key.length !== keyLen) throw badKey(`${aead} key must be ${keyLen} bytes`);
  if (nonce.length !== NONCE_LEN) throw badKey(`${aead} nonce must be ${NONCE_LEN} bytes`);
  return aead === 'chacha20-poly1305' ? chacha20poly1305(key, nonce, aad) : gcm(key, nonce, aad);
}

/**
 * RFC 8032 §5.1.7 with the cofactorless equation, after the pinned prechecks (ed25519-policy.ts).
 * noble's own `verify` is cofactored, so the equation is composed from its point operations.
 */
function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (!precheckSignature(signature) || !isAcceptablePublicKey(publicKey)) return false;
  const r = signature.subarray(0, 32);
  const s = bytesToNumberLE(signature.subarray(32, 64));
  const A = ed25519.Point.fromBytes(publicKey, false);
  // k = SHA-512(R || A || M) mod L over the bytes as received (§5.1.7 step 2).
  const k = bytesToNumberLE(sha512(concat(r, publicKey, message))) % ED25519_L;
  // multiplyUnsafe: both scalars are public, and either may be 0, which `multiply` refuses.
  const check = ed25519.Point.BASE.multiplyUnsafe(s).subtract(A.multiplyUnsafe(k));
  return equal(check.toBytes(), r);
}

export const nobleCrypto: CryptoProvider = {
  name: 'noble',

  sha256: (data) => sha256(data),
  sha512: (data) => sha512(data),
  hmacSha256: (key, data) => hmac(sha256, key, data),

  // RFC 5869 §2.2: an empty salt means HashLen zero bytes (HMAC pads either to the same block).
  hkdfExtract: (salt, ikm) => extract(sha256, ikm, salt.length === 0 ? new Uint8Array(HASH_LEN) : salt),

  hkdfExpand(prk, info, length) {
    if (!Number.isSafeInteger(length) || length < 0 || length > 255 * HASH_LEN) {
      throw badKey('HKDF output length out of range');
    }
    if (prk.length < HASH_LEN) throw badKey('HKDF PRK shorter than the hash output');
    return expand(sha256, prk, info, length);
  },

  ed25519PublicKey(seed) {
    need32(seed, 'Ed25519 secret key');
    return ed25519.getPublicKey(seed);
  },

  ed25519Sign(seed, message) {
    need32(seed, 'Ed25519 secret key');
    return ed25519.sign(message, seed);
  },

  ed25519Verify(publicKey, message, signature) {
    try {
      return verify(publicKey, message, signature);
    } catch {
      return false;
    }
  },

  x25519PublicKey(secretKey) {
    need32(secretKey, 'X25519 secret key');
    return x25519.getPublicKey(secretKey);
  },

  x25519(secretKey, publicKey) {
    need32(secretKey, 'X25519 secret key');
    need32(publicKey, 'X25519 public key');
    try {
      // noble masks bit 255 and reduces u mod p (RFC 7748 §5), then refuses the five low-order
      // u values up front; with a clamped scalar those are exactly the inputs whose output is
      // all zero (RFC 7748 §6.1), so this is the same rule the node provider applies afterwards.
      return x25519.getSharedSecret(secretKey, publicKey);
    } catch {
      throw badKey('X25519 shared secret is all zero');
    }
  },

  aeadSeal(aead, key, nonce, aad, plaintext) {
    return cipher(aead, key, nonce, aad).encrypt(plaintext);
  },

  aeadOpen(aead, key, nonce, aad, ciphertext) {
    const c = cipher(aead, key, nonce, aad);
    if (ciphertext.length < TAG_LEN) throw new RendezvousError('crypto.decrypt_failed');
    try {
      return c.decrypt(ciphertext);
    } catch {
      throw new RendezvousError('crypto.decrypt_failed');
    }
  },
};
