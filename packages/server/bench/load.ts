/**
 * A load generator anyone can run against a Rendezvous server (issue 7):
 *
 *   npm run load -- --server http://127.0.0.1:8080 --admin-token T \
 *     [--rate N] [--concurrency C] [--duration S] [--topics N] [--members M] [--body-bytes B] \
 *     [--json FILE] [--allow-remote]
 *
 * It registers its own users through the admin API (a registration PIN per user, then
 * register, challenge and session), creates `topics` topics of `members` members each, then posts
 * signed, encrypted messages from a separate process (load-worker.ts): open loop at `rate`
 * messages/s (latency from each message's due time, so a server that falls behind shows), or,
 * without --rate, closed loop with `concurrency` requests in flight. Each message is sealed just
 * before it is posted (about 75 µs of the generator's CPU each). Prints progress every second
 * and a summary: acknowledged messages/s, latency percentiles (post → 201), errors by code.
 *
 * The users and topics it creates stay on the server. The server's rate limits apply: raise
 * `register`, `admin` and `write` in its config for more than a few users or messages/s.
 * Loopback servers only, unless --allow-remote.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Generator } from './generator.ts';
import { createTopic, registerUser, type Sender } from './setup.ts';

const { values: a } = parseArgs({
  options: {
    server: { type: 'string' },
    'admin-token': { type: 'string' },
    rate: { type: 'string', default: '0' },
    concurrency: { type: 'string', default: '32' },
    duration: { type: 'string', default: '10' },
    topics: { type: 'string', default: '4' },
    members: { type: 'string', default: '2' },
    'body-bytes': { type: 'string', default: '1024' },
    json: { type: 'string' },
    'allow-remote': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

const usage = `usage: npm run load -- --server URL --admin-token TOKEN [--rate N] [--concurrency C] [--duration S] [--topics N] [--members M] [--body-bytes B] [--json FILE] [--allow-remote]
  --rate N         open loop: N messages/s (default: closed loop)
  --concurrency C  closed loop: C requests in flight (default 32)
  --duration S     seconds of posting (default 10)
  --topics N       topics to create (default 4); --members M members each (default 2)
  --admin-token    or RENDEZVOUS_ADMIN_TOKEN
  --allow-remote   allow a server that is not on loopback`;

if (a.help || a.server === undefined) {
  console.error(usage);
  process.exit(a.help ? 0 : 2);
}
const adminToken = a['admin-token'] ?? process.env.RENDEZVOUS_ADMIN_TOKEN;
if (adminToken === undefined) {
  console.error(`--admin-token (or RENDEZVOUS_ADMIN_TOKEN) is required\n${usage}`);
  process.exit(2);
}
const url = new URL(a.server);
const base = url.origin;
const host = url.hostname.replace(/^\[|\]$/g, '');
const loopback = host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
if (!loopback && !a['allow-remote']) {
  console.error(`refusing ${base}: not a loopback address. Load-testing a server you do not run is an attack; pass --allow-remote if it is yours.`);
  process.exit(2);
}
const num = (k: keyof typeof a) => {
  const n = Number(a[k]);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`--${k}: expected a number`);
    process.exit(2);
  }
  return n;
};
const rate = num('rate');
const concurrency = Math.max(1, Math.floor(num('concurrency')));
const durationMs = num('duration') * 1000;
const topics = Math.max(1, Math.floor(num('topics')));
const members = Math.max(1, Math.floor(num('members')));
const bodyBytes = Math.floor(num('body-bytes'));

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};

const wk = await fetch(`${base}/.well-known/rendezvous`).then((r) => r.json() as Promise<{ server: string; version?: string }>);
console.error(`server ${base}: ${wk.server} (version ${wk.version ?? '?'})`);
const run = Date.now().toString(36);
const t0 = performance.now();
const senders: Sender[] = [];
try {
  for (let t = 0; t < topics; t++) {
    const users = await Promise.all(Array.from({ length: members }, (_, m) => registerUser(base, wk.server, adminToken, `load${run}t${t}m${m}`)));
    const topic = await createTopic(base, wk.server, users);
    senders.push(...topic.members.map((m) => m.sender));
    process.stderr.write(`\rsetup: ${t + 1}/${topics} topics × ${members} members`);
  }
} catch (e) {
  console.error(`\nsetup failed (users are registered through the admin API: is the admin token right, and do the server's rate limits allow it?)\n${String(e)}`);
  process.exit(1);
}
console.error(` in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
console.error(rate > 0 ? `posting ${rate}/s (open loop) for ${durationMs / 1000} s, ${bodyBytes} B texts` : `posting with ${concurrency} requests in flight (closed loop) for ${durationMs / 1000} s, ${bodyBytes} B texts`);

const gen = new Generator();
gen.onProgress = (p) => console.error(`  ${p.seconds.toFixed(0).padStart(4)} s: ${p.perSec} acknowledged/s, ${p.acked} in total, ${p.sent - p.acked - p.errors} in flight, ${p.errors} errors`);
const r = await gen.ask({ cmd: 'load', url: base, senders, rate, concurrency, durationMs, bodyBytes });
await gen.close();
const lat = r.latenciesMs as number[];
const summary = {
  server: base,
  mode: rate > 0 ? `open loop at ${rate}/s` : `closed loop, ${concurrency} in flight`,
  topics,
  members,
  bodyBytes,
  seconds: r.elapsedMs / 1000,
  sent: r.sent,
  acknowledged: r.acked,
  acknowledgedPerSec: (r.acked * 1000) / r.elapsedMs,
  latencyMs: { p50: pct(lat, 50), p90: pct(lat, 90), p99: pct(lat, 99), max: lat.length ? Math.max(...lat) : NaN },
  errors: r.errors as Record<string, number>,
  generatorCores: r.cpuMs / r.elapsedMs,
};
const f = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '—');
console.log(`\n${summary.acknowledged} acknowledged of ${summary.sent} sent in ${summary.seconds.toFixed(1)} s: ${summary.acknowledgedPerSec.toFixed(0)} msgs/s (${summary.mode}; ${topics} topics × ${members} members)`);
console.log(`latency post → 201: p50 ${f(summary.latencyMs.p50)} ms, p90 ${f(summary.latencyMs.p90)} ms, p99 ${f(summary.latencyMs.p99)} ms, max ${f(summary.latencyMs.max)} ms${rate > 0 ? ' (from each message\'s due time)' : ''}`);
console.log(`errors: ${Object.keys(summary.errors).length === 0 ? 'none' : Object.entries(summary.errors).map(([k, v]) => `${k} × ${v}`).join(', ')}`);
console.log(`generator CPU: ${summary.generatorCores.toFixed(2)} cores`);
if (a.json !== undefined) {
  writeFileSync(a.json, JSON.stringify(summary, null, 2));
  console.log(`wrote ${a.json}`);
}
