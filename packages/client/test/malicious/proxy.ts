/**
 * A malicious server for tests: an HTTP proxy in front of a real Rendezvous server that lies to
 * chosen users. It forwards every request unchanged (method, path, headers, body; WebSocket
 * upgrades and blobs are streamed through) unless a fault hook is installed for the caller,
 * whom it knows by the session token it saw the server hand out (`POST /v1/auth/session`).
 *
 * Hooks can:
 * - serve an alternative history of a topic (`history`): the proxy fetches the real log, lets
 *   the hook return another list of entries (dropped, reordered, replayed, forged, a branch of
 *   a fork, a rolled-back prefix…), answers the caller's page from it, and signs its checkpoint
 *   with the server's own key, as an operator could. Only the client's own verification of the
 *   log can catch such a lie;
 * - rewrite any JSON answer (`rewrite`): entries pages, events, device lists, key bundles,
 *   topic-key claims, submission answers;
 * - answer a request themselves (`intercept`), e.g. keep a message in a forked branch instead
 *   of forwarding it.
 *
 * Every hook that actually changes something counts as `fired`, so a test can tell a fault that
 * was injected and missed from one that never took effect.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import {
  MemoryLog,
  decodeLogEntry,
  encodeCheckpoint,
  encodeLogEntry,
  equal,
  fromBase64url,
  signCheckpoint,
  toBase64url,
  type EntryType,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';

export type Route = 'entries' | 'events' | 'devices' | 'bundles' | 'claim' | 'message' | 'update' | 'session' | 'topics' | 'topic' | 'servers' | 'other';

/** A request as hooks see it. `user` is the caller (null before it has a session). */
export interface ProxyRequest {
  method: string;
  route: Route;
  path: string;
  query: URLSearchParams;
  user: string | null;
  /** The topic (base64url id) of a topic route. */
  topic?: string;
  /** The user whose topic key is claimed, or the server whose keys are asked for (`servers`). */
  target?: string;
  body: Buffer;
}

export interface Hooks {
  /** Another history of `topic` for this user (full list of encoded LogEntries), or null for the real one. */
  history?(topic: string, real: Uint8Array[]): Uint8Array[] | null;
  /** Sign the served history's checkpoint even when it equals the real log (honest control runs). */
  resign?: boolean;
  /** Rewrites the JSON answer of a 2xx; returns undefined to leave it. */
  rewrite?(req: ProxyRequest, body: any): any;
  /** Answers without forwarding; undefined to forward. */
  intercept?(req: ProxyRequest): { status: number; body: unknown } | undefined;
  /** Replaces the status of a forwarded 2xx (after `rewrite`), e.g. 202 for a post the server did append. */
  status?(req: ProxyRequest, body: any): number | undefined;
}

/** Signs what the server's key can sign: checkpoints over any list of entries. */
export class Forger {
  constructor(
    readonly seed: Uint8Array,
    readonly origin: string,
  ) {}

  checkpoint(topic: string, entries: readonly Uint8Array[]): string {
    const log = new MemoryLog(crypto);
    for (const e of entries) log.append(e);
    const cp = signCheckpoint(crypto, this.seed, { origin: this.origin, topicId: fromBase64url(topic), size: log.size, root: log.root(), timestamp: Date.now() });
    return toBase64url(encodeCheckpoint(cp));
  }

  /** A LogEntry with a host timestamp not before the last entry of `after` (so the forgery is not a mere log.reorder). */
  entry(type: EntryType, body: Uint8Array, after: readonly Uint8Array[]): Uint8Array {
    const last = after.length === 0 ? 0 : decodeLogEntry(after[after.length - 1]!).timestamp;
    return encodeLogEntry({ type, timestamp: Math.max(last, Date.now()), body });
  }
}

const ROUTES: [Route, string, RegExp][] = [
  ['entries', 'GET', /^\/v1\/topics\/([^/]+)\/entries$/],
  ['events', 'GET', /^\/v1\/events$/],
  ['devices', 'GET', /^\/v1\/devices$/],
  ['bundles', 'GET', /^\/v1\/bundles$/],
  ['claim', 'POST', /^\/v1\/users\/([^/]+)\/topic-keys\/claim$/],
  ['message', 'POST', /^\/v1\/topics\/([^/]+)\/messages$/],
  ['update', 'POST', /^\/v1\/topics\/([^/]+)\/updates$/],
  ['session', 'POST', /^\/v1\/auth\/session$/],
  ['topics', 'GET', /^\/v1\/topics$/],
  ['topic', 'GET', /^\/v1\/topics\/([^/]+)$/],
  ['servers', 'GET', /^\/v1\/servers\/([^/]+)$/],
];

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'upgrade']);

export class MaliciousProxy {
  readonly forger: Forger;
  private server: Server | null = null;
  private readonly tokens = new Map<string, string>();
  private readonly hooks = new Map<string, Hooks>();
  private readonly firedBy = new Map<string, number>();
  /** Every real checkpoint that passed through, by topic (a rollback can serve an old one). */
  readonly checkpoints = new Map<string, string[]>();
  url = '';

  constructor(
    private readonly upstream: URL,
    serverSeed: Uint8Array,
    serverName: string,
  ) {
    this.forger = new Forger(serverSeed, serverName);
  }

  async listen(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'server.internal', message: `proxy: ${String(e)}` } }));
      });
    });
    this.server.on('upgrade', (req, socket, head) => {
      // WebSockets pass through untouched: the raw request goes upstream, then bytes both ways.
      const up = connect(Number(this.upstream.port), this.upstream.hostname, () => {
        const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
        up.write(lines.join('\r\n') + '\r\n\r\n');
        up.write(head);
        socket.pipe(up).pipe(socket);
      });
      up.on('error', () => socket.destroy());
      socket.on('error', () => up.destroy());
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    const addr = this.server.address() as { port: number };
    this.url = `http://127.0.0.1:${addr.port}`;
    return this.url;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server === null ? r() : this.server.close(() => r())));
  }

  /** Installs (replaces) the hooks for `user`'s requests. */
  attack(user: string, hooks: Hooks): void {
    this.hooks.set(user, hooks);
  }
  /** Stops lying to everyone. */
  reset(): void {
    this.hooks.clear();
    this.firedBy.clear();
  }
  /** How many answers the hooks changed for `user` (all users without an argument). */
  fired(user?: string): number {
    if (user !== undefined) return this.firedBy.get(user) ?? 0;
    let n = 0;
    for (const v of this.firedBy.values()) n += v;
    return n;
  }
  private fire(user: string | null): void {
    if (user !== null) this.firedBy.set(user, (this.firedBy.get(user) ?? 0) + 1);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://proxy');
    let route: Route = 'other';
    let param: string | undefined;
    for (const [r, method, re] of ROUTES) {
      const m = re.exec(url.pathname);
      if (m !== null && req.method === method) {
        route = r;
        param = m[1] === undefined ? undefined : decodeURIComponent(m[1]);
        break;
      }
    }
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const user = token === undefined ? null : (this.tokens.get(token) ?? null);
    const hooks = user === null ? undefined : this.hooks.get(user);
    if (route === 'other') return this.stream(req, res);

    const body = await readAll(req);
    const r: ProxyRequest = { method: req.method!, route, path: url.pathname, query: url.searchParams, user, body };
    if (route === 'claim' || route === 'servers') r.target = param;
    else if (param !== undefined) r.topic = param;

    const own = hooks?.intercept?.(r);
    if (own !== undefined) {
      this.fire(user);
      return send(res, own.status, {}, own.body);
    }

    const served = route === 'entries' && hooks?.history !== undefined;
    const answer = served ? await this.servedHistory(req, r, hooks!) : await this.forward(req, url.pathname + url.search, body);
    if (answer.status >= 300 || !String(answer.headers['content-type'] ?? '').includes('json')) {
      return send(res, answer.status, answer.headers, answer.raw);
    }
    let json = JSON.parse(answer.raw.toString('utf8'));
    if (route === 'session' && typeof json.token === 'string') this.tokens.set(json.token, json.user);
    if (!served && r.topic !== undefined && typeof json.checkpoint === 'string') this.remember(r.topic, json.checkpoint);
    const rewritten = hooks?.rewrite?.(r, json);
    if (rewritten !== undefined) {
      this.fire(user);
      json = rewritten;
    }
    const status = hooks?.status?.(r, json);
    if (status !== undefined) this.fire(user);
    return send(res, status ?? answer.status, answer.headers, json);
  }

  /** An entries page from the hook's history, with a checkpoint over that history. */
  private async servedHistory(req: IncomingMessage, r: ProxyRequest, hooks: Hooks): Promise<Answer> {
    const real = await this.forward(req, `/v1/topics/${r.topic}/entries?from=0&limit=1000`, Buffer.alloc(0));
    if (real.status !== 200) return real;
    const json = JSON.parse(real.raw.toString('utf8')) as { entries: { index: number; entry: string }[]; checkpoint: string };
    this.remember(r.topic!, json.checkpoint);
    const entries = json.entries.map((e) => fromBase64url(e.entry));
    const served = hooks.history!(r.topic!, entries) ?? entries;
    const changed = served.length !== entries.length || served.some((e, i) => !equal(e, entries[i]!));
    if (changed) this.fire(r.user);
    const from = Number(r.query.get('from') ?? 0);
    const limit = Math.min(Math.max(1, Number(r.query.get('limit') ?? 100)), 1000);
    const page = served.slice(from, from + limit).map((e, i) => ({ index: from + i, type: entryType(e), entry: toBase64url(e) }));
    const checkpoint = changed || hooks.resign === true ? this.forger.checkpoint(r.topic!, served) : json.checkpoint;
    return { status: 200, headers: real.headers, raw: Buffer.from(JSON.stringify({ entries: page, checkpoint })) };
  }

  private remember(topic: string, checkpoint: string): void {
    const seen = this.checkpoints.get(topic) ?? [];
    if (!seen.includes(checkpoint)) seen.push(checkpoint);
    this.checkpoints.set(topic, seen);
  }

  private forward(req: IncomingMessage, path: string, body: Buffer): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const headers: IncomingMessage['headers'] = { ...req.headers, host: this.upstream.host };
      delete headers['transfer-encoding'];
      if (req.method === 'GET' || req.method === 'HEAD') delete headers['content-length'];
      else headers['content-length'] = String(body.length);
      const up = request({ hostname: this.upstream.hostname, port: this.upstream.port, method: req.method, path, headers }, (res) => {
        readAll(res).then((raw) => resolve({ status: res.statusCode ?? 502, headers: res.headers, raw }), reject);
      });
      up.on('error', reject);
      up.end(body);
    });
  }

  /** Everything without a hook route goes through as a stream (blobs, admin, keys…). */
  private stream(req: IncomingMessage, res: ServerResponse): void {
    const up = request(
      { hostname: this.upstream.hostname, port: this.upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: this.upstream.host } },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  }
}

interface Answer {
  status: number;
  headers: IncomingMessage['headers'];
  raw: Buffer;
}

function entryType(e: Uint8Array): EntryType {
  try {
    return decodeLogEntry(e).type;
  } catch {
    return 'message'; // a forged entry that does not even decode: the client's decoder says so
  }
}

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function send(res: ServerResponse, status: number, upstreamHeaders: IncomingMessage['headers'], body: unknown): void {
  const raw = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(upstreamHeaders)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
  if (!Buffer.isBuffer(body)) headers['content-type'] = 'application/json';
  headers['content-length'] = String(raw.length);
  res.writeHead(status, headers);
  res.end(raw);
}
