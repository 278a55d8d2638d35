/**
 * Merkle log (merkle.ts): the public transparency-dev/merkle verification probes, the RFC 6962
 * reference tree and its generated proofs, an exhaustive sweep of every tree up to 100 leaves
 * with mutated proofs, and fast-check properties of the stored-hash layout.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { assertCode, readVector } from './helpers.ts';
import { fromHex, toHex, u64be } from '../src/bytes.ts';
import { isRendezvousError } from '../src/errors.ts';
import { nodeCrypto } from '../src/crypto/node.ts';
import {
  MAX_TREE_SIZE,
  MemoryLog,
  consistencyProof,
  consistencyProofIndexes,
  emptyHash,
  hashReaderFromMap,
  inclusionProof,
  inclusionProofIndexes,
  leafHash,
  mth,
  nodeHash,
  splitStoredHashIndex,
  storedHashCount,
  storedHashIndex,
  storedHashes,
  storedHashesIndexes,
  treeHash,
  treeHashIndexes,
  verifyConsistency,
  verifyInclusion,
  type HashReader,
  type MerkleHasher,
} from '../src/merkle.ts';

/** The node:crypto provider; only its sha256 is used (the module takes Pick<CryptoProvider, 'sha256'>). */
const h: MerkleHasher = nodeCrypto;

const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const out = Uint8Array.from(b);
  out[(bit >> 3) % out.length]! ^= 1 << (bit & 7);
  return out;
}

function withElement(proof: Uint8Array[], j: number, x: Uint8Array): Uint8Array[] {
  const out = proof.slice();
  out[j] = x;
  return out;
}

/** Runs a verification: true if it verifies, false if it throws log.bad_proof (rethrows others). */
function verifies(fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (!isRendezvousError(e, 'log.bad_proof')) throw e;
    return false;
  }
}

const mustFail = (fn: () => void): void => assert.equal(verifies(fn), false);

/** Deterministic PRNG (mulberry32) for the "random bit" mutations, so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const popcount = (n: number): number => BigInt(n).toString(2).replace(/0/g, '').length;

// -------------------------------------------------------------------------------------------
// Independent references, written from the RFC 9162 text over leaf data (not stored hashes).

/** MTH over leaves[lo:hi], memoised by range: the same recursion as mth(), cheaper to reuse. */
function rangeHasher(leaves: Uint8Array[]): (lo: number, hi: number) => Uint8Array {
  const memo = new Map<string, Uint8Array>();
  const f = (lo: number, hi: number): Uint8Array => {
    const key = `${lo},${hi}`;
    let v = memo.get(key);
    if (v === undefined) {
      if (hi - lo === 1) v = leafHash(h, leaves[lo]!);
      else {
        let k = 1;
        while (k * 2 < hi - lo) k *= 2;
        v = nodeHash(h, f(lo, lo + k), f(lo + k, hi));
      }
      memo.set(key, v);
    }
    return v;
  };
  return f;
}

/** RFC 9162 §2.1.3.1 PATH(m, D[lo:hi]). */
function refPath(mthr: (lo: number, hi: number) => Uint8Array, m: number, lo: number, hi: number): Uint8Array[] {
  if (hi - lo === 1) return [];
  let k = 1;
  while (k * 2 < hi - lo) k *= 2;
  return m < k
    ? [...refPath(mthr, m, lo, lo + k), mthr(lo + k, hi)]
    : [...refPath(mthr, m - k, lo + k, hi), mthr(lo, lo + k)];
}

/** RFC 9162 §2.1.4.1 SUBPROOF(m, D[lo:hi], b). */
function refSubproof(mthr: (lo: number, hi: number) => Uint8Array, m: number, lo: number, hi: number, b: boolean): Uint8Array[] {
  if (m === hi - lo) return b ? [] : [mthr(lo, hi)];
  let k = 1;
  while (k * 2 < hi - lo) k *= 2;
  return m <= k
    ? [...refSubproof(mthr, m, lo, lo + k, b), mthr(lo + k, hi)]
    : [...refSubproof(mthr, m - k, lo + k, hi, false), mthr(lo, lo + k)];
}

/**
 * The shape of PATH(m, D[n]): for each element, bottom up, whether the sibling is on the Right or
 * the Left. A verifier's computation depends only on this shape, so a proof verifies under
 * another (index, size) exactly when that pair has the same shape: the root does not commit to
 * the size by itself (a checkpoint signs both). Used as the oracle for size mutations.
 */
function pathShape(m: number, n: number): string {
  if (n === 1) return '';
  let k = 1;
  while (k * 2 < n) k *= 2;
  return m < k ? pathShape(m, k) + 'R' : pathShape(m - k, n - k) + 'L';
}

/** The shape of SUBPROOF(m, D[n], true), with 'S' when the proof carries its own seed. */
function proofShape(m: number, n: number, b = true): string {
  if (m === n) return b ? '' : 'S';
  let k = 1;
  while (k * 2 < n) k *= 2;
  return m <= k ? proofShape(m, k, b) + 'R' : proofShape(m - k, n - k, false) + 'L';
}

function inclusionShouldVerify(i: number, s: number, orig: { i: number; s: number }): boolean {
  return i >= 0 && i < s && pathShape(i, s) === pathShape(orig.i, orig.s);
}

function consistencyShouldVerify(m: number, n: number, orig: { m: number; n: number }): boolean {
  return m >= 1 && m <= n && proofShape(m, n) === proofShape(orig.m, orig.n);
}


// -------------------------------------------------------------------------------------------

describe('merkle: public verification probes (transparency-dev/merkle testdata)', () => {
  test('inclusion.json: 98 probes, verdicts match', () => {
    const v = readVector('merkle/inclusion.json');
    assert.equal(v.tests.length, 98);
    assert.equal(v.numberOfTests, 98);
    let ok = 0;
    let bad = 0;
    for (const t of v.tests) {
      const proof = (t.proof ?? []).map(b64);
      const run = () => verifyInclusion(h, t.leafIdx, t.treeSize, b64(t.leafHash), proof, b64(t.root));
      if (t.wantErr) {
        assertCode(run, 'log.bad_proof');
        bad++;
      } else {
        assert.doesNotThrow(run, t.file);
        ok++;
      }
    }
    assert.deepEqual([ok, bad], [6, 92]);
  });

  test('consistency.json: 98 probes, verdicts match', () => {
    const v = readVector('merkle/consistency.json');
    assert.equal(v.tests.length, 98);
    assert.equal(v.numberOfTests, 98);
    let ok = 0;
    let bad = 0;
    for (const t of v.tests) {
      const proof = (t.proof ?? []).map(b64);
      const run = () => verifyConsistency(h, t.size1, t.size2, proof, b64(t.root1), b64(t.root2));
      if (t.wantErr) {
        assertCode(run, 'log.bad_proof');
        bad++;
      } else {
        assert.doesNotThrow(run, t.file);
        ok++;
      }
    }
    assert.deepEqual([ok, bad], [6, 92]);
  });
});

describe('merkle: RFC 6962 reference tree', () => {
  const ref = readVector('merkle/reference_tree.json');
  const leaves: Uint8Array[] = ref.leafInputs.map(fromHex);
  const log = new MemoryLog(h);
  for (const d of leaves) log.append(d);

  test('hashing primitives', () => {
    assert.equal(toHex(emptyHash(h)), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal(toHex(mth(h, [])), ref.rootHashes[0]);
    assert.deepEqual(leaves.map((d) => toHex(leafHash(h, d))), ref.leafHashes);
    assert.deepEqual(leaves.map((_, i) => toHex(log.leafHash(i))), ref.leafHashes);
  });

  test('roots for sizes 0..8 via MemoryLog (growing and final) and via mth', () => {
    assert.equal(ref.rootHashes.length, 9);
    const grow = new MemoryLog(h);
    assert.equal(toHex(grow.root()), ref.rootHashes[0]);
    for (let n = 1; n <= 8; n++) {
      assert.equal(grow.append(leaves[n - 1]!), n - 1);
      assert.equal(grow.size, n);
      assert.equal(toHex(grow.root()), ref.rootHashes[n], `growing root ${n}`);
    }
    for (let n = 0; n <= 8; n++) {
      assert.equal(toHex(log.root(n)), ref.rootHashes[n], `root(${n})`);
      assert.equal(toHex(mth(h, leaves.slice(0, n))), ref.rootHashes[n], `mth ${n}`);
      assert.equal(toHex(treeHash(h, n, log)), ref.rootHashes[n]);
    }
  });

  test('complete-subtree node hashes sit at storedHashIndex(level, i)', () => {
    let count = 0;
    ref.nodeHashes.forEach((row: string[], level: number) =>
      row.forEach((hex, i) => {
        assert.equal(toHex(log.readHashes([storedHashIndex(level, i)])[0]!), hex, `node (${level}, ${i})`);
        count++;
      }),
    );
    assert.equal(count, 15);
    assert.equal(log.storedCount, 15);
    assert.equal(storedHashCount(8), 15);
  });

  test('reference_tree_proofs.json: 36 inclusion + 36 consistency proofs, byte for byte', () => {
    const p = readVector('merkle/reference_tree_proofs.json');
    assert.equal(p.inclusionProofs.length, 36);
    assert.equal(p.consistencyProofs.length, 36);
    for (const t of p.inclusionProofs) {
      const ours = log.inclusionProof(t.leafIndex, t.treeSize);
      assert.deepEqual(ours.map(toHex), t.proof, `inclusion ${t.leafIndex}/${t.treeSize}`);
      assert.equal(toHex(log.root(t.treeSize)), t.root);
      assert.equal(toHex(log.leafHash(t.leafIndex)), t.leafHash);
      verifyInclusion(h, t.leafIndex, t.treeSize, fromHex(t.leafHash), t.proof.map(fromHex), fromHex(t.root));
    }
    for (const t of p.consistencyProofs) {
      const ours = log.consistencyProof(t.size1, t.size2);
      assert.deepEqual(ours.map(toHex), t.proof, `consistency ${t.size1}->${t.size2}`);
      assert.equal(toHex(log.root(t.size1)), t.root1);
      assert.equal(toHex(log.root(t.size2)), t.root2);
      verifyConsistency(h, t.size1, t.size2, t.proof.map(fromHex), fromHex(t.root1), fromHex(t.root2));
    }
  });

  test('every single-bit flip of every reference proof element and root fails', (ctx) => {
    const p = readVector('merkle/reference_tree_proofs.json');
    let n = 0;
    for (const t of p.inclusionProofs) {
      const proof: Uint8Array[] = t.proof.map(fromHex);
      const leaf = fromHex(t.leafHash);
      const root = fromHex(t.root);
      for (let bit = 0; bit < 256; bit++) {
        for (let j = 0; j < proof.length; j++) {
          mustFail(() => verifyInclusion(h, t.leafIndex, t.treeSize, leaf, withElement(proof, j, flipBit(proof[j]!, bit)), root));
          n++;
        }
        mustFail(() => verifyInclusion(h, t.leafIndex, t.treeSize, flipBit(leaf, bit), proof, root));
        mustFail(() => verifyInclusion(h, t.leafIndex, t.treeSize, leaf, proof, flipBit(root, bit)));
        n += 2;
      }
    }
    for (const t of p.consistencyProofs) {
      const proof: Uint8Array[] = t.proof.map(fromHex);
      const r1 = fromHex(t.root1);
      const r2 = fromHex(t.root2);
      for (let bit = 0; bit < 256; bit++) {
        for (let j = 0; j < proof.length; j++) {
          mustFail(() => verifyConsistency(h, t.size1, t.size2, withElement(proof, j, flipBit(proof[j]!, bit)), r1, r2));
          n++;
        }
        mustFail(() => verifyConsistency(h, t.size1, t.size2, proof, flipBit(r1, bit), r2));
        mustFail(() => verifyConsistency(h, t.size1, t.size2, proof, r1, flipBit(r2, bit)));
        n += 2;
      }
    }
    assert.ok(n > 50_000, `${n} mutations`);
    ctx.diagnostic(`${n} single-bit mutants rejected`);
  });
});

describe('merkle: exhaustive, every tree of 1..100 leaves', () => {
  const N = 100;
  const leaves = Array.from({ length: N }, (_, i) => u64be(i * 1_000_003 + 7));
  const log = new MemoryLog(h);
  for (const d of leaves) log.append(d);
  const mthr = rangeHasher(leaves);
  const roots = [emptyHash(h), ...Array.from({ length: N }, (_, n) => mthr(0, n + 1))];

  test('roots equal mth (the naive RFC definition) and the stored-hash count formula', () => {
    const grow = new MemoryLog(h);
    for (let n = 1; n <= N; n++) {
      grow.append(leaves[n - 1]!);
      const want = mth(h, leaves.slice(0, n));
      assert.deepEqual(grow.root(), want, `root ${n}`);
      assert.deepEqual(log.root(n), want);
      assert.deepEqual(roots[n], want);
      assert.equal(grow.storedCount, storedHashCount(n));
      assert.equal(storedHashCount(n), 2 * n - popcount(n));
    }
  });

  test('inclusion proofs: equal RFC PATH, verify, and every mutation fails', (t) => {
    const rand = prng(0x5eed);
    let proofs = 0;
    let mutants = 0;
    let sizeTwins = 0;
    for (let n = 1; n <= N; n++) {
      const root = roots[n]!;
      for (let i = 0; i < n; i++) {
        const proof = log.inclusionProof(i, n);
        assert.deepEqual(proof, refPath(mthr, i, 0, n), `PATH(${i}, ${n})`);
        const leaf = log.leafHash(i);
        verifyInclusion(h, i, n, leaf, proof, root);
        proofs++;
        const bad = (fn: () => void) => {
          mustFail(fn);
          mutants++;
        };
        // One bit in every element, a different bit position for each.
        for (let j = 0; j < proof.length; j++) {
          bad(() => verifyInclusion(h, i, n, leaf, withElement(proof, j, flipBit(proof[j]!, (j * 7 + i) % 256)), root));
        }
        // A random bit of a random element, of the leaf hash, of the root.
        if (proof.length > 0) {
          const j = Math.floor(rand() * proof.length);
          bad(() => verifyInclusion(h, i, n, leaf, withElement(proof, j, flipBit(proof[j]!, Math.floor(rand() * 256))), root));
        }
        bad(() => verifyInclusion(h, i, n, flipBit(leaf, Math.floor(rand() * 256)), proof, root));
        bad(() => verifyInclusion(h, i, n, leaf, proof, flipBit(root, Math.floor(rand() * 256))));
        // Another leaf, index ±1.
        if (n > 1) bad(() => verifyInclusion(h, i, n, log.leafHash((i + 1) % n), proof, root));
        bad(() => verifyInclusion(h, i + 1, n, leaf, proof, root));
        if (i > 0) bad(() => verifyInclusion(h, i - 1, n, leaf, proof, root));
        // Size ±1: fails unless the other size gives the same path shape (the root alone does
        // not commit to the size; a signed checkpoint does).
        for (const s of [n - 1, n + 1]) {
          const ok = inclusionShouldVerify(i, s, { i, s: n });
          assert.equal(verifies(() => verifyInclusion(h, i, s, leaf, proof, root)), ok, `size ${n}->${s} index ${i}`);
          if (ok) sizeTwins++;
          else mutants++;
        }
        // Truncated, extended, reordered, emptied.
        if (proof.length > 0) {
          bad(() => verifyInclusion(h, i, n, leaf, proof.slice(0, -1), root));
          bad(() => verifyInclusion(h, i, n, leaf, proof.slice(1), root));
          bad(() => verifyInclusion(h, i, n, leaf, [], root));
        }
        bad(() => verifyInclusion(h, i, n, leaf, [...proof, leaf], root));
        bad(() => verifyInclusion(h, i, n, leaf, [leaf, ...proof], root));
        if (proof.length > 1) bad(() => verifyInclusion(h, i, n, leaf, proof.slice().reverse(), root));
        // An element or the leaf hash of the wrong length.
        if (proof.length > 0) bad(() => verifyInclusion(h, i, n, leaf, withElement(proof, 0, proof[0]!.subarray(1)), root));
        bad(() => verifyInclusion(h, i, n, leaf.subarray(0, 31), proof, root));
      }
    }
    assert.equal(proofs, (N * (N + 1)) / 2);
    assert.ok(mutants > 10 * proofs, `${mutants} mutants`);
    assert.ok(sizeTwins > 0, 'sizeTwins > 0');
    t.diagnostic(`${proofs} proofs, ${mutants} mutants rejected, ${sizeTwins} size±1 twins accepted (same shape)`);
  });

  test('consistency proofs: equal RFC PROOF, verify, and every mutation fails', (t) => {
    const rand = prng(0xc0ffee);
    let proofs = 0;
    let mutants = 0;
    let sizeTwins = 0;
    for (let n = 1; n <= N; n++) {
      const r2 = roots[n]!;
      for (let m = 1; m <= n; m++) {
        const r1 = roots[m]!;
        const proof = log.consistencyProof(m, n);
        assert.deepEqual(proof, refSubproof(mthr, m, 0, n, true), `PROOF(${m}, ${n})`);
        verifyConsistency(h, m, n, proof, r1, r2);
        proofs++;
        const bad = (fn: () => void) => {
          mustFail(fn);
          mutants++;
        };
        for (let j = 0; j < proof.length; j++) {
          bad(() => verifyConsistency(h, m, n, withElement(proof, j, flipBit(proof[j]!, (j * 7 + m) % 256)), r1, r2));
        }
        if (proof.length > 0) {
          const j = Math.floor(rand() * proof.length);
          bad(() => verifyConsistency(h, m, n, withElement(proof, j, flipBit(proof[j]!, Math.floor(rand() * 256))), r1, r2));
        }
        bad(() => verifyConsistency(h, m, n, proof, flipBit(r1, Math.floor(rand() * 256)), r2));
        bad(() => verifyConsistency(h, m, n, proof, r1, flipBit(r2, Math.floor(rand() * 256))));
        if (m < n) bad(() => verifyConsistency(h, m, n, proof, r2, r1)); // swapped roots
        // Sizes ±1 (size1 = 0 and size1 > size2 included): fail unless the shape is the same.
        for (const [m2, n2] of [[m - 1, n], [m + 1, n], [m, n - 1], [m, n + 1]] as const) {
          const ok = consistencyShouldVerify(m2, n2, { m, n });
          assert.equal(verifies(() => verifyConsistency(h, m2, n2, proof, r1, r2)), ok, `${m}->${n} as ${m2}->${n2}`);
          if (ok) sizeTwins++;
          else mutants++;
        }
        if (proof.length > 0) {
          bad(() => verifyConsistency(h, m, n, proof.slice(0, -1), r1, r2));
          bad(() => verifyConsistency(h, m, n, proof.slice(1), r1, r2));
          bad(() => verifyConsistency(h, m, n, [], r1, r2));
          bad(() => verifyConsistency(h, m, n, withElement(proof, 0, new Uint8Array(33)), r1, r2));
        }
        bad(() => verifyConsistency(h, m, n, [...proof, r1], r1, r2));
        bad(() => verifyConsistency(h, m, n, [r2, ...proof], r1, r2));
        if (proof.length > 1) bad(() => verifyConsistency(h, m, n, proof.slice().reverse(), r1, r2));
      }
    }
    assert.equal(proofs, (N * (N + 1)) / 2);
    assert.ok(mutants > 10 * proofs, `${mutants} mutants`);
    assert.ok(sizeTwins > 0, 'sizeTwins > 0');
    t.diagnostic(`${proofs} proofs, ${mutants} mutants rejected, ${sizeTwins} size±1 twins accepted (same shape)`);
  });
});

describe('merkle: stored-hash layout and readers', () => {
  test('storedHashIndex matches tlog (first indexes written out)', () => {
    // Records 0..7 store: 0:(0,0) 1:(0,1),(1,0) 2:(0,2) 3:(0,3),(1,1),(2,0) 4:(0,4) ...
    const want: Array<[number, number]> = [
      [0, 0], [0, 1], [1, 0], [0, 2], [0, 3], [1, 1], [2, 0], [0, 4], [0, 5], [1, 2], [0, 6], [0, 7], [1, 3], [2, 1], [3, 0],
    ];
    want.forEach(([level, n], index) => {
      assert.equal(storedHashIndex(level, n), index);
      assert.deepEqual(splitStoredHashIndex(index), { level, n });
    });
  });

  test('storedHashes equals what MemoryLog appends; each reader is called once with the *Indexes list', () => {
    const log = new MemoryLog(h);
    const calls: number[][] = [];
    const spy: HashReader = {
      readHashes(ix) {
        calls.push(ix.slice());
        return log.readHashes(ix);
      },
    };
    for (let n = 0; n < 70; n++) {
      const data = u64be(n);
      calls.length = 0;
      const add = storedHashes(h, n, data, spy);
      const want = storedHashesIndexes(n);
      assert.deepEqual(calls, want.length === 0 ? [] : [want]);
      assert.equal(add.length, storedHashCount(n + 1) - storedHashCount(n));
      const before = log.storedCount;
      log.append(data);
      assert.deepEqual(log.readHashes(Array.from({ length: add.length }, (_, i) => before + i)), add);
    }
    for (let n = 0; n <= 70; n++) {
      calls.length = 0;
      treeHash(h, n, spy);
      assert.deepEqual(calls, n === 0 ? [] : [treeHashIndexes(n)]);
      for (let i = 0; i < n; i++) {
        calls.length = 0;
        inclusionProof(h, i, n, spy);
        const want = inclusionProofIndexes(i, n);
        assert.deepEqual(calls, want.length === 0 ? [] : [want]);
      }
      for (let m = 1; m <= n; m++) {
        calls.length = 0;
        consistencyProof(h, m, n, spy);
        const want = consistencyProofIndexes(m, n);
        assert.deepEqual(calls, want.length === 0 ? [] : [want]);
      }
    }
  });

  test('indexes-first: fetch ahead into a map, then compute (the async-store pattern)', () => {
    const log = new MemoryLog(h);
    for (let i = 0; i < 37; i++) log.append(u64be(i));
    const fetch = (ix: number[]) => new Map(ix.map((i) => [i, log.readHashes([i])[0]!] as const));
    assert.deepEqual(treeHash(h, 37, hashReaderFromMap(fetch(treeHashIndexes(37)))), log.root());
    assert.deepEqual(inclusionProof(h, 11, 30, hashReaderFromMap(fetch(inclusionProofIndexes(11, 30)))), log.inclusionProof(11, 30));
    assert.deepEqual(consistencyProof(h, 13, 37, hashReaderFromMap(fetch(consistencyProofIndexes(13, 37)))), log.consistencyProof(13, 37));
    assert.throws(() => treeHash(h, 37, hashReaderFromMap(new Map())), /not available/);
  });

  test('invalid arguments: encoding.bad_value from generators and layout; log.bad_proof from verifiers', () => {
    const log = new MemoryLog(h);
    for (let i = 0; i < 5; i++) log.append(u64be(i));
    for (const fn of [
      () => storedHashIndex(-1, 0),
      () => storedHashIndex(0, -1),
      () => storedHashIndex(0, 1.5),
      () => storedHashIndex(53, 0),
      () => storedHashIndex(0, 2 ** 53),
      () => splitStoredHashIndex(-1),
      () => storedHashCount(-1),
      () => storedHashCount(MAX_TREE_SIZE + 1),
      () => treeHashIndexes(NaN),
      () => inclusionProofIndexes(5, 5),
      () => inclusionProofIndexes(0, 0),
      () => consistencyProofIndexes(0, 5),
      () => consistencyProofIndexes(6, 5),
      () => log.root(6),
      () => log.inclusionProof(0, 6),
      () => log.consistencyProof(1, 6),
      () => log.leafHash(5),
      () => storedHashesIndexes(-1),
      () => storedHashesIndexes(MAX_TREE_SIZE),
    ]) {
      assertCode(fn, 'encoding.bad_value');
    }
    const leaf = log.leafHash(0);
    const proof = log.inclusionProof(0);
    const root = log.root();
    verifyInclusion(h, 0, 5, leaf, proof, root);
    for (const [i, s] of [[-1, 5], [0.5, 5], [0, 5.5], [NaN, 5], [0, Infinity], [2 ** 64 - 1, 5], [0, 2 ** 53]]) {
      assertCode(() => verifyInclusion(h, i!, s!, leaf, proof, root), 'log.bad_proof');
    }
    assertCode(() => verifyConsistency(h, 5, 2 ** 64, [], root, root), 'log.bad_proof');
    assertCode(() => verifyConsistency(h, -1, 5, [], root, root), 'log.bad_proof');
    assertCode(() => verifyConsistency(h, 0, 0, [], root, root), 'log.bad_proof');
    assertCode(() => verifyConsistency(h, 0, 5, [], emptyHash(h), root), 'log.bad_proof');
    verifyConsistency(h, 5, 5, [], root, Uint8Array.from(root));
  });

  test('a reader that returns the wrong number of hashes is a bug, not a bad proof', () => {
    assert.throws(() => treeHash(h, 3, { readHashes: () => [] }), /returned 0 hashes/);
    assert.throws(() => treeHash(h, 3, { readHashes: (ix) => ix.map(() => new Uint8Array(31)) }), /not 32 bytes/);
  });
});

describe('merkle: properties (fast-check)', () => {
  const BIG = 3000;
  const log = new MemoryLog(h);
  for (let i = 0; i < BIG; i++) log.append(u64be(i ^ 0x5a5a));

  test('proofs built from the stored-hash store verify, and match a store fetched ahead', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: BIG }).chain((n) => fc.tuple(fc.constant(n), fc.nat(n - 1), fc.integer({ min: 1, max: n }))),
        ([n, i, m]) => {
          const root = log.root(n);
          const proof = log.inclusionProof(i, n);
          verifyInclusion(h, i, n, log.leafHash(i), proof, root);
          const cproof = log.consistencyProof(m, n);
          verifyConsistency(h, m, n, cproof, log.root(m), root);
          const ahead = hashReaderFromMap(new Map(consistencyProofIndexes(m, n).map((x) => [x, log.readHashes([x])[0]!])));
          assert.deepEqual(consistencyProof(h, m, n, ahead), cproof);
          assert.equal(proof.length, pathShape(i, n).length);
          assert.equal(cproof.length, proofShape(m, n).length);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('stored hash count formula: 2n - popcount(n) = storedHashIndex(0, n); appends add 1 + trailing ones', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_TREE_SIZE - 1 }), (n) => {
        const c = storedHashCount(n);
        assert.equal(c, 2 * n - popcount(n));
        assert.equal(storedHashIndex(0, n), c);
        const trailingOnes = BigInt(n).toString(2).match(/1*$/)![0].length;
        assert.equal(storedHashCount(n + 1) - c, 1 + trailingOnes);
        assert.equal(storedHashesIndexes(n).length, trailingOnes);
        assert.equal(treeHashIndexes(n + 1).length, popcount(n + 1));
      }),
      { numRuns: 1000 },
    );
  });

  test('storedHashIndex / splitStoredHashIndex round trip, both ways', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 2 ** 50 }), (level, n0) => {
        const n = Math.floor(n0 / 2 ** level);
        const index = storedHashIndex(level, n);
        assert.deepEqual(splitStoredHashIndex(index), { level, n });
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 52 }), (index) => {
        const { level, n } = splitStoredHashIndex(index);
        assert.equal(storedHashIndex(level, n), index);
      }),
      { numRuns: 2000 },
    );
    for (let index = 0; index < 5000; index++) {
      const { level, n } = splitStoredHashIndex(index);
      assert.equal(storedHashIndex(level, n), index);
    }
  });

  test('huge trees (up to 2^52 leaves, all leaves equal): proofs from stored hashes verify', () => {
    // In a tree whose leaves are all equal, the stored hash of a complete subtree depends only
    // on its level, so a reader can serve any index of any size without storing anything.
    const levels = [leafHash(h, new Uint8Array([42]))];
    for (let l = 1; l <= 53; l++) levels.push(nodeHash(h, levels[l - 1]!, levels[l - 1]!));
    const uniform: HashReader = {
      readHashes: (ix) =>
        ix.map((i) => levels[splitStoredHashIndex(i).level]!),
    };
    // Independent root: the set bits of n, high to low, folded from the right.
    const uniformRoot = (n: number): Uint8Array => {
      const parts = [...BigInt(n).toString(2)].map((b, i, a) => (b === '1' ? levels[a.length - 1 - i]! : null)).filter((x) => x !== null);
      let acc = parts[parts.length - 1]!;
      for (let i = parts.length - 2; i >= 0; i--) acc = nodeHash(h, parts[i]!, acc);
      return acc;
    };
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: MAX_TREE_SIZE }).chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: n - 1 }), fc.integer({ min: 1, max: n }))),
        ([n, i, m]) => {
          const root = treeHash(h, n, uniform);
          assert.deepEqual(root, uniformRoot(n));
          const proof = inclusionProof(h, i, n, uniform);
          assert.ok(proof.length <= 52, 'proof.length <= 52');
          verifyInclusion(h, i, n, levels[0]!, proof, root);
          assertCode(() => verifyInclusion(h, i, n, levels[0]!, proof, flipBit(root, i % 256)), 'log.bad_proof');
          const cproof = consistencyProof(h, m, n, uniform);
          verifyConsistency(h, m, n, cproof, uniformRoot(m), root);
          if (m < n) assertCode(() => verifyConsistency(h, m, n, cproof.slice(1), uniformRoot(m), root), 'log.bad_proof');
        },
      ),
      { numRuns: 300 },
    );
    assert.deepEqual(treeHash(h, MAX_TREE_SIZE, uniform), levels[52]);
  });
});
