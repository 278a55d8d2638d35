/**
 * Messages (spec §8): seal/open with both providers, and each MUST-reject rule of checkMessage.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import { utf8, fromUtf8 } from '../src/bytes.ts';
import { epochPrk } from '../src/epoch.ts';
import {
  AEAD_TAG_SIZE,
  checkMessage,
  decodeContent,
  decodeMessage,
  encodeContent,
  encodeMessage,
  openMessage,
  padme,
  sealMessage,
  type Message,
  type MessageContext,
} from '../src/message.ts';
import { MemoryLog } from '../src/merkle.ts';
import { assertCode } from './helpers.ts';
import { TestTopic, makeUser, seeded } from './fixtures.ts';

const random = seeded('message.test');
const alice = makeUser(crypto, random, 'alice@alpha.example');
const bob = makeUser(crypto, random, 'bob@alpha.example');
const carol = makeUser(crypto, random, 'carol@beta.example');

function setup() {
  const t = new TestTopic(crypto, random, [alice, bob, carol], ['admin', 'participant', 'observer'], 'shared');
  const log = new MemoryLog(crypto);
  log.append(utf8('entry 0: the create update'));
  log.append(utf8('entry 1'));
  const ctx: MessageContext = { logSize: log.size, rootAt: (n) => log.root(n), epochStartSize: 1 };
  const send = (sender: number, text: string, over: Partial<{ headSize: number; epoch: number }> = {}): Message =>
    sealMessage(crypto, random, {
      topicId: t.state.topicId,
      epoch: over.epoch ?? t.state.epoch,
      epochPrk: epochPrk(crypto, t.state.topicId, t.state.epoch, t.epochSecret),
      sender,
      signatureSeed: t.secrets.get(sender)!.signatureSeed,
      headSize: over.headSize ?? log.size,
      headRoot: log.root(over.headSize ?? log.size),
      content: { type: 'text', body: utf8(text) },
    });
  return { t, log, ctx, send };
}

describe('message seal and open', () => {
  it('round-trips, verifies and decrypts under both providers', () => {
    const { t, log, ctx, send } = setup();
    const m = send(1, 'hello');
    const wire = encodeMessage(m);
    assert.deepEqual(encodeMessage(decodeMessage(wire)), wire);
    for (const p of [crypto, nobleCrypto]) {
      const sender = checkMessage(p, t.state, t.state.topicId, decodeMessage(wire), ctx);
      assert.equal(sender.id, 1);
      const prk = epochPrk(p, t.state.topicId, 0, t.epochSecret);
      const c = openMessage(p, t.state.topicId, prk, m, log.root(m.headSize));
      assert.equal(fromUtf8(c.body), 'hello');
    }
  });
  it('has a small fixed overhead (spec §8.1)', () => {
    const { send } = setup();
    const m = send(1, '');
    const overhead = encodeMessage(m).length;
    // version 1 + epoch 1 + sender 1 + head_size 1 + nonce 16 + ct length 1 + content header 3 + tag 16 + sig 64
    assert.equal(overhead, 1 + 1 + 1 + 1 + 16 + 1 + 3 + AEAD_TAG_SIZE + 64);
  });
  it('pads content to the Padmé length with zeros, and rejects non-zero padding', () => {
    for (const n of [0, 1, 10, 63, 64, 100, 1000, 16383, 16384, 70000]) {
      const body = new Uint8Array(n).fill(0x61);
      const enc = encodeContent({ type: 'text', body });
      assert.ok(enc.length >= padme(n + 3) && enc.length <= padme(n + 3) + 1, `length ${n}`);
      assert.deepEqual(decodeContent(enc).body, body);
    }
    const enc = encodeContent({ type: 'text', body: utf8('x') }, 40);
    assert.equal(enc.length, 40);
    enc[enc.length - 1] = 1;
    assertCode(() => decodeContent(enc), 'encoding.bad_value');
  });
  it('checks bodies by content type: UTF-8 text, JSON, a JSON object for topic-info, a FileRef', () => {
    const ok = (type: 'text' | 'json' | 'file' | 'topic-info', body: Uint8Array) => decodeContent(encodeContent({ type, body }));
    ok('text', utf8('héllo'));
    ok('json', utf8('[1,2]'));
    ok('topic-info', utf8('{"name":"team"}'));
    assertCode(() => ok('text', Uint8Array.of(0xc3, 0x28)), 'encoding.bad_value');
    assertCode(() => ok('json', utf8('{nope')), 'encoding.bad_value');
    assertCode(() => ok('topic-info', utf8('[1]')), 'encoding.bad_value');
    assertCode(() => ok('file', utf8('not a file ref')), 'encoding.unknown_version');
    assertCode(() => ok('file', Uint8Array.of(1, 2, 3)), 'encoding.truncated');
  });
  it('Padmé matches the PURBs paper examples', () => {
    assert.deepEqual([0, 1, 2, 9, 10, 100, 1000, 1025].map(padme), [0, 1, 2, 10, 10, 104, 1024, 1088]);
  });
  it('fails to decrypt with another epoch secret (crypto.decrypt_failed)', () => {
    const { t, log, send } = setup();
    const m = send(1, 'hello');
    const wrong = epochPrk(crypto, t.state.topicId, 0, random(32));
    assertCode(() => openMessage(crypto, t.state.topicId, wrong, m, log.root(m.headSize)), 'crypto.decrypt_failed');
  });
});

describe('checkMessage MUST-reject rules', () => {
  it('rejects a sender who is not a member (topic.not_member), e.g. after removal', () => {
    const { t, ctx, send } = setup();
    const m = send(1, 'hi');
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, { ...m, sender: 9 }, ctx), 'topic.not_member');
    t.change({ type: 'remove', memberId: 1 });
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, m, ctx), 'topic.not_member');
  });
  it('rejects an observer (topic.read_only)', () => {
    const { t, ctx, send } = setup();
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, send(2, 'hi'), ctx), 'topic.read_only');
  });
  it('rejects an old epoch (topic.stale_epoch) and a future one (topic.bad_epoch)', () => {
    const { t, ctx, send } = setup();
    const old = send(1, 'hi');
    t.change({ type: 'rekey' });
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, old, ctx), 'topic.stale_epoch');
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, send(1, 'hi', { epoch: 2 }), ctx), 'topic.bad_epoch');
  });
  it('rejects a head outside [epoch start, log size] (log.bad_head)', () => {
    const { t, ctx, send, log } = setup();
    const m = send(1, 'hi');
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, { ...m, headSize: 3 }, ctx), 'log.bad_head');
    log.append(utf8('entry 2'));
    const early = send(1, 'hi', { headSize: 1 });
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, early, { ...ctx, logSize: 3, epochStartSize: 2 }), 'log.bad_head');
  });
  it('rejects a nonce already in the topic (topic.replay)', () => {
    const { t, ctx, send } = setup();
    const m = send(1, 'hi');
    const seen = new Set<string>();
    const c = { ...ctx, seen: (n: Uint8Array) => seen.has(Buffer.from(n).toString('hex')) };
    checkMessage(crypto, t.state, t.state.topicId, m, c);
    seen.add(Buffer.from(m.nonce).toString('hex'));
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, m, c), 'topic.replay');
  });
  it('rejects a tampered ciphertext, another topic, or a different log at head_size (crypto.bad_signature)', () => {
    const { t, ctx, send } = setup();
    const m = send(1, 'hi');
    const ct = m.ciphertext.slice();
    ct[0]! ^= 1;
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, { ...m, ciphertext: ct }, ctx), 'crypto.bad_signature');
    assertCode(() => checkMessage(crypto, t.state, new Uint8Array(16), m, ctx), 'crypto.bad_signature');
    const forked = new MemoryLog(crypto);
    forked.append(utf8('entry 0: the create update'));
    forked.append(utf8('entry 1, as another member was shown it'));
    assertCode(
      () => checkMessage(crypto, t.state, t.state.topicId, m, { ...ctx, rootAt: (n) => forked.root(n) }),
      'crypto.bad_signature',
    );
  });
  it('rejects a message signed by another member’s key under its id (crypto.bad_signature)', () => {
    const { t, ctx, send } = setup();
    assertCode(() => checkMessage(crypto, t.state, t.state.topicId, { ...send(0, 'hi'), sender: 1 }, ctx), 'crypto.bad_signature');
  });
  it('decoder rejects unknown version, head size 0, short ciphertext and trailing bytes', () => {
    const { send } = setup();
    const wire = encodeMessage(send(1, 'hi'));
    assertCode(() => decodeMessage(Uint8Array.of(9, ...wire.subarray(1))), 'encoding.unknown_version');
    assertCode(() => decodeMessage(Uint8Array.of(...wire, 0)), 'encoding.trailing_bytes');
    const zeroHead = wire.slice();
    zeroHead[3] = 0;
    assertCode(() => decodeMessage(zeroHead), 'encoding.bad_value');
    const m = decodeMessage(wire);
    assertCode(() => decodeMessage(encodeMessage({ ...m, ciphertext: new Uint8Array(15) })), 'encoding.bad_value');
  });
});
