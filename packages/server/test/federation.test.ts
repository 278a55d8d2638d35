/**
 * Federation between three servers in this process (protocol §17), over real loopback sockets
 * with real SQLite files: alpha hosts a topic with members on alpha, beta and gamma. Scripted
 * clients (protocol core only) post through their own home server and verify every entry and
 * host checkpoint their server serves. The CLI and spawned-process tests are in
 * federation-e2e.test.ts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createECDH, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodeCheckpoint,
  decodeCosignature,
  encodeMessage,
  equal,
  openFile,
  sealFile,
  fromBase64url,
  toBase64url,
  verifyCheckpoint,
  verifyCosignature,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { startServer, type RunningServer, type ServerConfig } from '../src/server.ts';
import { signedHeaders } from '../src/federation/federation.ts';
import { ADMIN_TOKEN, GENEROUS_RATES, ScriptedUser, call, issuePin, overHttp, until as waitUntil, type Transport } from './helpers.ts';
import { ScriptedTopic, attachTopic, token } from './topic-client.ts';

interface Node {
  name: string;
  dir: string;
  port: number;
  server: RunningServer;
  t: Transport;
}

const nodes = new Map<string, Node>();
const dirs: string[] = [];

async function boot(name: string, port = 0, dir?: string, extra: Partial<ServerConfig> = {}): Promise<Node> {
  const d = dir ?? mkdtempSync(join(tmpdir(), `rendezvous-fed-${name.split('.')[0]}-`));
  if (dir === undefined) dirs.push(d);
  const server = await startServer({
    dataDir: d,
    host: '127.0.0.1',
    port,
    name,
    adminToken: ADMIN_TOKEN,
    logLevel: process.env.FED_LOG ?? 'silent',
    announce: () => {},
    rates: GENEROUS_RATES,
    federation: { retryMinMs: 50, retryMaxMs: 400, ...extra.federation },
    // A local push service on loopback stands in for a browser vendor's (push.test.ts decrypts them).
    push: { allowInsecure: true, contact: 'mailto:ops@fed.test', coalesceMs: 50 },
    ...extra,
  });
  const n: Node = { name, dir: d, port: Number(new URL(server.url).port), server, t: overHttp(server.url) };
  nodes.set(name, n);
  // Everyone knows everyone's address (the peer map of protocol §17.1).
  for (const a of nodes.values()) for (const b of nodes.values()) if (a !== b) a.server.ctx.federation.setPeer(b.name, b.server.url);
  return n;
}

async function stop(name: string): Promise<Node> {
  const n = nodes.get(name)!;
  await n.server.close();
  return n;
}

/** Restarts a stopped server on its port and data directory. */
async function restart(name: string, extra: Partial<ServerConfig> = {}): Promise<Node> {
  const n = nodes.get(name)!;
  return boot(name, n.port, n.dir, extra);
}

async function user(node: Node, name: string): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}@${node.name}`, node.t, () => Date.now());
  assert.equal((await u.register(await issuePin(node.t, u.user))).status, 201);
  await u.login();
  return u;
}

const until = <T>(what: string, f: () => Promise<T | undefined>, ms = 10_000) => waitUntil(what, f, ms, 50);

/** The topic summary `u` gets from its own server, once that server holds at least `size` entries. */
async function summaryAt(u: ScriptedUser, node: Node, topicId: Uint8Array, size: number) {
  return until(`${node.name} to hold ${size} entries`, async () => {
    const r = await call(node.t, 'GET', `/v1/topics/${toBase64url(topicId)}`, undefined, token(u));
    return r.status === 200 && r.body.size >= size ? r.body : undefined;
  });
}

let alpha: Node, beta: Node, gamma: Node;
let alice: ScriptedUser, bob: ScriptedUser, carol: ScriptedUser;
let alphaKey: Uint8Array;
let topic: ScriptedTopic;
/** The same topic as bob (on beta) and carol (on gamma) mirror it. */
let atBeta: ScriptedTopic, atGamma: ScriptedTopic;

before(async () => {
  alpha = await boot('alpha.test');
  beta = await boot('beta.test');
  gamma = await boot('gamma.test');
  alice = await user(alpha, 'alice');
  bob = await user(beta, 'bob');
  carol = await user(gamma, 'carol');
  alphaKey = alpha.server.ctx.serverKey;
});

after(async () => {
  for (const n of nodes.values()) await n.server.close().catch(() => undefined);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('federation: three servers, one topic', () => {
  it('alice@alpha creates a topic with bob@beta and carol@gamma; both member servers get a verified replica', async () => {
    topic = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: carol, role: 'participant' },
    ]);
    for (const [u, n] of [[bob, beta], [carol, gamma]] as const) {
      const s = await summaryAt(u, n, topic.id, 1);
      assert.equal(s.host, 'alpha.test');
      const cp = decodeCheckpoint(fromBase64url(s.checkpoint));
      verifyCheckpoint(crypto, cp, alphaKey, topic.id);
      assert.equal(cp.origin, 'alpha.test', 'replicas serve the host checkpoint');
    }
    atBeta = attachTopic(beta.t, 'alpha.test', alphaKey, topic.id, topic);
    atGamma = attachTopic(gamma.t, 'alpha.test', alphaKey, topic.id, topic);
    await atBeta.sync(bob);
    await atGamma.sync(carol);
    assert.deepEqual(atBeta.log.root(), topic.log.root());
  });

  it('each member posts through its own server; the host orders, every server serves the same log', async () => {
    const a = await topic.post(alice, topic.message(alice, 'from alpha'));
    assert.equal(a.status, 201, JSON.stringify(a.body));
    await atBeta.sync(bob);
    const b = await atBeta.post(bob, atBeta.message(bob, 'from beta'));
    assert.equal(b.status, 201, JSON.stringify(b.body));
    assert.equal(b.body.index, 2, 'the host assigned the index');
    verifyCheckpoint(crypto, decodeCheckpoint(fromBase64url(b.body.checkpoint)), alphaKey, topic.id);
    await summaryAt(carol, gamma, topic.id, 3);
    await atGamma.sync(carol);
    const c = await atGamma.post(carol, atGamma.message(carol, 'from gamma'));
    assert.equal(c.status, 201, JSON.stringify(c.body));
    await summaryAt(bob, beta, topic.id, 4);
    await Promise.all([topic.sync(alice), atBeta.sync(bob), atGamma.sync(carol)]);
    assert.equal(topic.log.size, 4);
    assert.deepEqual(atBeta.log.root(), topic.log.root());
    assert.deepEqual(atGamma.log.root(), topic.log.root());
  });

  it('a retried forwarded post (same Idempotency-Key) is appended once', async () => {
    await atBeta.sync(bob);
    const m = atBeta.message(bob, 'once');
    const first = await atBeta.post(bob, m, 'fed-retry-key-1');
    const again = await atBeta.post(bob, m, 'fed-retry-key-1');
    assert.equal(first.status, 201);
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    await topic.sync(alice);
    assert.equal(topic.log.size, first.body.index + 1, 'nothing appended twice');
  });

  it("a member's home server pushes to its own devices for entries of a topic hosted elsewhere", async () => {
    const got: string[] = [];
    const service = createServer((req, res) => {
      got.push(req.url ?? '');
      req.resume();
      req.on('end', () => res.writeHead(201).end());
    });
    await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
    try {
      const ecdh = createECDH('prime256v1');
      ecdh.generateKeys();
      const endpoint = `http://127.0.0.1:${(service.address() as AddressInfo).port}/bob-on-beta`;
      const keys = { p256dh: ecdh.getPublicKey().toString('base64url'), auth: randomBytes(16).toString('base64url') };
      const sub = await call(beta.t, 'POST', '/v1/push/subscriptions', { endpoint, keys }, token(bob));
      assert.equal(sub.status, 201, JSON.stringify(sub.body));
      await topic.sync(alice);
      assert.equal((await topic.post(alice, topic.message(alice, 'wake bob up'))).status, 201);
      await until('beta to push to bob', async () => (got.includes('/bob-on-beta') ? true : undefined));
    } finally {
      service.closeAllConnections();
      await new Promise((r) => service.close(r));
    }
  });

  it('files of a topic are kept by its host: uploaded and fetched through the members’ own servers', async () => {
    const key = new Uint8Array(randomBytes(32));
    const plain = new Uint8Array(randomBytes(150_000));
    const blob = sealFile(crypto, key, plain);
    const blobId = crypto.sha256(blob);
    const path = `${topic.path}/blobs/${toBase64url(blobId)}`;
    const up = await fetch(beta.server.url + path, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token(bob)}`, 'content-type': 'application/octet-stream' },
      body: Buffer.from(blob),
    });
    assert.equal(up.status, 201, await up.clone().text());
    assert.deepEqual(await up.json(), { blobId: toBase64url(blobId), size: blob.length });
    assert.equal((await alpha.server.ctx.store.getBlob(topic.id, blobId))?.user, bob.user, 'the host keeps it, charged to bob');
    for (const [u, n] of [[alice, alpha], [carol, gamma], [bob, beta]] as const) {
      const down = await fetch(n.server.url + path, { headers: { authorization: `Bearer ${token(u)}` } });
      assert.equal(down.status, 200, `${u.user} through ${n.name}`);
      assert.deepEqual(openFile(crypto, key, new Uint8Array(await down.arrayBuffer())), plain);
    }
    // A new blob whose bytes do not hash to its id is refused by the host, and nothing is kept.
    const other = sealFile(crypto, key, new Uint8Array(randomBytes(1000)));
    const claimed = crypto.sha256(other);
    other[100] = other[100]! ^ 1;
    const forged = await fetch(`${beta.server.url}${topic.path}/blobs/${toBase64url(claimed)}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token(bob)}`, 'content-type': 'application/octet-stream' },
      body: Buffer.from(other),
    });
    assert.equal(forged.status, 400);
    assert.equal(((await forged.json()) as { error: { code: string } }).error.code, 'file.bad_blob');
    assert.equal(await alpha.server.ctx.store.getBlob(topic.id, claimed), null);
  });

  it('member servers witness the host checkpoints; the host and each server serve the cosignatures', async () => {
    const s = await until('cosignatures from beta and gamma on alpha', async () => {
      const r = await call(alpha.t, 'GET', topic.path, undefined, token(alice));
      return r.body.witnesses?.length >= 2 ? r.body : undefined;
    });
    await topic.sync(alice);
    const servers = new Set<string>();
    for (const w of s.witnesses as string[]) {
      const c = decodeCosignature(fromBase64url(w));
      const key = nodes.get(c.witness)!.server.ctx.serverKey;
      const cp = verifyCosignature(crypto, c, key);
      verifyCheckpoint(crypto, cp, alphaKey, topic.id);
      assert.deepEqual(cp.root, topic.log.root(cp.size), 'the witness vouches for the log alice holds');
      servers.add(c.witness);
    }
    assert.deepEqual([...servers].sort(), ['beta.test', 'gamma.test']);
    assert.deepEqual(s.forks, []);
    // Gossip: gamma holds beta's cosignature too.
    await until('beta cosignature on gamma', async () => {
      const r = await call(gamma.t, 'GET', topic.path, undefined, token(carol));
      const ws = (r.body.witnesses as string[]).map((w) => decodeCosignature(fromBase64url(w)).witness);
      return ws.includes('beta.test') ? true : undefined;
    });
  });
});

describe('federation: failures', () => {
  it('a member server that was down receives everything, in order, exactly once', async () => {
    await stop('gamma.test');
    await topic.sync(alice);
    for (let i = 0; i < 5; i++) assert.equal((await topic.post(alice, topic.message(alice, `while gamma is down ${i}`))).status, 201);
    await atBeta.sync(bob);
    assert.equal((await atBeta.post(bob, atBeta.message(bob, 'bob while gamma is down'))).status, 201);
    await topic.sync(alice);
    // The operator of alpha sees the backlog for gamma and that it is failing.
    const down = await until('alpha to see gamma failing', async () => {
      const r = await call(alpha.t, 'GET', '/v1/admin/federation', undefined, ADMIN_TOKEN);
      const g = (r.body.servers as { server: string; entriesBehind: number; failures: number }[]).find((x) => x.server === 'gamma.test');
      return g !== undefined && g.failures > 0 ? g : undefined;
    });
    assert.ok(down.entriesBehind >= 6, `gamma is behind by the 6 posts (${down.entriesBehind})`);
    gamma = await restart('gamma.test');
    await summaryAt(carol, gamma, topic.id, topic.log.size);
    const fresh = attachTopic(gamma.t, 'alpha.test', alphaKey, topic.id, topic);
    await fresh.sync(carol);
    assert.equal(fresh.log.size, topic.log.size);
    assert.deepEqual(fresh.log.root(), topic.log.root());
    atGamma = fresh;
    const up = await call(alpha.t, 'GET', '/v1/admin/federation', undefined, ADMIN_TOKEN);
    const g = (up.body.servers as { server: string; entriesBehind: number; outbox: number }[]).find((x) => x.server === 'gamma.test')!;
    assert.equal(g.entriesBehind, 0);
  });

  it('a post to a host that is down is pending (202), then lands exactly once when the host is back', async () => {
    await atBeta.sync(bob);
    const before = atBeta.log.size;
    await stop('alpha.test');
    const m = atBeta.message(bob, 'while alpha is down');
    const r = await atBeta.post(bob, m, 'fed-pending-key-1');
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.deepEqual(r.body, { pending: true });
    alpha = await restart('alpha.test');
    const done = await until('the pending post to be delivered', async () => {
      const again = await atBeta.post(bob, m, 'fed-pending-key-1');
      return again.status === 201 ? again : undefined;
    });
    assert.equal(done.body.index, before);
    await summaryAt(bob, beta, topic.id, before + 1);
    await atBeta.sync(bob);
    await topic.sync(alice);
    assert.equal(topic.log.size, before + 1, 'appended once');
  });

  it('membership changes across servers: carol removed (gamma stops receiving), dave@gamma added', async () => {
    await topic.sync(alice);
    await topic.changeAndSync(alice, { type: 'remove', memberId: topic.memberId(carol) });
    const removedAt = topic.log.size;
    // gamma gets the removal (its user must learn it), then nothing more.
    await until('gamma to hold the removal', async () => {
      const row = await gamma.server.ctx.store.getTopic(topic.id);
      return row !== null && row.size === removedAt ? true : undefined;
    });
    const r = await call(gamma.t, 'GET', topic.path, undefined, token(carol));
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'topic.not_member');
    assert.equal((await topic.post(alice, topic.message(alice, 'after carol left'))).status, 201);
    await atBeta.sync(bob);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal((await gamma.server.ctx.store.getTopic(topic.id))!.size, removedAt, 'gamma receives nothing after its last user left');

    const dave = await user(gamma, 'dave');
    await topic.sync(alice);
    await topic.changeAndSync(alice, { type: 'add', role: 'participant', user: dave });
    const s = await summaryAt(dave, gamma, topic.id, topic.log.size);
    assert.ok(s.members.some((m: { user: string }) => m.user === 'dave@gamma.test'), 'dave is a member on gamma too');
  });
});

/** A request signed by `from`'s server key, as `from` would send it. */
async function signedPost(from: Node, to: Node, path: string, body: unknown) {
  const bytes = new TextEncoder().encode(JSON.stringify(body));
  const headers = signedHeaders(from.server.ctx, { destination: to.name, method: 'POST', path, body: bytes });
  const res = await fetch(to.server.url + path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: bytes });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

describe('federation: a server speaks only for its own users and topics', () => {
  it('a submission for a user of another server is refused (federation.forbidden) and appends nothing', async () => {
    await topic.sync(alice);
    const m = topic.message(alice, 'forged by beta');
    const r = await signedPost(beta, alpha, `/v1/federation/topics/${toBase64url(topic.id)}/submit`, {
      kind: 'message',
      user: 'alice@alpha.test',
      deviceId: 'AAAA',
      clientId: 'forged-client-id-1',
      body: toBase64url(encodeMessage(m)),
    });
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'federation.forbidden');
    const size = topic.log.size;
    await topic.sync(alice);
    assert.equal(topic.log.size, size);
  });

  it('entries from a server that does not host the topic are refused', async () => {
    const [e] = await gamma.server.ctx.store.getEntries(topic.id, 0, 1);
    const r = await signedPost(beta, gamma, `/v1/federation/topics/${toBase64url(topic.id)}/entries`, {
      entries: [{ index: 0, entry: toBase64url(e!.entry) }],
      checkpoint: toBase64url(e!.checkpoint!),
    });
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'federation.forbidden');
  });

  it('a host cannot start a replica on a server none of whose users it added', async () => {
    const alone = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    const [e0] = await alpha.server.ctx.store.getEntries(alone.id, 0, 1);
    const path = `/v1/federation/topics/${toBase64url(alone.id)}/entries`;
    const body = { entries: [{ index: 0, entry: toBase64url(e0!.entry) }], checkpoint: toBase64url(e0!.checkpoint!) };
    const noJoin = await signedPost(alpha, gamma, path, body);
    assert.equal(noJoin.status, 403);
    assert.equal(noJoin.body.error.code, 'federation.forbidden');
    // A real update of the log, proven in it, that adds nobody of gamma's.
    const wrongJoin = await signedPost(alpha, gamma, path, { ...body, join: { index: 0, entry: body.entries[0]!.entry, proof: [], checkpoint: body.checkpoint } });
    assert.equal(wrongJoin.status, 403);
    assert.match(wrongJoin.body.error.message, /adds nobody registered here/);
    assert.equal(await gamma.server.ctx.store.getTopic(alone.id), null, 'gamma keeps nothing');
  });

  it('a delivery of more than 100 entries is refused before any entry is looked at', async () => {
    const [e0] = await alpha.server.ctx.store.getEntries(topic.id, 0, 1);
    const entries = Array.from({ length: 101 }, (_, i) => ({ index: i, entry: toBase64url(e0!.entry) }));
    const r = await signedPost(alpha, beta, `/v1/federation/topics/${toBase64url(topic.id)}/entries`, { entries, checkpoint: toBase64url(e0!.checkpoint!) });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'request.bad_field');
    assert.match(r.body.error.message, /1–100 per delivery/);
  });

  it('a claim for a claimer of another server is refused', async () => {
    const r = await signedPost(gamma, beta, `/v1/federation/users/${encodeURIComponent(bob.user)}/topic-keys/claim`, { claimer: alice.user });
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'federation.forbidden');
  });

  it('a cosignature sent in another server’s name is refused', async () => {
    const r = await call(beta.t, 'GET', topic.path, undefined, token(bob));
    const own = (r.body.witnesses as string[]).find((w) => decodeCosignature(fromBase64url(w)).witness === 'beta.test')!;
    const res = await signedPost(gamma, alpha, `/v1/federation/topics/${toBase64url(topic.id)}/witness`, { cosignature: own });
    assert.equal(res.status, 403);
    assert.equal(res.body.error.code, 'federation.forbidden');
  });
});

describe('federation: a host that forks a topic', () => {
  it('member servers detect it by their cosignatures, record the evidence and serve it to clients', async () => {
    // alpha restarts dishonest: it shows gamma another history of every topic (testing hook).
    await stop('alpha.test');
    alpha = await restart('alpha.test', { federation: { retryMinMs: 50, retryMaxMs: 400, testing: { forkFor: ['gamma.test'] } } });
    const erin = await user(gamma, 'erin');
    const forked = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
      { user: erin, role: 'participant' },
    ]);
    assert.equal((await forked.post(alice, forked.message(alice, 'one message, two histories'))).status, 201);
    const forksOn = async (u: ScriptedUser, n: Node) =>
      until(`${n.name} to detect the fork`, async () => {
        const r = await call(n.t, 'GET', forked.path, undefined, token(u));
        return r.status === 200 && r.body.forks.length > 0 ? r.body.forks : undefined;
      });
    for (const [u, n] of [[bob, beta], [erin, gamma]] as const) {
      const forks = await forksOn(u, n);
      // The evidence is what a client can check alone: two checkpoints the host signed, of one
      // topic and size, with different roots.
      const cps = (forks[0].checkpoints as string[]).map((c) => decodeCheckpoint(fromBase64url(c)));
      assert.equal(cps.length, 2);
      for (const cp of cps) verifyCheckpoint(crypto, cp, alphaKey, forked.id);
      assert.equal(cps[0]!.size, cps[1]!.size);
      assert.equal(equal(cps[0]!.root, cps[1]!.root), false, 'two roots for one size');
      assert.equal(forks[0].kind, 'fork');
    }
    // A host proven to have signed two histories is no longer followed by either member server.
    assert.equal((await forked.post(alice, forked.message(alice, 'after the fork'))).status, 201);
    await new Promise((res) => setTimeout(res, 500));
    for (const n of [beta, gamma]) assert.equal((await n.server.ctx.store.getTopic(forked.id))!.size, 2, `${n.name} stopped at the fork`);
    // The host itself recorded the witness that disagrees with its log.
    const onAlpha = await call(alpha.t, 'GET', forked.path, undefined, token(alice));
    assert.equal(onAlpha.body.forks[0].server, 'gamma.test');
  });
});

describe('federation: a host that goes back', () => {
  it('a delivery ending before the head the host already showed is a rollback: recorded, refused', async () => {
    const t3 = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    for (const text of ['one', 'two']) assert.equal((await t3.post(alice, t3.message(alice, text))).status, 201);
    // beta refuses the forked topic of the test before; that must not hold up this one.
    await summaryAt(bob, beta, t3.id, 3);
    const st = await call(alpha.t, 'GET', '/v1/admin/federation', undefined, ADMIN_TOKEN);
    const b = (st.body.servers as { server: string; refusedTopics: number }[]).find((x) => x.server === 'beta.test')!;
    assert.equal(b.refusedTopics, 1, 'alpha holds back the one topic beta refuses');
    // What a host restored from an old backup would send: its log of two entries.
    const old = await alpha.server.ctx.store.getEntries(t3.id, 0, 2);
    const r = await signedPost(alpha, beta, `/v1/federation/topics/${toBase64url(t3.id)}/entries`, {
      entries: old.map((e) => ({ index: e.index, entry: toBase64url(e.entry) })),
      checkpoint: toBase64url(old[1]!.checkpoint!),
    });
    assert.equal(r.status, 409);
    assert.equal(r.body.error.code, 'log.rollback');
    const s = await call(beta.t, 'GET', t3.path, undefined, token(bob));
    assert.equal(s.body.forks.length, 1);
    assert.equal(s.body.forks[0].kind, 'rollback');
    const sizes = (s.body.forks[0].checkpoints as string[]).map((c) => decodeCheckpoint(fromBase64url(c)).size);
    assert.deepEqual(sizes, [3, 2], 'the evidence: the head the host showed, and the smaller one it showed later');
  });
});

describe('federation: the last member leaves from another server', () => {
  it('the host deletes the topic only after that member’s server received the leave', async () => {
    const t4 = await ScriptedTopic.create(alpha.t, 'alpha.test', alphaKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    await t4.changeAndSync(alice, { type: 'role', memberId: t4.memberId(bob), role: 'admin' });
    const aliceLeaves = t4.change(alice, { type: 'leave' });
    assert.equal((await t4.update(alice, aliceLeaves.update)).status, 201);
    await summaryAt(bob, beta, t4.id, 3);
    const onBeta = attachTopic(beta.t, 'alpha.test', alphaKey, t4.id, t4);
    await onBeta.sync(bob);
    const bobLeaves = onBeta.change(bob, { type: 'leave' });
    const r = await onBeta.update(bob, bobLeaves.update);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    // beta holds bob's leave (bob is no member there any more), and only then is it gone on alpha.
    await until('beta to hold the last leave', async () => ((await beta.server.ctx.store.getTopic(t4.id))?.size === 4 ? true : undefined));
    const s = await call(beta.t, 'GET', t4.path, undefined, token(bob));
    assert.equal(s.body.error.code, 'topic.not_member');
    await until('alpha to delete the deserted topic', async () => ((await alpha.server.ctx.store.getTopic(t4.id)) === null ? true : undefined));
  });
});
