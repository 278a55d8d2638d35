/** @rendezvous/server: the home server. */
export { startServer, createLogger, VERSION, type ServerConfig, type RunningServer } from './server.ts';
export { createApp, API_VERSION } from './http/app.ts';
export { openSqliteStore } from './storage/sqlite.ts';
export { RATES, type RateName } from './limits.ts';
export type { Store } from './storage/store.ts';
export type { Context } from './context.ts';
export { Federation, type FederationOptions } from './federation/federation.ts';
