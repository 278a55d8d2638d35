/**
 * The user commands of `rendezvous` (README §Using it), on the client SDK. Every command opens
 * the profile (`--profile DIR`, default $RENDEZVOUS_PROFILE or ~/.rendezvous/profile) under its
 * lock, does its work, saves, and prints a human line or, with `--json`, one JSON document.
 * Errors print their stable code and what to do next; the exit code is 1 (2 for usage).
 */
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline/promises';
import { createReadStream, existsSync, statSync, unlinkSync } from 'node:fs';
import { link, open, rename, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { RendezvousError, decodeFileRef, isRendezvousError, type Role } from '@rendezvous/protocol';
import type { FileProgress } from '@rendezvous/client';

export class UsageError extends Error {}

export const USER_USAGE = `user commands (global: --profile DIR, --json):
  rendezvous register <name> --server URL --pin PIN [--passphrase]   create your identity and this device
  rendezvous whoami                                                  who and where this profile is
  rendezvous topic create <title> [--member user[:admin|participant|observer]]... [--backward-secrecy]
  rendezvous topic list | show <topic>
  rendezvous topic add <topic> <user> [--role R] | remove <topic> <user> | role <topic> <user> <role> | leave <topic>
  rendezvous send <topic> <text>                                     post a message
  rendezvous send <topic> --file PATH                                share a file (encrypted, streamed)
  rendezvous fetch-file <topic> <entry> [--out PATH] [--force]       download, verify and decrypt a file
  rendezvous read <topic> [--from N]                                 show the messages (verified)
  rendezvous sync                                                    fetch and verify everything new
  rendezvous verify <topic>                                          re-verify the whole log, print the head
  rendezvous contacts | safety-number <user>                         pinned identities
  rendezvous device link                                             show a code (and QR) for a new device, wait for it
  rendezvous device join <code> [--server URL]                       make this profile a new device of that account
  rendezvous device list | remove <id>
  rendezvous watch                                                   print messages live as they arrive
  rendezvous profile passphrase                                      set, change or remove the profile's passphrase
  rendezvous push providers | list | remove <id>                     this device's push subscriptions
  rendezvous push subscribe --endpoint URL --p256dh K --auth A | --apns TOKEN | --fcm TOKEN

  <topic> is a topic id or its title. The profile is encrypted with a passphrase when one is
  given (--passphrase prompts; or set RENDEZVOUS_PASSPHRASE for scripts).`;

const ROLES = new Set(['admin', 'participant', 'observer']);

interface Ctx {
  json: boolean;
  out(human: string, data: unknown): void;
}

async function prompt(question: string): Promise<string> {
  if (!process.stdin.isTTY) {
    const v = /new/.test(question) ? 'RENDEZVOUS_NEW_PASSPHRASE' : 'RENDEZVOUS_PASSPHRASE';
    throw new Error(`no terminal to ask for the ${question.replace(/:\s*$/, '')}: set ${v}`);
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

/** Opens the profile's store: encrypted when the profile is (or, for `register`, when asked). */
async function profileStore(dir: string, opts: { create?: boolean; passphrase?: boolean } = {}) {
  const { FileProfileStore } = await import('@rendezvous/client/node');
  const { openProfileStore, isEncryptedProfile } = await import('@rendezvous/client');
  const { store: file, tightened } = await FileProfileStore.open(dir);
  if (tightened.length > 0) console.error(`rendezvous: warning: tightened permissions of ${tightened.join(', ')}: others may have read them`);
  const existing = await file.load();
  let passphrase = process.env.RENDEZVOUS_PASSPHRASE;
  if (existing !== null && isEncryptedProfile(existing) && passphrase === undefined) passphrase = await prompt('profile passphrase: ');
  if (opts.create && opts.passphrase && passphrase === undefined) {
    passphrase = await prompt('new profile passphrase: ');
    if ((await prompt('again: ')) !== passphrase) throw new Error('the passphrases differ; nothing was created');
  }
  if (existing !== null && !isEncryptedProfile(existing)) passphrase = undefined;
  return { file, store: openProfileStore(file, passphrase === '' ? undefined : passphrase) };
}

/**
 * Topic ids are base64url and may start with '-', which parseArgs would read as an option: such
 * an argument (a single dash and then no option name) is held aside and put back as positional.
 */
function shieldDashIds(args: string[]): { args: string[]; restore: (p: string[]) => string[] } {
  const held: string[] = [];
  const out = args.map((a) => (/^-[A-Za-z0-9_][A-Za-z0-9_-]*$/.test(a) ? `\u0000${held.push(a) - 1}` : a));
  return { args: out, restore: (p) => p.map((x) => (x.startsWith('\u0000') ? held[Number(x.slice(1))]! : x)) };
}

export async function userCommand(command: string, rawArgs: string[]): Promise<number> {
  const shielded = shieldDashIds(rawArgs);
  const parsed = parseArgs({
    args: shielded.args,
    allowPositionals: true,
    strict: true,
    options: {
      profile: { type: 'string' },
      json: { type: 'boolean' },
      server: { type: 'string' },
      pin: { type: 'string' },
      passphrase: { type: 'boolean' },
      member: { type: 'string', multiple: true },
      'backward-secrecy': { type: 'boolean' },
      role: { type: 'string' },
      from: { type: 'string' },
      file: { type: 'string' },
      out: { type: 'string' },
      force: { type: 'boolean' },
      endpoint: { type: 'string' },
      p256dh: { type: 'string' },
      auth: { type: 'string' },
      apns: { type: 'string' },
      fcm: { type: 'string' },
    },
  });
  const values = parsed.values;
  const positionals = shielded.restore(parsed.positionals);
  const { defaultProfileDir } = await import('@rendezvous/client/node');
  const dir = values.profile ?? defaultProfileDir();
  const ctx: Ctx = {
    json: values.json === true,
    out(human, data) {
      console.log(this.json ? JSON.stringify(data, null, 2) : human);
    },
  };
  const { RendezvousClient } = await import('@rendezvous/client');
  const { nodeCrypto } = await import('@rendezvous/protocol/crypto/node');
  const { NodeWebSocket, sharedVerifyPool } = await import('@rendezvous/client/node');
  // Long syncs verify message signatures on every core (docs/client.md). The worker threads
  // start only when a page brings a batch worth them: a command that syncs a few entries
  // verifies them inline and starts none.
  let poolStarted = false;
  const signatureVerifier = {
    threads: 2,
    verifyBatch(triples: readonly { publicKey: Uint8Array; message: Uint8Array; signature: Uint8Array }[]): Promise<boolean[]> {
      if (!poolStarted && triples.length < 32) return Promise.reject(new Error('a small batch: verified inline'));
      poolStarted = true;
      return sharedVerifyPool().verifyBatch(triples);
    },
  };

  if (command === 'register') {
    const name = positionals[0];
    if (!name || !values.server || !values.pin) throw new UsageError('register needs <name> --server URL --pin PIN');
    const { file, store } = await profileStore(dir, { create: true, passphrase: values.passphrase === true });
    return file.withLock(async () => {
      const c = await RendezvousClient.register({ store, crypto: nodeCrypto, WebSocket: NodeWebSocket, signatureVerifier, server: values.server!, user: name, pin: values.pin! });
      ctx.out(`registered ${c.user} (device ${c.deviceId}) on ${c.serverUrl}; profile in ${dir}`, { user: c.user, deviceId: c.deviceId, server: c.serverUrl, profile: dir });
      return 0;
    });
  }

  if (command === 'device' && positionals[0] === 'join') {
    const code = positionals[1];
    if (!code) throw new UsageError('device join needs <code> (from `rendezvous device link` on your other device)');
    const { file, store } = await profileStore(dir, { create: true, passphrase: values.passphrase === true });
    return file.withLock(async () => {
      const c = await RendezvousClient.join({
        store,
        crypto: nodeCrypto,
        WebSocket: NodeWebSocket,
        signatureVerifier,
        code,
        ...(values.server === undefined ? {} : { server: values.server }),
        onStatus: (s) => !ctx.json && process.stderr.write(`… ${s}\n`),
      });
      ctx.out(`this device (${c.deviceId}) is now ${c.user}'s, with ${c.topics().length} topics synced; profile in ${dir}`, {
        user: c.user,
        deviceId: c.deviceId,
        topics: c.topics().length,
        profile: dir,
      });
      return 0;
    });
  }

  if (command === 'profile') {
    if (positionals[0] !== 'passphrase') throw new UsageError('profile commands: passphrase');
    // Sets, changes or removes the profile's passphrase (docs/client.md §2). The current one
    // comes from RENDEZVOUS_PASSPHRASE or a prompt; the new one from RENDEZVOUS_NEW_PASSPHRASE
    // or a prompt (twice); an empty new passphrase leaves the profile unencrypted.
    const { FileProfileStore } = await import('@rendezvous/client/node');
    const { isEncryptedProfile, reencryptProfile } = await import('@rendezvous/client');
    const { store: file } = await FileProfileStore.open(dir);
    const existing = await file.load();
    if (existing === null) throw new Error(`no profile in ${dir}: register first`);
    const from = isEncryptedProfile(existing) ? (process.env.RENDEZVOUS_PASSPHRASE ?? (await prompt('current passphrase: '))) : undefined;
    let to = process.env.RENDEZVOUS_NEW_PASSPHRASE;
    if (to === undefined) {
      to = await prompt('new passphrase (empty: no encryption): ');
      if ((await prompt('again: ')) !== to) throw new Error('the passphrases differ; nothing was changed');
    }
    await file.withLock(() => reencryptProfile(file, from, to === '' ? undefined : to));
    ctx.out(to === '' ? 'the profile is no longer encrypted' : 'the profile is encrypted with the new passphrase', { encrypted: to !== '' });
    return 0;
  }

  // Long waits (watching, linking) hold the profile only while they work, never while they wait.
  if (command === 'watch' || (command === 'device' && positionals[0] === 'link')) {
    const { file, store } = await profileStore(dir);
    const withClient = <T>(fn: (c: import('@rendezvous/client').RendezvousClient) => Promise<T>) =>
      file.withLock(async () => {
        const c = await RendezvousClient.open({ store, crypto: nodeCrypto, WebSocket: NodeWebSocket, signatureVerifier });
        try {
          return await fn(c);
        } finally {
          await c.save();
        }
      });
    const devices = await import('./devices.ts');
    return command === 'watch' ? devices.watch(withClient, ctx.json) : devices.deviceLink(withClient, ctx.json, ctx.out.bind(ctx));
  }

  const { file, store } = await profileStore(dir);
  return file.withLock(async () => {
    const c = await RendezvousClient.open({ store, crypto: nodeCrypto, WebSocket: NodeWebSocket, signatureVerifier });
    try {
      return await run(c);
    } finally {
      // What was verified before a command failed (a sync before a refused post) is kept.
      await c.save();
    }
  });

  async function run(c: import('@rendezvous/client').RendezvousClient): Promise<number> {
    const topicRef = (ref: string | undefined): string => {
      if (ref === undefined) throw new UsageError('missing <topic>');
      const all = c.topics();
      const byId = all.find((t) => t.id === ref);
      if (byId) return byId.id;
      const byTitle = all.filter((t) => t.title === ref);
      if (byTitle.length === 1) return byTitle[0]!.id;
      if (byTitle.length > 1) throw new Error(`several topics are titled "${ref}": use the id (rendezvous topic list)`);
      if (/^[A-Za-z0-9_-]{22}$/.test(ref)) return ref; // an id this device has not synced: the SDK says
      throw new Error(`no topic "${ref}" in this profile: run rendezvous topic list (after rendezvous sync)`);
    };
    const role = (r: string | undefined, dflt: Role): Role => {
      const v = r ?? dflt;
      if (!ROLES.has(v)) throw new UsageError(`role must be admin, participant or observer, not "${v}"`);
      return v as Role;
    };

    switch (command) {
      case 'whoami':
        ctx.out(`${c.user} on ${c.serverUrl} (device ${c.deviceId})`, { user: c.user, deviceId: c.deviceId, server: c.serverUrl, profile: dir });
        return 0;
      case 'sync': {
        const r = await c.sync({ onProgress: syncProgress() });
        const lines = r.topics.map((t) => {
          const v = c.topics().find((x) => x.id === t.id);
          const name = v?.title ? `"${v.title}"` : t.id;
          const alarm = t.halted ? `  ALARM ${t.halted}: stopped verifying this topic` : t.alarms.map((a) => `  ${alarmLine(a)}`).join('');
          return `${name}: ${t.newEntries} new${alarm}`;
        });
        for (const b of r.rejectedBundles) lines.push(`ALARM key bundle ${b.id}: ${b.code}: dropped`);
        for (const x of r.refused) {
          const v = c.topics().find((t) => t.id === x.topic);
          lines.push(`NOT DELIVERED: your queued ${x.kind === 'message' ? 'message' : 'change'} to ${v?.title ? `"${v.title}"` : x.topic} was refused by its host (${x.code}: ${x.message})`);
        }
        ctx.out(lines.length ? lines.join('\n') : 'no topics', r);
        return r.topics.some((t) => t.halted !== null || t.alarms.length > 0) || r.rejectedBundles.length > 0 || r.refused.length > 0 ? 1 : 0;
      }
      case 'send': {
        const [ref, ...words] = positionals;
        if (values.file !== undefined) {
          if (words.length > 0) throw new UsageError('send takes <text> or --file PATH, not both');
          await c.sync();
          return sendFileCommand(c, ctx, topicRef(ref), values.file, nodeCrypto);
        }
        if (words.length === 0) throw new UsageError('send needs <topic> <text>');
        await c.sync();
        const id = topicRef(ref);
        const r = await c.send(id, { text: words.join(' ') });
        if (r.pending === true) {
          ctx.out(queued(c, id, 'your message'), { index: null, pending: true });
          return 0;
        }
        ctx.out(`sent (entry ${r.index})`, { index: r.index });
        return 0;
      }
      case 'read': {
        await c.sync();
        const id = topicRef(positionals[0]);
        const from = values.from === undefined ? 0 : Number(values.from);
        if (!Number.isSafeInteger(from) || from < 0) throw new UsageError('--from must be an entry index ≥ 0');
        const msgs = c.messages(id, from);
        const lines = msgs.map((m) => {
          const when = new Date(m.timestamp).toISOString().replace('T', ' ').slice(0, 19);
          if (m.rejected) return `[${m.index}] ${when} ${m.sender ?? '?'}: (dropped: ${m.rejected})`;
          if (m.type === 'topic-info') return `[${m.index}] ${when} ${m.sender} set the topic info: ${m.body === null ? '' : Buffer.from(m.body).toString()}`;
          if (m.type === 'file' && m.body !== null) {
            const f = fileOf(m.body);
            const what = f === null ? '(a file with a malformed reference)' : `(file "${printable(f.name)}", ${bytes(f.size)}, ${printable(f.mediaType)}: rendezvous fetch-file ${id} ${m.index})`;
            return `[${m.index}] ${when} ${m.sender}: ${what}`;
          }
          return `[${m.index}] ${when} ${m.sender}: ${m.text ?? (m.body === null ? '(cannot decrypt: from before you joined)' : `(${m.type})`)}`;
        });
        ctx.out(lines.length ? lines.join('\n') : 'no messages', {
          topic: id,
          messages: msgs.map((m) => ({
            index: m.index,
            timestamp: m.timestamp,
            sender: m.sender,
            type: m.type,
            text: m.text,
            rejected: m.rejected,
            ...(m.type === 'file' && m.body !== null && { file: fileOf(m.body) }),
          })),
        });
        return 0;
      }
      case 'verify': {
        const id = topicRef(positionals[0]);
        const v = await c.verify(id);
        const root = Buffer.from(v.root).toString('hex');
        ctx.out(`verified ${v.size} entries; head ${root}`, { topic: id, size: v.size, root });
        return 0;
      }
      case 'contacts': {
        const list = c.contactList().map((x) => ({ user: x.user, identityKey: Buffer.from(x.identityKey).toString('base64url'), pinnedAt: x.pinnedAt }));
        ctx.out(list.map((x) => `${x.user}  ${x.identityKey}`).join('\n') || 'no contacts', { contacts: list });
        return 0;
      }
      case 'safety-number': {
        if (!positionals[0]) throw new UsageError('safety-number needs <user>');
        const n = c.safetyNumber(positionals[0]);
        ctx.out(`${n}\ncompare it with ${positionals[0]} over another channel; equal numbers mean no one is in between`, { user: positionals[0], safetyNumber: n });
        return 0;
      }
      case 'device': {
        const devices = await import('./devices.ts');
        if (positionals[0] === 'list') return devices.deviceList(c, ctx.out.bind(ctx));

        if (positionals[0] === 'remove') return devices.deviceRemove(c, positionals[1], ctx.out.bind(ctx));
        throw new UsageError('device commands: link, join, list, remove');
      }

      case 'push':
        return pushCommand(c, ctx, positionals, values);
      case 'fetch-file': {
        const [ref, entry] = positionals;
        if (entry === undefined || !/^[0-9]{1,15}$/.test(entry)) throw new UsageError('fetch-file needs <topic> <entry> (the entry number rendezvous read shows)');
        await c.sync();
        return fetchFileCommand(c, ctx, topicRef(ref), Number(entry), { out: values.out, force: values.force === true }, nodeCrypto);
      }
      case 'topic':
        return topic(c, ctx, positionals, values, topicRef, role);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  }
}

async function topic(
  c: import('@rendezvous/client').RendezvousClient,
  ctx: Ctx,
  positionals: string[],
  values: { member?: string[]; 'backward-secrecy'?: boolean; role?: string },
  topicRef: (ref: string | undefined) => string,
  role: (r: string | undefined, dflt: Role) => Role,
): Promise<number> {
  const [sub, a, b, d] = positionals;
  switch (sub) {
    case 'create': {
      if (!a) throw new UsageError('topic create needs <title>');
      const members = (values.member ?? []).map((m) => {
        const i = m.lastIndexOf(':');
        const hasRole = i > 0 && ROLES.has(m.slice(i + 1));
        return { user: hasRole ? m.slice(0, i) : m, role: hasRole ? (m.slice(i + 1) as Role) : ('participant' as Role) };
      });
      const id = await c.createTopic({ title: a, members, history: values['backward-secrecy'] ? 'hidden' : 'shared' });
      ctx.out(id, { id, title: a });
      return 0;
    }
    case 'list': {
      await c.sync();
      const ts = c.topics();
      ctx.out(
        ts.map((t) => `${t.id}  ${t.title ?? '(untitled)'}  ${t.members.length} members${t.role ? `, you: ${t.role}` : ', you: not a member'}`).join('\n') || 'no topics',
        { topics: ts.map((t) => ({ id: t.id, title: t.title, size: t.size, role: t.role, members: t.members.length, active: t.active })) },
      );
      return 0;
    }
    case 'show': {
      await c.sync();
      const t = c.topic(topicRef(a));
      const lines = [
        `${t.title ?? '(untitled)'}  ${t.id}`,
        `host ${t.host}, epoch ${t.epoch}, ${t.size} entries, history ${t.history === 'shared' ? 'shared with new members' : 'hidden from new members'}`,
        ...t.members.map((m) => `  ${m.user}  ${m.role}`),
        ...(t.witnesses.length > 0 ? [`witnessed by: ${t.witnesses.map((w) => `${w.server} (at ${w.size} ${w.size === 1 ? 'entry' : 'entries'})`).join(', ')}`] : []),
        ...(t.halted !== null ? [`  ALARM ${t.halted.code}: stopped verifying this topic: ${t.halted.message}`] : []),
        ...t.alarms.map((x) => `  ${alarmLine(x)}`),
      ];
      ctx.out(lines.join('\n'), { ...t, topicId: undefined });
      return 0;
    }
    case 'add':
      if (!b) throw new UsageError('topic add needs <topic> <user>');
      await c.sync();
      {
        const id = topicRef(a);
        const r = await c.addMember(id, b, role(values.role, 'participant'));
        if (r.pending === true) ctx.out(queued(c, id, `adding ${b}`), { added: b, pending: true });
        else ctx.out(`added ${b}`, { added: b });
      }
      return 0;
    case 'remove':
      if (!b) throw new UsageError('topic remove needs <topic> <user>');
      await c.sync();
      {
        const id = topicRef(a);
        const r = await c.removeMember(id, b);
        if (r.pending === true) ctx.out(queued(c, id, `removing ${b}`), { removed: b, pending: true });
        else ctx.out(`removed ${b}; the topic has a new key`, { removed: b });
      }
      return 0;
    case 'role':
      if (!b || !d) throw new UsageError('topic role needs <topic> <user> <role>');
      await c.sync();
      {
        const id = topicRef(a);
        const r = await c.setRole(id, b, role(d, 'participant'));
        if (r.pending === true) ctx.out(queued(c, id, `the role change of ${b}`), { user: b, role: d, pending: true });
        else ctx.out(`${b} is now ${d}`, { user: b, role: d });
      }
      return 0;
    case 'leave':
      await c.sync();
      {
        const id = topicRef(a);
        const r = await c.leave(id);
        if (r.pending === true) ctx.out(queued(c, id, 'your leaving'), { left: false, pending: true });
        else ctx.out('left the topic', { left: true });
      }
      return 0;
    default:
      throw new UsageError('topic commands: create, list, show, add, remove, role, leave');
  }
}

/** An alarm of a topic: an entry's, or one about the topic as a whole (witnesses, fork reports). */
export function alarmLine(a: { index: number | null; code: string; message: string }): string {
  return a.index === null ? `ALARM ${a.code}: ${a.message}` : `ALARM entry ${a.index}: ${a.code}`;
}

/** What a submission the home server queued for an unreachable host prints. */
function queued(c: Client, topicId: string, what: string): string {
  let host = 'the topic\'s host';
  try {
    host = c.topic(topicId).host || host;
  } catch {
    // a topic this device has not synced: the generic name does
  }
  return `queued: ${host} is unreachable; ${what} will be delivered when it is back`;
}

/** A line for an SDK error: its code, and a hint of what to do next. */
export function explain(e: unknown): string {
  if (!isRendezvousError(e)) return (e as Error).message;
  const hints: Partial<Record<string, string>> = {
    'auth.bad_pin': 'ask the server admin for a new pin (rendezvous admin pin)',
    'user.unknown': 'check the user name, or register first',
    'topic.unknown': 'run rendezvous sync, then rendezvous topic list',
    'topic.read_only': 'observers cannot post: ask an admin to change your role',
    'topic.not_member': 'you are not a member of that topic',
    'server.unavailable': 'is the server running and the URL right?',
    'identity.changed': 'compare safety numbers with that person before you trust the new key',
    'keys.exhausted': 'the other user must come online so their client replenishes its keys',
    'crypto.decrypt_failed': 'wrong passphrase (RENDEZVOUS_PASSPHRASE)?',
    'file.bad_blob': 'the server sent something other than the file that was shared: nothing was kept',
    'blob.unknown': 'the file is no longer on the server',
    'blob.quota_exceeded': 'your file storage on the server is full',
    'request.too_large': 'the file is larger than the server accepts',
    'federation.key_changed': "the other server's key changed without an endorsement: ask its operator, and do not trust it until checked",
    'federation.unreachable': 'the other server cannot be reached now: try again later',
    'federation.bad_address': 'your server refuses to contact that server name',
  };
  const fileHint = (e.details as { file?: unknown } | undefined)?.file === true;
  const hint = fileHint && e.code === 'crypto.decrypt_failed' ? 'the sender shared a file that does not open with its key: nothing was kept' : hints[e.code];
  return `${e.code}: ${e.message}${hint ? `\n  ${hint}` : ''}`;
}

// ---- files ----------------------------------------------------------------------------------

type Client = import('@rendezvous/client').RendezvousClient;
type Crypto = import('@rendezvous/protocol').CryptoProvider;

/** Media types by extension, for the common cases; anything else is application/octet-stream. */
const MEDIA_TYPES: Record<string, string> = {
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.csv': 'text/csv',
  '.html': 'text/html',
  '.htm': 'text/html',
  '.json': 'application/json',
  '.pdf': 'application/pdf',
  '.zip': 'application/zip',
  '.gz': 'application/gzip',
  '.tar': 'application/x-tar',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.svg': 'image/svg+xml',
  '.mp3': 'audio/mpeg',
  '.ogg': 'audio/ogg',
  '.mp4': 'video/mp4',
  '.webm': 'video/webm',
};

export function mediaTypeOf(path: string): string {
  return MEDIA_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/** The FileRef summary of a file message, or null if it does not decode. */
function fileOf(body: Uint8Array): { name: string; mediaType: string; size: number } | null {
  try {
    const f = decodeFileRef(body);
    return { name: f.name, mediaType: f.mediaType, size: f.size };
  } catch {
    return null;
  }
}

/** A name or media type from another user, safe to print: no control characters. */
function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  for (; v >= 1024 && u < units.length - 1; u++) v /= 1024;
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/**
 * A progress bar on stderr when it is a terminal (phase, bar, percentage, bytes, rate), redrawn
 * at most ten times a second; nothing otherwise, so scripts and pipes see only the result.
 */
function progressBar(): { update(p: FileProgress): void; end(): void } {
  if (!process.stderr.isTTY) return { update: () => undefined, end: () => undefined };
  let phase = '';
  let started = 0;
  let drawn = 0;
  const labels: Record<string, string> = { hashing: 'encrypting', uploading: 'uploading', downloading: 'downloading' };
  return {
    update(p) {
      const now = Date.now();
      if (p.phase !== phase) {
        if (phase !== '') process.stderr.write('\n');
        phase = p.phase;
        started = now;
        drawn = 0;
      }
      if (p.bytes < p.total && now - drawn < 100) return;
      drawn = now;
      const frac = p.total === 0 ? 1 : p.bytes / p.total;
      const width = 24;
      const full = Math.round(frac * width);
      const rate = p.bytes / Math.max(0.001, (now - started) / 1000);
      const line = `${(labels[p.phase] ?? p.phase).padEnd(11)} [${'#'.repeat(full)}${'-'.repeat(width - full)}] ${String(Math.floor(frac * 100)).padStart(3)}%  ${bytes(p.bytes)} / ${bytes(p.total)}  ${bytes(Math.round(rate))}/s`;
      process.stderr.write(`\r${line}\u001b[K`);
    },
    end() {
      if (phase !== '') process.stderr.write('\n');
      phase = '';
    },
  };
}

/** Entries verified per topic during a long sync, on a terminal only (one line, redrawn). */
function syncProgress(): ((topic: string, size: number, target: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let drawn = 0;
  return (topic, size, target) => {
    const now = Date.now();
    if (size < target && now - drawn < 100) return;
    drawn = now;
    const pct = target === 0 ? 100 : Math.floor((size / target) * 100);
    process.stderr.write(`\rverifying ${topic.slice(0, 8)}…  ${size} / ${target} entries (${pct}%)\u001b[K${size >= target ? '\r\u001b[K' : ''}`);
  };
}

/** A web stream of a file on disk, pulled as the consumer reads (createReadStream's backpressure). */
function fileStream(path: string): ReadableStream<Uint8Array> {
  const it = createReadStream(path, { highWaterMark: 64 * 1024 })[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        const r = await it.next();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
      async cancel() {
        await it.return?.();
      },
    },
    { highWaterMark: 0 },
  );
}

async function sendFileCommand(c: Client, ctx: Ctx, topicId: string, path: string, crypto: Crypto): Promise<number> {
  const { sendFile } = await import('@rendezvous/client');
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`cannot read ${path}: ${e.code ?? e.message}`);
  });
  if (!st.isFile()) throw new Error(`${path} is not a regular file`);
  const bar = progressBar();
  let r;
  try {
    // The file is read twice (to hash, then to upload): see the SDK's files module.
    r = await sendFile(c, topicId, () => fileStream(path), { name: basename(path), mediaType: mediaTypeOf(path), size: st.size, crypto, onProgress: bar.update });
  } finally {
    bar.end();
  }
  if (r.pending === true) ctx.out(`${queued(c, topicId, `${r.name} (${bytes(r.size)})`)}`, r);
  else ctx.out(`sent ${r.name} (${bytes(r.size)}) as entry ${r.index}`, r);
  return 0;
}

/**
 * The name to save a received file under, from the sender's FileRef name: its last path
 * component, without control characters or leading dots, so it lands in the directory chosen,
 * visible; `file-<entry>` if nothing is left.
 */
export function safeFileName(name: string, index: number): string {
  const last = name.split(/[/\\]/).pop() ?? '';
  const clean = last.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').replace(/^\.+/, '').trim();
  return clean === '' ? `file-${index}` : clean;
}

async function fetchFileCommand(c: Client, ctx: Ctx, topicId: string, index: number, o: { out: string | undefined; force: boolean }, crypto: Crypto): Promise<number> {
  const { fetchFile, fileInfo } = await import('@rendezvous/client');
  const info = await fileInfo(c, topicId, index);
  let out = resolve(o.out ?? safeFileName(info.name, index));
  if (existsSync(out) && statSync(out).isDirectory()) out = join(out, safeFileName(info.name, index));
  if (existsSync(out) && !o.force) throw new Error(`${out} exists: choose another --out, or --force to replace it`);

  // Written beside the target, renamed into place only once every check has passed: a failed or
  // interrupted transfer never leaves a partial file under the real name.
  const temp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString('hex')}.part`);
  const fh = await open(temp, 'wx');
  const onSignal = () => {
    try {
      unlinkSync(temp);
    } finally {
      process.exit(130);
    }
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = progressBar();
  let committed = false;
  try {
    let f;
    try {
      f = await fetchFile(
        c,
        topicId,
        index,
        async (chunk) => {
          for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
        },
        { crypto, onProgress: bar.update },
      );
    } catch (e) {
      if (isRendezvousError(e, 'crypto.decrypt_failed')) throw new RendezvousError(e.code, e.message, { ...e.details, file: true });
      throw e;
    } finally {
      bar.end();
    }
    await fh.sync();
    await fh.close();
    if (o.force) await rename(temp, out);
    else {
      // link refuses an existing target, so a file that appeared meanwhile is never replaced.
      await link(temp, out).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'EEXIST') throw new Error(`${out} exists: choose another --out, or --force to replace it`);
        throw e;
      });
      await unlink(temp);
    }
    committed = true;
    const result = { index: f.index, sender: f.sender, name: f.name, mediaType: f.mediaType, size: f.size, blobId: f.blobId, path: out };
    ctx.out(`saved ${printable(f.name)} (${bytes(f.size)}) from ${f.sender} to ${out}`, result);
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!committed) {
      await fh.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
    }
  }
}

/** `push …`: this device's push subscriptions (docs/server.md §Push), e.g. for a native wrapper. */
async function pushCommand(
  c: import('@rendezvous/client').RendezvousClient,
  ctx: Ctx,
  positionals: string[],
  values: { endpoint?: string; p256dh?: string; auth?: string; apns?: string; fcm?: string },
): Promise<number> {
  const line = (x: import('@rendezvous/client').PushSubscriptionInfo) =>
    `${x.id}  ${x.kind}  ${x.kind === 'webpush' ? new URL(x.endpoint!).origin : `token ${x.token!.slice(0, 8)}…`}  since ${new Date(x.createdAt).toISOString()}`;
  switch (positionals[0]) {
    case 'providers': {
      const p = await c.pushProviders();
      ctx.out(`this server pushes through: ${p.join(', ')}`, { providers: p });
      return 0;
    }
    case 'list': {
      const list = await c.pushSubscriptions();
      ctx.out(list.map(line).join('\n') || 'no push subscriptions on this device', { subscriptions: list });
      return 0;
    }
    case 'subscribe': {
      const { endpoint, p256dh, auth, apns, fcm } = values;
      const given = [endpoint !== undefined, apns !== undefined, fcm !== undefined].filter(Boolean).length;
      if (given !== 1) throw new UsageError('push subscribe needs one of: --endpoint URL --p256dh K --auth A (Web Push), --apns TOKEN, --fcm TOKEN');
      let input: import('@rendezvous/client').PushSubscriptionInput;
      if (endpoint !== undefined) {
        if (p256dh === undefined || auth === undefined) throw new UsageError('a Web Push subscription needs --p256dh and --auth (from the browser’s PushSubscription)');
        input = { endpoint, keys: { p256dh, auth } };
      } else input = apns !== undefined ? { kind: 'apns', token: apns } : { kind: 'fcm', token: fcm! };
      const r = await c.subscribePush(input);
      ctx.out(`subscribed: ${line(r)}`, r);
      return 0;
    }
    case 'remove': {
      if (!positionals[1]) throw new UsageError('push remove needs <id> (see push list)');
      await c.unsubscribePush(positionals[1]);
      ctx.out(`push subscription ${positionals[1]} removed`, { removed: positionals[1] });
      return 0;
    }
    default:
      throw new UsageError('push commands: providers, list, subscribe, remove');
  }
}
