/**
 * Public-key validity rules shared by every structure (spec §3.2, §3.4).
 *
 * A structure that carries a key is rejected at decode-and-validate time when the key could
 * never be used safely, so a server refuses it before it is stored and every client refuses it
 * again on receipt.
 */
import { RendezvousError } from './errors.ts';
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
  return Array.from(out, (b) => b.toString(16).padStart(2, '0')).join('');
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
  let ok = pk.length === X25519_KEY_SIZE && (pk[31]! & 0x80) === 0;
  if (ok) {
    let u = 0n;
    for (let i = 31; i >= 0; i--) u = (u << 8n) | BigInt(pk[i]!);
    const hex = Array.from(pk, (b) => b.toString(16).padStart(2, '0')).join('');
    ok = u < P && !X25519_LOW_ORDER.has(hex);
  }
  if (!ok) throw new RendezvousError('crypto.bad_key', `invalid ${what}`);
}
