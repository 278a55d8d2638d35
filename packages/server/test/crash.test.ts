/**
 * Durability under kill -9, against a real server process (`rendezvous serve`, SQLite in WAL
 * mode with synchronous=FULL). Several clients (three members, two devices each) post
 * concurrently, each post with its own Idempotency-Key; a random 150–600 ms into the stream the
 * server is SIGKILLed with requests in flight, then restarted on the same data directory.
 * After each restart:
 *
 * - a fresh client mirror fetches the whole log and verifies it (every update and message, the
 *   Merkle root, the signed checkpoint);
 * - every acknowledged post is at its acknowledged index with the bytes that were sent, and
 *   the log's root at every acknowledged size is the acknowledged checkpoint's root;
 * - a consistency proof from every acknowledged checkpoint to the final one verifies;
 * - no message is in the log twice, and nothing is in the log that no client sent;
 * - every post that got no answer, retried with the same Idempotency-Key and body, either
 *   replays the stored result (it had committed: same index) or lands once (it had not); a
 *   second retry of anything replays the first answer.
 *
 * The kill/restart cycle runs CYCLES times in one test.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  decodeCheckpoint,
  decodeLogEntry,
  decodeMessage,
  encodeMessage,
  epochPrk,
  equal,
  fromBase64url,
  sealMessage,
  toHex,
  utf8,
  verifyCheckpoint,
  verifyConsistency,
  type Checkpoint,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { ScriptedUser, call, overHttp, type Transport } from './helpers.ts';
import { ScriptedTopic, attachTopic, newClientId, submit, token } from './topic-client.ts';
import { cleanup, start, tempDir, type ServerProcess } from './process.ts';

/** Kill/restart cycles that caught requests in flight, and the most cycles tried to get them. */
const CYCLES = 4;
const MAX_CYCLES = 8;
const LOOPS_PER_DEVICE = 3;
const random = (n: number) => new Uint8Array(randomBytes(n));

interface Ack {
  index: number;
  size: number;
  checkpoint: Checkpoint;
  /** The response body as received, which a retry must replay exactly. */
  body: unknown;
}

interface Attempt {
  clientId: string;
  user: ScriptedUser;
  device: number;
  bytes: Uint8Array;
  nonce: string;
  cycle: number;
  /** The first answer: an acknowledgement, an HTTP refusal, or none (the connection died). */
  ack?: Ack;
  refused?: string;
  lost?: string;
}

let dataDir: string;
let port: number;
let srv: ServerProcess;
let t: Transport;
let serverKey: Uint8Array;
let topic: ScriptedTopic;
let clients: { user: ScriptedUser; device: number }[];
/** Concurrent posting loops: several per device, so the server always has a queue to be killed in. */
let loops: { user: ScriptedUser; device: number }[];
/** The newest log the clients know (from acknowledgements): new messages are written against it. */
let head: { size: number; root: Uint8Array };
const attempts: Attempt[] = [];

before(async () => {
  dataDir = tempDir('rendezvous-crash-');
  srv = await start(dataDir);
  port = srv.port;
  t = overHttp(srv.url);
  serverKey = fromBase64url((await call(t, 'GET', '/.well-known/rendezvous')).body.publicKey);
  const users: ScriptedUser[] = [];
  for (const name of ['alice', 'bob', 'carol']) {
    const u = new ScriptedUser(`${name}@${srv.name}`, t, Date.now);
    const pin = await call(t, 'POST', '/v1/admin/pins', { user: u.user }, srv.adminToken);
    assert.equal(pin.status, 201, JSON.stringify(pin.body));
    assert.equal((await u.register(pin.body.pin)).status, 201);
    assert.equal((await u.addDevice()).status, 201);
    await u.login(0, srv.name);
    await u.login(1, srv.name);
    users.push(u);
  }
  const [alice, bob, carol] = users as [ScriptedUser, ScriptedUser, ScriptedUser];
  topic = await ScriptedTopic.create(t, srv.name, serverKey, [
    { user: alice, role: 'admin' },
    { user: bob, role: 'participant' },
    { user: carol, role: 'participant' },
  ]);
  head = { size: topic.log.size, root: topic.log.root() };
  clients = users.flatMap((user) => [0, 1].map((device) => ({ user, device })));
  loops = clients.flatMap((c) => Array.from({ length: LOOPS_PER_DEVICE }, () => c));
});
after(async () => {
  await cleanup();
});

/** A signed, encrypted message from `u` written against the newest log the clients know. */
function build(u: ScriptedUser, text: string): Uint8Array {
  return encodeMessage(
    sealMessage(crypto, random, {
      topicId: topic.id,
      epoch: 0,
      epochPrk: epochPrk(crypto, topic.id, 0, topic.epochSecret),
      sender: topic.memberId(u),
      signatureSeed: topic.keys.get(u.user)!.signatureSeed,
      headSize: head.size,
      headRoot: head.root,
      content: { type: 'text', body: utf8(text) },
    }),
  );
}

function post(a: Pick<Attempt, 'user' | 'device' | 'bytes' | 'clientId'>) {
  return submit(t, `${topic.path}/messages`, { message: Buffer.from(a.bytes).toString('base64url') }, token(a.user, a.device), a.clientId);
}

/** Checks an acknowledgement's checkpoint and returns it as an Ack. */
function toAck(body: { index: number; size: number; checkpoint: string }): Ack {
  const cp = decodeCheckpoint(fromBase64url(body.checkpoint));
  verifyCheckpoint(crypto, cp, serverKey, topic.id);
  assert.equal(cp.size, body.size);
  assert.equal(body.size, body.index + 1, 'a message is acknowledged with the checkpoint of the log that ends with it');
  return { index: body.index, size: body.size, checkpoint: cp, body };
}

function noteHead(ack: Ack): void {
  if (ack.size > head.size) head = { size: ack.size, root: ack.checkpoint.root };
}

/** Posts from every client until `stop()`; resolves when every client has stopped. */
function stream(cycle: number) {
  let stopped = false;
  let firstAck!: () => void;
  const acked = new Promise<void>((r) => (firstAck = r));
  let n = 0;
  const done = Promise.all(
    loops.map(async ({ user, device }) => {
      while (!stopped) {
        const a: Attempt = { clientId: newClientId(), user, device, bytes: build(user, `c${cycle} m${n++} ${user.user}/${device}`), nonce: '', cycle };
        a.nonce = toHex(decodeMessage(a.bytes).nonce);
        attempts.push(a);
        try {
          const r = await post(a);
          if (r.status === 201) {
            // Only decoded here (the signature is checked after the kill): the stream's client
            // side must stay cheap, so the server, not the test, is the bottleneck.
            const cp = decodeCheckpoint(fromBase64url(r.body.checkpoint));
            a.ack = { index: r.body.index, size: r.body.size, checkpoint: cp, body: r.body };
            noteHead(a.ack);
            firstAck();
          } else a.refused = `${r.status} ${JSON.stringify(r.body)}`;
        } catch (e) {
          a.lost = String((e as { cause?: unknown }).cause ?? e);
        }
      }
    }),
  );
  return {
    acked,
    done,
    stop: () => {
      stopped = true;
    },
  };
}

/** The messages of a verified mirror: bytes (hex) → index, and every nonce → how often. */
function messagesOf(view: ScriptedTopic): { at: Map<string, number>; nonces: Map<string, number>; count: number } {
  const at = new Map<string, number>();
  const nonces = new Map<string, number>();
  let count = 0;
  view.entries.forEach((bytes, index) => {
    const e = decodeLogEntry(bytes);
    if (e.type !== 'message') return;
    count++;
    const hex = toHex(e.body);
    assert.ok(!at.has(hex), `message at ${index} is also at ${at.get(hex)}`);
    at.set(hex, index);
    const nonce = toHex(decodeMessage(e.body).nonce);
    nonces.set(nonce, (nonces.get(nonce) ?? 0) + 1);
  });
  return { at, nonces, count };
}

/** A fresh mirror of the topic, synced from index 0 and verified entry by entry. */
async function freshView(): Promise<ScriptedTopic> {
  const view = attachTopic(t, srv.name, serverKey, topic.id, topic);
  await view.sync(clients[2]!.user);
  assert.equal(view.log.size, view.lastCheckpoint!.size);
  return view;
}

describe('kill -9 while clients post', () => {
  it(`keeps every acknowledged entry, verifies end to end, and retries land exactly once (${CYCLES} kill/restart cycles)`, async (tc) => {
    let hits = 0;
    for (let cycle = 0; hits < CYCLES; cycle++) {
      assert.ok(cycle < MAX_CYCLES, `only ${hits} of ${MAX_CYCLES} kills caught requests in flight`);
      // ---- a stream of posts, then SIGKILL with requests in flight ----------------------------
      const s = stream(cycle);
      let timer: NodeJS.Timeout | undefined;
      const first = await Promise.race([
        s.acked.then(() => true),
        s.done.then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(r, 15_000, false))),
      ]);
      clearTimeout(timer);
      assert.ok(first, `cycle ${cycle}: no post was acknowledged`);
      const delay = 150 + Math.floor(Math.random() * 450);
      await new Promise((r) => setTimeout(r, delay)); // the kill time itself is what is random
      s.stop();
      const killedAt = Date.now();
      await srv.kill9();
      await s.done;
      const mine = attempts.filter((a) => a.cycle === cycle);
      const refused = mine.filter((a) => a.refused !== undefined);
      assert.deepEqual(
        refused.map((a) => a.refused),
        [],
        'no post was refused',
      );
      const lost = mine.filter((a) => a.lost !== undefined);
      // A kill at a moment when every request had been answered still tests the acknowledged
      // entries; it does not count toward the cycles with requests in flight.
      if (lost.length > 0) hits++;
      const ackedNow = mine.filter((a) => a.ack !== undefined);
      for (const a of ackedNow) assert.deepEqual(toAck(a.ack!.body as Parameters<typeof toAck>[0]), a.ack);

      // ---- restart on the same data, and verify from scratch -----------------------------------
      srv = await start(dataDir, port);
      t = overHttp(srv.url);
      const restartMs = Date.now() - killedAt;
      const view = await freshView();
      const n = view.log.size;
      const final = view.lastCheckpoint!;
      const { at, nonces, count } = messagesOf(view);
      for (const [nonce, k] of nonces) assert.equal(k, 1, `nonce ${nonce} is in the log ${k} times`);
      const sent = new Map(attempts.map((a) => [toHex(a.bytes), a]));
      for (const hex of at.keys()) assert.ok(sent.has(hex), 'every message in the log was sent by a client');

      for (const a of attempts.filter((x) => x.ack !== undefined)) {
        const idx = at.get(toHex(a.bytes));
        assert.equal(idx, a.ack!.index, `acknowledged post ${a.clientId} is at its acknowledged index`);
        assert.deepEqual(decodeLogEntry(view.entries[a.ack!.index]!).body, a.bytes);
        assert.ok(equal(view.log.root(a.ack!.size), a.ack!.checkpoint.root), `the log at size ${a.ack!.size} has the acknowledged root`);
      }
      for (const size of new Set(ackedNow.map((a) => a.ack!.size))) {
        const cp = ackedNow.find((a) => a.ack!.size === size)!.ack!.checkpoint;
        const r = await call(t, 'GET', `${topic.path}/proofs/consistency?from=${size}&to=${n}`, undefined, token(clients[0]!.user));
        assert.equal(r.status, 200, JSON.stringify(r.body));
        verifyConsistency(crypto, size, n, r.body.proof.map(fromBase64url), cp.root, final.root);
      }
      const committedLost = lost.filter((a) => at.has(toHex(a.bytes)));
      const ackedTotal = attempts.filter((a) => a.ack !== undefined).length;
      assert.equal(count, ackedTotal + committedLost.length, 'the log holds the acknowledged posts and some unanswered ones, nothing else');

      // ---- retry every unanswered post with the same key and body ------------------------------
      const retries = await Promise.all(lost.map((a) => post(a)));
      let replayed = 0;
      retries.forEach((r, k) => {
        const a = lost[k]!;
        assert.equal(r.status, 201, `retry of ${a.clientId}: ${JSON.stringify(r.body)}`);
        const was = at.get(toHex(a.bytes));
        if (was !== undefined) {
          assert.equal(r.headers.get('idempotent-replayed'), 'true', 'a post that had committed is replayed, not appended again');
          assert.equal(r.body.index, was);
          replayed++;
        } else {
          assert.equal(r.headers.get('idempotent-replayed'), null, 'a post that had not committed is appended now');
          assert.ok(r.body.index >= n, `a post that had not committed lands after the recovered log (${r.body.index} ≥ ${n})`);
        }
        a.ack = toAck(r.body);
        noteHead(a.ack);
      });
      // A second retry of any post, answered or not, replays its first answer.
      const sample = [...lost, ...ackedNow.slice(0, 8)];
      const again = await Promise.all(sample.map((a) => post(a)));
      again.forEach((r, k) => {
        assert.equal(r.status, 201);
        assert.equal(r.headers.get('idempotent-replayed'), 'true');
        assert.deepEqual(r.body, sample[k]!.ack!.body, 'a replay answers exactly what the first answer said');
      });
      await view.sync(clients[0]!.user);
      const afterRetry = messagesOf(view);
      assert.equal(view.log.size, n + (lost.length - replayed), 'each retry that was not a replay appended exactly one entry');
      for (const a of lost) assert.equal(afterRetry.at.get(toHex(a.bytes)), a.ack!.index, 'a retried post is in the log once, at its answer');
      for (const [nonce, k] of afterRetry.nonces) assert.equal(k, 1, `nonce ${nonce} is in the log ${k} times`);
      tc.diagnostic(
        `cycle ${cycle}: killed ${delay} ms after the first ack; ${ackedNow.length} acked, ${lost.length} in flight ` +
          `(${replayed} had committed, ${lost.length - replayed} had not); restart ${restartMs} ms; log ${view.log.size} entries`,
      );
      head = { size: view.log.size, root: view.log.root() };
    }

    // The server still shuts down cleanly after all that.
    const r = await srv.stop();
    assert.deepEqual(r, { code: 0, signal: null }, srv.output());
    assert.ok(
      attempts.every((a) => a.ack !== undefined),
      'every post ended acknowledged',
    );
  });
});
