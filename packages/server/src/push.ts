/**
 * Push notifications that reveal nothing (docs/server.md §Push), through three providers
 * behind one interface (push/provider.ts): Web Push (RFC 8030, VAPID, RFC 8291 payloads;
 * push/webpush.ts), Apple's APNs (push/apns.ts) and Google's FCM (push/fcm.ts).
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
 * Web Push endpoints are capability URLs sent to over public HTTPS only (push/webpush.ts);
 * APNs and FCM tokens only ever go into the path or body of the operator-configured endpoint.
 * Neither an endpoint's path nor a token is ever logged.
 */
import { isIP } from 'node:net';
import { RendezvousError, toBase64url } from '@rendezvous/protocol';
import type { Caller } from './accounts.ts';
import type { Context, ServerEvent } from './context.ts';
import type { PushSubscriptionRow } from './storage/store.ts';
import { PUSH_KINDS, PUSH_LIMITS, type PushKind, type PushProvider, type SendResult } from './push/provider.ts';
import { WebPushProvider, checkEndpoint, checkKeys, endpointOrigin, webpush } from './push/webpush.ts';
import { ApnsProvider, isApnsToken, type ApnsOptions } from './push/apns.ts';
import { FcmProvider, isFcmToken, type FcmOptions } from './push/fcm.ts';

export { isNonPublicAddress } from './net-guard.ts';
export { PUSH_LIMITS, WAKE_PAYLOAD, APNS_PAYLOAD, FCM_DATA, type PushKind, type PushProvider, type SendResult } from './push/provider.ts';
export { checkEndpoint, endpointOrigin } from './push/webpush.ts';
export { APNS_PRODUCTION, APNS_SANDBOX, type ApnsOptions } from './push/apns.ts';
export { FCM_ENDPOINT, GOOGLE_TOKEN_URI, fcmBody, type FcmOptions, type FcmServiceAccount } from './push/fcm.ts';

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
  /** Apple Push Notification service; without it `apns` subscriptions are refused. */
  apns?: ApnsOptions;
  /** Firebase Cloud Messaging (HTTP v1); without it `fcm` subscriptions are refused. */
  fcm?: FcmOptions;
}

/** What a device subscribes with: a Web Push subscription, or an APNs or FCM device token. */
export type SubscribeInput = { kind: 'webpush'; endpoint: string; p256dh: string; auth: string } | { kind: 'apns' | 'fcm'; token: string };

const VAPID_META = 'push_vapid_keys';
const MAX_RETRY_DELAY_MS = 60_000;

/** Where a subscription's pushes go, as it may be logged: an endpoint's origin, or the provider (never a token). */
function whereOf(sub: PushSubscriptionRow): string {
  return sub.kind === 'webpush' ? endpointOrigin(sub.endpoint) : sub.kind;
}

// ---------------------------------------------------------------------------------------------

/** A subscription as the API shows it: a Web Push one by its endpoint, an APNs or FCM one by its token. */
export type SubscriptionJson = { id: string; kind: PushKind; createdAt: number } & ({ endpoint: string } | { token: string });

interface Job {
  sub: PushSubscriptionRow;
  attempt: number;
}

export class Push {
  private readonly o: Required<Omit<PushOptions, 'contact' | 'apns' | 'fcm'>> & { contact: string };
  /** The configured providers; Web Push is always there. */
  private readonly providers = new Map<PushKind, PushProvider>();
  private isConnected: (deviceId: string) => boolean = () => false;
  private off: (() => void) | null = null;
  private closed = false;
  /** Users with a push subscription (a superset once loaded; see start). */
  private readonly subscribers = new Set<string>();
  private subscribersLoaded = false;
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
    const { allowInsecure, contact, timeoutMs } = this.o;
    this.providers.set('webpush', new WebPushProvider({ contact, publicKey, privateKey, allowInsecure, timeoutMs }));
    if (o.apns !== undefined) this.providers.set('apns', new ApnsProvider(o.apns, ctx.now));
    if (o.fcm !== undefined) this.providers.set('fcm', new FcmProvider(o.fcm, ctx.now));
  }

  /** The providers this server sends through, in a fixed order. */
  get kinds(): PushKind[] {
    return PUSH_KINDS.filter((k) => this.providers.has(k));
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
  async subscribe(caller: Caller, input: SubscribeInput): Promise<SubscriptionJson> {
    if (!this.providers.has(input.kind)) throw new RendezvousError('push.unsupported', `this server does not send ${input.kind} pushes`, { field: 'kind' });
    let endpoint: string;
    if (input.kind === 'webpush') {
      checkKeys(input.p256dh, input.auth);
      endpoint = input.endpoint;
    } else {
      endpoint = input.token;
      if (input.kind === 'apns' ? !isApnsToken(endpoint) : !isFcmToken(endpoint)) {
        const what = input.kind === 'apns' ? `hex, ${PUSH_LIMITS.apnsTokenMin}–${PUSH_LIMITS.apnsTokenMax} characters` : `[A-Za-z0-9_:-], at most ${PUSH_LIMITS.fcmTokenMax} characters`;
        throw new RendezvousError('request.bad_field', `token: an ${input.kind} device token is ${what}`, { field: 'token' });
      }
    }
    const existing = await this.ctx.store.listPushSubscriptions(caller.deviceId);
    if (existing.length >= PUSH_LIMITS.subscriptionsPerDevice && !existing.some((s) => s.kind === input.kind && s.endpoint === endpoint)) {
      throw new RendezvousError('push.too_many', `a device holds at most ${PUSH_LIMITS.subscriptionsPerDevice} push subscriptions`);
    }
    if (input.kind === 'webpush') await checkEndpoint(endpoint, this.o.allowInsecure);
    this.subscribers.add(caller.user);
    const row = await this.ctx.store.addPushSubscription(
      {
        id: toBase64url(this.ctx.random(16)),
        deviceId: caller.deviceId,
        kind: input.kind,
        endpoint,
        p256dh: input.kind === 'webpush' ? input.p256dh.replace(/=+$/, '') : '',
        auth: input.kind === 'webpush' ? input.auth.replace(/=+$/, '') : '',
        createdAt: this.ctx.now(),
      },
      PUSH_LIMITS.subscriptionsPerDevice,
    );
    this.ctx.log.info({ deviceId: caller.deviceId, subscription: row.id, origin: whereOf(row) }, 'push subscription added');
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
    // Who may need a push: a topic of 1,000 members must not cost 1,000 reads per entry when
    // few of them subscribed. Users only ever join the set (subscribe adds at once); one whose
    // subscriptions are gone costs a read that finds none.
    this.ctx.store.usersWithPushSubscriptions().then(
      (users) => {
        for (const u of users) this.subscribers.add(u);
        this.subscribersLoaded = true;
      },
      (err: unknown) => this.ctx.log.warn({ err }, 'push: could not list subscribed users; every member is looked up'),
    );
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
    for (const p of this.providers.values()) p.close();
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
      if (this.subscribersLoaded && !this.subscribers.has(user)) continue;
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
    const origin = whereOf(sub);
    let retry = false;
    try {
      const provider = this.providers.get(sub.kind);
      if (provider === undefined) {
        // Subscribed while the provider was configured; kept for when it is again.
        this.ctx.metrics.pushes.inc({ outcome: 'failed' });
        this.ctx.log.warn({ subscription: sub.id, origin }, 'push provider not configured; wake-up dropped');
        return;
      }
      let r: SendResult = { outcome: 'retry', status: 0 };
      let failure: string | undefined;
      // Not AbortSignal.timeout inside AbortSignal.any: the composite holds its sources weakly,
      // and Node 20 can collect the timeout signal before it fires (nodejs/node#57736), leaving
      // a send to a provider that never answers hanging for good. The timer's closure holds
      // this controller strongly until it fires or is cleared.
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(new DOMException('the push provider did not answer in time', 'TimeoutError')), this.o.timeoutMs);
      try {
        r = await provider.send(sub, AbortSignal.any([this.abort.signal, timeout.signal]));
      } catch (err) {
        if (this.closed) return;
        failure = (err as NodeJS.ErrnoException).code ?? (err as Error).name;
      } finally {
        clearTimeout(timer);
      }
      const { status, retryAfter, reason } = r;
      if (r.outcome === 'sent') {
        this.ctx.metrics.pushes.inc({ outcome: 'sent' });
      } else if (r.outcome === 'gone') {
        // The app or browser unsubscribed, or the subscription expired: it will never work again.
        await this.ctx.store.deletePushSubscription(sub.deviceId, sub.id);
        this.ctx.metrics.pushes.inc({ outcome: 'removed' });
        this.ctx.log.info({ deviceId: sub.deviceId, subscription: sub.id, origin, status, reason }, 'push subscription gone; removed');
      } else if (r.outcome === 'retry') {
        if (job.attempt + 1 < this.o.maxAttempts && !this.closed) {
          retry = true;
          this.ctx.metrics.pushes.inc({ outcome: 'retried' });
          this.later(job, retryDelay(this.o.retryBaseMs, job.attempt, retryAfter));
        } else {
          this.ctx.metrics.pushes.inc({ outcome: 'failed' });
          this.ctx.log.warn({ subscription: sub.id, origin, status, reason, failure, attempts: job.attempt + 1 }, 'push failed; giving up on this wake-up');
        }
      } else {
        this.ctx.metrics.pushes.inc({ outcome: 'failed' });
        this.ctx.log.warn({ subscription: sub.id, origin, status, reason }, 'push refused by the push service');
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
}

function json(row: PushSubscriptionRow): SubscriptionJson {
  return row.kind === 'webpush'
    ? { id: row.id, kind: row.kind, endpoint: row.endpoint, createdAt: row.createdAt }
    : { id: row.id, kind: row.kind, token: row.endpoint, createdAt: row.createdAt };
}

/** Exponential back-off from `base`, or the push service's Retry-After (seconds) when longer; at most a minute. */
export function retryDelay(base: number, attempt: number, retryAfter: string | undefined): number {
  const backoff = base * 2 ** attempt;
  const asked = retryAfter !== undefined && /^\d{1,6}$/.test(retryAfter) ? Number(retryAfter) * 1000 : 0;
  return Math.min(MAX_RETRY_DELAY_MS, Math.max(backoff, asked));
}
