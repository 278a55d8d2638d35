/**
 * Push notifications that reveal nothing (docs/server.md §Push): Web Push (RFC 8030) with
 * VAPID (RFC 8292) and payloads encrypted for the browser (RFC 8291), through `web-push`.
 *
 * A push is only a wake-up: a constant, padded payload with no topic id, user name, key, size
 * hint or content. The woken device syncs over the API like any reconnecting device
 * (GET /v1/events), so the push service (Apple, Google, a browser vendor) learns only that
 * *something* happened for a device, never what, where or how much.
 *
 * The dispatcher listens to the event bus. For each new entry, every device of its members
 * with a subscription, except the one that posted it and those connected live over the
 * WebSocket, gets a wake-up at the end of a coalescing window that the first entry opens:
 * a burst of entries is one push, and a device that connects during the window gets none.
 * Sending is off the request path: a bounded queue and a few workers, each send with a
 * timeout; 404/410 removes the subscription, 429/5xx and network errors retry with back-off.
 *
 * Endpoints are capability URLs (whoever knows one can push to that browser): only their
 * origin is ever logged. They are sent to over HTTPS only, and never to a private, loopback or
 * otherwise non-public address (no request forgery through a subscription), checked when a
 * subscription is added and again at every connection; `allowInsecure` lifts both rules for
 * development and tests and is never the default.
 */
import { createRequire } from 'node:module';
import { request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { ECDH } from 'node:crypto';
import { RendezvousError, fromBase64url, toBase64url } from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context, ServerEvent } from './context.ts';
import type { PushSubscriptionRow } from './storage/store.ts';
import { hostOf, isNonPublicAddress, publicLookup, resolveAll } from './net-guard.ts';

export { isNonPublicAddress } from './net-guard.ts';

// web-push ships no types; this is the part of its API used here.
interface WebPushLib {
  generateVAPIDKeys(): { publicKey: string; privateKey: string };
  generateRequestDetails(
    subscription: { endpoint: string; keys: { p256dh: string; auth: string } },
    payload: Buffer,
    options: {
      vapidDetails: { subject: string; publicKey: string; privateKey: string };
      TTL: number;
      urgency: 'very-low' | 'low' | 'normal' | 'high';
      topic: string;
      timeout: number;
    },
  ): { method: string; headers: Record<string, string | number>; body: Buffer | null; endpoint: string };
}
const webpush = createRequire(import.meta.url)('web-push') as WebPushLib;

export const PUSH_LIMITS = {
  subscriptionsPerDevice: 5,
  /** Real endpoints are 150–400 characters. */
  endpointMaxLength: 1024,
  /** Size of the plaintext wake-up before encryption (RFC 8291 adds a constant 103 bytes). */
  payloadBytes: 64,
  /** How long a push service keeps an undelivered wake-up (RFC 8030 TTL, seconds). */
  ttlSeconds: 24 * 60 * 60,
} as const;

/**
 * The one payload every push carries: `{"v":1,"t":"wake","p":"…"}` padded with spaces in `p`
 * to PUSH_LIMITS.payloadBytes. Always the same bytes, so its ciphertext always has the same size.
 */
export const WAKE_PAYLOAD: Buffer = (() => {
  const base = JSON.stringify({ v: 1, t: 'wake', p: '' });
  const json = JSON.stringify({ v: 1, t: 'wake', p: ' '.repeat(PUSH_LIMITS.payloadBytes - base.length) });
  return Buffer.from(json, 'utf8');
})();

/** RFC 8030 §5.4: a push service replaces an undelivered message with the same topic by the new one. */
const PUSH_TOPIC = 'wake';

export interface PushOptions {
  /**
   * Development and tests only: allow `http:` endpoints and endpoints on private, loopback or
   * link-local addresses. Never the default: it opens server-side request forgery.
   */
  allowInsecure?: boolean;
  /** VAPID `sub` claim (RFC 8292 §2.1): how a push service reaches the operator. Default `https://NAME` (or `mailto:postmaster@localhost`). */
  contact?: string;
  /** Coalescing window per device, ms (default 2000). */
  coalesceMs?: number;
  /** Bound of one send, connection to answer, ms (default 10,000). */
  timeoutMs?: number;
  /** Sends per wake-up before giving up on 429/5xx/network errors (default 5). */
  maxAttempts?: number;
  /** First retry delay, doubled each attempt (default 1000 ms; a Retry-After up to 60 s is honoured). */
  retryBaseMs?: number;
  /** Pending sends and coalescing devices kept in memory; beyond it wake-ups are dropped (default 10,000). */
  maxQueue?: number;
  /** Sends in flight at once (default 16). */
  concurrency?: number;
}

const VAPID_META = 'push_vapid_keys';
const MAX_RETRY_DELAY_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Endpoint checks (no request forgery through a subscription)

function badEndpoint(why: string): RendezvousError {
  return new RendezvousError('push.bad_endpoint', `endpoint: ${why}`, { field: 'endpoint' });
}

/**
 * Checks an endpoint: an absolute https URL without credentials whose host is, or resolves
 * only to, public addresses. With `allowInsecure`, http and any address are accepted.
 */
export async function checkEndpoint(endpoint: string, allowInsecure: boolean, resolve = resolveAll): Promise<URL> {
  if (endpoint.length > PUSH_LIMITS.endpointMaxLength) throw badEndpoint(`longer than ${PUSH_LIMITS.endpointMaxLength} characters`);
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw badEndpoint('not an absolute URL');
  }
  if (url.protocol !== 'https:' && !(allowInsecure && url.protocol === 'http:')) throw badEndpoint('must be an https URL');
  if (url.username !== '' || url.password !== '') throw badEndpoint('must not carry credentials');
  if (allowInsecure) return url;
  const host = hostOf(url);
  let addresses: string[];
  if (isIP(host) !== 0) addresses = [host];
  else {
    try {
      addresses = await resolve(host);
    } catch {
      throw badEndpoint('host does not resolve');
    }
  }
  if (addresses.length === 0 || addresses.some(isNonPublicAddress)) throw badEndpoint('host is not a public address');
  return url;
}

/** The subscription keys: an uncompressed P-256 point and a 16-byte secret (RFC 8291 §3). */
function checkKeys(p256dh: string, auth: string): void {
  let key: Uint8Array;
  let secret: Uint8Array;
  try {
    key = fromBase64url(p256dh.replace(/=+$/, ''));
    secret = fromBase64url(auth.replace(/=+$/, ''));
  } catch {
    throw new RendezvousError('push.bad_keys', 'keys: expected base64url');
  }
  if (key.length !== 65 || key[0] !== 4 || secret.length !== 16) throw new RendezvousError('push.bad_keys');
  try {
    ECDH.convertKey(Buffer.from(key), 'prime256v1', undefined, undefined, 'uncompressed');
  } catch {
    throw new RendezvousError('push.bad_keys', 'keys.p256dh: not a point on P-256');
  }
}

/** An endpoint as it may be logged: its origin only (the path is the capability). */
export function endpointOrigin(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    return '(invalid)';
  }
}

// ---------------------------------------------------------------------------------------------

export interface SubscriptionJson {
  id: string;
  endpoint: string;
  createdAt: number;
}

interface Job {
  sub: PushSubscriptionRow;
  attempt: number;
}

export class Push {
  private readonly o: Required<Omit<PushOptions, 'contact'>> & { contact: string };
  private isConnected: (deviceId: string) => boolean = () => false;
  private off: (() => void) | null = null;
  private closed = false;
  /** Devices with an open coalescing window, and the timer that ends it. */
  private readonly windows = new Map<string, NodeJS.Timeout>();
  private readonly queue: Job[] = [];
  /** Subscriptions with a send queued, in flight or waiting to retry: a new wake-up is covered by it. */
  private readonly pending = new Set<string>();
  private readonly retries = new Set<NodeJS.Timeout>();
  private active = 0;
  private readonly abort = new AbortController();
  private idleWaiters: (() => void)[] = [];

  private constructor(
    private readonly ctx: Context,
    /** The VAPID public key (uncompressed P-256, base64url): the browser's `applicationServerKey`. */
    readonly publicKey: string,
    private readonly privateKey: string,
    o: PushOptions,
  ) {
    const host = ctx.name.replace(/:\d+$/, '');
    this.o = {
      allowInsecure: o.allowInsecure ?? false,
      contact: o.contact ?? (host === 'localhost' || isIP(host) !== 0 ? 'mailto:postmaster@localhost' : `https://${host}`),
      coalesceMs: o.coalesceMs ?? 2_000,
      timeoutMs: o.timeoutMs ?? 10_000,
      maxAttempts: o.maxAttempts ?? 5,
      retryBaseMs: o.retryBaseMs ?? 1_000,
      maxQueue: o.maxQueue ?? 10_000,
      concurrency: o.concurrency ?? 16,
    };
  }

  /**
   * Loads the VAPID key pair from the store's meta table, or generates it on first start. It
   * lives with the subscriptions (a browser subscription is bound to the key it was made
   * with), so a backup restores both together and they can never disagree.
   */
  static async create(ctx: Context, o: PushOptions = {}): Promise<Push> {
    let stored = await ctx.store.getMeta(VAPID_META);
    if (stored === null) {
      const k = webpush.generateVAPIDKeys();
      stored = JSON.stringify({ publicKey: k.publicKey, privateKey: k.privateKey });
      await ctx.store.setMeta(VAPID_META, stored);
    }
    const keys = JSON.parse(stored) as { publicKey: string; privateKey: string };
    return new Push(ctx, keys.publicKey, keys.privateKey, o);
  }

  // ---- subscriptions (the routes of docs/server.md §Push) --------------------------------------

  /**
   * Adds (or refreshes) a subscription of the caller's device. The route takes the device's
   * `push` rate-limit token before reading the body; checks here run cheapest first, the DNS
   * lookup last.
   */
  async subscribe(caller: Caller, input: { endpoint: string; p256dh: string; auth: string }): Promise<SubscriptionJson> {
    checkKeys(input.p256dh, input.auth);
    const existing = await this.ctx.store.listPushSubscriptions(caller.deviceId);
    if (existing.length >= PUSH_LIMITS.subscriptionsPerDevice && !existing.some((s) => s.endpoint === input.endpoint)) {
      throw new RendezvousError('push.too_many', `a device holds at most ${PUSH_LIMITS.subscriptionsPerDevice} push subscriptions`);
    }
    await checkEndpoint(input.endpoint, this.o.allowInsecure);
    const row = await this.ctx.store.addPushSubscription(
      {
        id: toBase64url(this.ctx.random(16)),
        deviceId: caller.deviceId,
        endpoint: input.endpoint,
        p256dh: input.p256dh.replace(/=+$/, ''),
        auth: input.auth.replace(/=+$/, ''),
        createdAt: this.ctx.now(),
      },
      PUSH_LIMITS.subscriptionsPerDevice,
    );
    this.ctx.log.info({ deviceId: caller.deviceId, subscription: row.id, origin: endpointOrigin(row.endpoint) }, 'push subscription added');
    return json(row);
  }

  async list(caller: Caller): Promise<SubscriptionJson[]> {
    return (await this.ctx.store.listPushSubscriptions(caller.deviceId)).map(json);
  }

  async unsubscribe(caller: Caller, id: string): Promise<void> {
    if (!(await this.ctx.store.deletePushSubscription(caller.deviceId, id))) throw new RendezvousError('push.unknown');
  }

  // ---- the dispatcher ---------------------------------------------------------------------------

  /** Starts listening to the event bus; `isConnected` says which devices are live on the WebSocket. */
  start(isConnected: (deviceId: string) => boolean): void {
    this.isConnected = isConnected;
    this.off = this.ctx.events.on((e) => {
      if (e.kind === 'entry') this.onEntry(e).catch((err: unknown) => this.ctx.log.warn({ err }, 'push: finding devices to wake failed'));
    });
  }

  /** Stops: no new sends, pending windows and retries dropped, sends in flight aborted. */
  async close(): Promise<void> {
    this.closed = true;
    this.off?.();
    for (const t of this.windows.values()) clearTimeout(t);
    this.windows.clear();
    for (const t of this.retries) clearTimeout(t);
    this.retries.clear();
    this.queue.length = 0;
    this.abort.abort();
    await this.idle();
  }

  /** Resolves when nothing is being sent (tests; shutdown). */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async onEntry(e: Extract<ServerEvent, { kind: 'entry' }>): Promise<void> {
    const suffix = `@${this.ctx.name}`;
    for (const user of e.users) {
      // Users of other servers are woken by their own home server.
      if (this.closed || !user.endsWith(suffix)) continue;
      const subs = await this.ctx.store.pushSubscriptionsOfUser(user);
      for (const deviceId of new Set(subs.map((s) => s.deviceId))) {
        if (deviceId !== e.deviceId && !this.isConnected(deviceId)) this.open(deviceId);
      }
    }
  }

  /** Opens the device's coalescing window unless one is open: every entry until it ends is the same push. */
  private open(deviceId: string): void {
    if (this.closed || this.windows.has(deviceId)) return;
    if (this.windows.size >= this.o.maxQueue) {
      this.ctx.metrics.pushes.inc({ outcome: 'dropped' });
      return;
    }
    const timer = setTimeout(() => {
      this.windows.delete(deviceId);
      this.fire(deviceId).catch((err: unknown) => this.ctx.log.warn({ err }, 'push: reading subscriptions failed'));
    }, this.o.coalesceMs);
    timer.unref();
    this.windows.set(deviceId, timer);
  }

  private async fire(deviceId: string): Promise<void> {
    // A device that connected during the window gets its events over the WebSocket.
    if (this.closed || this.isConnected(deviceId)) return;
    for (const sub of await this.ctx.store.listPushSubscriptions(deviceId)) {
      if (this.pending.has(sub.id)) continue;
      if (this.queue.length >= this.o.maxQueue) {
        this.ctx.metrics.pushes.inc({ outcome: 'dropped' });
        continue;
      }
      this.pending.add(sub.id);
      this.queue.push({ sub, attempt: 0 });
    }
    this.pump();
  }

  private pump(): void {
    while (!this.closed && this.active < this.o.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.active++;
      void this.run(job).finally(() => {
        this.active--;
        if (this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
        this.pump();
      });
    }
  }

  private async run(job: Job): Promise<void> {
    const { sub } = job;
    const origin = endpointOrigin(sub.endpoint);
    let retry = false;
    try {
      let status = 0;
      let retryAfter: string | undefined;
      let failure: string | undefined;
      try {
        const r = await this.deliver(sub);
        status = r.status;
        retryAfter = typeof r.headers['retry-after'] === 'string' ? r.headers['retry-after'] : undefined;
      } catch (err) {
        if (this.closed) return;
        failure = (err as NodeJS.ErrnoException).code ?? (err as Error).name;
      }
      if (status >= 200 && status < 300) {
        this.ctx.metrics.pushes.inc({ outcome: 'sent' });
      } else if (status === 404 || status === 410) {
        // The browser unsubscribed or the subscription expired: it will never work again.
        await this.ctx.store.deletePushSubscription(sub.deviceId, sub.id);
        this.ctx.metrics.pushes.inc({ outcome: 'removed' });
        this.ctx.log.info({ deviceId: sub.deviceId, subscription: sub.id, origin, status }, 'push subscription gone; removed');
      } else if (status === 0 || status === 429 || status >= 500) {
        if (job.attempt + 1 < this.o.maxAttempts && !this.closed) {
          retry = true;
          this.ctx.metrics.pushes.inc({ outcome: 'retried' });
          this.later(job, retryDelay(this.o.retryBaseMs, job.attempt, retryAfter));
        } else {
          this.ctx.metrics.pushes.inc({ outcome: 'failed' });
          this.ctx.log.warn({ subscription: sub.id, origin, status, failure, attempts: job.attempt + 1 }, 'push failed; giving up on this wake-up');
        }
      } else {
        this.ctx.metrics.pushes.inc({ outcome: 'failed' });
        this.ctx.log.warn({ subscription: sub.id, origin, status }, 'push refused by the push service');
      }
    } catch (err) {
      this.ctx.metrics.pushes.inc({ outcome: 'failed' });
      this.ctx.log.warn({ err, subscription: sub.id, origin }, 'push failed');
    } finally {
      if (!retry) this.pending.delete(sub.id);
    }
  }

  private later(job: Job, ms: number): void {
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      // Re-read: the device or the subscription may be gone, or the device now live.
      this.ctx.store.listPushSubscriptions(job.sub.deviceId).then(
        (subs) => {
          const sub = subs.find((s) => s.id === job.sub.id);
          if (this.closed || sub === undefined || this.isConnected(sub.deviceId)) {
            this.pending.delete(job.sub.id);
            return;
          }
          this.queue.push({ sub, attempt: job.attempt + 1 });
          this.pump();
        },
        () => this.pending.delete(job.sub.id),
      );
    }, ms);
    timer.unref();
    this.retries.add(timer);
  }

  /** One POST to the push service: the encrypted wake-up with its VAPID Authorization. */
  private deliver(sub: PushSubscriptionRow): Promise<{ status: number; headers: IncomingHttpHeaders }> {
    const details = webpush.generateRequestDetails({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } }, WAKE_PAYLOAD, {
      vapidDetails: { subject: this.o.contact, publicKey: this.publicKey, privateKey: this.privateKey },
      TTL: PUSH_LIMITS.ttlSeconds,
      urgency: 'high',
      topic: PUSH_TOPIC,
      timeout: this.o.timeoutMs,
    });
    const url = new URL(sub.endpoint);
    const host = hostOf(url);
    // Re-checked at every send: the row may predate a configuration change.
    if (!this.o.allowInsecure && (url.protocol !== 'https:' || (isIP(host) !== 0 && isNonPublicAddress(host)))) {
      return Promise.reject(Object.assign(new Error('push endpoint is not public https'), { code: 'EPUSHPRIVATE' }));
    }
    const options: RequestOptions = {
      hostname: host,
      port: url.port === '' ? undefined : Number(url.port),
      path: url.pathname + url.search,
      method: 'POST',
      headers: details.headers,
      timeout: this.o.timeoutMs,
      signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.o.timeoutMs)]),
      lookup: this.o.allowInsecure ? undefined : (publicLookup as RequestOptions['lookup']),
    };
    return new Promise((resolve, reject) => {
      const req: ClientRequest = (url.protocol === 'https:' ? httpsRequest : httpRequest)(options, (res) => {
        // The answer's body is of no use; read (and drop) it so the socket is freed.
        res.on('data', () => undefined);
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('push send timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', reject);
      req.end(details.body ?? undefined);
    });
  }
}

function json(row: PushSubscriptionRow): SubscriptionJson {
  return { id: row.id, endpoint: row.endpoint, createdAt: row.createdAt };
}

/** Exponential back-off from `base`, or the push service's Retry-After (seconds) when longer; at most a minute. */
export function retryDelay(base: number, attempt: number, retryAfter: string | undefined): number {
  const backoff = base * 2 ** attempt;
  const asked = retryAfter !== undefined && /^\d{1,6}$/.test(retryAfter) ? Number(retryAfter) * 1000 : 0;
  return Math.min(MAX_RETRY_DELAY_MS, Math.max(backoff, asked));
}
