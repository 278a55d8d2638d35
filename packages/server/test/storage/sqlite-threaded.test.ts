/**
 * The threaded SQLite store beyond the conformance suite (which it passes, sqlite.test.ts):
 * the main thread's connection cannot write, a writer thread that dies fails only the calls it
 * held and is replaced, closing waits for pending writes, and a call's arguments cross the
 * thread boundary without the bytes around them.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRendezvousError } from '@rendezvous/protocol';
import { SqliteStore } from '../../src/storage/sqlite.ts';
import { SqliteWriter, openThreadedSqliteStore } from '../../src/storage/sqlite-threaded.ts';
import type { Store } from '../../src/storage/store.ts';

async function withDir(fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'rendezvous-threaded-'));
  try {
    await fn(join(dir, 'rendezvous.db'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A threaded store on a fresh file, closed after `fn`. */
async function withStore(fn: (s: Store) => Promise<void>): Promise<void> {
  await withDir(async (file) => {
    const s = await openThreadedSqliteStore(file);
    try {
      await fn(s);
    } finally {
      await s.close();
    }
  });
}

/** A bare writer thread on a fresh file, closed after `fn`. */
async function withWriter(fn: (w: SqliteWriter, file: string) => Promise<void>): Promise<void> {
  await withDir(async (file) => {
    const w = new SqliteWriter(file, {});
    try {
      await fn(w, file);
    } finally {
      await w.close();
    }
  });
}

/** The values of meta `keys` as a separate read-only connection sees them. */
async function metaOf(file: string, ...keys: string[]): Promise<(string | null)[]> {
  const s = await SqliteStore.open(file, { migrate: false, queryOnly: true });
  try {
    return await Promise.all(keys.map((k) => s.getMeta(k)));
  } finally {
    await s.close();
  }
}

describe('threaded SQLite store', () => {
  it('the read-only connection refuses every write (query_only), so a mis-routed write fails loudly', async () => {
    await withDir(async (file) => {
      const s = await openThreadedSqliteStore(file);
      const reader = await SqliteStore.open(file, { migrate: false, queryOnly: true });
      try {
        await assert.rejects(reader.setMeta('k', 'v'), /readonly|read-only|query_only/i);
        await s.setMeta('k', 'v');
        assert.equal(await reader.getMeta('k'), 'v', 'the reader sees what the writer committed');
      } finally {
        await reader.close();
        await s.close();
      }
    });
  });

  it('an in-memory database is refused: it cannot be shared between threads', async () => {
    await assert.rejects(openThreadedSqliteStore(':memory:'), /needs a database file/);
  });

  it('a write resolves only after its commit: the main thread reads it at once', async () => {
    await withStore(async (s) => {
      const writes = Array.from({ length: 200 }, (_, i) => s.setMeta(`k${i}`, String(i)).then(() => s.getMeta(`k${i}`)));
      assert.deepEqual(await Promise.all(writes), Array.from({ length: 200 }, (_, i) => String(i)));
    });
  });

  it('errors cross the thread as they were thrown: a RendezvousError keeps its code', async () => {
    await withStore(async (s) => {
      const row = { deviceId: 'd', clientId: 'c', requestHash: new Uint8Array(32), response: '{}', createdAt: 1 };
      await s.putIdempotency(row);
      await assert.rejects(s.putIdempotency(row), (e: unknown) => isRendezvousError(e, 'store.conflict'));
    });
  });

  it('a view into a larger buffer crosses as its own bytes only', async () => {
    await withStore(async (s) => {
      const big = new Uint8Array(1 << 20).fill(7);
      const view = big.subarray(100, 132);
      await s.putIdempotency({ deviceId: 'd', clientId: 'c', requestHash: view, response: '{}', createdAt: 1 });
      const got = await s.getIdempotency('d', 'c');
      assert.deepEqual(got!.requestHash, new Uint8Array(32).fill(7));
    });
  });

  it('close waits for the writes already asked for, then refuses new ones', async () => {
    await withDir(async (file) => {
      const s = await openThreadedSqliteStore(file);
      const writes = Array.from({ length: 50 }, (_, i) => s.setMeta(`k${i}`, 'v'));
      await s.close();
      await Promise.all(writes);
      await assert.rejects(s.setMeta('late', 'v'), /closed/);
      assert.deepEqual(await metaOf(file, 'k0', 'k49'), ['v', 'v']);
    });
  });

  it('a writer thread that dies fails the calls it held; the next call starts a new thread', async () => {
    await withWriter(async (w, file) => {
      await w.start();
      await w.call('setMeta', ['before', '1']);
      const held = w.call('setMeta', ['held', '1']);
      await w.terminate();
      // The call may or may not have committed before the thread stopped; it must settle
      // either way (a client's retry with the same idempotency key finds out which).
      await held.catch(() => undefined);
      await w.call('setMeta', ['after', '1']);
      assert.deepEqual(await metaOf(file, 'before', 'after'), ['1', '1']);
    });
  });

  it('an argument that cannot cross the thread fails its own call only', async () => {
    await withWriter(async (w, file) => {
      await w.start();
      // Asked for in the same turn, so they would cross in one message.
      const good = w.call('setMeta', ['k', 'v']);
      const bad = w.call('setMeta', ['j', () => 'v']);
      await assert.rejects(bad, /could not be cloned/);
      await good;
      assert.deepEqual(await metaOf(file, 'k', 'j'), ['v', null]);
    });
  });

  it('the writer thread runs only write methods', async () => {
    await withWriter(async (w) => {
      await assert.rejects(w.call('getMeta', ['k']), /does not run getMeta/);
    });
  });
});
