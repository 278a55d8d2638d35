/**
 * The project's own vectors (packages/protocol/vectors/rendezvous-v1.json, spec §14).
 *
 * 1. Regenerating them must give the committed file byte for byte, so any change to an
 *    encoding, a label or a derivation shows up as a diff to review (then `npm run vectors`).
 * 2. Independently of the generator, every vector is checked the way another implementation
 *    would check it: decode, re-encode, verify, open, recompute; under both providers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { nodeCrypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import { deterministicRandom } from '../src/crypto/provider.ts';
import { fromHex, toHex, utf8 } from '../src/bytes.ts';
import { signContent } from '../src/sign.ts';
import {
  decodeDeviceCert,
  decodeDevicePrekey,
  decodeTopicKey,
  encodeDeviceCert,
  encodeTopicKey,
  verifyDeviceCert,
  verifyDevicePrekey,
  verifyTopicKey,
} from '../src/identity.ts';
import { epochCommitment, epochPrk, messageKey, openBackwardLink, openKeyShare, sealBackwardLink, sealKeyShare } from '../src/epoch.ts';
import { applyUpdate, decodeTopicUpdate, encodeTopicUpdate, topicUpdateHash, type TopicState } from '../src/topic.ts';
import { checkMessage, decodeMessage, encodeContent, encodeMessage, openMessage, type MessageContext } from '../src/message.ts';
import { decodeCheckpoint, decodeLogEntry, encodeLogEntry, entryLeafHash, verifyCheckpoint } from '../src/log.ts';
import { MemoryLog, verifyConsistency, verifyInclusion } from '../src/merkle.ts';
import { decodeKeyBundle, openKeyBundle, verifyKeyBundle } from '../src/bundle.ts';
import { decodeFileRef, encodeFileRef, sealFile } from '../src/file.ts';
import { RendezvousError } from '../src/errors.ts';
import { assertCode } from './helpers.ts';
import { VECTORS_PATH, generateVectors, serializeVectors } from '../scripts/generate-vectors.ts';

const V = JSON.parse(readFileSync(VECTORS_PATH, 'utf8'));
const h = fromHex;

describe('own vectors', () => {
  it('regenerate to the committed file byte for byte (run `npm run vectors` after a deliberate change)', () => {
    assert.equal(serializeVectors(generateVectors()), readFileSync(VECTORS_PATH, 'utf8'));
  });

  for (const crypto of [nodeCrypto, nobleCrypto]) {
    describe(`verified independently with ${crypto.name}`, () => {
      const users = V.identity.users as { user: string; identity_seed: string; identity_key: string }[];
      const ik = (i: number) => h(users[i]!.identity_key);

      it('signature content and identities', () => {
        assert.equal(toHex(signContent(V.sign_content.label, h(V.sign_content.content))), V.sign_content.sign_content);
        users.forEach((u) => assert.equal(toHex(crypto.ed25519PublicKey(h(u.identity_seed))), u.identity_key));
        const cert = decodeDeviceCert(h(V.identity.device_cert.encoded));
        verifyDeviceCert(crypto, cert, ik(0));
        assert.equal(toHex(cert.deviceKey), toHex(crypto.ed25519PublicKey(h(V.identity.device_cert.device_seed))));
        assert.equal(toHex(encodeDeviceCert(cert)), V.identity.device_cert.encoded);
        const pk = decodeDevicePrekey(h(V.identity.device_prekey.encoded));
        verifyDevicePrekey(crypto, pk, cert.deviceKey);
        assert.equal(toHex(pk.prekey), toHex(crypto.x25519PublicKey(h(V.identity.device_prekey.prekey_secret))));
        V.identity.topic_keys.forEach((k: any, i: number) => {
          const tk = decodeTopicKey(h(k.encoded));
          verifyTopicKey(crypto, tk, ik(i));
          assert.equal(toHex(tk.signatureKey), toHex(crypto.ed25519PublicKey(h(k.signature_seed))));
          assert.equal(toHex(tk.encryptionKey), toHex(crypto.x25519PublicKey(h(k.encryption_secret))));
          assert.equal(toHex(encodeTopicKey(tk)), k.encoded);
        });
      });

      it('epoch key schedule, backward link and key share', () => {
        const E = V.epoch;
        const t = h(E.topic_id);
        assert.equal(toHex(epochCommitment(crypto, t, 0, h(E.epoch_0_secret))), E.epoch_0_commitment);
        assert.equal(toHex(epochCommitment(crypto, t, 1, h(E.epoch_1_secret))), E.epoch_1_commitment);
        assert.equal(toHex(epochPrk(crypto, t, 1, h(E.epoch_1_secret))), E.epoch_1_prk);
        assert.equal(toHex(sealBackwardLink(crypto, t, 1, h(E.epoch_1_secret), h(E.epoch_0_secret))), E.epoch_1_backward_link);
        assert.equal(toHex(openBackwardLink(crypto, t, 1, h(E.epoch_1_secret), h(E.epoch_1_backward_link), h(E.epoch_0_commitment))), E.epoch_0_secret);
        assert.equal(toHex(messageKey(crypto, h(E.epoch_1_prk), h(E.message_nonce))), E.epoch_1_message_key);
        const S = E.key_share;
        const encKey = crypto.x25519PublicKey(h(S.recipient_encryption_secret));
        const share = sealKeyShare(crypto, () => h(S.ikm_e), t, S.epoch, S.member_id, encKey, h(E.epoch_1_secret));
        assert.equal(toHex(share.enc), S.enc);
        assert.equal(toHex(share.ciphertext), S.ciphertext);
        const opened = openKeyShare(crypto, t, S.epoch, { memberId: S.member_id, enc: h(S.enc), ciphertext: h(S.ciphertext) }, h(S.recipient_encryption_secret), h(E.epoch_1_commitment));
        assert.equal(toHex(opened), E.epoch_1_secret);
      });

      /** Replays the topic's updates; returns the states and checks every share opens. */
      function replayTopic(): TopicState[] {
        const states: TopicState[] = [];
        let state: TopicState | null = null;
        const secrets = V.identity.topic_keys.map((k: any) => h(k.encryption_secret));
        for (const u of V.topic.updates) {
          const upd = decodeTopicUpdate(h(u.encoded));
          assert.equal(toHex(encodeTopicUpdate(upd)), u.encoded);
          state = applyUpdate(crypto, state, upd, {
            checkIdentity: (user, key) => {
              const i = users.findIndex((x) => x.user === user);
              if (i < 0 || toHex(key) !== users[i]!.identity_key) throw new RendezvousError('crypto.bad_certificate');
            },
          });
          assert.equal(toHex(topicUpdateHash(crypto, upd)), u.hash);
          assert.equal(state.epoch, u.epoch_after);
          assert.equal(state.pendingRekey, u.pending_rekey_after);
          assert.deepEqual([...state.members.values()].map((m) => ({ id: m.id, role: m.role, user: m.topicKey.user })), u.members_after);
          for (const s of upd.shares) {
            const secret = openKeyShare(crypto, state.topicId, state.epoch, s, secrets[s.memberId], state.commitments[state.epoch]!);
            assert.equal(toHex(secret), V.topic.epoch_secrets[state.epoch]);
          }
          if (upd.backwardLink) {
            const prev = openBackwardLink(crypto, state.topicId, state.epoch, h(V.topic.epoch_secrets[state.epoch]), upd.backwardLink, state.commitments[state.epoch - 1]!);
            assert.equal(toHex(prev), V.topic.epoch_secrets[state.epoch - 1]);
          }
          states.push(state);
        }
        return states;
      }

      function logOf(n: number): MemoryLog {
        const log = new MemoryLog(crypto);
        for (const e of V.log.entries.slice(0, n)) log.append(h(e.encoded));
        return log;
      }

      const messageContext = (log: MemoryLog): MessageContext => ({
        logSize: log.size,
        rootAt: (n) => log.root(n),
        epochStartSize: V.topic.epoch_start_size,
      });

      it('topic history: every update applies, hashes, and every share and link opens', () => {
        assert.equal(replayTopic().length, 6);
      });

      it('message: verifies against the log, opens to its content', () => {
        const state = replayTopic().at(-1)!;
        const log = logOf(V.message.head_size);
        const m = decodeMessage(h(V.message.encoded));
        assert.equal(toHex(encodeMessage(m)), V.message.encoded);
        assert.equal(toHex(log.root()), V.message.head_root);
        assert.equal(checkMessage(crypto, state, state.topicId, m, messageContext(log)).id, V.message.sender);
        const prk = epochPrk(crypto, state.topicId, state.epoch, h(V.topic.epoch_secrets[state.epoch]));
        const c = openMessage(crypto, state.topicId, prk, m, log.root(m.headSize));
        assert.equal(toHex(c.body), V.message.content_body);
        assert.equal(toHex(encodeContent(c)), V.message.padded_content);
      });

      it('log: leaves, roots, proofs and checkpoint', () => {
        const L = V.log;
        const log = new MemoryLog(crypto);
        for (const e of L.entries) {
          assert.equal(toHex(encodeLogEntry(decodeLogEntry(h(e.encoded)))), e.encoded);
          assert.equal(toHex(entryLeafHash(crypto, h(e.encoded))), e.leaf_hash);
          log.append(h(e.encoded));
        }
        L.roots.forEach((r: string, n: number) => assert.equal(toHex(log.root(n)), r));
        verifyInclusion(crypto, 2, 7, h(L.entries[2].leaf_hash), L.inclusion_proof_2_of_7.map(h), h(L.roots[7]));
        verifyConsistency(crypto, 3, 7, L.consistency_proof_3_to_7.map(h), h(L.roots[3]), h(L.roots[7]));
        const cp = decodeCheckpoint(h(L.checkpoint));
        verifyCheckpoint(crypto, cp, h(L.server_key), h(V.topic.topic_id));
        assert.equal(cp.size, L.entries.length);
        assert.equal(toHex(cp.root), L.roots.at(-1));
      });

      it('key bundle and file', () => {
        const b = decodeKeyBundle(h(V.key_bundle.encoded));
        verifyKeyBundle(crypto, b, decodeDeviceCert(h(V.identity.device_cert.encoded)), ik(0));
        const content = openKeyBundle(crypto, b, h(V.key_bundle.recipient_prekey_secret), ik(0));
        assert.equal(toHex(encodeTopicKey(content.topicKeys[0]!.topicKey)), V.identity.topic_keys[0].encoded);
        assert.equal(toHex(content.epochSecrets[0]!.secret), V.topic.epoch_secrets.at(-1));
        const F = V.file;
        const plain = deterministicRandom(crypto, utf8('rendezvous/v1 file vector'))(65546);
        const blob = sealFile(crypto, h(F.key), plain);
        assert.equal(blob.length, F.blob_size);
        assert.equal(toHex(crypto.sha256(blob)), F.blob_sha256);
        assert.equal(toHex(blob.subarray(65536 + 16)), F.last_chunk);
        const ref = decodeFileRef(h(F.file_ref));
        assert.equal(toHex(encodeFileRef(ref)), F.file_ref);
        assert.equal(toHex(ref.blobId), F.blob_sha256);
      });

      it('every MUST-reject vector fails with its code', () => {
        const states = replayTopic();
        const logBefore = logOf(V.message.head_size);
        const kinds = new Map<string, number>();
        for (const r of V.rejects) {
          kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
          const run = (): unknown => {
            const b = h(r.encoded);
            switch (r.kind) {
              case 'topic_update':
                return applyUpdate(crypto, r.state < 0 ? null : states[r.state]!, decodeTopicUpdate(b));
              case 'message': {
                const state = states.at(-1)!;
                const seen = new Set<string>(r.seen_nonces ?? []);
                const ctx = { ...messageContext(logBefore), seen: (n: Uint8Array) => seen.has(toHex(n)) };
                return checkMessage(crypto, state, state.topicId, decodeMessage(b), ctx);
              }
              case 'device_cert':
                return verifyDeviceCert(crypto, decodeDeviceCert(b), ik(0));
              case 'device_prekey': {
                const cert = decodeDeviceCert(h(V.identity.device_cert.encoded));
                return verifyDevicePrekey(crypto, decodeDevicePrekey(b), cert.deviceKey);
              }
              case 'topic_key':
                return verifyTopicKey(crypto, decodeTopicKey(b));
              case 'checkpoint':
                return verifyCheckpoint(crypto, decodeCheckpoint(b), h(V.log.server_key));
              case 'log_entry':
                return decodeLogEntry(b);
              default:
                throw new Error(`unknown reject kind ${r.kind}`);
            }
          };
          try {
            assertCode(run, r.code);
          } catch (e) {
            throw new Error(`reject vector "${r.name}": ${(e as Error).message}`);
          }
        }
        assert.ok(V.rejects.length >= 30, 'reject vectors present');
        assert.ok((kinds.get('topic_update') ?? 0) >= 10 && (kinds.get('message') ?? 0) >= 10, '(kinds.get(\'topic_update\') ?? 0) >= 10 && (kinds.get(\'message\') ?? 0) >= 10');
      });
    });
  }
});

