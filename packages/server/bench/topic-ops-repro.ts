/**
 * Reproduction of section 8's large-topic sequence (issue 7), without the rest of the suite:
 * starts a bench server (log level debug, its stdout/stderr kept in a file), registers N + 8
 * users, then create, and per round re-key, remove, add (shared), remove, add (backward
 * secrecy), each timed (client build, request, apply) with the full error cause on failure,
 * and the server process's state (alive? exit code) after it.
 *
 *   node --import tsx packages/server/bench/topic-ops-repro.ts [members=10000] [rounds=1]
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import {
  applyUpdate,
  buildCreate,
  buildUpdate,
  encodeTopicUpdate,
  newTopicId,
  signTopicKey,
  toBase64url,
  type ChangeAction,
  type Role,
  type TopicKeySecret,
  type TopicState,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { startBenchServer } from './server-process.ts';
import { registerUser, type BenchUser } from './setup.ts';

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const N = Number(args[0] ?? 10_000);
const ROUNDS = Number(args[1] ?? 1);
const random = (n: number) => new Uint8Array(randomBytes(n));
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${s}\n`);
const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

const RATES = Object.fromEntries(
  ['register', 'authChallenge', 'write', 'admin', 'claimTopicKeyPerClaimer', 'claimTopicKeyPerTarget', 'claimPrekey'].map((n) => [n, [1_000_000_000, 60_000] as const]),
);
const server = await startBenchServer({ rates: RATES, logLevel: 'debug' });
const logFile = `/tmp/topic-ops-repro-server-${server.proc.pid}.log`;
const sink = createWriteStream(logFile);
server.proc.stdout!.on('data', (d: Buffer) => sink.write(d));
server.proc.stderr!.on('data', (d: Buffer) => sink.write(d));
server.proc.once('exit', (code, signal) => log(`SERVER EXITED code=${code} signal=${signal}`));
log(`server ${server.url} pid ${server.proc.pid}, log ${logFile}`);

function describe(e: unknown): string {
  const parts: string[] = [];
  let x: any = e;
  while (x !== undefined && x !== null && parts.length < 5) {
    parts.push(`${x.name ?? ''}: ${x.message ?? String(x)}${x.code ? ` [${x.code}]` : ''}`);
    x = x.cause;
  }
  return parts.join(' <- ');
}

let lastResponseAt = performance.now();
async function post(path: string, token: string, body: unknown) {
  const text = JSON.stringify(body);
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': toBase64url(random(12)) };
  const idle = performance.now() - lastResponseAt;
  for (let attempt = 1; attempt <= 2; attempt++) {
    const t0 = performance.now();
    try {
      const r = await fetch(server.url + path, { method: 'POST', headers, body: text });
      const out = await r.text();
      const ms = performance.now() - t0;
      lastResponseAt = performance.now();
      if (r.status >= 300) throw new Error(`${path}: ${r.status} ${out.slice(0, 300)}`);
      log(`  POST ${path.slice(0, 20)}… ${text.length} B: ${r.status} in ${ms.toFixed(0)} ms (attempt ${attempt}; connection idle ${idle.toFixed(0)} ms before; keep-alive: ${r.headers.get('keep-alive')}, connection: ${r.headers.get('connection')})`);
      return { json: JSON.parse(out), ms, bytes: text.length };
    } catch (e) {
      const ms = performance.now() - t0;
      log(`  POST ${path.slice(0, 20)}… attempt ${attempt} FAILED after ${ms.toFixed(0)} ms (connection idle ${idle.toFixed(0)} ms before): ${describe(e)}; server alive: ${server.proc.exitCode === null && server.proc.signalCode === null}`);
      if (attempt === 2) throw e;
    }
  }
  throw new Error('unreachable');
}

// ---- users
const t0 = performance.now();
const users: BenchUser[] = new Array(N + 8);
let next = 0;
await Promise.all(
  Array.from({ length: 24 }, async () => {
    while (next < users.length) {
      const i = next++;
      users[i] = await registerUser(server.url, server.name, server.adminToken, `r${i}`);
      if (i % 2000 === 0) log(`  registered ${i}`);
    }
  }),
);
log(`${users.length} users in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const members = users.slice(0, N);
const spare = users.slice(N);

const keys = members.map((u) => {
  const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
  return { topicKey: signTopicKey(crypto, u.identitySeed, u.user, secret), secret };
});
const secrets: TopicKeySecret[] = keys.map((k) => k.secret);
const id = newTopicId(random);
const idB64 = toBase64url(id);

let c0 = cpuMs();
const built = buildCreate(crypto, random, {
  topicId: id,
  host: server.name,
  history: 'shared',
  members: keys.map((k, i) => ({ role: (i === 0 ? 'admin' : 'participant') as Role, topicKey: k.topicKey })),
  signer: 0,
  signatureSeed: secrets[0]!.signatureSeed,
});
let bytes = encodeTopicUpdate(built.update);
let body = { update: toBase64url(bytes) };
log(`create built: ${(cpuMs() - c0).toFixed(0)} ms CPU, ${bytes.length} B`);
await post('/v1/topics', members[0]!.token, body);
c0 = cpuMs();
let state: TopicState = applyUpdate(crypto, null, built.update);
log(`create applied: ${(cpuMs() - c0).toFixed(0)} ms CPU`);
let epochSecret = built.epochSecret;

async function change(name: string, action: ChangeAction, force = false) {
  const c = cpuMs();
  const b = buildUpdate(crypto, random, state, { signer: 0, signatureSeed: secrets[0]!.signatureSeed, epochSecret, action, forceNewEpoch: force });
  const enc = encodeTopicUpdate(b.update);
  const bd = { update: toBase64url(enc) };
  log(`${name}: built ${(cpuMs() - c).toFixed(0)} ms CPU, ${enc.length} B, ${b.update.shares.length} shares`);
  await post(`/v1/topics/${idB64}/updates`, members[0]!.token, bd);
  const a = cpuMs();
  state = applyUpdate(crypto, state, b.update);
  epochSecret = b.epochSecret;
  log(`${name}: applied ${(cpuMs() - a).toFixed(0)} ms CPU; ${state.members.size} members`);
}
let sp = 0;
const removeOne = (name: string) => change(name, { type: 'remove', memberId: Math.max(...[...state.members.keys()].filter((i) => i !== 0)) });
const add = (name: string, force: boolean) => {
  const u = spare[sp++ % spare.length]!;
  const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
  secrets.push(secret);
  return change(name, { type: 'add', role: 'participant', topicKey: signTopicKey(crypto, u.identitySeed, u.user, secret) }, force);
};
let failed = false;
try {
  for (let r = 0; r < ROUNDS; r++) {
    await change(`round ${r} re-key`, { type: 'rekey' });
    await removeOne(`round ${r} remove 1`);
    await add(`round ${r} add shared`, false);
    await removeOne(`round ${r} remove 2`);
    await add(`round ${r} add backward secrecy`, true);
  }
} catch (e) {
  failed = true;
  log(`FAILED: ${describe(e)}`);
}
await new Promise((r) => setTimeout(r, 500));
log(`server alive: ${server.proc.exitCode === null && server.proc.signalCode === null}; log ${logFile}`);
sink.end();
await server.stop();
process.exit(failed ? 1 : 0);
