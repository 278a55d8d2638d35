/**
 * Files (protocol §12, docs/server.md §Files): send a file to a topic and fetch one, streamed in
 * 64 KiB STREAM chunks both ways, never held whole in memory. Isomorphic: web streams only.
 *
 * Sending. A file is sealed under a fresh random key; the blob id is SHA-256 of the whole
 * ciphertext and is part of the upload's URL, so it must be known before the first byte goes
 * out. The sender makes TWO passes over the source: the first seals and hashes (and keeps
 * nothing), the second seals again and uploads. STREAM nonces are the chunk counter and the last
 * flag, so the same key and chunking give the same ciphertext both times; the second pass hashes
 * again and fails the upload if the source changed between the passes. That is why the source is
 * a factory (`() => ReadableStream`, called once per pass, twice in all) or bytes, and not one
 * stream: a single stream could only be read twice by buffering it whole (or spooling it to
 * disk, which a browser does not have). The cost is reading and sealing twice (ChaCha20 and
 * SHA-256 are fast next to the network); the gain is memory bounded by a few chunks.
 *
 * Fetching. The blob streams in and is checked as it goes: its length against the FileRef's
 * size, every chunk opened with its counter and last flag (the AEAD proves each chunk came from
 * someone holding the key — not the server — and at its position, so truncation, reordering
 * and extension are caught), and SHA-256 of the whole blob against the blob id at the end.
 * Plaintext reaches the sink chunk by chunk BEFORE the end, so protocol §12's "check the blob
 * before decrypting anything" holds only for the completed transfer: until `fetchFile`
 * resolves, what the sink received is an authentic PREFIX that may never be completed. If
 * `fetchFile` rejects, the caller MUST discard the partial output (a WritableStream sink is
 * aborted, so it can; the CLI writes to a temporary file and renames it only on success).
 * Without a sink, the bytes are returned only after every check has passed.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import {
  FILE_CHUNK_SIZE,
  FILE_KEY_SIZE,
  FILE_TAG_SIZE,
  MAX_FILE_SIZE,
  RendezvousError,
  chunkCount,
  decodeFileRef,
  encodeFileRef,
  encryptedFileSize,
  equal,
  fromBase64url,
  isRendezvousError,
  openFileChunk,
  sealFileChunk,
  toBase64url,
  utf8,
  type CryptoProvider,
  type FileRef,
  type Random,
} from '@rendezvous/protocol';
import type { RendezvousClient, TopicMessage } from './client.ts';

/** The plaintext of a file to send: bytes, or a factory of streams of the same bytes (called twice). */
export type FileSource = Uint8Array | (() => ReadableStream<Uint8Array> | Promise<ReadableStream<Uint8Array>>);

/**
 * Progress of a transfer. `hashing`: the first pass of a send (plaintext bytes sealed and
 * hashed, of `size`); `uploading`: encrypted bytes sent; `downloading`: encrypted bytes received.
 * Within a phase `bytes` only grows, and the phase's last report has `bytes === total`.
 */
export interface FileProgress {
  phase: 'hashing' | 'uploading' | 'downloading';
  bytes: number;
  total: number;
}

export interface FetchFileOptions {
  onProgress?(p: FileProgress): void;
  signal?: AbortSignal;
  /**
   * The crypto provider; default: the one the client was made with.
   */
  crypto?: CryptoProvider;
}

export interface SendFileOptions extends FetchFileOptions {
  /** The file's name as the recipients see it (UTF-8, ≤ 1024 bytes). */
  name: string;
  /** Default `application/octet-stream` (UTF-8, ≤ 255 bytes). */
  mediaType?: string;
  /** Plaintext byte count; required for a stream source, which must yield exactly this many bytes. */
  size?: number;
  /** Randomness for the file key (default: the platform CSPRNG). */
  random?: Random;
}

/** What a FileRef says, without its key (the key stays inside the encrypted message). */
export interface FileSummary {
  name: string;
  mediaType: string;
  /** Plaintext bytes. */
  size: number;
  /** Bytes of the encrypted blob: size + 16 per chunk. */
  encryptedSize: number;
  /** Unpadded base64url of SHA-256 of the blob, as in the blob's URL. */
  blobId: string;
}

export interface SentFile extends FileSummary {
  /** The log index of the `file` message; null while it is pending (see `pending`). */
  index: number | null;
  /** The home server queued the file message for the topic's unreachable host (SendResult). */
  pending?: true;
  /** False if the topic already had this blob (the server stores it once). */
  created: boolean;
}

export interface FileEntry extends FileSummary {
  index: number;
  sender: string | null;
  timestamp: number;
}

/**
 * Where fetched plaintext goes, chunk by chunk, in order. A WritableStream is closed after the
 * last chunk once everything checked out, and aborted (with the error) otherwise. A callback gets
 * no such signal: the rejection of fetchFile is the signal to throw away what it was given.
 */
export type FileSink = WritableStream<Uint8Array> | ((chunk: Uint8Array) => void | Promise<void>);

export interface FetchedFile extends FileEntry {
  /** The whole plaintext, when fetchFile was called without a sink. */
  data?: Uint8Array;
}

const SEALED_CHUNK = FILE_CHUNK_SIZE + FILE_TAG_SIZE;
const UPLOAD_ATTEMPTS = 3;
const DEFAULT_MEDIA_TYPE = 'application/octet-stream';

// ---- sending ------------------------------------------------------------------------------------

/**
 * Seals `source` under a fresh key, uploads the blob to the topic, and posts a `file` message
 * carrying its FileRef (protocol §12). Streams: memory stays at a few 64 KiB chunks whatever the
 * size. Observers are refused (`topic.read_only`) before anything is read or sent.
 */
export async function sendFile(client: RendezvousClient, topic: string, source: FileSource, o: SendFileOptions): Promise<SentFile> {
  const crypto = o.crypto ?? client.cryptoProvider;
  const mediaType = o.mediaType ?? DEFAULT_MEDIA_TYPE;
  let open: () => Promise<ReadableStream<Uint8Array>>;
  let size: number;
  if (source instanceof Uint8Array) {
    if (o.size !== undefined && o.size !== source.length) throw badArg('size', `the length of the bytes given (${source.length})`);
    size = source.length;
    open = async () => bytesStream(source);
  } else if (typeof source === 'function') {
    if (o.size === undefined) throw badArg('size', 'the byte count of a stream source');
    size = o.size;
    open = async () => source();
  } else {
    throw new TypeError('sendFile: pass the bytes, or a function returning a new ReadableStream of them (it is read twice: to hash, then to upload)');
  }
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) throw badArg('size', `an integer in [0, 2^40]`);
  if (utf8(o.name).length > 1024) throw new RendezvousError('encoding.too_large', 'file name over 1024 bytes');
  if (utf8(mediaType).length > 255) throw new RendezvousError('encoding.too_large', 'media type over 255 bytes');

  const topicId = fromBase64url(topic);
  await postable(client, topic);

  const key = (o.random ?? ((n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n))))(FILE_KEY_SIZE);
  const encryptedSize = encryptedFileSize(size);

  // Pass 1: seal and hash, keep nothing.
  const h = sha256.create();
  let hashed = 0;
  for await (const sealed of sealedChunks(crypto, key, open, size, o.signal)) {
    h.update(sealed);
    hashed += sealed.length - FILE_TAG_SIZE;
    o.onProgress?.({ phase: 'hashing', bytes: hashed, total: size });
  }
  const blobId = h.digest();

  // Pass 2: seal again and upload; the same key and chunking give the same bytes.
  let sent = 0;
  const progress = (n: number) => {
    if (n <= sent) return; // a retried upload counts from 0 again: report only new ground
    sent = n;
    o.onProgress?.({ phase: 'uploading', bytes: n, total: encryptedSize });
  };
  let created = false;
  for (let attempt = 1; ; attempt++) {
    let failure: unknown;
    const body = uploadBody(crypto, key, open, size, blobId, o.signal, (e) => (failure ??= e));
    try {
      const r = await client.withSession(() => client.api.uploadBlob(topicId, blobId, body(), { size: encryptedSize, onProgress: progress, signal: o.signal }));
      created = r.created;
      break;
    } catch (e) {
      // The source's own failure (changed, shorter, longer) is the real cause, not the transport's.
      if (failure !== undefined) throw failure;
      if (o.signal?.aborted || attempt >= UPLOAD_ATTEMPTS || !isRendezvousError(e, 'server.unavailable')) throw e;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }

  const ref: FileRef = { blobId, key, size, mediaType, name: o.name };
  const r = await client.postContent(topic, { type: 'file', body: encodeFileRef(ref) });
  return { index: r.index, ...(r.pending === true && { pending: true as const }), created, ...summary(ref) };
}

/** The upload body of pass 2: a fresh stream per attempt, checked against pass 1's blob id. */
function uploadBody(
  crypto: CryptoProvider,
  key: Uint8Array,
  open: () => Promise<ReadableStream<Uint8Array>>,
  size: number,
  blobId: Uint8Array,
  signal: AbortSignal | undefined,
  fail: (e: unknown) => void,
): () => ReadableStream<Uint8Array> {
  return () => {
    const chunks = sealedChunks(crypto, key, open, size, signal);
    const h = sha256.create();
    return new ReadableStream<Uint8Array>(
      {
        async pull(c) {
          try {
            const r = await chunks.next();
            if (r.done) {
              if (!equal(h.digest(), blobId)) {
                throw new RendezvousError('file.bad_blob', 'the file changed while it was being sent (its second reading differs from the first)');
              }
              return c.close();
            }
            h.update(r.value);
            c.enqueue(r.value);
          } catch (e) {
            fail(e);
            throw e;
          }
        },
        async cancel() {
          await chunks.return(undefined);
        },
      },
      { highWaterMark: 0 },
    );
  };
}

/**
 * The sealed chunks of a source of exactly `size` bytes, read lazily: one source read at a time,
 * as the consumer asks. A source that ends early or runs over `size` is an error.
 */
async function* sealedChunks(
  crypto: CryptoProvider,
  key: Uint8Array,
  open: () => Promise<ReadableStream<Uint8Array>>,
  size: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array, void, undefined> {
  const reader = (await open()).getReader();
  const n = chunkCount(size);
  let cur: Uint8Array = new Uint8Array(0);
  let at = 0;
  let read = 0;
  const next = async (): Promise<boolean> => {
    signal?.throwIfAborted();
    const r = await reader.read();
    if (r.done) return false;
    if (!(r.value instanceof Uint8Array)) throw new TypeError('sendFile: the source stream must yield Uint8Array chunks');
    cur = r.value;
    at = 0;
    read += cur.length;
    if (read > size) throw badArg('size', `the source's length: it has more than ${size} bytes`);
    return true;
  };
  try {
    for (let i = 0; i < n; i++) {
      const len = Math.min(FILE_CHUNK_SIZE, size - i * FILE_CHUNK_SIZE);
      const chunk = new Uint8Array(len);
      for (let fill = 0; fill < len; ) {
        if (at === cur.length && !(await next())) throw badArg('size', `the source's length: it ended after ${read} of ${size} bytes`);
        const take = Math.min(len - fill, cur.length - at);
        chunk.set(cur.subarray(at, at + take), fill);
        fill += take;
        at += take;
      }
      const last = i === n - 1;
      if (last) while (await next()); // the source must end here (next() throws on a byte more)
      yield sealFileChunk(crypto, key, i, last, chunk);
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** Refuses early what the server would refuse after the first pass: not a member, or an observer. */
async function postable(client: RendezvousClient, topic: string): Promise<void> {
  let known = true;
  try {
    client.topic(topic);
  } catch (e) {
    if (!isRendezvousError(e, 'topic.unknown')) throw e;
    known = false;
  }
  if (known) await client.withSession(() => client.syncTopic(fromBase64url(topic)));
  else await client.sync();
  const t = client.topic(topic);
  if (t.role === null) throw new RendezvousError('topic.not_member', 'not a member of this topic');
  if (t.role === 'observer') throw new RendezvousError('topic.read_only', 'observers cannot post');
}

// ---- fetching -----------------------------------------------------------------------------------

/** The file message at `index` (synced first if this device has not seen it yet), without its key. */
export async function fileInfo(client: RendezvousClient, topic: string, index: number): Promise<FileEntry> {
  const { ref, entry } = await lookup(client, topic, index);
  return { ...entry, ...summary(ref) };
}

/**
 * Downloads, checks and decrypts the file shared by the message at `index`, writing the
 * plaintext to `sink` chunk by chunk (or returning it whole, after all checks, without a sink).
 *
 * Failures: a blob of the wrong length or hash is `file.bad_blob` (the server's fault); a blob
 * that is the one the sender uploaded but does not open is `crypto.decrypt_failed` (the
 * sender's). A chunk that fails to open stops the output, and the rest of the blob is still
 * hashed so the error names the right culprit. On ANY rejection the sink has received only part
 * of the file, or a WritableStream sink was aborted: the caller must not use that output.
 */
export async function fetchFile(client: RendezvousClient, topic: string, index: number, sink?: FileSink, o: FetchFileOptions = {}): Promise<FetchedFile> {
  const crypto = o.crypto ?? client.cryptoProvider;
  const { ref, entry } = await lookup(client, topic, index);
  const topicId = fromBase64url(topic);
  const total = encryptedFileSize(ref.size);

  const parts: Uint8Array[] = [];
  let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  let write: (c: Uint8Array) => void | Promise<void>;
  if (sink === undefined) write = (c) => void parts.push(c);
  else if (typeof sink === 'function') write = sink;
  else {
    const w = sink.getWriter();
    writer = w;
    write = async (c) => {
      await w.ready;
      await w.write(c);
    };
  }

  try {
    const { stream } = await client.withSession(() =>
      client.api.downloadBlob(topicId, ref.blobId, {
        expectedSize: total,
        signal: o.signal,
        onProgress: (n) => o.onProgress?.({ phase: 'downloading', bytes: n, total }),
      }),
    );
    const reader = stream.getReader();
    const h = sha256.create();
    const n = chunkCount(ref.size);
    let counter = 0;
    let received = 0;
    let sealed = new Uint8Array(sealedLength(ref.size, 0));
    let fill = 0;
    let opening: unknown; // the first chunk that did not open: output stops, hashing goes on
    try {
      for (;;) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          // More or fewer bytes than the length the FileRef implies.
          if (isRendezvousError(e, 'encoding.bad_value')) throw new RendezvousError('file.bad_blob', `blob does not match its file reference: ${e.message}`);
          throw e;
        }
        if (r.done) break;
        const piece = r.value;
        received += piece.length;
        h.update(piece);
        for (let at = 0; at < piece.length; ) {
          if (counter >= n) throw new RendezvousError('file.bad_blob', 'blob is longer than its file reference says');
          const take = Math.min(sealed.length - fill, piece.length - at);
          sealed.set(piece.subarray(at, at + take), fill);
          fill += take;
          at += take;
          if (fill < sealed.length) continue;
          if (opening === undefined) {
            let plain: Uint8Array | undefined;
            try {
              plain = openFileChunk(crypto, ref.key, counter, counter === n - 1, sealed);
            } catch (e) {
              opening = e;
            }
            if (plain !== undefined && plain.length > 0) await write(plain);
          }
          counter++;
          if (counter < n) sealed = new Uint8Array(sealedLength(ref.size, counter));
          fill = 0;
        }
      }
    } finally {
      await reader.cancel().catch(() => undefined);
    }
    if (received !== total || counter !== n || fill !== 0) throw new RendezvousError('file.bad_blob', `blob is ${received} bytes, its file reference says ${total}`);
    if (!equal(h.digest(), ref.blobId)) throw new RendezvousError('file.bad_blob', 'blob does not match its file reference (SHA-256)');
    if (opening !== undefined) throw opening;
    await writer?.close();
  } catch (e) {
    await writer?.abort(e).catch(() => undefined);
    throw e;
  }
  const out: FetchedFile = { ...entry, ...summary(ref) };
  if (sink === undefined) out.data = concat(parts, ref.size);
  return out;
}

/** Finds the decrypted `file` message at `index` and decodes its FileRef. */
async function lookup(client: RendezvousClient, topic: string, index: number): Promise<{ ref: FileRef; entry: { index: number; sender: string | null; timestamp: number } }> {
  if (!Number.isSafeInteger(index) || index < 0) throw badArg('index', 'an entry index ≥ 0');
  const find = (): TopicMessage | 'not-message' | undefined => {
    try {
      return client.messages(topic, index).find((m) => m.index === index) ?? (client.topic(topic).size > index ? 'not-message' : undefined);
    } catch (e) {
      if (isRendezvousError(e, 'topic.unknown')) return undefined;
      throw e;
    }
  };
  let m = find();
  if (m === undefined) {
    await client.sync();
    m = find();
  }
  if (m === undefined) throw badArg('index', `an entry of the topic: it has no entry ${index}`);
  if (m === 'not-message') throw badArg('index', `a file message: entry ${index} is a topic update`);
  if (m.rejected !== null) throw badArg('index', `a file message: entry ${index} was dropped (${m.rejected})`);
  if (m.body === null || m.type === null) throw badArg('index', `a message this device can read: entry ${index} is from before it joined`);
  if (m.type !== 'file') throw badArg('index', `a file message: entry ${index} is a ${m.type} message`);
  return { ref: decodeFileRef(m.body), entry: { index: m.index, sender: m.sender, timestamp: m.timestamp } };
}

// ---- helpers ------------------------------------------------------------------------------------

function summary(ref: FileRef): FileSummary {
  return { name: ref.name, mediaType: ref.mediaType, size: ref.size, encryptedSize: encryptedFileSize(ref.size), blobId: toBase64url(ref.blobId) };
}

/** Length of sealed chunk `i` of a `size`-byte file. */
function sealedLength(size: number, i: number): number {
  return Math.min(FILE_CHUNK_SIZE, size - i * FILE_CHUNK_SIZE) + FILE_TAG_SIZE;
}

function bytesStream(b: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(c) {
        if (at >= b.length) return c.close();
        c.enqueue(b.subarray(at, Math.min(b.length, at + FILE_CHUNK_SIZE)));
        at += FILE_CHUNK_SIZE;
      },
    },
    { highWaterMark: 0 },
  );
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  parts.reduce((at, c) => (out.set(c, at), at + c.length), 0);
  return out;
}

function badArg(field: string, what: string): RendezvousError {
  return new RendezvousError('request.bad_field', `${field}: expected ${what}`, { field });
}
