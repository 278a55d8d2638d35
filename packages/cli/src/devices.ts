/**
 * `rendezvous device …` and `rendezvous watch` (README §Using it): linking a new device with a
 * code (text and a terminal QR code), joining with it, listing and removing devices, and
 * printing messages live as they arrive.
 */
import type { RendezvousClient, TopicMessage, TopicView } from '@rendezvous/client';

type Out = (human: string, data: unknown) => void;

/** `device link`: shows the code and waits until the new device has its keys. */
export async function deviceLink(c: RendezvousClient, json: boolean, out: Out): Promise<number> {
  const link = c.startLink();
  if (json) {
    // One JSON line first, so a script can read the code while the command waits.
    console.log(JSON.stringify({ code: link.code, deviceId: link.deviceId }));
  } else {
    const { renderUnicodeCompact } = await import('uqr');
    console.log(`On the new device, run:\n\n  rendezvous device join ${link.code}\n\nor scan:\n`);
    console.log(renderUnicodeCompact(link.code, { border: 2 }));
    console.log('\nThe code holds your identity key: show it to your new device only. It works for 10 minutes.');
  }
  await link.wait({ onStatus: (s) => !json && process.stderr.write(`… ${s}\n`) });
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

/** `watch`: prints entries as they arrive until interrupted. */
export async function watch(c: RendezvousClient, json: boolean): Promise<number> {
  await c.sync();
  const line = (t: TopicView, m: TopicMessage) => {
    if (json) return JSON.stringify({ topic: t.id, title: t.title, index: m.index, timestamp: m.timestamp, sender: m.sender, type: m.type, text: m.text, rejected: m.rejected });
    const when = new Date(m.timestamp).toISOString().slice(11, 19);
    const what = m.rejected ? `(dropped: ${m.rejected})` : (m.text ?? `(${m.type ?? 'unreadable'})`);
    return `${when} [${t.title ?? t.id}] ${m.sender ?? '?'}: ${what}`;
  };
  const w = c.watch({
    onMessage: (t, m) => console.log(line(t, m)),
    onAlarm: (topic, code, message) => console.error(`ALARM ${topic}: ${code}: ${message}`),
    onStatus: (s, detail) => {
      if (!json) console.error(s === 'connected' ? '… watching (Ctrl-C to stop)' : `… reconnecting${detail ? ` (${detail})` : ''}`);
    },
  });
  const stop = () => w.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await w.done;
  return 0;
}
