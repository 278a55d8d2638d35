/** Byte helpers shared by every module. Nothing here touches secrets in a timing-sensitive way. */
import { RendezvousError } from './errors.ts';

export type Bytes = Uint8Array;

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function toHex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += HEX[b[i]!];
  return s;
}

/** Strict: even length, lowercase or uppercase hex digits only. */
export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new RendezvousError('encoding.bad_value', 'invalid hex string');
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** base64url without padding (RFC 4648 §5), the encoding of bytes in every JSON body. */
export function toBase64url(b: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < b.length; i++) bin += String.fromCharCode(b[i]!);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Strict: rejects padding, other alphabets, and non-canonical trailing bits. */
export function fromBase64url(s: string): Uint8Array {
  if (!B64URL.test(s) || s.length % 4 === 1) {
    throw new RendezvousError('encoding.bad_value', 'invalid base64url string');
  }
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (toBase64url(out) !== s) throw new RendezvousError('encoding.bad_value', 'non-canonical base64url');
  return out;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function utf8(s: string): Uint8Array {
  return enc.encode(s);
}

/** Strict UTF-8 decode: invalid sequences (including overlong forms and surrogates) are rejected. */
export function fromUtf8(b: Uint8Array): string {
  try {
    return dec.decode(b);
  } catch {
    throw new RendezvousError('encoding.bad_value', 'invalid UTF-8');
  }
}

/** Big-endian u64 of a safe integer (every u64 in this protocol is below 2^53). */
export function u64be(n: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}
