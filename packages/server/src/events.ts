/**
 * Live delivery (docs/server.md §Events): what a device has not seen yet, from its cursor.
 *
 * The durable record is the store's event table, written in the same transaction as what it
 * announces, with a global increasing sequence number. A device reads every event after its
 * cursor — over HTTP (`GET /v1/events`) or pushed over its WebSocket — and resumes from the last
 * sequence number it processed, so a reconnect loses nothing and repeats nothing. The in-process
 * event bus only says *when* to look; it carries nothing a device needs.
 *
 * SQLite assigns sequence numbers inside its single writer's transactions, so events become
 * visible in sequence order and a cursor never skips one that commits later. (A backend with
 * concurrent writers must keep that property, e.g. by reading only below the oldest open
 * writer's number.)
 */
import { toBase64url } from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context } from './context.ts';

export const MAX_EVENTS_PER_BATCH = 500;

export type EventJson =
  | { seq: number; kind: 'entry'; topicId: string; index: number; type: 'update' | 'message'; entry: string }
  | { seq: number; kind: 'membership'; topicId: string; user: string }
  | { seq: number; kind: 'bundle' };

export interface EventBatch {
  events: EventJson[];
  /** The sequence number to resume after: the last event's, or the request's cursor if none. */
  cursor: number;
  /** Current checkpoint of every topic the batch has entries of, so entries can be verified. */
  checkpoints: Record<string, string>;
  /** Pending key bundles of this device, when the batch has a bundle event (acknowledge with POST /v1/bundles/ack). */
  bundles?: { id: number; senderDeviceId: string; bundle: string }[];
  /**
   * Set when events after the cursor were already purged (retention): the device must catch up
   * from its topics (GET /v1/topics, then each topic's entries) and bundles, then go on from `cursor`.
   */
  resync?: true;
}

export async function readEvents(ctx: Context, caller: Caller, after: number, limit = MAX_EVENTS_PER_BATCH): Promise<EventBatch> {
  const rows = await ctx.store.eventsSince(after, caller.user, caller.deviceId, Math.min(Math.max(1, limit), MAX_EVENTS_PER_BATCH));
  const events: EventJson[] = [];
  const checkpoints: Record<string, string> = {};
  let hasBundle = false;
  for (const e of rows) {
    if (e.kind === 'entry' && e.topicId !== null && e.index !== null) {
      const [entry] = await ctx.store.getEntries(e.topicId, e.index, 1);
      const topicId = toBase64url(e.topicId);
      // A topic deleted since the event was written: nothing left to deliver.
      if (entry === undefined || entry.index !== e.index) continue;
      events.push({ seq: e.seq, kind: 'entry', topicId, index: e.index, type: entry.type, entry: toBase64url(entry.entry) });
      if (checkpoints[topicId] === undefined) {
        const row = await ctx.store.getTopic(e.topicId);
        if (row !== null) checkpoints[topicId] = toBase64url(row.checkpoint);
      }
    } else if (e.kind === 'membership' && e.topicId !== null && e.user !== null) {
      events.push({ seq: e.seq, kind: 'membership', topicId: toBase64url(e.topicId), user: e.user });
    } else if (e.kind === 'bundle') {
      hasBundle = true;
      events.push({ seq: e.seq, kind: 'bundle' });
    }
  }
  const batch: EventBatch = { events, cursor: rows.length > 0 ? rows[rows.length - 1]!.seq : after, checkpoints };
  const purged = await ctx.store.eventsPurgedThrough();
  if (after < purged) {
    batch.resync = true;
    batch.cursor = Math.max(batch.cursor, purged);
  }
  if (hasBundle) {
    batch.bundles = (await ctx.store.listBundles(caller.deviceId)).map((b) => ({
      id: b.id,
      senderDeviceId: b.senderDeviceId,
      bundle: toBase64url(b.encoded),
    }));
  }
  return batch;
}

/** Whether a bus signal may concern this device (a cheap filter before reading the store). */
export function concerns(caller: Caller, e: Parameters<Parameters<Context['events']['on']>[0]>[0]): boolean {
  switch (e.kind) {
    case 'entry':
      return e.users.includes(caller.user);
    case 'bundle':
      return e.deviceId === caller.deviceId;
    default:
      return false;
  }
}
