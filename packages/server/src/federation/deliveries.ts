/**
 * Outbound federation delivery (protocol §17.6): one loop per destination server.
 *
 * Everything a loop sends is durable before it is attempted — forwarded submissions and
 * cosignatures are outbox rows, entries are the log itself read from a replication cursor — so
 * the loop holds no state worth losing: after a crash it starts again from the store. A loop
 * sends in order (outbox rows by id, then each topic from its cursor); a failure backs off
 * exponentially with jitter, and a request from that server (it is back) or new work after the
 * back-off resets it.
 */
import { RendezvousError, toHex } from '@rendezvous/protocol';
import type { Context } from '../context.ts';
import { responseJson, type Outcome } from '../idempotency.ts';
import type { OutboxRow } from '../storage/store.ts';
import { RefusedTopic, deliverReplication } from './replica.ts';

const OUTBOX_BATCH = 50;
/**
 * A forwarded submission the host has not taken for this long is given up: its device gets
 * `federation.unreachable` as the final answer (a retry replays it), and later rows move on.
 */
export const SUBMISSION_EXPIRY_MS = 3 * 24 * 3600_000;
/** Every destination with pending work is tried at least this often, whatever woke it last. */
const SWEEP_MS = 30_000;
/** A topic a server refused waits this long before it is offered again, doubling to an hour. */
const REFUSED_MIN_MS = 30_000;
const REFUSED_MAX_MS = 3_600_000;

interface Loop {
  running: boolean;
  /** Woken while running: run once more before stopping. */
  again: boolean;
  failures: number;
  timer: NodeJS.Timeout | null;
}

export class Deliveries {
  private readonly loops = new Map<string, Loop>();
  private readonly waiters = new Map<number, { destination: string; resolve: (o: Outcome | null) => void }>();
  /** Topics a destination refused (`destination topicHex` → when to offer again, and how often refused). */
  private readonly refused = new Map<string, { until: number; times: number }>();
  private sweep: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly ctx: Context) {}

  /** Starts the periodic sweep and every loop with work left from before a restart. */
  async start(): Promise<void> {
    const run = async () => {
      try {
        for (const d of await this.ctx.store.federationDestinations()) this.wake(d);
      } catch (e) {
        this.ctx.log.error({ err: e }, 'federation: sweep failed');
      }
    };
    await run();
    this.sweep = setInterval(() => void run(), SWEEP_MS);
    this.sweep.unref();
  }

  close(): void {
    this.closed = true;
    if (this.sweep !== null) clearInterval(this.sweep);
    for (const l of this.loops.values()) if (l.timer !== null) clearTimeout(l.timer);
  }

  private loop(destination: string): Loop {
    let l = this.loops.get(destination);
    if (l === undefined) {
      l = { running: false, again: false, failures: 0, timer: null };
      this.loops.set(destination, l);
    }
    return l;
  }

  /** New work for `destination`: runs its loop unless it is backing off after failures. */
  wake(destination: string): void {
    if (this.closed || destination === this.ctx.name) return;
    const l = this.loop(destination);
    if (l.running) {
      l.again = true;
      return;
    }
    if (l.timer !== null) return;
    void this.run(destination, l);
  }

  /** `destination` just reached us, so it is up: forget its back-off and deliver now. */
  contact(destination: string): void {
    const l = this.loops.get(destination);
    if (l === undefined || l.failures === 0) return;
    l.failures = 0;
    if (l.timer !== null) {
      clearTimeout(l.timer);
      l.timer = null;
    }
    this.wake(destination);
  }

  /** What an operator sees (GET /v1/admin/federation): the backlog and health of every destination. */
  async status(): Promise<{ server: string; outbox: number; entriesBehind: number; topics: number; refusedTopics: number; failures: number }[]> {
    const out = [];
    for (const server of (await this.ctx.store.federationDestinations()).sort()) {
      const due = await this.ctx.store.replicationDue(server);
      out.push({
        server,
        outbox: (await this.ctx.store.nextOutbox(server, 10_000)).length,
        entriesBehind: due.reduce((n, r) => n + Math.min(r.size, r.until === null ? r.size : r.until + 1) - r.nextIndex, 0),
        topics: due.length,
        refusedTopics: due.filter((r) => (this.refused.get(`${server} ${toHex(r.topicId)}`)?.until ?? 0) > this.ctx.now()).length,
        failures: this.loops.get(server)?.failures ?? 0,
      });
    }
    return out;
  }

  /** Whether the destination's last attempt failed (a forwarded post then answers 202 at once). */
  isFailing(destination: string): boolean {
    return (this.loops.get(destination)?.failures ?? 0) > 0;
  }

  /**
   * Resolves with the answer to outbox row `id` of `destination` once it is delivered, or with
   * null after `ms` or as soon as an attempt to reach the destination fails.
   */
  waitFor(destination: string, id: number, ms: number): Promise<Outcome | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(null), ms);
      const done = (o: Outcome | null) => {
        clearTimeout(timer);
        this.waiters.delete(id);
        resolve(o);
      };
      this.waiters.set(id, { destination, resolve: done });
    });
  }

  private async run(destination: string, l: Loop): Promise<void> {
    l.running = true;
    try {
      for (;;) {
        l.again = false;
        const more = await this.work(destination);
        l.failures = 0;
        if (!more && !l.again) break;
        if (this.closed) break;
      }
    } catch (e) {
      l.failures++;
      for (const w of [...this.waiters.values()]) if (w.destination === destination) w.resolve(null);
      const { retryMinMs, retryMaxMs } = this.ctx.federation.options;
      const base = Math.min(retryMaxMs, retryMinMs * 2 ** Math.min(l.failures - 1, 30));
      const delay = Math.round(base / 2 + Math.random() * (base / 2));
      this.ctx.log.warn({ destination, failures: l.failures, retryInMs: delay, err: (e as Error).message }, 'federation: delivery failed, will retry');
      if (!this.closed) {
        l.timer = setTimeout(() => {
          l.timer = null;
          void this.run(destination, l);
        }, delay);
        l.timer.unref();
      }
    } finally {
      l.running = false;
    }
  }

  /** One round for a destination: its outbox rows in order, then its replication cursors. */
  private async work(destination: string): Promise<boolean> {
    const rows = await this.ctx.store.nextOutbox(destination, OUTBOX_BATCH);
    for (const row of rows) await this.deliverRow(row);
    let more = rows.length === OUTBOX_BATCH;
    for (const r of await this.ctx.store.replicationDue(destination)) {
      const key = `${destination} ${toHex(r.topicId)}`;
      const held = this.refused.get(key);
      if (held !== undefined && held.until > this.ctx.now()) continue;
      try {
        if (await deliverReplication(this.ctx, r)) more = true;
        this.refused.delete(key);
      } catch (e) {
        if (!(e instanceof RefusedTopic)) throw e;
        const times = (held?.times ?? 0) + 1;
        this.refused.set(key, { until: this.ctx.now() + Math.min(REFUSED_MAX_MS, REFUSED_MIN_MS * 2 ** (times - 1)), times });
      }
    }
    return more;
  }

  /**
   * Sends one outbox row. A 2xx, or a refusal that retrying cannot change (4xx but 408 and
   * 429), completes it — for a forwarded submission the answer becomes the device's answer
   * (its idempotency record). Anything else throws, and the loop backs off.
   */
  private async deliverRow(row: OutboxRow): Promise<void> {
    const p = JSON.parse(row.payload) as { path: string; body: unknown; answer?: { deviceId: string; clientId: string } };
    const count = (outcome: string) => this.ctx.metrics.federation.inc({ kind: row.kind, outcome });
    if (row.kind === 'submit' && this.ctx.now() - row.createdAt > SUBMISSION_EXPIRY_MS) {
      const message = `${row.destination} could not be reached for ${SUBMISSION_EXPIRY_MS / 3600_000} hours; the submission was not delivered`;
      const expired: Outcome = { status: 502, body: { error: { code: 'federation.unreachable', message } } };
      this.ctx.log.warn({ destination: row.destination, outboxId: row.id }, 'federation: forwarded submission expired');
      await this.ctx.store.completeOutbox(row.id, p.answer === undefined ? undefined : { ...p.answer, response: responseJson(expired) });
      count('expired');
      this.waiters.get(row.id)?.resolve(expired);
      return;
    }
    let res: { status: number; body: Record<string, unknown> };
    try {
      res = await this.ctx.federation.request(row.destination, 'POST', p.path, p.body);
    } catch (e) {
      await this.ctx.store.failOutbox(row.id);
      count('failed');
      throw e;
    }
    const final = (res.status >= 200 && res.status < 300) || (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429);
    if (!final) {
      await this.ctx.store.failOutbox(row.id);
      count('failed');
      throw new RendezvousError('federation.unreachable', `${row.destination} answered ${res.status}`);
    }
    const outcome: Outcome = { status: res.status, body: res.body };
    count(res.status >= 400 ? 'refused' : 'delivered');
    if (res.status >= 400) {
      this.ctx.log.warn({ destination: row.destination, kind: row.kind, status: res.status, error: res.body.error }, 'federation: refused by the destination');
    }
    // A cosignature row may have been replaced by a newer one while this one was in flight: the
    // store then keeps it (the payload differs) and the next round sends the newer one.
    await this.ctx.store.completeOutbox(row.id, p.answer === undefined ? undefined : { ...p.answer, response: responseJson(outcome) }, row.payload);
    this.waiters.get(row.id)?.resolve(outcome);
  }
}

const all = new WeakMap<Context, Deliveries>();

/** The delivery loops of a server (created on first use; `startFederation` starts the sweep). */
export function deliveries(ctx: Context): Deliveries {
  let d = all.get(ctx);
  if (d === undefined) {
    d = new Deliveries(ctx);
    all.set(ctx, d);
  }
  return d;
}

/** Starts delivery for a running server: resumes every destination with work, resets back-off on contact. */
export async function startFederation(ctx: Context): Promise<() => void> {
  const d = deliveries(ctx);
  const off = ctx.federation.onContact((origin) => d.contact(origin));
  await d.start();
  return () => {
    off();
    d.close();
  };
}

