/**
 * Users, devices and their keys (spec §4–§6).
 *
 * - A user is `name@server` and owns one long-term Identity Key (Ed25519).
 * - Each device has its own Device Key, certified by the Identity Key (DeviceCert).
 * - Devices publish one-time X25519 prekeys signed by their Device Key (DevicePrekey); only the
 *   user's own devices use them, to send secrets to sibling devices.
 * - Topic keys are per-user, pre-generated pairs (Ed25519 signature key, X25519 encryption key)
 *   certified by the Identity Key (TopicKey). Every device of the user holds the secret halves,
 *   so other members of a topic learn nothing about devices.
 */
import { RendezvousError } from './errors.ts';
import { Reader, Writer, decodeAll } from './encoding.ts';
import { equal, toBase64url } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { SignLabel, requireSignature, signWithLabel } from './sign.ts';
import { checkEd25519PublicKey, checkX25519PublicKey } from './keys.ts';

export const IDENTITY_VERSION = 1;
/** Spec §4.1: a 64-byte name, '@', and a server name of at most 259 bytes (253-byte host and ':port'). */
export const MAX_SERVER_NAME_BYTES = 259;
export const MAX_USER_ID_BYTES = 64 + 1 + MAX_SERVER_NAME_BYTES;

// ---------------------------------------------------------------------------------------------
// User ids (spec §4.1)

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const HOST_LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Validates a server name: a lowercase DNS name, with an optional :port. */
export function isServerName(s: string): boolean {
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(s);
  if (!m) return false;
  const host = m[1]!;
  const port = m[2];
  if (port !== undefined && (port.startsWith('0') || Number(port) < 1 || Number(port) > 65535)) return false;
  if (host.length > 253 || s.length > MAX_SERVER_NAME_BYTES) return false;
  return host.split('.').every((l) => HOST_LABEL_RE.test(l));
}

export function isUserName(s: string): boolean {
  return NAME_RE.test(s);
}

export interface UserId {
  name: string;
  server: string;
}

export function parseUserId(s: string): UserId {
  const at = s.indexOf('@');
  const name = s.slice(0, at);
  const server = s.slice(at + 1);
  if (at < 0 || !isUserName(name) || !isServerName(server) || s.length > MAX_USER_ID_BYTES) {
    throw new RendezvousError('encoding.bad_value', 'user id must be name@server (lowercase)');
  }
  return { name, server };
}

function readUser(r: Reader): string {
  const s = r.string(MAX_USER_ID_BYTES);
  parseUserId(s);
  return s;
}

function readVersion(r: Reader): void {
  if (r.u8() !== IDENTITY_VERSION) throw new RendezvousError('encoding.unknown_version');
}

/**
 * Runs a certificate's remaining checks and its signature check (`rest`) and, should any of
 * them fail, checks the certifying identity key first, so that the error is the one the
 * checks in their written order — identity key, then the rest — would give.
 *
 * Why: checking an Ed25519 public key means decoding the point, a square root in pure
 * JavaScript (~0.15 ms, as long as the signature check itself). A signature that verifies
 * already proves the key acceptable: every provider's ed25519Verify applies the pinned policy
 * of spec §3.2, whose step 2 is exactly checkEd25519PublicKey. So on success the check is
 * redundant, and on failure it runs.
 */
function withIdentityKeyCheck(identityKey: Uint8Array, rest: () => void): void {
  try {
    rest();
  } catch (e) {
    checkEd25519PublicKey(identityKey, 'identity key');
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Device certificate (spec §5.1)

export interface DeviceCert {
  user: string;
  identityKey: Uint8Array;
  deviceKey: Uint8Array;
  createdAt: number;
  signature: Uint8Array;
}

function writeDeviceCertTbs(w: Writer, c: Omit<DeviceCert, 'signature'>): void {
  w.u8(IDENTITY_VERSION).string(c.user).fixed(c.identityKey, 32).fixed(c.deviceKey, 32).u64(c.createdAt);
}

export function encodeDeviceCert(c: DeviceCert): Uint8Array {
  const w = new Writer();
  writeDeviceCertTbs(w, c);
  return w.fixed(c.signature, 64).finish();
}

export function readDeviceCert(r: Reader): DeviceCert {
  readVersion(r);
  return { user: readUser(r), identityKey: r.fixed(32), deviceKey: r.fixed(32), createdAt: r.u64(), signature: r.fixed(64) };
}

export function decodeDeviceCert(b: Uint8Array): DeviceCert {
  return decodeAll(b, readDeviceCert);
}

export function signDeviceCert(
  crypto: CryptoProvider,
  identitySeed: Uint8Array,
  c: Omit<DeviceCert, 'signature' | 'identityKey'>,
): DeviceCert {
  const tbs = { ...c, identityKey: crypto.ed25519PublicKey(identitySeed) };
  const w = new Writer();
  writeDeviceCertTbs(w, tbs);
  return { ...tbs, signature: signWithLabel(crypto, identitySeed, SignLabel.deviceCert, w.finish()) };
}

/**
 * Validates a device certificate. `identityKey`, when given, is the identity key the verifier
 * already trusts for `c.user` (pinned, or registered): a certificate naming another key is
 * rejected with `crypto.bad_certificate`.
 */
export function verifyDeviceCert(crypto: CryptoProvider, c: DeviceCert, identityKey?: Uint8Array): void {
  parseUserId(c.user);
  withIdentityKeyCheck(c.identityKey, () => {
    checkEd25519PublicKey(c.deviceKey, 'device key');
    if (identityKey !== undefined && !equal(identityKey, c.identityKey)) {
      throw new RendezvousError('crypto.bad_certificate', 'device certificate names another identity key');
    }
    const w = new Writer();
    writeDeviceCertTbs(w, c);
    requireSignature(crypto, c.identityKey, SignLabel.deviceCert, w.finish(), c.signature, 'device certificate');
  });
}

/** A device is named by its Device Key (base64url), which is unique and needs no registry. */
export function deviceId(deviceKey: Uint8Array): string {
  return toBase64url(deviceKey);
}

// ---------------------------------------------------------------------------------------------
// Device prekey (spec §5.2)

export interface DevicePrekey {
  deviceKey: Uint8Array;
  prekey: Uint8Array;
  signature: Uint8Array;
}

function writeDevicePrekeyTbs(w: Writer, p: Omit<DevicePrekey, 'signature'>): void {
  w.u8(IDENTITY_VERSION).fixed(p.deviceKey, 32).fixed(p.prekey, 32);
}

export function encodeDevicePrekey(p: DevicePrekey): Uint8Array {
  const w = new Writer(129);
  writeDevicePrekeyTbs(w, p);
  return w.fixed(p.signature, 64).finish();
}

export function readDevicePrekey(r: Reader): DevicePrekey {
  readVersion(r);
  return { deviceKey: r.fixed(32), prekey: r.fixed(32), signature: r.fixed(64) };
}

export function decodeDevicePrekey(b: Uint8Array): DevicePrekey {
  return decodeAll(b, readDevicePrekey);
}

export function signDevicePrekey(crypto: CryptoProvider, deviceSeed: Uint8Array, prekey: Uint8Array): DevicePrekey {
  const tbs = { deviceKey: crypto.ed25519PublicKey(deviceSeed), prekey };
  const w = new Writer(129);
  writeDevicePrekeyTbs(w, tbs);
  return { ...tbs, signature: signWithLabel(crypto, deviceSeed, SignLabel.devicePrekey, w.finish()) };
}

/** Validates a prekey against the device key the verifier trusts (from a verified DeviceCert). */
export function verifyDevicePrekey(crypto: CryptoProvider, p: DevicePrekey, deviceKey: Uint8Array): void {
  if (toBase64url(deviceKey) !== toBase64url(p.deviceKey)) {
    throw new RendezvousError('crypto.bad_certificate', 'prekey belongs to another device');
  }
  checkX25519PublicKey(p.prekey, 'prekey');
  const w = new Writer(129);
  writeDevicePrekeyTbs(w, p);
  requireSignature(crypto, p.deviceKey, SignLabel.devicePrekey, w.finish(), p.signature, 'device prekey');
}

// ---------------------------------------------------------------------------------------------
// Topic key (spec §6.1)

export interface TopicKey {
  user: string;
  identityKey: Uint8Array;
  signatureKey: Uint8Array;
  encryptionKey: Uint8Array;
  signature: Uint8Array;
}

function writeTopicKeyTbs(w: Writer, k: Omit<TopicKey, 'signature'>): void {
  w.u8(IDENTITY_VERSION).string(k.user).fixed(k.identityKey, 32).fixed(k.signatureKey, 32).fixed(k.encryptionKey, 32);
}

export function writeTopicKey(w: Writer, k: TopicKey): void {
  writeTopicKeyTbs(w, k);
  w.fixed(k.signature, 64);
}

export function encodeTopicKey(k: TopicKey): Uint8Array {
  const w = new Writer();
  writeTopicKey(w, k);
  return w.finish();
}

export function readTopicKey(r: Reader): TopicKey {
  readVersion(r);
  return {
    user: readUser(r),
    identityKey: r.fixed(32),
    signatureKey: r.fixed(32),
    encryptionKey: r.fixed(32),
    signature: r.fixed(64),
  };
}

export function decodeTopicKey(b: Uint8Array): TopicKey {
  return decodeAll(b, readTopicKey);
}

/** The secret halves of a topic key, held by every device of its user. */
export interface TopicKeySecret {
  signatureSeed: Uint8Array;
  encryptionSecret: Uint8Array;
}

export function signTopicKey(
  crypto: CryptoProvider,
  identitySeed: Uint8Array,
  user: string,
  secret: TopicKeySecret,
): TopicKey {
  const tbs = {
    user,
    identityKey: crypto.ed25519PublicKey(identitySeed),
    signatureKey: crypto.ed25519PublicKey(secret.signatureSeed),
    encryptionKey: crypto.x25519PublicKey(secret.encryptionSecret),
  };
  const w = new Writer();
  writeTopicKeyTbs(w, tbs);
  return { ...tbs, signature: signWithLabel(crypto, identitySeed, SignLabel.topicKey, w.finish()) };
}

/** Validates a topic key's certificate; `identityKey` as in verifyDeviceCert. */
export function verifyTopicKey(crypto: CryptoProvider, k: TopicKey, identityKey?: Uint8Array): void {
  parseUserId(k.user);
  withIdentityKeyCheck(k.identityKey, () => {
    checkEd25519PublicKey(k.signatureKey, 'topic signature key');
    checkX25519PublicKey(k.encryptionKey, 'topic encryption key');
    if (identityKey !== undefined && !equal(identityKey, k.identityKey)) {
      throw new RendezvousError('crypto.bad_certificate', 'topic key names another identity key');
    }
    const w = new Writer();
    writeTopicKeyTbs(w, k);
    requireSignature(crypto, k.identityKey, SignLabel.topicKey, w.finish(), k.signature, 'topic key');
  });
}

/** A topic key is named by its signature key (base64url). */
export function topicKeyId(k: Pick<TopicKey, 'signatureKey'>): string {
  return toBase64url(k.signatureKey);
}

