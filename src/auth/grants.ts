/**
 * What a grant permits (AWS KMS Developer Guide, "Grants in AWS KMS"): its grantee may perform
 * its operations on its key, nothing else; encryption-context constraints apply to the operations
 * that take an encryption context and are ignored by the others; a grant that includes CreateGrant
 * lets the grantee create grants that are no more permissive than itself. RetireGrant in a grant
 * lets the grantee retire that grant only (decided by the RetireGrant handler, not here).
 */
import { randomBytes } from 'node:crypto';
import { KmsError } from '../kms/errors.js';
import type { GrantConstraints, GrantRecord } from '../store/types.js';
import { encryptionContextOf } from './condition-keys.js';

/** Grant operations that take an encryption context (where constraints apply). */
export const OPERATIONS_WITH_ENCRYPTION_CONTEXT: ReadonlySet<string> = new Set([
  'Decrypt', 'Encrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'ReEncryptFrom', 'ReEncryptTo',
  'GenerateDataKeyPair', 'GenerateDataKeyPairWithoutPlaintext',
]);

/**
 * In a grant constraint the encryption context keys are case-insensitive, the values are not (API
 * reference, GrantConstraints). A context may still hold keys that differ only in case; to a
 * grant they are one key with several values. So both sides are compared as sets of values per
 * lower-cased key, which no order of members can change:
 * - EncryptionContextEquals: the request has exactly the constraint's keys, each with exactly the
 *   constraint's values ({"TENANT":"evil","tenant":"a"} is not {"tenant":"a"});
 * - EncryptionContextSubset: the same for the constraint's keys; other keys are free.
 */
type ValuesByKey = Map<string, Set<string>>;

function valuesByKey(pairs: Record<string, string> | undefined): ValuesByKey {
  const byKey: ValuesByKey = new Map();
  for (const [k, v] of Object.entries(pairs ?? {})) {
    const lower = k.toLowerCase();
    byKey.set(lower, (byKey.get(lower) ?? new Set<string>()).add(v));
  }
  return byKey;
}

const sameValues = (a: Set<string> | undefined, b: Set<string>) => a !== undefined && a.size === b.size && [...b].every((v) => a.has(v));

/** Whether `context` has the same values as `required` for every key `required` names. */
function agreesOn(context: ValuesByKey, required: ValuesByKey): boolean {
  for (const [key, values] of required) if (!sameValues(context.get(key), values)) return false;
  return true;
}

const equalContexts = (a: ValuesByKey, b: ValuesByKey) => a.size === b.size && agreesOn(a, b);

export function constraintsHold(constraints: GrantConstraints | null, context: Record<string, string> | undefined): boolean {
  if (!constraints) return true;
  const given = valuesByKey(context);
  const { EncryptionContextEquals: equals, EncryptionContextSubset: subset } = constraints;
  if (equals && !equalContexts(given, valuesByKey(equals))) return false;
  if (subset && !agreesOn(given, valuesByKey(subset))) return false;
  return true;
}

/** Whether every context that satisfies `child` constraints also satisfies `parent`'s. */
function atLeastAsStrict(parent: GrantConstraints | null, child: GrantConstraints | undefined): boolean {
  if (!parent) return true;
  const childEquals = child?.EncryptionContextEquals && valuesByKey(child.EncryptionContextEquals);
  const childSubset = child?.EncryptionContextSubset && valuesByKey(child.EncryptionContextSubset);
  if (parent.EncryptionContextEquals) {
    if (!childEquals || !equalContexts(childEquals, valuesByKey(parent.EncryptionContextEquals))) return false;
  }
  if (parent.EncryptionContextSubset) {
    const required = valuesByKey(parent.EncryptionContextSubset);
    if (!(childEquals && agreesOn(childEquals, required)) && !(childSubset && agreesOn(childSubset, required))) return false;
  }
  return true;
}

/** Whether `grant` lets its grantee perform `action` (kms:X) with this request input. */
export function grantPermits(grant: GrantRecord, action: string, input: Record<string, unknown>): boolean {
  const operation = action.startsWith('kms:') ? action.slice(4) : action;
  if (operation === 'RetireGrant' || !grant.operations.includes(operation)) return false;
  if (operation === 'CreateGrant') {
    const requested = (input.Operations as string[] | undefined) ?? [];
    return requested.every((op) => grant.operations.includes(op)) && atLeastAsStrict(grant.constraints, input.Constraints as GrantConstraints | undefined);
  }
  if (!OPERATIONS_WITH_ENCRYPTION_CONTEXT.has(operation)) return true;
  return constraintsHold(grant.constraints, encryptionContextOf(action, input));
}

// Grant tokens name the grant they came from. AWS's are opaque; ours are too, to clients, but
// carry (keyId, grantId) so RetireGrant can take a token alone. They confer nothing by themselves:
// every use is still authorized against the caller.
const TOKEN_PREFIX = 'p11kms-grant-token:1:';

export function issueGrantToken(keyId: string, grantId: string): string {
  return Buffer.from(`${TOKEN_PREFIX}${keyId}:${grantId}:${randomBytes(16).toString('hex')}`, 'utf8').toString('base64url');
}

const invalidGrantToken = () => new KmsError('InvalidGrantTokenException', 'The grant token is not valid.');

export function parseGrantToken(token: string): { keyId: string; grantId: string } {
  const text = Buffer.from(token, 'base64url').toString('utf8');
  if (Buffer.from(text, 'utf8').toString('base64url') !== token || !text.startsWith(TOKEN_PREFIX)) throw invalidGrantToken();
  const [keyId, grantId, nonce, ...rest] = text.slice(TOKEN_PREFIX.length).split(':');
  if (!keyId || !grantId || !nonce || rest.length > 0 || !/^[0-9a-f]{64}$/.test(grantId)) throw invalidGrantToken();
  return { keyId, grantId };
}

/** GrantTokens in a request must be tokens we issued (the grant itself may since be gone). */
export function checkGrantTokens(input: Record<string, unknown>): void {
  const tokens = input.GrantTokens;
  if (tokens === undefined) return;
  if (!Array.isArray(tokens)) throw invalidGrantToken();
  for (const t of tokens) {
    if (typeof t !== 'string') throw invalidGrantToken();
    parseGrantToken(t);
  }
}
