/**
 * A second process for profile-store.test.ts (run with `node --import tsx`):
 *
 *   hold DIR    take the profile lock, print "locked", hold it until stdin closes, then release
 *   try DIR     try the lock once; print {"ok":true} or {"code":…,"message":…}
 *   write DIR N save numbered documents of N bytes in a loop, forever (to be killed mid-write);
 *               prints "writing" after the first save
 */
import { FileProfileStore } from '../src/node/file-store.ts';
import { RendezvousError } from '@rendezvous/protocol';

const [mode, dir, arg] = process.argv.slice(2);
if (dir === undefined) throw new Error('usage: profile-lock-child.ts hold|try|write DIR [N]');
// No waiting: the test asserts what a conflicting process is told.
const store = new FileProfileStore(dir, { lockWaitMs: 0 });

/** Document i: u32 i, then n - 4 bytes all equal to i & 0xff (so a torn write is visible). */
function doc(i: number, n: number): Uint8Array {
  const d = new Uint8Array(n).fill(i & 0xff);
  new DataView(d.buffer).setUint32(0, i);
  return d;
}

if (mode === 'hold') {
  await store.withLock(async () => {
    process.stdout.write('locked\n');
    await new Promise<void>((resolve) => {
      process.stdin.on('end', resolve);
      process.stdin.on('close', resolve);
      process.stdin.resume();
    });
  });
  process.stdout.write('released\n');
} else if (mode === 'try') {
  try {
    await store.withLock(async () => undefined);
    process.stdout.write(JSON.stringify({ ok: true }) + '\n');
  } catch (e) {
    if (!(e instanceof RendezvousError)) throw e;
    process.stdout.write(JSON.stringify({ code: e.code, message: e.message }) + '\n');
  }
} else if (mode === 'write') {
  const n = Number(arg ?? 1 << 20);
  for (let i = 1; ; i++) {
    await store.save(doc(i, n));
    if (i === 1) process.stdout.write('writing\n');
  }
} else {
  throw new Error(`unknown mode ${mode}`);
}
