/**
 * HPKE (RFC 9180), mode_base only, for DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 with
 * AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305.
 *
 * Why build HPKE here instead of using a library: HPKE is a thin composition of primitives the
 * provider already has (X25519, HKDF-SHA256, the AEADs). @hpke/core was measured at about 500
 * seals/s on our machines (and ~340/s on a 2-core box) because its X25519 is pure JavaScript,
 * while node:crypto's X25519 scalar multiplication is roughly 30 times faster; an epoch secret
 * is wrapped to every member of a topic, so that matters. (Over the node provider, a seal costs
 * two scalar multiplications plus raw-key imports into node:crypto, so key import speed in
 * node.ts bounds our throughput, not the curve.) It is also synchronous, which @hpke/core is
 * not. Building over `CryptoProvider` keeps the one-place-for-primitives rule (spec §3):
 * nothing in this file computes a primitive by hand, and the node and noble providers give the
 * same bytes. The test suite checks every mode_base vector of RFC 9180 Appendix A for our suites
 * and runs a differential test against @hpke/core.
 *
 * Only mode_base (RFC 9180 §5.1.1) is offered. PSK and Auth modes (§5.1.2–§5.1.4) are not
 * needed by the protocol, so they are rejected by simply not existing: there is no mode
 * parameter, no PSK and no sender key anywhere in this API.
 *
 * Section references are to RFC 9180.
 */
import { RendezvousError } from '../errors.ts';
import { concat, utf8 } from '../bytes.ts';
import { AEAD_KEY_LENGTH, type Aead, type CryptoProvider, type Random } from './provider.ts';

// ---------------------------------------------------------------------------------------------
// Suites (§7)

export const HPKE_KEM_X25519_SHA256 = 0x0020;
export const HPKE_KDF_HKDF_SHA256 = 0x0001;
export const HPKE_AEAD_AES_128_GCM = 0x0001;
export const HPKE_AEAD_AES_256_GCM = 0x0002;
export const HPKE_AEAD_CHACHA20_POLY1305 = 0x0003;

export type HpkeAeadId = typeof HPKE_AEAD_AES_128_GCM | typeof HPKE_AEAD_AES_256_GCM | typeof HPKE_AEAD_CHACHA20_POLY1305;

export interface HpkeSuite {
  readonly kemId: typeof HPKE_KEM_X25519_SHA256;
  readonly kdfId: typeof HPKE_KDF_HKDF_SHA256;
  readonly aeadId: HpkeAeadId;
  /** The provider's name for the AEAD. */
  readonly aead: Aead;
  /** Nk, Nn (§7.3) and Nh (§7.2). */
  readonly Nk: number;
  readonly Nn: 12;
  readonly Nh: 32;
}

function makeSuite(aeadId: HpkeAeadId, aead: Aead): HpkeSuite {
  return Object.freeze({
    kemId: HPKE_KEM_X25519_SHA256,
    kdfId: HPKE_KDF_HKDF_SHA256,
    aeadId,
    aead,
    Nk: AEAD_KEY_LENGTH[aead],
    Nn: 12,
    Nh: 32,
  });
}

export const SUITE_X25519_SHA256_AES128GCM = makeSuite(HPKE_AEAD_AES_128_GCM, 'aes-128-gcm');
export const SUITE_X25519_SHA256_AES256GCM = makeSuite(HPKE_AEAD_AES_256_GCM, 'aes-256-gcm');
/** The protocol's suite for key shares (spec §7.3). */
export const SUITE_X25519_SHA256_CHACHA = makeSuite(HPKE_AEAD_CHACHA20_POLY1305, 'chacha20-poly1305');

const SUITES: readonly HpkeSuite[] = [SUITE_X25519_SHA256_AES128GCM, SUITE_X25519_SHA256_AES256GCM, SUITE_X25519_SHA256_CHACHA];

/** Looks a suite up by its registry identifiers (§7); anything else is `encoding.unknown_version`. */
export function hpkeSuite(kemId: number, kdfId: number, aeadId: number): HpkeSuite {
  const s = SUITES.find((x) => x.kemId === kemId && x.kdfId === kdfId && x.aeadId === aeadId);
  if (s === undefined) {
    throw new RendezvousError('encoding.unknown_version', `unsupported HPKE suite ${kemId}/${kdfId}/${aeadId}`);
  }
  return s;
}

/** Only the frozen suite objects above are accepted, so a hand-made object cannot mix parameters. */
function checkSuite(suite: HpkeSuite): void {
  if (!SUITES.includes(suite)) throw new RendezvousError('encoding.unknown_version', 'unsupported HPKE suite');
}

// DHKEM(X25519, HKDF-SHA256) sizes (§7.1): Nsecret, Nenc, Npk, Nsk.
const N_SECRET = 32;
const N_ENC = 32;
const N_PK = 32;
const N_SK = 32;

/** mode_base (§5.1, Table 1). The only mode offered. */
const MODE_BASE = 0x00;

// ---------------------------------------------------------------------------------------------
// Labeled HKDF (§4)

const HPKE_V1 = utf8('HPKE-v1');
const EMPTY = new Uint8Array(0);

/** I2OSP(n, w) for the small widths used here (§3). */
function i2osp(n: number, w: number): Uint8Array {
  const out = new Uint8Array(w);
  for (let i = w - 1; i >= 0 && n > 0; i--) {
    out[i] = n % 256;
    n = Math.floor(n / 256);
  }
  return out;
}

/** The KEM's suite_id = "KEM" || I2OSP(kem_id, 2) (§4.1). */
const KEM_SUITE_ID = concat(utf8('KEM'), i2osp(HPKE_KEM_X25519_SHA256, 2));

/** The HPKE suite_id = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2) (§5.1). */
function makeSuiteId(suite: HpkeSuite): Uint8Array {
  return concat(utf8('HPKE'), i2osp(suite.kemId, 2), i2osp(suite.kdfId, 2), i2osp(suite.aeadId, 2));
}

/** The suite_id of each supported suite, computed once (an epoch re-key runs one HPKE per member). */
const SUITE_IDS = new Map<HpkeSuite, Uint8Array>(SUITES.map((s) => [s, makeSuiteId(s)]));

function hpkeSuiteId(suite: HpkeSuite): Uint8Array {
  return SUITE_IDS.get(suite) ?? makeSuiteId(suite);
}

/** UTF-8 of the labels of this file, encoded once each (the set is fixed by the code). */
const LABELS = new Map<string, Uint8Array>();

function labelBytes(label: string): Uint8Array {
  let b = LABELS.get(label);
  if (b === undefined) LABELS.set(label, (b = utf8(label)));
  return b;
}

/** LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm) (§4). */
function labeledExtract(
  crypto: CryptoProvider,
  suiteId: Uint8Array,
  salt: Uint8Array,
  label: string,
  ikm: Uint8Array,
): Uint8Array {
  return crypto.hkdfExtract(salt, concat(HPKE_V1, suiteId, labelBytes(label), ikm));
}

/**
 * LabeledExpand(prk, label, info, L) =
 *   Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L) (§4).
 * L is bounded by 255 * Nh (RFC 5869), which also keeps I2OSP(L, 2) exact.
 */
function labeledExpand(
  crypto: CryptoProvider,
  suiteId: Uint8Array,
  prk: Uint8Array,
  label: string,
  info: Uint8Array,
  length: number,
): Uint8Array {
  if (!Number.isSafeInteger(length) || length < 0 || length > 255 * 32) {
    throw new RendezvousError('crypto.bad_key', 'HPKE output length out of range');
  }
  return crypto.hkdfExpand(prk, concat(i2osp(length, 2), HPKE_V1, suiteId, labelBytes(label), info), length);
}

// ---------------------------------------------------------------------------------------------
// DHKEM(X25519, HKDF-SHA256) (§4.1, §7.1)

export interface HpkeKeyPair {
  secretKey: Uint8Array;
  publicKey: Uint8Array;
}

/**
 * DeriveKeyPair for X25519 (§7.1.3):
 *   dkp_prk = LabeledExtract("", "dkp_prk", ikm); sk = LabeledExpand(dkp_prk, "sk", "", Nsk).
 * The secret key is returned unclamped, as the RFC's vectors list it; the provider clamps it
 * (RFC 7748 §5). We require ikm of at least Nsk bytes (the §7.1.3 SHOULD, made a MUST here).
 */
export function hpkeDeriveKeyPair(crypto: CryptoProvider, ikm: Uint8Array): HpkeKeyPair {
  if (ikm.length < N_SK) throw new RendezvousError('crypto.bad_key', 'DeriveKeyPair needs at least 32 bytes of ikm');
  const dkpPrk = labeledExtract(crypto, KEM_SUITE_ID, EMPTY, 'dkp_prk', ikm);
  const secretKey = labeledExpand(crypto, KEM_SUITE_ID, dkpPrk, 'sk', EMPTY, N_SK);
  return { secretKey, publicKey: crypto.x25519PublicKey(secretKey) };
}

/** GenerateKeyPair() = DeriveKeyPair(random(Nsk)) (§7.1.3), with injected randomness. */
export function hpkeGenerateKeyPair(crypto: CryptoProvider, random: Random): HpkeKeyPair {
  return hpkeDeriveKeyPair(crypto, random(N_SK));
}

function checkPublicKey(pk: Uint8Array, what: string): void {
  // DeserializePublicKey (§7.1.1): an X25519 public key is exactly Npk bytes. Low-order points
  // are caught by the all-zero DH check in the provider (§7.1.4).
  if (pk.length !== N_PK) throw new RendezvousError('crypto.bad_key', `${what} must be 32 bytes`);
}

function checkSecretKey(sk: Uint8Array): void {
  if (sk.length !== N_SK) throw new RendezvousError('crypto.bad_key', 'HPKE secret key must be 32 bytes');
}

/**
 * ExtractAndExpand(dh, kem_context) (§4.1):
 *   eae_prk = LabeledExtract("", "eae_prk", dh)
 *   shared_secret = LabeledExpand(eae_prk, "shared_secret", kem_context, Nsecret)
 */
function extractAndExpand(crypto: CryptoProvider, dh: Uint8Array, kemContext: Uint8Array): Uint8Array {
  const eaePrk = labeledExtract(crypto, KEM_SUITE_ID, EMPTY, 'eae_prk', dh);
  return labeledExpand(crypto, KEM_SUITE_ID, eaePrk, 'shared_secret', kemContext, N_SECRET);
}

export interface HpkeEncapsulation {
  sharedSecret: Uint8Array;
  enc: Uint8Array;
}

/**
 * Encap(pkR) with the ephemeral key pair derived from `ikmE` (§4.1 with §7.1.3). This is how
 * the RFC's vectors are generated (Appendix A lists ikmE), so it reproduces them exactly.
 * Outside tests, use `hpkeEncap`, which draws ikmE from the injected randomness.
 * Throws `crypto.bad_key` for a malformed or low-order pkR (the DH output is all zero, §7.1.4).
 */
export function hpkeEncapDeterministic(crypto: CryptoProvider, recipientPublicKey: Uint8Array, ikmE: Uint8Array): HpkeEncapsulation {
  checkPublicKey(recipientPublicKey, 'HPKE recipient public key');
  const { secretKey: skE, publicKey: enc } = hpkeDeriveKeyPair(crypto, ikmE);
  const dh = crypto.x25519(skE, recipientPublicKey);
  const kemContext = concat(enc, recipientPublicKey);
  return { sharedSecret: extractAndExpand(crypto, dh, kemContext), enc };
}

/** Encap(pkR) (§4.1): a fresh ephemeral key pair from `random(Nsk)`. */
export function hpkeEncap(crypto: CryptoProvider, recipientPublicKey: Uint8Array, random: Random): HpkeEncapsulation {
  const ikmE = random(N_SK);
  if (ikmE.length !== N_SK) throw new Error('Random returned the wrong number of bytes');
  return hpkeEncapDeterministic(crypto, recipientPublicKey, ikmE);
}

/**
 * Decap(enc, skR) (§4.1). Throws `crypto.bad_key` for an enc of the wrong length or a
 * low-order enc (all-zero DH output, §7.1.4), and for a secret key of the wrong length.
 */
export function hpkeDecap(crypto: CryptoProvider, enc: Uint8Array, recipientSecretKey: Uint8Array): Uint8Array {
  if (enc.length !== N_ENC) throw new RendezvousError('crypto.bad_key', 'HPKE enc must be 32 bytes');
  checkSecretKey(recipientSecretKey);
  const dh = crypto.x25519(recipientSecretKey, enc);
  const pkRm = crypto.x25519PublicKey(recipientSecretKey);
  return extractAndExpand(crypto, dh, concat(enc, pkRm));
}

// ---------------------------------------------------------------------------------------------
// Key schedule, mode_base (§5.1)

export interface HpkeKeySchedule {
  keyScheduleContext: Uint8Array;
  secret: Uint8Array;
  key: Uint8Array;
  baseNonce: Uint8Array;
  exporterSecret: Uint8Array;
}

/**
 * psk_id_hash = LabeledExtract("", "psk_id_hash", "") depends on the suite alone in mode_base:
 * computed once per provider and suite. (Per provider, not globally, so that a provider is
 * only ever served values it computed itself.) Callers only read it.
 */
const PSK_ID_HASHES = new WeakMap<CryptoProvider, Map<HpkeSuite, Uint8Array>>();

function pskIdHashBase(crypto: CryptoProvider, suite: HpkeSuite, sid: Uint8Array): Uint8Array {
  let bySuite = PSK_ID_HASHES.get(crypto);
  if (bySuite === undefined) PSK_ID_HASHES.set(crypto, (bySuite = new Map()));
  let h = bySuite.get(suite);
  if (h === undefined) bySuite.set(suite, (h = labeledExtract(crypto, sid, EMPTY, 'psk_id_hash', EMPTY)));
  return h;
}

/** The key schedule up to the exporter secret, which only `export` needs (see exporterSecret). */
type KeyScheduleCore = Omit<HpkeKeySchedule, 'exporterSecret'>;

function keyScheduleCore(crypto: CryptoProvider, suite: HpkeSuite, sharedSecret: Uint8Array, info: Uint8Array): KeyScheduleCore {
  checkSuite(suite);
  const sid = hpkeSuiteId(suite);
  const pskIdHash = pskIdHashBase(crypto, suite, sid);
  const infoHash = labeledExtract(crypto, sid, EMPTY, 'info_hash', info);
  const keyScheduleContext = concat(Uint8Array.of(MODE_BASE), pskIdHash, infoHash);
  const secret = labeledExtract(crypto, sid, sharedSecret, 'secret', EMPTY);
  return {
    keyScheduleContext,
    secret,
    key: labeledExpand(crypto, sid, secret, 'key', keyScheduleContext, suite.Nk),
    baseNonce: labeledExpand(crypto, sid, secret, 'base_nonce', keyScheduleContext, suite.Nn),
  };
}

/** exporter_secret = LabeledExpand(secret, "exp", key_schedule_context, Nh) (§5.1). */
function exporterSecret(crypto: CryptoProvider, suite: HpkeSuite, ks: KeyScheduleCore): Uint8Array {
  return labeledExpand(crypto, hpkeSuiteId(suite), ks.secret, 'exp', ks.keyScheduleContext, suite.Nh);
}

/**
 * HpkeKeySchedule(mode_base, shared_secret, info, psk = "", psk_id = "") (§5.1). With the default
 * PSK, VerifyPSKInputs passes trivially and psk_id_hash is LabeledExtract("", "psk_id_hash", "").
 * Returns every intermediate value so the vector test can check each one.
 */
export function hpkeKeyScheduleBase(crypto: CryptoProvider, suite: HpkeSuite, sharedSecret: Uint8Array, info: Uint8Array): HpkeKeySchedule {
  const ks = keyScheduleCore(crypto, suite, sharedSecret, info);
  return { ...ks, exporterSecret: exporterSecret(crypto, suite, ks) };
}

// ---------------------------------------------------------------------------------------------
// Encryption contexts (§5.2) and the secret export interface (§5.3)

/**
 * The RFC's limit is seq < 2^(8*Nn) - 1 (§5.2). We count in a JS number, so we stop at 2^53 - 1,
 * far below it and far beyond any real use (epoch key shares use sequence number 0 only).
 */
const MAX_SEQ = Number.MAX_SAFE_INTEGER;

abstract class HpkeContextBase {
  readonly #crypto: CryptoProvider;
  readonly #suite: HpkeSuite;
  readonly #key: Uint8Array;
  readonly #baseNonce: Uint8Array;
  /** The key schedule, until export() first needs the exporter secret; then that secret. */
  #exporter: KeyScheduleCore | Uint8Array;
  #seq = 0;

  constructor(crypto: CryptoProvider, suite: HpkeSuite, ks: KeyScheduleCore) {
    this.#crypto = crypto;
    this.#suite = suite;
    this.#key = ks.key;
    this.#baseNonce = ks.baseNonce;
    // Derived on first use: a single-shot seal or open (every key share) never exports.
    this.#exporter = ks;
  }

  /** The sequence number the next seal/open will use. */
  get seq(): number {
    return this.#seq;
  }

  /** ComputeNonce(seq) = base_nonce XOR I2OSP(seq, Nn) (§5.2). */
  #nonce(): Uint8Array {
    if (this.#seq >= MAX_SEQ) throw new RendezvousError('encoding.too_large', 'HPKE message limit reached');
    const n = i2osp(this.#seq, this.#suite.Nn);
    for (let i = 0; i < n.length; i++) n[i] = n[i]! ^ this.#baseNonce[i]!;
    return n;
  }

  protected sealNext(aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const ct = this.#crypto.aeadSeal(this.#suite.aead, this.#key, this.#nonce(), aad, plaintext);
    this.#seq++;
    return ct;
  }

  /** The sequence number only advances on success (§5.2): a forged message does not desync. */
  protected openNext(aad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    const pt = this.#crypto.aeadOpen(this.#suite.aead, this.#key, this.#nonce(), aad, ciphertext);
    this.#seq++;
    return pt;
  }

  /** Context.Export(exporter_context, L) = LabeledExpand(exporter_secret, "sec", exporter_context, L) (§5.3). */
  export(exporterContext: Uint8Array, length: number): Uint8Array {
    if (!(this.#exporter instanceof Uint8Array)) this.#exporter = exporterSecret(this.#crypto, this.#suite, this.#exporter);
    return labeledExpand(this.#crypto, hpkeSuiteId(this.#suite), this.#exporter, 'sec', exporterContext, length);
  }
}

/** The sender's context (§5.2 ContextS): seal and export only. */
export class HpkeSenderContext extends HpkeContextBase {
  seal(aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    return this.sealNext(aad, plaintext);
  }
}

/** The recipient's context (§5.2 ContextR): open and export only. Open failure is `crypto.decrypt_failed`. */
export class HpkeRecipientContext extends HpkeContextBase {
  open(aad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    return this.openNext(aad, ciphertext);
  }
}

/** SetupBaseS(pkR, info) (§5.1.1), with the ephemeral key drawn from `random`. */
export function setupBaseS(
  crypto: CryptoProvider,
  suite: HpkeSuite,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  random: Random,
): { enc: Uint8Array; context: HpkeSenderContext } {
  checkSuite(suite);
  const { sharedSecret, enc } = hpkeEncap(crypto, recipientPublicKey, random);
  return { enc, context: new HpkeSenderContext(crypto, suite, keyScheduleCore(crypto, suite, sharedSecret, info)) };
}

/** SetupBaseR(enc, skR, info) (§5.1.1). */
export function setupBaseR(
  crypto: CryptoProvider,
  suite: HpkeSuite,
  recipientSecretKey: Uint8Array,
  enc: Uint8Array,
  info: Uint8Array,
): HpkeRecipientContext {
  checkSuite(suite);
  const sharedSecret = hpkeDecap(crypto, enc, recipientSecretKey);
  return new HpkeRecipientContext(crypto, suite, keyScheduleCore(crypto, suite, sharedSecret, info));
}

// ---------------------------------------------------------------------------------------------
// Single-shot APIs (§6.1)

/**
 * SealBase(pkR, info, aad, pt) (§6.1): one message at sequence number 0.
 * Throws `crypto.bad_key` for a malformed or low-order recipient key.
 */
export function hpkeSeal(
  crypto: CryptoProvider,
  suite: HpkeSuite,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  random: Random,
): { enc: Uint8Array; ciphertext: Uint8Array } {
  const { enc, context } = setupBaseS(crypto, suite, recipientPublicKey, info, random);
  return { enc, ciphertext: context.seal(aad, plaintext) };
}

/**
 * OpenBase(enc, skR, info, aad, ct) (§6.1). Throws `crypto.bad_key` for a malformed enc or
 * secret key (or a low-order enc) and `crypto.decrypt_failed` when the ciphertext does not open.
 */
export function hpkeOpen(
  crypto: CryptoProvider,
  suite: HpkeSuite,
  recipientSecretKey: Uint8Array,
  enc: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array {
  return setupBaseR(crypto, suite, recipientSecretKey, enc, info).open(aad, ciphertext);
}
