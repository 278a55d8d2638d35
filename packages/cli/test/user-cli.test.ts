/**
 * The user commands driven as a person would: spawned `rendezvous` processes with real profile
 * directories against a real server process. Three people; one profile encrypted with a
 * passphrase; an observer refused; safety numbers compared; a whole log re-verified.
 */
import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { adminPin, cleanup, runCli, start, tempDir, type ServerProcess } from '../../server/test/process.ts';

let server: ServerProcess;
const profiles = new Map<string, string>();
const BOB_PASSPHRASE = 'correct horse battery staple';

/** Runs `rendezvous <args> --profile <name's profile>`; bob's profile is encrypted. */
function as(name: string, ...args: string[]) {
  const env: Record<string, string> = name === 'bob' ? { RENDEZVOUS_PASSPHRASE: BOB_PASSPHRASE } : {};
  return runCli([...args, '--profile', profiles.get(name)!], env);
}

async function ok(name: string, ...args: string[]): Promise<string> {
  const r = await as(name, ...args);
  assert.equal(r.code, 0, `rendezvous ${args.join(' ')} as ${name} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(async () => {
  server = await start(tempDir('rendezvous-cli-server-'));
  for (const name of ['alice', 'bob', 'carol']) {
    profiles.set(name, join(tempDir('rendezvous-cli-profile-'), 'profile'));
    const { pin } = await adminPin(server, name);
    const out = await ok(name, 'register', name, '--server', server.url, '--pin', pin, '--json');
    assert.equal(JSON.parse(out).user, `${name}@${server.name}`);
  }
});
after(cleanup);

describe('the rendezvous CLI', () => {
  it('keeps profiles private: 0700 directories, 0600 files; a passphrase encrypts the profile', () => {
    for (const dir of profiles.values()) {
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      assert.equal(statSync(join(dir, 'profile.bin')).mode & 0o777, 0o600);
    }
    const bob = readFileSync(join(profiles.get('bob')!, 'profile.bin'));
    const alice = readFileSync(join(profiles.get('alice')!, 'profile.bin'));
    assert.match(alice.toString(), /"identitySeed"/, 'a profile without a passphrase is plaintext JSON');
    assert.doesNotMatch(bob.toString('latin1'), /identitySeed|bob@/, 'an encrypted profile shows nothing');
  });

  it('creates a topic with members and roles, posts, reads and verifies', async () => {
    const created = JSON.parse(await ok('alice', 'topic', 'create', 'weekend', '--member', 'bob:participant', '--member', 'carol:observer', '--json'));
    assert.match(created.id, /^[A-Za-z0-9_-]{22}$/);
    await ok('alice', 'send', 'weekend', 'hiking', 'on', 'saturday?');
    await ok('bob', 'sync');
    await ok('bob', 'send', created.id, 'count me in');
    const refused = await as('carol', 'send', 'weekend', 'me too');
    assert.equal(refused.code, 0 === refused.code ? -1 : refused.code, 'an observer cannot post');
    assert.match(refused.stderr, /topic\.read_only/);
    for (const name of ['alice', 'bob', 'carol']) {
      const read = JSON.parse(await ok(name, 'read', 'weekend', '--json'));
      assert.deepEqual(
        read.messages.filter((m: { type: string }) => m.type === 'text').map((m: { sender: string; text: string }) => [m.sender.split('@')[0], m.text]),
        [
          ['alice', 'hiking on saturday?'],
          ['bob', 'count me in'],
        ],
      );
    }
    const show = JSON.parse(await ok('carol', 'topic', 'show', 'weekend', '--json'));
    assert.equal(show.role, 'observer');
    const v = JSON.parse(await ok('bob', 'verify', 'weekend', '--json'));
    assert.equal(v.size, 4);
    assert.match(v.root, /^[0-9a-f]{64}$/);
  });

  it('shows the same safety number on both sides and lists pinned contacts', async () => {
    const a = JSON.parse(await ok('alice', 'safety-number', 'bob', '--json')).safetyNumber;
    const b = JSON.parse(await ok('bob', 'safety-number', 'alice', '--json')).safetyNumber;
    assert.equal(a, b);
    const contacts = JSON.parse(await ok('carol', 'contacts', '--json')).contacts.map((c: { user: string }) => c.user.split('@')[0]);
    assert.deepEqual(contacts.sort(), ['alice', 'bob', 'carol']);
  });

  it('changes roles and removes members from the command line', async () => {
    await ok('alice', 'topic', 'role', 'weekend', 'carol', 'participant');
    await ok('carol', 'send', 'weekend', 'now I can talk');
    await ok('alice', 'topic', 'remove', 'weekend', 'bob');
    const list = JSON.parse(await ok('bob', 'topic', 'list', '--json'));
    assert.equal(list.topics[0].role, null, 'bob is no longer a member');
    const r = await as('bob', 'send', 'weekend', 'hello?');
    assert.notEqual(r.code, 0);
  });

  it('registers, lists and removes a push subscription of this device', async () => {
    assert.match(await ok('carol', 'push', 'providers'), /webpush/);
    // The browser's key must be a valid P-256 point: take one from node's ECDH.
    const ecdh = (await import('node:crypto')).createECDH('prime256v1');
    ecdh.generateKeys();
    const sub = JSON.parse(
      await ok('carol', 'push', 'subscribe', '--endpoint', 'https://93.184.216.34/push/cli', '--p256dh', ecdh.getPublicKey().toString('base64url'), '--auth', Buffer.alloc(16, 1).toString('base64url'), '--json'),
    );
    assert.equal(sub.kind, 'webpush');
    const list = JSON.parse(await ok('carol', 'push', 'list', '--json')).subscriptions;
    assert.deepEqual(list.map((x: { id: string }) => x.id), [sub.id]);
    assert.match(await ok('carol', 'push', 'remove', sub.id), /removed/);
    assert.match(await ok('carol', 'push', 'list'), /no push subscriptions/);
    const missing = await as('carol', 'push', 'subscribe', '--endpoint', 'https://93.184.216.34/x');
    assert.equal(missing.code, 2, 'a Web Push subscription without its keys is a usage error');
  });

  it('sets, changes and removes a profile passphrase', async () => {
    const dir = profiles.get('alice')!;
    const file = () => readFileSync(join(dir, 'profile.bin'));
    const noTerminal = await runCli(['profile', 'passphrase', '--profile', dir]);
    assert.equal(noTerminal.code, 1, 'no terminal to ask on, and no RENDEZVOUS_NEW_PASSPHRASE');
    assert.match(noTerminal.stderr, /RENDEZVOUS_NEW_PASSPHRASE/);
    const set = await runCli(['profile', 'passphrase', '--profile', dir], { RENDEZVOUS_NEW_PASSPHRASE: 'first one' });
    assert.equal(set.code, 0, set.stderr);
    assert.doesNotMatch(file().toString('latin1'), /identitySeed/, 'now encrypted');
    const denied = await runCli(['whoami', '--profile', dir], { RENDEZVOUS_PASSPHRASE: 'not it' });
    assert.equal(denied.code, 1);
    const changed = await runCli(['profile', 'passphrase', '--profile', dir], { RENDEZVOUS_PASSPHRASE: 'first one', RENDEZVOUS_NEW_PASSPHRASE: 'second one' });
    assert.equal(changed.code, 0, changed.stderr);
    const who = await runCli(['whoami', '--json', '--profile', dir], { RENDEZVOUS_PASSPHRASE: 'second one' });
    assert.equal(JSON.parse(who.stdout).user.split('@')[0], 'alice');
    const removed = await runCli(['profile', 'passphrase', '--profile', dir], { RENDEZVOUS_PASSPHRASE: 'second one', RENDEZVOUS_NEW_PASSPHRASE: '' });
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(file().toString(), /"identitySeed"/, 'plaintext again');
    await ok('alice', 'read', 'weekend');
  });

  it('says what went wrong and what to do next, with a non-zero exit code', async () => {
    const wrong = await runCli(['whoami', '--profile', profiles.get('bob')!], { RENDEZVOUS_PASSPHRASE: 'not it' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /crypto\.decrypt_failed[\s\S]*passphrase/);
    const unknown = await as('alice', 'read', 'no-such-topic');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /topic list/);
    const usage = await as('alice', 'topic', 'frobnicate');
    assert.equal(usage.code, 2);
  });
});
