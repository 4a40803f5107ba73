/** What both stores' migrations share: the refusal of a database migrated by a newer p11kms. */
export class SchemaTooNewError extends Error {
  override name = 'SchemaTooNewError';
}

/** The message both stores give when the database is newer than the migrations they know. */
export function schemaTooNew(database: string, found: number, latestKnown: number): SchemaTooNewError {
  return new SchemaTooNewError(
    `metadata database ${database} has schema version ${found}, but this p11kms only knows ` +
      `versions up to ${latestKnown}; run a p11kms release that supports version ${found}`,
  );
}

/** Migrations are numbered 1, 2, 3, ... in the order they apply; anything else is a programming error. */
export function assertStrictlyAscending(migrations: ReadonlyArray<{ version: number; description: string }>): void {
  migrations.forEach((migration, index) => {
    if (!Number.isInteger(migration.version) || migration.version !== index + 1) {
      throw new Error(
        `migration "${migration.description}" has version ${migration.version}; ` +
          `migrations must be numbered 1, 2, 3, ... in order`,
      );
    }
  });
}
