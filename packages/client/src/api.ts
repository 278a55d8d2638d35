/**
 * The typed client of the server API (docs/server.md §4): one method per route a device uses
 * (the admin routes are the CLI's). Isomorphic: `fetch` and `WebSocket` are injected (browser
 * globals by default; in Node pass `NodeWebSocket` from `./node/ws.ts` for header auth).
 *
 * The server is untrusted, so every answer is checked at this edge for shape, base64url and
 * sizes, and a malformed one throws `encoding.bad_value` before anything reaches the rest of the
 * SDK. Only the shape: signatures, checkpoints and log consistency are verified above this layer
 * (topic-mirror.ts). Bytes are Uint8Array here and unpadded base64url on the wire (§2).
 *
 * Retries (§Idempotency): submissions carry an Idempotency-Key and are retried with the SAME key
 * after a network failure, a timeout, 408, 429 or 5xx, so a retry gets the original answer
 * (`replayed: true`) instead of appending twice. Reads and writes idempotent by their content
 * (prekeys, acks, blob bytes) retry the same way; claims, registration and sessions never do.
 */
import {
  ERROR_CODES,
  HASH_SIZE,
  KEY_ID_SIZE,
  MAX_BUNDLE_CIPHERTEXT,
  MAX_ENTRY_BODY,
  MAX_SERVER_NAME_BYTES,
  MAX_USER_ID_BYTES,
  RendezvousError,
  TOPIC_ID_SIZE,
  fromBase64url,
  toBase64url,
  type ErrorCode,
  type History,
  type Random,
  type Role,
} from '@rendezvous/protocol';

// ---- options and answers --------------------------------------------------------------------

export interface RetryPolicy {
  /** Total tries, the first included (1 = never retry). */
  attempts: number;
  /** Back-off before retry n is about baseDelayMs · 2^(n-1) (with jitter), at most maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** A Retry-After longer than this is not waited for: the 429 is thrown to the caller. */
  maxRetryAfterMs: number;
}
export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 250, maxDelayMs: 8_000, maxRetryAfterMs: 30_000 };

/** What connectLive needs of a WebSocket: the browser API, which `ws` also implements. */
export interface WebSocketLike {
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
/** Browser: `(url, protocols?)`. `ws` and undici also take `(url, {headers})`. */
export type WebSocketConstructor = new (url: string, options?: any) => WebSocketLike;

export interface ServerApiOptions {
  baseUrl: string;
  fetch?: typeof globalThis.fetch;
  WebSocket?: WebSocketConstructor;
  /** 'auto' tries header auth and falls back to a first frame if the constructor refuses headers. */
  liveAuth?: 'auto' | 'header' | 'first-frame';
  random?: Random;
  retry?: Partial<RetryPolicy>;
  /** Per attempt, for JSON requests (blob transfers are bounded by the caller's signal). */
  timeoutMs?: number;
  token?: string | null;
}

/** Result of a submission: its Idempotency-Key, and whether the server replayed a stored answer. */
export type Submitted<T> = T & { clientId: string; replayed: boolean };
export interface SubmitOptions {
  /** Idempotency-Key (8–64 of A–Z a–z 0–9 _ -); 16 random bytes if absent. Reuse it to retry later. */
  clientId?: string;
}

export interface WellKnown { server: string; publicKey: Uint8Array; apiVersion: number; version: string }
export interface Identity { user: string; identityKey: Uint8Array }
export interface Challenge { challenge: Uint8Array; expiresAt: number }
export interface Session { token: string; expiresAt: number; user: string; deviceId: string }
export interface DeviceInfo { deviceId: string; cert: Uint8Array; createdAt: number; current: boolean }
export interface LowWater { prekeys: number; topicKeys: number }
export interface KeyCounts { prekeys: number; topicKeys: number; lowWater: LowWater }
export interface PoolUpload { count: number; lowWater: number }
export interface ClaimedPrekey { prekey: Uint8Array; cert: Uint8Array }
export interface ClaimedTopicKey { topicKey: Uint8Array; identityKey: Uint8Array }
export interface OutgoingBundle { deviceId: string; bundle: Uint8Array }
export interface PendingBundle { id: number; senderDeviceId: string; bundle: Uint8Array }
/** The new head after an append (docs/server.md §Topics and logs). */
export interface Appended { index: number; size: number; checkpoint: Uint8Array }
export interface Created extends Appended { topicId: Uint8Array }
/**
 * A submission to a topic hosted on another server that the home server could not deliver yet
 * (docs/server.md §Federation, `202 {"pending": true}`): queued durably there, delivered when
 * the host is back. A retry with the same Idempotency-Key answers 202 again or the host's answer.
 */
export interface Pending { pending: true }
export const isPending = (a: Appended | Pending): a is Pending => 'pending' in a && a.pending === true;
export interface TopicSummary { topicId: Uint8Array; host: string; size: number; checkpoint: Uint8Array }
/** What the home server recorded against a topic's host (protocol §17.5): the evidence is host-signed checkpoints. */
export interface ForkReport { kind: 'fork' | 'rollback'; server: string; checkpoints: Uint8Array[]; detail: string; detectedAt: number }
/** The keys the home server pinned for a server (its own keys for its own name), base64url on the wire. */
export interface ServerKeys { server: string; keys: { publicKey: Uint8Array; keyId: Uint8Array }[] }
export interface TopicMemberInfo { memberId: number; user: string; role: Role }
export interface TopicInfo extends TopicSummary {
  history: History;
  epoch: number;
  epochStartSize: number;
  members: TopicMemberInfo[];
  /** Encoded Cosignatures (protocol §17.5), the latest per witnessing server; empty on a server without federation. */
  witnesses: Uint8Array[];
  /** Forks and rollbacks of the host the home server detected; empty on a server without federation. */
  forks: ForkReport[];
}
export type EntryType = 'update' | 'message';
export interface EntryRecord { index: number; type: EntryType; entry: Uint8Array }
export interface Entries { entries: EntryRecord[]; checkpoint: Uint8Array }
export interface InclusionProof { index: number; size: number; proof: Uint8Array[] }
export interface ConsistencyProof { from: number; to: number; proof: Uint8Array[] }

export type LiveEvent =
  | { seq: number; kind: 'entry'; topicId: Uint8Array; index: number; type: EntryType; entry: Uint8Array }
  | { seq: number; kind: 'membership'; topicId: Uint8Array; user: string }
  | { seq: number; kind: 'bundle' };
/** One batch of §Events and the WebSocket; store `cursor` once the batch is processed. */
export interface EventBatch {
  events: LiveEvent[];
  cursor: number;
  checkpoints: { topicId: Uint8Array; checkpoint: Uint8Array }[];
  /** Present when the batch has a bundle event: the device's pending bundles (ack them). */
  bundles?: PendingBundle[];
  /** Events after the cursor were purged: catch up from topics and bundles, then go on from `cursor`. */
  resync: boolean;
}
export interface LiveHandlers {
  onOpen?(ready: { user: string; deviceId: string; cursor: number }): void;
  /** Batches are handed over one at a time: the next waits until this one's promise settles. */
  onBatch(batch: EventBatch): void | Promise<void>;
  /** Once. §Events close codes (4001, 4003, 4029, 1001, 1009); `error` if a frame was malformed or onBatch threw. */
  onClose?(info: { code: number; reason: string; error?: unknown }): void;
}
export interface BlobUploadOptions {
  onProgress?(bytesSent: number): void;
  /** Byte count of a stream body, sent as content-length so a refusal comes before the upload. */
  size?: number;
  signal?: AbortSignal;
}
export interface BlobDownloadOptions {
  onProgress?(bytesReceived: number): void;
  /** The encrypted size the FileRef implies: any other `content-length` is `file.bad_blob` at once. */
  expectedSize?: number;
  signal?: AbortSignal;
}

// ---- sizes the answers are checked against --------------------------------------------------

const KEY_SIZE = 32;
const STRUCT_MAX = 4096; // certificates, prekeys, topic keys, checkpoints: well under this
const ENTRY_MAX = MAX_ENTRY_BODY + STRUCT_MAX;
const BUNDLE_MAX = MAX_BUNDLE_CIPHERTEXT + STRUCT_MAX;
const PROOF_MAX = 128;
const COSIGNATURE_MAX = 2 * STRUCT_MAX; // 2·log2(2^52) hashes at most
const CLIENT_ID = /^[A-Za-z0-9_-]{8,64}$/;
/** The characters the server accepts in a bearer token (src/http/app.ts): nothing to inject. */
const TOKEN = /^[A-Za-z0-9_\-.~+/]+=*$/;
const UPLOAD_CHUNK = 64 * 1024;

// ---- errors ---------------------------------------------------------------------------------

/** For an error body that is missing or not ours (a proxy's page): the code its status implies. */
const BY_STATUS: Record<number, ErrorCode> = {
  400: 'request.bad_field',
  401: 'auth.required',
  403: 'auth.forbidden',
  404: 'request.not_found',
  405: 'request.method',
  408: 'request.timeout',
  413: 'request.too_large',
  429: 'rate.limited',
  502: 'server.unavailable',
  503: 'server.unavailable',
  504: 'server.unavailable',
};

/** §2: `{error: {code, message, details?}}`; codes this SDK does not know become server.internal. */
export function errorFromAnswer(status: number, text: string, url: string): RendezvousError {
  let e: unknown;
  try {
    e = (JSON.parse(text) as { error?: unknown }).error;
  } catch {
    e = undefined;
  }
  if (typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string') {
    const { code, message, details } = e as { code: string; message?: unknown; details?: unknown };
    const msg = typeof message === 'string' ? message.slice(0, 1000) : undefined;
    const det = typeof details === 'object' && details !== null && !Array.isArray(details) ? (details as Record<string, unknown>) : undefined;
    if (Object.hasOwn(ERROR_CODES, code)) return new RendezvousError(code as ErrorCode, msg, det);
    return new RendezvousError('server.internal', msg ?? `unknown error code ${code}`, { code, status, ...(det && { details: det }) });
  }
  const fallback = BY_STATUS[status] ?? 'server.internal';
  return new RendezvousError(fallback, `HTTP ${status} from ${url}`, { status, body: text.slice(0, 200) });
}

function malformed(path: string, what: string): RendezvousError {
  return new RendezvousError('encoding.bad_value', `malformed server answer: ${path}: expected ${what}`, { field: path });
}

/** A caller's argument the server would refuse anyway: refused here without a round trip. */
function badArg(field: string, what: string): RendezvousError {
  return new RendezvousError('request.bad_field', `${field}: expected ${what}`, { field });
}

// ---- reading answers ------------------------------------------------------------------------

/** One JSON object of an answer, read field by field; every failure names the field's path. */
export type PushKind = 'webpush' | 'apns' | 'fcm';
/** What `subscribePush` takes: a browser's PushSubscription JSON, or a native device token. */
export type PushSubscriptionInput = { endpoint: string; keys: { p256dh: string; auth: string } } | { kind: 'apns' | 'fcm'; token: string };
export interface PushSubscriptionInfo {
  id: string;
  kind: PushKind;
  /** Web Push: the push service URL. */
  endpoint?: string;
  /** APNs / FCM: the device token. */
  token?: string;
  createdAt: number;
}

function pushKind(v: unknown, path: string): PushKind {
  if (v === 'webpush' || v === 'apns' || v === 'fcm') return v;
  throw malformed(path, 'a push provider (webpush, apns or fcm)');
}

function pushInfo(o: Obj): PushSubscriptionInfo {
  const kind = o.has('kind') ? pushKind(o.str('kind', 16), 'kind') : 'webpush';
  const id = o.str('id', 64);
  const createdAt = o.int('createdAt');
  return kind === 'webpush' ? { id, kind, endpoint: o.str('endpoint', 1024), createdAt } : { id, kind, token: o.str('token', 4096), createdAt };
}

class Obj {
  private constructor(
    private readonly v: Record<string, unknown>,
    private readonly path: string,
  ) {}

  static of(v: unknown, path: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw malformed(path, 'an object');
    return new Obj(v as Record<string, unknown>, path);
  }
  keys(): string[] {
    return Object.keys(this.v);
  }
  has(k: string): boolean {
    return this.v[k] !== undefined;
  }
  obj(k: string): Obj {
    return Obj.of(this.v[k], `${this.path}.${k}`);
  }
  str(k: string, maxLength = 1024): string {
    const s = this.v[k];
    if (typeof s !== 'string' || s.length === 0 || s.length > maxLength) throw malformed(`${this.path}.${k}`, `a string of 1–${maxLength} characters`);
    return s;
  }
  /** An optional free text (possibly empty); absent is the empty string. */
  text(k: string, maxLength: number): string {
    const s = this.v[k];
    if (s === undefined) return '';
    if (typeof s !== 'string' || s.length > maxLength) throw malformed(`${this.path}.${k}`, `a string of at most ${maxLength} characters`);
    return s;
  }
  int(k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const n = this.v[k];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min || n > max) throw malformed(`${this.path}.${k}`, `an integer in [${min}, ${max}]`);
    return n;
  }
  bool(k: string): boolean {
    if (typeof this.v[k] !== 'boolean') throw malformed(`${this.path}.${k}`, 'a boolean');
    return this.v[k] as boolean;
  }
  oneOf<T extends string>(k: string, values: readonly T[]): T {
    const s = this.v[k];
    if (!values.includes(s as T)) throw malformed(`${this.path}.${k}`, values.join(' | '));
    return s as T;
  }
  /** base64url of exactly `size` bytes, or of at most `max` bytes. */
  bytes(k: string, size: number | { max: number }): Uint8Array {
    return b64(this.v[k], `${this.path}.${k}`, size);
  }
  /** A device id: the base64url of a 32-byte device key (protocol deviceId()). */
  deviceId(k: string): string {
    this.bytes(k, KEY_SIZE);
    return this.v[k] as string;
  }
  list(k: string, max: number): { item: unknown; path: string }[] {
    const a = this.v[k];
    if (!Array.isArray(a) || a.length > max) throw malformed(`${this.path}.${k}`, `a list of at most ${max}`);
    return a.map((item, i) => ({ item, path: `${this.path}.${k}[${i}]` }));
  }
  objs(k: string, max: number): Obj[] {
    return this.list(k, max).map(({ item, path }) => Obj.of(item, path));
  }
}

function b64(v: unknown, path: string, size: number | { max: number }): Uint8Array {
  const max = typeof size === 'number' ? size : size.max;
  if (typeof v !== 'string' || v.length > Math.ceil((max * 4) / 3)) throw malformed(path, `base64url of ${typeof size === 'number' ? '' : '≤ '}${max} bytes`);
  let b: Uint8Array;
  try {
    b = fromBase64url(v);
  } catch {
    throw malformed(path, 'unpadded base64url');
  }
  if (typeof size === 'number' && b.length !== size) throw malformed(path, `${size} bytes`);
  return b;
}

const appended = (o: Obj): Appended => {
  const size = o.int('size', 1);
  const index = o.int('index', size - 1, size - 1); // the submission is the last entry of the new head
  return { index, size, checkpoint: o.bytes('checkpoint', { max: STRUCT_MAX }) };
};
const summary = (o: Obj): TopicSummary => ({
  topicId: o.bytes('topicId', TOPIC_ID_SIZE),
  host: o.str('host', MAX_SERVER_NAME_BYTES),
  size: o.int('size', 1),
  checkpoint: o.bytes('checkpoint', { max: STRUCT_MAX }),
});
const pendingBundle = (o: Obj): PendingBundle => ({ id: o.int('id'), senderDeviceId: o.deviceId('senderDeviceId'), bundle: o.bytes('bundle', { max: BUNDLE_MAX }) });
const proof = (o: Obj): Uint8Array[] => o.list('proof', PROOF_MAX).map(({ item, path }) => b64(item, path, HASH_SIZE));

/**
 * An event batch (§Events and the WebSocket) read from its JSON, with the order rules a device
 * relies on: sequence numbers increasing and after `after`, the cursor not before the last one.
 * Event kinds this SDK does not know are skipped (the cursor still covers them): servers add kinds.
 */
export function parseEventBatch(json: unknown, after: number, path = 'batch'): EventBatch {
  const o = Obj.of(json, path);
  let last = after;
  const events: LiveEvent[] = [];
  for (const e of o.objs('events', 10_000)) {
    const seq = e.int('seq', last + 1);
    last = seq;
    const kind = e.str('kind', 64);
    if (kind === 'entry') {
      const type = e.oneOf('type', ['update', 'message'] as const);
      events.push({ seq, kind, topicId: e.bytes('topicId', TOPIC_ID_SIZE), index: e.int('index'), type, entry: e.bytes('entry', { max: ENTRY_MAX }) });
    } else if (kind === 'membership') {
      events.push({ seq, kind, topicId: e.bytes('topicId', TOPIC_ID_SIZE), user: e.str('user', MAX_USER_ID_BYTES) });
    } else if (kind === 'bundle') events.push({ seq, kind });
  }
  const cps = o.obj('checkpoints');
  const checkpoints = cps.keys().map((id) => ({
    topicId: b64(id, `${path}.checkpoints key`, TOPIC_ID_SIZE),
    checkpoint: cps.bytes(id, { max: STRUCT_MAX }),
  }));
  const batch: EventBatch = { events, cursor: o.int('cursor', last), checkpoints, resync: o.has('resync') && o.bool('resync') };
  if (o.has('bundles')) batch.bundles = o.objs('bundles', 10_000).map(pendingBundle);
  return batch;
}

// ---- the client -----------------------------------------------------------------------------

interface Call {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  json?: unknown;
  /** Safe to send again: a read, a submission under its key, or a write idempotent by content. */
  retry: boolean;
  auth?: boolean;
  clientId?: string;
}

const tokens = new WeakMap<ServerApi, string | null>();

export class ServerApi {
  /**
   * The device's session token (Authorization: Bearer); createSession sets it, logout clears it.
   * Kept outside the object (a module WeakMap), so logging the API object, or expanding it in a
   * browser's devtools, never shows it.
   */
  get token(): string | null {
    return tokens.get(this) ?? null;
  }
  set token(t: string | null) {
    tokens.set(this, t);
  }
  readonly baseUrl: string;
  private readonly fetch: typeof globalThis.fetch;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly liveAuth: 'auto' | 'header' | 'first-frame';
  private readonly random: Random;
  private readonly retry: RetryPolicy;
  private readonly timeoutMs: number;

  constructor(o: ServerApiOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, '');
    // Called detached: a browser's fetch throws "Illegal invocation" with another `this`.
    this.fetch = o.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.WS = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.liveAuth = o.liveAuth ?? 'auto';
    this.random = o.random ?? ((n) => globalThis.crypto.getRandomValues(new Uint8Array(n)));
    this.retry = { ...DEFAULT_RETRY, ...o.retry };
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.token = o.token ?? null;
  }

  // ---- §Discovery, §Registration and devices, §Sessions --------------------------------------

  async wellKnown(): Promise<WellKnown> {
    const o = await this.json({ method: 'GET', path: '/.well-known/rendezvous', retry: true, auth: false });
    return { server: o.str('server', MAX_SERVER_NAME_BYTES), publicKey: o.bytes('publicKey', KEY_SIZE), apiVersion: o.int('apiVersion'), version: o.str('version', 128) };
  }

  /** Not retried: a lost answer is followed by `user.exists`; the pin is spent either way. */
  async register(r: { user: string; pin: string; identityKey: Uint8Array; deviceCert: Uint8Array }): Promise<{ user: string; deviceId: string }> {
    const json = { user: r.user, pin: r.pin, identityKey: toBase64url(r.identityKey), deviceCert: toBase64url(r.deviceCert) };
    const o = await this.json({ method: 'POST', path: '/v1/register', json, retry: false, auth: false });
    return { user: o.str('user', MAX_USER_ID_BYTES), deviceId: o.deviceId('deviceId') };
  }

  async identityOf(user: string): Promise<Identity> {
    const o = await this.json({ method: 'GET', path: `/v1/users/${encodeURIComponent(user)}`, retry: true, auth: false });
    return { user: o.str('user', MAX_USER_ID_BYTES), identityKey: o.bytes('identityKey', KEY_SIZE) };
  }

  /** Not retried: the server accepts a device certificate once (`device.exists` after). */
  async addDevice(user: string, cert: Uint8Array): Promise<{ deviceId: string }> {
    const o = await this.json({ method: 'POST', path: `/v1/users/${encodeURIComponent(user)}/devices`, json: { cert: toBase64url(cert) }, retry: false, auth: false });
    return { deviceId: o.deviceId('deviceId') };
  }

  /** Retried: a challenge is single-use and short-lived, so a lost one costs nothing. */
  async challenge(deviceId: string): Promise<Challenge> {
    const o = await this.json({ method: 'POST', path: '/v1/auth/challenge', json: { deviceId }, retry: true, auth: false });
    return { challenge: o.bytes('challenge', KEY_SIZE), expiresAt: o.int('expiresAt') };
  }

  /** Login: the challenge signed per protocol §5.3. Sets `token` for the calls that follow. */
  async createSession(r: { deviceId: string; challenge: Uint8Array; signature: Uint8Array }): Promise<Session> {
    const json = { deviceId: r.deviceId, challenge: toBase64url(r.challenge), signature: toBase64url(r.signature) };
    const o = await this.json({ method: 'POST', path: '/v1/auth/session', json, retry: false, auth: false });
    const token = o.str('token', 256);
    if (!TOKEN.test(token)) throw malformed('session.token', 'a bearer token');
    const s = { token, expiresAt: o.int('expiresAt'), user: o.str('user', MAX_USER_ID_BYTES), deviceId: o.deviceId('deviceId') };
    this.token = s.token;
    return s;
  }

  async logout(): Promise<void> {
    await this.json({ method: 'DELETE', path: '/v1/auth/session', retry: false });
    this.token = null;
  }

  async listDevices(): Promise<DeviceInfo[]> {
    const o = await this.json({ method: 'GET', path: '/v1/devices', retry: true });
    return o.objs('devices', 10_000).map((d) => ({ deviceId: d.deviceId('deviceId'), cert: d.bytes('cert', { max: STRUCT_MAX }), createdAt: d.int('createdAt'), current: d.bool('current') }));
  }

  async deleteDevice(deviceId: string): Promise<void> {
    await this.json({ method: 'DELETE', path: `/v1/devices/${encodeURIComponent(deviceId)}`, retry: false });
  }

  // ---- §Push ---------------------------------------------------------------------------------------

  /** The push providers this server sends through (`webpush`, and `apns`/`fcm` when configured). */
  async pushProviders(): Promise<PushKind[]> {
    const o = await this.json({ method: 'GET', path: '/v1/push/providers', retry: true, auth: false });
    return o.list('providers', 8).map(({ item, path }) => pushKind(item, path));
  }

  /** The server's VAPID public key (RFC 8292): `applicationServerKey` for `pushManager.subscribe`. */
  async vapidKey(): Promise<Uint8Array> {
    const o = await this.json({ method: 'GET', path: '/v1/push/vapid', retry: true, auth: false });
    return o.bytes('publicKey', 65);
  }

  /**
   * Registers this device for push: a browser's `PushSubscription.toJSON()` (Web Push), or a
   * native device token. Retried: the same endpoint or token again keeps its id.
   */
  async subscribePush(s: PushSubscriptionInput): Promise<PushSubscriptionInfo> {
    const json = 'token' in s ? { kind: s.kind, token: s.token } : { kind: 'webpush', endpoint: s.endpoint, keys: { p256dh: s.keys.p256dh, auth: s.keys.auth } };
    return pushInfo(await this.json({ method: 'POST', path: '/v1/push/subscriptions', json, retry: true }));
  }

  async listPush(): Promise<PushSubscriptionInfo[]> {
    const o = await this.json({ method: 'GET', path: '/v1/push/subscriptions', retry: true });
    return o.objs('subscriptions', 100).map(pushInfo);
  }

  async unsubscribePush(id: string): Promise<void> {
    await this.json({ method: 'DELETE', path: `/v1/push/subscriptions/${encodeURIComponent(id)}`, retry: false });
  }

  // ---- §Key pools and bundles ------------------------------------------------------------------

  async keyCounts(): Promise<KeyCounts> {
    const o = await this.json({ method: 'GET', path: '/v1/keys/counts', retry: true });
    const lw = o.obj('lowWater');
    return { prekeys: o.int('prekeys'), topicKeys: o.int('topicKeys'), lowWater: { prekeys: lw.int('prekeys'), topicKeys: lw.int('topicKeys') } };
  }

  /** Retried: a prekey already held is ignored (§Idempotency), so a repeat adds nothing. */
  async uploadPrekeys(prekeys: Uint8Array[]): Promise<PoolUpload> {
    const o = await this.json({ method: 'POST', path: '/v1/prekeys', json: { prekeys: prekeys.map(toBase64url) }, retry: true });
    return { count: o.int('count'), lowWater: o.int('lowWater') };
  }

  /** Never retried: a claim consumes a key, and a lost answer would waste a second one. */
  async claimPrekey(deviceId: string): Promise<ClaimedPrekey> {
    const o = await this.json({ method: 'POST', path: `/v1/devices/${encodeURIComponent(deviceId)}/prekeys/claim`, retry: false });
    return { prekey: o.bytes('prekey', { max: STRUCT_MAX }), cert: o.bytes('cert', { max: STRUCT_MAX }) };
  }

  async uploadTopicKeys(r: { keys: Uint8Array[]; bundles?: OutgoingBundle[] }, opts: SubmitOptions = {}): Promise<Submitted<PoolUpload>> {
    const json = { keys: r.keys.map(toBase64url), bundles: (r.bundles ?? []).map(bundleJson) };
    return this.submit('/v1/topic-keys', json, opts, (o) => ({ count: o.int('count'), lowWater: o.int('lowWater') }));
  }

  /** Never retried (see claimPrekey). */
  async claimTopicKey(user: string): Promise<ClaimedTopicKey> {
    const o = await this.json({ method: 'POST', path: `/v1/users/${encodeURIComponent(user)}/topic-keys/claim`, retry: false });
    return { topicKey: o.bytes('topicKey', { max: STRUCT_MAX }), identityKey: o.bytes('identityKey', KEY_SIZE) };
  }

  async sendBundles(bundles: OutgoingBundle[], opts: SubmitOptions = {}): Promise<Submitted<{ sent: number }>> {
    return this.submit('/v1/bundles', { bundles: bundles.map(bundleJson) }, opts, (o) => ({ sent: o.int('sent', 0, bundles.length) }));
  }

  async listBundles(): Promise<PendingBundle[]> {
    return (await this.json({ method: 'GET', path: '/v1/bundles', retry: true })).objs('bundles', 100_000).map(pendingBundle);
  }

  /** Retried: deleting the bundles up to an id twice deletes nothing more. */
  async ackBundles(upTo: number): Promise<{ deleted: number }> {
    const o = await this.json({ method: 'POST', path: '/v1/bundles/ack', json: { upTo }, retry: true });
    return { deleted: o.int('deleted') };
  }

  // ---- §Topics and logs ----------------------------------------------------------------------

  /** `update` is an encoded `create` TopicUpdate. */
  async createTopic(update: Uint8Array, opts: SubmitOptions = {}): Promise<Submitted<Created>> {
    return this.submit('/v1/topics', { update: toBase64url(update) }, opts, (o) => {
      const a = appended(o);
      if (a.index !== 0) throw malformed('createTopic.index', '0');
      return { topicId: o.bytes('topicId', TOPIC_ID_SIZE), ...a };
    });
  }

  async listTopics(): Promise<TopicSummary[]> {
    return (await this.json({ method: 'GET', path: '/v1/topics', retry: true })).objs('topics', 1_000_000).map(summary);
  }

  async getTopic(topicId: Uint8Array): Promise<TopicInfo> {
    const o = await this.json({ method: 'GET', path: topicPath(topicId), retry: true });
    const s = summary(o);
    return {
      ...s,
      history: o.oneOf('history', ['shared', 'hidden'] as const),
      epoch: o.int('epoch'),
      epochStartSize: o.int('epochStartSize', 0, s.size),
      members: o.objs('members', 10_000).map((m) => ({ memberId: m.int('memberId'), user: m.str('user', MAX_USER_ID_BYTES), role: m.oneOf('role', ['admin', 'participant', 'observer'] as const) })),
      // Absent on a server without federation: nothing witnessed, nothing detected.
      witnesses: o.has('witnesses') ? o.list('witnesses', 10_000).map(({ item, path }) => b64(item, path, { max: COSIGNATURE_MAX })) : [],
      forks: o.has('forks')
        ? o.objs('forks', 10_000).map((f) => ({
            kind: f.oneOf('kind', ['fork', 'rollback'] as const),
            server: f.str('server', MAX_SERVER_NAME_BYTES),
            checkpoints: f.list('checkpoints', 1_000).map(({ item, path }) => b64(item, path, { max: STRUCT_MAX })),
            detail: f.text('detail', 4096),
            detectedAt: f.int('detectedAt'),
          }))
        : [],
    };
  }

  /**
   * The keys the home server pinned for server `name` (protocol §17.1; its own keys for its own
   * name). Only the shape is checked here; the client pins them (docs/client.md §Topics hosted
   * on other servers) and checks each key id against its key.
   */
  async serverKeys(name: string): Promise<ServerKeys> {
    const o = await this.json({ method: 'GET', path: `/v1/servers/${encodeURIComponent(name)}`, retry: true });
    return {
      server: o.str('server', MAX_SERVER_NAME_BYTES),
      keys: o.objs('keys', 1_000).map((k) => ({ publicKey: k.bytes('publicKey', KEY_SIZE), keyId: k.bytes('keyId', KEY_ID_SIZE) })),
    };
  }

  /** `201` with the new head, or `202 {pending: true}` for a topic whose host is unreachable (see Pending). */
  async postUpdate(topicId: Uint8Array, update: Uint8Array, opts: SubmitOptions = {}): Promise<Submitted<Appended | Pending>> {
    return this.submit(`${topicPath(topicId)}/updates`, { update: toBase64url(update) }, opts, appended, true);
  }

  /** `201` with the new head, or `202 {pending: true}` for a topic whose host is unreachable (see Pending). */
  async postMessage(topicId: Uint8Array, message: Uint8Array, opts: SubmitOptions = {}): Promise<Submitted<Appended | Pending>> {
    return this.submit(`${topicPath(topicId)}/messages`, { message: toBase64url(message) }, opts, appended, true);
  }

  /** Entries from `from`, in order and without gaps (the server sends at most 1,000 a time). */
  async entries(topicId: Uint8Array, from = 0, limit = 100): Promise<Entries> {
    nonNegative('from', from);
    nonNegative('limit', limit);
    const o = await this.json({ method: 'GET', path: `${topicPath(topicId)}/entries?from=${from}&limit=${limit}`, retry: true });
    // Only the shape is checked here: whether the indexes form the log the client holds (a
    // gap, a fork, a harmless redelivery) is the mirror's judgement (protocol §11.3).
    const entries = o.objs('entries', Math.min(Math.max(1, limit), 1_000)).map((e) => ({
      index: e.int('index', 0, Number.MAX_SAFE_INTEGER),
      type: e.oneOf('type', ['update', 'message'] as const),
      entry: e.bytes('entry', { max: ENTRY_MAX }),
    }));
    return { entries, checkpoint: o.bytes('checkpoint', { max: STRUCT_MAX }) };
  }

  async inclusionProof(topicId: Uint8Array, index: number, size: number): Promise<InclusionProof> {
    nonNegative('index', index);
    nonNegative('size', size);
    const o = await this.json({ method: 'GET', path: `${topicPath(topicId)}/proofs/inclusion?index=${index}&size=${size}`, retry: true });
    return { index: o.int('index', index, index), size: o.int('size', size, size), proof: proof(o) };
  }

  async consistencyProof(topicId: Uint8Array, from: number, to: number): Promise<ConsistencyProof> {
    nonNegative('from', from);
    nonNegative('to', to);
    const o = await this.json({ method: 'GET', path: `${topicPath(topicId)}/proofs/consistency?from=${from}&to=${to}`, retry: true });
    return { from: o.int('from', from, from), to: o.int('to', to, to), proof: proof(o) };
  }

  // ---- §Events and the WebSocket -------------------------------------------------------------

  async events(after: number, limit?: number): Promise<EventBatch> {
    nonNegative('after', after);
    const q = limit === undefined ? '' : `&limit=${nonNegative('limit', limit)}`;
    const { text } = await this.exchange({ method: 'GET', path: `/v1/events?after=${after}${q}`, retry: true });
    return parseEventBatch(parseJson(text, 'events'), after, 'events');
  }

  /**
   * Opens `GET /v1/ws?after=` and hands over its batches in order. Authenticates with the
   * Authorization header where the constructor takes headers (`ws`, undici) and otherwise with a
   * first frame `{"type":"auth","token"}` (browsers). No reconnection here: the caller
   * reconnects from the last cursor it stored, which loses and repeats nothing.
   */
  connectLive(after: number, h: LiveHandlers): { close(): void } {
    nonNegative('after', after);
    const token = this.requireToken();
    if (this.WS === undefined) throw new TypeError('no WebSocket implementation: pass options.WebSocket');
    const url = `${this.baseUrl.replace(/^http/, 'ws')}/v1/ws?after=${after}`;
    let ws: WebSocketLike | undefined;
    let firstFrame = this.liveAuth === 'first-frame';
    if (!firstFrame) {
      try {
        ws = new this.WS(url, { headers: { authorization: `Bearer ${token}` } });
      } catch (e) {
        // A browser WebSocket refuses a non-string protocols argument with a SyntaxError.
        if (this.liveAuth === 'header') throw e;
        firstFrame = true;
      }
    }
    const sock = ws ?? new this.WS(url);
    let cursor = after;
    let queue = Promise.resolve();
    let failure: unknown;
    // `stopped`: closed by the caller or a failure, so queued batches are dropped (their cursor
    // was never stored). Batches received before the server closed are still handed over.
    let stopped = false;
    let closed = false;
    const stop = (e?: unknown) => {
      failure ??= e;
      if (stopped || closed) return;
      stopped = true;
      sock.close(1000, e === undefined ? 'client closed' : 'client error');
    };
    sock.onopen = () => {
      if (firstFrame) sock.send(JSON.stringify({ type: 'auth', token }));
    };
    sock.onmessage = (ev: { data: unknown }) => {
      if (stopped) return;
      try {
        if (typeof ev.data !== 'string') throw malformed('ws frame', 'a text frame');
        const json = parseJson(ev.data, 'ws frame');
        const msg = Obj.of(json, 'ws frame');
        const type = msg.str('type', 64);
        if (type === 'ready') {
          const ready = { user: msg.str('user', MAX_USER_ID_BYTES), deviceId: msg.deviceId('deviceId'), cursor: msg.int('cursor', after, after) };
          h.onOpen?.(ready);
        } else if (type === 'events') {
          const batch = parseEventBatch(json, cursor, 'ws batch');
          cursor = batch.cursor;
          queue = queue.then(() => (stopped ? undefined : h.onBatch(batch))).catch(stop);
        }
      } catch (e) {
        stop(e);
      }
    };
    sock.onerror = () => undefined; // the close event that follows reports it
    sock.onclose = (ev: { code?: number; reason?: string }) => {
      closed = true;
      const info = { code: ev.code ?? 1006, reason: String(ev.reason ?? '') };
      void queue.then(() => h.onClose?.(failure === undefined ? info : { ...info, error: failure }));
    };
    return { close: () => stop() };
  }

  // ---- §Files ----------------------------------------------------------------------------------

  /**
   * PUTs an encrypted blob (`blobId` = its SHA-256). Bytes are retried (blobs are idempotent by
   * their hash); a stream cannot be replayed and is sent once. With onProgress, bytes are sent as
   * a stream (with content-length): browsers stream request bodies only over HTTP/2.
   */
  async uploadBlob(topicId: Uint8Array, blobId: Uint8Array, body: Uint8Array | ReadableStream<Uint8Array>, o: BlobUploadOptions = {}): Promise<{ blobId: Uint8Array; size: number; created: boolean }> {
    if (blobId.length !== HASH_SIZE) throw badArg('blobId', `${HASH_SIZE} bytes`);
    const size = body instanceof Uint8Array ? body.length : o.size;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (size !== undefined) headers['content-length'] = String(size);
    const bytes = body instanceof Uint8Array ? body : null;
    const make = () => (bytes !== null && o.onProgress === undefined ? bytes : counting(bytes !== null ? chunks(bytes) : (body as ReadableStream<Uint8Array>), o.onProgress)) as BodyInit;
    const streamed = bytes === null || o.onProgress !== undefined;
    const path = blobPath(topicId, blobId);
    const { res, text } = await this.exchange({ method: 'PUT', path, retry: bytes !== null, headers, body: make, streamed, blob: true, signal: o.signal });
    const a = Obj.of(parseJson(text, 'uploadBlob'), 'uploadBlob');
    const r = { blobId: a.bytes('blobId', HASH_SIZE), size: a.int('size'), created: res.status === 201 };
    if (toBase64url(r.blobId) !== toBase64url(blobId) || (size !== undefined && r.size !== size)) throw malformed('uploadBlob', 'the blob that was sent');
    return r;
  }

  /**
   * GETs a blob as a stream of exactly `content-length` bytes (fewer or more errors the stream).
   * The caller checks it against its FileRef (`checkBlob`, §Files) before using any of it.
   */
  async downloadBlob(topicId: Uint8Array, blobId: Uint8Array, o: BlobDownloadOptions = {}): Promise<{ size: number; stream: ReadableStream<Uint8Array> }> {
    if (blobId.length !== HASH_SIZE) throw badArg('blobId', `${HASH_SIZE} bytes`);
    const { res } = await this.exchange({ method: 'GET', path: blobPath(topicId, blobId), retry: true, read: false, blob: true, signal: o.signal });
    const len = res.headers.get('content-length');
    if (len === null || !/^[0-9]{1,15}$/.test(len) || res.body === null) {
      await res.body?.cancel();
      throw malformed('downloadBlob', 'a body with content-length');
    }
    const size = Number(len);
    if (o.expectedSize !== undefined && size !== o.expectedSize) {
      await res.body.cancel();
      throw new RendezvousError('file.bad_blob', `blob is ${size} bytes, its file reference says ${o.expectedSize}`);
    }
    return { size, stream: counting(res.body, o.onProgress, size) };
  }

  async downloadBlobBytes(topicId: Uint8Array, blobId: Uint8Array, o: BlobDownloadOptions = {}): Promise<Uint8Array> {
    const { size, stream } = await this.downloadBlob(topicId, blobId, o);
    // Not allocated from the declared size up front: that is the server's word, not yet its bytes.
    const parts: Uint8Array[] = [];
    for await (const c of stream as unknown as AsyncIterable<Uint8Array>) parts.push(c);
    const out = new Uint8Array(size);
    parts.reduce((at, c) => (out.set(c, at), at + c.length), 0);
    return out;
  }

  // ---- transport -------------------------------------------------------------------------------

  private requireToken(): string {
    if (this.token === null) throw new RendezvousError('auth.required', 'no session token: log in first (createSession)');
    return this.token;
  }

  /** §Idempotency: one key for every attempt, the body serialized once (key uploads hash the JSON bytes). */
  private async submit<T>(path: string, json: unknown, opts: SubmitOptions, read: (o: Obj) => T): Promise<Submitted<T>>;
  private async submit<T>(path: string, json: unknown, opts: SubmitOptions, read: (o: Obj) => T, pendingOk: true): Promise<Submitted<T | Pending>>;
  private async submit<T>(path: string, json: unknown, opts: SubmitOptions, read: (o: Obj) => T, pendingOk = false): Promise<Submitted<T | Pending>> {
    const clientId = opts.clientId ?? toBase64url(this.random(16));
    if (!CLIENT_ID.test(clientId)) throw badArg('clientId', '8–64 characters of A–Z a–z 0–9 _ -');
    const { res, text } = await this.exchange({ method: 'POST', path, json, retry: true, clientId });
    const o = Obj.of(parseJson(text, path), path);
    const replayed = res.headers.get('idempotent-replayed') === 'true';
    if (pendingOk && res.status === 202) {
      if (o.bool('pending') !== true) throw malformed(`${path}.pending`, 'true');
      return { pending: true, clientId, replayed };
    }
    return { ...read(o), clientId, replayed };
  }

  private async json(c: Call): Promise<Obj> {
    const { text } = await this.exchange(c);
    return Obj.of(parseJson(text, c.path), c.path.split('?')[0]!);
  }

  /**
   * One request with its retries. `read` (default) reads the body within the attempt, so a
   * connection lost mid-answer is retried like any network failure. Non-2xx answers throw.
   */
  private async exchange(
    c: Call & { headers?: Record<string, string>; body?: () => BodyInit; streamed?: boolean; blob?: boolean; read?: boolean; signal?: AbortSignal | undefined },
  ): Promise<{ res: Response; text: string }> {
    const url = this.baseUrl + c.path;
    const headers: Record<string, string> = { ...c.headers };
    if (c.auth !== false) headers.authorization = `Bearer ${this.requireToken()}`;
    if (c.clientId !== undefined) headers['idempotency-key'] = c.clientId;
    let payload: string | undefined;
    if (c.json !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(c.json);
    }
    const read = c.read ?? true;
    for (let attempt = 1; ; attempt++) {
      let res: Response | undefined;
      let err: RendezvousError;
      try {
        // Blob transfers run as long as they need; the caller's signal bounds them.
        const signal = c.signal ?? (c.blob ? undefined : AbortSignal.timeout(this.timeoutMs));
        const init = { method: c.method, headers, body: payload ?? c.body?.(), signal, ...(c.streamed && { duplex: 'half' }) };
        res = await this.fetch(url, init as RequestInit);
        const text = read || !res.ok ? await res.text() : '';
        if (res.ok) return { res, text };
        err = errorFromAnswer(res.status, text, url);
      } catch (e) {
        if (c.signal?.aborted) throw e;
        err = new RendezvousError('server.unavailable', `cannot reach ${url}: ${describe(e)}`);
        res = undefined;
      }
      const wait = c.retry ? this.backoff(attempt, err, res) : null;
      if (wait === null) throw err;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  /** How long to wait before the next attempt, or null to give up and throw `err`. */
  private backoff(attempt: number, err: RendezvousError, res: Response | undefined): number | null {
    if (attempt >= this.retry.attempts) return null;
    const transient = res === undefined || res.status >= 500 || res.status === 408 || res.status === 429 || err.code === 'store.conflict';
    if (!transient) return null;
    const step = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
    const delay = step / 2 + (this.random(1)[0]! / 255) * (step / 2); // jitter: clients do not retry in step
    const after = res === undefined ? null : retryAfterMs(res.headers.get('retry-after'));
    if (after === null) return delay;
    return after > this.retry.maxRetryAfterMs ? null : Math.max(delay, after);
  }
}

// ---- helpers --------------------------------------------------------------------------------

function topicPath(topicId: Uint8Array): string {
  if (topicId.length !== TOPIC_ID_SIZE) throw badArg('topicId', `${TOPIC_ID_SIZE} bytes`);
  return `/v1/topics/${toBase64url(topicId)}`;
}

const blobPath = (topicId: Uint8Array, blobId: Uint8Array) => `${topicPath(topicId)}/blobs/${toBase64url(blobId)}`;
const bundleJson = (b: OutgoingBundle) => ({ deviceId: b.deviceId, bundle: toBase64url(b.bundle) });

function nonNegative(field: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw badArg(field, 'a non-negative integer');
  return n;
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw malformed(path.split('?')[0]!, 'a JSON body');
  }
}

function describe(e: unknown): string {
  const cause = (e as { cause?: { message?: unknown } })?.cause?.message;
  const msg = e instanceof Error ? e.message : String(e);
  return typeof cause === 'string' ? `${msg} (${cause})` : msg;
}

/** RFC 9110 §10.2.3: delay-seconds or an HTTP-date. */
function retryAfterMs(v: string | null): number | null {
  if (v === null) return null;
  if (/^[0-9]{1,9}$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, t - Date.now());
}

function chunks(b: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= b.length) return c.close();
      c.enqueue(b.subarray(at, Math.min(b.length, at + UPLOAD_CHUNK)));
      at += UPLOAD_CHUNK;
    },
  }, { highWaterMark: 0 });
}

/**
 * Passes a stream through, reporting the running byte count. With `size`, it errors on a byte
 * beyond it or an end before it: an untrusted server does not get to send more than it declared.
 */
function counting(src: ReadableStream<Uint8Array>, onProgress?: (n: number) => void, size?: number): ReadableStream<Uint8Array> {
  const reader = src.getReader();
  let n = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        throw new RendezvousError('server.unavailable', `transfer interrupted: ${describe(e)}`);
      }
      if (r.done) {
        if (size !== undefined && n !== size) throw malformed('blob', `${size} bytes, got ${n}`);
        return c.close();
      }
      n += r.value.length;
      if (size !== undefined && n > size) {
        await reader.cancel();
        throw malformed('blob', `${size} bytes, got more`);
      }
      c.enqueue(r.value);
      onProgress?.(n);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}
