/**
 * Files (spec §12): encrypted blobs stored by the server, referenced from messages.
 *
 * A file is encrypted under a fresh random 32-byte key with the STREAM construction (Hoang,
 * Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
 * Misuse-Resistance", CRYPTO 2015) as age uses it (C2SP age §"Payload"): ChaCha20-Poly1305 over
 * 64 KiB chunks, nonce = 11-byte big-endian chunk counter || 1-byte last-chunk flag. A reader
 * can decrypt while streaming, and truncation, reordering or extension is detected.
 *
 * The message that shares the file carries a FileRef: the blob id (SHA-256 of the whole
 * ciphertext, so the server can deduplicate and anyone can check what it serves), the key,
 * the plaintext size, a media type and a name. The server never sees the key.
 */
import { RendezvousError } from './errors.ts';
import { Writer, decodeAll } from './encoding.ts';
import { equal } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';

export const FILE_VERSION = 1;
export const FILE_CHUNK_SIZE = 64 * 1024;
export const FILE_KEY_SIZE = 32;
export const FILE_TAG_SIZE = 16;
/** Spec §12: servers choose their own quota below this. */
export const MAX_FILE_SIZE = 2 ** 40;

export interface FileRef {
  /** SHA-256 of the encrypted blob. */
  blobId: Uint8Array;
  key: Uint8Array;
  /** Plaintext size in bytes. */
  size: number;
  mediaType: string;
  name: string;
}

export function encodeFileRef(f: FileRef): Uint8Array {
  return new Writer(128)
    .u8(FILE_VERSION)
    .fixed(f.blobId, 32)
    .fixed(f.key, FILE_KEY_SIZE)
    .u64(f.size)
    .string(f.mediaType)
    .string(f.name)
    .finish();
}

export function decodeFileRef(b: Uint8Array): FileRef {
  return decodeAll(b, (r) => {
    if (r.u8() !== FILE_VERSION) throw new RendezvousError('encoding.unknown_version');
    const f = { blobId: r.fixed(32), key: r.fixed(FILE_KEY_SIZE), size: r.u64(), mediaType: r.string(255), name: r.string(1024) };
    if (f.size > MAX_FILE_SIZE) throw new RendezvousError('encoding.too_large', 'file too large');
    return f;
  });
}

/** Number of chunks for a plaintext of `size` bytes: an empty file is one empty final chunk. */
export function chunkCount(size: number): number {
  return size === 0 ? 1 : Math.ceil(size / FILE_CHUNK_SIZE);
}

export function encryptedFileSize(size: number): number {
  return size + chunkCount(size) * FILE_TAG_SIZE;
}

/** Plaintext size of a blob of `encryptedSize` bytes, or throws if no plaintext has that size. */
export function plaintextFileSize(encryptedSize: number): number {
  const full = FILE_CHUNK_SIZE + FILE_TAG_SIZE;
  const chunks = Math.max(1, Math.ceil(encryptedSize / full));
  const size = encryptedSize - chunks * FILE_TAG_SIZE;
  if (size < 0 || encryptedFileSize(size) !== encryptedSize) {
    throw new RendezvousError('encoding.bad_value', 'no file encrypts to this size');
  }
  return size;
}

function chunkNonce(counter: number, last: boolean): Uint8Array {
  const n = new Uint8Array(12);
  // Counters up to 2^53 are plenty (2^40-byte files have 2^24 chunks); high bytes stay zero.
  new DataView(n.buffer).setBigUint64(3, BigInt(counter));
  n[11] = last ? 1 : 0;
  return n;
}

/**
 * Seals chunk `counter`. Every chunk but the last is exactly FILE_CHUNK_SIZE bytes; the last
 * is 1..FILE_CHUNK_SIZE bytes, or empty only when it is the only chunk.
 */
export function sealFileChunk(crypto: CryptoProvider, key: Uint8Array, counter: number, last: boolean, chunk: Uint8Array): Uint8Array {
  const ok = last ? chunk.length <= FILE_CHUNK_SIZE && (chunk.length > 0 || counter === 0) : chunk.length === FILE_CHUNK_SIZE;
  if (!ok) throw new RendezvousError('encoding.bad_value', 'chunk has the wrong size for its position');
  return crypto.aeadSeal('chacha20-poly1305', key, chunkNonce(counter, last), new Uint8Array(0), chunk);
}

/** Opens chunk `counter`; `last` is known to the reader from the blob's total size. */
export function openFileChunk(crypto: CryptoProvider, key: Uint8Array, counter: number, last: boolean, sealed: Uint8Array): Uint8Array {
  const pt = crypto.aeadOpen('chacha20-poly1305', key, chunkNonce(counter, last), new Uint8Array(0), sealed);
  if (!last && pt.length !== FILE_CHUNK_SIZE) throw new RendezvousError('crypto.decrypt_failed', 'short chunk before the end');
  if (last && pt.length === 0 && counter > 0) throw new RendezvousError('crypto.decrypt_failed', 'empty last chunk');
  return pt;
}

/** Whole-buffer helpers; clients stream large files chunk by chunk with the functions above. */
export function sealFile(crypto: CryptoProvider, key: Uint8Array, data: Uint8Array): Uint8Array {
  const n = chunkCount(data.length);
  const out = new Uint8Array(encryptedFileSize(data.length));
  for (let i = 0; i < n; i++) {
    const chunk = data.subarray(i * FILE_CHUNK_SIZE, Math.min(data.length, (i + 1) * FILE_CHUNK_SIZE));
    out.set(sealFileChunk(crypto, key, i, i === n - 1, chunk), i * (FILE_CHUNK_SIZE + FILE_TAG_SIZE));
  }
  return out;
}

export function openFile(crypto: CryptoProvider, key: Uint8Array, blob: Uint8Array): Uint8Array {
  let size: number;
  try {
    size = plaintextFileSize(blob.length);
  } catch {
    throw new RendezvousError('crypto.decrypt_failed', 'blob has an impossible size');
  }
  const n = chunkCount(size);
  const out = new Uint8Array(size);
  const full = FILE_CHUNK_SIZE + FILE_TAG_SIZE;
  for (let i = 0; i < n; i++) {
    const sealed = blob.subarray(i * full, Math.min(blob.length, (i + 1) * full));
    out.set(openFileChunk(crypto, key, i, i === n - 1, sealed), i * FILE_CHUNK_SIZE);
  }
  return out;
}

/** Checks a downloaded blob against its FileRef before any of it is trusted (spec §12). */
export function checkBlob(crypto: CryptoProvider, ref: FileRef, blob: Uint8Array): void {
  if (blob.length !== encryptedFileSize(ref.size) || !equal(crypto.sha256(blob), ref.blobId)) {
    throw new RendezvousError('file.bad_blob', 'blob does not match its file reference');
  }
}

/** The FileRef for a sealed blob; the recipient checks it with `checkBlob` when it downloads. */
export function fileRefFor(crypto: CryptoProvider, key: Uint8Array, blob: Uint8Array, mediaType: string, name: string): FileRef {
  return { blobId: crypto.sha256(blob), key, size: plaintextFileSize(blob.length), mediaType, name };
}
