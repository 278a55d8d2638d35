/**
 * The pool of worker threads that verify Ed25519 signatures, the SignatureVerifier a Node
 * client gives its sync (ClientOptions.signatureVerifier), so that a new device verifies a long
 * topic on every core (issue 7). The pool itself is the protocol package's
 * (`@rendezvous/protocol/crypto/node-verify-pool`, shared with the server); see page-verify.ts
 * for how its answers are used, and why a wrong, slow or failed pool can never make a bad
 * signature pass.
 */
import { VerifyPool } from '@rendezvous/protocol/crypto/node-verify-pool';

export { VerifyPool, type VerifyPoolOptions } from '@rendezvous/protocol/crypto/node-verify-pool';

let shared: VerifyPool | null = null;

/** One pool per process, made on first use (idle workers are unreferenced and cost no CPU). */
export function sharedVerifyPool(): VerifyPool {
  return (shared ??= new VerifyPool());
}
