/**
 * Everything the domain logic needs, injected: storage, crypto, randomness, clock, logging,
 * rate limits and the in-process event bus. Tests build one with a temp store and a fake clock.
 */
import { randomBytes } from 'node:crypto';
import { VerifiedSignatures, withVerifiedSignatures, type CryptoProvider, type Random } from '@rendezvous/protocol';
import type { VerifyPool } from '@rendezvous/protocol/crypto/node-verify-pool';
import type { Logger } from 'pino';
import type { Store } from './storage/store.ts';
import { LIMITS, RateLimiter, type LimitOverrides, type Limits, type RateName } from './limits.ts';
import type { BlobStore } from './storage/blobs.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { Federation, type FederationOptions } from './federation/federation.ts';
import { createEventBus, type EventBus, type LiveCommit } from './events.ts';
import type { ServerKeySource } from './federation/keys.ts';

/** Signals for live delivery (the durable record is the store's event table). */
export type ServerEvent =
  /**
   * A new log entry; `users` are the members before and after it (who may need to hear),
   * `deviceId` the device that posted it, and `live` the commit as live delivery sends it.
   */
  | { kind: 'entry'; topicId: string; users: string[]; deviceId: string; live?: LiveCommit }
  /** A key bundle for a device; `seq` is its event's. */
  | { kind: 'bundle'; deviceId: string; seq?: number }
  | { kind: 'device'; user: string }
  | { kind: 'device-removed'; deviceId: string }
  /** A session was ended (logout); `tokenHash` in hex. */
  | { kind: 'session-ended'; tokenHash: string };

export interface Context {
  /** This server's name (the part after '@' in its users' ids). */
  name: string;
  /** The server's current signing key (Ed25519 seed) and its public key; replaced by a rotation (federation/keys.ts). */
  serverSeed: Uint8Array;
  serverKey: Uint8Array;
  /** Where the seed comes from: only a key file can be rotated. */
  serverKeySource: ServerKeySource;
  crypto: CryptoProvider;
  random: Random;
  now: () => number;
  store: Store;
  /** The bytes of encrypted file blobs (their rows are in `store`). */
  blobs: BlobStore;
  /** LIMITS with the overrides of ContextOptions.limits applied. */
  limits: Limits;
  log: Logger;
  rate: RateLimiter;
  events: EventBus;
  metrics: Metrics;
  version: string;
  /** Server-to-server transport (protocol §17): discovery, pinned keys, signed requests. */
  federation: Federation;
  /** Message signatures verified ahead on worker threads (topics.ts postMessage, issue 7). */
  verify: SignatureVerify;
}

/**
 * A message's signature is verified on a worker before its submission takes the topic lock,
 * against a guess of what checkMessage will verify; a triple the worker found valid is held in
 * `verified` until the submission ends, and checkMessage gets `crypto`, which answers from
 * `verified` for that byte-identical triple only (VerifiedSignatures) and verifies everything
 * else inline.
 */
export interface SignatureVerify {
  /** Null: every signature is verified inline (config `verifyThreads: 0`). */
  pool: Pick<VerifyPool, 'verify'> | null;
  verified: VerifiedSignatures;
  /** `crypto` with ed25519Verify consulting `verified` first: what checkMessage gets. */
  crypto: CryptoProvider;
}

export interface ContextOptions {
  name: string;
  serverSeed: Uint8Array;
  crypto: CryptoProvider;
  store: Store;
  blobs: BlobStore;
  log: Logger;
  version: string;
  now?: () => number;
  rates?: Partial<Record<RateName, readonly [number, number]>>;
  /** File caps (operator config, or tests that need a small cap). */
  limits?: LimitOverrides;
  /** Default `{ kind: 'memory' }` (in-process tests): rotation then changes only memory and the store. */
  serverKeySource?: ServerKeySource;
  /** Federation (docs/server.md §Federation): peers, allow/deny, timeouts. */
  federation?: FederationOptions;
  /** Worker threads that verify message signatures ahead (server.ts `verifyThreads`); none: inline. */
  verifyPool?: Pick<VerifyPool, 'verify'> | null;
}

export function createContext(o: ContextOptions): Context {
  const metrics = createMetrics();
  const now = o.now ?? Date.now;
  const verified = new VerifiedSignatures();
  const ctx: Omit<Context, 'federation'> & { federation?: Federation } = {
    name: o.name,
    serverSeed: o.serverSeed,
    serverKey: o.crypto.ed25519PublicKey(o.serverSeed),
    serverKeySource: o.serverKeySource ?? { kind: 'memory' },
    crypto: o.crypto,
    random: (n) => new Uint8Array(randomBytes(n)),
    now,
    store: o.store,
    blobs: o.blobs,
    limits: { ...LIMITS, ...o.limits },
    log: o.log,
    rate: new RateLimiter(now, 100_000, (limit) => metrics.rateLimited.inc({ limit }), o.rates),
    events: createEventBus(),
    metrics,
    version: o.version,
    verify: { pool: o.verifyPool ?? null, verified, crypto: withVerifiedSignatures(o.crypto, verified) },
  };
  ctx.federation = new Federation(ctx as Context, o.federation);
  return ctx as Context;
}
