/**
 * Key bundles (spec §6.2): how a user's devices hand each other topic-key secrets and epoch
 * secrets through the server without the server learning them.
 *
 * A bundle is HPKE-sealed (RFC 9180 base mode) to one of the recipient device's one-time
 * prekeys and signed by the sending device's key. Both devices belong to the same user; the
 * recipient checks the sender's device certificate chains to the user's identity key before it
 * trusts anything in the bundle, and deletes the prekey secret after opening (forward secrecy).
 */
import { RendezvousError } from './errors.ts';
import { Reader, Writer, decodeAll } from './encoding.ts';
import { equal } from './bytes.ts';
import type { CryptoProvider, Random } from './crypto/provider.ts';
import { KdfLabel, SignLabel, requireSignature, signWithLabel } from './sign.ts';
import { SUITE_X25519_SHA256_CHACHA, hpkeOpen, hpkeSeal } from './crypto/hpke.ts';
import {
  type DeviceCert,
  type TopicKey,
  type TopicKeySecret,
  readTopicKey,
  parseUserId,
  MAX_USER_ID_BYTES,
  verifyDeviceCert,
  verifyTopicKey,
  writeTopicKey,
} from './identity.ts';
import { TOPIC_ID_SIZE } from './topic.ts';
import { EPOCH_SECRET_SIZE } from './epoch.ts';

export const BUNDLE_VERSION = 1;
/** Spec §6.2: enough for a device link that carries every topic of a heavy user. */
export const MAX_BUNDLE_CIPHERTEXT = 8 * 1024 * 1024;
export const MAX_BUNDLE_ITEMS = 100_000;

export interface KeyBundle {
  user: string;
  senderDevice: Uint8Array;
  recipientDevice: Uint8Array;
  /** The recipient's one-time prekey the bundle is sealed to. */
  recipientPrekey: Uint8Array;
  enc: Uint8Array;
  ciphertext: Uint8Array;
  signature: Uint8Array;
}

export interface TopicKeyWithSecret {
  topicKey: TopicKey;
  secret: TopicKeySecret;
}

export interface EpochSecret {
  topicId: Uint8Array;
  epoch: number;
  secret: Uint8Array;
}

export interface BundleContent {
  topicKeys: TopicKeyWithSecret[];
  epochSecrets: EpochSecret[];
}

function writeHeader(w: Writer, b: Omit<KeyBundle, 'signature' | 'enc' | 'ciphertext'>): Writer {
  return w
    .u8(BUNDLE_VERSION)
    .string(b.user)
    .fixed(b.senderDevice, 32)
    .fixed(b.recipientDevice, 32)
    .fixed(b.recipientPrekey, 32);
}

function tbs(b: Omit<KeyBundle, 'signature'>): Uint8Array {
  return writeHeader(new Writer(b.ciphertext.length + 200), b).fixed(b.enc, 32).bytes(b.ciphertext).finish();
}

/** HPKE info = encode(struct { label<V>; version; user<V>; sender; recipient; prekey }) */
function bundleInfo(b: Omit<KeyBundle, 'signature' | 'enc' | 'ciphertext'>): Uint8Array {
  return writeHeader(new Writer(200).string(KdfLabel.keyBundle), b).finish();
}

export function encodeKeyBundle(b: KeyBundle): Uint8Array {
  const w = new Writer(b.ciphertext.length + 260);
  writeHeader(w, b).fixed(b.enc, 32).bytes(b.ciphertext).fixed(b.signature, 64);
  return w.finish();
}

function readUserId(r: Reader): string {
  const user = r.string(MAX_USER_ID_BYTES);
  parseUserId(user);
  return user;
}

export function readKeyBundle(r: Reader): KeyBundle {
  if (r.u8() !== BUNDLE_VERSION) throw new RendezvousError('encoding.unknown_version');
  return {
    user: readUserId(r),
    senderDevice: r.fixed(32),
    recipientDevice: r.fixed(32),
    recipientPrekey: r.fixed(32),
    enc: r.fixed(32),
    ciphertext: r.bytes(MAX_BUNDLE_CIPHERTEXT),
    signature: r.fixed(64),
  };
}

export function decodeKeyBundle(b: Uint8Array): KeyBundle {
  return decodeAll(b, readKeyBundle);
}

export function encodeBundleContent(c: BundleContent): Uint8Array {
  return new Writer(c.topicKeys.length * 300 + c.epochSecrets.length * 56 + 8)
    .list(c.topicKeys, (w, k) => {
      writeTopicKey(w, k.topicKey);
      w.fixed(k.secret.signatureSeed, 32).fixed(k.secret.encryptionSecret, 32);
    })
    .list(c.epochSecrets, (w, e) => {
      w.fixed(e.topicId, TOPIC_ID_SIZE).varint(e.epoch).fixed(e.secret, EPOCH_SECRET_SIZE);
    })
    .finish();
}

export function decodeBundleContent(b: Uint8Array): BundleContent {
  return decodeAll(b, (r) => ({
    topicKeys: r.list(
      (r) => ({ topicKey: readTopicKey(r), secret: { signatureSeed: r.fixed(32), encryptionSecret: r.fixed(32) } }),
      MAX_BUNDLE_ITEMS,
    ),
    epochSecrets: r.list((r) => ({ topicId: r.fixed(TOPIC_ID_SIZE), epoch: r.varint(), secret: r.fixed(EPOCH_SECRET_SIZE) }), MAX_BUNDLE_ITEMS),
  }));
}

export interface SealBundleInput {
  user: string;
  senderDeviceSeed: Uint8Array;
  recipientDevice: Uint8Array;
  recipientPrekey: Uint8Array;
  content: BundleContent;
}

export function sealKeyBundle(crypto: CryptoProvider, random: Random, i: SealBundleInput): KeyBundle {
  const header = {
    user: i.user,
    senderDevice: crypto.ed25519PublicKey(i.senderDeviceSeed),
    recipientDevice: i.recipientDevice,
    recipientPrekey: i.recipientPrekey,
  };
  const { enc, ciphertext } = hpkeSeal(
    crypto,
    SUITE_X25519_SHA256_CHACHA,
    i.recipientPrekey,
    bundleInfo(header),
    new Uint8Array(0),
    encodeBundleContent(i.content),
    random,
  );
  const unsigned = { ...header, enc, ciphertext };
  return { ...unsigned, signature: signWithLabel(crypto, i.senderDeviceSeed, SignLabel.keyBundle, tbs(unsigned)) };
}

/**
 * Verifies a bundle's signature against the sender's device certificate, which must be a
 * device of the same user certified by `identityKey` (spec §6.2). Throws
 * `crypto.bad_certificate` or `crypto.bad_signature`. The server runs this before it stores a
 * bundle; the recipient runs it again.
 */
export function verifyKeyBundle(crypto: CryptoProvider, b: KeyBundle, senderCert: DeviceCert, identityKey: Uint8Array): void {
  verifyDeviceCert(crypto, senderCert, identityKey);
  if (senderCert.user !== b.user || !equal(senderCert.deviceKey, b.senderDevice)) {
    throw new RendezvousError('crypto.bad_certificate', 'bundle sender is not this device of this user');
  }
  requireSignature(crypto, b.senderDevice, SignLabel.keyBundle, tbs(b), b.signature, 'key bundle');
}

/**
 * Opens a verified bundle with the prekey secret and checks every topic key in it: the
 * certificate chains to `identityKey` and the secrets match the certified public keys.
 */
export function openKeyBundle(
  crypto: CryptoProvider,
  b: KeyBundle,
  prekeySecret: Uint8Array,
  identityKey: Uint8Array,
): BundleContent {
  if (!equal(crypto.x25519PublicKey(prekeySecret), b.recipientPrekey)) {
    throw new RendezvousError('crypto.bad_key', 'bundle is sealed to another prekey');
  }
  const plaintext = hpkeOpen(crypto, SUITE_X25519_SHA256_CHACHA, prekeySecret, b.enc, bundleInfo(b), new Uint8Array(0), b.ciphertext);
  const content = decodeBundleContent(plaintext);
  for (const { topicKey, secret } of content.topicKeys) {
    verifyTopicKey(crypto, topicKey, identityKey);
    if (topicKey.user !== b.user) throw new RendezvousError('crypto.bad_certificate', 'topic key of another user');
    if (
      !equal(crypto.ed25519PublicKey(secret.signatureSeed), topicKey.signatureKey) ||
      !equal(crypto.x25519PublicKey(secret.encryptionSecret), topicKey.encryptionKey)
    ) {
      throw new RendezvousError('crypto.bad_key', 'topic key secret does not match its public key');
    }
  }
  return content;
}
