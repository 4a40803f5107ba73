/**
 * The Condition element: IAM's condition operators with the ForAnyValue:/ForAllValues: set
 * qualifiers and the IfExists suffix, compiled once per policy.
 *
 * Semantics (IAM JSON policy reference, "Condition element" and "Single-valued vs. multivalued
 * context keys"):
 * - blocks, operators and keys are ANDed; the values listed for one key are ORed;
 * - a negated operator (StringNotEquals, NotIpAddress, ...) holds when the request value matches
 *   none of the listed values, and when the key is absent from the request;
 * - any other operator is false for an absent key, unless it ends in IfExists;
 * - ForAllValues: every request value must satisfy the operator (true when the key is absent);
 *   ForAnyValue: at least one must (false when the key is absent);
 * - Null tests presence: "true" means the key is absent.
 *
 * Condition key names are case-insensitive, including the part after kms:EncryptionContext: or
 * aws:RequestTag/, but a request may carry keys that differ only in case ({"Tenant":"a",
 * "tenant":"b"}): one single-valued condition key then has several values. AWS documents no rule
 * for that; here each value is one possible reading of the request, and a condition holds in an
 * Allow statement only when it holds for every reading, in a Deny statement when it holds for any.
 * The decision is the strictest one, whatever the order of the request's members.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { MalformedPolicyError } from './errors.js';
import { hasPolicyVariable, substitutePolicyVariables } from './variables.js';
import { compileArnPattern, compileWildcards } from './wildcards.js';

/** A single-valued condition key to which the request gives several values (keys that differ
 *  only in case): each is a reading; see the header for how conditions treat them. */
export class AmbiguousValue {
  constructor(readonly readings: readonly string[]) {}
}

/** Request context: condition key (lower case) → one value, a set of values (a multivalued key),
 *  or several readings of a single-valued key. */
export type ContextValue = string | readonly string[] | AmbiguousValue;
export interface PolicyContext {
  get(key: string): ContextValue | undefined;
}

export interface CompiledCondition {
  /** As written, for diagnostics. */
  operator: string;
  /** Lower case: condition key names are case-insensitive. */
  key: string;
  /** `effect` is the statement's: it decides how an ambiguous value is read. */
  test(context: PolicyContext, effect: 'Allow' | 'Deny'): boolean;
}

type Matcher = (requestValue: string) => boolean;
/** Builds the "does a request value match any of these policy values" predicate. */
type MatcherFactory = (policyValues: string[]) => Matcher;

const exactly: MatcherFactory = (values) => {
  const set = new Set(values);
  return (v) => set.has(v);
};
const ignoringCase: MatcherFactory = (values) => {
  const set = new Set(values.map((s) => s.toLowerCase()));
  return (v) => set.has(v.toLowerCase());
};
const like: MatcherFactory = (values) => compileWildcards(values);
const arnLike: MatcherFactory = (values) => {
  const patterns = values.map(compileArnPattern).filter((m) => m !== undefined);
  return (v) => patterns.some((m) => m(v));
};

function numberOf(s: string): number | undefined {
  if (s.trim() === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}
function numeric(compare: (request: number, policy: number) => boolean): MatcherFactory {
  return (values) => {
    const numbers = values.map(numberOf).filter((n): n is number => n !== undefined);
    return (v) => {
      const n = numberOf(v);
      return n !== undefined && numbers.some((p) => compare(n, p));
    };
  };
}

/** The last value parsed: a request's aws:CurrentTime or aws:SourceIp is typically tested by
 *  several conditions in a row. */
function memoizeLast<T>(parse: (s: string) => T): (s: string) => T {
  let lastInput: string | undefined;
  let lastOutput: T;
  return (s) => {
    if (s !== lastInput) {
      lastOutput = parse(s);
      lastInput = s;
    }
    return lastOutput;
  };
}

/** ISO 8601 dates or epoch seconds, as IAM accepts both. */
const timeOf = memoizeLast(parseTime);
function parseTime(s: string): number | undefined {
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : t;
}
function dates(compare: (request: number, policy: number) => boolean): MatcherFactory {
  return (values) => {
    const times = values.map(timeOf).filter((n): n is number => n !== undefined);
    return (v) => {
      const t = timeOf(v);
      return t !== undefined && times.some((p) => compare(t, p));
    };
  };
}

const bool: MatcherFactory = (values) => {
  const set = new Set(values.map((s) => s.toLowerCase()));
  return (v) => set.has(v.toLowerCase());
};

/** An IPv4-mapped IPv6 address is the IPv4 address it carries. */
export function normalizeIp(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return mapped ? mapped[1]! : ip;
}

/** An address as 16 bytes (IPv4 as its IPv4-mapped IPv6 form), or undefined. */
function ipBytes(ip: string): Uint8Array | undefined {
  const bytes = new Uint8Array(16);
  if (isIPv4(ip)) {
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    ip.split('.').forEach((octet, i) => (bytes[12 + i] = Number(octet)));
    return bytes;
  }
  if (!isIPv6(ip)) return undefined;
  let text = ip;
  const embedded = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (embedded) {
    const v4 = ipBytes(embedded[1]!)!;
    text = `${text.slice(0, -embedded[1]!.length)}${((v4[12]! << 8) | v4[13]!).toString(16)}:${((v4[14]! << 8) | v4[15]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    bytes[i * 2] = n >> 8;
    bytes[i * 2 + 1] = n & 0xff;
  });
  return bytes;
}

const requestIpBytes = memoizeLast((ip: string) => ipBytes(normalizeIp(ip)));

function inPrefix(address: Uint8Array, network: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (address[i] !== network[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (address[whole]! & mask) === (network[whole]! & mask);
}

/** IpAddress: CIDR ranges (or single addresses), IPv4 and IPv6; an IPv4 range also matches the
 *  IPv4-mapped IPv6 form of its addresses. */
const ipAddress: MatcherFactory = (values) => {
  const ranges = values.map((value) => {
    const [address, prefix] = value.split('/');
    const bytes = ipBytes(address ?? '');
    const v4 = isIPv4(address ?? '');
    const bits = prefix === undefined ? (v4 ? 32 : 128) : /^\d+$/.test(prefix) ? Number(prefix) : NaN;
    if (!bytes || !(bits >= 0 && bits <= (v4 ? 32 : 128))) throw new MalformedPolicyError(`Invalid IP address in condition: ${value}`);
    return { bytes, bits: v4 ? bits + 96 : bits };
  });
  return (v) => {
    const bytes = requestIpBytes(v);
    return bytes !== undefined && ranges.some((r) => inPrefix(bytes, r.bytes, r.bits));
  };
};

const binary: MatcherFactory = (values) => {
  const set = new Set(values.map((s) => Buffer.from(s, 'base64').toString('base64')));
  return (v) => set.has(Buffer.from(v, 'base64').toString('base64'));
};

/** Every operator: its positive matcher and whether it is the negation of that matcher. */
const OPERATORS: Record<string, { matcher: MatcherFactory; negated: boolean }> = {
  StringEquals: { matcher: exactly, negated: false },
  StringNotEquals: { matcher: exactly, negated: true },
  StringEqualsIgnoreCase: { matcher: ignoringCase, negated: false },
  StringNotEqualsIgnoreCase: { matcher: ignoringCase, negated: true },
  StringLike: { matcher: like, negated: false },
  StringNotLike: { matcher: like, negated: true },
  NumericEquals: { matcher: numeric((a, b) => a === b), negated: false },
  NumericNotEquals: { matcher: numeric((a, b) => a === b), negated: true },
  NumericLessThan: { matcher: numeric((a, b) => a < b), negated: false },
  NumericLessThanEquals: { matcher: numeric((a, b) => a <= b), negated: false },
  NumericGreaterThan: { matcher: numeric((a, b) => a > b), negated: false },
  NumericGreaterThanEquals: { matcher: numeric((a, b) => a >= b), negated: false },
  DateEquals: { matcher: dates((a, b) => a === b), negated: false },
  DateNotEquals: { matcher: dates((a, b) => a === b), negated: true },
  DateLessThan: { matcher: dates((a, b) => a < b), negated: false },
  DateLessThanEquals: { matcher: dates((a, b) => a <= b), negated: false },
  DateGreaterThan: { matcher: dates((a, b) => a > b), negated: false },
  DateGreaterThanEquals: { matcher: dates((a, b) => a >= b), negated: false },
  Bool: { matcher: bool, negated: false },
  BinaryEquals: { matcher: binary, negated: false },
  IpAddress: { matcher: ipAddress, negated: false },
  NotIpAddress: { matcher: ipAddress, negated: true },
  ArnEquals: { matcher: arnLike, negated: false },
  ArnLike: { matcher: arnLike, negated: false },
  ArnNotEquals: { matcher: arnLike, negated: true },
  ArnNotLike: { matcher: arnLike, negated: true },
};

const asArray = (v: string | readonly string[] | undefined): readonly string[] => (v === undefined ? [] : typeof v === 'string' ? [v] : v);

/** A condition over the request values of its key, read strictly where the key is ambiguous. */
function overReadings(key: string, holds: (requestValues: readonly string[], context: PolicyContext) => boolean): CompiledCondition['test'] {
  return (context, effect) => {
    const found = context.get(key);
    if (!(found instanceof AmbiguousValue)) return holds(asArray(found), context);
    const holdsFor = (reading: string) => holds([reading], context);
    return effect === 'Allow' ? found.readings.every(holdsFor) : found.readings.some(holdsFor);
  };
}

function policyValues(raw: unknown, where: string): string[] {
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0) throw new MalformedPolicyError(`Condition ${where} has no values.`);
  return list.map((v) => {
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    throw new MalformedPolicyError(`Condition ${where} has a value that is not a string, number or boolean.`);
  });
}

/** Compiles a statement's Condition element. */
export function compileConditions(block: unknown): CompiledCondition[] {
  if (block === undefined) return [];
  if (!isPlainObject(block)) throw new MalformedPolicyError('Condition must be an object.');
  const compiled: CompiledCondition[] = [];
  for (const [operator, keys] of Object.entries(block)) {
    if (!isPlainObject(keys)) throw new MalformedPolicyError(`Condition operator ${operator} must map condition keys to values.`);
    for (const [key, raw] of Object.entries(keys)) {
      compiled.push(compileCondition(operator, key, policyValues(raw, `${operator} ${key}`)));
    }
  }
  return compiled;
}

function compileCondition(operator: string, keyName: string, values: string[]): CompiledCondition {
  const key = keyName.toLowerCase();
  let rest = operator;
  let qualifier: 'ForAnyValue' | 'ForAllValues' | undefined;
  for (const q of ['ForAnyValue', 'ForAllValues'] as const) {
    if (rest.startsWith(`${q}:`)) {
      qualifier = q;
      rest = rest.slice(q.length + 1);
    }
  }
  const ifExists = rest.endsWith('IfExists') && rest !== 'IfExists';
  if (ifExists) rest = rest.slice(0, -'IfExists'.length);

  if (rest === 'Null') {
    if (ifExists || qualifier) throw new MalformedPolicyError(`Invalid condition operator: ${operator}`);
    const wanted = new Set(values.map((v) => v.toLowerCase()));
    if ([...wanted].some((v) => v !== 'true' && v !== 'false')) throw new MalformedPolicyError('Null takes true or false.');
    return { operator, key, test: overReadings(key, (requestValues) => wanted.has(requestValues.length === 0 ? 'true' : 'false')) };
  }

  const spec = OPERATORS[rest];
  if (!spec) throw new MalformedPolicyError(`Invalid condition operator: ${operator}`);
  const { negated } = spec;
  // Values with policy variables (${aws:username}) are resolved per request.
  const dynamic = values.some(hasPolicyVariable);
  const fixed = dynamic ? undefined : spec.matcher(values);
  const positiveFor = (context: PolicyContext): Matcher =>
    fixed ?? spec.matcher(values.flatMap((v) => substitutePolicyVariables(v, context) ?? []));

  return {
    operator,
    key,
    test: overReadings(key, (requestValues, context) => {
      if (requestValues.length === 0) {
        if (ifExists) return true;
        if (qualifier === 'ForAllValues') return true;
        if (qualifier === 'ForAnyValue') return false;
        return negated;
      }
      const positive = positiveFor(context);
      const holds = (v: string) => positive(v) !== negated;
      if (qualifier === 'ForAllValues') return requestValues.every(holds);
      if (qualifier === 'ForAnyValue') return requestValues.some(holds);
      const anyMatch = requestValues.some(positive);
      return negated ? !anyMatch : anyMatch;
    }),
  };
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
