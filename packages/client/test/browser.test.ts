/**
 * The client SDK in a real browser (issue 4: "runs in Node and in the browser; no Node-only
 * imports in its core; browser: IndexedDB").
 *
 * 1. The isomorphic entry, the IndexedDB store and the @noble provider are bundled by esbuild
 *    for the browser; any node:* (or bare Node built-in) import fails the build, and the test
 *    asserts the bundle has none (and, as a control, that the guard does fail on the Node entry).
 * 2. Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) loads the bundle
 *    from a tiny loopback HTTP server. The Rendezvous server sends no CORS headers, so that
 *    server also proxies `/v1/*`, `/.well-known/*` and the `/v1/ws` upgrade to the Rendezvous
 *    server: page and API share one origin, as behind a reverse proxy.
 * 3. In the page, alice registers, creates a topic with bob (a Node client here), and sends; bob
 *    reads it verified and replies; the page reads the reply; the page reopens its profile from
 *    IndexedDB (in place and after a reload) and still has everything; the live iterator gets a
 *    message over the browser's WebSocket (first-frame auth). The page's console shows no secret.
 * 4. What devtools shows when the logged client is expanded (DevTools protocol): no seed,
 *    secret or token.
 *
 * Without /usr/bin/chromium the browser part is skipped with a message (.ci/run installs it).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Duplex } from 'node:stream';
import { build, type Metafile, type Plugin } from 'esbuild';
import type { Browser, Page } from 'playwright-core';
import { nodeCrypto as crypto } from '@rendezvous/protocol/crypto/node';
import type { RunningServer } from '@rendezvous/server';
import { ADMIN_TOKEN, issuePin, overHttp, socketServer } from '../../server/test/helpers.ts';
import { RendezvousClient } from '../src/client.ts';
import { MemoryProfileStore } from '../src/profile-store.ts';
import type { BrowserApi } from './browser/entry.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..', '..');
const ENTRY = join(HERE, 'browser', 'entry.ts');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const NAME = 'browser.test';

// ---- bundling ---------------------------------------------------------------------------------

const BUILTIN = new RegExp(`^(node:|(${builtinModules.map((m) => m.replace(/[/]/g, '\\/')).join('|')})(/|$))`);

/** Fails the build on any Node built-in import, naming who imported it. */
function noNodeBuiltins(found: string[]): Plugin {
  return {
    name: 'no-node-builtins',
    setup(b) {
      b.onResolve({ filter: BUILTIN }, (a) => {
        const who = relative(ROOT, a.importer);
        found.push(`${a.path} (imported by ${who})`);
        return { errors: [{ text: `Node-only import '${a.path}' in a browser bundle (imported by ${who})` }] };
      });
    },
  };
}

async function bundle(o: { entry?: string; stdin?: string }): Promise<{ code: string; metafile: Metafile; nodeImports: string[] }> {
  const nodeImports: string[] = [];
  const r = await build({
    ...(o.entry !== undefined ? { entryPoints: [o.entry] } : { stdin: { contents: o.stdin ?? '', resolveDir: HERE, loader: 'ts', sourcefile: 'stdin.ts' } }),
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
    absWorkingDir: ROOT,
    plugins: [noNodeBuiltins(nodeImports)],
  });
  const out = r.outputFiles[0];
  assert.ok(out !== undefined, 'esbuild wrote one output file');
  return { code: out.text, metafile: r.metafile, nodeImports };
}

// ---- the page's server: static files plus a same-origin proxy to the Rendezvous server ---------

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>rendezvous browser test</title></head>
<body><script type="module" src="/bundle.js"></script></body></html>
`;

function isApi(url: string): boolean {
  return url.startsWith('/v1/') || url.startsWith('/.well-known/');
}

async function pageServer(js: string, api: URL): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Duplex>();
  const target = { host: api.hostname, port: Number(api.port) };
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (isApi(url)) {
      const up = request({ ...target, method: req.method, path: url, headers: { ...req.headers, host: api.host } }, (r: IncomingMessage) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
      return;
    }
    if (url === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const file = url === '/' ? { type: 'text/html; charset=utf-8', body: PAGE } : url === '/bundle.js' ? { type: 'text/javascript; charset=utf-8', body: js } : null;
    if (file === null || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body);
  });
  // The WebSocket upgrade: replay the request line and headers upstream, then splice the sockets.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (!isApi(req.url ?? '')) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    const up: Socket = connect(target.port, target.host, () => {
      let lines = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${lines}\r\n`);
      if (head.length > 0) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => sockets.delete(up));
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  assert.ok(addr !== null && typeof addr === 'object', 'the page server listens on a TCP port');
  return {
    url: `http://127.0.0.1:${addr.port}`,
    async close() {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---- the test ---------------------------------------------------------------------------------

describe('the client SDK in the browser', () => {
  let js: string | undefined;

  it('bundles for the browser with no Node-only import (esbuild, platform browser)', async () => {
    const started = performance.now();
    const b = await bundle({ entry: ENTRY });
    assert.deepEqual(b.nodeImports, [], 'no node:* or Node built-in import reaches the browser bundle');
    const inputs = Object.keys(b.metafile.inputs);
    const nodeOnly = inputs.filter((p) => p.includes('/src/node/') || p.endsWith('/crypto/node.ts') || p.includes('node_modules/ws/'));
    assert.deepEqual(nodeOnly, [], 'none of the SDK or protocol Node-only modules (file store, ws, node:crypto provider) is bundled');
    for (const needed of ['packages/client/src/client.ts', 'packages/client/src/browser/idb-store.ts', 'packages/protocol/src/crypto/noble.ts']) {
      assert.ok(inputs.includes(needed), `${needed} is in the bundle`);
    }
    js = b.code;
    console.log(`# bundle: ${(b.code.length / 1024).toFixed(0)} KiB, ${inputs.length} modules, ${(performance.now() - started).toFixed(0)} ms`);
  });

  it('the guard is real: bundling the Node entry for the browser fails on its node:* import', async () => {
    await assert.rejects(bundle({ stdin: "export * from '@rendezvous/client/node';" }), (e: Error) => {
      assert.match(e.message, /Node-only import 'node:[a-z_/]+'/);
      return true;
    });
  });

  describe('in headless Chromium', () => {
    const missing = !existsSync(CHROMIUM);
    let running: Awaited<ReturnType<typeof socketServer>> | undefined;
    let server: RunningServer;
    let page: { url: string; close(): Promise<void> } | undefined;
    let browser: Browser | undefined;
    let tab: Page;
    const consoleLines: string[] = [];
    const pageErrors: string[] = [];
    const badResponses: string[] = [];

    /** Calls `rvz[fn](...args)` in the page. */
    function rvz<K extends keyof BrowserApi>(fn: K, ...args: Parameters<BrowserApi[K]>): Promise<Awaited<ReturnType<BrowserApi[K]>>> {
      return tab.evaluate(
        ([f, a]) => (window as unknown as { rvz: Record<string, (...x: unknown[]) => unknown> }).rvz[f]!(...a),
        [fn, args] as [string, unknown[]],
      ) as Promise<Awaited<ReturnType<BrowserApi[K]>>>;
    }

    const pin = (user: string) => issuePin(overHttp(server.url), `${user}@${NAME}`);

    async function load(): Promise<void> {
      await tab.goto(`${page!.url}/`);
      await tab.waitForFunction(() => 'rvz' in window, undefined, { timeout: 10_000 });
    }

    before(async () => {
      if (missing) return;
      js ??= (await bundle({ entry: ENTRY })).code;
      running = await socketServer(NAME);
      server = running.server;
      page = await pageServer(js, new URL(server.url));
      const { chromium } = await import('playwright-core');
      // launch() gives Chromium a fresh temporary --user-data-dir and removes it on close.
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 20_000 });
      tab = await browser.newPage();
      tab.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
      tab.on('pageerror', (e) => pageErrors.push(String(e)));
      tab.on('response', (r) => {
        if (r.status() >= 400) badResponses.push(`${r.status()} ${r.request().method()} ${r.url()}`);
      });
      await load();
    });

    after(async () => {
      await browser?.close();
      await page?.close();
      await running?.close();
    });

    it('registers, talks with a Node client, persists in IndexedDB, watches live, and logs no secret', { timeout: 60_000 }, async (t) => {
      if (missing) {
        t.skip(`chromium not installed: ${CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)`);
        return;
      }
      const env = await rvz('environment');
      assert.deepEqual(
        [env.indexedDB, env.locks, env.webCrypto, env.WebSocket, env.isSecureContext],
        [true, true, true, true, true],
        `the page has IndexedDB, Web Locks, WebCrypto randomness and WebSocket in a secure context: ${JSON.stringify(env)}`,
      );

      // bob: a Node client with node:crypto, straight to the server.
      const bob = await RendezvousClient.register({ store: new MemoryProfileStore(), crypto, server: server.url, user: 'bob', pin: await pin('bob'), pool: { prekeys: 5, topicKeys: 5 } });

      // alice: in the page, @noble crypto, IndexedDB, the browser's fetch, the page's origin.
      const alice = await rvz('register', page!.url, 'alice', await pin('alice'));
      assert.equal(alice.user, `alice@${NAME}`);
      const shown = `RendezvousClient { user: alice@${NAME}, device: ${alice.deviceId} }`;
      assert.equal(alice.string, shown, 'String(client) in the page shows who, not what');
      assert.equal(alice.template, shown, 'a template literal shows the same');
      assert.deepEqual(JSON.parse(alice.json), { user: `alice@${NAME}`, deviceId: alice.deviceId, server: page!.url }, 'JSON.stringify(client) holds no secret');

      const topic = await rvz('createTopic', ['bob'], 'browser');
      await rvz('send', topic, 'hello from chromium');

      await bob.sync();
      assert.deepEqual(
        bob.messages(topic).filter((m) => m.type === 'text').map((m) => [m.sender, m.text]),
        [[`alice@${NAME}`, 'hello from chromium']],
        'bob (Node) reads what the browser sent, verified',
      );
      assert.deepEqual(bob.topic(topic).alarms, [], 'bob raises no alarm');
      assert.equal(bob.topic(topic).title, 'browser');
      await bob.send(topic, { text: 'hi from node' });

      const report = await rvz('sync');
      assert.deepEqual(report.topics.map((x) => [x.id, x.alarms, x.halted]), [[topic, [], null]], 'the browser syncs with no alarm');
      const expected = [
        [`alice@${NAME}`, 'hello from chromium'],
        [`bob@${NAME}`, 'hi from node'],
      ];
      const texts = async () => (await rvz('messages', topic)).filter((m) => m.type === 'text').map((m) => [m.sender, m.text]);
      assert.deepEqual(await texts(), expected, 'the browser reads the reply');
      assert.equal(await rvz('safetyNumber', 'bob'), bob.safetyNumber('alice'), 'noble (browser) and node:crypto (Node) agree on the safety number');

      // Persistence: a new client over the same IndexedDB database, then again after a reload.
      const reopened = await rvz('reopen');
      assert.equal(reopened.deviceId, alice.deviceId);
      assert.deepEqual(await texts(), expected, 'a reopened client has the messages');
      await load();
      const reloaded = await rvz('open', 'alice');
      assert.equal(reloaded.deviceId, alice.deviceId, 'after a page reload the profile opens from IndexedDB');
      const topics = await rvz('topics');
      assert.deepEqual(
        topics.map((x) => [x.id, x.title, x.members, x.alarms, x.halted]),
        [[topic, 'browser', [[`alice@${NAME}`, 'admin'], [`bob@${NAME}`, 'participant']], [], null]],
        'the topic survives the reload, verified',
      );
      assert.deepEqual(await texts(), expected, 'so do the messages');
      await rvz('send', topic, 'after the reload');
      await bob.sync();
      assert.deepEqual(
        bob.messages(topic).filter((m) => m.type === 'text').map((m) => m.text),
        ['hello from chromium', 'hi from node', 'after the reload'],
        'the reloaded browser client posts, and bob verifies it',
      );

      // Live: the browser's WebSocket (no headers there, so first-frame auth) through the proxy.
      await rvz('startLive');
      await bob.send(topic, { text: 'live from node' });
      const seen: unknown[] = [];
      const deadline = Date.now() + 10_000;
      let got = false;
      while (!got && Date.now() < deadline) {
        const item = await rvz('nextLive', Math.max(1, deadline - Date.now()));
        if (item === 'timeout' || item === 'done') break;
        seen.push(item);
        assert.ok(!('alarm' in item), `no alarm on the live path: ${JSON.stringify(item)}`);
        got = item.topic === topic && item.message.text === 'live from node' && item.message.sender === `bob@${NAME}`;
      }
      assert.ok(got, `the live iterator delivers bob's message in the browser (saw ${JSON.stringify(seen)})`);
      assert.equal(await rvz('stopLive'), true, 'the live loop ends once its item was taken');

      // Nothing secret in the console, and the scan saw the page's deliberate log of the client.
      assert.deepEqual(pageErrors, [], 'no uncaught error in the page');
      assert.deepEqual(badResponses, [], 'every request of the page succeeded (through the same-origin proxy)');
      assert.ok(
        consoleLines.some((l) => l.includes(`registered ${shown}`)),
        `the page's log of the client was captured: ${JSON.stringify(consoleLines)}`,
      );
      const leaks = consoleLines.filter((l) => /seed|secret|token/i.test(l));
      assert.deepEqual(leaks, [], 'no console message mentions a seed, secret or token');
    });

    // The Node inspect hook does not apply in browsers, and devtools shows plain (and #private)
    // properties of a logged object: the client keeps its profile document, the API its token and
    // the mirrors their epoch secrets in module WeakMaps instead.
    it(
      'a client logged to the console shows devtools no secret when expanded',
      { timeout: 30_000 },
      async (t) => {
        if (missing) {
          t.skip(`chromium not installed: ${CHROMIUM} is missing`);
          return;
        }
        // What devtools shows: the console event's object, expanded through the DevTools protocol.
        const cdp = await tab.context().newCDPSession(tab);
        const logged: { args: { objectId?: string; className?: string }[] }[] = [];
        cdp.on('Runtime.consoleAPICalled', (e) => logged.push(e));
        await cdp.send('Runtime.enable');
        await rvz('register', page!.url, 'carol', await pin('carol'));
        const deadline = Date.now() + 5_000;
        while (!logged.some((e) => e.args.some((a) => a.className?.includes('RendezvousClient'))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        const client = logged.flatMap((e) => e.args).find((a) => a.className?.includes('RendezvousClient'));
        assert.ok(client?.objectId !== undefined, 'the page logged the client as an object');
        const shown: string[] = [];
        const seen = new Set<string>();
        async function expand(objectId: string, path: string, depth: number): Promise<void> {
          if (depth > 3 || seen.has(objectId)) return;
          seen.add(objectId);
          const r = await cdp.send('Runtime.getProperties', { objectId, ownProperties: true });
          for (const p of [...r.result, ...(r.privateProperties ?? [])]) {
            const at = `${path}.${p.name}`;
            if (/seed|secret|token/i.test(p.name) && p.value?.type !== 'function') shown.push(at);
            if (p.value?.type === 'object' && p.value.objectId !== undefined) await expand(p.value.objectId, at, depth + 1);
          }
        }
        await expand(client.objectId, 'client', 0);
        await cdp.detach();
        const names = shown.map((x) => x.replace(/\.[A-Za-z0-9_-]{43}\./, '.<key id>.')).filter((x, i, a) => a.indexOf(x) === i);
        assert.deepEqual(names, [], 'no seed, secret or token is one click away in devtools');
      },
    );
  });
});
