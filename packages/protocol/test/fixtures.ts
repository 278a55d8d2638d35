/**
 * Test fixtures: users with identity and topic keys, and topics built through the real
 * builders, so each state-machine test starts from a valid state and breaks one rule.
 */
import { nodeCrypto } from '../src/crypto/node.ts';
import { deterministicRandom, type CryptoProvider, type Random } from '../src/crypto/provider.ts';
import { utf8 } from '../src/bytes.ts';
import { signTopicKey, type TopicKey, type TopicKeySecret } from '../src/identity.ts';
import { applyUpdate, type History, type Role, type TopicState, type TopicUpdate } from '../src/topic.ts';
import { buildCreate, buildUpdate, type ChangeAction } from '../src/topic-builder.ts';

export interface TestUser {
  name: string;
  identitySeed: Uint8Array;
  identityKey: Uint8Array;
  newTopicKey(): { topicKey: TopicKey; secret: TopicKeySecret };
}

export function makeUser(crypto: CryptoProvider, random: Random, name: string): TestUser {
  const identitySeed = random(32);
  return {
    name,
    identitySeed,
    identityKey: crypto.ed25519PublicKey(identitySeed),
    newTopicKey() {
      const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
      return { topicKey: signTopicKey(crypto, identitySeed, name, secret), secret };
    },
  };
}

/** A topic and everything its admin (member 0) and the other members hold. */
export class TestTopic {
  state: TopicState;
  epochSecret: Uint8Array;
  readonly secrets = new Map<number, TopicKeySecret>();
  readonly updates: TopicUpdate[] = [];

  constructor(
    readonly crypto: CryptoProvider,
    readonly random: Random,
    readonly users: TestUser[],
    roles: Role[],
    history: History,
  ) {
    const keys = users.map((u) => u.newTopicKey());
    keys.forEach((k, i) => this.secrets.set(i, k.secret));
    const { update, epochSecret } = buildCreate(crypto, random, {
      topicId: random(16),
      host: users[0]!.name.split('@')[1]!,
      history,
      members: keys.map((k, i) => ({ role: roles[i]!, topicKey: k.topicKey })),
      signer: 0,
      signatureSeed: keys[0]!.secret.signatureSeed,
    });
    this.state = applyUpdate(crypto, null, update);
    this.epochSecret = epochSecret;
    this.updates.push(update);
  }

  /** Builds (without applying) an update signed by `signer`. */
  build(action: ChangeAction, signer = 0, forceNewEpoch = false): { update: TopicUpdate; epochSecret: Uint8Array } {
    return buildUpdate(this.crypto, this.random, this.state, {
      signer,
      signatureSeed: this.secrets.get(signer)!.signatureSeed,
      epochSecret: this.epochSecret,
      action,
      forceNewEpoch,
    });
  }

  /** Builds and applies; returns the update. */
  change(action: ChangeAction, signer = 0, forceNewEpoch = false, secret?: TopicKeySecret): TopicUpdate {
    const { update, epochSecret } = this.build(action, signer, forceNewEpoch);
    this.state = applyUpdate(this.crypto, this.state, update);
    this.epochSecret = epochSecret;
    this.updates.push(update);
    if (action.type === 'add' && secret) this.secrets.set(this.state.nextMemberId - 1, secret);
    return update;
  }

  addUser(user: TestUser, role: Role = 'participant', forceNewEpoch = false): number {
    const k = user.newTopicKey();
    this.change({ type: 'add', role, topicKey: k.topicKey }, 0, forceNewEpoch, k.secret);
    return this.state.nextMemberId - 1;
  }
}

export function seeded(label: string, crypto: CryptoProvider = nodeCrypto): Random {
  return deterministicRandom(crypto, utf8(label));
}
