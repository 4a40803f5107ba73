/**
 * ARNs and the forms a KeyId may take: key ID, key ARN, alias name, alias ARN.
 */
import { KmsError, invalidArn, notFound } from './errors.js';

export interface Account {
  partition: string;
  region: string;
  accountId: string;
}

export const keyArn = (a: Account, keyId: string) => `arn:${a.partition}:kms:${a.region}:${a.accountId}:key/${keyId}`;
/** A key's ARN and Region for the audit events the service records on its own: a multi-Region
 *  key's shared material changes in its primary's Region, every other event in the key's own. */
export function keyEventScope(a: Account, key: { keyId: string; region: string; primaryRegion?: string }, shared = false): { region: string; keyArns: string[] } {
  const region = (shared ? key.primaryRegion : undefined) ?? (key.region || a.region);
  return { region, keyArns: [keyArn({ ...a, region }, key.keyId.split('/')[0]!)] };
}
export const aliasArn = (a: Account, aliasName: string) => `arn:${a.partition}:kms:${a.region}:${a.accountId}:${aliasName}`;

const KEY_ID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/;
/** Whether `text` has the form of a key ID (not whether such a key exists). */
export const isKeyId = (text: string) => KEY_ID.test(text);
const ARN = /^arn:([a-z0-9-]+):kms:([a-z0-9-]*):(\d{12}):(key\/.+|alias\/.+)$/;

export type KeyIdentifier = { kind: 'key'; keyId: string } | { kind: 'alias'; aliasName: string };

/**
 * Parses a KeyId parameter. `allowAlias` is false for the operations where AWS accepts only a key
 * ID or key ARN. Identifiers naming another account or region cannot exist here: NotFound.
 */
export function parseKeyIdentifier(account: Account, raw: string, allowAlias: boolean): KeyIdentifier {
  let id: KeyIdentifier;
  if (raw.startsWith('arn:')) {
    const m = ARN.exec(raw);
    if (!m) throw invalidArn(`ARN ${raw} is not a valid KMS key or alias ARN`);
    const [, partition, region, accountId, resource] = m;
    if (partition !== account.partition || region !== account.region || accountId !== account.accountId) {
      throw notFound(resource!.startsWith('key/') ? `Key '${raw}' does not exist` : `Alias '${raw}' is not found.`);
    }
    id = resource!.startsWith('key/') ? { kind: 'key', keyId: resource!.slice(4) } : { kind: 'alias', aliasName: resource! };
  } else if (raw.startsWith('alias/')) {
    id = { kind: 'alias', aliasName: raw };
  } else {
    id = { kind: 'key', keyId: raw };
  }
  if (id.kind === 'alias' && !allowAlias) throw notFound(`Invalid keyId '${raw}'`);
  if (id.kind === 'key' && !isKeyId(id.keyId)) throw notFound(`Invalid keyId '${raw}'`);
  return id;
}

export function isKmsError(e: unknown, type: string): e is KmsError {
  return e instanceof KmsError && e.type === type;
}
