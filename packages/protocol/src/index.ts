/**
 * @rendezvous/protocol — the pure protocol core shared by the server and every client
 * (spec: docs/protocol.md). No I/O, no clock, no global randomness: a CryptoProvider and a
 * Random are passed in. Providers live at `@rendezvous/protocol/crypto/node` and
 * `@rendezvous/protocol/crypto/noble` so a browser bundle never pulls in node:crypto; a pool of
 * worker threads that verify Ed25519 signatures (Node) at `@rendezvous/protocol/crypto/node-verify-pool`.
 */
export * from './errors.ts';
export * from './bytes.ts';
export * from './encoding.ts';
export { type Aead, type CryptoProvider, type Random, AEAD_KEY_LENGTH, deterministicRandom } from './crypto/provider.ts';
export * from './crypto/hpke.ts';
export { isCanonicalPoint, isSmallOrderEncoding } from './crypto/ed25519-policy.ts';
export * from './sign.ts';
export * from './keys.ts';
export * from './identity.ts';
export * from './epoch.ts';
export * from './topic.ts';
export * from './message.ts';
export * from './bundle.ts';
export * from './file.ts';
export * from './merkle.ts';
export * from './log.ts';
export * from './topic-builder.ts';
export * from './auth.ts';
export * from './federation.ts';
export * from './verified-signatures.ts';
