/**
 * The one pinned Ed25519 verification policy (spec §3.2), shared by both providers.
 *
 * Why pin it: in a federation every server and every client re-verifies the same signatures.
 * If two verifiers disagree on even one signature, a server can store a structure that another
 * server (or a browser client using the other provider) refuses, and the topic log forks.
 * Ed25519 implementations differ exactly on the edge cases: Node's OpenSSL `verify` accepts a
 * non-canonical public key A (y >= p), noble's built-in verify uses the cofactored equation,
 * ZIP-215 verifiers accept non-canonical R and A. So the accepted set is fixed here, and both
 * providers implement exactly this set.
 *
 * Policy: strict RFC 8032 §5.1.7 with the COFACTORLESS equation, plus input prechecks.
 *   1. The public key is 32 bytes and the signature 64 bytes.
 *   2. A is a canonical encoding (§5.1.2: y < p, and no "negative zero" x = 0 with the sign bit
 *      set) that decodes to a curve point (§5.1.3), and A is not one of the 8 points of small
 *      order (a small-order key signs "for" any message: [k]A takes only 8 values).
 *   3. R is a canonical encoding and not of small order.
 *   4. S < L (§5.1.7: "If s ... is not in [0, L), reject"; this is what makes signatures
 *      non-malleable, §8.4).
 *   5. Accept iff encode([S]B − [k]A) == R as bytes, with k = SHA-512(R || A || M) mod L over the
 *      bytes as received. No multiplication by the cofactor 8: a signature whose
 *      [S]B − [k]A − R is a nonzero small-order point (CCTV's `low_order_residue`) is rejected.
 *      The cofactorless form is the one OpenSSL implements, so Node needs no second equation.
 *
 * Mixed-order A or R (a prime-order point plus a nonzero torsion component) is NOT rejected:
 * it cannot be detected without a full scalar multiplication by L, and under the cofactorless
 * equation such a signature verifies identically everywhere, so agreement does not need it.
 *
 * The byte comparison in step 5 also enforces that R decodes at all: encode() only yields
 * encodings of curve points, so R bytes that name no point never match. `precheckSignature`
 * therefore checks R at the byte level only, which saves a square root per verification; the
 * complete `precheck` decodes R as well and accepts the same set once step 5 is applied.
 *
 * Everything here is a pure function of public bytes; none of it needs constant time.
 */
import { ED25519_TORSION_SUBGROUP, ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, hexToBytes } from '@noble/curves/utils.js';

/** The field prime p = 2^255 − 19 (RFC 8032 §5.1). */
export const ED25519_P = (1n << 255n) - 19n;
/** The prime group order L = 2^252 + 27742317777372353535851937790883648493 (RFC 8032 §5.1). */
export const ED25519_L = (1n << 252n) + 27742317777372353535851937790883648493n;

const Y_MASK = (1n << 255n) - 1n;

/**
 * Canonical encodings of the 8 torsion points, taken from @noble/curves (the test suite checks
 * that each has order dividing 8 and that they are 8 distinct points).
 */
export const SMALL_ORDER_ENCODINGS: readonly Uint8Array[] = Object.freeze(
  ED25519_TORSION_SUBGROUP.map((h) => hexToBytes(h)),
);

function sameBytes32(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Byte-level canonicity (RFC 8032 §5.1.2): y < p, and not x = 0 with the sign bit set. Points with
 * x = 0 are exactly y = 1 and y = p − 1, so "negative zero" is decidable without decoding.
 * Says nothing about whether the encoding names a curve point.
 */
export function isCanonicalEncoding(enc: Uint8Array): boolean {
  if (enc.length !== 32) return false;
  const n = bytesToNumberLE(enc);
  const y = n & Y_MASK;
  if (y >= ED25519_P) return false;
  const signBit = n >> 255n === 1n;
  return !(signBit && (y === 1n || y === ED25519_P - 1n));
}

/** A canonical encoding (see above) that also decodes to a curve point (RFC 8032 §5.1.3). */
export function isCanonicalPoint(enc: Uint8Array): boolean {
  if (!isCanonicalEncoding(enc)) return false;
  try {
    // zip215 = false: noble itself rejects y >= p and negative zero; the byte checks above keep
    // the rule independent of that library detail.
    ed25519.Point.fromBytes(enc, false);
    return true;
  } catch {
    return false;
  }
}

/** True iff `enc` is the canonical encoding of one of the 8 points of order dividing 8. */
export function isSmallOrderEncoding(enc: Uint8Array): boolean {
  if (enc.length !== 32) return false;
  for (const s of SMALL_ORDER_ENCODINGS) if (sameBytes32(enc, s)) return true;
  return false;
}

/** S < L, with S the 32-byte little-endian integer (RFC 8032 §5.1.7). */
export function isCanonicalScalar(s32: Uint8Array): boolean {
  return s32.length === 32 && bytesToNumberLE(s32) < ED25519_L;
}

/** Step 2 of the policy: the public key alone. */
export function isAcceptablePublicKey(publicKey: Uint8Array): boolean {
  return publicKey.length === 32 && isCanonicalPoint(publicKey) && !isSmallOrderEncoding(publicKey);
}

/**
 * Step 2 without decoding the point: a canonical encoding, not of small order. Enough for a
 * verifier whose equation check refuses a key that names no curve point, as OpenSSL's does
 * (ossl_ed25519_verify returns 0 when ge_frombytes_vartime finds no square root): with it,
 * this check plus a successful verification is exactly step 2, and it saves the decoding
 * here (a square root in pure JavaScript, ~0.15 ms).
 */
export function isAcceptablePublicKeyEncoding(publicKey: Uint8Array): boolean {
  return publicKey.length === 32 && isCanonicalEncoding(publicKey) && !isSmallOrderEncoding(publicKey);
}

/**
 * Steps 3–4 on the signature alone, with R checked at the byte level only (its decodability is
 * enforced by the byte comparison of step 5; see the header). What the providers call.
 */
export function precheckSignature(signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  const r = signature.subarray(0, 32);
  return isCanonicalEncoding(r) && !isSmallOrderEncoding(r) && isCanonicalScalar(signature.subarray(32, 64));
}

/** Steps 1–4 in full: lengths, A and R canonical curve points not of small order, S < L. */
export function precheck(publicKey: Uint8Array, signature: Uint8Array): boolean {
  return (
    isAcceptablePublicKey(publicKey) && precheckSignature(signature) && isCanonicalPoint(signature.subarray(0, 32))
  );
}
