/**
 * The load generator: a child process of the bench runner (its own process, so its CPU is not
 * the server's), driven over IPC. Messages are sealed and their request bodies encoded in
 * `prepare`, before any timed window, so client crypto is not measured.
 *
 *   {cmd: 'prepare', senders, count, bodyBytes}   → {type: 'prepared', count, ms}
 *   {cmd: 'ingest', url, concurrency, durationMs} → {type: 'ingest', acked, errors, elapsedMs, firstError}
 *   {cmd: 'latency', url, rate, durationMs, receivers} → {type: 'latency', latenciesMs, sent, acked, delivered, errors}
 *
 * Can be pointed at any Rendezvous server (loopback by default in the runner).
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { decodeLogEntry, decodeMessage, encodeMessage, epochPrk, fromBase64url, sealMessage, toBase64url, toHex, utf8 } from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { Sender } from './setup.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));

interface Prepared {
  path: string;
  token: string;
  body: string;
  nonce: string;
}

let pool: Prepared[] = [];

function send(msg: unknown): void {
  process.send!(msg);
}

function prepare(senders: Sender[], count: number, bodyBytes: number): void {
  const t0 = performance.now();
  const text = utf8('lorem ipsum '.repeat(Math.ceil(bodyBytes / 12) + 1).slice(0, bodyBytes));
  const prks = senders.map((s) => epochPrk(crypto, fromBase64url(s.topicId), 0, fromBase64url(s.epochSecret)));
  const seeds = senders.map((s) => fromBase64url(s.signatureSeed));
  const roots = senders.map((s) => fromBase64url(s.headRoot));
  const ids = senders.map((s) => fromBase64url(s.topicId));
  pool = [];
  for (let i = 0; i < count; i++) {
    const k = i % senders.length;
    const s = senders[k]!;
    const m = sealMessage(crypto, random, {
      topicId: ids[k]!,
      epoch: 0,
      epochPrk: prks[k]!,
      sender: s.memberId,
      signatureSeed: seeds[k]!,
      headSize: s.headSize,
      headRoot: roots[k]!,
      content: { type: 'text', body: text },
    });
    pool.push({
      path: `/v1/topics/${s.topicId}/messages`,
      token: s.token,
      body: JSON.stringify({ message: toBase64url(encodeMessage(m)) }),
      nonce: toHex(m.nonce),
    });
  }
  send({ type: 'prepared', count, ms: performance.now() - t0 });
}

function postOne(agent: http.Agent, url: URL, p: Prepared): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path: p.path,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(p.body),
          authorization: `Bearer ${p.token}`,
          'idempotency-key': toBase64url(random(12)),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => (res.statusCode === 201 ? resolve(201) : reject(new Error(`${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 300)}`))));
      },
    );
    req.on('error', reject);
    req.end(p.body);
  });
}

async function ingest(base: string, concurrency: number, durationMs: number): Promise<void> {
  const url = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  let acked = 0;
  let errors = 0;
  let firstError: string | undefined;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  let last = t0;
  const worker = async () => {
    while (performance.now() < deadline && next < pool.length) {
      const p = pool[next++]!;
      try {
        await postOne(agent, url, p);
        acked++;
        last = performance.now();
      } catch (e) {
        errors++;
        firstError ??= String(e);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  const cpu = process.cpuUsage(cpu0);
  send({ type: 'ingest', acked, errors, elapsedMs: last - t0, exhausted: next >= pool.length, firstError, cpuMs: (cpu.user + cpu.system) / 1000 });
}

async function latency(base: string, rate: number, durationMs: number, receivers: string[]): Promise<void> {
  const url = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  const sockets: WebSocket[] = [];
  await Promise.all(
    receivers.map(
      (token) =>
        new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
          sockets.push(ws);
          ws.on('error', reject);
          ws.on('message', (data) => {
            const now = performance.now();
            const msg = JSON.parse(String(data)) as { type: string; events?: { kind: string; type?: string; entry?: string }[] };
            if (msg.type === 'ready') return resolve();
            for (const e of msg.events ?? []) {
              if (e.kind !== 'entry' || e.type !== 'message') continue;
              const m = decodeMessage(decodeLogEntry(fromBase64url(e.entry!)).body);
              const t = sentAt.get(toHex(m.nonce));
              if (t !== undefined) {
                latencies.push(now - t);
                sentAt.delete(toHex(m.nonce));
              }
            }
          });
        }),
    ),
  );
  const n = Math.min(pool.length, Math.round((rate * durationMs) / 1000));
  let acked = 0;
  let errors = 0;
  let firstError: string | undefined;
  const inflight: Promise<void>[] = [];
  const t0 = performance.now() + 50;
  // Open loop: message i is due at t0 + i/rate whatever happened to the earlier ones; latency is
  // measured from that due time, so a generator or server that falls behind is not hidden.
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const p = pool[i]!;
    sentAt.set(p.nonce, due);
    inflight.push(
      postOne(agent, url, p).then(
        () => void acked++,
        (e) => {
          errors++;
          firstError ??= String(e);
        },
      ),
    );
  }
  await Promise.all(inflight);
  const settleUntil = performance.now() + 5_000;
  while (latencies.length < acked && performance.now() < settleUntil) await new Promise((r) => setTimeout(r, 20));
  for (const ws of sockets) ws.close();
  agent.destroy();
  send({ type: 'latency', latenciesMs: latencies, sent: n, acked, delivered: latencies.length, errors, firstError, offeredSeconds: n / rate });
}

process.on('message', (m: any) => {
  const run = async () => {
    if (m.cmd === 'prepare') prepare(m.senders, m.count, m.bodyBytes);
    else if (m.cmd === 'ingest') await ingest(m.url, m.concurrency, m.durationMs);
    else if (m.cmd === 'latency') await latency(m.url, m.rate, m.durationMs, m.receivers);
    else if (m.cmd === 'exit') process.exit(0);
  };
  run().catch((e) => send({ type: 'error', error: String(e?.stack ?? e) }));
});
send({ type: 'up' });
