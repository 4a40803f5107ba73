// The bench's helper (a real PostgreSQL server in a temp dir), shared with the tests.
export { startPostgres, postgresBinDir, type PostgresServer, type PostgresOptions } from '../../scripts/bench/postgres-server.js';
