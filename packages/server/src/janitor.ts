/**
 * Retention (docs/server.md §Retention): what the server deletes on a schedule. Expired
 * sessions and challenges are useless; idempotency records and live-delivery events are kept
 * long enough for retries and reconnects (LIMITS) and then go, so the database does not grow
 * with every message twice over.
 */
import type { Context } from './context.ts';

export async function purgeExpired(ctx: Context) {
  const now = ctx.now();
  const r = await ctx.store.purgeExpired(now, {
    idempotencyBefore: now - ctx.limits.idempotencyRetentionMs,
    eventsBefore: now - ctx.limits.eventRetentionMs,
  });
  if (r.sessions + r.challenges + r.idempotency + r.events > 0) ctx.log.info(r, 'purged expired rows');
  return r;
}

/** Purges now and then every `everyMs`; returns the stop function. */
export function startJanitor(ctx: Context, everyMs = 10 * 60 * 1000): () => void {
  const run = () => purgeExpired(ctx).catch((err: unknown) => ctx.log.error({ err }, 'purging expired rows failed'));
  void run();
  const timer = setInterval(run, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
