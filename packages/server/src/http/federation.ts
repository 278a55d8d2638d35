/**
 * The server-to-server API (protocol §17.3): every route authenticates the origin server with
 * its signed request (`ctx.federation.authenticate`, protocol §17.2) before anything else, then
 * calls the federation domain functions. Answers and errors have the shapes of the client API.
 */
import type { Hono } from 'hono';
import { MAX_ENTRY_BODY, RendezvousError, TOPIC_ID_SIZE, fromBase64url, parseUserId, toBase64url } from '@rendezvous/protocol';
import type { Caller } from '../accounts.ts';
import * as files from '../files.ts';
import type { Context } from '../context.ts';
import { serveClaim, serveIdentity, serveSubmission } from '../federation/forward.ts';
import { receiveCosignature, receiveEntries } from '../federation/replica.ts';

/** Entries and forwarded submissions carry whole log entries; everything else is small. */
const BIG = 8 * 1024 * 1024 + 64 * 1024;
const SMALL = 64 * 1024;

function json(body: Uint8Array): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new RendezvousError('request.bad_json');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RendezvousError('request.bad_json', 'body must be a JSON object');
  return v as Record<string, unknown>;
}

function bytesField(o: Record<string, unknown>, field: string, max: number): Uint8Array {
  const v = o[field];
  if (typeof v !== 'string' || v.length > Math.ceil((max * 4) / 3) + 4) throw new RendezvousError('request.bad_field', `${field}: expected base64url`, { field });
  try {
    return fromBase64url(v);
  } catch {
    throw new RendezvousError('request.bad_field', `${field}: expected base64url`, { field });
  }
}

function topicIdOf(v: string | undefined): Uint8Array {
  let id: Uint8Array | undefined;
  try {
    id = v === undefined ? undefined : fromBase64url(v);
  } catch {
    id = undefined;
  }
  if (id?.length !== TOPIC_ID_SIZE) throw new RendezvousError('request.bad_field', 'topicId: expected 16 bytes of base64url', { field: 'topicId' });
  return id;
}

function blobIdOf(v: string | undefined): Uint8Array {
  let id: Uint8Array | undefined;
  try {
    id = v === undefined ? undefined : fromBase64url(v);
  } catch {
    id = undefined;
  }
  if (id?.length !== 32) throw new RendezvousError('request.bad_field', 'blobId: expected 32 bytes of base64url', { field: 'blobId' });
  return id;
}

/** The origin's user named by a file request, as a caller of a topic hosted here. */
async function remoteMember(ctx: Context, origin: string, topicId: Uint8Array, user: string | undefined, device: string | undefined): Promise<Caller> {
  if (user === undefined || device === undefined || !/^[A-Za-z0-9_-]{1,64}$/.test(device)) {
    throw new RendezvousError('request.bad_field', 'user and device are required', { field: 'user' });
  }
  if (parseUserId(user).server !== origin) throw new RendezvousError('federation.forbidden', `${origin} does not speak for ${user}`);
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  if (row.host !== ctx.name) throw new RendezvousError('federation.forbidden', `${ctx.name} does not host this topic`);
  return { user, deviceId: `${origin}/${device}`, tokenHash: new Uint8Array(0) };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registerFederationRoutes(app: Hono<any>, ctx: Context): void {
  app.get('/v1/federation/users/:user', async (c) => {
    await ctx.federation.authenticate(c.req.raw, SMALL);
    return c.json(await serveIdentity(ctx, c.req.param('user')));
  });
  app.post('/v1/federation/users/:user/topic-keys/claim', async (c) => {
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, SMALL);
    const claimer = json(body).claimer;
    if (typeof claimer !== 'string') throw new RendezvousError('request.bad_field', 'claimer', { field: 'claimer' });
    return c.json(await serveClaim(ctx, origin, c.req.param('user'), claimer));
  });
  app.post('/v1/federation/topics/:topicId/entries', async (c) => {
    const topicId = topicIdOf(c.req.param('topicId'));
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, BIG);
    const o = json(body);
    if (!Array.isArray(o.entries)) throw new RendezvousError('request.bad_field', 'entries: expected a list', { field: 'entries' });
    const entries = o.entries.map((e: unknown) => {
      const x = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
      if (typeof x.index !== 'number' || !Number.isSafeInteger(x.index) || x.index < 0) {
        throw new RendezvousError('request.bad_field', 'entries: index', { field: 'entries' });
      }
      return { index: x.index, entry: bytesField(x, 'entry', MAX_ENTRY_BODY + 64) };
    });
    let join;
    if (o.join !== undefined) {
      const j = (typeof o.join === 'object' && o.join !== null ? o.join : {}) as Record<string, unknown>;
      if (typeof j.index !== 'number' || !Array.isArray(j.proof) || j.proof.length > 64) {
        throw new RendezvousError('request.bad_field', 'join: {index, entry, proof, checkpoint}', { field: 'join' });
      }
      join = {
        index: j.index,
        entry: bytesField(j, 'entry', MAX_ENTRY_BODY + 64),
        proof: j.proof.map((_: unknown, i: number) => bytesField(j.proof as unknown as Record<string, unknown>, String(i), 32)),
        checkpoint: bytesField(j, 'checkpoint', 1024),
      };
    }
    return c.json(await receiveEntries(ctx, origin, topicId, { entries, checkpoint: bytesField(o, 'checkpoint', 1024), join }));
  });
  app.post('/v1/federation/topics/:topicId/submit', async (c) => {
    const topicId = topicIdOf(c.req.param('topicId'));
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, BIG);
    const o = await serveSubmission(ctx, origin, topicId, json(body));
    if (o.replayed) c.header('idempotent-replayed', 'true');
    return c.json(o.body, o.status as 201);
  });
  // Files of topics hosted here, for users of the origin (protocol §17.3). The upload's signed
  // body hash is the blob id; files.upload refuses bytes that do not hash to it.
  app.put('/v1/federation/topics/:topicId/blobs/:blobId', async (c) => {
    const topicId = topicIdOf(c.req.param('topicId'));
    const blobId = blobIdOf(c.req.param('blobId'));
    const { origin } = await ctx.federation.authenticateStreamed(c.req.raw, blobId);
    const caller = await remoteMember(ctx, origin, topicId, c.req.query('user'), c.req.query('device'));
    const length = c.req.header('content-length');
    const declared = length !== undefined && /^[0-9]{1,16}$/.test(length) ? Number(length) : undefined;
    const r = await files.upload(ctx, caller, topicId, blobId, c.req.raw.body, declared);
    return c.json({ blobId: toBase64url(r.blobId), size: r.size }, r.created ? 201 : 200);
  });
  app.get('/v1/federation/topics/:topicId/blobs/:blobId', async (c) => {
    const topicId = topicIdOf(c.req.param('topicId'));
    const blobId = blobIdOf(c.req.param('blobId'));
    const { origin } = await ctx.federation.authenticate(c.req.raw, 0);
    const caller = await remoteMember(ctx, origin, topicId, c.req.query('user'), c.req.query('device'));
    const { size, stream } = await files.download(ctx, caller, topicId, blobId);
    return c.body(stream, 200, { 'content-type': 'application/octet-stream', 'content-length': String(size), 'cache-control': 'private, no-store' });
  });
  app.post('/v1/federation/topics/:topicId/witness', async (c) => {
    const topicId = topicIdOf(c.req.param('topicId'));
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, SMALL);
    await receiveCosignature(ctx, origin, topicId, bytesField(json(body), 'cosignature', 1024));
    return c.json({ ok: true });
  });
}
