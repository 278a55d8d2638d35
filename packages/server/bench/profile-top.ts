/**
 * Top frames of a V8 CPU profile (`npm run bench -- --profile` writes the server's into
 * bench-results/profile/): self time and inclusive time per function, heaviest first.
 *
 *   node --import tsx packages/server/bench/profile-top.ts bench-results/profile/FILE.cpuprofile [N]
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const [file, nArg] = process.argv.slice(2);
if (file === undefined) throw new Error('usage: profile-top.ts FILE.cpuprofile [N]');
const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n: Node) => {
  const url = n.callFrame.url.replace(/^.*\/(node_modules\/|packages\/)/, '$1').replace(/^node:/, '');
  return `${n.callFrame.functionName || '(anonymous)'} ${url}${url ? ':' + (n.callFrame.lineNumber + 1) : ''}`;
};
const self = new Map<string, number>();
const total = new Map<string, number>();
let all = 0;
prof.samples.forEach((id, i) => {
  const dt = prof.timeDeltas[i] ?? 0;
  all += dt;
  const n = byId.get(id)!;
  self.set(label(n), (self.get(label(n)) ?? 0) + dt);
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur)!);
    if (!seen.has(l)) total.set(l, (total.get(l) ?? 0) + dt);
    seen.add(l);
  }
});
const N = Number(nArg ?? 25);
const show = (title: string, m: Map<string, number>) => {
  console.log(`\n${title} (of ${(all / 1e6).toFixed(1)} s sampled)`);
  for (const [l, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, N)) console.log(`${((100 * t) / all).toFixed(1).padStart(5)} %  ${l}`);
};
show('self time', self);
show('inclusive time', total);
