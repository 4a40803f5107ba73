/** TokenBindingStore on SQLite: the single row of `token_binding` (migration "token binding"). */
import type Database from 'better-sqlite3';
import type { TokenBindingRecord, TokenBindingStore } from '../token-binding.js';

interface Row {
  manufacturer_id: string;
  model: string;
  serial_number: string;
  label: string;
  module: string | null;
  identity: string;
  bound_at: number;
}

const COLUMNS = 'manufacturer_id, model, serial_number, label, module, identity, bound_at';

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
    return row && fromRow(row);
  }

  async bindIfUnbound(binding: TokenBindingRecord): Promise<TokenBindingRecord> {
    this.insertStmt.run(toRow(binding));
    return fromRow(this.selectStmt.get()!);
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

function fromRow(r: Row): TokenBindingRecord {
  return {
    manufacturerId: r.manufacturer_id,
    model: r.model,
    serialNumber: r.serial_number,
    label: r.label,
    module: r.module,
    identity: r.identity,
    boundAt: new Date(r.bound_at),
  };
}
