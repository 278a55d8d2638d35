/**
 * The malicious-server harness (issue 4): real clients talk to a real server process through a
 * proxy that lies to one of them at a time — drops, reorders, replays, duplicates and forges
 * entries, forks the log between two members, rolls a checkpoint back, appends a membership
 * change no admin signed or an observer's post, substitutes a topic key or identity, lists a
 * device that was never linked. The server's signing seed is fixed (RENDEZVOUS_SERVER_KEY), so
 * every forged checkpoint carries a valid signature: only the client's own verification of the
 * log can catch the lie.
 *
 * Seeded scenarios per fault kind (RENDEZVOUS_HARNESS_SEEDS, default 4; the first seed is
 * RENDEZVOUS_HARNESS_FIRST_SEED, default 1; RENDEZVOUS_HARNESS_ONLY=kind or kind:seed runs one),
 * plus honest control runs through the same proxy. Prints injected / detected with the right
 * code / wrong code / missed per kind and false alarms, and fails on anything but a clean sheet.
 */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { fromBase64url, toBase64url, equal } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { TEST_RATES, cleanup, start, tempDir, type ServerProcess } from '../../server/test/process.ts';
import { RendezvousClient } from '../src/client.ts';
import { MemoryProfileStore } from '../src/profile-store.ts';
import { MaliciousProxy } from './malicious/proxy.ts';
import { HONEST, KINDS, classify, type Kind, type Observation, type Scenario, type World } from './malicious/scenarios.ts';

const SEEDS = Number(process.env.RENDEZVOUS_HARNESS_SEEDS ?? 4);
const FIRST = Number(process.env.RENDEZVOUS_HARNESS_FIRST_SEED ?? 1);
const ONLY = process.env.RENDEZVOUS_HARNESS_ONLY;

const RATES = {
  ...TEST_RATES,
  admin: [100_000, 60_000],
  claimTopicKeyPerClaimer: [100_000, 60_000],
  claimTopicKeyPerTarget: [100_000, 60_000],
  claimPrekey: [100_000, 60_000],
} as const;

const serverSeed = new Uint8Array(randomBytes(32));
let server: ServerProcess;
let proxy: MaliciousProxy;
let users = 0;

const world: World = {
  async user(name) {
    const local = `${name}-${++users}`;
    const r = await fetch(`${server.url}/v1/admin/pins`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user: `${local}@${server.name}` }),
    });
    assert.equal(r.status, 201, `admin pin for ${local}: ${await r.clone().text()}`);
    const { pin } = (await r.json()) as { pin: string };
    const store = new MemoryProfileStore();
    const client = await RendezvousClient.register({ store, crypto, server: proxy.url, user: local, pin, pool: { prekeys: 3, topicKeys: 3 } });
    return { user: client.user, client, store };
  },
};

before(async () => {
  server = await start(tempDir('rendezvous-harness-'), undefined, { env: { RENDEZVOUS_SERVER_KEY: toBase64url(serverSeed) }, logLevel: 'warn', rates: RATES });
  const wk = (await (await fetch(`${server.url}/.well-known/rendezvous`)).json()) as { publicKey: string };
  assert.ok(equal(fromBase64url(wk.publicKey), crypto.ed25519PublicKey(serverSeed)), 'the server signs with the seed the harness holds');
  proxy = new MaliciousProxy(new URL(server.url), serverSeed, server.name);
  await proxy.listen();
});
after(async () => {
  await proxy?.close();
  await cleanup();
});

type Verdict = 'right' | 'wrong' | 'missed' | 'not injected' | 'harness error';
interface Result {
  s: Scenario;
  o: Observation;
  verdict: Verdict;
  error?: string;
}
const results: Result[] = [];

async function run(s: Scenario): Promise<Result> {
  proxy.reset();
  try {
    await s.setup(world);
    await s.inject(proxy);
    const o = await s.check();
    const injected = s.kind === 'honest' || proxy.fired() > 0;
    return { s, o, verdict: injected ? classify(s, o) : 'not injected' };
  } catch (e) {
    return { s, o: { outcomes: [], violations: [], notes: [] }, verdict: 'harness error', error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  } finally {
    proxy.reset();
  }
}

const seeds = Array.from({ length: SEEDS }, (_, i) => FIRST + i);
const wanted = (kind: Kind, seed: number) => ONLY === undefined || ONLY === kind || ONLY === `${kind}:${seed}`;
const uniq = <T>(xs: T[]) => [...new Set(xs)];

function line(r: Result): string {
  const got = uniq(r.o.outcomes).join(', ') || 'nothing';
  const want = r.s.expected.map((e) => (Array.isArray(e) ? `one of ${e.join(' / ')}` : e)).join(', ') || 'nothing';
  const extra = r.o.violations.length > 0 ? `; ${r.o.violations.join('; ')}` : '';
  const notes = r.o.notes.length > 0 ? `; note: ${r.o.notes.join('; ')}` : '';
  const mark = r.verdict === 'right' ? 'ok  ' : 'FAIL';
  return `${mark} ${r.s.kind}:${r.s.seed} [${r.s.name}] expected ${want}; got ${got}${extra} -> ${r.verdict}${notes}${r.error ? `\n${r.error}` : ''}`;
}

function failures(rs: Result[]): string {
  return rs
    .filter((r) => r.verdict !== 'right')
    .map((r) => `${line(r)}\n     reproduce: RENDEZVOUS_HARNESS_ONLY=${r.s.kind}:${r.s.seed} node scripts/run-tests.mjs packages/client/test/malicious.test.ts`)
    .join('\n');
}

for (const k of [...KINDS, HONEST]) {
  it(`${k.kind}: ${k.kind === 'honest' ? 'honest control runs raise no alarm' : `detected as ${k.expect}`}`, async () => {
    const mine: Result[] = [];
    for (const seed of seeds) {
      if (!wanted(k.kind, seed)) continue;
      const r = await run(k.make(seed));
      console.log(line(r));
      mine.push(r);
      results.push(r);
    }
    const f = failures(mine);
    if (f !== '') assert.fail(`${k.kind}: not every scenario came out right\n${f}`);
  });
}

it('summary: every injected fault detected with the right code, no false alarm', () => {
  const rows = [...KINDS, HONEST].map((k) => {
    const rs = results.filter((r) => r.s.kind === k.kind);
    const n = (v: Verdict) => rs.filter((r) => r.verdict === v).length;
    return {
      kind: k.kind,
      expect: k.expect,
      injected: rs.length - n('not injected') - n('harness error'),
      right: n('right'),
      wrong: n('wrong'),
      missed: n('missed'),
      unkept: rs.filter((r) => r.o.notes.length > 0).length,
      broken: n('not injected') + n('harness error'),
    };
  });
  const pad = (s: string | number, w: number) => String(s).padEnd(w);
  const out = [
    `malicious-server harness: seeds ${seeds[0]}…${seeds[seeds.length - 1]} per kind${ONLY ? ` (only ${ONLY})` : ''}`,
    `${pad('fault kind', 18)}${pad('must be reported as', 48)}${pad('injected', 10)}${pad('right', 7)}${pad('wrong', 7)}${pad('missed', 8)}${pad('halt not kept', 15)}harness error`,
    ...rows.map((r) => `${pad(r.kind, 18)}${pad(r.expect, 48)}${pad(r.injected, 10)}${pad(r.right, 7)}${pad(r.wrong, 7)}${pad(r.missed, 8)}${pad(r.unkept, 15)}${r.broken}`),
  ];
  const faults = rows.filter((r) => r.kind !== 'honest' && r.kind !== 'duplicate');
  const total = (f: 'injected' | 'right' | 'wrong' | 'missed') => faults.reduce((a, r) => a + r[f], 0);
  const falseAlarms = results.filter((r) => (r.s.kind === 'honest' || r.s.kind === 'duplicate') && r.verdict === 'wrong');
  out.push(
    `faults: ${total('injected')} injected, ${total('right')} detected with the right code, ${total('wrong')} with another code, ${total('missed')} missed`,
    `false alarms: ${falseAlarms.length} of ${results.filter((r) => r.s.kind === 'honest' || r.s.kind === 'duplicate').length} harmless runs (honest control runs and redeliveries)`,
  );
  console.log(out.join('\n'));
  const f = failures(results);
  if (f !== '') assert.fail(`the client must detect every fault with its code and raise no false alarm\n${f}`);
});
