/**
 * Where the SDK keeps its secrets (isomorphic: no node:* import).
 *
 * The SDK serializes its whole local state (identity and device seeds, prekey secrets, topic and
 * epoch secrets, pinned contacts, log mirrors…) to bytes itself; a `ProfileStore` only keeps
 * those bytes: one **document**, plus named **parts** for large per-topic data that should not be
 * rewritten with every change. Backends: `MemoryProfileStore` (here), `FileProfileStore`
 * (`./node/file-store.ts`), `IdbProfileStore` (`./browser/idb-store.ts`).
 *
 * Encryption at rest is a wrapper over any backend: `encryptedProfileStore(inner, passphrase)`
 * seals the document and every part separately (format below). Without a passphrase, wrap the
 * backend in `plaintextProfileStore(inner)` so an encrypted profile is reported clearly instead of
 * being handed to the SDK as garbage; `openProfileStore(inner, passphrase?)` picks one of the two.
 *
 * Encrypted format, version 1 (every value big-endian):
 *
 *     magic "RVZP" (4) | version u8 = 1 | kdf u8 = 1 (scrypt) | log2 N u8 | r u8 | p u8
 *     | salt (16) | nonce (24) | XChaCha20-Poly1305 ciphertext || tag (16)
 *
 * - key = scrypt(passphrase (UTF-8 of its NFC form), salt, N, r, p, 32 bytes) from @noble/hashes;
 *   the KDF parameters live in the header, so they can be raised later (`reencryptProfile`)
 *   while old files stay readable. Default: N = 2^17, r = 8, p = 1 (128 MiB; 0.6–1 s in Node on
 *   the development machine, printed by profile-store.test.ts).
 * - AAD = the 25 header bytes (magic … salt) || 0x00 for the document,
 *   or || 0x01 || the part name (ASCII) for a part: a part file moved to another name, or put in
 *   place of the document, does not open.
 * - The nonce is 24 random bytes per write (XChaCha: random nonces are safe at any count here).
 * - A store derives each key once (one scrypt per distinct salt and parameters, cached for the
 *   life of the store). It writes with the salt and parameters of the profile it found, after
 *   checking that its passphrase opens that profile, so a wrong passphrase can never overwrite
 *   a profile; a new profile gets a fresh salt and the configured parameters.
 *
 * Errors (RendezvousError): wrong passphrase or any damaged byte → `crypto.decrypt_failed`
 * ('wrong passphrase or damaged profile'); a plaintext profile opened with a passphrase, or an
 * encrypted one without → `crypto.decrypt_failed` with a message saying what to do and
 * `details.reason` = 'not_encrypted' | 'encrypted'; a format version this SDK does not know →
 * `encoding.unknown_version`; a bad part name → `encoding.bad_value`.
 */
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { scryptAsync } from '@noble/hashes/scrypt.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { RendezvousError, concat, toHex, utf8, type Random } from '@rendezvous/protocol';
import { Secret } from './secret.ts';

// ---------------------------------------------------------------------------------------------
// The store interface

export interface ProfileStore {
  /** The document, or null when none was ever saved. */
  load(): Promise<Uint8Array | null>;
  /** Replaces the document atomically (a crash leaves the old or the new one, never a mix). */
  save(doc: Uint8Array): Promise<void>;
  /** A named part, or null when there is none. Names: [a-z0-9-]{1,64}. */
  loadPart(name: string): Promise<Uint8Array | null>;
  /** Replaces a part atomically. */
  savePart(name: string, bytes: Uint8Array): Promise<void>;
  /** Removes a part; no error when there is none. */
  deletePart(name: string): Promise<void>;
  /** The names of all parts, sorted. */
  listParts(): Promise<string[]>;
  /**
   * Runs `fn` holding the profile's exclusive lock (no other process or tab writes meanwhile),
   * where the backend has one. Wrappers pass it through.
   */
  withLock?<T>(fn: () => Promise<T>): Promise<T>;
  /** Releases backend resources (database handles). */
  close?(): Promise<void>;
}

const PART_NAME = /^[a-z0-9-]{1,64}$/;

/** Throws `encoding.bad_value` unless `name` is a valid part name ([a-z0-9-]{1,64}). */
export function checkPartName(name: string): void {
  if (typeof name !== 'string' || !PART_NAME.test(name)) {
    throw new RendezvousError('encoding.bad_value', `bad profile part name ${JSON.stringify(name)}: use [a-z0-9-]{1,64}`);
  }
}

/** In memory, for tests and short-lived sessions. Copies on the way in and out. */
export class MemoryProfileStore implements ProfileStore {
  #doc: Uint8Array | null = null;
  readonly #parts = new Map<string, Uint8Array>();

  async load(): Promise<Uint8Array | null> {
    return this.#doc === null ? null : this.#doc.slice();
  }

  async save(doc: Uint8Array): Promise<void> {
    this.#doc = doc.slice();
  }

  async loadPart(name: string): Promise<Uint8Array | null> {
    checkPartName(name);
    const p = this.#parts.get(name);
    return p === undefined ? null : p.slice();
  }

  async savePart(name: string, bytes: Uint8Array): Promise<void> {
    checkPartName(name);
    this.#parts.set(name, bytes.slice());
  }

  async deletePart(name: string): Promise<void> {
    checkPartName(name);
    this.#parts.delete(name);
  }

  async listParts(): Promise<string[]> {
    return [...this.#parts.keys()].sort();
  }
}

// ---------------------------------------------------------------------------------------------
// Encrypted format

const MAGIC = utf8('RVZP');
const FORMAT_VERSION = 1;
const KDF_SCRYPT = 1;
const SALT_LENGTH = 16;
const NONCE_LENGTH = 24;
const TAG_LENGTH = 16;
/** magic, version, kdf, logN, r, p, salt */
const HEADER_LENGTH = 4 + 1 + 4 + SALT_LENGTH;
const MIN_LENGTH = HEADER_LENGTH + NONCE_LENGTH + TAG_LENGTH;

export interface ScryptParams {
  /** log2 of N, the CPU/memory cost. */
  logN: number;
  r: number;
  p: number;
}

/**
 * The default for new profiles: N = 2^17, r = 8, p = 1 (128 MiB of memory; 0.6–1 s on the
 * development machine in Node, printed by the test run). Raise it here; old profiles keep opening
 * with the parameters in their header (reencryptProfile upgrades them).
 */
export const DEFAULT_SCRYPT: Readonly<ScryptParams> = Object.freeze({ logN: 17, r: 8, p: 1 });

/** Limits on what a header may ask for, so a damaged or hostile file cannot make us spin or swap. */
const MIN_LOG_N = 10;
const MAX_LOG_N = 20;
const MAX_MEMORY = 256 * 1024 * 1024; // 128 · r · N
const MAX_WORK = 1024 * 1024 * 1024; // 128 · r · N · p

function checkScrypt(k: ScryptParams): boolean {
  const { logN, r, p } = k;
  if (![logN, r, p].every((v) => Number.isInteger(v))) return false;
  if (logN < MIN_LOG_N || logN > MAX_LOG_N || r < 1 || r > 255 || p < 1 || p > 255) return false;
  const mem = 128 * r * 2 ** logN;
  return mem <= MAX_MEMORY && mem * p <= MAX_WORK;
}

/** Whether `bytes` is in the encrypted profile format (starts with the magic "RVZP"). */
export function isEncryptedProfile(bytes: Uint8Array): boolean {
  if (bytes.length < MAGIC.length) return false;
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) return false;
  return true;
}

function damaged(): RendezvousError {
  return new RendezvousError('crypto.decrypt_failed', 'wrong passphrase or damaged profile', {
    reason: 'wrong_passphrase_or_damaged',
  });
}

function notEncrypted(what: string): RendezvousError {
  return new RendezvousError(
    'crypto.decrypt_failed',
    `${what} is not encrypted (or its header is damaged) but a passphrase was given: open it without a passphrase ` +
      '(unset RENDEZVOUS_PASSPHRASE), or encrypt it first (reencryptProfile)',
    { reason: 'not_encrypted' },
  );
}

function isEncryptedError(what: string): RendezvousError {
  return new RendezvousError(
    'crypto.decrypt_failed',
    `${what} is encrypted: give its passphrase (enter it when prompted, or set RENDEZVOUS_PASSPHRASE)`,
    { reason: 'encrypted' },
  );
}

interface Header {
  /** The 25 header bytes magic … salt, as written (bound in the AAD). */
  bytes: Uint8Array;
  kdf: ScryptParams;
  salt: Uint8Array;
}

function buildHeader(kdf: ScryptParams, salt: Uint8Array): Header {
  const bytes = new Uint8Array(HEADER_LENGTH);
  bytes.set(MAGIC, 0);
  bytes[4] = FORMAT_VERSION;
  bytes[5] = KDF_SCRYPT;
  bytes[6] = kdf.logN;
  bytes[7] = kdf.r;
  bytes[8] = kdf.p;
  bytes.set(salt, 9);
  return { bytes, kdf: { ...kdf }, salt: salt.slice() };
}

/** Parses and checks the header of an encrypted file (the caller checked the magic). */
function parseHeader(file: Uint8Array): Header {
  if (file.length < 5) throw damaged();
  const version = file[4]!;
  if (version > FORMAT_VERSION) {
    throw new RendezvousError(
      'encoding.unknown_version',
      `profile format version ${version} is newer than this SDK understands: upgrade Rendezvous`,
    );
  }
  if (version !== FORMAT_VERSION || file.length < MIN_LENGTH || file[5] !== KDF_SCRYPT) throw damaged();
  const kdf = { logN: file[6]!, r: file[7]!, p: file[8]! };
  if (!checkScrypt(kdf)) throw damaged();
  return { bytes: file.slice(0, HEADER_LENGTH), kdf, salt: file.slice(9, HEADER_LENGTH) };
}

function aadFor(header: Header, part: string | null): Uint8Array {
  return part === null ? concat(header.bytes, Uint8Array.of(0)) : concat(header.bytes, Uint8Array.of(1), utf8(part));
}

export interface EncryptedStoreOptions {
  /** KDF parameters for a new profile (default `DEFAULT_SCRYPT`). Lower values are for tests only. */
  kdf?: ScryptParams;
  /** Randomness for salts and nonces (default: the platform CSPRNG through @noble/hashes). */
  random?: Random;
}

function passphraseBytes(passphrase: string | Uint8Array | Secret): Uint8Array {
  const b =
    passphrase instanceof Secret
      ? passphrase.expose().slice()
      : typeof passphrase === 'string'
        ? utf8(passphrase.normalize('NFC'))
        : passphrase.slice();
  if (b.length === 0) throw new RendezvousError('crypto.bad_key', 'the passphrase is empty');
  return b;
}

/** Derives the file key: scrypt over the passphrase with the header's salt and parameters. */
async function deriveKey(pass: Uint8Array, header: Header): Promise<Uint8Array> {
  const { logN, r, p } = header.kdf;
  // noble allocates 128·r·(N + p + 1) bytes; checkScrypt has already bounded 128·r·N.
  return scryptAsync(pass, header.salt, { N: 2 ** logN, r, p, dkLen: 32, maxmem: 128 * r * (2 ** logN + p + 1) });
}

/**
 * Seals the document and every part of `inner` under a key derived from `passphrase`
 * (format and errors in the module comment).
 */
export function encryptedProfileStore(
  inner: ProfileStore,
  passphrase: string | Uint8Array | Secret,
  opts: EncryptedStoreOptions = {},
): ProfileStore {
  return makeEncrypted(inner, passphrase, opts, false);
}

function makeEncrypted(
  inner: ProfileStore,
  passphrase: string | Uint8Array | Secret,
  opts: EncryptedStoreOptions,
  fresh: boolean,
): ProfileStore {
  const pass = passphraseBytes(passphrase);
  const kdf = opts.kdf ?? DEFAULT_SCRYPT;
  if (!checkScrypt(kdf)) throw new RendezvousError('encoding.bad_value', 'scrypt parameters out of range');
  const random = opts.random ?? randomBytes;
  /** Derived keys by header (kdf parameters and salt): one scrypt each, shared by concurrent calls. */
  const keys = new Map<string, Promise<Uint8Array>>();
  /** The header and key that writes use, settled on first need. */
  let writer: Promise<{ header: Header; key: Uint8Array }> | null = null;

  function keyFor(header: Header): Promise<Uint8Array> {
    const id = toHex(header.bytes.subarray(5));
    let k = keys.get(id);
    if (k === undefined) {
      k = deriveKey(pass, header);
      keys.set(id, k);
      k.catch(() => keys.delete(id));
    }
    return k;
  }

  async function open(file: Uint8Array, part: string | null): Promise<{ plain: Uint8Array; header: Header; key: Uint8Array }> {
    if (!isEncryptedProfile(file)) throw notEncrypted(part === null ? 'this profile' : `profile part '${part}'`);
    const header = parseHeader(file);
    const key = await keyFor(header);
    const nonce = file.subarray(HEADER_LENGTH, HEADER_LENGTH + NONCE_LENGTH);
    try {
      const plain = xchacha20poly1305(key, nonce, aadFor(header, part)).decrypt(file.subarray(HEADER_LENGTH + NONCE_LENGTH));
      return { plain, header, key };
    } catch {
      throw damaged();
    }
  }

  function seal(w: { header: Header; key: Uint8Array }, part: string | null, plain: Uint8Array): Uint8Array {
    const nonce = random(NONCE_LENGTH);
    if (nonce.length !== NONCE_LENGTH) throw new RendezvousError('crypto.bad_key', 'random source returned the wrong length');
    const ct = xchacha20poly1305(w.key, nonce, aadFor(w.header, part)).encrypt(plain);
    return concat(w.header.bytes, nonce, ct);
  }

  /**
   * The header for writes: the existing profile's, once this passphrase is shown to open it
   * (never overwrite what we cannot read), else a fresh salt with the configured parameters.
   */
  function getWriter(): Promise<{ header: Header; key: Uint8Array }> {
    if (writer === null) {
      writer = (async () => {
        if (!fresh) {
          const doc = await inner.load();
          if (doc !== null) {
            const { header, key } = await open(doc, null);
            return { header, key };
          }
          const parts = await inner.listParts();
          if (parts.length > 0) {
            const name = parts[0]!;
            const bytes = await inner.loadPart(name);
            if (bytes !== null) {
              const { header, key } = await open(bytes, name);
              return { header, key };
            }
          }
        }
        const salt = random(SALT_LENGTH);
        if (salt.length !== SALT_LENGTH) throw new RendezvousError('crypto.bad_key', 'random source returned the wrong length');
        const header = buildHeader(kdf, salt);
        return { header, key: await keyFor(header) };
      })();
      writer.catch(() => {
        writer = null;
      });
    }
    return writer;
  }

  const store: ProfileStore = {
    async load() {
      const file = await inner.load();
      if (file === null) return null;
      const r = await open(file, null);
      if (writer === null && !fresh) writer = Promise.resolve({ header: r.header, key: r.key });
      return r.plain;
    },
    async save(doc) {
      const w = await getWriter();
      await inner.save(seal(w, null, doc));
    },
    async loadPart(name) {
      checkPartName(name);
      const file = await inner.loadPart(name);
      return file === null ? null : (await open(file, name)).plain;
    },
    async savePart(name, bytes) {
      checkPartName(name);
      const w = await getWriter();
      await inner.savePart(name, seal(w, name, bytes));
    },
    deletePart: (name) => inner.deletePart(name),
    listParts: () => inner.listParts(),
  };
  if (inner.withLock) store.withLock = (fn) => inner.withLock!(fn);
  if (inner.close) store.close = () => inner.close!();
  return store;
}

/**
 * A passthrough for profiles kept without a passphrase that refuses an encrypted profile with a
 * clear error (instead of handing ciphertext to the SDK or overwriting it with plaintext).
 */
export function plaintextProfileStore(inner: ProfileStore): ProfileStore {
  let checked: Promise<void> | null = null;
  function reject(bytes: Uint8Array | null, what: string): void {
    if (bytes !== null && isEncryptedProfile(bytes)) throw isEncryptedError(what);
  }
  /** Before the first write: is the profile already there encrypted? */
  function checkBeforeWrite(): Promise<void> {
    if (checked === null) {
      checked = (async () => {
        reject(await inner.load(), 'this profile');
        const parts = await inner.listParts();
        if (parts.length > 0) reject(await inner.loadPart(parts[0]!), `profile part '${parts[0]}'`);
      })();
      checked.catch(() => {
        checked = null;
      });
    }
    return checked;
  }
  const store: ProfileStore = {
    async load() {
      const doc = await inner.load();
      reject(doc, 'this profile');
      if (doc !== null) checked ??= Promise.resolve();
      return doc;
    },
    async save(doc) {
      await checkBeforeWrite();
      await inner.save(doc);
    },
    async loadPart(name) {
      const bytes = await inner.loadPart(name);
      reject(bytes, `profile part '${name}'`);
      return bytes;
    },
    async savePart(name, bytes) {
      await checkBeforeWrite();
      await inner.savePart(name, bytes);
    },
    deletePart: (name) => inner.deletePart(name),
    listParts: () => inner.listParts(),
  };
  if (inner.withLock) store.withLock = (fn) => inner.withLock!(fn);
  if (inner.close) store.close = () => inner.close!();
  return store;
}

/**
 * The store the SDK should use over a backend: encrypted when a passphrase is given (prompted,
 * or RENDEZVOUS_PASSPHRASE for scripts), plaintext otherwise.
 */
export function openProfileStore(
  inner: ProfileStore,
  passphrase: string | Uint8Array | Secret | undefined,
  opts: EncryptedStoreOptions = {},
): ProfileStore {
  return passphrase === undefined ? plaintextProfileStore(inner) : encryptedProfileStore(inner, passphrase, opts);
}

/**
 * Rewrites a whole profile (every part, then the document) from one protection to another:
 * encrypt a plaintext profile (`from` undefined), decrypt one (`to` undefined), change the
 * passphrase, or raise the KDF parameters (`opts.kdf`). Run it under `withLock`.
 *
 * Files are rewritten one by one (each atomically, not all together); an interrupted run is
 * resumed by running it again with the same arguments: a file already converted is read with
 * `to`. A new salt is drawn for the converted profile.
 */
export async function reencryptProfile(
  inner: ProfileStore,
  from: string | Uint8Array | Secret | undefined,
  to: string | Uint8Array | Secret | undefined,
  opts: EncryptedStoreOptions = {},
): Promise<void> {
  const src = openProfileStore(inner, from, opts);
  const dst = to === undefined ? inner : makeEncrypted(inner, to, opts, true);
  const dstRead = openProfileStore(inner, to, opts);
  async function read<T>(f: (s: ProfileStore) => Promise<T>): Promise<T> {
    try {
      return await f(src);
    } catch (e) {
      if (!(e instanceof RendezvousError) || e.code !== 'crypto.decrypt_failed') throw e;
      try {
        return await f(dstRead);
      } catch {
        throw e;
      }
    }
  }
  for (const name of await inner.listParts()) {
    const bytes = await read((s) => s.loadPart(name));
    if (bytes !== null) await dst.savePart(name, bytes);
  }
  const doc = await read((s) => s.load());
  if (doc !== null) await dst.save(doc);
}
