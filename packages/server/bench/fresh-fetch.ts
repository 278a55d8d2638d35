/**
 * `fetch` over a connection of its own per request (node:http, no agent: `Connection: close`),
 * for section 8 of scale.ts (topic operations vs size).
 *
 * Why: building or applying a 10,000-member update blocks the runner's event loop for seconds.
 * Meanwhile the server closes the idle keep-alive sockets of the global fetch pool (its
 * keepAliveTimeout is 5 s), but the runner only learns of it once its loop runs again, and
 * fetch, called straight after the build, writes the next update on one of them: EPIPE or
 * UND_ERR_SOCKET "other side closed" ("fetch failed"). Sequential requests alternate between
 * two pooled sockets, so the one retry can land on the other dead socket and fail again, which
 * is how the 10,000-member row was lost. A fresh connection per operation cannot be stale, and
 * costs a loopback connect (well under a millisecond) against request times of 10–1,000 ms.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';

type Fetch = typeof globalThis.fetch;

function flatten(h: IncomingHttpHeaders): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    for (const x of Array.isArray(v) ? v : [v]) out.push([k, x]);
  }
  return out;
}

/** One request on a new connection; what the runner's helpers use of fetch (string or no body, plain-object headers). */
export function freshConnectionFetch(fallback: Fetch): Fetch {
  return (async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = typeof input === 'string' ? new URL(input) : input instanceof URL ? input : null;
    const body = init?.body;
    const plainHeaders = init?.headers === undefined || (typeof init.headers === 'object' && !(init.headers instanceof Headers) && !Array.isArray(init.headers));
    if (url === null || url.protocol !== 'http:' || (body !== undefined && body !== null && typeof body !== 'string') || !plainHeaders) {
      return fallback(input, init);
    }
    const headers: Record<string, string | number> = { ...((init?.headers as Record<string, string> | undefined) ?? {}) };
    if (typeof body === 'string') headers['content-length'] = Buffer.byteLength(body);
    return new Promise<Response>((resolve, reject) => {
      const req = httpRequest(url, { method: init?.method ?? 'GET', headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(Object.assign(new TypeError('fetch failed'), { cause: e })));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const nullBody = [101, 204, 205, 304].includes(status);
          resolve(new Response(nullBody ? null : Buffer.concat(chunks), { status, headers: flatten(res.headers) }));
        });
      });
      req.on('error', (e) => reject(Object.assign(new TypeError('fetch failed'), { cause: e })));
      req.end(typeof body === 'string' ? body : undefined);
    });
  }) as Fetch;
}

/** Runs `fn` with the global fetch replaced by freshConnectionFetch (restored after). */
export async function withFreshConnections<T>(fn: () => Promise<T>): Promise<T> {
  const original = globalThis.fetch;
  globalThis.fetch = freshConnectionFetch(original);
  try {
    return await fn();
  } finally {
    globalThis.fetch = original;
  }
}
