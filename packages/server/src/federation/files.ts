/**
 * Files of topics hosted elsewhere (protocol §17.3, §12): blobs are kept by the topic's host.
 * A member server passes its users' uploads and downloads through to the host, streamed both
 * ways, as signed requests that name the user (a server speaks only for its own users). The
 * upload's signed body hash is the blob id, and the host's blob store refuses bytes whose
 * SHA-256 is not the blob id, so the signature covers the bytes without buffering them.
 */
import { RendezvousError, toBase64url, type ErrorCode } from '@rendezvous/protocol';
import type { Caller } from '../accounts.ts';
import type { Context } from '../context.ts';
import { remoteError } from './forward.ts';

/** Refusals of the host a member server passes on to its device as they are. */
const RELAYED: ReadonlySet<string> = new Set<ErrorCode>([
  'blob.unknown',
  'blob.quota_exceeded',
  'file.bad_blob',
  'request.too_large',
  'request.timeout',
  'topic.not_member',
  'topic.read_only',
  'topic.unknown',
  'rate.limited',
]);

function blobPath(topicId: Uint8Array, blobId: Uint8Array, caller: Caller): string {
  const q = new URLSearchParams({ user: caller.user, device: caller.deviceId });
  return `/v1/federation/topics/${toBase64url(topicId)}/blobs/${toBase64url(blobId)}?${q.toString()}`;
}

async function refusal(host: string, status: number, body: ReadableStream<Uint8Array>): Promise<RendezvousError> {
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse((await new Response(body).text()).slice(0, 65_536)) as Record<string, unknown>;
  } catch {
    // not JSON: a bad response
  }
  return remoteError(host, { status, body: parsed }, RELAYED);
}

/** An upload to a topic hosted by `host`, passed through. */
export async function forwardUpload(
  ctx: Context,
  host: string,
  caller: Caller,
  topicId: Uint8Array,
  blobId: Uint8Array,
  body: ReadableStream<Uint8Array> | null,
  declaredLength?: number,
): Promise<{ blobId: Uint8Array; size: number; created: boolean }> {
  const res = await ctx.federation.stream(host, 'PUT', blobPath(topicId, blobId, caller), { hash: blobId, stream: body, length: declaredLength });
  if (res.status !== 200 && res.status !== 201) throw await refusal(host, res.status, res.body);
  const answer = (await new Response(res.body).json()) as { size?: unknown };
  if (typeof answer.size !== 'number') throw new RendezvousError('federation.bad_response', `${host} answered an upload without its size`);
  return { blobId, size: answer.size, created: res.status === 201 };
}

/** A download (or, with `head`, the size) of a blob of a topic hosted by `host`, passed through. */
export async function forwardDownload(
  ctx: Context,
  host: string,
  caller: Caller,
  topicId: Uint8Array,
  blobId: Uint8Array,
): Promise<{ size: number; stream: ReadableStream<Uint8Array> }> {
  const res = await ctx.federation.stream(host, 'GET', blobPath(topicId, blobId, caller), null);
  if (res.status !== 200) throw await refusal(host, res.status, res.body);
  const size = Number(res.headers['content-length']);
  if (!Number.isSafeInteger(size) || size < 0) {
    await res.body.cancel();
    throw new RendezvousError('federation.bad_response', `${host} sent a blob without its length`);
  }
  return { size, stream: res.body };
}
