/**
 * Soak diagnostics (issue 7): a `rendezvous serve` process as in section 11 of scale.ts (8 topics ×
 * 4 members, closed loop, 64 in flight, 1 KiB messages) with memory-probe.mjs preloaded, so its
 * process.memoryUsage() is sampled from the inside and heap snapshots can be taken after a full GC.
 *
 *   node --import tsx packages/server/bench/soak-memory.ts [--seconds 120] [--snapshots] [--out DIR]
 *       [--node-flag=--max-semi-space-size=16 …]
 *
 * Prints RSS (from /proc) and heapUsed/external/arrayBuffers (from the probe) at the start and
 * end, and their least-squares slopes in MB/min; with --snapshots, writes heap snapshots after a
 * full GC at the start and at the end of the load (compare with heap-diff.mjs).
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Generator } from './generator.ts';
import { makeTopics } from './setup.ts';
import { startBenchServer } from './server-process.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '120' },
    snapshots: { type: 'boolean', default: false },
    out: { type: 'string' },
    'node-flag': { type: 'string', multiple: true, default: [] },
    topics: { type: 'string', default: '8' },
    members: { type: 'string', default: '4' },
  },
});
const seconds = Number(values.seconds);
const out = resolve(values.out ?? join(tmpdir(), `soak-memory-${Date.now()}`));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
process.env.MEMORY_PROBE_OUT = out;
process.env.MEMORY_PROBE_MS = '5000';
process.env.MEMORY_PROBE_SNAPSHOTS = values.snapshots ? '1' : '0';
const MB = 1024 * 1024;
const rss = (pid: number) => Number(/^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;
const RATES = Object.fromEntries(
  ['register', 'authChallenge', 'write', 'admin', 'claimTopicKeyPerClaimer', 'claimTopicKeyPerTarget', 'claimPrekey'].map((n) => [n, [1_000_000_000, 60_000] as const]),
);
const probe = resolve(import.meta.dirname, 'memory-probe.mjs');
const server = await startBenchServer({ rates: RATES, nodeFlags: ['--expose-gc', '--import', probe, ...(values['node-flag'] as string[])] });
const pid = server.proc.pid!;
const gen = new Generator();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let snaps = 0;
const snapshot = async () => {
  const k = snaps++;
  process.kill(pid, 'SIGUSR2');
  while (!existsSync(join(out, `snap-${k}.done`))) await sleep(200);
};
const probeSamples = () =>
  readFileSync(join(out, 'samples.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { s: number; tag: string; rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number });
const slope = (xs: { s: number; y: number }[]) => {
  const n = xs.length;
  const mx = xs.reduce((a, x) => a + x.s, 0) / n;
  const my = xs.reduce((a, x) => a + x.y, 0) / n;
  const num = xs.reduce((a, x) => a + (x.s - mx) * (x.y - my), 0);
  const den = xs.reduce((a, x) => a + (x.s - mx) ** 2, 0);
  return ((num / Math.max(den, 1e-9)) * 60) / MB;
};
try {
  const topics = await makeTopics(server.url, server.name, server.adminToken, 's', Number(values.topics), Number(values.members));
  const senders = topics.flatMap((t) => t.members.map((m) => m.sender));
  // Warm-up so the start snapshot has every code path compiled and every cache filled.
  await gen.ask({ cmd: 'load', url: server.url, senders, rate: 0, concurrency: 64, durationMs: 5_000, bodyBytes: 1024 });
  await snapshot();
  const rssSamples: { s: number; y: number }[] = [];
  const t0 = performance.now();
  rssSamples.push({ s: 0, y: rss(pid) });
  const timer = setInterval(() => {
    const s = (performance.now() - t0) / 1000;
    const r = rss(pid);
    rssSamples.push({ s, y: r });
    process.stderr.write(`\r${s.toFixed(0).padStart(4)} s: RSS ${(r / MB).toFixed(1)} MB   `);
  }, 5_000);
  const r = await gen.ask({ cmd: 'load', url: server.url, senders, rate: 0, concurrency: 64, durationMs: seconds * 1000, bodyBytes: 1024 });
  clearInterval(timer);
  rssSamples.push({ s: (performance.now() - t0) / 1000, y: rss(pid) });
  await sleep(2_000);
  await snapshot();
  const ps = probeSamples();
  const ticks = ps.filter((p) => p.tag === 'tick');
  const gcs = ps.filter((p) => p.tag.startsWith('gc'));
  const f = (b: number) => (b / MB).toFixed(1);
  const res = {
    seconds: r.elapsedMs / 1000,
    acked: r.acked,
    msgsPerSec: (r.acked * 1000) / r.elapsedMs,
    errors: r.errors,
    rssStartMB: rssSamples[0]!.y / MB,
    rssEndMB: rssSamples.at(-1)!.y / MB,
    rssSlopeMBPerMin: slope(rssSamples),
    rssSlopeSecondHalfMBPerMin: slope(rssSamples.filter((x) => x.s >= seconds / 2)),
    afterGc: gcs.map((g) => ({ tag: g.tag, rssMB: g.rss / MB, heapUsedMB: g.heapUsed / MB, heapTotalMB: g.heapTotal / MB, externalMB: g.external / MB, arrayBuffersMB: g.arrayBuffers / MB })),
    heapUsedSlopeMBPerMin: slope(ticks.map((p) => ({ s: p.s, y: p.heapUsed }))),
    externalSlopeMBPerMin: slope(ticks.map((p) => ({ s: p.s, y: p.external }))),
    out,
  };
  const [a, b] = gcs;
  console.log(
    `\n${res.msgsPerSec.toFixed(0)} msgs/s for ${res.seconds.toFixed(0)} s (${r.acked} acked, errors ${JSON.stringify(r.errors)}); RSS ${res.rssStartMB.toFixed(1)} → ${res.rssEndMB.toFixed(1)} MB, slope ${res.rssSlopeMBPerMin.toFixed(2)} MB/min (second half ${res.rssSlopeSecondHalfMBPerMin.toFixed(2)})`,
  );
  if (a && b) {
    console.log(`after full GC, start → end: rss ${f(a.rss)} → ${f(b.rss)} MB, heapUsed ${f(a.heapUsed)} → ${f(b.heapUsed)}, heapTotal ${f(a.heapTotal)} → ${f(b.heapTotal)}, external ${f(a.external)} → ${f(b.external)}, arrayBuffers ${f(a.arrayBuffers)} → ${f(b.arrayBuffers)}`);
    console.log(`retained per message (heapUsed after GC): ${(((b.heapUsed - a.heapUsed) / Math.max(1, r.acked)) | 0)} B`);
  }
  console.log(JSON.stringify(res));
} finally {
  await gen.close();
  await server.stop();
}
