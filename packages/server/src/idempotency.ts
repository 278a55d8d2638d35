/**
 * Idempotency of submissions (docs/server.md §Idempotency).
 *
 * Every submission carries a client-chosen id (`Idempotency-Key`), scoped to the submitting
 * device. The server records the id with a hash of the request and the answer it gave, in the
 * same transaction as the submission's effect; a retry gets that answer again, and the same id
 * with another request is `request.idempotency_mismatch`.
 */
import { RendezvousError, concat, equal, isRendezvousError, utf8 } from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context } from './context.ts';
import type { IdempotencyRow } from './storage/store.ts';

/** A client-chosen id for one submission, scoped to the submitting device. */
export interface Submission {
  clientId: string;
  /** SHA-256 of method, path and the submitted object: the same id with anything else is an error. */
  requestHash: Uint8Array;
}

/** The result of a submission as the client sees it, and as a retry replays it. */
export interface Outcome {
  status: number;
  body: Record<string, unknown>;
  replayed?: boolean;
}

const CLIENT_ID = /^[A-Za-z0-9_-]{8,64}$/;

export function submission(ctx: Context, clientId: string | undefined, method: string, path: string, body: Uint8Array): Submission {
  if (clientId === undefined || !CLIENT_ID.test(clientId)) {
    throw new RendezvousError('request.bad_field', 'Idempotency-Key header: expected 8–64 characters of [A-Za-z0-9_-]', {
      field: 'Idempotency-Key',
    });
  }
  return { clientId, requestHash: ctx.crypto.sha256(concat(utf8(`${method} ${path}\n`), body)) };
}

/** The stored outcome of an earlier submission with this id, or null if there is none. */
export async function replay(ctx: Context, caller: Caller, sub: Submission): Promise<Outcome | null> {
  const row = await ctx.store.getIdempotency(caller.deviceId, sub.clientId);
  if (row === null) return null;
  if (!equal(row.requestHash, sub.requestHash)) {
    throw new RendezvousError('request.idempotency_mismatch', `client id ${sub.clientId} was used for a different request`);
  }
  return { ...(JSON.parse(row.response) as Outcome), replayed: true };
}

export function idempotencyRow(ctx: Context, caller: Caller, sub: Submission, outcome: Outcome): IdempotencyRow {
  return {
    deviceId: caller.deviceId,
    clientId: sub.clientId,
    requestHash: sub.requestHash,
    response: responseJson(outcome),
    createdAt: ctx.now(),
  };
}

/** What the idempotency record keeps of an outcome. */
export function responseJson(outcome: Outcome): string {
  return JSON.stringify({ status: outcome.status, body: outcome.body });
}

/** Submissions in progress, by context, device and client id. */
const inflight = new WeakMap<Context, Map<string, Promise<unknown>>>();

/**
 * Runs `work` at most once per (device, client id): a stored outcome is replayed instead; a
 * retry that arrives while the first request is in flight waits for it, then replays (or, if
 * the first failed, runs). `work` must write the idempotency record atomically with its effect;
 * if another process recorded the id first (`store.conflict`), that outcome is replayed.
 */
export async function once(ctx: Context, caller: Caller, sub: Submission, work: () => Promise<Outcome>): Promise<Outcome> {
  let running = inflight.get(ctx);
  if (running === undefined) inflight.set(ctx, (running = new Map()));
  const key = `${caller.deviceId}\u0000${sub.clientId}`;
  const prior = running.get(key);
  const p = (async () => {
    if (prior !== undefined) await prior.catch(() => undefined);
    const earlier = await replay(ctx, caller, sub);
    if (earlier !== null) return earlier;
    try {
      return await work();
    } catch (e) {
      if (isRendezvousError(e, 'store.conflict')) {
        const winner = await replay(ctx, caller, sub);
        if (winner !== null) return winner;
      }
      throw e;
    }
  })();
  running.set(key, p);
  try {
    return await p;
  } finally {
    if (running.get(key) === p) running.delete(key);
  }
}
