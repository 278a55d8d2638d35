// Entry of the SQLite writer thread (sqlite-threaded.ts). The code is TypeScript run through
// tsx: a worker does not inherit a loader registered with tsx's API, so it registers one itself
// (execArgv is empty, so no loader came from the command line either), then loads the worker.
// The built server (scripts/build.mjs) bundles sqlite-writer-worker.ts under this file's name.
import { register } from 'tsx/esm/api';

register();
await import('./sqlite-writer-worker.ts');
