/**
 * Devices and live watching from the command line, as people use them: `device link` on one
 * machine (printing a code and waiting), `device join <code>` on another, `device list` and
 * `device remove`, and `watch` printing messages as they arrive. Real processes throughout.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { BIN, adminPin, cleanup, runCli, start, tempDir, type ServerProcess } from '../../server/test/process.ts';

let server: ServerProcess;
const profile = (name: string) => join(tempDir(`rendezvous-dev-${name}-`), 'profile');
const children: ChildProcess[] = [];

/** A long-running `rendezvous` process whose stdout lines can be awaited one by one. */
function spawnCli(args: string[]) {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RENDEZVOUS_')) env[k] = v;
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const lines: string[] = [];
  let waiters: (() => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    exited,
    stderr: () => stderr,
    async line(pred: (l: string) => boolean, timeoutMs = 20_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = lines.find(pred);
        if (hit !== undefined) return hit;
        if (child.exitCode !== null) assert.fail(`process exited (${child.exitCode}) first:\n${lines.join('\n')}\n${stderr}`);
        if (Date.now() > deadline) assert.fail(`timed out; stdout:\n${lines.join('\n')}\nstderr:\n${stderr}`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, 200);
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
    },
  };
}

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `rendezvous ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(async () => {
  server = await start(tempDir('rendezvous-dev-server-'));
});
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await cleanup();
});

describe('devices on the command line', () => {
  it('links a second device with a code, which then reads the history; list and remove it', async () => {
    const laptop = profile('laptop');
    const phone = profile('phone');
    const { pin } = await adminPin(server, 'xena');
    await ok(['register', 'xena', '--server', server.url, '--pin', pin, '--profile', laptop]);
    await ok(['topic', 'create', 'journal', '--profile', laptop]);
    await ok(['send', 'journal', 'written on the laptop', '--profile', laptop]);

    const link = spawnCli(['device', 'link', '--json', '--profile', laptop]);
    const { code, deviceId } = JSON.parse(await link.line((l) => l.startsWith('{"code"')));
    assert.match(code, /^rvz1-/);
    // Waiting does not hold the profile: the same person can use it meanwhile.
    await ok(['whoami', '--profile', laptop]);
    const joined = JSON.parse(await ok(['device', 'join', code, '--json', '--profile', phone]));
    assert.equal(joined.deviceId, deviceId, 'the device the code names');
    assert.equal(await link.exited, 0, `device link finished: ${link.stderr()}`);

    const read = JSON.parse(await ok(['read', 'journal', '--json', '--profile', phone]));
    assert.deepEqual(
      read.messages.filter((m: { type: string }) => m.type === 'text').map((m: { text: string }) => m.text),
      ['written on the laptop'],
    );
    await ok(['send', 'journal', 'written on the phone', '--profile', phone]);
    const devices = JSON.parse(await ok(['device', 'list', '--json', '--profile', laptop])).devices;
    assert.equal(devices.length, 2);
    await ok(['device', 'remove', deviceId, '--profile', laptop]);
    const after = await runCli(['send', 'journal', 'still here?', '--profile', phone]);
    assert.equal(after.code, 1, 'the removed device can do nothing');
    assert.equal(JSON.parse(await ok(['device', 'list', '--json', '--profile', laptop])).devices.length, 1);
  });

  it('watch prints messages as they arrive', async () => {
    const a = profile('yara');
    const b = profile('zeke');
    for (const [name, dir] of [
      ['yara', a],
      ['zeke', b],
    ] as const) {
      const { pin } = await adminPin(server, name);
      await ok(['register', name, '--server', server.url, '--pin', pin, '--profile', dir]);
    }
    const id = JSON.parse(await ok(['topic', 'create', 'live', '--member', 'zeke', '--json', '--profile', a])).id;
    await ok(['sync', '--profile', b]);
    const watch = spawnCli(['watch', '--json', '--profile', b]);
    // What is in the topic when watching begins is history: wait until the watcher is live.
    const deadline = Date.now() + 20_000;
    while (!watch.stderr().includes('watching') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(watch.stderr(), /watching/, 'the watcher says when it is live');
    await ok(['send', id, 'are you there?', '--profile', a]);
    const line = JSON.parse(await watch.line((l) => l.includes('are you there?')));
    assert.equal(line.sender.split('@')[0], 'yara');
    assert.equal(line.topic, id);
    // The watcher does not hold the profile: the same person replies from another terminal.
    await ok(['send', id, 'yes, here', '--profile', b]);
    await watch.line((l) => l.includes('yes, here'));
    watch.child.kill('SIGINT');
    assert.equal(await watch.exited, 0, 'watch stops cleanly on Ctrl-C');
  });
});
