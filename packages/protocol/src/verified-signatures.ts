/**
 * Signatures already verified elsewhere (on a worker thread: a client's parallel sync, the
 * server's message posts), kept so that the check that follows (a TopicMirror, checkMessage)
 * skips verifying them a second time.
 *
 * The one rule that keeps this safe: `take` answers true only for a (public key, signed bytes,
 * signature) triple that is byte for byte one that was added, i.e. one the provider's strict
 * Ed25519 verification (protocol spec §3.2) accepted. Ed25519 verification is a deterministic
 * function of those three byte strings, so the answer is the one an inline verification would
 * give. Anything else (another key, one byte of another message, another root in the signed
 * bytes, a triple never added, or one already taken) answers false, and the caller verifies
 * inline as it always did. Only ever add triples that verified as valid.
 *
 * Pure: no I/O; usable in browsers.
 */
import { equal } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';

export interface SignatureTriple {
  readonly publicKey: Uint8Array;
  /** The exact bytes the signature covers (for a message: messageSignedContent). */
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
}

/** Keyed by the signature's bytes (one char per byte). */
function keyOf(signature: Uint8Array): string {
  return String.fromCharCode.apply(null, signature as unknown as number[]);
}

export class VerifiedSignatures {
  private readonly byKey = new Map<string, SignatureTriple>();

  /** At most `max` triples are held; adds beyond it are dropped (they are verified inline). */
  constructor(private readonly max = 65_536) {}

  get size(): number {
    return this.byKey.size;
  }

  /**
   * Records a triple that verified as valid. The arrays are kept as given: the caller must not
   * change them afterwards (copy them if it cannot promise that).
   */
  add(t: SignatureTriple): void {
    if (this.byKey.size >= this.max) return;
    this.byKey.set(keyOf(t.signature), t);
  }

  /** Forgets a triple added before (if it is still held and is that very triple). */
  remove(t: SignatureTriple): void {
    const k = keyOf(t.signature);
    if (this.byKey.get(k) === t) this.byKey.delete(k);
  }

  /**
   * True iff exactly this triple was added (and not taken yet); it is then forgotten, so each
   * verification is used at most once.
   */
  take(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!(publicKey instanceof Uint8Array) || !(message instanceof Uint8Array) || !(signature instanceof Uint8Array)) return false;
    const k = keyOf(signature);
    const t = this.byKey.get(k);
    if (t === undefined) return false;
    if (!equal(t.signature, signature) || !equal(t.publicKey, publicKey) || !equal(t.message, message)) return false;
    this.byKey.delete(k);
    return true;
  }

  clear(): void {
    this.byKey.clear();
  }
}

/**
 * `crypto` with ed25519Verify answering from `verified` first, and from `crypto` for every
 * triple it does not hold. Every other function is `crypto`'s own.
 */
export function withVerifiedSignatures(crypto: CryptoProvider, verified: VerifiedSignatures): CryptoProvider {
  const p: CryptoProvider = Object.create(crypto) as CryptoProvider;
  Object.defineProperty(p, 'ed25519Verify', {
    value: (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean =>
      verified.take(publicKey, message, signature) || crypto.ed25519Verify(publicKey, message, signature),
  });
  return p;
}
