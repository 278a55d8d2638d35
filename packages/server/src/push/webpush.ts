/**
 * Web Push (RFC 8030) with VAPID (RFC 8292) and payloads encrypted for the browser (RFC 8291),
 * through `web-push` (docs/server.md §Push).
 *
 * Endpoints are capability URLs (whoever knows one can push to that browser): only their
 * origin is ever logged. They are sent to over HTTPS only, and never to a private, loopback or
 * otherwise non-public address (no request forgery through a subscription), checked when a
 * subscription is added and again at every connection; `allowInsecure` lifts both rules for
 * development and tests and is never the default.
 */
import { createRequire } from 'node:module';
import { request as httpRequest, type ClientRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { ECDH } from 'node:crypto';
import { RendezvousError, fromBase64url } from '@rendezvous/protocol';
import type { PushSubscriptionRow } from '../storage/store.ts';
import { hostOf, isNonPublicAddress, publicLookup, resolveAll } from '../net-guard.ts';
import { PUSH_LIMITS, WAKE_PAYLOAD, type PushProvider, type SendResult } from './provider.ts';

// web-push ships no types; this is the part of its API used here.
interface WebPushLib {
  generateVAPIDKeys(): { publicKey: string; privateKey: string };
  generateRequestDetails(
    subscription: { endpoint: string; keys: { p256dh: string; auth: string } },
    payload: Buffer,
    options: {
      vapidDetails: { subject: string; publicKey: string; privateKey: string };
      TTL: number;
      urgency: 'very-low' | 'low' | 'normal' | 'high';
      topic: string;
      timeout: number;
    },
  ): { method: string; headers: Record<string, string | number>; body: Buffer | null; endpoint: string };
}
export const webpush = createRequire(import.meta.url)('web-push') as WebPushLib;

/** RFC 8030 §5.4: a push service replaces an undelivered message with the same topic by the new one. */
const PUSH_TOPIC = 'wake';

function badEndpoint(why: string): RendezvousError {
  return new RendezvousError('push.bad_endpoint', `endpoint: ${why}`, { field: 'endpoint' });
}

/**
 * Checks an endpoint: an absolute https URL without credentials whose host is, or resolves
 * only to, public addresses. With `allowInsecure`, http and any address are accepted.
 */
export async function checkEndpoint(endpoint: string, allowInsecure: boolean, resolve = resolveAll): Promise<URL> {
  if (endpoint.length > PUSH_LIMITS.endpointMaxLength) throw badEndpoint(`longer than ${PUSH_LIMITS.endpointMaxLength} characters`);
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw badEndpoint('not an absolute URL');
  }
  if (url.protocol !== 'https:' && !(allowInsecure && url.protocol === 'http:')) throw badEndpoint('must be an https URL');
  if (url.username !== '' || url.password !== '') throw badEndpoint('must not carry credentials');
  if (allowInsecure) return url;
  const host = hostOf(url);
  let addresses: string[];
  if (isIP(host) !== 0) addresses = [host];
  else {
    try {
      addresses = await resolve(host);
    } catch {
      throw badEndpoint('host does not resolve');
    }
  }
  if (addresses.length === 0 || addresses.some(isNonPublicAddress)) throw badEndpoint('host is not a public address');
  return url;
}

/** The subscription keys: an uncompressed P-256 point and a 16-byte secret (RFC 8291 §3). */
export function checkKeys(p256dh: string, auth: string): void {
  let key: Uint8Array;
  let secret: Uint8Array;
  try {
    key = fromBase64url(p256dh.replace(/=+$/, ''));
    secret = fromBase64url(auth.replace(/=+$/, ''));
  } catch {
    throw new RendezvousError('push.bad_keys', 'keys: expected base64url');
  }
  if (key.length !== 65 || key[0] !== 4 || secret.length !== 16) throw new RendezvousError('push.bad_keys');
  try {
    ECDH.convertKey(Buffer.from(key), 'prime256v1', undefined, undefined, 'uncompressed');
  } catch {
    throw new RendezvousError('push.bad_keys', 'keys.p256dh: not a point on P-256');
  }
}

/** An endpoint as it may be logged: its origin only (the path is the capability). */
export function endpointOrigin(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    return '(invalid)';
  }
}

export class WebPushProvider implements PushProvider {
  readonly kind = 'webpush' as const;

  constructor(
    private readonly o: {
      /** VAPID `sub` claim. */
      contact: string;
      publicKey: string;
      privateKey: string;
      allowInsecure: boolean;
      timeoutMs: number;
    },
  ) {}

  /** One POST to the push service: the encrypted wake-up with its VAPID Authorization. */
  send(sub: PushSubscriptionRow, signal: AbortSignal): Promise<SendResult> {
    const details = webpush.generateRequestDetails({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } }, WAKE_PAYLOAD, {
      vapidDetails: { subject: this.o.contact, publicKey: this.o.publicKey, privateKey: this.o.privateKey },
      TTL: PUSH_LIMITS.ttlSeconds,
      urgency: 'high',
      topic: PUSH_TOPIC,
      timeout: this.o.timeoutMs,
    });
    const url = new URL(sub.endpoint);
    const host = hostOf(url);
    // Re-checked at every send: the row may predate a configuration change.
    if (!this.o.allowInsecure && (url.protocol !== 'https:' || (isIP(host) !== 0 && isNonPublicAddress(host)))) {
      return Promise.reject(Object.assign(new Error('push endpoint is not public https'), { code: 'EPUSHPRIVATE' }));
    }
    const options: RequestOptions = {
      hostname: host,
      port: url.port === '' ? undefined : Number(url.port),
      path: url.pathname + url.search,
      method: 'POST',
      headers: details.headers,
      timeout: this.o.timeoutMs,
      signal,
      lookup: this.o.allowInsecure ? undefined : (publicLookup as RequestOptions['lookup']),
    };
    return new Promise((resolve, reject) => {
      const req: ClientRequest = (url.protocol === 'https:' ? httpsRequest : httpRequest)(options, (res) => {
        // The answer's body is of no use; read (and drop) it so the socket is freed.
        res.on('data', () => undefined);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const retryAfter = typeof res.headers['retry-after'] === 'string' ? res.headers['retry-after'] : undefined;
          resolve({ outcome: webPushOutcome(status), status, retryAfter });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('push send timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', reject);
      req.end(details.body ?? undefined);
    });
  }

  close(): void {}
}

/** 2xx sent; 404/410 the browser unsubscribed or the subscription expired; 429/5xx retry. */
function webPushOutcome(status: number): SendResult['outcome'] {
  if (status >= 200 && status < 300) return 'sent';
  if (status === 404 || status === 410) return 'gone';
  if (status === 429 || status >= 500) return 'retry';
  return 'refused';
}
