#!/usr/bin/env node
// Builds the `rendezvous` command as plain JavaScript for `npm start` (docs/performance.md,
// "Idle memory"): the workspace's TypeScript sources bundled by esbuild into dist/, npm
// dependencies left as imports. Running through the tsx loader costs a server about 40 MB of
// RSS (the loader's hooks thread and the transform); the built command does not load it.
// Development, the tests and `packages/cli/bin/rendezvous.mjs` still run the sources directly.
//
// Usage: node scripts/build.mjs [OUTDIR]   (default: dist/)
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
const outdir = resolve(process.argv[2] ?? join(root, 'dist'));

// Every npm dependency of every workspace package stays external (resolved from node_modules
// at run time, native modules included); only @rendezvous/* sources are bundled.
const external = new Set();
for (const dir of ['.', ...readdirSync(join(root, 'packages')).map((p) => join('packages', p))]) {
  const file = join(root, dir, 'package.json');
  if (!existsSync(file)) continue;
  const pkg = JSON.parse(readFileSync(file, 'utf8'));
  for (const deps of [pkg.dependencies, pkg.devDependencies, pkg.optionalDependencies]) {
    for (const name of Object.keys(deps ?? {})) if (!name.startsWith('@rendezvous/')) external.add(name);
  }
}

const entryPoints = { rendezvous: join(root, 'packages/cli/src/bin.ts') };
// Worker threads are started from a file beside the module that starts them
// (new URL('./…-worker.mjs', import.meta.url)): in the bundle, beside dist/rendezvous.mjs.
entryPoints['node-verify-pool-worker'] = join(root, 'packages/protocol/src/crypto/node-verify-pool-worker.ts');
entryPoints['sqlite-writer-worker'] = join(root, 'packages/server/src/storage/sqlite-writer-worker.ts');

await build({
  entryPoints,
  outdir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: [...external, ...[...external].map((n) => `${n}/*`)],
  sourcemap: 'linked',
  // Some dependencies are CommonJS and call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __rendezvousRequire } from 'node:module'; const require = __rendezvousRequire(import.meta.url);" },
  logLevel: 'warning',
});
