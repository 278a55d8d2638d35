/**
 * Preload for a benchmark server (`node --expose-gc --import ./memory-probe.mjs …`): memory
 * diagnostics for the soak (section 11, and soak-memory.ts). Writes one JSON line per sample to
 * $MEMORY_PROBE_OUT/samples.jsonl every $MEMORY_PROBE_MS (default 5,000) ms: process.memoryUsage()
 * (rss, heapTotal, heapUsed, external, arrayBuffers) and v8 heap-space sizes. On SIGUSR2 it runs a
 * full GC (if exposed), records a sample marked `gc`, and writes a heap snapshot to the same
 * directory (`heap-<n>.heapsnapshot`), then `snap-<n>.done`.
 */
import { appendFileSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import v8 from 'node:v8';

const dir = process.env.MEMORY_PROBE_OUT;
if (dir) {
  const every = Number(process.env.MEMORY_PROBE_MS ?? 5000);
  const t0 = Date.now();
  const sample = (tag) => {
    const m = process.memoryUsage();
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, Math.round(s.space_used_size / 1024)]));
    appendFileSync(join(dir, 'samples.jsonl'), JSON.stringify({ s: (Date.now() - t0) / 1000, tag, ...m, ...status(), files: files(), spacesKB: spaces }) + '\n');
  };
  // RssAnon (malloc, V8 heap), RssFile (mapped files, e.g. SQLite's -shm), RssShmem, in bytes.
  const status = () => {
    const out = {};
    try {
      const t = readFileSync('/proc/self/status', 'utf8');
      for (const k of ['RssAnon', 'RssFile', 'RssShmem', 'VmData']) {
        const m = new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(t);
        if (m) out[k] = Number(m[1]) * 1024;
      }
    } catch {}
    return out;
  };
  // Sizes of the files in the server's data directory (`--data DIR`): database, WAL, shm.
  const dataDir = process.argv[process.argv.indexOf('--data') + 1];
  const files = () => {
    const out = {};
    try {
      for (const f of readdirSync(dataDir)) {
        const st = statSync(join(dataDir, f));
        if (st.isFile()) out[f] = st.size;
      }
    } catch {}
    return out;
  };
  // Resident KB by mapping: [heap], anonymous, and each mapped file (the largest ones).
  const smaps = () => {
    const by = {};
    let cur = 'anon';
    try {
      for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
        const h = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
        if (h) cur = h[1] || 'anon';
        else if (line.startsWith('Rss:')) by[cur] = (by[cur] ?? 0) + Number(/(\d+)/.exec(line)[1]);
      }
    } catch {}
    return Object.fromEntries(Object.entries(by).sort((a, b) => b[1] - a[1]).slice(0, 12));
  };
  const timer = setInterval(() => sample('tick'), every);
  timer.unref();
  let n = 0;
  process.on('SIGUSR2', () => {
    const k = n++;
    if (typeof globalThis.gc === 'function') {
      globalThis.gc();
      globalThis.gc();
    }
    sample(`gc${k}`);
    appendFileSync(join(dir, 'smaps.jsonl'), JSON.stringify({ s: (Date.now() - t0) / 1000, tag: `gc${k}`, rssKB: smaps() }) + '\n');
    if (process.env.MEMORY_PROBE_SNAPSHOTS !== '0') v8.writeHeapSnapshot(join(dir, `heap-${k}.heapsnapshot`));
    writeFileSync(join(dir, `snap-${k}.done`), '');
  });
}
