/** TokenBindingStore on PostgreSQL: the single row of token_binding (migration 3). The first node
 *  to bind wins; the others read its binding back. */
import { TOKEN_BINDING_COLUMNS, tokenBindingFromRow, type TokenBindingRecord, type TokenBindingRow, type TokenBindingStore } from '../token-binding.js';
import type { Queryable } from './database.js';

const COLUMNS = TOKEN_BINDING_COLUMNS;

export class PostgresTokenBindingStore implements TokenBindingStore {
  constructor(private readonly db: Queryable) {}

  async get(): Promise<TokenBindingRecord | undefined> {
    const { rows } = await this.db.query<TokenBindingRow>(`SELECT ${COLUMNS} FROM token_binding WHERE id = 1`);
    return rows[0] && tokenBindingFromRow(rows[0]);
  }

  async bindIfUnbound(binding: TokenBindingRecord): Promise<TokenBindingRecord> {
    await this.db.query(`INSERT INTO token_binding (id, ${COLUMNS}) VALUES (1, $1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`, values(binding));
    return (await this.get())!;
  }

  async replace(binding: TokenBindingRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO token_binding (id, ${COLUMNS}) VALUES (1, $1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (id) DO UPDATE SET manufacturer_id = excluded.manufacturer_id, model = excluded.model, serial_number = excluded.serial_number,
         label = excluded.label, module = excluded.module, identity = excluded.identity, bound_at = excluded.bound_at`,
      values(binding),
    );
  }
}

const values = (b: TokenBindingRecord) => [b.manufacturerId, b.model, b.serialNumber, b.label, b.module, b.identity, b.boundAt];
