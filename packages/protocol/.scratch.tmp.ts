import { verify as nv, createPublicKey } from 'node:crypto';
import { readVector } from './test/helpers.ts';
import { fromHex, utf8 } from './src/bytes.ts';
import { nodeCrypto } from './src/crypto/node.ts';
import { nobleCrypto } from './src/crypto/noble.ts';
import { precheck, isCanonicalPoint, isSmallOrderEncoding, isCanonicalEncoding } from './src/crypto/ed25519-policy.ts';
const cctv = readVector<any[]>('ed25519_edge/cctv_ed25519vectors.json');
const REJ = ['non_canonical_A', 'non_canonical_R', 'low_order_A', 'low_order_R', 'low_order_residue'];
let acc = 0, bad = 0, rawDiff = 0, rawDiffPass = 0; const eqv: Record<string, number> = {};
function rawNode(pk: Uint8Array, m: Uint8Array, s: Uint8Array) { try { return nv(null, m, createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), pk]), format: 'der', type: 'spki' }), s); } catch { return 'throw'; } }
const rawAccNCA: number[] = [];
for (const v of cctv) {
  const f: string[] = v.flags ?? [];
  const pk = fromHex(v.key), sig = fromHex(v.sig), m = utf8(v.msg);
  const exp = !f.some((x) => REJ.includes(x));
  const a = nodeCrypto.ed25519Verify(pk, m, sig), b = nobleCrypto.ed25519Verify(pk, m, sig);
  if (a !== exp || b !== exp) { bad++; console.log('MISMATCH', v.number, f, a, b); }
  if (exp) acc++;
  const R = sig.subarray(0, 32);
  const chk = (name: string, x: boolean) => { if (!x) eqv[name] = (eqv[name] ?? 0) + 1; };
  chk('ncA', f.includes('non_canonical_A') === !isCanonicalPoint(pk));
  chk('ncR', f.includes('non_canonical_R') === !isCanonicalPoint(R));
  chk('ncA-enc', f.includes('non_canonical_A') === !isCanonicalEncoding(pk));
  chk('loA', (f.includes('low_order_A') && !f.includes('non_canonical_A')) === isSmallOrderEncoding(pk));
  chk('loR', (f.includes('low_order_R') && !f.includes('non_canonical_R')) === isSmallOrderEncoding(R));
  chk('reenc', !f.includes('reencoded_k') || f.includes('non_canonical_A') || f.includes('non_canonical_R'));
  const raw = rawNode(pk, m, sig);
  if (raw !== exp) { rawDiff++; if (precheck(pk, sig)) rawDiffPass++; if (raw === true && f.includes('non_canonical_A')) rawAccNCA.push(v.number); }
}
console.log({ acc, bad, rawDiff, rawDiffPass, rawAccNCA: rawAccNCA.length, eqv });
const sc = readVector<any[]>('ed25519_edge/speccheck_cases.json');
sc.forEach((c, i) => { const pk = fromHex(c.pub_key), sig = fromHex(c.signature), m = fromHex(c.message);
  console.log(i, nodeCrypto.ed25519Verify(pk, m, sig), nobleCrypto.ed25519Verify(pk, m, sig), 'raw', rawNode(pk, m, sig), 'pre', precheck(pk, sig), 'Acan', isCanonicalPoint(pk), 'Aso', isSmallOrderEncoding(pk), 'Rcan', isCanonicalPoint(sig.subarray(0,32)), 'Rso', isSmallOrderEncoding(sig.subarray(0,32))); });
