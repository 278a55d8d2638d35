/**
 * The benchmark suite (issue 7, part 1). Not a test: it prints figures and writes JSON.
 *
 *   npm run bench              full run
 *   npm run bench -- --quick   CI-sized run (about 2.5 minutes here)
 *   npm run bench -- --profile also writes V8 CPU profiles of the server processes
 *   npm run bench -- --only=1  part 1 only; --only=2: part 2 only (with the limits of section 3)
 *   npm run bench -- --verify-threads=N  the ingest server's config verifyThreads (0: inline)
 *   npm run bench -- --writer-thread=false  the ingest server's config writerThread (A/B)
 *   npm run bench -- --only=2 --sections=9,10   some sections of part 2
 *
 * Sections, each a median of several runs, each figure with its ratio to a limit measured in
 * this same run on this same machine:
 *   0. crypto micro-benchmarks of the protocol core (packages/protocol/bench/crypto.ts)
 *   1. limits: raw Ed25519 verify/s on one core; durable SQLite commits/s and batched rows/s
 *   2. ingest: a real `rendezvous serve` process, many concurrent HTTP clients posting signed,
 *      encrypted 1 KiB messages from a separate load-generator process
 *   3. latency: send → delivered over another member's WebSocket at a fixed offered rate
 *   4. client costs: seal+sign, check+open, bytes of overhead per message
 * Part 2 (scale.ts, its own fresh server process): connections and memory, fan-out, topic
 * operations vs size, client full verify, scaling curve, soak (sections 6–11).
 *
 * Writes bench-results/suite-quick.json or suite-full.json (and the crypto section's crypto.json).
 */
import { spawn } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, sign as edSign, verify as edVerify, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import {
  checkMessage,
  decodeMessage,
  encodeLogEntry,
  encodeMessage,
  epochPrk,
  messageTbs,
  openMessage,
  sealMessage,
  utf8,
  type TopicState,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { startBenchServer } from './server-process.ts';
import { Generator } from './generator.ts';
import { scaleRows, scaleSections } from './scale.ts';
import { makeTopics, type BenchTopic, type Sender } from './setup.ts';

const quick = process.argv.includes('--quick');
const profile = process.argv.includes('--profile');
/** `--only=1`: part 1 (sections 1–5); `--only=2`: part 2 (6–11, with the limits of section 3). */
const only = /^--only=(\d)$/.exec(process.argv.find((a) => a.startsWith('--only=')) ?? '')?.[1];
/** `--verify-threads=N`: the ingest server's config `verifyThreads` (default: the server's). */
const verifyThreadsArg = /^--verify-threads=(\d+)$/.exec(process.argv.find((a) => a.startsWith('--verify-threads=')) ?? '')?.[1];
/** `--writer-thread=true|false`: the ingest server's config `writerThread` (default: the server's). */
const writerThreadArg = /^--writer-thread=(true|false)$/.exec(process.argv.find((a) => a.startsWith('--writer-thread=')) ?? '')?.[1];
const ROOT = resolve(import.meta.dirname, '..', '..', '..');
const OUT = resolve(ROOT, 'bench-results');

const CFG = quick
  ? { reps: 3, limitMs: 300, ingestMs: 3_000, ingestPool: 8_000, topics: 8, members: 4, concurrency: 64, latencyRates: [200], latencyMs: 4_000, latencyTopics: 4, clientMs: 300 }
  : { reps: 5, limitMs: 1_000, ingestMs: 8_000, ingestPool: 60_000, topics: 32, members: 8, concurrency: 128, latencyRates: [1_000, 200], latencyMs: 10_000, latencyTopics: 20, clientMs: 1_000 };

const log = (s: string) => process.stderr.write(s);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

function machine() {
  let model = os.cpus()[0]?.model ?? '?';
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    /* not Linux */
  }
  return { cpu: model, cores: os.cpus().length, node: process.version, platform: `${os.platform()} ${os.release()}`, memoryGiB: Math.round(os.totalmem() / 2 ** 30) };
}

/** Runs `fn` in growing batches for `ms`; returns ops/s. */
function rate(fn: (i: number) => void, ms: number): number {
  for (let i = 0; i < 20; i++) fn(i);
  let n = 0;
  let batch = 1;
  const t0 = performance.now();
  let now = t0;
  while (now - t0 < ms) {
    for (let i = 0; i < batch; i++) fn(n + i);
    n += batch;
    now = performance.now();
    if (now - t0 < ms / 10) batch *= 2;
  }
  return (n * 1000) / (now - t0);
}

function repeat(label: string, fn: () => number, unit = '/s'): { median: number; runs: number[] } {
  log(`  ${label.padEnd(46)} `);
  const runs: number[] = [];
  for (let r = 0; r < CFG.reps; r++) {
    runs.push(fn());
    log('.');
  }
  const m = median(runs);
  log(` ${fmt(m)}${unit}\n`);
  return { median: m, runs };
}

// ---------------------------------------------------------------------------------------------
// 0. The protocol crypto micro-benchmarks, as their own process (they write crypto.json)

async function cryptoSection() {
  log('\n[1/5] protocol crypto micro-benchmarks (packages/protocol/bench/crypto.ts)\n');
  const args = ['--import', 'tsx', resolve(ROOT, 'packages/protocol/bench/crypto.ts'), ...(quick ? ['--quick'] : [])];
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: ROOT });
  let table = '';
  p.stdout!.on('data', (d: Buffer) => (table += String(d)));
  const code = await new Promise<number | null>((r) => p.once('exit', r));
  if (code !== 0) throw new Error(`crypto bench exited with ${code}`);
  const json = JSON.parse(readFileSync(resolve(OUT, 'crypto.json'), 'utf8')) as { results: { provider: string; op: string; opsPerSec: number }[] };
  return { table: table.trim(), results: json.results };
}

// ---------------------------------------------------------------------------------------------
// 1. Limits

function limitsSection(sampleTbsLength: number, dir: string) {
  log(`\n[3/5] limits on this machine (one core)\n`);
  // Ed25519 through node:crypto with the KeyObject created once, over a message the size of a
  // 1 KiB message's signed bytes (what the server verifies per message).
  const keys = Array.from({ length: 16 }, () => generateKeyPairSync('ed25519'));
  const msg = randomBytes(sampleTbsLength);
  const pubs = keys.map((k) => createPublicKey({ key: k.publicKey.export({ format: 'der', type: 'spki' }), format: 'der', type: 'spki' }));
  const sigs = keys.map((k) => edSign(null, msg, k.privateKey));
  const verify = repeat(`ed25519 verify (${sampleTbsLength} B, KeyObject cached)`, () =>
    rate((i) => {
      if (!edVerify(null, msg, pubs[i & 15]!, sigs[i & 15]!)) throw new Error('verify failed');
    }, CFG.limitMs),
  );

  // SQLite with the server's settings (storage/sqlite.ts): WAL, synchronous=FULL, a file in the
  // same temp directory (same disk) as the benchmark server's data directory.
  const file = join(dir, 'limits.db');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, topic BLOB NOT NULL, idx INTEGER NOT NULL, entry BLOB NOT NULL)');
  const ins = db.prepare('INSERT INTO t (topic, idx, entry) VALUES (?, ?, ?)');
  const topic = randomBytes(16);
  const row = randomBytes(1200); // ≈ one LogEntry of a 1 KiB message
  const one = db.transaction((i: number) => ins.run(topic, i, row));
  let k = 0;
  const single = repeat('durable single-row commits (1.2 KB row)', () => rate(() => one(k++), CFG.limitMs));
  const BATCH = 100;
  const many = db.transaction(() => {
    for (let i = 0; i < BATCH; i++) ins.run(topic, k++, row);
  });
  const batched = repeat(`durable batched rows (${BATCH} rows per commit)`, () => rate(() => many(), CFG.limitMs) * BATCH);
  db.close();
  rmSync(file, { force: true });
  rmSync(file + '-wal', { force: true });
  rmSync(file + '-shm', { force: true });
  return { verifyPerSec: verify, verifyMessageBytes: sampleTbsLength, commitsPerSec: single, batchedRowsPerSec: batched, batchRows: BATCH, rowBytes: row.length };
}

/** Fraction of all cores busy over `ms` (Linux /proc/stat; NaN elsewhere): other work skews every figure. */
async function machineBusy(ms: number): Promise<number> {
  const read = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3]! + (f[4] ?? 0);
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  try {
    const a = read();
    await new Promise((r) => setTimeout(r, ms));
    const b = read();
    return 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total);
  } catch {
    return NaN;
  }
}

/** CPU time (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function procCpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Ingest and 3. latency against a real server process

const RATES = Object.fromEntries(
  ['register', 'authChallenge', 'write', 'admin', 'claimTopicKeyPerClaimer', 'claimTopicKeyPerTarget', 'claimPrekey'].map((n) => [n, [1_000_000_000, 60_000] as const]),
);

async function serverSections(limits: ReturnType<typeof limitsSection>) {
  const profDir = profile ? resolve(OUT, 'profile') : undefined;
  if (profDir !== undefined) {
    rmSync(profDir, { recursive: true, force: true });
    mkdirSync(profDir, { recursive: true });
  }
  const server = await startBenchServer({
    rates: RATES,
    nodeFlags: profDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
    ...(verifyThreadsArg === undefined ? {} : { verifyThreads: Number(verifyThreadsArg) }),
    ...(writerThreadArg === undefined ? {} : { writerThread: writerThreadArg === 'true' }),
  });
  const gen = new Generator();
  try {
    log(`\n[4/5] ingest: server ${server.url} (pid ${server.proc.pid}), ${CFG.topics} topics × ${CFG.members} members, ${CFG.concurrency} concurrent requests\n`);
    log('  setting up users and topics ');
    const t0 = performance.now();
    const topics: BenchTopic[] = [];
    for (let i = 0; i < CFG.topics; i += 4) {
      topics.push(...(await makeTopics(server.url, server.name, server.adminToken, `i${i}x`, Math.min(4, CFG.topics - i), CFG.members)));
      log('.');
    }
    log(` ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const senders: Sender[] = topics.flatMap((t) => t.members.map((m) => m.sender));
    // Warm-up, not counted: JIT of the server's hot path, SQLite page cache, keep-alive sockets.
    await gen.ask({ cmd: 'prepare', senders, count: 4_000, bodyBytes: 1024 });
    log('  warm-up (not counted) … ');
    const warm = await gen.ask({ cmd: 'ingest', url: server.url, concurrency: CFG.concurrency, durationMs: 2_000 });
    log(`${fmt((warm.acked * 1000) / warm.elapsedMs)} msgs/s\n`);
    const runs: { msgsPerSec: number; acked: number; errors: number; elapsedMs: number; prepareMs: number; exhausted: boolean; serverCores: number; generatorCores: number }[] = [];
    for (let r = 0; r < CFG.reps; r++) {
      const prep = await gen.ask({ cmd: 'prepare', senders, count: CFG.ingestPool, bodyBytes: 1024 });
      log(`  run ${r + 1}/${CFG.reps}: sealed ${prep.count} messages in ${(prep.ms / 1000).toFixed(1)} s (untimed); posting for ≤ ${CFG.ingestMs / 1000} s … `);
      const cpu0 = procCpuMs(server.proc.pid!);
      const res = await gen.ask({ cmd: 'ingest', url: server.url, concurrency: CFG.concurrency, durationMs: CFG.ingestMs });
      const serverCores = (procCpuMs(server.proc.pid!) - cpu0) / res.elapsedMs;
      const generatorCores = res.cpuMs / res.elapsedMs;
      if (res.errors > 0) log(`\n  ${res.errors} errors, first: ${res.firstError}\n  `);
      const msgsPerSec = (res.acked * 1000) / res.elapsedMs;
      runs.push({ msgsPerSec, acked: res.acked, errors: res.errors, elapsedMs: res.elapsedMs, prepareMs: prep.ms, exhausted: res.exhausted, serverCores, generatorCores });
      log(`${fmt(msgsPerSec)} msgs/s (${res.acked} acknowledged${res.exhausted ? ', pool exhausted' : ''}; CPU: server ${serverCores.toFixed(2)} cores, generator ${generatorCores.toFixed(2)})\n`);
    }
    const ingest = {
      topics: CFG.topics,
      members: CFG.members,
      concurrency: CFG.concurrency,
      messageBodyBytes: 1024,
      msgsPerSec: median(runs.map((r) => r.msgsPerSec)),
      /** CPU the server process used during the timed windows, in cores (1 = one core busy). */
      serverCores: median(runs.map((r) => r.serverCores)),
      generatorCores: median(runs.map((r) => r.generatorCores)),
      /** Server CPU per acknowledged message. */
      serverCpuUsPerMsg: 0,
      runs,
      ratioToVerify: 0,
      ratioToCommits: 0,
      ratioToBatchedRows: 0,
    };
    ingest.ratioToVerify = ingest.msgsPerSec / limits.verifyPerSec.median;
    ingest.serverCpuUsPerMsg = (ingest.serverCores * 1e6) / ingest.msgsPerSec;
    ingest.ratioToCommits = ingest.msgsPerSec / limits.commitsPerSec.median;
    ingest.ratioToBatchedRows = ingest.msgsPerSec / limits.batchedRowsPerSec.median;
    log(`  median ${fmt(ingest.msgsPerSec)} msgs/s = ${ingest.ratioToVerify.toFixed(3)}× verify/s, ${ingest.ratioToCommits.toFixed(2)}× single commits/s; server ${fmt(ingest.serverCpuUsPerMsg)} µs CPU per message (one verify: ${fmt(1e6 / limits.verifyPerSec.median)} µs)\n`);

    log(`\n[5/5] latency: ${CFG.latencyRates.join(' and ')}/s offered for ${CFG.latencyMs / 1000} s, ${CFG.latencyTopics} topics × 2 members, receiver on /v1/ws\n`);
    const lt = await makeTopics(server.url, server.name, server.adminToken, 'l', CFG.latencyTopics, 2);
    const latency = [];
    for (const offered of CFG.latencyRates) {
      const lruns: { p50: number; p99: number; max: number; sent: number; delivered: number; errors: number }[] = [];
      const latReps = quick ? 1 : 3;
      for (let r = 0; r < latReps; r++) {
        const n = Math.round((offered * CFG.latencyMs) / 1000);
        await gen.ask({ cmd: 'prepare', senders: lt.map((t) => t.members[0]!.sender), count: n, bodyBytes: 1024 });
        log(`  ${offered}/s run ${r + 1}/${latReps}: `);
        const res = await gen.ask({ cmd: 'latency', url: server.url, rate: offered, durationMs: CFG.latencyMs, receivers: lt.map((t) => t.members[1]!.user.token) });
        const l = res.latenciesMs as number[];
        const run = { p50: pct(l, 50), p99: pct(l, 99), max: Math.max(...l), sent: res.sent, delivered: res.delivered, errors: res.errors };
        lruns.push(run);
        log(`p50 ${run.p50.toFixed(1)} ms, p99 ${run.p99.toFixed(1)} ms, max ${run.max.toFixed(1)} ms (${run.delivered}/${run.sent} delivered${res.errors ? `, ${res.errors} errors: ${res.firstError}` : ''})\n`);
      }
      latency.push({
        offeredPerSec: offered,
        seconds: CFG.latencyMs / 1000,
        topics: CFG.latencyTopics,
        membersPerTopic: 2,
        p50Ms: median(lruns.map((r) => r.p50)),
        p99Ms: median(lruns.map((r) => r.p99)),
        maxMs: median(lruns.map((r) => r.max)),
        runs: lruns,
        /** The offered rate as a fraction of the ingest capacity measured above. */
        loadVsIngest: offered / ingest.msgsPerSec,
      });
    }
    return { ingest, latency, server: { url: server.url, pid: server.proc.pid, dataDir: server.dataDir } };
  } finally {
    await gen.close();
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Client costs

function clientSection() {
  log('\n[2/5] client costs (node:crypto provider, one core)\n');
  const random = (n: number) => new Uint8Array(randomBytes(n));
  const topicId = random(16);
  const seed = random(32);
  const prk = epochPrk(crypto, topicId, 0, random(32));
  const root = random(32);
  const body1k = utf8('lorem ipsum '.repeat(86).slice(0, 1024));
  const body10 = utf8('hi there!!');
  const seal = (body: Uint8Array) =>
    sealMessage(crypto, random, { topicId, epoch: 0, epochPrk: prk, sender: 1, signatureSeed: seed, headSize: 10, headRoot: root, content: { type: 'text', body } });
  const state = {
    epoch: 0,
    members: new Map([[1, { id: 1, role: 'participant', topicKey: { signatureKey: crypto.ed25519PublicKey(seed) } }]]),
  } as unknown as TopicState;
  const m = seal(body1k);
  const sealSign = repeat('message seal+sign (1 KiB text)', () => 1e6 / rate(() => seal(body1k), CFG.clientMs), ' µs');
  const checkOpen = repeat('message check+open (1 KiB text)', () =>
    1e6 /
      rate(() => {
        checkMessage(crypto, state, topicId, m, { logSize: 10, epochStartSize: 0, rootAt: () => root });
        openMessage(crypto, topicId, prk, m, root);
      }, CFG.clientMs),
    ' µs',
  );
  const overhead = (body: Uint8Array) => {
    const msg = encodeMessage(seal(body));
    const entry = encodeLogEntry({ type: 'message', timestamp: Date.now(), body: msg });
    // padded content c (§8.2) = AEAD ciphertext − 16 B tag; the rest of the message is the envelope.
    const padded = decodeMessage(msg).ciphertext.length - 16;
    return {
      plaintext: body.length,
      message: msg.length,
      overhead: msg.length - body.length,
      contentFramingAndPadding: padded - body.length,
      envelope: msg.length - padded,
      logEntryFraming: entry.length - msg.length,
    };
  };
  const o1k = overhead(body1k);
  const o10 = overhead(body10);
  log(`  overhead: 1 KiB text → ${o1k.message} B message (+${o1k.overhead} B: ${o1k.envelope} B envelope, ${o1k.contentFramingAndPadding} B content framing + padding); 10 B text → ${o10.message} B (+${o10.overhead} B: ${o10.envelope} B envelope, ${o10.contentFramingAndPadding} B content framing + padding); LogEntry framing +${o1k.logEntryFraming} B\n`);
  const tbsLength = messageTbs(topicId, m, root).length;
  return { sealSignUs: sealSign, checkOpenUs: checkOpen, overhead1KiB: o1k, overhead10B: o10, tbsLength };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const m = machine();
  const began = performance.now();
  log(`rendezvous bench suite (${quick ? 'quick' : 'full'}): ${m.cpu} × ${m.cores} cores, node ${m.node}\n`);
  const loadBefore = os.loadavg();
  const busyBefore = await machineBusy(500);
  if (busyBefore > 0.1) log(`  warning: the machine is ${(busyBefore * 100).toFixed(0)} % busy before the start: other work skews every figure\n`);
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-bench-'));
  try {
    const cryptoRes = only === '2' ? { table: '(crypto micro-benchmarks: part 1, not run)', results: [] } : await cryptoSection();
    const client = clientSection();
    const limits = limitsSection(client.tbsLength, dir);
    const srv = only === '2' ? { ingest: null, latency: [] } : await serverSections(limits);
    let part2: Record<string, any> | null = null;
    if (only !== '1') {
      const profDir2 = resolve(OUT, 'profile-part2');
      if (profile) {
        rmSync(profDir2, { recursive: true, force: true });
        mkdirSync(profDir2, { recursive: true });
      }
      log(`\npart 2 (sections 6–11): a fresh server process\n`);
      const sections = process.argv.find((a) => a.startsWith('--sections='))?.slice('--sections='.length).split(',');
      part2 = await scaleSections({ quick, verifyPerSec: limits.verifyPerSec.median, profileFlags: profile ? ['--cpu-prof', `--cpu-prof-dir=${profDir2}`] : [], ...(sections ? { sections } : {}) });
    }
    /** 1-minute load average before and after: the suite's own processes add ≈ 1–2; more means other work ran. */
    const load = { before: loadBefore[0]!, after: os.loadavg()[0]!, busyBefore, busyAfter: await machineBusy(500) };
    const result = { date: new Date().toISOString(), mode: quick ? 'quick' : 'full', only: only ?? 'all', machine: m, load, limits, ingest: srv.ingest, latency: srv.latency, client, crypto: cryptoRes.results, part2, seconds: 0 };
    result.seconds = (performance.now() - began) / 1000;

    const L = limits;
    const rows: [string, string, string, string][] = [
      ['limit: ed25519 verify, one core', `${fmt(L.verifyPerSec.median)}/s`, '1×', ''],
      ['limit: durable single-row commits', `${fmt(L.commitsPerSec.median)}/s`, '1×', ''],
      [`limit: durable batched rows (${L.batchRows}/commit)`, `${fmt(L.batchedRowsPerSec.median)}/s`, '1×', ''],
      ...(srv.ingest === null
        ? []
        : [
            [
              `ingest (${srv.ingest.topics} topics × ${srv.ingest.members} members, ${srv.ingest.concurrency} in flight)`,
              `${fmt(srv.ingest.msgsPerSec)} msgs/s`,
              `${srv.ingest.ratioToVerify.toFixed(3)}× verify; ${srv.ingest.ratioToCommits.toFixed(2)}× commits; ${srv.ingest.ratioToBatchedRows.toFixed(3)}× batched rows; server ${srv.ingest.serverCores.toFixed(2)} cores busy, ${fmt(srv.ingest.serverCpuUsPerMsg)} µs CPU/msg`,
              `≥ 5,000 and ≥ 0.7× verify: ${srv.ingest.msgsPerSec >= 5000 && srv.ingest.ratioToVerify >= 0.7 ? 'met' : 'MISSED'}`,
            ] as [string, string, string, string],
          ]),
      ...srv.latency.map((l): [string, string, string, string] => [
        `latency at ${fmt(l.offeredPerSec)}/s (p50 / p99 / max)`,
        `${l.p50Ms.toFixed(1)} / ${l.p99Ms.toFixed(1)} / ${l.maxMs.toFixed(1)} ms`,
        `offered = ${l.loadVsIngest.toFixed(2)}× ingest capacity`,
        l.offeredPerSec === 1000 ? `p99 ≤ 25 ms: ${l.p99Ms <= 25 ? 'met' : 'MISSED'}` : '(target is at 1,000/s)',
      ]),
      ['client seal+sign 1 KiB', `${client.sealSignUs.median.toFixed(1)} µs`, `${((client.sealSignUs.median * L.verifyPerSec.median) / 1e6).toFixed(2)}× one verify`, ''],
      ['client check+open 1 KiB', `${client.checkOpenUs.median.toFixed(1)} µs`, `${((client.checkOpenUs.median * L.verifyPerSec.median) / 1e6).toFixed(2)}× one verify`, ''],
      ['overhead per message, 1 KiB text', `${client.overhead1KiB.overhead} B`, `${client.overhead1KiB.envelope} B envelope + ${client.overhead1KiB.contentFramingAndPadding} B padding/framing; +${client.overhead1KiB.logEntryFraming} B LogEntry`, `≤ 120 B: ${client.overhead1KiB.overhead <= 120 ? 'met' : 'MISSED'}`],
      ['overhead per message, 10 B text', `${client.overhead10B.overhead} B`, `${client.overhead10B.envelope} B envelope + ${client.overhead10B.contentFramingAndPadding} B padding/framing; +${client.overhead10B.logEntryFraming} B LogEntry`, `≤ 120 B: ${client.overhead10B.overhead <= 120 ? 'met' : 'MISSED'}`],
      ...(part2 === null ? [] : scaleRows(part2, L.verifyPerSec.median)),
    ];
    console.log(`\n${cryptoRes.table}\n`);
    console.log(`Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, node ${m.node}, ${m.platform}; mode ${result.mode}; medians of ${CFG.reps} runs; machine ${(load.busyBefore * 100).toFixed(0)} % busy before, ${(load.busyAfter * 100).toFixed(0)} % after (load average ${load.before.toFixed(2)} / ${load.after.toFixed(2)})\n`);
    console.log('| figure | value | ratio to limit (same run) | issue-7 target |');
    console.log('| --- | ---: | --- | --- |');
    for (const r of rows) console.log(`| ${r.join(' | ')} |`);
    const sectionsArg = process.argv.find((a) => a.startsWith('--sections='))?.slice('--sections='.length);
    const file = resolve(OUT, `suite-${result.mode}${only === undefined ? '' : `-part${only}`}${sectionsArg === undefined ? '' : `-s${sectionsArg.replace(/,/g, '-')}`}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2));
    console.log(`\nwrote ${file} (and ${resolve(OUT, 'crypto.json')}) in ${result.seconds.toFixed(0)} s`);
    if (profile) {
      for (const d of ['profile', 'profile-part2']) {
        const dirP = resolve(OUT, d);
        try {
          console.log(`server CPU profile(s): ${readdirSync(dirP).map((f) => join(dirP, f)).join(', ')}`);
        } catch {
          /* that part did not run */
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
