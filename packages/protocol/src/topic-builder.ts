/**
 * Building topic updates (spec §7.3): the admin's side of `applyUpdate`.
 *
 * Given the current state and the current epoch secret, these functions produce an update that
 * `applyUpdate` accepts: the right epoch, a fresh epoch secret with its commitment when the
 * update starts an epoch, the backward link when the history policy asks for one, and one HPKE
 * key share per member who must get one. Clients use them; tests use them to build valid
 * updates and then break one rule at a time.
 */
import type { CryptoProvider, Random } from './crypto/provider.ts';
import type { TopicKey } from './identity.ts';
import { EPOCH_SECRET_SIZE, epochCommitment, sealBackwardLink, sealKeyShare, type KeyShare } from './epoch.ts';
import {
  type Action,
  type History,
  type Member,
  type Role,
  type TopicState,
  type TopicUpdate,
  TOPIC_ID_SIZE,
  requiresBackwardLink,
  signTopicUpdate,
} from './topic.ts';

export interface BuiltUpdate {
  update: TopicUpdate;
  /** The epoch secret after the update (new if the update started an epoch). */
  epochSecret: Uint8Array;
}

export interface CreateInput {
  topicId: Uint8Array;
  host: string;
  history: History;
  /** Members in id order; the signer is one of them (an admin). */
  members: { role: Role; topicKey: TopicKey }[];
  signer: number;
  signatureSeed: Uint8Array;
}

export function newTopicId(random: Random): Uint8Array {
  return random(TOPIC_ID_SIZE);
}

function shares(
  crypto: CryptoProvider,
  random: Random,
  topicId: Uint8Array,
  epoch: number,
  members: Iterable<Member>,
  secret: Uint8Array,
): KeyShare[] {
  return [...members]
    .sort((a, b) => a.id - b.id)
    .map((m) => sealKeyShare(crypto, random, topicId, epoch, m.id, m.topicKey.encryptionKey, secret));
}

export function buildCreate(crypto: CryptoProvider, random: Random, i: CreateInput): BuiltUpdate {
  const members: Member[] = i.members.map((m, id) => ({ id, role: m.role, topicKey: m.topicKey }));
  const epochSecret = random(EPOCH_SECRET_SIZE);
  const update = signTopicUpdate(crypto, i.signatureSeed, {
    topicId: i.topicId,
    parent: new Uint8Array(32),
    epoch: 0,
    signer: i.signer,
    action: { type: 'create', host: i.host, history: i.history, members },
    commitment: epochCommitment(crypto, i.topicId, 0, epochSecret),
    backwardLink: null,
    shares: shares(crypto, random, i.topicId, 0, members, epochSecret),
  });
  return { update, epochSecret };
}

export type ChangeAction =
  | { type: 'add'; role: Role; topicKey: TopicKey }
  | { type: 'remove'; memberId: number }
  | { type: 'leave' }
  | { type: 'role'; memberId: number; role: Role }
  | { type: 'rekey' };

export interface ChangeInput {
  signer: number;
  signatureSeed: Uint8Array;
  /** The current epoch secret (needed for the backward link and for an O(1) add). */
  epochSecret: Uint8Array;
  action: ChangeAction;
  /** For `add` in a shared-history topic: start a new epoch anyway (default false). */
  forceNewEpoch?: boolean;
}

/** Whether `action` must start a new epoch in `state` (spec §7.5). */
export function startsEpoch(state: TopicState, type: ChangeAction['type'], forceNewEpoch = false): boolean {
  switch (type) {
    case 'remove':
    case 'rekey':
      return true;
    case 'add':
      return forceNewEpoch || state.history === 'hidden' || state.pendingRekey;
    case 'leave':
    case 'role':
      return false;
  }
}

export function buildUpdate(crypto: CryptoProvider, random: Random, state: TopicState, i: ChangeInput): BuiltUpdate {
  const a = i.action;
  let action: Action;
  const members = new Map(state.members);
  let newcomer: Member | null = null;
  switch (a.type) {
    case 'add':
      newcomer = { id: state.nextMemberId, role: a.role, topicKey: a.topicKey };
      members.set(newcomer.id, newcomer);
      action = { type: 'add', member: newcomer };
      break;
    case 'remove':
      members.delete(a.memberId);
      action = a;
      break;
    case 'leave':
      members.delete(i.signer);
      action = a;
      break;
    case 'role':
    case 'rekey':
      action = a;
      break;
  }
  const newEpoch = startsEpoch(state, a.type, i.forceNewEpoch);
  const epoch = state.epoch + (newEpoch ? 1 : 0);
  const epochSecret = newEpoch ? random(EPOCH_SECRET_SIZE) : i.epochSecret;
  const update = signTopicUpdate(crypto, i.signatureSeed, {
    topicId: state.topicId,
    parent: state.head,
    epoch,
    signer: i.signer,
    action,
    commitment: newEpoch ? epochCommitment(crypto, state.topicId, epoch, epochSecret) : null,
    backwardLink:
      newEpoch && requiresBackwardLink(state.history, a.type)
        ? sealBackwardLink(crypto, state.topicId, epoch, epochSecret, i.epochSecret)
        : null,
    shares: newEpoch
      ? shares(crypto, random, state.topicId, epoch, members.values(), epochSecret)
      : newcomer
        ? shares(crypto, random, state.topicId, epoch, [newcomer], epochSecret)
        : [],
  });
  return { update, epochSecret };
}
