#!/usr/bin/env node
// Runs every *.test.ts under packages/ with node's own test runner (through tsx).
// Node 20's runner has no glob support for .ts files, so the list is built here.
// Extra arguments are passed to `node --test` (e.g. --test-name-pattern=...); a path argument
// limits the run to files under that path.
import { readFileSync, readdirSync, statSync } from 'node:fs';
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

/** Test support files (helpers, conformance suites) beside the *.test.ts files. */
function walkTs(dir) {
  const out = [];
  (function go(d) {
    for (const name of readdirSync(d)) {
      if (name === 'node_modules' || name.startsWith('.')) continue;
      const p = join(d, name);
      if (statSync(p).isDirectory()) go(p);
      else if (name.endsWith('.ts') && !name.endsWith('.test.ts') && p.includes('/test/')) out.push(p);
    }
  })(dir);
  return out;
}

let files = walk(join(root, 'packages'), []).sort();
if (filters.length > 0) files = files.filter((f) => filters.some((x) => f.startsWith(x)));
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
// Node 20 builds the message of a failing message-less assert.ok() by re-parsing the source at
// the call site; under tsx the positions do not match the .ts file and that parse can take many
// minutes, so one failing assertion looks like a hung test run. Every assert.ok carries a message.
const bare = [];
for (const f of walk(join(root, 'packages'), []).concat(walkTs(join(root, 'packages')))) {
  const src = readFileSync(f, 'utf8');
  for (let at = src.indexOf('assert.ok('); at !== -1; at = src.indexOf('assert.ok(', at + 1)) {
    if (!hasTopLevelComma(src, at + 'assert.ok('.length)) bare.push(`${f}:${src.slice(0, at).split('\n').length}`);
  }
}
/** Whether the call whose arguments start at `i` has a second argument (strings skipped naively). */
function hasTopLevelComma(src, i) {
  let depth = 0;
  let quote = null;
  for (; i < src.length; i++) {
    const c = src[i];
    if (quote !== null) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
    } else if (c === "'" || c === '"' || c === '`') quote = c;
    else if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) {
      if (depth === 0) return false;
      depth--;
    } else if (c === ',' && depth === 0) return true;
  }
  return false;
}
if (bare.length > 0) {
  console.error(`assert.ok without a message (give it one):\n  ${bare.join('\n  ')}`);
  process.exit(1);
}

const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...flags, ...files], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
