/**
 * Shared test helpers: where the public test vectors live, and the two providers under test.
 *
 * Public vectors are read from `../shared/vectors/` beside the repository (never copied into
 * it); RENDEZVOUS_VECTORS overrides the path. A missing folder fails the run loudly: a test
 * that cannot see its vectors must not pass.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import assert from 'node:assert/strict';
import { RendezvousError, type ErrorCode } from '../src/errors.ts';

const repoRoot = resolve(import.meta.dirname, '..', '..', '..');

export function vectorsDir(): string {
  const dir = process.env.RENDEZVOUS_VECTORS ?? resolve(repoRoot, '..', 'shared', 'vectors');
  if (!existsSync(join(dir, 'README.md'))) {
    throw new Error(
      `public test vectors not found at ${dir}: check out shared/ beside the repository ` +
        'or set RENDEZVOUS_VECTORS to the vectors folder',
    );
  }
  return dir;
}

export function readVector<T = any>(relPath: string): T {
  return JSON.parse(readFileSync(join(vectorsDir(), relPath), 'utf8')) as T;
}

export function readVectorText(relPath: string): string {
  return readFileSync(join(vectorsDir(), relPath), 'utf8');
}

/** Asserts that `fn` throws a RendezvousError with exactly `code` (never matches messages). */
export function assertCode(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof RendezvousError, `expected RendezvousError(${code}), got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

export async function assertCodeAsync(fn: () => Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert.ok(e instanceof RendezvousError, `expected RendezvousError(${code}), got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}
