#!/usr/bin/env node
// The `rendezvous` command. The project runs TypeScript sources directly (no build step), so
// the tsx loader is registered before the CLI is imported.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2));
