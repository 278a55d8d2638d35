/**
 * The wire format between a VerifyPool (node-verify-pool.ts) and its workers: triples packed into one buffer (one copy,
 * then transferred instead of cloned): u32 count, then per triple u32 lengths of the public
 * key, the message and the signature, followed by the three byte strings.
 */
import type { SignatureTriple } from '../verified-signatures.ts';

export function packTriples(triples: readonly SignatureTriple[]): Uint8Array<ArrayBuffer> {
  let n = 4;
  for (const t of triples) n += 12 + t.publicKey.length + t.message.length + t.signature.length;
  const out = new Uint8Array(n);
  const v = new DataView(out.buffer);
  v.setUint32(0, triples.length);
  let o = 4;
  for (const t of triples) {
    v.setUint32(o, t.publicKey.length);
    v.setUint32(o + 4, t.message.length);
    v.setUint32(o + 8, t.signature.length);
    o += 12;
    out.set(t.publicKey, o);
    o += t.publicKey.length;
    out.set(t.message, o);
    o += t.message.length;
    out.set(t.signature, o);
    o += t.signature.length;
  }
  return out;
}

/** The inverse of packTriples; the triples are views into `b`. Throws on a malformed buffer. */
export function unpackTriples(b: Uint8Array): SignatureTriple[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const count = v.getUint32(0);
  const out: SignatureTriple[] = [];
  let o = 4;
  const take = (len: number) => {
    if (o + len > b.length) throw new Error('packed triples: truncated');
    const x = b.subarray(o, o + len);
    o += len;
    return x;
  };
  for (let i = 0; i < count; i++) {
    if (o + 12 > b.length) throw new Error('packed triples: truncated');
    const pk = v.getUint32(o);
    const msg = v.getUint32(o + 4);
    const sig = v.getUint32(o + 8);
    o += 12;
    out.push({ publicKey: take(pk), message: take(msg), signature: take(sig) });
  }
  if (o !== b.length) throw new Error('packed triples: trailing bytes');
  return out;
}
