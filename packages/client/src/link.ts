/**
 * Device link codes (docs/client.md §Devices).
 *
 * An existing device shows a link code (text and QR) that carries, out of band, everything a
 * new device of the same user needs: the server, the user id, the identity seed, and a one-time
 * link secret. The new device's key is derived from the link secret, so the existing device
 * knows in advance exactly which device it will hand its topic keys to: a device the server
 * invents, or any other device, never gets them through this link.
 *
 *     code        = "rvz1-" || base64url(encode(LinkCode))
 *     struct LinkCode { u8 version = 1; opaque server_url<V>; opaque user<V>;
 *                       opaque identity_seed[32]; opaque link_secret[32]; u64 created_at; }
 *     device_seed = HKDF-Expand(HKDF-Extract(salt = "rendezvous/v1/device-link", link_secret),
 *                               "device-seed", 32)
 *
 * The code is as secret as the identity key itself: show it only to the new device.
 */
import { RendezvousError, Reader, Writer, deviceId, fromBase64url, parseUserId, toBase64url, utf8, type CryptoProvider } from '@rendezvous/protocol';

export const LINK_PREFIX = 'rvz1-';
const LINK_VERSION = 1;
const LINK_SALT = utf8('rendezvous/v1/device-link');
/** A link code is good for this long: the existing device stops waiting after it. */
export const LINK_TTL_MS = 10 * 60 * 1000;

export interface LinkCode {
  serverUrl: string;
  user: string;
  identitySeed: Uint8Array;
  linkSecret: Uint8Array;
  createdAt: number;
}

export function encodeLinkCode(c: LinkCode): string {
  const w = new Writer(256).u8(LINK_VERSION).string(c.serverUrl).string(c.user).fixed(c.identitySeed, 32).fixed(c.linkSecret, 32).u64(c.createdAt);
  return LINK_PREFIX + toBase64url(w.finish());
}

export function decodeLinkCode(code: string): LinkCode {
  const s = code.trim();
  if (!s.startsWith(LINK_PREFIX)) throw new RendezvousError('encoding.bad_value', 'not a Rendezvous link code (it starts with rvz1-)');
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(s.slice(LINK_PREFIX.length));
  } catch {
    throw new RendezvousError('encoding.bad_value', 'the link code is damaged: copy it again');
  }
  const r = new Reader(bytes);
  if (r.u8() !== LINK_VERSION) throw new RendezvousError('encoding.unknown_version', 'link code from a newer version');
  const c = { serverUrl: r.string(2048), user: r.string(512), identitySeed: r.fixed(32), linkSecret: r.fixed(32), createdAt: r.u64() };
  r.end();
  parseUserId(c.user);
  return c;
}

/** The new device's Ed25519 seed, from the link secret (both devices compute it). */
export function linkedDeviceSeed(crypto: CryptoProvider, linkSecret: Uint8Array): Uint8Array {
  return crypto.hkdfExpand(crypto.hkdfExtract(LINK_SALT, linkSecret), utf8('device-seed'), 32);
}

export function linkedDeviceId(crypto: CryptoProvider, linkSecret: Uint8Array): string {
  return deviceId(crypto.ed25519PublicKey(linkedDeviceSeed(crypto, linkSecret)));
}
