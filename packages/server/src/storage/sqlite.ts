/**
 * The SQLite backend of the Store (better-sqlite3).
 *
 * better-sqlite3 is synchronous, so each method body runs to completion inside one JavaScript
 * turn: within one process no two methods ever interleave. The transactions are for what lies
 * beyond that: other connections to the same file (a second process, the admin CLI, a test),
 * and all-or-nothing writes when a method throws halfway. Every method that writes runs in
 * BEGIN IMMEDIATE, which takes the write lock before the first read, so a read-check-write
 * (claims, pins, appends) can never act on a snapshot another connection has since changed;
 * a deferred transaction would instead fail with SQLITE_BUSY_SNAPSHOT when it tried to write.
 */
import Database from 'better-sqlite3';
import { RendezvousError, equal, toHex } from '@rendezvous/protocol';
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from './migrations.ts';
import type {
  AppendBatch,
  BlobRow,
  DeviceRow,
  PushSubscriptionRow,
  EntryRow,
  EventRow,
  ForkRow,
  IdempotencyRow,
  OutboxRow,
  ReplicationRow,
  KeyUpload,
  KeyUploadResult,
  MemberRow,
  PinResult,
  PinRow,
  SessionRow,
  Store,
  TopicRow,
  UserRow,
  WrittenEvent,
} from './store.ts';

export interface SqliteStoreOptions {
  /** Apply pending migrations on open (default true). Off only for tools that inspect a database as it is. */
  migrate?: boolean;
  /** How long a connection waits for another connection's write lock before failing (default 5000 ms). */
  busyTimeoutMs?: number;
  /**
   * A connection that may only read (`PRAGMA query_only`): any write through it fails. The
   * threaded store's main-thread connection (sqlite-threaded.ts) is one, so a write routed to
   * it by mistake fails loudly instead of taking the write lock on the event loop.
   */
  queryOnly?: boolean;
}

/** Opens (creating if needed) the database at `path`, or a private one for ':memory:'. */
export async function openSqliteStore(path: string, opts: SqliteStoreOptions = {}): Promise<SqliteStore> {
  return SqliteStore.open(path, opts);
}

// Rows as SQLite returns them: BLOBs arrive as Buffers, INTEGERs as numbers.
interface PinDb { id: string; user: string; pin_hash: Buffer; expires_at: number; tries_left: number; created_at: number }
interface UserDb { user: string; identity_key: Buffer; created_at: number }
interface DeviceDb { device_id: string; user: string; cert: Buffer; created_at: number }
interface PushDb { id: string; device_id: string; kind: PushSubscriptionRow['kind']; endpoint: string; p256dh: string; auth: string; created_at: number }
interface SessionDb { token_hash: Buffer; device_id: string; user: string; created_at: number; expires_at: number }
interface TopicDb { topic_id: Buffer; host: string; size: number; epoch_start_size: number; checkpoint: Buffer; created_at: number }
interface MemberDb { member_id: number; user: string; role: MemberRow['role'] }
interface EntryDb { idx: number; type: EntryRow['type']; entry: Buffer; checkpoint?: Buffer | null }
interface OutboxDb { id: number; destination: string; kind: OutboxRow['kind']; topic_id: Buffer; coalesce_key: string | null; payload: string; created_at: number; attempts: number }
interface ForkDb { id: number; topic_id: Buffer; kind: ForkRow['kind']; server: string; evidence: string; created_at: number }
interface IdempotencyDb { device_id: string; client_id: string; request_hash: Buffer; response: string; created_at: number }
interface EventDb {
  seq: number;
  kind: EventRow['kind'];
  topic_id: Buffer | null;
  user: string | null;
  device_id: string | null;
  idx: number | null;
  created_at: number;
}
interface BlobDb { topic_id: Buffer; blob_id: Buffer; size: number; user: string; device_id: string; created_at: number }

/**
 * A plain Uint8Array copy of a Buffer: callers compare and serialize Uint8Arrays, and a Buffer
 * (a subclass with its own prototype) fails deep equality against one.
 */
function u8(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

function schemaTooNew(version: number): Error {
  return new Error(
    `database schema version ${version} is newer than this server understands (${LATEST_SCHEMA_VERSION}): ` +
      'it was written by a newer release; upgrade the server (or restore a backup) instead of downgrading',
  );
}

const SCHEMA_MIGRATIONS_DDL = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INTEGER PRIMARY KEY,
  name       TEXT NOT NULL,
  applied_at INTEGER NOT NULL
) STRICT`;

/**
 * Named parameters: cursor, user, device, limit. Three branches, each served by its
 * partial index, rather than one OR that would scan every event after the cursor: a device back
 * from a week offline must not read the whole server's traffic to find its own. Exported so a
 * test can hold the query plan to that.
 */
export const EVENTS_SINCE_SQL = `
SELECT * FROM (
  SELECT e.* FROM topic_members m
    JOIN events e ON e.kind = 'entry' AND e.topic_id = m.topic_id AND e.seq > @cursor
    WHERE m.user = @user
  UNION ALL
  SELECT * FROM events WHERE kind = 'bundle' AND device_id = @device AND seq > @cursor
  UNION ALL
  SELECT * FROM events WHERE kind = 'membership' AND user = @user AND seq > @cursor
) ORDER BY seq LIMIT @limit`;

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts = new Map<string, Database.Statement>();

  private constructor(db: Database.Database) {
    this.db = db;
  }

  static async open(path: string, opts: SqliteStoreOptions = {}): Promise<SqliteStore> {
    const db = new Database(path, { timeout: opts.busyTimeoutMs ?? 5000 });
    try {
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      // WAL lets readers run beside the one writer; refusing to run without it beats silently
      // serializing every request behind the rollback journal.
      if (!db.memory && mode !== 'wal') throw new Error(`could not switch ${path} to WAL mode (got ${String(mode)})`);
      // FULL: in WAL mode NORMAL may lose the last commits on power loss, and an acknowledged
      // message or claimed key must never come back or vanish.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // The page cache bounds the store's native memory: 16 MB (better-sqlite3's default, set
      // here so the bound is visible; SQLite's own default is 2 MB).
      db.pragma('cache_size = -16000');
      if (opts.queryOnly === true) db.pragma('query_only = ON');
      const store = new SqliteStore(db);
      const version = store.schemaVersion();
      if (version > LATEST_SCHEMA_VERSION) throw schemaTooNew(version);
      if (opts.migrate !== false) store.migrateNow();
      return store;
    } catch (e) {
      db.close();
      throw e;
    }
  }

  /** Cached prepared statements, keyed by their SQL text. */
  private q(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  private write<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /** Appends waiting for the next group commit. */
  private pending: { fn: () => WrittenEvent[]; resolve: (events: WrittenEvent[]) => void; reject: (e: unknown) => void }[] = [];

  /**
   * Group commit for log appends: the appends that arrive while the event loop is busy (above
   * all while the previous commit's fsync held it) are written in one transaction, so one fsync
   * makes many acknowledged entries durable (synchronous=FULL stays on). Each append runs in its
   * own savepoint (a nested better-sqlite3 transaction), so one that fails (a conflict, a
   * replayed nonce) is rolled back alone and rejects alone. The promise resolves after COMMIT.
   */
  private grouped(fn: () => WrittenEvent[]): Promise<WrittenEvent[]> {
    return new Promise((resolve, reject) => {
      this.pending.push({ fn, resolve, reject });
      if (this.pending.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const items = this.pending.splice(0);
    if (items.length === 0) return;
    const failed = new Map<number, unknown>();
    const written: WrittenEvent[][] = [];
    try {
      this.write(() => {
        items.forEach((it, i) => {
          try {
            written[i] = this.db.transaction(it.fn)();
          } catch (e) {
            failed.set(i, e);
          }
        });
      });
    } catch (e) {
      // The commit itself failed (disk full, I/O error): nothing of the group is durable.
      for (const it of items) it.reject(e);
      return;
    }
    items.forEach((it, i) => (failed.has(i) ? it.reject(failed.get(i)) : it.resolve(written[i]!)));
  }

  private read<T>(fn: () => T): T {
    return this.db.transaction(fn).deferred();
  }

  private schemaVersion(): number {
    const t = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
    if (t === undefined) return 0;
    const r = this.db.prepare('SELECT coalesce(max(version), 0) AS v FROM schema_migrations').get() as { v: number };
    return r.v;
  }

  private migrateNow(): void {
    const ordered = [...MIGRATIONS].sort((a, b) => a.version - b.version);
    // One immediate transaction: two processes starting together cannot both apply a
    // migration, and a failing migration leaves the schema exactly as it was.
    this.write(() => {
      this.db.exec(SCHEMA_MIGRATIONS_DDL);
      const current = this.schemaVersion();
      if (current > LATEST_SCHEMA_VERSION) throw schemaTooNew(current);
      const record = this.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
      for (const m of ordered) {
        if (m.version <= current) continue;
        this.db.exec(m.sql);
        record.run(m.version, m.name, Date.now());
      }
    });
  }

  /** The connection's effective settings, for health checks and tests. */
  settings(): { journalMode: string; synchronous: number; foreignKeys: boolean; busyTimeoutMs: number; schemaVersion: number } {
    return {
      journalMode: String(this.db.pragma('journal_mode', { simple: true })),
      synchronous: Number(this.db.pragma('synchronous', { simple: true })),
      foreignKeys: Number(this.db.pragma('foreign_keys', { simple: true })) === 1,
      busyTimeoutMs: Number(this.db.pragma('busy_timeout', { simple: true })),
      schemaVersion: this.schemaVersion(),
    };
  }

  async migrate(): Promise<void> {
    this.migrateNow();
  }

  async close(): Promise<void> {
    if (this.pending.length > 0) this.flush();
    this.stmts.clear();
    this.db.close();
  }

  // ---- server settings ------------------------------------------------------------------------

  async getMeta(key: string): Promise<string | null> {
    const r = this.q('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return r?.value ?? null;
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.q('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  // ---- admin: registration pins ---------------------------------------------------------------

  async createPin(pin: PinRow): Promise<void> {
    this.q('INSERT INTO pins (id, user, pin_hash, expires_at, tries_left, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
      pin.id,
      pin.user,
      pin.pinHash,
      pin.expiresAt,
      pin.triesLeft,
      pin.createdAt,
    );
  }

  async listPins(): Promise<PinRow[]> {
    const rows = this.q('SELECT * FROM pins ORDER BY created_at, id').all() as PinDb[];
    return rows.map(pinRow);
  }

  async deletePin(id: string): Promise<boolean> {
    return this.q('DELETE FROM pins WHERE id = ?').run(id).changes > 0;
  }

  async registerWithPin(user: UserRow, device: DeviceRow, pinHash: Uint8Array, now: number): Promise<PinResult> {
    if (device.user !== user.user) throw new Error('registerWithPin: the first device must belong to the new user');
    return this.write((): PinResult => {
      if (this.nameTakenNow(user.user)) return 'user_exists';
      const pins = this.q('SELECT id, pin_hash FROM pins WHERE user = ? AND expires_at > ? AND tries_left > 0').all(
        user.user,
        now,
      ) as Pick<PinDb, 'id' | 'pin_hash'>[];
      if (pins.length === 0) return 'no_pin';
      const match = pins.find((p) => equal(p.pin_hash, pinHash));
      if (match === undefined) {
        // Every live pin of the name pays for a wrong guess: issuing several pins must not
        // multiply the guesses an attacker gets.
        this.q('UPDATE pins SET tries_left = tries_left - 1 WHERE user = ? AND expires_at > ?').run(user.user, now);
        this.q('DELETE FROM pins WHERE user = ? AND tries_left <= 0').run(user.user);
        return 'wrong_pin';
      }
      this.q('DELETE FROM pins WHERE id = ?').run(match.id);
      this.q('INSERT INTO users (user, identity_key, created_at) VALUES (?, ?, ?)').run(user.user, user.identityKey, user.createdAt);
      // Throws device.exists for a revoked key; the rollback then restores the pin.
      this.insertDevice(device);
      return 'ok';
    });
  }

  // ---- users and devices ----------------------------------------------------------------------

  private nameTakenNow(user: string): boolean {
    return (
      this.q('SELECT 1 FROM users WHERE user = ?').get(user) !== undefined ||
      this.q('SELECT 1 FROM removed_users WHERE user = ?').get(user) !== undefined
    );
  }

  async nameTaken(user: string): Promise<boolean> {
    return this.nameTakenNow(user);
  }

  async getUser(user: string): Promise<UserRow | null> {
    const r = this.q('SELECT * FROM users WHERE user = ?').get(user) as UserDb | undefined;
    return r === undefined ? null : userRow(r);
  }

  async listUsers(): Promise<UserRow[]> {
    return (this.q('SELECT * FROM users ORDER BY user').all() as UserDb[]).map(userRow);
  }

  async deleteUser(user: string): Promise<{ deleted: boolean; blobs: { topicId: Uint8Array; blobId: Uint8Array }[] }> {
    return this.write(() => {
      if (this.q('SELECT 1 FROM users WHERE user = ?').get(user) === undefined) return { deleted: false, blobs: [] };
      const devices = this.q('SELECT device_id FROM devices WHERE user = ?').all(user) as { device_id: string }[];
      for (const d of devices) {
        this.q('DELETE FROM bundles WHERE sender_device_id = ?').run(d.device_id);
        this.removeDevice(d.device_id);
      }
      // Membership events would otherwise surface to whoever registers the name next.
      this.q("DELETE FROM events WHERE kind = 'membership' AND user = ?").run(user);
      this.q('DELETE FROM pins WHERE user = ?').run(user);
      // Topic keys go by ON DELETE CASCADE; topic_members deliberately have no link to users.
      this.q('DELETE FROM users WHERE user = ?').run(user);
      this.q('INSERT OR IGNORE INTO removed_users (user) VALUES (?)').run(user);
      // Blob rows have no foreign key to users: returned so the caller can delete the files.
      const blobs = this.q('DELETE FROM blobs WHERE user = ? RETURNING topic_id, blob_id').all(user) as Pick<BlobDb, 'topic_id' | 'blob_id'>[];
      return { deleted: true, blobs: blobs.map((r) => ({ topicId: u8(r.topic_id), blobId: u8(r.blob_id) })) };
    });
  }

  async addDevice(device: DeviceRow): Promise<void> {
    this.write(() => this.insertDevice(device));
  }

  private insertDevice(d: DeviceRow): void {
    const used = this.q(
      'SELECT 1 FROM devices WHERE device_id = @id UNION ALL SELECT 1 FROM removed_devices WHERE device_id = @id',
    ).get({ id: d.deviceId });
    if (used !== undefined) throw new RendezvousError('device.exists');
    this.q('INSERT INTO devices (device_id, user, cert, created_at) VALUES (?, ?, ?, ?)').run(d.deviceId, d.user, d.cert, d.createdAt);
  }

  /** Sessions, challenges, prekeys and pending bundles go by ON DELETE CASCADE. */
  private removeDevice(deviceId: string): void {
    this.q('INSERT OR IGNORE INTO removed_devices (device_id) VALUES (?)').run(deviceId);
    // No foreign key since migration 5 (records of forwarded submissions name remote devices).
    this.q('DELETE FROM idempotency WHERE device_id = ?').run(deviceId);
    this.q("DELETE FROM events WHERE kind = 'bundle' AND device_id = ?").run(deviceId);
    this.q('DELETE FROM devices WHERE device_id = ?').run(deviceId);
  }

  async getDevice(deviceId: string): Promise<DeviceRow | null> {
    const r = this.q('SELECT * FROM devices WHERE device_id = ?').get(deviceId) as DeviceDb | undefined;
    return r === undefined ? null : deviceRow(r);
  }

  async listDevices(user: string): Promise<DeviceRow[]> {
    return (this.q('SELECT * FROM devices WHERE user = ? ORDER BY created_at, device_id').all(user) as DeviceDb[]).map(deviceRow);
  }

  async deleteDevice(deviceId: string): Promise<boolean> {
    return this.write(() => {
      if (this.q('SELECT 1 FROM devices WHERE device_id = ?').get(deviceId) === undefined) return false;
      this.removeDevice(deviceId);
      return true;
    });
  }

  // ---- push subscriptions -------------------------------------------------------------------

  async addPushSubscription(row: PushSubscriptionRow, max: number): Promise<PushSubscriptionRow> {
    return this.write(() => {
      if (this.q('SELECT 1 FROM devices WHERE device_id = ?').get(row.deviceId) === undefined) throw new RendezvousError('device.unknown');
      const old = this.q('SELECT * FROM push_subscriptions WHERE device_id = ? AND kind = ? AND endpoint = ?').get(row.deviceId, row.kind, row.endpoint) as
        | PushDb
        | undefined;
      if (old !== undefined) {
        this.q('UPDATE push_subscriptions SET p256dh = ?, auth = ? WHERE id = ?').run(row.p256dh, row.auth, old.id);
        return { ...pushRow(old), p256dh: row.p256dh, auth: row.auth };
      }
      const n = (this.q('SELECT count(*) AS n FROM push_subscriptions WHERE device_id = ?').get(row.deviceId) as { n: number }).n;
      if (n >= max) throw new RendezvousError('push.too_many', `a device holds at most ${max} push subscriptions`);
      this.q('INSERT INTO push_subscriptions (id, device_id, kind, endpoint, p256dh, auth, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        row.id,
        row.deviceId,
        row.kind,
        row.endpoint,
        row.p256dh,
        row.auth,
        row.createdAt,
      );
      return { ...row };
    });
  }

  async listPushSubscriptions(deviceId: string): Promise<PushSubscriptionRow[]> {
    return (this.q('SELECT * FROM push_subscriptions WHERE device_id = ? ORDER BY created_at, id').all(deviceId) as PushDb[]).map(pushRow);
  }

  async usersWithPushSubscriptions(): Promise<string[]> {
    const rows = this.q('SELECT DISTINCT d.user FROM devices d JOIN push_subscriptions s ON s.device_id = d.device_id ORDER BY d.user').all() as { user: string }[];
    return rows.map((r) => r.user);
  }

  async pushSubscriptionsOfUser(user: string): Promise<PushSubscriptionRow[]> {
    const rows = this.q(
      'SELECT s.* FROM devices d JOIN push_subscriptions s ON s.device_id = d.device_id WHERE d.user = ? ORDER BY s.created_at, s.id',
    ).all(user) as PushDb[];
    return rows.map(pushRow);
  }

  async deletePushSubscription(deviceId: string, id: string): Promise<boolean> {
    return this.q('DELETE FROM push_subscriptions WHERE id = ? AND device_id = ?').run(id, deviceId).changes > 0;
  }

  // ---- sessions -------------------------------------------------------------------------------

  async createSession(s: SessionRow): Promise<void> {
    this.q('INSERT INTO sessions (token_hash, device_id, user, created_at, expires_at) VALUES (?, ?, ?, ?, ?)').run(
      s.tokenHash,
      s.deviceId,
      s.user,
      s.createdAt,
      s.expiresAt,
    );
  }

  async getSession(tokenHash: Uint8Array, now: number): Promise<SessionRow | null> {
    const r = this.q('SELECT * FROM sessions WHERE token_hash = ? AND expires_at > ?').get(tokenHash, now) as SessionDb | undefined;
    return r === undefined
      ? null
      : { tokenHash: u8(r.token_hash), deviceId: r.device_id, user: r.user, createdAt: r.created_at, expiresAt: r.expires_at };
  }

  async deleteSession(tokenHash: Uint8Array): Promise<boolean> {
    return this.q('DELETE FROM sessions WHERE token_hash = ?').run(tokenHash).changes > 0;
  }

  async putChallenge(challenge: Uint8Array, deviceId: string, expiresAt: number): Promise<void> {
    this.q('INSERT INTO challenges (challenge, device_id, expires_at) VALUES (?, ?, ?)').run(challenge, deviceId, expiresAt);
  }

  async takeChallenge(challenge: Uint8Array, deviceId: string, now: number): Promise<boolean> {
    return this.write(() => {
      const taken =
        this.q('DELETE FROM challenges WHERE challenge = ? AND device_id = ? AND expires_at > ?').run(challenge, deviceId, now)
          .changes > 0;
      // The only call that knows the time, so it also sweeps challenges nobody came back for.
      this.q('DELETE FROM challenges WHERE expires_at <= ?').run(now);
      return taken;
    });
  }

  // ---- device prekeys -------------------------------------------------------------------------

  async addPrekeys(deviceId: string, prekeys: { prekey: Uint8Array; encoded: Uint8Array }[], max: number): Promise<number> {
    return this.write(() => {
      const insert = this.q('INSERT OR IGNORE INTO prekeys (device_id, prekey, encoded) VALUES (?, ?, ?)');
      for (const p of prekeys) insert.run(deviceId, p.prekey, p.encoded);
      const n = this.countPrekeysNow(deviceId);
      // Throwing rolls the inserts back: a rejected upload adds nothing.
      if (n > max) throw new RendezvousError('keys.too_many', `a device holds at most ${max} prekeys`);
      return n;
    });
  }

  private countPrekeysNow(deviceId: string): number {
    return (this.q('SELECT count(*) AS n FROM prekeys WHERE device_id = ?').get(deviceId) as { n: number }).n;
  }

  async countPrekeys(deviceId: string): Promise<number> {
    return this.countPrekeysNow(deviceId);
  }

  async claimPrekey(deviceId: string): Promise<Uint8Array | null> {
    return this.write(() => {
      const r = this.q(
        'DELETE FROM prekeys WHERE id = (SELECT id FROM prekeys WHERE device_id = ? ORDER BY id LIMIT 1) RETURNING encoded',
      ).get(deviceId) as { encoded: Buffer } | undefined;
      return r === undefined ? null : u8(r.encoded);
    });
  }

  // ---- topic keys -----------------------------------------------------------------------------

  async addTopicKeys(user: string, keys: { keyId: string; encoded: Uint8Array }[], max: number): Promise<number> {
    return this.write(() => {
      const insert = this.q('INSERT OR IGNORE INTO topic_keys (user, key_id, encoded) VALUES (?, ?, ?)');
      for (const k of keys) insert.run(user, k.keyId, k.encoded);
      const n = this.countTopicKeysNow(user);
      if (n > max) throw new RendezvousError('keys.too_many', `a user holds at most ${max} topic keys`);
      return n;
    });
  }

  private countTopicKeysNow(user: string): number {
    return (this.q('SELECT count(*) AS n FROM topic_keys WHERE user = ?').get(user) as { n: number }).n;
  }

  async countTopicKeys(user: string): Promise<number> {
    return this.countTopicKeysNow(user);
  }

  async claimTopicKey(user: string): Promise<Uint8Array | null> {
    return this.write(() => {
      const r = this.q(
        'DELETE FROM topic_keys WHERE id = (SELECT id FROM topic_keys WHERE user = ? ORDER BY id LIMIT 1) RETURNING encoded',
      ).get(user) as { encoded: Buffer } | undefined;
      return r === undefined ? null : u8(r.encoded);
    });
  }

  // ---- key bundles ----------------------------------------------------------------------------

  async addBundle(recipientDeviceId: string, senderDeviceId: string, encoded: Uint8Array, now: number): Promise<number> {
    return this.write(() => {
      const r = this.q(
        'INSERT INTO bundles (recipient_device_id, sender_device_id, encoded, created_at) VALUES (?, ?, ?, ?)',
      ).run(recipientDeviceId, senderDeviceId, encoded, now);
      this.insertEvent('bundle', null, null, recipientDeviceId, null, now);
      return Number(r.lastInsertRowid);
    });
  }

  async addKeyUpload(u: KeyUpload): Promise<KeyUploadResult> {
    return this.write(() => {
      let topicKeys: number | null = null;
      if (u.topicKeys !== undefined) {
        const insert = this.q('INSERT OR IGNORE INTO topic_keys (user, key_id, encoded) VALUES (?, ?, ?)');
        for (const k of u.topicKeys.keys) insert.run(u.user, k.keyId, k.encoded);
        topicKeys = this.countTopicKeysNow(u.user);
        if (topicKeys > u.topicKeys.max) throw new RendezvousError('keys.too_many', `a user holds at most ${u.topicKeys.max} topic keys`);
      }
      const insert = this.q('INSERT INTO bundles (recipient_device_id, sender_device_id, encoded, created_at) VALUES (?, ?, ?, ?)');
      const events: WrittenEvent[] = [];
      const bundleIds = u.bundles.map((b) => {
        const r = insert.run(b.recipientDeviceId, u.senderDeviceId, b.encoded, u.now);
        const seq = this.insertEvent('bundle', null, null, b.recipientDeviceId, null, u.now);
        events.push({ seq, kind: 'bundle', deviceId: b.recipientDeviceId });
        return Number(r.lastInsertRowid);
      });
      const { status, body, countField } = u.response;
      const response = JSON.stringify({ status, body: countField === undefined ? body : { ...body, [countField]: topicKeys } });
      this.insertIdempotency({ ...u.idempotency, response });
      return { topicKeys, bundleIds, events, response };
    });
  }

  async listBundles(recipientDeviceId: string): Promise<{ id: number; senderDeviceId: string; encoded: Uint8Array }[]> {
    const rows = this.q('SELECT id, sender_device_id, encoded FROM bundles WHERE recipient_device_id = ? ORDER BY id').all(
      recipientDeviceId,
    ) as { id: number; sender_device_id: string; encoded: Buffer }[];
    return rows.map((r) => ({ id: r.id, senderDeviceId: r.sender_device_id, encoded: u8(r.encoded) }));
  }

  async ackBundles(recipientDeviceId: string, upTo: number): Promise<number> {
    return this.q('DELETE FROM bundles WHERE recipient_device_id = ? AND id <= ?').run(recipientDeviceId, upTo).changes;
  }

  // ---- idempotency ----------------------------------------------------------------------------

  async getIdempotency(deviceId: string, clientId: string): Promise<IdempotencyRow | null> {
    const r = this.q('SELECT * FROM idempotency WHERE device_id = ? AND client_id = ?').get(deviceId, clientId) as
      | IdempotencyDb
      | undefined;
    return r === undefined
      ? null
      : { deviceId: r.device_id, clientId: r.client_id, requestHash: u8(r.request_hash), response: r.response, createdAt: r.created_at };
  }

  async putIdempotency(row: IdempotencyRow): Promise<void> {
    this.write(() => this.insertIdempotency(row));
  }

  /** A second record for the same id means two copies of one request raced: the loser retries and replays. */
  private insertIdempotency(row: IdempotencyRow): void {
    if (this.q('SELECT 1 FROM idempotency WHERE device_id = ? AND client_id = ?').get(row.deviceId, row.clientId) !== undefined) {
      throw new RendezvousError('store.conflict', 'a request with this client id was already recorded');
    }
    this.q('INSERT INTO idempotency (device_id, client_id, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)').run(
      row.deviceId,
      row.clientId,
      row.requestHash,
      row.response,
      row.createdAt,
    );
  }

  // ---- topics and logs ------------------------------------------------------------------------

  async createTopic(topic: Omit<TopicRow, 'size' | 'checkpoint' | 'epochStartSize'>, batch: AppendBatch): Promise<WrittenEvent[]> {
    return this.grouped(() => {
      if (this.q('SELECT 1 FROM topics WHERE topic_id = ?').get(topic.topicId) !== undefined) {
        throw new RendezvousError('topic.exists');
      }
      if (batch.expectedSize !== 0) throw new Error('createTopic: a new topic starts from an empty log (expectedSize 0)');
      checkBatchShape(batch);
      this.q(
        'INSERT INTO topics (topic_id, host, size, epoch_start_size, checkpoint, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(topic.topicId, topic.host, batch.newSize, batch.epochStartSize, batch.checkpoint, topic.createdAt);
      return this.applyBatch(topic.topicId, batch, [], topic.createdAt);
    });
  }

  async getTopic(topicId: Uint8Array): Promise<TopicRow | null> {
    const r = this.q('SELECT * FROM topics WHERE topic_id = ?').get(topicId) as TopicDb | undefined;
    return r === undefined
      ? null
      : {
          topicId: u8(r.topic_id),
          host: r.host,
          size: r.size,
          epochStartSize: r.epoch_start_size,
          checkpoint: u8(r.checkpoint),
          createdAt: r.created_at,
        };
  }

  async append(topicId: Uint8Array, batch: AppendBatch): Promise<WrittenEvent[]> {
    return this.grouped(() => {
      const t = this.q('SELECT size FROM topics WHERE topic_id = ?').get(topicId) as { size: number } | undefined;
      if (t === undefined) throw new RendezvousError('topic.unknown');
      if (t.size !== batch.expectedSize) {
        throw new RendezvousError('store.conflict', `the log has ${t.size} entries, not ${batch.expectedSize}`);
      }
      checkBatchShape(batch);
      const before = batch.members === undefined ? [] : this.membersNow(topicId);
      const events = this.applyBatch(topicId, batch, before, batch.now ?? Date.now());
      this.q('UPDATE topics SET size = ?, epoch_start_size = ?, checkpoint = ? WHERE topic_id = ?').run(
        batch.newSize,
        batch.epochStartSize,
        batch.checkpoint,
        topicId,
      );
      return events;
    });
  }

  /** Everything of a batch but the topic row itself; the caller's transaction makes it atomic. */
  private applyBatch(topicId: Uint8Array, batch: AppendBatch, before: MemberRow[], now: number): WrittenEvent[] {
    const nonce = this.q('INSERT OR IGNORE INTO message_nonces (topic_id, nonce) VALUES (?, ?)');
    for (const n of batch.nonces) {
      if (nonce.run(topicId, n).changes === 0) throw new RendezvousError('topic.replay');
    }
    const entry = this.q('INSERT INTO log_entries (topic_id, idx, type, entry, checkpoint) VALUES (?, ?, ?, ?, ?)');
    const last = batch.entries.length - 1;
    // The batch's checkpoint is the one of its last entry; an entry may bring its own.
    batch.entries.forEach((e, i) => entry.run(topicId, e.index, e.type, e.entry, e.checkpoint ?? (i === last ? batch.checkpoint : null)));
    if (batch.peers !== undefined) {
      const peer = this.q(
        'INSERT INTO replication (topic_id, server, next_index, until) VALUES (?, ?, 0, ?) ON CONFLICT (topic_id, server) DO UPDATE SET until = excluded.until',
      );
      for (const p of batch.peers) peer.run(topicId, p.server, p.until);
    }
    // Plain INSERT: stored hashes are written once and never rewritten (merkle.ts), so a
    // collision is a bug worth failing on.
    const hash = this.q('INSERT INTO log_hashes (topic_id, hidx, hash) VALUES (?, ?, ?)');
    for (const h of batch.hashes) hash.run(topicId, h.index, h.hash);
    if (batch.idempotency !== undefined) this.insertIdempotency(batch.idempotency);
    const events: WrittenEvent[] = [];
    for (const e of batch.entries) events.push({ seq: this.insertEvent('entry', topicId, null, null, e.index, now), kind: 'entry', index: e.index });
    if (batch.members !== undefined) {
      this.q('DELETE FROM topic_members WHERE topic_id = ?').run(topicId);
      const member = this.q('INSERT INTO topic_members (topic_id, member_id, user, role) VALUES (?, ?, ?, ?)');
      for (const m of batch.members) member.run(topicId, m.memberId, m.user, m.role);
      const was = new Set(before.map((m) => m.user));
      const is = new Set(batch.members.map((m) => m.user));
      const changed = [...[...is].filter((u) => !was.has(u)), ...[...was].filter((u) => !is.has(u))];
      for (const user of changed) events.push({ seq: this.insertEvent('membership', topicId, user, null, null, now), kind: 'membership', user });
    }
    return events;
  }

  private insertEvent(
    kind: EventRow['kind'],
    topicId: Uint8Array | null,
    user: string | null,
    deviceId: string | null,
    index: number | null,
    now: number,
  ): number {
    const r = this.q('INSERT INTO events (kind, topic_id, user, device_id, idx, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
      kind,
      topicId,
      user,
      deviceId,
      index,
      now,
    );
    return Number(r.lastInsertRowid);
  }

  async getEntries(topicId: Uint8Array, from: number, limit: number): Promise<EntryRow[]> {
    // SQLite reads a negative LIMIT as "no limit".
    if (limit <= 0) return [];
    const rows = this.q('SELECT idx, type, entry, checkpoint FROM log_entries WHERE topic_id = ? AND idx >= ? ORDER BY idx LIMIT ?').all(
      topicId,
      from,
      limit,
    ) as EntryDb[];
    return rows.map((r) => ({ index: r.idx, type: r.type, entry: u8(r.entry), checkpoint: r.checkpoint ? u8(r.checkpoint) : null }));
  }

  async getUpdates(topicId: Uint8Array): Promise<EntryRow[]> {
    const rows = this.q("SELECT idx, type, entry FROM log_entries WHERE topic_id = ? AND type = 'update' ORDER BY idx").all(
      topicId,
    ) as EntryDb[];
    return rows.map((r) => ({ index: r.idx, type: r.type, entry: u8(r.entry) }));
  }

  async readHashes(topicId: Uint8Array, indexes: number[]): Promise<Uint8Array[]> {
    // One read transaction so every hash comes from the same snapshot of the log.
    return this.read(() => {
      const get = this.q('SELECT hash FROM log_hashes WHERE topic_id = ? AND hidx = ?');
      return indexes.map((i) => {
        const r = get.get(topicId, i) as { hash: Buffer } | undefined;
        if (r === undefined) throw new Error(`stored hash ${i} of topic ${toHex(topicId)} is missing`);
        return u8(r.hash);
      });
    });
  }

  private membersNow(topicId: Uint8Array): MemberRow[] {
    const rows = this.q('SELECT member_id, user, role FROM topic_members WHERE topic_id = ? ORDER BY member_id').all(
      topicId,
    ) as MemberDb[];
    return rows.map((r) => ({ memberId: r.member_id, user: r.user, role: r.role }));
  }

  async getMembers(topicId: Uint8Array): Promise<MemberRow[]> {
    return this.membersNow(topicId);
  }

  async topicsOf(user: string): Promise<Uint8Array[]> {
    const rows = this.q('SELECT topic_id FROM topic_members WHERE user = ? ORDER BY topic_id').all(user) as { topic_id: Buffer }[];
    return rows.map((r) => u8(r.topic_id));
  }

  async hasNonce(topicId: Uint8Array, nonce: Uint8Array): Promise<boolean> {
    return this.q('SELECT 1 FROM message_nonces WHERE topic_id = ? AND nonce = ?').get(topicId, nonce) !== undefined;
  }

  // ---- live delivery --------------------------------------------------------------------------

  async eventsSince(cursor: number, user: string, deviceId: string, limit: number): Promise<EventRow[]> {
    if (limit <= 0) return [];
    const rows = this.q(EVENTS_SINCE_SQL).all({ cursor, user, device: deviceId, limit }) as EventDb[];
    return rows.map((r) => ({
      seq: r.seq,
      kind: r.kind,
      topicId: r.topic_id === null ? null : u8(r.topic_id),
      user: r.user,
      deviceId: r.device_id,
      index: r.idx,
      createdAt: r.created_at,
    }));
  }

  async eventsPurgedThrough(): Promise<number> {
    return Number((await this.getMeta('events_purged_through')) ?? 0);
  }

  async purgeExpired(
    now: number,
    cutoffs: { idempotencyBefore: number; eventsBefore: number },
  ): Promise<{ sessions: number; challenges: number; idempotency: number; events: number }> {
    return this.write(() => {
      const sessions = this.q('DELETE FROM sessions WHERE expires_at <= ?').run(now).changes;
      const challenges = this.q('DELETE FROM challenges WHERE expires_at <= ?').run(now).changes;
      const idempotency = this.q('DELETE FROM idempotency WHERE created_at < ?').run(cutoffs.idempotencyBefore).changes;
      // Purge by sequence number, so what is left is always a suffix of the stream.
      const top = (this.q('SELECT max(seq) AS s FROM events WHERE created_at < ?').get(cutoffs.eventsBefore) as { s: number | null }).s;
      let events = 0;
      if (top !== null) {
        events = this.q('DELETE FROM events WHERE seq <= ?').run(top).changes;
        const was = Number((this.q("SELECT value FROM meta WHERE key = 'events_purged_through'").get() as { value: string } | undefined)?.value ?? 0);
        this.q("INSERT INTO meta (key, value) VALUES ('events_purged_through', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(
          String(Math.max(was, top)),
        );
      }
      return { sessions, challenges, idempotency, events };
    });
  }

  async latestEventSeq(): Promise<number> {
    // The AUTOINCREMENT high-water mark rather than max(seq): deleting a removed device's
    // events must not move the latest sequence number backwards.
    const r = this.q("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as { seq: number } | undefined;
    return r?.seq ?? 0;
  }

  // ---- operations -----------------------------------------------------------------------------

  async counts(): Promise<{ users: number; devices: number; topics: number; entries: number; pins: number }> {
    // Entries from the topic sizes: the same number without scanning the largest table.
    return this.q(`SELECT
        (SELECT count(*) FROM users) AS users,
        (SELECT count(*) FROM devices) AS devices,
        (SELECT count(*) FROM topics) AS topics,
        (SELECT coalesce(sum(size), 0) FROM topics) AS entries,
        (SELECT count(*) FROM pins) AS pins`).get() as { users: number; devices: number; topics: number; entries: number; pins: number };
  }

  async backup(path: string): Promise<void> {
    await this.db.backup(path);
  }

  // ---- files ----------------------------------------------------------------------------------

  async putBlob(row: BlobRow, maxUserBytes?: number, remoteUploader = false): Promise<boolean> {
    return this.write(() => {
      if (this.q('SELECT 1 FROM blobs WHERE topic_id = ? AND blob_id = ?').get(row.topicId, row.blobId) !== undefined) return false;
      if (this.q('SELECT 1 FROM topics WHERE topic_id = ?').get(row.topicId) === undefined) throw new RendezvousError('topic.unknown');
      if (!remoteUploader && this.q('SELECT 1 FROM users WHERE user = ?').get(row.user) === undefined) throw new RendezvousError('user.unknown');
      if (maxUserBytes !== undefined && this.blobBytesNow(row.user) + row.size > maxUserBytes) {
        throw new RendezvousError('blob.quota_exceeded', `a user may store at most ${maxUserBytes} bytes of files`);
      }
      this.q('INSERT INTO blobs (topic_id, blob_id, size, user, device_id, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
        row.topicId,
        row.blobId,
        row.size,
        row.user,
        row.deviceId,
        row.createdAt,
      );
      return true;
    });
  }

  async getBlob(topicId: Uint8Array, blobId: Uint8Array): Promise<BlobRow | null> {
    const r = this.q('SELECT * FROM blobs WHERE topic_id = ? AND blob_id = ?').get(topicId, blobId) as BlobDb | undefined;
    return r === undefined
      ? null
      : { topicId: u8(r.topic_id), blobId: u8(r.blob_id), size: r.size, user: r.user, deviceId: r.device_id, createdAt: r.created_at };
  }

  private blobBytesNow(user: string): number {
    return (this.q('SELECT coalesce(sum(size), 0) AS n FROM blobs WHERE user = ?').get(user) as { n: number }).n;
  }

  async blobBytesOf(user: string): Promise<number> {
    return this.blobBytesNow(user);
  }

  async deleteTopic(topicId: Uint8Array): Promise<{ deleted: boolean; blobIds: Uint8Array[] }> {
    return this.write(() => {
      if (this.q('SELECT 1 FROM topics WHERE topic_id = ?').get(topicId) === undefined) return { deleted: false, blobIds: [] };
      const blobs = this.q('SELECT blob_id FROM blobs WHERE topic_id = ?').all(topicId) as Pick<BlobDb, 'blob_id'>[];
      // Events have no foreign key (they may name other servers' users): one statement per
      // partial index. Members, entries, hashes, nonces and blob rows go by ON DELETE CASCADE.
      this.q("DELETE FROM events WHERE kind = 'entry' AND topic_id = ?").run(topicId);
      this.q("DELETE FROM events WHERE kind = 'membership' AND topic_id = ?").run(topicId);
      this.q('DELETE FROM topics WHERE topic_id = ?').run(topicId);
      return { deleted: true, blobIds: blobs.map((r) => u8(r.blob_id)) };
    });
  }

  // ---- federation (protocol §17) ----------------------------------------------------------------

  async getServerKeys(server: string): Promise<Uint8Array[] | null> {
    const r = this.q('SELECT keys FROM server_keys WHERE server = ?').get(server) as { keys: string } | undefined;
    return r === undefined ? null : (JSON.parse(r.keys) as string[]).map((k) => u8(Buffer.from(k, 'base64url')));
  }

  async putServerKeys(server: string, keys: Uint8Array[], now: number): Promise<void> {
    const json = JSON.stringify(keys.map((k) => Buffer.from(k).toString('base64url')));
    this.write(() =>
      this.q('INSERT INTO server_keys (server, keys, updated_at) VALUES (?, ?, ?) ON CONFLICT (server) DO UPDATE SET keys = excluded.keys, updated_at = excluded.updated_at').run(
        server,
        json,
        now,
      ),
    );
  }

  async getRemoteUser(user: string): Promise<Uint8Array | null> {
    const r = this.q('SELECT identity_key FROM remote_users WHERE user = ?').get(user) as { identity_key: Buffer } | undefined;
    return r === undefined ? null : u8(r.identity_key);
  }

  async pinRemoteUser(user: string, identityKey: Uint8Array, now: number): Promise<Uint8Array> {
    return this.write(() => {
      this.q('INSERT OR IGNORE INTO remote_users (user, identity_key, pinned_at) VALUES (?, ?, ?)').run(user, identityKey, now);
      return u8((this.q('SELECT identity_key FROM remote_users WHERE user = ?').get(user) as { identity_key: Buffer }).identity_key);
    });
  }

  async replicationDue(server: string): Promise<ReplicationRow[]> {
    const rows = this.q(
      `SELECT r.topic_id, r.server, r.next_index, r.until, t.size FROM replication r JOIN topics t ON t.topic_id = r.topic_id
        WHERE r.server = ? AND r.next_index < t.size AND (r.until IS NULL OR r.next_index <= r.until) ORDER BY r.topic_id`,
    ).all(server) as { topic_id: Buffer; server: string; next_index: number; until: number | null; size: number }[];
    return rows.map((r) => ({ topicId: u8(r.topic_id), server: r.server, nextIndex: r.next_index, until: r.until, size: r.size }));
  }

  async replicationPending(topicId: Uint8Array): Promise<number> {
    const r = this.q(
      `SELECT count(*) AS n FROM replication r JOIN topics t ON t.topic_id = r.topic_id
        WHERE r.topic_id = ? AND r.next_index < t.size AND (r.until IS NULL OR r.next_index <= r.until)`,
    ).get(topicId) as { n: number };
    return r.n;
  }

  async federationDestinations(): Promise<string[]> {
    const rows = this.q('SELECT server AS d FROM replication UNION SELECT destination AS d FROM outbox').all() as { d: string }[];
    return rows.map((r) => r.d);
  }

  async setReplicationCursor(topicId: Uint8Array, server: string, nextIndex: number, rewind = false): Promise<void> {
    this.write(() => {
      const sql = rewind
        ? 'UPDATE replication SET next_index = ? WHERE topic_id = ? AND server = ?'
        : 'UPDATE replication SET next_index = max(next_index, ?) WHERE topic_id = ? AND server = ?';
      this.q(sql).run(nextIndex, topicId, server);
    });
  }

  async addOutbox(row: Omit<OutboxRow, 'id' | 'attempts'>, idempotency?: IdempotencyRow): Promise<number> {
    return this.write(() => {
      if (idempotency !== undefined) this.insertIdempotency(idempotency);
      if (row.coalesceKey !== null) {
        const old = this.q('SELECT id FROM outbox WHERE destination = ? AND coalesce_key = ?').get(row.destination, row.coalesceKey) as
          | { id: number }
          | undefined;
        if (old !== undefined) {
          this.q('UPDATE outbox SET payload = ?, created_at = ? WHERE id = ?').run(row.payload, row.createdAt, old.id);
          return old.id;
        }
      }
      return Number(
        this.q('INSERT INTO outbox (destination, kind, topic_id, coalesce_key, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
          row.destination,
          row.kind,
          row.topicId,
          row.coalesceKey,
          row.payload,
          row.createdAt,
        ).lastInsertRowid,
      );
    });
  }

  async nextOutbox(destination: string, limit: number): Promise<OutboxRow[]> {
    const rows = this.q('SELECT * FROM outbox WHERE destination = ? ORDER BY id LIMIT ?').all(destination, limit) as OutboxDb[];
    return rows.map((r) => ({
      id: r.id,
      destination: r.destination,
      kind: r.kind,
      topicId: u8(r.topic_id),
      coalesceKey: r.coalesce_key,
      payload: r.payload,
      createdAt: r.created_at,
      attempts: r.attempts,
    }));
  }

  async completeOutbox(id: number, answer?: { deviceId: string; clientId: string; response: string }, payload?: string): Promise<void> {
    this.write(() => {
      const deleted =
        payload === undefined
          ? this.q('DELETE FROM outbox WHERE id = ?').run(id).changes
          : this.q('DELETE FROM outbox WHERE id = ? AND payload = ?').run(id, payload).changes;
      if (deleted > 0 && answer !== undefined) {
        this.q('UPDATE idempotency SET response = ? WHERE device_id = ? AND client_id = ?').run(answer.response, answer.deviceId, answer.clientId);
      }
    });
  }

  async failOutbox(id: number): Promise<void> {
    this.write(() => this.q('UPDATE outbox SET attempts = attempts + 1 WHERE id = ?').run(id));
  }

  async putCosignature(topicId: Uint8Array, witness: string, size: number, cosignature: Uint8Array): Promise<void> {
    this.write(() =>
      this.q(
        `INSERT INTO witnesses (topic_id, witness, size, cosignature) VALUES (?, ?, ?, ?)
           ON CONFLICT (topic_id, witness) DO UPDATE SET size = excluded.size, cosignature = excluded.cosignature WHERE excluded.size >= witnesses.size`,
      ).run(topicId, witness, size, cosignature),
    );
  }

  async listCosignatures(topicId: Uint8Array): Promise<{ witness: string; size: number; cosignature: Uint8Array }[]> {
    const rows = this.q('SELECT witness, size, cosignature FROM witnesses WHERE topic_id = ? ORDER BY witness').all(topicId) as {
      witness: string;
      size: number;
      cosignature: Buffer;
    }[];
    return rows.map((r) => ({ witness: r.witness, size: r.size, cosignature: u8(r.cosignature) }));
  }

  async addFork(row: Omit<ForkRow, 'id'>): Promise<void> {
    this.write(() =>
      this.q('INSERT INTO forks (topic_id, kind, server, evidence, created_at) VALUES (?, ?, ?, ?, ?)').run(
        row.topicId,
        row.kind,
        row.server,
        row.evidence,
        row.createdAt,
      ),
    );
  }

  async listForks(topicId: Uint8Array): Promise<ForkRow[]> {
    const rows = this.q('SELECT * FROM forks WHERE topic_id = ? ORDER BY id').all(topicId) as ForkDb[];
    return rows.map((r) => ({ id: r.id, topicId: u8(r.topic_id), kind: r.kind, server: r.server, evidence: r.evidence, createdAt: r.created_at }));
  }
}

/** The store trusts the protocol layer for content, but a batch that would leave holes in the log is a bug. */
function checkBatchShape(batch: AppendBatch): void {
  if (batch.newSize !== batch.expectedSize + batch.entries.length) {
    throw new Error(`append batch: ${batch.entries.length} entries cannot take size ${batch.expectedSize} to ${batch.newSize}`);
  }
  batch.entries.forEach((e, i) => {
    if (e.index !== batch.expectedSize + i) throw new Error(`append batch: entry ${i} has index ${e.index}, expected ${batch.expectedSize + i}`);
  });
}

function pinRow(r: PinDb): PinRow {
  return { id: r.id, user: r.user, pinHash: u8(r.pin_hash), expiresAt: r.expires_at, triesLeft: r.tries_left, createdAt: r.created_at };
}

function userRow(r: UserDb): UserRow {
  return { user: r.user, identityKey: u8(r.identity_key), createdAt: r.created_at };
}

function pushRow(r: PushDb): PushSubscriptionRow {
  return { id: r.id, deviceId: r.device_id, kind: r.kind, endpoint: r.endpoint, p256dh: r.p256dh, auth: r.auth, createdAt: r.created_at };
}

function deviceRow(r: DeviceDb): DeviceRow {
  return { deviceId: r.device_id, user: r.user, cert: u8(r.cert), createdAt: r.created_at };
}
