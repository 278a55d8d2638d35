/**
 * Secrets redact themselves: no way of printing, logging or serializing a `Secret` shows its
 * bytes in any encoding; only `expose()` does.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { format, inspect } from 'node:util';
import { toBase64url, toHex } from '@rendezvous/protocol';
import { REDACTED, Secret } from '../src/secret.ts';

/** Every textual form the bytes could leak in: hex (both cases), base64url, base64, decimal list, latin1. */
function forms(b: Uint8Array): Record<string, string> {
  return {
    hex: toHex(b),
    HEX: toHex(b).toUpperCase(),
    base64url: toBase64url(b),
    base64: Buffer.from(b).toString('base64'),
    decimals: Array.from(b.subarray(0, 6)).join(','),
    raw: Buffer.from(b).toString('latin1'),
  };
}

function leaks(text: string, b: Uint8Array): string[] {
  const squeezed = text.replace(/\s+/g, ''); // inspect pads and wraps number lists
  return Object.entries(forms(b))
    .filter(([k, f]) => (k === 'decimals' ? squeezed : text).includes(f))
    .map(([k]) => k);
}

/** Captures what console.log / console.error write while `fn` runs. */
function captureConsole(fn: () => void): string {
  const out: string[] = [];
  const origOut = process.stdout.write;
  const origErr = process.stderr.write;
  const grab = (chunk: unknown) => {
    out.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('latin1'));
    return true;
  };
  process.stdout.write = grab as typeof process.stdout.write;
  process.stderr.write = grab as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stdout.write = origOut;
    process.stderr.write = origErr;
  }
  return out.join('');
}

describe('Secret', () => {
  // Make sure the bytes contain a value whose decimal/hex forms are distinctive.
  const bytes = new Uint8Array(randomBytes(32));
  bytes[0] = 0xab;
  bytes[1] = 0xcd;
  const s = new Secret(bytes.slice());

  test('the scan works: the plain bytes leak through the same channels', () => {
    assert.ok(leaks(inspect(bytes), bytes).includes('decimals'), 'inspect of raw bytes shows decimals');
    assert.ok(leaks(JSON.stringify({ s: toHex(bytes) }), bytes).includes('hex'), 'hex is found');
    assert.ok(leaks(`${toBase64url(bytes)}`, bytes).includes('base64url'), 'base64url is found');
    const logged = captureConsole(() => console.log(bytes));
    assert.ok(leaks(logged, bytes).includes('decimals'), 'captured console.log of raw bytes shows them');
  });

  test('every way of printing it is redacted', () => {
    const outputs: Record<string, string> = {
      String: String(s),
      template: `${s}`,
      concat: '' + s,
      toString: s.toString(),
      JSON: JSON.stringify({ s }),
      JSONdirect: JSON.stringify(s),
      inspect: inspect(s),
      inspectNested: inspect({ a: { b: [s] } }, { depth: 10 }),
      inspectHidden: inspect(s, { showHidden: true, depth: 10, customInspect: false }),
      inspectHiddenNested: inspect({ s }, { showHidden: true, depth: 10, customInspect: false }),
      formatO: format('%o', s),
      formatS: format('%s', s),
      formatJ: format('%j', { s }),
      keys: JSON.stringify(Object.keys(s)) + JSON.stringify(Object.getOwnPropertyNames(s)),
      spread: inspect({ ...s }, { showHidden: true }),
      error: inspect(new Error(`failed with ${s}`)),
      console: captureConsole(() => {
        console.log(s);
        console.log({ identity: { seed: s } });
        console.log('seed %s %o %j', s, s, { s });
        console.error(s);
        console.dir(s, { depth: 10 });
        console.table([{ s }]);
      }),
    };
    for (const [how, text] of Object.entries(outputs)) {
      assert.deepEqual(leaks(text, bytes), [], `${how} leaks the bytes: ${text}`);
    }
    assert.equal(outputs.String, REDACTED);
    assert.equal(outputs.template, '[redacted]');
    assert.equal(outputs.JSON, '{"s":"[redacted]"}');
    assert.equal(outputs.inspect, '[Secret redacted]');
    assert.match(outputs.console!, /\[Secret redacted\]/);
  });

  test('expose, equals, wipe, random', () => {
    assert.deepEqual(s.expose(), bytes, 'expose returns the bytes');
    assert.equal(s.length, 32);
    assert.ok(s.equals(bytes) && s.equals(new Secret(bytes.slice())), 'equals the same bytes');
    const other = bytes.slice();
    other[31]! ^= 1;
    assert.ok(!s.equals(other) && !s.equals(bytes.subarray(0, 31)), 'differs from other bytes');
    const owned = bytes.slice();
    const w = new Secret(owned);
    w.wipe();
    assert.ok(owned.every((b) => b === 0) && w.expose().every((b) => b === 0), 'wipe zeroes the bytes it owns');
    let asked = 0;
    const r = Secret.random(16, (n) => {
      asked = n;
      return new Uint8Array(randomBytes(n));
    });
    assert.equal(asked, 16);
    assert.equal(r.length, 16);
    assert.throws(() => Secret.random(16, () => new Uint8Array(8)), TypeError);
    assert.throws(() => new Secret('abc' as unknown as Uint8Array), TypeError);
  });
});
