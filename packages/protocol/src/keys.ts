/**
 * Public-key validity rules shared by every structure (spec §3.2, §3.4).
 *
 * A structure that carries a key is rejected at decode-and-validate time when the key could
 * never be used safely, so a server refuses it before it is stored and every client refuses it
 * again on receipt.
 */
import { RendezvousError } from './errors.ts';
import { toHex } from './bytes.ts';
import { isCanonicalPoint, isSmallOrderEncoding } from './crypto/ed25519-policy.ts';

export const ED25519_PUBLIC_KEY_SIZE = 32;
export const ED25519_SIGNATURE_SIZE = 64;
export const X25519_KEY_SIZE = 32;

/** An Ed25519 public key must be a canonical encoding of a point that is not of small order. */
export function checkEd25519PublicKey(pk: Uint8Array, what = 'Ed25519 public key'): void {
  if (pk.length !== ED25519_PUBLIC_KEY_SIZE || !isCanonicalPoint(pk) || isSmallOrderEncoding(pk)) {
    throw new RendezvousError('crypto.bad_key', `invalid ${what}`);
  }
}

const P = (1n << 255n) - 19n;

function leBytes(n: bigint): string {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return toHex(out);
}

/**
 * u < p for a 32-byte little-endian u whose top bit is clear: u ≥ p = 2^255 − 19 only when
 * bytes 1…30 are 0xff, byte 31 is 0x7f and byte 0 is at least 0xed.
 */
function belowP(pk: Uint8Array): boolean {
  if (pk[31] !== 0x7f || pk[0]! < 0xed) return true;
  for (let i = 1; i < 31; i++) if (pk[i] !== 0xff) return true;
  return false;
}

/**
 * The canonical u-coordinates of the X25519 points of small order (order 1, 2, 4 and 8):
 * 0, 1, p − 1 and the two order-8 points (the list libsodium blocks). A Diffie–Hellman with
 * any of them gives the all-zero output that RFC 7748 §6.1 and RFC 9180 §7.1.4 reject, so a key
 * like this in a topic key would make every key share to its owner fail.
 */
const X25519_LOW_ORDER = new Set([
  leBytes(0n),
  leBytes(1n),
  leBytes(P - 1n),
  leBytes(325606250916557431795983626356110631294008115727848805560023387167927233504n),
  leBytes(39382357235489614581723060781553021112529911719440698176882885853963445705823n),
]);

/** An X25519 public key must be canonical (u < p, top bit clear) and not of small order. */
export function checkX25519PublicKey(pk: Uint8Array, what = 'X25519 public key'): void {
  const ok = pk.length === X25519_KEY_SIZE && (pk[31]! & 0x80) === 0 && belowP(pk) && !X25519_LOW_ORDER.has(toHex(pk));
  if (!ok) throw new RendezvousError('crypto.bad_key', `invalid ${what}`);
}
