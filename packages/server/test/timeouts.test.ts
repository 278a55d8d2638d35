/**
 * Body timeouts (docs/server.md §Limits): a client that stops sending in the middle of a body is
 * cut off with `request.timeout` (408), for JSON bodies (a deadline for the whole body) and
 * for uploads (an idle limit between chunks), and nothing of the request is kept.
 */
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { toBase64url } from '@rendezvous/protocol';
import { ScriptedUser, expectError, inProcess, issuePin, testServer, type Call, type TestServer, type Transport } from './helpers.ts';
import { ScriptedTopic, token } from './topic-client.ts';

let s: TestServer;
let t: Transport;

before(async () => {
  s = await testServer('alpha.test', undefined, { bodyTimeoutMs: 150, uploadIdleMs: 150 });
  t = inProcess(s.app);
});
after(async () => s.close());

/** A body that sends `first` and then nothing, until the reader gives up. */
function stalled(first: Uint8Array) {
  const state = { cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(first);
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

async function send(path: string, method: string, body: ReadableStream<Uint8Array>, headers: Record<string, string>): Promise<Call> {
  const res = await t(path, { method, headers, body, duplex: 'half' } as RequestInit);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

it('a JSON body that stops arriving is request.timeout, and the request has no effect', async () => {
  const { stream, state } = stalled(new TextEncoder().encode('{"user": "slow@alpha.test", "pin": '));
  const started = Date.now();
  const r = await send('/v1/register', 'POST', stream, { 'content-type': 'application/json' });
  expectError(r, 408, 'request.timeout');
  assert.ok(Date.now() - started < 5_000, 'cut off at the body deadline, not the server request timeout');
  assert.equal(state.cancelled, true, 'the server stopped reading the body');
  assert.equal(await s.ctx.store.getUser('slow@alpha.test'), null);
});

it('an upload that stalls is request.timeout and leaves no file behind', async () => {
  const alice = new ScriptedUser('alice@alpha.test', t, () => s.clock.t);
  assert.equal((await alice.register(await issuePin(t, alice.user))).status, 201);
  await alice.login(0);
  const topic = await ScriptedTopic.create(t, 'alpha.test', s.ctx.serverKey, [{ user: alice, role: 'admin' }]);
  const { stream, state } = stalled(new Uint8Array(1000));
  const path = `${topic.path}/blobs/${toBase64url(new Uint8Array(32).fill(1))}`;
  const r = await send(path, 'PUT', stream, { 'content-type': 'application/octet-stream', authorization: `Bearer ${token(alice)}` });
  expectError(r, 408, 'request.timeout');
  assert.equal(state.cancelled, true, 'the server stopped reading the upload');
  assert.deepEqual(readdirSync(join(s.dir, 'blobs', 'tmp')), [], 'the partial upload was removed');
});
