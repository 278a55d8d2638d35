/**
 * The epoch key schedule (spec §7.2).
 *
 * Each epoch of a topic has a random 32-byte epoch secret (the design's "Message Key"). Every
 * key used in the epoch is derived from it with HKDF-SHA256 (RFC 5869):
 *
 *     epoch_prk      = HKDF-Extract(salt = topic_id || u64(epoch), ikm = epoch_secret)
 *     commitment     = HKDF-Expand(epoch_prk, "rendezvous/v1/epoch-commitment", 32)
 *     link_key       = HKDF-Expand(epoch_prk, "rendezvous/v1/backward-link", 32)
 *     message_key(n) = HKDF-Expand(epoch_prk, "rendezvous/v1/message-key" || n, 32)
 *
 * The commitment is published in the topic update that starts the epoch, so every member can
 * check that the secret it unwrapped is the one everybody else got: an admin cannot hand two
 * members different keys for one epoch (which would let one ciphertext open to two different
 * plaintexts — the "invisible salamanders" problem of non-committing AEADs).
 */
import { RendezvousError } from './errors.ts';
import { concat, equal, u64be, utf8 } from './bytes.ts';
import { Writer } from './encoding.ts';
import type { CryptoProvider, Random } from './crypto/provider.ts';
import { KdfLabel } from './sign.ts';
import { SUITE_X25519_SHA256_CHACHA, hpkeOpen, hpkeSeal } from './crypto/hpke.ts';

export const EPOCH_SECRET_SIZE = 32;
export const COMMITMENT_SIZE = 32;
export const BACKWARD_LINK_SIZE = EPOCH_SECRET_SIZE + 16;
export const KEY_SHARE_ENC_SIZE = 32;
export const KEY_SHARE_CT_SIZE = EPOCH_SECRET_SIZE + 16;

const ZERO_NONCE = new Uint8Array(12);
const COMMIT_INFO = utf8(KdfLabel.epochCommitment);
const LINK_INFO = utf8(KdfLabel.backwardLink);
const MESSAGE_INFO = utf8(KdfLabel.messageKey);

export function epochPrk(crypto: CryptoProvider, topicId: Uint8Array, epoch: number, epochSecret: Uint8Array): Uint8Array {
  if (epochSecret.length !== EPOCH_SECRET_SIZE) throw new RendezvousError('crypto.bad_key', 'epoch secret must be 32 bytes');
  return crypto.hkdfExtract(concat(topicId, u64be(epoch)), epochSecret);
}

export function epochCommitment(crypto: CryptoProvider, topicId: Uint8Array, epoch: number, epochSecret: Uint8Array): Uint8Array {
  return crypto.hkdfExpand(epochPrk(crypto, topicId, epoch, epochSecret), COMMIT_INFO, COMMITMENT_SIZE);
}

/** The per-message key: unique per (epoch, nonce), so the AEAD nonce can be fixed (spec §8.2). */
export function messageKey(crypto: CryptoProvider, prk: Uint8Array, nonce: Uint8Array): Uint8Array {
  return crypto.hkdfExpand(prk, concat(MESSAGE_INFO, nonce), 32);
}

function linkAad(topicId: Uint8Array, epoch: number): Uint8Array {
  return concat(topicId, u64be(epoch));
}

/**
 * The backward link of epoch `epoch`: the previous epoch's secret sealed under this epoch's
 * link key (ChaCha20-Poly1305, zero nonce: the key is used exactly once).
 */
export function sealBackwardLink(
  crypto: CryptoProvider,
  topicId: Uint8Array,
  epoch: number,
  epochSecret: Uint8Array,
  previousSecret: Uint8Array,
): Uint8Array {
  const key = crypto.hkdfExpand(epochPrk(crypto, topicId, epoch, epochSecret), LINK_INFO, 32);
  return crypto.aeadSeal('chacha20-poly1305', key, ZERO_NONCE, linkAad(topicId, epoch), previousSecret);
}

/**
 * Opens the backward link of `epoch` and checks the result against the previous epoch's
 * commitment. Any failure is `topic.bad_backward_link`.
 */
export function openBackwardLink(
  crypto: CryptoProvider,
  topicId: Uint8Array,
  epoch: number,
  epochSecret: Uint8Array,
  link: Uint8Array,
  previousCommitment: Uint8Array,
): Uint8Array {
  const key = crypto.hkdfExpand(epochPrk(crypto, topicId, epoch, epochSecret), LINK_INFO, 32);
  let prev: Uint8Array;
  try {
    prev = crypto.aeadOpen('chacha20-poly1305', key, ZERO_NONCE, linkAad(topicId, epoch), link);
  } catch {
    throw new RendezvousError('topic.bad_backward_link', 'backward link does not open');
  }
  if (!equal(epochCommitment(crypto, topicId, epoch - 1, prev), previousCommitment)) {
    throw new RendezvousError('topic.bad_backward_link', 'backward link opens to the wrong secret');
  }
  return prev;
}

// ---------------------------------------------------------------------------------------------
// Key shares: the epoch secret wrapped to one member's topic encryption key with HPKE (spec §7.3)

export interface KeyShare {
  memberId: number;
  enc: Uint8Array;
  ciphertext: Uint8Array;
}

/** info = encode(struct { opaque label<V>; opaque topic_id[16]; varint epoch; varint member_id; }) */
function shareInfo(topicId: Uint8Array, epoch: number, memberId: number): Uint8Array {
  return new Writer(64).string(KdfLabel.epochKeyShare).fixed(topicId, 16).varint(epoch).varint(memberId).finish();
}

export function sealKeyShare(
  crypto: CryptoProvider,
  random: Random,
  topicId: Uint8Array,
  epoch: number,
  memberId: number,
  encryptionKey: Uint8Array,
  epochSecret: Uint8Array,
): KeyShare {
  const { enc, ciphertext } = hpkeSeal(
    crypto,
    SUITE_X25519_SHA256_CHACHA,
    encryptionKey,
    shareInfo(topicId, epoch, memberId),
    new Uint8Array(0),
    epochSecret,
    random,
  );
  return { memberId, enc, ciphertext };
}

/**
 * Opens a key share with the member's topic encryption secret and checks it against the
 * epoch's commitment. Any failure is `topic.bad_key_share`: the member cannot read the epoch,
 * and the admin who signed the update is at fault.
 */
export function openKeyShare(
  crypto: CryptoProvider,
  topicId: Uint8Array,
  epoch: number,
  share: KeyShare,
  encryptionSecret: Uint8Array,
  commitment: Uint8Array,
): Uint8Array {
  let secret: Uint8Array;
  try {
    secret = hpkeOpen(
      crypto,
      SUITE_X25519_SHA256_CHACHA,
      encryptionSecret,
      share.enc,
      shareInfo(topicId, epoch, share.memberId),
      new Uint8Array(0),
      share.ciphertext,
    );
  } catch {
    throw new RendezvousError('topic.bad_key_share', 'key share does not open');
  }
  if (secret.length !== EPOCH_SECRET_SIZE || !equal(epochCommitment(crypto, topicId, epoch, secret), commitment)) {
    throw new RendezvousError('topic.bad_key_share', 'key share opens to a secret that does not match the commitment');
  }
  return secret;
}
