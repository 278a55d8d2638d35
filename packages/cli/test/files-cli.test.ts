/**
 * `rendezvous send --file` and `rendezvous fetch-file` as a person runs them: spawned processes
 * with real profiles against a real server process. A file goes from alice to bob byte for byte;
 * an existing file is never replaced without --force; a blob the server tampered with leaves no
 * file behind, not even a partial one.
 */
import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminPin, cleanup, runCli, start, tempDir, type ServerProcess } from '../../server/test/process.ts';

let server: ServerProcess;
let topic: string;
const profiles = new Map<string, string>();

function as(name: string, ...args: string[]) {
  return runCli([...args, '--profile', profiles.get(name)!]);
}

async function ok(name: string, ...args: string[]): Promise<string> {
  const r = await as(name, ...args);
  assert.equal(r.code, 0, `rendezvous ${args.join(' ')} as ${name} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(async () => {
  server = await start(tempDir('rendezvous-files-server-'));
  for (const name of ['alice', 'bob']) {
    profiles.set(name, join(tempDir('rendezvous-files-profile-'), 'profile'));
    const { pin } = await adminPin(server, name);
    await ok(name, 'register', name, '--server', server.url, '--pin', pin);
  }
  topic = JSON.parse(await ok('alice', 'topic', 'create', 'papers', '--member', 'bob', '--json')).id;
});
after(cleanup);

describe('files on the command line', () => {
  const work = tempDir('rendezvous-files-work-');
  const data = randomBytes(3 * 64 * 1024 + 12_345);
  let index: number;
  let blobId: string;

  it('alice sends a file; bob sees it in read and fetches it byte for byte', async () => {
    const src = join(work, 'report.pdf');
    writeFileSync(src, data);
    const sent = JSON.parse(await ok('alice', 'send', 'papers', '--file', src, '--json'));
    assert.equal(sent.name, 'report.pdf');
    assert.equal(sent.mediaType, 'application/pdf');
    assert.equal(sent.size, data.length);
    index = sent.index;
    blobId = sent.blobId;

    const read = JSON.parse(await ok('bob', 'read', 'papers', '--json'));
    const msg = read.messages.find((m: { index: number }) => m.index === index);
    assert.deepEqual(msg.file, { name: 'report.pdf', mediaType: 'application/pdf', size: data.length });
    assert.match(await ok('bob', 'read', 'papers'), new RegExp(`file "report.pdf", 204 KiB, application/pdf: rendezvous fetch-file ${topic} ${index}`));

    const out = join(work, 'from-alice.pdf');
    const got = JSON.parse(await ok('bob', 'fetch-file', 'papers', String(index), '--out', out, '--json'));
    assert.equal(got.path, out);
    assert.equal(got.sender, `alice@${server.name}`);
    assert.ok(readFileSync(out).equals(data), 'bob saved exactly the bytes alice sent');

    // --out a directory: the sender's name, inside it.
    const dir = tempDir('rendezvous-files-dir-');
    await ok('bob', 'fetch-file', topic, String(index), '--out', dir);
    assert.ok(readFileSync(join(dir, 'report.pdf')).equals(data), 'saved under the file name in the directory');
  });

  it('never replaces an existing file without --force', async () => {
    const out = join(work, 'taken.pdf');
    writeFileSync(out, 'mine');
    const refused = await as('bob', 'fetch-file', 'papers', String(index), '--out', out);
    assert.equal(refused.code, 1, 'refused');
    assert.match(refused.stderr, /exists: choose another --out, or --force/);
    assert.equal(readFileSync(out, 'utf8'), 'mine', 'the existing file is untouched');
    await ok('bob', 'fetch-file', 'papers', String(index), '--out', out, '--force');
    assert.ok(readFileSync(out).equals(data), '--force replaces it');
  });

  it('leaves no file at all when the server tampered with the blob', async () => {
    const path = join(server.dataDir, 'blobs', Buffer.from(topic, 'base64url').toString('hex'), Buffer.from(blobId, 'base64url').toString('hex'));
    const good = readFileSync(path);
    const bad = Buffer.from(good);
    bad[bad.length - 5]! ^= 0x80; // in the last chunk: everything before it decrypts fine
    writeFileSync(path, bad);
    const dir = tempDir('rendezvous-files-tampered-');
    try {
      const r = await as('bob', 'fetch-file', 'papers', String(index), '--out', join(dir, 'x.pdf'));
      assert.equal(r.code, 1, 'refused');
      assert.match(r.stderr, /file\.bad_blob/);
      assert.deepEqual(readdirSync(dir), [], 'no output file and no partial temporary file');
    } finally {
      writeFileSync(path, good);
    }
  });

  it('explains a missing source file and a bad entry', async () => {
    const missing = await as('alice', 'send', 'papers', '--file', join(work, 'nope.bin'));
    assert.equal(missing.code, 1, 'refused');
    assert.match(missing.stderr, /cannot read .*nope\.bin: ENOENT/);
    const notFile = await as('bob', 'fetch-file', 'papers', '0', '--out', join(work, 'zero'));
    assert.equal(notFile.code, 1, 'refused');
    assert.match(notFile.stderr, /request\.bad_field: index: expected a file message/);
    assert.equal(existsSync(join(work, 'zero')), false);
    const usage = await as('bob', 'fetch-file', 'papers');
    assert.equal(usage.code, 2, 'usage error');
  });
});
