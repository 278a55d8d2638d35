/**
 * File routes (docs/server.md §Files): raw encrypted blobs in and out, streamed both ways and
 * never held whole in memory. Parsing and the edge checks only; src/files.ts decides.
 */
import type { Context as HonoContext, Hono, MiddlewareHandler } from 'hono';
import { RendezvousError, TOPIC_ID_SIZE, fromBase64url, toBase64url } from '@rendezvous/protocol';
import type { Caller } from '../accounts.ts';
import type { Context } from '../context.ts';
import * as files from '../files.ts';

const BLOB_ID_SIZE = 32;

type FilesEnv = { Variables: { caller: Caller } };

/** What createApp's `auth` middleware set (typed loosely: createApp's Env is its own). */
const callerOf = (c: HonoContext<any>): Caller => c.get('caller') as Caller;

function bad(field: string, what: string): RendezvousError {
  return new RendezvousError('request.bad_field', `${field}: ${what}`, { field });
}

/** A base64url id path parameter of exactly `size` bytes (`request.bad_field` otherwise). */
export function idParam(c: HonoContext, name: string, size: number): Uint8Array {
  const v = c.req.param(name) ?? '';
  let id: Uint8Array | undefined;
  try {
    id = fromBase64url(v);
  } catch {
    id = undefined;
  }
  if (id?.length !== size) throw bad(name, `expected ${size} bytes of base64url`);
  return id;
}

/** The declared body length, if any: digits only (no sign, no exponent), as RFC 9110 §8.6 says. */
function contentLength(c: HonoContext): number | undefined {
  const v = c.req.header('content-length');
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,16}$/.test(v)) throw bad('content-length', 'expected a byte count');
  return Number(v);
}

function blobHeaders(blobId: Uint8Array, size: number): Record<string, string> {
  return {
    'content-type': 'application/octet-stream',
    'content-length': String(size),
    // Content-addressed, but membership can end: no caching of a member-only resource.
    'cache-control': 'private, no-store',
    'x-content-type-options': 'nosniff',
    etag: `"${toBase64url(blobId)}"`,
  };
}

/** Registers the file routes on `app`, behind the device `auth` middleware of createApp. */
export function registerFileRoutes<E extends FilesEnv>(app: Hono<E>, ctx: Context, auth: MiddlewareHandler<E>): void {
  const path = '/v1/topics/:topicId/blobs/:blobId';

  // A refused upload is answered before its body is read, and the HTTP layer then drains
  // only so much of it before dropping the socket: tell the client not to reuse the connection.
  const closeOnError: MiddlewareHandler<E> = async (c, next) => {
    await next();
    if (c.res.status >= 400) c.res.headers.set('connection', 'close');
  };

  app.put(path, closeOnError, auth, async (c) => {
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const blobId = idParam(c, 'blobId', BLOB_ID_SIZE);
    const type = c.req.header('content-type');
    if (type !== undefined && !/^application\/octet-stream\s*(;|$)/i.test(type)) {
      throw bad('content-type', 'a blob is sent raw, as application/octet-stream');
    }
    const caller = callerOf(c);
    const r = await files.upload(ctx, caller, topicId, blobId, c.req.raw.body, contentLength(c));
    return c.json({ blobId: toBase64url(r.blobId), size: r.size }, r.created ? 201 : 200);
  });

  // Hono answers HEAD with this route and drops the body; HEAD is handled without opening the
  // file, which would otherwise stay open until the stream is collected.
  app.get(path, auth, async (c) => {
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const blobId = idParam(c, 'blobId', BLOB_ID_SIZE);
    const caller = callerOf(c);
    if (c.req.method === 'HEAD') {
      const { size } = await files.stat(ctx, caller, topicId, blobId);
      return c.body(null, 200, blobHeaders(blobId, size));
    }
    const { size, stream } = await files.download(ctx, caller, topicId, blobId);
    return c.body(stream, 200, blobHeaders(blobId, size));
  });
}
