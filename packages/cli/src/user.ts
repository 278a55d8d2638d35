/**
 * The user commands of `rendezvous` (README §Using it), on the client SDK. Every command opens
 * the profile (`--profile DIR`, default $RENDEZVOUS_PROFILE or ~/.rendezvous/profile) under its
 * lock, does its work, saves, and prints a human line or, with `--json`, one JSON document.
 * Errors print their stable code and what to do next; the exit code is 1 (2 for usage).
 */
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline/promises';
import { isRendezvousError, type Role } from '@rendezvous/protocol';

export class UsageError extends Error {}

export const USER_USAGE = `user commands (global: --profile DIR, --json):
  rendezvous register <name> --server URL --pin PIN [--passphrase]   create your identity and this device
  rendezvous whoami                                                  who and where this profile is
  rendezvous topic create <title> [--member user[:admin|participant|observer]]... [--backward-secrecy]
  rendezvous topic list | show <topic>
  rendezvous topic add <topic> <user> [--role R] | remove <topic> <user> | role <topic> <user> <role> | leave <topic>
  rendezvous send <topic> <text>                                     post a message
  rendezvous read <topic> [--from N]                                 show the messages (verified)
  rendezvous sync                                                    fetch and verify everything new
  rendezvous verify <topic>                                          re-verify the whole log, print the head
  rendezvous contacts | safety-number <user>                         pinned identities
  rendezvous device list

  <topic> is a topic id or its title. The profile is encrypted with a passphrase when one is
  given (--passphrase prompts; or set RENDEZVOUS_PASSPHRASE for scripts).`;

const ROLES = new Set(['admin', 'participant', 'observer']);

interface Ctx {
  json: boolean;
  out(human: string, data: unknown): void;
}

async function prompt(question: string): Promise<string> {
  if (!process.stdin.isTTY) throw new Error('this profile is encrypted: set RENDEZVOUS_PASSPHRASE (no terminal to ask on)');
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
  const { NodeWebSocket } = await import('@rendezvous/client/node');

  if (command === 'register') {
    const name = positionals[0];
    if (!name || !values.server || !values.pin) throw new UsageError('register needs <name> --server URL --pin PIN');
    const { file, store } = await profileStore(dir, { create: true, passphrase: values.passphrase === true });
    return file.withLock(async () => {
      const c = await RendezvousClient.register({ store, crypto: nodeCrypto, WebSocket: NodeWebSocket, server: values.server!, user: name, pin: values.pin! });
      ctx.out(`registered ${c.user} (device ${c.deviceId}) on ${c.serverUrl}; profile in ${dir}`, { user: c.user, deviceId: c.deviceId, server: c.serverUrl, profile: dir });
      return 0;
    });
  }

  const { file, store } = await profileStore(dir);
  return file.withLock(async () => {
    const c = await RendezvousClient.open({ store, crypto: nodeCrypto, WebSocket: NodeWebSocket });
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
        const r = await c.sync();
        const lines = r.topics.map((t) => {
          const v = c.topics().find((x) => x.id === t.id);
          const name = v?.title ? `"${v.title}"` : t.id;
          const alarm = t.halted ? `  ALARM ${t.halted}: stopped verifying this topic` : t.alarms.map((a) => `  ALARM entry ${a.index}: ${a.code}`).join('');
          return `${name}: ${t.newEntries} new${alarm}`;
        });
        ctx.out(lines.length ? lines.join('\n') : 'no topics', r);
        return r.topics.some((t) => t.halted !== null || t.alarms.length > 0) ? 1 : 0;
      }
      case 'send': {
        const [ref, ...words] = positionals;
        if (words.length === 0) throw new UsageError('send needs <topic> <text>');
        await c.sync();
        const index = await c.send(topicRef(ref), { text: words.join(' ') });
        ctx.out(`sent (entry ${index})`, { index });
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
          return `[${m.index}] ${when} ${m.sender}: ${m.text ?? (m.body === null ? '(cannot decrypt: from before you joined)' : `(${m.type})`)}`;
        });
        ctx.out(lines.length ? lines.join('\n') : 'no messages', {
          topic: id,
          messages: msgs.map((m) => ({ index: m.index, timestamp: m.timestamp, sender: m.sender, type: m.type, text: m.text, rejected: m.rejected })),
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
        if (positionals[0] !== 'list') throw new UsageError('device commands: list');
        const ds = await c.devices();
        ctx.out(ds.map((d) => `${d.deviceId}${d.current ? '  (this device)' : ''}`).join('\n'), { devices: ds });
        return 0;
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
        ...t.alarms.map((x) => `  ALARM entry ${x.index}: ${x.code}`),
      ];
      ctx.out(lines.join('\n'), { ...t, topicId: undefined });
      return 0;
    }
    case 'add':
      if (!b) throw new UsageError('topic add needs <topic> <user>');
      await c.sync();
      await c.addMember(topicRef(a), b, role(values.role, 'participant'));
      ctx.out(`added ${b}`, { added: b });
      return 0;
    case 'remove':
      if (!b) throw new UsageError('topic remove needs <topic> <user>');
      await c.sync();
      await c.removeMember(topicRef(a), b);
      ctx.out(`removed ${b}; the topic has a new key`, { removed: b });
      return 0;
    case 'role':
      if (!b || !d) throw new UsageError('topic role needs <topic> <user> <role>');
      await c.sync();
      await c.setRole(topicRef(a), b, role(d, 'participant'));
      ctx.out(`${b} is now ${d}`, { user: b, role: d });
      return 0;
    case 'leave':
      await c.sync();
      await c.leave(topicRef(a));
      ctx.out('left the topic', { left: true });
      return 0;
    default:
      throw new UsageError('topic commands: create, list, show, add, remove, role, leave');
  }
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
  };
  const hint = hints[e.code];
  return `${e.code}: ${e.message}${hint ? `\n  ${hint}` : ''}`;
}
