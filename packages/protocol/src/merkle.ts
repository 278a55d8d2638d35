/**
 * The per-topic Merkle tree log (spec §9–§11): RFC 9162 §2.1 hashing, proofs and verifiers.
 *
 * Hashing is RFC 9162 §2.1.1 with SHA-256: the empty tree hashes to SHA-256(""), a leaf to
 * SHA-256(0x00 || data) and an interior node to SHA-256(0x01 || left || right). Proofs are the
 * RFC 9162 §2.1.3.1 inclusion PATH and the §2.1.4.1 consistency PROOF; the verifiers follow
 * §2.1.3.2 and §2.1.4.2 step by step, after the input checks of transparency-dev/merkle.
 *
 * Storage layout: credit to Russ Cox's golang.org/x/mod/sumdb/tlog, whose design this module
 * follows function for function. The log stores the hash of every complete subtree (every
 * subtree of 2^level leaves aligned on a multiple of 2^level), numbered in the order they
 * become complete: appending record n stores its leaf hash plus one hash for each subtree it
 * completes (one per trailing 1 bit of n), so at most 1 + log2(n + 1) hashes are written per
 * append, the store for n records holds exactly 2n - popcount(n) hashes, and nothing is ever
 * rewritten. Every tree hash, inclusion proof and consistency proof is then built from
 * O(log n) stored hashes alone: no leaf data is re-read and no tree is rebuilt.
 *
 * Storage is one sync method, `HashReader.readHashes(indexes)`. For an async store, every
 * function that reads has a pure twin that says in advance which indexes it will ask for
 * (`treeHashIndexes`, `inclusionProofIndexes`, `consistencyProofIndexes`,
 * `storedHashesIndexes`): each reading function calls `readHashes` at most once, with exactly
 * that list (in that order; never when the list is empty), so a store can fetch those hashes
 * first and then pass `{ readHashes: () => fetched }`.
 *
 * Sizes and indexes are JavaScript numbers, so they must be safe integers; tree sizes handled
 * by the generators are limited to MAX_TREE_SIZE = 2^52 so that every stored-hash index stays
 * below 2^53. Invalid arguments to the layout functions and proof generators throw
 * `encoding.bad_value`; the verifiers throw `log.bad_proof` for every failure, whatever the input.
 */
import { RendezvousError } from './errors.ts';
import { equal } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';

/**
 * The only primitive this module needs. `sha256` must not keep its input past the call (this
 * module reuses its input buffers; see `input` below).
 */
export type MerkleHasher = Pick<CryptoProvider, 'sha256'>;

/** Storage of stored hashes, addressed by `storedHashIndex`. */
export interface HashReader {
  /** Returns the stored hashes at `indexes`, in the same order; one hash per index. */
  readHashes(indexes: number[]): Uint8Array[];
}

const HASH_SIZE = 32;

/** Largest tree size the generators accept: keeps every stored-hash index below 2^53. */
export const MAX_TREE_SIZE = 2 ** 52;

// ---------------------------------------------------------------------------------------------
// Hashing (RFC 9162 §2.1.1)

const LEAF_PREFIX = 0x00;
const NODE_PREFIX = 0x01;

/** MTH({}) = SHA-256() */
export function emptyHash(h: MerkleHasher): Uint8Array {
  return h.sha256(new Uint8Array(0));
}

/**
 * Scratch input buffers for the hash calls below, reused instead of allocating one per call
 * (a verifying client hashes a leaf and one or more nodes per entry; each fresh buffer of more
 * than 64 bytes is an external allocation the garbage collector must track). Safe because
 * `sha256` is synchronous and returns a fresh digest: it reads its input during the call and
 * keeps nothing of it (the provider contract; both providers do so). Grown on demand; inputs
 * over SCRATCH_MAX get a buffer of their own, so a huge entry does not stay allocated.
 */
const SCRATCH_MAX = 64 * 1024;
let scratch = new Uint8Array(2048);

function input(n: number): Uint8Array {
  if (n > SCRATCH_MAX) return new Uint8Array(n);
  if (scratch.length < n) scratch = new Uint8Array(Math.max(n, scratch.length * 2));
  return scratch.subarray(0, n);
}

/** SHA-256(0x00 || data) */
export function leafHash(h: MerkleHasher, data: Uint8Array): Uint8Array {
  const b = input(1 + data.length);
  b[0] = LEAF_PREFIX;
  b.set(data, 1);
  return h.sha256(b);
}

/** SHA-256(0x01 || left || right) */
export function nodeHash(h: MerkleHasher, left: Uint8Array, right: Uint8Array): Uint8Array {
  const b = input(1 + left.length + right.length);
  b[0] = NODE_PREFIX;
  b.set(left, 1);
  b.set(right, 1 + left.length);
  return h.sha256(b);
}

/**
 * The reference definition of the Merkle Tree Hash, RFC 9162 §2.1.1, written as the RFC writes
 * it: naive and recursive, over the leaf data. O(n) hashes per call; for tests and as the
 * definition every other function here must agree with.
 */
export function mth(h: MerkleHasher, leaves: readonly Uint8Array[]): Uint8Array {
  const n = leaves.length;
  if (n === 0) return emptyHash(h);
  if (n === 1) return leafHash(h, leaves[0]!);
  let k = 1;
  while (k * 2 < n) k *= 2; // the largest power of two smaller than n
  return nodeHash(h, mth(h, leaves.slice(0, k)), mth(h, leaves.slice(k)));
}

// ---------------------------------------------------------------------------------------------
// Integer helpers (arithmetic, not bitwise: values may exceed 2^32)

function badValue(message: string): never {
  throw new RendezvousError('encoding.bad_value', message);
}

function checkSize(name: string, n: number, min = 0, max = MAX_TREE_SIZE): void {
  if (!Number.isSafeInteger(n) || n < min || n > max) badValue(`merkle: ${name} out of range`);
}

function half(n: number): number {
  return Math.floor(n / 2);
}

function isOdd(n: number): boolean {
  return n % 2 === 1;
}

function trailingZeros(n: number): number {
  let c = 0;
  while (n > 0 && n % 2 === 0) {
    n /= 2;
    c++;
  }
  return c;
}

/** tlog's maxpow2: the largest power of two strictly less than n (1 for n <= 2), and its log. */
function maxpow2(n: number): [k: number, level: number] {
  // Fast path: floor(log2(n - 1)) from the leading zeros of a 32-bit value.
  if (n <= 2) return [1, 0];
  if (n - 1 <= 0xffffffff) {
    const level = 31 - Math.clz32(n - 1);
    return [2 ** level, level];
  }
  let l = 0;
  while (2 ** (l + 1) < n) l++;
  return [2 ** l, l];
}

// ---------------------------------------------------------------------------------------------
// Stored-hash layout (tlog)

/**
 * The index of the stored hash of the complete subtree at `level` whose leaves are records
 * n·2^level .. (n+1)·2^level - 1. Level 0 is the leaf hash of record n.
 */
export function storedHashIndex(level: number, n: number): number {
  if (!Number.isSafeInteger(level) || level < 0 || level > 52) badValue('merkle: level out of range');
  checkSize('n', n, 0, Number.MAX_SAFE_INTEGER);
  // Go down to the last level-0 record of that subtree, which completes it.
  for (let l = level; l > 0; l--) n = 2 * n + 1;
  // Hashes stored before record n: every record m < n stored 1 + trailingZeros(m + 1) hashes,
  // which sums to n + n/2 + n/4 + ... (integer halves).
  let i = 0;
  for (; n > 0; n = half(n)) i += n;
  const index = i + level;
  if (!Number.isSafeInteger(index)) badValue('merkle: stored hash index too large');
  return index;
}

/** The inverse of storedHashIndex. */
export function splitStoredHashIndex(index: number): { level: number; n: number } {
  checkSize('index', index, 0, Number.MAX_SAFE_INTEGER);
  // storedHashIndex(0, n) <= 2n, so the record we want is in [index/2, index/2 + log2(index)].
  let n = half(index);
  let indexN = storedHashIndex(0, n);
  if (indexN > index) throw new Error('merkle: bad math in splitStoredHashIndex');
  for (;;) {
    // Record n stores 1 + trailingZeros(n + 1) hashes.
    const x = indexN + 1 + trailingZeros(n + 1);
    if (x > index) break;
    n++;
    indexN = x;
  }
  // The hash was stored with record n: it is one of (0, n), (1, n/2), (2, n/4), ...
  const level = index - indexN;
  return { level, n: Math.floor(n / 2 ** level) };
}

/** The number of stored hashes in a log of n records (equals 2n - popcount(n)). */
export function storedHashCount(n: number): number {
  checkSize('n', n);
  if (n === 0) return 0;
  // Everything up to the last leaf hash, then the subtrees that leaf completes.
  let count = storedHashIndex(0, n - 1) + 1;
  for (let i = n - 1; isOdd(i); i = half(i)) count++;
  return count;
}

/** The stored-hash indexes `storedHashes(h, n, ...)` reads: the left siblings record n completes. */
export function storedHashesIndexes(n: number): number[] {
  checkSize('n', n, 0, MAX_TREE_SIZE - 1);
  const m = trailingZeros(n + 1);
  const indexes = new Array<number>(m);
  // Sorted ascending; n / 2^i is odd for every i < m.
  for (let i = 0; i < m; i++) indexes[m - 1 - i] = storedHashIndex(i, Math.floor(n / 2 ** i) - 1);
  return indexes;
}

/**
 * The new stored hashes to append, in order, when adding record n (with data `leafData`) to a
 * log of n records: its leaf hash followed by the hash of every subtree it completes. They go
 * at indexes storedHashIndex(0, n), storedHashIndex(0, n) + 1, ...
 */
export function storedHashes(h: MerkleHasher, n: number, leafData: Uint8Array, reader: HashReader): Uint8Array[] {
  return storedHashesForLeafHash(h, n, leafHash(h, leafData), reader);
}

/** storedHashes for a record whose leaf hash is already known. */
export function storedHashesForLeafHash(
  h: MerkleHasher,
  n: number,
  leaf: Uint8Array,
  reader: HashReader,
): Uint8Array[] {
  if (leaf.length !== HASH_SIZE) badValue('merkle: leaf hash must be 32 bytes');
  const indexes = storedHashesIndexes(n);
  const old = read(reader, indexes);
  const out = [leaf];
  let cur = leaf;
  for (let i = 0; i < indexes.length; i++) {
    cur = nodeHash(h, old[indexes.length - 1 - i]!, cur);
    out.push(cur);
  }
  return out;
}

function read(reader: HashReader, indexes: number[]): Uint8Array[] {
  if (indexes.length === 0) return [];
  const hashes = reader.readHashes(indexes);
  if (hashes.length !== indexes.length) {
    throw new Error(`merkle: readHashes(${indexes.length} indexes) returned ${hashes.length} hashes`);
  }
  for (const x of hashes) {
    if (!(x instanceof Uint8Array) || x.length !== HASH_SIZE) {
      throw new Error('merkle: readHashes returned a hash that is not 32 bytes');
    }
  }
  return hashes;
}

/** A HashReader over an in-memory map from stored-hash index to hash (e.g. fetched ahead). */
export function hashReaderFromMap(map: ReadonlyMap<number, Uint8Array>): HashReader {
  return {
    readHashes(indexes) {
      return indexes.map((i) => {
        const x = map.get(i);
        if (x === undefined) throw new Error(`merkle: stored hash ${i} not available`);
        return x;
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Tree hash and proofs from stored hashes (tlog's subTree*/leafProof*/treeProof*)

/** Appends the indexes of the complete subtrees that make up records [lo, hi), left to right. */
function subTreeIndex(lo: number, hi: number, need: number[]): number[] {
  while (lo < hi) {
    const [k, level] = maxpow2(hi - lo + 1); // largest power of two <= hi - lo
    if (lo % k !== 0) throw new Error('merkle: bad math in subTreeIndex');
    need.push(storedHashIndex(level, lo / k));
    lo += k;
  }
  return need;
}

/** A cursor over hashes read in the order the *Index functions listed them. */
class Cursor {
  private i = 0;
  constructor(private readonly hashes: Uint8Array[]) {}
  take(count: number): Uint8Array[] {
    if (this.i + count > this.hashes.length) throw new Error('merkle: bad index math (too few hashes)');
    const out = this.hashes.slice(this.i, this.i + count);
    this.i += count;
    return out;
  }
  done(): void {
    if (this.i !== this.hashes.length) throw new Error('merkle: bad index math (hashes left over)');
  }
}

/** MTH of records [lo, hi) (lo < hi) from its complete subtrees, read from the cursor. */
function subTreeHash(h: MerkleHasher, lo: number, hi: number, c: Cursor): Uint8Array {
  // Split [lo, hi) into the largest aligned power-of-two subtrees, left to right; the RFC tree
  // over [lo, hi) is then the right-leaning fold of those subtree hashes.
  let numTree = 0;
  while (lo < hi) {
    const [k] = maxpow2(hi - lo + 1);
    if (lo % k !== 0) throw new Error('merkle: bad math in subTreeHash');
    numTree++;
    lo += k;
  }
  const parts = c.take(numTree);
  let acc = parts[numTree - 1]!;
  for (let i = numTree - 2; i >= 0; i--) acc = nodeHash(h, parts[i]!, acc);
  return acc;
}

/** The stored-hash indexes treeHash(h, n, reader) reads. */
export function treeHashIndexes(n: number): number[] {
  checkSize('tree size', n);
  return subTreeIndex(0, n, []);
}

/** MTH of the first n records (RFC 9162 §2.1.1), from stored hashes. */
export function treeHash(h: MerkleHasher, n: number, reader: HashReader): Uint8Array {
  const indexes = treeHashIndexes(n);
  if (n === 0) return emptyHash(h);
  const c = new Cursor(read(reader, indexes));
  const root = subTreeHash(h, 0, n, c);
  c.done();
  return root;
}

function leafProofIndex(lo: number, hi: number, n: number, need: number[]): number[] {
  if (!(lo <= n && n < hi)) throw new Error('merkle: bad math in leafProofIndex');
  if (lo + 1 === hi) return need;
  const [k] = maxpow2(hi - lo);
  if (n < lo + k) {
    leafProofIndex(lo, lo + k, n, need);
    subTreeIndex(lo + k, hi, need);
  } else {
    subTreeIndex(lo, lo + k, need);
    leafProofIndex(lo + k, hi, n, need);
  }
  return need;
}

/** RFC 9162 §2.1.3.1 PATH(n, D[lo:hi]), deepest sibling first. */
function leafProof(h: MerkleHasher, lo: number, hi: number, n: number, c: Cursor, out: Uint8Array[]): void {
  if (!(lo <= n && n < hi)) throw new Error('merkle: bad math in leafProof');
  if (lo + 1 === hi) return; // the verifier has the leaf hash
  const [k] = maxpow2(hi - lo);
  if (n < lo + k) {
    leafProof(h, lo, lo + k, n, c, out);
    out.push(subTreeHash(h, lo + k, hi, c));
  } else {
    const left = subTreeHash(h, lo, lo + k, c);
    leafProof(h, lo + k, hi, n, c, out);
    out.push(left);
  }
}

/** The stored-hash indexes inclusionProof(h, index, n, reader) reads. */
export function inclusionProofIndexes(index: number, n: number): number[] {
  checkSize('tree size', n, 1);
  checkSize('leaf index', index, 0, n - 1);
  return leafProofIndex(0, n, index, []);
}

/** The RFC 9162 §2.1.3.1 inclusion proof of record `index` in the tree of the first n records. */
export function inclusionProof(h: MerkleHasher, index: number, n: number, reader: HashReader): Uint8Array[] {
  const indexes = inclusionProofIndexes(index, n);
  const c = new Cursor(read(reader, indexes));
  const proof: Uint8Array[] = [];
  leafProof(h, 0, n, index, c, proof);
  c.done();
  return proof;
}

function treeProofIndex(lo: number, hi: number, m: number, need: number[]): number[] {
  if (!(lo < m && m <= hi)) throw new Error('merkle: bad math in treeProofIndex');
  if (m === hi) return lo === 0 ? need : subTreeIndex(lo, hi, need);
  const [k] = maxpow2(hi - lo);
  if (m <= lo + k) {
    treeProofIndex(lo, lo + k, m, need);
    subTreeIndex(lo + k, hi, need);
  } else {
    subTreeIndex(lo, lo + k, need);
    treeProofIndex(lo + k, hi, m, need);
  }
  return need;
}

/** RFC 9162 §2.1.4.1 SUBPROOF(m - lo, D[lo:hi], lo == 0), deepest element first. */
function treeProof(h: MerkleHasher, lo: number, hi: number, m: number, c: Cursor, out: Uint8Array[]): void {
  if (!(lo < m && m <= hi)) throw new Error('merkle: bad math in treeProof');
  if (m === hi) {
    // lo == 0: this subtree is the old tree, whose hash the verifier knows.
    if (lo !== 0) out.push(subTreeHash(h, lo, hi, c));
    return;
  }
  const [k] = maxpow2(hi - lo);
  if (m <= lo + k) {
    treeProof(h, lo, lo + k, m, c, out);
    out.push(subTreeHash(h, lo + k, hi, c));
  } else {
    const left = subTreeHash(h, lo, lo + k, c);
    treeProof(h, lo + k, hi, m, c, out);
    out.push(left);
  }
}

/** The stored-hash indexes consistencyProof(h, m, n, reader) reads. */
export function consistencyProofIndexes(m: number, n: number): number[] {
  checkSize('tree size', n, 1);
  checkSize('old tree size', m, 1, n);
  return treeProofIndex(0, n, m, []);
}

/**
 * The RFC 9162 §2.1.4.1 consistency proof between the trees of the first m and the first n
 * records, 1 <= m <= n (empty when m == n).
 */
export function consistencyProof(h: MerkleHasher, m: number, n: number, reader: HashReader): Uint8Array[] {
  const indexes = consistencyProofIndexes(m, n);
  const c = new Cursor(read(reader, indexes));
  const proof: Uint8Array[] = [];
  treeProof(h, 0, n, m, c, proof);
  c.done();
  return proof;
}

// ---------------------------------------------------------------------------------------------
// Verifiers (RFC 9162 §2.1.3.2 and §2.1.4.2, with transparency-dev/merkle's input checks)

function badProof(message: string): never {
  throw new RendezvousError('log.bad_proof', `Merkle proof does not verify: ${message}`);
}

/**
 * Verifiers are total: whatever they are given, they return or throw `log.bad_proof`. A size or
 * index that is not a non-negative safe integer (e.g. a u64 that wrapped below zero, or one
 * past 2^53 that JSON rounded) names no tree this code can hold, so it fails the proof.
 */
function checkVerifierInt(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) badProof(`${name} is not a non-negative safe integer`);
}

function checkProofElements(proof: readonly Uint8Array[]): void {
  if (!Array.isArray(proof)) badProof('proof is not an array');
  for (const p of proof) {
    if (!(p instanceof Uint8Array) || p.length !== HASH_SIZE) badProof('proof element is not 32 bytes');
  }
}

/**
 * transparency-dev/merkle decompInclProof: the inclusion proof of `index` in a tree of `size`
 * has `inner` elements below the point where the paths to `index` and `size - 1` meet, and
 * `border` elements above it.
 */
function decompInclProof(index: number, size: number): { inner: number; border: number } {
  const i = BigInt(index);
  const inner = (i ^ BigInt(size - 1)).toString(2).replace(/^0$/, '').length;
  let border = 0;
  for (let x = i >> BigInt(inner); x > 0n; x >>= 1n) border += Number(x & 1n);
  return { inner, border };
}

/**
 * Verifies that `leafHash` is the leaf at `index` in the tree of `size` leaves whose root is
 * `root`, given the inclusion proof `proof` (RFC 9162 §2.1.3.2). Throws `log.bad_proof` unless
 * it verifies, for any input (an index or size that is not a non-negative safe integer too).
 */
export function verifyInclusion(
  h: MerkleHasher,
  index: number,
  size: number,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): void {
  checkVerifierInt('index', index);
  checkVerifierInt('size', size);
  // transparency-dev/merkle input checks.
  if (index >= size) badProof('index is beyond the tree size');
  if (!(leafHash instanceof Uint8Array) || leafHash.length !== HASH_SIZE) badProof('leaf hash is not 32 bytes');
  checkProofElements(proof);
  const { inner, border } = decompInclProof(index, size);
  if (proof.length !== inner + border) badProof('wrong proof length');

  // RFC 9162 §2.1.3.2.
  // 1. leaf_index < tree_size was checked above.
  // 2. Set fn to leaf_index and sn to tree_size - 1.
  let fn = index;
  let sn = size - 1;
  // 3. Set r to hash.
  let r = leafHash;
  // 4. For each value p in the inclusion_path array:
  for (const p of proof) {
    // a. If sn is 0, then stop the iteration and fail the proof verification.
    if (sn === 0) badProof('proof is too long');
    // b. If LSB(fn) is set, or if fn is equal to sn, then:
    if (isOdd(fn) || fn === sn) {
      // i. Set r to HASH(0x01 || p || r).
      r = nodeHash(h, p, r);
      // ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either LSB(fn)
      //     is set or fn is 0.
      if (!isOdd(fn)) {
        while (!isOdd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      // Otherwise: i. Set r to HASH(0x01 || r || p).
      r = nodeHash(h, r, p);
    }
    // c. Finally, right-shift both fn and sn one time.
    fn = half(fn);
    sn = half(sn);
  }
  // 5. Compare sn to 0. Compare r against the root_hash.
  if (sn !== 0) badProof('proof is too short');
  if (!(root instanceof Uint8Array) || !equal(r, root)) badProof('root does not match');
}

/**
 * Verifies that the tree of `size1` leaves with root `root1` is a prefix of the tree of `size2`
 * leaves with root `root2`, given the consistency proof `proof` (RFC 9162 §2.1.4.2). Throws
 * `log.bad_proof` unless it verifies. As in transparency-dev/merkle, size1 == 0 is rejected
 * (even 0 → 0: every tree extends the empty tree, so such a check proves nothing), and
 * size1 == size2 verifies only with an empty proof and equal roots.
 */
export function verifyConsistency(
  h: MerkleHasher,
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): void {
  checkVerifierInt('size1', size1);
  checkVerifierInt('size2', size2);
  checkProofElements(proof);
  if (!(root1 instanceof Uint8Array) || !(root2 instanceof Uint8Array)) badProof('root is not bytes');
  // transparency-dev/merkle input checks.
  if (size1 === 0) badProof('size1 is 0');
  if (size2 < size1) badProof('size2 is smaller than size1');
  if (size1 === size2) {
    if (proof.length !== 0) badProof('sizes are equal but the proof is not empty');
    if (!equal(root1, root2)) badProof('sizes are equal but the roots differ');
    return;
  }
  // 1. If consistency_path is an empty array, stop and fail the proof verification.
  if (proof.length === 0) badProof('empty proof');
  const { inner: fullInner, border } = decompInclProof(size1 - 1, size2);
  const shift = trailingZeros(size1);
  const inner = fullInner - shift;
  const firstIsPow2 = size1 === 2 ** shift;
  if (proof.length !== (firstIsPow2 ? 0 : 1) + inner + border) badProof('wrong proof length');

  // RFC 9162 §2.1.4.2.
  // 2. If first is an exact power of 2, then prepend first_hash to the consistency_path array.
  const path = firstIsPow2 ? [root1, ...proof] : proof;
  // 3. Set fn to first - 1 and sn to second - 1.
  let fn = size1 - 1;
  let sn = size2 - 1;
  // 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
  while (isOdd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  // 5. Set both fr and sr to the first value in the consistency_path array.
  let fr = path[0]!;
  let sr = path[0]!;
  // 6. For each subsequent value c in the consistency_path array:
  for (let i = 1; i < path.length; i++) {
    const c = path[i]!;
    // a. If sn is 0, then stop the iteration and fail the proof verification.
    if (sn === 0) badProof('proof is too long');
    // b. If LSB(fn) is set, or if fn is equal to sn, then:
    if (isOdd(fn) || fn === sn) {
      // i. Set fr to HASH(0x01 || c || fr).  ii. Set sr to HASH(0x01 || c || sr).
      fr = nodeHash(h, c, fr);
      sr = nodeHash(h, c, sr);
      // iii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
      //      LSB(fn) is set or fn is 0.
      if (!isOdd(fn)) {
        while (!isOdd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      // Otherwise: i. Set sr to HASH(0x01 || sr || c).
      sr = nodeHash(h, sr, c);
    }
    // c. Finally, right-shift both fn and sn one time.
    fn = half(fn);
    sn = half(sn);
  }
  // 7. Verify that fr equals first_hash, sr equals second_hash, and sn is 0.
  if (sn !== 0) badProof('proof is too short');
  if (!equal(fr, root1)) badProof('old root does not match');
  if (!equal(sr, root2)) badProof('new root does not match');
}

// ---------------------------------------------------------------------------------------------
// In-memory log

const ROOT_CACHE_SIZE = 256;

/**
 * The reference in-memory store: the tlog stored hashes in one array. Used by tests, by
 * clients that mirror a topic log, and as the model a server store must agree with.
 */
export class MemoryLog implements HashReader {
  private readonly h: MerkleHasher;
  private readonly hashes: Uint8Array[] = [];
  private n = 0;
  /**
   * Roots already computed, by size (a verifying mirror asks for the root at each message's
   * head size, and messages sent together share one). Stored hashes are never rewritten, so a
   * root at a size ≤ n never changes; bounded, oldest dropped first; copies in and out.
   */
  private readonly roots = new Map<number, Uint8Array>();

  constructor(h: MerkleHasher) {
    this.h = h;
  }

  /** The number of records. */
  get size(): number {
    return this.n;
  }

  /** The number of stored hashes (storedHashCount(size)). */
  get storedCount(): number {
    return this.hashes.length;
  }

  /** Appends a record; returns its index. */
  append(leafData: Uint8Array): number {
    return this.appendLeafHash(leafHash(this.h, leafData));
  }

  /** Appends a record by its leaf hash; returns its index. */
  appendLeafHash(leaf: Uint8Array): number {
    const n = this.n;
    if (this.hashes.length !== storedHashIndex(0, n)) throw new Error('merkle: MemoryLog is corrupt');
    const add = storedHashesForLeafHash(this.h, n, leaf, this);
    for (const x of add) this.hashes.push(x);
    this.n = n + 1;
    return n;
  }

  readHashes(indexes: number[]): Uint8Array[] {
    return indexes.map((i) => {
      const x = this.hashes[i];
      if (!Number.isSafeInteger(i) || x === undefined) throw new Error(`merkle: stored hash ${i} not in this log`);
      return x;
    });
  }

  /** The leaf hash of record `index`. */
  leafHash(index: number): Uint8Array {
    checkSize('leaf index', index, 0, this.n - 1);
    return this.hashes[storedHashIndex(0, index)]!;
  }

  /** The root of the tree of the first `size` records (default: all). */
  root(size: number = this.n): Uint8Array {
    checkSize('tree size', size, 0, this.n);
    const hit = this.roots.get(size);
    if (hit !== undefined) return hit.slice();
    const root = treeHash(this.h, size, this);
    if (this.roots.size >= ROOT_CACHE_SIZE) this.roots.delete(this.roots.keys().next().value!);
    this.roots.set(size, root.slice());
    return root;
  }

  /** Inclusion proof of record `index` in the tree of the first `size` records. */
  inclusionProof(index: number, size: number = this.n): Uint8Array[] {
    checkSize('tree size', size, 1, this.n);
    return inclusionProof(this.h, index, size, this);
  }

  /** Consistency proof from the tree of the first m records to that of the first n (default: all). */
  consistencyProof(m: number, n: number = this.n): Uint8Array[] {
    checkSize('tree size', n, 1, this.n);
    return consistencyProof(this.h, m, n, this);
  }
}
