/**
 * Live delivery (docs/server.md §Events) over real sockets: a server started in process on a
 * loopback port, devices on WebSockets and on `GET /v1/events`. Checks that every event reaches
 * the devices it concerns, in order, that a reconnect resumes from the cursor with nothing lost
 * and nothing repeated, and that authentication, limits and revocation close what they must.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { randomBytes } from 'node:crypto';
import { encodeKeyBundle, fromBase64url, sealKeyBundle, toBase64url } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { RunningServer } from '../src/server.ts';
import { ScriptedUser, call, expectError, issuePin, overHttp, socketServer, type Transport } from './helpers.ts';
import { ScriptedTopic, token, submit } from './topic-client.ts';

let server: RunningServer;
let running: Awaited<ReturnType<typeof socketServer>>;
let t: Transport;
let alice: ScriptedUser, bob: ScriptedUser, carol: ScriptedUser;

async function user(name: string): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}@${server.name}`, t, Date.now);
  assert.equal((await u.register(await issuePin(t, u.user))).status, 201);
  await u.login(0);
  return u;
}

/** A WebSocket client that queues what it receives and waits for what a test expects. */
class Device {
  readonly received: any[] = [];
  private waiters: (() => void)[] = [];
  closed: { code: number; reason: string } | null = null;
  ws: WebSocket;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.ws = new WebSocket(url, { headers });
    this.ws.on('message', (d) => {
      this.received.push(JSON.parse(String(d)));
      this.wake();
    });
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) };
      this.wake();
    });
    this.ws.on('error', () => this.wake());
  }

  static async open(u: ScriptedUser, after = 0, device = 0): Promise<Device> {
    const d = new Device(`${server.url.replace('http', 'ws')}/v1/ws?after=${after}`, { authorization: `Bearer ${token(u, device)}` });
    await d.until((m) => m.type === 'ready');
    return d;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `pred` holds for the messages so far (checked on every arrival). */
  async until(pred: (m: any, all: any[]) => boolean, timeoutMs = 5_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.received.find((m) => pred(m, this.received));
      if (hit !== undefined) return hit;
      if (this.closed) assert.fail(`socket closed (${this.closed.code} ${this.closed.reason}) before the expected message`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`timed out; received ${JSON.stringify(this.received).slice(0, 500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async untilClosed(timeoutMs = 5_000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (this.closed === null) {
      if (Date.now() > deadline) assert.fail('socket did not close');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.closed;
  }

  events(): any[] {
    return this.received.filter((m) => m.type === 'events').flatMap((m) => m.events);
  }

  entriesOf(topic: ScriptedTopic): number[] {
    const id = toBase64url(topic.id);
    return this.events()
      .filter((e) => e.kind === 'entry' && e.topicId === id)
      .map((e) => e.index);
  }

  close(): void {
    this.ws.close();
  }
}

function createTopic(members: [ScriptedUser, 'admin' | 'participant' | 'observer'][]) {
  return ScriptedTopic.create(
    t,
    server.name,
    server.ctx.serverKey,
    members.map(([user, role]) => ({ user, role })),
  );
}

async function post(topic: ScriptedTopic, u: ScriptedUser, text: string): Promise<number> {
  const r = await topic.post(u, topic.message(u, text));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  await topic.sync(u);
  return r.body.index;
}

before(async () => {
  running = await socketServer('live.test');
  server = running.server;
  t = overHttp(server.url);
  alice = await user('alice');
  bob = await user('bob');
  carol = await user('carol');
});
after(async () => running.close());

describe('events over HTTP', () => {
  it('a member gets membership and entry events in order; a non-member gets none of the topic', async () => {
    const start = (await call(t, 'GET', '/v1/events?after=0&limit=500', undefined, token(carol))).body.cursor;
    const topic = await createTopic([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    await post(topic, alice, 'one');
    await post(topic, bob, 'two');
    const r = await call(t, 'GET', '/v1/events?after=0', undefined, token(bob));
    assert.equal(r.status, 200);
    const id = toBase64url(topic.id);
    const mine = r.body.events.filter((e: any) => e.topicId === id);
    assert.deepEqual(
      mine.map((e: any) => [e.kind, e.index ?? e.user]),
      [
        ['entry', 0],
        ['membership', bob.user],
        ['entry', 1],
        ['entry', 2],
      ],
    );
    const seqs = r.body.events.map((e: any) => e.seq);
    assert.deepEqual(seqs, [...seqs].sort((a: number, b: number) => a - b), 'ascending sequence numbers');
    assert.equal(r.body.cursor, seqs[seqs.length - 1]);
    // The entry bytes are the log's, and the batch carries a checkpoint to verify them against.
    for (const e of mine.filter((x: any) => x.kind === 'entry')) {
      assert.deepEqual(fromBase64url(e.entry), topic.entries[e.index]);
    }
    assert.equal(typeof r.body.checkpoints[id], 'string');
    const c = await call(t, 'GET', `/v1/events?after=${start}`, undefined, token(carol));
    assert.equal(c.body.events.filter((e: any) => e.topicId === id).length, 0, 'carol is not a member');
    // Resuming from the cursor returns nothing new; paging returns the same events in pieces.
    const rest = await call(t, 'GET', `/v1/events?after=${r.body.cursor}`, undefined, token(bob));
    assert.deepEqual(rest.body.events, []);
    assert.equal(rest.body.cursor, r.body.cursor);
    const paged: any[] = [];
    let cursor = 0;
    for (;;) {
      const p = await call(t, 'GET', `/v1/events?after=${cursor}&limit=1`, undefined, token(bob));
      if (p.body.events.length === 0) break;
      assert.equal(p.body.events.length, 1);
      paged.push(...p.body.events);
      cursor = p.body.cursor;
    }
    assert.deepEqual(paged, r.body.events);
  });
});

describe('events: errors and metrics', () => {
  it('refuses a bad cursor and unauthenticated reads', async () => {
    expectError(await call(t, 'GET', '/v1/events?after=-1', undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', '/v1/events?after=x', undefined, token(alice)), 400, 'request.bad_field');
    expectError(await call(t, 'GET', '/v1/events'), 401, 'auth.required');
  });

  it('counts appends and connected devices in /metrics', async () => {
    const topic = await createTopic([[alice, 'admin']]);
    await post(topic, alice, 'counted');
    const d = await Device.open(alice);
    try {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
      assert.ok(value('rendezvous_log_appends_total') >= 2, 'appends counted');
      assert.ok(value('rendezvous_connected_devices') >= 1, 'the open socket is counted');
    } finally {
      d.close();
    }
  });
});

describe('WebSocket', () => {
  it('streams new entries to every connected member device as they are appended', async () => {
    const topic = await createTopic([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const cursor = (await call(t, 'GET', '/v1/events?after=0', undefined, token(bob))).body.cursor;
    const b = await Device.open(bob, cursor);
    const a = await Device.open(alice, cursor);
    try {
      const i1 = await post(topic, alice, 'live one');
      const i2 = await post(topic, bob, 'live two');
      await b.until((_m, all) => all.some((m) => m.type === 'events' && m.events.some((e: any) => e.index === i2 && e.kind === 'entry')));
      await a.until((_m, all) => all.some((m) => m.type === 'events' && m.events.some((e: any) => e.index === i2 && e.kind === 'entry')));
      assert.deepEqual(b.entriesOf(topic), [i1, i2]);
      assert.deepEqual(a.entriesOf(topic), [i1, i2]);
    } finally {
      a.close();
      b.close();
    }
  });

  it('resumes after a reconnect from the cursor: nothing lost, nothing repeated', async () => {
    const topic = await createTopic([
      [alice, 'admin'],
      [bob, 'participant'],
    ]);
    const first = await Device.open(bob, 0);
    const before = await post(topic, alice, 'before the drop');
    await first.until((m) => m.type === 'events' && m.events.some((e: any) => e.kind === 'entry' && e.index === before && e.topicId === toBase64url(topic.id)));
    const cursor = first.received.filter((m) => m.type === 'events').at(-1).cursor;
    first.close();
    await first.untilClosed();
    const missed = [await post(topic, alice, 'while away 1'), await post(topic, bob, 'while away 2')];
    const second = await Device.open(bob, cursor);
    try {
      const after = await post(topic, alice, 'after the reconnect');
      await second.until((m) => m.type === 'events' && m.events.some((e: any) => e.index === after && e.topicId === toBase64url(topic.id)));
      assert.deepEqual(second.entriesOf(topic), [...missed, after]);
      const seqs = second.events().map((e) => e.seq);
      assert.ok(
        seqs.every((s, i) => i === 0 || s > seqs[i - 1]) && seqs[0] > cursor,
        'strictly after the cursor, ascending',
      );
    } finally {
      second.close();
    }
  });

  it('authenticates with a first message when no header is set, and refuses bad tokens', async () => {
    const base = `${server.url.replace('http', 'ws')}/v1/ws`;
    const d = new Device(base);
    await new Promise((resolve) => d.ws.once('open', resolve));
    d.ws.send(JSON.stringify({ type: 'auth', token: token(carol) }));
    const ready = await d.until((m) => m.type === 'ready');
    assert.equal(ready.user, carol.user);
    d.close();

    const bad = new Device(base);
    await new Promise((resolve) => bad.ws.once('open', resolve));
    bad.ws.send(JSON.stringify({ type: 'auth', token: 'not-a-token' }));
    assert.equal((await bad.untilClosed()).code, 4001);

    // A bad header token is the same close code as a bad first frame.
    const badHeader = new Device(base, { authorization: 'Bearer not-a-token' });
    assert.equal((await badHeader.untilClosed()).code, 4001);
    const badCursor = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${base}?after=-1`, { headers: { authorization: `Bearer ${token(carol)}` } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => undefined);
    });
    assert.equal(badCursor, 400);
  });

  it('closes a connection that sends a frame over the payload cap (1009)', async () => {
    const d = await Device.open(carol);
    d.ws.send(Buffer.alloc(300 * 1024));
    assert.equal((await d.untilClosed()).code, 1009);
  });

  it('delivers key bundles addressed to the device with the pending bundle list', async () => {
    if (alice.devices.length < 2) {
      assert.equal((await alice.addDevice()).status, 201);
      await alice.login(1);
    }
    const cursor = (await call(t, 'GET', '/v1/events?after=0', undefined, token(alice, 1))).body.cursor;
    const d = await Device.open(alice, cursor, 1);
    try {
      const prekey = crypto.x25519PublicKey(new Uint8Array(randomBytes(32)));
      const bundle = sealKeyBundle(crypto, (n) => new Uint8Array(randomBytes(n)), {
        user: alice.user,
        senderDeviceSeed: alice.devices[0]!.seed,
        recipientDevice: crypto.ed25519PublicKey(alice.devices[1]!.seed),
        recipientPrekey: prekey,
        content: { topicKeys: [], epochSecrets: [] },
      });
      const encoded = toBase64url(encodeKeyBundle(bundle));
      const r = await submit(t, '/v1/bundles', { bundles: [{ deviceId: alice.devices[1]!.id, bundle: encoded }] }, token(alice, 0));
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const m = await d.until((x) => x.type === 'events' && x.events.some((e: any) => e.kind === 'bundle'));
      assert.ok(
        m.bundles.some((b: any) => b.bundle === encoded && b.senderDeviceId === alice.devices[0]!.id),
        'the pending bundle rides along with its event',
      );
    } finally {
      d.close();
    }
  });

  it('sends what GET /v1/events returns, through the shared batch where it may and the store where membership changes', async () => {
    const frank = await user('frank');
    const gina = await user('gina');
    const hal = await user('hal');
    const shared = async () => (await server.ctx.metrics.liveBatches.get()).values.find((v) => v.labels.path === 'shared')?.value ?? 0;
    const cursor = (await call(t, 'GET', '/v1/events?after=0', undefined, token(frank))).body.cursor;
    const devices = { frank: await Device.open(frank, cursor), gina: await Device.open(gina, cursor), hal: await Device.open(hal, cursor) };
    try {
      const topic = await createTopic([
        [frank, 'admin'],
        [gina, 'participant'],
      ]);
      const id = toBase64url(topic.id);
      const sharedBefore = await shared();
      for (let i = 0; i < 3; i++) await post(topic, i % 2 === 0 ? frank : gina, `before hal ${i}`);
      await topic.changeAndSync(frank, { type: 'add', role: 'participant', user: hal });
      const last = await post(topic, hal, 'hal is in');
      const lastArrived = (m: any) => m.type === 'events' && m.events.some((e: any) => e.topicId === id && e.index === last);
      for (const d of Object.values(devices)) await d.until(lastArrived);
      assert.ok((await shared()) - sharedBefore >= 6, `caught-up devices got the shared batch (${(await shared()) - sharedBefore} sent)`);
      // Every device holds exactly what a store read from its cursor returns: hal, added with
      // the topic already 4 entries long, got them all from the store when it joined.
      for (const [name, u] of [['frank', frank], ['gina', gina], ['hal', hal]] as const) {
        const read = await call(t, 'GET', `/v1/events?after=${cursor}`, undefined, token(u));
        assert.deepEqual(devices[name].events(), read.body.events, `${name}: the WebSocket sent what the store holds`);
      }
      assert.deepEqual(devices.hal.entriesOf(topic), [0, 1, 2, 3, 4, 5]);

      // Removed: gina hears of it (membership, from the store) and of nothing after it.
      await topic.changeAndSync(frank, { type: 'remove', memberId: topic.memberId(gina) });
      const after = await post(topic, frank, 'gina is out');
      await devices.gina.until((m) => m.type === 'events' && m.events.some((e: any) => e.kind === 'membership' && e.topicId === id && e.user === gina.user));
      await devices.hal.until((m) => m.type === 'events' && m.events.some((e: any) => e.topicId === id && e.index === after));
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.ok(!devices.gina.entriesOf(topic).includes(after), 'no entry after the removal reaches the removed member');
      assert.ok(!devices.gina.entriesOf(topic).includes(after - 1), 'nor the removal itself (the store does not return it either)');
    } finally {
      for (const d of Object.values(devices)) d.close();
    }
  });

  it('closes the sockets of a session that logs out (4003)', async () => {
    const dave = await user('dave');
    const d = await Device.open(dave);
    const r = await call(t, 'DELETE', '/v1/auth/session', undefined, token(dave));
    assert.equal(r.status, 200);
    assert.equal((await d.untilClosed()).code, 4003);
  });

  it('closes the sockets of a removed device (4003)', async () => {
    const erin = await user('erin');
    assert.equal((await erin.addDevice()).status, 201);
    await erin.login(1);
    const d = await Device.open(erin, 0, 1);
    const r = await call(t, 'DELETE', `/v1/devices/${erin.devices[1]!.id}`, undefined, token(erin, 0));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((await d.untilClosed()).code, 4003);
  });
});
