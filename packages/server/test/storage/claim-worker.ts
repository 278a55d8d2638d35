/**
 * A separate process for the multi-process claim test in sqlite.test.ts: opens the shared file,
 * says "ready", waits for "go <start time>" on stdin (so every process starts claiming at once), claims
 * until the pools are empty and prints what it got as one JSON line.
 */
import { createInterface } from 'node:readline';
import { toHex } from '@rendezvous/protocol';
import { openSqliteStore } from '../../src/storage/sqlite.ts';

const [path, deviceId, user] = process.argv.slice(2);
if (path === undefined || deviceId === undefined || user === undefined) throw new Error('usage: claim-worker PATH DEVICE USER');

const store = await openSqliteStore(path);
process.stdout.write('ready\n');
const lines = createInterface({ input: process.stdin });
let startAt = 0;
for await (const line of lines) {
  const m = /^go (\d+)$/.exec(line);
  if (m !== null) {
    startAt = Number(m[1]);
    break;
  }
}
lines.close();
// Stdin reaches the processes at different moments; a shared wall-clock start (spun on for the
// last stretch) lines them up to within a millisecond so their claims really overlap.
while (Date.now() < startAt - 5) await new Promise((r) => setTimeout(r, 1));
while (Date.now() < startAt);

const prekeys: string[] = [];
const topicKeys: string[] = [];
for (;;) {
  // Alternate the two pools so both see contention at the same time.
  const p = await store.claimPrekey(deviceId);
  const t = await store.claimTopicKey(user);
  if (p !== null) prekeys.push(toHex(p));
  if (t !== null) topicKeys.push(toHex(t));
  if (p === null && t === null) break;
  // SQLite's lock is not fair: a process that retakes it at once starves the others, asleep in
  // their busy handlers. Real requests arrive spaced out; so do these.
  await new Promise((r) => setTimeout(r, Math.random() < 0.5 ? 0 : 1));
}
await store.close();
process.stdout.write(JSON.stringify({ prekeys, topicKeys }) + '\n');
