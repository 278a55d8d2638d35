/**
 * The HTTP API (docs/server.md §API) on Hono's web-standard Request/Response core: routes
 * only parse, authenticate and call the domain functions, so every route is testable in
 * process with `app.request(...)`. Errors leave through one handler that maps the protocol's
 * error table to status and JSON `{ "error": { "code", "message" } }`.
 */
import { Hono, type Context as HonoContext } from 'hono';
import { cors } from 'hono/cors';
import { RendezvousError, TOPIC_ID_SIZE, fromBase64url, isServerName, serverKeyId, toBase64url } from '@rendezvous/protocol';
import { publishedKeysJson, rotateServerKey } from '../federation/keys.ts';
import type { Context } from '../context.ts';
import * as accounts from '../accounts.ts';
import * as files from '../files.ts';
import { registerFileRoutes } from './files.ts';
import { registerFederationRoutes } from './federation.ts';
import { deliveries } from '../federation/deliveries.ts';
import * as topics from '../topics.ts';
import { readEvents } from '../events.ts';
import { PUSH_LIMITS, type Push } from '../push.ts';
import { LIMITS } from '../limits.ts';
import { b64, b64List, bodySource, int, objList, optInt, readJson, readJsonBytes, str } from './body.ts';

export const API_VERSION = 1;

type Env = { Variables: { caller: accounts.Caller; route: string } };

function bearer(c: HonoContext): string | undefined {
  const h = c.req.header('authorization');
  if (h === undefined) return undefined;
  const m = /^Bearer ([A-Za-z0-9_\-.~+/]+=*)$/.exec(h);
  return m?.[1];
}

export function createApp(
  ctx: Context,
  opts: { isReady?: () => boolean; trustProxy?: boolean; corsOrigins?: '*' | string[]; push?: Push } = {},
) {
  const app = new Hono<Env>();
  const small = LIMITS.maxSmallBodyBytes;

  app.use('*', async (c, next) => {
    const start = performance.now();
    await next();
    const route = c.req.routePath ?? 'unknown';
    ctx.metrics.requests.inc({ method: c.req.method, route, status: String(c.res.status) });
    ctx.metrics.requestSeconds.observe({ route }, (performance.now() - start) / 1000);
  });

  // Browser clients on other origins (docs/server.md §CORS). Authentication is by bearer token,
  // never by cookie, so a page can only act with a token it was given: allowing every origin
  // (the default) exposes nothing a cross-site request could not already do.
  const origins = opts.corsOrigins ?? '*';
  const allowedOrigin = (o: string) => (origins === '*' ? '*' : origins.includes(o) ? o : null);
  const corsOptions = {
    origin: origins === '*' ? '*' : allowedOrigin,
    allowMethods: ['GET', 'POST', 'PUT', 'DELETE'],
    allowHeaders: ['authorization', 'content-type', 'idempotency-key'],
    exposeHeaders: ['idempotent-replayed', 'retry-after', 'etag'],
    maxAge: 600,
  };
  // Preflights go through Hono's middleware. Every other request gets the headers it would
  // add (Allow-Origin, Expose-Headers, and Vary: Origin for a list of origins), set on the
  // final response: Hono's version sets them on a placeholder response before the handler,
  // which makes Hono copy the handler's response into a full web Response, answered through a
  // stream.
  const preflight = cors(corsOptions);
  const exposeHeaders = corsOptions.exposeHeaders.join(',');
  app.use('*', async (c, next) => {
    if (c.req.method === 'OPTIONS') return preflight(c, next);
    const allowOrigin = allowedOrigin(origins === '*' ? '' : c.req.header('origin') || '');
    await next();
    const headers = c.res.headers;
    if (allowOrigin) headers.set('Access-Control-Allow-Origin', allowOrigin);
    headers.set('Access-Control-Expose-Headers', exposeHeaders);
    if (origins !== '*') headers.append('Vary', 'Origin');
  });

  app.onError((err, c) => {
    if (err instanceof RendezvousError) {
      ctx.metrics.errors.inc({ code: err.code });
      if (err.code === 'rate.limited' && typeof err.details?.retryAfterMs === 'number') {
        c.header('retry-after', String(Math.ceil(err.details.retryAfterMs / 1000)));
      }
      return c.json({ error: err.toJSON() }, err.status as 400);
    }
    ctx.metrics.errors.inc({ code: 'server.internal' });
    ctx.log.error({ err, route: c.req.routePath, method: c.req.method }, 'unhandled error');
    return c.json({ error: new RendezvousError('server.internal').toJSON() }, 500);
  });
  app.notFound((c) => c.json({ error: new RendezvousError('request.not_found').toJSON() }, 404));

  const auth = async (c: HonoContext<Env>, next: () => Promise<void>) => {
    const token = bearer(c);
    if (token === undefined) throw new RendezvousError('auth.required');
    c.set('caller', await accounts.authenticate(ctx, token));
    await next();
  };
  const admin = async (c: HonoContext<Env>, next: () => Promise<void>) => {
    ctx.rate.take('admin', 'admin');
    await accounts.checkAdminToken(ctx, bearer(c));
    await next();
  };

  /** Answers a submission's outcome; a replayed one says so (docs/server.md §Idempotency). */
  const send = (c: HonoContext<Env>, o: topics.Outcome) => {
    if (o.replayed) c.header('idempotent-replayed', 'true');
    return c.json(o.body, o.status as 201);
  };

  // ---- discovery and operations -------------------------------------------------------------
  app.get('/.well-known/rendezvous', async (c) =>
    c.json({
      server: ctx.name,
      publicKey: toBase64url(ctx.serverKey),
      apiVersion: API_VERSION,
      version: ctx.version,
      keys: await publishedKeysJson(ctx),
    }),
  );
  // The keys this server pinned for another (protocol §17.1), fetched on first use; its own for its name.
  app.get('/v1/servers/:name', auth, async (c) => {
    const name = param(c, 'name');
    if (!isServerName(name)) throw new RendezvousError('request.bad_field', 'name: expected a server name', { field: 'name' });
    const keys = await ctx.federation.serverKeys(name);
    return c.json({ server: name, keys: keys.map((k) => ({ publicKey: toBase64url(k), keyId: toBase64url(serverKeyId(ctx.crypto, k)) })) });
  });
  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/readyz', async (c) => {
    if (opts.isReady && !opts.isReady()) throw new RendezvousError('server.unavailable');
    await ctx.store.getMeta('server_name');
    return c.json({ ok: true });
  });
  app.get('/metrics', async (c) => c.text(await ctx.metrics.registry.metrics(), 200, { 'content-type': ctx.metrics.registry.contentType }));

  // ---- admin ------------------------------------------------------------------------------------
  app.post('/v1/admin/pins', admin, async (c) => {
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    const r = await accounts.createPin(ctx, str(body, 'user', 400), { ttlMs: optInt(body, 'expiresInMs'), tries: optInt(body, 'tries') });
    return c.json(r, 201);
  });
  app.get('/v1/admin/pins', admin, async (c) => c.json({ pins: await accounts.listPins(ctx) }));
  app.delete('/v1/admin/pins/:id', admin, async (c) => {
    if (!(await ctx.store.deletePin(param(c, 'id')))) throw new RendezvousError('request.not_found', 'no such pin');
    return c.json({ deleted: true });
  });
  app.get('/v1/admin/users', admin, async (c) =>
    c.json({
      users: (await ctx.store.listUsers()).map((u) => ({ user: u.user, identityKey: toBase64url(u.identityKey), createdAt: u.createdAt })),
    }),
  );
  app.delete('/v1/admin/users/:user', admin, async (c) => {
    const user = accounts.localUser(ctx, param(c, 'user'));
    const r = await ctx.store.deleteUser(user);
    // Its sessions went with it: refused from the very next request, not when the cache would ask again.
    accounts.forgetSessions(ctx, { user });
    if (!r.deleted) throw new RendezvousError('user.unknown');
    await files.removeUserBlobs(ctx, r.blobs);
    ctx.log.info({ user, blobs: r.blobs.length }, 'user deleted by admin');
    return c.json({ deleted: true });
  });
  app.delete('/v1/admin/topics/:topicId', admin, async (c) => {
    const topicId = topicParam(c);
    if (!(await topics.deleteTopic(ctx, topicId))) throw new RendezvousError('topic.unknown');
    ctx.log.info({ topicId: param(c, 'topicId') }, 'topic deleted by admin');
    return c.json({ deleted: true });
  });
  app.post('/v1/admin/server-key/rotate', admin, async (c) => {
    const r = await rotateServerKey(ctx);
    return c.json({ publicKey: toBase64url(r.publicKey), keyId: toBase64url(serverKeyId(ctx.crypto, r.publicKey)), createdAt: r.createdAt, keys: await publishedKeysJson(ctx) });
  });
  app.get('/v1/admin/federation', admin, async (c) => c.json({ servers: await deliveries(ctx).status() }));
  app.get('/v1/admin/status', admin, async (c) =>
    c.json({ server: ctx.name, version: ctx.version, apiVersion: API_VERSION, counts: await ctx.store.counts() }),
  );

  // ---- registration, devices, sessions ----------------------------------------------------
  app.post('/v1/register', async (c) => {
    ctx.rate.take('register', clientAddress(c, opts.trustProxy ?? false));
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    const r = await accounts.register(ctx, {
      user: str(body, 'user', 400),
      pin: str(body, 'pin', 64),
      identityKey: b64(body, 'identityKey', 32),
      deviceCert: b64(body, 'deviceCert', 1024),
    });
    return c.json(r, 201);
  });
  app.get('/v1/users/:user', async (c) => {
    const user = param(c, 'user');
    if (accounts.isLocalUser(ctx, user)) return c.json(await accounts.identityOf(ctx, user));
    // A user of another server costs a federation request: devices of this server only, rate-limited.
    const token = bearer(c);
    if (token === undefined) throw new RendezvousError('auth.required', 'looking up users of other servers needs a session');
    const caller = await accounts.authenticate(ctx, token);
    ctx.rate.take('claimTopicKeyPerClaimer', caller.user);
    return c.json(await accounts.identityOf(ctx, user));
  });
  app.post('/v1/users/:user/devices', async (c) => {
    ctx.rate.take('register', clientAddress(c, opts.trustProxy ?? false));
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    return c.json(await accounts.addDevice(ctx, param(c, 'user'), b64(body, 'cert', 1024)), 201);
  });
  app.post('/v1/auth/challenge', async (c) => {
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    return c.json(await accounts.challenge(ctx, str(body, 'deviceId', 64)));
  });
  app.post('/v1/auth/session', async (c) => {
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    const r = await accounts.createSession(ctx, str(body, 'deviceId', 64), b64(body, 'challenge', 32), b64(body, 'signature', 64));
    return c.json(r, 201);
  });
  app.delete('/v1/auth/session', auth, async (c) => {
    await accounts.endSession(ctx, c.get('caller'));
    return c.json({ deleted: true });
  });
  app.get('/v1/devices', auth, async (c) => c.json({ devices: await accounts.listDevices(ctx, c.get('caller')) }));
  app.delete('/v1/devices/:deviceId', auth, async (c) => {
    await accounts.deleteDevice(ctx, c.get('caller'), param(c, 'deviceId'));
    return c.json({ deleted: true });
  });

  // ---- key pools and bundles ----------------------------------------------------------------
  app.get('/v1/keys/counts', auth, async (c) => c.json(await accounts.keyCounts(ctx, c.get('caller'))));
  app.post('/v1/prekeys', auth, async (c) => {
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    return c.json(await accounts.uploadPrekeys(ctx, c.get('caller'), b64List(body, 'prekeys', LIMITS.prekeysPerUpload)), 201);
  });
  app.post('/v1/devices/:deviceId/prekeys/claim', auth, async (c) =>
    c.json(await accounts.claimPrekey(ctx, c.get('caller'), param(c, 'deviceId'))),
  );
  // Key uploads and bundles are submissions: Idempotency-Key required, the hash covers the JSON body.
  const jsonSubmission = async (c: HonoContext<Env>) => {
    const { json, bytes } = await readJsonBytes(bodySource(c), LIMITS.maxBodyBytes, ctx.limits.bodyTimeoutMs);
    return { body: json, sub: topics.submission(ctx, c.req.header('idempotency-key'), c.req.method, c.req.path, bytes) };
  };
  app.post('/v1/topic-keys', auth, async (c) => {
    const { body, sub } = await jsonSubmission(c);
    const r = await accounts.uploadTopicKeys(ctx, c.get('caller'), sub, {
      keys: b64List(body, 'keys', LIMITS.topicKeysPerUpload),
      bundles: bundleList(body),
    });
    return send(c, r);
  });
  app.post('/v1/users/:user/topic-keys/claim', auth, async (c) =>
    c.json(await accounts.claimTopicKey(ctx, c.get('caller'), param(c, 'user'))),
  );
  app.post('/v1/bundles', auth, async (c) => {
    const { body, sub } = await jsonSubmission(c);
    return send(c, await accounts.sendBundles(ctx, c.get('caller'), sub, bundleList(body)));
  });
  app.get('/v1/bundles', auth, async (c) => {
    const list = await ctx.store.listBundles(c.get('caller').deviceId);
    return c.json({ bundles: list.map((b) => ({ id: b.id, senderDeviceId: b.senderDeviceId, bundle: toBase64url(b.encoded) })) });
  });
  app.post('/v1/bundles/ack', auth, async (c) => {
    const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
    return c.json({ deleted: await ctx.store.ackBundles(c.get('caller').deviceId, int(body, 'upTo')) });
  });

  // ---- live delivery over HTTP (the WebSocket at /v1/ws streams the same batches) -----------
  app.get('/v1/events', auth, async (c) => c.json(await readEvents(ctx, c.get('caller'), queryInt(c, 'after', 0), queryInt(c, 'limit', 500))));

  // ---- topics and logs (docs/server.md §Topics) ----------------------------------------------
  // Submissions take the device's write token before the body is read or anything verified,
  // and carry an Idempotency-Key; the request hash covers the decoded object, not the JSON.
  const submit = async (c: HonoContext<Env>, field: string, cap: number) => {
    const caller = c.get('caller');
    ctx.rate.take('write', caller.deviceId);
    const body = await readJson(bodySource(c), cap, ctx.limits.bodyTimeoutMs);
    const bytes = b64(body, field, cap);
    const sub = topics.submission(ctx, c.req.header('idempotency-key'), c.req.method, c.req.path, bytes);
    return { caller, bytes, sub };
  };
  app.post('/v1/topics', auth, async (c) => {
    const { caller, bytes, sub } = await submit(c, 'update', LIMITS.maxBodyBytes);
    return send(c, await topics.createTopic(ctx, caller, sub, bytes));
  });
  app.get('/v1/topics', auth, async (c) => c.json(await topics.listTopics(ctx, c.get('caller'))));
  app.get('/v1/topics/:topicId', auth, async (c) => c.json(await topics.getTopic(ctx, c.get('caller'), topicParam(c))));
  app.post('/v1/topics/:topicId/updates', auth, async (c) => {
    const topicId = topicParam(c);
    const { caller, bytes, sub } = await submit(c, 'update', LIMITS.maxBodyBytes);
    return send(c, await topics.updateTopic(ctx, caller, sub, topicId, bytes));
  });
  app.post('/v1/topics/:topicId/messages', auth, async (c) => {
    const topicId = topicParam(c);
    const { caller, bytes, sub } = await submit(c, 'message', small);
    return send(c, await topics.postMessage(ctx, caller, sub, topicId, bytes));
  });
  app.get('/v1/topics/:topicId/entries', auth, async (c) => {
    const topicId = topicParam(c);
    const r = await topics.getEntries(ctx, c.get('caller'), topicId, queryInt(c, 'from', 0), queryInt(c, 'limit', 100));
    return c.json(r);
  });
  app.get('/v1/topics/:topicId/proofs/inclusion', auth, async (c) => {
    const topicId = topicParam(c);
    return c.json(await topics.getInclusionProof(ctx, c.get('caller'), topicId, queryInt(c, 'index'), queryInt(c, 'size')));
  });
  app.get('/v1/topics/:topicId/proofs/consistency', auth, async (c) => {
    const topicId = topicParam(c);
    return c.json(await topics.getConsistencyProof(ctx, c.get('caller'), topicId, queryInt(c, 'from'), queryInt(c, 'to')));
  });

  // ---- push (docs/server.md §Push) -------------------------------------------------------------
  const push = opts.push;
  if (push !== undefined) {
    app.get('/v1/push/vapid', (c) => c.json({ publicKey: push.publicKey }));
    app.get('/v1/push/providers', (c) => c.json({ providers: push.kinds }));
    app.post('/v1/push/subscriptions', auth, async (c) => {
      ctx.rate.take('push', c.get('caller').deviceId);
      const body = await readJson(bodySource(c), small, ctx.limits.bodyTimeoutMs);
      const kind = body.kind ?? 'webpush';
      if (kind === 'apns' || kind === 'fcm') {
        // Length and alphabet are checked by push.subscribe (after push.unsupported).
        const r = await push.subscribe(c.get('caller'), { kind, token: str(body, 'token', PUSH_LIMITS.fcmTokenMax) });
        return c.json(r, 201);
      }
      if (kind !== 'webpush') throw new RendezvousError('request.bad_field', 'kind: expected webpush, apns or fcm', { field: 'kind' });
      const keys = body.keys;
      if (typeof keys !== 'object' || keys === null || Array.isArray(keys)) {
        throw new RendezvousError('request.bad_field', 'keys: expected {p256dh, auth}', { field: 'keys' });
      }
      const k = keys as Record<string, unknown>;
      const r = await push.subscribe(c.get('caller'), {
        kind: 'webpush',
        endpoint: str(body, 'endpoint', PUSH_LIMITS.endpointMaxLength),
        p256dh: str(k, 'p256dh', 128),
        auth: str(k, 'auth', 64),
      });
      return c.json(r, 201);
    });
    app.get('/v1/push/subscriptions', auth, async (c) => c.json({ subscriptions: await push.list(c.get('caller')) }));
    app.delete('/v1/push/subscriptions/:id', auth, async (c) => {
      await push.unsubscribe(c.get('caller'), param(c, 'id'));
      return c.json({ deleted: true });
    });
  }

  // ---- files
  registerFileRoutes(app, ctx, auth);
  // ---- federation (protocol §17): server-to-server, signed
  registerFederationRoutes(app, ctx);
  return app;
}

function param(c: HonoContext, name: string): string {
  const v = c.req.param(name);
  if (v === undefined || v === '') throw new RendezvousError('request.bad_field', `missing ${name}`);
  return v;
}

function topicParam(c: HonoContext): Uint8Array {
  const v = param(c, 'topicId');
  let id: Uint8Array | undefined;
  try {
    id = fromBase64url(v);
  } catch {
    id = undefined;
  }
  if (id?.length !== TOPIC_ID_SIZE) throw new RendezvousError('request.bad_field', 'topicId: expected 16 bytes of base64url', { field: 'topicId' });
  return id;
}

/** A non-negative integer query parameter; without `fallback` it is required. */
function queryInt(c: HonoContext, name: string, fallback?: number): number {
  const v = c.req.query(name);
  if (v === undefined && fallback !== undefined) return fallback;
  if (v === undefined || !/^[0-9]{1,15}$/.test(v)) {
    throw new RendezvousError('request.bad_field', `${name}: expected a non-negative integer`, { field: name });
  }
  return Number(v);
}

function bundleList(body: Record<string, unknown>) {
  return objList(body, 'bundles', LIMITS.bundlesPerUpload).map((b) => ({
    deviceId: str(b, 'deviceId', 64),
    bundle: b64(b, 'bundle', 8 << 20),
  }));
}

/**
 * The client address for per-client rate limits: the socket's peer address from the node
 * adapter ('local' for in-process requests). Behind a reverse proxy every peer is the proxy, so
 * with `trustProxy` a loopback peer's X-Forwarded-For is used instead: its last entry, the one
 * the proxy appended (anything before it is whatever the client claimed). Never trusted from a
 * non-loopback peer, or anyone could pick their own rate-limit bucket.
 */
export function clientAddress(c: HonoContext, trustProxy: boolean): string {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
  const peer = env?.incoming?.socket?.remoteAddress ?? 'local';
  if (!trustProxy || !LOOPBACK.has(peer)) return peer;
  const forwarded = c.req.header('x-forwarded-for')?.split(',').at(-1)?.trim();
  return forwarded === undefined || forwarded === '' ? peer : forwarded;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);
