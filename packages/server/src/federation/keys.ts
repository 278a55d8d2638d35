/**
 * This server's own key list (protocol §17.1): every server key it has used, oldest first,
 * each after the first endorsed by its predecessor. The list lives in the store (meta
 * `server_keys`, JSON `[{publicKey, createdAt, endorsement|null}]`, base64url); the current
 * seed stays in `<dataDir>/server.key` (or RENDEZVOUS_SERVER_KEY) and MUST be the list's last.
 *
 * Rotation is crash-safe: the new seed is written to `server.key.next` (fsync), then appended
 * to the list, then renamed over `server.key` (fsync of the directory). A start that finds
 * `server.key.next` finishes the rename if its key made it into the list, and drops it if not.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  RendezvousError,
  endorseServerKey,
  equal,
  fromBase64url,
  serverKeyId,
  toBase64url,
  type CryptoProvider,
  type PublishedServerKey,
} from '@rendezvous/protocol';
import type { Context } from '../context.ts';
import type { Store } from '../storage/store.ts';

export const SERVER_KEYS_META = 'server_keys';

/** Where the current server seed comes from: only a key file can be rotated. */
export type ServerKeySource = { kind: 'file'; path: string } | { kind: 'env' } | { kind: 'memory' };

interface StoredKey {
  publicKey: string;
  createdAt: number;
  endorsement: string | null;
}

function parse(json: string): PublishedServerKey[] {
  const list = JSON.parse(json) as StoredKey[];
  return list.map((k) => ({
    publicKey: fromBase64url(k.publicKey),
    createdAt: k.createdAt,
    endorsement: k.endorsement === null ? null : fromBase64url(k.endorsement),
  }));
}

function serialize(keys: readonly PublishedServerKey[]): string {
  return JSON.stringify(
    keys.map((k) => ({ publicKey: toBase64url(k.publicKey), createdAt: k.createdAt, endorsement: k.endorsement === null ? null : toBase64url(k.endorsement) })),
  );
}

async function readList(store: Store): Promise<PublishedServerKey[]> {
  const json = await store.getMeta(SERVER_KEYS_META);
  return json === null ? [] : parse(json);
}

/**
 * This server's key list, oldest first. A context that never ran `initServerKeys` (an
 * in-process test server) gets its list started with the current key on first use.
 */
export async function ownServerKeys(ctx: Context): Promise<PublishedServerKey[]> {
  const list = await readList(ctx.store);
  if (list.length > 0) return list;
  const first = [{ publicKey: ctx.serverKey, createdAt: ctx.now(), endorsement: null }];
  await ctx.store.setMeta(SERVER_KEYS_META, serialize(first));
  return first;
}

/** The list as `/.well-known/rendezvous` publishes it. */
export async function publishedKeysJson(ctx: Context) {
  return (await ownServerKeys(ctx)).map((k) => ({
    publicKey: toBase64url(k.publicKey),
    keyId: toBase64url(serverKeyId(ctx.crypto, k.publicKey)),
    createdAt: k.createdAt,
    endorsement: k.endorsement === null ? null : toBase64url(k.endorsement),
  }));
}

/**
 * At start: an empty list is started with the current key; otherwise the current key MUST be
 * the newest of the list. Anything else means `server.key` is not the key this server last
 * published, and signing with it would make the server a stranger to its peers.
 */
export async function initServerKeys(ctx: Context): Promise<void> {
  const list = await readList(ctx.store);
  if (list.length === 0) {
    await ownServerKeys(ctx);
    return;
  }
  const at = list.findIndex((k) => equal(k.publicKey, ctx.serverKey));
  const where = ctx.serverKeySource.kind === 'env' ? 'RENDEZVOUS_SERVER_KEY' : 'server.key';
  if (at < 0) {
    throw new Error(
      `${where} is not a key this server ever published (it has ${list.length}): other servers would refuse it. ` +
        `Restore the newest server.key from a backup; to change the key, rotate it with \`rendezvous admin rotate-server-key\` instead of replacing the file`,
    );
  }
  if (at !== list.length - 1) {
    throw new Error(
      `${where} holds an older key of this server (key ${at + 1} of ${list.length}): it was rotated since. ` + 'Restore the newest server.key from a backup',
    );
  }
}

/**
 * Before the key file is read: finishes a rotation that stopped between appending the new key
 * to the list and renaming `server.key.next` over `server.key`, or drops a `server.key.next`
 * whose key never reached the list.
 */
export async function finishInterruptedRotation(dataDir: string, store: Store, crypto: CryptoProvider): Promise<void> {
  const next = join(dataDir, 'server.key.next');
  if (!existsSync(next)) return;
  let seed: Uint8Array | null = null;
  try {
    seed = fromBase64url(readFileSync(next, 'utf8').trim());
  } catch {
    seed = null;
  }
  const list = await readList(store);
  const last = list.at(-1);
  if (seed !== null && seed.length === 32 && last !== undefined && equal(crypto.ed25519PublicKey(seed), last.publicKey)) {
    renameSync(next, join(dataDir, 'server.key'));
    fsyncDir(dataDir);
  } else {
    rmSync(next, { force: true });
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeSynced(path: string, text: string): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

let rotating: Promise<unknown> = Promise.resolve();

/**
 * Rotates the server key (POST /v1/admin/server-key/rotate): a new seed, endorsed by the
 * current one, appended to the list and made current. Refused for a key given in the
 * environment (the operator would have to change it there: it cannot be rewritten from here).
 * A context without a key file (in-process tests) rotates in memory and in the store only.
 */
export function rotateServerKey(ctx: Context): Promise<{ publicKey: Uint8Array; createdAt: number }> {
  const run = rotating.then(async () => {
    const source = ctx.serverKeySource;
    if (source.kind === 'env') {
      throw new RendezvousError(
        'request.bad_field',
        'the server key comes from RENDEZVOUS_SERVER_KEY and cannot be rotated by the server: keep a key file (unset the variable) to rotate',
      );
    }
    const list = await ownServerKeys(ctx);
    const seed = new Uint8Array(randomBytes(32));
    const publicKey = ctx.crypto.ed25519PublicKey(seed);
    const createdAt = Math.max(ctx.now(), (list.at(-1)?.createdAt ?? 0) + 1);
    const endorsement = endorseServerKey(ctx.crypto, ctx.serverSeed, ctx.name, { publicKey, createdAt });
    const next = source.kind === 'file' ? join(dirname(source.path), 'server.key.next') : null;
    if (next !== null) writeSynced(next, toBase64url(seed) + '\n');
    await ctx.store.setMeta(SERVER_KEYS_META, serialize([...list, { publicKey, createdAt, endorsement }]));
    if (source.kind === 'file' && next !== null) {
      renameSync(next, source.path);
      fsyncDir(dirname(source.path));
    }
    ctx.serverSeed = seed;
    ctx.serverKey = publicKey;
    ctx.log.warn({ keyId: toBase64url(serverKeyId(ctx.crypto, publicKey)), keys: list.length + 1 }, 'server key rotated');
    return { publicKey, createdAt };
  });
  rotating = run.catch(() => undefined);
  return run;
}
