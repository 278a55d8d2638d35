/**
 * Accounts: admin pins, registration, devices, device sessions, and the key pools
 * (docs/server.md §Accounts, §Keys). Domain logic only: no HTTP types. Every input arrives
 * already parsed; every protocol object is validated with the protocol core before the store
 * sees it, and every rate limit is taken before any signature is verified.
 */
import {
  CHALLENGE_SIZE,
  RendezvousError,
  decodeDeviceCert,
  decodeDevicePrekey,
  decodeKeyBundle,
  decodeTopicKey,
  deviceId as deviceIdOf,
  equal,
  fromBase64url,
  parseUserId,
  toBase64url,
  toHex,
  topicKeyId,
  utf8,
  verifyDeviceCert,
  verifyDevicePrekey,
  verifyKeyBundle,
  verifySessionProof,
  verifyTopicKey,
  type DeviceCert,
} from '@rendezvous/protocol';
import type { Context } from './context.ts';
import { LIMITS } from './limits.ts';
import type { DeviceRow, PinRow, SessionRow } from './storage/store.ts';
import { once, type Outcome, type Submission } from './idempotency.ts';
import { claimRemoteTopicKey, remoteIdentity } from './federation/forward.ts';

/** The authenticated caller of a device request. */
export interface Caller {
  user: string;
  deviceId: string;
  tokenHash: Uint8Array;
}

const PIN_ALPHABET = 'ABCDEFGHJKMNPQRSTVWXYZ23456789'; // no 0/O, 1/I/L, U

function sha256(ctx: Context, s: string | Uint8Array): Uint8Array {
  return ctx.crypto.sha256(typeof s === 'string' ? utf8(s) : s);
}

/** A 12-character pin from a 30-letter alphabet (≈ 59 bits), shown as XXXX-XXXX-XXXX. */
function newPin(ctx: Context): string {
  const out: string[] = [];
  while (out.length < 12) {
    for (const b of ctx.random(16)) {
      if (b < 240 && out.length < 12) out.push(PIN_ALPHABET[b % 30]!); // 240 = 8·30: no modulo bias
    }
  }
  return `${out.slice(0, 4).join('')}-${out.slice(4, 8).join('')}-${out.slice(8).join('')}`;
}

/** Pins are compared without separators or case, so users can type them loosely. */
function normalizePin(pin: string): string {
  return pin.toUpperCase().replace(/[^A-Z0-9]/g, '');
}

/** Whether `user` is a well-formed user id of this server. */
export function isLocalUser(ctx: Context, user: string): boolean {
  return parseUserId(user).server === ctx.name;
}

export function localUser(ctx: Context, user: string): string {
  const id = parseUserId(user);
  if (id.server !== ctx.name) throw new RendezvousError('auth.forbidden', `${user} is not a user of ${ctx.name}`);
  return user;
}

function checkFresh(ctx: Context, createdAt: number): void {
  if (Math.abs(ctx.now() - createdAt) > LIMITS.freshnessMs) {
    throw new RendezvousError('auth.stale', 'device certificate is not fresh: check the device clock');
  }
}

// ---------------------------------------------------------------------------------------------
// Admin (admin token checked by the caller)

export async function createPin(ctx: Context, user: string, opts: { ttlMs?: number; tries?: number } = {}) {
  localUser(ctx, user);
  const tries = opts.tries ?? LIMITS.pinDefaultTries;
  const ttlMs = opts.ttlMs ?? LIMITS.pinDefaultTtlMs;
  if (!Number.isInteger(tries) || tries < 1 || tries > 100) throw new RendezvousError('request.bad_field', 'tries must be 1–100');
  if (!Number.isInteger(ttlMs) || ttlMs < 60_000 || ttlMs > 365 * 86_400_000) {
    throw new RendezvousError('request.bad_field', 'expiry must be between 1 minute and 1 year');
  }
  if (await ctx.store.nameTaken(user)) throw new RendezvousError('user.exists', `${user} is registered or belonged to a deleted account (names are not reused)`);
  const pin = newPin(ctx);
  const row: PinRow = {
    id: toBase64url(ctx.random(9)),
    user,
    pinHash: sha256(ctx, normalizePin(pin)),
    expiresAt: ctx.now() + ttlMs,
    triesLeft: tries,
    createdAt: ctx.now(),
  };
  await ctx.store.createPin(row);
  ctx.log.info({ user, pinId: row.id, expiresAt: row.expiresAt, tries }, 'registration pin issued');
  return { id: row.id, user, pin, expiresAt: row.expiresAt, tries };
}

export async function listPins(ctx: Context) {
  const now = ctx.now();
  return (await ctx.store.listPins()).map((p) => ({
    id: p.id,
    user: p.user,
    expiresAt: p.expiresAt,
    triesLeft: p.triesLeft,
    expired: p.expiresAt <= now,
    createdAt: p.createdAt,
  }));
}

// ---------------------------------------------------------------------------------------------
// Registration and devices

export interface RegisterInput {
  user: string;
  pin: string;
  identityKey: Uint8Array;
  /** The first device's certificate, signed by the identity key. */
  deviceCert: Uint8Array;
}

export async function register(ctx: Context, input: RegisterInput): Promise<{ user: string; deviceId: string }> {
  localUser(ctx, input.user);
  const cert = decodeDeviceCert(input.deviceCert);
  verifyDeviceCert(ctx.crypto, cert, input.identityKey);
  if (cert.user !== input.user) throw new RendezvousError('crypto.bad_certificate', 'certificate is for another user');
  checkFresh(ctx, cert.createdAt);
  const now = ctx.now();
  const device: DeviceRow = { deviceId: deviceIdOf(cert.deviceKey), user: input.user, cert: input.deviceCert, createdAt: now };
  const result = await ctx.store.registerWithPin(
    { user: input.user, identityKey: cert.identityKey, createdAt: now },
    device,
    sha256(ctx, normalizePin(input.pin)),
    now,
  );
  switch (result) {
    case 'ok':
      ctx.log.info({ user: input.user, deviceId: device.deviceId }, 'user registered');
      return { user: input.user, deviceId: device.deviceId };
    case 'user_exists':
      throw new RendezvousError('user.exists');
    case 'wrong_pin':
    case 'no_pin':
      // One code for both: the answer must not tell a guesser whether a pin exists.
      throw new RendezvousError('auth.bad_pin');
  }
}

/** Adds a device: the request is the device certificate itself, signed by the identity key. */
export async function addDevice(ctx: Context, user: string, certBytes: Uint8Array): Promise<{ deviceId: string }> {
  localUser(ctx, user);
  const u = await ctx.store.getUser(user);
  if (u === null) throw new RendezvousError('user.unknown');
  const cert = decodeDeviceCert(certBytes);
  if (cert.user !== user) throw new RendezvousError('crypto.bad_certificate', 'certificate is for another user');
  verifyDeviceCert(ctx.crypto, cert, u.identityKey);
  checkFresh(ctx, cert.createdAt);
  const deviceId = deviceIdOf(cert.deviceKey);
  await ctx.store.addDevice({ deviceId, user, cert: certBytes, createdAt: ctx.now() });
  ctx.log.info({ user, deviceId }, 'device added');
  ctx.events.emit({ kind: 'device', user });
  return { deviceId };
}

export async function listDevices(ctx: Context, caller: Caller) {
  return (await ctx.store.listDevices(caller.user)).map((d) => ({
    deviceId: d.deviceId,
    cert: toBase64url(d.cert),
    createdAt: d.createdAt,
    current: d.deviceId === caller.deviceId,
  }));
}

export async function deleteDevice(ctx: Context, caller: Caller, deviceId: string): Promise<void> {
  const d = await ctx.store.getDevice(deviceId);
  if (d === null || d.user !== caller.user) throw new RendezvousError('device.unknown');
  await ctx.store.deleteDevice(deviceId);
  forgetSessions(ctx, { deviceId });
  ctx.log.info({ user: caller.user, deviceId }, 'device removed');
  ctx.events.emit({ kind: 'device-removed', deviceId });
}

async function deviceCert(ctx: Context, deviceId: string): Promise<DeviceCert> {
  const d = await ctx.store.getDevice(deviceId);
  if (d === null) throw new RendezvousError('device.unknown');
  return decodeDeviceCert(d.cert);
}

// ---------------------------------------------------------------------------------------------
// Sessions (protocol §5.3)

export async function challenge(ctx: Context, deviceId: string) {
  ctx.rate.take('authChallenge', deviceId);
  if ((await ctx.store.getDevice(deviceId)) === null) throw new RendezvousError('device.unknown');
  const c = ctx.random(CHALLENGE_SIZE);
  const expiresAt = ctx.now() + LIMITS.challengeTtlMs;
  await ctx.store.putChallenge(c, deviceId, expiresAt);
  return { challenge: toBase64url(c), expiresAt };
}

export async function createSession(ctx: Context, deviceId: string, challengeBytes: Uint8Array, signature: Uint8Array) {
  const cert = await deviceCert(ctx, deviceId);
  verifySessionProof(ctx.crypto, cert.deviceKey, ctx.name, challengeBytes, signature);
  // Taken only after the signature verified, so nobody can burn another device's challenge.
  if (!(await ctx.store.takeChallenge(challengeBytes, deviceId, ctx.now()))) throw new RendezvousError('auth.bad_challenge');
  const token = toBase64url(ctx.random(32));
  const now = ctx.now();
  const row: SessionRow = { tokenHash: sha256(ctx, token), deviceId, user: cert.user, createdAt: now, expiresAt: now + LIMITS.sessionTtlMs };
  await ctx.store.createSession(row);
  return { token, expiresAt: row.expiresAt, user: cert.user, deviceId };
}

/**
 * Sessions recently found in the store, so that a busy device's requests do not each read it:
 * by token hash (hex), at most SESSION_CACHE_MAX, each trusted for SESSION_CACHE_TTL_MS of real
 * time and never at or past the session's own expiry (the store's `now < expiresAt`, on the
 * context's clock). Every way a session ends drops it at once, through forgetSessions: logout
 * (endSession), device removal (deleteDevice) and user deletion (the admin route). Code that
 * deletes sessions, devices or users must call it too. The TTL bounds only what another process
 * sharing the store may have deleted.
 */
interface CachedSession {
  user: string;
  deviceId: string;
  expiresAt: number;
  /** performance.now() after which the store is asked again. */
  staleAt: number;
}

interface SessionCache {
  byHash: Map<string, CachedSession>;
  /** Bumped by every invalidation: a store read that started before one is not cached. */
  generation: number;
}

export const SESSION_CACHE_TTL_MS = 5_000;
const SESSION_CACHE_MAX = 10_000;
const sessionCaches = new WeakMap<Context, SessionCache>();

function sessionCache(ctx: Context): SessionCache {
  let c = sessionCaches.get(ctx);
  if (c === undefined) {
    const cache: SessionCache = (c = { byHash: new Map(), generation: 0 });
    sessionCaches.set(ctx, cache);
  }
  return c;
}

/** Lowercase hex, as toHex (the bus's `session-ended` carries it), natively. */
function hashKey(tokenHash: Uint8Array): string {
  return Buffer.from(tokenHash.buffer, tokenHash.byteOffset, tokenHash.byteLength).toString('hex');
}

function dropSession(cache: SessionCache, hashHex: string): void {
  cache.generation++;
  cache.byHash.delete(hashHex);
}

function dropSessions(cache: SessionCache, match: (s: CachedSession) => boolean): void {
  cache.generation++;
  for (const [k, s] of cache.byHash) if (match(s)) cache.byHash.delete(k);
}

/**
 * Drops cached sessions at once (the store's rows must already be gone): of one token hash, one
 * device, or one user. For every path that ends sessions other than endSession and deleteDevice.
 */
export function forgetSessions(ctx: Context, which: { tokenHash: Uint8Array } | { deviceId: string } | { user: string }): void {
  const cache = sessionCache(ctx);
  if ('tokenHash' in which) dropSession(cache, hashKey(which.tokenHash));
  else if ('deviceId' in which) dropSessions(cache, (s) => s.deviceId === which.deviceId);
  else dropSessions(cache, (s) => s.user === which.user);
}

export async function authenticate(ctx: Context, token: string): Promise<Caller> {
  const tokenHash = sha256(ctx, token);
  const key = hashKey(tokenHash);
  const cache = sessionCache(ctx);
  const now = ctx.now();
  const hit = cache.byHash.get(key);
  if (hit !== undefined) {
    if (now < hit.expiresAt && performance.now() < hit.staleAt) return { user: hit.user, deviceId: hit.deviceId, tokenHash };
    cache.byHash.delete(key);
  }
  const generation = cache.generation;
  const s = await ctx.store.getSession(tokenHash, now);
  if (s === null) throw new RendezvousError('auth.invalid_token');
  if (cache.generation === generation) {
    cache.byHash.set(key, { user: s.user, deviceId: s.deviceId, expiresAt: s.expiresAt, staleAt: performance.now() + SESSION_CACHE_TTL_MS });
    if (cache.byHash.size > SESSION_CACHE_MAX) cache.byHash.delete(cache.byHash.keys().next().value!);
  }
  return { user: s.user, deviceId: s.deviceId, tokenHash };
}

export async function endSession(ctx: Context, caller: Caller): Promise<void> {
  await ctx.store.deleteSession(caller.tokenHash);
  forgetSessions(ctx, { tokenHash: caller.tokenHash });
  ctx.events.emit({ kind: 'session-ended', tokenHash: toHex(caller.tokenHash) });
}

/** Constant-time comparison of the admin token's hash with the stored one. */
export async function checkAdminToken(ctx: Context, token: string | undefined): Promise<void> {
  if (token === undefined || token === '') throw new RendezvousError('auth.required', 'admin token required');
  const stored = await ctx.store.getMeta('admin_token_sha256');
  if (stored === null || !equal(fromBase64url(stored), sha256(ctx, token))) {
    throw new RendezvousError('auth.invalid_token', 'admin token is not valid');
  }
}

// ---------------------------------------------------------------------------------------------
// Key pools (protocol §5.2, §6.1, §6.2)

export async function uploadPrekeys(ctx: Context, caller: Caller, encoded: Uint8Array[]) {
  if (encoded.length === 0 || encoded.length > LIMITS.prekeysPerUpload) {
    throw new RendezvousError('request.bad_field', `upload 1–${LIMITS.prekeysPerUpload} prekeys at a time`);
  }
  const cert = await deviceCert(ctx, caller.deviceId);
  const rows = encoded.map((b) => {
    const p = decodeDevicePrekey(b);
    verifyDevicePrekey(ctx.crypto, p, cert.deviceKey);
    return { prekey: p.prekey, encoded: b };
  });
  const count = await ctx.store.addPrekeys(caller.deviceId, rows, LIMITS.prekeysPerDevice);
  return { count, lowWater: LIMITS.lowWater.prekeys };
}

/** One prekey of a sibling device: only the owner's own devices may claim. */
export async function claimPrekey(ctx: Context, caller: Caller, deviceId: string) {
  ctx.rate.take('claimPrekey', caller.deviceId);
  const d = await ctx.store.getDevice(deviceId);
  if (d === null || d.user !== caller.user) throw new RendezvousError('device.unknown');
  const p = await ctx.store.claimPrekey(deviceId);
  if (p === null) throw new RendezvousError('keys.exhausted', 'the device has no prekeys left');
  return { prekey: toBase64url(p), cert: toBase64url(d.cert) };
}

export interface TopicKeyUpload {
  keys: Uint8Array[];
  /** Bundles carrying the new keys' secrets to sibling devices. */
  bundles: { deviceId: string; bundle: Uint8Array }[];
}

export async function uploadTopicKeys(ctx: Context, caller: Caller, sub: Submission, up: TopicKeyUpload): Promise<Outcome> {
  ctx.rate.take('write', caller.deviceId);
  if (up.keys.length === 0 || up.keys.length > LIMITS.topicKeysPerUpload) {
    throw new RendezvousError('request.bad_field', `upload 1–${LIMITS.topicKeysPerUpload} topic keys at a time`);
  }
  return once(ctx, caller, sub, async () => {
    const u = await ctx.store.getUser(caller.user);
    if (u === null) throw new RendezvousError('user.unknown');
    const keys = up.keys.map((b) => {
      const k = decodeTopicKey(b);
      if (k.user !== caller.user) throw new RendezvousError('crypto.bad_certificate', 'topic key of another user');
      verifyTopicKey(ctx.crypto, k, u.identityKey);
      return { keyId: topicKeyId(k), encoded: b };
    });
    const bundles = await checkBundles(ctx, caller, up.bundles, u.identityKey);
    return storeKeyUpload(ctx, caller, sub, bundles, { keys, max: LIMITS.topicKeysPerUser }, {
      body: { count: null, lowWater: LIMITS.lowWater.topicKeys },
      countField: 'count',
    });
  });
}

/** Topic keys and bundles with the request's idempotency record, in one transaction. */
async function storeKeyUpload(
  ctx: Context,
  caller: Caller,
  sub: Submission,
  bundles: TopicKeyUpload['bundles'],
  topicKeys: { keys: { keyId: string; encoded: Uint8Array }[]; max: number } | undefined,
  response: { body: Record<string, unknown>; countField?: string },
): Promise<Outcome> {
  const idempotency = { deviceId: caller.deviceId, clientId: sub.clientId, requestHash: sub.requestHash, createdAt: ctx.now() };
  const stored = await ctx.store.addKeyUpload({
    user: caller.user,
    senderDeviceId: caller.deviceId,
    ...(topicKeys === undefined ? {} : { topicKeys }),
    bundles: bundles.map((b) => ({ recipientDeviceId: b.deviceId, encoded: b.bundle })),
    idempotency,
    response: { status: 201, ...response },
    now: ctx.now(),
  });
  for (const e of stored.events) if (e.kind === 'bundle') ctx.events.emit({ kind: 'bundle', deviceId: e.deviceId, seq: e.seq });
  return JSON.parse(stored.response) as Outcome;
}

async function checkBundles(ctx: Context, caller: Caller, bundles: TopicKeyUpload['bundles'], identityKey: Uint8Array) {
  if (bundles.length > LIMITS.bundlesPerUpload) throw new RendezvousError('request.bad_field', 'too many bundles');
  const sender = await deviceCert(ctx, caller.deviceId);
  for (const b of bundles) {
    const bundle = decodeKeyBundle(b.bundle);
    verifyKeyBundle(ctx.crypto, bundle, sender, identityKey);
    const recipient = await ctx.store.getDevice(b.deviceId);
    if (recipient === null || recipient.user !== caller.user || deviceIdOf(bundle.recipientDevice) !== b.deviceId) {
      throw new RendezvousError('device.unknown', 'bundles go to sibling devices only');
    }
  }
  return bundles;
}

export async function sendBundles(ctx: Context, caller: Caller, sub: Submission, bundles: TopicKeyUpload['bundles']): Promise<Outcome> {
  ctx.rate.take('write', caller.deviceId);
  return once(ctx, caller, sub, async () => {
    const u = await ctx.store.getUser(caller.user);
    if (u === null) throw new RendezvousError('user.unknown');
    await checkBundles(ctx, caller, bundles, u.identityKey);
    return storeKeyUpload(ctx, caller, sub, bundles, undefined, { body: { sent: bundles.length } });
  });
}

/** Claims one topic key of `target` to add them to a topic; rate-limited per claimer and target. */
export async function claimTopicKey(ctx: Context, caller: Caller, target: string) {
  ctx.rate.take('claimTopicKeyPerClaimer', caller.user);
  ctx.rate.take('claimTopicKeyPerTarget', target);
  // A user of another server: claimed through their home server (protocol §17.3).
  if (parseUserId(target).server !== ctx.name) return claimRemoteTopicKey(ctx, caller, target);
  const u = await ctx.store.getUser(target);
  if (u === null) throw new RendezvousError('user.unknown');
  const k = await ctx.store.claimTopicKey(target);
  if (k === null) throw new RendezvousError('keys.exhausted', `${target} has no topic keys left`);
  return { topicKey: toBase64url(k), identityKey: toBase64url(u.identityKey) };
}

export async function keyCounts(ctx: Context, caller: Caller) {
  const [prekeys, topicKeys] = await Promise.all([
    ctx.store.countPrekeys(caller.deviceId),
    ctx.store.countTopicKeys(caller.user),
  ]);
  return { prekeys, topicKeys, lowWater: LIMITS.lowWater };
}

export async function identityOf(ctx: Context, user: string) {
  if (parseUserId(user).server !== ctx.name) return { user, identityKey: toBase64url(await remoteIdentity(ctx, user)) };
  const u = await ctx.store.getUser(user);
  if (u === null) throw new RendezvousError('user.unknown');
  return { user, identityKey: toBase64url(u.identityKey) };
}

