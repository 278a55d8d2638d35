export type * from './store.ts';
export { openSqliteStore, SqliteStore, type SqliteStoreOptions } from './sqlite.ts';
export { MIGRATIONS, LATEST_SCHEMA_VERSION, type Migration } from './migrations.ts';
