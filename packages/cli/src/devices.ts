/**
 * `rendezvous device …` and `rendezvous watch` (README §Using it): linking a new device with a
 * code (text and a terminal QR code), joining with it, listing and removing devices, and
 * printing messages live as they arrive.
 */
import type { RendezvousClient, TopicMessage, TopicView } from '@rendezvous/client';

type Out = (human: string, data: unknown) => void;

/**
 * `device link`: shows the code and waits until the new device has its keys. The profile is
 * held only for each attempt of the hand-over, so other commands can run meanwhile.
 */
export async function deviceLink(
  withClient: <T>(fn: (c: RendezvousClient) => Promise<T>) => Promise<T>,
  json: boolean,
  out: Out,
): Promise<number> {
  const link = await withClient(async (c) => c.startLink());
  if (json) {
    // One JSON line first, so a script can read the code while the command waits.
    console.log(JSON.stringify({ code: link.code, deviceId: link.deviceId }));
  } else {
    const { renderUnicodeCompact } = await import('uqr');
    console.log(`On the new device, run:\n\n  rendezvous device join ${link.code}\n\nor scan:\n`);
    console.log(renderUnicodeCompact(link.code, { border: 2 }));
    console.log('\nThe code holds your identity key: show it to your new device only. It works for 10 minutes.');
    process.stderr.write('… waiting for the new device\n');
  }
  const { LINK_TTL_MS } = await import('@rendezvous/client');
  const deadline = Date.now() + LINK_TTL_MS;
  while (!(await withClient((c) => c.handOverTo(link.deviceId)))) {
    if (Date.now() > deadline) throw new Error('no new device joined with the code: run device link again for a new code');
    await new Promise((r) => setTimeout(r, 500));
  }
  out(`device ${link.deviceId} is linked and has your keys`, { linked: link.deviceId });
  return 0;
}

export async function deviceList(c: RendezvousClient, out: Out): Promise<number> {
  const ds = await c.devices();
  out(ds.map((d) => `${d.deviceId}  added ${new Date(d.createdAt).toISOString()}${d.current ? '  (this device)' : ''}`).join('\n'), { devices: ds });
  return 0;
}

export async function deviceRemove(c: RendezvousClient, id: string | undefined, out: Out): Promise<number> {
  if (id === undefined) throw new Error('device remove needs a device id (see rendezvous device list)');
  await c.removeDevice(id);
  out(`device ${id} removed: its sessions are revoked and its key is never accepted again`, { removed: id });
  return 0;
}

/**
 * `watch`: prints entries as they arrive until interrupted.
 *
 * It does not hold the profile while it waits, so other commands (a `send` in another
 * terminal) can use the same profile. A WebSocket only wakes it up; each wake-up opens the
 * profile under its lock, syncs (verifying, as every command does), prints what is new, saves
 * and lets go.
 */
export async function watch(
  withClient: <T>(fn: (c: RendezvousClient) => Promise<T>) => Promise<T>,
  json: boolean,
): Promise<number> {
  const { ServerApi } = await import('@rendezvous/client');
  const { NodeWebSocket } = await import('@rendezvous/client/node');
  const printed = new Map<string, number>();
  const line = (t: TopicView, m: TopicMessage) => {
    if (json) return JSON.stringify({ topic: t.id, title: t.title, index: m.index, timestamp: m.timestamp, sender: m.sender, type: m.type, text: m.text, rejected: m.rejected });
    const when = new Date(m.timestamp).toISOString().slice(11, 19);
    const what = m.rejected ? `(dropped: ${m.rejected})` : (m.text ?? `(${m.type ?? 'unreadable'})`);
    return `${when} [${t.title ?? t.id}] ${m.sender ?? '?'}: ${what}`;
  };
  const catchUp = () =>
    withClient(async (c) => {
      const r = await c.sync();
      for (const t of r.topics) {
        if (t.halted !== null) console.error(`ALARM ${t.id}: ${t.halted}: stopped verifying this topic`);
        for (const a of t.alarms) console.error(a.index === null ? `ALARM ${t.id}: ${a.code}: ${a.message}` : `ALARM ${t.id} entry ${a.index}: ${a.code}`);
      }
      for (const t of c.topics()) {
        // What was there when watching began is history, not news.
        const from = printed.get(t.id) ?? t.size;
        for (const m of c.messages(t.id, from)) console.log(line(t, m));
        printed.set(t.id, t.size);
      }
      return { url: c.serverUrl, token: c.api.token };
    });
  let session = await catchUp();
  let stopped = false;
  let conn: { close(): void } | null = null;
  let wake: (() => void) | null = null;
  const stop = () => {
    stopped = true;
    conn?.close();
    wake?.();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let cursor = 0;
  let delay = 250;
  while (!stopped) {
    const api = new ServerApi({ baseUrl: session.url, WebSocket: NodeWebSocket, token: session.token });
    await new Promise<void>((resolve) => {
      wake = resolve;
      conn = api.connectLive(cursor, {
        onOpen: () => {
          delay = 250;
          // On stderr even with --json: a status, not data; scripts wait for it before expecting news.
          console.error('… watching (Ctrl-C to stop)');
        },
        onBatch: async (b) => {
          cursor = b.cursor;
          await catchUp();
        },
        onClose: () => resolve(),
      });
    });
    if (stopped) break;
    if (!json) console.error('… reconnecting');
    await new Promise<void>((r) => {
      const t = setTimeout(r, delay);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
    delay = Math.min(delay * 2, 15_000);
    session = await catchUp(); // also renews an expired session
  }
  return 0;
}
