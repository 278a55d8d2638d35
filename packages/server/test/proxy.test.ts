/**
 * Per-address rate limits behind a reverse proxy (docs/server.md §Behind TLS), over real
 * sockets: with --trust-proxy the client address is the last X-Forwarded-For entry of a
 * loopback peer; without it the header is ignored, so a client cannot choose its own bucket.
 */
import { it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../src/server.ts';
import { ADMIN_TOKEN } from './helpers.ts';

const running: { server: RunningServer; dir: string }[] = [];
after(async () => {
  for (const r of running) {
    await r.server.close();
    rmSync(r.dir, { recursive: true, force: true });
  }
});

async function start(trustProxy: boolean): Promise<RunningServer> {
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-proxy-'));
  const server = await startServer({
    dataDir: dir,
    host: '127.0.0.1',
    port: 0,
    name: 'proxy.test',
    adminToken: ADMIN_TOKEN,
    logLevel: 'silent',
    trustProxy,
    rates: { register: [1, 60_000] },
  });
  running.push({ server, dir });
  return server;
}

/** A registration attempt (an empty body: refused, but only after the rate limit). */
async function attempt(server: RunningServer, forwardedFor?: string): Promise<number> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (forwardedFor !== undefined) headers['x-forwarded-for'] = forwardedFor;
  const r = await fetch(`${server.url}/v1/register`, { method: 'POST', headers, body: '{}' });
  await r.text();
  return r.status;
}

it('with trustProxy, each forwarded client has its own bucket, keyed by the entry the proxy appended', async () => {
  const s = await start(true);
  assert.equal(await attempt(s, '203.0.113.1'), 400);
  assert.equal(await attempt(s, '203.0.113.1'), 429, 'same client: limited');
  assert.equal(await attempt(s, '203.0.113.2'), 400, 'another client: its own bucket');
  // A client-forged first entry does not change the bucket: the proxy's appended entry counts.
  assert.equal(await attempt(s, '198.51.100.7, 203.0.113.2'), 429);
});

it('without trustProxy, X-Forwarded-For is ignored', async () => {
  const s = await start(false);
  assert.equal(await attempt(s, '203.0.113.1'), 400);
  assert.equal(await attempt(s, '203.0.113.2'), 429, 'the header cannot pick a fresh bucket');
});
