/**
 * The server-to-server API (protocol §17.3): every route authenticates the origin server with
 * its signed request (`ctx.federation.authenticate`, protocol §17.2) before anything else, then
 * calls the federation domain functions. Answers and errors have the shapes of the client API.
 */
import type { Hono } from 'hono';
import { MAX_ENTRY_BODY, RendezvousError, TOPIC_ID_SIZE, toBase64url } from '@rendezvous/protocol';
import * as files from '../files.ts';
import { b64, b64List, parseJsonObject as json } from './body.ts';
import { idParam } from './files.ts';
import type { Context } from '../context.ts';
import { remoteCaller, serveClaim, serveIdentity, serveSubmission } from '../federation/forward.ts';
import { receiveCosignature, receiveEntries } from '../federation/replica.ts';

/** Entries and forwarded submissions carry whole log entries; everything else is small. */
const BIG = 8 * 1024 * 1024 + 64 * 1024;
const SMALL = 64 * 1024;
const BLOB_ID_SIZE = 32;

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
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, BIG);
    const o = json(body);
    if (!Array.isArray(o.entries)) throw new RendezvousError('request.bad_field', 'entries: expected a list', { field: 'entries' });
    const entries = o.entries.map((e: unknown) => {
      const x = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
      if (typeof x.index !== 'number' || !Number.isSafeInteger(x.index) || x.index < 0) {
        throw new RendezvousError('request.bad_field', 'entries: index', { field: 'entries' });
      }
      return { index: x.index, entry: b64(x, 'entry', MAX_ENTRY_BODY + 64) };
    });
    let join;
    if (o.join !== undefined) {
      const j = (typeof o.join === 'object' && o.join !== null ? o.join : {}) as Record<string, unknown>;
      if (typeof j.index !== 'number' || !Array.isArray(j.proof) || j.proof.length > 64) {
        throw new RendezvousError('request.bad_field', 'join: {index, entry, proof, checkpoint}', { field: 'join' });
      }
      join = {
        index: j.index,
        entry: b64(j, 'entry', MAX_ENTRY_BODY + 64),
        proof: b64List(j, 'proof', 64),
        checkpoint: b64(j, 'checkpoint', 1024),
      };
    }
    return c.json(await receiveEntries(ctx, origin, topicId, { entries, checkpoint: b64(o, 'checkpoint', 1024), join }));
  });
  app.post('/v1/federation/topics/:topicId/submit', async (c) => {
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, BIG);
    const o = await serveSubmission(ctx, origin, topicId, json(body));
    if (o.replayed) c.header('idempotent-replayed', 'true');
    return c.json(o.body, o.status as 201);
  });
  // Files of topics hosted here, for users of the origin (protocol §17.3). The upload's signed
  // body hash is the blob id; files.upload refuses bytes that do not hash to it.
  app.put('/v1/federation/topics/:topicId/blobs/:blobId', async (c) => {
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const blobId = idParam(c, 'blobId', BLOB_ID_SIZE);
    const { origin } = await ctx.federation.authenticateStreamed(c.req.raw, blobId);
    const caller = await remoteCaller(ctx, origin, topicId, c.req.query('user'), c.req.query('device'));
    const length = c.req.header('content-length');
    const declared = length !== undefined && /^[0-9]{1,16}$/.test(length) ? Number(length) : undefined;
    const r = await files.upload(ctx, caller, topicId, blobId, c.req.raw.body, declared);
    return c.json({ blobId: toBase64url(r.blobId), size: r.size }, r.created ? 201 : 200);
  });
  app.get('/v1/federation/topics/:topicId/blobs/:blobId', async (c) => {
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const blobId = idParam(c, 'blobId', BLOB_ID_SIZE);
    const { origin } = await ctx.federation.authenticate(c.req.raw, 0);
    const caller = await remoteCaller(ctx, origin, topicId, c.req.query('user'), c.req.query('device'));
    const { size, stream } = await files.download(ctx, caller, topicId, blobId);
    return c.body(stream, 200, { 'content-type': 'application/octet-stream', 'content-length': String(size), 'cache-control': 'private, no-store' });
  });
  app.post('/v1/federation/topics/:topicId/witness', async (c) => {
    const topicId = idParam(c, 'topicId', TOPIC_ID_SIZE);
    const { origin, body } = await ctx.federation.authenticate(c.req.raw, SMALL);
    await receiveCosignature(ctx, origin, topicId, b64(json(body), 'cosignature', 1024));
    return c.json({ ok: true });
  });
}
