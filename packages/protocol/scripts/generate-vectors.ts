/**
 * Generates the project's own test vectors (spec §14): every structure of the protocol with
 * its inputs, its canonical encoding and its derived values, plus MUST-reject cases that each
 * name the exact error code. Deterministic: all randomness comes from one seeded SHA-256
 * stream, and every random input is written into the vector, so another implementation can
 * check itself against the file without reproducing our draw order.
 *
 *   npm run vectors          rewrite packages/protocol/vectors/rendezvous-v1.json
 *   … generate-vectors.ts --check   exit 1 if the committed file is out of date
 *   (test/vectors.test.ts regenerates in memory and fails if the committed file differs)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { deterministicRandom, type Random } from '../src/crypto/provider.ts';
import { concat, toHex, utf8 } from '../src/bytes.ts';
import { Writer } from '../src/encoding.ts';
import { signContent, SignLabel } from '../src/sign.ts';
import {
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeTopicKey,
  signDeviceCert,
  signDevicePrekey,
  signTopicKey,
  type TopicKey,
  type TopicKeySecret,
} from '../src/identity.ts';
import { epochCommitment, epochPrk, messageKey, sealBackwardLink, sealKeyShare } from '../src/epoch.ts';
import { applyUpdate, encodeTopicUpdate, signTopicUpdate, topicUpdateHash, type TopicState, type TopicUpdate } from '../src/topic.ts';
import { buildCreate, buildUpdate, type ChangeAction } from '../src/topic-builder.ts';
import { encodeContent, encodeMessage, sealMessage } from '../src/message.ts';
import { encodeKeyBundle, sealKeyBundle } from '../src/bundle.ts';
import { encodeFileRef, fileRefFor, sealFile, FILE_CHUNK_SIZE } from '../src/file.ts';
import { encodeCheckpoint, encodeLogEntry, entryLeafHash, signCheckpoint } from '../src/log.ts';
import { MemoryLog } from '../src/merkle.ts';

const hex = toHex;
const T0 = 1_764_000_000_000; // 2025-11-24T16:00:00Z, the vectors' clock

type Reject = { name: string; code: string; [k: string]: unknown };

export function generateVectors(): Record<string, unknown> {
  const random: Random = deterministicRandom(crypto, utf8('rendezvous/v1 test vectors'));
  const seedOf = (n = 32) => random(n);

  // -- Signatures and identities (spec §3.3, §5, §6.1) -----------------------------------------
  const signContentVector = {
    label: SignLabel.message,
    content: hex(utf8('hello')),
    sign_content: hex(signContent(SignLabel.message, utf8('hello'))),
  };

  const users = ['alice@alpha.example', 'bob@alpha.example', 'carol@beta.example', 'dave@beta.example'].map((name) => ({
    name,
    identitySeed: seedOf(),
  }));
  const alice = users[0]!;
  const deviceSeed = seedOf();
  const deviceCert = signDeviceCert(crypto, alice.identitySeed, {
    user: alice.name,
    deviceKey: crypto.ed25519PublicKey(deviceSeed),
    createdAt: T0,
  });
  const prekeySecret = seedOf();
  const prekey = signDevicePrekey(crypto, deviceSeed, crypto.x25519PublicKey(prekeySecret));

  const topicKeys: { topicKey: TopicKey; secret: TopicKeySecret }[] = users.map((u) => {
    const secret = { signatureSeed: seedOf(), encryptionSecret: seedOf() };
    return { topicKey: signTopicKey(crypto, u.identitySeed, u.name, secret), secret };
  });

  const identity = {
    users: users.map((u) => ({ user: u.name, identity_seed: hex(u.identitySeed), identity_key: hex(crypto.ed25519PublicKey(u.identitySeed)) })),
    device_cert: { device_seed: hex(deviceSeed), created_at: T0, encoded: hex(encodeDeviceCert(deviceCert)) },
    device_prekey: { prekey_secret: hex(prekeySecret), encoded: hex(encodeDevicePrekey(prekey)) },
    topic_keys: topicKeys.map((k) => ({
      signature_seed: hex(k.secret.signatureSeed),
      encryption_secret: hex(k.secret.encryptionSecret),
      encoded: hex(encodeTopicKey(k.topicKey)),
    })),
  };

  // -- Epoch key schedule (spec §7.2, §7.3) -------------------------------------------------------
  const topicId = seedOf(16);
  const e0 = seedOf();
  const e1 = seedOf();
  const msgNonce = seedOf(16);
  const ikmE = seedOf();
  const share = sealKeyShare(crypto, () => ikmE, topicId, 1, 2, topicKeys[2]!.topicKey.encryptionKey, e1);
  const epoch = {
    topic_id: hex(topicId),
    epoch_0_secret: hex(e0),
    epoch_1_secret: hex(e1),
    epoch_1_prk: hex(epochPrk(crypto, topicId, 1, e1)),
    epoch_0_commitment: hex(epochCommitment(crypto, topicId, 0, e0)),
    epoch_1_commitment: hex(epochCommitment(crypto, topicId, 1, e1)),
    epoch_1_backward_link: hex(sealBackwardLink(crypto, topicId, 1, e1, e0)),
    message_nonce: hex(msgNonce),
    epoch_1_message_key: hex(messageKey(crypto, epochPrk(crypto, topicId, 1, e1), msgNonce)),
    key_share: {
      epoch: 1,
      member_id: 2,
      recipient_encryption_secret: hex(topicKeys[2]!.secret.encryptionSecret),
      ikm_e: hex(ikmE),
      enc: hex(share.enc),
      ciphertext: hex(share.ciphertext),
    },
  };

  // -- A topic's history: create, add (O(1)), role, remove, leave, rekey, add with a new epoch ----
  const secrets = new Map<number, TopicKeySecret>();
  topicKeys.slice(0, 3).forEach((k, i) => secrets.set(i, k.secret));
  const created = buildCreate(crypto, random, {
    topicId,
    host: 'alpha.example',
    history: 'shared',
    members: [
      { role: 'admin', topicKey: topicKeys[0]!.topicKey },
      { role: 'participant', topicKey: topicKeys[1]!.topicKey },
      { role: 'observer', topicKey: topicKeys[2]!.topicKey },
    ],
    signer: 0,
    signatureSeed: topicKeys[0]!.secret.signatureSeed,
  });
  let state: TopicState = applyUpdate(crypto, null, created.update);
  let epochSecret = created.epochSecret;
  const states: TopicState[] = [state];
  const updates: TopicUpdate[] = [created.update];
  const epochSecrets: string[] = [hex(epochSecret)];
  const log = new MemoryLog(crypto);
  const entries: Uint8Array[] = [];
  const appendEntry = (type: 'update' | 'message', body: Uint8Array) => {
    const e = encodeLogEntry({ type, timestamp: T0 + entries.length * 1000, body });
    entries.push(e);
    log.append(e);
  };
  appendEntry('update', encodeTopicUpdate(created.update));

  const steps: [ChangeAction, number, boolean?][] = [
    [{ type: 'add', role: 'participant', topicKey: topicKeys[3]!.topicKey }, 0],
    [{ type: 'role', memberId: 1, role: 'admin' }, 0],
    [{ type: 'remove', memberId: 2 }, 1],
    [{ type: 'leave' }, 3],
    [{ type: 'rekey' }, 0],
  ];
  secrets.set(3, topicKeys[3]!.secret);
  for (const [action, signer, force] of steps) {
    const b = buildUpdate(crypto, random, state, {
      signer,
      signatureSeed: secrets.get(signer)!.signatureSeed,
      epochSecret,
      action,
      forceNewEpoch: force,
    });
    state = applyUpdate(crypto, state, b.update);
    epochSecret = b.epochSecret;
    states.push(state);
    updates.push(b.update);
    if (b.update.commitment) epochSecrets.push(hex(epochSecret));
    appendEntry('update', encodeTopicUpdate(b.update));
  }
  const epochStartSize = entries.length; // the last update (rekey) started the current epoch

  // -- A message in the current epoch (spec §8) ----------------------------------------------------
  const prk = epochPrk(crypto, topicId, state.epoch, epochSecret);
  const nonce = seedOf(16);
  const message = sealMessage(crypto, () => nonce, {
    topicId,
    epoch: state.epoch,
    epochPrk: prk,
    sender: 1,
    signatureSeed: secrets.get(1)!.signatureSeed,
    headSize: log.size,
    headRoot: log.root(),
    content: { type: 'text', body: utf8('Hello, Rendezvous!') },
  });
  const messageVector = {
    sender: 1,
    nonce: hex(nonce),
    head_size: log.size,
    head_root: hex(log.root()),
    content_type: 'text',
    content_body: hex(utf8('Hello, Rendezvous!')),
    padded_content: hex(encodeContent({ type: 'text', body: utf8('Hello, Rendezvous!') })),
    encoded: hex(encodeMessage(message)),
  };
  appendEntry('message', encodeMessage(message));

  // -- Log and checkpoint (spec §9, §10) -----------------------------------------------------------
  const serverSeed = seedOf();
  const checkpoint = signCheckpoint(crypto, serverSeed, { origin: 'alpha.example', topicId, size: log.size, root: log.root(), timestamp: T0 + 60_000 });
  const logVector = {
    entries: entries.map((e) => ({ encoded: hex(e), leaf_hash: hex(entryLeafHash(crypto, e)) })),
    roots: Array.from({ length: log.size + 1 }, (_, n) => hex(log.root(n))),
    inclusion_proof_2_of_7: log.inclusionProof(2, 7).map(hex),
    consistency_proof_3_to_7: log.consistencyProof(3, 7).map(hex),
    server_seed: hex(serverSeed),
    server_key: hex(crypto.ed25519PublicKey(serverSeed)),
    checkpoint: hex(encodeCheckpoint(checkpoint)),
  };

  // -- Key bundle and file (spec §6.2, §12) -------------------------------------------------------
  const sibling = seedOf();
  const siblingPrekeySecret = seedOf();
  const bundleIkm = seedOf();
  const bundleContent = {
    topicKeys: [topicKeys[0]!],
    epochSecrets: [{ topicId, epoch: state.epoch, secret: epochSecret }],
  };
  const bundle = sealKeyBundle(crypto, () => bundleIkm, {
    user: alice.name,
    senderDeviceSeed: deviceSeed,
    recipientDevice: crypto.ed25519PublicKey(sibling),
    recipientPrekey: crypto.x25519PublicKey(siblingPrekeySecret),
    content: bundleContent,
  });
  const fileKey = seedOf();
  const filePlain = deterministicRandom(crypto, utf8('rendezvous/v1 file vector'))(FILE_CHUNK_SIZE + 10);
  const blob = sealFile(crypto, fileKey, filePlain);
  const fileRef = fileRefFor(crypto, fileKey, blob, 'application/octet-stream', 'vector.bin');
  const bundleVector = {
    recipient_device_seed: hex(sibling),
    recipient_prekey_secret: hex(siblingPrekeySecret),
    ikm_e: hex(bundleIkm),
    encoded: hex(encodeKeyBundle(bundle)),
  };
  const fileVector = {
    plaintext: 'deterministicRandom("rendezvous/v1 file vector"), 65546 bytes',
    key: hex(fileKey),
    blob_sha256: hex(crypto.sha256(blob)),
    blob_size: blob.length,
    last_chunk: hex(blob.subarray(FILE_CHUNK_SIZE + 16)),
    file_ref: hex(encodeFileRef(fileRef)),
  };

  // -- MUST-reject cases, each breaking one rule of an otherwise valid structure -------------------
  const rejects: Reject[] = [];
  const resign = (u: TopicUpdate, edit: Partial<TopicUpdate>, seed = secrets.get(u.signer)!.signatureSeed) => {
    const { signature: _, ...rest } = { ...u, ...edit };
    return signTopicUpdate(crypto, seed, rest);
  };
  // Updates: `state` is the index of the topic update after which the case is applied
  // (topic.updates[0..state] applied first; -1: no topic yet).
  const rekey = updates.at(-1)!;
  const before = states.length - 2;
  const upd = (name: string, code: string, u: TopicUpdate, at = before) =>
    rejects.push({ name, kind: 'topic_update', state: at, code, encoded: hex(encodeTopicUpdate(u)) });
  upd('create twice', 'topic.exists', created.update, 1);
  upd('unknown topic', 'topic.unknown', rekey, -1);
  upd('wrong topic id', 'topic.wrong_topic', resign(rekey, { topicId: new Uint8Array(16) }));
  upd('stale parent (replayed update)', 'topic.bad_parent', updates[1]!, 2);
  upd('signer not a member', 'topic.not_member', resign(rekey, { signer: 2 }, secrets.get(0)!.signatureSeed));
  upd('wrong epoch', 'topic.bad_epoch', resign(rekey, { epoch: rekey.epoch + 1 }));
  upd('rekey without commitment', 'topic.rekey_required', resign(rekey, { commitment: null }));
  upd('rekey without backward link', 'topic.bad_backward_link', resign(rekey, { backwardLink: null }));
  upd('share missing', 'topic.bad_key_shares', resign(rekey, { shares: rekey.shares.slice(1) }));
  upd('bad signature', 'crypto.bad_signature', { ...rekey, signature: rekey.signature.map((b, i) => (i === 0 ? b ^ 1 : b)) });
  const participantRekey = buildUpdate(crypto, random, states[2]!, {
    signer: 3,
    signatureSeed: secrets.get(3)!.signatureSeed,
    epochSecret: e0,
    action: { type: 'rekey' },
  }).update;
  upd('participant signs a rekey', 'topic.not_admin', participantRekey, 2);
  const role0 = buildUpdate(crypto, random, states[1]!, {
    signer: 0,
    signatureSeed: secrets.get(0)!.signatureSeed,
    epochSecret: e0,
    action: { type: 'role', memberId: 1, role: 'participant' },
  }).update;
  upd('role unchanged', 'topic.no_change', role0, 1);
  const demote = buildUpdate(crypto, random, states[1]!, {
    signer: 0,
    signatureSeed: secrets.get(0)!.signatureSeed,
    epochSecret: e0,
    action: { type: 'role', memberId: 0, role: 'observer' },
  }).update;
  upd('last admin demotes itself', 'topic.last_admin', demote, 1);

  // Messages are checked against the final state, the log before the message, and epochStartSize.
  // Every message case is checked with no nonce seen, except where `seen_nonces` lists some.
  const msgCase = (name: string, code: string, m: typeof message, extra: Record<string, unknown> = {}) =>
    rejects.push({ name, kind: 'message', code, encoded: hex(encodeMessage(m)), ...extra });
  msgCase('replayed nonce', 'topic.replay', message, { seen_nonces: [hex(message.nonce)] });
  msgCase('tampered ciphertext', 'crypto.bad_signature', { ...message, ciphertext: message.ciphertext.map((b, i) => (i === 0 ? b ^ 1 : b)) });
  msgCase('sender not a member', 'topic.not_member', { ...message, sender: 2 });
  msgCase('stale epoch', 'topic.stale_epoch', { ...message, epoch: state.epoch - 1 });
  msgCase('future epoch', 'topic.bad_epoch', { ...message, epoch: state.epoch + 1 });
  msgCase('head beyond the log', 'log.bad_head', { ...message, headSize: log.size + 1 });
  msgCase('head before the epoch started', 'log.bad_head', { ...message, headSize: epochStartSize - 1 });

  const raw = (name: string, kind: string, code: string, b: Uint8Array) => rejects.push({ name, kind, code, encoded: hex(b) });
  const msgBytes = encodeMessage(message);
  raw('message: unknown version', 'message', 'encoding.unknown_version', concat(Uint8Array.of(2), msgBytes.subarray(1)));
  raw('message: trailing byte', 'message', 'encoding.trailing_bytes', concat(msgBytes, Uint8Array.of(0)));
  raw('message: truncated', 'message', 'encoding.truncated', msgBytes.subarray(0, msgBytes.length - 1));
  const nonMinimal = new Writer().u8(1).raw(Uint8Array.of(0x40, state.epoch)).raw(msgBytes.subarray(2)).finish();
  raw('message: non-minimal varint', 'message', 'encoding.non_minimal', nonMinimal);
  const certBytes = encodeDeviceCert(deviceCert);
  raw('device cert: flipped signature', 'device_cert', 'crypto.bad_signature', certBytes.map((b, i) => (i === certBytes.length - 1 ? b ^ 1 : b)));
  raw('device cert: signed by another identity', 'device_cert', 'crypto.bad_certificate', encodeDeviceCert(signDeviceCert(crypto, users[1]!.identitySeed, { user: alice.name, deviceKey: deviceCert.deviceKey, createdAt: T0 })));
  const smallOrder = new Uint8Array(32);
  smallOrder[0] = 1; // the identity point
  raw('device cert: small-order device key', 'device_cert', 'crypto.bad_key', encodeDeviceCert(signDeviceCert(crypto, alice.identitySeed, { user: alice.name, deviceKey: smallOrder, createdAt: T0 })));
  raw('device prekey: low-order X25519 key', 'device_prekey', 'crypto.bad_key', encodeDevicePrekey(signDevicePrekey(crypto, deviceSeed, smallOrder)));
  raw('topic key: user id not lowercase', 'topic_key', 'encoding.bad_value', encodeTopicKey({ ...topicKeys[0]!.topicKey, user: 'Alice@alpha.example' }));
  const cpBytes = encodeCheckpoint(checkpoint);
  raw('checkpoint: flipped root bit', 'checkpoint', 'log.bad_checkpoint', cpBytes.map((b, i) => (i === cpBytes.length - 64 - 8 - 8 - 1 ? b ^ 1 : b)));
  raw('log entry: unknown type', 'log_entry', 'encoding.bad_value', concat(Uint8Array.of(1, 3), entries[0]!.subarray(2)));

  return {
    description:
      'Rendezvous protocol v1 test vectors (docs/protocol.md §14). All byte strings are hex. Generated by packages/protocol/scripts/generate-vectors.ts; do not edit.',
    sign_content: signContentVector,
    identity,
    epoch,
    topic: {
      topic_id: hex(topicId),
      updates: updates.map((u, i) => ({
        encoded: hex(encodeTopicUpdate(u)),
        hash: hex(topicUpdateHash(crypto, u)),
        action: u.action.type,
        epoch_after: states[i]!.epoch,
        members_after: [...states[i]!.members.values()].map((m) => ({ id: m.id, role: m.role, user: m.topicKey.user })),
        pending_rekey_after: states[i]!.pendingRekey,
      })),
      epoch_secrets: epochSecrets,
      epoch_start_size: epochStartSize,
    },
    message: messageVector,
    log: logVector,
    key_bundle: bundleVector,
    file: fileVector,
    rejects,
  };
}

export const VECTORS_PATH = resolve(import.meta.dirname, '..', 'vectors', 'rendezvous-v1.json');

export function serializeVectors(v: Record<string, unknown>): string {
  return JSON.stringify(v, null, 2) + '\n';
}

if (process.argv.includes('--write')) {
  writeFileSync(VECTORS_PATH, serializeVectors(generateVectors()));
  console.log(`wrote ${VECTORS_PATH}`);
} else if (process.argv.includes('--check')) {
  const same = serializeVectors(generateVectors()) === readFileSync(VECTORS_PATH, 'utf8');
  console.log(same ? `ok: ${VECTORS_PATH} is up to date` : `differs: run \`npm run vectors\` and review the diff`);
  process.exitCode = same ? 0 : 1;
}
