/**
 * Domain-separated signatures (spec §3.3).
 *
 * Every signature in Rendezvous is an Ed25519 signature over
 *
 *     struct { opaque label<V>; opaque content<V>; } SignContent
 *
 * with label = "rendezvous/v1/" || Label, after MLS's SignWithLabel (RFC 9420 §5.1.2).
 * The label names the structure, so a signature made for one structure can never be accepted
 * as another, and `content` is always the structure's canonical to-be-signed encoding, which
 * names its topic, epoch and position wherever that applies.
 */
import { RendezvousError } from './errors.ts';
import { Writer } from './encoding.ts';
import type { CryptoProvider } from './crypto/provider.ts';

export const PROTOCOL_PREFIX = 'rendezvous/v1/';

/** Every signature label in the protocol, in one place (spec §3.3 table). */
export const SignLabel = {
  deviceCert: 'device-cert',
  devicePrekey: 'device-prekey',
  topicKey: 'topic-key',
  keyBundle: 'key-bundle',
  topicUpdate: 'topic-update',
  message: 'message',
  checkpoint: 'checkpoint',
  session: 'session',
  federationRequest: 'federation-request',
  witness: 'witness',
  serverKey: 'server-key',
} as const;
export type SignLabel = (typeof SignLabel)[keyof typeof SignLabel];

export function signContent(label: SignLabel, content: Uint8Array): Uint8Array {
  return new Writer(content.length + 64).string(PROTOCOL_PREFIX + label).bytes(content).finish();
}

export function signWithLabel(
  crypto: CryptoProvider,
  secretSeed: Uint8Array,
  label: SignLabel,
  content: Uint8Array,
): Uint8Array {
  return crypto.ed25519Sign(secretSeed, signContent(label, content));
}

export function verifyWithLabel(
  crypto: CryptoProvider,
  publicKey: Uint8Array,
  label: SignLabel,
  content: Uint8Array,
  signature: Uint8Array,
): boolean {
  return crypto.ed25519Verify(publicKey, signContent(label, content), signature);
}

/** Verifies or throws `crypto.bad_signature`. */
export function requireSignature(
  crypto: CryptoProvider,
  publicKey: Uint8Array,
  label: SignLabel,
  content: Uint8Array,
  signature: Uint8Array,
  what: string,
): void {
  if (!verifyWithLabel(crypto, publicKey, label, content, signature)) {
    throw new RendezvousError('crypto.bad_signature', `bad ${what} signature`);
  }
}

/** HKDF `info` and HPKE `info` strings (spec §3.5), also in one place. */
export const KdfLabel = {
  epochCommitment: PROTOCOL_PREFIX + 'epoch-commitment',
  backwardLink: PROTOCOL_PREFIX + 'backward-link',
  messageKey: PROTOCOL_PREFIX + 'message-key',
  epochKeyShare: PROTOCOL_PREFIX + 'epoch-key',
  keyBundle: PROTOCOL_PREFIX + 'key-bundle',
  serverKeyId: PROTOCOL_PREFIX + 'server-key-id',
} as const;
