/**
 * End to end against a real server process started by the CLI (`rendezvous serve`) on a
 * loopback port, with a real SQLite file: first-start secrets, the admin CLI, a scripted client
 * registering and adding a device, graceful shutdown, restart with the same data, backup.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ScriptedUser, call, expectError, overHttp } from './helpers.ts';
import { openSqliteStore } from '../src/storage/sqlite.ts';
import { BIN, freePort } from './process.ts';

const run = promisify(execFile);

interface Proc {
  child: ChildProcess;
  out: string[];
  url: string;
  exited: Promise<number | null>;
}

async function serve(dir: string, port: number, env: Record<string, string> = {}): Promise<Proc> {
  const child = spawn(process.execPath, [BIN, 'serve', '--data', dir, '--port', String(port), '--name', `localhost:${port}`, '--log-level', 'warn'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: string[] = [];
  child.stdout!.on('data', (d) => out.push(String(d)));
  child.stderr!.on('data', (d) => out.push(String(d)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (out.join('').includes('listening on')) return { child, out, url, exited };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`server did not start:\n${out.join('')}`);
}

async function cli(args: string[], env: Record<string, string>): Promise<{ stdout: string; code: number }> {
  try {
    const { stdout } = await run(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    return { stdout, code: 0 };
  } catch (e: any) {
    return { stdout: String(e.stdout) + String(e.stderr), code: e.code };
  }
}

const dirs: string[] = [];
const procs: Proc[] = [];
after(() => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('a real server process', () => {
  it('prints a one-time admin token, serves the admin CLI and a scripted client, and restarts with its data', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rendezvous-e2e-'));
    dirs.push(dir);
    const port = await freePort();
    const p = await serve(dir, port);
    procs.push(p);
    const m = /admin token \(shown once; only its hash is stored\): (\S+)/.exec(p.out.join(''));
    assert.ok(m, `first start prints the admin token:\n${p.out.join('')}`);
    const adminToken = m[1]!;
    assert.equal(statSync(join(dir, 'server.key')).mode & 0o777, 0o600);

    const env = { RENDEZVOUS_ADMIN_TOKEN: adminToken, RENDEZVOUS_SERVER: p.url };
    const pin = await cli(['admin', 'pin', 'alice', '--expires', '1d', '--tries', '2', '--json'], env);
    assert.equal(pin.code, 0, pin.stdout);
    const issued = JSON.parse(pin.stdout);
    assert.equal(issued.user, `alice@localhost:${port}`);

    const t = overHttp(p.url);
    const alice = new ScriptedUser(issued.user, t, Date.now);
    assert.equal((await alice.register(issued.pin)).status, 201);
    assert.equal((await alice.addDevice()).status, 201);
    const token = await alice.login(1);
    assert.equal((await call(t, 'GET', '/v1/devices', undefined, token)).body.devices.length, 2);

    const users = await cli(['admin', 'users', '--json'], env);
    assert.deepEqual(JSON.parse(users.stdout).users.map((u: any) => u.user), [issued.user]);
    const wrong = await cli(['admin', 'users'], { ...env, RENDEZVOUS_ADMIN_TOKEN: 'not-the-token-at-all' });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stdout, /auth\.invalid_token/);

    const backup = join(dir, 'backup.db');
    const b = await cli(['admin', 'backup', backup, '--data', dir], env);
    assert.equal(b.code, 0, b.stdout);
    const copy = await openSqliteStore(backup);
    assert.ok(await copy.getUser(issued.user), 'backup taken while serving holds the user');
    await copy.close();

    p.child.kill('SIGTERM');
    assert.equal(await p.exited, 0, 'graceful shutdown exits 0');

    const p2 = await serve(dir, port);
    procs.push(p2);
    assert.equal(p2.out.join('').includes('admin token'), false, 'the token is shown on first start only');
    const again = await call(overHttp(p2.url), 'GET', '/v1/devices', undefined, token);
    assert.equal(again.status, 200, 'sessions survive a restart');
    expectError(await alice.register(issued.pin), 409, 'user.exists');
    p2.child.kill('SIGTERM');
    assert.equal(await p2.exited, 0);
  });

  it('takes the admin token from RENDEZVOUS_ADMIN_TOKEN and refuses a data dir of another server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rendezvous-e2e-'));
    dirs.push(dir);
    const port = await freePort();
    const token = 'an-explicit-admin-token-for-automation';
    const p = await serve(dir, port, { RENDEZVOUS_ADMIN_TOKEN: token });
    procs.push(p);
    assert.equal(p.out.join('').includes('admin token'), false);
    const st = await cli(['admin', 'status', '--json'], { RENDEZVOUS_ADMIN_TOKEN: token, RENDEZVOUS_SERVER: p.url });
    assert.equal(JSON.parse(st.stdout).server, `localhost:${port}`);
    p.child.kill('SIGTERM');
    await p.exited;
    const other = await cli(['serve', '--data', dir, '--port', String(port), '--name', 'other.example'], {});
    assert.notEqual(other.code, 0);
    assert.match(other.stdout, /belongs to server/);
    assert.ok(existsSync(join(dir, 'rendezvous.db')), 'the database is still there');
  });
});
