/**
 * Benchmark setup against a real server process: registers scripted users (admin pin, register,
 * challenge/session login) and creates topics over HTTP, on the protocol core only. What a
 * load generator needs to post as a member travels as `Sender` (plain JSON, for IPC).
 */
import { randomBytes } from 'node:crypto';
import {
  buildCreate,
  decodeCheckpoint,
  deviceId as deviceIdOf,
  encodeDeviceCert,
  encodeTopicUpdate,
  fromBase64url,
  newTopicId,
  signDeviceCert,
  signSessionProof,
  signTopicKey,
  toBase64url,
  type Role,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';

const random = (n: number) => new Uint8Array(randomBytes(n));

export interface BenchUser {
  user: string;
  identitySeed: Uint8Array;
  deviceSeed: Uint8Array;
  deviceId: string;
  token: string;
}

/** One member of one topic, as a load generator needs it (base64url strings: IPC-safe). */
export interface Sender {
  token: string;
  topicId: string;
  epochSecret: string;
  memberId: number;
  signatureSeed: string;
  /** Root of the log at `headSize` (the create entry's checkpoint). */
  headRoot: string;
  headSize: number;
}

export interface BenchTopic {
  topicId: string;
  members: { user: BenchUser; sender: Sender }[];
}

async function post(url: string, path: string, body: unknown, token?: string, idem = false): Promise<any> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (idem) headers['idempotency-key'] = toBase64url(random(12));
  const r = await fetch(url + path, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`POST ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

export async function registerUser(url: string, server: string, adminToken: string, name: string): Promise<BenchUser> {
  const user = `${name}@${server}`;
  const { pin } = await post(url, '/v1/admin/pins', { user }, adminToken);
  const identitySeed = random(32);
  const deviceSeed = random(32);
  const cert = signDeviceCert(crypto, identitySeed, { user, deviceKey: crypto.ed25519PublicKey(deviceSeed), createdAt: Date.now() });
  await post(url, '/v1/register', {
    user,
    pin,
    identityKey: toBase64url(crypto.ed25519PublicKey(identitySeed)),
    deviceCert: toBase64url(encodeDeviceCert(cert)),
  });
  const deviceId = deviceIdOf(cert.deviceKey);
  const ch = await post(url, '/v1/auth/challenge', { deviceId });
  const signature = signSessionProof(crypto, deviceSeed, server, fromBase64url(ch.challenge));
  const s = await post(url, '/v1/auth/session', { deviceId, challenge: ch.challenge, signature: toBase64url(signature) });
  return { user, identitySeed, deviceSeed, deviceId, token: s.token };
}

/** Creates a topic with `users` (the first is the admin, the rest participants). */
export async function createTopic(url: string, server: string, users: BenchUser[]): Promise<BenchTopic> {
  const topicId = newTopicId(random);
  const secrets = users.map(() => ({ signatureSeed: random(32), encryptionSecret: random(32) }));
  const members = users.map((u, i) => ({
    role: (i === 0 ? 'admin' : 'participant') as Role,
    topicKey: signTopicKey(crypto, u.identitySeed, u.user, secrets[i]!),
  }));
  const built = buildCreate(crypto, random, { topicId, host: server, history: 'shared', members, signer: 0, signatureSeed: secrets[0]!.signatureSeed });
  const r = await post(url, '/v1/topics', { update: toBase64url(encodeTopicUpdate(built.update)) }, users[0]!.token, true);
  const cp = decodeCheckpoint(fromBase64url(r.checkpoint));
  const id = toBase64url(topicId);
  return {
    topicId: id,
    members: users.map((user, i) => ({
      user,
      sender: {
        token: user.token,
        topicId: id,
        epochSecret: toBase64url(built.epochSecret),
        memberId: i,
        signatureSeed: toBase64url(secrets[i]!.signatureSeed),
        headRoot: toBase64url(cp.root),
        headSize: cp.size,
      },
    })),
  };
}

/** `topics` topics of `members` members each; users are fresh per topic. Progress on stderr. */
export async function makeTopics(url: string, server: string, adminToken: string, prefix: string, topics: number, members: number): Promise<BenchTopic[]> {
  const out: BenchTopic[] = [];
  for (let t = 0; t < topics; t++) {
    const users = await Promise.all(Array.from({ length: members }, (_, m) => registerUser(url, server, adminToken, `${prefix}${t}m${m}`)));
    out.push(await createTopic(url, server, users));
  }
  return out;
}
