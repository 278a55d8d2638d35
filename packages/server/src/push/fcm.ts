/**
 * Firebase Cloud Messaging, HTTP v1 API (docs/server.md §Push):
 * `POST /v1/projects/{projectId}/messages:send` with an OAuth 2.0 access token obtained from the
 * service account by the JWT bearer grant (RFC 7523), and a constant data-only message as the
 * wake-up.
 *
 * The endpoint and token URL are configured by the operator; a registration token only ever
 * goes into the JSON body, after strict validation, never into a URL.
 */
import { readFileSync } from 'node:fs';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { PushSubscriptionRow } from '../storage/store.ts';
import { FCM_DATA, PUSH_LIMITS, providerUrl, signJwt, type PushProvider, type SendResult } from './provider.ts';

export interface FcmServiceAccount {
  client_email: string;
  private_key: string;
  /** Default https://oauth2.googleapis.com/token. */
  token_uri?: string;
}

export interface FcmOptions {
  projectId: string;
  /** The service account's JSON key file (a path), or its parsed content. */
  serviceAccount: string | FcmServiceAccount;
  /** Default https://fcm.googleapis.com. */
  endpoint?: string;
}

export const FCM_ENDPOINT = 'https://fcm.googleapis.com';
export const GOOGLE_TOKEN_URI = 'https://oauth2.googleapis.com/token';
const SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
/** An access token is renewed this long before Google says it expires. */
const EARLY_MS = 5 * 60_000;

/** An FCM registration token: `[A-Za-z0-9_:-]`, at most 4,096 characters. */
export function isFcmToken(token: string): boolean {
  return token.length >= 1 && token.length <= PUSH_LIMITS.fcmTokenMax && /^[A-Za-z0-9_:-]+$/.test(token);
}

class HttpError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export class FcmProvider implements PushProvider {
  readonly kind = 'fcm' as const;
  private readonly key: KeyObject;
  private readonly email: string;
  private readonly tokenUrl: URL;
  private readonly sendUrl: URL;
  private access: { token: string; until: number } | null = null;
  private fetching: Promise<string> | null = null;

  constructor(
    o: FcmOptions,
    private readonly now: () => number,
  ) {
    if (typeof o.projectId !== 'string' || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(o.projectId)) throw new Error('push.fcm.projectId: expected a Firebase project id');
    let account: FcmServiceAccount;
    if (typeof o.serviceAccount === 'string') {
      try {
        account = JSON.parse(readFileSync(o.serviceAccount, 'utf8')) as FcmServiceAccount;
      } catch (e) {
        throw new Error(`push.fcm.serviceAccount: cannot read a JSON key file at ${o.serviceAccount}: ${(e as Error).message}`);
      }
    } else account = o.serviceAccount;
    if (typeof account?.client_email !== 'string' || !account.client_email.includes('@')) throw new Error('push.fcm.serviceAccount: no client_email');
    if (typeof account.private_key !== 'string') throw new Error('push.fcm.serviceAccount: no private_key');
    try {
      this.key = createPrivateKey(account.private_key);
    } catch (e) {
      throw new Error(`push.fcm.serviceAccount: private_key is not a PEM private key (${(e as Error).message})`);
    }
    if (this.key.asymmetricKeyType !== 'rsa') throw new Error('push.fcm.serviceAccount: private_key is not an RSA key (RS256)');
    this.email = account.client_email;
    this.tokenUrl = providerUrl(account.token_uri ?? GOOGLE_TOKEN_URI, 'push.fcm.serviceAccount.token_uri');
    const base = providerUrl(o.endpoint ?? FCM_ENDPOINT, 'push.fcm.endpoint');
    this.sendUrl = new URL(`${base.pathname.replace(/\/+$/, '')}/v1/projects/${o.projectId}/messages:send`, base.origin);
  }

  /** A cached access token, or a new one from the token endpoint (one request at a time). */
  private accessToken(signal: AbortSignal): Promise<string> {
    if (this.access !== null && this.now() < this.access.until) return Promise.resolve(this.access.token);
    this.fetching ??= this.fetchToken(signal).finally(() => (this.fetching = null));
    return this.fetching;
  }

  private async fetchToken(signal: AbortSignal): Promise<string> {
    const iat = Math.floor(this.now() / 1000);
    const assertion = signJwt(
      { alg: 'RS256', typ: 'JWT' },
      { iss: this.email, scope: SCOPE, aud: this.tokenUrl.href, iat, exp: iat + 3600 },
      this.key,
    );
    const res = await fetch(this.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString(),
      redirect: 'error',
      signal,
    });
    const text = await res.text();
    if (!res.ok) throw new HttpError(`FCM token endpoint answered ${res.status}`, 'EPUSHTOKENGRANT');
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new HttpError('FCM token endpoint answered no JSON', 'EPUSHTOKENGRANT');
    }
    if (typeof body.access_token !== 'string' || body.access_token === '' || /[\r\n]/.test(body.access_token)) {
      throw new HttpError('FCM token endpoint answered no access_token', 'EPUSHTOKENGRANT');
    }
    const lifetime = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 3600) * 1000;
    this.access = { token: body.access_token, until: this.now() + (lifetime > 2 * EARLY_MS ? lifetime - EARLY_MS : lifetime / 2) };
    return body.access_token;
  }

  async send(sub: PushSubscriptionRow, signal: AbortSignal): Promise<SendResult> {
    if (!isFcmToken(sub.endpoint)) throw new HttpError('not an FCM registration token', 'EPUSHTOKEN');
    let r = await this.post(sub.endpoint, signal);
    if (r.status === 401) {
      // The access token was revoked or expired early: a new one, then the same wake-up once more.
      if (this.access?.token === r.access) this.access = null;
      r = await this.post(sub.endpoint, signal);
    }
    return { outcome: fcmOutcome(r.status, r.reason), status: r.status, retryAfter: r.retryAfter, reason: r.reason };
  }

  private async post(token: string, signal: AbortSignal): Promise<{ status: number; reason?: string; retryAfter?: string; access: string }> {
    const access = await this.accessToken(signal);
    const res = await fetch(this.sendUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${access}`, 'content-type': 'application/json; charset=utf-8' },
      body: fcmBody(token),
      redirect: 'error',
      signal,
    });
    const text = (await res.text()).slice(0, 16_384);
    let reason: string | undefined;
    if (!res.ok) {
      try {
        const err = (JSON.parse(text) as { error?: { status?: unknown; details?: { errorCode?: unknown }[] } }).error;
        const code = err?.details?.find((d) => typeof d?.errorCode === 'string')?.errorCode;
        reason = typeof code === 'string' ? code.slice(0, 64) : typeof err?.status === 'string' ? err.status.slice(0, 64) : undefined;
      } catch {
        // Classified by status alone.
      }
    }
    return { status: res.status, reason, retryAfter: res.headers.get('retry-after') ?? undefined, access };
  }

  close(): void {}
}

/** The request body: a data-only message, the same for every push to a token. */
export function fcmBody(token: string): string {
  return JSON.stringify({ message: { token, data: FCM_DATA, android: { priority: 'high', ttl: `${PUSH_LIMITS.ttlSeconds}s` } } });
}

/** 200 sent; 404 or UNREGISTERED the token is dead; 429, 5xx retry; 401 (after one fresh access token) and anything else refused. */
function fcmOutcome(status: number, reason: string | undefined): SendResult['outcome'] {
  if (status === 200) return 'sent';
  if (status === 404 || reason === 'UNREGISTERED') return 'gone';
  if (status === 429 || status >= 500) return 'retry';
  return 'refused';
}
