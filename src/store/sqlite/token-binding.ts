/** TokenBindingStore on SQLite: the single row of `token_binding` (migration "token binding"). */
import type Database from 'better-sqlite3';
import { TOKEN_BINDING_COLUMNS, tokenBindingFromRow, type TokenBindingRecord, type TokenBindingRow, type TokenBindingStore } from '../token-binding.js';

type Row = TokenBindingRow & { bound_at: number };
const COLUMNS = TOKEN_BINDING_COLUMNS;

export class SqliteTokenBindingStore implements TokenBindingStore {
  private readonly selectStmt;
  private readonly insertStmt;
  private readonly replaceStmt;

  constructor(db: Database.Database) {
    this.selectStmt = db.prepare<[], Row>(`SELECT ${COLUMNS} FROM token_binding WHERE id = 1`);
    const values = '(1, @manufacturer_id, @model, @serial_number, @label, @module, @identity, @bound_at)';
    this.insertStmt = db.prepare<Row>(`INSERT OR IGNORE INTO token_binding (id, ${COLUMNS}) VALUES ${values}`);
    this.replaceStmt = db.prepare<Row>(`INSERT OR REPLACE INTO token_binding (id, ${COLUMNS}) VALUES ${values}`);
  }

  async get(): Promise<TokenBindingRecord | undefined> {
    const row = this.selectStmt.get();
    return row && tokenBindingFromRow(row);
  }

  async bindIfUnbound(binding: TokenBindingRecord): Promise<TokenBindingRecord> {
    this.insertStmt.run(toRow(binding));
    return tokenBindingFromRow(this.selectStmt.get()!);
  }

  async replace(binding: TokenBindingRecord): Promise<void> {
    this.replaceStmt.run(toRow(binding));
  }
}

function toRow(b: TokenBindingRecord): Row {
  return {
    manufacturer_id: b.manufacturerId,
    model: b.model,
    serial_number: b.serialNumber,
    label: b.label,
    module: b.module,
    identity: b.identity,
    bound_at: b.boundAt.getTime(),
  };
}
