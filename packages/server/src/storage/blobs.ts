/**
 * Where the bytes of encrypted file blobs live (protocol §12; docs/server.md §Files). The
 * metadata (who uploaded what, sizes for quotas) is in the Store; this is only the bytes.
 *
 * Blobs are scoped per topic: the same content uploaded to two topics is stored twice, so a
 * blob id learnt in one topic never opens another topic's file, and deleting a topic is one
 * directory removal.
 *
 * The filesystem implementation keeps `ROOT/<topicIdHex>/<blobIdHex>`; an upload streams into
 * `ROOT/tmp/` while it is hashed and counted, and only a complete, verified, fsynced file is
 * renamed into place, so a crash never leaves a partial blob under a real name.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { RendezvousError, isRendezvousError, toHex } from '@rendezvous/protocol';
import { LIMITS, readWithin } from '../limits.ts';

/** A received upload, hashed and counted, waiting in the temp directory. */
export interface StagedBlob {
  /** SHA-256 of the bytes received: the blob id (protocol §12). */
  blobId: Uint8Array;
  size: number;
  /** Moves the file to its place under `topicId` (replacing an identical one); durable on return. */
  commit(): Promise<void>;
  /** Removes the temp file. Idempotent. */
  discard(): Promise<void>;
}

export interface BlobStore {
  /**
   * Streams `body` into a temp file, hashing as it goes. More than `maxBytes` bytes fails with
   * `request.too_large` as soon as the cap is crossed (the body is cancelled, nothing kept);
   * a body that errors (client gone) or sends nothing for `idleMs` fails with `request.timeout`.
   * The caller checks the result, then commits or discards it.
   */
  stage(topicId: Uint8Array, body: ReadableStream<Uint8Array> | null, maxBytes: number, idleMs?: number): Promise<StagedBlob>;
  /** The blob's bytes as a stream (pull-based: read from disk as the client takes them), or null. */
  open(topicId: Uint8Array, blobId: Uint8Array): Promise<{ size: number; stream: ReadableStream<Uint8Array> } | null>;
  /** Removes one blob; absent is fine. */
  delete(topicId: Uint8Array, blobId: Uint8Array): Promise<void>;
  /** Removes every blob of a topic; absent is fine. */
  deleteTopic(topicId: Uint8Array): Promise<void>;
  /**
   * Runs `fn` with no other `lock` of the same blob running in this process: uploads
   * (file, then row) and deletions (row, then file unless a row came back) of one blob must
   * not interleave, or a cleanup could unlink a file another upload just recorded.
   */
  lock<T>(topicId: Uint8Array, blobId: Uint8Array, fn: () => Promise<T>): Promise<T>;
}

/** Reads of a download: large enough to be cheap, small enough to keep memory flat. */
const READ_CHUNK = 64 * 1024;

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}

/** fsync of a directory: makes a rename or a new entry in it survive power loss. */
async function syncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let off = 0; off < chunk.length; ) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

/**
 * Opens the blob store rooted at `root` (the server uses `DATA/blobs`). Leftovers in `tmp`
 * are from uploads a crash or kill interrupted; no request can still own them at startup.
 */
export async function openFsBlobStore(root: string): Promise<FsBlobStore> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  const tmp = join(root, 'tmp');
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { mode: 0o700 });
  return new FsBlobStore(root);
}

export class FsBlobStore implements BlobStore {
  private readonly locks = new Map<string, Promise<void>>();

  constructor(readonly root: string) {}

  private topicDir(topicId: Uint8Array): string {
    // Hex names cannot contain a path separator or collide with `tmp`.
    if (topicId.length === 0) throw new Error('blob store: empty topic id');
    return join(this.root, toHex(topicId));
  }

  private path(topicId: Uint8Array, blobId: Uint8Array): string {
    if (blobId.length !== 32) throw new Error('blob store: a blob id is 32 bytes');
    return join(this.topicDir(topicId), toHex(blobId));
  }

  async stage(topicId: Uint8Array, body: ReadableStream<Uint8Array> | null, maxBytes: number, idleMs = LIMITS.uploadIdleMs): Promise<StagedBlob> {
    const dir = this.topicDir(topicId);
    const tmp = join(this.root, 'tmp', `${toHex(new Uint8Array(randomBytes(16)))}.part`);
    const fh = await open(tmp, 'wx', 0o600);
    const hash = createHash('sha256');
    let size = 0;
    let closed = false;
    const reader = body?.getReader();
    try {
      while (reader !== undefined) {
        const { done, value } = await readWithin(reader, idleMs).catch((e: unknown) => {
          if (isRendezvousError(e)) throw e;
          // The client went away or the server's request timeout cut it off: not a server fault.
          throw new RendezvousError('request.timeout', 'the upload did not arrive complete');
        });
        if (done) break;
        size += value.length;
        if (size > maxBytes) {
          // Stop reading: the edge answers 413 and the HTTP layer drains or closes the socket.
          reader.cancel().catch(() => {});
          throw new RendezvousError('request.too_large', `blob larger than ${maxBytes} bytes`);
        }
        hash.update(value);
        await writeAll(fh, value);
      }
      await fh.sync();
      closed = true;
      await fh.close();
    } catch (e) {
      if (!closed) await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw e;
    }
    const blobId = new Uint8Array(hash.digest());
    const final = this.path(topicId, blobId);
    let done = false;
    return {
      blobId,
      size,
      commit: async () => {
        // A concurrent topic deletion may remove the directory between mkdir and rename: retry.
        for (let attempt = 0; ; attempt++) {
          const created = await mkdir(dir, { mode: 0o700 }).then(
            () => true,
            (e: unknown) => {
              if (isErrno(e, 'EEXIST')) return false;
              throw e;
            },
          );
          if (created) await syncDir(this.root);
          try {
            await rename(tmp, final);
            break;
          } catch (e) {
            if (!isErrno(e, 'ENOENT') || attempt >= 2) throw e;
          }
        }
        done = true;
        await syncDir(dir);
      },
      discard: async () => {
        if (done) return;
        done = true;
        await unlink(tmp).catch((e: unknown) => {
          if (!isErrno(e, 'ENOENT')) throw e;
        });
      },
    };
  }

  async open(topicId: Uint8Array, blobId: Uint8Array): Promise<{ size: number; stream: ReadableStream<Uint8Array> } | null> {
    let fh: FileHandle;
    try {
      fh = await open(this.path(topicId, blobId), 'r');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
    // Size and bytes come from the open descriptor: a deletion meanwhile unlinks the name, not
    // the file this download reads.
    let size: number;
    try {
      size = (await fh.stat()).size;
    } catch (e) {
      await fh.close();
      throw e;
    }
    let position = 0;
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await fh.close();
    };
    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          try {
            const want = Math.min(READ_CHUNK, size - position);
            if (want <= 0) {
              await close();
              controller.close();
              return;
            }
            const buf = new Uint8Array(want);
            const { bytesRead } = await fh.read(buf, 0, want, position);
            if (bytesRead === 0) throw new Error('blob file is shorter than its size');
            position += bytesRead;
            controller.enqueue(bytesRead === want ? buf : buf.subarray(0, bytesRead));
          } catch (e) {
            await close().catch(() => {});
            controller.error(e);
          }
        },
        // The client went away: release the descriptor now rather than at garbage collection.
        async cancel() {
          await close();
        },
      },
      { highWaterMark: 0 },
    );
    return { size, stream };
  }

  async delete(topicId: Uint8Array, blobId: Uint8Array): Promise<void> {
    await unlink(this.path(topicId, blobId)).catch((e: unknown) => {
      if (!isErrno(e, 'ENOENT')) throw e;
    });
  }

  async deleteTopic(topicId: Uint8Array): Promise<void> {
    await rm(this.topicDir(topicId), { recursive: true, force: true });
  }

  async lock<T>(topicId: Uint8Array, blobId: Uint8Array, fn: () => Promise<T>): Promise<T> {
    const key = `${toHex(topicId)}/${toHex(blobId)}`;
    const before = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = before.then(() => mine);
    this.locks.set(key, tail);
    await before;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }
}
