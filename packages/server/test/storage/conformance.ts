/**
 * The Store conformance suite: every guarantee of storage/store.ts, stated once and run against
 * every backend (`storeConformance('sqlite', …)`, later PostgreSQL). A backend passes only if
 * it behaves identically here, so the server's domain logic can rely on the interface alone.
 *
 * The store does not validate protocol content, so the fixtures are small hand-made byte
 * strings rather than real protocol objects.
 */
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRendezvousError, toHex, utf8, type ErrorCode } from '@rendezvous/protocol';
import type {
  AppendBatch,
  BlobRow,
  DeviceRow,
  EventRow,
  ForkRow,
  IdempotencyRow,
  MemberRow,
  OutboxRow,
  PinRow,
  PushSubscriptionRow,
  ReplicationRow,
  Store,
  UserRow,
} from '../../src/storage/store.ts';

export interface StoreHarness {
  /** A fresh, migrated, empty store. */
  store: Store;
  /** Opens the same data again (the test closes the previous store first). Without it the durability tests are skipped. */
  reopen?: () => Promise<Store>;
  /** Opens what `backup(path)` wrote as a store. Without it the backup test is skipped. */
  openBackup?: (path: string) => Promise<Store>;
  /** Closes every store the harness opened (closed ones included) and deletes the data. */
  cleanup: () => Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const NOW = 1_700_000_000_000;
const HOUR = 3_600_000;

const b = (...xs: number[]): Uint8Array => new Uint8Array(xs);
const fill = (n: number, x: number): Uint8Array => new Uint8Array(n).fill(x);
const hex = (xs: Uint8Array[]): string[] => xs.map(toHex).sort();

function userRow(user: string): UserRow {
  return { user, identityKey: utf8(`ik:${user}`), createdAt: NOW };
}

function deviceRow(deviceId: string, user: string, createdAt = NOW): DeviceRow {
  return { deviceId, user, cert: utf8(`cert:${deviceId}`), createdAt };
}

function pinHashOf(s: string): Uint8Array {
  const out = new Uint8Array(32);
  out.set(utf8(s).subarray(0, 32));
  return out;
}

function pinRow(id: string, user: string, pin: string, opts: Partial<PinRow> = {}): PinRow {
  return { id, user, pinHash: pinHashOf(pin), expiresAt: NOW + HOUR, triesLeft: 3, createdAt: NOW, ...opts };
}

/** A registered user with the given devices (the first through registerWithPin). */
async function addUser(s: Store, user: string, ...devices: string[]): Promise<void> {
  await s.createPin(pinRow(`pin-${user}`, user, `secret-${user}`));
  const [first, ...rest] = devices;
  assert.ok(first !== undefined, 'first !== undefined');
  assert.equal(await s.registerWithPin(userRow(user), deviceRow(first, user), pinHashOf(`secret-${user}`), NOW), 'ok');
  for (const d of rest) await s.addDevice(deviceRow(d, user));
}

const T1 = fill(32, 0x71);
const T2 = fill(32, 0x72);
const T3 = fill(32, 0x73);

const entryBytes = (t: Uint8Array, i: number) => b(0xe0, t[0]!, i & 0xff, i >> 8);
const nonceOf = (i: number, salt = 0) => b(0xa0, salt, i & 0xff, i >> 8);
const hashOf = (t: Uint8Array, i: number) => fill(32, (t[0]! + i) & 0xff);

/**
 * A batch of `count` entries after `size`: entry 0 of a log is an update, the rest messages
 * with one nonce each; one stored hash per entry, at the entry's index (the store does not care
 * about the Merkle layout).
 */
function batch(
  t: Uint8Array,
  size: number,
  count: number,
  opts: { members?: MemberRow[]; idempotency?: IdempotencyRow; nonces?: Uint8Array[]; epochStartSize?: number } = {},
): AppendBatch {
  const entries = Array.from({ length: count }, (_, k) => {
    const index = size + k;
    return { index, type: index === 0 ? ('update' as const) : ('message' as const), entry: entryBytes(t, index) };
  });
  const out: AppendBatch = {
    expectedSize: size,
    entries,
    hashes: entries.map((e) => ({ index: e.index, hash: hashOf(t, e.index) })),
    newSize: size + count,
    checkpoint: b(0xc0, t[0]!, size + count),
    epochStartSize: opts.epochStartSize ?? 1,
    nonces: opts.nonces ?? entries.filter((e) => e.type === 'message').map((e) => nonceOf(e.index)),
  };
  if (opts.members !== undefined) out.members = opts.members;
  if (opts.idempotency !== undefined) out.idempotency = opts.idempotency;
  return out;
}

const admin = (memberId: number, user: string): MemberRow => ({ memberId, user, role: 'admin' });
const participant = (memberId: number, user: string): MemberRow => ({ memberId, user, role: 'participant' });

async function createTopic(s: Store, t: Uint8Array, members: MemberRow[], entries = 1): Promise<void> {
  await s.createTopic({ topicId: t, host: 'alpha.example', createdAt: NOW }, batch(t, 0, entries, { members }));
}

function idem(deviceId: string, clientId: string, response = '{"ok":true}'): IdempotencyRow {
  return { deviceId, clientId, requestHash: fill(32, clientId.length), response, createdAt: NOW };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isRendezvousError(e, code), `expected ${code}, got ${String(e)}`);
    return true;
  });
}

const prekeys = (device: number, from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ prekey: b(0x50, device, from + i), encoded: b(0x51, device, from + i) }));

const topicKeys = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ keyId: `tk-${from + i}`, encoded: b(0x54, from + i) }));

/** A full picture of one topic and everything an append may touch, to prove nothing moved. */
async function topicState(s: Store, t: Uint8Array) {
  return {
    topic: await s.getTopic(t),
    entries: await s.getEntries(t, 0, 1_000),
    members: await s.getMembers(t),
    latest: await s.latestEventSeq(),
    counts: await s.counts(),
  };
}

// ---------------------------------------------------------------------------------------------

export function storeConformance(
  name: string,
  open: () => Promise<StoreHarness>,
): void {
  describe(`Store conformance: ${name}`, () => {
    let h: StoreHarness;
    let s: Store;

    beforeEach(async () => {
      h = await open();
      s = h.store;
    });
    afterEach(async () => {
      await h.cleanup();
    });

    describe('schema and settings', () => {
      it('migrate() is idempotent and keeps data', async () => {
        await s.setMeta('k', 'v');
        await s.migrate();
        await s.migrate();
        assert.equal(await s.getMeta('k'), 'v');
      });

      it('meta: absent is null, set then get, set overwrites', async () => {
        assert.equal(await s.getMeta('name'), null);
        await s.setMeta('name', 'alpha.example');
        assert.equal(await s.getMeta('name'), 'alpha.example');
        await s.setMeta('name', 'beta.example');
        assert.equal(await s.getMeta('name'), 'beta.example');
        await s.setMeta('empty', '');
        assert.equal(await s.getMeta('empty'), '');
      });
    });

    describe('pins', () => {
      it('create, list (every field) and delete', async () => {
        const p1 = pinRow('p1', 'alice@alpha.example', '111', { triesLeft: 5, expiresAt: NOW + 7, createdAt: NOW - 2 });
        const p2 = pinRow('p2', 'bob@alpha.example', '222', { createdAt: NOW - 1 });
        await s.createPin(p1);
        await s.createPin(p2);
        assert.deepEqual(await s.listPins(), [p1, p2]);
        assert.equal(await s.deletePin('p1'), true);
        assert.equal(await s.deletePin('p1'), false);
        assert.equal(await s.deletePin('nope'), false);
        assert.deepEqual(await s.listPins(), [p2]);
      });

      it('a pin id is unique', async () => {
        await s.createPin(pinRow('p1', 'alice@alpha.example', '111'));
        await assert.rejects(s.createPin(pinRow('p1', 'bob@alpha.example', '222')));
        assert.equal((await s.listPins()).length, 1);
      });
    });

    describe('registerWithPin', () => {
      const alice = 'alice@alpha.example';

      it('no pin at all: no_pin, nothing created', async () => {
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('1'), NOW), 'no_pin');
        assert.equal(await s.getUser(alice), null);
        assert.equal(await s.getDevice('a1'), null);
      });

      it('ok: the pin is deleted and the user and first device exist', async () => {
        await s.createPin(pinRow('p1', alice, '123456'));
        await s.createPin(pinRow('other', 'bob@alpha.example', '123456'));
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('123456'), NOW), 'ok');
        assert.deepEqual(await s.getUser(alice), userRow(alice));
        assert.deepEqual(await s.getDevice('a1'), deviceRow('a1', alice));
        assert.deepEqual(await s.listDevices(alice), [deviceRow('a1', alice)]);
        assert.deepEqual((await s.listPins()).map((p) => p.id), ['other']);
      });

      it('user_exists is checked first and leaves the pin untouched', async () => {
        await addUser(s, alice, 'a1');
        const p = pinRow('p2', alice, '999', { triesLeft: 2 });
        await s.createPin(p);
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a9', alice), pinHashOf('999'), NOW), 'user_exists');
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a9', alice), pinHashOf('wrong'), NOW), 'user_exists');
        assert.deepEqual(await s.listPins(), [p]);
        assert.equal(await s.getDevice('a9'), null);
      });

      it('wrong pin: every unexpired pin of the name loses a try; at zero the pin is deleted', async () => {
        await s.createPin(pinRow('p1', alice, '111', { triesLeft: 2 }));
        await s.createPin(pinRow('p2', alice, '222', { triesLeft: 3 }));
        await s.createPin(pinRow('old', alice, '333', { triesLeft: 3, expiresAt: NOW - 1 }));
        await s.createPin(pinRow('bob', 'bob@alpha.example', '444', { triesLeft: 3 }));
        const tries = async () => Object.fromEntries((await s.listPins()).map((p) => [p.id, p.triesLeft]));

        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('000'), NOW), 'wrong_pin');
        assert.deepEqual(await tries(), { p1: 1, p2: 2, old: 3, bob: 3 });
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('000'), NOW), 'wrong_pin');
        assert.deepEqual(await tries(), { p2: 1, old: 3, bob: 3 });
        // The right pin of a deleted pin no longer works, but the surviving one does.
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('111'), NOW), 'wrong_pin');
        assert.deepEqual(await tries(), { old: 3, bob: 3 });
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('222'), NOW), 'no_pin');
        assert.equal(await s.getUser(alice), null);
      });

      it('a right pin after a wrong one still registers', async () => {
        await s.createPin(pinRow('p1', alice, '111', { triesLeft: 2 }));
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('000'), NOW), 'wrong_pin');
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('111'), NOW), 'ok');
        assert.deepEqual(await s.listPins(), []);
      });

      it('expired pins are ignored (no_pin) and not touched; expiry is at expiresAt exactly', async () => {
        const p = pinRow('p1', alice, '111', { expiresAt: NOW });
        await s.createPin(p);
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('111'), NOW), 'no_pin');
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('000'), NOW), 'no_pin');
        assert.deepEqual(await s.listPins(), [p]);
        assert.equal(await s.getUser(alice), null);
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('111'), NOW - 1), 'ok');
      });

      it("another user's pin does not register this one", async () => {
        await s.createPin(pinRow('p1', 'bob@alpha.example', '111'));
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('111'), NOW), 'no_pin');
        assert.equal((await s.listPins())[0]?.triesLeft, 3);
      });

      it('is atomic: a device id already used fails with device.exists and leaves no user and the pin intact', async () => {
        await addUser(s, 'bob@alpha.example', 'b1', 'b2');
        assert.equal(await s.deleteDevice('b2'), true);
        const p = pinRow('p1', alice, '111');
        await s.createPin(p);
        for (const used of ['b1', 'b2']) {
          await rejectsWith(s.registerWithPin(userRow(alice), deviceRow(used, alice), pinHashOf('111'), NOW), 'device.exists');
          assert.equal(await s.getUser(alice), null);
          assert.deepEqual(await s.listPins(), [p]);
        }
        assert.equal((await s.getDevice('b1'))?.user, 'bob@alpha.example');
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a1', alice), pinHashOf('111'), NOW), 'ok');
      });
    });

    describe('users and devices', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@alpha.example';

      it('getUser / listUsers', async () => {
        assert.equal(await s.getUser(alice), null);
        assert.deepEqual(await s.listUsers(), []);
        await addUser(s, bob, 'b1');
        await addUser(s, alice, 'a1');
        assert.deepEqual(await s.listUsers(), [userRow(alice), userRow(bob)]);
      });

      it('addDevice / getDevice / listDevices (oldest first)', async () => {
        await addUser(s, alice, 'a1');
        await s.addDevice(deviceRow('a3', alice, NOW + 2));
        await s.addDevice(deviceRow('a2', alice, NOW + 1));
        assert.deepEqual(await s.getDevice('a2'), deviceRow('a2', alice, NOW + 1));
        assert.equal(await s.getDevice('zz'), null);
        assert.deepEqual(
          (await s.listDevices(alice)).map((d) => d.deviceId),
          ['a1', 'a2', 'a3'],
        );
        assert.deepEqual(await s.listDevices(bob), []);
      });

      it('a device id in use fails with device.exists, also for another user', async () => {
        await addUser(s, alice, 'a1');
        await addUser(s, bob, 'b1');
        await rejectsWith(s.addDevice(deviceRow('a1', alice)), 'device.exists');
        await rejectsWith(s.addDevice(deviceRow('a1', bob)), 'device.exists');
        assert.equal((await s.getDevice('a1'))?.user, alice);
      });

      it('a device of an unknown user is refused', async () => {
        await assert.rejects(s.addDevice(deviceRow('x1', 'ghost@alpha.example')));
        assert.equal(await s.getDevice('x1'), null);
      });

      it('deleteDevice: true then false; the id can never be added again', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await addUser(s, bob, 'b1');
        assert.equal(await s.deleteDevice('a2'), true);
        assert.equal(await s.deleteDevice('a2'), false);
        assert.equal(await s.deleteDevice('never'), false);
        assert.equal(await s.getDevice('a2'), null);
        assert.deepEqual((await s.listDevices(alice)).map((d) => d.deviceId), ['a1']);
        await rejectsWith(s.addDevice(deviceRow('a2', alice)), 'device.exists');
        await rejectsWith(s.addDevice(deviceRow('a2', bob)), 'device.exists');
        assert.equal(await s.getDevice('a2'), null);
      });

      it("deleteDevice removes its sessions, challenges, prekeys, pending bundles and idempotency records, and nobody else's", async () => {
        await addUser(s, alice, 'a1', 'a2');
        for (const d of ['a1', 'a2']) {
          await s.createSession({ tokenHash: utf8(`tok-${d}`.padEnd(32)), deviceId: d, user: alice, createdAt: NOW, expiresAt: NOW + HOUR });
          await s.putChallenge(utf8(`ch-${d}`), d, NOW + HOUR);
          await s.addPrekeys(d, prekeys(d === 'a1' ? 1 : 2, 0, 3), 10);
          await s.putIdempotency(idem(d, 'c1'));
        }
        await s.addBundle('a1', 'a2', b(1), NOW);
        await s.addBundle('a2', 'a1', b(2), NOW);
        await s.addTopicKeys(alice, topicKeys(0, 2), 10);

        assert.equal(await s.deleteDevice('a1'), true);

        assert.equal(await s.getSession(utf8('tok-a1'.padEnd(32)), NOW), null);
        assert.equal(await s.takeChallenge(utf8('ch-a1'), 'a1', NOW), false);
        assert.equal(await s.countPrekeys('a1'), 0);
        assert.equal(await s.claimPrekey('a1'), null);
        assert.deepEqual(await s.listBundles('a1'), []);
        assert.equal(await s.getIdempotency('a1', 'c1'), null);
        // The sibling keeps everything, including the bundle the removed device sent it.
        assert.notEqual(await s.getSession(utf8('tok-a2'.padEnd(32)), NOW), null);
        assert.equal(await s.takeChallenge(utf8('ch-a2'), 'a2', NOW), true);
        assert.equal(await s.countPrekeys('a2'), 3);
        assert.deepEqual(
          (await s.listBundles('a2')).map((x) => ({ senderDeviceId: x.senderDeviceId, encoded: x.encoded })),
          [{ senderDeviceId: 'a1', encoded: b(2) }],
        );
        assert.notEqual(await s.getIdempotency('a2', 'c1'), null);
        assert.equal(await s.countTopicKeys(alice), 2);
        assert.notEqual(await s.getUser(alice), null);
      });

      it("deleteUser removes everything of theirs (devices, sessions, prekeys, topic keys, bundles to or from them, idempotency, pins of the name) but not topic logs", async () => {
        await addUser(s, alice, 'a1', 'a2');
        await addUser(s, bob, 'b1');
        for (const d of ['a1', 'a2', 'b1']) {
          await s.createSession({ tokenHash: utf8(`tok-${d}`), deviceId: d, user: d === 'b1' ? bob : alice, createdAt: NOW, expiresAt: NOW + HOUR });
          await s.putIdempotency(idem(d, 'c1'));
        }
        await s.addPrekeys('a1', prekeys(1, 0, 3), 10);
        await s.addPrekeys('b1', prekeys(3, 0, 3), 10);
        await s.addTopicKeys(alice, topicKeys(0, 3), 10);
        await s.addTopicKeys(bob, topicKeys(100, 3), 10);
        await s.addBundle('a2', 'a1', b(1), NOW);
        await s.addBundle('b1', 'a1', b(2), NOW); // from one of alice's devices
        await s.addBundle('b1', 'remote-device', b(3), NOW);
        await s.createPin(pinRow('again', alice, '1'));
        await s.createPin(pinRow('dave', 'dave@alpha.example', '2'));
        await createTopic(s, T1, [admin(0, alice), participant(1, bob)], 3);
        const topicBefore = await s.getTopic(T1);
        const entriesBefore = await s.getEntries(T1, 0, 100);

        assert.deepEqual(await s.deleteUser(alice), { deleted: true, blobs: [] });

        assert.equal(await s.getUser(alice), null);
        assert.deepEqual(await s.listUsers(), [userRow(bob)]);
        assert.deepEqual(await s.listDevices(alice), []);
        assert.equal(await s.getDevice('a1'), null);
        assert.equal(await s.getSession(utf8('tok-a1'), NOW), null);
        assert.equal(await s.getSession(utf8('tok-a2'), NOW), null);
        assert.equal(await s.countPrekeys('a1'), 0);
        assert.equal(await s.countTopicKeys(alice), 0);
        assert.equal(await s.claimTopicKey(alice), null);
        assert.deepEqual(await s.listBundles('a2'), []);
        assert.deepEqual((await s.listBundles('b1')).map((x) => x.senderDeviceId), ['remote-device']);
        assert.equal(await s.getIdempotency('a1', 'c1'), null);
        assert.deepEqual((await s.listPins()).map((p) => p.id), ['dave']);
        // Bob is untouched.
        assert.notEqual(await s.getSession(utf8('tok-b1'), NOW), null);
        assert.equal(await s.countPrekeys('b1'), 3);
        assert.equal(await s.countTopicKeys(bob), 3);
        assert.notEqual(await s.getIdempotency('b1', 'c1'), null);
        // The topic log and its member list stay: only an update can remove a member.
        assert.deepEqual(await s.getTopic(T1), topicBefore);
        assert.deepEqual(await s.getEntries(T1, 0, 100), entriesBefore);
        assert.deepEqual(await s.getMembers(T1), [admin(0, alice), participant(1, bob)]);
        // Device ids and the name are remembered: neither is ever registered again.
        await rejectsWith(s.addDevice(deviceRow('a1', bob)), 'device.exists');
        assert.deepEqual(await s.deleteUser(alice), { deleted: false, blobs: [] });
        await s.createPin(pinRow('new', alice, 'x'));
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a3', alice), pinHashOf('x'), NOW), 'user_exists');
        assert.deepEqual(await s.listDevices(alice), []);
      });

      it('deleteUser of an unknown user returns false and touches nothing', async () => {
        await s.createPin(pinRow('p', 'ghost@alpha.example', '1'));
        assert.deepEqual(await s.deleteUser('ghost@alpha.example'), { deleted: false, blobs: [] });
        assert.equal((await s.listPins()).length, 1);
      });
    });

    describe('push subscriptions', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@alpha.example';
      const sub = (id: string, deviceId: string, endpoint = `https://push.example/${id}`, createdAt = NOW): PushSubscriptionRow => ({
        id,
        deviceId,
        kind: 'webpush',
        endpoint,
        p256dh: `p256dh-${id}`,
        auth: `auth-${id}`,
        createdAt,
      });

      it('add, list (every field, oldest first), by user, delete scoped to the device', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await addUser(s, bob, 'b1');
        assert.deepEqual(await s.addPushSubscription(sub('s2', 'a1', undefined, NOW + 1), 5), sub('s2', 'a1', undefined, NOW + 1));
        await s.addPushSubscription(sub('s1', 'a1'), 5);
        await s.addPushSubscription(sub('s3', 'a2'), 5);
        await s.addPushSubscription(sub('s4', 'b1'), 5);
        assert.deepEqual(await s.listPushSubscriptions('a1'), [sub('s1', 'a1'), sub('s2', 'a1', undefined, NOW + 1)]);
        assert.deepEqual(await s.listPushSubscriptions('none'), []);
        assert.deepEqual((await s.pushSubscriptionsOfUser(alice)).map((x) => x.id).sort(), ['s1', 's2', 's3']);
        assert.deepEqual((await s.pushSubscriptionsOfUser(bob)).map((x) => x.id), ['s4']);
        assert.deepEqual(await s.pushSubscriptionsOfUser('ghost@alpha.example'), []);
        assert.deepEqual(await s.usersWithPushSubscriptions(), [alice, bob].sort(), 'each subscribed user once');
        // Only the owning device deletes it.
        assert.equal(await s.deletePushSubscription('a2', 's1'), false);
        assert.equal(await s.deletePushSubscription('a1', 's1'), true);
        assert.equal(await s.deletePushSubscription('a1', 's1'), false);
        assert.deepEqual((await s.listPushSubscriptions('a1')).map((x) => x.id), ['s2']);
      });

      it('the same endpoint again replaces the keys and keeps id and creation time; the cap adds nothing past it', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await s.addPushSubscription(sub('s1', 'a1', 'https://push.example/x'), 2);
        const again = await s.addPushSubscription({ ...sub('s9', 'a1', 'https://push.example/x', NOW + 5), p256dh: 'new-key', auth: 'new-auth' }, 2);
        assert.deepEqual(again, { ...sub('s1', 'a1', 'https://push.example/x'), p256dh: 'new-key', auth: 'new-auth' });
        assert.deepEqual(await s.listPushSubscriptions('a1'), [again]);
        // The same endpoint on another device is another subscription.
        await s.addPushSubscription(sub('s2', 'a2', 'https://push.example/x'), 2);
        await s.addPushSubscription(sub('s3', 'a1'), 2);
        await rejectsWith(s.addPushSubscription(sub('s4', 'a1'), 2), 'push.too_many');
        assert.deepEqual((await s.listPushSubscriptions('a1')).map((x) => x.id), ['s1', 's3']);
        // Replacing at the cap is not adding.
        await s.addPushSubscription(sub('s5', 'a1', 'https://push.example/s3'), 2);
        assert.deepEqual((await s.listPushSubscriptions('a1')).map((x) => x.id), ['s1', 's3']);
      });

      it('a subscription of an unknown or removed device is refused', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await rejectsWith(s.addPushSubscription(sub('s1', 'zz'), 5), 'device.unknown');
        await s.deleteDevice('a2');
        await rejectsWith(s.addPushSubscription(sub('s1', 'a2'), 5), 'device.unknown');
        assert.deepEqual(await s.pushSubscriptionsOfUser(alice), []);
      });

      it("deleteDevice and deleteUser remove their subscriptions, and nobody else's", async () => {
        await addUser(s, alice, 'a1', 'a2');
        await addUser(s, bob, 'b1');
        await s.addPushSubscription(sub('s1', 'a1'), 5);
        await s.addPushSubscription(sub('s2', 'a2'), 5);
        await s.addPushSubscription(sub('s3', 'b1'), 5);
        assert.equal(await s.deleteDevice('a1'), true);
        assert.deepEqual(await s.listPushSubscriptions('a1'), []);
        assert.deepEqual((await s.pushSubscriptionsOfUser(alice)).map((x) => x.id), ['s2']);
        assert.equal((await s.deleteUser(alice)).deleted, true);
        assert.deepEqual(await s.listPushSubscriptions('a2'), []);
        assert.deepEqual(await s.pushSubscriptionsOfUser(alice), []);
        assert.deepEqual((await s.pushSubscriptionsOfUser(bob)).map((x) => x.id), ['s3']);
        assert.deepEqual(await s.usersWithPushSubscriptions(), [bob]);
      });
    });

    // ---- push subscription kinds (APNs and FCM device tokens; docs/server.md §Push) ------------
    describe('push subscription kinds', () => {
      const alice = 'alice@alpha.example';
      const token = (id: string, deviceId: string, kind: PushSubscriptionRow['kind'], endpoint: string, createdAt = NOW): PushSubscriptionRow => ({
        id,
        deviceId,
        kind,
        endpoint,
        p256dh: '',
        auth: '',
        createdAt,
      });

      it('keeps the kind; the same token under another kind is another subscription; same kind and token keeps the id', async () => {
        await addUser(s, alice, 'a1');
        const apns = token('k1', 'a1', 'apns', 'ab'.repeat(32));
        assert.deepEqual(await s.addPushSubscription(apns, 5), apns);
        // The same string as an FCM token (hex is a valid FCM alphabet) is not the APNs one.
        const fcm = token('k2', 'a1', 'fcm', 'ab'.repeat(32), NOW + 1);
        assert.deepEqual(await s.addPushSubscription(fcm, 5), fcm);
        // Re-registering the same APNs token answers the stored row.
        assert.deepEqual(await s.addPushSubscription(token('k9', 'a1', 'apns', 'ab'.repeat(32), NOW + 9), 5), apns);
        const web = { ...token('k3', 'a1', 'webpush', 'https://push.example/k3', NOW + 2), p256dh: 'key', auth: 'secret' };
        await s.addPushSubscription(web, 5);
        assert.deepEqual(await s.listPushSubscriptions('a1'), [apns, fcm, web]);
        assert.deepEqual((await s.pushSubscriptionsOfUser(alice)).map((x) => x.kind), ['apns', 'fcm', 'webpush']);
        // The cap counts every kind.
        await s.addPushSubscription(token('k4', 'a1', 'fcm', 'x4', NOW + 3), 4);
        await rejectsWith(s.addPushSubscription(token('k5', 'a1', 'apns', 'cd'.repeat(32)), 4), 'push.too_many');
        assert.equal(await s.deletePushSubscription('a1', 'k1'), true);
        assert.deepEqual((await s.listPushSubscriptions('a1')).map((x) => x.id), ['k2', 'k3', 'k4']);
      });
    });

    describe('sessions and challenges', () => {
      const alice = 'alice@alpha.example';
      const tok = fill(32, 7);

      it('a session is returned while now < expiresAt, then never', async () => {
        await addUser(s, alice, 'a1');
        const row = { tokenHash: tok, deviceId: 'a1', user: alice, createdAt: NOW, expiresAt: NOW + 10 };
        await s.createSession(row);
        assert.deepEqual(await s.getSession(tok, NOW), row);
        assert.deepEqual(await s.getSession(tok, NOW + 9), row);
        assert.equal(await s.getSession(tok, NOW + 10), null);
        assert.equal(await s.getSession(tok, NOW + 11), null);
        assert.equal(await s.getSession(fill(32, 8), NOW), null);
      });

      it('deleteSession: true then false', async () => {
        await addUser(s, alice, 'a1');
        await s.createSession({ tokenHash: tok, deviceId: 'a1', user: alice, createdAt: NOW, expiresAt: NOW + HOUR });
        assert.equal(await s.deleteSession(tok), true);
        assert.equal(await s.deleteSession(tok), false);
        assert.equal(await s.getSession(tok, NOW), null);
      });

      it('a challenge is taken once, before expiry, by its own device only', async () => {
        await addUser(s, alice, 'a1', 'a2');
        const c = fill(32, 1);
        await s.putChallenge(c, 'a1', NOW + 10);
        assert.equal(await s.takeChallenge(c, 'a2', NOW), false); // another device: refused and not consumed
        assert.equal(await s.takeChallenge(c, 'a1', NOW), true);
        assert.equal(await s.takeChallenge(c, 'a1', NOW), false);
        assert.equal(await s.takeChallenge(fill(32, 2), 'a1', NOW), false);
      });

      it('an expired challenge is refused (expiry at expiresAt exactly)', async () => {
        await addUser(s, alice, 'a1');
        await s.putChallenge(fill(32, 1), 'a1', NOW + 10);
        await s.putChallenge(fill(32, 2), 'a1', NOW + 10);
        assert.equal(await s.takeChallenge(fill(32, 2), 'a1', NOW + 9), true);
        assert.equal(await s.takeChallenge(fill(32, 1), 'a1', NOW + 10), false);
        assert.equal(await s.takeChallenge(fill(32, 1), 'a1', NOW + 9), false); // and gone for good
      });
    });

    describe('device prekeys', () => {
      const alice = 'alice@alpha.example';

      it('adds, counts (returning the number held) and claims each key exactly once, then null', async () => {
        await addUser(s, alice, 'a1', 'a2');
        assert.equal(await s.addPrekeys('a1', prekeys(1, 0, 3), 10), 3);
        assert.equal(await s.addPrekeys('a1', prekeys(1, 3, 2), 10), 5);
        assert.equal(await s.addPrekeys('a2', prekeys(2, 0, 1), 10), 1);
        assert.equal(await s.countPrekeys('a1'), 5);
        const got: Uint8Array[] = [];
        for (let i = 0; i < 5; i++) {
          const k = await s.claimPrekey('a1');
          assert.ok(k !== null, 'k !== null');
          got.push(k);
        }
        // The claimed value is the encoded DevicePrekey, not the bare key.
        assert.deepEqual(hex(got), hex(prekeys(1, 0, 5).map((p) => p.encoded)));
        assert.equal(await s.claimPrekey('a1'), null);
        assert.equal(await s.countPrekeys('a1'), 0);
        assert.equal(await s.countPrekeys('a2'), 1);
        assert.equal(await s.claimPrekey('nobody'), null);
      });

      it('duplicates (within the upload and with stored keys) are ignored', async () => {
        await addUser(s, alice, 'a1');
        const [k0, k1] = prekeys(1, 0, 2);
        assert.equal(await s.addPrekeys('a1', [k0!, k0!, k1!], 10), 2);
        assert.equal(await s.addPrekeys('a1', [k1!, { prekey: k0!.prekey, encoded: b(9) }], 10), 2);
        assert.deepEqual(hex([(await s.claimPrekey('a1'))!, (await s.claimPrekey('a1'))!]), hex([k0!.encoded, k1!.encoded]));
      });

      it('max: up to max is fine; above it keys.too_many and nothing is inserted', async () => {
        await addUser(s, alice, 'a1');
        assert.equal(await s.addPrekeys('a1', prekeys(1, 0, 4), 5), 4);
        await rejectsWith(s.addPrekeys('a1', prekeys(1, 4, 2), 5), 'keys.too_many');
        assert.equal(await s.countPrekeys('a1'), 4);
        // Duplicates do not count towards the limit.
        assert.equal(await s.addPrekeys('a1', prekeys(1, 0, 4), 5), 4);
        assert.equal(await s.addPrekeys('a1', prekeys(1, 2, 3), 5), 5);
        const all: Uint8Array[] = [];
        for (let k = await s.claimPrekey('a1'); k !== null; k = await s.claimPrekey('a1')) all.push(k);
        assert.deepEqual(hex(all), hex(prekeys(1, 0, 5).map((p) => p.encoded)));
      });

      it('concurrent claims never return the same key twice', async () => {
        await addUser(s, alice, 'a1');
        await s.addPrekeys('a1', prekeys(1, 0, 100), 1000);
        const got = await Promise.all(Array.from({ length: 150 }, () => s.claimPrekey('a1')));
        const keys = got.filter((k): k is Uint8Array => k !== null);
        assert.equal(keys.length, 100);
        assert.deepEqual(hex(keys), hex(prekeys(1, 0, 100).map((p) => p.encoded)));
      });
    });

    describe('topic keys', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@alpha.example';

      it('adds, counts and claims each key exactly once per user, then null', async () => {
        await addUser(s, alice, 'a1');
        await addUser(s, bob, 'b1');
        assert.equal(await s.addTopicKeys(alice, topicKeys(0, 3), 10), 3);
        assert.equal(await s.addTopicKeys(bob, topicKeys(10, 1), 10), 1);
        assert.equal(await s.countTopicKeys(alice), 3);
        const got = [(await s.claimTopicKey(alice))!, (await s.claimTopicKey(alice))!, (await s.claimTopicKey(alice))!];
        assert.deepEqual(hex(got), hex(topicKeys(0, 3).map((k) => k.encoded)));
        assert.equal(await s.claimTopicKey(alice), null);
        assert.equal(await s.countTopicKeys(alice), 0);
        assert.equal(await s.countTopicKeys(bob), 1);
        assert.equal(await s.claimTopicKey('ghost@alpha.example'), null);
      });

      it('duplicate key ids are ignored; above max keys.too_many and nothing is inserted', async () => {
        await addUser(s, alice, 'a1');
        assert.equal(await s.addTopicKeys(alice, [...topicKeys(0, 2), ...topicKeys(0, 2)], 3), 2);
        await rejectsWith(s.addTopicKeys(alice, topicKeys(2, 2), 3), 'keys.too_many');
        assert.equal(await s.countTopicKeys(alice), 2);
        assert.equal(await s.addTopicKeys(alice, topicKeys(0, 3), 3), 3);
      });

      it('concurrent claims never return the same key twice', async () => {
        await addUser(s, alice, 'a1');
        await s.addTopicKeys(alice, topicKeys(0, 60), 1000);
        const got = await Promise.all(Array.from({ length: 80 }, () => s.claimTopicKey(alice)));
        const keys = got.filter((k): k is Uint8Array => k !== null);
        assert.deepEqual(hex(keys), hex(topicKeys(0, 60).map((k) => k.encoded)));
      });
    });

    describe('key bundles', () => {
      const alice = 'alice@alpha.example';

      it('ids increase; list is in id order; ack deletes ids ≤ upTo of that device only', async () => {
        await addUser(s, alice, 'a1', 'a2', 'a3');
        const i1 = await s.addBundle('a2', 'a1', b(1), NOW);
        const i2 = await s.addBundle('a3', 'a1', b(2), NOW);
        const i3 = await s.addBundle('a2', 'a3', b(3), NOW);
        const i4 = await s.addBundle('a2', 'a1', b(4), NOW);
        assert.ok(i1 < i2 && i2 < i3 && i3 < i4, 'i1 < i2 && i2 < i3 && i3 < i4');
        assert.deepEqual(await s.listBundles('a2'), [
          { id: i1, senderDeviceId: 'a1', encoded: b(1) },
          { id: i3, senderDeviceId: 'a3', encoded: b(3) },
          { id: i4, senderDeviceId: 'a1', encoded: b(4) },
        ]);
        assert.equal(await s.ackBundles('a2', i3), 2);
        assert.equal(await s.ackBundles('a2', i3), 0);
        assert.deepEqual((await s.listBundles('a2')).map((x) => x.id), [i4]);
        assert.deepEqual((await s.listBundles('a3')).map((x) => x.id), [i2]);
        assert.deepEqual(await s.listBundles('a1'), []);
      });

      it('ids are never reused, even after the newest bundle is acknowledged', async () => {
        await addUser(s, alice, 'a1', 'a2');
        const i1 = await s.addBundle('a2', 'a1', b(1), NOW);
        assert.equal(await s.ackBundles('a2', i1), 1);
        const i2 = await s.addBundle('a2', 'a1', b(2), NOW);
        assert.ok(i2 > i1, 'i2 > i1');
      });

      it('each bundle writes a bundle event for the recipient device only', async () => {
        await addUser(s, alice, 'a1', 'a2');
        const before = await s.latestEventSeq();
        await s.addBundle('a2', 'a1', b(1), NOW + 5);
        const ev = await s.eventsSince(before, alice, 'a2', 100);
        assert.equal(ev.length, 1);
        assert.deepEqual(ev[0], { seq: ev[0]!.seq, kind: 'bundle', topicId: null, user: null, deviceId: 'a2', index: null, createdAt: NOW + 5 });
        assert.ok(ev[0]!.seq > before, 'ev[0]!.seq > before');
        assert.equal(await s.latestEventSeq(), ev[0]!.seq);
        assert.deepEqual(await s.eventsSince(before, alice, 'a1', 100), []);
      });
    });

    describe('deleted user names', () => {
      it('are never registered again', async () => {
        const alice = 'alice@alpha.example';
        assert.equal(await s.nameTaken(alice), false);
        await addUser(s, alice, 'a1');
        assert.equal(await s.nameTaken(alice), true);
        assert.equal((await s.deleteUser(alice)).deleted, true);
        assert.equal(await s.getUser(alice), null);
        assert.equal(await s.nameTaken(alice), true);
        await s.createPin(pinRow('again', alice, 'secret-again'));
        assert.equal(await s.registerWithPin(userRow(alice), deviceRow('a9', alice), pinHashOf('secret-again'), NOW), 'user_exists');
        assert.equal(await s.getUser(alice), null);
      });
    });

    describe('retention', () => {
      const alice = 'alice@alpha.example';

      it('purgeExpired deletes expired sessions and challenges, old idempotency records and old events, and nothing else', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await s.createSession({ tokenHash: fill(32, 1), deviceId: 'a1', user: alice, createdAt: NOW, expiresAt: NOW + 10 });
        await s.createSession({ tokenHash: fill(32, 2), deviceId: 'a1', user: alice, createdAt: NOW, expiresAt: NOW + HOUR });
        await s.putChallenge(fill(32, 3), 'a1', NOW + 10);
        await s.putChallenge(fill(32, 4), 'a1', NOW + HOUR);
        await s.putIdempotency({ ...idem('a1', 'old'), createdAt: NOW });
        await s.putIdempotency({ ...idem('a1', 'new'), createdAt: NOW + 100 });
        await s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, { ...batch(T1, 0, 1, { members: [admin(0, alice)] }), now: NOW });
        const bid = await s.addBundle('a2', 'a1', b(1), NOW);
        await s.append(T1, { ...batch(T1, 1, 1), now: NOW + 100 });
        assert.equal(await s.eventsPurgedThrough(), 0);
        const all = await s.eventsSince(0, alice, 'a2', 100);
        const r = await s.purgeExpired(NOW + 50, { idempotencyBefore: NOW + 50, eventsBefore: NOW + 50 });
        assert.deepEqual(r, { sessions: 1, challenges: 1, idempotency: 1, events: all.filter((e) => e.createdAt < NOW + 50).length });
        assert.equal(await s.getSession(fill(32, 1), NOW), null);
        assert.notEqual(await s.getSession(fill(32, 2), NOW), null);
        assert.equal(await s.takeChallenge(fill(32, 3), 'a1', NOW), false);
        assert.equal(await s.takeChallenge(fill(32, 4), 'a1', NOW), true);
        assert.equal(await s.getIdempotency('a1', 'old'), null);
        assert.notEqual(await s.getIdempotency('a1', 'new'), null);
        // What is left of the stream is a suffix; the purge horizon says where it starts.
        const left = await s.eventsSince(0, alice, 'a2', 100);
        const horizon = await s.eventsPurgedThrough();
        assert.ok(left.length > 0 && left.every((e) => e.seq > horizon), 'the remaining events all lie after the horizon');
        assert.deepEqual(left, all.filter((e) => e.seq > horizon));
        // Data itself is untouched.
        assert.equal((await s.getEntries(T1, 0, 10)).length, 2);
        assert.deepEqual((await s.listBundles('a2')).map((x) => x.id), [bid]);
        assert.equal((await s.listDevices(alice)).length, 2);
        // A second purge with an older cutoff never lowers the horizon.
        await s.purgeExpired(NOW, { idempotencyBefore: 0, eventsBefore: 0 });
        assert.equal(await s.eventsPurgedThrough(), horizon);
      });
    });

    describe('key uploads', () => {
      const alice = 'alice@alpha.example';
      const upload = (clientId: string, opts: { keys?: number; max?: number; bundles?: number } = {}) => {
        const { response: _unused, ...idempotency } = idem('a1', clientId);
        void _unused;
        return {
          user: alice,
          senderDeviceId: 'a1',
          ...(opts.keys === undefined ? {} : { topicKeys: { keys: topicKeys(0, opts.keys), max: opts.max ?? 10 } }),
          bundles: Array.from({ length: opts.bundles ?? 1 }, (_, i) => ({ recipientDeviceId: 'a2', encoded: b(0xb0, i) })),
          idempotency,
          response: { status: 201, body: { count: null, note: 'kept' }, countField: 'count' },
          now: NOW,
        };
      };

      it('stores keys, bundles (with their events) and the idempotency record with the response made from the result', async () => {
        await addUser(s, alice, 'a1', 'a2');
        const before = await s.latestEventSeq();
        const r = await s.addKeyUpload(upload('up-1', { keys: 3, bundles: 2 }));
        assert.equal(r.topicKeys, 3);
        assert.equal(r.bundleIds.length, 2);
        assert.equal(await s.countTopicKeys(alice), 3);
        assert.deepEqual((await s.listBundles('a2')).map((x) => x.id), r.bundleIds);
        const read = (await s.eventsSince(before, alice, 'a2', 10)).filter((e) => e.kind === 'bundle');
        assert.equal(read.length, 2);
        assert.deepEqual(r.events, read.map((e) => ({ seq: e.seq, kind: 'bundle', deviceId: 'a2' })), 'the events written are reported with their seqs');
        const recorded = (await s.getIdempotency('a1', 'up-1'))!.response;
        assert.deepEqual(JSON.parse(recorded), { status: 201, body: { count: 3, note: 'kept' } }, 'the count field set, the rest as given');
        assert.equal(r.response, recorded, 'the response returned is the one stored');
        const onlyBundles = await s.addKeyUpload(upload('up-2', { bundles: 1 }));
        assert.equal(onlyBundles.topicKeys, null);
        assert.deepEqual(JSON.parse(onlyBundles.response), { status: 201, body: { count: null, note: 'kept' } });
      });

      it('is all or nothing: a full key pool or a used client id stores nothing', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await rejectsWith(s.addKeyUpload(upload('up-1', { keys: 3, max: 2, bundles: 2 })), 'keys.too_many');
        assert.equal(await s.countTopicKeys(alice), 0);
        assert.deepEqual(await s.listBundles('a2'), []);
        assert.equal(await s.getIdempotency('a1', 'up-1'), null);
        await s.addKeyUpload(upload('up-2', { keys: 1 }));
        const seq = await s.latestEventSeq();
        await rejectsWith(s.addKeyUpload(upload('up-2', { keys: 2, bundles: 3 })), 'store.conflict');
        assert.equal(await s.countTopicKeys(alice), 1);
        assert.equal((await s.listBundles('a2')).length, 1);
        assert.equal(await s.latestEventSeq(), seq, 'no event of the refused upload');
      });
    });

    describe('idempotency', () => {
      it('put then get; another id or device is null; a second put of the id is store.conflict', async () => {
        await addUser(s, 'alice@alpha.example', 'a1', 'a2');
        assert.equal(await s.getIdempotency('a1', 'c1'), null);
        const row = idem('a1', 'c1', '{"seq":1}');
        await s.putIdempotency(row);
        assert.deepEqual(await s.getIdempotency('a1', 'c1'), row);
        assert.equal(await s.getIdempotency('a1', 'c2'), null);
        assert.equal(await s.getIdempotency('a2', 'c1'), null);
        await rejectsWith(s.putIdempotency(idem('a1', 'c1', '{"seq":2}')), 'store.conflict');
        assert.deepEqual(await s.getIdempotency('a1', 'c1'), row);
        await s.putIdempotency(idem('a2', 'c1'));
      });
    });

    describe('topics and logs', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@remote.example';

      it('getUpdates returns only the update entries, in log order', async () => {
        await addUser(s, alice, 'a1');
        await s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, batch(T1, 0, 3, { members: [admin(0, alice)] }));
        const upd = { index: 3, type: 'update' as const, entry: entryBytes(T1, 3) };
        await s.append(T1, { ...batch(T1, 3, 0), entries: [upd], hashes: [{ index: 3, hash: hashOf(T1, 3) }], newSize: 4, nonces: [] });
        await s.append(T1, batch(T1, 4, 2));
        assert.deepEqual(
          (await s.getUpdates(T1)).map((e) => [e.index, e.type]),
          [
            [0, 'update'],
            [3, 'update'],
          ],
        );
        assert.deepEqual(await s.getUpdates(T2), []);
      });

      it('appends issued together succeed or fail each on its own (group commit must not couple them)', async () => {
        await addUser(s, alice, 'a1');
        for (const t of [T1, T2, T3]) {
          await s.createTopic({ topicId: t, host: 'alpha.example', createdAt: NOW }, batch(t, 0, 1, { members: [admin(0, alice)] }));
        }
        // Not awaited one by one: a backend may commit these in one transaction.
        const results = await Promise.allSettled([
          s.append(T1, batch(T1, 1, 1)),
          s.append(T2, batch(T2, 5, 1)), // wrong expected size
          s.append(T3, batch(T3, 1, 1)),
          s.append(T1, batch(T1, 2, 1)), // builds on the first
          s.append(T3, batch(T3, 2, 1, { nonces: [nonceOf(1)] })), // nonce of T3's entry 1: replay
        ]);
        assert.deepEqual(
          results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as { code?: string }).code)),
          ['ok', 'store.conflict', 'ok', 'ok', 'topic.replay'],
        );
        assert.equal((await s.getTopic(T1))!.size, 3);
        assert.equal((await s.getTopic(T2))!.size, 1);
        assert.equal((await s.getTopic(T3))!.size, 2);
        assert.equal((await s.getEntries(T3, 0, 10)).length, 2, 'the refused append left no entry');
      });

      it('append records the batch time on its events', async () => {
        await addUser(s, alice, 'a1');
        await s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, batch(T1, 0, 1, { members: [admin(0, alice)] }));
        const cursor = await s.latestEventSeq();
        await s.append(T1, { ...batch(T1, 1, 1), now: NOW + 5 });
        assert.deepEqual(
          (await s.eventsSince(cursor, alice, 'a1', 10)).map((e) => [e.kind, e.index, e.createdAt]),
          [['entry', 1, NOW + 5]],
        );
      });

      it('createTopic persists the topic, entries, hashes, members, nonces and idempotency record', async () => {
        await addUser(s, alice, 'a1');
        const bt = batch(T1, 0, 3, { members: [admin(0, alice), participant(1, bob)], idempotency: idem('a1', 'create'), epochStartSize: 1 });
        await s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, bt);
        assert.deepEqual(await s.getTopic(T1), {
          topicId: T1,
          host: 'alpha.example',
          size: 3,
          epochStartSize: 1,
          checkpoint: bt.checkpoint,
          createdAt: NOW,
        });
        // Each entry comes back with the checkpoint of the log ending with it, when one was
        // signed: the batch's checkpoint belongs to its last entry (protocol §17.4).
        assert.deepEqual(
          await s.getEntries(T1, 0, 10),
          bt.entries.map((e, i) => ({ ...e, checkpoint: i === bt.entries.length - 1 ? bt.checkpoint : null })),
        );
        assert.deepEqual(await s.readHashes(T1, [0, 1, 2]), [hashOf(T1, 0), hashOf(T1, 1), hashOf(T1, 2)]);
        assert.deepEqual(await s.getMembers(T1), [admin(0, alice), participant(1, bob)]);
        assert.equal(await s.hasNonce(T1, nonceOf(1)), true);
        assert.equal(await s.hasNonce(T1, nonceOf(2)), true);
        assert.equal(await s.hasNonce(T1, nonceOf(3)), false);
        assert.equal(await s.hasNonce(T2, nonceOf(1)), false);
        assert.deepEqual(await s.getIdempotency('a1', 'create'), idem('a1', 'create'));
        assert.deepEqual(hex(await s.topicsOf(alice)), hex([T1]));
        assert.deepEqual(hex(await s.topicsOf(bob)), hex([T1]));
        assert.deepEqual(await s.topicsOf('carol@alpha.example'), []);
      });

      it('createTopic writes one entry event per entry and a membership event per initial member', async () => {
        await createTopic(s, T1, [admin(0, alice), participant(1, bob)], 2);
        const ev = await s.eventsSince(0, alice, 'a1', 100);
        assert.deepEqual(
          ev.map((e) => [e.kind, e.topicId && toHex(e.topicId), e.user, e.index]),
          [
            ['entry', toHex(T1), null, 0],
            ['entry', toHex(T1), null, 1],
            ['membership', toHex(T1), alice, null],
          ],
        );
        assert.ok(ev.every((e) => e.createdAt === NOW), 'ev.every((e) => e.createdAt === NOW)');
        const bobs = await s.eventsSince(0, bob, 'b1', 100);
        assert.deepEqual(bobs.filter((e) => e.kind === 'membership').map((e) => e.user), [bob]);
        // What it reports writing is what the store holds, seq for seq.
        const written = await s.createTopic({ topicId: T2, host: 'alpha.example', createdAt: NOW }, batch(T2, 0, 1, { members: [admin(0, 'carol@alpha.example')] }));
        const read = await s.eventsSince(bobs[bobs.length - 1]!.seq, 'carol@alpha.example', 'c1', 100);
        assert.deepEqual(written, [
          { seq: read[0]!.seq, kind: 'entry', index: 0 },
          { seq: read[1]!.seq, kind: 'membership', user: 'carol@alpha.example' },
        ]);
        assert.equal(read.length, 2);
      });

      it('createTopic on a taken id: topic.exists and nothing changes', async () => {
        await createTopic(s, T1, [admin(0, alice)], 2);
        const before = await topicState(s, T1);
        await rejectsWith(
          s.createTopic({ topicId: T1, host: 'other.example', createdAt: NOW + 1 }, batch(T1, 0, 1, { members: [admin(0, bob)], nonces: [nonceOf(9)] })),
          'topic.exists',
        );
        assert.deepEqual(await topicState(s, T1), before);
        assert.equal(await s.hasNonce(T1, nonceOf(9)), false);
        assert.deepEqual(await s.topicsOf(bob), []);
      });

      it('createTopic with a nonce twice in its batch: topic.replay and no topic', async () => {
        await rejectsWith(
          s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, batch(T1, 0, 3, { members: [admin(0, alice)], nonces: [nonceOf(1), nonceOf(1)] })),
          'topic.replay',
        );
        assert.equal(await s.getTopic(T1), null);
        assert.deepEqual(await s.getEntries(T1, 0, 10), []);
        assert.deepEqual(await s.topicsOf(alice), []);
        assert.equal(await s.latestEventSeq(), 0);
        assert.deepEqual(await s.counts(), { users: 0, devices: 0, topics: 0, entries: 0, pins: 0 });
      });

      it('append persists entries, hashes, nonces, head, epoch start and idempotency record', async () => {
        await addUser(s, alice, 'a1');
        await createTopic(s, T1, [admin(0, alice)], 1);
        const bt = batch(T1, 1, 2, { idempotency: idem('a1', 'post-1'), epochStartSize: 1 });
        await s.append(T1, bt);
        const bt2 = batch(T1, 3, 1, { epochStartSize: 4 });
        await s.append(T1, bt2);
        const t = await s.getTopic(T1);
        assert.equal(t?.size, 4);
        assert.equal(t?.epochStartSize, 4);
        assert.deepEqual(t?.checkpoint, bt2.checkpoint);
        assert.deepEqual(
          (await s.getEntries(T1, 0, 10)).map((e) => [e.index, e.type, toHex(e.entry)]),
          [0, 1, 2, 3].map((i) => [i, i === 0 ? 'update' : 'message', toHex(entryBytes(T1, i))]),
        );
        assert.deepEqual(await s.readHashes(T1, [3, 1]), [hashOf(T1, 3), hashOf(T1, 1)]);
        for (const i of [1, 2, 3]) assert.equal(await s.hasNonce(T1, nonceOf(i)), true);
        assert.deepEqual(await s.getIdempotency('a1', 'post-1'), idem('a1', 'post-1'));
        assert.deepEqual(await s.getMembers(T1), [admin(0, alice)]);
      });

      it('append at the wrong size: store.conflict and nothing written', async () => {
        await addUser(s, alice, 'a1');
        await createTopic(s, T1, [admin(0, alice)], 2);
        const before = await topicState(s, T1);
        for (const expected of [1, 3, 0]) {
          const bt = batch(T1, expected, 1, { members: [admin(0, alice), participant(1, bob)], idempotency: idem('a1', 'x'), nonces: [nonceOf(50)] });
          await rejectsWith(s.append(T1, bt), 'store.conflict');
        }
        assert.deepEqual(await topicState(s, T1), before);
        assert.equal(await s.hasNonce(T1, nonceOf(50)), false);
        assert.equal(await s.getIdempotency('a1', 'x'), null);
        assert.deepEqual(await s.topicsOf(bob), []);
        await assert.rejects(s.readHashes(T1, [2]));
      });

      it('append with a nonce seen before (or twice in the batch): topic.replay and nothing written', async () => {
        await addUser(s, alice, 'a1');
        await createTopic(s, T1, [admin(0, alice)], 2); // nonce 1 is taken
        const before = await topicState(s, T1);
        await rejectsWith(
          s.append(T1, batch(T1, 2, 2, { nonces: [nonceOf(60), nonceOf(1)], idempotency: idem('a1', 'x'), members: [admin(0, alice), participant(1, bob)] })),
          'topic.replay',
        );
        await rejectsWith(s.append(T1, batch(T1, 2, 2, { nonces: [nonceOf(61), nonceOf(61)] })), 'topic.replay');
        assert.deepEqual(await topicState(s, T1), before);
        assert.equal(await s.hasNonce(T1, nonceOf(60)), false);
        assert.equal(await s.hasNonce(T1, nonceOf(61)), false);
        assert.equal(await s.getIdempotency('a1', 'x'), null);
        // The same nonce in another topic is not a replay.
        await createTopic(s, T2, [admin(0, alice)], 2);
        assert.equal(await s.hasNonce(T2, nonceOf(1)), true);
      });

      it('append whose idempotency record exists: store.conflict and nothing written', async () => {
        await addUser(s, alice, 'a1');
        await createTopic(s, T1, [admin(0, alice)], 1);
        await s.putIdempotency(idem('a1', 'dup', 'first'));
        const before = await topicState(s, T1);
        await rejectsWith(s.append(T1, batch(T1, 1, 1, { idempotency: idem('a1', 'dup', 'second') })), 'store.conflict');
        assert.deepEqual(await topicState(s, T1), before);
        assert.equal(await s.hasNonce(T1, nonceOf(1)), false);
        assert.equal((await s.getIdempotency('a1', 'dup'))?.response, 'first');
      });

      it('append to an unknown topic: topic.unknown', async () => {
        await rejectsWith(s.append(T3, batch(T3, 0, 1)), 'topic.unknown');
        assert.equal(await s.getTopic(T3), null);
      });

      it('getEntries: from and limit, past the end, other topics', async () => {
        await createTopic(s, T1, [admin(0, alice)], 5);
        await createTopic(s, T2, [admin(0, alice)], 1);
        const idx = async (from: number, limit: number) => (await s.getEntries(T1, from, limit)).map((e) => e.index);
        assert.deepEqual(await idx(0, 100), [0, 1, 2, 3, 4]);
        assert.deepEqual(await idx(1, 2), [1, 2]);
        assert.deepEqual(await idx(3, 100), [3, 4]);
        assert.deepEqual(await idx(4, 1), [4]);
        assert.deepEqual(await idx(5, 10), []);
        assert.deepEqual(await idx(50, 10), []);
        assert.deepEqual(await idx(0, 0), []);
        assert.deepEqual(await s.getEntries(T3, 0, 10), []);
        assert.deepEqual((await s.getEntries(T2, 0, 10)).map((e) => toHex(e.entry)), [toHex(entryBytes(T2, 0))]);
      });

      it('readHashes: in the order asked, empty for none, and throws if one is missing', async () => {
        await createTopic(s, T1, [admin(0, alice)], 3);
        assert.deepEqual(await s.readHashes(T1, [2, 0, 2]), [hashOf(T1, 2), hashOf(T1, 0), hashOf(T1, 2)]);
        assert.deepEqual(await s.readHashes(T1, []), []);
        await assert.rejects(s.readHashes(T1, [0, 3]));
        await assert.rejects(s.readHashes(T2, [0]));
      });

      it('members are replaced when a batch carries them, with membership events for who joined or left', async () => {
        const carol = 'carol@alpha.example';
        await createTopic(s, T1, [admin(0, alice), participant(1, bob)], 1);
        const cursor = await s.latestEventSeq();
        // bob leaves, carol joins, alice's role changes (no event for her).
        const written = await s.append(T1, batch(T1, 1, 1, { members: [participant(0, alice), admin(2, carol)] }));
        // The append reports what it wrote, with consecutive seqs after the cursor: entries first.
        assert.deepEqual(written, [
          { seq: cursor + 1, kind: 'entry', index: 1 },
          { seq: cursor + 2, kind: 'membership', user: carol },
          { seq: cursor + 3, kind: 'membership', user: bob },
        ]);
        assert.deepEqual(await s.getMembers(T1), [participant(0, alice), admin(2, carol)]);
        assert.deepEqual(await s.topicsOf(bob), []);
        assert.deepEqual(hex(await s.topicsOf(carol)), hex([T1]));
        const kinds = async (u: string) =>
          (await s.eventsSince(cursor, u, 'none', 100)).map((e) => [e.kind, e.user, e.index, e.topicId && toHex(e.topicId)]);
        assert.deepEqual(await kinds(alice), [['entry', null, 1, toHex(T1)]]);
        assert.deepEqual(await kinds(bob), [['membership', bob, null, toHex(T1)]]);
        assert.deepEqual(await kinds(carol), [
          ['entry', null, 1, toHex(T1)],
          ['membership', carol, null, toHex(T1)],
        ]);
        // Without `members` the list stays as it is, and no membership events are written.
        const c2 = await s.latestEventSeq();
        assert.deepEqual(await s.append(T1, batch(T1, 2, 1)), [{ seq: c2 + 1, kind: 'entry', index: 2 }]);
        assert.deepEqual(await s.getMembers(T1), [participant(0, alice), admin(2, carol)]);
        assert.deepEqual((await s.eventsSince(c2, carol, 'none', 100)).map((e) => e.kind), ['entry']);
      });

      it('topicsOf lists every topic of the user', async () => {
        await createTopic(s, T1, [admin(0, alice)], 1);
        await createTopic(s, T2, [admin(0, bob), participant(1, alice)], 1);
        await createTopic(s, T3, [admin(0, bob)], 1);
        assert.deepEqual(hex(await s.topicsOf(alice)), hex([T1, T2]));
        assert.deepEqual(hex(await s.topicsOf(bob)), hex([T2, T3]));
      });
    });

    describe('live delivery', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@alpha.example';
      const carol = 'carol@alpha.example';

      it('latestEventSeq is 0 on an empty store and grows with every event', async () => {
        assert.equal(await s.latestEventSeq(), 0);
        await createTopic(s, T1, [admin(0, alice)], 2);
        const l1 = await s.latestEventSeq();
        assert.ok(l1 >= 3, 'l1 >= 3');
        await s.append(T1, batch(T1, 2, 1));
        assert.ok((await s.latestEventSeq()) > l1, '(await s.latestEventSeq()) > l1');
      });

      it('filters by membership now, by device for bundles and by user for membership; ascending seq', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await addUser(s, bob, 'b1');
        await addUser(s, carol, 'c1');
        await createTopic(s, T1, [admin(0, alice), participant(1, bob)], 1);
        await s.addBundle('a2', 'a1', b(1), NOW);
        await createTopic(s, T2, [admin(0, carol)], 1);
        await s.append(T1, batch(T1, 1, 1));

        const all = async (u: string, d: string) => s.eventsSince(0, u, d, 1000);
        const a1 = await all(alice, 'a1');
        const a2 = await all(alice, 'a2');
        assert.deepEqual(a1.map((e) => [e.kind, e.index]), [['entry', 0], ['membership', null], ['entry', 1]]);
        assert.deepEqual(a2.map((e) => [e.kind, e.index]), [['entry', 0], ['membership', null], ['bundle', null], ['entry', 1]]);
        for (const list of [a1, a2]) {
          for (let i = 1; i < list.length; i++) assert.ok(list[i - 1]!.seq < list[i]!.seq, 'list[i - 1]!.seq < list[i]!.seq');
        }
        // Carol is in T2 only; bob in T1 gets no bundles of alice's devices.
        assert.deepEqual((await all(carol, 'c1')).map((e) => [e.kind, toHex(e.topicId!)]), [['entry', toHex(T2)], ['membership', toHex(T2)]]);
        assert.deepEqual((await all(bob, 'b1')).map((e) => e.kind), ['entry', 'membership', 'entry']);
        assert.deepEqual((await all(bob, 'a2')).filter((e) => e.kind === 'bundle').length, 1); // the device id decides bundles
        assert.deepEqual(await all('dave@alpha.example', 'd1'), []);
      });

      it('after removal a user gets no entry events of the topic, only the membership event', async () => {
        await createTopic(s, T1, [admin(0, alice), participant(1, bob)], 1);
        const cursor = await s.latestEventSeq();
        await s.append(T1, batch(T1, 1, 1, { members: [admin(0, alice)] }));
        await s.append(T1, batch(T1, 2, 1));
        const ev = await s.eventsSince(cursor, bob, 'b1', 100);
        assert.deepEqual(ev.map((e) => [e.kind, e.user]), [['membership', bob]]);
        // "Member now": entries from before the removal are no longer delivered either.
        assert.deepEqual((await s.eventsSince(0, bob, 'b1', 100)).filter((e) => e.kind === 'entry'), []);
        assert.deepEqual((await s.eventsSince(cursor, alice, 'a1', 100)).map((e) => e.index), [1, 2]);
      });

      it('cursor: strictly after; limit: the first n; latest cursor: nothing', async () => {
        await createTopic(s, T1, [admin(0, alice)], 6);
        const ev = await s.eventsSince(0, alice, 'a1', 100);
        assert.equal(ev.length, 7);
        const seqs = ev.map((e) => e.seq);
        assert.deepEqual((await s.eventsSince(seqs[2]!, alice, 'a1', 100)).map((e) => e.seq), seqs.slice(3));
        assert.deepEqual((await s.eventsSince(seqs[1]!, alice, 'a1', 2)).map((e) => e.seq), seqs.slice(2, 4));
        assert.deepEqual(await s.eventsSince(await s.latestEventSeq(), alice, 'a1', 100), []);
        assert.deepEqual(await s.eventsSince(0, alice, 'a1', 0), []);
        // Paging with the last seq as the next cursor visits every event once.
        const paged: EventRow[] = [];
        for (let c = 0; ; ) {
          const page = await s.eventsSince(c, alice, 'a1', 3);
          if (page.length === 0) break;
          paged.push(...page);
          c = page[page.length - 1]!.seq;
        }
        assert.deepEqual(paged, ev);
      });

      it('events of a deleted device or user are not delivered again, and latestEventSeq never goes back', async () => {
        await addUser(s, alice, 'a1', 'a2');
        await s.addBundle('a2', 'a1', b(1), NOW);
        const latest = await s.latestEventSeq();
        assert.equal(await s.deleteDevice('a2'), true);
        assert.ok((await s.latestEventSeq()) >= latest, '(await s.latestEventSeq()) >= latest');
        assert.deepEqual(await s.eventsSince(0, alice, 'a2', 100), []);
        await createTopic(s, T1, [admin(0, alice)], 1);
        await s.deleteUser(alice);
        assert.deepEqual((await s.eventsSince(0, alice, 'a9', 100)).filter((e) => e.kind === 'membership'), []);
      });
    });

    describe('operations', () => {
      it('counts', async () => {
        assert.deepEqual(await s.counts(), { users: 0, devices: 0, topics: 0, entries: 0, pins: 0 });
        await addUser(s, 'alice@alpha.example', 'a1', 'a2');
        await addUser(s, 'bob@alpha.example', 'b1');
        await s.createPin(pinRow('p', 'carol@alpha.example', '1'));
        await s.createPin(pinRow('q', 'dave@alpha.example', '1', { expiresAt: NOW - 1 }));
        await createTopic(s, T1, [admin(0, 'alice@alpha.example')], 3);
        await createTopic(s, T2, [admin(0, 'bob@alpha.example')], 1);
        await s.append(T2, batch(T2, 1, 2));
        assert.deepEqual(await s.counts(), { users: 2, devices: 3, topics: 2, entries: 6, pins: 2 });
        await s.deleteDevice('a2');
        assert.equal((await s.counts()).devices, 2);
      });

      it('durability: everything written is there after close and reopen', async (t) => {
        if (h.reopen === undefined) return t.skip('no reopen');
        const alice = 'alice@alpha.example';
        await s.setMeta('name', 'alpha.example');
        await addUser(s, alice, 'a1', 'a2', 'a3');
        await s.deleteDevice('a3');
        await s.createPin(pinRow('p', 'bob@alpha.example', '1'));
        await s.createSession({ tokenHash: fill(32, 9), deviceId: 'a1', user: alice, createdAt: NOW, expiresAt: NOW + HOUR });
        await s.addPrekeys('a1', prekeys(1, 0, 3), 10);
        const claimed = await s.claimPrekey('a1');
        await s.addTopicKeys(alice, topicKeys(0, 2), 10);
        const bid = await s.addBundle('a2', 'a1', b(7), NOW);
        await s.putIdempotency(idem('a1', 'c'));
        await createTopic(s, T1, [admin(0, alice)], 2);
        await s.append(T1, batch(T1, 2, 1, { members: [admin(0, alice), participant(1, 'bob@alpha.example')] }));
        const before = {
          topic: await topicState(s, T1),
          events: await s.eventsSince(0, alice, 'a2', 100),
          pins: await s.listPins(),
          users: await s.listUsers(),
          devices: await s.listDevices(alice),
        };
        await s.close();

        s = await h.reopen();
        assert.deepEqual(
          {
            topic: await topicState(s, T1),
            events: await s.eventsSince(0, alice, 'a2', 100),
            pins: await s.listPins(),
            users: await s.listUsers(),
            devices: await s.listDevices(alice),
          },
          before,
        );
        assert.equal(await s.getMeta('name'), 'alpha.example');
        assert.notEqual(await s.getSession(fill(32, 9), NOW), null);
        assert.equal(await s.countPrekeys('a1'), 2);
        const rest = [(await s.claimPrekey('a1'))!, (await s.claimPrekey('a1'))!];
        assert.deepEqual(hex([claimed!, ...rest]), hex(prekeys(1, 0, 3).map((p) => p.encoded)));
        assert.equal(await s.countTopicKeys(alice), 2);
        assert.deepEqual(await s.listBundles('a2'), [{ id: bid, senderDeviceId: 'a1', encoded: b(7) }]);
        assert.deepEqual(await s.getIdempotency('a1', 'c'), idem('a1', 'c'));
        assert.deepEqual(await s.readHashes(T1, [0, 1, 2]), [hashOf(T1, 0), hashOf(T1, 1), hashOf(T1, 2)]);
        assert.equal(await s.hasNonce(T1, nonceOf(2)), true);
        await rejectsWith(s.addDevice(deviceRow('a3', alice)), 'device.exists');
        // Sequences carry on where they were.
        assert.ok((await s.addBundle('a2', 'a1', b(8), NOW)) > bid, 'bundle ids carry on');
      });

      it('backup: a consistent copy that opens as a store with the same data', async (t) => {
        if (h.openBackup === undefined) return t.skip('no openBackup');
        const dir = await mkdtemp(join(tmpdir(), 'rendezvous-backup-'));
        try {
          const alice = 'alice@alpha.example';
          await addUser(s, alice, 'a1');
          await s.addPrekeys('a1', prekeys(1, 0, 2), 10);
          await createTopic(s, T1, [admin(0, alice)], 3);
          const path = join(dir, 'backup.db');
          await s.backup(path);
          // Written after the backup: must not be in it.
          await s.append(T1, batch(T1, 3, 1));
          await s.setMeta('after', 'yes');

          const copy = await h.openBackup(path);
          try {
            assert.deepEqual(await copy.listUsers(), [userRow(alice)]);
            assert.deepEqual(await copy.listDevices(alice), [deviceRow('a1', alice)]);
            assert.equal(await copy.countPrekeys('a1'), 2);
            assert.equal((await copy.getTopic(T1))?.size, 3);
            assert.deepEqual(await copy.getEntries(T1, 0, 10), await s.getEntries(T1, 0, 3));
            assert.deepEqual(await copy.getMembers(T1), [admin(0, alice)]);
            assert.equal(await copy.getMeta('after'), null);
            assert.equal((await s.getTopic(T1))?.size, 4);
          } finally {
            await copy.close();
          }
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      });
    });

    describe('files', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@alpha.example';
      const blob = (t: Uint8Array, id: number, user: string, size = 100, deviceId = user === alice ? 'a1' : 'b1'): BlobRow => ({
        topicId: t,
        blobId: fill(32, id),
        size,
        user,
        deviceId,
        createdAt: NOW + id,
      });

      async function setup(): Promise<void> {
        await addUser(s, alice, 'a1');
        await addUser(s, bob, 'b1');
        await createTopic(s, T1, [admin(0, alice), participant(1, bob)], 2);
        await createTopic(s, T2, [admin(0, alice), participant(1, bob)], 1);
      }

      it('putBlob then getBlob returns every field; unknown is null', async () => {
        await setup();
        const r = blob(T1, 1, alice, 1234);
        assert.equal(await s.putBlob(r), true);
        assert.deepEqual(await s.getBlob(T1, r.blobId), r);
        assert.equal(await s.getBlob(T1, fill(32, 2)), null);
        // Blobs are scoped per topic: the same id in another topic is another blob.
        assert.equal(await s.getBlob(T2, r.blobId), null);
        assert.equal(await s.putBlob({ ...r, topicId: T2, user: bob, deviceId: 'b1' }), true);
        assert.equal((await s.getBlob(T2, r.blobId))?.user, bob);
        assert.equal((await s.getBlob(T1, r.blobId))?.user, alice);
      });

      it('putBlob is idempotent: the same topic and blob id again is false and changes nothing', async () => {
        await setup();
        const r = blob(T1, 1, alice);
        assert.equal(await s.putBlob(r), true);
        assert.equal(await s.putBlob(r), false);
        // Another uploader of the same content: the first keeps it (and pays for it).
        assert.equal(await s.putBlob({ ...r, user: bob, deviceId: 'b1', createdAt: NOW + 99 }), false);
        assert.deepEqual(await s.getBlob(T1, r.blobId), r);
        assert.equal(await s.blobBytesOf(bob), 0);
      });

      it('putBlob: topic.unknown without the topic, user.unknown without the uploader; nothing stored', async () => {
        await setup();
        await rejectsWith(s.putBlob(blob(T3, 1, alice)), 'topic.unknown');
        await rejectsWith(s.putBlob(blob(T1, 2, 'ghost@alpha.example')), 'user.unknown');
        assert.equal(await s.getBlob(T3, fill(32, 1)), null);
        assert.equal(await s.getBlob(T1, fill(32, 2)), null);
        assert.equal(await s.blobBytesOf('ghost@alpha.example'), 0);
      });

      it('putBlob for a user of another server (remoteUploader): no local account needed, quota still counted', async () => {
        await setup();
        const remote = 'erin@beta.example';
        assert.equal(await s.putBlob(blob(T1, 3, remote, 400), 1000, true), true);
        assert.equal(await s.blobBytesOf(remote), 400);
        await rejectsWith(s.putBlob(blob(T2, 4, remote, 700), 1000, true), 'blob.quota_exceeded');
      });

      it('blobBytesOf sums a user over all topics; putBlob enforces maxUserBytes atomically', async () => {
        await setup();
        assert.equal(await s.blobBytesOf(alice), 0);
        assert.equal(await s.putBlob(blob(T1, 1, alice, 300), 1000), true);
        assert.equal(await s.putBlob(blob(T2, 2, alice, 600), 1000), true);
        assert.equal(await s.putBlob(blob(T1, 3, bob, 50)), true);
        assert.equal(await s.blobBytesOf(alice), 900);
        assert.equal(await s.blobBytesOf(bob), 50);
        await rejectsWith(s.putBlob(blob(T1, 4, alice, 101), 1000), 'blob.quota_exceeded');
        assert.equal(await s.getBlob(T1, fill(32, 4)), null);
        assert.equal(await s.blobBytesOf(alice), 900);
        // Exactly at the limit is fine; an existing blob is not charged again.
        assert.equal(await s.putBlob(blob(T1, 4, alice, 100), 1000), true);
        assert.equal(await s.putBlob(blob(T1, 4, alice, 100), 1000), false);
        assert.equal(await s.blobBytesOf(alice), 1000);
        // Quotas are per user.
        assert.equal(await s.putBlob(blob(T1, 5, bob, 900), 1000), true);
      });

      it('deleteUser deletes and returns the rows of the blobs the user uploaded, in every topic', async () => {
        await setup();
        await s.putBlob(blob(T1, 1, alice));
        await s.putBlob(blob(T2, 2, alice));
        await s.putBlob(blob(T1, 3, bob));
        const r = await s.deleteUser(alice);
        assert.equal(r.deleted, true);
        const key = (x: { topicId: Uint8Array; blobId: Uint8Array }) => `${toHex(x.topicId)}/${toHex(x.blobId)}`;
        assert.deepEqual(r.blobs.map(key).sort(), [key({ topicId: T1, blobId: fill(32, 1) }), key({ topicId: T2, blobId: fill(32, 2) })].sort());
        assert.equal(await s.getBlob(T1, fill(32, 1)), null);
        assert.equal(await s.getBlob(T2, fill(32, 2)), null);
        assert.equal(await s.blobBytesOf(alice), 0);
        assert.deepEqual(await s.getBlob(T1, fill(32, 3)), blob(T1, 3, bob));
        assert.deepEqual(await s.deleteUser(alice), { deleted: false, blobs: [] });
      });

      it('deleteTopic deletes the topic with its log, hashes, members, nonces, events and blob rows', async () => {
        await setup();
        await s.append(T1, batch(T1, 2, 2, { members: [admin(0, alice), participant(1, bob), participant(2, 'carol@remote.example')] }));
        await s.putBlob(blob(T1, 1, alice, 10));
        await s.putBlob(blob(T1, 2, bob, 20));
        await s.putBlob(blob(T2, 3, alice, 40));
        const t2 = await topicState(s, T2);
        const countsBefore = await s.counts();

        const r = await s.deleteTopic(T1);
        assert.equal(r.deleted, true);
        assert.deepEqual(hex(r.blobIds), hex([fill(32, 1), fill(32, 2)]));
        assert.equal(await s.getTopic(T1), null);
        assert.deepEqual(await s.getEntries(T1, 0, 100), []);
        assert.deepEqual(await s.getMembers(T1), []);
        assert.equal(await s.hasNonce(T1, nonceOf(1)), false);
        await assert.rejects(s.readHashes(T1, [0]));
        assert.equal(await s.getBlob(T1, fill(32, 1)), null);
        assert.equal(await s.getBlob(T1, fill(32, 2)), null);
        assert.equal(await s.blobBytesOf(alice), 40);
        assert.equal(await s.blobBytesOf(bob), 0);
        assert.deepEqual(hex(await s.topicsOf(alice)), hex([T2]));
        // No event of the topic is left for anyone, members of other servers included.
        for (const [u, d] of [[alice, 'a1'], [bob, 'b1'], ['carol@remote.example', 'c1']] as const) {
          assert.deepEqual((await s.eventsSince(0, u, d, 1000)).filter((e) => e.topicId !== null && toHex(e.topicId) === toHex(T1)), []);
        }
        assert.deepEqual(await s.counts(), { ...countsBefore, topics: countsBefore.topics - 1, entries: countsBefore.entries - 4 });
        // The other topic is untouched (latest event seq aside, which never goes back).
        assert.deepEqual({ ...(await topicState(s, T2)), latest: t2.latest, counts: t2.counts }, t2);
        assert.equal(await s.latestEventSeq() >= t2.latest, true);

        assert.deepEqual(await s.deleteTopic(T1), { deleted: false, blobIds: [] });
        assert.deepEqual(await s.deleteTopic(T3), { deleted: false, blobIds: [] });
        // The id is free again.
        await createTopic(s, T1, [admin(0, bob)], 1);
        assert.deepEqual(await s.getMembers(T1), [admin(0, bob)]);
      });

      it('durability: blob rows are there after close and reopen', async (t) => {
        if (h.reopen === undefined) return t.skip('no reopen');
        await setup();
        await s.putBlob(blob(T1, 1, alice, 77));
        await s.close();
        s = await h.reopen();
        assert.deepEqual(await s.getBlob(T1, fill(32, 1)), blob(T1, 1, alice, 77));
        assert.equal(await s.blobBytesOf(alice), 77);
      });
    });

    describe('federation', () => {
      const alice = 'alice@alpha.example';
      const bob = 'bob@alpha.example';
      const BETA = 'beta.example';
      const GAMMA = 'gamma.example';
      const DELTA = 'delta.example';
      type Peers = NonNullable<AppendBatch['peers']>;
      const withPeers = (bt: AppendBatch, peers: Peers): AppendBatch => ({ ...bt, peers });
      const cursor = (topicId: Uint8Array, server: string, nextIndex: number, until: number | null, size: number): ReplicationRow => ({
        topicId,
        server,
        nextIndex,
        until,
        size,
      });
      /** replicationDue in topic order (the interface does not promise an order). */
      const due = async (server: string) =>
        (await s.replicationDue(server)).sort((x, y) => (toHex(x.topicId) < toHex(y.topicId) ? -1 : toHex(x.topicId) > toHex(y.topicId) ? 1 : 0));
      const destinations = async () => (await s.federationDestinations()).sort();
      async function hosted(t: Uint8Array, entries: number, peers: Peers): Promise<void> {
        await s.createTopic({ topicId: t, host: 'alpha.example', createdAt: NOW }, withPeers(batch(t, 0, entries, { members: [admin(0, alice)] }), peers));
      }
      type NewOutbox = Omit<OutboxRow, 'id' | 'attempts'>;
      const outbox = (destination: string, payload: string, opts: Partial<NewOutbox> = {}): NewOutbox => ({
        destination,
        kind: 'submit',
        topicId: T1,
        coalesceKey: null,
        payload,
        createdAt: NOW,
        ...opts,
      });
      const witnessRow = (destination: string, payload: string, key = `witness:${toHex(T1)}`, createdAt = NOW): NewOutbox =>
        outbox(destination, payload, { kind: 'witness', coalesceKey: key, createdAt });
      const stored = (id: number, row: NewOutbox, attempts = 0): OutboxRow => ({ id, ...row, attempts });
      const fork = (topicId: Uint8Array, kind: ForkRow['kind'], server: string, createdAt: number): Omit<ForkRow, 'id'> => ({
        topicId,
        kind,
        server,
        evidence: JSON.stringify({ checkpoints: [`cp-${createdAt}`, `cp-${createdAt + 1}`], detail: `${kind} by ${server}` }),
        createdAt,
      });

      it('server keys: null until put; put then get returns every key in order; a put replaces them; per server', async () => {
        assert.equal(await s.getServerKeys(BETA), null);
        await s.putServerKeys(BETA, [fill(32, 1), fill(32, 2)], NOW);
        assert.deepEqual(await s.getServerKeys(BETA), [fill(32, 1), fill(32, 2)]);
        assert.equal(await s.getServerKeys(GAMMA), null);
        // A rotation: the new list replaces the old one, in the order given (oldest first).
        await s.putServerKeys(BETA, [fill(32, 2), fill(32, 3)], NOW + 1);
        assert.deepEqual(await s.getServerKeys(BETA), [fill(32, 2), fill(32, 3)]);
        // Contacted with no keys is not "never contacted".
        await s.putServerKeys(GAMMA, [], NOW);
        assert.deepEqual(await s.getServerKeys(GAMMA), []);
        assert.deepEqual(await s.getServerKeys(BETA), [fill(32, 2), fill(32, 3)]);
      });

      it('remote users: null until pinned; the first key pinned is returned and never replaced', async () => {
        const erin = 'erin@beta.example';
        const frank = 'frank@beta.example';
        assert.equal(await s.getRemoteUser(erin), null);
        assert.deepEqual(await s.pinRemoteUser(erin, fill(32, 1), NOW), fill(32, 1));
        assert.deepEqual(await s.getRemoteUser(erin), fill(32, 1));
        assert.deepEqual(await s.pinRemoteUser(erin, fill(32, 2), NOW + 1), fill(32, 1));
        assert.deepEqual(await s.getRemoteUser(erin), fill(32, 1));
        assert.equal(await s.getRemoteUser(frank), null);
        assert.deepEqual(await s.pinRemoteUser(frank, fill(32, 3), NOW), fill(32, 3));
        assert.deepEqual(await s.getRemoteUser(erin), fill(32, 1));
      });

      it('concurrent pins of one remote user all return the one key that was pinned', async () => {
        const erin = 'erin@beta.example';
        const got = await Promise.all(Array.from({ length: 8 }, (_, i) => s.pinRemoteUser(erin, fill(32, i + 1), NOW + i)));
        const pinned = await s.getRemoteUser(erin);
        assert.ok(pinned !== null, 'a key is pinned');
        assert.deepEqual(hex(got), hex(got.map(() => pinned)));
      });

      it('append peers: a server not yet known gets a cursor at next index 0 with its until', async () => {
        await hosted(T1, 3, [{ server: BETA, until: null }]);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 0, null, 3)]);
        await s.append(T1, withPeers(batch(T1, 3, 2), [{ server: GAMMA, until: 4 }]));
        assert.deepEqual(await due(GAMMA), [cursor(T1, GAMMA, 0, 4, 5)]);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 0, null, 5)]);
        assert.deepEqual(await due(DELTA), []);
      });

      it('append peers on a known server change only its until (the cursor stays); until null reopens it', async () => {
        await hosted(T1, 2, [{ server: BETA, until: null }]);
        await s.setReplicationCursor(T1, BETA, 2);
        assert.deepEqual(await due(BETA), []);
        // The server's last user leaves in entry 3: it receives up to and including index 3.
        await s.append(T1, withPeers(batch(T1, 2, 2), [{ server: BETA, until: 3 }]));
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 2, 3, 4)]);
        await s.setReplicationCursor(T1, BETA, 4);
        assert.deepEqual(await due(BETA), []);
        await s.append(T1, batch(T1, 4, 1));
        assert.deepEqual(await due(BETA), [], 'nothing after until is due');
        // A user of the server joins again: delivery resumes where the cursor stopped.
        await s.append(T1, withPeers(batch(T1, 5, 1), [{ server: BETA, until: null }]));
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 4, null, 6)]);
      });

      it('replicationPending: how many of a topic’s cursors still have entries due, as replicationDue counts them', async () => {
        await hosted(T1, 3, [{ server: BETA, until: null }, { server: GAMMA, until: 1 }]);
        await hosted(T2, 2, [{ server: BETA, until: null }]);
        assert.equal(await s.replicationPending(T1), 2);
        await s.setReplicationCursor(T1, GAMMA, 2);
        assert.equal(await s.replicationPending(T1), 1, 'past until is not due');
        await s.setReplicationCursor(T1, BETA, 3);
        assert.equal(await s.replicationPending(T1), 0);
        assert.equal(await s.replicationPending(T2), 1, 'per topic');
        assert.equal(await s.replicationPending(T3), 0, 'a topic without cursors');
      });

      it('replicationDue: the cursors of that server with next < min(size, until + 1)', async () => {
        await hosted(T1, 5, [{ server: BETA, until: null }, { server: GAMMA, until: null }]);
        await hosted(T2, 3, [{ server: BETA, until: 1 }]);
        await hosted(T3, 2, [{ server: BETA, until: null }]);
        await s.setReplicationCursor(T3, BETA, 2);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 0, null, 5), cursor(T2, BETA, 0, 1, 3)]);
        assert.deepEqual(await due(GAMMA), [cursor(T1, GAMMA, 0, null, 5)]);
        // until is the last index delivered: next == until is still due, next == until + 1 is not.
        await s.setReplicationCursor(T2, BETA, 1);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 0, null, 5), cursor(T2, BETA, 1, 1, 3)]);
        await s.setReplicationCursor(T2, BETA, 2);
        // next == size - 1 is due, next == size is not.
        await s.setReplicationCursor(T1, BETA, 4);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 4, null, 5)]);
        await s.setReplicationCursor(T1, BETA, 5);
        assert.deepEqual(await due(BETA), []);
        assert.deepEqual(await due(GAMMA), [cursor(T1, GAMMA, 0, null, 5)]);
        // A new entry makes the caught-up cursors due again, with the new size.
        await s.append(T1, batch(T1, 5, 1));
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 5, null, 6)]);
        assert.deepEqual(await due(DELTA), []);
      });

      it('setReplicationCursor never moves a cursor backwards unless rewind', async () => {
        await hosted(T1, 6, [{ server: BETA, until: null }, { server: GAMMA, until: null }]);
        await s.setReplicationCursor(T1, BETA, 3);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 3, null, 6)]);
        await s.setReplicationCursor(T1, BETA, 1);
        await s.setReplicationCursor(T1, BETA, 0, false);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 3, null, 6)]);
        await s.setReplicationCursor(T1, BETA, 3);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 3, null, 6)]);
        // A receiver's federation.gap: resend from what it has.
        await s.setReplicationCursor(T1, BETA, 1, true);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 1, null, 6)]);
        await s.setReplicationCursor(T1, BETA, 0, true);
        assert.deepEqual(await due(BETA), [cursor(T1, BETA, 0, null, 6)]);
        // Only that topic's cursor of that server moves.
        assert.deepEqual(await due(GAMMA), [cursor(T1, GAMMA, 0, null, 6)]);
      });

      it('a refused append or createTopic creates or changes no cursor', async () => {
        await addUser(s, alice, 'a1');
        await s.putIdempotency(idem('a1', 'dup'));
        await hosted(T1, 2, [{ server: BETA, until: null }]);
        await s.setReplicationCursor(T1, BETA, 1);
        const before = await due(BETA);
        const peers: Peers = [{ server: BETA, until: 0 }, { server: GAMMA, until: null }];
        await rejectsWith(s.append(T1, withPeers(batch(T1, 5, 1), peers)), 'store.conflict');
        await rejectsWith(s.append(T1, withPeers(batch(T1, 2, 1, { nonces: [nonceOf(1)] }), peers)), 'topic.replay');
        await rejectsWith(s.append(T1, withPeers(batch(T1, 2, 1, { idempotency: idem('a1', 'dup') }), peers)), 'store.conflict');
        await rejectsWith(s.append(T2, withPeers(batch(T2, 0, 1), peers)), 'topic.unknown');
        await rejectsWith(s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, withPeers(batch(T1, 0, 1), peers)), 'topic.exists');
        await rejectsWith(
          s.createTopic({ topicId: T3, host: 'alpha.example', createdAt: NOW }, withPeers(batch(T3, 0, 3, { nonces: [nonceOf(7), nonceOf(7)] }), peers)),
          'topic.replay',
        );
        assert.deepEqual(await due(BETA), before);
        assert.deepEqual(before, [cursor(T1, BETA, 1, null, 2)]);
        assert.deepEqual(await due(GAMMA), []);
        assert.deepEqual(await destinations(), [BETA]);
      });

      it('federationDestinations: every server with a replication cursor or an outbox row, each once', async () => {
        assert.deepEqual(await s.federationDestinations(), []);
        await hosted(T1, 2, [{ server: BETA, until: null }]);
        await hosted(T2, 1, [{ server: BETA, until: null }, { server: GAMMA, until: 0 }]);
        const id = await s.addOutbox(outbox(DELTA, 's1'));
        await s.addOutbox(outbox(BETA, 's2'));
        assert.deepEqual(await destinations(), [BETA, DELTA, GAMMA].sort());
        // A cursor with nothing left to deliver still makes its server a destination.
        await s.setReplicationCursor(T2, GAMMA, 1);
        assert.deepEqual(await due(GAMMA), []);
        assert.deepEqual(await destinations(), [BETA, DELTA, GAMMA].sort());
        // An outbox-only destination goes with its last row.
        await s.completeOutbox(id);
        assert.deepEqual(await destinations(), [BETA, GAMMA].sort());
      });

      it('addOutbox / nextOutbox: every field (attempts 0), oldest first per destination, at most limit', async () => {
        const r1 = outbox(BETA, '{"n":1}');
        const r2 = witnessRow(GAMMA, '{"n":2}');
        const r3 = outbox(BETA, '{"n":3}', { topicId: T2, createdAt: NOW + 1 });
        const r4 = witnessRow(BETA, '{"n":4}', 'witness:other', NOW + 2);
        const i1 = await s.addOutbox(r1);
        const i2 = await s.addOutbox(r2);
        const i3 = await s.addOutbox(r3);
        const i4 = await s.addOutbox(r4);
        assert.equal(new Set([i1, i2, i3, i4]).size, 4, 'every row has its own id');
        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(i1, r1), stored(i3, r3), stored(i4, r4)]);
        assert.deepEqual(await s.nextOutbox(BETA, 2), [stored(i1, r1), stored(i3, r3)]);
        assert.deepEqual(await s.nextOutbox(GAMMA, 10), [stored(i2, r2)]);
        assert.deepEqual(await s.nextOutbox(DELTA, 10), []);
        // Completing the head moves the line up.
        await s.completeOutbox(i1);
        assert.deepEqual(await s.nextOutbox(BETA, 1), [stored(i3, r3)]);
      });

      it("addOutbox with a coalesce key replaces the payload of that destination's row with the key: same id, same place in line", async () => {
        const first = witnessRow(BETA, '{"cosignature":"c1"}');
        const w = await s.addOutbox(first);
        const x = await s.addOutbox(outbox(BETA, 's1'));
        const y = await s.addOutbox(outbox(BETA, 's1')); // no key: never coalesced
        await s.failOutbox(w);
        assert.equal(await s.addOutbox(witnessRow(BETA, '{"cosignature":"c2"}', undefined, NOW + 5)), w);
        const rows = await s.nextOutbox(BETA, 10);
        assert.deepEqual(
          rows.map((r) => [r.id, r.kind, toHex(r.topicId), r.coalesceKey, r.payload, r.attempts]),
          [
            [w, 'witness', toHex(T1), first.coalesceKey, '{"cosignature":"c2"}', 1],
            [x, 'submit', toHex(T1), null, 's1', 0],
            [y, 'submit', toHex(T1), null, 's1', 0],
          ],
        );
        // The key is per destination, and another key is another row.
        const g = await s.addOutbox(witnessRow(GAMMA, '{"cosignature":"c3"}'));
        const o = await s.addOutbox(witnessRow(BETA, '{"cosignature":"c4"}', 'witness:other'));
        assert.equal(new Set([w, x, y, g, o]).size, 5, 'new rows have new ids');
        assert.deepEqual((await s.nextOutbox(BETA, 10)).map((r) => r.payload), ['{"cosignature":"c2"}', 's1', 's1', '{"cosignature":"c4"}']);
        assert.deepEqual((await s.nextOutbox(GAMMA, 10)).map((r) => r.payload), ['{"cosignature":"c3"}']);
      });

      it('addOutbox with a coalesce key keeps one row even when added concurrently', async () => {
        const ids = await Promise.all(Array.from({ length: 6 }, (_, i) => s.addOutbox(witnessRow(BETA, `{"n":${i}}`))));
        const rows = await s.nextOutbox(BETA, 10);
        assert.equal(rows.length, 1);
        assert.deepEqual(ids, ids.map(() => rows[0]!.id));
        assert.ok(Array.from({ length: 6 }, (_, i) => `{"n":${i}}`).includes(rows[0]!.payload), 'the payload is one of those added');
      });

      it('addOutbox with an idempotency record writes both; an existing record is store.conflict and adds or replaces nothing', async () => {
        await addUser(s, alice, 'a1');
        const rec = idem('a1', 'fwd-1', '{"status":202}');
        const r1 = outbox(BETA, 's1');
        const id = await s.addOutbox(r1, rec);
        assert.deepEqual(await s.getIdempotency('a1', 'fwd-1'), rec);
        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(id, r1)]);
        const w1 = witnessRow(BETA, 'w1');
        const wid = await s.addOutbox(w1);

        await rejectsWith(s.addOutbox(outbox(BETA, 's2'), idem('a1', 'fwd-1', 'other')), 'store.conflict');
        await rejectsWith(s.addOutbox(outbox(GAMMA, 's3'), idem('a1', 'fwd-1', 'other')), 'store.conflict');
        await rejectsWith(s.addOutbox(witnessRow(BETA, 'w2'), idem('a1', 'fwd-1', 'other')), 'store.conflict');

        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(id, r1), stored(wid, w1)]);
        assert.deepEqual(await s.nextOutbox(GAMMA, 10), []);
        assert.deepEqual(await s.getIdempotency('a1', 'fwd-1'), rec);
        assert.deepEqual(await destinations(), [BETA]);
      });

      it('completeOutbox deletes the row and sets the response of the idempotency record it answers; nothing else changes', async () => {
        await addUser(s, alice, 'a1');
        const r1 = outbox(BETA, 's1');
        const r2 = outbox(BETA, 's2');
        const i1 = await s.addOutbox(r1, idem('a1', 'c1', 'pending'));
        const i2 = await s.addOutbox(r2, idem('a1', 'c2', 'pending'));
        await s.completeOutbox(i1, { deviceId: 'a1', clientId: 'c1', response: '{"status":201}' });
        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(i2, r2)]);
        assert.deepEqual(await s.getIdempotency('a1', 'c1'), idem('a1', 'c1', '{"status":201}'));
        assert.deepEqual(await s.getIdempotency('a1', 'c2'), idem('a1', 'c2', 'pending'));
        // Without an answer only the row goes.
        await s.completeOutbox(i2);
        assert.deepEqual(await s.nextOutbox(BETA, 10), []);
        assert.deepEqual(await s.getIdempotency('a1', 'c2'), idem('a1', 'c2', 'pending'));
        assert.deepEqual(await s.federationDestinations(), []);
      });

      it('completeOutbox with a payload deletes the row only if it still holds that payload', async () => {
        const id = await s.addOutbox(witnessRow(BETA, 'w1'));
        const [sent] = await s.nextOutbox(BETA, 1);
        assert.equal(sent?.payload, 'w1');
        // A newer cosignature replaces the row while the old one is in flight: the row stays.
        assert.equal(await s.addOutbox(witnessRow(BETA, 'w2')), id);
        await s.completeOutbox(id, undefined, sent.payload);
        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(id, witnessRow(BETA, 'w2'))]);
        await s.completeOutbox(id, undefined, 'w2');
        assert.deepEqual(await s.nextOutbox(BETA, 10), []);
      });

      it('failOutbox adds one attempt to that row only', async () => {
        const r1 = outbox(BETA, 's1');
        const r2 = outbox(BETA, 's2');
        const i1 = await s.addOutbox(r1);
        const i2 = await s.addOutbox(r2);
        await s.failOutbox(i1);
        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(i1, r1, 1), stored(i2, r2, 0)]);
        await s.failOutbox(i1);
        await s.failOutbox(i2);
        assert.deepEqual(await s.nextOutbox(BETA, 10), [stored(i1, r1, 2), stored(i2, r2, 1)]);
      });

      it('putCosignature keeps the latest per witness and topic; a smaller size never replaces a larger one', async () => {
        await hosted(T1, 5, []);
        await hosted(T2, 1, []);
        const list = async (t: Uint8Array) => (await s.listCosignatures(t)).sort((x, y) => (x.witness < y.witness ? -1 : 1));
        assert.deepEqual(await s.listCosignatures(T1), []);
        await s.putCosignature(T1, BETA, 3, b(0xc5, 1));
        await s.putCosignature(T1, GAMMA, 5, b(0xc5, 2));
        assert.deepEqual(await list(T1), [
          { witness: BETA, size: 3, cosignature: b(0xc5, 1) },
          { witness: GAMMA, size: 5, cosignature: b(0xc5, 2) },
        ]);
        await s.putCosignature(T1, BETA, 4, b(0xc5, 3));
        await s.putCosignature(T1, BETA, 2, b(0xc5, 4));
        assert.deepEqual(await list(T1), [
          { witness: BETA, size: 4, cosignature: b(0xc5, 3) },
          { witness: GAMMA, size: 5, cosignature: b(0xc5, 2) },
        ]);
        // The same size again is not smaller: the latest is kept.
        await s.putCosignature(T1, BETA, 4, b(0xc5, 5));
        assert.deepEqual((await list(T1))[0], { witness: BETA, size: 4, cosignature: b(0xc5, 5) });
        // Per topic.
        await s.putCosignature(T2, BETA, 1, b(0xc5, 6));
        assert.deepEqual(await list(T2), [{ witness: BETA, size: 1, cosignature: b(0xc5, 6) }]);
        assert.deepEqual((await list(T1)).map((c) => [c.witness, c.size]), [[BETA, 4], [GAMMA, 5]]);
        assert.deepEqual(await s.listCosignatures(T3), []);
      });

      it('addFork / listForks: every field, per topic', async () => {
        await hosted(T1, 1, []);
        await hosted(T2, 1, []);
        const f1 = fork(T1, 'fork', BETA, NOW);
        const f2 = fork(T1, 'rollback', GAMMA, NOW + 1);
        const f3 = fork(T2, 'fork', BETA, NOW + 2);
        for (const f of [f1, f2, f3]) await s.addFork(f);
        const t1 = (await s.listForks(T1)).sort((x, y) => x.createdAt - y.createdAt);
        assert.deepEqual(t1.map(({ id: _, ...rest }) => rest), [f1, f2]);
        assert.ok(t1.every((f) => Number.isSafeInteger(f.id)) && t1[0]!.id !== t1[1]!.id, 'each fork has its own id');
        assert.deepEqual((await s.listForks(T2)).map(({ id: _, ...rest }) => rest), [f3]);
        assert.deepEqual(await s.listForks(T3), []);
      });

      it("getEntries: the batch's checkpoint on its last entry, null on the others, unless an entry brings its own", async () => {
        const b0 = batch(T1, 0, 2, { members: [admin(0, alice)] });
        await s.createTopic({ topicId: T1, host: 'alpha.example', createdAt: NOW }, b0);
        // An entry in the middle with its own checkpoint (a replica storing a host's batch).
        const b1 = batch(T1, 2, 3);
        const own = b(0xcc, 3);
        await s.append(T1, { ...b1, entries: b1.entries.map((e) => (e.index === 3 ? { ...e, checkpoint: own } : e)) });
        // The last entry with its own checkpoint: that one, not the batch's.
        const b2 = batch(T1, 5, 2);
        const last = b(0xcc, 6);
        await s.append(T1, { ...b2, entries: b2.entries.map((e) => (e.index === 6 ? { ...e, checkpoint: last } : e)) });
        const b3 = batch(T1, 7, 1);
        await s.append(T1, b3);
        const cps = [null, b0.checkpoint, null, own, b1.checkpoint, null, last, b3.checkpoint];
        assert.deepEqual(
          await s.getEntries(T1, 0, 100),
          cps.map((checkpoint, index) => ({ index, type: index === 0 ? 'update' : 'message', entry: entryBytes(T1, index), checkpoint })),
        );
        assert.deepEqual((await s.getEntries(T1, 3, 2)).map((e) => e.checkpoint), [own, b1.checkpoint]);
      });

      it("deleteTopic removes its replication cursors, cosignatures and forks, and no other topic's", async () => {
        for (const t of [T1, T2]) {
          await hosted(t, 2, [{ server: BETA, until: null }]);
          await s.putCosignature(t, GAMMA, 2, b(0xc5, t[0]!));
          await s.addFork(fork(t, 'fork', GAMMA, NOW));
        }
        const t2 = { cosignatures: await s.listCosignatures(T2), forks: await s.listForks(T2) };
        assert.equal((await s.deleteTopic(T1)).deleted, true);
        assert.deepEqual(await due(BETA), [cursor(T2, BETA, 0, null, 2)]);
        assert.deepEqual(await s.listCosignatures(T1), []);
        assert.deepEqual(await s.listForks(T1), []);
        assert.deepEqual({ cosignatures: await s.listCosignatures(T2), forks: await s.listForks(T2) }, t2);
        // The id taken again starts clean: nothing of the old topic comes back.
        await hosted(T1, 3, []);
        assert.deepEqual(await due(BETA), [cursor(T2, BETA, 0, null, 2)]);
        assert.deepEqual(await s.listCosignatures(T1), []);
        assert.deepEqual(await s.listForks(T1), []);
        // With the last cursor gone the server is no longer a destination.
        assert.equal((await s.deleteTopic(T2)).deleted, true);
        assert.deepEqual(await s.federationDestinations(), []);
      });

      it("idempotency records may name a device of another server; deleteDevice and deleteUser remove their devices' records however written", async () => {
        const remote = `${BETA}/e1`;
        await addUser(s, alice, 'a1', 'a2');
        await addUser(s, bob, 'b1');
        await createTopic(s, T1, [admin(0, alice)], 1);
        // Forwarded submissions: the host records them under the origin's device.
        await s.putIdempotency(idem(remote, 'c1'));
        await s.append(T1, batch(T1, 1, 1, { idempotency: idem(remote, 'c2') }));
        await s.addOutbox(outbox(GAMMA, 'x'), idem('a1', 'fwd'));
        await s.append(T1, batch(T1, 2, 1, { idempotency: idem('a1', 'post') }));
        await s.putIdempotency(idem('a2', 'c1'));
        await s.putIdempotency(idem('b1', 'c1'));

        assert.equal(await s.deleteDevice('a1'), true);
        assert.equal(await s.getIdempotency('a1', 'fwd'), null);
        assert.equal(await s.getIdempotency('a1', 'post'), null);
        assert.deepEqual(await s.getIdempotency('a2', 'c1'), idem('a2', 'c1'));

        assert.equal((await s.deleteUser(alice)).deleted, true);
        assert.equal(await s.getIdempotency('a2', 'c1'), null);
        assert.deepEqual(await s.getIdempotency('b1', 'c1'), idem('b1', 'c1'));
        assert.deepEqual(await s.getIdempotency(remote, 'c1'), idem(remote, 'c1'));
        assert.deepEqual(await s.getIdempotency(remote, 'c2'), idem(remote, 'c2'));
        await rejectsWith(s.putIdempotency(idem(remote, 'c1', 'again')), 'store.conflict');
      });

      it('durability: federation state is there after close and reopen', async (t) => {
        if (h.reopen === undefined) return t.skip('no reopen');
        await hosted(T1, 3, [{ server: BETA, until: 2 }]);
        await s.setReplicationCursor(T1, BETA, 1);
        await s.putServerKeys(BETA, [fill(32, 1), fill(32, 2)], NOW);
        await s.pinRemoteUser('erin@beta.example', fill(32, 3), NOW);
        const id = await s.addOutbox(witnessRow(GAMMA, 'w1'));
        await s.failOutbox(id);
        await s.putCosignature(T1, GAMMA, 3, b(0xc5, 1));
        await s.addFork(fork(T1, 'rollback', GAMMA, NOW));
        const before = {
          keys: await s.getServerKeys(BETA),
          remote: await s.getRemoteUser('erin@beta.example'),
          due: await due(BETA),
          destinations: await destinations(),
          outbox: await s.nextOutbox(GAMMA, 10),
          cosignatures: await s.listCosignatures(T1),
          forks: await s.listForks(T1),
          entries: await s.getEntries(T1, 0, 10),
        };
        await s.close();
        s = await h.reopen();
        assert.deepEqual(
          {
            keys: await s.getServerKeys(BETA),
            remote: await s.getRemoteUser('erin@beta.example'),
            due: await due(BETA),
            destinations: await destinations(),
            outbox: await s.nextOutbox(GAMMA, 10),
            cosignatures: await s.listCosignatures(T1),
            forks: await s.listForks(T1),
            entries: await s.getEntries(T1, 0, 10),
          },
          before,
        );
        assert.deepEqual(before.due, [cursor(T1, BETA, 1, 2, 3)]);
        assert.deepEqual(before.outbox, [stored(id, witnessRow(GAMMA, 'w1'), 1)]);
        // The coalesce key still finds its row.
        assert.equal(await s.addOutbox(witnessRow(GAMMA, 'w2')), id);
      });
    });
  });
}
