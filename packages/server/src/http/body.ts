/**
 * Request bodies at the edge: read with a byte cap enforced while streaming (never buffering
 * more than the cap), parse JSON, and pull typed fields out with `request.bad_field` errors
 * that name the field. Byte strings travel as unpadded base64url (RFC 4648 §5).
 */
import { IncomingMessage } from 'node:http';
import type { Context as HonoContext } from 'hono';
import { RendezvousError } from '@rendezvous/protocol';
import { LIMITS, readWithin } from '../limits.ts';

/**
 * Where a request's body is read from: the Node request itself when the node adapter hands one
 * over (`c.env.incoming`) and nothing has started reading it, which skips the Web stream the
 * adapter would build over it; otherwise (in-process `app.request`, or a body already being read
 * as a stream) the web-standard Request. The checks are the same either way.
 */
export type BodySource = Request | IncomingMessage;

export function bodySource(c: HonoContext): BodySource {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming;
  if (incoming instanceof IncomingMessage && !incoming.readableDidRead && incoming.readableFlowing === null && !incoming.destroyed) return incoming;
  return c.req.raw;
}

function tooLarge(maxBytes: number): RendezvousError {
  return new RendezvousError('request.too_large', `body larger than ${maxBytes} bytes`);
}

export async function readBody(src: BodySource, maxBytes: number, timeoutMs: number = LIMITS.bodyTimeoutMs): Promise<Uint8Array> {
  if (src instanceof IncomingMessage) return readIncoming(src, maxBytes, timeoutMs);
  const req = src;
  const declared = req.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  if (req.body === null) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { done, value } = await readWithin(reader, Math.max(1, deadline - Date.now()));
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/**
 * The body of a Node request, with the same checks as the Web-stream path: a declared length over
 * the cap is refused before reading, the cap is enforced as data arrives (nothing past it is
 * kept), and the whole body must arrive within `timeoutMs` (request.timeout). On a refusal the
 * request is left paused and unread, as a cancelled Web stream leaves it: the node adapter
 * drains or drops it once the answer is sent. A client that goes away mid-body rejects with the
 * stream's own error, as the Web stream does.
 *
 * Per request this costs a state object and four listeners (module functions, no closures); the
 * deadlines share one timer, armed for the earliest (see arm).
 */
function readIncoming(incoming: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<Uint8Array> {
  const declared = incoming.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) return Promise.reject(tooLarge(maxBytes));
  // The usual case for a small body sent with its headers: the parser has received all of it
  // (`complete`) and holds it unread, so nothing is left to wait for.
  if (incoming.complete && incoming.readableEncoding === null) {
    if (incoming.readableLength > maxBytes) return Promise.reject(tooLarge(maxBytes));
    const buffered = incoming.read() as Buffer | null;
    return Promise.resolve(buffered === null ? new Uint8Array(0) : new Uint8Array(buffered));
  }
  return new Promise<Uint8Array>((resolve, reject) => {
    const r: BodyRead = { incoming, maxBytes, timeoutMs, deadline: Date.now() + Math.max(1, timeoutMs), chunks: [], total: 0, resolve, reject };
    readers.set(incoming, r);
    reading.add(r);
    arm(r.deadline);
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onError);
    incoming.on('close', onClose);
  });
}

interface BodyRead {
  incoming: IncomingMessage;
  maxBytes: number;
  timeoutMs: number;
  deadline: number;
  chunks: Buffer[];
  total: number;
  resolve: (body: Uint8Array) => void;
  reject: (e: unknown) => void;
}

/** Bodies being read, by request (for the listeners) and all together (for the timer). */
const readers = new WeakMap<IncomingMessage, BodyRead>();
const reading = new Set<BodyRead>();
let timer: NodeJS.Timeout | undefined;
let timerAt = Infinity;

/** Makes sure the shared timer fires by `at`: re-armed only for an earlier deadline. */
function arm(at: number): void {
  if (timer !== undefined && timerAt <= at) return;
  if (timer !== undefined) clearTimeout(timer);
  timerAt = at;
  timer = setTimeout(expire, Math.max(1, at - Date.now()));
}

/** Cuts off every read past its deadline, then arms the timer for the earliest one left. */
function expire(): void {
  timer = undefined;
  timerAt = Infinity;
  const now = Date.now();
  let next = Infinity;
  for (const r of reading) {
    if (r.deadline <= now) settle(r, new RendezvousError('request.timeout', `no request data for ${r.timeoutMs / 1000} s`));
    else next = Math.min(next, r.deadline);
  }
  if (next !== Infinity) arm(next);
}

function settle(r: BodyRead, err: unknown, body?: Uint8Array): void {
  if (!reading.delete(r)) return;
  const incoming = r.incoming;
  readers.delete(incoming);
  incoming.off('data', onData);
  incoming.off('end', onEnd);
  incoming.off('error', onError);
  incoming.off('close', onClose);
  if (reading.size === 0 && timer !== undefined) {
    clearTimeout(timer);
    timer = undefined;
    timerAt = Infinity;
  }
  if (err !== undefined) {
    incoming.pause();
    r.reject(err);
  } else r.resolve(body!);
}

function onData(this: IncomingMessage, chunk: Buffer): void {
  const r = readers.get(this);
  if (r === undefined) return;
  r.total += chunk.length;
  if (r.total > r.maxBytes) settle(r, tooLarge(r.maxBytes));
  else r.chunks.push(chunk);
}

function onEnd(this: IncomingMessage): void {
  const r = readers.get(this);
  if (r === undefined) return;
  const out = new Uint8Array(r.total);
  let o = 0;
  for (const c of r.chunks) {
    out.set(c, o);
    o += c.length;
  }
  settle(r, undefined, out);
}

function onError(this: IncomingMessage, e: Error): void {
  const r = readers.get(this);
  if (r !== undefined) settle(r, e);
}

function onClose(this: IncomingMessage): void {
  const r = readers.get(this);
  if (r !== undefined && !this.readableEnded) settle(r, this.errored ?? new Error('Client connection prematurely closed.'));
}

export type Json = Record<string, unknown>;

export async function readJson(src: BodySource, maxBytes: number, timeoutMs?: number): Promise<Json> {
  return (await readJsonBytes(src, maxBytes, timeoutMs)).json;
}

/** readJson that also returns the raw bytes (what an idempotency record hashes). */
export async function readJsonBytes(src: BodySource, maxBytes: number, timeoutMs?: number): Promise<{ json: Json; bytes: Uint8Array }> {
  const bytes = await readBody(src, maxBytes, timeoutMs);
  return { json: parseJsonObject(bytes), bytes };
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** A body already read (and, for a signed request, verified) as a JSON object. */
export function parseJsonObject(bytes: Uint8Array): Json {
  let value: unknown;
  try {
    value = JSON.parse(utf8Strict.decode(bytes));
  } catch {
    throw new RendezvousError('request.bad_json');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RendezvousError('request.bad_json', 'body must be a JSON object');
  }
  return value as Json;
}

function bad(field: string, what: string): RendezvousError {
  return new RendezvousError('request.bad_field', `${field}: ${what}`, { field });
}

export function str(body: Json, field: string, maxLength = 1024): string {
  const v = body[field];
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLength) throw bad(field, 'expected a non-empty string');
  return v;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/**
 * Strict unpadded base64url, as protocol's fromBase64url (the alphabet only, no padding, no
 * length ≡ 1 mod 4, canonical trailing bits), decoded by Buffer: into a fresh Uint8Array.
 */
export function b64(body: Json, field: string, maxBytes = 1 << 24): Uint8Array {
  const v = body[field];
  if (typeof v !== 'string' || v.length > Math.ceil((maxBytes * 4) / 3) + 4) throw bad(field, 'expected base64url');
  if (!B64URL.test(v) || v.length % 4 === 1) throw bad(field, 'expected base64url');
  const decoded = Buffer.from(v, 'base64url');
  if (decoded.toString('base64url') !== v) throw bad(field, 'expected base64url');
  return new Uint8Array(decoded);
}

export function optInt(body: Json, field: string): number | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad(field, 'expected an integer');
  return v;
}

export function int(body: Json, field: string): number {
  const v = optInt(body, field);
  if (v === undefined) throw bad(field, 'expected an integer');
  return v;
}

export function b64List(body: Json, field: string, maxItems: number): Uint8Array[] {
  const v = body[field];
  if (!Array.isArray(v) || v.length > maxItems) throw bad(field, `expected a list of at most ${maxItems} base64url strings`);
  return v.map((_, i) => b64(v as unknown as Json, String(i)));
}

export function objList(body: Json, field: string, maxItems: number): Json[] {
  const v = body[field] ?? [];
  if (!Array.isArray(v) || v.length > maxItems || !v.every((x) => typeof x === 'object' && x !== null && !Array.isArray(x))) {
    throw bad(field, `expected a list of at most ${maxItems} objects`);
  }
  return v as Json[];
}
