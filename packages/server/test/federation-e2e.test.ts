/**
 * Federation end to end with real server processes (protocol §17): three `rendezvous serve`
 * processes on loopback, named alpha.test, beta.test and gamma.test, each with a config file
 * whose `federation.peers` maps the other two names to their http://127.0.0.1 URLs. Scripted
 * protocol-level clients (test/topic-client.ts) post through their own home server and verify
 * every entry and host checkpoint it serves; the servers are killed with SIGKILL and restarted
 * on their data directories; requests are forged with a known server key; alpha is restarted
 * dishonest (`federation.testing.forkFor`) and both member servers must catch it. The last
 * part drives the `rendezvous` CLI as three people on three servers.
 *
 * The same scenarios in one process (and more protocol detail) are in federation.test.ts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  decodeCheckpoint,
  decodeCosignature,
  decodeLogEntry,
  encodeMessage,
  equal,
  fromBase64url,
  toBase64url,
  verifyCheckpoint,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { FEDERATION_HEADERS, signedHeaders } from '../src/federation/federation.ts';
import { ScriptedUser, call, overHttp, until as waitUntil, type Transport } from './helpers.ts';
import { ScriptedTopic, attachTopic, token } from './topic-client.ts';
import { TEST_RATES, cleanup, freePort, runCli, start, tempDir, type ServerProcess, type StartOptions } from './process.ts';

const NAMES = ['alpha.test', 'beta.test', 'gamma.test'] as const;
type Name = (typeof NAMES)[number];

interface Node {
  name: Name;
  port: number;
  dir: string;
  url: string;
  opts: StartOptions;
  proc: ServerProcess;
  t: Transport;
}

const nodes = new Map<Name, Node>();
const ports = new Map<Name, number>();
/** beta's server key, given explicitly so this test can sign requests as beta (part 5). */
const betaSeed = new Uint8Array(randomBytes(32));

const RATES = {
  ...TEST_RATES,
  claimTopicKeyPerClaimer: [1_000, 60_000],
  claimTopicKeyPerTarget: [1_000, 60_000],
  claimPrekey: [1_000, 60_000],
} as const;

function options(name: Name, testing?: { forkFor: string[] }): StartOptions {
  const peers: Record<string, string> = {};
  for (const other of NAMES) if (other !== name) peers[other] = `http://127.0.0.1:${ports.get(other)}`;
  return {
    name,
    rates: RATES,
    logLevel: process.env.FED_LOG ?? 'info',
    env: name === 'beta.test' ? { RENDEZVOUS_SERVER_KEY: toBase64url(betaSeed) } : {},
    config: { federation: { peers, retryMinMs: 100, retryMaxMs: 1_000, ...(testing ? { testing } : {}) } },
  };
}

/** Starts (or restarts, on its data directory and port) one of the three servers. */
async function boot(name: Name, testing?: { forkFor: string[] }): Promise<Node> {
  const dir = nodes.get(name)?.dir ?? tempDir(`rendezvous-fed-e2e-${name.split('.')[0]}-`);
  const opts = options(name, testing);
  const proc = await start(dir, ports.get(name)!, opts);
  const n: Node = { name, port: proc.port, dir, url: proc.url, opts, proc, t: overHttp(proc.url) };
  nodes.set(name, n);
  return n;
}

async function user(node: Node, name: string): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}@${node.name}`, node.t, () => Date.now());
  const pin = await call(node.t, 'POST', '/v1/admin/pins', { user: u.user }, node.proc.adminToken);
  assert.equal(pin.status, 201, JSON.stringify(pin.body));
  const r = await u.register(pin.body.pin);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  await u.login();
  return u;
}

const until = <T>(what: string, f: () => Promise<T | undefined>, ms = 15_000) => waitUntil(what, f, ms, 50);

/** The topic summary `u` gets from its own server, once that server holds at least `size` entries. */
async function summaryAt(u: ScriptedUser, node: Node, topicId: Uint8Array, size: number) {
  return until(`${node.name} to hold ${size} entries`, async () => {
    const r = await call(node.t, 'GET', `/v1/topics/${toBase64url(topicId)}`, undefined, token(u));
    return r.status === 200 && r.body.size >= size ? r.body : undefined;
  });
}

/** The size of `node`'s copy of a topic, read from its database (read-only, while it runs). */
function storedSize(node: Node, topicId: Uint8Array): number | null {
  const db = new Database(join(node.dir, 'rendezvous.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('SELECT size FROM topics WHERE topic_id = ?').get(Buffer.from(topicId)) as { size: number } | undefined;
    return row?.size ?? null;
  } finally {
    db.close();
  }
}

/** A fresh mirror of `topic` as `u` reads it from its own server: the whole log, verified. */
async function viewOf(u: ScriptedUser, node: Node, topic: ScriptedTopic): Promise<ScriptedTopic> {
  const v = attachTopic(node.t, 'alpha.test', alphaKey, topic.id, topic);
  await v.sync(u);
  return v;
}

function assertSameLog(view: ScriptedTopic, reference: ScriptedTopic, who: string): void {
  assert.equal(view.log.size, reference.log.size, `${who}: same number of entries`);
  assert.ok(equal(view.log.root(), reference.log.root()), `${who}: same root`);
  const hex = view.entries.map((e) => Buffer.from(e).toString('hex'));
  assert.equal(new Set(hex).size, hex.length, `${who}: no entry twice`);
  assert.deepEqual(hex, reference.entries.map((e) => Buffer.from(e).toString('hex')), `${who}: same entries`);
}

let alpha: Node, beta: Node, gamma: Node;
let alphaKey: Uint8Array;
let alice: ScriptedUser, bob: ScriptedUser, carol: ScriptedUser, dave: ScriptedUser;
let topic: ScriptedTopic;

before(async () => {
  for (const n of NAMES) ports.set(n, await freePort());
  [alpha, beta, gamma] = await Promise.all([boot('alpha.test'), boot('beta.test'), boot('gamma.test')]);
  const wk = await call(alpha.t, 'GET', '/.well-known/rendezvous');
  assert.equal(wk.body.server, 'alpha.test');
  alphaKey = fromBase64url(wk.body.publicKey);
  [alice, bob, carol] = await Promise.all([user(alpha, 'alice'), user(beta, 'bob'), user(gamma, 'carol')]);
});

after(async () => {
  // FED_DUMP=DIR keeps each server's output (JSON log lines) there, for a failing run.
  if (process.env.FED_DUMP !== undefined) for (const n of nodes.values()) writeFileSync(join(process.env.FED_DUMP, `${n.name}.log`), n.proc.output());
  await cleanup();
});

describe('federation between three server processes', () => {
  it('users of three servers share a topic hosted on alpha; every view is the same verified log', async () => {
    topic = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: carol, role: 'participant' },
    ]);
    for (const [u, n] of [[bob, beta], [carol, gamma]] as const) {
      const s = await summaryAt(u, n, topic.id, 1);
      assert.equal(s.host, 'alpha.test');
      verifyCheckpoint(crypto, decodeCheckpoint(fromBase64url(s.checkpoint)), alphaKey, topic.id);
    }
    assert.equal((await topic.post(alice, topic.message(alice, 'from alpha'))).status, 201);
    const atBeta = await viewOf(bob, beta, topic);
    const b = await atBeta.post(bob, atBeta.message(bob, 'from beta'));
    assert.equal(b.status, 201, JSON.stringify(b.body));
    assert.equal(b.body.index, 2, 'the host assigned the index');
    verifyCheckpoint(crypto, decodeCheckpoint(fromBase64url(b.body.checkpoint)), alphaKey, topic.id);
    await summaryAt(carol, gamma, topic.id, 3);
    const atGamma = await viewOf(carol, gamma, topic);
    const c = await atGamma.post(carol, atGamma.message(carol, 'from gamma'));
    assert.equal(c.status, 201, JSON.stringify(c.body));
    await topic.sync(alice);
    assert.equal(topic.log.size, 4);
    await Promise.all([summaryAt(bob, beta, topic.id, 4), summaryAt(carol, gamma, topic.id, 4)]);
    assertSameLog(await viewOf(bob, beta, topic), topic, 'bob@beta');
    assertSameLog(await viewOf(carol, gamma, topic), topic, 'carol@gamma');
    assertSameLog(await viewOf(alice, alpha, topic), topic, 'alice@alpha');
  });

  it('membership across servers: gamma receives carol’s removal and nothing more; dave@gamma is added', async () => {
    await topic.sync(alice);
    await topic.changeAndSync(alice, { type: 'remove', memberId: topic.memberId(carol) });
    const removedAt = topic.log.size;
    await until('gamma to hold the removal', async () => {
      const r = await call(gamma.t, 'GET', topic.path, undefined, token(carol));
      return r.status === 403 && r.body.error.code === 'topic.not_member' ? true : undefined;
    });
    assert.equal(storedSize(gamma, topic.id), removedAt, 'gamma holds the log up to the removal');
    assert.equal((await topic.post(alice, topic.message(alice, 'after carol left'))).status, 201);
    await summaryAt(bob, beta, topic.id, removedAt + 1);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(storedSize(gamma, topic.id), removedAt, 'gamma receives nothing after its last user left');

    dave = await user(gamma, 'dave');
    await topic.sync(alice);
    await topic.changeAndSync(alice, { type: 'add', role: 'participant', user: dave });
    const s = await summaryAt(dave, gamma, topic.id, topic.log.size);
    assert.ok(s.members.some((m: { user: string }) => m.user === 'dave@gamma.test'), 'dave is a member on gamma');
    assertSameLog(await viewOf(dave, gamma, topic), topic, 'dave@gamma');
  });

  it('a member server killed (SIGKILL) while others post catches up on restart, nothing twice', async () => {
    const atGamma = await viewOf(dave, gamma, topic);
    let killed: Promise<void> | undefined;
    for (let i = 0; i < 6; i++) {
      if (i === 2) killed = beta.proc.kill9();
      await topic.sync(alice);
      const a = await topic.post(alice, topic.message(alice, `alice ${i} while beta is down`));
      assert.equal(a.status, 201, JSON.stringify(a.body));
      await atGamma.sync(dave);
      const d = await atGamma.post(dave, atGamma.message(dave, `dave ${i} while beta is down`));
      assert.equal(d.status, 201, JSON.stringify(d.body));
    }
    await killed;
    await topic.sync(alice);
    beta = await boot('beta.test');
    await summaryAt(bob, beta, topic.id, topic.log.size);
    const atBeta = await viewOf(bob, beta, topic);
    assertSameLog(atBeta, topic, 'bob@beta after the restart');
    // And beta forwards again.
    const b = await atBeta.post(bob, atBeta.message(bob, 'beta is back'));
    assert.equal(b.status, 201, JSON.stringify(b.body));
    assert.equal(b.body.index, topic.log.size);
  });

  it('a post to a host killed (SIGKILL) is pending (202), then lands exactly once after the restart', async () => {
    await summaryAt(bob, beta, topic.id, topic.log.size + 1);
    const atBeta = await viewOf(bob, beta, topic);
    const before = atBeta.log.size;
    await alpha.proc.kill9();
    const m = atBeta.message(bob, 'while alpha is down');
    const key = `e2e-pending-${toBase64url(randomBytes(9))}`;
    const r = await atBeta.post(bob, m, key);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.deepEqual(r.body, { pending: true });
    const still = await atBeta.post(bob, m, key);
    assert.ok(still.status === 202 || still.status === 201, `a retry answers what is known: ${still.status} ${JSON.stringify(still.body)}`);
    alpha = await boot('alpha.test');
    const done = await until('the pending post to be delivered', async () => {
      const again = await atBeta.post(bob, m, key);
      return again.status === 201 ? again : undefined;
    });
    assert.equal(done.body.index, before);
    const replay = await atBeta.post(bob, m, key);
    assert.equal(replay.status, 201);
    assert.equal(replay.body.index, before, 'the same answer again');
    await topic.sync(alice);
    assert.equal(topic.log.size, before + 1, 'appended once');
    const bytes = encodeMessage(m);
    const copies = topic.entries.filter((e) => {
      const d = decodeLogEntry(e);
      return d.type === 'message' && equal(d.body, bytes);
    });
    assert.equal(copies.length, 1, 'the message is in the log once');
    await summaryAt(bob, beta, topic.id, before + 1);
    assertSameLog(await viewOf(bob, beta, topic), topic, 'bob@beta');
    await summaryAt(dave, gamma, topic.id, before + 1);
    assertSameLog(await viewOf(dave, gamma, topic), topic, 'dave@gamma');
  });
});

describe('forged requests to a real process', () => {
  /** beta as this test plays it: its name and its (explicit) server key. */
  const asBeta = () => ({ name: 'beta.test', crypto, serverSeed: betaSeed, now: () => Date.now(), random: (n: number) => new Uint8Array(randomBytes(n)) });
  const usersPath = `/v1/federation/users/${encodeURIComponent('alice@alpha.test')}`;
  const empty = new Uint8Array(0);

  async function send(path: string, method: string, headers: Record<string, string>, body?: Uint8Array) {
    const res = await fetch(alpha.url + path, {
      method,
      headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
      body: body === undefined ? undefined : new Uint8Array(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  it('a correctly signed request is answered (the baseline of the forgeries below)', async () => {
    const h = signedHeaders(asBeta(), { destination: 'alpha.test', method: 'GET', path: usersPath, body: empty });
    const r = await send(usersPath, 'GET', h);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.user, 'alice@alpha.test');
    assert.equal(r.body.identityKey, toBase64url(alice.identityKey));
  });

  it('bad signature: federation.bad_signature', async () => {
    const h = signedHeaders(asBeta(), { destination: 'alpha.test', method: 'GET', path: usersPath, body: empty });
    const sig = fromBase64url(h[FEDERATION_HEADERS.signature]!);
    sig[0]! ^= 1;
    const r = await send(usersPath, 'GET', { ...h, [FEDERATION_HEADERS.signature]: toBase64url(sig) });
    assert.equal(r.status, 401);
    assert.equal(r.body.error.code, 'federation.bad_signature');
    // A body other than the one signed is the same failure.
    const path = `/v1/federation/topics/${toBase64url(topic.id)}/submit`;
    const signedBody = new TextEncoder().encode('{}');
    const h2 = signedHeaders(asBeta(), { destination: 'alpha.test', method: 'POST', path, body: signedBody });
    const r2 = await send(path, 'POST', h2, new TextEncoder().encode('{"kind":"message"}'));
    assert.equal(r2.status, 401);
    assert.equal(r2.body.error.code, 'federation.bad_signature');
  });

  it('wrong destination: federation.wrong_destination', async () => {
    const h = signedHeaders(asBeta(), { destination: 'gamma.test', method: 'GET', path: usersPath, body: empty });
    const r = await send(usersPath, 'GET', h);
    assert.equal(r.status, 421);
    assert.equal(r.body.error.code, 'federation.wrong_destination');
  });

  it('the exact same signed request sent twice: federation.replayed', async () => {
    const h = signedHeaders(asBeta(), { destination: 'alpha.test', method: 'GET', path: usersPath, body: empty });
    assert.equal((await send(usersPath, 'GET', h)).status, 200);
    const again = await send(usersPath, 'GET', h);
    assert.equal(again.status, 401);
    assert.equal(again.body.error.code, 'federation.replayed');
  });

  it('beta speaking for a user it does not host: federation.forbidden, nothing appended', async () => {
    await topic.sync(alice);
    const size = topic.log.size;
    const path = `/v1/federation/topics/${toBase64url(topic.id)}/submit`;
    const body = new TextEncoder().encode(
      JSON.stringify({
        kind: 'message',
        user: 'alice@alpha.test',
        deviceId: alice.devices[0]!.id,
        clientId: 'forged-by-beta-1',
        body: toBase64url(encodeMessage(topic.message(alice, 'forged by beta'))),
      }),
    );
    const h = signedHeaders(asBeta(), { destination: 'alpha.test', method: 'POST', path, body });
    const r = await send(path, 'POST', h, body);
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'federation.forbidden');
    await topic.sync(alice);
    assert.equal(topic.log.size, size);
  });
});

describe('the CLI across servers', () => {
  const profiles = new Map<string, string>();

  async function ok(who: string, ...args: string[]): Promise<string> {
    const r = await runCli([...args, '--profile', profiles.get(who)!]);
    assert.equal(r.code, 0, `rendezvous ${args.join(' ')} as ${who} failed (${r.code}):\n${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  it('a person on each server: a topic on alpha with members of beta and gamma; each reads the others', async () => {
    await Promise.all(
      ([['ann', alpha], ['ben', beta], ['cat', gamma]] as const).map(async ([who, node]) => {
        profiles.set(who, join(tempDir('rendezvous-fed-cli-'), 'profile'));
        const pin = await call(node.t, 'POST', '/v1/admin/pins', { user: `${who}@${node.name}` }, node.proc.adminToken);
        assert.equal(pin.status, 201, JSON.stringify(pin.body));
        const out = JSON.parse(await ok(who, 'register', who, '--server', node.url, '--pin', pin.body.pin, '--json'));
        assert.equal(out.user, `${who}@${node.name}`);
      }),
    );
    const created = JSON.parse(
      await ok('ann', 'topic', 'create', 'tri', '--member', 'ben@beta.test:participant', '--member', 'cat@gamma.test:participant', '--json'),
    );
    assert.match(created.id, /^[A-Za-z0-9_-]{22}$/);
    await ok('ann', 'send', created.id, 'hello from alpha');
    /** Polls `rendezvous read` (which syncs first) until `who` reads `want.length` messages. */
    const expectAll = async (who: string, want: string[]) => {
      let last = '';
      const got = await until(
        `${who} to read ${want.length} messages`,
        async () => {
          const r = await runCli(['read', created.id, '--json', '--profile', profiles.get(who)!]);
          last = `${r.code} ${r.stdout}${r.stderr}`;
          if (r.code !== 0) return undefined;
          const texts = (JSON.parse(r.stdout).messages as { type: string; sender: string; text: string }[])
            .filter((m) => m.type === 'text')
            .map((m) => `${m.sender}: ${m.text}`);
          return texts.length >= want.length ? texts : undefined;
        },
        20_000,
      ).catch((e: Error) => assert.fail(`${e.message}; last read: ${last}`));
      assert.deepEqual(got, want, `${who}'s view`);
    };
    await expectAll('ben', ['ann@alpha.test: hello from alpha']);
    await ok('ben', 'send', created.id, 'hello from beta');
    await expectAll('cat', ['ann@alpha.test: hello from alpha', 'ben@beta.test: hello from beta']);
    await ok('cat', 'send', created.id, 'hello from gamma');
    const all = ['ann@alpha.test: hello from alpha', 'ben@beta.test: hello from beta', 'cat@gamma.test: hello from gamma'];
    await Promise.all(['ann', 'ben', 'cat'].map((who) => expectAll(who, all)));
  });
});

describe('a host that forks', () => {
  it('alpha restarted dishonest (forkFor gamma): beta and gamma both record the fork with alpha-signed evidence', async () => {
    await alpha.proc.stop();
    alpha = await boot('alpha.test', { forkFor: ['gamma.test'] });
    assert.match(alpha.proc.output(), /testing hooks/, 'the server warns about the testing hook');
    const erin = await user(gamma, 'erin');
    const forked = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: erin, role: 'participant' },
    ]);
    assert.equal((await forked.post(alice, forked.message(alice, 'one message, two histories'))).status, 201);
    let last: { body: any } | undefined;
    for (const [u, n] of [[bob, beta], [erin, gamma]] as const) {
      const forks = await until(`${n.name} to record the fork`, async () => {
        const r = await call(n.t, 'GET', forked.path, undefined, token(u));
        last = r;
        return r.status === 200 && r.body.forks.length > 0 ? r.body.forks : undefined;
      }).catch((e: Error) => {
        // Which cosignatures (witness → checkpoint size) the server held, against its replica size.
        const held = ((last?.body?.witnesses ?? []) as string[]).map((w) => {
          const c = decodeCosignature(fromBase64url(w));
          return `${c.witness}@${decodeCheckpoint(c.checkpoint).size}`;
        });
        assert.fail(`${e.message} (replica size ${last?.body?.size}, cosignatures held: ${held.join(', ')})`);
      });
      const cps = (forks[0].checkpoints as string[]).map((c) => decodeCheckpoint(fromBase64url(c)));
      assert.equal(cps.length, 2, `${n.name}: two checkpoints`);
      for (const cp of cps) verifyCheckpoint(crypto, cp, alphaKey, forked.id);
      assert.equal(cps[0]!.size, cps[1]!.size, `${n.name}: one size`);
      assert.equal(equal(cps[0]!.root, cps[1]!.root), false, `${n.name}: two roots for one size`);
    }
  });
});
