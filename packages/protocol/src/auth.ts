/**
 * Device authentication to the home server (spec §5.3).
 *
 * The server hands a device a random single-use challenge; the device answers with a signature
 * by its Device Key over the server's name and the challenge, and gets a session token. Naming
 * the server makes a proof useless at any other server; the challenge makes it single-use.
 *
 *     SessionProof content = struct { opaque server<V>; opaque device_key[32]; opaque challenge[32]; }
 *     signature = SignWithLabel(device_key, "session", content)
 */
import { Writer } from './encoding.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { SignLabel, requireSignature, signWithLabel } from './sign.ts';

export const CHALLENGE_SIZE = 32;

function content(server: string, deviceKey: Uint8Array, challenge: Uint8Array): Uint8Array {
  return new Writer(128).string(server).fixed(deviceKey, 32).fixed(challenge, CHALLENGE_SIZE).finish();
}

export function signSessionProof(crypto: CryptoProvider, deviceSeed: Uint8Array, server: string, challenge: Uint8Array): Uint8Array {
  return signWithLabel(crypto, deviceSeed, SignLabel.session, content(server, crypto.ed25519PublicKey(deviceSeed), challenge));
}

/** Throws `crypto.bad_signature` unless `signature` proves `deviceKey` answered `challenge` for `server`. */
export function verifySessionProof(
  crypto: CryptoProvider,
  deviceKey: Uint8Array,
  server: string,
  challenge: Uint8Array,
  signature: Uint8Array,
): void {
  requireSignature(crypto, deviceKey, SignLabel.session, content(server, deviceKey, challenge), signature, 'session proof');
}
