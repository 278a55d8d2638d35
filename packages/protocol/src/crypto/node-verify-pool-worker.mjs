// Entry of a VerifyPool worker thread (node-verify-pool.ts). The code is TypeScript run through
// tsx: a worker does not inherit a loader registered with tsx's API, so it registers one itself
// (execArgv is empty, so no loader came from the command line either), then loads the worker.
import { register } from 'tsx/esm/api';

register();
await import('./node-verify-pool-worker.ts');
