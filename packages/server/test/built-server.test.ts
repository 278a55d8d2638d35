/**
 * The built command (scripts/build.mjs → dist/rendezvous.mjs), which `npm start` runs: the same
 * sources bundled as plain JavaScript, without the tsx loader. A real process on a real SQLite
 * file: users register, a topic is created, a message is posted, read back verified, streamed
 * to the other member's WebSocket, and the process shuts down cleanly and restarts on its data.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { WebSocket } from 'ws';
import { fromBase64url, toBase64url } from '@rendezvous/protocol';
import { ScriptedUser, call, overHttp, type Transport } from './helpers.ts';
import { attachTopic, postAndSync, ScriptedTopic, token } from './topic-client.ts';
import { cleanup, start, tempDir, type ServerProcess } from './process.ts';

const root = resolve(import.meta.dirname, '..', '..', '..');
// Inside the repository, so the bundle's npm imports resolve from its node_modules.
const out = join(root, 'node_modules', '.cache', `rendezvous-build-test-${process.pid}`);
const bin = join(out, 'rendezvous.mjs');

let dataDir: string;
let srv: ServerProcess;
let t: Transport;

async function user(name: string): Promise<ScriptedUser> {
  const u = new ScriptedUser(`${name}@${srv.name}`, t, Date.now);
  const pin = await call(t, 'POST', '/v1/admin/pins', { user: u.user }, srv.adminToken);
  assert.equal(pin.status, 201, JSON.stringify(pin.body));
  assert.equal((await u.register(pin.body.pin)).status, 201);
  await u.login(0, srv.name);
  return u;
}

before(async () => {
  execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs'), out], { stdio: 'inherit' });
  dataDir = tempDir('rendezvous-built-');
  srv = await start(dataDir, undefined, { bin });
  t = overHttp(srv.url);
});
after(async () => {
  await cleanup();
  rmSync(out, { recursive: true, force: true });
});

describe('the built server (npm start)', () => {
  it('runs without the tsx loader and serves the protocol end to end', async () => {
    assert.ok(!/["']tsx(\/[^"']*)?["']/.test(readFileSync(bin, 'utf8')), 'the bundle never loads tsx');
    const serverKey = fromBase64url((await call(t, 'GET', '/.well-known/rendezvous')).body.publicKey);
    const alice = await user('alice');
    const bob = await user('bob');
    const topic = await ScriptedTopic.create(t, srv.name, serverKey, [
      { user: alice, role: 'admin' },
      { user: bob, role: 'participant' },
    ]);
    const cursor = (await call(t, 'GET', '/v1/events?after=0', undefined, token(bob))).body.cursor;
    const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/v1/ws?after=${cursor}`, { headers: { authorization: `Bearer ${token(bob)}` } });
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const index = await postAndSync(topic, alice, 'from the built server');
    for (let i = 0; i < 100 && !frames.some((f) => f.type === 'events' && f.events.some((e: any) => e.index === index)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const entry = frames.flatMap((f) => (f.type === 'events' ? f.events : [])).find((e: any) => e.index === index);
    assert.ok(entry !== undefined, `bob's WebSocket got the entry: ${JSON.stringify(frames).slice(0, 300)}`);
    assert.equal(entry.topicId, toBase64url(topic.id));
    ws.close();

    // A clean stop, then the same data again: the log is all there and verifies.
    assert.equal((await srv.stop()).code, 0, srv.output());
    srv = await start(dataDir, srv.port, { bin });
    t = overHttp(srv.url);
    const again = attachTopic(t, srv.name, serverKey, topic.id, topic);
    await again.sync(bob);
    assert.equal(again.log.size, topic.log.size);
  });
});
