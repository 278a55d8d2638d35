/**
 * A real `rendezvous serve` process for benchmarks, built as `npm start` runs it (dist/): its own temp data directory, a config file
 * raising the rate limits (one load generator plays many users from one address), log level
 * `info` as an operator runs it, and optionally V8 flags such as `--cpu-prof` (which
 * NODE_OPTIONS does not accept).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort } from '../test/process.ts';

const ROOT = resolve(import.meta.dirname, '..', '..', '..');
/** What `npm start` runs: the command built as plain JavaScript (scripts/build.mjs), built once per suite run. */
const BIN = join(ROOT, 'dist', 'rendezvous.mjs');
let built = false;
function buildOnce(): void {
  if (built) return;
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs')], { stdio: 'inherit' });
  built = true;
}

export interface BenchServer {
  url: string;
  name: string;
  adminToken: string;
  proc: ChildProcess;
  dataDir: string;
  /** SIGTERM (graceful: a CPU profile is written on exit), SIGKILL after 15 s; removes the temp directory. */
  stop(): Promise<void>;
}

export async function startBenchServer(opts: {
  rates: Record<string, readonly [number, number]>;
  nodeFlags?: string[];
  logLevel?: string;
  /** Config `verifyThreads` (unset: the server's default). */
  verifyThreads?: number;
  /** Config `writerThread` (unset: the server's default). */
  writerThread?: boolean;
}): Promise<BenchServer> {
  buildOnce();
  const dir = mkdtempSync(join(tmpdir(), 'rendezvous-bench-server-'));
  const dataDir = join(dir, 'data');
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      rates: opts.rates,
      ...(opts.verifyThreads === undefined ? {} : { verifyThreads: opts.verifyThreads }),
      ...(opts.writerThread === undefined ? {} : { writerThread: opts.writerThread }),
    }),
  );
  const port = await freePort();
  const name = `localhost:${port}`;
  const adminToken = `bench-admin-${randomBytes(18).toString('base64url')}`;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RENDEZVOUS_') && k !== 'NODE_OPTIONS') env[k] = v;
  env.RENDEZVOUS_ADMIN_TOKEN = adminToken;
  const args = [...(opts.nodeFlags ?? []), BIN, 'serve', '--data', dataDir, '--port', String(port), '--name', name, '--config', config, '--log-level', opts.logLevel ?? 'info'];
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const url = `http://127.0.0.1:${port}`;
  let out = '';
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const kill = () => proc.exitCode === null && proc.signalCode === null && proc.kill('SIGKILL');
  process.once('exit', kill);
  await new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`server did not start within 20 s:\n${out}`)), 20_000);
    proc.stdout!.on('data', (d: Buffer) => {
      if (out.length < 100_000) out += String(d);
      if (out.includes(`listening on ${url}`)) {
        clearTimeout(t);
        res();
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (out += String(d)));
    void exited.then(() => {
      clearTimeout(t);
      rej(new Error(`server exited before listening:\n${out}`));
    });
  });
  // Keep draining its output (info-level lines) so the pipe never blocks the server.
  proc.stdout!.removeAllListeners('data');
  proc.stdout!.resume();
  // A server that dies mid-run says so, with the end of its stderr, instead of leaving only the
  // runner's "fetch failed".
  let stopping = false;
  let errTail = '';
  proc.stderr!.removeAllListeners('data');
  proc.stderr!.on('data', (d: Buffer) => (errTail = (errTail + String(d)).slice(-20_000)));
  proc.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`\n  the server (pid ${proc.pid}) exited during the run: code ${code}, signal ${signal}; the end of its stderr:\n${errTail}\n`);
  });
  return {
    url,
    name,
    adminToken,
    proc,
    dataDir,
    async stop() {
      stopping = true;
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(kill, 15_000);
        await exited;
        clearTimeout(t);
      }
      process.off('exit', kill);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
