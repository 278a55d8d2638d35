/**
 * The profile on disk (Node only).
 *
 * Layout of a profile directory (mode 0700; every file 0600):
 *
 *     profile.bin        the document (plaintext or encrypted: the bytes say which, see
 *                        isEncryptedProfile; one name for both so there is never a stale twin)
 *     parts/<name>       named parts ([a-z0-9-]{1,64})
 *     profile.lock       the exclusive lock while a process holds it: "<pid>\n<hostname>\n"
 *     .<file>.tmp-<pid>-<hex>   a write in progress (or left by a crash; removed by the next write)
 *
 * Writes are atomic and crash-safe: temp file in the same directory (O_EXCL, 0600), write, fsync,
 * rename over the target, fsync the directory. A crash leaves the old file or the new one.
 *
 * Locking: `withLock(fn)` holds `profile.lock` (created with O_EXCL) for the duration of `fn`,
 * so two CLI processes never interleave their read-modify-write cycles. A lock left by a dead
 * process on this host is taken over; a live one gives `store.conflict`
 * 'profile is in use by process N'. Within one process, calls queue (and nested calls run
 * directly). Plain `save`/`load` do not take the lock themselves: callers wrap a whole command.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { RendezvousError } from '@rendezvous/protocol';
import { checkPartName, type ProfileStore } from '../profile-store.ts';

const DOC_FILE = 'profile.bin';
const PARTS_DIR = 'parts';
const LOCK_FILE = 'profile.lock';
const TAKEOVER_FILE = 'profile.lock.takeover';
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const TEMP = /^\.(.+)\.tmp-(\d+)-[0-9a-f]+$/;
/** How long a command waits for a live process to release the profile before giving up. */
const LOCK_WAIT_MS = 10_000;

/** An unreadable lock file younger than this may still be being written by its creator. */
const LOCK_GRACE_MS = 5_000;

/** RENDEZVOUS_PROFILE when set, else ~/.rendezvous/profile. */
export function defaultProfileDir(env: Record<string, string | undefined> = process.env): string {
  const p = env.RENDEZVOUS_PROFILE;
  return p !== undefined && p !== '' ? resolve(p) : join(homedir(), '.rendezvous', 'profile');
}

export interface PrepareResult {
  /** Whether the profile directory was created now. */
  created: boolean;
  /**
   * Paths whose permissions were looser than 0700 (directories) or 0600 (files) and were
   * tightened: the caller should warn, since the secrets may have been readable by others.
   */
  tightened: string[];
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return !isErrno(e, 'ESRCH'); // EPERM: alive, another user's
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, constants.O_RDONLY);
    await fh.sync();
  } catch (e) {
    // Some platforms (Windows) cannot open or fsync a directory; the rename is still atomic.
    if (!isErrno(e, 'EISDIR') && !isErrno(e, 'EPERM') && !isErrno(e, 'EINVAL') && !isErrno(e, 'EACCES')) throw e;
  } finally {
    await fh?.close();
  }
}

/** Per-process lock state, by resolved profile directory (several store objects may share one). */
const inProcess = new Map<string, { tail: Promise<unknown>; held: boolean }>();
const lockContext = new AsyncLocalStorage<Set<string>>();
/** Temp files being written by any store object of this process (not to be cleaned up meanwhile). */
const inProcessWriting = new Set<string>();

export class FileProfileStore implements ProfileStore {
  readonly dir: string;
  #prepared: Promise<PrepareResult> | null = null;

  /** How long `withLock` waits for a live holder before `store.conflict` (default 10 s). */
  private readonly lockWaitMs: number;

  constructor(dir: string, opts: { lockWaitMs?: number } = {}) {
    this.dir = resolve(dir);
    this.lockWaitMs = opts.lockWaitMs ?? LOCK_WAIT_MS;
  }

  /** Opens (creating or tightening) the profile directory; see `PrepareResult`. */
  static async open(dir: string): Promise<{ store: FileProfileStore } & PrepareResult> {
    const store = new FileProfileStore(dir);
    return { store, ...(await store.prepare()) };
  }

  /**
   * Creates the directory (0700) and its parts directory, or tightens existing ones and any
   * profile file looser than 0600. Runs once per store; every operation awaits it.
   */
  prepare(): Promise<PrepareResult> {
    if (this.#prepared === null) {
      this.#prepared = this.#doPrepare();
      this.#prepared.catch(() => {
        this.#prepared = null;
      });
    }
    return this.#prepared;
  }

  async #doPrepare(): Promise<PrepareResult> {
    const tightened: string[] = [];
    let created = false;
    try {
      await fsp.stat(this.dir);
    } catch (e) {
      if (!isErrno(e, 'ENOENT')) throw e;
      created = true;
    }
    const parts = join(this.dir, PARTS_DIR);
    for (const d of [this.dir, parts]) {
      await fsp.mkdir(d, { recursive: true, mode: DIR_MODE });
      const st = await fsp.stat(d);
      if (!st.isDirectory()) throw new RendezvousError('request.bad_field', `profile path ${d} is not a directory`);
      if ((st.mode & 0o777) !== DIR_MODE && process.platform !== 'win32') {
        await fsp.chmod(d, DIR_MODE);
        if ((st.mode & 0o077) !== 0) tightened.push(d);
      }
    }
    if (process.platform !== 'win32') {
      const files = [join(this.dir, DOC_FILE), ...(await fsp.readdir(parts)).map((n) => join(parts, n))];
      for (const f of files) {
        try {
          const st = await fsp.lstat(f);
          if (st.isFile() && (st.mode & 0o777) !== FILE_MODE) {
            await fsp.chmod(f, FILE_MODE);
            if ((st.mode & 0o077) !== 0) tightened.push(f);
          }
        } catch (e) {
          if (!isErrno(e, 'ENOENT')) throw e;
        }
      }
    }
    return { created, tightened };
  }

  #partPath(name: string): string {
    checkPartName(name);
    return join(this.dir, PARTS_DIR, name);
  }

  async #read(path: string): Promise<Uint8Array | null> {
    await this.prepare();
    try {
      const b = await fsp.readFile(path);
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
  }

  /** Removes temp files in `dir` left by writes that will never finish (dead process, or ours but not in flight). */
  async #cleanTemps(dir: string): Promise<void> {
    for (const name of await fsp.readdir(dir)) {
      const m = TEMP.exec(name);
      if (m === null) continue;
      const path = join(dir, name);
      const pid = Number(m[2]);
      if (pid === process.pid ? inProcessWriting.has(path) : pidAlive(pid)) continue;
      await fsp.rm(path, { force: true });
    }
  }

  /** temp (O_EXCL, 0600) → write → fsync → rename → fsync dir. */
  async #writeAtomic(dir: string, target: string, data: Uint8Array): Promise<void> {
    await this.prepare();
    await this.#cleanTemps(dir);
    const tmp = join(dir, `.${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    inProcessWriting.add(tmp);
    let renamed = false;
    try {
      const fh = await fsp.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
      try {
        await fh.chmod(FILE_MODE); // exact, whatever the umask
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, join(dir, target));
      renamed = true;
      await fsyncDir(dir);
    } finally {
      inProcessWriting.delete(tmp);
      if (!renamed) await fsp.rm(tmp, { force: true });
    }
  }

  load(): Promise<Uint8Array | null> {
    return this.#read(join(this.dir, DOC_FILE));
  }

  save(doc: Uint8Array): Promise<void> {
    return this.#writeAtomic(this.dir, DOC_FILE, doc);
  }

  async loadPart(name: string): Promise<Uint8Array | null> {
    return this.#read(this.#partPath(name));
  }

  async savePart(name: string, bytes: Uint8Array): Promise<void> {
    checkPartName(name);
    await this.#writeAtomic(join(this.dir, PARTS_DIR), name, bytes);
  }

  async deletePart(name: string): Promise<void> {
    const path = this.#partPath(name);
    await this.prepare();
    try {
      await fsp.unlink(path);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      throw e;
    }
    await fsyncDir(join(this.dir, PARTS_DIR));
  }

  async listParts(): Promise<string[]> {
    await this.prepare();
    const names = await fsp.readdir(join(this.dir, PARTS_DIR));
    return names.filter((n) => /^[a-z0-9-]{1,64}$/.test(n)).sort();
  }

  /** Path of the lock file (for messages). */
  get lockPath(): string {
    return join(this.dir, LOCK_FILE);
  }

  /**
   * Runs `fn` holding the profile's exclusive lock. Another live process holding it →
   * `store.conflict` 'profile is in use by process N'. A lock left by a dead process of this
   * host is taken over. Calls from this process queue; a nested call runs directly.
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const held = lockContext.getStore();
    if (held?.has(this.dir)) return fn();
    let state = inProcess.get(this.dir);
    if (state === undefined) {
      state = { tail: Promise.resolve(), held: false };
      inProcess.set(this.dir, state);
    }
    const s = state;
    const run = s.tail.then(async () => {
      await this.prepare();
      const token = await this.#acquire();
      s.held = true;
      try {
        return await lockContext.run(new Set([...(held ?? []), this.dir]), fn);
      } finally {
        s.held = false;
        await this.#release(token);
      }
    });
    s.tail = run.catch(() => undefined);
    return run;
  }

  async #acquire(): Promise<string> {
    const path = this.lockPath;
    const content = `${process.pid}\n${hostname()}\n`;
    // A live holder is usually a short command, or a long one (watch, device link) between its
    // short turns: wait for it a while rather than fail at once.
    const deadline = Date.now() + this.lockWaitMs;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const fh = await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
        try {
          await fh.writeFile(content);
          await fh.sync();
        } finally {
          await fh.close();
        }
        return content;
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) throw e;
      }
      const seen = await this.#readLock();
      if (seen === null) continue; // released meanwhile
      if (!this.#isStale(seen)) {
        if (Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 25 + Math.random() * 50));
          attempt--;
          continue;
        }
        const pid = parseInt(seen.content, 10);
        const who = Number.isInteger(pid) && pid > 0 ? `process ${pid}` : 'another process';
        const host = seen.content.split('\n')[1];
        throw new RendezvousError(
          'store.conflict',
          `profile is in use by ${who}${host && host !== hostname() ? ` on host ${host}` : ''} ` +
            `(if it is not, delete ${path})`,
          { pid: Number.isInteger(pid) ? pid : null, lockFile: path },
        );
      }
      await this.#takeOver(seen.content);
    }
    throw new RendezvousError('store.conflict', `could not take the profile lock ${path}: retry`, { lockFile: path });
  }

  async #readLock(): Promise<{ content: string; mtimeMs: number } | null> {
    try {
      const [content, st] = await Promise.all([fsp.readFile(this.lockPath, 'utf8'), fsp.stat(this.lockPath)]);
      return { content, mtimeMs: st.mtimeMs };
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
  }

  /** A lock is stale when its process is dead on this host (or it is ours yet not held: pid reuse). */
  #isStale(seen: { content: string; mtimeMs: number }): boolean {
    const m = /^(\d+)\n(.*)\n$/.exec(seen.content);
    if (m === null) return Date.now() - seen.mtimeMs > LOCK_GRACE_MS; // creator crashed before writing
    const pid = Number(m[1]);
    if (m[2] !== hostname()) return false; // cannot tell from here
    if (pid === process.pid) return !(inProcess.get(this.dir)?.held ?? false);
    return !pidAlive(pid);
  }

  /**
   * Removes a stale lock, guarded by a short-lived takeover file so that two processes taking
   * over at once cannot both remove it (one of them would remove the other's fresh lock).
   */
  async #takeOver(staleContent: string): Promise<void> {
    const guard = join(this.dir, TAKEOVER_FILE);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(guard, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
      // Another process is taking over right now (held for microseconds); a guard older than the
      // grace period was left by a crash and is removed.
      const st = await fsp.stat(guard).catch(() => null);
      if (st !== null && Date.now() - st.mtimeMs > LOCK_GRACE_MS) await fsp.rm(guard, { force: true });
      else await new Promise((r) => setTimeout(r, 20));
      return;
    }
    try {
      await fh.close();
      const now = await this.#readLock();
      if (now !== null && now.content === staleContent) await fsp.rm(this.lockPath, { force: true });
    } finally {
      await fsp.rm(guard, { force: true });
    }
  }

  async #release(content: string): Promise<void> {
    const now = await this.#readLock();
    if (now !== null && now.content === content) {
      await fsp.rm(this.lockPath, { force: true });
      await fsyncDir(this.dir).catch(() => undefined);
    }
  }
}
