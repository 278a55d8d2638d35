/**
 * A VerifyPool worker (node-verify-pool.ts): verifies packed (public key, message, signature)
 * triples with the node provider's ed25519Verify, the strict pinned policy of protocol spec
 * §3.2 (the very function the main thread would call), and answers 1 (valid) or 0 per triple.
 */
import { parentPort } from 'node:worker_threads';
import { nodeCrypto } from './node.ts';
import { unpackTriples } from './node-verify-pool-pack.ts';

const port = parentPort;
if (port === null) throw new Error('verify-worker: not a worker thread');
port.on('message', (req: { id: number; packed: ArrayBuffer }) => {
  let answer: Uint8Array<ArrayBuffer>;
  try {
    const triples = unpackTriples(new Uint8Array(req.packed));
    answer = new Uint8Array(new ArrayBuffer(triples.length));
    for (let i = 0; i < triples.length; i++) {
      const t = triples[i]!;
      answer[i] = nodeCrypto.ed25519Verify(t.publicKey, t.message, t.signature) ? 1 : 0;
    }
  } catch (e) {
    port.postMessage({ id: req.id, error: String(e) });
    return;
  }
  port.postMessage({ id: req.id, answer }, [answer.buffer]);
});
