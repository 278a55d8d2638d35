/**
 * The crypto provider (spec §3): the only place primitives are called.
 *
 * Two implementations exist and MUST agree bit for bit on every input, valid or not:
 * `node.ts` (node:crypto, fast; server and Node clients) and `noble.ts` (@noble/*, portable;
 * the browser). Protocol code receives a provider and never imports a primitive itself.
 *
 * Conventions:
 * - Ed25519 secret keys are the 32-byte RFC 8032 seed; public keys the 32-byte encoding.
 * - `ed25519Verify` applies the pinned strict policy of spec §3.2 (see ed25519-policy.ts) and
 *   returns false for anything it rejects; it never throws on malformed input.
 * - X25519 secret keys are 32 bytes (clamped inside the function, RFC 7748 §5);
 *   `x25519` throws `crypto.bad_key` when the shared secret is all zero (RFC 7748 §6.1,
 *   RFC 9180 §7.1.4) and for keys of the wrong length.
 * - AEADs take 12-byte nonces and return ciphertext || 16-byte tag. A key or nonce of the wrong
 *   length throws `crypto.bad_key` (seal and open); any other `aeadOpen` failure throws
 *   `crypto.decrypt_failed`.
 * - Randomness is not part of the provider: it is injected separately as a `Random`.
 */

export type Aead = 'chacha20-poly1305' | 'aes-128-gcm' | 'aes-256-gcm';

export const AEAD_KEY_LENGTH: Record<Aead, number> = {
  'chacha20-poly1305': 32,
  'aes-128-gcm': 16,
  'aes-256-gcm': 32,
};

export interface CryptoProvider {
  readonly name: string;

  sha256(data: Uint8Array): Uint8Array;
  sha512(data: Uint8Array): Uint8Array;
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** RFC 5869 §2.2 */
  hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Uint8Array;
  /** RFC 5869 §2.3; throws `crypto.bad_key` if length > 255 * 32. */
  hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array;

  ed25519PublicKey(seed: Uint8Array): Uint8Array;
  ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array;
  /** Strict verification under the pinned policy (spec §3.2). */
  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;

  x25519PublicKey(secretKey: Uint8Array): Uint8Array;
  x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array;

  aeadSeal(aead: Aead, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  aeadOpen(aead: Aead, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
}

/** Injected randomness: returns `n` fresh uniformly random bytes. */
export type Random = (n: number) => Uint8Array;

/**
 * Deterministic randomness for test vectors only: SHA-256 in counter mode over a seed.
 * Never use it for real keys.
 */
export function deterministicRandom(provider: CryptoProvider, seed: Uint8Array): Random {
  let counter = 0;
  let pool: Uint8Array = new Uint8Array(0);
  return (n: number) => {
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      if (pool.length === 0) {
        const c = new Uint8Array(seed.length + 4);
        c.set(seed);
        new DataView(c.buffer).setUint32(seed.length, counter++);
        pool = provider.sha256(c);
      }
      const take = Math.min(pool.length, n - o);
      out.set(pool.subarray(0, take), o);
      pool = pool.subarray(take);
      o += take;
    }
    return out;
  };
}
