/**
 * Compares two V8 heap snapshots (.heapsnapshot JSON): objects grouped by type and constructor
 * name, with count and self size in each, sorted by growth in bytes.
 *
 *   node packages/server/bench/heap-diff.mjs before.heapsnapshot after.heapsnapshot [top=40]
 *
 * Then the largest single objects of the second snapshot (a Map or Set that keeps growing shows
 * as one large hash table: `array:(object elements)` or `hidden:system / OrderedHashMap`).
 */
import { readFileSync } from 'node:fs';

function load(path) {
  const j = JSON.parse(readFileSync(path, 'utf8'));
  const m = j.snapshot.meta;
  const nf = m.node_fields.length;
  const types = m.node_fields.indexOf('type');
  const name = m.node_fields.indexOf('name');
  const size = m.node_fields.indexOf('self_size');
  const tnames = m.node_types[0];
  const groups = new Map();
  const nodes = j.nodes;
  for (let i = 0; i < nodes.length; i += nf) {
    const t = tnames[nodes[i + types]];
    let n = j.strings[nodes[i + name]];
    if (t === 'string' || t === 'concatenated string' || t === 'sliced string') n = '';
    if (t === 'code' || t === 'number') n = '';
    if (n.length > 60) n = n.slice(0, 60) + '…';
    const k = `${t}:${n}`;
    let g = groups.get(k);
    if (g === undefined) groups.set(k, (g = { count: 0, bytes: 0 }));
    g.count++;
    g.bytes += nodes[i + size];
  }
  const big = [];
  for (let i = 0; i < nodes.length; i += nf) if (nodes[i + size] > 64 * 1024) big.push([nodes[i + size], `${tnames[nodes[i + types]]}:${String(j.strings[nodes[i + name]]).slice(0, 60)}`]);
  big.sort((p, q) => q[0] - p[0]);
  return { groups, total: nodes.length / nf, big };
}

const [a, b, topArg] = process.argv.slice(2).filter((x) => !x.startsWith('--'));
const A = load(a);
const B = load(b);
const keys = new Set([...A.groups.keys(), ...B.groups.keys()]);
const rows = [...keys].map((k) => {
  const x = A.groups.get(k) ?? { count: 0, bytes: 0 };
  const y = B.groups.get(k) ?? { count: 0, bytes: 0 };
  return { k, dCount: y.count - x.count, dBytes: y.bytes - x.bytes, count: y.count, bytes: y.bytes };
});
rows.sort((p, q) => q.dBytes - p.dBytes);
const sum = (g) => [...g.values()].reduce((s, v) => s + v.bytes, 0);
console.log(`nodes ${A.total} → ${B.total}; self bytes ${(sum(A.groups) / 1048576).toFixed(1)} → ${(sum(B.groups) / 1048576).toFixed(1)} MB`);
for (const r of rows.slice(0, Number(topArg ?? 40))) console.log(`${String(r.dBytes).padStart(11)} B ${String(r.dCount).padStart(9)} objs   now ${String(r.count).padStart(8)} / ${String(r.bytes).padStart(10)} B   ${r.k}`);
console.log('largest objects in the second snapshot:');
for (const [bytes, k] of B.big.slice(0, 12)) console.log(`${String(bytes).padStart(11)} B   ${k}`);
