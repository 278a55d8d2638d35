/**
 * Users and submissions across servers (protocol §17.3–§17.4).
 *
 * - Remote users: a user of another server is looked up, and one of their topic keys claimed,
 *   through their home server. Identity keys of remote users are pinned here on first use: a
 *   home server that later reports another key for the same user is refused
 *   (`identity.changed`), whatever the clients do with their own pins.
 * - Forwarded submissions: a device posting to a topic hosted elsewhere gets the same checks as
 *   for a local topic against this server's replica, then its submission is written to the
 *   outbox with the device's idempotency record (answer: 202 pending) in one transaction, and
 *   handed to the host's delivery loop. If the host answers within FORWARD_WAIT_MS the device
 *   gets the host's answer; otherwise 202, and a retry later replays whatever is known by then.
 * - On the host, a forwarded submission runs through the very same topics.ts path as a local
 *   one, as a caller named `origin/deviceId`, so idempotency and every check are shared.
 */
import {
  ERROR_CODES,
  RendezvousError,
  decodeTopicKey,
  equal,
  fromBase64url,
  parseUserId,
  toBase64url,
  toHex,
  verifyTopicKey,
  type ErrorCode,
} from '@rendezvous/protocol';
import type { Caller } from '../accounts.ts';
import type { Context } from '../context.ts';
import { idempotencyRow, once, submission, type Outcome, type Submission } from '../idempotency.ts';
import { loadTopic, postMessage, updateTopic, type LoadedTopic } from '../topics.ts';
import { deliveries } from './deliveries.ts';

/** How long a device's post waits for the host's answer before it is told "pending" (§17.4). */
export const FORWARD_WAIT_MS = 5_000;

// ---------------------------------------------------------------------------------------------
// Remote users

/** Codes a home server's refusal keeps when relayed to our client; anything else is a bad answer. */
const RELAYED: ReadonlySet<string> = new Set<ErrorCode>(['user.unknown', 'keys.exhausted', 'rate.limited', 'federation.forbidden', 'federation.refused']);

/**
 * Another server's refusal as our error: codes in `relayed` keep their code (with the server
 * named in the message); anything else is `federation.bad_response`.
 */
export function remoteError(server: string, res: { status: number; body: Record<string, unknown> }, relayed: ReadonlySet<string> = RELAYED): RendezvousError {
  const e = res.body.error as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code !== undefined && relayed.has(code) && code in ERROR_CODES) {
    return new RendezvousError(code as ErrorCode, `${server}: ${typeof e?.message === 'string' ? e.message.slice(0, 200) : code}`);
  }
  return new RendezvousError('federation.bad_response', `${server} answered ${res.status}${code === undefined ? '' : ` (${code.slice(0, 64)})`}`);
}

function identityKeyOf(server: string, body: Record<string, unknown>): Uint8Array {
  try {
    const k = fromBase64url(String(body.identityKey));
    if (k.length === 32) return k;
  } catch {
    // fall through
  }
  throw new RendezvousError('federation.bad_response', `${server} answered without a valid identity key`);
}

/** Pins (or checks against the pin) the identity key a home server reports for its user. */
async function pin(ctx: Context, user: string, key: Uint8Array): Promise<Uint8Array> {
  const pinned = await ctx.store.pinRemoteUser(user, key, ctx.now());
  if (!equal(pinned, key)) {
    ctx.log.warn({ user }, 'federation: a home server reports another identity key for its user');
    throw new RendezvousError('identity.changed', `${parseUserId(user).server} now reports another identity key for ${user}`);
  }
  return pinned;
}

/** The identity key of a user of another server: pinned, or fetched from their home server and pinned. */
export async function remoteIdentity(ctx: Context, user: string): Promise<Uint8Array> {
  const pinned = await ctx.store.getRemoteUser(user);
  if (pinned !== null) return pinned;
  const server = parseUserId(user).server;
  const res = await ctx.federation.request(server, 'GET', `/v1/federation/users/${encodeURIComponent(user)}`);
  if (res.status !== 200) throw remoteError(server, res);
  if (res.body.user !== user) throw new RendezvousError('federation.bad_response', `${server} answered for another user`);
  return pin(ctx, user, identityKeyOf(server, res.body));
}

/** Claims a topic key of a user of another server for `caller` (rate limits taken by the caller). */
export async function claimRemoteTopicKey(ctx: Context, caller: Caller, target: string): Promise<{ topicKey: string; identityKey: string }> {
  const server = parseUserId(target).server;
  const res = await ctx.federation.request(server, 'POST', `/v1/federation/users/${encodeURIComponent(target)}/topic-keys/claim`, {
    claimer: caller.user,
  });
  if (res.status !== 200) throw remoteError(server, res);
  const identityKey = identityKeyOf(server, res.body);
  let encoded: Uint8Array;
  try {
    encoded = fromBase64url(String(res.body.topicKey));
    const k = decodeTopicKey(encoded);
    if (k.user !== target) throw new Error('topic key of another user');
    verifyTopicKey(ctx.crypto, k, identityKey);
  } catch (e) {
    throw new RendezvousError('federation.bad_response', `${server} answered with a topic key that does not verify: ${(e as Error).message}`);
  }
  await pin(ctx, target, identityKey);
  return { topicKey: toBase64url(encoded), identityKey: toBase64url(identityKey) };
}

/** GET /v1/federation/users/:user — a user of this server, for another server to pin. */
export async function serveIdentity(ctx: Context, user: string): Promise<{ user: string; identityKey: string }> {
  if (parseUserId(user).server !== ctx.name) throw new RendezvousError('user.unknown', `${user} is not a user of ${ctx.name}`);
  const u = await ctx.store.getUser(user);
  if (u === null) throw new RendezvousError('user.unknown');
  return { user, identityKey: toBase64url(u.identityKey) };
}

/** POST /v1/federation/users/:user/topic-keys/claim — for a claimer of the origin server only. */
export async function serveClaim(ctx: Context, origin: string, target: string, claimer: string): Promise<{ topicKey: string; identityKey: string }> {
  if (parseUserId(claimer).server !== origin) throw new RendezvousError('federation.forbidden', `${origin} does not speak for ${claimer}`);
  ctx.rate.take('claimTopicKeyPerClaimer', claimer);
  ctx.rate.take('claimTopicKeyPerTarget', target);
  if (parseUserId(target).server !== ctx.name) throw new RendezvousError('user.unknown', `${target} is not a user of ${ctx.name}`);
  const u = await ctx.store.getUser(target);
  if (u === null) throw new RendezvousError('user.unknown');
  const k = await ctx.store.claimTopicKey(target);
  if (k === null) throw new RendezvousError('keys.exhausted', `${target} has no topic keys left`);
  return { topicKey: toBase64url(k), identityKey: toBase64url(u.identityKey) };
}

// ---------------------------------------------------------------------------------------------
// Submissions to topics hosted elsewhere

const PENDING: Outcome = { status: 202, body: { pending: true } };

/**
 * A local device's submission to a topic another server hosts: `validate` runs the checks the
 * replica allows, then the submission is queued durably and forwarded (protocol §17.4).
 */
export async function forwardSubmission(
  ctx: Context,
  caller: Caller,
  sub: Submission,
  topicId: Uint8Array,
  kind: 'message' | 'update',
  encoded: Uint8Array,
  validate: (t: LoadedTopic) => Promise<void> | void,
): Promise<Outcome> {
  const started = ctx.now();
  const outcome = await once(ctx, caller, sub, async () => {
    const t = await loadTopic(ctx, topicId);
    await validate(t);
    const host = t.state.host;
    const payload = {
      path: `/v1/federation/topics/${toBase64url(topicId)}/submit`,
      body: { kind, user: caller.user, deviceId: caller.deviceId, clientId: sub.clientId, body: toBase64url(encoded) },
      answer: { deviceId: caller.deviceId, clientId: sub.clientId },
    };
    const id = await ctx.store.addOutbox(
      { destination: host, kind: 'submit', topicId, coalesceKey: null, payload: JSON.stringify(payload), createdAt: ctx.now() },
      idempotencyRow(ctx, caller, sub, PENDING),
    );
    const d = deliveries(ctx);
    // A host known to be down: say "pending" now rather than after the wait.
    if (d.isFailing(host)) {
      d.wake(host);
      return PENDING;
    }
    const answer = d.waitFor(host, id, FORWARD_WAIT_MS);
    d.wake(host);
    return (await answer) ?? PENDING;
  });
  // The host's acknowledgement names a log size; the device reads the log from this server's
  // replica, which the host updates right after it answered. Answer once the replica holds the
  // entry, so a device never sees its acknowledged head ahead of what it can read (it would
  // look like a rollback); if the replica is slower than that, the device is told "pending"
  // and finds its entry in the log later (a retry replays the acknowledgement).
  const size = outcome.status === 201 ? outcome.body.size : undefined;
  if (typeof size !== 'number') return outcome;
  const left = Math.max(FORWARD_WAIT_MS - (ctx.now() - started), 1_000);
  return (await replicaReaches(ctx, topicId, size, left)) ? outcome : PENDING;
}

/** Whether this server's copy of the topic reaches `size` entries within `ms`. */
async function replicaReaches(ctx: Context, topicId: Uint8Array, size: number, ms: number): Promise<boolean> {
  const reached = async () => ((await ctx.store.getTopic(topicId))?.size ?? 0) >= size;
  if (await reached()) return true;
  const key = toHex(topicId);
  return new Promise<boolean>((resolve) => {
    let done = false;
    const finish = (v: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      off();
      resolve(v);
    };
    const timer = setTimeout(() => finish(false), ms);
    const off = ctx.events.on((e) => {
      if (e.kind === 'entry' && e.topicId === key) void reached().then((ok) => ok && finish(true), () => undefined);
    });
    // An append may have landed between the first look and the subscription.
    void reached().then((ok) => ok && finish(true), () => undefined);
  });
}

const DEVICE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The origin's user, named by a signed request about a topic hosted here, as a caller:
 * `origin/deviceId`, so idempotency and rate limits are scoped to that remote device. A server
 * speaks only for its own users, and only about topics this server hosts (§17.2).
 */
export async function remoteCaller(ctx: Context, origin: string, topicId: Uint8Array, user: unknown, deviceId: unknown): Promise<Caller> {
  if (typeof user !== 'string') throw new RendezvousError('request.bad_field', 'user', { field: 'user' });
  if (typeof deviceId !== 'string' || !DEVICE_ID.test(deviceId)) throw new RendezvousError('request.bad_field', 'deviceId', { field: 'deviceId' });
  if (parseUserId(user).server !== origin) throw new RendezvousError('federation.forbidden', `${origin} does not speak for ${user}`);
  const row = await ctx.store.getTopic(topicId);
  if (row === null) throw new RendezvousError('topic.unknown');
  if (row.host !== ctx.name) throw new RendezvousError('federation.forbidden', `${ctx.name} does not host this topic`);
  return { user, deviceId: `${origin}/${deviceId}`, tokenHash: new Uint8Array(0) };
}

/**
 * POST /v1/federation/topics/:id/submit on the host: the origin's user's submission, validated
 * and appended exactly as a local one. The caller is `origin/deviceId`, so the device's
 * Idempotency-Key makes every redelivery by the origin's outbox an idempotent replay.
 */
export async function serveSubmission(ctx: Context, origin: string, topicId: Uint8Array, body: Record<string, unknown>): Promise<Outcome> {
  const kind = body.kind;
  if (kind !== 'message' && kind !== 'update') throw new RendezvousError('request.bad_field', 'kind: message or update', { field: 'kind' });
  const caller = await remoteCaller(ctx, origin, topicId, body.user, body.deviceId);
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(String(body.body));
  } catch {
    throw new RendezvousError('request.bad_field', 'body: expected base64url', { field: 'body' });
  }
  ctx.rate.take('write', caller.deviceId);
  const path = `/v1/topics/${toBase64url(topicId)}/${kind === 'message' ? 'messages' : 'updates'}`;
  const sub = submission(ctx, typeof body.clientId === 'string' ? body.clientId : undefined, 'POST', path, bytes);
  return kind === 'message' ? postMessage(ctx, caller, sub, topicId, bytes) : updateTopic(ctx, caller, sub, topicId, bytes);
}
