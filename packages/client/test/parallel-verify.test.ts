/**
 * Message signatures verified ahead, in parallel (TopicMirror.acceptPage with a
 * SignatureVerifier, issue 7): the mirror ends in exactly the state, verdicts and errors of
 * `accept` one entry at a time, whatever the verifier does, and the shortcut answers "valid"
 * only for the byte-identical triple that verified.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeLogEntry,
  encodeMessage,
  encodeTopicUpdate,
  isRendezvousError,
  messageSignedContent,
  messageTbs,
  signContent,
  SignLabel,
  signTopicUpdate,
  type CryptoProvider,
  type ErrorCode,
  VerifiedSignatures,
  withVerifiedSignatures,
  type SignatureTriple,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { TopicMirror } from '../src/topic-mirror.ts';
import { Contacts } from '../src/contacts.ts';
import type { PageEntry, SignatureVerifier } from '../src/page-verify.ts';
import { VerifyPool } from '@rendezvous/protocol/crypto/node-verify-pool';
import { LogBuilder, TestUser, random } from './log-builder.ts';

const alice = new TestUser('alice@alpha.test');
const bob = new TestUser('bob@alpha.test');
const carol = new TestUser('carol@alpha.test');
const dave = new TestUser('dave@alpha.test');

const pool = new VerifyPool({ threads: 2 });
after(() => pool.close());

function mirrorFor(b: LogBuilder, u: TestUser): TopicMirror {
  return new TopicMirror(crypto, b.topicId, b.hostKey, new Contacts(() => 0), u.lookup);
}

const pageOf = (entries: readonly Uint8Array[], from = 0): PageEntry[] => entries.slice(from).map((entry, i) => ({ index: from + i, entry }));

/** A verifier that records what it was asked and answered (around an honest one). */
function spy(inner: SignatureVerifier): SignatureVerifier & { asked: { triple: SignatureTriple; ok: boolean }[] } {
  const asked: { triple: SignatureTriple; ok: boolean }[] = [];
  return {
    threads: inner.threads,
    asked,
    async verifyBatch(triples) {
      const ok = await inner.verifyBatch(triples);
      triples.forEach((triple, i) => asked.push({ triple, ok: ok[i]! }));
      return ok;
    },
  };
}

/** Everything a mirror decided, comparable with deepEqual. */
function verdicts(m: TopicMirror) {
  const entries = [];
  for (let i = 0; i < m.size; i++) {
    const e = m.entry(i)!;
    entries.push(e.type === 'message' ? { i, type: e.type, rejected: e.rejected, sender: e.sender?.id ?? null } : { i, type: e.type, epoch: e.update.epoch });
  }
  return {
    size: m.size,
    root: m.root(),
    epoch: m.state?.epoch ?? null,
    members: m.state === null ? [] : [...m.state.members.values()].map((x) => [x.id, x.role]),
    alarms: m.alarms.map((a) => [a.index, a.code]),
    halted: m.halted?.code ?? null,
    entries,
    snapshot: m.snapshot(),
  };
}

/** Runs `accept` one by one (the reference) and acceptPage in pages of `pageSize`; returns both error codes. */
async function both(b: LogBuilder, u: TestUser, verifier: SignatureVerifier | null, pageSize = 1_000) {
  const ref = mirrorFor(b, u);
  let refErr: ErrorCode | null = null;
  try {
    for (let i = 0; i < b.entries.length; i++) ref.accept(i, b.entries[i]!);
  } catch (e) {
    assert.ok(isRendezvousError(e), `accept threw a RendezvousError, got ${String(e)}`);
    refErr = e.code;
  }
  const par = mirrorFor(b, u);
  let parErr: ErrorCode | null = null;
  try {
    const page = pageOf(b.entries);
    for (let k = 0; k < page.length; k += pageSize) await par.acceptPage(page.slice(k, k + pageSize), verifier);
  } catch (e) {
    assert.ok(isRendezvousError(e), `acceptPage threw a RendezvousError, got ${String(e)}`);
    parErr = e.code;
  }
  return { ref, par, refErr, parErr };
}

/** An honest log with membership changes in the middle and a few messages no server may accept. */
function mixedLog(): { b: LogBuilder; bad: Map<number, ErrorCode> } {
  const b = new LogBuilder('alpha.test', [
    { user: alice, role: 'admin' },
    { user: bob, role: 'participant' },
    { user: carol, role: 'observer' },
  ]);
  const bad = new Map<number, ErrorCode>();
  for (let i = 0; i < 20; i++) b.post(i % 2 === 0 ? alice : bob, `message ${i}`);
  // Signed over an older head (honest: a sender that had not seen the latest entries).
  for (let i = 0; i < 5; i++) b.entry('message', encodeMessage(b.message(bob, `older head ${i}`, { headSize: Math.max(1, b.log.size - 7) })));
  // A forged signature: the bytes of a valid one, with one bit flipped.
  const forged = b.message(alice, 'forged');
  forged.signature[5]! ^= 0x01;
  b.entry('message', encodeMessage(forged));
  bad.set(b.log.size - 1, 'crypto.bad_signature');
  // Signed over a head this member never saw (a forked view).
  b.entry('message', encodeMessage(b.message(bob, 'forked view', { headRoot: random(32) })));
  bad.set(b.log.size - 1, 'crypto.bad_signature');
  // An observer's post and a replay.
  b.entry('message', encodeMessage(b.message(carol, 'read-only')));
  bad.set(b.log.size - 1, 'topic.read_only');
  const once = b.message(alice, 'once');
  b.entry('message', encodeMessage(once));
  b.entry('message', encodeMessage(once));
  bad.set(b.log.size - 1, 'topic.replay');
  // Membership and epoch changes in the middle of a page; dave posts once he is a member.
  b.appendUpdate(b.change(alice, { type: 'add', role: 'participant', user: dave }));
  for (let i = 0; i < 6; i++) b.post(i % 2 === 0 ? dave : alice, `after add ${i}`);
  b.appendUpdate(b.change(alice, { type: 'rekey' }));
  // An old-epoch message sealed before the re-key, delivered after it.
  b.entry('message', encodeMessage(b.message(bob, 'stale', { epoch: 0 })));
  bad.set(b.log.size - 1, 'topic.stale_epoch');
  for (let i = 0; i < 12; i++) b.post([alice, bob, dave][i % 3]!, `new epoch ${i}`);
  b.appendUpdate(b.change(alice, { type: 'remove', memberId: b.memberId(bob) }));
  // A post by a removed member (its key is no longer in the state).
  b.entry('message', encodeMessage(b.message(bob, 'after removal', { sender: 1, epoch: b.state!.epoch })));
  bad.set(b.log.size - 1, 'topic.not_member');
  for (let i = 0; i < 8; i++) b.post(i % 2 === 0 ? alice : dave, `tail ${i}`);
  return { b, bad };
}

describe('acceptPage with a verifier pool', () => {
  it('ends in the same mirror as accept, entry by entry, with every rule break caught with its code', async () => {
    const { b, bad } = mixedLog();
    for (const pageSize of [1_000, 7, 1]) {
      const s = spy(pool);
      const { ref, par, refErr, parErr } = await both(b, dave, s, pageSize);
      assert.equal(refErr, null, 'the honest parts of the log do not halt');
      assert.equal(parErr, null, `pages of ${pageSize}: no halt either`);
      assert.deepEqual(verdicts(par), verdicts(ref), `pages of ${pageSize}: the same mirror`);
      assert.deepEqual(
        par.alarms.map((a) => [a.index, a.code]),
        [...bad].sort((x, y) => x[0] - y[0]),
        `pages of ${pageSize}: exactly the planted faults, with their codes`,
      );
      assert.ok(s.asked.filter((a) => a.ok).length >= 40, `pages of ${pageSize}: the pool verified most signatures (${s.asked.length} asked)`);
      par.checkCheckpoint(b.checkpoint());
      assert.deepEqual(par.checkpoint?.root, b.log.root(), 'the checkpoint matches the mirror built in pages');
    }
  });

  it('a tampered signature the pool checked is rejected as before: crypto.bad_signature, shown nowhere', async () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    for (let i = 0; i < 40; i++) b.post(i % 2 === 0 ? alice : bob, `m${i}`);
    const bodies = [...b.entries];
    // Tamper with one message in the middle of the page: one byte of its ciphertext.
    const victim = 21;
    const { decodeLogEntry, decodeMessage } = await import('@rendezvous/protocol');
    const e = decodeLogEntry(bodies[victim]!);
    const msg = decodeMessage(e.body);
    msg.ciphertext[0]! ^= 0x80;
    const tampered = encodeLogEntry({ type: 'message', timestamp: e.timestamp, body: encodeMessage(msg) });
    // The page with the tampered entry in place of the original.
    const entries = bodies.map((x, i) => (i === victim ? tampered : x));
    const ref = mirrorFor(b, bob);
    for (let i = 0; i < entries.length; i++) ref.accept(i, entries[i]!);
    const s = spy(pool);
    const par = mirrorFor(b, bob);
    await par.acceptPage(pageOf(entries), s);
    assert.deepEqual(verdicts(par), verdicts(ref), 'the same mirror as accept one by one');
    const v = par.entry(victim)!;
    assert.equal(v.type === 'message' && v.rejected, 'crypto.bad_signature', 'the tampered message is rejected with the code accept gives');
    assert.equal(par.read(victim), null, 'and never shown');
    const victimJob = s.asked.find((a) => a.triple.signature.every((x, i) => x === msg.signature[i]));
    assert.ok(victimJob !== undefined, 'the pool was asked about the tampered message');
    assert.equal(victimJob.ok, false, 'and answered invalid');
    // Later messages signed over heads that include the original entry now fail too, in both.
    assert.deepEqual(
      par.alarms.map((a) => [a.index, a.code]),
      ref.alarms.map((a) => [a.index, a.code]),
      'every later consequence is the same',
    );
  });

  it('a verifier that fails, refuses or answers nonsense changes nothing', async () => {
    const { b } = mixedLog();
    const liars: Record<string, SignatureVerifier> = {
      rejects: { threads: 1, verifyBatch: () => Promise.reject(new Error('down')) },
      throws: {
        threads: 1,
        verifyBatch: () => {
          throw new Error('sync failure');
        },
      },
      short: { threads: 1, verifyBatch: async (t) => t.slice(1).map(() => true) },
      truthy: { threads: 1, verifyBatch: async (t) => t.map(() => 1 as unknown as boolean) },
      'false for all': { threads: 1, verifyBatch: async (t) => t.map(() => false) },
    };
    const { ref } = await both(b, alice, null);
    for (const [name, v] of Object.entries(liars)) {
      const { par, parErr } = await both(b, alice, v);
      assert.equal(parErr, null, `${name}: no halt`);
      assert.deepEqual(verdicts(par), verdicts(ref), `${name}: the same mirror as accept`);
    }
    // A closed pool refuses every batch: the mirror verifies inline.
    const closed = new VerifyPool({ threads: 1 });
    await closed.close();
    const { par } = await both(b, alice, closed);
    assert.deepEqual(verdicts(par), verdicts(ref), 'closed pool: the same mirror as accept');
    // A pool that answers too late (every batch times out): the mirror verifies inline.
    const slow = new VerifyPool({ threads: 1, timeoutMs: 0 });
    try {
      const { par: p2, parErr } = await both(b, alice, slow);
      assert.equal(parErr, null, 'timed-out batches: no halt');
      assert.deepEqual(verdicts(p2), verdicts(ref), 'timed-out batches: the same mirror as accept');
    } finally {
      await slow.close();
    }
  });

  it('an update that halts the mirror in the middle of a page throws the same code at the same entry', async () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    for (let i = 0; i < 10; i++) b.post(alice, `m${i}`);
    const add = { ...b.change(alice, { type: 'add', role: 'admin', user: dave }), signer: b.memberId(bob) };
    b.entry('update', encodeTopicUpdate(signTopicUpdate(crypto, b.secretOf(bob).signatureSeed, add)));
    const haltAt = b.log.size - 1;
    for (let i = 0; i < 10; i++) b.post(alice, `after ${i}`);
    const { ref, par, refErr, parErr } = await both(b, alice, pool);
    assert.equal(refErr, 'topic.not_admin', 'accept halts with topic.not_admin');
    assert.equal(parErr, 'topic.not_admin', 'acceptPage halts with the same code');
    assert.equal(par.size, haltAt, 'at the same entry');
    assert.deepEqual(verdicts(par), verdicts(ref), 'with the same mirror');
    await assert.rejects(par.acceptPage(pageOf(b.entries, par.size), pool), (e: unknown) => isRendezvousError(e) && e.code === 'topic.not_admin', 'and stays halted');
  });

  it('pages that overlap what the mirror holds, or leave a gap, are handled as accept handles them', async () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    for (let i = 0; i < 30; i++) b.post(bob, `m${i}`);
    const m = mirrorFor(b, alice);
    await m.acceptPage(pageOf(b.entries).slice(0, 20), pool);
    await m.acceptPage(pageOf(b.entries).slice(10), pool); // redelivers 10..19: harmless
    assert.equal(m.size, 31, 'every entry once');
    assert.equal(m.alarms.length, 0, 'no alarm');
    const g = mirrorFor(b, alice);
    await assert.rejects(
      g.acceptPage(pageOf(b.entries).filter((e) => e.index !== 5), pool),
      (e: unknown) => isRendezvousError(e) && e.code === 'log.gap',
      'a withheld entry is log.gap, as with accept',
    );
    assert.equal(g.size, 5, 'the entries before the gap are kept');
  });
});

describe('the shortcut', () => {
  const sk = random(32);
  const pk = crypto.ed25519PublicKey(sk);
  const message = random(200);
  const signature = crypto.ed25519Sign(sk, message);
  const flip = (b: Uint8Array, i: number) => {
    const c = b.slice();
    c[i]! ^= 1;
    return c;
  };

  it('answers only for the byte-identical triple, once', () => {
    const v = new VerifiedSignatures();
    v.add({ publicKey: pk, message, signature });
    assert.equal(v.take(flip(pk, 0), message, signature), false, 'another key');
    assert.equal(v.take(pk, flip(message, 199), signature), false, 'one bit of the message');
    assert.equal(v.take(pk, message.subarray(0, 199), signature), false, 'a prefix of the message');
    assert.equal(v.take(pk, message, flip(signature, 63)), false, 'one bit of the signature');
    assert.equal(v.take(pk.slice(), message.slice(), signature.slice()), true, 'equal bytes in other arrays');
    assert.equal(v.take(pk, message, signature), false, 'used once only');
    v.add({ publicKey: pk, message, signature });
    const t = { publicKey: pk, message, signature };
    v.remove(t);
    assert.equal(v.size, 1, 'remove forgets only the very triple it is given');
    v.clear();
    assert.equal(v.take(pk, message, signature), false, 'cleared');
  });

  it("a provider with the shortcut asks the real one for everything it does not hold", () => {
    const calls: number[] = [];
    const real: CryptoProvider = Object.assign(Object.create(crypto) as CryptoProvider, {
      ed25519Verify: (a: Uint8Array, b: Uint8Array, c: Uint8Array) => {
        calls.push(1);
        return crypto.ed25519Verify(a, b, c);
      },
    });
    const v = new VerifiedSignatures();
    const p = withVerifiedSignatures(real, v);
    const bad = flip(signature, 10);
    assert.equal(p.ed25519Verify(pk, message, bad), false, 'an invalid signature is invalid');
    assert.equal(calls.length, 1, 'checked by the real provider');
    v.add({ publicKey: pk, message, signature });
    assert.equal(p.ed25519Verify(pk, flip(message, 3), signature), false, 'a message it does not hold is checked');
    assert.equal(calls.length, 2, 'by the real provider');
    assert.equal(p.ed25519Verify(pk, message, signature), true, 'the held triple');
    assert.equal(calls.length, 2, 'answered without an Ed25519 call');
    assert.deepEqual(p.sha256(message), crypto.sha256(message), 'every other function is the real one');
  });

  it('messageSignedContent is signContent(message, messageTbs(...)) byte for byte', () => {
    const b = new LogBuilder('alpha.test', [{ user: alice, role: 'admin' }]);
    for (const len of [16, 40, 63, 64, 65, 16_383 - 100, 16_383 - 99, 16_384, 70_000]) {
      const m = { ...b.message(alice, 'x'), ciphertext: random(len) };
      const root = random(32);
      assert.deepEqual(messageSignedContent(b.topicId, m, root), signContent(SignLabel.message, messageTbs(b.topicId, m, root)), `ciphertext of ${len} bytes`);
    }
  });
});
