/**
 * File encryption (spec §12): STREAM chunking, FileRef, and every way a blob can be cut,
 * reordered or extended.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import {
  FILE_CHUNK_SIZE,
  FILE_TAG_SIZE,
  checkBlob,
  decodeFileRef,
  encodeFileRef,
  encryptedFileSize,
  fileRefFor,
  openFile,
  plaintextFileSize,
  sealFile,
  sealFileChunk,
} from '../src/file.ts';
import { assertCode } from './helpers.ts';
import { seeded } from './fixtures.ts';
import { concat } from '../src/bytes.ts';

const random = seeded('file.test');
const key = random(32);
const C = FILE_CHUNK_SIZE;

describe('files', () => {
  it('round-trips at chunk boundaries with both providers', () => {
    for (const n of [0, 1, C - 1, C, C + 1, 2 * C, 2 * C + 5]) {
      const data = random(n);
      const blob = sealFile(crypto, key, data);
      assert.equal(blob.length, encryptedFileSize(n));
      assert.equal(plaintextFileSize(blob.length), n);
      assert.deepEqual(sealFile(nobleCrypto, key, data), blob);
      assert.deepEqual(openFile(nobleCrypto, key, blob), data);
    }
  });
  it('rejects truncation, a dropped last chunk, extension, reordering and another key', () => {
    const data = random(2 * C + 10);
    const blob = sealFile(crypto, key, data);
    const full = C + FILE_TAG_SIZE;
    assertCode(() => openFile(crypto, key, blob.subarray(0, 2 * full)), 'crypto.decrypt_failed');
    assertCode(() => openFile(crypto, key, blob.subarray(0, blob.length - 1)), 'crypto.decrypt_failed');
    assertCode(() => openFile(crypto, key, concat(blob, sealFileChunk(crypto, key, 3, true, Uint8Array.of(1)))), 'crypto.decrypt_failed');
    const swapped = concat(blob.subarray(full, 2 * full), blob.subarray(0, full), blob.subarray(2 * full));
    assertCode(() => openFile(crypto, key, swapped), 'crypto.decrypt_failed');
    assertCode(() => openFile(crypto, random(32), blob), 'crypto.decrypt_failed');
  });
  it('refuses to seal an empty last chunk after others, or a short middle chunk', () => {
    assertCode(() => sealFileChunk(crypto, key, 1, true, new Uint8Array(0)), 'encoding.bad_value');
    assertCode(() => sealFileChunk(crypto, key, 0, false, new Uint8Array(10)), 'encoding.bad_value');
  });
  it('FileRef round-trips and names the blob by its hash', () => {
    const blob = sealFile(crypto, key, random(100));
    const ref = fileRefFor(crypto, key, blob, 'image/png', 'cat.png');
    assert.deepEqual(ref.blobId, crypto.sha256(blob));
    assert.equal(ref.size, 100);
    assert.deepEqual(decodeFileRef(encodeFileRef(ref)), ref);
    checkBlob(crypto, ref, blob);
    assertCode(() => checkBlob(crypto, ref, blob.subarray(1)), 'file.bad_blob');
    assertCode(() => checkBlob(crypto, { ...ref, size: 99 }, blob), 'file.bad_blob');
    assertCode(() => checkBlob(crypto, ref, blob.map((b, i) => (i === 0 ? b ^ 1 : b))), 'file.bad_blob');
    const b = encodeFileRef(ref);
    assertCode(() => decodeFileRef(Uint8Array.of(2, ...b.subarray(1))), 'encoding.unknown_version');
  });
});
