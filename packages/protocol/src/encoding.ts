/**
 * Canonical binary encoding (spec §2), in the style of the TLS presentation language as used
 * by MLS (RFC 9420 §2.1.2):
 *
 * - integers are fixed-width big-endian (u8, u16, u32, u64; every u64 is < 2^53);
 * - a variable-length field `opaque x<V>` or list `T x<V>` is prefixed by its length in bytes
 *   as a QUIC variable-length integer (RFC 9000 §16) that MUST use the shortest form and MUST
 *   fit in 30 bits (the 8-byte form is rejected);
 * - there are no optional fields except through an explicit presence byte (0 or 1);
 * - decoders reject truncated input, trailing bytes, non-minimal lengths and unknown values.
 *
 * Together these give `decode(encode(x)) = x` and `encode(decode(b)) = b` for every structure.
 */
import { RendezvousError } from './errors.ts';
import { fromUtf8, utf8 } from './bytes.ts';

export const MAX_VARINT = 0x3fffffff;
const MAX_U64 = Number.MAX_SAFE_INTEGER;

export class Writer {
  private buf: Uint8Array;
  private view: DataView;
  private len = 0;

  constructor(initial = 256) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > 0xff) throw badValue('u8 out of range');
    this.reserve(1);
    this.buf[this.len++] = n;
    return this;
  }

  u16(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw badValue('u16 out of range');
    this.reserve(2);
    this.view.setUint16(this.len, n);
    this.len += 2;
    return this;
  }

  u32(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw badValue('u32 out of range');
    this.reserve(4);
    this.view.setUint32(this.len, n);
    this.len += 4;
    return this;
  }

  u64(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > MAX_U64) throw badValue('u64 out of range');
    this.reserve(8);
    this.view.setBigUint64(this.len, BigInt(n));
    this.len += 8;
    return this;
  }

  /** QUIC varint, shortest form, at most 30 bits (RFC 9420 §2.1.2). */
  varint(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > MAX_VARINT) throw badValue('varint out of range');
    if (n < 0x40) return this.u8(n);
    if (n < 0x4000) return this.u16(0x4000 | n);
    return this.u32((0x80000000 | n) >>> 0);
  }

  /** A fixed-size field: the length is part of the structure's definition, not the encoding. */
  fixed(b: Uint8Array, size: number): this {
    if (b.length !== size) throw badValue(`expected ${size} bytes, got ${b.length}`);
    this.reserve(size);
    this.buf.set(b, this.len);
    this.len += size;
    return this;
  }

  /** `opaque x<V>` */
  bytes(b: Uint8Array): this {
    this.varint(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  /** UTF-8 string as `opaque x<V>`. */
  string(s: string): this {
    return this.bytes(utf8(s));
  }

  /** `T x<V>`: the items' encodings, prefixed by their total length in bytes. */
  list<T>(items: readonly T[], write: (w: Writer, item: T) => void): this {
    const inner = new Writer();
    for (const item of items) write(inner, item);
    return this.bytes(inner.finish());
  }

  /** A presence byte: 0 = absent, 1 = present. */
  bool(b: boolean): this {
    return this.u8(b ? 1 : 0);
  }

  /** Raw bytes that are already a canonical encoding (for example a nested signed structure). */
  raw(b: Uint8Array): this {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export class Reader {
  private pos = 0;
  private readonly view: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  get offset(): number {
    return this.pos;
  }

  private need(n: number): void {
    if (this.remaining < n) throw new RendezvousError('encoding.truncated');
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.pos);
    if (v > BigInt(MAX_U64)) throw badValue('u64 above 2^53 - 1');
    this.pos += 8;
    return Number(v);
  }

  varint(): number {
    this.need(1);
    const first = this.buf[this.pos]!;
    const prefix = first >> 6;
    if (prefix === 0) {
      this.pos += 1;
      return first;
    }
    if (prefix === 1) {
      const v = this.u16() & 0x3fff;
      if (v < 0x40) throw new RendezvousError('encoding.non_minimal');
      return v;
    }
    if (prefix === 2) {
      const v = this.u32() & 0x3fffffff;
      if (v < 0x4000) throw new RendezvousError('encoding.non_minimal');
      return v;
    }
    throw new RendezvousError('encoding.bad_value', 'varint longer than 30 bits');
  }

  fixed(size: number): Uint8Array {
    this.need(size);
    const out = this.buf.slice(this.pos, this.pos + size);
    this.pos += size;
    return out;
  }

  /** `opaque x<V>`, with an optional upper bound checked before anything is copied. */
  bytes(max = MAX_VARINT): Uint8Array {
    const n = this.varint();
    if (n > max) throw new RendezvousError('encoding.too_large');
    return this.fixed(n);
  }

  string(maxBytes = MAX_VARINT): string {
    return fromUtf8(this.bytes(maxBytes));
  }

  /** `T x<V>`: decodes items until the declared byte length is used exactly. */
  list<T>(read: (r: Reader) => T, maxItems = MAX_VARINT): T[] {
    const inner = new Reader(this.bytes());
    const out: T[] = [];
    while (inner.remaining > 0) {
      if (out.length >= maxItems) throw new RendezvousError('encoding.too_large');
      out.push(read(inner));
    }
    return out;
  }

  /** A presence byte: 0 = absent, 1 = present; anything else is rejected. */
  bool(): boolean {
    const b = this.u8();
    if (b > 1) throw badValue('boolean must be 0 or 1');
    return b === 1;
  }

  /** Every decoder ends with this: trailing bytes are an error (spec §2). */
  end(): void {
    if (this.remaining !== 0) throw new RendezvousError('encoding.trailing_bytes');
  }
}

/** Decode a whole buffer with `read`, rejecting trailing bytes. */
export function decodeAll<T>(buf: Uint8Array, read: (r: Reader) => T): T {
  const r = new Reader(buf);
  const v = read(r);
  r.end();
  return v;
}

export function encodeWith<T>(value: T, write: (w: Writer, v: T) => void): Uint8Array {
  const w = new Writer();
  write(w, value);
  return w.finish();
}

function badValue(msg: string): RendezvousError {
  return new RendezvousError('encoding.bad_value', msg);
}
