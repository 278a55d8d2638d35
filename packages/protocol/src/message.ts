/**
 * Messages (spec §8).
 *
 * A message is encrypted under a key derived from the epoch secret and a random 16-byte nonce
 * (so the AEAD nonce itself can be fixed: every key is used once), then signed by the sender's
 * topic signature key. Encrypt-then-sign lets the server check every signature without any
 * key, and the epoch commitment (epoch.ts) makes the AEAD key committed: all members hold the
 * one secret the commitment names, so no ciphertext can open to two plaintexts for two members.
 *
 * The sender's view of the log ("head") is part of the signed bytes but not of the wire
 * encoding: the message carries `head_size`, and every verifier recomputes the root of its own
 * log at that size. A server that shows two members different histories cannot make a message
 * from one of them verify for the other (spec §8.4). This saves 32 bytes per message.
 */
import { RendezvousError } from './errors.ts';
import { Reader, Writer, decodeAll } from './encoding.ts';
import type { CryptoProvider, Random } from './crypto/provider.ts';
import { PROTOCOL_PREFIX, SignLabel, signWithLabel } from './sign.ts';
import { messageKey } from './epoch.ts';
import { fromUtf8 } from './bytes.ts';
import { decodeFileRef } from './file.ts';
import { HASH_SIZE, TOPIC_ID_SIZE, type Member, type TopicState } from './topic.ts';

export const MESSAGE_VERSION = 1;
export const MESSAGE_NONCE_SIZE = 16;
export const AEAD_TAG_SIZE = 16;
/** Spec §8.1: larger payloads are sent as files (§12). */
export const MAX_MESSAGE_CIPHERTEXT = 128 * 1024;

const ZERO_NONCE = new Uint8Array(12);

export interface Message {
  epoch: number;
  /** The sender's member id in the topic. */
  sender: number;
  /** Size of the log the sender had seen when it sent the message (≥ 1). */
  headSize: number;
  /** Random, unique per message; also the message's idempotency key (spec §8.5). */
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  signature: Uint8Array;
}

export type UnsignedMessage = Omit<Message, 'signature'>;

// ---------------------------------------------------------------------------------------------
// Encoding (spec §8.1)

function writeHeader(w: Writer, m: Omit<UnsignedMessage, 'ciphertext'>): void {
  w.u8(MESSAGE_VERSION).varint(m.epoch).varint(m.sender).varint(m.headSize).fixed(m.nonce, MESSAGE_NONCE_SIZE);
}

export function encodeMessage(m: Message): Uint8Array {
  const w = new Writer(m.ciphertext.length + 96);
  writeHeader(w, m);
  return w.bytes(m.ciphertext).fixed(m.signature, 64).finish();
}

export function readMessage(r: Reader): Message {
  if (r.u8() !== MESSAGE_VERSION) throw new RendezvousError('encoding.unknown_version');
  const epoch = r.varint();
  const sender = r.varint();
  const headSize = r.varint();
  const nonce = r.fixed(MESSAGE_NONCE_SIZE);
  const ciphertext = r.bytes(MAX_MESSAGE_CIPHERTEXT);
  if (ciphertext.length < AEAD_TAG_SIZE) throw new RendezvousError('encoding.bad_value', 'ciphertext shorter than its tag');
  if (headSize === 0) throw new RendezvousError('encoding.bad_value', 'head size is at least 1');
  return { epoch, sender, headSize, nonce, ciphertext, signature: r.fixed(64) };
}

export function decodeMessage(b: Uint8Array): Message {
  return decodeAll(b, readMessage);
}

/**
 * decodeMessage without copies: the same checks, in the same order, with the same errors, but
 * `nonce`, `ciphertext` and `signature` are views into `b` (valid while `b` is unchanged). For
 * a verifier that keeps `b` anyway (a client mirror holds every entry it accepted).
 */
export function decodeMessageView(b: Uint8Array): Message {
  const r = new Reader(b);
  if (r.u8() !== MESSAGE_VERSION) throw new RendezvousError('encoding.unknown_version');
  const epoch = r.varint();
  const sender = r.varint();
  const headSize = r.varint();
  let o = r.offset;
  const view = (n: number): Uint8Array => {
    if (b.length - o < n) throw new RendezvousError('encoding.truncated');
    o += n;
    return b.subarray(o - n, o);
  };
  const nonce = view(MESSAGE_NONCE_SIZE);
  const lr = new Reader(b.subarray(o));
  const n = lr.varint();
  o += lr.offset;
  if (n > MAX_MESSAGE_CIPHERTEXT) throw new RendezvousError('encoding.too_large');
  const ciphertext = view(n);
  if (ciphertext.length < AEAD_TAG_SIZE) throw new RendezvousError('encoding.bad_value', 'ciphertext shorter than its tag');
  if (headSize === 0) throw new RendezvousError('encoding.bad_value', 'head size is at least 1');
  const signature = view(64);
  if (o !== b.length) throw new RendezvousError('encoding.trailing_bytes');
  return { epoch, sender, headSize, nonce, ciphertext, signature };
}

/**
 * The AEAD associated data: everything the signature covers except the ciphertext.
 * struct { u8 version; opaque topic_id[16]; varint epoch; varint sender; varint head_size;
 *          opaque head_root[32]; opaque nonce[16]; }
 */
function messageAad(topicId: Uint8Array, m: Omit<UnsignedMessage, 'ciphertext'>, headRoot: Uint8Array): Uint8Array {
  return new Writer(96)
    .u8(MESSAGE_VERSION)
    .fixed(topicId, TOPIC_ID_SIZE)
    .varint(m.epoch)
    .varint(m.sender)
    .varint(m.headSize)
    .fixed(headRoot, HASH_SIZE)
    .fixed(m.nonce, MESSAGE_NONCE_SIZE)
    .finish();
}

/** The signed content: aad || ciphertext<V> (spec §8.3). */
export function messageTbs(topicId: Uint8Array, m: UnsignedMessage, headRoot: Uint8Array): Uint8Array {
  const aad = messageAad(topicId, m, headRoot);
  return new Writer(aad.length + m.ciphertext.length + 4).raw(aad).bytes(m.ciphertext).finish();
}

/** `opaque label<V>` of SignContent for messages (sign.ts signContent), encoded once. */
const MESSAGE_LABEL = new Writer(32).string(PROTOCOL_PREFIX + SignLabel.message).finish();

function varintLength(n: number): number {
  return n < 0x40 ? 1 : n < 0x4000 ? 2 : 4;
}

/** Writer.varint into `b` at `o` (QUIC shortest form, at most 30 bits); returns the new offset. */
function putVarint(b: Uint8Array, o: number, n: number): number {
  if (n < 0x40) {
    b[o] = n;
    return o + 1;
  }
  if (n < 0x4000) {
    b[o] = 0x40 | (n >>> 8);
    b[o + 1] = n & 0xff;
    return o + 2;
  }
  if (n > 0x3fffffff) throw new RendezvousError('encoding.bad_value', 'varint out of range');
  b[o] = 0x80 | (n >>> 24);
  b[o + 1] = (n >>> 16) & 0xff;
  b[o + 2] = (n >>> 8) & 0xff;
  b[o + 3] = n & 0xff;
  return o + 4;
}

function checkVarint(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 0x3fffffff) throw new RendezvousError('encoding.bad_value', 'varint out of range');
}

function checkFixed(b: Uint8Array, size: number): void {
  if (b.length !== size) throw new RendezvousError('encoding.bad_value', `expected ${size} bytes, got ${b.length}`);
}

/**
 * signContent(SignLabel.message, messageTbs(topicId, m, headRoot)), written into a buffer of
 * the exact length that `alloc` returns (the same checks as the Writer-based encoders).
 */
function writeSignedContent(topicId: Uint8Array, m: UnsignedMessage, headRoot: Uint8Array, alloc: (n: number) => Uint8Array): Uint8Array {
  checkFixed(topicId, TOPIC_ID_SIZE);
  checkVarint(m.epoch);
  checkVarint(m.sender);
  checkVarint(m.headSize);
  checkFixed(headRoot, HASH_SIZE);
  checkFixed(m.nonce, MESSAGE_NONCE_SIZE);
  const ct = m.ciphertext;
  const aadLength = 1 + TOPIC_ID_SIZE + varintLength(m.epoch) + varintLength(m.sender) + varintLength(m.headSize) + HASH_SIZE + MESSAGE_NONCE_SIZE;
  const contentLength = aadLength + varintLength(ct.length) + ct.length;
  checkVarint(contentLength);
  const out = alloc(MESSAGE_LABEL.length + varintLength(contentLength) + contentLength);
  out.set(MESSAGE_LABEL, 0);
  let o = putVarint(out, MESSAGE_LABEL.length, contentLength);
  // The AAD (messageAad), then ciphertext<V> (messageTbs).
  out[o++] = MESSAGE_VERSION;
  out.set(topicId, o);
  o = putVarint(out, o + TOPIC_ID_SIZE, m.epoch);
  o = putVarint(out, o, m.sender);
  o = putVarint(out, o, m.headSize);
  out.set(headRoot, o);
  out.set(m.nonce, o + HASH_SIZE);
  o = putVarint(out, o + HASH_SIZE + MESSAGE_NONCE_SIZE, ct.length);
  out.set(ct, o);
  return out;
}

/**
 * The exact bytes a message signature covers: signContent(SignLabel.message,
 * messageTbs(topicId, m, headRoot)) (spec §3.3, §8.3), built in one buffer instead of four.
 * What checkMessage verifies, and what a verifier that checks signatures ahead of time
 * (the client's parallel sync) must compute. A fresh array.
 */
export function messageSignedContent(topicId: Uint8Array, m: UnsignedMessage, headRoot: Uint8Array): Uint8Array {
  return writeSignedContent(topicId, m, headRoot, (n) => new Uint8Array(n));
}

/**
 * checkMessage's buffer for the signed bytes, reused: they are only read during the
 * (synchronous) ed25519Verify call, which keeps nothing of its input.
 */
let signedScratch = new Uint8Array(4096);
function signedScratchOf(n: number): Uint8Array {
  if (n > 256 * 1024) return new Uint8Array(n);
  if (signedScratch.length < n) signedScratch = new Uint8Array(Math.max(n, signedScratch.length * 2));
  return signedScratch.subarray(0, n);
}

// ---------------------------------------------------------------------------------------------
// Content (spec §8.2)

export type ContentType = 'text' | 'json' | 'file' | 'topic-info';
const CONTENT_CODE: Record<ContentType, number> = { text: 1, json: 2, file: 3, 'topic-info': 4 };
const CONTENT_BY_CODE: Record<number, ContentType> = { 1: 'text', 2: 'json', 3: 'file', 4: 'topic-info' };

export interface MessageContent {
  type: ContentType;
  body: Uint8Array;
}

/**
 * Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication
 * with PURBs", PETS 2019 §4): rounds a length up so that at most O(log log L) bits of it leak,
 * with at most 12% overhead.
 */
export function padme(length: number): number {
  if (length < 2) return length;
  const e = Math.floor(Math.log2(length));
  const s = Math.floor(Math.log2(e)) + 1;
  const lastBits = e - s;
  const mask = 2 ** lastBits - 1;
  return Math.floor((length + mask) / (mask + 1)) * (mask + 1);
}

function varintSize(n: number): number {
  return n < 64 ? 1 : n < 16384 ? 2 : 4;
}

/**
 * struct { u8 type; opaque body<V>; opaque padding<V>; } with an all-zero padding that brings
 * the encoding to `paddedLength` (default: Padmé of the unpadded length). Where the padding's
 * own length prefix makes the exact length impossible, the next possible length is used.
 */
export function encodeContent(c: MessageContent, paddedLength?: number): Uint8Array {
  const base = 1 + varintSize(c.body.length) + c.body.length;
  let target = Math.max(paddedLength ?? padme(base + 1), base + 1);
  for (;;) {
    for (const vl of [1, 2, 4]) {
      const pad = target - base - vl;
      if (pad >= 0 && varintSize(pad) === vl) {
        return new Writer(target).u8(CONTENT_CODE[c.type]).bytes(c.body).bytes(new Uint8Array(pad)).finish();
      }
    }
    target++;
  }
}

/**
 * Body rules per content type (spec §8.2): text is UTF-8; json and topic-info are UTF-8 JSON
 * (topic-info an object); file is an encoded FileRef.
 */
function checkBody(type: ContentType, body: Uint8Array): void {
  if (type === 'file') {
    decodeFileRef(body);
    return;
  }
  const text = fromUtf8(body);
  if (type === 'text') return;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RendezvousError('encoding.bad_value', `${type} body is not JSON`);
  }
  if (type === 'topic-info' && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    throw new RendezvousError('encoding.bad_value', 'topic-info body is not a JSON object');
  }
}

export function decodeContent(b: Uint8Array): MessageContent {
  return decodeAll(b, (r) => {
    const type = CONTENT_BY_CODE[r.u8()];
    if (type === undefined) throw new RendezvousError('encoding.bad_value', 'unknown content type');
    const body = r.bytes();
    const padding = r.bytes();
    if (!padding.every((x) => x === 0)) throw new RendezvousError('encoding.bad_value', 'padding must be zero');
    checkBody(type, body);
    return { type, body };
  });
}

// ---------------------------------------------------------------------------------------------
// Seal and open (spec §8.2–§8.3)

export interface SealMessageInput {
  topicId: Uint8Array;
  epoch: number;
  /** epoch_prk of the epoch (epoch.ts `epochPrk`). */
  epochPrk: Uint8Array;
  sender: number;
  signatureSeed: Uint8Array;
  headSize: number;
  headRoot: Uint8Array;
  content: MessageContent;
  paddedLength?: number;
}

export function sealMessage(crypto: CryptoProvider, random: Random, i: SealMessageInput): Message {
  const header = { epoch: i.epoch, sender: i.sender, headSize: i.headSize, nonce: random(MESSAGE_NONCE_SIZE) };
  const key = messageKey(crypto, i.epochPrk, header.nonce);
  const plaintext = encodeContent(i.content, i.paddedLength);
  const ciphertext = crypto.aeadSeal('chacha20-poly1305', key, ZERO_NONCE, messageAad(i.topicId, header, i.headRoot), plaintext);
  if (ciphertext.length > MAX_MESSAGE_CIPHERTEXT) throw new RendezvousError('encoding.too_large', 'message too large: send a file');
  const unsigned = { ...header, ciphertext };
  const signature = signWithLabel(crypto, i.signatureSeed, SignLabel.message, messageTbs(i.topicId, unsigned, i.headRoot));
  return { ...unsigned, signature };
}

/** Decrypts a message that `checkMessage` has accepted. Throws `crypto.decrypt_failed`. */
export function openMessage(
  crypto: CryptoProvider,
  topicId: Uint8Array,
  epochPrk: Uint8Array,
  m: Message,
  headRoot: Uint8Array,
): MessageContent {
  const key = messageKey(crypto, epochPrk, m.nonce);
  const plaintext = crypto.aeadOpen('chacha20-poly1305', key, ZERO_NONCE, messageAad(topicId, m, headRoot), m.ciphertext);
  return decodeContent(plaintext);
}

// ---------------------------------------------------------------------------------------------
// Validation (spec §8.4), shared by the server (before it appends) and every client (on receipt)

export interface MessageContext {
  /** Size of the log the message is checked against (entries before the message's position). */
  logSize: number;
  /** Root of that log at `size` (1 ≤ size ≤ logSize). */
  rootAt(size: number): Uint8Array;
  /**
   * Log size just after the update that started the current epoch: a sender must have seen
   * that update to hold the epoch secret, so head_size is at least this.
   */
  epochStartSize: number;
  /** Whether a message with this nonce is already in the topic. */
  seen?(nonce: Uint8Array): boolean;
}

/**
 * Validates `m` against the topic state at its position and returns the sending member.
 * Throws the code of the first MUST-reject rule broken (spec §8.4 lists them in this order).
 */
export function checkMessage(crypto: CryptoProvider, state: TopicState, topicId: Uint8Array, m: Message, ctx: MessageContext): Member {
  const sender = state.members.get(m.sender);
  if (sender === undefined) throw new RendezvousError('topic.not_member', 'sender is not a member');
  if (sender.role === 'observer') throw new RendezvousError('topic.read_only', 'observers cannot post');
  if (m.epoch < state.epoch) throw new RendezvousError('topic.stale_epoch', `epoch ${m.epoch} is over; current is ${state.epoch}`);
  if (m.epoch > state.epoch) throw new RendezvousError('topic.bad_epoch', 'message is for an epoch that has not started');
  if (m.headSize < ctx.epochStartSize || m.headSize > ctx.logSize) {
    throw new RendezvousError('log.bad_head', `head size ${m.headSize} is outside [${ctx.epochStartSize}, ${ctx.logSize}]`);
  }
  if (ctx.seen?.(m.nonce)) throw new RendezvousError('topic.replay', 'a message with this nonce is already in the topic');
  // = verifyWithLabel(crypto, key, SignLabel.message, messageTbs(topicId, m, root), signature)
  const signed = writeSignedContent(topicId, m, ctx.rootAt(m.headSize), signedScratchOf);
  if (!crypto.ed25519Verify(sender.topicKey.signatureKey, signed, m.signature)) {
    // Either a forgery or a log that differs from the sender's at head_size; both are
    // rejected the same way because the verifier cannot tell them apart (spec §8.4).
    throw new RendezvousError('crypto.bad_signature', 'message signature does not verify against this log');
  }
  return sender;
}
