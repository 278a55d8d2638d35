/**
 * The event bus (events.ts): who hears what, and when a signal is `inOrder` — the condition
 * under which a caught-up WebSocket may send an append's shared batch without reading the
 * store (http/ws.ts). Getting `inOrder` wrong would skip an event, so every way the order can
 * break is here: before start, a gap, ranges emitted out of order, signals without seqs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_AHEAD, createEventBus, liveCommit, type LiveCommit } from '../src/events.ts';
import type { ServerEvent } from '../src/context.ts';

/** A commit of one entry event (seq `first`) and, optionally, membership events after it. */
function commit(first: number, members: string[] = []): LiveCommit {
  return liveCommit(
    new Uint8Array(32),
    [{ index: 0, type: 'message', entry: new Uint8Array([1, 2, 3]), checkpoint: null }],
    new Uint8Array([9]),
    [{ seq: first, kind: 'entry', index: 0 }, ...members.map((user, i) => ({ seq: first + 1 + i, kind: 'membership' as const, user }))],
  )!;
}

function entry(live: LiveCommit | undefined, users = ['alice']): ServerEvent {
  return { kind: 'entry', topicId: '00', users, deviceId: 'poster', ...(live === undefined ? {} : { live }) };
}

function listen(bus: ReturnType<typeof createEventBus>, user = 'alice', device = 'a1') {
  const heard: { kind: string; inOrder: boolean; first?: number }[] = [];
  const off = bus.onDevice(user, device, (e, inOrder) =>
    heard.push({ kind: e.kind, inOrder, ...(e.kind === 'entry' && e.live ? { first: e.live.first } : {}) }),
  );
  return { heard, off };
}

describe('event bus', () => {
  it('nothing is in order before start; after start, consecutive ranges are', () => {
    const bus = createEventBus();
    const { heard } = listen(bus);
    bus.emit(entry(commit(5)));
    bus.start(5);
    bus.emit(entry(commit(6, ['bob'])));
    bus.emit(entry(commit(8)));
    assert.deepEqual(heard, [
      { kind: 'entry', inOrder: false, first: 5 },
      { kind: 'entry', inOrder: true, first: 6 },
      { kind: 'entry', inOrder: true, first: 8 },
    ]);
  });

  it('a gap makes later signals out of order until it is filled; ranges emitted out of order are absorbed', () => {
    const bus = createEventBus();
    bus.start(10);
    const { heard } = listen(bus);
    bus.emit(entry(commit(13))); // 11–12 not announced yet
    bus.emit(entry(commit(14)));
    bus.emit(entry(commit(11, ['bob']))); // 11–12 now; through 14
    bus.emit(entry(commit(15)));
    assert.deepEqual(
      heard.map((h) => [h.first, h.inOrder]),
      [
        [13, false],
        [14, false],
        [11, true],
        [15, true],
      ],
    );
  });

  it('a seq never announced: after MAX_AHEAD ranges the bus gives up on it and bumps its generation, holding nothing more', () => {
    const bus = createEventBus();
    bus.start(1);
    const { heard } = listen(bus);
    // Seq 2 is never announced; 3, 4, … are.
    for (let seq = 3; seq < 3 + MAX_AHEAD; seq++) bus.emit(entry(commit(seq)));
    assert.equal(bus.generation, 0);
    assert.ok(heard.every((h) => !h.inOrder), 'nothing after the gap is in order while the bus waits');
    bus.emit(entry(commit(3 + MAX_AHEAD)));
    assert.equal(bus.generation, 1, 'gave up on seq 2');
    bus.emit(entry(commit(4 + MAX_AHEAD)));
    assert.equal(heard.at(-1)!.inOrder, true, 'in order again after the bump (connections re-read the store first: ws.ts)');
  });

  it('a bundle carries its seq; a signal without seqs never advances the order', () => {
    const bus = createEventBus();
    bus.start(1);
    const { heard } = listen(bus);
    bus.emit({ kind: 'bundle', deviceId: 'a1', seq: 2 });
    bus.emit(entry(commit(3)));
    bus.emit({ kind: 'bundle', deviceId: 'a1' }); // seq unknown: it may have been 4
    bus.emit(entry(undefined));
    bus.emit(entry(commit(5)));
    assert.deepEqual(
      heard.map((h) => [h.kind, h.inOrder]),
      [
        ['bundle', true],
        ['entry', true],
        ['bundle', false],
        ['entry', false],
        ['entry', false],
      ],
    );
  });

  it('delivers entries to the users named, bundles and removals to the device, session ends to every device', () => {
    const bus = createEventBus();
    bus.start(0);
    const a = listen(bus, 'alice', 'a1');
    const b = listen(bus, 'bob', 'b1');
    const all: string[] = [];
    bus.on((e) => all.push(e.kind));
    bus.emit(entry(commit(1), ['bob']));
    bus.emit({ kind: 'bundle', deviceId: 'a1', seq: 2 });
    bus.emit({ kind: 'device-removed', deviceId: 'b1' });
    bus.emit({ kind: 'session-ended', tokenHash: 'ff' });
    bus.emit({ kind: 'device', user: 'alice' });
    assert.deepEqual(a.heard.map((h) => h.kind), ['bundle', 'session-ended']);
    assert.deepEqual(b.heard.map((h) => h.kind), ['entry', 'device-removed', 'session-ended']);
    assert.deepEqual(all, ['entry', 'bundle', 'device-removed', 'session-ended', 'device']);
    b.off();
    bus.emit(entry(commit(3), ['bob']));
    assert.equal(b.heard.length, 3, 'nothing after off()');
  });

  it('the shared batch is the commit’s entry events with its checkpoint, encoded once; membership changes are named', () => {
    const live = commit(7, ['carol', 'dave']);
    assert.equal(live.first, 7);
    assert.equal(live.last, 9);
    assert.equal(live.lastEntrySeq, 7);
    assert.deepEqual([...live.changed], ['carol', 'dave']);
    assert.equal(live.frame(), live.frame(), 'built once');
    assert.deepEqual(JSON.parse(live.frame().toString()), {
      type: 'events',
      events: [{ seq: 7, kind: 'entry', topicId: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', index: 0, type: 'message', entry: 'AQID' }],
      cursor: 7,
      checkpoints: { AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA: 'CQ' },
    });
    assert.equal(liveCommit(new Uint8Array(32), [], new Uint8Array(1), [{ seq: 1, kind: 'membership', user: 'x' }]), undefined, 'no entry, no batch');
  });
});
