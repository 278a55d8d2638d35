/**
 * Live delivery (docs/server.md §Events): what a device has not seen yet, from its cursor.
 *
 * The durable record is the store's event table, written in the same transaction as what it
 * announces, with a global increasing sequence number. A device reads every event after its
 * cursor — over HTTP (`GET /v1/events`) or pushed over its WebSocket — and resumes from the last
 * sequence number it processed, so a reconnect loses nothing and repeats nothing.
 *
 * The in-process event bus says when to look. For a log append it also carries the commit,
 * encoded once (`LiveCommit`), so a connection that is caught up sends those bytes instead of
 * reading the store back: a message to a topic of 1,000 connected devices is encoded once, not
 * 1,000 times. That shortcut is only taken when it delivers exactly what a store read would
 * (see `EventBus.onDevice` and http/ws.ts); anything else falls back to the store.
 *
 * SQLite assigns sequence numbers inside its single writer's transactions, so events become
 * visible in sequence order and a cursor never skips one that commits later. (A backend with
 * concurrent writers must keep that property, e.g. by reading only below the oldest open
 * writer's number.)
 */
import { toBase64url } from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context, ServerEvent } from './context.ts';
import type { EntryRow, WrittenEvent } from './storage/store.ts';

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

// ---------------------------------------------------------------------------------------------
// The event bus

/**
 * One append's commit as live delivery sends it: the events it wrote (consecutive seqs `first`
 * to `last`) and, encoded once, the batch a caught-up device of a member receives for it.
 */
export interface LiveCommit {
  first: number;
  last: number;
  /** The seq of the commit's last entry event: the batch's cursor. */
  lastEntrySeq: number;
  /**
   * Users whose membership the commit changed. Their devices read the store instead: a joining
   * member's store read also returns the topic's earlier events after its cursor, a leaving
   * member's none of the topic's, and the shared batch would say neither.
   */
  changed: ReadonlySet<string>;
  /** `{"type":"events",events,cursor,checkpoints}` of the commit's entries, as `readEvents` would build it; built on first use. */
  frame(): Buffer;
}

/** The LiveCommit of an append the store reported `written` for; undefined if it wrote no entry. */
export function liveCommit(topicId: Uint8Array, entries: readonly EntryRow[], checkpoint: Uint8Array, written: readonly WrittenEvent[]): LiveCommit | undefined {
  const entrySeqs = written.filter((w) => w.kind === 'entry');
  if (entrySeqs.length === 0) return undefined;
  let frame: Buffer | undefined;
  return {
    first: written[0]!.seq,
    last: written[written.length - 1]!.seq,
    lastEntrySeq: entrySeqs[entrySeqs.length - 1]!.seq,
    changed: new Set(written.flatMap((w) => (w.kind === 'membership' ? [w.user] : []))),
    frame() {
      if (frame !== undefined) return frame;
      const id = toBase64url(topicId);
      const byIndex = new Map(entries.map((e) => [e.index, e]));
      const events: EventJson[] = entrySeqs.map((w) => {
        const e = byIndex.get(w.index);
        if (e === undefined) throw new Error(`liveCommit: no entry ${w.index} in the batch`);
        return { seq: w.seq, kind: 'entry', topicId: id, index: w.index, type: e.type, entry: toBase64url(e.entry) };
      });
      const batch: EventBatch = { events, cursor: this.lastEntrySeq, checkpoints: { [id]: toBase64url(checkpoint) } };
      frame = Buffer.from(JSON.stringify({ type: 'events', ...batch }));
      return frame;
    },
  };
}

type DeviceListener = { user: string; deviceId: string; fn: (e: ServerEvent, inOrder: boolean) => void };

export interface EventBus {
  emit(e: ServerEvent): void;
  /** Every event (push, forwarded submissions). */
  on(listener: (e: ServerEvent) => void): () => void;
  /**
   * The events that may concern one device: entries of topics its user is or was a member of
   * (`users` of the event), its bundles and its removal, and every session end. `inOrder` is
   * true when every event with a lower seq than this one's was emitted before it, or was written
   * before `start`: a device that has read the store since it subscribed, and handled every
   * signal since, has then been told about everything before this event that concerns it.
   */
  onDevice(user: string, deviceId: string, listener: (e: ServerEvent, inOrder: boolean) => void): () => void;
  /** Everything up to `latestSeq` (the store's latest when live delivery starts) counts as emitted. */
  start(latestSeq: number): void;
  /**
   * Bumped when the bus stops waiting for a seq that was never announced (MAX_AHEAD): a
   * connection's store read from before the bump no longer makes it caught up, so its next
   * signal reads the store again, which returns whatever the gap held.
   */
  readonly generation: number;
}

/** Ranges held while waiting for a missing seq before the bus gives up on it (see generation). */
export const MAX_AHEAD = 10_000;

/** The seqs an event announces, if it says. */
function seqRange(e: ServerEvent): [number, number] | null {
  if (e.kind === 'entry') return e.live === undefined ? null : [e.live.first, e.live.last];
  if (e.kind === 'bundle') return e.seq === undefined ? null : [e.seq, e.seq];
  return null;
}

export function createEventBus(): EventBus {
  const all = new Set<(e: ServerEvent) => void>();
  const byUser = new Map<string, Set<DeviceListener>>();
  const byDevice = new Map<string, Set<DeviceListener>>();
  // Every seq ≤ through was emitted (or written before start); ranges emitted out of order wait
  // in `ahead` (first → last). null until start: then nothing is in order.
  let through: number | null = null;
  const ahead = new Map<number, number>();
  let generation = 0;

  const add = (map: Map<string, Set<DeviceListener>>, key: string, l: DeviceListener) => {
    let set = map.get(key);
    if (set === undefined) map.set(key, (set = new Set()));
    set.add(l);
  };
  const remove = (map: Map<string, Set<DeviceListener>>, key: string, l: DeviceListener) => {
    const set = map.get(key);
    if (set === undefined) return;
    set.delete(l);
    if (set.size === 0) map.delete(key);
  };

  return {
    get generation() {
      return generation;
    },
    emit(e) {
      const range = seqRange(e);
      const inOrder = range !== null && through !== null && range[0] - 1 <= through;
      if (range !== null && through !== null && range[1] > through) {
        if (range[0] <= through + 1) {
          through = range[1];
          for (let next = ahead.get(through + 1); next !== undefined; next = ahead.get(through + 1)) {
            ahead.delete(through + 1);
            through = next;
          }
        } else {
          ahead.set(range[0], range[1]);
          // A seq that is never announced (an emit lost to an exception, another process
          // writing) would hold `through` forever and grow `ahead` by a range per commit.
          if (ahead.size > MAX_AHEAD) {
            through = Math.max(...ahead.values());
            ahead.clear();
            generation++;
          }
        }
      }
      for (const l of all) l(e);
      switch (e.kind) {
        case 'entry':
          for (const user of e.users) for (const l of byUser.get(user) ?? []) l.fn(e, inOrder);
          break;
        case 'bundle':
        case 'device-removed':
          for (const l of byDevice.get(e.deviceId) ?? []) l.fn(e, inOrder);
          break;
        case 'session-ended':
          for (const set of byDevice.values()) for (const l of set) l.fn(e, false);
          break;
        default:
          break;
      }
    },
    on(l) {
      all.add(l);
      return () => all.delete(l);
    },
    onDevice(user, deviceId, fn) {
      const l: DeviceListener = { user, deviceId, fn };
      add(byUser, user, l);
      add(byDevice, deviceId, l);
      return () => {
        remove(byUser, user, l);
        remove(byDevice, deviceId, l);
      };
    },
    start(latestSeq) {
      // Nothing waits in `ahead` before a start: ranges are only recorded once `through` is set.
      if (through === null || latestSeq > through) through = latestSeq;
    },
  };
}
