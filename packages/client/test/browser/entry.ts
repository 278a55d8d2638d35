/**
 * The browser side of packages/client/test/browser.test.ts: bundled by esbuild for the browser
 * (platform 'browser') and loaded into headless Chromium. It imports only the isomorphic SDK
 * entry, the IndexedDB profile store and the @noble crypto provider: no Node polyfills, no
 * injected fetch or WebSocket (the browser's own are used).
 *
 * It exposes `window.rvz`, a small async API that the test drives with `page.evaluate`. Every
 * result is plain JSON (ids, texts, counts); secrets never leave the SDK.
 */
import { RendezvousClient, type TopicMessage } from '@rendezvous/client';
import { nobleCrypto } from '@rendezvous/protocol/crypto/noble';
import { IdbProfileStore } from '../../src/browser/idb-store.ts';

type LiveItem = Awaited<ReturnType<AsyncGenerator<unknown>['next']>>;

let client: RendezvousClient | null = null;
let store: IdbProfileStore | null = null;
let profileName: string | null = null;
let live: ReturnType<RendezvousClient['live']> | null = null;
let pending: Promise<LiveItem> | null = null;

const dbName = (name: string) => `rendezvous-profile-${name}`;

function need(): RendezvousClient {
  if (client === null) throw new Error('no client: register or open first');
  return client;
}

function plainMessage(m: TopicMessage) {
  return { index: m.index, sender: m.sender, type: m.type, text: m.text, rejected: m.rejected };
}

/** What the page shows of a client: only what its redacting String/JSON forms give. */
function describe(c: RendezvousClient) {
  return { user: c.user, deviceId: c.deviceId, string: String(c), template: `${c}`, json: JSON.stringify(c) };
}

async function closeCurrent(): Promise<void> {
  if (live !== null) await api.stopLive();
  await store?.close();
  client = null;
  store = null;
}

const api = {
  /** Registers `name` on the server at `serverUrl` with a fresh IndexedDB profile. */
  async register(serverUrl: string, name: string, pin: string) {
    await closeCurrent();
    store = new IdbProfileStore(dbName(name));
    client = await RendezvousClient.register({ store, crypto: nobleCrypto, server: serverUrl, user: name, pin, pool: { prekeys: 5, topicKeys: 5 } });
    profileName = name;
    // Deliberately logged: the test reads the console and checks that nothing secret shows.
    console.log('registered', String(client), client);
    return describe(client);
  },

  /** Opens the profile `name` (default: the current one) with a new store and a new client. */
  async open(name?: string) {
    const n = name ?? profileName;
    if (n === null || n === undefined) throw new Error('no profile name');
    await closeCurrent();
    store = new IdbProfileStore(dbName(n));
    client = await RendezvousClient.open({ store, crypto: nobleCrypto });
    profileName = n;
    return describe(client);
  },

  /** A fresh RendezvousClient.open over the same IndexedDB database (nothing kept in memory). */
  reopen() {
    return api.open();
  },

  async createTopic(members: string[], title?: string) {
    return need().createTopic({ members: members.map((user) => ({ user, role: 'participant' as const })), ...(title !== undefined && { title }) });
  },

  send(topic: string, text: string) {
    return need().send(topic, { text });
  },

  async sync() {
    const r = await need().sync();
    return { bundles: r.bundles, topics: r.topics.map((t) => ({ id: t.id, newEntries: t.newEntries, alarms: t.alarms.map((a) => a.code), halted: t.halted })) };
  },

  messages(topic: string) {
    return need().messages(topic).map(plainMessage);
  },

  topics() {
    return need()
      .topics()
      .map((t) => ({ id: t.id, title: t.title, size: t.size, members: t.members.map((m) => [m.user, m.role]), alarms: t.alarms.map((a) => a.code), halted: t.halted?.code ?? null }));
  },

  safetyNumber(user: string) {
    return need().safetyNumber(user);
  },

  /** Starts the live iterator (browser WebSocket, first-frame auth). */
  startLive() {
    if (live !== null) throw new Error('live already started');
    live = need().live();
  },

  /** The next live item (a message or an alarm), or 'timeout'. */
  async nextLive(timeoutMs: number) {
    if (live === null) throw new Error('live not started');
    pending ??= live.next();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
    const r = await Promise.race([pending, timeout]);
    clearTimeout(timer);
    if (r === 'timeout') return 'timeout';
    pending = null;
    if (r.done === true) return 'done';
    const v = r.value as { topic: { id: string }; message: TopicMessage } | { alarm: { topic: string; code: string; message: string } };
    return 'alarm' in v ? { alarm: v.alarm } : { topic: v.topic.id, message: plainMessage(v.message) };
  },

  /**
   * Ends the live loop: the iterator's finally stops the watcher and closes the socket. An async
   * generator queues return() behind a pending next(), so while a next() is still waiting (no
   * item arrived) the loop cannot be ended from outside: returns false then, without waiting.
   */
  async stopLive() {
    const l = live;
    const waiting = pending !== null;
    live = null;
    pending = null;
    if (l === null) return true;
    if (waiting) {
      void l.return(undefined);
      return false;
    }
    await l.return(undefined);
    return true;
  },

  /** Whether the browser has what the SDK relies on (reported by the test on failure). */
  environment() {
    return {
      indexedDB: typeof indexedDB !== 'undefined',
      locks: typeof navigator.locks !== 'undefined',
      webCrypto: typeof crypto?.getRandomValues === 'function',
      WebSocket: typeof WebSocket !== 'undefined',
      isSecureContext,
      userAgent: navigator.userAgent,
    };
  },
};

export type BrowserApi = typeof api;
(window as unknown as { rvz: BrowserApi }).rvz = api;
document.title = 'rendezvous browser test: ready';
