/**
 * The topic state machine (spec §7.5): every MUST-reject rule of applyUpdate, each broken alone
 * on an otherwise valid, correctly signed update, asserting the exact error code.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { RendezvousError } from '../src/errors.ts';
import {
  applyUpdate,
  decodeTopicUpdate,
  encodeTopicUpdate,
  signTopicUpdate,
  topicUpdateHash,
  type TopicUpdate,
} from '../src/topic.ts';
import { buildCreate } from '../src/topic-builder.ts';
import { epochCommitment, openBackwardLink, openKeyShare, sealKeyShare } from '../src/epoch.ts';
import { signTopicKey } from '../src/identity.ts';
import { assertCode } from './helpers.ts';
import { TestTopic, makeUser, seeded } from './fixtures.ts';

const random = seeded('topic.test');
const alice = makeUser(crypto, random, 'alice@alpha.example');
const bob = makeUser(crypto, random, 'bob@alpha.example');
const carol = makeUser(crypto, random, 'carol@beta.example');
const dave = makeUser(crypto, random, 'dave@beta.example');

function topic(history: 'shared' | 'hidden' = 'shared') {
  return new TestTopic(crypto, random, [alice, bob, carol], ['admin', 'participant', 'observer'], history);
}

/** Re-signs `u` after `edit`, so only the edited rule is broken. */
function resigned(t: TestTopic, u: TopicUpdate, edit: (u: TopicUpdate) => TopicUpdate, signer = u.signer): TopicUpdate {
  const { signature: _, ...rest } = edit({ ...u });
  return signTopicUpdate(crypto, t.secrets.get(signer)!.signatureSeed, rest);
}

describe('create', () => {
  const keys = [alice, bob].map((u) => u.newTopicKey());
  const base = () =>
    buildCreate(crypto, random, {
      topicId: random(16),
      host: 'alpha.example',
      history: 'shared',
      members: [
        { role: 'admin', topicKey: keys[0]!.topicKey },
        { role: 'participant', topicKey: keys[1]!.topicKey },
      ],
      signer: 0,
      signatureSeed: keys[0]!.secret.signatureSeed,
    }).update;
  const resign = (u: TopicUpdate, seed = keys[0]!.secret.signatureSeed) => {
    const { signature: _, ...rest } = u;
    return signTopicUpdate(crypto, seed, rest);
  };

  it('accepts a valid create: epoch 0, ids 0..n-1, commitment, one share per member', () => {
    const s = applyUpdate(crypto, null, base());
    assert.equal(s.epoch, 0);
    assert.equal(s.members.size, 2);
    assert.equal(s.nextMemberId, 2);
    assert.equal(s.host, 'alpha.example');
  });
  it('rejects a create for an existing topic (topic.exists)', () => {
    const u = base();
    assertCode(() => applyUpdate(crypto, applyUpdate(crypto, null, u), u), 'topic.exists');
  });
  it('rejects a non-zero parent (topic.bad_parent)', () => {
    assertCode(() => applyUpdate(crypto, null, resign({ ...base(), parent: new Uint8Array(32).fill(1) })), 'topic.bad_parent');
  });
  it('rejects epoch ≠ 0 (topic.bad_epoch)', () => {
    assertCode(() => applyUpdate(crypto, null, resign({ ...base(), epoch: 1 })), 'topic.bad_epoch');
  });
  it('rejects a host that is not a server name (encoding.bad_value)', () => {
    const u = base();
    const a = u.action as Extract<TopicUpdate['action'], { type: 'create' }>;
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, action: { ...a, host: 'Alpha Example' } })), 'encoding.bad_value');
  });
  it('rejects a host other than the creator’s server (topic.wrong_host)', () => {
    const u = base();
    const a = u.action as Extract<TopicUpdate['action'], { type: 'create' }>;
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, action: { ...a, host: 'beta.example' } })), 'topic.wrong_host');
  });
  it('rejects member ids out of order (topic.bad_member_id)', () => {
    const u = base();
    const a = u.action as Extract<TopicUpdate['action'], { type: 'create' }>;
    const members = [a.members[0]!, { ...a.members[1]!, id: 5 }];
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, action: { ...a, members } })), 'topic.bad_member_id');
  });
  it('rejects a signer who is not a member (topic.not_member)', () => {
    assertCode(() => applyUpdate(crypto, null, resign({ ...base(), signer: 7 })), 'topic.not_member');
  });
  it('rejects a creator who is not an admin (topic.not_admin)', () => {
    assertCode(() => applyUpdate(crypto, null, resign({ ...base(), signer: 1 }, keys[1]!.secret.signatureSeed)), 'topic.not_admin');
  });
  it('rejects more members than the limit (topic.too_many_members)', () => {
    assertCode(() => applyUpdate(crypto, null, base(), { maxMembers: 1 }), 'topic.too_many_members');
  });
  it('rejects a missing commitment (topic.rekey_required)', () => {
    assertCode(() => applyUpdate(crypto, null, resign({ ...base(), commitment: null })), 'topic.rekey_required');
  });
  it('rejects a backward link (topic.bad_backward_link)', () => {
    assertCode(() => applyUpdate(crypto, null, resign({ ...base(), backwardLink: new Uint8Array(48) })), 'topic.bad_backward_link');
  });
  it('rejects a missing, extra or unordered key share (topic.bad_key_shares)', () => {
    const u = base();
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, shares: u.shares.slice(1) })), 'topic.bad_key_shares');
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, shares: [...u.shares].reverse() })), 'topic.bad_key_shares');
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, shares: [...u.shares, u.shares[1]!] })), 'topic.bad_key_shares');
  });
  it('rejects a bad signature (crypto.bad_signature)', () => {
    const u = base();
    const sig = u.signature.slice();
    sig[0]! ^= 1;
    assertCode(() => applyUpdate(crypto, null, { ...u, signature: sig }), 'crypto.bad_signature');
  });
  it('rejects a member whose topic key certificate does not verify (crypto.bad_signature)', () => {
    const u = base();
    const a = u.action as Extract<TopicUpdate['action'], { type: 'create' }>;
    const bad = { ...a.members[1]!, topicKey: { ...a.members[1]!.topicKey, user: 'mallory@alpha.example' } };
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, action: { ...a, members: [a.members[0]!, bad] } })), 'crypto.bad_signature');
  });
  it('passes every new member to checkIdentity (its error propagates)', () => {
    const seen: string[] = [];
    applyUpdate(crypto, null, base(), { checkIdentity: (user) => void seen.push(user) });
    assert.deepEqual(seen, ['alice@alpha.example', 'bob@alpha.example']);
    assertCode(
      () =>
        applyUpdate(crypto, null, base(), {
          checkIdentity: () => {
            throw new RendezvousError('crypto.bad_certificate');
          },
        }),
      'crypto.bad_certificate',
    );
  });
  it('rejects the same user twice (topic.already_member) and a reused topic key (topic.duplicate_key)', () => {
    const u = base();
    const a = u.action as Extract<TopicUpdate['action'], { type: 'create' }>;
    const again = { ...a.members[0]!, id: 1, role: 'participant' as const, topicKey: alice.newTopicKey().topicKey };
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, action: { ...a, members: [a.members[0]!, again] } })), 'topic.already_member');
    // Bob certifies Alice's topic signature key under his own identity.
    const stolen = signTopicKey(crypto, bob.identitySeed, bob.name, keys[0]!.secret);
    const dup = { ...a.members[1]!, topicKey: stolen };
    assertCode(() => applyUpdate(crypto, null, resign({ ...u, action: { ...a, members: [a.members[0]!, dup] } })), 'topic.duplicate_key');
  });
});

describe('updates after create', () => {
  it('rejects an update with no topic (topic.unknown), another topic (topic.wrong_topic), a stale parent (topic.bad_parent)', () => {
    const t = topic();
    const { update } = t.build({ type: 'rekey' });
    assertCode(() => applyUpdate(crypto, null, update), 'topic.unknown');
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, topicId: new Uint8Array(16) }))), 'topic.wrong_topic');
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, parent: new Uint8Array(32) }))), 'topic.bad_parent');
    // Replaying an already applied update is a stale parent too.
    t.change({ type: 'rekey' });
    assertCode(() => applyUpdate(crypto, t.state, t.updates[1]!), 'topic.bad_parent');
  });
  it('rejects a signer who is not a member (topic.not_member) or not an admin (topic.not_admin)', () => {
    const t = topic();
    const { update } = t.build({ type: 'rekey' }, 1);
    assertCode(() => applyUpdate(crypto, t.state, update), 'topic.not_admin');
    const { update: u2 } = t.build({ type: 'rekey' });
    assertCode(() => applyUpdate(crypto, t.state, { ...u2, signer: 9 }), 'topic.not_member');
  });
  it('rejects a wrong epoch (topic.bad_epoch)', () => {
    const t = topic();
    const { update } = t.build({ type: 'rekey' });
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, epoch: 2 }))), 'topic.bad_epoch');
    const { update: role } = t.build({ type: 'role', memberId: 1, role: 'observer' });
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, role, (u) => ({ ...u, epoch: 1 }))), 'topic.bad_epoch');
  });
  it('rejects a bad signature (crypto.bad_signature)', () => {
    const t = topic();
    const { update } = t.build({ type: 'rekey' });
    const sig = update.signature.slice();
    sig[63]! ^= 0x10;
    assertCode(() => applyUpdate(crypto, t.state, { ...update, signature: sig }), 'crypto.bad_signature');
  });
  it('rejects shares that are not one per member who must get one (topic.bad_key_shares)', () => {
    const t = topic();
    const { update } = t.build({ type: 'rekey' });
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, shares: u.shares.slice(0, 2) }))), 'topic.bad_key_shares');
    const { update: role } = t.build({ type: 'role', memberId: 1, role: 'admin' });
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, role, (u) => ({ ...u, shares: update.shares }))), 'topic.bad_key_shares');
  });
});

describe('add', () => {
  it('adds in O(1) to a shared-history topic: same epoch, one share, no link', () => {
    const t = topic('shared');
    const { update } = t.build({ type: 'add', role: 'participant', topicKey: dave.newTopicKey().topicKey });
    assert.equal(update.epoch, 0);
    assert.equal(update.commitment, null);
    assert.equal(update.backwardLink, null);
    assert.deepEqual(update.shares.map((s) => s.memberId), [3]);
    const s = applyUpdate(crypto, t.state, update);
    assert.equal(s.members.get(3)!.topicKey.user, dave.name);
  });
  it('adds with a new epoch in a shared topic: link included, shares to all', () => {
    const t = topic('shared');
    const { update } = t.build({ type: 'add', role: 'participant', topicKey: dave.newTopicKey().topicKey }, 0, true);
    assert.equal(update.epoch, 1);
    assert.notEqual(update.backwardLink, null);
    assert.equal(update.shares.length, 4);
    applyUpdate(crypto, t.state, update);
  });
  it('requires a new epoch and no backward link in a hidden-history topic', () => {
    const t = topic('hidden');
    const { update } = t.build({ type: 'add', role: 'participant', topicKey: dave.newTopicKey().topicKey });
    assert.equal(update.epoch, 1);
    assert.equal(update.backwardLink, null);
    applyUpdate(crypto, t.state, update);
    assertCode(
      () =>
        applyUpdate(
          crypto,
          t.state,
          resigned(t, update, (u) => ({ ...u, epoch: 0, commitment: null, shares: u.shares.filter((s) => s.memberId === 3) })),
        ),
      'topic.rekey_required',
    );
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, backwardLink: new Uint8Array(48) }))), 'topic.bad_backward_link');
  });
  it('requires a new epoch after a leave until an admin re-keys (topic.rekey_required)', () => {
    const t = topic('shared');
    t.change({ type: 'leave' }, 1);
    assert.equal(t.state.pendingRekey, true);
    const { update } = t.build({ type: 'add', role: 'participant', topicKey: dave.newTopicKey().topicKey });
    assert.equal(update.epoch, 1, 'the builder starts an epoch');
    const o1 = resigned(t, update, (u) => ({ ...u, epoch: 0, commitment: null, backwardLink: null, shares: u.shares.filter((s) => s.memberId === 3) }));
    assertCode(() => applyUpdate(crypto, t.state, o1), 'topic.rekey_required');
    t.change({ type: 'rekey' });
    assert.equal(t.state.pendingRekey, false);
  });
  it('rejects the wrong member id (topic.bad_member_id), an existing user (topic.already_member), the member limit', () => {
    const t = topic();
    const { update } = t.build({ type: 'add', role: 'participant', topicKey: dave.newTopicKey().topicKey });
    const a = update.action as Extract<TopicUpdate['action'], { type: 'add' }>;
    assertCode(
      () => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, action: { type: 'add', member: { ...a.member, id: 2 } } }))),
      'topic.bad_member_id',
    );
    assertCode(() => applyUpdate(crypto, t.state, update, { maxMembers: 3 }), 'topic.too_many_members');
    const { update: again } = t.build({ type: 'add', role: 'participant', topicKey: bob.newTopicKey().topicKey });
    assertCode(() => applyUpdate(crypto, t.state, again), 'topic.already_member');
  });
  it('rejects a newcomer whose certificate does not verify (crypto.bad_signature) or is not trusted', () => {
    const t = topic();
    const k = dave.newTopicKey().topicKey;
    const { update } = t.build({ type: 'add', role: 'participant', topicKey: { ...k, signature: k.signature.map((b, i) => (i === 0 ? b ^ 1 : b)) } });
    assertCode(() => applyUpdate(crypto, t.state, update), 'crypto.bad_signature');
    const { update: ok } = t.build({ type: 'add', role: 'participant', topicKey: k });
    assertCode(
      () =>
        applyUpdate(crypto, t.state, ok, {
          checkIdentity: () => {
            throw new RendezvousError('crypto.bad_certificate');
          },
        }),
      'crypto.bad_certificate',
    );
  });
});

describe('remove, leave, role, rekey', () => {
  it('remove starts an epoch with a link and shares to the remaining members only', () => {
    const t = topic();
    const u = t.change({ type: 'remove', memberId: 1 });
    assert.equal(u.epoch, 1);
    assert.deepEqual(u.shares.map((s) => s.memberId), [0, 2]);
    assert.equal(t.state.members.has(1), false);
  });
  it('rejects removing a non-member (topic.not_member), oneself (topic.bad_member_id), or without a new epoch', () => {
    const t = topic();
    const { update } = t.build({ type: 'remove', memberId: 1 });
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, action: { type: 'remove', memberId: 9 } }))), 'topic.not_member');
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, action: { type: 'remove', memberId: 0 } }))), 'topic.bad_member_id');
    assertCode(
      () => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, epoch: 0, commitment: null, backwardLink: null, shares: [] }))),
      'topic.rekey_required',
    );
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, backwardLink: null }))), 'topic.bad_backward_link');
  });
  it('leave is signed by the leaver, keeps the epoch and sets pendingRekey; the last admin cannot leave others behind', () => {
    const t = topic();
    const u = t.change({ type: 'leave' }, 2);
    assert.equal(u.epoch, 0);
    assert.equal(t.state.pendingRekey, true);
    const { update } = t.build({ type: 'leave' }, 0);
    assertCode(() => applyUpdate(crypto, t.state, update), 'topic.last_admin');
    const { update: bobLeaves } = t.build({ type: 'leave' }, 1);
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, bobLeaves, (x) => ({ ...x, commitment: new Uint8Array(32), epoch: 1 }))), 'topic.rekey_required');
  });
  it('the last member may leave, leaving an empty topic', () => {
    const t = new TestTopic(crypto, random, [alice], ['admin'], 'shared');
    t.change({ type: 'leave' }, 0);
    assert.equal(t.state.members.size, 0);
  });
  it('role: rejects no change (topic.no_change), a non-member (topic.not_member), demoting the last admin (topic.last_admin)', () => {
    const t = topic();
    const { update } = t.build({ type: 'role', memberId: 1, role: 'participant' });
    assertCode(() => applyUpdate(crypto, t.state, update), 'topic.no_change');
    const { update: u2 } = t.build({ type: 'role', memberId: 7, role: 'admin' });
    assertCode(() => applyUpdate(crypto, t.state, u2), 'topic.not_member');
    const { update: u3 } = t.build({ type: 'role', memberId: 0, role: 'participant' });
    assertCode(() => applyUpdate(crypto, t.state, u3), 'topic.last_admin');
    t.change({ type: 'role', memberId: 1, role: 'admin' });
    t.change({ type: 'role', memberId: 0, role: 'observer' }, 0);
    assert.equal(t.state.members.get(0)!.role, 'observer');
  });
  it('a role change must not start an epoch (topic.rekey_required)', () => {
    const t = topic();
    const { update } = t.build({ type: 'role', memberId: 1, role: 'admin' });
    assertCode(() => applyUpdate(crypto, t.state, resigned(t, update, (u) => ({ ...u, epoch: 1, commitment: new Uint8Array(32) }))), 'topic.rekey_required');
  });
});

describe('epoch secrets (client side)', () => {
  it('every member opens its share to the committed secret, and walks backward links to epoch 0', () => {
    const t = topic('shared');
    const secrets = [t.epochSecret];
    t.change({ type: 'rekey' });
    secrets.push(t.epochSecret);
    t.change({ type: 'remove', memberId: 1 });
    secrets.push(t.epochSecret);
    const last = t.updates.at(-1)!;
    for (const share of last.shares) {
      const s = openKeyShare(crypto, t.state.topicId, 2, share, t.secrets.get(share.memberId)!.encryptionSecret, last.commitment!);
      assert.deepEqual(s, secrets[2]);
    }
    let secret = secrets[2]!;
    for (let e = 2; e > 0; e--) {
      secret = openBackwardLink(crypto, t.state.topicId, e, secret, t.updates[e]!.backwardLink!, t.state.commitments[e - 1]!);
      assert.deepEqual(secret, secrets[e - 1]);
    }
  });
  it('rejects a share that opens to a secret other than the committed one (topic.bad_key_share)', () => {
    const t = topic();
    const k = t.secrets.get(1)!;
    const m = t.state.members.get(1)!;
    const wrong = sealKeyShare(crypto, random, t.state.topicId, 0, 1, m.topicKey.encryptionKey, random(32));
    assertCode(() => openKeyShare(crypto, t.state.topicId, 0, wrong, k.encryptionSecret, t.state.commitments[0]!), 'topic.bad_key_share');
    const good = t.updates[0]!.shares[1]!;
    assertCode(() => openKeyShare(crypto, t.state.topicId, 0, good, t.secrets.get(2)!.encryptionSecret, t.state.commitments[0]!), 'topic.bad_key_share');
    assertCode(() => openKeyShare(crypto, t.state.topicId, 0, { ...good, memberId: 2 }, k.encryptionSecret, t.state.commitments[0]!), 'topic.bad_key_share');
  });
  it('rejects a backward link that does not open to the previous commitment (topic.bad_backward_link)', () => {
    const t = topic();
    t.change({ type: 'rekey' });
    const link = t.updates[1]!.backwardLink!;
    assertCode(() => openBackwardLink(crypto, t.state.topicId, 1, random(32), link, t.state.commitments[0]!), 'topic.bad_backward_link');
    assertCode(() => openBackwardLink(crypto, t.state.topicId, 1, t.epochSecret, link, epochCommitment(crypto, t.state.topicId, 0, random(32))), 'topic.bad_backward_link');
  });
});

describe('encoding', () => {
  it('round-trips every update kind and hashes the encoding', () => {
    const t = topic();
    t.addUser(dave);
    t.change({ type: 'role', memberId: 1, role: 'admin' });
    t.change({ type: 'remove', memberId: 2 });
    t.change({ type: 'leave' }, 1);
    t.change({ type: 'rekey' });
    for (const u of t.updates) {
      const b = encodeTopicUpdate(u);
      assert.deepEqual(decodeTopicUpdate(b), u);
      assert.deepEqual(encodeTopicUpdate(decodeTopicUpdate(b)), b);
    }
    assert.deepEqual(t.state.head, topicUpdateHash(crypto, t.updates.at(-1)!));
  });
  it('rejects unknown versions, actions, roles and trailing bytes', () => {
    const t = topic();
    const b = encodeTopicUpdate(t.updates[0]!);
    assertCode(() => decodeTopicUpdate(Uint8Array.of(2, ...b.subarray(1))), 'encoding.unknown_version');
    assertCode(() => decodeTopicUpdate(Uint8Array.of(...b, 0)), 'encoding.trailing_bytes');
    assertCode(() => decodeTopicUpdate(b.subarray(0, b.length - 1)), 'encoding.truncated');
    const actionAt = 1 + 16 + 32 + 1 + 1;
    const bad = b.slice();
    bad[actionAt] = 9;
    assertCode(() => decodeTopicUpdate(bad), 'encoding.bad_value');
  });
});
