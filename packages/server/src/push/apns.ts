/**
 * Apple Push Notification service, provider API over HTTP/2 with token-based authentication
 * (docs/server.md §Push): `POST /3/device/{token}` with an ES256 JWT signed by the team's
 * APNs key, and a constant background notification as the wake-up.
 *
 * The endpoint is configured by the operator; a device token only ever goes into the path,
 * after strict validation (hex), never into a host name.
 */
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { PushSubscriptionRow } from '../storage/store.ts';
import { APNS_PAYLOAD, PUSH_LIMITS, providerUrl, readPem, signJwt, type PushProvider, type SendResult } from './provider.ts';

export interface ApnsOptions {
  /** The 10-character Team ID (JWT `iss`). */
  teamId: string;
  /** The 10-character Key ID of the APNs auth key (JWT header `kid`). */
  keyId: string;
  /** The APNs auth key (.p8, a P-256 key in PKCS #8 PEM): inline PEM or a path to the file. */
  privateKey: string;
  /** The app's bundle id (`apns-topic`). */
  bundleId: string;
  /** Default https://api.push.apple.com; the sandbox is https://api.sandbox.push.apple.com. */
  endpoint?: string;
}

export const APNS_PRODUCTION = 'https://api.push.apple.com';
export const APNS_SANDBOX = 'https://api.sandbox.push.apple.com';
/** Apple accepts a provider token for an hour and refuses refreshing more than every 20 minutes. */
const JWT_REUSE_MS = 50 * 60 * 1000;

/** An APNs device token: hex, 64–200 characters (32 bytes today). */
export function isApnsToken(token: string): boolean {
  return token.length >= PUSH_LIMITS.apnsTokenMin && token.length <= PUSH_LIMITS.apnsTokenMax && /^[0-9a-fA-F]+$/.test(token);
}

export class ApnsProvider implements PushProvider {
  readonly kind = 'apns' as const;
  private readonly key: KeyObject;
  private readonly url: URL;
  private jwt: { token: string; at: number } | null = null;
  private session: ClientHttp2Session | null = null;

  constructor(
    private readonly o: ApnsOptions,
    private readonly now: () => number,
  ) {
    for (const k of ['teamId', 'keyId', 'bundleId'] as const) {
      if (typeof o[k] !== 'string' || !/^[A-Za-z0-9._-]{1,255}$/.test(o[k])) throw new Error(`push.apns.${k}: expected a non-empty identifier`);
    }
    this.url = providerUrl(o.endpoint ?? APNS_PRODUCTION, 'push.apns.endpoint');
    try {
      this.key = createPrivateKey(readPem(o.privateKey, 'push.apns.privateKey'));
    } catch (e) {
      throw new Error(`push.apns.privateKey: not a PEM private key (${(e as Error).message})`);
    }
    if (this.key.asymmetricKeyType !== 'ec' || this.key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new Error('push.apns.privateKey: expected a P-256 (ES256) key, as Apple issues');
    }
  }

  /** The provider token, reused for up to 50 minutes: `{alg: ES256, kid}` and `{iss: teamId, iat}`. */
  private providerToken(): string {
    const now = this.now();
    if (this.jwt === null || now - this.jwt.at >= JWT_REUSE_MS || now < this.jwt.at) {
      this.jwt = { token: signJwt({ alg: 'ES256', kid: this.o.keyId }, { iss: this.o.teamId, iat: Math.floor(now / 1000) }, this.key), at: now };
    }
    return this.jwt.token;
  }

  private connection(): ClientHttp2Session {
    if (this.session !== null && !this.session.closed && !this.session.destroyed) return this.session;
    const session = connect(this.url.origin);
    session.on('error', () => undefined); // each request sees its own error
    const drop = () => {
      if (this.session === session) this.session = null;
    };
    session.on('close', drop);
    session.on('goaway', drop);
    // An idle connection does not keep the process alive; Apple closes idle ones anyway.
    session.setTimeout(5 * 60_000, () => session.close());
    session.unref();
    this.session = session;
    return session;
  }

  async send(sub: PushSubscriptionRow, signal: AbortSignal): Promise<SendResult> {
    let r = await this.post(sub.endpoint, signal);
    if (r.status === 403 && r.reason === 'ExpiredProviderToken') {
      // A new provider token, then the same wake-up once more.
      if (this.jwt?.token === r.jwt) this.jwt = null;
      r = await this.post(sub.endpoint, signal);
    }
    return { outcome: apnsOutcome(r.status, r.reason), status: r.status, retryAfter: r.retryAfter, reason: r.reason };
  }

  private post(token: string, signal: AbortSignal): Promise<{ status: number; reason?: string; retryAfter?: string; jwt: string }> {
    if (!isApnsToken(token)) return Promise.reject(Object.assign(new Error('not an APNs device token'), { code: 'EPUSHTOKEN' }));
    const jwt = this.providerToken();
    const session = this.connection();
    const base = this.url.pathname.replace(/\/+$/, '');
    return new Promise((resolve, reject) => {
      const stream = session.request(
        {
          ':method': 'POST',
          ':path': `${base}/3/device/${token}`,
          authorization: `bearer ${jwt}`,
          'apns-topic': this.o.bundleId,
          'apns-push-type': 'background',
          'apns-priority': '5',
          'apns-expiration': String(Math.floor(this.now() / 1000) + PUSH_LIMITS.ttlSeconds),
          'content-type': 'application/json',
          'content-length': String(APNS_PAYLOAD.length),
        },
        { signal },
      );
      let headers: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('response', (h) => (headers = h));
      stream.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= 4096) chunks.push(c);
      });
      stream.on('end', () => {
        const status = Number(headers[':status'] ?? 0);
        let reason: string | undefined;
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { reason?: unknown };
          if (typeof body.reason === 'string') reason = body.reason.slice(0, 64);
        } catch {
          // 200 has no body; anything else without a JSON reason is classified by status.
        }
        const ra = headers['retry-after'];
        resolve({ status, reason, retryAfter: typeof ra === 'string' ? ra : undefined, jwt });
      });
      stream.on('error', (err) => {
        // A connection that hung or broke is not reused.
        if (signal.aborted && this.session === session) {
          this.session = null;
          session.destroy();
        }
        reject(err);
      });
      stream.end(APNS_PAYLOAD);
    });
  }

  close(): void {
    this.session?.destroy();
    this.session = null;
  }
}

/**
 * 200 sent; 410, or 400 BadDeviceToken / Unregistered, the token is dead; 429, 500, 503 retry;
 * 403 (after one fresh provider token) and anything else refused.
 */
function apnsOutcome(status: number, reason: string | undefined): SendResult['outcome'] {
  if (status === 200) return 'sent';
  if (status === 410 || (status === 400 && (reason === 'BadDeviceToken' || reason === 'Unregistered'))) return 'gone';
  if (status === 429 || status >= 500) return 'retry';
  return 'refused';
}
