/**
 * What a stolen data directory (or log file) gives away: nothing secret. A realistic session
 * runs against a real server process: pins from the admin CLI and API (and a wrong pin tried),
 * registration, a second device, logins and a logout, prekeys, topic keys with a key bundle
 * to the sibling device (opened there), a claimed topic key, a topic with messages, a re-key
 * and an epoch-secret bundle. Then the raw bytes of every file in the data directory, while
 * the server runs (database, WAL, shared memory) and after it stopped, are searched for every
 * secret the clients and the operator hold: the admin token, every pin (with and without
 * dashes, any case), every session token, every identity, device, prekey, topic-key and epoch
 * secret, and the message plaintexts, in raw bytes, hex, base64url and base64 (at every
 * alignment). The process's own log output (stdout and stderr at level trace) is searched for
 * the same.
 *
 * `server.key` is the one file left out: it is where the server keeps its own Ed25519 signing
 * seed by design (docs/server.md §Running), which the test checks; the seed is searched for
 * everywhere else.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import {
  decodeDevicePrekey,
  decodeKeyBundle,
  encodeKeyBundle,
  encodeMessage,
  encodeTopicKey,
  equal,
  fromBase64url,
  openKeyBundle,
  sealKeyBundle,
  toBase64url,
  type BundleContent,
  type TopicKeyWithSecret,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { ScriptedUser, call, expectError, overHttp, type Transport } from './helpers.ts';
import { ScriptedTopic, newTopicKey, token, submit } from './topic-client.ts';
import { adminPin, cleanup, start, tempDir, type ServerProcess } from './process.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));

// ---------------------------------------------------------------------------------------------
// The scanner

interface Needle {
  label: string;
  form: string;
  bytes: Buffer;
  /** Compare ignoring ASCII case (pins are accepted in any case; hex is written in either). */
  ci: boolean;
}

/**
 * The characters of base64 (or base64url) text that only the secret's bits determine, when the
 * secret starts `shift` bytes into the encoded data: a secret inside a longer encoded value is
 * found whatever its offset.
 */
function base64Core(secret: Uint8Array, shift: number, alphabet: 'base64' | 'base64url'): string {
  const text = Buffer.concat([Buffer.alloc(shift), Buffer.from(secret)])
    .toString(alphabet)
    .replace(/=+$/, '');
  const skip = [0, 2, 3][shift]!;
  return text.slice(skip, Math.floor(((shift + secret.length) * 8) / 6));
}

function byteNeedles(label: string, secret: Uint8Array, withRaw = true): Needle[] {
  const out: Needle[] = [];
  const b = Buffer.from(secret);
  if (withRaw) {
    out.push({ label, form: 'raw', bytes: b, ci: false });
    if (b.length >= 32) {
      out.push({ label, form: 'raw (first half)', bytes: b.subarray(0, b.length >> 1), ci: false });
      out.push({ label, form: 'raw (second half)', bytes: b.subarray(b.length >> 1), ci: false });
    }
  }
  out.push({ label, form: 'hex', bytes: Buffer.from(b.toString('hex'), 'latin1'), ci: true });
  for (const alphabet of ['base64url', 'base64'] as const) {
    for (const shift of [0, 1, 2]) {
      out.push({ label, form: `${alphabet} (+${shift})`, bytes: Buffer.from(base64Core(b, shift, alphabet), 'latin1'), ci: false });
    }
  }
  return out;
}

function textNeedles(label: string, s: string, ci = false): Needle[] {
  return [{ label, form: 'text', bytes: Buffer.from(s, 'utf8'), ci }, ...byteNeedles(label, Buffer.from(s, 'utf8'), false)];
}

function lower(b: Buffer): Buffer {
  return Buffer.from(b.toString('latin1').toLowerCase(), 'latin1');
}

/** Every needle found in `hay`, as "label (form) at offset". */
function scan(hay: Buffer, needles: Needle[]): string[] {
  const hayLower = lower(hay);
  const hits: string[] = [];
  for (const n of needles) {
    const at = n.ci ? hayLower.indexOf(lower(n.bytes)) : hay.indexOf(n.bytes);
    if (at !== -1) hits.push(`${n.label} (${n.form}) at ${at}`);
  }
  return hits;
}

/** Every regular file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The session

let srv: ServerProcess;
let t: Transport;
let dataDir: string;
let serverKey: Uint8Array;
let alice: ScriptedUser, bob: ScriptedUser;
let topic: ScriptedTopic;
const needles: Needle[] = [];
/** Public values that are stored, as positive controls: the scan really reads the data. */
const stored: { label: string; bytes: Uint8Array }[] = [];
const tokens: string[] = [];
const epochSecrets: Uint8Array[] = [];
const plaintexts: string[] = [];
const poolKeys: TopicKeyWithSecret[] = [];

function secretBytes(label: string, b: Uint8Array): void {
  needles.push(...byteNeedles(label, b));
}

async function login(u: ScriptedUser, device: number): Promise<string> {
  const tk = await u.login(device, srv.name);
  tokens.push(tk);
  return tk;
}

function seal(u: ScriptedUser, from: number, to: number, claimed: { prekey: string; cert: string }, content: BundleContent) {
  const p = decodeDevicePrekey(fromBase64url(claimed.prekey));
  assert.ok(u.devices[to]!.prekeys.has(toBase64url(p.prekey)), 'the claimed prekey is one the recipient uploaded');
  const bundle = sealKeyBundle(crypto, random, {
    user: u.user,
    senderDeviceSeed: u.devices[from]!.seed,
    recipientDevice: fromBase64url(u.devices[to]!.id),
    recipientPrekey: p.prekey,
    content,
  });
  return { deviceId: u.devices[to]!.id, bundle: toBase64url(encodeKeyBundle(bundle)) };
}

before(async () => {
  dataDir = tempDir('rendezvous-dump-');
  srv = await start(dataDir, undefined, { logLevel: 'trace' });
  t = overHttp(srv.url);
  serverKey = fromBase64url((await call(t, 'GET', '/.well-known/rendezvous')).body.publicKey);
});
after(async () => {
  await cleanup();
});

describe('a data directory and a log hold no secrets', () => {
  it('the scanner finds a secret in every form at any offset, and nothing where there is none', () => {
    const secret = random(32);
    const ns = byteNeedles('probe', secret);
    assert.deepEqual(scan(Buffer.from(random(4096)), ns), [], 'random bytes hold no probe');
    for (const n of ns) {
      for (const pad of [0, 1, 2, 5]) {
        const hay = Buffer.concat([Buffer.from(random(100 + pad)), n.bytes, Buffer.from(random(50))]);
        assert.ok(scan(hay, [n]).length === 1, `${n.form} found after ${100 + pad} bytes`);
      }
    }
    // Base64 text of a longer value with the secret at each offset in it.
    for (const shift of [0, 1, 2, 3, 4]) {
      const value = Buffer.concat([Buffer.from(random(shift)), Buffer.from(secret), Buffer.from(random(7))]);
      for (const alphabet of ['base64', 'base64url'] as const) {
        assert.ok(scan(Buffer.from(`{"x":"${value.toString(alphabet)}"}`), ns).length > 0, `${alphabet} at offset ${shift} found`);
      }
    }
    assert.ok(scan(Buffer.from(`pin ABCD-EFGH-JKMN`), textNeedles('pin', 'abcd-efgh-jkmn', true)).length > 0, 'case-insensitive');
  });

  it('runs a realistic session: pins, registration, devices, sessions, prekeys, topic keys, bundles, a topic', async () => {
    needles.push(...textNeedles('admin token', srv.adminToken));

    // Pins: from the CLI, from the admin API, one never used, and a wrong one tried.
    const a = await adminPin(srv, 'alice');
    const pinOf = async (user: string) => {
      const r = await call(t, 'POST', '/v1/admin/pins', { user }, srv.adminToken);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body.pin as string;
    };
    const bobPin = await pinOf(`bob@${srv.name}`);
    const unused = await pinOf(`mallory@${srv.name}`);
    const wrong = 'WXYZ-2345-6789';
    for (const [label, pin] of [
      ['alice pin', a.pin],
      ['bob pin', bobPin],
      ['unused pin', unused],
      ['wrong pin tried', wrong],
    ] as const) {
      needles.push(...textNeedles(label, pin, true), ...textNeedles(`${label} without dashes`, pin.replace(/-/g, ''), true));
    }

    alice = new ScriptedUser(a.user, t, Date.now);
    bob = new ScriptedUser(`bob@${srv.name}`, t, Date.now);
    expectError(await bob.register(wrong), 403, 'auth.bad_pin');
    assert.equal((await alice.register(a.pin)).status, 201);
    assert.equal((await bob.register(bobPin)).status, 201);
    assert.equal((await alice.addDevice()).status, 201);
    for (const u of [alice, bob]) {
      secretBytes(`${u.user} identity seed`, u.identitySeed);
      stored.push({ label: `${u.user} identity key`, bytes: u.identityKey });
      for (const [i, d] of u.devices.entries()) secretBytes(`${u.user} device ${i} seed`, d.seed);
    }

    // Sessions: one revoked, the others in use.
    const revoked = await login(alice, 0);
    const del = await call(t, 'DELETE', '/v1/auth/session', undefined, revoked);
    assert.equal(del.status, 200, JSON.stringify(del.body));
    expectError(await call(t, 'GET', '/v1/devices', undefined, revoked), 401, 'auth.invalid_token');
    await login(alice, 0);
    await login(alice, 1);
    await login(bob, 0);

    // Prekeys for every device.
    for (const [u, i] of [
      [alice, 0],
      [alice, 1],
      [bob, 0],
    ] as const) {
      const r = await call(t, 'POST', '/v1/prekeys', { prekeys: u.prekeys(i, 5) }, token(u, i));
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.count, 5);
    }

    // Topic keys: alice's go with a bundle of their secrets to her second device.
    const claimed = await call(t, 'POST', `/v1/devices/${alice.devices[1]!.id}/prekeys/claim`, undefined, token(alice, 0));
    assert.equal(claimed.status, 200, JSON.stringify(claimed.body));
    const aliceKeys = Array.from({ length: 5 }, () => newTopicKey(alice));
    poolKeys.push(...aliceKeys);
    const up = await submit(t, '/v1/topic-keys',
      {
        keys: aliceKeys.map((k) => toBase64url(encodeTopicKey(k.topicKey))),
        bundles: [seal(alice, 0, 1, claimed.body, { topicKeys: aliceKeys, epochSecrets: [] })],
      },
      token(alice, 0),
    );
    assert.equal(up.status, 201, JSON.stringify(up.body));
    const bobKeys = Array.from({ length: 5 }, () => newTopicKey(bob));
    poolKeys.push(...bobKeys);
    const upBob = await submit(t, '/v1/topic-keys', { keys: bobKeys.map((k) => toBase64url(encodeTopicKey(k.topicKey))), bundles: [] }, token(bob));
    assert.equal(upBob.status, 201, JSON.stringify(upBob.body));

    // alice's second device takes the bundle, opens it, and acknowledges it.
    const got = await call(t, 'GET', '/v1/bundles', undefined, token(alice, 1));
    assert.equal(got.status, 200);
    assert.equal(got.body.bundles.length, 1);
    const kb = decodeKeyBundle(fromBase64url(got.body.bundles[0].bundle));
    const opened = openKeyBundle(crypto, kb, alice.devices[1]!.prekeys.get(toBase64url(kb.recipientPrekey))!, alice.identityKey);
    assert.deepEqual(
      opened.topicKeys.map((k) => k.secret),
      aliceKeys.map((k) => k.secret),
    );
    assert.equal((await call(t, 'POST', '/v1/bundles/ack', { upTo: got.body.bundles[0].id }, token(alice, 1))).body.deleted, 1);

    // alice claims one of bob's topic keys, as a client about to add him does.
    const claim = await call(t, 'POST', `/v1/users/${bob.user}/topic-keys/claim`, undefined, token(alice));
    assert.equal(claim.status, 200, JSON.stringify(claim.body));
    assert.ok(
      bobKeys.some((k) => equal(encodeTopicKey(k.topicKey), fromBase64url(claim.body.topicKey))),
      'the claimed key is one bob uploaded',
    );

    // A topic, messages from three devices, a re-key, more messages.
    topic = await ScriptedTopic.create(t, srv.name, serverKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    epochSecrets.push(topic.epochSecret);
    const say = async (u: ScriptedUser, device: number) => {
      const text = `plaintext ${randomBytes(12).toString('hex')}`;
      plaintexts.push(text);
      const m = topic.message(u, text);
      const r = await topic.post(u, m, undefined, device);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      await topic.sync(u);
      stored.push({ label: `message ${plaintexts.length}`, bytes: encodeMessage(m) });
    };
    await say(alice, 0);
    await say(bob, 0);
    await say(alice, 1);
    await topic.changeAndSync(alice, { type: 'rekey' });
    epochSecrets.push(topic.epochSecret);
    assert.ok(!equal(epochSecrets[0]!, epochSecrets[1]!), 'the re-key made a new epoch secret');
    await say(bob, 0);
    await say(alice, 0);

    // The epoch secret and alice's topic key in this topic, bundled to her second device.
    const claimed2 = await call(t, 'POST', `/v1/devices/${alice.devices[1]!.id}/prekeys/claim`, undefined, token(alice, 0));
    assert.equal(claimed2.status, 200, JSON.stringify(claimed2.body));
    const inTopic = { topicKey: topic.state!.members.get(topic.memberId(alice))!.topicKey, secret: topic.keys.get(alice.user)! };
    const sent = await submit(t, '/v1/bundles',
      { bundles: [seal(alice, 0, 1, claimed2.body, { topicKeys: [inTopic], epochSecrets: [{ topicId: topic.id, epoch: 1, secret: topic.epochSecret }] })] },
      token(alice, 0),
    );
    assert.equal(sent.status, 201, JSON.stringify(sent.body));

    // Everything the clients hold.
    for (const tk of tokens) {
      needles.push(...textNeedles('session token', tk));
      secretBytes('session token (decoded)', fromBase64url(tk));
    }
    for (const u of [alice, bob]) {
      for (const [i, d] of u.devices.entries()) {
        for (const secret of d.prekeys.values()) secretBytes(`${u.user} device ${i} prekey secret (X25519)`, secret);
      }
    }
    for (const [k, { secret }] of poolKeys.entries()) {
      secretBytes(`pool topic key ${k} signature seed`, secret.signatureSeed);
      secretBytes(`pool topic key ${k} encryption secret (X25519)`, secret.encryptionSecret);
    }
    for (const [user, secret] of topic.keys) {
      secretBytes(`${user} topic key signature seed`, secret.signatureSeed);
      secretBytes(`${user} topic key encryption secret (X25519)`, secret.encryptionSecret);
    }
    for (const [e, s] of epochSecrets.entries()) secretBytes(`epoch ${e} secret`, s);
    for (const p of plaintexts) needles.push(...textNeedles('message plaintext', p));
    assert.ok(needles.length > 500, `${needles.length} needles`);
  });

  it('no file of the data directory holds a secret while the server runs (database, WAL, shared memory)', (tc) => {
    const files = filesUnder(dataDir).filter((f) => !f.endsWith('/server.key'));
    const names = files.map((f) => relative(dataDir, f));
    tc.diagnostic(`scanned while running: ${files.map((f) => `${relative(dataDir, f)} (${statSync(f).size} B)`).join(', ')}; ${needles.length} needles`);
    assert.ok(names.includes('rendezvous.db'), `database present: ${names.join(', ')}`);
    assert.ok(names.includes('rendezvous.db-wal'), `WAL present while running: ${names.join(', ')}`);
    const seed = serverSeed();
    const hits: string[] = [];
    for (const f of files) {
      for (const h of scan(readFileSync(f), [...needles, ...byteNeedles('server signing seed', seed)])) hits.push(`${relative(dataDir, f)}: ${h}`);
    }
    assert.deepEqual(hits, []);
  });

  it('after a clean stop, no file of the data directory holds a secret; the stored data is really read', async (tc) => {
    const r = await srv.stop();
    assert.deepEqual(r, { code: 0, signal: null }, srv.output());
    const files = filesUnder(dataDir).filter((f) => !f.endsWith('/server.key'));
    tc.diagnostic(`scanned after stop: ${files.map((f) => `${relative(dataDir, f)} (${statSync(f).size} B)`).join(', ')}`);
    const all = Buffer.concat(files.map((f) => readFileSync(f)));
    // Positive controls: public values the server must keep are found by the same scan.
    for (const s of stored) assert.ok(all.indexOf(Buffer.from(s.bytes)) !== -1, `${s.label} is stored (the scan reads real data)`);
    const seed = serverSeed();
    const hits: string[] = [];
    for (const f of files) {
      for (const h of scan(readFileSync(f), [...needles, ...byteNeedles('server signing seed', seed)])) hits.push(`${relative(dataDir, f)}: ${h}`);
    }
    assert.deepEqual(hits, []);
  });

  it('the log output holds no secret either', () => {
    const out = srv.output();
    const lines = out.split('\n').filter((l) => l.startsWith('{'));
    // Positive controls: the log is there, at level trace, and names users.
    assert.ok(lines.length >= 5, `structured log lines: ${lines.length}`);
    for (const msg of ['registration pin issued', 'user registered', 'device added', 'listening', 'stopped']) {
      assert.ok(
        lines.some((l) => JSON.parse(l).msg === msg),
        `the log has "${msg}"`,
      );
    }
    assert.ok(out.includes(alice.user), 'the log names users');
    assert.deepEqual(scan(Buffer.from(out, 'utf8'), [...needles, ...byteNeedles('server signing seed', serverSeed())]), []);
  });
});

/** The seed in server.key, checked to be this server's signing key: why that one file is skipped. */
function serverSeed(): Uint8Array {
  const seed = fromBase64url(readFileSync(join(dataDir, 'server.key'), 'utf8').trim());
  assert.equal(seed.length, 32);
  assert.ok(equal(crypto.ed25519PublicKey(seed), serverKey), 'server.key holds the seed of the key the server publishes');
  return seed;
}
