/**
 * The verifying mirror (docs/client.md §Verification) against honest logs and against each
 * way a server can lie: every fault is detected with its own code, and honest logs raise no
 * alarm.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeLogEntry,
  encodeMessage,
  encodeTopicUpdate,
  fromUtf8,
  isRendezvousError,
  signTopicUpdate,
  topicUpdateTbs,
  type ErrorCode,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { TopicMirror } from '../src/topic-mirror.ts';
import { Contacts, safetyNumber } from '../src/contacts.ts';
import { LogBuilder, TestUser, random } from './log-builder.ts';

const alice = new TestUser('alice@alpha.test');
const bob = new TestUser('bob@alpha.test');
const carol = new TestUser('carol@alpha.test');
const dave = new TestUser('dave@alpha.test');

function mirrorFor(b: LogBuilder, u: TestUser, contacts = new Contacts(() => 0)): TopicMirror {
  return new TopicMirror(crypto, b.topicId, b.hostKey, contacts, u.lookup);
}

/** Feeds every entry of the builder from `from`, then its checkpoint. */
function feed(m: TopicMirror, b: LogBuilder, from = m.size): void {
  for (let i = from; i < b.entries.length; i++) m.accept(i, b.entries[i]!);
  m.checkCheckpoint(b.checkpoint());
}

function throwsCode(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isRendezvousError(e), `expected a RendezvousError, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return true;
  });
}

const text = (m: TopicMirror, i: number) => {
  const c = m.read(i);
  return c === null ? null : fromUtf8(c.body);
};

describe('an honest log', () => {
  it('verifies, decrypts, and tracks membership, epochs and checkpoints', () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: carol, role: 'observer' },
    ]);
    b.post(alice, 'hello');
    b.post(bob, 'hi');
    const m = mirrorFor(b, carol);
    feed(m, b);
    assert.equal(m.size, 3);
    assert.equal(text(m, 1), 'hello');
    assert.equal(text(m, 2), 'hi');
    assert.deepEqual(m.checkpoint?.size, 3);
    assert.equal(m.me()?.role, 'observer');
    assert.deepEqual(m.alarms, []);
    // Redelivery of an entry already held is harmless.
    assert.equal(m.accept(1, b.entries[1]!), null);
  });

  it('a member added to a shared topic reads the history through backward links; in a hidden one it does not', () => {
    for (const history of ['shared', 'hidden'] as const) {
      const b = new LogBuilder('alpha.test', [{ user: alice, role: 'admin' }], history);
      b.post(alice, 'before the rekey');
      b.appendUpdate(b.change(alice, { type: 'rekey' }));
      b.post(alice, 'before bob');
      b.appendUpdate(b.change(alice, { type: 'add', role: 'participant', user: dave }));
      b.post(alice, 'after bob');
      const m = mirrorFor(b, dave);
      feed(m, b);
      assert.equal(text(m, 5), 'after bob');
      if (history === 'shared') {
        assert.equal(text(m, 1), 'before the rekey');
        assert.equal(text(m, 3), 'before bob');
      } else {
        assert.equal(text(m, 1), null, 'hidden history: epoch 0 stays closed');
        assert.equal(text(m, 3), null, 'hidden history: the epoch before the join stays closed');
      }
    }
  });

  it('a removed member learns no later epoch', () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    const m = mirrorFor(b, bob);
    const bobId = b.memberId(bob);
    b.appendUpdate(b.change(alice, { type: 'remove', memberId: bobId }));
    b.post(alice, 'after bob left');
    feed(m, b);
    assert.equal(m.me(), undefined);
    assert.equal(m.epochSecret(1), undefined);
    assert.equal(text(m, 2), null);
  });
});

describe('a lying server is caught', () => {
  const base = () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: carol, role: 'observer' },
    ]);
    b.post(alice, 'one');
    b.post(bob, 'two');
    return b;
  };

  it('a withheld entry is log.gap', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    m.accept(0, b.entries[0]!);
    throwsCode(() => m.accept(2, b.entries[2]!), 'log.gap');
  });

  it('another entry at an index already held is log.fork', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    feed(m, b);
    const other = encodeLogEntry({ type: 'message', timestamp: b.clock, body: encodeMessage(b.message(bob, 'x', { headSize: 1 })) });
    throwsCode(() => m.accept(2, other), 'log.fork');
  });

  it('an entry delivered again at a new index is log.replay', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    feed(m, b);
    throwsCode(() => m.accept(3, b.entries[1]!), 'log.replay');
  });

  it('an entry older than its predecessor is log.reorder', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    feed(m, b);
    const old = encodeLogEntry({ type: 'message', timestamp: b.clock - 10, body: encodeMessage(b.message(bob, 'late')) });
    throwsCode(() => m.accept(3, old), 'log.reorder');
  });

  it('a smaller checkpoint than one seen before is log.rollback', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    feed(m, b);
    throwsCode(() => m.checkCheckpoint(b.checkpoint(2)), 'log.rollback');
  });

  it('a checkpoint whose root is not the mirrored log is log.fork (a forked view)', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    feed(m, b);
    // The server shows another member a different third entry and signs that log.
    const fork = new LogBuilder('alpha.test', [{ user: alice, role: 'admin' }]);
    throwsCode(() => m.checkCheckpoint(b.checkpoint(3, b.hostSeed, fork.log.root(1))), 'log.fork');
  });

  it('a checkpoint ahead of the entries is checked when they arrive', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    m.accept(0, b.entries[0]!);
    m.checkCheckpoint(b.checkpoint(3, b.hostSeed, random(32)));
    m.accept(1, b.entries[1]!);
    throwsCode(() => m.accept(2, b.entries[2]!), 'log.fork');
  });

  it('a checkpoint not signed by the pinned host key is log.bad_checkpoint', () => {
    const b = base();
    const m = mirrorFor(b, bob);
    for (let i = 0; i < 3; i++) m.accept(i, b.entries[i]!);
    throwsCode(() => m.checkCheckpoint(b.checkpoint(3, random(32))), 'log.bad_checkpoint');
  });

  it('a membership change no admin signed halts the mirror (topic.not_admin / crypto.bad_signature)', () => {
    const b = base();
    const m = mirrorFor(b, alice);
    feed(m, b);
    // Signed by bob, a participant, as the server would have to forge it.
    const add = { ...b.change(alice, { type: 'add', role: 'admin', user: dave }), signer: b.memberId(bob) };
    const forged = signTopicUpdate(crypto, b.secretOf(bob).signatureSeed, add);
    throwsCode(() => m.accept(3, b.entry('update', encodeTopicUpdate(forged))), 'topic.not_admin');
    throwsCode(() => m.accept(4, b.entries[3]!), 'topic.not_admin');
    assert.equal(m.halted?.code, 'topic.not_admin', 'the mirror stays halted');

    const c = base();
    const m2 = mirrorFor(c, alice);
    feed(m2, c);
    const real = c.change(alice, { type: 'role', memberId: c.memberId(carol), role: 'admin' });
    const tampered = { ...real, signature: crypto.ed25519Sign(random(32), topicUpdateTbs(real)) };
    throwsCode(() => m2.accept(3, c.entry('update', encodeTopicUpdate(tampered))), 'crypto.bad_signature');
  });

  it('a substituted identity key for a pinned user is identity.changed', () => {
    const contacts = new Contacts(() => 0);
    contacts.check(dave.user, dave.identityKey);
    const b = base();
    const m = mirrorFor(b, alice, contacts);
    feed(m, b);
    // The server hands alice a topic key for dave certified by a key of its own.
    const impostor = new TestUser(dave.user);
    const add = b.change(alice, { type: 'add', role: 'participant', user: impostor });
    throwsCode(() => m.accept(3, b.entry('update', encodeTopicUpdate(add))), 'identity.changed');
  });

  it("an observer's post a server let through is dropped with topic.read_only, and the log goes on", () => {
    const b = base();
    const m = mirrorFor(b, bob);
    b.entry('message', encodeMessage(b.message(carol, 'I am read-only')));
    b.post(alice, 'after');
    feed(m, b);
    const e = m.entry(3)!;
    assert.equal(e.type === 'message' && e.rejected, 'topic.read_only');
    assert.equal(text(m, 3), null, 'never shown');
    assert.equal(text(m, 4), 'after');
    assert.deepEqual(
      m.alarms.map((a) => [a.index, a.code]),
      [[3, 'topic.read_only']],
    );
  });

  it('a message posted again with a new timestamp is dropped with topic.replay', () => {
    const b = base();
    const msg = b.message(alice, 'once');
    b.entry('message', encodeMessage(msg));
    b.entry('message', encodeMessage(msg));
    const m = mirrorFor(b, bob);
    feed(m, b);
    assert.deepEqual(
      m.alarms.map((a) => [a.index, a.code]),
      [[4, 'topic.replay']],
    );
  });

  it('a message signed over a head this member never saw is dropped (crypto.bad_signature)', () => {
    const b = base();
    // The server showed bob another log: he signed (and encrypted under) that log's root.
    b.entry('message', encodeMessage(b.message(bob, 'forked view', { headRoot: random(32) })));
    const m = mirrorFor(b, alice);
    feed(m, b);
    assert.deepEqual(
      m.alarms.map((a) => a.code),
      ['crypto.bad_signature'],
    );
  });

  it('entries of another topic are refused', () => {
    const b = base();
    const other = new LogBuilder('alpha.test', [{ user: alice, role: 'admin' }]);
    const m = mirrorFor(b, alice);
    throwsCode(() => m.accept(0, other.entries[0]!), 'topic.wrong_topic');
  });
});

describe('snapshots', () => {
  it('a restored mirror has the same log, secrets and verdicts, and goes on verifying', () => {
    const b = new LogBuilder('alpha.test', [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: carol, role: 'observer' },
    ]);
    b.post(alice, 'one');
    b.entry('message', encodeMessage(b.message(carol, 'dropped')));
    b.appendUpdate(b.change(alice, { type: 'rekey' }));
    const replayed = b.message(bob, 'two');
    b.entry('message', encodeMessage(replayed));
    const m = mirrorFor(b, bob);
    feed(m, b);
    const r = TopicMirror.restore(crypto, m.snapshot(), new Contacts(() => 0), bob.lookup);
    assert.deepEqual(r.root(), m.root());
    assert.equal(r.size, m.size);
    assert.equal(text(r, 1), 'one');
    assert.equal(text(r, 4), 'two');
    const e = r.entry(2)!;
    assert.equal(e.type === 'message' && e.rejected, 'topic.read_only');
    assert.equal(r.checkpoint?.size, 5);
    // It goes on: a new entry verifies, and the replay of an old message is still caught.
    b.post(alice, 'three');
    b.entry('message', encodeMessage(replayed));
    feed(r, b);
    assert.equal(text(r, 5), 'three');
    assert.deepEqual(
      r.alarms.map((a) => [a.index, a.code]),
      [[6, 'topic.replay']],
    );
  });
});

describe('contacts', () => {
  it('pins on first contact, refuses a changed key, and agrees on safety numbers', () => {
    const c = new Contacts(() => 5);
    c.check(alice.user, alice.identityKey);
    throwsCode(() => c.check(alice.user, bob.identityKey), 'identity.changed');
    c.replace(alice.user, bob.identityKey);
    c.check(alice.user, bob.identityKey);
    const ab = safetyNumber(crypto, alice, bob);
    assert.equal(ab, safetyNumber(crypto, bob, alice), 'both sides see the same number');
    assert.match(ab, /^(\d{5} ){11}\d{5}$/);
    assert.notEqual(ab, safetyNumber(crypto, alice, carol));
    assert.notEqual(ab, safetyNumber(crypto, alice, { user: bob.user, identityKey: carol.identityKey }));
  });
});
