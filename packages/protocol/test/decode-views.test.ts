/**
 * The copy-free decoders of the client's hot path (decodeLogEntryView, decodeMessageView) and
 * the one-buffer signed bytes of a message (messageSignedContent) agree with the reference
 * decoders and encoders on every input: the same values, or the same error code.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isRendezvousError } from '../src/errors.ts';
import { decodeLogEntry, decodeLogEntryView, encodeLogEntry } from '../src/log.ts';
import { decodeMessage, decodeMessageView, encodeMessage, messageSignedContent, messageTbs, type Message } from '../src/message.ts';
import { SignLabel, signContent } from '../src/sign.ts';
import { seeded } from './fixtures.ts';

const random = seeded('decode-views.test');

function outcome<T>(fn: () => T): { ok: T } | { code: string } {
  try {
    return { ok: fn() };
  } catch (e) {
    assert.ok(isRendezvousError(e), `a decoder threw something else than a RendezvousError: ${String(e)}`);
    return { code: e.code };
  }
}

/** The encoding, truncated, extended, and with single bytes changed (all the framing bytes). */
function variants(b: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [b];
  for (let n = 0; n < b.length; n += n < 40 ? 1 : 97) out.push(b.slice(0, n));
  out.push(Uint8Array.of(...b, 0), Uint8Array.of(...b, 1, 2, 3));
  for (let i = 0; i < Math.min(b.length, 40); i++) {
    for (const x of [0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff]) {
      const c = b.slice();
      c[i] = x;
      out.push(c);
    }
  }
  return out;
}

function message(ctLength: number, over: Partial<Message> = {}): Message {
  return { epoch: 3, sender: 70, headSize: 20_000, nonce: random(16), ciphertext: random(ctLength), signature: random(64), ...over };
}

describe('copy-free decoders', () => {
  it('decodeLogEntryView = decodeLogEntry, on valid and broken encodings', () => {
    for (const body of [new Uint8Array(0), random(1), random(63), random(64), random(300), random(20_000)]) {
      for (const type of ['update', 'message'] as const) {
        for (const b of variants(encodeLogEntry({ type, timestamp: 1_764_000_000_000, body }))) {
          const a = outcome(() => decodeLogEntry(b));
          const v = outcome(() => decodeLogEntryView(b));
          assert.deepEqual(v, a, `the same result for ${b.length} bytes`);
        }
      }
    }
  });

  it('decodeMessageView = decodeMessage, on valid and broken encodings', () => {
    for (const m of [message(16), message(17, { epoch: 0, sender: 0, headSize: 1 }), message(100, { epoch: 64, sender: 16_384 }), message(1_000), message(16_400)]) {
      for (const b of variants(encodeMessage(m))) {
        const a = outcome(() => decodeMessage(b));
        const v = outcome(() => decodeMessageView(b));
        assert.deepEqual(v, a, `the same result for ${b.length} bytes`);
      }
    }
  });

  it('messageSignedContent = signContent(message, messageTbs), for every varint width', () => {
    const topicId = random(16);
    for (const over of [{}, { epoch: 63, sender: 64, headSize: 16_383 }, { epoch: 16_384, sender: 0x3fffffff, headSize: 1 }]) {
      for (const len of [16, 47, 48, 16_300, 16_400]) {
        const m = message(len, over);
        const root = random(32);
        assert.deepEqual(messageSignedContent(topicId, m, root), signContent(SignLabel.message, messageTbs(topicId, m, root)), `${JSON.stringify(over)}, ${len} bytes`);
      }
    }
    const m = message(32);
    const bad = (f: () => unknown) => outcome(f);
    assert.deepEqual(bad(() => messageSignedContent(random(15), m, random(32))), bad(() => messageTbs(random(15), m, random(32))), 'a short topic id: the same error');
    assert.deepEqual(bad(() => messageSignedContent(topicId, m, random(31))), bad(() => messageTbs(topicId, m, random(31))), 'a short root: the same error');
    assert.deepEqual(bad(() => messageSignedContent(topicId, { ...m, epoch: -1 }, random(32))), bad(() => messageTbs(topicId, { ...m, epoch: -1 }, random(32))), 'a bad varint: the same error');
  });
});
