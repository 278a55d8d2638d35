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
  const { sent: n, acked, errors, firstError } = await postOpenLoop(agent, url, rate, durationMs, (nonce, due) => sentAt.set(nonce, due));
  const settleUntil = performance.now() + 5_000;
  while (latencies.length < acked && performance.now() < settleUntil) await new Promise((r) => setTimeout(r, 20));
  for (const ws of sockets) ws.close();
  agent.destroy();
  send({ type: 'latency', latenciesMs: latencies, sent: n, acked, delivered: latencies.length, errors, firstError, offeredSeconds: n / rate });
}

// ---------------------------------------------------------------------------------------------
// Part 2: many WebSocket listeners, open-loop posting with absolute time stamps, live-sealing load

/** Absolute time in ms, comparable across processes on one machine (sub-ms; same clock). */
const now = () => performance.timeOrigin + performance.now();

const listeners: WebSocket[] = [];
/** Raw frames as they arrived: stamped first, parsed only when asked (keeps the receive path cheap). */
let frames: { t: number; data: string }[] = [];

async function listen(base: string, tokens: string[], parallel: number): Promise<void> {
  const t0 = performance.now();
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  const one = (token: string) =>
    new Promise<void>((resolve) => {
      const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
      let ready = false;
      ws.on('error', (e) => {
        if (!ready) {
          failed++;
          firstError ??= String(e);
          resolve();
        }
      });
      ws.on('close', (code) => {
        if (!ready) {
          failed++;
          firstError ??= `closed ${code}`;
          resolve();
        }
      });
      ws.on('message', (data) => {
        const t = now();
        if (!ready) {
          ready = true;
          listeners.push(ws);
          return resolve();
        }
        frames.push({ t, data: String(data) });
      });
    });
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < tokens.length) await one(tokens[next++]!);
    }),
  );
  send({ type: 'listening', connected: listeners.length, failed, firstError, ms: performance.now() - t0 });
}

/** Per message nonce (hex): deliveries, first and last arrival (absolute ms). */
function arrivals(clear: boolean): void {
  const out: Record<string, { n: number; first: number; last: number }> = {};
  for (const f of frames) {
    const msg = JSON.parse(f.data) as { type: string; events?: { kind: string; type?: string; entry?: string }[] };
    for (const e of msg.events ?? []) {
      if (e.kind !== 'entry' || e.type !== 'message') continue;
      const nonce = toHex(decodeMessage(decodeLogEntry(fromBase64url(e.entry!)).body).nonce);
      const a = (out[nonce] ??= { n: 0, first: f.t, last: f.t });
      a.n++;
      a.first = Math.min(a.first, f.t);
      a.last = Math.max(a.last, f.t);
    }
  }
  if (clear) frames = [];
  send({ type: 'arrivals', arrivals: out, cpuMs: cpuNow() });
}

function cpuNow(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

async function unlisten(): Promise<void> {
  await Promise.all(
    listeners.splice(0).map(
      (ws) =>
        new Promise<void>((r) => {
          ws.once('close', () => r());
          ws.close();
          setTimeout(() => {
            ws.terminate();
            r();
          }, 2_000).unref();
        }),
    ),
  );
  frames = [];
  send({ type: 'unlistened' });
}

/**
 * Posts the prepared pool open loop: message i is due at t0 + i/rate whatever happened to the
 * earlier ones, and latency is measured from that due time, so a generator or server that falls
 * behind is not hidden. `onDue` gets each message's nonce (hex) and due time (performance.now()).
 */
async function postOpenLoop(
  agent: http.Agent,
  url: URL,
  rate: number,
  durationMs: number,
  onDue: (nonce: string, due: number) => void,
): Promise<{ sent: number; acked: number; errors: number; firstError?: string }> {
  const n = Math.min(pool.length, Math.round((rate * durationMs) / 1000));
  let acked = 0;
  let errors = 0;
  let firstError: string | undefined;
  const inflight: Promise<void>[] = [];
  const t0 = performance.now() + 50;
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const p = pool[i]!;
    onDue(p.nonce, due);
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
  return { sent: n, acked, errors, ...(firstError === undefined ? {} : { firstError }) };
}

/** Open loop over the prepared pool; answers the absolute due times (performance.timeOrigin-based). */
async function openLoop(base: string, rate: number, durationMs: number): Promise<void> {
  const url = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const due: Record<string, number> = {};
  const r = await postOpenLoop(agent, url, rate, durationMs, (nonce, d) => (due[nonce] = performance.timeOrigin + d));
  agent.destroy();
  send({ type: 'openloop', due, ...r });
}

/**
 * The load generator of `npm run load`: seals each message just before it is posted (no pool,
 * so any duration works), open loop at `rate` (or closed loop with `concurrency` in flight),
 * progress every second, errors counted by code.
 */
async function load(o: { url: string; senders: Sender[]; rate: number; concurrency: number; durationMs: number; bodyBytes: number; count?: number }): Promise<void> {
  const url = new URL(o.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(o.concurrency, 64) });
  const text = utf8('lorem ipsum '.repeat(Math.ceil(o.bodyBytes / 12) + 1).slice(0, o.bodyBytes));
  const ss = o.senders.map((s) => ({
    s,
    id: fromBase64url(s.topicId),
    prk: epochPrk(crypto, fromBase64url(s.topicId), 0, fromBase64url(s.epochSecret)),
    seed: fromBase64url(s.signatureSeed),
    root: fromBase64url(s.headRoot),
  }));
  let k = 0;
  const seal = (): Prepared => {
    const x = ss[k++ % ss.length]!;
    const m = sealMessage(crypto, random, { topicId: x.id, epoch: 0, epochPrk: x.prk, sender: x.s.memberId, signatureSeed: x.seed, headSize: x.s.headSize, headRoot: x.root, content: { type: 'text', body: text } });
    return { path: `/v1/topics/${x.s.topicId}/messages`, token: x.s.token, body: JSON.stringify({ message: toBase64url(encodeMessage(m)) }), nonce: '' };
  };
  const lat: number[] = [];
  const errors: Record<string, number> = {};
  let sent = 0;
  let acked = 0;
  let lastAcked = 0;
  const t0 = performance.now();
  const end = t0 + o.durationMs;
  const cpu0 = process.cpuUsage();
  const progress = setInterval(() => {
    const t = performance.now();
    send({ type: 'progress', seconds: (t - t0) / 1000, sent, acked, perSec: acked - lastAcked, errors: Object.values(errors).reduce((a, b) => a + b, 0) });
    lastAcked = acked;
  }, 1_000);
  const one = async (start: number) => {
    const p = seal();
    sent++;
    try {
      await postOne(agent, url, p);
      acked++;
      lat.push(performance.now() - start);
    } catch (e) {
      const msg = String(e);
      const code = /"code":"([^"]+)"/.exec(msg)?.[1];
      const key = /^Error: (\d{3})/.exec(msg) ? `${/^Error: (\d{3})/.exec(msg)![1]} ${code ?? ''}`.trim() : `network ${(e as NodeJS.ErrnoException).code ?? msg.slice(0, 80)}`;
      errors[key] = (errors[key] ?? 0) + 1;
    }
  };
  if (o.rate > 0) {
    const inflight = new Set<Promise<void>>();
    for (let i = 0; ; i++) {
      const due = t0 + (i * 1000) / o.rate;
      if (due >= end || (o.count !== undefined && i >= o.count)) break;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const p = one(due); // latency from the due time: a generator or server that falls behind shows
      inflight.add(p);
      void p.then(() => inflight.delete(p));
    }
    await Promise.all(inflight);
  } else {
    await Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        while (performance.now() < end && (o.count === undefined || sent < o.count)) await one(performance.now());
      }),
    );
  }
  clearInterval(progress);
  agent.destroy();
  const cpu = process.cpuUsage(cpu0);
  send({ type: 'load', sent, acked, elapsedMs: performance.now() - t0, latenciesMs: lat, errors, cpuMs: (cpu.user + cpu.system) / 1000 });
}

process.on('message', (m: any) => {
  const run = async () => {
    if (m.cmd === 'prepare') prepare(m.senders, m.count, m.bodyBytes);
    else if (m.cmd === 'listen') await listen(m.url, m.tokens, m.parallel ?? 64);
    else if (m.cmd === 'arrivals') arrivals(m.clear !== false);
    else if (m.cmd === 'frames') send({ type: 'frames', frames: frames.length, cpuMs: cpuNow() });
    // Forgets the frames without parsing them (an ingest window's hundreds of thousands of
    // deliveries: parsing them all into arrivals ran a full run's listeners out of heap).
    else if (m.cmd === 'drop') {
      frames = [];
      send({ type: 'dropped' });
    }
    else if (m.cmd === 'unlisten') await unlisten();
    else if (m.cmd === 'openloop') await openLoop(m.url, m.rate, m.durationMs);
    else if (m.cmd === 'load') await load(m);
    else if (m.cmd === 'ingest') await ingest(m.url, m.concurrency, m.durationMs);
    else if (m.cmd === 'latency') await latency(m.url, m.rate, m.durationMs, m.receivers);
    else if (m.cmd === 'exit') process.exit(0);
  };
  run().catch((e) => send({ type: 'error', error: String(e?.stack ?? e) }));
});
send({ type: 'up' });
