/**
 * Limits and rate limits (docs/server.md §Limits). Rate limits are checked before any
 * signature is verified or any row is read, so a flood costs the server a map lookup.
 */
import { RendezvousError } from '@rendezvous/protocol';

export const LIMITS = {
  /** Largest JSON request body (a 10,000-member topic update is ≈ 6 MiB, base64url ≈ 8 MiB). */
  maxBodyBytes: 12 * 1024 * 1024,
  /** Largest body of every other request. */
  maxSmallBodyBytes: 256 * 1024,
  prekeysPerUpload: 100,
  prekeysPerDevice: 500,
  topicKeysPerUpload: 100,
  topicKeysPerUser: 500,
  bundlesPerUpload: 100,
  /** A JSON request body must arrive whole within this time of being read. */
  bodyTimeoutMs: 60_000,
  /** An upload that sends nothing for this long is cut off (there is no total limit below the server's 1 h). */
  uploadIdleMs: 30_000,
  /** Idempotency records are kept this long: a retry after that is caught by the message nonce, not replayed. */
  idempotencyRetentionMs: 7 * 24 * 60 * 60 * 1000,
  /** Live-delivery events are kept this long; a device whose cursor is older resyncs from the topics. */
  eventRetentionMs: 30 * 24 * 60 * 60 * 1000,
  /** A signed request (device certificate) must be this fresh (± ms). */
  freshnessMs: 5 * 60 * 1000,
  challengeTtlMs: 2 * 60 * 1000,
  sessionTtlMs: 30 * 24 * 60 * 60 * 1000,
  pinDefaultTtlMs: 7 * 24 * 60 * 60 * 1000,
  pinDefaultTries: 3,
  /** Below this many pooled keys, clients are told to replenish. */
  lowWater: { prekeys: 20, topicKeys: 20 },
  /** Largest encrypted file blob (protocol §12 allows 2^40; each server picks its own). */
  maxBlobBytes: 100 * 1024 * 1024,
  /** Total size of the blobs one user has uploaded and that still exist. */
  blobBytesPerUser: 1024 * 1024 * 1024,
} as const;

/** LIMITS with widened types: what the context carries. */
export type Limits = { readonly [K in keyof typeof LIMITS]: (typeof LIMITS)[K] extends number ? number : (typeof LIMITS)[K] };

/**
 * The limits an operator (config) or a test may change, through `ContextOptions.limits`. Only
 * these: code that reads the others uses LIMITS directly, so overriding them would do nothing.
 */
export type LimitOverrides = Partial<
  Pick<Limits, 'maxBlobBytes' | 'blobBytesPerUser' | 'bodyTimeoutMs' | 'uploadIdleMs' | 'idempotencyRetentionMs' | 'eventRetentionMs'>
>;

/** name → [tokens per window, window ms] */
export const RATES = {
  register: [10, 60_000],
  authChallenge: [30, 60_000],
  claimTopicKeyPerClaimer: [60, 60_000],
  claimTopicKeyPerTarget: [30, 60_000],
  claimPrekey: [60, 60_000],
  admin: [120, 60_000],
  write: [600, 60_000],
  /** Adding a push subscription (each may cost a DNS lookup), per device. */
  push: [30, 60_000],
  /** Signed server-to-server requests, per claimed origin (protocol §17.7). */
  federation: [6000, 60_000],
} as const satisfies Record<string, readonly [number, number]>;

export type RateName = keyof typeof RATES;

/**
 * Token buckets in memory, one per (name, key). Bounded: the oldest buckets are dropped when
 * the map grows past `maxKeys` (a dropped bucket only forgets a partial count).
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly rates: Record<RateName, readonly [number, number]>;

  constructor(
    private readonly now: () => number,
    private readonly maxKeys = 100_000,
    private readonly onLimited?: (name: RateName) => void,
    /** Operator overrides (config file `rates`), and tests that script many users from one address. */
    overrides: Partial<Record<RateName, readonly [number, number]>> = {},
  ) {
    this.rates = { ...RATES, ...overrides };
  }

  /** Buckets held now (at most `maxKeys`). */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token or throws `rate.limited` with a retry hint. */
  take(name: RateName, key: string): void {
    const [capacity, windowMs] = this.rates[name];
    const id = `${name}\u0000${key}`;
    const t = this.now();
    let b = this.buckets.get(id);
    if (b === undefined) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      b = { tokens: capacity, at: t };
      this.buckets.set(id, b);
    } else {
      b.tokens = Math.min(capacity, b.tokens + ((t - b.at) * capacity) / windowMs);
      b.at = t;
    }
    if (b.tokens < 1) {
      this.onLimited?.(name);
      const retryAfterMs = Math.ceil(((1 - b.tokens) * windowMs) / capacity);
      throw new RendezvousError('rate.limited', `too many ${name} requests`, { retryAfterMs });
    }
    b.tokens -= 1;
  }
}

/**
 * One read of a body stream that must deliver within `ms`: a client that stops sending is cut
 * off with `request.timeout` instead of holding its connection and buffers indefinitely. The
 * HTTP server's own request timeout is long (uploads may be large); these bound each body.
 */
export async function readWithin<T>(reader: ReadableStreamDefaultReader<T>, ms: number): Promise<ReadableStreamReadResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new RendezvousError('request.timeout', `no request data for ${ms / 1000} s`));
      // Cancelling settles the pending read as done; `timedOut` keeps that from passing as the end.
      reader.cancel().catch(() => {});
    }, ms);
  });
  try {
    const r = await Promise.race([reader.read(), timeout]);
    if (timedOut) throw new RendezvousError('request.timeout', `no request data for ${ms / 1000} s`);
    return r;
  } finally {
    clearTimeout(timer);
  }
}
