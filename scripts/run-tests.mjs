#!/usr/bin/env node
// Runs every *.test.ts under packages/ with node's own test runner (through tsx).
// Node 20's runner has no glob support for .ts files, so the list is built here.
// Extra arguments are passed to `node --test` (e.g. --test-name-pattern=...); a path argument
// limits the run to files under that path.
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith('-')).map((a) => resolve(a));
const flags = args.filter((a) => a.startsWith('-'));

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

let files = walk(join(root, 'packages'), []).sort();
if (filters.length > 0) files = files.filter((f) => filters.some((x) => f.startsWith(x)));
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...flags, ...files], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
