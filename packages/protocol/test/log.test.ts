/**
 * Log entries, checkpoints, head comparison and the log monitor (spec §9–§11).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import { nobleCrypto } from '../src/crypto/noble.ts';
import { utf8 } from '../src/bytes.ts';
import {
  LogMonitor,
  compareHeads,
  decodeCheckpoint,
  decodeLogEntry,
  encodeCheckpoint,
  encodeLogEntry,
  serverKeyId,
  signCheckpoint,
  verifyCheckpoint,
  type LogEntry,
} from '../src/log.ts';
import { MemoryLog } from '../src/merkle.ts';
import { assertCode } from './helpers.ts';
import { seeded } from './fixtures.ts';

const random = seeded('log.test');
const serverSeed = random(32);
const serverKey = crypto.ed25519PublicKey(serverSeed);
const topicId = random(16);

function entry(i: number, timestamp = 1_700_000_000_000 + i): Uint8Array {
  return encodeLogEntry({ type: i === 0 ? 'update' : 'message', timestamp, body: utf8(`entry ${i}`) });
}

function logOf(n: number, make = entry): MemoryLog {
  const log = new MemoryLog(crypto);
  for (let i = 0; i < n; i++) log.append(make(i));
  return log;
}

describe('log entries', () => {
  it('round-trip and reject unknown versions and types', () => {
    const e: LogEntry = { type: 'message', timestamp: 1234, body: utf8('x') };
    const b = encodeLogEntry(e);
    assert.deepEqual(decodeLogEntry(b), e);
    assertCode(() => decodeLogEntry(Uint8Array.of(2, ...b.subarray(1))), 'encoding.unknown_version');
    assertCode(() => decodeLogEntry(Uint8Array.of(1, 3, ...b.subarray(2))), 'encoding.bad_value');
    assertCode(() => decodeLogEntry(Uint8Array.of(...b, 0)), 'encoding.trailing_bytes');
  });
});

describe('checkpoints', () => {
  const log = logOf(5);
  const cp = signCheckpoint(crypto, serverSeed, { origin: 'alpha.example', topicId, size: 5, root: log.root(), timestamp: 1_700_000_000_000 });

  it('verify with both providers and round-trip', () => {
    for (const p of [crypto, nobleCrypto]) verifyCheckpoint(p, decodeCheckpoint(encodeCheckpoint(cp)), serverKey, topicId);
    assert.deepEqual(encodeCheckpoint(decodeCheckpoint(encodeCheckpoint(cp))), encodeCheckpoint(cp));
    assert.deepEqual(cp.keyId, serverKeyId(crypto, serverKey));
  });
  it('reject another key (log.bad_checkpoint), a changed field (log.bad_checkpoint), another topic', () => {
    assertCode(() => verifyCheckpoint(crypto, cp, crypto.ed25519PublicKey(random(32))), 'log.bad_checkpoint');
    assertCode(() => verifyCheckpoint(crypto, { ...cp, size: 4 }, serverKey), 'log.bad_checkpoint');
    assertCode(() => verifyCheckpoint(crypto, { ...cp, origin: 'beta.example' }, serverKey), 'log.bad_checkpoint');
    assertCode(() => verifyCheckpoint(crypto, cp, serverKey, new Uint8Array(16)), 'topic.wrong_topic');
  });
  it('the key id follows the seed, even when the same array is overwritten with another seed', () => {
    const seed = random(32);
    const unsigned = { origin: 'alpha.example', topicId, size: 5, root: log.root(), timestamp: 1_700_000_000_000 };
    const first = signCheckpoint(crypto, seed, unsigned);
    assert.deepEqual(first.keyId, serverKeyId(crypto, crypto.ed25519PublicKey(seed)));
    first.keyId.fill(0);
    assert.deepEqual(signCheckpoint(crypto, seed, unsigned).keyId, serverKeyId(crypto, crypto.ed25519PublicKey(seed)), 'a caller changing a returned keyId changes no later one');
    seed.set(random(32));
    const after = signCheckpoint(crypto, seed, unsigned);
    assert.deepEqual(after.keyId, serverKeyId(crypto, crypto.ed25519PublicKey(seed)));
    verifyCheckpoint(crypto, after, crypto.ed25519PublicKey(seed), topicId);
  });
  it('decoder rejects an origin that is not a server name', () => {
    const bad = encodeCheckpoint({ ...cp, origin: 'Not A Name' });
    assertCode(() => decodeCheckpoint(bad), 'encoding.bad_value');
  });
});

describe('compareHeads', () => {
  const log = logOf(10);
  const head = (n: number, l = log) => ({ size: n, root: l.root(n) });

  it('accepts a consistent extension and an identical head', () => {
    compareHeads(crypto, head(4), head(10), log.consistencyProof(4, 10));
    compareHeads(crypto, head(10), head(10), []);
    compareHeads(crypto, { size: 0, root: log.root(0) }, head(3), []);
  });
  it('names a rollback (log.rollback)', () => {
    assertCode(() => compareHeads(crypto, head(10), head(9), []), 'log.rollback');
  });
  it('names a fork: same size, other root; or an extension that does not prove consistent (log.fork)', () => {
    const other = logOf(10, (i) => (i === 6 ? entry(99) : entry(i)));
    assertCode(() => compareHeads(crypto, head(10), head(10, other), []), 'log.fork');
    assertCode(() => compareHeads(crypto, head(7), head(10, other), other.consistencyProof(7, 10)), 'log.fork');
    assertCode(() => compareHeads(crypto, head(4), head(10), log.consistencyProof(5, 10)), 'log.fork');
  });
});

describe('LogMonitor', () => {
  it('accepts entries in order and ignores a redelivery of the same entry', () => {
    const m = new LogMonitor(crypto);
    for (let i = 0; i < 5; i++) assert.equal(m.append(i, entry(i)).appended, true);
    assert.equal(m.append(2, entry(2)).appended, false);
    assert.equal(m.size, 5);
    const log = logOf(5);
    assert.deepEqual(m.leafHashes()[4], log.leafHash(4));
  });
  it('names a gap (log.gap), a fork (log.fork), a replay (log.replay) and a reorder (log.reorder)', () => {
    const m = new LogMonitor(crypto);
    m.append(0, entry(0));
    m.append(1, entry(1));
    assertCode(() => m.append(3, entry(3)), 'log.gap');
    assertCode(() => m.append(1, entry(7)), 'log.fork');
    assertCode(() => m.append(2, entry(1)), 'log.replay');
    assertCode(() => m.append(2, entry(2, 1)), 'log.reorder');
    assert.equal(m.size, 2, 'a rejected entry changes nothing');
    m.append(2, entry(2));
  });
});
