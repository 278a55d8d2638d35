/**
 * Secret bytes that redact themselves (isomorphic: no node:* import).
 *
 * A `Secret` never shows its bytes by accident: `String(s)`, template literals, `JSON.stringify`,
 * `util.inspect` / `console.log` (Node) all give a redacted placeholder. The bytes are reachable
 * only through `expose()`, so every place that uses them is greppable.
 *
 * The bytes are kept in a module-private WeakMap rather than in a `#private` field: Node's
 * `util.inspect` hides private fields, but browser devtools show them when an object is logged,
 * and a WeakMap entry is visible to neither.
 */
import type { Random } from '@rendezvous/protocol';

/** The placeholder every redacted value prints as. */
export const REDACTED = '[redacted]';

const INSPECT = Symbol.for('nodejs.util.inspect.custom');
const store = new WeakMap<Secret, Uint8Array>();

export class Secret {
  /**
   * Takes ownership of `bytes` (no copy), so `wipe()` clears the only copy the caller handed over.
   * Pass `bytes.slice()` to keep an independent copy.
   */
  constructor(bytes: Uint8Array) {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('Secret: expected a Uint8Array');
    store.set(this, bytes);
  }

  /** `n` fresh bytes from the injected randomness. */
  static random(n: number, random: Random): Secret {
    const b = random(n);
    if (b.length !== n) throw new TypeError('Secret.random: the random source returned the wrong length');
    return new Secret(b);
  }

  /** The bytes themselves (not a copy: do not keep or mutate them). Every use is deliberate. */
  expose(): Uint8Array {
    return store.get(this)!;
  }

  get length(): number {
    return store.get(this)!.length;
  }

  /** Constant-time in the contents (length is not secret). */
  equals(other: Secret | Uint8Array): boolean {
    const a = store.get(this)!;
    const b = other instanceof Secret ? other.expose() : other;
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
    return d === 0;
  }

  /** Overwrites the bytes with zeros (best effort: copies made by `expose()` users are not reached). */
  wipe(): void {
    store.get(this)!.fill(0);
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [INSPECT](): string {
    return '[Secret redacted]';
  }
}
