/**
 * Memory diagnostics of a running server without restarting it (issue 7): SIGUSR1 opens the
 * Node inspector of process PID, and this script talks to it over the DevTools protocol.
 *
 *   node packages/server/bench/inspect-server.mjs PID mem            process.memoryUsage() now
 *   node packages/server/bench/inspect-server.mjs PID gcmem          full GC first, then memoryUsage
 *   node packages/server/bench/inspect-server.mjs PID snapshot FILE  full GC + heap snapshot to FILE
 *   node packages/server/bench/inspect-server.mjs PID eval EXPR      any expression (returned by value)
 *
 * The inspector stays open (127.0.0.1:9229 unless taken) until the process exits: use it on
 * benchmark servers only.
 */
import { createWriteStream, readFileSync } from 'node:fs';
import WebSocket from 'ws';

const [pidArg, cmd, arg] = process.argv.slice(2);
const pid = Number(pidArg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function target() {
  process.kill(pid, 'SIGUSR1');
  for (let i = 0; i < 50; i++) {
    for (const port of [9229, 9230, 9231]) {
      try {
        const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
        const t = list.find((x) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(x.title?.split(' ')[0] ?? '\0') || list.length === 1);
        if (t) return t.webSocketDebuggerUrl;
      } catch {}
    }
    await sleep(100);
  }
  throw new Error('inspector did not open');
}

const ws = new WebSocket(await target(), { maxPayload: 1 << 30 });
await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
let id = 0;
const waiting = new Map();
let chunks = null;
ws.on('message', (d) => {
  const m = JSON.parse(String(d));
  if (m.method === 'HeapProfiler.addHeapSnapshotChunk') chunks.write(m.params.chunk);
  else if (m.id !== undefined) waiting.get(m.id)?.(m), waiting.delete(m.id);
});
const call = (method, params = {}) =>
  new Promise((r, j) => {
    const k = ++id;
    waiting.set(k, (m) => (m.error ? j(new Error(JSON.stringify(m.error))) : r(m.result)));
    ws.send(JSON.stringify({ id: k, method, params }));
  });
const evaluate = async (expr) => (await call('Runtime.evaluate', { expression: expr, returnByValue: true, includeCommandLineAPI: true })).result.value;
const memory = () => evaluate('JSON.stringify(process.memoryUsage())').then((s) => JSON.parse(s));

if (cmd === 'mem') console.log(JSON.stringify(await memory()));
else if (cmd === 'gcmem') {
  await call('HeapProfiler.enable');
  await call('HeapProfiler.collectGarbage');
  console.log(JSON.stringify(await memory()));
} else if (cmd === 'snapshot') {
  await call('HeapProfiler.enable');
  await call('HeapProfiler.collectGarbage');
  const mem = await memory();
  chunks = createWriteStream(arg);
  await call('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
  await new Promise((r) => chunks.end(r));
  console.log(JSON.stringify(mem));
} else if (cmd === 'eval') console.log(JSON.stringify(await evaluate(arg)));
ws.close();
