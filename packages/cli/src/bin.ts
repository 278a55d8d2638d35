/**
 * Entry of the built command (scripts/build.mjs → dist/rendezvous.mjs, what `npm start` runs).
 * packages/cli/bin/rendezvous.mjs is the same with the tsx loader, for the sources.
 */
import { main } from './main.ts';

process.exitCode = await main(process.argv.slice(2));
