/**
 * Opens the metadata store the configuration names: the embedded SQLite file (the default) or
 * PostgreSQL shared by several service nodes. Nothing above this function knows which one it has.
 */
import type { DatabaseConfig } from '../config.js';
import { describeDatabase, openPostgresStore, type PostgresStoreOptions } from './postgres/store.js';
import { openSqliteStore } from './sqlite/store.js';
import type { MetadataStore } from './types.js';

export { SchemaTooNewError } from './schema-version.js';

export function openStore(database: DatabaseConfig, options: PostgresStoreOptions = {}): Promise<MetadataStore> {
  return database.kind === 'postgres' ? openPostgresStore(database.url, options) : openSqliteStore(database.file);
}

/** The store for logs: the SQLite file, or the PostgreSQL server and database without credentials. */
export function describeStore(database: DatabaseConfig): string {
  return database.kind === 'postgres' ? describeDatabase(database.url) : `sqlite:${database.file}`;
}
