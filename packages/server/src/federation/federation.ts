/**
 * The federation transport (protocol §17.1–§17.2, §17.7): where another server is (peer map or
 * `https://{name}`, public addresses only), which keys it is pinned to (its published list,
 * followed through endorsed rotations), signed requests out, and the ordered checks on signed
 * requests in. The domain logic (replication, forwarding, outbox, witnessing) sits on top.
 *
 * Outbound requests go through node:http/node:https with a lookup that refuses non-public
 * answers (the address checked is the address connected to), never follow redirects, time
 * out, and drop answers over 8 MiB.
 */
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import {
  FEDERATION_NONCE_SIZE,
  KEY_ID_SIZE,
  MAX_FEDERATION_PATH_BYTES,
  RendezvousError,
  equal,
  fromBase64url,
  isServerName,
  serverKeyId,
  signFederationRequest,
  toBase64url,
  trustServerKeys,
  verifyFederationRequest,
  type FederationRequest,
  type PublishedServerKey,
} from '@rendezvous/protocol';
import type { Context } from '../context.ts';
import { readBody } from '../http/body.ts';
import { PRIVATE_ADDRESS_CODE, hostOf, isLoopbackHost, isNonPublicAddress, publicLookup } from '../net-guard.ts';
import { ownServerKeys } from './keys.ts';

export interface FederationOptions {
  /** Default true. Off: every signed request is refused and nothing is sent. */
  enabled?: boolean;
  /** Server name → base URL; `http://` only for loopback hosts (127.0.0.0/8, ::1, localhost). */
  peers?: Record<string, string>;
  /** Discovered (non-peer) names may resolve to private/loopback addresses: development only. */
  allowPrivate?: boolean;
  /** If set, only these servers. */
  allow?: string[];
  deny?: string[];
  /** Per request, connection to the end of the answer (default 30,000 ms). */
  timeoutMs?: number;
  /** Delivery back-off bounds (default 500 / 60,000 ms), for the delivery loops. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Test hooks, carried through for the domain logic. */
  testing?: { forkFor?: string[] };
}

export interface ResolvedFederationOptions {
  enabled: boolean;
  /** Mutable through `setPeer` (tests learn ports only after starting). */
  peers: Record<string, string>;
  allowPrivate: boolean;
  allow: string[] | null;
  deny: string[];
  timeoutMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  testing: { forkFor?: string[] };
}

export const FEDERATION_LIMITS = {
  /** Clock skew and replay window (± ms). */
  windowMs: 120_000,
  /** Largest answer read from another server. */
  maxAnswerBytes: 8 * 1024 * 1024,
  /** Largest `/.well-known/rendezvous` read. */
  maxDiscoveryBytes: 1024 * 1024,
  /** A server's key list is fetched again for an unknown key id at most this often. */
  keyRefetchMs: 30_000,
  /** Nonces remembered at most (beyond it the oldest are dropped, which the window makes safe only for old ones). */
  maxNonces: 1_000_000,
} as const;

/** Header names of a signed request (§17.2). */
export const FEDERATION_HEADERS = {
  origin: 'rendezvous-origin',
  destination: 'rendezvous-destination',
  time: 'rendezvous-time',
  nonce: 'rendezvous-nonce',
  keyId: 'rendezvous-key-id',
  signature: 'rendezvous-signature',
} as const;

/** Checks a peer URL: an absolute http(s) origin (optionally with a path), http only on a loopback host. */
export function checkPeerUrl(server: string, url: string): string {
  if (!isServerName(server)) throw new Error(`federation peer "${server}" is not a server name (lowercase DNS name[:port])`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`federation peer ${server}: "${url}" is not an absolute URL`);
  }
  if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
    throw new Error(`federation peer ${server}: "${url}" must not carry credentials, a query or a fragment`);
  }
  if (u.protocol === 'http:') {
    if (!isLoopbackHost(u.hostname)) throw new Error(`federation peer ${server}: http:// is only allowed on loopback (127.0.0.0/8, ::1, localhost); use https://`);
  } else if (u.protocol !== 'https:') {
    throw new Error(`federation peer ${server}: "${url}" must be an https:// URL`);
  }
  return u.href.replace(/\/+$/, '');
}

function resolveOptions(o: FederationOptions = {}): ResolvedFederationOptions {
  const peers: Record<string, string> = {};
  for (const [name, url] of Object.entries(o.peers ?? {})) peers[name] = checkPeerUrl(name, url);
  return {
    enabled: o.enabled ?? true,
    peers,
    allowPrivate: o.allowPrivate ?? false,
    allow: o.allow === undefined ? null : [...o.allow],
    deny: [...(o.deny ?? [])],
    timeoutMs: o.timeoutMs ?? 30_000,
    retryMinMs: o.retryMinMs ?? 500,
    retryMaxMs: o.retryMaxMs ?? 60_000,
    testing: { ...o.testing },
  };
}

function badResponse(server: string, why: string, details?: Record<string, unknown>): RendezvousError {
  return new RendezvousError('federation.bad_response', `${server}: ${why}`, details);
}

export interface FederationAnswer {
  status: number;
  body: Record<string, unknown>;
}

export class Federation {
  readonly options: ResolvedFederationOptions;
  /** Signed requests dated before this (ms) are refused (§17.2 rule 6). */
  readonly startedAt: number;
  private readonly contactListeners = new Set<(origin: string) => void>();
  /** origin + nonce → when it may be forgotten; insertion order is expiry order. */
  private readonly nonces = new Map<string, number>();
  private readonly lastKeyFetch = new Map<string, number>();
  private readonly keyFetches = new Map<string, Promise<Uint8Array[]>>();

  constructor(
    private readonly ctx: Context,
    options: FederationOptions = {},
  ) {
    this.options = resolveOptions(options);
    this.startedAt = ctx.now();
  }

  /** Adds or replaces a peer (tests that learn ports after start; operator tooling). */
  setPeer(server: string, url: string): void {
    this.options.peers[server] = checkPeerUrl(server, url);
  }

  /** Whether federation with `server` is allowed (enabled, not denied, allowed when an allow list is set). */
  allowed(server: string): boolean {
    const o = this.options;
    return o.enabled && server !== this.ctx.name && !o.deny.includes(server) && (o.allow === null || o.allow.includes(server));
  }

  private checkAllowed(server: string): void {
    if (!isServerName(server)) throw new RendezvousError('request.bad_field', `"${server}" is not a server name`, { field: 'server' });
    if (!this.allowed(server)) throw new RendezvousError('federation.refused', `federation with ${server} is not allowed here`);
  }

  /** The base URL of `server` (§17.1 discovery): the peer map, else `https://{server}`. */
  baseUrl(server: string): string {
    this.checkAllowed(server);
    return this.options.peers[server] ?? `https://${server}`;
  }

  // ---- keys (§17.1) -------------------------------------------------------------------------

  /**
   * The keys pinned for `server`, fetching its key list on first contact, and again (at most
   * once per 30 s) when `keyId` is given and not among them. For this server's own name, its
   * own keys.
   */
  async serverKeys(server: string, opts: { keyId?: Uint8Array } = {}): Promise<Uint8Array[]> {
    if (server === this.ctx.name) return (await ownServerKeys(this.ctx)).map((k) => k.publicKey);
    this.checkAllowed(server);
    const pinned = await this.ctx.store.getServerKeys(server);
    const has = (keys: Uint8Array[]) => opts.keyId === undefined || keys.some((k) => equal(serverKeyId(this.ctx.crypto, k), opts.keyId!));
    if (pinned !== null && pinned.length > 0 && has(pinned)) return pinned;
    const last = this.lastKeyFetch.get(server);
    const inFlight = this.keyFetches.get(server);
    let keys: Uint8Array[];
    if (inFlight !== undefined) keys = await inFlight;
    else if (last !== undefined && this.ctx.now() - last < FEDERATION_LIMITS.keyRefetchMs) {
      if (pinned === null || pinned.length === 0) throw new RendezvousError('federation.unreachable', `${server}: its keys could not be fetched; retry later`);
      throw new RendezvousError('federation.unknown_key', `${server} does not publish that key`);
    } else {
      this.lastKeyFetch.set(server, this.ctx.now());
      const p = this.fetchKeys(server, pinned ?? []);
      this.keyFetches.set(server, p);
      try {
        keys = await p;
      } finally {
        this.keyFetches.delete(server);
      }
    }
    if (!has(keys)) throw new RendezvousError('federation.unknown_key', `${server} does not publish that key`);
    return keys;
  }

  /** The pinned key of `server` with id `keyId` (fetching its list as `serverKeys` does). */
  async keyFor(server: string, keyId: Uint8Array): Promise<Uint8Array> {
    const keys = await this.serverKeys(server, { keyId });
    const key = keys.find((k) => equal(serverKeyId(this.ctx.crypto, k), keyId));
    if (key === undefined) throw new RendezvousError('federation.unknown_key', `${server} does not publish that key`);
    return key;
  }

  private async fetchKeys(server: string, pinned: Uint8Array[]): Promise<Uint8Array[]> {
    const answer = await this.send(server, 'GET', '/.well-known/rendezvous', {}, null, FEDERATION_LIMITS.maxDiscoveryBytes);
    if (answer.status !== 200) throw new RendezvousError('federation.unreachable', `${server}: /.well-known/rendezvous answered ${answer.status}`);
    const published = parseDiscovery(server, answer.body);
    let trusted: Uint8Array[];
    try {
      trusted = trustServerKeys(this.ctx.crypto, server, published, pinned);
    } catch (e) {
      if (e instanceof RendezvousError && e.code === 'federation.key_changed') {
        this.ctx.log.error({ server }, 'federation: server key changed without an endorsement by its pinned key; re-pin it by hand if this is expected');
        throw e;
      }
      throw badResponse(server, `its key list does not verify (${(e as Error).message})`);
    }
    if (trusted.length !== pinned.length || trusted.some((k, i) => !equal(k, pinned[i]!))) {
      await this.ctx.store.putServerKeys(server, trusted, this.ctx.now());
      this.ctx.log.info({ server, keys: trusted.length, firstContact: pinned.length === 0 }, 'federation: server keys pinned');
    }
    return trusted;
  }

  // ---- outbound -----------------------------------------------------------------------------

  /**
   * A signed request to `destination` (§17.2) with a JSON body. A non-2xx answer is returned
   * (status and parsed body); a network failure, timeout or oversized answer throws
   * `federation.unreachable`, a non-JSON answer `federation.bad_response`, a discovered name
   * on a non-public address `federation.bad_address`.
   */
  async request(destination: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<FederationAnswer> {
    if (destination === this.ctx.name) throw new Error(`federation: a request to this server itself (${method} ${path})`);
    const base = this.baseUrl(destination);
    const bytes = body === undefined ? new Uint8Array(0) : new TextEncoder().encode(JSON.stringify(body));
    const sent = pathAsSent(base, path);
    const headers = signedHeaders(this.ctx, { destination, method, path: sent, body: bytes });
    if (body !== undefined) headers['content-type'] = 'application/json';
    return this.send(destination, method, path, headers, body === undefined ? null : bytes, FEDERATION_LIMITS.maxAnswerBytes);
  }

  /**
   * A signed request whose body and answer are streamed (file blobs): `bodyHash` is the
   * SHA-256 the body will have (a blob's id). Resolves with the answer's status, headers and
   * body stream as soon as the headers arrive; the connection may idle at most `timeoutMs`.
   */
  async stream(
    destination: string,
    method: 'GET' | 'PUT',
    path: string,
    body: { hash: Uint8Array; stream: ReadableStream<Uint8Array> | null; length?: number } | null,
  ): Promise<{ status: number; headers: IncomingMessage['headers']; body: ReadableStream<Uint8Array> }> {
    if (destination === this.ctx.name) throw new Error(`federation: a request to this server itself (${method} ${path})`);
    const { url, host, lookup } = this.target(destination, path);
    const headers = signedHeaders(this.ctx, { destination, method, path: url.pathname + url.search, bodyHash: body?.hash ?? this.ctx.crypto.sha256(new Uint8Array(0)) });
    if (body !== null) headers['content-type'] = 'application/octet-stream';
    if (body?.length !== undefined) headers['content-length'] = String(body.length);
    const timeoutMs = this.options.timeoutMs;
    const unreachable = (why: string) => new RendezvousError('federation.unreachable', `${destination}: ${why}`);
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
        {
          hostname: host,
          port: url.port === '' ? undefined : Number(url.port),
          path: url.pathname + url.search,
          method,
          headers,
          lookup,
          timeout: timeoutMs,
        },
        (res) => {
          res.setTimeout(timeoutMs, () => res.destroy(unreachable(`no data for ${timeoutMs} ms`)));
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Readable.toWeb(res) as ReadableStream<Uint8Array> });
        },
      );
      req.on('timeout', () => req.destroy(unreachable(`no data for ${timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof RendezvousError) reject(e);
        else if (e.code === PRIVATE_ADDRESS_CODE) reject(new RendezvousError('federation.bad_address', `${destination} resolves to a non-public address`));
        else reject(unreachable(describe(e)));
      });
      if (body?.stream) {
        Readable.fromWeb(body.stream as import('node:stream/web').ReadableStream<Uint8Array>)
          .on('error', (e) => req.destroy(e))
          .pipe(req);
      } else req.end();
    });
  }

  /**
   * Where a request to `server` goes, and the lookup that keeps it there: a discovered
   * (non-peer) name may only connect to public addresses, unless `allowPrivate` (§17.1).
   */
  private target(server: string, path: string): { url: URL; host: string; lookup: RequestOptions['lookup'] } {
    const base = this.baseUrl(server);
    const url = new URL(pathAsSent(base, path), base);
    const guard = this.options.peers[server] === undefined && !this.options.allowPrivate;
    const host = hostOf(url);
    if (guard && isIP(host) !== 0 && isNonPublicAddress(host)) throw new RendezvousError('federation.bad_address', `${server} is a non-public address`);
    return { url, host, lookup: guard ? (publicLookup as RequestOptions['lookup']) : undefined };
  }

  /** One HTTP exchange with `server`: its base URL, SSRF rules, no redirects, timeout, answer cap. */
  private send(
    server: string,
    method: string,
    path: string,
    headers: Record<string, string>,
    body: Uint8Array | null,
    maxAnswer: number,
  ): Promise<FederationAnswer> {
    let t: ReturnType<Federation['target']>;
    try {
      t = this.target(server, path);
    } catch (e) {
      return Promise.reject(e);
    }
    const { url, host, lookup } = t;
    const timeoutMs = this.options.timeoutMs;
    const options: RequestOptions = {
      hostname: host,
      port: url.port === '' ? undefined : Number(url.port),
      path: url.pathname + url.search,
      method,
      headers: { accept: 'application/json', ...headers, ...(body === null ? {} : { 'content-length': String(body.length) }) },
      signal: AbortSignal.timeout(timeoutMs),
      lookup,
    };
    const unreachable = (why: string) => new RendezvousError('federation.unreachable', `${server}: ${why}`);
    return new Promise<FederationAnswer>((resolve, reject) => {
      const onAnswer = (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let total = 0;
        res.on('data', (c: Buffer) => {
          total += c.length;
          if (total > maxAnswer) {
            res.destroy();
            req.destroy();
            reject(unreachable(`answer larger than ${maxAnswer} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', (e) => reject(unreachable(describe(e))));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          if (text.trim() === '') return resolve({ status, body: {} });
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            return reject(badResponse(server, `answered ${status} with something that is not JSON`, { status }));
          }
          if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
            return reject(badResponse(server, `answered ${status} with JSON that is not an object`, { status }));
          }
          resolve({ status, body: parsed as Record<string, unknown> });
        });
      };
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(options, onAnswer);
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === PRIVATE_ADDRESS_CODE) reject(new RendezvousError('federation.bad_address', `${server} resolves to a non-public address`));
        else if (e.name === 'AbortError' || e.name === 'TimeoutError') reject(unreachable(`no answer within ${timeoutMs} ms`));
        else reject(unreachable(describe(e)));
      });
      req.end(body === null ? undefined : Buffer.from(body));
    });
  }

  // ---- inbound (§17.2) ----------------------------------------------------------------------

  /**
   * Checks a signed request, in the order of §17.2, and returns its origin and body bytes.
   * `maxBody` is the endpoint's cap. The origin's contact listeners run after it passed.
   */
  async authenticate(req: Request, maxBody: number): Promise<{ origin: string; body: Uint8Array }> {
    let body: Uint8Array = new Uint8Array(0);
    const origin = await this.check(req, async () => {
      body = await readBody(req, maxBody, this.ctx.limits.bodyTimeoutMs);
      return this.ctx.crypto.sha256(body);
    });
    return { origin, body };
  }

  /**
   * `authenticate` for a request whose body is streamed on afterwards (a file blob): the
   * signature is checked over `bodyHash`, which the caller MUST then hold the streamed bytes to
   * (for a blob, its id: the blob store refuses bytes whose SHA-256 is not the blob id).
   */
  async authenticateStreamed(req: Request, bodyHash: Uint8Array): Promise<{ origin: string }> {
    return { origin: await this.check(req, async () => bodyHash) };
  }

  /** The checks of §17.2 in order; `body` reads (or names) the body and returns its hash (rule 4). */
  private async check(req: Request, body: () => Promise<Uint8Array>): Promise<string> {
    // 1. headers
    const h = (name: string) => req.headers.get(name);
    const origin = h(FEDERATION_HEADERS.origin);
    const destination = h(FEDERATION_HEADERS.destination);
    const time = h(FEDERATION_HEADERS.time);
    const nonce = b64Header(h(FEDERATION_HEADERS.nonce), FEDERATION_NONCE_SIZE);
    const keyId = b64Header(h(FEDERATION_HEADERS.keyId), KEY_ID_SIZE);
    const signature = b64Header(h(FEDERATION_HEADERS.signature), 64);
    const url = new URL(req.url);
    const path = url.pathname + url.search;
    if (
      origin === null ||
      !isServerName(origin) ||
      destination === null ||
      !isServerName(destination) ||
      time === null ||
      !/^[0-9]{1,15}$/.test(time) ||
      nonce === null ||
      keyId === null ||
      signature === null ||
      !/^(GET|POST|PUT|DELETE)$/.test(req.method) ||
      new TextEncoder().encode(path).length > MAX_FEDERATION_PATH_BYTES
    ) {
      throw new RendezvousError('federation.unsigned', 'a server-to-server request needs the Rendezvous-Origin, -Destination, -Time, -Nonce, -Key-Id and -Signature headers');
    }
    // 2. refused origins
    if (!this.allowed(origin)) throw new RendezvousError('federation.refused', `federation with ${origin} is not allowed here`);
    // 3. rate per claimed origin
    this.ctx.rate.take('federation', origin);
    // 4. body cap
    const bodyHash = await body();
    // 5. destination
    if (destination !== this.ctx.name) {
      throw new RendezvousError('federation.wrong_destination', `this is ${this.ctx.name}, not ${destination}`);
    }
    // 6. time window and process start
    const timestamp = Number(time);
    const now = this.ctx.now();
    if (Math.abs(timestamp - now) > FEDERATION_LIMITS.windowMs || timestamp < this.startedAt) {
      throw new RendezvousError('federation.stale', `request time ${timestamp} is outside ±${FEDERATION_LIMITS.windowMs / 1000} s of ${now} or before this server started`);
    }
    // 7. the origin's key
    const publicKey = await this.keyFor(origin, keyId);
    // 8. signature, body hash included
    const r: FederationRequest = { origin, destination, method: req.method, path, timestamp, nonce, bodyHash, keyId };
    verifyFederationRequest(this.ctx.crypto, r, signature, publicKey);
    // 9. replay
    this.recordNonce(origin, nonce, now);
    for (const l of this.contactListeners) {
      try {
        l(origin);
      } catch (err) {
        this.ctx.log.warn({ err, origin }, 'federation: contact listener failed');
      }
    }
    return origin;
  }

  private recordNonce(origin: string, nonce: Uint8Array, now: number): void {
    for (const [k, until] of this.nonces) {
      if (until > now && this.nonces.size < FEDERATION_LIMITS.maxNonces) break;
      this.nonces.delete(k);
    }
    const key = `${origin} ${toBase64url(nonce)}`;
    if (this.nonces.has(key)) throw new RendezvousError('federation.replayed', `request nonce from ${origin} was already used`);
    // Kept until no request with this nonce can pass rule 6: its timestamp is ≤ now + window.
    this.nonces.set(key, now + 2 * FEDERATION_LIMITS.windowMs);
  }

  /** Calls `listener` with the origin of every request that authenticated; returns an unsubscribe. */
  onContact(listener: (origin: string) => void): () => void {
    this.contactListeners.add(listener);
    return () => this.contactListeners.delete(listener);
  }
}

/**
 * The headers of a signed request (§17.2) from `ctx`'s server. `timestamp` and `nonce` are for
 * tests that need a stale or repeated request; otherwise now and random.
 */
export function signedHeaders(
  ctx: Pick<Context, 'name' | 'crypto' | 'serverSeed' | 'now' | 'random'>,
  r: { destination: string; method: string; path: string; timestamp?: number; nonce?: Uint8Array } & ({ body: Uint8Array } | { bodyHash: Uint8Array }),
): Record<string, string> {
  const { request, signature } = signFederationRequest(ctx.crypto, ctx.serverSeed, {
    origin: ctx.name,
    destination: r.destination,
    method: r.method,
    path: r.path,
    timestamp: r.timestamp ?? ctx.now(),
    nonce: r.nonce ?? ctx.random(FEDERATION_NONCE_SIZE),
    bodyHash: 'bodyHash' in r ? r.bodyHash : ctx.crypto.sha256(r.body),
  });
  return {
    [FEDERATION_HEADERS.origin]: request.origin,
    [FEDERATION_HEADERS.destination]: request.destination,
    [FEDERATION_HEADERS.time]: String(request.timestamp),
    [FEDERATION_HEADERS.nonce]: toBase64url(request.nonce),
    [FEDERATION_HEADERS.keyId]: toBase64url(request.keyId),
    [FEDERATION_HEADERS.signature]: toBase64url(signature),
  };
}

/** The path and query as they go on the wire for `path` under `base` (normalised as the receiver's URL parser sees them). */
function pathAsSent(base: string, path: string): string {
  if (!path.startsWith('/')) throw new Error(`federation: request path must start with / (${path})`);
  const prefix = new URL(base).pathname.replace(/\/+$/, '');
  const u = new URL(prefix + path, base);
  return u.pathname + u.search;
}

function b64Header(v: string | null, size: number): Uint8Array | null {
  if (v === null || !/^[A-Za-z0-9_-]+$/.test(v)) return null;
  try {
    const b = fromBase64url(v);
    return b.length === size ? b : null;
  } catch {
    return null;
  }
}

function describe(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === undefined ? e.message : `${code} (${e.message})`;
}

/** Reads `/.well-known/rendezvous`: its `server` must be the name asked for. */
function parseDiscovery(server: string, body: Record<string, unknown>): PublishedServerKey[] {
  if (body.server !== server) throw badResponse(server, `/.well-known/rendezvous names "${String(body.server)}", not ${server}`);
  const key = (v: unknown, what: string): Uint8Array => {
    if (typeof v !== 'string') throw badResponse(server, `${what}: expected base64url`);
    try {
      return fromBase64url(v);
    } catch {
      throw badResponse(server, `${what}: expected base64url`);
    }
  };
  if (body.keys === undefined) return [{ publicKey: key(body.publicKey, 'publicKey'), createdAt: 0, endorsement: null }];
  if (!Array.isArray(body.keys) || body.keys.length === 0 || body.keys.length > 1000) throw badResponse(server, 'keys: expected a non-empty list');
  const keys = body.keys.map((k: unknown, i) => {
    if (typeof k !== 'object' || k === null) throw badResponse(server, `keys[${i}]: expected an object`);
    const o = k as Record<string, unknown>;
    if (!Number.isSafeInteger(o.createdAt) || (o.createdAt as number) < 0) throw badResponse(server, `keys[${i}].createdAt: expected an integer`);
    return {
      publicKey: key(o.publicKey, `keys[${i}].publicKey`),
      createdAt: o.createdAt as number,
      endorsement: o.endorsement === null || o.endorsement === undefined ? null : key(o.endorsement, `keys[${i}].endorsement`),
    };
  });
  if (typeof body.publicKey === 'string' && !equal(key(body.publicKey, 'publicKey'), keys.at(-1)!.publicKey)) {
    throw badResponse(server, 'publicKey is not the newest of keys');
  }
  return keys;
}
