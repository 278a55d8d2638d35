/**
 * The CLI's side of federation (docs/client.md §Topics hosted on other servers), against a real
 * server process behind the malicious proxy, which plays what a second server would add: a
 * witness's cosignature in the topic summary, the key list of `/v1/servers/:name`, and the
 * `202 {pending: true}` of a post whose host is unreachable.
 */
import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  decodeCheckpoint,
  encodeCheckpoint,
  encodeCosignature,
  fromBase64url,
  serverKeyId,
  signCosignature,
  toBase64url,
} from '@rendezvous/protocol';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import { adminPin, cleanup, runCli, start, tempDir, type ServerProcess } from '../../server/test/process.ts';
import { MaliciousProxy } from '../../client/test/malicious/proxy.ts';

const serverSeed = new Uint8Array(randomBytes(32));
const witnessSeed = new Uint8Array(randomBytes(32));
let server: ServerProcess;
let proxy: MaliciousProxy;
const profiles = new Map<string, string>();
const users = new Map<string, string>();

const as = (name: string, ...args: string[]) => runCli([...args, '--profile', profiles.get(name)!]);
async function ok(name: string, ...args: string[]): Promise<string> {
  const r = await as(name, ...args);
  assert.equal(r.code, 0, `rendezvous ${args.join(' ')} as ${name} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(async () => {
  server = await start(tempDir('rendezvous-fed-cli-'), undefined, { env: { RENDEZVOUS_SERVER_KEY: toBase64url(serverSeed) }, logLevel: 'warn' });
  proxy = new MaliciousProxy(new URL(server.url), serverSeed, server.name);
  await proxy.listen();
  for (const name of ['alice', 'bob']) {
    profiles.set(name, join(tempDir('rendezvous-fed-cli-profile-'), 'profile'));
    const { pin } = await adminPin(server, name);
    const out = await ok(name, 'register', name, '--server', proxy.url, '--pin', pin, '--json');
    users.set(name, JSON.parse(out).user);
  }
});
after(async () => {
  await proxy?.close();
  await cleanup();
});

describe('the CLI with topics across servers', () => {
  it('prints queued for a post and a topic change whose host is unreachable, and shows them once they land', async () => {
    const { id } = JSON.parse(await ok('alice', 'topic', 'create', 'across', '--member', users.get('bob')!, '--json'));
    const pending = {
      rewrite: (req: { route: string }) => (req.route === 'message' || req.route === 'update' ? { pending: true } : undefined),
      status: (req: { route: string }) => (req.route === 'message' || req.route === 'update' ? 202 : undefined),
    };
    proxy.attack(users.get('bob')!, pending);
    const sent = await ok('bob', 'send', 'across', 'sent while the host is down');
    assert.match(sent, new RegExp(`^queued: ${server.name} is unreachable; your message will be delivered when it is back`));
    const json = JSON.parse(await ok('bob', 'send', 'across', 'again', '--json'));
    assert.deepEqual(json, { index: null, pending: true });
    proxy.attack(users.get('alice')!, pending);
    const role = await ok('alice', 'topic', 'role', id, users.get('bob')!, 'observer');
    assert.match(role, /^queued: .* is unreachable; the role change of .* will be delivered when it is back/);
    proxy.reset();
    const read = await ok('alice', 'read', 'across');
    assert.match(read, /sent while the host is down/);
    assert.match(read, /again/);
    assert.match(await ok('alice', 'topic', 'show', 'across'), new RegExp(`${users.get('bob')}  observer`));
  });

  it('shows the witnesses of a topic, and reports a cosignature that does not verify as an alarm', async () => {
    const witnessKey = crypto.ed25519PublicKey(witnessSeed);
    const { id } = JSON.parse(await ok('alice', 'topic', 'create', 'witnessed', '--json'));
    await ok('alice', 'send', 'witnessed', 'one');
    // The real checkpoints that went through the proxy: the witness cosigns the newest.
    const cp = (proxy.checkpoints.get(id) ?? []).map((c) => decodeCheckpoint(fromBase64url(c))).sort((a, b) => b.size - a.size)[0];
    assert.equal(cp?.size, 3, 'the proxy saw the host checkpoint of the topic (create, title, message)');
    const cosig = encodeCosignature(signCosignature(crypto, witnessSeed, { witness: 'beta.test', checkpoint: encodeCheckpoint(cp!), timestamp: Date.now() }));
    const hooks = (witnesses: Uint8Array[]) => ({
      intercept: (req: { route: string; target?: string }) =>
        req.route === 'servers' && req.target === 'beta.test'
          ? { status: 200, body: { server: 'beta.test', keys: [{ publicKey: toBase64url(witnessKey), keyId: toBase64url(serverKeyId(crypto, witnessKey)) }] } }
          : undefined,
      rewrite: (req: { route: string }, body: any) => (req.route === 'topic' ? { ...body, witnesses: witnesses.map(toBase64url), forks: [] } : undefined),
    });
    proxy.attack(users.get('alice')!, hooks([cosig]));
    assert.match(await ok('alice', 'topic', 'show', 'witnessed'), /witnessed by: beta\.test \(at 3 entries\)/);
    const forged = cosig.slice();
    forged[forged.length - 1]! ^= 1;
    proxy.attack(users.get('alice')!, hooks([forged]));
    const r = await as('alice', 'sync');
    assert.equal(r.code, 1, `a dropped cosignature is an alarm:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /ALARM crypto\.bad_signature: a cosignature of beta\.test was dropped/);
    proxy.reset();
  });
});

