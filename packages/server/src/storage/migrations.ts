/**
 * Numbered schema migrations of the SQLite backend (PostgreSQL gets its own list).
 *
 * Append only: a released migration is never edited, because databases in the field have
 * already run it; a change is a new migration with the next version. `migrate()` applies the
 * pending ones in one transaction and records each in `schema_migrations`, and a database whose
 * recorded version is above the last one here is refused rather than misread.
 *
 * Design notes for version 1:
 * - STRICT tables, so a Uint8Array that arrives as text or a fractional time fails loudly
 *   instead of being stored with the wrong type.
 * - Every query of the Store interface has an index, and every foreign-key child column leads
 *   an index, so cascading deletes never scan a table.
 * - Devices, not users, own sessions, challenges, prekeys, pending bundles and idempotency
 *   records (ON DELETE CASCADE); users own devices and topic keys. Topic tables do not point at
 *   users: members may live on other servers, and a deleted user's memberships stay in the log.
 * - `bundles.id` and `events.seq` are AUTOINCREMENT: clients acknowledge and resume by these
 *   numbers, so an id must never be handed out twice, even after the newest row is deleted.
 * - The events indexes are partial, one per kind, matching the three branches of eventsSince.
 */

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;

CREATE TABLE pins (
  id         TEXT PRIMARY KEY,
  user       TEXT NOT NULL,
  pin_hash   BLOB NOT NULL,
  expires_at INTEGER NOT NULL,
  tries_left INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX pins_by_user ON pins (user, expires_at);

CREATE TABLE users (
  user         TEXT PRIMARY KEY,
  identity_key BLOB NOT NULL,
  created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
  device_id  TEXT PRIMARY KEY,
  user       TEXT NOT NULL REFERENCES users (user) ON DELETE CASCADE,
  cert       BLOB NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX devices_by_user ON devices (user, created_at);

-- Every device id ever removed: a device key is never accepted again once revoked.
CREATE TABLE removed_devices (
  device_id TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
  token_hash BLOB PRIMARY KEY,
  device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  user       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_device ON sessions (device_id);

CREATE TABLE challenges (
  challenge  BLOB PRIMARY KEY,
  device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX challenges_by_device ON challenges (device_id);
CREATE INDEX challenges_by_expiry ON challenges (expires_at);

-- The rowid gives first-in, first-out claims: the oldest key is handed out first.
CREATE TABLE prekeys (
  id        INTEGER PRIMARY KEY,
  device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  prekey    BLOB NOT NULL,
  encoded   BLOB NOT NULL,
  UNIQUE (device_id, prekey)
) STRICT;
CREATE INDEX prekeys_claim ON prekeys (device_id, id);

CREATE TABLE topic_keys (
  id      INTEGER PRIMARY KEY,
  user    TEXT NOT NULL REFERENCES users (user) ON DELETE CASCADE,
  key_id  TEXT NOT NULL,
  encoded BLOB NOT NULL,
  UNIQUE (user, key_id)
) STRICT;
CREATE INDEX topic_keys_claim ON topic_keys (user, id);

CREATE TABLE bundles (
  id                  INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient_device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  -- No foreign key: the sender may already be removed while the bundle waits.
  sender_device_id    TEXT NOT NULL,
  encoded             BLOB NOT NULL,
  created_at          INTEGER NOT NULL
) STRICT;
CREATE INDEX bundles_by_recipient ON bundles (recipient_device_id, id);
CREATE INDEX bundles_by_sender ON bundles (sender_device_id);

CREATE TABLE idempotency (
  device_id    TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  client_id    TEXT NOT NULL,
  request_hash BLOB NOT NULL,
  response     TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (device_id, client_id)
) STRICT;

CREATE TABLE topics (
  topic_id         BLOB PRIMARY KEY,
  host             TEXT NOT NULL,
  size             INTEGER NOT NULL CHECK (size >= 0),
  epoch_start_size INTEGER NOT NULL CHECK (epoch_start_size >= 0),
  checkpoint       BLOB NOT NULL,
  created_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE topic_members (
  topic_id  BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  member_id INTEGER NOT NULL,
  user      TEXT NOT NULL,
  role      TEXT NOT NULL CHECK (role IN ('admin', 'participant', 'observer')),
  PRIMARY KEY (topic_id, member_id),
  UNIQUE (user, topic_id)
) STRICT, WITHOUT ROWID;

-- A rowid table: entries can be large, which WITHOUT ROWID handles badly.
CREATE TABLE log_entries (
  topic_id BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  idx      INTEGER NOT NULL CHECK (idx >= 0),
  type     TEXT NOT NULL CHECK (type IN ('update', 'message')),
  entry    BLOB NOT NULL,
  PRIMARY KEY (topic_id, idx)
) STRICT;
-- Rebuilding a topic's state replays only its updates (Store.getUpdates).
CREATE INDEX log_updates ON log_entries (topic_id, idx) WHERE type = 'update';

CREATE TABLE log_hashes (
  topic_id BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  hidx     INTEGER NOT NULL CHECK (hidx >= 0),
  hash     BLOB NOT NULL,
  PRIMARY KEY (topic_id, hidx)
) STRICT, WITHOUT ROWID;

CREATE TABLE message_nonces (
  topic_id BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  nonce    BLOB NOT NULL,
  PRIMARY KEY (topic_id, nonce)
) STRICT, WITHOUT ROWID;

-- No foreign keys: a membership event may name a user of another server, and deleting a
-- device or user removes its events explicitly.
CREATE TABLE events (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  kind       TEXT NOT NULL CHECK (kind IN ('entry', 'bundle', 'membership')),
  topic_id   BLOB,
  user       TEXT,
  device_id  TEXT,
  idx        INTEGER,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX events_entry ON events (topic_id, seq) WHERE kind = 'entry';
CREATE INDEX events_bundle ON events (device_id, seq) WHERE kind = 'bundle';
CREATE INDEX events_membership ON events (user, seq) WHERE kind = 'membership';
`,
  },
  {
    // Files (protocol §12). Blobs are scoped per topic, so a topic's deletion cascades to its
    // blob rows. WITHOUT ROWID: small rows keyed by their primary key, and the by-uploader
    // index then carries (topic_id, blob_id) itself, covering the quota sum and user deletion.
    // No foreign key to users, as for topic tables; deleteUser removes the rows explicitly.
    // The partial index on membership events by topic serves deleteTopic.
    version: 2,
    name: 'file blobs',
    sql: `
CREATE TABLE blobs (
  topic_id   BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  blob_id    BLOB NOT NULL,
  size       INTEGER NOT NULL CHECK (size >= 0),
  user       TEXT NOT NULL,
  device_id  TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (topic_id, blob_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX blobs_by_user ON blobs (user, size);

CREATE INDEX events_membership_by_topic ON events (topic_id) WHERE kind = 'membership';
`,
  },
  {
    version: 3,
    name: 'retention; removed user names',
    sql: `
-- Store.purgeExpired deletes by these.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
CREATE INDEX events_by_age ON events (created_at);
-- Names of deleted users: never registered again, or the newcomer would inherit the old
-- account's memberships (topic_members names users, not identity keys) and contacts.
CREATE TABLE removed_users (
  user TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;
`,
  },
  {
    // Web Push subscriptions (docs/server.md §Push), owned by devices: deleting a device (or
    // its user) cascades to them. The unique key leads with device_id, so it also serves the
    // cascade and the per-device listing; one endpoint appears once per device.
    version: 4,
    name: 'push subscriptions',
    sql: `
CREATE TABLE push_subscriptions (
  id         TEXT PRIMARY KEY,
  device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  endpoint   TEXT NOT NULL,
  p256dh     TEXT NOT NULL,
  auth       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (device_id, endpoint)
) STRICT;
`,
  },
  {
    // Federation (protocol §17).
    // - Idempotency records of submissions forwarded by another server name a remote device
    //   (`origin/deviceId`), so the table loses its foreign key to devices; removing a device
    //   deletes its records explicitly.
    // - Each entry keeps the checkpoint signed for the log that ends with it (a host's own, or
    //   the one a replica received), so a delivery can carry the checkpoint of its last entry.
    // - server_keys: the keys pinned for each other server (§17.1); remote_users: identity
    //   keys of other servers' users, pinned on first use (§17.4).
    // - replication: the host's cursor per topic and member server (§17.4); `until` is the
    //   last index to deliver to a server whose last user was removed.
    // - outbox: forwarded submissions and cosignatures waiting for their destination (§17.6);
    //   a coalesce key keeps only the latest of a kind (one cosignature per topic and peer).
    // - witnesses: the latest cosignature of each witness per topic; forks: what was detected.
    version: 5,
    name: 'federation',
    sql: `
CREATE TABLE idempotency_v5 (
  device_id    TEXT NOT NULL,
  client_id    TEXT NOT NULL,
  request_hash BLOB NOT NULL,
  response     TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (device_id, client_id)
) STRICT;
INSERT INTO idempotency_v5 SELECT device_id, client_id, request_hash, response, created_at FROM idempotency;
DROP TABLE idempotency;
ALTER TABLE idempotency_v5 RENAME TO idempotency;
CREATE INDEX idempotency_by_age ON idempotency (created_at);

ALTER TABLE log_entries ADD COLUMN checkpoint BLOB;

CREATE TABLE server_keys (
  server     TEXT PRIMARY KEY,
  keys       TEXT NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE remote_users (
  user         TEXT PRIMARY KEY,
  identity_key BLOB NOT NULL,
  pinned_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE replication (
  topic_id   BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  server     TEXT NOT NULL,
  next_index INTEGER NOT NULL CHECK (next_index >= 0),
  until      INTEGER,
  PRIMARY KEY (topic_id, server)
) STRICT, WITHOUT ROWID;
CREATE INDEX replication_by_server ON replication (server, topic_id);

CREATE TABLE outbox (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  destination  TEXT NOT NULL,
  kind         TEXT NOT NULL CHECK (kind IN ('submit', 'witness')),
  topic_id     BLOB NOT NULL,
  coalesce_key TEXT,
  payload      TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  attempts     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX outbox_by_destination ON outbox (destination, id);
CREATE UNIQUE INDEX outbox_coalesce ON outbox (destination, coalesce_key) WHERE coalesce_key IS NOT NULL;

CREATE TABLE witnesses (
  topic_id    BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  witness     TEXT NOT NULL,
  size        INTEGER NOT NULL,
  cosignature BLOB NOT NULL,
  PRIMARY KEY (topic_id, witness)
) STRICT, WITHOUT ROWID;

CREATE TABLE forks (
  id         INTEGER PRIMARY KEY,
  topic_id   BLOB NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  kind       TEXT NOT NULL CHECK (kind IN ('fork', 'rollback')),
  server     TEXT NOT NULL,
  evidence   TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX forks_by_topic ON forks (topic_id, id);
`,
  },
  {
    // Push providers besides Web Push (docs/server.md §Push): a subscription gets a kind, and
    // for `apns` and `fcm` its endpoint column holds the device token (keys empty). The unique
    // key gains the kind, so a token can never be mistaken for another provider's. SQLite
    // cannot change a table's UNIQUE constraint in place: the table is rebuilt (nothing
    // references it); existing rows become `webpush`.
    version: 6,
    name: 'push subscription kinds',
    sql: `
CREATE TABLE push_subscriptions_v6 (
  id         TEXT PRIMARY KEY,
  device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  kind       TEXT NOT NULL CHECK (kind IN ('webpush', 'apns', 'fcm')),
  endpoint   TEXT NOT NULL,
  p256dh     TEXT NOT NULL,
  auth       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (device_id, kind, endpoint)
) STRICT;
INSERT INTO push_subscriptions_v6 (id, device_id, kind, endpoint, p256dh, auth, created_at)
  SELECT id, device_id, 'webpush', endpoint, p256dh, auth, created_at FROM push_subscriptions;
DROP TABLE push_subscriptions;
ALTER TABLE push_subscriptions_v6 RENAME TO push_subscriptions;
`,
  },
];

/** The schema version this code writes and understands. */
export const LATEST_SCHEMA_VERSION: number = MIGRATIONS.reduce((v, m) => Math.max(v, m.version), 0);
