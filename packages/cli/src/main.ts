/**
 * The `rendezvous` command line (README §Commands): `serve` runs a server; `admin …` talks to a
 * running server's admin API with the admin token; the user commands (user.ts) run the SDK.
 *
 * Every option has an environment variable, and `serve --config FILE` reads a JSON file with
 * the same keys; the order of precedence is flag > environment > config file > default.
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ServerConfig } from '@rendezvous/server';
import { USER_USAGE, UsageError as UserUsageError, explain, userCommand } from './user.ts';

const USAGE = `usage:
  rendezvous serve [--data DIR] [--host H] [--port N] [--name SERVER_NAME] [--config FILE] [--log-level LEVEL] [--trust-proxy]
                   [--peer NAME=URL]...                          (federation peers; http:// only on loopback)
  rendezvous admin pin <user> [--expires 7d] [--tries 3]     issue a registration pin
  rendezvous admin pins                                       list pins
  rendezvous admin revoke-pin <id>                            revoke a pin
  rendezvous admin users                                      list users
  rendezvous admin delete-user <user>                         delete a user and all their data
  rendezvous admin delete-topic <topic-id>                    delete a topic with its log and files
  rendezvous admin status                                     server status
  rendezvous admin federation                                 delivery backlog and health per other server
  rendezvous admin rotate-server-key                          new server key, endorsed by the current one
  rendezvous admin backup <file> [--data DIR]                 consistent online backup of the database

  admin commands take --server URL (default $RENDEZVOUS_SERVER or http://127.0.0.1:8080),
  the token from $RENDEZVOUS_ADMIN_TOKEN, and --json for machine-readable output.`;

class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        return await serve(rest);
      case 'admin':
        return await admin(rest);
      case 'register':
      case 'whoami':
      case 'topic':
      case 'send':
      case 'fetch-file':
      case 'read':
      case 'sync':
      case 'verify':
      case 'contacts':
      case 'safety-number':
      case 'device':
      case 'watch':
      case 'profile':
      case 'push':
        return await userCommand(command, rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        console.log(`${USAGE}\n\n${USER_USAGE}`);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof UserUsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`rendezvous: ${(e as Error).message}\n\n${USAGE}\n\n${USER_USAGE}`);
      return 2;
    }
    console.error(`rendezvous: ${explain(e)}`);
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// serve

async function serve(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      data: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      name: { type: 'string' },
      config: { type: 'string' },
      'log-level': { type: 'string' },
      'trust-proxy': { type: 'boolean' },
      peer: { type: 'string', multiple: true },
    },
    strict: true,
  });
  const env = process.env;
  const file: Record<string, unknown> = values.config ? JSON.parse(readFileSync(values.config, 'utf8')) : {};
  const pick = (flag: string | undefined, envName: string, key: string, dflt?: string) =>
    flag ?? env[envName] ?? (file[key] === undefined ? undefined : String(file[key])) ?? dflt;
  const port = Number(pick(values.port, 'RENDEZVOUS_PORT', 'port', '8080'));
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be 0–65535');

  const { startServer, RATES } = await import('@rendezvous/server');
  const server = await startServer({
    dataDir: resolve(pick(values.data, 'RENDEZVOUS_DATA', 'data', './data')!),
    host: pick(values.host, 'RENDEZVOUS_HOST', 'host', '127.0.0.1')!,
    port,
    name: pick(values.name, 'RENDEZVOUS_NAME', 'name'),
    adminToken: env.RENDEZVOUS_ADMIN_TOKEN,
    serverKey: env.RENDEZVOUS_SERVER_KEY,
    logLevel: pick(values['log-level'], 'RENDEZVOUS_LOG_LEVEL', 'logLevel', 'info'),
    trustProxy: pick(values['trust-proxy'] ? 'true' : undefined, 'RENDEZVOUS_TRUST_PROXY', 'trustProxy', 'false') === 'true',
    rates: rateOverrides(file.rates, RATES),
    limits: limitOverrides(file.limits),
    push: pushOptions(file.push),
    federation: federationOptions(file.federation, values.peer ?? []),
    corsOrigins: corsOrigins(env.RENDEZVOUS_CORS_ORIGINS ?? file.corsOrigins),
    verifyThreads: verifyThreads(env.RENDEZVOUS_VERIFY_THREADS ?? file.verifyThreads),
    writerThread: flag('writerThread', env.RENDEZVOUS_WRITER_THREAD ?? file.writerThread),
    announce: (line) => process.stdout.write(line + '\n'),
  });
  process.stdout.write(`rendezvous server "${server.name}" listening on ${server.url}\n`);
  await new Promise<void>((resolveStop) => {
    const stop = (signal: string) => {
      process.stdout.write(`${signal}: shutting down\n`);
      server.close().then(resolveStop, (e) => {
        console.error(e);
        resolveStop();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

/**
 * Config file `rates`: `{"write": [600, 60000], …}`, per bucket [tokens per window, window ms]
 * (docs/server.md §Limits). Only the config file sets them: they are operator tuning.
 */
function rateOverrides(v: unknown, known: Record<string, unknown>): ServerConfig['rates'] {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError('config "rates": expected an object of [tokens, windowMs] pairs');
  const out: Record<string, readonly [number, number]> = {};
  for (const [name, pair] of Object.entries(v)) {
    if (!(name in known)) throw new UsageError(`config "rates.${name}": unknown bucket; known: ${Object.keys(known).join(', ')}`);
    if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((n) => Number.isSafeInteger(n) && n > 0)) {
      throw new UsageError(`config "rates.${name}": expected [tokens, windowMs], two positive integers`);
    }
    out[name] = [pair[0], pair[1]];
  }
  return out as ServerConfig['rates'];
}

/** `verifyThreads`: worker threads verifying message signatures (0: inline); unset: the server's default. */
function verifyThreads(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > 64) throw new UsageError('config "verifyThreads": expected a whole number 0–64');
  return n;
}

/** A yes/no setting: true or false (the environment spells them as text); unset: the server's default. */
function flag(key: string, v: unknown): boolean | undefined {
  if (v === undefined || typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new UsageError(`config "${key}": expected true or false`);
}

/** `corsOrigins`: "*" (default) or a list of origins; the environment takes a comma-separated list. */
function corsOrigins(v: unknown): ServerConfig['corsOrigins'] {
  if (v === undefined || v === '*') return '*';
  const list = typeof v === 'string' ? v.split(',').map((x) => x.trim()).filter((x) => x !== '') : v;
  if (!Array.isArray(list) || !list.every((o) => typeof o === 'string' && /^https?:\/\/[^/\s]+$/.test(o))) {
    throw new UsageError('corsOrigins: expected "*" or origins like https://chat.example.org');
  }
  return list as string[];
}

/** Config file `limits`: the few limits an operator may change (docs/server.md §Limits). */
function limitOverrides(v: unknown): ServerConfig['limits'] {
  const names = ['maxBlobBytes', 'blobBytesPerUser', 'bodyTimeoutMs', 'uploadIdleMs', 'idempotencyRetentionMs', 'eventRetentionMs'] as const;
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError('config "limits": expected an object');
  const out: Record<string, number> = {};
  for (const [name, n] of Object.entries(v)) {
    if (!(names as readonly string[]).includes(name)) throw new UsageError(`config "limits.${name}": unknown; known: ${names.join(', ')}`);
    if (!Number.isSafeInteger(n) || (n as number) <= 0) throw new UsageError(`config "limits.${name}": expected a positive integer`);
    out[name] = n as number;
  }
  return out;
}

/**
 * Config file `push` (docs/server.md §Push): `{"contact": "mailto:…", "coalesceMs": 2000, "apns": {…}, "fcm": {…}, …}`.
 * `allowInsecure: true` is for development only and must be written out in full.
 */
function pushOptions(v: unknown): ServerConfig['push'] {
  const numbers = ['coalesceMs', 'timeoutMs', 'maxAttempts', 'retryBaseMs', 'maxQueue', 'concurrency'] as const;
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError('config "push": expected an object');
  const out: Record<string, unknown> = {};
  for (const [name, x] of Object.entries(v)) {
    if ((numbers as readonly string[]).includes(name)) {
      if (!Number.isSafeInteger(x) || (x as number) <= 0) throw new UsageError(`config "push.${name}": expected a positive integer`);
    } else if (name === 'contact') {
      if (typeof x !== 'string' || !/^(mailto:|https:\/\/)\S+$/.test(x)) throw new UsageError('config "push.contact": expected a mailto: or https: URL');
    } else if (name === 'allowInsecure') {
      if (typeof x !== 'boolean') throw new UsageError('config "push.allowInsecure": expected true or false');
    } else if (name === 'apns' || name === 'fcm') {
      out[name] = pushProvider(name, x);
      continue;
    } else {
      throw new UsageError(`config "push.${name}": unknown; known: contact, allowInsecure, apns, fcm, ${numbers.join(', ')}`);
    }
    out[name] = x;
  }
  return out as ServerConfig['push'];
}

/**
 * Config file `push.apns` (`{teamId, keyId, privateKey, bundleId, endpoint?}`; `privateKey` a
 * path to the .p8 file or the PEM itself) and `push.fcm` (`{projectId, serviceAccount,
 * endpoint?}`; `serviceAccount` a path to the JSON key file). Paths are taken relative to the
 * working directory; the server reads and checks the keys at start.
 */
function pushProvider(kind: 'apns' | 'fcm', v: unknown): Record<string, string> {
  const fields = kind === 'apns' ? { required: ['teamId', 'keyId', 'privateKey', 'bundleId'], paths: ['privateKey'] } : { required: ['projectId', 'serviceAccount'], paths: ['serviceAccount'] };
  const known = [...fields.required, 'endpoint'];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError(`config "push.${kind}": expected an object with ${fields.required.join(', ')}`);
  const out: Record<string, string> = {};
  for (const [name, x] of Object.entries(v)) {
    if (!known.includes(name)) throw new UsageError(`config "push.${kind}.${name}": unknown; known: ${known.join(', ')}`);
    if (typeof x !== 'string' || x === '') throw new UsageError(`config "push.${kind}.${name}": expected a non-empty string`);
    if (name === 'endpoint' && !/^https?:\/\/[^/\s]+\/?$/.test(x)) throw new UsageError(`config "push.${kind}.endpoint": expected an origin like https://host`);
    out[name] = fields.paths.includes(name) && !x.includes('-----BEGIN') ? resolve(x) : x;
  }
  for (const name of fields.required) if (!(name in out)) throw new UsageError(`config "push.${kind}.${name}": required`);
  return out;
}

/** Checks a peer URL: https, or http on a loopback host only (development and tests). */
function peerUrl(name: string, url: unknown, where: string): string {
  if (!/^[a-z0-9][a-z0-9.-]*(:[1-9][0-9]{0,4})?$/.test(name)) throw new UsageError(`${where}: "${name}" is not a server name (lowercase DNS name[:port])`);
  let u: URL;
  try {
    u = new URL(String(url));
  } catch {
    throw new UsageError(`${where}: "${String(url)}" is not an absolute URL`);
  }
  if (typeof url !== 'string' || u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
    throw new UsageError(`${where}: expected a URL without credentials, query or fragment`);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1';
  if (u.protocol === 'http:' && !loopback) {
    throw new UsageError(`${where}: http:// is only allowed on loopback (127.0.0.0/8, ::1, localhost): use https://${u.host}${u.pathname.replace(/\/$/, '')}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`${where}: expected an https:// URL`);
  return url;
}

/**
 * Config file `federation` (docs/server.md §Federation (operators)) and `--peer NAME=URL` flags,
 * which add to (and override) the file's peers. `allowPrivate` and `testing` are for development only.
 */
function federationOptions(v: unknown, peerFlags: string[]): ServerConfig['federation'] {
  if (v === undefined && peerFlags.length === 0) return undefined;
  if (v !== undefined && (typeof v !== 'object' || v === null || Array.isArray(v))) throw new UsageError('config "federation": expected an object');
  const numbers = ['timeoutMs', 'retryMinMs', 'retryMaxMs'];
  const names = (x: unknown, field: string): string[] => {
    if (!Array.isArray(x) || !x.every((n) => typeof n === 'string' && n !== '')) throw new UsageError(`config "federation.${field}": expected a list of server names`);
    return x as string[];
  };
  const out: Record<string, unknown> = {};
  for (const [name, x] of Object.entries(v ?? {})) {
    if (numbers.includes(name)) {
      if (!Number.isSafeInteger(x) || (x as number) <= 0) throw new UsageError(`config "federation.${name}": expected a positive integer`);
    } else if (name === 'enabled' || name === 'allowPrivate') {
      if (typeof x !== 'boolean') throw new UsageError(`config "federation.${name}": expected true or false`);
    } else if (name === 'allow' || name === 'deny') {
      names(x, name);
    } else if (name === 'peers') {
      if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new UsageError('config "federation.peers": expected an object of server name → URL');
      for (const [peer, url] of Object.entries(x)) peerUrl(peer, url, `config "federation.peers.${peer}"`);
    } else if (name === 'testing') {
      if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new UsageError('config "federation.testing": expected an object');
      for (const [k, y] of Object.entries(x)) {
        if (k !== 'forkFor') throw new UsageError(`config "federation.testing.${k}": unknown; known: forkFor`);
        names(y, 'testing.forkFor');
      }
    } else {
      throw new UsageError(`config "federation.${name}": unknown; known: enabled, peers, allowPrivate, allow, deny, testing, ${numbers.join(', ')}`);
    }
    out[name] = x;
  }
  if (peerFlags.length > 0) {
    const peers: Record<string, string> = { ...(out.peers as Record<string, string> | undefined) };
    for (const flag of peerFlags) {
      const at = flag.indexOf('=');
      if (at <= 0) throw new UsageError(`--peer ${flag}: expected NAME=URL`);
      const name = flag.slice(0, at);
      peers[name] = peerUrl(name, flag.slice(at + 1), `--peer ${name}`);
    }
    out.peers = peers;
  }
  return out as ServerConfig['federation'];
}

// ---------------------------------------------------------------------------------------------
// admin

/** "7d", "12h", "30m" → milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(s.trim());
  if (!m) throw new UsageError(`bad duration "${s}": use e.g. 30m, 12h, 7d, 2w`);
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 's'];
  return Number(m[1]) * unit;
}

async function admin(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      server: { type: 'string' },
      expires: { type: 'string' },
      tries: { type: 'string' },
      data: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const [sub, arg] = positionals;
  const base = (values.server ?? process.env.RENDEZVOUS_SERVER ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  const out = (human: string, data: unknown) => console.log(values.json ? JSON.stringify(data, null, 2) : human);

  if (sub === 'backup') {
    if (!arg) throw new UsageError('admin backup needs a target file');
    const { openSqliteStore } = await import('@rendezvous/server');
    const dir = resolve(values.data ?? process.env.RENDEZVOUS_DATA ?? './data');
    const store = await openSqliteStore(resolve(dir, 'rendezvous.db'));
    try {
      await store.backup(resolve(arg));
    } finally {
      await store.close();
    }
    out(`backup written to ${resolve(arg)} (restore: stop the server, copy it to ${dir}/rendezvous.db)`, { file: resolve(arg) });
    return 0;
  }

  const token = process.env.RENDEZVOUS_ADMIN_TOKEN;
  if (!token) throw new Error('set RENDEZVOUS_ADMIN_TOKEN to the admin token the server printed on its first start');
  const call = async (method: string, path: string, body?: unknown) => {
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new Error(`cannot reach ${base} (${(e as Error).message}): is the server running? (--server URL)`);
    }
    const data = (await res.json().catch(() => ({}))) as Record<string, any>;
    if (!res.ok) throw new Error(`${data.error?.code ?? res.status}: ${data.error?.message ?? res.statusText}`);
    return data;
  };

  switch (sub) {
    case 'pin': {
      if (!arg) throw new UsageError('admin pin needs a user name');
      let user = arg;
      if (!user.includes('@')) user = `${user}@${(await call('GET', '/.well-known/rendezvous')).server}`;
      const r = await call('POST', '/v1/admin/pins', {
        user,
        expiresInMs: parseDuration(values.expires ?? '7d'),
        tries: values.tries === undefined ? 3 : Number(values.tries),
      });
      out(`pin for ${r.user}: ${r.pin}\n  expires ${new Date(r.expiresAt).toISOString()}, ${r.tries} tries, id ${r.id}`, r);
      return 0;
    }
    case 'pins': {
      const r = await call('GET', '/v1/admin/pins');
      const lines = r.pins.map(
        (p: any) => `${p.id}  ${p.user}  ${p.expired ? 'expired' : `expires ${new Date(p.expiresAt).toISOString()}`}  ${p.triesLeft} tries left`,
      );
      out(lines.length ? lines.join('\n') : 'no pins', r);
      return 0;
    }
    case 'revoke-pin':
      if (!arg) throw new UsageError('admin revoke-pin needs a pin id (see admin pins)');
      out(`pin ${arg} revoked`, await call('DELETE', `/v1/admin/pins/${encodeURIComponent(arg)}`));
      return 0;
    case 'users': {
      const r = await call('GET', '/v1/admin/users');
      out(r.users.length ? r.users.map((u: any) => `${u.user}  registered ${new Date(u.createdAt).toISOString()}`).join('\n') : 'no users', r);
      return 0;
    }
    case 'delete-user':
      if (!arg) throw new UsageError('admin delete-user needs a user id');
      out(`${arg} deleted`, await call('DELETE', `/v1/admin/users/${encodeURIComponent(arg)}`));
      return 0;
    case 'delete-topic':
      if (!arg) throw new UsageError('admin delete-topic needs a topic id (base64url, as clients show it)');
      out(`topic ${arg} deleted with its log and files`, await call('DELETE', `/v1/admin/topics/${encodeURIComponent(arg)}`));
      return 0;
    case 'status': {
      const r = await call('GET', '/v1/admin/status');
      out(`${r.server} (rendezvous ${r.version}, API v${r.apiVersion})\n${Object.entries(r.counts).map(([k, v]) => `  ${k}: ${v}`).join('\n')}`, r);
      return 0;
    }
    case 'federation': {
      const r = await call('GET', '/v1/admin/federation');
      const lines = r.servers.map(
        (x: any) =>
          `${x.server}  ${x.failures === 0 ? 'ok' : `failing (${x.failures} attempts)`}  ${x.entriesBehind} entries behind in ${x.topics} topics` +
          `${x.refusedTopics > 0 ? ` (${x.refusedTopics} refused by it)` : ''}, ${x.outbox} queued`,
      );
      out(lines.length ? lines.join('\n') : 'no other servers', r);
      return 0;
    }
    case 'rotate-server-key': {
      const r = await call('POST', '/v1/admin/server-key/rotate');
      out(
        `server key rotated: key ${r.keys.length} of ${r.keys.length}, id ${r.keyId}\n` +
          '  the new key is in server.key (back it up); other servers follow it through the endorsement by the previous key',
        r,
      );
      return 0;
    }
    default:
      throw new UsageError(`unknown admin command "${sub ?? ''}"`);
  }
}
