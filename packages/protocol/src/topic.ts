/**
 * Topic updates and the topic state machine (spec §7).
 *
 * A topic's membership, roles and epochs change only through signed TopicUpdates, chained by
 * hash (each names its parent), validated by `applyUpdate` — the same function on the server
 * (before it appends) and on every member's client (on receipt). Updates and messages share
 * one log (spec §9); this module knows nothing about the log except what callers pass in.
 */
import { RendezvousError } from './errors.ts';
import { Reader, Writer, decodeAll } from './encoding.ts';
import { equal, toHex } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { SignLabel, requireSignature, signWithLabel } from './sign.ts';
import { type TopicKey, MAX_SERVER_NAME_BYTES, isServerName, parseUserId, readTopicKey, verifyTopicKey, writeTopicKey } from './identity.ts';
import {
  BACKWARD_LINK_SIZE,
  COMMITMENT_SIZE,
  KEY_SHARE_CT_SIZE,
  KEY_SHARE_ENC_SIZE,
  type KeyShare,
} from './epoch.ts';

export const TOPIC_VERSION = 1;
export const TOPIC_ID_SIZE = 16;
export const HASH_SIZE = 32;
/** Spec §7.1: the largest membership a topic may have. */
export const MAX_MEMBERS = 10_000;
export const MAX_MEMBER_ID = 0x3fffffff;

export type Role = 'admin' | 'participant' | 'observer';
export type History = 'shared' | 'hidden';

const ROLE_CODE: Record<Role, number> = { admin: 1, participant: 2, observer: 3 };
const ROLE_BY_CODE: Record<number, Role> = { 1: 'admin', 2: 'participant', 3: 'observer' };
const HISTORY_CODE: Record<History, number> = { shared: 1, hidden: 2 };
const HISTORY_BY_CODE: Record<number, History> = { 1: 'shared', 2: 'hidden' };

export interface Member {
  id: number;
  role: Role;
  topicKey: TopicKey;
}

export type Action =
  | { type: 'create'; host: string; history: History; members: Member[] }
  | { type: 'add'; member: Member }
  | { type: 'remove'; memberId: number }
  | { type: 'leave' }
  | { type: 'role'; memberId: number; role: Role }
  | { type: 'rekey' };

const ACTION_CODE: Record<Action['type'], number> = { create: 1, add: 2, remove: 3, leave: 4, role: 5, rekey: 6 };

export interface TopicUpdate {
  topicId: Uint8Array;
  /** Hash of the previous update of this topic (spec §7.4); 32 zero bytes for `create`. */
  parent: Uint8Array;
  /** The epoch after this update. */
  epoch: number;
  /** Member id of the signer (an admin, or the leaving member for `leave`). */
  signer: number;
  action: Action;
  /** Commitment to the new epoch secret: present iff the update starts a new epoch. */
  commitment: Uint8Array | null;
  /** The previous epoch secret sealed under the new one (spec §7.2), when required. */
  backwardLink: Uint8Array | null;
  /** Epoch-secret shares, in ascending member id order. */
  shares: KeyShare[];
  signature: Uint8Array;
}

export type UnsignedTopicUpdate = Omit<TopicUpdate, 'signature'>;

// ---------------------------------------------------------------------------------------------
// Encoding (spec §7.4)

function writeMember(w: Writer, m: Member): void {
  w.varint(m.id).u8(ROLE_CODE[m.role]);
  writeTopicKey(w, m.topicKey);
}

function readRole(r: Reader): Role {
  const role = ROLE_BY_CODE[r.u8()];
  if (role === undefined) throw new RendezvousError('encoding.bad_value', 'unknown role');
  return role;
}

function readMember(r: Reader): Member {
  return { id: r.varint(), role: readRole(r), topicKey: readTopicKey(r) };
}

function writeShare(w: Writer, s: KeyShare): void {
  w.varint(s.memberId).fixed(s.enc, KEY_SHARE_ENC_SIZE).fixed(s.ciphertext, KEY_SHARE_CT_SIZE);
}

function readShare(r: Reader): KeyShare {
  return { memberId: r.varint(), enc: r.fixed(KEY_SHARE_ENC_SIZE), ciphertext: r.fixed(KEY_SHARE_CT_SIZE) };
}

function writeTbs(w: Writer, u: UnsignedTopicUpdate): void {
  w.u8(TOPIC_VERSION).fixed(u.topicId, TOPIC_ID_SIZE).fixed(u.parent, HASH_SIZE).varint(u.epoch).varint(u.signer);
  const a = u.action;
  w.u8(ACTION_CODE[a.type]);
  switch (a.type) {
    case 'create':
      w.string(a.host).u8(HISTORY_CODE[a.history]).list(a.members, writeMember);
      break;
    case 'add':
      writeMember(w, a.member);
      break;
    case 'remove':
      w.varint(a.memberId);
      break;
    case 'role':
      w.varint(a.memberId).u8(ROLE_CODE[a.role]);
      break;
    case 'leave':
    case 'rekey':
      break;
  }
  w.bytes(u.commitment ?? new Uint8Array(0));
  w.bytes(u.backwardLink ?? new Uint8Array(0));
  w.list(u.shares, writeShare);
}

export function topicUpdateTbs(u: UnsignedTopicUpdate): Uint8Array {
  const w = new Writer(512);
  writeTbs(w, u);
  return w.finish();
}

export function encodeTopicUpdate(u: TopicUpdate): Uint8Array {
  const w = new Writer(512);
  writeTbs(w, u);
  return w.fixed(u.signature, 64).finish();
}

function readAction(r: Reader): Action {
  const code = r.u8();
  switch (code) {
    case 1: {
      const host = r.string(MAX_SERVER_NAME_BYTES);
      const history = HISTORY_BY_CODE[r.u8()];
      if (history === undefined) throw new RendezvousError('encoding.bad_value', 'unknown history policy');
      return { type: 'create', host, history, members: r.list(readMember, MAX_MEMBERS) };
    }
    case 2:
      return { type: 'add', member: readMember(r) };
    case 3:
      return { type: 'remove', memberId: r.varint() };
    case 4:
      return { type: 'leave' };
    case 5:
      return { type: 'role', memberId: r.varint(), role: readRole(r) };
    case 6:
      return { type: 'rekey' };
    default:
      throw new RendezvousError('encoding.bad_value', 'unknown topic update action');
  }
}

function readOptional(r: Reader, size: number, what: string): Uint8Array | null {
  const b = r.bytes(size);
  if (b.length === 0) return null;
  if (b.length !== size) throw new RendezvousError('encoding.bad_value', `${what} must be empty or ${size} bytes`);
  return b;
}

export function readTopicUpdate(r: Reader): TopicUpdate {
  if (r.u8() !== TOPIC_VERSION) throw new RendezvousError('encoding.unknown_version');
  return {
    topicId: r.fixed(TOPIC_ID_SIZE),
    parent: r.fixed(HASH_SIZE),
    epoch: r.varint(),
    signer: r.varint(),
    action: readAction(r),
    commitment: readOptional(r, COMMITMENT_SIZE, 'commitment'),
    backwardLink: readOptional(r, BACKWARD_LINK_SIZE, 'backward link'),
    shares: r.list(readShare, MAX_MEMBERS),
    signature: r.fixed(64),
  };
}

export function decodeTopicUpdate(b: Uint8Array): TopicUpdate {
  return decodeAll(b, readTopicUpdate);
}

export function signTopicUpdate(crypto: CryptoProvider, signatureSeed: Uint8Array, u: UnsignedTopicUpdate): TopicUpdate {
  return { ...u, signature: signWithLabel(crypto, signatureSeed, SignLabel.topicUpdate, topicUpdateTbs(u)) };
}

/** update_hash = SHA-256(encode(TopicUpdate)), the `parent` of the next update. */
export function topicUpdateHash(crypto: CryptoProvider, u: TopicUpdate | Uint8Array): Uint8Array {
  return crypto.sha256(u instanceof Uint8Array ? u : encodeTopicUpdate(u));
}

/** Verifies the signer's signature on `u`; returns the to-be-signed encoding, for updateHashOf. */
function verifyUpdateSignature(crypto: CryptoProvider, signatureKey: Uint8Array, u: TopicUpdate): Uint8Array {
  const tbs = topicUpdateTbs(u);
  requireSignature(crypto, signatureKey, SignLabel.topicUpdate, tbs, u.signature, 'topic update');
  return tbs;
}

/**
 * topicUpdateHash(u) from its to-be-signed encoding: encode(TopicUpdate) is tbs followed by the
 * 64-byte signature (see encodeTopicUpdate), so a large update is encoded once, not twice.
 */
function updateHashOf(crypto: CryptoProvider, tbs: Uint8Array, u: TopicUpdate): Uint8Array {
  return crypto.sha256(new Writer(tbs.length + 64).raw(tbs).fixed(u.signature, 64).finish());
}

// ---------------------------------------------------------------------------------------------
// State (spec §7.5)

export interface TopicState {
  topicId: Uint8Array;
  host: string;
  history: History;
  epoch: number;
  members: ReadonlyMap<number, Member>;
  nextMemberId: number;
  /** Hash of the last applied update. */
  head: Uint8Array;
  /** The commitment of every epoch so far, indexed by epoch. */
  commitments: readonly Uint8Array[];
  /** Set by `leave`: the leaver still knows the epoch secret until an admin re-keys. */
  pendingRekey: boolean;
}

export interface ApplyOptions {
  /**
   * Called for every member a create or add brings in, after its topic key's certificate has
   * been verified: throws if `identityKey` is not the one the caller trusts for `user` (the
   * server's registered key, or the client's pinned key).
   */
  checkIdentity?: (user: string, identityKey: Uint8Array) => void;
  maxMembers?: number;
}

function fail(code: ConstructorParameters<typeof RendezvousError>[0], message: string): never {
  throw new RendezvousError(code, message);
}

export function isAdmin(state: TopicState, memberId: number): boolean {
  return state.members.get(memberId)?.role === 'admin';
}

function countAdmins(members: ReadonlyMap<number, Member>): number {
  let n = 0;
  for (const m of members.values()) if (m.role === 'admin') n++;
  return n;
}

/** Last-admin rule (spec §7.5): a topic with members always has an admin. */
function requireAdminRemains(members: ReadonlyMap<number, Member>): void {
  if (members.size > 0 && countAdmins(members) === 0) fail('topic.last_admin', 'the topic would have no admin');
}

function checkShares(u: TopicUpdate, memberIds: number[]): void {
  const ok = u.shares.length === memberIds.length && u.shares.every((s, i) => s.memberId === memberIds[i]);
  if (!ok) fail('topic.bad_key_shares', 'key shares must be exactly one per member who must get one, ascending by id');
}

/** Whether an update that starts a new epoch must carry a backward link (spec §7.2). */
export function requiresBackwardLink(history: History, action: Action['type']): boolean {
  if (action === 'create') return false;
  if (action === 'add' && history === 'hidden') return false;
  return true;
}

function checkNewMember(crypto: CryptoProvider, m: Member, opts: ApplyOptions): void {
  verifyTopicKey(crypto, m.topicKey);
  opts.checkIdentity?.(m.topicKey.user, m.topicKey.identityKey);
}

/**
 * A newcomer must not share its user or its topic key (named by the signature key) with a
 * member: fails with the rule the first conflicting member, in `members` order, breaks.
 */
function requireDistinct(m: Member, members: Iterable<Member>): void {
  for (const other of members) {
    if (other.topicKey.user === m.topicKey.user) fail('topic.already_member', `${m.topicKey.user} is already a member`);
    if (equal(other.topicKey.signatureKey, m.topicKey.signatureKey)) {
      fail('topic.duplicate_key', 'topic key is already used in this topic');
    }
  }
}

/**
 * Validates `u` against `state` (null before the topic exists) and returns the new state.
 * Throws RendezvousError with the code of the first rule broken; the input state is never
 * modified. Cheap structural rules run before any signature is verified.
 */
export function applyUpdate(
  crypto: CryptoProvider,
  state: TopicState | null,
  u: TopicUpdate,
  opts: ApplyOptions = {},
): TopicState {
  const maxMembers = opts.maxMembers ?? MAX_MEMBERS;
  const a = u.action;
  if (a.type === 'create') return applyCreate(crypto, state, u, a, maxMembers, opts);
  if (state === null) fail('topic.unknown', 'update for a topic that does not exist');
  if (!equal(u.topicId, state.topicId)) fail('topic.wrong_topic', 'update names another topic');
  if (!equal(u.parent, state.head)) fail('topic.bad_parent', 'update does not follow the current state');

  const signer = state.members.get(u.signer);
  if (signer === undefined) fail('topic.not_member', 'signer is not a member');
  if (a.type !== 'leave' && signer.role !== 'admin') fail('topic.not_admin', 'only an admin may sign this update');

  const members = new Map(state.members);
  let nextMemberId = state.nextMemberId;
  let newEpoch: boolean;
  const newMembers: Member[] = [];

  switch (a.type) {
    case 'add': {
      if (a.member.id !== state.nextMemberId) fail('topic.bad_member_id', 'new member must get the next free member id');
      if (members.size >= maxMembers) fail('topic.too_many_members', 'member limit reached');
      newEpoch = u.commitment !== null;
      if (!newEpoch && (state.history === 'hidden' || state.pendingRekey)) {
        fail('topic.rekey_required', 'adding a member to this topic requires a new epoch');
      }
      newMembers.push(a.member);
      members.set(a.member.id, a.member);
      nextMemberId++;
      break;
    }
    case 'remove': {
      if (!members.has(a.memberId)) fail('topic.not_member', 'member to remove is not a member');
      if (a.memberId === u.signer) fail('topic.bad_member_id', 'an admin leaves with a leave update, not a remove');
      members.delete(a.memberId);
      requireAdminRemains(members);
      newEpoch = true;
      break;
    }
    case 'leave': {
      members.delete(u.signer);
      requireAdminRemains(members);
      newEpoch = false;
      break;
    }
    case 'role': {
      const target = members.get(a.memberId);
      if (target === undefined) fail('topic.not_member', 'member is not a member');
      if (target.role === a.role) fail('topic.no_change', 'member already has this role');
      members.set(a.memberId, { ...target, role: a.role });
      requireAdminRemains(members);
      newEpoch = false;
      break;
    }
    case 'rekey':
      newEpoch = true;
      break;
  }

  if (newEpoch !== (u.commitment !== null)) {
    fail('topic.rekey_required', `a ${a.type} update ${newEpoch ? 'must' : 'must not'} start a new epoch`);
  }
  if (u.epoch !== state.epoch + (newEpoch ? 1 : 0)) fail('topic.bad_epoch', 'wrong epoch for this update');
  const linkRequired = newEpoch && requiresBackwardLink(state.history, a.type);
  if (linkRequired !== (u.backwardLink !== null)) {
    fail('topic.bad_backward_link', linkRequired ? 'backward link required' : 'backward link not allowed');
  }
  // Who must get a share: everyone after a new epoch; only the newcomer on an O(1) add.
  const shareIds = newEpoch ? [...members.keys()].sort((x, y) => x - y) : newMembers.map((m) => m.id);
  checkShares(u, shareIds);

  const tbs = verifyUpdateSignature(crypto, signer.topicKey.signatureKey, u);
  for (const m of newMembers) {
    checkNewMember(crypto, m, opts);
    requireDistinct(m, state.members.values());
  }

  return {
    topicId: state.topicId,
    host: state.host,
    history: state.history,
    epoch: u.epoch,
    members,
    nextMemberId,
    head: updateHashOf(crypto, tbs, u),
    commitments: newEpoch ? [...state.commitments, u.commitment!] : state.commitments,
    pendingRekey: newEpoch ? false : state.pendingRekey || a.type === 'leave',
  };
}

function applyCreate(
  crypto: CryptoProvider,
  state: TopicState | null,
  u: TopicUpdate,
  a: Extract<Action, { type: 'create' }>,
  maxMembers: number,
  opts: ApplyOptions,
): TopicState {
  if (state !== null) fail('topic.exists', 'topic already exists');
  if (!u.parent.every((b) => b === 0)) fail('topic.bad_parent', 'a create update has an all-zero parent');
  if (u.epoch !== 0) fail('topic.bad_epoch', 'a topic starts at epoch 0');
  if (!isServerName(a.host)) fail('encoding.bad_value', 'host is not a server name');
  if (a.members.length === 0) fail('topic.not_member', 'a topic starts with its creator as a member');
  if (a.members.length > maxMembers) fail('topic.too_many_members', 'member limit reached');
  a.members.forEach((m, i) => {
    if (m.id !== i) fail('topic.bad_member_id', 'initial members get ids 0, 1, 2, … in order');
  });
  const signer = a.members[u.signer];
  if (signer === undefined) fail('topic.not_member', 'signer is not a member');
  if (signer.role !== 'admin') fail('topic.not_admin', 'the creator must be an admin');
  if (parseUserId(signer.topicKey.user).server !== a.host) {
    fail('topic.wrong_host', "a topic is hosted by its creator's server");
  }
  if (u.commitment === null) fail('topic.rekey_required', 'a create update starts epoch 0');
  if (u.backwardLink !== null) fail('topic.bad_backward_link', 'a create update has no backward link');
  checkShares(
    u,
    a.members.map((m) => m.id),
  );
  const tbs = verifyUpdateSignature(crypto, signer.topicKey.signatureKey, u);

  // The duplicate rules of requireDistinct against every earlier member, in O(1) per member:
  // only on a hit are the earlier members scanned, for the rule the first conflict breaks.
  const members = new Map<number, Member>();
  const users = new Set<string>();
  const keyIds = new Set<string>();
  for (const m of a.members) {
    checkNewMember(crypto, m, opts);
    const keyId = toHex(m.topicKey.signatureKey);
    if (users.has(m.topicKey.user) || keyIds.has(keyId)) requireDistinct(m, members.values());
    users.add(m.topicKey.user);
    keyIds.add(keyId);
    members.set(m.id, m);
  }
  return {
    topicId: u.topicId,
    host: a.host,
    history: a.history,
    epoch: 0,
    members,
    nextMemberId: a.members.length,
    head: updateHashOf(crypto, tbs, u),
    commitments: [u.commitment],
    pendingRekey: false,
  };
}

/** The members a `create` or `add` brings in (none for any other action): whose certificates and identities must be checked. */
export function incomingMembers(u: TopicUpdate): readonly Member[] {
  return u.action.type === 'create' ? u.action.members : u.action.type === 'add' ? [u.action.member] : [];
}

/** Finds the member whose topic key belongs to `user`, if any. */
export function memberByUser(state: TopicState, user: string): Member | undefined {
  for (const m of state.members.values()) if (m.topicKey.user === user) return m;
  return undefined;
}

export function memberByTopicKey(state: TopicState, signatureKey: Uint8Array): Member | undefined {
  for (const m of state.members.values()) if (equal(m.topicKey.signatureKey, signatureKey)) return m;
  return undefined;
}
