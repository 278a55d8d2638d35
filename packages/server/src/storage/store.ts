/**
 * The server's storage interface (docs/server.md §Storage).
 *
 * Domain-shaped rather than generic: every method is one atomic unit of work, so a backend
 * (SQLite now, PostgreSQL next) implements each as one transaction and the conformance suite
 * (test/storage/conformance.ts) can state each method's guarantees — atomic claims, all-or-
 * nothing appends, idempotency records written with the data they describe — once for every
 * backend. The server's domain logic validates everything with the protocol core first; the
 * store only persists and enforces uniqueness and atomicity.
 *
 * Conventions: byte strings are Uint8Array; times are milliseconds since the Unix epoch;
 * ids of devices are base64url device keys (protocol `deviceId`); user names are full user ids
 * (`name@server`). Methods reject (never silently ignore) with a RendezvousError where a code
 * is named, and otherwise with a plain Error for backend failures.
 */

export interface PinRow {
  /** Random public id (base64url) used to list and revoke the pin; not the pin itself. */
  id: string;
  user: string;
  /** SHA-256 of the pin. The pin itself is never stored. */
  pinHash: Uint8Array;
  expiresAt: number;
  triesLeft: number;
  createdAt: number;
}

export interface UserRow {
  user: string;
  identityKey: Uint8Array;
  createdAt: number;
}

export interface DeviceRow {
  deviceId: string;
  user: string;
  /** The encoded DeviceCert (protocol §5.1). */
  cert: Uint8Array;
  createdAt: number;
}

export interface SessionRow {
  /** SHA-256 of the bearer token. The token itself is never stored. */
  tokenHash: Uint8Array;
  deviceId: string;
  user: string;
  createdAt: number;
  expiresAt: number;
}

export type PinResult = 'ok' | 'wrong_pin' | 'no_pin' | 'user_exists';

export interface TopicRow {
  topicId: Uint8Array;
  host: string;
  /** Number of entries in the log. */
  size: number;
  /** Log size just after the update that started the current epoch (protocol §8.4). */
  epochStartSize: number;
  /** The latest encoded Checkpoint (protocol §10). */
  checkpoint: Uint8Array;
  createdAt: number;
}

export interface MemberRow {
  memberId: number;
  user: string;
  role: 'admin' | 'participant' | 'observer';
}

export interface EntryRow {
  index: number;
  type: 'update' | 'message';
  /** The encoded LogEntry (protocol §9.1): the leaf data. */
  entry: Uint8Array;
  /**
   * The encoded Checkpoint of the log ending with this entry, when one was signed for it
   * (protocol §17.4: a delivery carries its last entry's checkpoint). Filled by getEntries.
   */
  checkpoint?: Uint8Array | null;
}

/** What a device's client-chosen id maps to (the original result of the request). */
export interface IdempotencyRow {
  deviceId: string;
  clientId: string;
  /** SHA-256 of the request body: the same id with another body is an error. */
  requestHash: Uint8Array;
  /** The response to replay, as stored JSON text. */
  response: string;
  createdAt: number;
}

/**
 * One append to a topic log, written atomically: the entries, the new Merkle stored hashes,
 * the new head, membership (when an update changed it), message nonces (replay protection),
 * the idempotency record of the request, and the live-delivery event.
 */
export interface AppendBatch {
  /** The log size the caller computed against; the append fails with `store.conflict` otherwise. */
  expectedSize: number;
  entries: EntryRow[];
  /** New stored hashes (merkle.ts layout): index → 32-byte hash. */
  hashes: { index: number; hash: Uint8Array }[];
  newSize: number;
  checkpoint: Uint8Array;
  epochStartSize: number;
  /** The complete member list after this append, when an update changed it. */
  members?: MemberRow[];
  /** Nonces of the messages in `entries` (unique per topic: a duplicate is `topic.replay`). */
  nonces: Uint8Array[];
  idempotency?: IdempotencyRow;
  /** Wall-clock time of the append (ms), recorded on its events; default the store's clock. */
  now?: number;
  /**
   * Replication cursors to create or change (protocol §17.4, host only): a server not yet
   * known starts at index 0; `until` is the last index it receives (null: no end).
   */
  peers?: { server: string; until: number | null }[];
}

export interface KeyUpload {
  user: string;
  senderDeviceId: string;
  topicKeys?: { keys: { keyId: string; encoded: Uint8Array }[]; max: number };
  bundles: { recipientDeviceId: string; encoded: Uint8Array }[];
  /** The record of the request, written in the same transaction. */
  idempotency: Omit<IdempotencyRow, 'response'>;
  /**
   * The record's response (an Outcome of idempotency.ts): `body` as given, except that the field
   * named by `countField` is set to the user's topic-key count after the upload. Data, not a
   * callback, so that the write can run on another thread (sqlite-threaded.ts).
   */
  response: { status: number; body: Record<string, unknown>; countField?: string };
  now: number;
}

export interface KeyUploadResult {
  topicKeys: number | null;
  bundleIds: number[];
  /** The `bundle` events written, one per bundle in order. */
  events: WrittenEvent[];
  /** The response recorded, as stored (JSON text). */
  response: string;
}

/**
 * The events one transaction wrote, in seq order (docs/server.md §Events): what live delivery
 * needs to announce them without reading them back. The seqs of one transaction are consecutive.
 */
export type WrittenEvent =
  | { seq: number; kind: 'entry'; index: number }
  | { seq: number; kind: 'membership'; user: string }
  | { seq: number; kind: 'bundle'; deviceId: string };

/** A live-delivery event (server spec §Events). Sequence numbers are global and increasing. */
export interface EventRow {
  seq: number;
  kind: 'entry' | 'bundle' | 'membership';
  topicId: Uint8Array | null;
  /** Set for events addressed to one user (membership) or one device (bundle). */
  user: string | null;
  deviceId: string | null;
  /** For `entry`: the log index. */
  index: number | null;
  createdAt: number;
}

/** A device's push subscription (docs/server.md §Push): where and how to wake it. */
export interface PushSubscriptionRow {
  /** Random public id (base64url), for the device to list and delete it. */
  id: string;
  deviceId: string;
  /** The provider: Web Push, Apple Push Notification service, Firebase Cloud Messaging. */
  kind: 'webpush' | 'apns' | 'fcm';
  /**
   * `webpush`: the push service URL (a capability: whoever knows it can push to the browser);
   * `apns`, `fcm`: the device token. One (kind, endpoint) appears once per device.
   */
  endpoint: string;
  /** Web Push only (empty otherwise): the browser's P-256 public key (65 bytes, uncompressed) and auth secret (16 bytes), base64url (RFC 8291). */
  p256dh: string;
  auth: string;
  createdAt: number;
}

export interface Store {
  /** Applies pending numbered migrations; idempotent. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  // ---- server settings --------------------------------------------------------------------
  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;

  // ---- admin: registration pins -------------------------------------------------------------
  createPin(pin: PinRow): Promise<void>;
  listPins(): Promise<PinRow[]>;
  /** Returns false if no such pin. */
  deletePin(id: string): Promise<boolean>;

  /**
   * Registration, atomically: finds an unexpired pin for `user.user` whose hash equals
   * `pinHash`. On a match the pin is deleted and the user and first device are created
   * ('ok'). On a mismatch every unexpired pin for that user loses a try and pins at zero tries
   * are deleted ('wrong_pin'). No unexpired pin: 'no_pin'. A user of that name already
   * exists: 'user_exists' (checked first; the pin is not touched).
   */
  registerWithPin(user: UserRow, device: DeviceRow, pinHash: Uint8Array, now: number): Promise<PinResult>;

  // ---- users and devices ----------------------------------------------------------------------
  getUser(user: string): Promise<UserRow | null>;
  /** Whether the name is registered or belonged to a deleted user (names are never reused). */
  nameTaken(user: string): Promise<boolean>;
  listUsers(): Promise<UserRow[]>;
  /**
   * Deletes the user and everything of theirs: devices, sessions, push subscriptions, prekeys, topic keys, bundles
   * to or from their devices, idempotency records, pins for the name. Their memberships in
   * topics stay in the topic logs (only an update can remove a member), so the name is never
   * registered again (`nameTaken`, registerWithPin 'user_exists'). Returns false if none.
   * The rows of the blobs they uploaded are deleted too and returned, for the caller to delete
   * the files from the blob store.
   */
  deleteUser(user: string): Promise<{ deleted: boolean; blobs: { topicId: Uint8Array; blobId: Uint8Array }[] }>;

  /** Fails with `device.exists` if the device id was ever used (devices are never re-added). */
  addDevice(device: DeviceRow): Promise<void>;
  getDevice(deviceId: string): Promise<DeviceRow | null>;
  listDevices(user: string): Promise<DeviceRow[]>;
  /** Deletes the device with its sessions, prekeys, pending bundles and push subscriptions; remembers the id. */
  deleteDevice(deviceId: string): Promise<boolean>;

  // ---- push subscriptions (docs/server.md §Push) ----------------------------------------------
  /**
   * Adds a subscription of an existing device. The same kind and endpoint (or token) again for
   * the same device replaces its keys and keeps its id and creation time (a re-subscribing); the
   * stored row is returned. Fails with `push.too_many` (adding nothing) if the device would
   * hold more than `max`, and with `device.unknown` if the device does not exist.
   */
  addPushSubscription(row: PushSubscriptionRow, max: number): Promise<PushSubscriptionRow>;
  /** The device's subscriptions, oldest first. */
  listPushSubscriptions(deviceId: string): Promise<PushSubscriptionRow[]>;
  /** Every user with a push subscription on one of their devices (the dispatcher's filter, push.ts). */
  usersWithPushSubscriptions(): Promise<string[]>;
  /** The subscriptions of every device of `user`. */
  pushSubscriptionsOfUser(user: string): Promise<PushSubscriptionRow[]>;
  /** Deletes the device's subscription `id`; false if the device has none with that id. */
  deletePushSubscription(deviceId: string, id: string): Promise<boolean>;

  // ---- sessions -------------------------------------------------------------------------------
  createSession(s: SessionRow): Promise<void>;
  /** The session if it exists and `now < expiresAt`. */
  getSession(tokenHash: Uint8Array, now: number): Promise<SessionRow | null>;
  deleteSession(tokenHash: Uint8Array): Promise<boolean>;
  /** Single-use challenges for device authentication: true the first time only, before expiry. */
  putChallenge(challenge: Uint8Array, deviceId: string, expiresAt: number): Promise<void>;
  takeChallenge(challenge: Uint8Array, deviceId: string, now: number): Promise<boolean>;

  // ---- device prekeys (one-time X25519 keys, protocol §5.2) --------------------------------
  /**
   * Adds prekeys; fails with `keys.too_many` (adding none) if the device would hold more than
   * `max`. Duplicates are ignored. Returns how many the device holds afterwards.
   */
  addPrekeys(deviceId: string, prekeys: { prekey: Uint8Array; encoded: Uint8Array }[], max: number): Promise<number>;
  countPrekeys(deviceId: string): Promise<number>;
  /** Removes and returns one prekey of the device, or null if none. Never the same one twice. */
  claimPrekey(deviceId: string): Promise<Uint8Array | null>;

  // ---- topic keys (protocol §6.1) ----------------------------------------------------------------
  /**
   * Adds certified topic keys (encoded) of a user, keyed by topic key id (duplicates ignored);
   * fails with `keys.too_many` (adding none) above `max`. Returns how many the user holds afterwards.
   */
  addTopicKeys(user: string, keys: { keyId: string; encoded: Uint8Array }[], max: number): Promise<number>;
  countTopicKeys(user: string): Promise<number>;
  /** Removes and returns one unclaimed topic key of the user, or null. Never the same one twice. */
  claimTopicKey(user: string): Promise<Uint8Array | null>;

  // ---- key bundles (protocol §6.2) ----------------------------------------------------------------
  /** Stores a bundle for a device; returns its id (increasing). Also writes a `bundle` event. */
  addBundle(recipientDeviceId: string, senderDeviceId: string, encoded: Uint8Array, now: number): Promise<number>;
  /**
   * A device's key upload, atomically (docs/server.md §Key pools): optional topic keys of the
   * user (as addTopicKeys, `keys.too_many` above `maxTopicKeys`), bundles for sibling devices
   * (as addBundle, with their events), and the idempotency record of the request
   * (`store.conflict` if it exists). Either all of it is stored or none of it: a crash can never
   * leave topic keys whose secrets never reached the user's other devices.
   */
  addKeyUpload(u: KeyUpload): Promise<KeyUploadResult>;
  listBundles(recipientDeviceId: string): Promise<{ id: number; senderDeviceId: string; encoded: Uint8Array }[]>;
  /** Deletes bundles of this device with id ≤ upTo (acknowledged); returns the count. */
  ackBundles(recipientDeviceId: string, upTo: number): Promise<number>;

  // ---- idempotency ------------------------------------------------------------------------------
  getIdempotency(deviceId: string, clientId: string): Promise<IdempotencyRow | null>;
  /** Fails with `store.conflict` if the device already has a record with this client id. */
  putIdempotency(row: IdempotencyRow): Promise<void>;

  // ---- topics and logs ----------------------------------------------------------------------------
  /** Creates the topic with its first entry; fails with `topic.exists` if the id is taken. */
  createTopic(topic: Omit<TopicRow, 'size' | 'checkpoint' | 'epochStartSize'>, batch: AppendBatch): Promise<WrittenEvent[]>;
  getTopic(topicId: Uint8Array): Promise<TopicRow | null>;
  /**
   * Appends atomically (see AppendBatch); `topic.unknown` if there is no such topic;
   * `store.conflict` if the size moved or the idempotency record exists; `topic.replay` on
   * a nonce seen before. Writes one `entry` event per entry and, when `members` is given, one
   * `membership` event per user who joined or left (compared with the stored member list).
   * `createTopic` does the same for its first batch (every initial member gets a membership event).
   * Both resolve, once durable, to the events written (entries first, in log order).
   */
  append(topicId: Uint8Array, batch: AppendBatch): Promise<WrittenEvent[]>;
  getEntries(topicId: Uint8Array, from: number, limit: number): Promise<EntryRow[]>;
  /** Every `update` entry of the topic in log order: what rebuilding the topic state replays. */
  getUpdates(topicId: Uint8Array): Promise<EntryRow[]>;
  /** Stored Merkle hashes by index (merkle.ts HashReader); throws if one is missing. */
  readHashes(topicId: Uint8Array, indexes: number[]): Promise<Uint8Array[]>;
  getMembers(topicId: Uint8Array): Promise<MemberRow[]>;
  /** Topic ids in which `user` is a member. */
  topicsOf(user: string): Promise<Uint8Array[]>;
  hasNonce(topicId: Uint8Array, nonce: Uint8Array): Promise<boolean>;

  // ---- live delivery ----------------------------------------------------------------------------
  /**
   * Events after `cursor` that concern a device of `user`: entries of topics the user is a
   * member of now, bundles for `deviceId`, and membership events of the user; ascending seq.
   */
  eventsSince(cursor: number, user: string, deviceId: string, limit: number): Promise<EventRow[]>;
  latestEventSeq(): Promise<number>;
  /** The highest event seq ever purged (0 if none): a cursor below it has missed events. */
  eventsPurgedThrough(): Promise<number>;

  // ---- retention ---------------------------------------------------------------------------------
  /**
   * Deletes what has expired (docs/server.md §Retention): sessions and challenges past their
   * expiry at `now`, idempotency records created before `idempotencyBefore`, and events created
   * before `eventsBefore` (raising eventsPurgedThrough). Returns how many rows of each went.
   */
  purgeExpired(
    now: number,
    cutoffs: { idempotencyBefore: number; eventsBefore: number },
  ): Promise<{ sessions: number; challenges: number; idempotency: number; events: number }>;

  // ---- operations --------------------------------------------------------------------------------
  counts(): Promise<{ users: number; devices: number; topics: number; entries: number; pins: number }>;
  /** A consistent copy of the database while serving (SQLite: online backup API). */
  backup(path: string): Promise<void>;

  // ---- files (protocol §12): blob metadata; the bytes are in the BlobStore ---------------------
  /**
   * Records an uploaded blob. Idempotent: if the topic already has this blob id, nothing
   * changes and the result is false (the first uploader keeps it). Otherwise, in one
   * transaction: `topic.unknown` if the topic is gone, `user.unknown` if the uploader is (a
   * deletion that raced the upload must not leave a row behind; not checked for a
   * `remoteUploader`, a user of another server, protocol §17.3), `blob.quota_exceeded` if
   * `maxUserBytes` is given and the uploader's blobs would exceed it; else inserted, true.
   */
  putBlob(row: BlobRow, maxUserBytes?: number, remoteUploader?: boolean): Promise<boolean>;
  getBlob(topicId: Uint8Array, blobId: Uint8Array): Promise<BlobRow | null>;
  /** Total size of the blobs `user` uploaded (what the per-user quota counts). */
  blobBytesOf(user: string): Promise<number>;
  /**
   * Deletes the topic with everything of it: log entries, stored hashes, members, nonces, its
   * entry and membership events, and its blob rows, whose ids are returned for the caller to
   * delete the files. False (and nothing) if there is no such topic.
   */
  deleteTopic(topicId: Uint8Array): Promise<{ deleted: boolean; blobIds: Uint8Array[] }>;

  // ---- federation (protocol §17) -----------------------------------------------------------------
  /** The keys pinned for another server (§17.1), oldest first; null if never contacted. */
  getServerKeys(server: string): Promise<Uint8Array[] | null>;
  putServerKeys(server: string, keys: Uint8Array[], now: number): Promise<void>;
  /** The identity key pinned for a user of another server, or null. */
  getRemoteUser(user: string): Promise<Uint8Array | null>;
  /** Pins `identityKey` for `user` unless one is pinned already; returns the pinned key. */
  pinRemoteUser(user: string, identityKey: Uint8Array, now: number): Promise<Uint8Array>;
  /** Replication cursors of `server` with something left to deliver (next < min(size, until + 1)). */
  replicationDue(server: string): Promise<ReplicationRow[]>;
  /** How many of the topic's replication cursors still have entries to deliver (as replicationDue counts them). */
  replicationPending(topicId: Uint8Array): Promise<number>;
  /** Every server with a replication cursor or an outbox row: what the delivery loops serve. */
  federationDestinations(): Promise<string[]>;
  /** Moves a cursor (never backwards unless `rewind`, which a receiver's `federation.gap` asks for); no cursor, no change. */
  setReplicationCursor(topicId: Uint8Array, server: string, nextIndex: number, rewind?: boolean): Promise<void>;
  /**
   * Adds an outbox row; with a coalesce key, replaces the payload and creation time of the
   * destination's row with that key instead (keeping its id and place in line). With `idempotency`, the record is written in the same transaction
   * (`store.conflict` if it exists). Returns the row id.
   */
  addOutbox(row: Omit<OutboxRow, 'id' | 'attempts'>, idempotency?: IdempotencyRow): Promise<number>;
  /** The destination's oldest rows, in order. */
  nextOutbox(destination: string, limit: number): Promise<OutboxRow[]>;
  /**
   * Deletes a delivered (or finally refused) row and, if given, sets the response of the
   * idempotency record it answers, in one transaction. With `payload`, the row is deleted (and
   * the answer written) only if it still holds that payload: a coalesced row replaced while it
   * was being sent stays, to be sent again.
   */
  completeOutbox(id: number, answer?: { deviceId: string; clientId: string; response: string }, payload?: string): Promise<void>;
  /** Counts a failed attempt. */
  failOutbox(id: number): Promise<void>;
  /** Keeps the latest cosignature per witness (a smaller size never replaces a larger one). */
  putCosignature(topicId: Uint8Array, witness: string, size: number, cosignature: Uint8Array): Promise<void>;
  listCosignatures(topicId: Uint8Array): Promise<{ witness: string; size: number; cosignature: Uint8Array }[]>;
  addFork(row: Omit<ForkRow, 'id'>): Promise<void>;
  listForks(topicId: Uint8Array): Promise<ForkRow[]>;
}

/** A host's replication cursor (protocol §17.4), with the topic's committed size. */
export interface ReplicationRow {
  topicId: Uint8Array;
  server: string;
  nextIndex: number;
  until: number | null;
  size: number;
}

/** A forwarded submission or a cosignature waiting for its destination (protocol §17.6). */
export interface OutboxRow {
  id: number;
  destination: string;
  kind: 'submit' | 'witness';
  topicId: Uint8Array;
  coalesceKey: string | null;
  /** JSON text: the request body to send. */
  payload: string;
  createdAt: number;
  attempts: number;
}

/** A fork or rollback a server detected (protocol §17.5), with its evidence. */
export interface ForkRow {
  id: number;
  topicId: Uint8Array;
  kind: 'fork' | 'rollback';
  /** Who showed the conflicting head: the host, or the witness whose cosignature conflicts. */
  server: string;
  /** JSON text: `{ checkpoints: [base64url…], detail }`. */
  evidence: string;
  createdAt: number;
}

/** An uploaded blob (protocol §12): scoped to one topic; `blobId` is SHA-256 of its bytes. */
export interface BlobRow {
  topicId: Uint8Array;
  blobId: Uint8Array;
  /** Encrypted size in bytes. */
  size: number;
  /** The uploader: the user is charged for it and deleting the user deletes it. */
  user: string;
  deviceId: string;
  createdAt: number;
}
