import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { toHex } from '@rendezvous/protocol';
import { storeConformance } from './conformance.ts';
import { EVENTS_SINCE_SQL, openSqliteStore, type SqliteStore } from '../../src/storage/sqlite.ts';
import { openThreadedSqliteStore } from '../../src/storage/sqlite-threaded.ts';
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from '../../src/storage/migrations.ts';
import type { Store } from '../../src/storage/store.ts';

/** A fresh temp directory with the stores opened in it, all closed and deleted by cleanup. */
async function tempDb<S extends Store = SqliteStore>(opener: (path: string) => Promise<S> = openSqliteStore as unknown as (path: string) => Promise<S>) {
  const dir = await mkdtemp(join(tmpdir(), 'rendezvous-sqlite-'));
  const file = join(dir, 'rendezvous.db');
  const opened: Store[] = [];
  const open = async (path = file): Promise<S> => {
    const s = await opener(path);
    opened.push(s);
    return s;
  };
  const cleanup = async () => {
    for (const s of opened) await s.close();
    await rm(dir, { recursive: true, force: true });
  };
  return { dir, file, open, cleanup };
}

storeConformance('sqlite', async () => {
  const t = await tempDb();
  return { store: await t.open(), reopen: () => t.open(), openBackup: (path) => t.open(path), cleanup: t.cleanup };
});

storeConformance('sqlite, writes on a writer thread', async () => {
  const t = await tempDb((path) => openThreadedSqliteStore(path));
  return { store: await t.open(), reopen: () => t.open(), openBackup: (path) => t.open(path), cleanup: t.cleanup };
});

storeConformance('sqlite :memory:', async () => {
  const s = await openSqliteStore(':memory:');
  return { store: s, cleanup: () => s.close() };
});

const alice = 'alice@alpha.example';

async function withUser(s: Store, devices: string[]): Promise<void> {
  const pinHash = new Uint8Array(32).fill(1);
  await s.createPin({ id: 'p', user: alice, pinHash, expiresAt: Date.now() + 60_000, triesLeft: 3, createdAt: 0 });
  const [first, ...rest] = devices;
  const dev = (deviceId: string) => ({ deviceId, user: alice, cert: new Uint8Array([1]), createdAt: 0 });
  assert.equal(await s.registerWithPin({ user: alice, identityKey: new Uint8Array([2]), createdAt: 0 }, dev(first!), pinHash, Date.now()), 'ok');
  for (const d of rest) await s.addDevice(dev(d));
}

const keyBytes = (tag: number, i: number) => new Uint8Array([tag, i >> 8, i & 0xff]);

describe('SQLite backend', () => {
  it('runs with WAL, synchronous=FULL, foreign keys and a busy timeout', async () => {
    const t = await tempDb();
    try {
      const s = await t.open();
      assert.deepEqual(s.settings(), {
        journalMode: 'wal',
        synchronous: 2,
        foreignKeys: true,
        busyTimeoutMs: 5000,
        schemaVersion: LATEST_SCHEMA_VERSION,
      });
    } finally {
      await t.cleanup();
    }
  });

  it('two connections to one file claiming concurrently never hand out a key twice', async () => {
    const t = await tempDb();
    try {
      const a = await t.open();
      const b = await t.open();
      await withUser(a, ['d1']);
      const prekeys = Array.from({ length: 100 }, (_, i) => ({ prekey: keyBytes(1, i), encoded: keyBytes(2, i) }));
      const topicKeys = Array.from({ length: 100 }, (_, i) => ({ keyId: `k${i}`, encoded: keyBytes(3, i) }));
      // Added through one connection, claimed through both: each must see the other's commits.
      assert.equal(await a.addPrekeys('d1', prekeys, 1000), 100);
      assert.equal(await b.addTopicKeys(alice, topicKeys, 1000), 100);

      const claims = await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
          const s = i % 2 === 0 ? a : b;
          return Promise.all([s.claimPrekey('d1'), s.claimTopicKey(alice)]);
        }),
      );
      const got = (k: 0 | 1) => claims.map((c) => c[k]).filter((x): x is Uint8Array => x !== null).map(toHex).sort();
      assert.deepEqual(got(0), prekeys.map((p) => toHex(p.encoded)).sort());
      assert.deepEqual(got(1), topicKeys.map((p) => toHex(p.encoded)).sort());
      assert.equal(await a.countPrekeys('d1'), 0);
      assert.equal(await b.countTopicKeys(alice), 0);
    } finally {
      await t.cleanup();
    }
  });

  it('separate processes claiming at once never hand out a key twice (BEGIN IMMEDIATE + busy timeout)', async () => {
    const t = await tempDb();
    try {
      const s = await t.open();
      await withUser(s, ['d1']);
      const n = 300;
      await s.addPrekeys('d1', Array.from({ length: n }, (_, i) => ({ prekey: keyBytes(1, i), encoded: keyBytes(2, i) })), 1000);
      await s.addTopicKeys(alice, Array.from({ length: n }, (_, i) => ({ keyId: `k${i}`, encoded: keyBytes(3, i) })), 1000);

      const worker = resolve(import.meta.dirname, 'claim-worker.ts');
      const procs = Array.from({ length: 3 }, () => {
        const p = spawn(process.execPath, ['--import', 'tsx', worker, t.file, 'd1', alice], { stdio: ['pipe', 'pipe', 'inherit'] });
        let out = '';
        const ready = new Promise<void>((res) => {
          p.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (out.startsWith('ready\n')) res();
          });
        });
        const done = new Promise<{ prekeys: string[]; topicKeys: string[] }>((res, rej) => {
          p.on('error', rej);
          p.on('exit', (code) => (code === 0 ? res(JSON.parse(out.slice('ready\n'.length))) : rej(new Error(`worker exited with ${code}`))));
        });
        return { p, ready, done };
      });
      await Promise.all(procs.map((w) => w.ready));
      const startAt = Date.now() + 100;
      for (const w of procs) w.p.stdin.end(`go ${startAt}\n`);
      const results = await Promise.all(procs.map((w) => w.done));

      if (process.env.SHOW_SPLIT) console.log(results.map((r) => [r.prekeys.length, r.topicKeys.length]));
      const all = (k: 'prekeys' | 'topicKeys') => results.flatMap((r) => r[k]).sort();
      assert.deepEqual(all('prekeys'), Array.from({ length: n }, (_, i) => toHex(keyBytes(2, i))).sort());
      assert.deepEqual(all('topicKeys'), Array.from({ length: n }, (_, i) => toHex(keyBytes(3, i))).sort());
      assert.equal(await s.countPrekeys('d1'), 0);
    } finally {
      await t.cleanup();
    }
  });

  it('migrations are numbered 1, 2, … and applying them again changes nothing', async () => {
    assert.deepEqual(MIGRATIONS.map((m) => m.version), MIGRATIONS.map((_, i) => i + 1));
    const t = await tempDb();
    try {
      const s = await t.open();
      await s.setMeta('k', 'v');
      await s.migrate();
      await s.migrate();
      await s.close();
      const s2 = await t.open(); // opening migrates again
      assert.equal(await s2.getMeta('k'), 'v');
      await s2.close();
      const raw = new Database(t.file, { readonly: true });
      try {
        const rows = raw.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all();
        assert.deepEqual(rows, MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
      } finally {
        raw.close();
      }
    } finally {
      await t.cleanup();
    }
  });

  it('refuses a database whose schema is newer than the code', async () => {
    const t = await tempDb();
    try {
      const s = await t.open();
      await s.close();
      const raw = new Database(t.file);
      raw.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)").run(LATEST_SCHEMA_VERSION + 1);
      raw.close();
      const tooNew = /schema version \d+ is newer than this server understands/;
      await assert.rejects(openSqliteStore(t.file), tooNew);
      await assert.rejects(openSqliteStore(t.file, { migrate: false }), tooNew);
    } finally {
      await t.cleanup();
    }
  });

  it('eventsSince uses its indexes instead of scanning the events table', async () => {
    const t = await tempDb();
    try {
      await t.open();
      const raw = new Database(t.file, { readonly: true });
      try {
        const plan = (raw.prepare(`EXPLAIN QUERY PLAN ${EVENTS_SINCE_SQL}`).all({ cursor: 0, user: alice, device: 'd1', limit: 10 }) as { detail: string }[]).map((r) => r.detail);
        const events = plan.filter((d) => /^(SCAN|SEARCH) (e|events)\b/.test(d));
        assert.equal(events.length, 3, plan.join('\n'));
        for (const d of events) assert.match(d, /USING (COVERING )?INDEX events_/, plan.join('\n'));
      } finally {
        raw.close();
      }
    } finally {
      await t.cleanup();
    }
  });

  it('the queries of the files methods (putBlob, getBlob, blobBytesOf, deleteUser, deleteTopic) use indexes', async () => {
    const t = await tempDb();
    try {
      await t.open();
      const raw = new Database(t.file, { readonly: true });
      try {
        const queries = [
          'SELECT * FROM blobs WHERE topic_id = ? AND blob_id = ?',
          'SELECT coalesce(sum(size), 0) AS n FROM blobs WHERE user = ?',
          'DELETE FROM blobs WHERE user = ? RETURNING topic_id, blob_id',
          'SELECT blob_id FROM blobs WHERE topic_id = ?',
          "DELETE FROM events WHERE kind = 'entry' AND topic_id = ?",
          "DELETE FROM events WHERE kind = 'membership' AND topic_id = ?",
          // With its ON DELETE CASCADE into members, entries, hashes, nonces and blobs.
          'DELETE FROM topics WHERE topic_id = ?',
        ];
        for (const sql of queries) {
          const plan = (raw.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...sql.split('?').slice(1).map(() => 'x')) as { detail: string }[]).map((r) => r.detail);
          assert.equal(plan.length > 0, true, sql);
          for (const d of plan) assert.match(d, /^SEARCH \w+ USING (PRIMARY KEY|(COVERING )?INDEX \w+) \(/, `${sql}\n${plan.join('\n')}`);
        }
      } finally {
        raw.close();
      }
    } finally {
      await t.cleanup();
    }
  });

  it('stores Uint8Arrays and returns plain Uint8Arrays, not Buffers', async () => {
    const s = await openSqliteStore(':memory:');
    try {
      await withUser(s, ['d1']);
      const d = await s.getDevice('d1');
      assert.equal(Object.getPrototypeOf(d!.cert), Uint8Array.prototype);
    } finally {
      await s.close();
    }
  });
});
