/**
 * The store's record of the PKCS#11 token its keys live in (src/kms/token-binding.ts decides what
 * to do with it). One row at most; metadata only: token info and the value of the token's identity
 * object (src/hsm/token-identity.ts), never a PIN.
 */
export interface TokenBindingRecord {
  manufacturerId: string;
  model: string;
  serialNumber: string;
  label: string;
  /** The PKCS#11 module it was opened through; null for the self-provisioned SoftHSM2 token. */
  module: string | null;
  /** Hex CKA_VALUE of the token's identity object. */
  identity: string;
  boundAt: Date;
}

export interface TokenBindingStore {
  get(): Promise<TokenBindingRecord | undefined>;
  /** Records `binding` unless one exists; returns the one that holds afterwards (another process
   *  may have bound first). */
  bindIfUnbound(binding: TokenBindingRecord): Promise<TokenBindingRecord>;
  /** Replaces the binding (an empty store moving to another token, or an explicit rebind). */
  replace(binding: TokenBindingRecord): Promise<void>;
}

/** The token_binding table's row, as both stores keep it (bound_at: epoch ms in SQLite, a
 *  timestamp in PostgreSQL). */
export interface TokenBindingRow {
  manufacturer_id: string;
  model: string;
  serial_number: string;
  label: string;
  module: string | null;
  identity: string;
  bound_at: number | Date;
}

export const TOKEN_BINDING_COLUMNS = 'manufacturer_id, model, serial_number, label, module, identity, bound_at';

export function tokenBindingFromRow(r: TokenBindingRow): TokenBindingRecord {
  return { manufacturerId: r.manufacturer_id, model: r.model, serialNumber: r.serial_number, label: r.label, module: r.module, identity: r.identity, boundAt: new Date(r.bound_at) };
}
