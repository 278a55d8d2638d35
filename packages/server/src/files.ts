/**
 * Files (protocol §12; docs/server.md §Files): encrypted blobs that messages refer to with a
 * FileRef. Domain logic only: no HTTP types. The server never sees a file key; what it checks
 * is what it can: the uploader is a current member who may post, the size is one that some
 * plaintext encrypts to, and the bytes hash to the blob id the client declared, so it never
 * stores or serves a blob under a wrong id (clients check again with `checkBlob`).
 *
 * Bytes live in ctx.blobs, rows in ctx.store. An upload writes the file, then the row; a
 * deletion removes the rows, then the files. Both take the blob's lock for their file-and-row
 * step, so a crash or race can leave at worst an orphan file, never a row without its file.
 */
import { RendezvousError, equal, isRendezvousError, parseUserId, plaintextFileSize, toHex } from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context } from './context.ts';
import { forwardDownload, forwardUpload } from './federation/files.ts';
import type { MemberRow } from './storage/store.ts';

/** The caller's role in the topic: `topic.unknown`, `topic.not_member` otherwise. */
async function roleIn(ctx: Context, topicId: Uint8Array, user: string): Promise<MemberRow['role']> {
  if ((await ctx.store.getTopic(topicId)) === null) throw new RendezvousError('topic.unknown');
  const m = (await ctx.store.getMembers(topicId)).find((x) => x.user === user);
  if (m === undefined) throw new RendezvousError('topic.not_member');
  return m.role;
}

/** The host of a topic this server holds as a replica, or null for a topic hosted here. */
async function hostElsewhere(ctx: Context, topicId: Uint8Array): Promise<string | null> {
  const row = await ctx.store.getTopic(topicId);
  return row !== null && row.host !== ctx.name ? row.host : null;
}

function badBlob(message: string): RendezvousError {
  return new RendezvousError('file.bad_blob', message);
}

/** A size no plaintext encrypts to (protocol §12) can never be opened: refuse it up front. */
function checkSize(size: number): void {
  try {
    plaintextFileSize(size);
  } catch {
    throw badBlob(`no file encrypts to ${size} bytes`);
  }
}

export interface UploadResult {
  blobId: Uint8Array;
  size: number;
  /** False when the topic already had this blob (an idempotent re-upload). */
  created: boolean;
}

/**
 * Stores the blob `expectedBlobId` for `topicId` from `body`, streamed. Checks, in order: the
 * write rate of the device; the topic exists and the caller is a member who may post
 * (observers may not, as for messages, §8.4 #2); a declared length over the per-blob cap
 * (`request.too_large`), of an impossible size (`file.bad_blob`) or over the caller's quota
 * (`blob.quota_exceeded`), all before a byte is read; then, streaming, the same caps; then
 * the size and SHA-256 of what arrived (`file.bad_blob`, nothing stored).
 */
export async function upload(
  ctx: Context,
  caller: Caller,
  topicId: Uint8Array,
  expectedBlobId: Uint8Array,
  body: ReadableStream<Uint8Array> | null,
  declaredLength?: number,
): Promise<UploadResult> {
  ctx.rate.take('write', caller.deviceId);
  if ((await roleIn(ctx, topicId, caller.user)) === 'observer') {
    throw new RendezvousError('topic.read_only', 'observers cannot upload files');
  }
  // A topic hosted elsewhere keeps its files on its host (protocol §17.3): passed through.
  const host = await hostElsewhere(ctx, topicId);
  if (host !== null) return forwardUpload(ctx, host, caller, topicId, expectedBlobId, body, declaredLength);
  const maxBlob = ctx.limits.maxBlobBytes;
  // A re-upload of a blob the topic has charges nobody, so only new blobs count against quota.
  const existing = await ctx.store.getBlob(topicId, expectedBlobId);
  const room = existing === null ? ctx.limits.blobBytesPerUser - (await ctx.store.blobBytesOf(caller.user)) : Infinity;
  const quotaError = () => new RendezvousError('blob.quota_exceeded', `the file would exceed your quota of ${ctx.limits.blobBytesPerUser} bytes`);
  if (declaredLength !== undefined) {
    if (declaredLength > maxBlob) throw new RendezvousError('request.too_large', `a blob is at most ${maxBlob} bytes`);
    checkSize(declaredLength);
    if (declaredLength > room) throw quotaError();
  }

  const cap = Math.max(0, Math.min(maxBlob, room));
  let staged;
  try {
    staged = await ctx.blobs.stage(topicId, body, cap, ctx.limits.uploadIdleMs);
  } catch (e) {
    if (cap < maxBlob && isRendezvousError(e, 'request.too_large')) throw quotaError();
    throw e;
  }
  const { blobId, size } = staged;
  try {
    if (declaredLength !== undefined && size !== declaredLength) throw badBlob('body length differs from content-length');
    checkSize(size);
    if (!equal(blobId, expectedBlobId)) throw badBlob('the blob does not hash to its id');
  } catch (e) {
    await staged.discard();
    throw e;
  }

  const created = await ctx.blobs.lock(topicId, blobId, async () => {
    try {
      await staged.commit();
      const row = { topicId, blobId, size, user: caller.user, deviceId: caller.deviceId, createdAt: ctx.now() };
      return await ctx.store.putBlob(row, ctx.limits.blobBytesPerUser, parseUserId(caller.user).server !== ctx.name);
    } catch (e) {
      try {
        await staged.discard();
        // The file may already be in place; keep it only if a row (another upload's) refers to it.
        if ((await ctx.store.getBlob(topicId, blobId)) === null) await ctx.blobs.delete(topicId, blobId);
      } catch (err) {
        ctx.log.error({ err, topicId: toHex(topicId), blobId: toHex(blobId) }, 'could not clean up after a failed upload');
      }
      throw e;
    }
  });
  ctx.log.info({ topicId: toHex(topicId), blobId: toHex(blobId), size, created }, 'blob uploaded');
  return { blobId, size, created };
}

/** The blob's size if the caller, a current member of the topic (any role), may read it. */
export async function stat(ctx: Context, caller: Caller, topicId: Uint8Array, blobId: Uint8Array): Promise<{ size: number }> {
  await roleIn(ctx, topicId, caller.user);
  const host = await hostElsewhere(ctx, topicId);
  if (host !== null) {
    const { size, stream } = await forwardDownload(ctx, host, caller, topicId, blobId);
    await stream.cancel();
    return { size };
  }
  const row = await ctx.store.getBlob(topicId, blobId);
  if (row === null) throw new RendezvousError('blob.unknown');
  return { size: row.size };
}

/** The blob's bytes, streamed, for a current member of the topic (any role). */
export async function download(
  ctx: Context,
  caller: Caller,
  topicId: Uint8Array,
  blobId: Uint8Array,
): Promise<{ size: number; stream: ReadableStream<Uint8Array> }> {
  const host = await hostElsewhere(ctx, topicId);
  if (host !== null) {
    await roleIn(ctx, topicId, caller.user);
    return forwardDownload(ctx, host, caller, topicId, blobId);
  }
  const { size } = await stat(ctx, caller, topicId, blobId);
  const file = await ctx.blobs.open(topicId, blobId);
  if (file === null || file.size !== size) {
    await file?.stream.cancel();
    if (file === null && (await ctx.store.getBlob(topicId, blobId)) === null) throw new RendezvousError('blob.unknown');
    // A row without its file: a restore of the database without the blobs directory, or disk loss.
    ctx.log.error({ topicId: toHex(topicId), blobId: toHex(blobId), size, found: file?.size ?? null }, 'blob file missing or wrong size');
    throw new RendezvousError('blob.unknown', 'the blob is lost on this server');
  }
  return file;
}

/** Deletes a topic with its log, members, events, blob rows and blob files. False if unknown. */
export async function removeTopic(ctx: Context, topicId: Uint8Array): Promise<boolean> {
  const r = await ctx.store.deleteTopic(topicId);
  try {
    // Even with no rows: a failed upload may have left an empty directory or an orphan.
    await ctx.blobs.deleteTopic(topicId);
  } catch (err) {
    ctx.log.error({ err, topicId: toHex(topicId) }, 'could not delete the blob files of a topic');
  }
  if (r.deleted) ctx.log.info({ topicId: toHex(topicId), blobs: r.blobIds.length }, 'topic deleted');
  return r.deleted;
}

/**
 * Deletes the files of blobs whose rows are already gone (Store.deleteUser returns them). A
 * file stays if, meanwhile, someone uploaded the same blob to the same topic again.
 */
export async function removeUserBlobs(ctx: Context, blobs: { topicId: Uint8Array; blobId: Uint8Array }[]): Promise<void> {
  for (const { topicId, blobId } of blobs) {
    try {
      await ctx.blobs.lock(topicId, blobId, async () => {
        if ((await ctx.store.getBlob(topicId, blobId)) === null) await ctx.blobs.delete(topicId, blobId);
      });
    } catch (err) {
      // The rows are gone already, so the deletion stands; an undeleted file is only an orphan.
      ctx.log.error({ err, topicId: toHex(topicId), blobId: toHex(blobId) }, 'could not delete a blob file');
    }
  }
}
