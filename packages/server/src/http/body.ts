/**
 * Request bodies at the edge: read with a byte cap enforced while streaming (never buffering
 * more than the cap), parse JSON, and pull typed fields out with `request.bad_field` errors
 * that name the field. Byte strings travel as unpadded base64url (RFC 4648 §5).
 */
import { RendezvousError, fromBase64url } from '@rendezvous/protocol';
import { LIMITS, readWithin } from '../limits.ts';

export async function readBody(req: Request, maxBytes: number, timeoutMs: number = LIMITS.bodyTimeoutMs): Promise<Uint8Array> {
  const declared = req.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    throw new RendezvousError('request.too_large', `body larger than ${maxBytes} bytes`);
  }
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
      throw new RendezvousError('request.too_large', `body larger than ${maxBytes} bytes`);
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

export type Json = Record<string, unknown>;

export async function readJson(req: Request, maxBytes: number, timeoutMs?: number): Promise<Json> {
  return (await readJsonBytes(req, maxBytes, timeoutMs)).json;
}

/** readJson that also returns the raw bytes (what an idempotency record hashes). */
export async function readJsonBytes(req: Request, maxBytes: number, timeoutMs?: number): Promise<{ json: Json; bytes: Uint8Array }> {
  const bytes = await readBody(req, maxBytes, timeoutMs);
  return { json: parseJsonObject(bytes), bytes };
}

/** A body already read (and, for a signed request, verified) as a JSON object. */
export function parseJsonObject(bytes: Uint8Array): Json {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
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

export function b64(body: Json, field: string, maxBytes = 1 << 24): Uint8Array {
  const v = body[field];
  if (typeof v !== 'string' || v.length > Math.ceil((maxBytes * 4) / 3) + 4) throw bad(field, 'expected base64url');
  try {
    return fromBase64url(v);
  } catch {
    throw bad(field, 'expected base64url');
  }
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
