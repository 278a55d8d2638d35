/**
 * What every push provider (Web Push, APNs, FCM) shares with the dispatcher in ../push.ts
 * (docs/server.md §Push): the provider interface, the constant wake-ups, and small helpers for
 * operator-configured endpoints and JWTs.
 *
 * A provider only knows how to send one wake-up to one subscription and how to read the
 * answer; the dispatcher owns everything else (coalescing, queue, concurrency, timeouts,
 * retries with back-off, removal), so the rules are the same for all providers.
 */
import { readFileSync } from 'node:fs';
import { sign, type KeyObject } from 'node:crypto';
import type { PushSubscriptionRow } from '../storage/store.ts';
import { hostOf, isLoopbackHost } from '../net-guard.ts';

export type PushKind = PushSubscriptionRow['kind'];
export const PUSH_KINDS: readonly PushKind[] = ['webpush', 'apns', 'fcm'];

export const PUSH_LIMITS = {
  subscriptionsPerDevice: 5,
  /** Real endpoints are 150–400 characters. */
  endpointMaxLength: 1024,
  /** APNs device tokens: hex, 32 bytes today, up to 100 bytes allowed for. */
  apnsTokenMin: 64,
  apnsTokenMax: 200,
  /** FCM registration tokens: about 160 characters today. */
  fcmTokenMax: 4096,
  /** Size of the plaintext wake-up before encryption (RFC 8291 adds a constant 103 bytes). */
  payloadBytes: 64,
  /** How long a push service keeps an undelivered wake-up (RFC 8030 TTL, seconds). */
  ttlSeconds: 24 * 60 * 60,
} as const;

/** Pads `{...fields, [pad]: ""}` with spaces in `pad` to exactly `bytes` bytes of JSON. */
function padded(fields: Record<string, unknown>, pad: string, bytes: number): Buffer {
  const base = JSON.stringify({ ...fields, [pad]: '' });
  return Buffer.from(JSON.stringify({ ...fields, [pad]: ' '.repeat(bytes - base.length) }), 'utf8');
}

/**
 * The one Web Push payload: `{"v":1,"t":"wake","p":"…"}` padded with spaces in `p` to
 * PUSH_LIMITS.payloadBytes. Always the same bytes, so its ciphertext always has the same size.
 */
export const WAKE_PAYLOAD: Buffer = padded({ v: 1, t: 'wake' }, 'p', PUSH_LIMITS.payloadBytes);

/**
 * The one APNs payload: a background notification (`content-available: 1`, no alert, sound
 * or badge) with a fixed filler field `p` of spaces, PUSH_LIMITS.payloadBytes in all.
 */
export const APNS_PAYLOAD: Buffer = padded({ aps: { 'content-available': 1 } }, 'p', PUSH_LIMITS.payloadBytes);

/** The one FCM data payload: a single key `w` whose value is 32 spaces. */
export const FCM_DATA: Readonly<Record<string, string>> = Object.freeze({ w: ' '.repeat(32) });

/** What one send came to, as the dispatcher acts on it. */
export interface SendResult {
  /**
   * `sent` done; `gone` the subscription will never work again and is deleted; `retry` try
   * again later (429, 5xx); `refused` any other answer, logged and dropped.
   */
  outcome: 'sent' | 'gone' | 'retry' | 'refused';
  /** The HTTP status (for logs). */
  status: number;
  /** The provider's Retry-After, seconds as sent. */
  retryAfter?: string;
  /** The provider's reason (APNs `reason`, FCM error code), for logs. */
  reason?: string;
}

/**
 * A push provider. `send` delivers the provider's constant wake-up to one subscription and
 * classifies the answer; it rejects on a network error or when `signal` aborts (the
 * dispatcher's timeout or shutdown), which the dispatcher retries like a 5xx.
 */
export interface PushProvider {
  readonly kind: PushKind;
  send(sub: PushSubscriptionRow, signal: AbortSignal): Promise<SendResult>;
  close(): void;
}

/**
 * Checks an operator-configured provider URL: `https:`, or `http:` on a loopback host only (a
 * local stand-in in development and tests). Returns it without a trailing slash.
 */
export function providerUrl(value: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${what}: not an absolute URL`);
  }
  if (url.username !== '' || url.password !== '') throw new Error(`${what}: must not carry credentials`);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(hostOf(url)))) {
    throw new Error(`${what}: expected an https URL (http only on a loopback host, for a local stand-in)`);
  }
  return url;
}

/** A PEM given inline or as a path to a file holding it. */
export function readPem(value: string, what: string): string {
  if (value.includes('-----BEGIN')) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (e) {
    throw new Error(`${what}: cannot read ${value}: ${(e as Error).message}`);
  }
}

/** A compact JWS (RFC 7515) over JSON header and claims: ES256 (IEEE P1363 signature) or RS256. */
export function signJwt(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const sig = header.alg === 'ES256' ? sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }) : sign('sha256', Buffer.from(input), key);
  return `${input}.${sig.toString('base64url')}`;
}
