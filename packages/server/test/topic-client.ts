/**
 * A scripted topic client for server tests, built on the protocol core only (the SDK comes in
 * its own issue): it holds members' topic key secrets and the epoch secret, builds signed
 * updates and messages, and mirrors the topic log, verifying every entry and checkpoint the
 * server returns as a client would (applyUpdate, checkMessage, Merkle root, checkpoint
 * signature). Anything the server gets wrong fails the test here.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  MemoryLog,
  applyUpdate,
  buildCreate,
  buildUpdate,
  checkMessage,
  decodeCheckpoint,
  decodeLogEntry,
  decodeMessage,
  decodeTopicUpdate,
  encodeMessage,
  encodeTopicUpdate,
  epochPrk,
  equal,
  fromBase64url,
  memberByUser,
  newTopicId,
  sealMessage,
  signTopicKey,
  toBase64url,
  utf8,
  verifyCheckpoint,
  type ChangeAction,
  type History,
  type Message,
  type Role,
  type TopicKey,
  type TopicKeySecret,
  type TopicState,
  type TopicUpdate,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { call, type Call, type ScriptedUser, type Transport } from './helpers.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));

export function newClientId(): string {
  return toBase64url(random(12));
}

export function newTopicKey(u: ScriptedUser): { topicKey: TopicKey; secret: TopicKeySecret } {
  const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
  return { topicKey: signTopicKey(crypto, u.identitySeed, u.user, secret), secret };
}

/** POST with an Idempotency-Key (fresh unless given). */
export async function submit(t: Transport, path: string, body: unknown, token: string, clientId = newClientId()): Promise<Call> {
  const res = await t(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': clientId },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

export class ScriptedTopic {
  readonly id: Uint8Array;
  readonly path: string;
  /** Topic key secrets by user id. */
  readonly keys = new Map<string, TopicKeySecret>();
  /** The client's mirror of the log and of the state at its end. */
  readonly log = new MemoryLog(crypto);
  readonly entries: Uint8Array[] = [];
  state: TopicState | null = null;
  epochSecret: Uint8Array = new Uint8Array(0);
  epochStartSize = 0;
  lastCheckpoint: ReturnType<typeof decodeCheckpoint> | null = null;

  private constructor(
    readonly t: Transport,
    readonly host: string,
    readonly serverKey: Uint8Array,
    id: Uint8Array,
  ) {
    this.id = id;
    this.path = `/v1/topics/${toBase64url(id)}`;
  }

  /**
   * Builds (does not send) a create update: `members[0]` is the creating admin.
   * Returns the topic and the encoded update; `send()` posts it.
   */
  static build(
    t: Transport,
    host: string,
    serverKey: Uint8Array,
    members: { user: ScriptedUser; role: Role }[],
    history: History = 'shared',
  ): { topic: ScriptedTopic; update: TopicUpdate; epochSecret: Uint8Array } {
    const topic = new ScriptedTopic(t, host, serverKey, newTopicId(random));
    const ms = members.map((m) => {
      const k = newTopicKey(m.user);
      topic.keys.set(m.user.user, k.secret);
      return { role: m.role, topicKey: k.topicKey };
    });
    const built = buildCreate(crypto, random, {
      topicId: topic.id,
      host,
      history,
      members: ms,
      signer: 0,
      signatureSeed: topic.keys.get(members[0]!.user.user)!.signatureSeed,
    });
    topic.epochSecret = built.epochSecret;
    return { topic, update: built.update, epochSecret: built.epochSecret };
  }

  /** Creates the topic on the server as `members[0]` (device 0) and syncs. */
  static async create(
    t: Transport,
    host: string,
    serverKey: Uint8Array,
    members: { user: ScriptedUser; role: Role }[],
    history: History = 'shared',
  ): Promise<ScriptedTopic> {
    const { topic, update } = ScriptedTopic.build(t, host, serverKey, members, history);
    const r = await submit(t, '/v1/topics', { update: toBase64url(encodeTopicUpdate(update)) }, token(members[0]!.user));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    await topic.sync(members[0]!.user);
    return topic;
  }

  memberId(u: ScriptedUser): number {
    const m = memberByUser(this.state!, u.user);
    assert.ok(m !== undefined, `${u.user} is a member`);
    return m.id;
  }

  /** A signed, encrypted text message from `u` at the client's current head. */
  message(u: ScriptedUser, text: string, opts: { headSize?: number } = {}): Message {
    const headSize = opts.headSize ?? this.log.size;
    return sealMessage(crypto, random, {
      topicId: this.id,
      epoch: this.state!.epoch,
      epochPrk: epochPrk(crypto, this.id, this.state!.epoch, this.epochSecret),
      sender: this.memberId(u),
      signatureSeed: this.keys.get(u.user)!.signatureSeed,
      headSize,
      headRoot: this.log.root(headSize),
      content: { type: 'text', body: utf8(text) },
    });
  }

  async post(u: ScriptedUser, m: Message | Uint8Array, clientId?: string, device = 0): Promise<Call> {
    const bytes = m instanceof Uint8Array ? m : encodeMessage(m);
    return submit(this.t, `${this.path}/messages`, { message: toBase64url(bytes) }, token(u, device), clientId);
  }

  /** Builds an update signed by admin `u` (or the leaver); `add` also makes the newcomer's topic key. */
  change(u: ScriptedUser, action: ChangeAction | { type: 'add'; role: Role; user: ScriptedUser }, forceNewEpoch = false) {
    let a: ChangeAction;
    if (action.type === 'add' && 'user' in action) {
      const k = newTopicKey(action.user);
      this.keys.set(action.user.user, k.secret);
      a = { type: 'add', role: action.role, topicKey: k.topicKey };
    } else a = action as ChangeAction;
    return buildUpdate(crypto, random, this.state!, {
      signer: this.memberId(u),
      signatureSeed: this.keys.get(u.user)!.signatureSeed,
      epochSecret: this.epochSecret,
      action: a,
      forceNewEpoch,
    });
  }

  async update(u: ScriptedUser, update: TopicUpdate | Uint8Array, clientId?: string): Promise<Call> {
    const bytes = update instanceof Uint8Array ? update : encodeTopicUpdate(update);
    return submit(this.t, `${this.path}/updates`, { update: toBase64url(bytes) }, token(u), clientId);
  }

  /** Applies a built update after the server accepted it, and syncs. */
  async changeAndSync(u: ScriptedUser, action: Parameters<ScriptedTopic['change']>[1]): Promise<Call> {
    const built = this.change(u, action);
    const r = await this.update(u, built.update);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    this.epochSecret = built.epochSecret;
    await this.sync(u);
    return r;
  }

  /**
   * Fetches every entry after the mirror's end as `u`, verifying each as a client does, and
   * checks the server's checkpoint against the recomputed root.
   */
  async sync(u: ScriptedUser): Promise<void> {
    for (;;) {
      const r = await call(this.t, 'GET', `${this.path}/entries?from=${this.log.size}&limit=500`, undefined, token(u));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const cp = decodeCheckpoint(fromBase64url(r.body.checkpoint));
      verifyCheckpoint(crypto, cp, this.serverKey, this.id);
      assert.equal(cp.origin, this.host);
      for (const e of r.body.entries as { index: number; entry: string }[]) {
        assert.equal(e.index, this.log.size, 'entries arrive in order without gaps');
        this.accept(fromBase64url(e.entry));
      }
      if (this.log.size >= cp.size) {
        assert.equal(this.log.size, cp.size, 'no entries beyond the checkpoint');
        assert.ok(equal(this.log.root(), cp.root), 'checkpoint root matches the mirrored log');
        this.lastCheckpoint = cp;
        return;
      }
      if (r.body.entries.length === 0) assert.fail('server returned no entries below its checkpoint');
    }
  }

  private accept(entryBytes: Uint8Array): void {
    const e = decodeLogEntry(entryBytes);
    if (e.type === 'update') {
      const u = decodeTopicUpdate(e.body);
      this.state = applyUpdate(crypto, this.state, u);
      this.log.append(entryBytes);
      this.entries.push(entryBytes);
      if (u.commitment !== null) this.epochStartSize = this.log.size;
    } else {
      const m = decodeMessage(e.body);
      checkMessage(crypto, this.state!, this.id, m, {
        logSize: this.log.size,
        epochStartSize: this.epochStartSize,
        rootAt: (s) => this.log.root(s),
      });
      this.log.append(entryBytes);
      this.entries.push(entryBytes);
    }
  }
}

export function token(u: ScriptedUser, device = 0): string {
  const tk = u.devices[device]?.token;
  assert.ok(tk !== undefined, `${u.user} device ${device} is logged in`);
  return tk;
}

/**
 * A fresh mirror of an existing topic (empty log, no state): `sync` then fetches and verifies
 * the whole log from the start, as a client that (re)joins does. `from` shares its member key
 * secrets and epoch secret, so the mirror can also build messages once synced.
 */
export function attachTopic(t: Transport, host: string, serverKey: Uint8Array, id: Uint8Array, from?: ScriptedTopic): ScriptedTopic {
  // The constructor is private to keep ordinary tests on create/build; this is the one other way in.
  const Ctor = ScriptedTopic as unknown as new (t: Transport, host: string, serverKey: Uint8Array, id: Uint8Array) => ScriptedTopic;
  const topic = new Ctor(t, host, serverKey, id);
  if (from !== undefined) {
    for (const [user, secret] of from.keys) topic.keys.set(user, secret);
    topic.epochSecret = from.epochSecret;
  }
  return topic;
}

/** A topic on `server` created by `members[0]` (admin), with the others as participants. */
export function topicOf(
  t: Transport,
  server: { name: string; ctx: { serverKey: Uint8Array } },
  ...members: ScriptedUser[]
): Promise<ScriptedTopic> {
  return ScriptedTopic.create(
    t,
    server.name,
    server.ctx.serverKey,
    members.map((u, i) => ({ user: u, role: i === 0 ? ('admin' as const) : ('participant' as const) })),
  );
}

/** Posts a text as `u` (from `device`), expects 201, syncs; returns the entry's index. */
export async function postAndSync(topic: ScriptedTopic, u: ScriptedUser, text: string, device = 0): Promise<number> {
  const r = await topic.post(u, topic.message(u, text), undefined, device);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  await topic.sync(u);
  return r.body.index;
}
