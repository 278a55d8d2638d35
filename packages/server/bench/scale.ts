/**
 * The benchmark suite, part 2 (issue 7): what part 1 did not measure. Run by run.ts after part
 * 1, against a fresh `rendezvous serve` process of its own (so the memory figures start clean):
 *
 *   6. connections and memory: idle server RSS; N idle authenticated WebSockets (header auth),
 *      RSS per connection (/proc/<pid>/status VmRSS)
 *   7. fan-out: one message to a topic of 1,000 connected member devices, post → last device;
 *      then T topics × 10 members at a steady rate
 *   8. topic operations vs size: create, add (shared history; with backward secrecy), remove,
 *      re-key — client CPU, bytes, server request time
 *   9. client full verify: a new device syncing a topic of E entries through TopicMirror
 *  10. scaling curve: ingest and latency as topics, members and connected devices grow
 *  11. soak: server RSS under ingest load, sampled, with its slope
 *
 * WebSocket ingest is not measured: the server accepts no posts over /v1/ws (http/ws.ts reads
 * client frames only for authentication).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  applyUpdate,
  buildCreate,
  buildUpdate,
  decodeCheckpoint,
  encodeMessage,
  encodeTopicUpdate,
  epochPrk,
  fromBase64url,
  newTopicId,
  sealMessage,
  signTopicKey,
  toBase64url,
  toHex,
  topicKeyId,
  utf8,
  type ChangeAction,
  type CryptoProvider,
  type History,
  type Role,
  type TopicKey,
  type TopicKeySecret,
  type TopicState,
  type TopicUpdate,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { TopicMirror } from '../../client/src/topic-mirror.ts';
import { Generator } from './generator.ts';
import { startBenchServer, type BenchServer } from './server-process.ts';
import { registerUser, type BenchUser, type Sender } from './setup.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));
const log = (s: string) => process.stderr.write(s);
const median = (xs: number[]) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};
const fmt = (n: number) => (!Number.isFinite(n) ? String(n) : n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

export function scaleConfig(quick: boolean) {
  return quick
    ? {
        pool: 1_000,
        connections: 1_000,
        fanoutMembers: 1_000,
        fanoutMessages: 7,
        manyTopics: 100,
        manyRate: 50,
        manyMs: 5_000,
        opSizes: [10, 100, 1_000],
        opReps: 3,
        verifyEntries: 10_000,
        verifyReps: 3,
        scaleIngestMs: 2_000,
        scaleLatencyMs: 3_000,
        scaleRate: 20,
        soakMs: 20_000,
        soakSampleMs: 2_000,
      }
    : {
        pool: 10_000,
        connections: 10_000,
        fanoutMembers: 1_000,
        fanoutMessages: 21,
        manyTopics: 10_000,
        manyRate: 100,
        manyMs: 20_000,
        opSizes: [10, 100, 1_000, 10_000],
        opReps: 3,
        verifyEntries: 100_000,
        verifyReps: 3,
        scaleIngestMs: 4_000,
        scaleLatencyMs: 6_000,
        scaleRate: 20,
        soakMs: 300_000,
        soakSampleMs: 5_000,
      };
}
type Cfg = ReturnType<typeof scaleConfig>;

/** Resident set size of a process in bytes (VmRSS of /proc/<pid>/status). */
export function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}
function fdLimit(pid: number | 'self'): string {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m ? `${m[1]} soft / ${m[2]} hard` : '?';
  } catch {
    return '?';
  }
}
const MB = 1024 * 1024;

/** /proc/stat totals: busy fraction of all cores between two readings (other work shows here). */
function statNow(): { idle: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3]! + (f[4] ?? 0), total: f.reduce((a, b) => a + b, 0) };
  } catch {
    return { idle: NaN, total: NaN };
  }
}
const busySince = (a: { idle: number; total: number }) => {
  const b = statNow();
  return 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total);
};

// ---------------------------------------------------------------------------------------------
// HTTP helpers (the runner's own requests: setup, topic operations, single fan-out posts)

async function request(url: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; json: any; bytes: number; ms: number }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  let text: string | undefined;
  if (body !== undefined) {
    text = JSON.stringify(body);
    headers['content-type'] = 'application/json';
    headers['idempotency-key'] = toBase64url(random(12));
  }
  let t0 = performance.now();
  let r: Response;
  try {
    r = await fetch(url + path, { method, headers, body: text });
  } catch (e) {
    // A keep-alive socket the server closed as the request went out: retry once (same
    // Idempotency-Key, so a request that did arrive is not applied twice). Timed from the retry.
    // (UND_ERR_SOCKET, or EPIPE / ECONNRESET while a large body was still being written: a
    // 10,000-member update takes the client longer to build than the server's 5 s keep-alive.)
    if (!['UND_ERR_SOCKET', 'EPIPE', 'ECONNRESET'].includes((e as { cause?: { code?: string } }).cause?.code ?? '')) throw e;
    t0 = performance.now();
    r = await fetch(url + path, { method, headers, body: text });
  }
  const out = await r.text();
  const ms = performance.now() - t0;
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${out.slice(0, 300)}`);
  return { status: r.status, json: out ? JSON.parse(out) : null, bytes: text?.length ?? 0, ms };
}

async function registerPool(s: BenchServer, n: number, prefix: string): Promise<BenchUser[]> {
  const users: BenchUser[] = new Array(n);
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 24 }, async () => {
      while (next < n) {
        const i = next++;
        users[i] = await registerUser(s.url, s.name, s.adminToken, `${prefix}${i}`);
        if (++done % 1000 === 0) log(` ${done}`);
      }
    }),
  );
  log(` users in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return users;
}

/** A topic as its admin (member 0) holds it: the state, the epoch secret, each member's secrets. */
interface Topic {
  id: Uint8Array;
  idB64: string;
  users: BenchUser[];
  secrets: TopicKeySecret[];
  state: TopicState;
  epochSecret: Uint8Array;
  headRoot: Uint8Array;
  headSize: number;
}

function topicKeys(users: BenchUser[]): { topicKey: TopicKey; secret: TopicKeySecret }[] {
  return users.map((u) => {
    const secret = { signatureSeed: random(32), encryptionSecret: random(32) };
    return { topicKey: signTopicKey(crypto, u.identitySeed, u.user, secret), secret };
  });
}

interface OpFigure {
  /** Client CPU (the admin building and encoding the update), ms. */
  clientMs: number;
  /** What each member does with it: applyUpdate (verify + state transition), ms. */
  applyMs: number;
  /** The encoded update and the JSON request body. */
  updateBytes: number;
  bodyBytes: number;
  /** Members after the update (key shares in it when it starts an epoch). */
  members: number;
  shares: number;
  /** Request time as the client sees it over loopback (server verify + apply + commit). */
  serverMs: number;
}

async function createTopic(s: BenchServer, users: BenchUser[], history: History = 'shared'): Promise<{ topic: Topic; fig: OpFigure }> {
  const keys = topicKeys(users); // claimed from the server in a real client: not timed
  const id = newTopicId(random);
  const c0 = cpuMs();
  const built = buildCreate(crypto, random, {
    topicId: id,
    host: s.name,
    history,
    members: keys.map((k, i) => ({ role: (i === 0 ? 'admin' : 'participant') as Role, topicKey: k.topicKey })),
    signer: 0,
    signatureSeed: keys[0]!.secret.signatureSeed,
  });
  const bytes = encodeTopicUpdate(built.update);
  const body = { update: toBase64url(bytes) };
  const clientMs = cpuMs() - c0;
  const r = await request(s.url, 'POST', '/v1/topics', users[0]!.token, body);
  const a0 = cpuMs();
  const state = applyUpdate(crypto, null, built.update);
  const applyMs = cpuMs() - a0;
  const cp = decodeCheckpoint(fromBase64url(r.json.checkpoint));
  const topic: Topic = { id, idB64: toBase64url(id), users, secrets: keys.map((k) => k.secret), state, epochSecret: built.epochSecret, headRoot: cp.root, headSize: cp.size };
  return { topic, fig: { clientMs, applyMs, updateBytes: bytes.length, bodyBytes: r.bytes, members: users.length, shares: built.update.shares.length, serverMs: r.ms } };
}

async function change(s: BenchServer, t: Topic, action: ChangeAction, forceNewEpoch = false, cr: CryptoProvider = crypto): Promise<OpFigure> {
  const c0 = cpuMs();
  const built = buildUpdate(cr, random, t.state, { signer: 0, signatureSeed: t.secrets[0]!.signatureSeed, epochSecret: t.epochSecret, action, forceNewEpoch });
  const bytes = encodeTopicUpdate(built.update);
  const body = { update: toBase64url(bytes) };
  const clientMs = cpuMs() - c0;
  const r = await request(s.url, 'POST', `/v1/topics/${t.idB64}/updates`, t.users[0]!.token, body);
  const a0 = cpuMs();
  t.state = applyUpdate(crypto, t.state, built.update);
  const applyMs = cpuMs() - a0;
  t.epochSecret = built.epochSecret;
  return { clientMs, applyMs, updateBytes: bytes.length, bodyBytes: r.bytes, members: t.state.members.size, shares: built.update.shares.length, serverMs: r.ms };
}

function senderOf(t: Topic, member: number): Sender {
  return {
    token: t.users[member]!.token,
    topicId: t.idB64,
    epochSecret: toBase64url(t.epochSecret),
    memberId: member,
    signatureSeed: toBase64url(t.secrets[member]!.signatureSeed),
    headRoot: toBase64url(t.headRoot),
    headSize: t.headSize,
  };
}

/** Many topics, `members` users each from `pool` (users are shared between topics), `parallel` creates at a time. */
async function makeTopics(s: BenchServer, pool: BenchUser[], topics: number, members: number, offset = 0): Promise<Topic[]> {
  const out: Topic[] = new Array(topics);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < topics) {
        const j = next++;
        const users = Array.from({ length: members }, (_, i) => pool[(offset + j * members + i) % pool.length]!);
        out[j] = (await createTopic(s, users)).topic;
        if (topics >= 1000 && (j + 1) % 1000 === 0) log(` ${j + 1}`);
      }
    }),
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// Listeners: device WebSockets held by two generator processes

class Listeners {
  constructor(readonly gens: Generator[]) {}
  async listen(url: string, tokens: string[]): Promise<{ connected: number; failed: number; firstError?: string; ms: number }> {
    const parts = this.gens.map((_, g) => tokens.filter((_, i) => i % this.gens.length === g));
    const rs = await Promise.all(this.gens.map((g, i) => g.ask({ cmd: 'listen', url, tokens: parts[i], parallel: 64 })));
    return { connected: rs.reduce((a, r) => a + r.connected, 0), failed: rs.reduce((a, r) => a + r.failed, 0), firstError: rs.find((r) => r.firstError)?.firstError, ms: Math.max(...rs.map((r) => r.ms)) };
  }
  async frames(): Promise<number> {
    const rs = await Promise.all(this.gens.map((g) => g.ask({ cmd: 'frames' })));
    return rs.reduce((a, r) => a + r.frames, 0);
  }
  async cpuMs(): Promise<number> {
    const rs = await Promise.all(this.gens.map((g) => g.ask({ cmd: 'frames' })));
    return rs.reduce((a, r) => a + r.cpuMs, 0);
  }
  /** Merged per-nonce arrivals (and clears the frames). */
  async arrivals(): Promise<Map<string, { n: number; first: number; last: number }>> {
    const rs = await Promise.all(this.gens.map((g) => g.ask({ cmd: 'arrivals', clear: true })));
    const out = new Map<string, { n: number; first: number; last: number }>();
    for (const r of rs)
      for (const [k, a] of Object.entries(r.arrivals as Record<string, { n: number; first: number; last: number }>)) {
        const o = out.get(k);
        if (o === undefined) out.set(k, { ...a });
        else {
          o.n += a.n;
          o.first = Math.min(o.first, a.first);
          o.last = Math.max(o.last, a.last);
        }
      }
    return out;
  }
  /** Forgets the frames received so far, unparsed. */
  async drop(): Promise<void> {
    await Promise.all(this.gens.map((g) => g.ask({ cmd: 'drop' })));
  }
  async close(): Promise<void> {
    await Promise.all(this.gens.map((g) => g.ask({ cmd: 'unlisten' })));
  }
}

// ---------------------------------------------------------------------------------------------

export async function scaleSections(o: { quick: boolean; verifyPerSec: number; profileFlags: string[]; sections?: string[] }) {
  const C = scaleConfig(o.quick);
  const want = (n: string) => o.sections === undefined || o.sections.includes(n);
  const RATES = Object.fromEntries(
    ['register', 'authChallenge', 'write', 'admin', 'claimTopicKeyPerClaimer', 'claimTopicKeyPerTarget', 'claimPrekey'].map((n) => [n, [1_000_000_000, 60_000] as const]),
  );
  const server = await startBenchServer({ rates: RATES, nodeFlags: o.profileFlags });
  const pid = server.proc.pid!;
  const gens = [new Generator(), new Generator(), new Generator()];
  const L = new Listeners(gens.slice(0, 2));
  const poster = gens[2]!;
  const res: Record<string, any> = { fdLimit: { server: fdLimit(pid), runner: fdLimit('self') } };
  try {
    // ---- 6. connections and memory
    log(`\n[6] connections and memory: server ${server.url} (pid ${pid}); open files: ${res.fdLimit.server}\n`);
    await sleep(2_000);
    const idleRss = rss(pid);
    // Sections 9–11 need at most 1,000 users (the scaling curve's 10 × 100): a run of only those registers fewer.
    const poolSize = want('6') || want('7') || want('8') ? C.pool : Math.min(C.pool, 1_000);
    log(`  idle server RSS after start: ${fmt(idleRss / MB)} MB\n  registering ${(poolSize + 16).toLocaleString('en-US')} users (4 requests each; progress in thousands) …`);
    const pool = await registerPool(server, poolSize + 16, 'p');
    const spare = pool.splice(poolSize);
    // RSS moves with the JavaScript heap (GC), by megabytes: each figure is the median of
    // several samples after a settling time, and the baseline is taken both before the
    // connections open and after they close.
    const settle = async (label: string) => {
      await sleep(o.quick ? 3_000 : 5_000);
      const xs: number[] = [];
      for (let i = 0; i < (o.quick ? 3 : 5); i++) {
        xs.push(rss(pid));
        await sleep(1_000);
      }
      log(` ${label} ${fmt(median(xs) / MB)} MB;`);
      return { median: median(xs), samples: xs };
    };
    if (want('6')) try {
    const before = await settle('RSS');
    log(`\n  opening ${C.connections.toLocaleString('en-US')} WebSockets from 2 processes … `);
    const lc = await L.listen(server.url, pool.slice(0, C.connections).map((u) => u.token));
    log(`${lc.connected} connected${lc.failed ? `, ${lc.failed} failed (${lc.firstError})` : ''} in ${(lc.ms / 1000).toFixed(1)} s;`);
    const connected = await settle('RSS with them open');
    await L.close();
    const after = await settle('after closing them');
    // Against the RSS before they opened: an upper bound (the heap also grows for other
    // reasons, and freed memory is not returned at once: RSS after closing is usually higher).
    const perConn = (connected.median - before.median) / Math.max(1, lc.connected);
    log(` → ${fmt(perConn / 1024)} KB per connection (open − before)\n`);
    res.memory = {
      idleRssBytes: idleRss,
      users: poolSize + 16,
      rssWithUsersBytes: before.median,
      connections: lc.connected,
      failed: lc.failed,
      connectSeconds: lc.ms / 1000,
      rssConnectedBytes: connected.median,
      rssAfterCloseBytes: after.median,
      perConnectionBytes: perConn,
      perConnectionVsMeanOfBeforeAndAfterBytes: (connected.median - (before.median + after.median) / 2) / Math.max(1, lc.connected),
      samples: { before: before.samples, connected: connected.samples, after: after.samples },
    };

    } catch (e) {
      // One section failing does not lose the others' figures.
      log(`\n  section 6 failed: ${String((e as Error)?.stack ?? e)}\n`);
      (res.failed ??= {})['6'] = String(e);
    }

    // Section 8 runs before section 7: the runner then does not yet hold section 7's 10,000
    // topics, whose garbage collection made every crypto call of the 1,000-member operations
    // 1.6–2× slower in a complete run (docs/performance.md, "The complete full run").
    if (want('8')) try {
    // ---- 8. topic operations vs size
    log(`\n[8] topic operations vs size (${C.opSizes.join(', ')} members; ${C.opReps} reps)\n`);
    res.topicOps = [];
    // Each operation on a connection of its own (fresh-fetch.ts): a 10,000-member build blocks
    // the runner for seconds, long enough for the server to close the pooled keep-alive sockets
    // it would otherwise write the update on (EPIPE / "fetch failed", twice in a row).
    const { withFreshConnections } = await import('./fresh-fetch.ts');
    await withFreshConnections(async () => {
    for (const n of C.opSizes) {
      if (n > pool.length) {
        log(`  ${n}: skipped (only ${pool.length} users)\n`);
        continue;
      }
      const { topic: t, fig: create } = await createTopic(server, pool.slice(0, n));
      const ops: Record<string, OpFigure[]> = { rekey: [], remove: [], addShared: [], addBackwardSecrecy: [] };
      let sp = 0;
      const removeOne = async () => {
        const ids = [...t.state.members.keys()].filter((id) => id !== 0);
        return change(server, t, { type: 'remove', memberId: Math.max(...ids) });
      };
      const add = async (force: boolean) => {
        const u = spare[sp++ % spare.length]!;
        const k = topicKeys([u])[0]!;
        t.users.push(u);
        t.secrets.push(k.secret);
        return change(server, t, { type: 'add', role: 'participant', topicKey: k.topicKey }, force);
      };
      for (let r = 0; r < C.opReps; r++) {
        ops.rekey!.push(await change(server, t, { type: 'rekey' }));
        ops.remove!.push(await removeOne());
        ops.addShared!.push(await add(false));
        ops.remove!.push(await removeOne());
        ops.addBackwardSecrecy!.push(await add(true));
      }
      let rekeySplit: Record<string, { msTotal: number; calls: number }> | undefined;
      if (n === 1000 || n === C.opSizes.at(-1)) {
        // One more re-key with every crypto call timed: where the client's time goes.
        const { provider, spent } = timedCrypto();
        const w0 = performance.now();
        await change(server, t, { type: 'rekey' }, false, provider);
        const total = performance.now() - w0;
        rekeySplit = Object.fromEntries([...spent].sort((x, y) => y[1].ms - x[1].ms).map(([k, v]) => [k, { msTotal: v.ms, calls: v.calls }]));
        log(`  ${String(n).padStart(6)} re-key, crypto calls timed: ${Object.entries(rekeySplit)
          .slice(0, 5)
          .map(([k, v]) => `${k} ${v.msTotal.toFixed(0)} ms (${v.calls})`)
          .join(', ')} of ${total.toFixed(0)} ms including the request\n`);
      }
      const med = (xs: OpFigure[]): OpFigure => ({
        clientMs: median(xs.map((x) => x.clientMs)),
        applyMs: median(xs.map((x) => x.applyMs)),
        updateBytes: median(xs.map((x) => x.updateBytes)),
        bodyBytes: median(xs.map((x) => x.bodyBytes)),
        members: median(xs.map((x) => x.members)),
        shares: median(xs.map((x) => x.shares)),
        serverMs: median(xs.map((x) => x.serverMs)),
      });
      const row = { members: n, rekeySplit, create, rekey: med(ops.rekey!), remove: med(ops.remove!), addShared: med(ops.addShared!), addBackwardSecrecy: med(ops.addBackwardSecrecy!) };
      res.topicOps.push(row);
      const show = (name: string, f: OpFigure) =>
        log(`  ${String(n).padStart(6)} ${name.padEnd(22)} client ${f.clientMs.toFixed(1).padStart(7)} ms, apply ${f.applyMs.toFixed(1).padStart(7)} ms, ${fmt(f.updateBytes).padStart(9)} B (${(f.updateBytes / Math.max(1, f.members)).toFixed(0)} B/member), server ${f.serverMs.toFixed(1)} ms\n`);
      show('create', create);
      show('re-key', row.rekey);
      show('remove', row.remove);
      show('add (shared history)', row.addShared);
      show('add (backward secrecy)', row.addBackwardSecrecy);
      // Deleted (with its log and events) once measured: otherwise every pool device connected
      // in section 7 would first be sent this topic's history, 10,000-member updates of
      // 820 KB each, and the listeners ran out of heap holding them.
      await request(server.url, 'DELETE', `/v1/admin/topics/${t.idB64}`, server.adminToken);
    }
    });

    } catch (e) {
      // One section failing does not lose the others' figures.
      log(`\n  section 8 failed: ${String((e as Error)?.stack ?? e)}\n`);
      (res.failed ??= {})['8'] = String(e);
    }


    if (want('7')) try {
    // ---- 7. fan-out
    log(`\n[7] fan-out: one message to a topic of ${C.fanoutMembers} connected member devices\n  creating the topic … `);
    const { topic: big, fig: bigFig } = await createTopic(server, pool.slice(0, C.fanoutMembers));
    log(`${(bigFig.serverMs / 1000).toFixed(2)} s; connecting its ${C.fanoutMembers} devices … `);
    const fl = await L.listen(server.url, big.users.map((u) => u.token));
    log(`${fl.connected} connected\n`);
    const text = utf8('lorem ipsum '.repeat(86).slice(0, 1024));
    const prk = epochPrk(crypto, big.id, 0, big.epochSecret);
    const fan: { ackMs: number; firstMs: number; lastMs: number; delivered: number }[] = [];
    const cpuL0 = await L.cpuMs();
    const cpuS0 = procCpuMs(pid);
    const stF = statNow();
    let fanWall = 0;
    const loop0 = performance.now();
    for (let k = 0; k < C.fanoutMessages; k++) {
      const m = sealMessage(crypto, random, { topicId: big.id, epoch: 0, epochPrk: prk, sender: 0, signatureSeed: big.secrets[0]!.signatureSeed, headSize: big.headSize, headRoot: big.headRoot, content: { type: 'text', body: text } });
      const body = { message: toBase64url(encodeMessage(m)) };
      const base = await L.frames();
      const w0 = performance.now();
      const t0 = now();
      const r = await request(server.url, 'POST', `/v1/topics/${big.idB64}/messages`, big.users[0]!.token, body);
      const ackMs = now() - t0;
      const until = performance.now() + 15_000;
      while ((await L.frames()) - base < fl.connected && performance.now() < until) await sleep(20);
      fanWall += performance.now() - w0;
      const a = (await L.arrivals()).get(toHex(m.nonce));
      const f = { ackMs, firstMs: (a?.first ?? NaN) - t0, lastMs: (a?.last ?? NaN) - t0, delivered: a?.n ?? 0 };
      if (k > 0) fan.push(f); // the first message warms the delivery path up: not counted
      log(`  message ${k + 1}/${C.fanoutMessages}${k === 0 ? ' (warm-up)' : ''}: acknowledged ${f.ackMs.toFixed(1)} ms, first device ${f.firstMs.toFixed(1)} ms, last ${f.lastMs.toFixed(1)} ms (${f.delivered}/${fl.connected})\n`);
      void r;
      await sleep(200);
    }
    const loopWall = performance.now() - loop0;
    const listenerCores = ((await L.cpuMs()) - cpuL0) / loopWall; // over the whole loop: parsing the arrivals counts too
    const fanBusy = busySince(stF);
    const serverCoresFan = (procCpuMs(pid) - cpuS0) / fanWall;
    await L.close();
    res.fanout = {
      members: C.fanoutMembers,
      connected: fl.connected,
      messages: fan.length,
      lastP50Ms: median(fan.map((f) => f.lastMs)),
      lastMaxMs: Math.max(...fan.map((f) => f.lastMs)),
      firstP50Ms: median(fan.map((f) => f.firstMs)),
      ackP50Ms: median(fan.map((f) => f.ackMs)),
      allDelivered: fan.every((f) => f.delivered === fl.connected),
      serverCpuPerMessageMs: (serverCoresFan * fanWall) / C.fanoutMessages,
      listenerCores,
      machineBusy: fanBusy,
      runs: fan,
      createServerMs: bigFig.serverMs,
    };
    log(`  median: last device ${res.fanout.lastP50Ms.toFixed(1)} ms (max ${res.fanout.lastMaxMs.toFixed(1)}), first ${res.fanout.firstP50Ms.toFixed(1)} ms, ack ${res.fanout.ackP50Ms.toFixed(1)} ms; server ${res.fanout.serverCpuPerMessageMs.toFixed(1)} ms CPU per message; listeners ${listenerCores.toFixed(2)} cores; machine ${(fanBusy * 100).toFixed(0)} % busy\n`);

    log(`\n  ${C.manyTopics.toLocaleString('en-US')} topics × 10 members (users shared between topics): creating …`);
    const tm0 = performance.now();
    const many = await makeTopics(server, pool, C.manyTopics, 10);
    log(` ${((performance.now() - tm0) / 1000).toFixed(1)} s; connecting ${Math.min(pool.length, C.manyTopics * 10)} devices … `);
    const ml = await L.listen(server.url, pool.slice(0, Math.min(pool.length, C.manyTopics * 10)).map((u) => u.token));
    log(`${ml.connected} connected\n`);
    await poster.ask({ cmd: 'prepare', senders: many.map((t) => senderOf(t, 0)), count: Math.round((C.manyRate * C.manyMs) / 1000), bodyBytes: 1024 });
    log(`  posting ${C.manyRate}/s for ${C.manyMs / 1000} s (open loop, each to a different topic) … `);
    const ol = await poster.ask({ cmd: 'openloop', url: server.url, rate: C.manyRate, durationMs: C.manyMs });
    const expected = ol.acked * 10;
    const until = performance.now() + 10_000;
    while ((await L.frames()) < expected && performance.now() < until) await sleep(100);
    const arr = await L.arrivals();
    const lastLat: number[] = [];
    let deliveries = 0;
    for (const [nonce, due] of Object.entries(ol.due as Record<string, number>)) {
      const a = arr.get(nonce);
      if (a === undefined) continue;
      deliveries += a.n;
      lastLat.push(a.last - due);
    }
    await L.close();
    res.manyTopics = { topics: C.manyTopics, members: 10, devices: ml.connected, rate: C.manyRate, seconds: C.manyMs / 1000, sent: ol.sent, acked: ol.acked, errors: ol.errors, deliveries, expectedDeliveries: expected, lastP50Ms: pct(lastLat, 50), lastP99Ms: pct(lastLat, 99), lastMaxMs: Math.max(...lastLat) };
    log(`${ol.acked}/${ol.sent} acknowledged, ${deliveries}/${expected} deliveries; post → last member p50 ${res.manyTopics.lastP50Ms.toFixed(1)} ms, p99 ${res.manyTopics.lastP99Ms.toFixed(1)} ms, max ${res.manyTopics.lastMaxMs.toFixed(1)} ms\n`);

    } catch (e) {
      // One section failing does not lose the others' figures.
      log(`\n  section 7 failed: ${String((e as Error)?.stack ?? e)}\n`);
      (res.failed ??= {})['7'] = String(e);
    }

    if (want('9')) try {
    // ---- 9. client full verify
    log(`\n[9] client full verify: a new device syncing a topic of ${C.verifyEntries.toLocaleString('en-US')} entries\n`);
    const { topic: vt } = await createTopic(server, [pool[0]!, pool[1]!]);
    poster.onProgress = (p) => Math.round(p.seconds) % 5 === 0 && log(`  filling the topic: ${p.acked.toLocaleString('en-US')} posted (${p.perSec}/s)\n`);
    const fill = await poster.ask({ cmd: 'load', url: server.url, senders: [senderOf(vt, 0)], rate: 0, concurrency: 32, durationMs: 3_600_000, bodyBytes: 1024, count: C.verifyEntries - 1 });
    poster.onProgress = undefined;
    log(`  filled: ${fill.acked} messages in ${(fill.elapsedMs / 1000).toFixed(1)} s${Object.keys(fill.errors).length ? `, errors ${JSON.stringify(fill.errors)}` : ''}\n`);
    const serverKey = fromBase64url((await (await fetch(`${server.url}/.well-known/rendezvous`)).json()).publicKey);
    const f0 = performance.now();
    const entries: Uint8Array[] = [];
    let checkpoint: any;
    for (;;) {
      const r = await request(server.url, 'GET', `/v1/topics/${vt.idB64}/entries?from=${entries.length}&limit=1000`, pool[1]!.token);
      for (const e of r.json.entries as { index: number; entry: string }[]) entries.push(fromBase64url(e.entry));
      checkpoint = r.json.checkpoint;
      if (r.json.entries.length === 0 || entries.length >= decodeCheckpoint(fromBase64url(checkpoint)).size) break;
    }
    const fetchMs = performance.now() - f0;
    log(`  fetched ${entries.length} entries in ${(fetchMs / 1000).toFixed(1)} s (${fmt((entries.length * 1000) / fetchMs)}/s, pages of up to 1,000)\n`);
    const cp = decodeCheckpoint(fromBase64url(checkpoint));
    const myKeyId = topicKeyId({ signatureKey: crypto.ed25519PublicKey(vt.secrets[1]!.signatureSeed) });
    // What a Node client does (RendezvousClient.syncTopic with a signatureVerifier): pages of 500
    // entries, each through TopicMirror.acceptPage, with the message signatures verified ahead by
    // a worker pool; every other check runs on this thread. Inline = no verifier (one thread).
    const { VerifyPool } = await import('@rendezvous/protocol/crypto/node-verify-pool');
    const vpool = new VerifyPool();
    const PAGE = 500;
    const pages: { index: number; entry: Uint8Array }[][] = [];
    for (let i = 0; i < entries.length; i += PAGE) pages.push(entries.slice(i, i + PAGE).map((entry, k) => ({ index: i + k, entry })));
    const verifyOnce = async (cr: CryptoProvider, verifier: InstanceType<typeof VerifyPool> | null) => {
      const pins = new Map<string, string>();
      const mirror = new TopicMirror(
        cr,
        vt.id,
        serverKey,
        {
          check(user, key) {
            const k = toHex(key);
            const p = pins.get(user);
            if (p === undefined) pins.set(user, k);
            else if (p !== k) throw new Error(`identity changed: ${user}`);
          },
        },
        (id) => (id === myKeyId ? vt.secrets[1] : undefined),
      );
      // This thread's own CPU time (Linux: /proc/self/task/<pid>/stat, in clock ticks of 10 ms).
      const mainCpuMs = () => {
        try {
          const st = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
          const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
          return (Number(f[11]) + Number(f[12])) * 10;
        } catch {
          return NaN;
        }
      };
      const m0 = mainCpuMs();
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (const page of pages) await mirror.acceptPage(page, verifier);
      mirror.checkCheckpoint(cp);
      const ms = performance.now() - t0;
      const c = process.cpuUsage(c0);
      const mainMs = mainCpuMs() - m0;
      if (mirror.alarms.length > 0) throw new Error(`verify: ${mirror.alarms.length} alarms, first ${mirror.alarms[0]!.code}`);
      if (mirror.size !== entries.length || mirror.checkpoint?.size !== cp.size) throw new Error('verify: the mirror did not reach the checkpoint');
      return { ms, cpuMs: (c.user + c.system) / 1000, mainMs };
    };
    try {
      // Warm-up: the workers start (tsx, the protocol modules) before the first timed run.
      await vpool.verifyBatch([]);
      await verifyOnce(crypto, vpool);
      log(`  parallel verification: ${vpool.threads} worker threads (${(await import('node:os')).availableParallelism()} cores available), pages of ${PAGE}\n`);
      const vruns: number[] = [];
      const iruns: number[] = [];
      const cpuUs: number[] = [];
      const mainUs: number[] = [];
      /** CPU time over wall time: how many cores the process got (a shared machine gives each session a share). */
      const coresUsed: { pool: number; inline: number; inlineCpuUs: number }[] = [];
      for (let r = 0; r < C.verifyReps; r++) {
        // Interleaved, so both see the same machine load.
        const p = await verifyOnce(crypto, vpool);
        vruns.push((entries.length * 1000) / p.ms);
        cpuUs.push((p.cpuMs * 1000) / entries.length);
        mainUs.push((p.mainMs * 1000) / entries.length);
        const q = await verifyOnce(crypto, null);
        iruns.push((entries.length * 1000) / q.ms);
        const cores = (x: { ms: number; cpuMs: number }) => x.cpuMs / x.ms;
        coresUsed.push({ pool: cores(p), inline: cores(q), inlineCpuUs: (q.cpuMs * 1000) / entries.length });
        log(`  verify run ${r + 1}/${C.verifyReps}: ${fmt(vruns.at(-1)!)} entries/s with ${vpool.threads} workers (${(p.ms / 1000).toFixed(2)} s; CPU per entry: all threads ${fmt(cpuUs.at(-1)!)} µs, main thread ${fmt(mainUs.at(-1)!)} µs), ${fmt(iruns.at(-1)!)} entries/s inline (CPU ${fmt(coresUsed.at(-1)!.inlineCpuUs)} µs per entry); cores used: ${coresUsed.at(-1)!.pool.toFixed(2)} with the pool, ${coresUsed.at(-1)!.inline.toFixed(2)} inline\n`);
      }
      // One more run inline with every crypto call timed: where each entry's time goes.
      const { provider: timed, spent } = timedCrypto();
      const timedMs = (await verifyOnce(timed, null)).ms;
      const per = (ms: number) => (ms * 1000) / entries.length;
      const split = Object.fromEntries([...spent].sort((a, b) => b[1].ms - a[1].ms).map(([k, v]) => [k, { usPerEntry: per(v.ms), callsPerEntry: v.calls / entries.length }]));
      const cryptoUs = [...spent.values()].reduce((a, v) => a + v.ms, 0);
      // And one with the pool, timed the same way: what is left on the main thread.
      const { provider: timedP, spent: spentP } = timedCrypto();
      const timedPMs = (await verifyOnce(timedP, vpool)).ms;
      const splitP = Object.fromEntries([...spentP].sort((a, b) => b[1].ms - a[1].ms).map(([k, v]) => [k, { usPerEntry: per(v.ms), callsPerEntry: v.calls / entries.length }]));
      const cryptoPUs = [...spentP.values()].reduce((a, v) => a + v.ms, 0);
      res.verify = {
        entries: entries.length,
        fillSeconds: fill.elapsedMs / 1000,
        fetchSeconds: fetchMs / 1000,
        fetchEntriesPerSec: (entries.length * 1000) / fetchMs,
        workerThreads: vpool.threads,
        pageSize: PAGE,
        entriesPerSec: median(vruns),
        runs: vruns,
        usPerEntry: 1e6 / median(vruns),
        cpuUsPerEntryAllThreads: median(cpuUs),
        cpuUsPerEntryMainThread: median(mainUs),
        ratioToVerify: median(vruns) / o.verifyPerSec,
        inline: { entriesPerSec: median(iruns), runs: iruns, usPerEntry: 1e6 / median(iruns), cpuUsPerEntry: median(coresUsed.map((c) => c.inlineCpuUs)) },
        coresUsed,
        /** The instrumented runs (timer calls add a little): µs per entry by crypto function, and the rest. */
        split: { totalUsPerEntry: per(timedMs), restUsPerEntry: per(timedMs - cryptoUs), byFunction: split },
        splitWithPool: { totalUsPerEntry: per(timedPMs), restUsPerEntry: per(timedPMs - cryptoPUs), byFunction: splitP },
      };
      const show = (x: typeof split) =>
        Object.entries(x)
          .slice(0, 4)
          .map(([k, v]) => `${k} ${v.usPerEntry.toFixed(1)} (${v.callsPerEntry.toFixed(2)} calls)`)
          .join(', ');
      log(`  median ${fmt(res.verify.entriesPerSec)} entries/s with ${vpool.threads} workers (${res.verify.usPerEntry.toFixed(1)} µs per entry, ${res.verify.ratioToVerify.toFixed(2)}× one core's verify rate); inline ${fmt(res.verify.inline.entriesPerSec)} entries/s (${res.verify.inline.usPerEntry.toFixed(1)} µs per entry)\n`);
      log(`  instrumented inline run, µs per entry: ${show(split)}, rest ${res.verify.split.restUsPerEntry.toFixed(1)} (total ${res.verify.split.totalUsPerEntry.toFixed(1)})\n`);
      log(`  instrumented pool run, main thread µs per entry: ${show(splitP)}, rest ${res.verify.splitWithPool.restUsPerEntry.toFixed(1)} (total ${res.verify.splitWithPool.totalUsPerEntry.toFixed(1)})\n`);
    } finally {
      await vpool.close();
    }
    entries.length = 0;

    } catch (e) {
      // One section failing does not lose the others' figures.
      log(`\n  section 9 failed: ${String((e as Error)?.stack ?? e)}\n`);
      (res.failed ??= {})['9'] = String(e);
    }

    if (want('10')) try {
    // ---- 10. scaling curve
    log(`\n[10] scaling curve: ingest (closed loop, 64 in flight, ${C.scaleIngestMs / 1000} s) and latency at ${C.scaleRate}/s (post → last connected member device, ${C.scaleLatencyMs / 1000} s)\n`);
    const configs: { topics: number; members: number; devices: 'one' | 'all' }[] = [
      { topics: 1, members: 2, devices: 'one' },
      { topics: 10, members: 2, devices: 'one' },
      { topics: 100, members: 2, devices: 'one' },
      { topics: 10, members: 10, devices: 'all' },
      { topics: 10, members: 100, devices: 'all' },
    ];
    res.scaling = [];
    let off = 0;
    for (const c of configs) {
      const ts = await makeTopics(server, pool, c.topics, c.members, off);
      off += c.topics * c.members;
      const devTokens = [...new Set(ts.flatMap((t) => (c.devices === 'one' ? [t.users[1]!] : t.users).map((u) => u.token)))];
      const lsn = await L.listen(server.url, devTokens);
      const senders = ts.flatMap((t) => t.users.map((_, i) => senderOf(t, i)));
      await poster.ask({ cmd: 'prepare', senders, count: o.quick ? 2_000 : 6_000, bodyBytes: 1024 });
      await poster.ask({ cmd: 'ingest', url: server.url, concurrency: 64, durationMs: 500 }); // warm-up
      await poster.ask({ cmd: 'prepare', senders, count: o.quick ? 5_000 : 15_000, bodyBytes: 1024 });
      const cpu0 = procCpuMs(pid);
      const lcpu0 = await L.cpuMs();
      const st0 = statNow();
      const ing = await poster.ask({ cmd: 'ingest', url: server.url, concurrency: 64, durationMs: C.scaleIngestMs });
      const cores = (procCpuMs(pid) - cpu0) / ing.elapsedMs;
      const machineBusy = busySince(st0);
      const listenerCores = ((await L.cpuMs()) - lcpu0) / ing.elapsedMs;
      // Let the delivery backlog of the ingest window drain (frames stop arriving) before the latency run.
      const drain0 = performance.now();
      for (let prev = -1, cur = await L.frames(); cur !== prev && performance.now() - drain0 < 60_000; ) {
        await sleep(500);
        prev = cur;
        cur = await L.frames();
      }
      const drainSeconds = (performance.now() - drain0) / 1000;
      await L.drop(); // forget the ingest deliveries
      await poster.ask({ cmd: 'prepare', senders: ts.map((t) => senderOf(t, 0)), count: Math.round((C.scaleRate * C.scaleLatencyMs) / 1000), bodyBytes: 1024 });
      const lat = await poster.ask({ cmd: 'openloop', url: server.url, rate: C.scaleRate, durationMs: C.scaleLatencyMs });
      const expectPer = c.devices === 'one' ? 1 : c.members;
      const until2 = performance.now() + 10_000;
      while ((await L.frames()) < lat.acked && performance.now() < until2) await sleep(100);
      await sleep(300);
      const a = await L.arrivals();
      const lats: number[] = [];
      let complete = 0;
      for (const [nonce, due] of Object.entries(lat.due as Record<string, number>)) {
        const x = a.get(nonce);
        if (x === undefined) continue;
        if (x.n >= expectPer) complete++;
        lats.push(x.last - due);
      }
      await L.close();
      const row = { ...c, connectedDevices: lsn.connected, msgsPerSec: (ing.acked * 1000) / ing.elapsedMs, errors: ing.errors, serverCores: cores, listenerCores, generatorCores: ing.cpuMs / ing.elapsedMs, machineBusy, drainSeconds, latencyRate: C.scaleRate, p50Ms: pct(lats, 50), p99Ms: pct(lats, 99), maxMs: Math.max(...lats), complete, sent: lat.sent };
      res.scaling.push(row);
      log(`  ${String(c.topics).padStart(3)} topics × ${String(c.members).padStart(3)} members, ${String(lsn.connected).padStart(4)} devices: ingest ${fmt(row.msgsPerSec).padStart(5)} msgs/s (CPU: server ${cores.toFixed(2)}, listeners ${listenerCores.toFixed(2)}, poster ${row.generatorCores.toFixed(2)} cores; machine ${(machineBusy * 100).toFixed(0)} % busy; backlog drained in ${drainSeconds.toFixed(1)} s${ing.errors ? `, ${ing.errors} errors: ${ing.firstError}` : ''}); latency p50 ${row.p50Ms.toFixed(1)} ms, p99 ${row.p99Ms.toFixed(1)} ms, max ${row.maxMs.toFixed(1)} ms (${complete}/${lat.sent} reached every device)\n`);
    }

    } catch (e) {
      // One section failing does not lose the others' figures.
      log(`\n  section 10 failed: ${String((e as Error)?.stack ?? e)}\n`);
      (res.failed ??= {})['10'] = String(e);
    }

    if (want('11')) try {
    // ---- 11. soak
    // BENCH_SOAK_SECONDS: a longer (or shorter) soak than the mode's, e.g. for memory diagnostics (bench/soak-memory.ts).
    if (process.env.BENCH_SOAK_SECONDS) C.soakMs = Number(process.env.BENCH_SOAK_SECONDS) * 1000;
    log(`\n[11] soak: server RSS under ingest load (closed loop, 64 in flight, 8 topics × 4 members) for ${C.soakMs / 1000} s, sampled every ${C.soakSampleMs / 1000} s\n`);
    const st = await makeTopics(server, pool, 8, 4, 0);
    // A warm-up first (quick 5 s, full 15 s): on a cold server compiled code, V8's heap sizing,
    // SQLite's page cache and the allocator's free lists grow once; the soak measures what
    // follows. The RSS before the warm-up is reported too.
    const soakWarmupMs = o.quick ? 5_000 : 15_000;
    const rssColdBytes = rss(pid);
    await poster.ask({ cmd: 'load', url: server.url, senders: st.flatMap((t) => t.users.map((_, i) => senderOf(t, i))), rate: 0, concurrency: 64, durationMs: soakWarmupMs, bodyBytes: 1024 });
    const soakSamples: { s: number; rssBytes: number }[] = [];
    const s0 = performance.now();
    soakSamples.push({ s: 0, rssBytes: rss(pid) });
    const timer = setInterval(() => {
      const s = (performance.now() - s0) / 1000;
      const r = rss(pid);
      soakSamples.push({ s, rssBytes: r });
      log(`\r  ${s.toFixed(0).padStart(4)} s: RSS ${fmt(r / MB)} MB   `);
    }, C.soakSampleMs);
    const soakCpu0 = procCpuMs(pid);
    const soak = await poster.ask({ cmd: 'load', url: server.url, senders: st.flatMap((t) => t.users.map((_, i) => senderOf(t, i))), rate: 0, concurrency: 64, durationMs: C.soakMs, bodyBytes: 1024 });
    clearInterval(timer);
    soakSamples.push({ s: (performance.now() - s0) / 1000, rssBytes: rss(pid) });
    const slope = (xs: { s: number; rssBytes: number }[]) => {
      const n = xs.length;
      const mx = xs.reduce((a, x) => a + x.s, 0) / n;
      const my = xs.reduce((a, x) => a + x.rssBytes, 0) / n;
      const num = xs.reduce((a, x) => a + (x.s - mx) * (x.rssBytes - my), 0);
      const den = xs.reduce((a, x) => a + (x.s - mx) ** 2, 0);
      return ((num / Math.max(den, 1e-9)) * 60) / MB; // MB per minute
    };
    const half = soakSamples.filter((x) => x.s >= (C.soakMs / 1000) * 0.5);
    res.soak = {
      seconds: soak.elapsedMs / 1000,
      acked: soak.acked,
      msgsPerSec: (soak.acked * 1000) / soak.elapsedMs,
      errors: soak.errors,
      serverCores: (procCpuMs(pid) - soakCpu0) / soak.elapsedMs,
      rssBeforeWarmupBytes: rssColdBytes,
      warmupSeconds: soakWarmupMs / 1000,
      rssStartBytes: soakSamples[0]!.rssBytes,
      rssEndBytes: soakSamples.at(-1)!.rssBytes,
      rssMaxBytes: Math.max(...soakSamples.map((x) => x.rssBytes)),
      slopeMBPerMin: slope(soakSamples),
      slopeSecondHalfMBPerMin: slope(half),
      samples: soakSamples,
    };
    log(`\r  ${fmt(res.soak.msgsPerSec)} msgs/s for ${res.soak.seconds.toFixed(0)} s; RSS ${fmt(rssColdBytes / MB)} before a ${soakWarmupMs / 1000} s warm-up, then ${fmt(res.soak.rssStartBytes / MB)} → ${fmt(res.soak.rssEndBytes / MB)} MB (max ${fmt(res.soak.rssMaxBytes / MB)}); slope ${res.soak.slopeMBPerMin.toFixed(2)} MB/min overall, ${res.soak.slopeSecondHalfMBPerMin.toFixed(2)} MB/min in the second half\n`);
    } catch (e) {
      // One section failing does not lose the others' figures.
      log(`\n  section 11 failed: ${String((e as Error)?.stack ?? e)}\n`);
      (res.failed ??= {})['11'] = String(e);
    }

    res.webSocketIngest = 'not measured: the server accepts no posts over /v1/ws (packages/server/src/http/ws.ts reads client frames only for authentication)';
    return res;
  } finally {
    await Promise.all(gens.map((g) => g.close()));
    await server.stop();
  }
}

/** CPU time (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function procCpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

/** The node crypto provider with every call timed (a timer pair per call adds a little). */
function timedCrypto(): { provider: CryptoProvider; spent: Map<string, { ms: number; calls: number }> } {
  const spent = new Map<string, { ms: number; calls: number }>();
  const provider = Object.fromEntries(
    Object.entries(crypto).map(([k, v]) => [
      k,
      typeof v === 'function'
        ? (...args: unknown[]) => {
            const t0 = performance.now();
            try {
              return (v as (...a: unknown[]) => unknown).apply(crypto, args);
            } finally {
              const s = spent.get(k) ?? { ms: 0, calls: 0 };
              s.ms += performance.now() - t0;
              s.calls++;
              spent.set(k, s);
            }
          }
        : v,
    ]),
  ) as unknown as CryptoProvider;
  return { provider, spent };
}

/** Summary rows for run.ts's table: [figure, value, ratio, target]. */
export function scaleRows(r: Record<string, any>, verifyPerSec: number): [string, string, string, string][] {
  const rows: [string, string, string, string][] = [];
  const m = r.memory;
  if (m) {
    rows.push(['idle server RSS (after start)', `${fmt(m.idleRssBytes / MB)} MB`, `${(m.idleRssBytes / (100 * MB)).toFixed(2)}× target`, `≤ 100 MB: ${m.idleRssBytes <= 100 * MB ? 'met' : 'MISSED'}`]);
    rows.push([`server RSS per idle WebSocket (${m.connections.toLocaleString('en-US')} open)`, `${fmt(m.perConnectionBytes / 1024)} KB`, `${(m.perConnectionBytes / (30 * 1024)).toFixed(2)}× target; RSS ${fmt(m.rssWithUsersBytes / MB)} → ${fmt(m.rssConnectedBytes / MB)} MB`, m.connections < 5_000 && Math.abs(m.perConnectionBytes) < 10 * 1024 ? `≤ 30 KB: below the RSS noise at ${m.connections} connections (full mode opens 10,000)` : `≤ 30 KB: ${m.perConnectionBytes <= 30 * 1024 ? 'met' : 'MISSED'}`]);
  }
  const f = r.fanout;
  if (f) rows.push([`fan-out, ${f.connected} devices (post → last device)`, `p50 ${f.lastP50Ms.toFixed(1)} / max ${f.lastMaxMs.toFixed(1)} ms`, `${(f.lastP50Ms / 100).toFixed(2)}× target; first device ${f.firstP50Ms.toFixed(1)} ms`, `≤ 100 ms: ${f.lastMaxMs <= 100 ? 'met' : f.lastP50Ms <= 100 ? 'p50 met, max MISSED' : 'MISSED'}`]);
  const mt = r.manyTopics;
  if (mt) rows.push([`${mt.topics.toLocaleString('en-US')} topics × 10 members at ${mt.rate}/s (post → last member)`, `p50 ${mt.lastP50Ms.toFixed(1)} / p99 ${mt.lastP99Ms.toFixed(1)} ms`, `${mt.deliveries}/${mt.expectedDeliveries} deliveries`, '(no numeric target)']);
  for (const t of r.topicOps ?? []) {
    const rk = t.remove;
    rows.push([`remove (re-key) at ${t.members.toLocaleString('en-US')} members`, `${rk.clientMs.toFixed(1)} ms client, ${fmt(rk.updateBytes)} B`, `${(rk.updateBytes / rk.members).toFixed(0)} B/member; server ${rk.serverMs.toFixed(1)} ms`, t.members === 1000 ? `≤ 150 ms and ≤ 100 B/member: ${rk.clientMs <= 150 && rk.updateBytes / rk.members <= 100 ? 'met' : 'MISSED'}` : '']);
  }
  const v = r.verify;
  if (v) rows.push([`client full verify, ${v.entries.toLocaleString('en-US')} entries`, `${fmt(v.entriesPerSec)} entries/s`, `${v.ratioToVerify.toFixed(2)}× one core's verify rate (${fmt(verifyPerSec)}/s)`, `≥ 10,000/s: ${v.entriesPerSec >= 10_000 ? 'met' : 'MISSED'}`]);
  for (const s of r.scaling ?? [])
    rows.push([`scaling: ${s.topics} topics × ${s.members} members, ${s.connectedDevices} devices`, `${fmt(s.msgsPerSec)} msgs/s; p99 ${s.p99Ms.toFixed(1)} ms at ${s.latencyRate}/s`, `${(s.msgsPerSec / verifyPerSec).toFixed(3)}× verify`, '']);
  const so = r.soak;
  if (so) rows.push([`soak ${so.seconds.toFixed(0)} s at ${fmt(so.msgsPerSec)} msgs/s`, `RSS ${fmt(so.rssStartBytes / MB)} → ${fmt(so.rssEndBytes / MB)} MB`, `slope ${so.slopeMBPerMin.toFixed(2)} MB/min (second half ${so.slopeSecondHalfMBPerMin.toFixed(2)})`, 'flat']);
  rows.push(['ingest over WebSocket', 'not measured', 'the server accepts no posts over /v1/ws', '']);
  return rows;
}
