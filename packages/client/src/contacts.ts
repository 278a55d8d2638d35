/**
 * Contacts: the identity keys this device trusts, pinned on first contact, and safety numbers
 * to compare them out of band (docs/client.md §Contacts).
 *
 * A server could hand out a key of its own for a user it wants to read. Pinning turns that into
 * a one-time window: once a user's key is pinned, any other key for the same user id is the
 * alarm `identity.changed`, never silently accepted. Comparing safety numbers (in person, or
 * over another channel) closes the window.
 */
import { RendezvousError, Writer, equal, toBase64url, type CryptoProvider } from '@rendezvous/protocol';
import type { IdentityPins } from './topic-mirror.ts';

export interface Contact {
  user: string;
  identityKey: Uint8Array;
  /** When it was pinned (ms), for display. */
  pinnedAt: number;
}

export class Contacts implements IdentityPins {
  private readonly byUser = new Map<string, Contact>();

  constructor(
    private readonly now: () => number,
    contacts: Contact[] = [],
  ) {
    for (const c of contacts) this.byUser.set(c.user, c);
  }

  get(user: string): Contact | undefined {
    return this.byUser.get(user);
  }

  list(): Contact[] {
    return [...this.byUser.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
  }

  check(user: string, identityKey: Uint8Array): void {
    const known = this.byUser.get(user);
    if (known === undefined) {
      this.byUser.set(user, { user, identityKey: identityKey.slice(), pinnedAt: this.now() });
      return;
    }
    if (!equal(known.identityKey, identityKey)) {
      throw new RendezvousError(
        'identity.changed',
        `${user} now presents identity key ${toBase64url(identityKey)}, not the pinned ${toBase64url(known.identityKey)}`,
        { user },
      );
    }
  }

  /**
   * Accepts a new key for `user` after the person has verified it (a new identity after a
   * reinstall): the only way a pinned key changes.
   */
  replace(user: string, identityKey: Uint8Array): void {
    this.byUser.set(user, { user, identityKey: identityKey.slice(), pinnedAt: this.now() });
  }
}

const SAFETY_LABEL = 'rendezvous/v1/safety-number';

/** 30 digits identifying one (user, identity key) pair. */
function fingerprintDigits(crypto: CryptoProvider, user: string, identityKey: Uint8Array): string {
  const input = new Writer(128).string(SAFETY_LABEL).string(user).fixed(identityKey, 32).finish();
  const h = crypto.hkdfExpand(crypto.sha256(input), new Uint8Array(0), 30);
  let out = '';
  // Six 5-byte chunks, each reduced to 5 decimal digits (40 bits mod 10^5: bias below 1e-7).
  for (let i = 0; i < 6; i++) {
    let v = 0n;
    for (let j = 0; j < 5; j++) v = (v << 8n) | BigInt(h[i * 5 + j]!);
    out += (v % 100000n).toString().padStart(5, '0');
  }
  return out;
}

/**
 * The safety number of two users (docs/client.md §Contacts): 60 digits, the same on both
 * sides (the two halves are ordered), shown as 12 groups of 5.
 */
export function safetyNumber(
  crypto: CryptoProvider,
  a: { user: string; identityKey: Uint8Array },
  b: { user: string; identityKey: Uint8Array },
): string {
  const parts = [fingerprintDigits(crypto, a.user, a.identityKey), fingerprintDigits(crypto, b.user, b.identityKey)].sort();
  return (parts[0]! + parts[1]!).match(/.{5}/g)!.join(' ');
}
