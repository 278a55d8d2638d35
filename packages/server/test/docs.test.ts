/**
 * The spec lists every error code with its HTTP status (protocol §13 for protocol codes,
 * docs/server.md §6 for the server API): this keeps both lists true to the one error table.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from '@rendezvous/protocol';

function rows(file: string): Map<string, number> {
  const text = readFileSync(new URL(`../../../docs/${file}`, import.meta.url), 'utf8');
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^\| `([a-z_]+\.[a-z_]+)` \| (\d{3}) \|/gm)) {
    assert.ok(!out.has(m[1]!), `${file} lists ${m[1]} twice`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

it('every error code is listed once in the spec, with the status the server sends', () => {
  const protocol = rows('protocol.md');
  const server = rows('server.md');
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    const listed = [protocol.get(code), server.get(code)].filter((x) => x !== undefined);
    assert.equal(listed.length, 1, `${code} must be listed in exactly one of protocol.md §13 and server.md §6`);
    assert.equal(listed[0], status, `${code}: the spec says ${listed[0]}, errors.ts says ${status}`);
  }
  for (const code of [...protocol.keys(), ...server.keys()]) {
    assert.ok(code in ERROR_CODES, `the spec lists ${code}, which errors.ts does not define`);
  }
});
