/**
 * Real server processes for end-to-end tests: `rendezvous serve` from the CLI on a loopback
 * port, with its own data directory, an explicit admin token and (through the config file)
 * raised rate limits, since one test script plays many users from one address.
 *
 * Every process started here is remembered; `cleanup()` (call it from an `after` hook) kills
 * the ones still running, by their own handle, and removes the temp directories made here. A
 * process-exit hook does the same if a test run dies before its hooks run.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

export const BIN = resolve(import.meta.dirname, '..', '..', 'cli', 'bin', 'rendezvous.mjs');

/** Rate limits for test processes: generous, so tests measure the server, not the throttle. */
export const TEST_RATES = {
  register: [1_000, 60_000],
  authChallenge: [1_000, 60_000],
  write: [100_000, 60_000],
} as const;

export interface StartOptions {
  /** Admin token (RENDEZVOUS_ADMIN_TOKEN); default: one random token per test file. */
  adminToken?: string;
  /** pino level; default `info` (the level an operator runs). */
  logLevel?: string;
  /** Rate overrides written to the config file; default TEST_RATES. */
  rates?: Record<string, readonly [number, number]>;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Server name (`--name`), e.g. `alpha.test`; default `localhost:PORT`. */
  name?: string;
  /** Extra config-file keys (e.g. `federation`), written beside `rates`. */
  config?: Record<string, unknown>;
  /** The command's script, default BIN (the sources through tsx); e.g. the built dist/rendezvous.mjs. */
  bin?: string;
}

export interface ServerProcess {
  url: string;
  port: number;
  /** The server name (`localhost:PORT` unless `StartOptions.name`): fixed for the life of the data directory. */
  name: string;
  dataDir: string;
  adminToken: string;
  proc: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (null if killed by a signal) when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (graceful shutdown), then waits for the exit; SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL: no cleanup of any kind; resolves once the process is gone. */
  kill9(): Promise<void>;
}

/** One random admin token per test file (≥ 16 characters, as the server requires). */
export const DEFAULT_ADMIN_TOKEN = `e2e-admin-${randomBytes(18).toString('base64url')}`;

const running = new Set<ChildProcess>();
const tempDirs: string[] = [];

function killRemaining(): void {
  for (const p of running) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}
process.once('exit', killRemaining);

/** A fresh temp directory, removed by `cleanup()`. */
export function tempDir(prefix = 'rendezvous-proc-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

/** Kills every process started here that is still running, and removes the temp directories. */
export async function cleanup(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const p of running) {
    if (p.exitCode === null && p.signalCode === null) {
      waits.push(new Promise((r) => p.once('exit', r)));
      p.kill('SIGKILL');
    }
  }
  await Promise.all(waits);
  running.clear();
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

/** The environment of a child: ours without any RENDEZVOUS_* setting, plus `extra`. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RENDEZVOUS_')) env[k] = v;
  return { ...env, ...extra };
}

/**
 * Starts `rendezvous serve --data dataDir` on `port` (a free one if not given) and resolves
 * once the process has printed its "listening on" line and answers /.well-known/rendezvous.
 */
export async function start(dataDir: string, port?: number, opts: StartOptions = {}): Promise<ServerProcess> {
  port ??= await freePort();
  const name = opts.name ?? `localhost:${port}`;
  const adminToken = opts.adminToken ?? DEFAULT_ADMIN_TOKEN;
  const configDir = tempDir('rendezvous-config-');
  const config = join(configDir, 'config.json');
  writeFileSync(config, JSON.stringify({ ...opts.config, rates: opts.rates ?? TEST_RATES }));
  const args = [opts.bin ?? BIN, 'serve', '--data', dataDir, '--port', String(port), '--name', name, '--config', config];
  args.push('--log-level', opts.logLevel ?? 'info');
  const proc = spawn(process.execPath, args, {
    env: childEnv({ RENDEZVOUS_ADMIN_TOKEN: adminToken, ...opts.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  const chunks: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      r({ code, signal });
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const listening = new Promise<void>((res, rej) => {
    const onData = (d: Buffer) => {
      chunks.push(String(d));
      if (chunks.join('').includes(`listening on ${url}`)) res();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => chunks.push(String(d)));
    void exited.then(({ code, signal }) => rej(new Error(`server exited (${code ?? signal}) before listening:\n${chunks.join('')}`)));
  });
  const timeout = new Promise<never>((_, rej) => {
    const t = setTimeout(() => rej(new Error(`server did not start within 20 s:\n${chunks.join('')}`)), 20_000);
    void exited.then(() => clearTimeout(t));
    void listening.then(
      () => clearTimeout(t),
      () => clearTimeout(t),
    );
  });
  try {
    await Promise.race([listening, timeout]);
    const r = await fetch(`${url}/.well-known/rendezvous`);
    const body = (await r.json()) as { server?: string };
    if (r.status !== 200 || body.server !== name) throw new Error(`well-known answered ${r.status} ${JSON.stringify(body)}`);
  } catch (e) {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
    throw e;
  }
  return {
    url,
    port,
    name,
    dataDir,
    adminToken,
    proc,
    output: () => chunks.join(''),
    exited,
    async stop(graceMs = 15_000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        const r = await exited;
        clearTimeout(t);
        return r;
      }
      return exited;
    },
    async kill9() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Runs the CLI (`rendezvous ARGS…`) to completion; never throws on a non-zero exit. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [BIN, ...args], { env: childEnv(env), timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1;
      res({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** `rendezvous admin pin NAME --server URL`, as an operator runs it; returns the printed pin. */
export async function adminPin(s: Pick<ServerProcess, 'url' | 'adminToken' | 'name'>, name: string): Promise<{ user: string; pin: string }> {
  const r = await runCli(['admin', 'pin', name, '--server', s.url], { RENDEZVOUS_ADMIN_TOKEN: s.adminToken });
  if (r.code !== 0) throw new Error(`admin pin ${name} failed (${r.code}): ${r.stdout}${r.stderr}`);
  // "pin for alice@localhost:PORT: XXXX-XXXX-XXXX\n  expires …, 3 tries, id …"
  const m = /^pin for (\S+): ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})$/m.exec(r.stdout);
  if (m === null) throw new Error(`admin pin printed no pin:\n${r.stdout}`);
  return { user: m[1]!, pin: m[2]! };
}
