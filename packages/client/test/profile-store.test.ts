/**
 * The profile stores: memory, file and IndexedDB backends, with and without encryption at rest;
 * the encrypted format (wrong passphrase, tampering, swapped parts), file permissions, atomic
 * writes under crashes, the cross-process lock, and a scan proving no secret reaches the disk in
 * the clear when a passphrase is set.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { IDBFactory } from 'fake-indexeddb';
import { RendezvousError, toBase64url, toHex, type ErrorCode } from '@rendezvous/protocol';
import {
  DEFAULT_SCRYPT,
  MemoryProfileStore,
  checkPartName,
  encryptedProfileStore,
  isEncryptedProfile,
  openProfileStore,
  plaintextProfileStore,
  reencryptProfile,
  type ProfileStore,
  type ScryptParams,
} from '../src/profile-store.ts';
import { FileProfileStore, defaultProfileDir } from '../src/node/index.ts';
import { IdbProfileStore } from '../src/browser/idb-store.ts';
import { Secret } from '../src/secret.ts';

const repoRoot = resolve(import.meta.dirname, '..', '..', '..');
const CHILD = join(import.meta.dirname, 'profile-lock-child.ts');
/** Cheap parameters for most tests (the defaults are measured once below). */
const FAST: ScryptParams = { logN: 10, r: 8, p: 1 };

let scratch: string;
before(() => {
  scratch = mkdtempSync(join(tmpdir(), 'rvz-profile-'));
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});
let dirCount = 0;
function freshDir(): string {
  return join(scratch, `p${++dirCount}`);
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, reason?: string): Promise<RendezvousError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof RendezvousError, `expected RendezvousError(${code}), got ${String(caught)}`);
  assert.equal(caught.code, code, `code (message: ${caught.message})`);
  if (reason !== undefined) assert.equal(caught.details?.reason, reason, 'details.reason');
  return caught;
}

function bytes(n: number, fill?: number): Uint8Array {
  return fill === undefined ? new Uint8Array(randomBytes(n)) : new Uint8Array(n).fill(fill);
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Every form in which `secret` could sit in a file: raw, hex (both cases), base64url, base64. */
function leakForms(secret: Uint8Array): { form: string; needle: Uint8Array }[] {
  const b64 = Buffer.from(secret).toString('base64');
  return [
    { form: 'raw', needle: secret },
    { form: 'hex', needle: Buffer.from(toHex(secret)) },
    { form: 'HEX', needle: Buffer.from(toHex(secret).toUpperCase()) },
    { form: 'base64url', needle: Buffer.from(toBase64url(secret)) },
    { form: 'base64', needle: Buffer.from(b64.replace(/=+$/, '')) },
  ];
}

function leaksIn(hay: Uint8Array, secret: Uint8Array): string[] {
  return leakForms(secret)
    .filter(({ needle }) => indexOf(hay, needle) !== -1)
    .map(({ form }) => form);
}

/** The conformance checks every backend must pass, bare or wrapped. */
async function roundTrip(store: ProfileStore, label: string): Promise<void> {
  assert.equal(await store.load(), null, `${label}: empty profile loads as null`);
  assert.deepEqual(await store.listParts(), [], `${label}: no parts yet`);
  assert.equal(await store.loadPart('topic-1'), null, `${label}: missing part is null`);
  const doc1 = bytes(1000);
  await store.save(doc1);
  assert.deepEqual(await store.load(), doc1, `${label}: document round trip`);
  const doc2 = bytes(0);
  await store.save(doc2);
  assert.deepEqual(await store.load(), doc2, `${label}: empty document replaces the first`);
  const big = bytes(300_000);
  await store.savePart('topic-1', big);
  await store.savePart('a', bytes(1, 7));
  await store.savePart('z-9', bytes(5, 9));
  assert.deepEqual(await store.loadPart('topic-1'), big, `${label}: part round trip`);
  assert.deepEqual(await store.listParts(), ['a', 'topic-1', 'z-9'], `${label}: listParts sorted`);
  await store.savePart('a', bytes(2, 8));
  assert.deepEqual(await store.loadPart('a'), bytes(2, 8), `${label}: part replaced`);
  await store.deletePart('a');
  await store.deletePart('a'); // no error when absent
  assert.equal(await store.loadPart('a'), null, `${label}: deleted part is gone`);
  assert.deepEqual(await store.listParts(), ['topic-1', 'z-9'], `${label}: listParts after delete`);
  assert.deepEqual(await store.load(), doc2, `${label}: document untouched by parts`);
  // Copies: mutating what was saved or loaded does not change the store.
  const doc3 = bytes(10, 1);
  await store.save(doc3);
  doc3.fill(2);
  const loaded = (await store.load())!;
  assert.deepEqual(loaded, bytes(10, 1), `${label}: save copies its input`);
  loaded.fill(3);
  assert.deepEqual(await store.load(), bytes(10, 1), `${label}: load returns a copy`);
  for (const bad of ['', 'A', 'a/b', '../x', 'a.b', 'part:x', 'é', 'x'.repeat(65)]) {
    await rejectsWith(store.loadPart(bad), 'encoding.bad_value');
    await rejectsWith(store.savePart(bad, bytes(1)), 'encoding.bad_value');
    await rejectsWith(store.deletePart(bad), 'encoding.bad_value');
  }
  await store.savePart('x'.repeat(64), bytes(3, 3));
  assert.deepEqual(await store.loadPart('x'.repeat(64)), bytes(3, 3), `${label}: 64-character part name`);
}

describe('part names', () => {
  test('[a-z0-9-]{1,64} only', () => {
    for (const ok of ['a', '0', 'topic-abc-123', 'x'.repeat(64)]) checkPartName(ok);
    for (const bad of ['', 'A', 'a_b', 'a b', '.', '..', 'a/b', 'x'.repeat(65)]) {
      assert.throws(() => checkPartName(bad), (e: unknown) => e instanceof RendezvousError && e.code === 'encoding.bad_value');
    }
  });
});

describe('round trips', () => {
  test('memory store', async () => {
    await roundTrip(new MemoryProfileStore(), 'memory');
  });
  test('memory store, encrypted', async () => {
    const inner = new MemoryProfileStore();
    await roundTrip(encryptedProfileStore(inner, 'correct horse', { kdf: FAST }), 'memory+enc');
    assert.ok(isEncryptedProfile((await inner.load())!), 'the inner document is in the encrypted format');
    assert.ok(isEncryptedProfile((await inner.loadPart('topic-1'))!), 'the inner part is in the encrypted format');
    const again = encryptedProfileStore(inner, 'correct horse', { kdf: FAST });
    assert.deepEqual(await again.load(), bytes(10, 1), 'a new store instance with the passphrase reads it');
  });
  test('file store', async () => {
    const dir = freshDir();
    await roundTrip(new FileProfileStore(dir), 'file');
    assert.deepEqual(await new FileProfileStore(dir).load(), bytes(10, 1), 'a new instance reads the file');
  });
  test('file store, encrypted', async () => {
    const dir = freshDir();
    await roundTrip(encryptedProfileStore(new FileProfileStore(dir), 'pw', { kdf: FAST }), 'file+enc');
    const again = encryptedProfileStore(new FileProfileStore(dir), 'pw', { kdf: FAST });
    assert.deepEqual(await again.load(), bytes(10, 1), 'a new instance with the passphrase reads it');
  });
  test('IndexedDB store (fake-indexeddb)', async () => {
    const factory = new IDBFactory();
    const store = new IdbProfileStore('rvz-test', factory);
    await roundTrip(store, 'idb');
    await store.close();
    const again = new IdbProfileStore('rvz-test', factory);
    assert.deepEqual(await again.load(), bytes(10, 1), 'a new connection reads the saved document');
    assert.deepEqual(await again.listParts(), ['topic-1', 'x'.repeat(64), 'z-9'], 'and lists the parts');
    await again.close();
  });
  test('IndexedDB store, encrypted', async () => {
    const factory = new IDBFactory();
    const idb = new IdbProfileStore('rvz-enc', factory);
    await roundTrip(encryptedProfileStore(idb, 'pw', { kdf: FAST }), 'idb+enc');
    assert.ok(isEncryptedProfile((await idb.load())!), 'IndexedDB holds the encrypted format');
    const again = encryptedProfileStore(new IdbProfileStore('rvz-enc', factory), 'pw', { kdf: FAST });
    assert.deepEqual(await again.load(), bytes(10, 1), 'a new connection with the passphrase reads it');
    await idb.close();
  });
  test('IndexedDB withLock serializes calls', async () => {
    const store = new IdbProfileStore('rvz-lock', new IDBFactory());
    const order: string[] = [];
    await Promise.all([
      store.withLock(async () => {
        order.push('a1');
        await new Promise((r) => setTimeout(r, 20));
        order.push('a2');
      }),
      store.withLock(async () => {
        order.push('b1');
        order.push('b2');
      }),
    ]);
    assert.deepEqual(order, ['a1', 'a2', 'b1', 'b2'], 'the second call ran after the first');
    await store.close();
  });
  test('defaultProfileDir: RENDEZVOUS_PROFILE, else ~/.rendezvous/profile', () => {
    assert.equal(defaultProfileDir({ RENDEZVOUS_PROFILE: '/x/y' }), '/x/y');
    assert.ok(defaultProfileDir({}).endsWith(join('.rendezvous', 'profile')), 'default under the home directory');
  });
});

describe('encrypted format', () => {
  test(`scrypt with the default parameters: cost measured, key derived once per store`, async () => {
    const inner = new MemoryProfileStore();
    const store = encryptedProfileStore(inner, 'a passphrase');
    let t = performance.now();
    await store.save(bytes(100));
    const first = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < 20; i++) await store.save(bytes(100));
    for (let i = 0; i < 20; i++) await store.savePart(`p${i}`, bytes(100));
    const next = performance.now() - t;
    t = performance.now();
    const reader = encryptedProfileStore(inner, 'a passphrase');
    await reader.load();
    const open = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < 20; i++) await reader.loadPart(`p${i}`);
    await reader.save(bytes(10));
    const reads = performance.now() - t;
    const { logN, r, p } = DEFAULT_SCRYPT;
    console.log(
      `scrypt N=2^${logN} r=${r} p=${p} (${(128 * r * 2 ** logN) / 2 ** 20} MiB): first save ${first.toFixed(0)} ms, ` +
        `open by a new store ${open.toFixed(0)} ms; 40 further writes ${next.toFixed(0)} ms, 20 reads + 1 write ${reads.toFixed(0)} ms`,
    );
    const header = (await inner.load())!;
    assert.deepEqual([...header.subarray(4, 9)], [1, 1, logN, r, p], 'version, kdf and parameters in the header');
    assert.ok(first > 100, `the default parameters are not trivially cheap (${first} ms)`);
    assert.ok(next < first && reads < open, 'later operations reuse the derived key (no scrypt per operation)');
  });

  test('layout: magic, version, kdf params, salt, nonce, ciphertext; fresh nonce per write', async () => {
    const inner = new MemoryProfileStore();
    const store = encryptedProfileStore(inner, 'pw', { kdf: FAST });
    await store.save(bytes(50, 5));
    const a = (await inner.load())!;
    await store.save(bytes(50, 5));
    const b = (await inner.load())!;
    assert.equal(Buffer.from(a.subarray(0, 4)).toString(), 'RVZP');
    assert.deepEqual([...a.subarray(4, 9)], [1, 1, 10, 8, 1], 'version 1, scrypt, logN, r, p');
    assert.equal(a.length, 4 + 1 + 4 + 16 + 24 + 50 + 16, 'header, salt, nonce, ciphertext and tag');
    assert.deepEqual(a.subarray(9, 25), b.subarray(9, 25), 'one salt per profile');
    assert.notDeepEqual(a.subarray(25, 49), b.subarray(25, 49), 'a fresh nonce per write');
    assert.ok(isEncryptedProfile(a) && !isEncryptedProfile(bytes(50, 5)) && !isEncryptedProfile(new Uint8Array(0)), 'isEncryptedProfile');
  });

  test('wrong passphrase → crypto.decrypt_failed, and it never overwrites the profile', async () => {
    const inner = new MemoryProfileStore();
    await encryptedProfileStore(inner, 'right', { kdf: FAST }).save(bytes(20, 1));
    await encryptedProfileStore(inner, 'right', { kdf: FAST }).savePart('t', bytes(20, 2));
    const before = (await inner.load())!;
    const wrong = encryptedProfileStore(inner, 'wrong', { kdf: FAST });
    const e = await rejectsWith(wrong.load(), 'crypto.decrypt_failed');
    assert.equal(e.message, 'wrong passphrase or damaged profile');
    await rejectsWith(wrong.loadPart('t'), 'crypto.decrypt_failed');
    await rejectsWith(wrong.save(bytes(20, 9)), 'crypto.decrypt_failed');
    await rejectsWith(wrong.savePart('u', bytes(20, 9)), 'crypto.decrypt_failed');
    assert.deepEqual(await inner.load(), before, 'the document is untouched');
    assert.deepEqual(await inner.listParts(), ['t'], 'no part was written');
    // NFC: the same passphrase typed composed or decomposed opens the profile.
    const nfc = new MemoryProfileStore();
    await encryptedProfileStore(nfc, 'caf\u00e9', { kdf: FAST }).save(bytes(3, 3));
    assert.deepEqual(await encryptedProfileStore(nfc, 'cafe\u0301', { kdf: FAST }).load(), bytes(3, 3), 'NFC-normalized');
    assert.deepEqual(await encryptedProfileStore(nfc, new Secret(Buffer.from('caf\u00e9')), { kdf: FAST }).load(), bytes(3, 3), 'Secret passphrase');
    await rejectsWith((async () => encryptedProfileStore(nfc, ''))(), 'crypto.bad_key');
  });

  test('tampering with any byte → crypto.decrypt_failed', async () => {
    const inner = new MemoryProfileStore();
    await encryptedProfileStore(inner, 'pw', { kdf: FAST }).save(bytes(40, 4));
    const good = (await inner.load())!;
    const cases: [string, number, number][] = [
      ['magic', 0, 0x01],
      ['version → 0', 4, 0x01],
      ['kdf id', 5, 0x02],
      ['logN (cheaper)', 6, 0x01],
      ['logN (out of range)', 6, 0xff],
      ['r', 7, 0x01],
      ['p', 8, 0x02],
      ['salt first', 9, 0x80],
      ['salt last', 24, 0x01],
      ['nonce first', 25, 0x01],
      ['nonce last', 48, 0x40],
      ['ciphertext', 49, 0x01],
      ['ciphertext middle', 70, 0x10],
      ['tag last', good.length - 1, 0x01],
    ];
    for (const [what, at, xor] of cases) {
      const bad = good.slice();
      bad[at]! ^= xor;
      await inner.save(bad);
      await rejectsWith(encryptedProfileStore(inner, 'pw', { kdf: FAST }).load(), 'crypto.decrypt_failed').catch((e) => {
        throw new Error(`${what}: ${String(e)}`);
      });
    }
    for (const n of [0, 4, 25, 48, 49 + 15]) {
      await inner.save(good.subarray(0, n));
      await rejectsWith(encryptedProfileStore(inner, 'pw', { kdf: FAST }).load(), 'crypto.decrypt_failed');
    }
    await inner.save(Uint8Array.from([...good, 0]));
    await rejectsWith(encryptedProfileStore(inner, 'pw', { kdf: FAST }).load(), 'crypto.decrypt_failed');
    // A newer format version is reported as such.
    const newer = good.slice();
    newer[4] = 2;
    await inner.save(newer);
    await rejectsWith(encryptedProfileStore(inner, 'pw', { kdf: FAST }).load(), 'encoding.unknown_version');
    await inner.save(good);
    assert.deepEqual(await encryptedProfileStore(inner, 'pw', { kdf: FAST }).load(), bytes(40, 4), 'the untouched file opens');
  });

  test('swapped part files, or a part in place of the document → refused (AAD binds the name)', async () => {
    const dir = freshDir();
    const store = encryptedProfileStore(new FileProfileStore(dir), 'pw', { kdf: FAST });
    await store.save(bytes(30, 0));
    await store.savePart('alice', bytes(30, 1));
    await store.savePart('bob', bytes(30, 2));
    const parts = join(dir, 'parts');
    renameSync(join(parts, 'alice'), join(parts, 'tmp'));
    renameSync(join(parts, 'bob'), join(parts, 'alice'));
    renameSync(join(parts, 'tmp'), join(parts, 'bob'));
    const fresh = encryptedProfileStore(new FileProfileStore(dir), 'pw', { kdf: FAST });
    await rejectsWith(fresh.loadPart('alice'), 'crypto.decrypt_failed', 'wrong_passphrase_or_damaged');
    await rejectsWith(fresh.loadPart('bob'), 'crypto.decrypt_failed', 'wrong_passphrase_or_damaged');
    writeFileSync(join(dir, 'profile.bin'), readFileSync(join(parts, 'bob')));
    await rejectsWith(fresh.load(), 'crypto.decrypt_failed', 'wrong_passphrase_or_damaged');
  });

  test('plaintext profile with a passphrase, encrypted profile without → clear errors, nothing overwritten', async () => {
    const plain = new MemoryProfileStore();
    await plain.save(bytes(10, 1));
    await plain.savePart('t', bytes(10, 2));
    const e1 = await rejectsWith(openProfileStore(plain, 'pw', { kdf: FAST }).load(), 'crypto.decrypt_failed', 'not_encrypted');
    assert.match(e1.message, /not encrypted.*without a passphrase/);
    await rejectsWith(openProfileStore(plain, 'pw', { kdf: FAST }).loadPart('t'), 'crypto.decrypt_failed', 'not_encrypted');
    await rejectsWith(openProfileStore(plain, 'pw', { kdf: FAST }).save(bytes(10, 9)), 'crypto.decrypt_failed', 'not_encrypted');
    assert.deepEqual(await plain.load(), bytes(10, 1), 'the plaintext profile is not overwritten');

    const enc = new MemoryProfileStore();
    await encryptedProfileStore(enc, 'pw', { kdf: FAST }).save(bytes(10, 3));
    await encryptedProfileStore(enc, 'pw', { kdf: FAST }).savePart('t', bytes(10, 4));
    const before = (await enc.load())!;
    const e2 = await rejectsWith(openProfileStore(enc, undefined).load(), 'crypto.decrypt_failed', 'encrypted');
    assert.match(e2.message, /encrypted: give its passphrase.*RENDEZVOUS_PASSPHRASE/);
    await rejectsWith(plaintextProfileStore(enc).loadPart('t'), 'crypto.decrypt_failed', 'encrypted');
    await rejectsWith(plaintextProfileStore(enc).save(bytes(10, 9)), 'crypto.decrypt_failed', 'encrypted');
    await rejectsWith(plaintextProfileStore(enc).savePart('u', bytes(10, 9)), 'crypto.decrypt_failed', 'encrypted');
    assert.deepEqual(await enc.load(), before, 'the encrypted profile is not overwritten');
    // Without a passphrase, a plaintext profile simply works.
    await roundTrip(openProfileStore(new MemoryProfileStore(), undefined), 'plaintext guard');
  });

  test('reencryptProfile: encrypt, change passphrase, raise parameters, decrypt; resumable', async () => {
    const inner = new MemoryProfileStore();
    await inner.save(bytes(10, 1));
    await inner.savePart('a', bytes(10, 2));
    await inner.savePart('b', bytes(10, 3));
    await reencryptProfile(inner, undefined, 'one', { kdf: FAST });
    const check = async (pass: string | undefined, label: string) => {
      const s = openProfileStore(inner, pass, { kdf: FAST });
      assert.deepEqual(await s.load(), bytes(10, 1), `${label}: document`);
      assert.deepEqual(await s.loadPart('a'), bytes(10, 2), `${label}: part a`);
      assert.deepEqual(await s.loadPart('b'), bytes(10, 3), `${label}: part b`);
    };
    await check('one', 'encrypted');
    await reencryptProfile(inner, 'one', 'two', { kdf: FAST });
    await check('two', 'passphrase changed');
    await rejectsWith(openProfileStore(inner, 'one', { kdf: FAST }).load(), 'crypto.decrypt_failed');
    await reencryptProfile(inner, 'two', 'two', { kdf: { logN: 11, r: 8, p: 1 } });
    assert.equal((await inner.load())![6], 11, 'raised logN in the header');
    await check('two', 'parameters raised');
    // Interrupted: part a already under 'three', the rest still under 'two'.
    const partial = new MemoryProfileStore();
    await encryptedProfileStore(partial, 'two', { kdf: FAST }).save(bytes(5, 5));
    await encryptedProfileStore(partial, 'two', { kdf: FAST }).savePart('b', bytes(5, 6));
    const a3 = new MemoryProfileStore();
    await encryptedProfileStore(a3, 'three', { kdf: FAST }).savePart('a', bytes(5, 7));
    await partial.savePart('a', (await a3.loadPart('a'))!);
    await reencryptProfile(partial, 'two', 'three', { kdf: FAST });
    const s3 = encryptedProfileStore(partial, 'three', { kdf: FAST });
    assert.deepEqual([await s3.load(), await s3.loadPart('a'), await s3.loadPart('b')], [bytes(5, 5), bytes(5, 7), bytes(5, 6)], 'resumed');
    await reencryptProfile(inner, 'two', undefined);
    await check(undefined, 'decrypted');
    assert.ok(!isEncryptedProfile((await inner.load())!), 'plaintext again');
  });
});

describe('file store on disk', () => {
  const mode = (p: string) => statSync(p).mode & 0o777;

  test('modes: directories 0700, files 0600, whatever the umask', async () => {
    const old = process.umask(0o000);
    try {
      const dir = join(freshDir(), 'nested', 'profile');
      const { store, created, tightened } = await FileProfileStore.open(dir);
      assert.equal(created, true);
      assert.deepEqual(tightened, []);
      await store.save(bytes(10));
      await store.savePart('t', bytes(10));
      await store.withLock(async () => {
        assert.equal(mode(store.lockPath), 0o600, 'lock file 0600');
      });
      assert.equal(mode(dir), 0o700, 'profile dir 0700');
      assert.equal(mode(join(dir, '..')), 0o700, 'created parents 0700');
      assert.equal(mode(join(dir, 'parts')), 0o700, 'parts dir 0700');
      assert.equal(mode(join(dir, 'profile.bin')), 0o600, 'document 0600');
      assert.equal(mode(join(dir, 'parts', 't')), 0o600, 'part 0600');
      assert.deepEqual(readdirSync(dir).sort(), ['parts', 'profile.bin'], 'no temp or lock file left');
    } finally {
      process.umask(old);
    }
  });

  test('an existing looser directory or file is tightened and reported', async () => {
    const dir = freshDir();
    const s1 = new FileProfileStore(dir);
    await s1.save(bytes(10));
    await s1.savePart('t', bytes(10));
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'parts'), 0o777);
    chmodSync(join(dir, 'profile.bin'), 0o644);
    chmodSync(join(dir, 'parts', 't'), 0o640);
    const { tightened, created } = await FileProfileStore.open(dir);
    assert.equal(created, false);
    assert.deepEqual(
      tightened.sort(),
      [dir, join(dir, 'parts'), join(dir, 'parts', 't'), join(dir, 'profile.bin')].sort(),
      'every loose path is reported',
    );
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(join(dir, 'parts')), 0o700);
    assert.equal(mode(join(dir, 'profile.bin')), 0o600);
    assert.equal(mode(join(dir, 'parts', 't')), 0o600);
    assert.deepEqual((await FileProfileStore.open(dir)).tightened, [], 'nothing to tighten the second time');
  });

  test('a crash leaves a temp file behind: load returns the last complete document; the next write cleans it', async () => {
    const dir = freshDir();
    const store = new FileProfileStore(dir);
    await store.save(bytes(100, 1));
    await store.savePart('t', bytes(100, 2));
    const dead = deadPid();
    const strayDoc = join(dir, `.profile.bin.tmp-${dead}-0a1b2c`);
    const strayPart = join(dir, 'parts', `.t.tmp-${dead}-0a1b2c`);
    const liveOther = join(dir, `.profile.bin.tmp-${process.ppid}-99`); // a write in flight elsewhere
    writeFileSync(strayDoc, bytes(37, 9)); // torn: half a document
    writeFileSync(strayPart, bytes(3, 9));
    writeFileSync(liveOther, bytes(3, 9));
    const after = new FileProfileStore(dir);
    assert.deepEqual(await after.load(), bytes(100, 1), 'last complete document');
    assert.deepEqual(await after.listParts(), ['t'], 'temp files are not parts');
    assert.deepEqual(await after.loadPart('t'), bytes(100, 2), 'last complete part');
    await after.save(bytes(100, 3));
    assert.equal(existsSync(strayDoc), false, 'stray temp of a dead process removed by the next save');
    assert.equal(existsSync(liveOther), true, 'a live process’s temp file is left alone');
    assert.equal(existsSync(strayPart), true, 'parts directory untouched by a document save');
    await after.savePart('u', bytes(1));
    assert.equal(existsSync(strayPart), false, 'stray part temp removed by the next part save');
    assert.deepEqual(await after.load(), bytes(100, 3), 'new document');
    rmSync(liveOther);
  });

  test('kill -9 during writes: the profile is always one complete document', async () => {
    const dir = freshDir();
    const size = 4 << 20;
    let sawTemp = 0;
    for (let round = 0; round < 4; round++) {
      const child = spawnChild(['write', dir, String(size)]);
      await waitForLine(child, 'writing');
      await new Promise((r) => setTimeout(r, 30 + Math.floor(Math.random() * 120)));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      if (readdirSync(dir).some((n) => n.includes('.tmp-'))) sawTemp++;
      const doc = (await new FileProfileStore(dir).load())!;
      assert.equal(doc.length, size, 'complete length');
      const i = new DataView(doc.buffer, doc.byteOffset).getUint32(0);
      assert.ok(i >= 1, 'a numbered document');
      assert.ok(doc.subarray(4).every((b) => b === (i & 0xff)), `document ${i} is not torn`);
    }
    await new FileProfileStore(dir).save(bytes(1));
    assert.deepEqual(readdirSync(dir).sort(), ['parts', 'profile.bin'], `temps cleaned after the crashes (seen in ${sawTemp} of 4 rounds)`);
  });
});

describe('profile lock', () => {
  test('a second process gets "profile is in use by process N"; released when the holder ends', async () => {
    const dir = freshDir();
    await new FileProfileStore(dir).prepare();
    const holder = spawnChild(['hold', dir]);
    await waitForLine(holder, 'locked');
    const lock = readFileSync(join(dir, 'profile.lock'), 'utf8');
    assert.equal(lock.split('\n')[0], String(holder.pid), 'lock file holds the pid');
    // From another process…
    const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD, 'try', dir], { cwd: repoRoot, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout.trim()) as { code: string; message: string };
    assert.equal(got.code, 'store.conflict');
    assert.match(got.message, new RegExp(`^profile is in use by process ${holder.pid}\\b`));
    // …and from this one.
    const store = new FileProfileStore(dir, { lockWaitMs: 0 });
    const e = await rejectsWith(store.withLock(async () => 'never'), 'store.conflict');
    assert.match(e.message, new RegExp(`^profile is in use by process ${holder.pid}\\b`));
    assert.equal(e.details?.pid, holder.pid);
    holder.stdin!.end();
    await waitForLine(holder, 'released');
    await new Promise((r) => holder.once('exit', r));
    assert.equal(await store.withLock(async () => 'ran'), 'ran', 'free once the holder released it');
    assert.equal(existsSync(join(dir, 'profile.lock')), false, 'lock file removed on release');
  });

  test('a command waits for a live holder that lets go, instead of failing at once', async () => {
    const dir = freshDir();
    await new FileProfileStore(dir).prepare();
    const holder = spawnChild(['hold', dir]);
    const exited = new Promise((r) => holder.once('exit', r));
    await waitForLine(holder, 'locked');
    const store = new FileProfileStore(dir, { lockWaitMs: 10_000 });
    const waiting = store.withLock(async () => 'ran after the holder');
    await new Promise((r) => setTimeout(r, 300));
    holder.stdin!.end();
    assert.equal(await waiting, 'ran after the holder');
    await exited;
  });

  test('a lock left by a killed process is taken over', async () => {
    const dir = freshDir();
    await new FileProfileStore(dir).prepare();
    const holder = spawnChild(['hold', dir]);
    await waitForLine(holder, 'locked');
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    assert.ok(existsSync(join(dir, 'profile.lock')), 'the killed process left its lock behind');
    const store = new FileProfileStore(dir);
    assert.equal(await store.withLock(async () => readFileSync(store.lockPath, 'utf8').split('\n')[0]), String(process.pid), 'taken over');
  });

  test('stale lock of a dead pid taken over; another host’s lock or a fresh unreadable one is not', async () => {
    const dir = freshDir();
    const store = new FileProfileStore(dir, { lockWaitMs: 0 });
    await store.prepare();
    const { hostname } = await import('node:os');
    writeFileSync(store.lockPath, `${deadPid()}\n${hostname()}\n`);
    assert.equal(await store.withLock(async () => 1), 1, 'dead pid: taken over');
    writeFileSync(store.lockPath, `${deadPid()}\nsome-other-host\n`);
    const e = await rejectsWith(store.withLock(async () => 1), 'store.conflict');
    assert.match(e.message, /in use by process \d+ on host some-other-host/);
    writeFileSync(store.lockPath, '');
    await rejectsWith(store.withLock(async () => 1), 'store.conflict');
    const old = new Date(Date.now() - 60_000);
    utimesSync(store.lockPath, old, old);
    assert.equal(await store.withLock(async () => 2), 2, 'an old unreadable lock (creator crashed) is taken over');
    // Our own pid in the lock but not held by us (pid reuse after a container restart): stale.
    writeFileSync(store.lockPath, `${process.pid}\n${hostname()}\n`);
    assert.equal(await store.withLock(async () => 3), 3, 'own pid, not held: taken over');
  });

  test('in one process: calls queue, nested calls run directly', async () => {
    const dir = freshDir();
    const a = new FileProfileStore(dir);
    const b = new FileProfileStore(dir);
    const order: string[] = [];
    await Promise.all([
      a.withLock(async () => {
        order.push('a1');
        await new Promise((r) => setTimeout(r, 30));
        assert.equal(await a.withLock(async () => 'nested'), 'nested');
        order.push('a2');
      }),
      b.withLock(async () => {
        order.push('b');
      }),
    ]);
    assert.deepEqual(order, ['a1', 'a2', 'b'], 'serialized');
    await rejectsWith(
      a.withLock(async () => {
        throw new RendezvousError('request.bad_field', 'boom');
      }),
      'request.bad_field',
    );
    assert.equal(await b.withLock(async () => 'ok'), 'ok', 'a failing fn releases the lock');
  });

  test('encrypted and plaintext wrappers pass withLock through', async () => {
    const dir = freshDir();
    const enc = encryptedProfileStore(new FileProfileStore(dir), 'pw', { kdf: FAST });
    assert.equal(await enc.withLock!(async () => existsSync(join(dir, 'profile.lock'))), true);
    assert.equal(await plaintextProfileStore(new FileProfileStore(dir)).withLock!(async () => existsSync(join(dir, 'profile.lock'))), true);
  });
});

describe('no secret on disk in the clear with a passphrase', () => {
  test('plaintext profile contains the secret (the scan works); encrypted contains none of its forms', async () => {
    const seed = new Secret(bytes(32));
    const raw = seed.expose();
    // An SDK-like document carrying the seed raw, in hex and in base64url (as JSON would).
    const doc = new Uint8Array(Buffer.concat([Buffer.from('{"seed":"'), Buffer.from(toHex(raw)), Buffer.from('","b64":"'), Buffer.from(toBase64url(raw)), Buffer.from('"}'), raw]));
    const plainDir = freshDir();
    const plain = new FileProfileStore(plainDir);
    await plain.save(doc);
    await plain.savePart('topic', doc);
    const plainFile = readFileSync(join(plainDir, 'profile.bin'));
    for (const form of ['raw', 'hex', 'base64url']) {
      assert.ok(leaksIn(plainFile, raw).includes(form), `sanity: the scan finds the ${form} secret in a plaintext profile`);
      assert.ok(leaksIn(readFileSync(join(plainDir, 'parts', 'topic')), raw).includes(form), `and in a plaintext part (${form})`);
    }

    const encDir = freshDir();
    const enc = encryptedProfileStore(new FileProfileStore(encDir), 'pw', { kdf: FAST });
    await enc.save(doc);
    await enc.savePart('topic', doc);
    for (const f of [join(encDir, 'profile.bin'), join(encDir, 'parts', 'topic')]) {
      const content = readFileSync(f);
      assert.deepEqual(leaksIn(content, raw), [], `${f}: no raw, hex or base64 form of the secret`);
      // Nor any 8-byte window of it.
      for (let i = 0; i + 8 <= raw.length; i++) assert.equal(indexOf(content, raw.subarray(i, i + 8)), -1, `${f}: window ${i}`);
      assert.equal(indexOf(content, Buffer.from('seed')), -1, `${f}: no plaintext structure either`);
    }
    assert.deepEqual(await enc.load(), doc, 'and it decrypts back');
  });
});

// ---------------------------------------------------------------------------------------------

function spawnChild(args: string[]): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'] });
  return child;
}

const lineReaders = new WeakMap<ChildProcess, { lines: string[]; waiters: (() => void)[] }>();

/** Resolves when `child` has printed `line` (lines are remembered, so order of calls does not matter). */
function waitForLine(child: ChildProcess, line: string, timeoutMs = 30_000): Promise<void> {
  let r = lineReaders.get(child);
  if (r === undefined) {
    const state = { lines: [] as string[], waiters: [] as (() => void)[] };
    createInterface({ input: child.stdout! }).on('line', (l) => {
      state.lines.push(l);
      for (const w of state.waiters.splice(0)) w();
    });
    lineReaders.set(child, state);
    r = state;
  }
  const st = r;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child did not print "${line}" in ${timeoutMs} ms`)), timeoutMs);
    const check = () => {
      if (st.lines.includes(line)) {
        clearTimeout(timer);
        resolve();
      } else st.waiters.push(check);
    };
    child.once('exit', (code) => {
      if (!st.lines.includes(line)) {
        clearTimeout(timer);
        reject(new Error(`child exited (${code}) before printing "${line}"`));
      }
    });
    check();
  });
}

/** The pid of a process that has certainly exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(r.stdout);
  assert.ok(Number.isInteger(pid) && pid > 0, 'child pid');
  assert.throws(() => process.kill(pid, 0), 'the child is gone');
  return pid;
}
