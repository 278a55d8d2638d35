/**
 * Builds real topic logs with the protocol core, without a server: users with identity and
 * topic keys, signed updates and messages, log entries with host timestamps, and checkpoints
 * signed by a host key. Tests (and the malicious-server scenarios) take an honest log from here
 * and then break one thing at a time.
 */
import { randomBytes } from 'node:crypto';
import {
  MemoryLog,
  applyUpdate,
  buildCreate,
  buildUpdate,
  encodeLogEntry,
  encodeMessage,
  encodeTopicUpdate,
  epochPrk,
  newTopicId,
  sealMessage,
  signCheckpoint,
  signTopicKey,
  topicKeyId,
  utf8,
  type ChangeAction,
  type Checkpoint,
  type History,
  type Message,
  type Role,
  type TopicKey,
  type TopicKeySecret,
  type TopicState,
  type TopicUpdate,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';

export const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

export class TestUser {
  readonly identitySeed = random(32);
  readonly identityKey = crypto.ed25519PublicKey(this.identitySeed);
  /** Topic key secrets this user's devices hold, by key id. */
  readonly keys = new Map<string, TopicKeySecret>();
  constructor(readonly user: string) {}

  newTopicKey(identitySeed = this.identitySeed): TopicKey {
    const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
    const k = signTopicKey(crypto, identitySeed, this.user, secret);
    this.keys.set(topicKeyId(k), secret);
    return k;
  }

  lookup = (keyId: string): TopicKeySecret | undefined => this.keys.get(keyId);
}

/** The honest host's view of one topic: what a correct server would store and sign. */
export class LogBuilder {
  readonly hostSeed = random(32);
  readonly hostKey = crypto.ed25519PublicKey(this.hostSeed);
  readonly topicId = newTopicId(random);
  readonly log = new MemoryLog(crypto);
  readonly entries: Uint8Array[] = [];
  state: TopicState | null = null;
  epochSecret: Uint8Array = new Uint8Array(32);
  epochStartSize = 0;
  clock = 1_764_000_000_000;
  /** Each user's topic key in this topic. */
  readonly keyOf = new Map<string, TopicKey>();

  constructor(
    readonly host: string,
    members: { user: TestUser; role: Role }[],
    history: History = 'shared',
  ) {
    const ms = members.map((m) => {
      const k = m.user.newTopicKey();
      this.keyOf.set(m.user.user, k);
      return { role: m.role, topicKey: k };
    });
    const creator = members[0]!.user;
    const built = buildCreate(crypto, random, {
      topicId: this.topicId,
      host,
      history,
      members: ms,
      signer: 0,
      signatureSeed: this.secretOf(creator).signatureSeed,
    });
    this.epochSecret = built.epochSecret;
    this.appendUpdate(built.update);
  }

  secretOf(u: TestUser): TopicKeySecret {
    return u.keys.get(topicKeyId(this.keyOf.get(u.user)!))!;
  }

  memberId(u: TestUser): number {
    for (const m of this.state!.members.values()) if (m.topicKey.user === u.user) return m.id;
    throw new Error(`${u.user} is not a member`);
  }

  /** Appends an update as the host would (validating it first, like a correct server). */
  appendUpdate(u: TopicUpdate): Uint8Array {
    this.state = applyUpdate(crypto, this.state, u);
    const e = this.entry('update', encodeTopicUpdate(u));
    if (u.commitment !== null) this.epochStartSize = this.log.size;
    return e;
  }

  /** Raw append of an entry body with the next timestamp (no validation: faults use this). */
  entry(type: 'update' | 'message', body: Uint8Array, timestamp = ++this.clock): Uint8Array {
    const bytes = encodeLogEntry({ type, timestamp, body });
    this.log.append(bytes);
    this.entries.push(bytes);
    return bytes;
  }

  change(admin: TestUser, action: ChangeAction | { type: 'add'; role: Role; user: TestUser }, forceNewEpoch = false): TopicUpdate {
    let a: ChangeAction;
    if (action.type === 'add' && 'user' in action) {
      const k = action.user.newTopicKey();
      this.keyOf.set(action.user.user, k);
      a = { type: 'add', role: action.role, topicKey: k };
    } else a = action as ChangeAction;
    const built = buildUpdate(crypto, random, this.state!, {
      signer: this.memberId(admin),
      signatureSeed: this.secretOf(admin).signatureSeed,
      epochSecret: this.epochSecret,
      action: a,
      forceNewEpoch,
    });
    this.epochSecret = built.epochSecret;
    return built.update;
  }

  message(u: TestUser, text: string, opts: { headSize?: number; epoch?: number; sender?: number; headRoot?: Uint8Array } = {}): Message {
    const headSize = opts.headSize ?? this.log.size;
    const epoch = opts.epoch ?? this.state!.epoch;
    return sealMessage(crypto, random, {
      topicId: this.topicId,
      epoch,
      epochPrk: epochPrk(crypto, this.topicId, epoch, this.epochSecret),
      sender: opts.sender ?? this.memberId(u),
      signatureSeed: this.secretOf(u).signatureSeed,
      headSize,
      headRoot: opts.headRoot ?? this.log.root(headSize),
      content: { type: 'text', body: utf8(text) },
    });
  }

  post(u: TestUser, text: string): Uint8Array {
    return this.entry('message', encodeMessage(this.message(u, text)));
  }

  checkpoint(size = this.log.size, seed = this.hostSeed, root = this.log.root(size)): Checkpoint {
    return signCheckpoint(crypto, seed, { origin: this.host, topicId: this.topicId, size, root, timestamp: this.clock });
  }
}
