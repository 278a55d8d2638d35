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
const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** Character code of each 6-bit value, and the 6-bit value of each alphabet character code. */
const B64URL_CODE = Uint8Array.from(B64URL_ALPHABET, (c) => c.charCodeAt(0));
const B64URL_VALUE = new Uint8Array(128);
for (let i = 0; i < 64; i++) B64URL_VALUE[B64URL_CODE[i]!] = i;
/** The output is ASCII, which every decoder decodes alike. */
const ascii = new TextDecoder();

/**
 * base64url without padding (RFC 4648 §5), the encoding of bytes in every JSON body.
 * Table-driven: whole topic updates (hundreds of kB) go through here.
 */
export function toBase64url(b: Uint8Array): string {
  const n = b.length;
  const whole = n - (n % 3);
  const out = new Uint8Array((whole / 3) * 4 + (n % 3 === 0 ? 0 : (n % 3) + 1));
  let o = 0;
  for (let i = 0; i < whole; i += 3) {
    const v = (b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!;
    out[o++] = B64URL_CODE[v >>> 18]!;
    out[o++] = B64URL_CODE[(v >>> 12) & 63]!;
    out[o++] = B64URL_CODE[(v >>> 6) & 63]!;
    out[o++] = B64URL_CODE[v & 63]!;
  }
  if (n - whole === 1) {
    const v = b[whole]!;
    out[o++] = B64URL_CODE[v >>> 2]!;
    out[o++] = B64URL_CODE[(v & 3) << 4]!;
  } else if (n - whole === 2) {
    const v = (b[whole]! << 8) | b[whole + 1]!;
    out[o++] = B64URL_CODE[v >>> 10]!;
    out[o++] = B64URL_CODE[(v >>> 4) & 63]!;
    out[o++] = B64URL_CODE[(v & 15) << 2]!;
  }
  return ascii.decode(out);
}

/** Strict: rejects padding, other alphabets, and non-canonical trailing bits. */
export function fromBase64url(s: string): Uint8Array {
  if (!B64URL.test(s) || s.length % 4 === 1) {
    throw new RendezvousError('encoding.bad_value', 'invalid base64url string');
  }
  const n = s.length;
  const whole = n - (n % 4);
  const out = new Uint8Array((whole / 4) * 3 + (n % 4 === 0 ? 0 : (n % 4) - 1));
  const val = (i: number) => B64URL_VALUE[s.charCodeAt(i)]!;
  let o = 0;
  for (let i = 0; i < whole; i += 4) {
    const v = (val(i) << 18) | (val(i + 1) << 12) | (val(i + 2) << 6) | val(i + 3);
    out[o++] = v >>> 16;
    out[o++] = (v >>> 8) & 0xff;
    out[o++] = v & 0xff;
  }
  // A final group of 2 or 3 characters carries 4 or 2 bits beyond its bytes: they must be zero
  // (RFC 4648 §3.5), or two strings would name the same bytes.
  let spare = 0;
  if (n - whole === 2) {
    const v = (val(whole) << 6) | val(whole + 1);
    out[o++] = v >>> 4;
    spare = v & 15;
  } else if (n - whole === 3) {
    const v = (val(whole) << 12) | (val(whole + 1) << 6) | val(whole + 2);
    out[o++] = v >>> 10;
    out[o++] = (v >>> 2) & 0xff;
    spare = v & 3;
  }
  if (spare !== 0) throw new RendezvousError('encoding.bad_value', 'non-canonical base64url');
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
