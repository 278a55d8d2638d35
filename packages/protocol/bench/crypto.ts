/**
 * Micro-benchmarks of the protocol core for both providers: the physical limits the server's
 * throughput is later compared to (issue 7). Not a test: it prints figures and writes JSON.
 *
 * Section 1 of the benchmark suite (`npm run bench`, packages/server/bench/run.ts); alone:
 *   node --import tsx packages/protocol/bench/crypto.ts            full run (5 repetitions of ~1 s per operation)
 *   node --import tsx packages/protocol/bench/crypto.ts --quick    CI-sized run (3 repetitions of ~0.2 s)
 *
 * Each figure is the median of the repetitions, in operations per second on one core.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import os from 'node:os';
import { createNodeCrypto, nodeCrypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import { deterministicRandom, type CryptoProvider } from '../src/crypto/provider.ts';
import { utf8 } from '../src/bytes.ts';
import { hpkeOpen, hpkeSeal, SUITE_X25519_SHA256_CHACHA } from '../src/crypto/hpke.ts';
import { epochPrk } from '../src/epoch.ts';
import { encodeMessage, openMessage, sealMessage, messageTbs } from '../src/message.ts';
import { SignLabel, verifyWithLabel } from '../src/sign.ts';
import { MemoryLog, verifyInclusion } from '../src/merkle.ts';

const quick = process.argv.includes('--quick');
const REPS = quick ? 3 : 5;
const TARGET_MS = quick ? 200 : 1000;

interface Result {
  provider: string;
  op: string;
  opsPerSec: number;
  runs: number[];
}

/** Runs `fn` in batches until `TARGET_MS` has passed; returns ops/s. */
function measure(fn: (i: number) => void): number {
  let n = 0;
  for (let i = 0; i < 20; i++) fn(i); // warm-up (JIT, key caches)
  const start = performance.now();
  let now = start;
  let batch = 1;
  while (now - start < TARGET_MS) {
    for (let i = 0; i < batch; i++) fn(n + i);
    n += batch;
    now = performance.now();
    if (now - start < TARGET_MS / 10) batch *= 2;
  }
  return (n * 1000) / (now - start);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const results: Result[] = [];

function bench(provider: string, op: string, fn: (i: number) => void): void {
  process.stderr.write(`  ${provider.padEnd(12)} ${op.padEnd(34)} `);
  const runs: number[] = [];
  for (let r = 0; r < REPS; r++) {
    runs.push(measure(fn));
    process.stderr.write('.');
  }
  const opsPerSec = median(runs);
  results.push({ provider, op, opsPerSec, runs });
  process.stderr.write(` ${fmt(opsPerSec)}/s\n`);
}

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
}

function providerBenches(crypto: CryptoProvider, name: string, cold?: CryptoProvider): void {
  const random = deterministicRandom(crypto, utf8(`bench ${name}`));
  const seeds = Array.from({ length: 64 }, () => random(32));
  const pks = seeds.map((s) => crypto.ed25519PublicKey(s));
  const msg = random(100);
  const sigs = seeds.map((s) => crypto.ed25519Sign(s, msg));
  const xs = Array.from({ length: 64 }, () => random(32));
  const xpks = xs.map((s) => crypto.x25519PublicKey(s));

  bench(name, 'ed25519 sign (100 B)', (i) => crypto.ed25519Sign(seeds[i % 64]!, msg));
  bench(name, 'ed25519 verify, key cached', (i) => {
    if (!crypto.ed25519Verify(pks[i % 64]!, msg, sigs[i % 64]!)) throw new Error('verify failed');
  });
  if (cold) {
    bench(name, 'ed25519 verify, key not cached', (i) => {
      if (!cold.ed25519Verify(pks[i % 64]!, msg, sigs[i % 64]!)) throw new Error('verify failed');
    });
  }
  bench(name, 'x25519 shared secret', (i) => crypto.x25519(xs[i % 64]!, xpks[(i + 1) % 64]!));

  const info = utf8('bench');
  const secret = random(32);
  const sealed = hpkeSeal(crypto, SUITE_X25519_SHA256_CHACHA, xpks[0]!, info, new Uint8Array(0), secret, random);
  bench(name, 'hpke seal 32 B (key share)', (i) =>
    hpkeSeal(crypto, SUITE_X25519_SHA256_CHACHA, xpks[i % 64]!, info, new Uint8Array(0), secret, random),
  );
  bench(name, 'hpke open 32 B (key share)', () =>
    hpkeOpen(crypto, SUITE_X25519_SHA256_CHACHA, xs[0]!, sealed.enc, info, new Uint8Array(0), sealed.ciphertext),
  );

  const topicId = random(16);
  const prk = epochPrk(crypto, topicId, 0, random(32));
  const root = random(32);
  const body = utf8('lorem ipsum '.repeat(86).slice(0, 1024)); // 1 KiB of text (text bodies must be UTF-8)
  const m = sealMessage(crypto, random, {
    topicId, epoch: 0, epochPrk: prk, sender: 1, signatureSeed: seeds[0]!, headSize: 10, headRoot: root,
    content: { type: 'text', body },
  });
  bench(name, 'message seal+sign 1 KiB', () =>
    sealMessage(crypto, random, {
      topicId, epoch: 0, epochPrk: prk, sender: 1, signatureSeed: seeds[0]!, headSize: 10, headRoot: root,
      content: { type: 'text', body },
    }),
  );
  bench(name, 'message verify+open 1 KiB', () => {
    if (!verifyWithLabel(crypto, pks[0]!, SignLabel.message, messageTbs(topicId, m, root), m.signature)) throw new Error('bad');
    openMessage(crypto, topicId, prk, m, root);
  });
  if (name === 'node') process.stderr.write(`  message wire size for a 1 KiB body: ${encodeMessage(m).length} B\n`);

  const log = new MemoryLog(crypto);
  const leaf = random(200);
  bench(name, 'merkle append (200 B leaf)', () => log.append(leaf));
  while (log.size < 1 << 14) log.append(leaf); // proofs over the first 2^14 leaves, whatever the append speed
  const n = Math.min(log.size, 1 << 14);
  const proofs = Array.from({ length: 64 }, (_, i) => ({ i: (i * 7919) % n, p: log.inclusionProof((i * 7919) % n, n) }));
  const rootN = log.root(n);
  bench(name, 'merkle inclusion proof (n=16384)', (i) => log.inclusionProof((i * 7919) % n, n));
  bench(name, 'merkle verify inclusion', (i) => {
    const { i: idx, p } = proofs[i % 64]!;
    verifyInclusion(crypto, idx, n, log.leafHash(idx), p, rootN);
  });
}

process.stderr.write(`rendezvous crypto bench (${quick ? 'quick' : 'full'}): ${os.cpus()[0]?.model ?? '?'} × ${os.cpus().length}, node ${process.version}\n`);
process.stderr.write('node:crypto provider\n');
providerBenches(nodeCrypto, 'node', createNodeCrypto({ publicKeyCacheSize: 0 }));
process.stderr.write('@noble provider\n');
providerBenches(nobleCrypto, 'noble');

// Ratios: how much faster the node path is for each operation.
const byOp = new Map<string, Record<string, number>>();
for (const r of results) byOp.set(r.op, { ...(byOp.get(r.op) ?? {}), [r.provider]: r.opsPerSec });
console.log('\n| operation | node ops/s | noble ops/s | node / noble |');
console.log('| --- | ---: | ---: | ---: |');
for (const [op, v] of byOp) {
  const ratio = v.node && v.noble ? (v.node / v.noble).toFixed(1) + '×' : '–';
  console.log(`| ${op} | ${v.node ? fmt(v.node) : '–'} | ${v.noble ? fmt(v.noble) : '–'} | ${ratio} |`);
}

const out = resolve(import.meta.dirname, '..', '..', '..', 'bench-results');
mkdirSync(out, { recursive: true });
const file = resolve(out, 'crypto.json');
writeFileSync(
  file,
  JSON.stringify(
    { date: new Date().toISOString(), mode: quick ? 'quick' : 'full', node: process.version, cpu: os.cpus()[0]?.model, cores: os.cpus().length, results },
    null,
    2,
  ),
);
console.log(`\nwrote ${file}`);
