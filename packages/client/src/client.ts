/**
 * The Rendezvous client (docs/client.md): one user's device. It keeps every secret in its
 * profile store, talks to the home server through ServerApi, and verifies everything the
 * server returns with a TopicMirror per topic before it shows or acts on it.
 *
 * Isomorphic: crypto, randomness, clock, fetch, WebSocket and the profile store are injected
 * (Node: `@rendezvous/client/node` provides the file store and the `ws` constructor).
 */
import {
  RendezvousError,
  Reader,
  Writer,
  buildCreate,
  buildUpdate,
  checkEd25519PublicKey,
  decodeCheckpoint,
  decodeCosignature,
  decodeDeviceCert,
  decodeDevicePrekey,
  decodeKeyBundle,
  decodeTopicKey,
  deviceId as deviceIdOf,
  encodeCheckpoint,
  encodeDeviceCert,
  encodeDevicePrekey,
  encodeKeyBundle,
  encodeMessage,
  encodeTopicKey,
  encodeTopicUpdate,
  epochPrk,
  equal,
  fromBase64url,
  fromUtf8,
  isRendezvousError,
  memberByUser,
  newTopicId,
  openKeyBundle,
  parseUserId,
  readCheckpoint,
  sealKeyBundle,
  serverKeyId,
  sealMessage,
  signDeviceCert,
  signDevicePrekey,
  signSessionProof,
  signTopicKey,
  toBase64url,
  toHex,
  topicKeyId,
  utf8,
  verifyDeviceCert,
  verifyDevicePrekey,
  verifyKeyBundle,
  verifyCosignature,
  verifyTopicKey,
  type BundleContent,
  type Checkpoint,
  type ChangeAction,
  type CryptoProvider,
  type ErrorCode,
  type History,
  type Random,
  type Role,
  type TopicKey,
  type TopicKeySecret,
  type TopicState,
} from '@rendezvous/protocol';
import { ServerApi, isPending, type PushKind, type PushSubscriptionInfo, type PushSubscriptionInput, type WebSocketConstructor } from './api.ts';
import { Contacts, safetyNumber, type Contact } from './contacts.ts';
import type { ProfileStore } from './profile-store.ts';
import { TopicMirror, type Alarm, type HostKeyLookup, type MirrorSnapshot } from './topic-mirror.ts';
import type { SignatureVerifier } from './page-verify.ts';
import { LINK_TTL_MS, decodeLinkCode, encodeLinkCode, linkedDeviceId, linkedDeviceSeed } from './link.ts';

export interface ClientOptions {
  store: ProfileStore;
  crypto: CryptoProvider;
  random?: Random;
  now?: () => number;
  fetch?: typeof fetch;
  WebSocket?: WebSocketConstructor;
  /** How many one-time prekeys and topic keys to keep on the server (docs/client.md §Key pools). */
  pool?: { prekeys: number; topicKeys: number };
  /**
   * Verifies the message signatures of each fetched page ahead, in parallel (Node:
   * `sharedVerifyPool()` of `@rendezvous/client/node`); every check still runs in the mirror.
   */
  signatureVerifier?: SignatureVerifier | null;
}

export interface TopicMessage {
  index: number;
  timestamp: number;
  /** The sender's user id, or null if the sender is unknown (a rejected entry). */
  sender: string | null;
  type: 'text' | 'json' | 'file' | 'topic-info' | null;
  /** The decrypted content; null if this device cannot read the epoch, or the entry was rejected. */
  body: Uint8Array | null;
  text: string | null;
  rejected: ErrorCode | null;
}

export interface TopicView {
  topicId: Uint8Array;
  id: string;
  host: string;
  history: History;
  epoch: number;
  size: number;
  title: string | null;
  members: { memberId: number; user: string; role: Role }[];
  /** This user's role, or null if no longer a member. */
  role: Role | null;
  /**
   * False once the server stops serving the topic to this user (removed, or deleted): the
   * removal itself cannot be verified without the entries, so the mirror keeps the last
   * verified state and this flag says the server no longer answers.
   */
  active: boolean;
  alarms: Alarm[];
  halted: { code: ErrorCode; message: string } | null;
  /**
   * Servers whose cosignature of a host checkpoint (protocol §17.5) verified and agrees with
   * this device's own log, at the size they vouch for (as of the last sync).
   */
  witnesses: { server: string; size: number }[];
}

/**
 * What a post returns. `index` is the entry's log index, acknowledged by the host and checked
 * against the synced log; for a topic whose host is unreachable the home server queued the post
 * (`pending: true`, `index: null`): it shows up in the log once the host has it.
 */
export type SendResult = { index: number; pending?: undefined; clientId: string } | { index: null; pending: true; clientId: string };

/** What a topic change returns: `pending: true` when the home server queued it for an unreachable host. */
export interface ChangeResult {
  pending?: true;
}

export interface SyncReport {
  topics: { id: string; newEntries: number; alarms: Alarm[]; halted: ErrorCode | null }[];
  bundles: number;
  /** Key bundles that did not verify or open (dropped; a server or a forger sent them). */
  rejectedBundles: { id: number; code: ErrorCode; message: string }[];
  /**
   * Posts and changes that were queued for an unreachable host (`pending`) and that the host
   * has since refused: they will never be in the log. (Delivered ones simply appear in it.)
   */
  refused: { topic: string; clientId: string; kind: 'message' | 'update'; code: ErrorCode; message: string }[];
}

/** The profile document (docs/client.md §Profile): secrets are base64url, all of it is secret. */
interface ProfileDoc {
  v: 1;
  serverUrl: string;
  serverName: string;
  serverKey: string;
  user: string;
  identitySeed: string;
  device: { seed: string; id: string };
  session: { token: string; expiresAt: number } | null;
  prekeys: Record<string, string>;
  topicKeys: Record<string, { key: string; signatureSeed: string; encryptionSecret: string }>;
  contacts: { user: string; identityKey: string; pinnedAt: number }[];
  topics: string[];
  /** Topics the server no longer serves to this user (removed, or the topic was deleted). */
  gone: string[];
  /** Live-delivery cursor (docs/server.md §Events): the last event this device processed. */
  cursor?: number;
  /**
   * Server keys pinned per server name (base64url, oldest first): the home server's from its
   * well-known document (`serverKey`), others on first use from `GET /v1/servers/:name`. Keys
   * are only ever added (docs/client.md §Topics hosted on other servers). Absent in older profiles.
   */
  servers?: Record<string, string[]>;
  /** Per topic, the witnesses that verified and agreed at the last sync. */
  witnessed?: Record<string, { server: string; size: number }[]>;
  /**
   * Submissions the home server queued for an unreachable host (202), with their
   * Idempotency-Key: each sync asks again, until the host's answer is known.
   */
  pending?: { topic: string; clientId: string; kind: 'message' | 'update'; body: string; at: number }[];
}

const DEFAULT_POOL = { prekeys: 40, topicKeys: 40 };
/** How long a post to a topic hosted elsewhere waits for the home server's replica to hold it. */
const REPLICA_WAIT_STEPS = 50;
const REPLICA_WAIT_STEP_MS = 100;

/**
 * Each client's profile document (all of it secret), outside the object: logging a client, or
 * expanding it in a browser's devtools, shows no seed, key or token (docs/client.md §2).
 */
const docs = new WeakMap<RendezvousClient, ProfileDoc>();
/** Each mirror's title as of a log size (RendezvousClient.titleOf). */
const titles = new WeakMap<TopicMirror, { size: number; title: string | null }>();
/** Alarms a mirror already reported in this process (RendezvousClient.alarm). */
const raised = new WeakMap<TopicMirror, Set<string>>();
function docOf(c: RendezvousClient): ProfileDoc {
  return docs.get(c)!;
}

/** A fresh profile for a device of `user` (its pools are filled after it is saved). */
function newProfile(
  serverUrl: string,
  wk: { server: string; publicKey: Uint8Array },
  user: string,
  identitySeed: Uint8Array,
  deviceSeed: Uint8Array,
  deviceId: string,
): ProfileDoc {
  return {
    v: 1,
    serverUrl,
    serverName: wk.server,
    serverKey: toBase64url(wk.publicKey),
    user,
    identitySeed: toBase64url(identitySeed),
    device: { seed: toBase64url(deviceSeed), id: deviceId },
    session: null,
    prekeys: {},
    topicKeys: {},
    contacts: [],
    topics: [],
    gone: [],
    servers: { [wk.server]: [toBase64url(wk.publicKey)] },
    witnessed: {},
  };
}

/** Fills in what older profiles lack: the home server's key becomes its first pinned key. */
function migrate(doc: ProfileDoc): ProfileDoc {
  doc.gone ??= [];
  doc.servers ??= {};
  doc.servers[doc.serverName] ??= [doc.serverKey];
  doc.witnessed ??= {};
  return doc;
}
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

export class RendezvousClient {
  /** The server API with this device's session (for SDK modules such as files; handle with care). */
  readonly api: ServerApi;
  private readonly crypto: CryptoProvider;
  private readonly random: Random;
  private readonly now: () => number;
  private readonly contacts: Contacts;
  private readonly mirrors = new Map<string, TopicMirror>();
  private readonly dirty = new Set<string>();
  /** Key bundles refused since the last sync report (reported there, then cleared). */
  private bundleAlarms: { id: number; code: ErrorCode; message: string }[] = [];
  /** The progress callback of the sync in progress, if any. */
  private progress: ((topic: string, size: number, target: number) => void) | undefined;

  private constructor(
    private readonly o: ClientOptions,
    doc: ProfileDoc,
  ) {
    docs.set(this, migrate(doc));
    this.crypto = o.crypto;
    this.random = o.random ?? ((n) => globalThis.crypto.getRandomValues(new Uint8Array(n)));
    this.now = o.now ?? Date.now;
    this.api = new ServerApi({ baseUrl: doc.serverUrl, fetch: o.fetch, WebSocket: o.WebSocket, random: this.random });
    if (doc.session !== null && doc.session.expiresAt > this.now() + 60_000) this.api.token = doc.session.token;
    this.contacts = new Contacts(
      this.now,
      doc.contacts.map((c) => ({ user: c.user, identityKey: fromBase64url(c.identityKey), pinnedAt: c.pinnedAt })),
    );
  }

  // ---- life cycle ---------------------------------------------------------------------------

  /**
   * Creates an identity and a first device, registers them with the pin the server's admin
   * issued, and fills the key pools. `user` may be a bare name (the server's name is appended).
   */
  static async register(o: ClientOptions & { server: string; user: string; pin: string }): Promise<RendezvousClient> {
    if ((await o.store.load()) !== null) throw new RendezvousError('user.exists', 'this profile already holds an account: use another profile');
    const random = o.random ?? ((n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n)));
    const now = o.now ?? Date.now;
    const probe = new ServerApi({ baseUrl: o.server, fetch: o.fetch, random });
    const wk = await probe.wellKnown();
    const user = o.user.includes('@') ? o.user : `${o.user}@${wk.server}`;
    if (parseUserId(user).server !== wk.server) {
      throw new RendezvousError('auth.forbidden', `${o.server} is the server ${wk.server}; ${user} belongs to another server`);
    }
    const identitySeed = random(32);
    const deviceSeed = random(32);
    const cert = signDeviceCert(o.crypto, identitySeed, { user, deviceKey: o.crypto.ed25519PublicKey(deviceSeed), createdAt: now() });
    await probe.register({ user, pin: o.pin, identityKey: o.crypto.ed25519PublicKey(identitySeed), deviceCert: encodeDeviceCert(cert) });
    const c = new RendezvousClient(o, newProfile(o.server, wk, user, identitySeed, deviceSeed, deviceIdOf(cert.deviceKey)));
    c.contacts.check(user, o.crypto.ed25519PublicKey(identitySeed));
    await c.save();
    await c.replenish();
    return c;
  }

  /**
   * Joins an existing account as a new device with a link code from one of its devices
   * (docs/client.md §Devices): registers the device the code determines, uploads its prekeys,
   * and waits until the linking device has handed over the user's topic keys; then syncs, so
   * the new device reads every topic's history that its policy lets the user read.
   */
  static async join(
    o: ClientOptions & { code: string; server?: string; timeoutMs?: number; onStatus?: (s: string) => void },
  ): Promise<RendezvousClient> {
    if ((await o.store.load()) !== null) throw new RendezvousError('user.exists', 'this profile already holds an account: use another profile');
    const code = decodeLinkCode(o.code);
    const random = o.random ?? ((n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n)));
    const now = o.now ?? Date.now;
    if (now() > code.createdAt + LINK_TTL_MS) throw new RendezvousError('auth.stale', 'the link code has expired: show a new one on the other device');
    const serverUrl = o.server ?? code.serverUrl;
    const probe = new ServerApi({ baseUrl: serverUrl, fetch: o.fetch, random });
    const wk = await probe.wellKnown();
    if (parseUserId(code.user).server !== wk.server) throw new RendezvousError('auth.forbidden', `${serverUrl} is ${wk.server}, not the server of ${code.user}`);
    const identity = await probe.identityOf(code.user);
    if (!equal(identity.identityKey, o.crypto.ed25519PublicKey(code.identitySeed))) {
      throw new RendezvousError('identity.changed', `the server's identity key for ${code.user} is not the one in the link code`);
    }
    const deviceSeed = linkedDeviceSeed(o.crypto, code.linkSecret);
    const cert = signDeviceCert(o.crypto, code.identitySeed, { user: code.user, deviceKey: o.crypto.ed25519PublicKey(deviceSeed), createdAt: now() });
    o.onStatus?.('registering this device');
    await probe.addDevice(code.user, encodeDeviceCert(cert));
    const c = new RendezvousClient(o, newProfile(serverUrl, wk, code.user, code.identitySeed, deviceSeed, deviceIdOf(cert.deviceKey)));
    c.contacts.check(code.user, identity.identityKey);
    await c.save();
    await c.replenishPrekeys();
    o.onStatus?.('waiting for the other device to hand over the keys');
    const deadline = now() + (o.timeoutMs ?? LINK_TTL_MS);
    while (Object.keys(docOf(c).topicKeys).length === 0) {
      if ((await c.receiveBundles()) > 0) break;
      if (now() > deadline) throw new RendezvousError('request.timeout', 'the other device did not hand over the keys: is `device link` still running there?');
      await new Promise((r) => setTimeout(r, 300));
    }
    o.onStatus?.('syncing');
    await c.sync();
    return c;
  }

  /**
   * Starts linking a new device (docs/client.md §Devices). Show `code` (text or QR) to the new
   * device only; `wait()` resolves once that device has registered and received every topic
   * key this user holds, sealed to its own one-time prekeys.
   */
  startLink(): { code: string; deviceId: string; wait(o?: { timeoutMs?: number; onStatus?: (s: string) => void }): Promise<void> } {
    const linkSecret = this.random(32);
    const code = encodeLinkCode({
      serverUrl: docOf(this).serverUrl,
      user: docOf(this).user,
      identitySeed: fromBase64url(docOf(this).identitySeed),
      linkSecret,
      createdAt: this.now(),
    });
    const target = linkedDeviceId(this.crypto, linkSecret);
    const wait = async (o: { timeoutMs?: number; onStatus?: (s: string) => void } = {}) => {
      const deadline = this.now() + (o.timeoutMs ?? LINK_TTL_MS);
      o.onStatus?.('waiting for the new device to register');
      while (!(await this.handOverTo(target))) {
        if (this.now() > deadline) throw new RendezvousError('request.timeout', 'no new device joined with the code: show a new code and try again');
        await new Promise((r) => setTimeout(r, 300));
      }
      o.onStatus?.('handed over the keys');
    };
    return { code, deviceId: target, wait };
  }

  /**
   * One attempt of a link's hand-over (`startLink`): if the device `deviceId` (the one a link
   * code determines) has registered and has a prekey up, seals every topic key this user holds
   * to it and returns true; otherwise false, to be tried again. A caller that must not hold the
   * profile while it waits (the CLI) calls this on a fresh client each time.
   */
  async handOverTo(deviceId: string): Promise<boolean> {
    return this.withSession(async () => {
      // siblings() checks every listed device's certificate against the identity key.
      const d = (await this.siblings()).find((x) => x.deviceId === deviceId);
      if (d === undefined) return false;
      const claimed = await this.api.claimPrekey(d.deviceId).catch((e: unknown) => {
        if (isRendezvousError(e, 'keys.exhausted')) return null; // registered, prekeys not up yet
        throw e;
      });
      if (claimed === null) return false;
      const prekey = decodeDevicePrekey(claimed.prekey);
      verifyDevicePrekey(this.crypto, prekey, d.cert.deviceKey);
      const topicKeys = Object.values(docOf(this).topicKeys).map((k) => ({
        topicKey: decodeTopicKey(fromBase64url(k.key)),
        secret: { signatureSeed: fromBase64url(k.signatureSeed), encryptionSecret: fromBase64url(k.encryptionSecret) },
      }));
      const bundle = sealKeyBundle(this.crypto, this.random, {
        user: docOf(this).user,
        senderDeviceSeed: this.deviceSeed,
        recipientDevice: d.cert.deviceKey,
        recipientPrekey: prekey.prekey,
        content: { topicKeys, epochSecrets: [] },
      });
      await this.api.sendBundles([{ deviceId: d.deviceId, bundle: encodeKeyBundle(bundle) }]);
      return true;
    });
  }

  /**
   * Removes one of this user's other devices: the server revokes its sessions and never accepts
   * its key again. Topic keys are not rotated (docs/client.md §Devices says why and what to do
   * for a stolen device); new topic keys made from now on never reach it.
   */
  async removeDevice(deviceId: string): Promise<void> {
    if (deviceId === docOf(this).device.id) throw new RendezvousError('request.bad_field', 'remove another device; to leave, delete this profile');
    await this.withSession(() => this.api.deleteDevice(deviceId));
  }

  /** Opens the account kept in the profile store. */
  static async open(o: ClientOptions): Promise<RendezvousClient> {
    const bytes = await o.store.load();
    if (bytes === null) throw new RendezvousError('user.unknown', 'no account in this profile: register first');
    const doc = JSON.parse(fromUtf8(bytes)) as ProfileDoc;
    if (doc.v !== 1) throw new RendezvousError('encoding.unknown_version', `profile version ${String(doc.v)}`);
    migrate(doc);
    const c = new RendezvousClient(o, doc);
    for (const id of doc.topics) {
      const part = await o.store.loadPart(`topic-${toHex(fromBase64url(id))}`);
      if (part === null) continue;
      const m = TopicMirror.restore(c.crypto, decodeSnapshot(part), c.contacts, c.keyLookup, c.hostKeys);
      c.mirrors.set(id, m);
    }
    return c;
  }

  get user(): string {
    return docOf(this).user;
  }
  get deviceId(): string {
    return docOf(this).device.id;
  }
  get serverUrl(): string {
    return docOf(this).serverUrl;
  }
  get serverName(): string {
    return docOf(this).serverName;
  }
  /** The crypto provider this client was made with (SDK modules such as files use it too). */
  get cryptoProvider(): CryptoProvider {
    return this.crypto;
  }

  get identityKey(): Uint8Array {
    return this.crypto.ed25519PublicKey(fromBase64url(docOf(this).identitySeed));
  }

  /** Never prints secrets: `console.log(client)` shows who, not what. */
  [INSPECT](): string {
    return `RendezvousClient { user: ${docOf(this).user}, device: ${docOf(this).device.id} }`;
  }
  toJSON(): unknown {
    return { user: docOf(this).user, deviceId: docOf(this).device.id, server: docOf(this).serverUrl };
  }
  toString(): string {
    return this[INSPECT]();
  }

  /** Writes the profile and every changed topic mirror to the store. */
  async save(): Promise<void> {
    docOf(this).contacts = this.contacts.list().map((c) => ({ user: c.user, identityKey: toBase64url(c.identityKey), pinnedAt: c.pinnedAt }));
    docOf(this).topics = [...this.mirrors.keys()];
    for (const id of this.dirty) {
      const m = this.mirrors.get(id);
      if (m !== undefined) await this.o.store.savePart(`topic-${toHex(m.topicId)}`, encodeSnapshot(m.snapshot()));
    }
    this.dirty.clear();
    await this.o.store.save(utf8(JSON.stringify(docOf(this))));
  }

  // ---- sessions and key pools ------------------------------------------------------------------

  private get deviceSeed(): Uint8Array {
    return fromBase64url(docOf(this).device.seed);
  }

  /** Logs in (signed challenge, protocol §5.3) unless a session token is still valid. */
  async ensureSession(): Promise<void> {
    if (this.api.token !== null && this.api.token !== undefined) return;
    const ch = await this.api.challenge(docOf(this).device.id);
    const s = await this.api.createSession({
      deviceId: docOf(this).device.id,
      challenge: ch.challenge,
      signature: signSessionProof(this.crypto, this.deviceSeed, docOf(this).serverName, ch.challenge),
    });
    this.api.token = s.token;
    docOf(this).session = { token: s.token, expiresAt: s.expiresAt };
  }

  /**
   * Runs `fn` with a session; a token the server no longer knows is replaced once (SDK modules
   * such as files run their requests through it too).
   */
  async withSession<T>(fn: () => Promise<T>): Promise<T> {
    await this.ensureSession();
    try {
      return await fn();
    } catch (e) {
      if (!isRendezvousError(e, 'auth.invalid_token')) throw e;
      this.api.token = null;
      docOf(this).session = null;
      await this.ensureSession();
      return fn();
    }
  }

  private keyLookup = (keyId: string): TopicKeySecret | undefined => {
    const k = docOf(this).topicKeys[keyId];
    return k === undefined ? undefined : { signatureSeed: fromBase64url(k.signatureSeed), encryptionSecret: fromBase64url(k.encryptionSecret) };
  };

  /**
   * Keeps the server's pools full (docs/client.md §Key pools): this device's one-time prekeys,
   * and the user's topic keys, whose secrets go to every sibling device in bundles sealed to
   * their prekeys, in the same request, so any device can act on a topic key someone claims.
   */
  async replenish(): Promise<{ prekeys: number; topicKeys: number }> {
    const pool = this.o.pool ?? DEFAULT_POOL;
    return this.withSession(async () => {
      const prekeys = await this.replenishPrekeys();
      const counts = await this.api.keyCounts();
      let topicKeys = 0;
      if (counts.topicKeys < pool.topicKeys) {
        const fresh = this.newTopicKeys(pool.topicKeys - counts.topicKeys);
        await this.save();
        for (let i = 0; i < fresh.length; i += 100) {
          const batch = fresh.slice(i, i + 100);
          const bundles = await this.bundlesForSiblings({ topicKeys: batch, epochSecrets: [] });
          await this.api.uploadTopicKeys({ keys: batch.map((k) => encodeTopicKey(k.topicKey)), bundles });
        }
        topicKeys = fresh.length;
      }
      return { prekeys, topicKeys };
    });
  }

  /** Tops up this device's one-time prekeys on the server (protocol §5.2). */
  private async replenishPrekeys(): Promise<number> {
    const pool = this.o.pool ?? DEFAULT_POOL;
    return this.withSession(async () => {
      const counts = await this.api.keyCounts();
      let prekeys = 0;
      if (counts.prekeys < pool.prekeys) {
        const fresh: Uint8Array[] = [];
        for (let i = counts.prekeys; i < pool.prekeys; i++) {
          const secret = this.random(32);
          const pk = signDevicePrekey(this.crypto, this.deviceSeed, this.crypto.x25519PublicKey(secret));
          docOf(this).prekeys[toBase64url(pk.prekey)] = toBase64url(secret);
          fresh.push(encodeDevicePrekey(pk));
        }
        // Secrets are saved before the public halves leave: a crash never strands a bundle.
        await this.save();
        for (let i = 0; i < fresh.length; i += 100) await this.api.uploadPrekeys(fresh.slice(i, i + 100));
        prekeys = fresh.length;
      }
      return prekeys;
    });
  }

  private newTopicKeys(n: number): { topicKey: TopicKey; secret: TopicKeySecret }[] {
    const identitySeed = fromBase64url(docOf(this).identitySeed);
    return Array.from({ length: n }, () => {
      const secret = { signatureSeed: this.random(32), encryptionSecret: this.random(32) };
      const topicKey = signTopicKey(this.crypto, identitySeed, docOf(this).user, secret);
      docOf(this).topicKeys[topicKeyId(topicKey)] = {
        key: toBase64url(encodeTopicKey(topicKey)),
        signatureSeed: toBase64url(secret.signatureSeed),
        encryptionSecret: toBase64url(secret.encryptionSecret),
      };
      return { topicKey, secret };
    });
  }

  /** One bundle per sibling device, each sealed to a freshly claimed one-time prekey of it. */
  private async bundlesForSiblings(content: BundleContent) {
    const out: { deviceId: string; bundle: Uint8Array }[] = [];
    for (const d of await this.siblings()) {
      const claimed = await this.api.claimPrekey(d.deviceId);
      const prekey = decodeDevicePrekey(claimed.prekey);
      verifyDevicePrekey(this.crypto, prekey, d.cert.deviceKey);
      const bundle = sealKeyBundle(this.crypto, this.random, {
        user: docOf(this).user,
        senderDeviceSeed: this.deviceSeed,
        recipientDevice: d.cert.deviceKey,
        recipientPrekey: prekey.prekey,
        content,
      });
      out.push({ deviceId: d.deviceId, bundle: encodeKeyBundle(bundle) });
    }
    return out;
  }

  /**
   * The user's other devices, each certified by the identity key: a device the server lists
   * without a valid certificate (never linked) is an alarm, not a recipient of secrets.
   */
  private async siblings() {
    const out = [];
    for (const d of await this.api.listDevices()) {
      if (d.deviceId === docOf(this).device.id) continue;
      const cert = decodeDeviceCert(d.cert);
      verifyDeviceCert(this.crypto, cert, this.identityKey);
      if (cert.user !== docOf(this).user || deviceIdOf(cert.deviceKey) !== d.deviceId) {
        throw new RendezvousError('crypto.bad_certificate', `device ${d.deviceId} is not certified for ${docOf(this).user}`);
      }
      out.push({ deviceId: d.deviceId, cert });
    }
    return out;
  }

  /** Opens the key bundles waiting for this device (topic keys from sibling devices). */
  async receiveBundles(): Promise<number> {
    return this.withSession(async () => {
      const pending = await this.api.listBundles();
      if (pending.length === 0) return 0;
      const certs = new Map((await this.api.listDevices()).map((d) => [d.deviceId, decodeDeviceCert(d.cert)]));
      let opened = 0;
      for (const p of pending) {
        let content: BundleContent;
        let b: ReturnType<typeof decodeKeyBundle>;
        try {
          b = decodeKeyBundle(p.bundle);
          const cert = certs.get(p.senderDeviceId);
          if (cert === undefined) continue; // the sender was removed meanwhile: nothing to trust
          verifyKeyBundle(this.crypto, b, cert, this.identityKey);
          const secretB64 = docOf(this).prekeys[toBase64url(b.recipientPrekey)];
          if (secretB64 === undefined) continue; // sealed to a prekey this device never made
          content = openKeyBundle(this.crypto, b, fromBase64url(secretB64), this.identityKey);
        } catch (e) {
          // A bundle that does not verify or open is the server's (or a forger's) doing: it is
          // reported and dropped, and never stops the bundles behind it.
          if (!isRendezvousError(e)) throw e;
          this.bundleAlarms.push({ id: p.id, code: e.code, message: e.message });
          continue;
        }
        for (const { topicKey, secret } of content.topicKeys) {
          docOf(this).topicKeys[topicKeyId(topicKey)] = {
            key: toBase64url(encodeTopicKey(topicKey)),
            signatureSeed: toBase64url(secret.signatureSeed),
            encryptionSecret: toBase64url(secret.encryptionSecret),
          };
        }
        // Forward secrecy (protocol §6.2): the one-time prekey secret goes after use.
        delete docOf(this).prekeys[toBase64url(b.recipientPrekey)];
        opened++;
      }
      await this.save();
      await this.api.ackBundles(pending[pending.length - 1]!.id);
      return opened;
    });
  }

  // ---- topics ---------------------------------------------------------------------------------

  private mirror(topicId: Uint8Array): TopicMirror {
    const m = this.mirrors.get(toBase64url(topicId));
    if (m === undefined) throw new RendezvousError('topic.unknown', 'this device does not know the topic: sync first');
    return m;
  }

  /**
   * A mirror for a topic of `host`: this server's, or another server's whose keys are pinned on
   * first use (`GET /v1/servers/:host`, through the home server).
   */
  private async newMirror(topicId: Uint8Array, host: string): Promise<TopicMirror> {
    if (this.pinnedServerKeys(host).length === 0) await this.serverKeys(host);
    const m = new TopicMirror(this.crypto, topicId, this.hostKeys, this.contacts, this.keyLookup, host);
    this.mirrors.set(toBase64url(topicId), m);
    return m;
  }

  // ---- server keys (docs/client.md §Topics hosted on other servers) -----------------------------

  /** The keys pinned for each server, as the mirrors look them up. */
  private hostKeys: HostKeyLookup = (server) => this.pinnedServerKeys(server);

  private pinnedServerKeys(server: string): Uint8Array[] {
    return (docOf(this).servers?.[server] ?? []).map(fromBase64url);
  }

  /**
   * The keys of `server` as the home server pinned them (`GET /v1/servers/:name`), pinned here in
   * turn: on first use all of them (trust on first use), afterwards the list must still hold every
   * key pinned here (keys are only added, by a rotation the home server checked), or it is
   * `federation.key_changed` and nothing changes. Returns every key pinned for the server.
   */
  async serverKeys(server: string): Promise<Uint8Array[]> {
    return this.withSession(async () => {
      const r = await this.api.serverKeys(server);
      if (r.server !== server) throw new RendezvousError('encoding.bad_value', `asked for the keys of ${server}, got those of ${r.server}`);
      if (r.keys.length === 0) throw new RendezvousError('encoding.bad_value', `the home server lists no key for ${server}`);
      for (const k of r.keys) {
        checkEd25519PublicKey(k.publicKey, 'server key');
        if (!equal(serverKeyId(this.crypto, k.publicKey), k.keyId)) throw new RendezvousError('encoding.bad_value', `a key of ${server} is listed under another key id`);
      }
      const pinned = this.pinnedServerKeys(server);
      const dropped = pinned.filter((p) => !r.keys.some((k) => equal(k.publicKey, p)));
      if (dropped.length > 0) {
        throw new RendezvousError('federation.key_changed', `the keys listed for ${server} no longer include the ${dropped.length === 1 ? 'key' : 'keys'} pinned for it: its identity changed, or the home server lies`);
      }
      const all = [...pinned, ...r.keys.map((k) => k.publicKey).filter((k) => !pinned.some((p) => equal(p, k)))];
      if (all.length > pinned.length) {
        docOf(this).servers![server] = all.map(toBase64url);
        await this.save();
      }
      return all;
    });
  }

  /**
   * Makes sure the key a checkpoint of `server` names is pinned, asking the home server once if
   * it is not (a rotation). A server without the keys route (before federation) leaves the
   * pins as they are: the checkpoint then fails as signed by an unknown key.
   */
  private async learnKey(server: string, keyId: Uint8Array): Promise<void> {
    if (this.pinnedServerKeys(server).some((k) => equal(serverKeyId(this.crypto, k), keyId))) return;
    try {
      await this.serverKeys(server);
    } catch (e) {
      if (isRendezvousError(e, 'request.not_found') && this.pinnedServerKeys(server).length > 0) return;
      throw e;
    }
  }

  /** Checks a checkpoint the home server returned for `m`, learning a rotated host key first. */
  private async checkCheckpoint(m: TopicMirror, bytes: Uint8Array): Promise<Checkpoint> {
    const cp = decodeCheckpoint(bytes);
    const host = m.host;
    if (m.halted === null && host !== null && cp.origin === host) await this.learnKey(host, cp.keyId);
    m.checkCheckpoint(cp, { replica: this.isRemote(m) });
    return cp;
  }

  /** A topic hosted by another server: the home server serves a replica, which may lag behind the host. */
  private isRemote(m: TopicMirror): boolean {
    const host = m.host;
    return host !== null && host !== docOf(this).serverName;
  }

  /** Claims a topic key of `user` (protocol §6.1), checking its certificate and pinning the identity. */
  private async claimTopicKey(user: string): Promise<TopicKey> {
    const c = await this.api.claimTopicKey(user);
    const k = decodeTopicKey(c.topicKey);
    if (k.user !== user) throw new RendezvousError('crypto.bad_certificate', `the server returned a topic key of ${k.user} for ${user}`);
    verifyTopicKey(this.crypto, k, c.identityKey);
    this.contacts.check(user, c.identityKey);
    return k;
  }

  /** A topic key of this user for a new topic: claimed from the pool, so no one else gets it. */
  private async claimOwnTopicKey(): Promise<TopicKey> {
    const used = new Set<string>();
    for (const m of this.mirrors.values()) {
      const me = m.me();
      if (me !== undefined) used.add(topicKeyId(me.topicKey));
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      const k = await this.claimTopicKey(docOf(this).user);
      // A server that hands out a key again would link two topics (protocol §15.10).
      if (used.has(topicKeyId(k))) throw new RendezvousError('topic.duplicate_key', 'the server handed out a topic key already used in another topic');
      if (docOf(this).topicKeys[topicKeyId(k)] !== undefined) return k;
      // A sibling made it: its bundle should be waiting.
      await this.receiveBundles();
      if (docOf(this).topicKeys[topicKeyId(k)] !== undefined) return k;
    }
    throw new RendezvousError('keys.exhausted', 'no topic key of this user whose secret this device holds: sync the other devices');
  }

  /** Creates a topic with its members and, optionally, an encrypted title (docs/client.md §Topics). */
  async createTopic(o: { members?: { user: string; role: Role }[]; history?: History; title?: string } = {}): Promise<string> {
    return this.withSession(async () => {
      const mine = await this.claimOwnTopicKey();
      const members: { role: Role; topicKey: TopicKey }[] = [{ role: 'admin', topicKey: mine }];
      for (const m of o.members ?? []) members.push({ role: m.role, topicKey: await this.claimTopicKey(this.qualify(m.user)) });
      const topicId = newTopicId(this.random);
      const built = buildCreate(this.crypto, this.random, {
        topicId,
        host: docOf(this).serverName,
        history: o.history ?? 'shared',
        members,
        signer: 0,
        signatureSeed: this.keyLookup(topicKeyId(mine))!.signatureSeed,
      });
      const encoded = encodeTopicUpdate(built.update);
      const r = await this.api.createTopic(encoded);
      await this.newMirror(topicId, docOf(this).serverName);
      await this.checkAcknowledged(topicId, r, (e) => e.type === 'update' && equal(encodeTopicUpdate(e.update), encoded));
      if (o.title !== undefined) await this.post(topicId, { type: 'topic-info', body: utf8(JSON.stringify({ title: o.title })) });
      await this.replenish();
      await this.save();
      return toBase64url(topicId);
    });
  }

  private qualify(user: string): string {
    return user.includes('@') ? user : `${user}@${docOf(this).serverName}`;
  }

  /**
   * Applies a change as this admin (or as the leaver), syncing first so it builds on the head;
   * `action` is made from that synced state (a member id is only known there).
   */
  private async change(topicId: Uint8Array, action: (state: TopicState) => ChangeAction): Promise<ChangeResult> {
    await this.syncTopic(topicId);
    const m = this.mirror(topicId);
    const state = m.state!;
    const me = m.me();
    if (me === undefined) throw new RendezvousError('topic.not_member');
    const epochSecret = m.epochSecret(state.epoch);
    if (epochSecret === undefined) throw new RendezvousError('topic.bad_key_share', 'this device does not hold the current epoch secret');
    const a = action(state);
    const built = buildUpdate(this.crypto, this.random, state, {
      signer: me.id,
      signatureSeed: this.keyLookup(topicKeyId(me.topicKey))!.signatureSeed,
      epochSecret,
      action: a,
    });
    const encoded = encodeTopicUpdate(built.update);
    const r = await this.api.postUpdate(topicId, encoded);
    // Queued by the home server for an unreachable host: nothing acknowledged yet to check; the
    // update reaches the log (and this device's mirror) when the host has it.
    if (isPending(r)) {
      this.rememberPending(topicId, r.clientId, 'update', encoded);
      return { pending: true };
    }
    if (a.type === 'leave') {
      // The server no longer serves the topic to a leaver; its mirror keeps what it verified.
      docOf(this).gone.push(toBase64url(topicId));
      return {};
    }
    await this.checkAcknowledged(topicId, r, (e) => e.type === 'update' && equal(encodeTopicUpdate(e.update), encoded));
    return {};
  }

  private memberOf(state: TopicState, user: string) {
    const m = memberByUser(state, this.qualify(user));
    if (m === undefined) throw new RendezvousError('topic.not_member', `${this.qualify(user)} is not a member`);
    return m;
  }

  /** Adds a member (a user of this server or, by `name@server`, of another). `pending` as for every change. */
  async addMember(topic: string, user: string, role: Role = 'participant'): Promise<ChangeResult> {
    return this.withSession(async () => {
      const topicKey = await this.claimTopicKey(this.qualify(user));
      const r = await this.change(fromBase64url(topic), () => ({ type: 'add', role, topicKey }));
      await this.save();
      return r;
    });
  }

  async removeMember(topic: string, user: string): Promise<ChangeResult> {
    return this.withSession(async () => {
      const r = await this.change(fromBase64url(topic), (s) => ({ type: 'remove', memberId: this.memberOf(s, user).id }));
      await this.save();
      return r;
    });
  }

  async setRole(topic: string, user: string, role: Role): Promise<ChangeResult> {
    return this.withSession(async () => {
      const r = await this.change(fromBase64url(topic), (s) => ({ type: 'role', memberId: this.memberOf(s, user).id, role }));
      await this.save();
      return r;
    });
  }

  async leave(topic: string): Promise<ChangeResult> {
    return this.withSession(async () => {
      const r = await this.change(fromBase64url(topic), () => ({ type: 'leave' }));
      await this.save();
      return r;
    });
  }

  /** Starts a new epoch (also what admins' clients do after a leave, docs/client.md §Re-keying). */
  async rekey(topic: string): Promise<ChangeResult> {
    return this.withSession(async () => {
      const r = await this.change(fromBase64url(topic), () => ({ type: 'rekey' }));
      await this.save();
      return r;
    });
  }

  // ---- messages ----------------------------------------------------------------------------------

  /** Posts a text or JSON message; see SendResult for `pending` (a topic whose host is unreachable). */
  async send(topic: string, content: { text: string } | { json: unknown }): Promise<SendResult> {
    const c = 'text' in content ? { type: 'text' as const, body: utf8(content.text) } : { type: 'json' as const, body: utf8(JSON.stringify(content.json)) };
    return this.postContent(topic, c);
  }

  /**
   * Posts any content type (protocol §8.2): what `send` and the files module use. Syncs first,
   * and seals again if the topic moved to a new epoch meanwhile.
   */
  async postContent(topic: string, content: { type: 'text' | 'json' | 'topic-info' | 'file'; body: Uint8Array }): Promise<SendResult> {
    return this.withSession(async () => {
      const topicId = fromBase64url(topic);
      await this.syncTopic(topicId);
      const r = await this.post(topicId, content);
      await this.save();
      return r;
    });
  }

  private async post(topicId: Uint8Array, content: { type: 'text' | 'json' | 'topic-info' | 'file'; body: Uint8Array }): Promise<SendResult> {
    for (let attempt = 0; ; attempt++) {
      const m = this.mirror(topicId);
      const state = m.state!;
      const me = m.me();
      if (me === undefined) throw new RendezvousError('topic.not_member');
      if (me.role === 'observer') throw new RendezvousError('topic.read_only', 'observers cannot post');
      const secret = m.epochSecret(state.epoch);
      if (secret === undefined) throw new RendezvousError('topic.bad_key_share', 'this device does not hold the current epoch secret');
      const msg = sealMessage(this.crypto, this.random, {
        topicId,
        epoch: state.epoch,
        epochPrk: epochPrk(this.crypto, topicId, state.epoch, secret),
        sender: me.id,
        signatureSeed: this.keyLookup(topicKeyId(me.topicKey))!.signatureSeed,
        headSize: m.size,
        headRoot: m.root(),
        content,
      });
      try {
        const encoded = encodeMessage(msg);
        const r = await this.api.postMessage(topicId, encoded);
        // Queued for an unreachable host: no acknowledgement to check yet; a later sync finds
        // the message in the log (its signature covers the head it was sealed on, as ever).
        if (isPending(r)) {
          this.rememberPending(topicId, r.clientId, 'message', encoded);
          return { index: null, pending: true, clientId: r.clientId };
        }
        await this.checkAcknowledged(topicId, r, (e) => e.type === 'message' && equal(e.message.nonce, msg.nonce));
        return { index: r.index, clientId: r.clientId };
      } catch (e) {
        // The topic moved on to a new epoch meanwhile: catch up and seal again.
        if (attempt < 2 && (isRendezvousError(e, 'topic.stale_epoch') || isRendezvousError(e, 'log.bad_head'))) {
          await this.syncTopic(topicId);
          continue;
        }
        throw e;
      }
    }
  }

  // ---- sync and reading ------------------------------------------------------------------------

  /**
   * Fetches what is new in every topic the server lists for this user, verifying each entry and
   * checkpoint, and opens waiting key bundles. Topics whose mirror is halted are skipped and
   * reported; the alarm stays until the user deals with it.
   */
  async sync(o: { onProgress?: (topic: string, size: number, target: number) => void } = {}): Promise<SyncReport> {
    this.progress = o.onProgress;
    try {
      return await this.syncAll();
    } finally {
      this.progress = undefined;
    }
  }

  private async syncAll(): Promise<SyncReport> {
    return this.withSession(async () => {
      const bundles = await this.receiveBundles();
      const report: SyncReport = { topics: [], bundles, rejectedBundles: this.bundleAlarms.splice(0), refused: await this.resolvePending() };
      const listed = await this.api.listTopics();
      const listedIds = new Set(listed.map((t) => toBase64url(t.topicId)));
      for (const [id, m] of this.mirrors) {
        if (listedIds.has(id) || docOf(this).gone.includes(id)) continue;
        try {
          await this.syncTopic(m.topicId);
        } catch (e) {
          if (!isRendezvousError(e, 'topic.not_member') && !isRendezvousError(e, 'topic.unknown')) throw e;
          docOf(this).gone.push(id);
        }
      }
      for (const t of listed) {
        const id = toBase64url(t.topicId);
        docOf(this).gone = docOf(this).gone.filter((g) => g !== id);
        let m = this.mirrors.get(id);
        if (m === undefined) {
          try {
            m = await this.newMirror(t.topicId, t.host);
          } catch (e) {
            // A topic this client cannot follow yet (its host's keys cannot be had) is
            // reported, and never stops the sync of the others.
            if (!isRendezvousError(e)) throw e;
            report.topics.push({ id, newEntries: 0, alarms: [], halted: e.code });
            continue;
          }
        }
        report.topics.push({ id, ...(await this.syncOne(m)) });
      }
      await this.replenish();
      await this.save();
      return report;
    });
  }

  private rememberPending(topicId: Uint8Array, clientId: string, kind: 'message' | 'update', body: Uint8Array): void {
    const doc = docOf(this);
    (doc.pending ??= []).push({ topic: toBase64url(topicId), clientId, kind, body: toBase64url(body), at: Date.now() });
  }

  /**
   * Asks again, with the same Idempotency-Key, for every submission that was pending: the home
   * server answers what it knows (still 202, the host's 201, or the host's refusal). Delivered
   * and refused ones are forgotten; refused ones are reported. A post the host already has
   * (`topic.replay`: its nonce is in the log) counts as delivered.
   */
  private async resolvePending(): Promise<SyncReport['refused']> {
    const doc = docOf(this);
    const refused: SyncReport['refused'] = [];
    const keep: NonNullable<ProfileDoc['pending']> = [];
    for (const p of doc.pending ?? []) {
      try {
        const body = fromBase64url(p.body);
        const opts = { clientId: p.clientId };
        const r = p.kind === 'message' ? await this.api.postMessage(fromBase64url(p.topic), body, opts) : await this.api.postUpdate(fromBase64url(p.topic), body, opts);
        if (isPending(r)) keep.push(p);
      } catch (e) {
        if (!isRendezvousError(e) || e.status >= 500 || e.code === 'rate.limited' || e.code === 'request.timeout') keep.push(p);
        else if (!(p.kind === 'message' && e.code === 'topic.replay')) refused.push({ topic: p.topic, clientId: p.clientId, kind: p.kind, code: e.code, message: e.message });
      }
    }
    if (keep.length === 0) delete doc.pending;
    else doc.pending = keep;
    return refused;
  }

  /**
   * An acknowledgement is a promise the client holds the server to: the checkpoint it signed
   * for the log ending with our entry is checked like any other, and after syncing, our entry
   * must be at the index acknowledged. A server that drops or moves it later is caught
   * (`log.fork`, `log.rollback`, `log.gap`).
   */
  private async checkAcknowledged(
    topicId: Uint8Array,
    r: { index: number; checkpoint: Uint8Array },
    isOurs: (e: NonNullable<ReturnType<TopicMirror['entry']>>) => boolean,
  ): Promise<void> {
    const m = this.mirror(topicId);
    await this.checkCheckpoint(m, r.checkpoint);
    this.dirty.add(toBase64url(topicId));
    await this.syncTopic(topicId);
    // The host answered before its delivery reached the home server's replica: wait a little
    // for it. If it is still behind, the host's checkpoint waits in the mirror and is compared
    // with the log once the replica serves those entries.
    for (let i = 0; i < REPLICA_WAIT_STEPS && this.isRemote(m) && m.size <= r.index; i++) {
      await new Promise((resolve) => setTimeout(resolve, REPLICA_WAIT_STEP_MS));
      await this.syncTopic(topicId);
    }
    if (this.isRemote(m) && m.size <= r.index) return;
    const e = m.entry(r.index);
    if (e === undefined || !isOurs(e)) {
      throw m.raise(new RendezvousError('log.fork', `the server acknowledged our entry at ${r.index} but serves another there`));
    }
  }

  /**
   * One topic's step of a sync or a live wake-up: fetch and verify what is new, complete a
   * pending re-key, and say what happened (a fault is reported, never thrown, so one topic
   * cannot stop the others).
   */
  private async syncOne(m: TopicMirror): Promise<{ newEntries: number; alarms: Alarm[]; halted: ErrorCode | null }> {
    const before = m.size;
    const alarmsBefore = m.alarms.length;
    let halted: ErrorCode | null = null;
    try {
      await this.syncTopic(m.topicId);
      await this.checkWitnesses(m);
      await this.completeRekey(m.topicId);
    } catch (e) {
      if (!isRendezvousError(e)) throw e;
      halted = e.code;
    }
    return { newEntries: m.size - before, alarms: m.alarms.slice(alarmsBefore), halted };
  }

  /**
   * Witnesses and forks (protocol §17.5), read from the topic's summary once per sync step:
   *
   * - each cosignature is verified with the witness's pinned keys and its checkpoint with the
   *   host's; one that does not verify is dropped and reported (an alarm), never trusted. One
   *   whose checkpoint cannot belong to this device's log (another root at a size it holds) is
   *   a fork: the topic halts with `log.fork`. The others are listed in the view as witnesses;
   * - each fork report's checkpoints are verified with the host's keys. If one contradicts this
   *   device's log, or two of them have the same size and different roots (the host signed two
   *   logs), the topic halts with `log.fork`. A report this device cannot confirm is an alarm.
   */
  private async checkWitnesses(m: TopicMirror): Promise<void> {
    const host = m.host;
    if (host === null || m.halted !== null) return;
    const id = toBase64url(m.topicId);
    const info = await this.api.getTopic(m.topicId);
    const agreed = new Map<string, number>();
    for (const raw of info.witnesses) {
      let witness: string | null = null;
      let cp: Checkpoint;
      try {
        const cs = decodeCosignature(raw);
        witness = cs.witness;
        await this.learnKey(cs.witness, cs.keyId);
        const key = this.pinnedServerKeys(cs.witness).find((k) => equal(serverKeyId(this.crypto, k), cs.keyId));
        if (key === undefined) throw new RendezvousError('crypto.bad_signature', `cosignature by a key ${cs.witness} does not publish`);
        cp = verifyCosignature(this.crypto, cs, key);
        await this.learnKey(host, cp.keyId);
        m.verifyHostCheckpoint(cp);
      } catch (e) {
        if (!isRendezvousError(e)) throw e;
        // A witness that cannot be reached for its keys now is checked on a later sync.
        if (e.code === 'federation.unreachable' || e.code === 'server.unavailable') continue;
        this.alarm(m, e.code, `a cosignature${witness === null ? '' : ` of ${witness}`} was dropped: ${e.message}`);
        continue;
      }
      if (m.contradicts(cp)) {
        this.dirty.add(id);
        throw m.raise(new RendezvousError('log.fork', `${witness} cosigned a checkpoint of ${host} of size ${cp.size} that is not this device's log at that size`));
      }
      if (cp.size <= m.size && witness !== host) agreed.set(witness!, Math.max(cp.size, agreed.get(witness!) ?? 0));
    }
    for (const f of info.forks) {
      const cps: Checkpoint[] = [];
      let unverified: RendezvousError | null = null;
      for (const raw of f.checkpoints) {
        try {
          const cp = decodeCheckpoint(raw);
          await this.learnKey(host, cp.keyId);
          m.verifyHostCheckpoint(cp);
          cps.push(cp);
        } catch (e) {
          if (!isRendezvousError(e)) throw e;
          unverified ??= e;
        }
      }
      const against = cps.find((cp) => m.contradicts(cp));
      const twin = cps.find((a, i) => cps.some((b, j) => j !== i && a.size === b.size && !equal(a.root, b.root)));
      if (against !== undefined || twin !== undefined) {
        this.dirty.add(id);
        const why = against !== undefined ? `a checkpoint of size ${against.size} that is not this device's log` : `two different logs of size ${twin!.size}`;
        throw m.raise(new RendezvousError('log.fork', `${f.server} reported a ${f.kind} of ${host}, with ${why} signed by ${host}`));
      }
      if (unverified !== null) this.alarm(m, unverified.code, `${f.server} reported a ${f.kind} of ${host} with evidence that does not verify: ${unverified.message}`);
      else this.alarm(m, f.kind === 'rollback' ? 'log.rollback' : 'log.fork', `${f.server} reported a ${f.kind} of ${host}${f.detail === '' ? '' : ` (${f.detail})`}; this device's log does not contradict it`);
    }
    const list = [...agreed].map(([server, size]) => ({ server, size })).sort((a, b) => a.server.localeCompare(b.server));
    docOf(this).witnessed![id] = list;
  }

  /** Reports an alarm on a topic once per process (a sync finds the same evidence again). */
  private alarm(m: TopicMirror, code: ErrorCode, message: string): void {
    let seen = raised.get(m);
    if (seen === undefined) raised.set(m, (seen = new Set()));
    const key = `${code} ${message}`;
    if (seen.has(key)) return;
    seen.add(key);
    m.alarms.push({ index: null, code, message });
  }

  /**
   * After a member leaves, the leaver still holds the epoch secret until an admin starts a new
   * epoch (protocol §15.4): an admin's client does that as soon as it sees the leave.
   */
  private async completeRekey(topicId: Uint8Array): Promise<void> {
    const m = this.mirror(topicId);
    if (m.state?.pendingRekey !== true || m.me()?.role !== 'admin') return;
    try {
      await this.change(topicId, () => ({ type: 'rekey' }));
    } catch (e) {
      // Another admin re-keyed first: the next sync shows it.
      if (!isRendezvousError(e, 'topic.bad_parent')) throw e;
      await this.syncTopic(topicId);
    }
  }

  /**
   * Live updates (docs/client.md §Watching): a WebSocket from the stored cursor; every entry
   * event makes the topic sync (verified, as ever), and what is new is handed to `onMessage`.
   * Reconnects with back-off and resumes from the cursor, so nothing is lost or repeated.
   */
  watch(h: {
    onMessage?: (topic: TopicView, m: TopicMessage) => void;
    onAlarm?: (topic: string, code: ErrorCode, message: string) => void;
    onStatus?: (s: 'connected' | 'reconnecting', detail?: string) => void;
  }): { stop(): void; done: Promise<void> } {
    let stopped = false;
    let conn: { close(): void } | null = null;
    let wake: (() => void) | null = null;
    const handleBatch = async (b: Awaited<ReturnType<ServerApi['events']>>) => {
      const touched = new Set<string>();
      let relist = b.resync;
      for (const e of b.events) {
        if (e.kind === 'entry') touched.add(toBase64url(e.topicId));
        else if (e.kind === 'membership') relist = true;
      }
      if (b.bundles !== undefined && b.bundles.length > 0) await this.receiveBundles();
      // A membership change or a resync may bring topics this device does not know yet.
      const before = new Map([...this.mirrors].map(([id, m]) => [id, m.size]));
      const steps = relist ? (await this.sync()).topics : [];
      if (!relist) {
        for (const id of touched) {
          const m = this.mirrors.get(id);
          if (m !== undefined) steps.push({ id, ...(await this.syncOne(m)) });
        }
      }
      for (const t of steps) {
        if (t.halted !== null) h.onAlarm?.(t.id, t.halted, 'stopped verifying this topic');
        for (const a of t.alarms) h.onAlarm?.(t.id, a.code, a.message);
        this.emitNew(t.id, before.get(t.id) ?? 0, h.onMessage);
      }
      docOf(this).cursor = b.cursor;
      await this.save();
    };
    const done = (async () => {
      let delay = 250;
      while (!stopped) {
        try {
          await this.ensureSession();
          await new Promise<void>((resolve) => {
            wake = resolve;
            conn = this.api.connectLive(docOf(this).cursor ?? 0, {
              onOpen: () => {
                delay = 250;
                h.onStatus?.('connected');
              },
              onBatch: handleBatch,
              onClose: (info) => {
                if (info.code === 4001 || info.code === 4003) {
                  // The session ended: log in again on the next round.
                  this.api.token = null;
                  docOf(this).session = null;
                }
                if (!stopped) h.onStatus?.('reconnecting', info.error === undefined ? `closed ${info.code}` : String(info.error));
                resolve();
              },
            });
          });
        } catch (e) {
          if (!stopped) h.onStatus?.('reconnecting', (e as Error).message);
        }
        if (stopped) break;
        await new Promise<void>((r) => {
          const t = setTimeout(r, delay);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
        delay = Math.min(delay * 2, 15_000);
      }
    })();
    return {
      stop: () => {
        stopped = true;
        (conn as { close(): void } | null)?.close();
        (wake as (() => void) | null)?.();
      },
      done,
    };
  }

  /**
   * The live messages as an async iterator (for `for await`): the same as `watch`, stopped when
   * the loop ends. Alarms are delivered as `{ alarm }` items, so a loop never misses one.
   */
  async *live(
    o: { signal?: AbortSignal } = {},
  ): AsyncGenerator<{ topic: TopicView; message: TopicMessage } | { alarm: { topic: string; code: ErrorCode; message: string } }> {
    type Item = { topic: TopicView; message: TopicMessage } | { alarm: { topic: string; code: ErrorCode; message: string } };
    const queue: Item[] = [];
    let wake: (() => void) | null = null;
    const push = (i: Item) => {
      queue.push(i);
      wake?.();
    };
    const w = this.watch({
      onMessage: (topic, message) => push({ topic, message }),
      onAlarm: (topic, code, message) => push({ alarm: { topic, code, message } }),
    });
    // An async generator cannot be returned while it waits, so a signal is how an app stops a
    // loop that has nothing to read (a component going away).
    const onAbort = () => wake?.();
    o.signal?.addEventListener('abort', onAbort);
    try {
      for (;;) {
        while (queue.length > 0 && o.signal?.aborted !== true) yield queue.shift()!;
        if (o.signal?.aborted === true) return;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
      w.stop();
      await w.done;
    }
  }

  private emitNew(id: string, from: number, onMessage?: (topic: TopicView, m: TopicMessage) => void): void {
    if (onMessage === undefined) return;
    const view = this.topic(id);
    for (const msg of this.messages(id, from)) onMessage(view, msg);
  }

  /** Brings one topic's mirror up to the server's checkpoint, verifying as it goes. */
  async syncTopic(topicId: Uint8Array): Promise<void> {
    const m = this.mirror(topicId);
    for (;;) {
      const r = await this.api.entries(topicId, m.size, 500);
      this.dirty.add(toBase64url(topicId));
      await m.acceptPage(r.entries, this.o.signatureVerifier);
      const served = await this.checkCheckpoint(m, r.checkpoint);
      this.progress?.(toBase64url(topicId), m.size, m.target);
      if (m.size >= m.target) return;
      // A replica behind a host checkpoint this device already holds (an acknowledgement the
      // host signed): nothing is withheld yet, the entries come with the next delivery.
      if (r.entries.length === 0 && this.isRemote(m) && served.size <= m.size) return;
      if (r.entries.length === 0) {
        throw m.raise(new RendezvousError('log.gap', `the server signed ${m.target} entries but sends none after ${m.size}`));
      }
    }
  }

  topics(): TopicView[] {
    return [...this.mirrors.entries()].map(([id, m]) => this.view(id, m));
  }

  topic(topic: string): TopicView {
    const m = this.mirror(fromBase64url(topic));
    return this.view(topic, m);
  }

  private view(id: string, m: TopicMirror): TopicView {
    const s = m.state;
    const title = this.titleOf(m);
    const me = m.me();
    return {
      topicId: m.topicId,
      id,
      host: s?.host ?? '',
      history: s?.history ?? 'shared',
      epoch: s?.epoch ?? 0,
      size: m.size,
      title,
      members: s === null ? [] : [...s.members.values()].map((x) => ({ memberId: x.id, user: x.topicKey.user, role: x.role })),
      role: docOf(this).gone.includes(id) ? null : (me?.role ?? null),
      active: !docOf(this).gone.includes(id),
      alarms: m.alarms.slice(),
      halted: m.halted === null ? null : { code: m.halted.code, message: m.halted.message },
      witnesses: m.halted === null ? (docOf(this).witnessed?.[id] ?? []).map((w) => ({ ...w })) : [],
    };
  }

  /**
   * The topic's title: the newest readable `topic-info` message. Remembered per mirror with the
   * size it was computed at, so each view decrypts only the entries that arrived since.
   */
  private titleOf(m: TopicMirror): string | null {
    const known = titles.get(m) ?? { size: 0, title: null };
    for (let i = known.size; i < m.size; i++) {
      const e = m.entry(i);
      if (e?.type !== 'message' || e.rejected !== null) continue;
      const c = this.readEntry(m, i);
      if (c?.type !== 'topic-info') continue;
      try {
        const t = (JSON.parse(fromUtf8(c.body)) as { title?: unknown }).title;
        if (typeof t === 'string') known.title = t;
      } catch {
        // A malformed topic-info is ignored, like any content this device cannot use.
      }
    }
    known.size = m.size;
    titles.set(m, known);
    return known.title;
  }

  private readEntry(m: TopicMirror, index: number) {
    try {
      return m.read(index);
    } catch {
      return null;
    }
  }

  /** The topic's messages from `from`, decrypted where this device can read them. */
  messages(topic: string, from = 0): TopicMessage[] {
    const m = this.mirror(fromBase64url(topic));
    const out: TopicMessage[] = [];
    for (let i = from; i < m.size; i++) {
      const e = m.entry(i)!;
      if (e.type !== 'message') continue;
      const c = e.rejected === null ? this.readEntry(m, i) : null;
      out.push({
        index: i,
        timestamp: e.timestamp,
        sender: e.sender?.topicKey.user ?? null,
        type: c === null ? null : c.type,
        body: c?.body ?? null,
        text: c !== null && c.type === 'text' ? fromUtf8(c.body) : null,
        rejected: e.rejected,
      });
    }
    return out;
  }

  /** Re-verifies a topic from scratch (a fresh mirror over the server's whole log). */
  async verify(topic: string): Promise<{ size: number; root: Uint8Array; checkpoint: Uint8Array }> {
    return this.withSession(async () => {
      const topicId = fromBase64url(topic);
      const kept = this.mirrors.get(topic);
      const fresh = new TopicMirror(this.crypto, topicId, this.hostKeys, this.contacts, this.keyLookup, kept?.host ?? docOf(this).serverName);
      this.mirrors.set(topic, fresh);
      try {
        await this.syncTopic(topicId);
        if (kept !== undefined && kept.size > 0 && (fresh.size < kept.size || !equal(fresh.root(kept.size), kept.root()))) {
          throw new RendezvousError('log.fork', 'the log the server serves now does not extend the one this device verified before');
        }
      } finally {
        if (kept !== undefined) this.mirrors.set(topic, kept);
      }
      return { size: fresh.size, root: fresh.root(), checkpoint: encodeCheckpoint(fresh.checkpoint!) };
    });
  }

  // ---- contacts and devices ---------------------------------------------------------------------

  contactList(): Contact[] {
    return this.contacts.list();
  }

  safetyNumber(user: string): string {
    const c = this.contacts.get(this.qualify(user));
    if (c === undefined) throw new RendezvousError('user.unknown', `no pinned identity for ${this.qualify(user)}: share a topic first`);
    return safetyNumber(this.crypto, { user: docOf(this).user, identityKey: this.identityKey }, c);
  }

  async devices() {
    return this.withSession(async () => (await this.api.listDevices()).map((d) => ({ deviceId: d.deviceId, createdAt: d.createdAt, current: d.deviceId === docOf(this).device.id })));
  }

  // ---- push (docs/server.md §Push): wake-ups that carry nothing; the woken device syncs -------

  /** The push providers the home server sends through. */
  async pushProviders(): Promise<PushKind[]> {
    return this.api.pushProviders();
  }

  /** The home server's VAPID key, for `pushManager.subscribe({ applicationServerKey })`. */
  async vapidKey(): Promise<Uint8Array> {
    return this.api.vapidKey();
  }

  /** Registers this device for push (a browser PushSubscription's JSON, or an APNs/FCM token). */
  async subscribePush(s: PushSubscriptionInput): Promise<PushSubscriptionInfo> {
    return this.withSession(() => this.api.subscribePush(s));
  }

  async pushSubscriptions(): Promise<PushSubscriptionInfo[]> {
    return this.withSession(() => this.api.listPush());
  }

  async unsubscribePush(id: string): Promise<void> {
    await this.withSession(() => this.api.unsubscribePush(id));
  }
}

// ---- bundle content and mirror snapshots -------------------------------------------------------

const SNAPSHOT_VERSION = 1;

/** A mirror snapshot as stored in the profile (docs/client.md §Profile). */
export function encodeSnapshot(s: MirrorSnapshot): Uint8Array {
  const w = new Writer(1024);
  w.u8(SNAPSHOT_VERSION).fixed(s.topicId, 16).fixed(s.hostKey, 32);
  w.list(s.entries, (w, e) => w.bytes(e));
  w.list(s.rejected, (w, r) => w.varint(r.index).string(r.code));
  w.list(s.epochSecrets, (w, e) => w.varint(e.epoch).fixed(e.secret, 32));
  w.bool(s.checkpoint !== null);
  if (s.checkpoint !== null) w.raw(encodeCheckpoint(s.checkpoint));
  w.bool(s.pendingCheckpoint !== null);
  if (s.pendingCheckpoint !== null) w.raw(encodeCheckpoint(s.pendingCheckpoint));
  w.bool(s.halted !== null);
  if (s.halted !== null) w.string(s.halted.code).string(s.halted.message);
  return w.finish();
}

export function decodeSnapshot(b: Uint8Array): MirrorSnapshot {
  const r = new Reader(b);
  if (r.u8() !== SNAPSHOT_VERSION) throw new RendezvousError('encoding.unknown_version', 'topic snapshot version');
  const topicId = r.fixed(16);
  const hostKey = r.fixed(32);
  const entries = r.list((r) => r.bytes());
  const rejected = r.list((r) => ({ index: r.varint(), code: r.string(64) as ErrorCode }));
  const epochSecrets = r.list((r) => ({ epoch: r.varint(), secret: r.fixed(32) }));
  const checkpoint = r.bool() ? readCheckpoint(r) : null;
  const pendingCheckpoint = r.bool() ? readCheckpoint(r) : null;
  const halted = r.bool() ? { code: r.string(64) as ErrorCode, message: r.string(4096) } : null;
  r.end();
  return { topicId, hostKey, entries, rejected, epochSecrets, checkpoint, pendingCheckpoint, halted };
}

