/**
 * Federation structures (spec §17): what one server signs for another.
 *
 * - A signed server-to-server request (§17.2): origin, destination, method, path, time, a
 *   random nonce and the SHA-256 of the body, signed with the origin's server key. The
 *   receiver checks destination, time window and nonce as well as the signature; this module
 *   only defines and verifies the signed bytes.
 * - A witness cosignature (§17.5): a member server's signature over a host checkpoint it has
 *   verified against its own replica.
 * - A key endorsement (§17.1): a server's previous key signing its next one, so that whoever
 *   pinned the old key can follow a rotation, and signatures by old keys stay verifiable.
 */
import { RendezvousError } from './errors.ts';
import { Reader, Writer, decodeAll } from './encoding.ts';
import { equal, toHex } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { SignLabel, signWithLabel, verifyWithLabel } from './sign.ts';
import { MAX_SERVER_NAME_BYTES, isServerName } from './identity.ts';
import { KEY_ID_SIZE, decodeCheckpoint, serverKeyId, type Checkpoint } from './log.ts';
import { checkEd25519PublicKey } from './keys.ts';

export const FEDERATION_VERSION = 1;
export const FEDERATION_NONCE_SIZE = 16;
/** Longest request path (with query) a signed request may name. */
export const MAX_FEDERATION_PATH_BYTES = 2048;
const METHOD_RE = /^(GET|POST|PUT|DELETE)$/;

function serverName(s: string, what: string): string {
  if (!isServerName(s)) throw new RendezvousError('encoding.bad_value', `${what} is not a server name`);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Signed requests (§17.2)

export interface FederationRequest {
  origin: string;
  destination: string;
  /** Upper-case HTTP method. */
  method: string;
  /** Path and query exactly as sent (`/v1/federation/...?...`). */
  path: string;
  /** Milliseconds since the Unix epoch, set by the origin when it signs. */
  timestamp: number;
  nonce: Uint8Array;
  /** SHA-256 of the request body (of the empty string for a request without one). */
  bodyHash: Uint8Array;
  /** serverKeyId of the signing key. */
  keyId: Uint8Array;
}

/** struct { u8 version; origin<V>; destination<V>; method<V>; path<V>; u64 time; nonce[16]; body_hash[32]; key_id[8]; } */
export function federationRequestTbs(r: FederationRequest): Uint8Array {
  serverName(r.origin, 'origin');
  serverName(r.destination, 'destination');
  if (!METHOD_RE.test(r.method)) throw new RendezvousError('encoding.bad_value', 'method must be GET, POST, PUT or DELETE');
  if (!r.path.startsWith('/') || new TextEncoder().encode(r.path).length > MAX_FEDERATION_PATH_BYTES) {
    throw new RendezvousError('encoding.bad_value', 'path must start with / and be at most 2048 bytes');
  }
  return new Writer(200 + r.path.length)
    .u8(FEDERATION_VERSION)
    .string(r.origin)
    .string(r.destination)
    .string(r.method)
    .string(r.path)
    .u64(r.timestamp)
    .fixed(r.nonce, FEDERATION_NONCE_SIZE)
    .fixed(r.bodyHash, 32)
    .fixed(r.keyId, KEY_ID_SIZE)
    .finish();
}

/** Signs a request with the origin's server key; returns the request with its key id, and the signature. */
export function signFederationRequest(
  crypto: CryptoProvider,
  serverSeed: Uint8Array,
  r: Omit<FederationRequest, 'keyId'>,
): { request: FederationRequest; signature: Uint8Array } {
  const request = { ...r, keyId: serverKeyId(crypto, crypto.ed25519PublicKey(serverSeed)) };
  return { request, signature: signWithLabel(crypto, serverSeed, SignLabel.federationRequest, federationRequestTbs(request)) };
}

/**
 * Verifies the signature of a request with the origin's key named by `r.keyId`.
 * Throws `federation.unknown_key` if `publicKey` is not that key, `federation.bad_signature`
 * if the signature does not verify. Destination, time window and nonce are the receiver's
 * checks (spec §17.2 lists the order).
 */
export function verifyFederationRequest(crypto: CryptoProvider, r: FederationRequest, signature: Uint8Array, publicKey: Uint8Array): void {
  if (!equal(serverKeyId(crypto, publicKey), r.keyId)) throw new RendezvousError('federation.unknown_key', 'request is signed by another key');
  if (signature.length !== 64 || !verifyWithLabel(crypto, publicKey, SignLabel.federationRequest, federationRequestTbs(r), signature)) {
    throw new RendezvousError('federation.bad_signature', `request from ${r.origin} is not signed by its server key`);
  }
}

// ---------------------------------------------------------------------------------------------
// Witness cosignatures (§17.5)

/** Longest encoded checkpoint: version, origin, topic id, size, root, time, key id, signature. */
const MAX_CHECKPOINT_BYTES = 1 + 2 + MAX_SERVER_NAME_BYTES + 16 + 8 + 32 + 8 + KEY_ID_SIZE + 64;

export interface Cosignature {
  /** The witnessing server. */
  witness: string;
  /** The host's encoded Checkpoint (spec §10), signature included. */
  checkpoint: Uint8Array;
  /** When the witness verified it (ms). */
  timestamp: number;
  keyId: Uint8Array;
  signature: Uint8Array;
}

function writeCosignatureTbs(w: Writer, c: Omit<Cosignature, 'signature'>): void {
  w.u8(FEDERATION_VERSION).string(c.witness).bytes(c.checkpoint).u64(c.timestamp).fixed(c.keyId, KEY_ID_SIZE);
}

export function encodeCosignature(c: Cosignature): Uint8Array {
  const w = new Writer(400);
  writeCosignatureTbs(w, c);
  return w.fixed(c.signature, 64).finish();
}

export function decodeCosignature(b: Uint8Array): Cosignature {
  return decodeAll(b, (r: Reader) => {
    if (r.u8() !== FEDERATION_VERSION) throw new RendezvousError('encoding.unknown_version');
    const witness = serverName(r.string(MAX_SERVER_NAME_BYTES), 'witness');
    const checkpoint = r.bytes(MAX_CHECKPOINT_BYTES);
    decodeCheckpoint(checkpoint);
    return { witness, checkpoint, timestamp: r.u64(), keyId: r.fixed(KEY_ID_SIZE), signature: r.fixed(64) };
  });
}

export function signCosignature(
  crypto: CryptoProvider,
  serverSeed: Uint8Array,
  c: Omit<Cosignature, 'signature' | 'keyId'>,
): Cosignature {
  serverName(c.witness, 'witness');
  const tbs = { ...c, keyId: serverKeyId(crypto, crypto.ed25519PublicKey(serverSeed)) };
  const w = new Writer(400);
  writeCosignatureTbs(w, tbs);
  return { ...tbs, signature: signWithLabel(crypto, serverSeed, SignLabel.witness, w.finish()) };
}

/**
 * Verifies a cosignature with the witness's key and returns the checkpoint it vouches for.
 * The checkpoint's own signature (by the host) is the caller's to check, with the host's key.
 * Throws `crypto.bad_signature`.
 */
export function verifyCosignature(crypto: CryptoProvider, c: Cosignature, witnessKey: Uint8Array): Checkpoint {
  if (!equal(serverKeyId(crypto, witnessKey), c.keyId)) throw new RendezvousError('crypto.bad_signature', 'cosignature is signed by another key');
  const w = new Writer(400);
  writeCosignatureTbs(w, c);
  if (!verifyWithLabel(crypto, witnessKey, SignLabel.witness, w.finish(), c.signature)) {
    throw new RendezvousError('crypto.bad_signature', `cosignature of ${c.witness} does not verify`);
  }
  return decodeCheckpoint(c.checkpoint);
}

// ---------------------------------------------------------------------------------------------
// Server keys and rotation (§17.1)

/** One key of a server's published key list, oldest first. */
export interface PublishedServerKey {
  publicKey: Uint8Array;
  /** When the key became current (ms). */
  createdAt: number;
  /** Signature by the previous key in the list (absent for the first). */
  endorsement: Uint8Array | null;
}

function endorsementTbs(server: string, k: Pick<PublishedServerKey, 'publicKey' | 'createdAt'>): Uint8Array {
  return new Writer(300).u8(FEDERATION_VERSION).string(serverName(server, 'server')).fixed(k.publicKey, 32).u64(k.createdAt).finish();
}

/** The previous key's signature over the next key (a rotation). */
export function endorseServerKey(crypto: CryptoProvider, previousSeed: Uint8Array, server: string, next: Pick<PublishedServerKey, 'publicKey' | 'createdAt'>): Uint8Array {
  return signWithLabel(crypto, previousSeed, SignLabel.serverKey, endorsementTbs(server, next));
}

/**
 * Checks a server's published key list against the keys the verifier already trusts for it
 * (`pinned`, possibly none on first contact) and returns every key to trust from now on:
 * - each key after the first MUST be endorsed by the one before it (`crypto.bad_signature`);
 * - keys MUST be valid Ed25519 keys and appear once (`crypto.bad_key`, `encoding.bad_value`);
 * - if `pinned` is not empty, the list MUST contain a pinned key: a server whose keys no longer
 *   chain to what was pinned has changed identity (`federation.key_changed`).
 * The result is the pinned keys followed by the list's keys from the newest pinned one on, so a
 * key that was once trusted stays usable for the signatures it made.
 */
export function trustServerKeys(
  crypto: CryptoProvider,
  server: string,
  published: readonly PublishedServerKey[],
  pinned: readonly Uint8Array[],
): Uint8Array[] {
  if (published.length === 0) throw new RendezvousError('encoding.bad_value', 'a server publishes at least one key');
  const seen = new Set<string>();
  published.forEach((k, i) => {
    checkEd25519PublicKey(k.publicKey, 'server key');
    const id = toHex(k.publicKey);
    if (seen.has(id)) throw new RendezvousError('encoding.bad_value', 'a server key is listed twice');
    seen.add(id);
    if (i === 0) return;
    const prev = published[i - 1]!;
    if (k.endorsement === null || !verifyWithLabel(crypto, prev.publicKey, SignLabel.serverKey, endorsementTbs(server, k), k.endorsement)) {
      throw new RendezvousError('crypto.bad_signature', `key ${i} of ${server} is not endorsed by the key before it`);
    }
  });
  if (pinned.length === 0) return published.map((k) => k.publicKey);
  let from = -1;
  published.forEach((k, i) => {
    if (pinned.some((p) => equal(p, k.publicKey))) from = i;
  });
  if (from < 0) throw new RendezvousError('federation.key_changed', `${server} publishes keys that do not chain to the key pinned for it`);
  const out = [...pinned];
  for (const k of published.slice(from)) if (!out.some((p) => equal(p, k.publicKey))) out.push(k.publicKey);
  return out;
}
