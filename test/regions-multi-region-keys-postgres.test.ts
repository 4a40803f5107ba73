/** Multi-Region keys on PostgreSQL (the suite: test/multi-region/suite.ts): the same answers. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll } from 'vitest';
import { startPostgres, type PostgresServer } from './helpers/postgres.js';
import { tempDir } from './helpers/service.js';
import { describeMultiRegionKeys } from './multi-region/suite.js';

let server: PostgresServer | undefined;
afterAll(async () => {
  await server?.stop();
});

describeMultiRegionKeys('PostgreSQL', async () => {
  server = await startPostgres();
  const urlFile = path.join(tempDir('p11kms-mrk-pg-'), 'database-url');
  fs.writeFileSync(urlFile, `${await server.createDatabase()}\n`, { mode: 0o600 });
  return { P11KMS_DATABASE_URL_FILE: urlFile };
});
