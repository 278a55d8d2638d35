/**
 * The profile in a browser: one IndexedDB database with one object store, keyed '' for the
 * document and 'part:<name>' for parts, values Uint8Array. Each write is one readwrite
 * transaction with durability 'strict' and resolves when it has committed.
 *
 * `withLock` uses the Web Locks API (`navigator.locks`) where there is one, so two tabs never
 * interleave writes; elsewhere it only queues the calls of this store object. It is not
 * reentrant: do not call it from inside `fn`.
 */
import { checkPartName, type ProfileStore } from '../profile-store.ts';

const OBJECT_STORE = 'profile';
const DOC_KEY = '';
const PART_PREFIX = 'part:';

function promised<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class IdbProfileStore implements ProfileStore {
  readonly dbName: string;
  readonly #factory: IDBFactory;
  #db: Promise<IDBDatabase> | null = null;
  #tail: Promise<unknown> = Promise.resolve();

  /** `factory` defaults to the global `indexedDB` (pass one in tests, e.g. fake-indexeddb). */
  constructor(dbName: string, factory?: IDBFactory) {
    this.dbName = dbName;
    const f = factory ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (f === undefined) throw new TypeError('IdbProfileStore: IndexedDB is not available here');
    this.#factory = f;
  }

  #open(): Promise<IDBDatabase> {
    if (this.#db === null) {
      this.#db = new Promise<IDBDatabase>((resolve, reject) => {
        const req = this.#factory.open(this.dbName, 1);
        req.onupgradeneeded = () => {
          if (!req.result.objectStoreNames.contains(OBJECT_STORE)) req.result.createObjectStore(OBJECT_STORE);
        };
        req.onsuccess = () => {
          const db = req.result;
          // Another tab upgrading or deleting the database: let it, reopen on next use.
          db.onversionchange = () => {
            db.close();
            this.#db = null;
          };
          resolve(db);
        };
        req.onerror = () => reject(req.error);
        req.onblocked = () => reject(new Error(`IndexedDB ${this.dbName} is blocked by another tab`));
      });
      this.#db.catch(() => {
        this.#db = null;
      });
    }
    return this.#db;
  }

  async #get(key: string): Promise<Uint8Array | null> {
    const db = await this.#open();
    const v: unknown = await promised(db.transaction(OBJECT_STORE, 'readonly').objectStore(OBJECT_STORE).get(key));
    if (v === undefined) return null;
    if (!(v instanceof Uint8Array)) throw new TypeError(`IdbProfileStore: entry '${key}' is not bytes`);
    return v;
  }

  /** Runs `f` in one readwrite transaction; resolves once it has committed. */
  async #write(f: (s: IDBObjectStore) => void): Promise<void> {
    const db = await this.#open();
    const tx = db.transaction(OBJECT_STORE, 'readwrite', { durability: 'strict' });
    const done = new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    });
    f(tx.objectStore(OBJECT_STORE));
    await done;
  }

  load(): Promise<Uint8Array | null> {
    return this.#get(DOC_KEY);
  }

  save(doc: Uint8Array): Promise<void> {
    const copy = doc.slice();
    return this.#write((s) => s.put(copy, DOC_KEY));
  }

  async loadPart(name: string): Promise<Uint8Array | null> {
    checkPartName(name);
    return this.#get(PART_PREFIX + name);
  }

  async savePart(name: string, bytes: Uint8Array): Promise<void> {
    checkPartName(name);
    const copy = bytes.slice();
    await this.#write((s) => s.put(copy, PART_PREFIX + name));
  }

  async deletePart(name: string): Promise<void> {
    checkPartName(name);
    await this.#write((s) => s.delete(PART_PREFIX + name));
  }

  async listParts(): Promise<string[]> {
    const db = await this.#open();
    const keys = await promised(db.transaction(OBJECT_STORE, 'readonly').objectStore(OBJECT_STORE).getAllKeys());
    return keys
      .filter((k): k is string => typeof k === 'string' && k.startsWith(PART_PREFIX))
      .map((k) => k.slice(PART_PREFIX.length))
      .sort();
  }

  /** Exclusive across tabs (Web Locks) where available; otherwise across this object's calls. */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
    if (locks !== undefined) return locks.request(`rendezvous-profile:${this.dbName}`, fn);
    const run = this.#tail.then(fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    const db = this.#db;
    this.#db = null;
    if (db !== null) (await db.catch(() => null))?.close();
  }
}
