/**
 * Request validation and response serialisation driven by the AWS KMS model.
 *
 * `kms-model.json` is a trimmed copy of the official botocore model (see scripts/generate-model.ts).
 * From it we build, lazily and once per operation, a zod schema that does what AWS's request
 * layer does for awsJson1_1:
 *   1. deserialisation: JSON types must match the shapes (blob = base64 string, timestamp = epoch
 *      seconds); any mismatch is a SerializationException and nothing else is reported;
 *   2. validation: required, length, range, pattern and enum constraints, all collected into one
 *      ValidationException in AWS's "N validation error(s) detected: ..." format.
 * Unknown members are ignored (dropped), as AWS does.
 */
import { z } from 'zod';
import { KmsError } from '../kms/errors.js';
import modelJson from './kms-model.json' with { type: 'json' };

// ---------------------------------------------------------------------------------------------
// Model types (also used by scripts/generate-model.ts)

export type ShapeType = 'structure' | 'list' | 'map' | 'string' | 'blob' | 'boolean' | 'integer' | 'long' | 'timestamp';

export interface ModelShape {
  type: ShapeType;
  required?: string[];
  /** Member name → target shape name. */
  members?: Record<string, string>;
  /** List element shape. */
  member?: string;
  /** Map key and value shapes. */
  key?: string;
  value?: string;
  /** Characters for strings, bytes for blobs, entries for lists and maps, value for numbers. */
  min?: number;
  max?: number;
  /** A Java regular expression that the whole string must match. */
  pattern?: string;
  enum?: string[];
  /** AWS leaves the value of sensitive members out of error messages. */
  sensitive?: boolean;
  exception?: boolean;
  fault?: boolean;
}

export interface ModelOperation {
  input: string;
  output?: string;
  errors: string[];
}

export interface KmsModel {
  source: { file: string; sha256: string };
  metadata: { apiVersion: string; targetPrefix: string; jsonVersion: string };
  operations: Record<string, ModelOperation>;
  shapes: Record<string, ModelShape>;
}

export const kmsModel = modelJson as KmsModel;

export const operationNames: ReadonlySet<string> = new Set(Object.keys(kmsModel.operations));

function shapeNamed(name: string): ModelShape {
  const shape = kmsModel.shapes[name];
  if (!shape) throw new Error(`kms-model.json has no shape ${name}`);
  return shape;
}

/** The shape of a structure's member `name`; a JSON key such as `constructor` or `__proto__` is
 *  no member, whatever the prototype of the members object holds. */
function memberShapeName(shape: ModelShape, name: string): string | undefined {
  return shape.members !== undefined && Object.hasOwn(shape.members, name) ? shape.members[name] : undefined;
}

function operationNamed(operation: string): ModelOperation {
  const found = Object.hasOwn(kmsModel.operations, operation) ? kmsModel.operations[operation] : undefined;
  if (!found) throw new KmsError('UnknownOperationException', `Unknown operation ${operation}`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// Java regular expressions

/** Java's `\s` is ASCII-only; JavaScript's also matches Unicode spaces. */
const JAVA_SPACE_CHARS = ' \\t\\n\\x0B\\f\\r';
/** Java's `.` also stops at U+0085, JavaScript's does not. */
const JAVA_DOT = '[^\\n\\r\\u0085\\u2028\\u2029]';
/** Characters that keep their backslash in a JavaScript `u`-mode pattern. */
const JS_SYNTAX_CHARS = '^$\\.*+?()[]{}|/';
const PASSTHROUGH_ESCAPES = 'dDwWtnrfbB';

/**
 * Compiles a model pattern (Java syntax) to an equivalent JavaScript RegExp.
 * AWS tests patterns with Java's `String.matches`, i.e. against the whole value, so the result is
 * anchored. The `u` flag makes a supplementary character one character, as in Java. Java-only
 * constructs that JavaScript would read differently are rejected rather than mistranslated.
 */
export function javaPatternToRegExp(pattern: string): RegExp {
  const unsupported = (what: string) => new Error(`pattern ${pattern}: ${what} is not supported`);
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i]!;
    const next = pattern[i + 1];
    if (char === '\\') {
      if (next === undefined) throw unsupported('a trailing backslash');
      i++;
      if (next === 's') out += inClass ? JAVA_SPACE_CHARS : `[${JAVA_SPACE_CHARS}]`;
      else if (next === 'S' && !inClass) out += `[^${JAVA_SPACE_CHARS}]`;
      else if (next === 'u' && /^[0-9a-fA-F]{4}$/.test(pattern.slice(i + 1, i + 5))) {
        out += `\\u${pattern.slice(i + 1, i + 5)}`;
        i += 4;
      } else if (next === 'x' && /^[0-9a-fA-F]{2}$/.test(pattern.slice(i + 1, i + 3))) {
        out += `\\x${pattern.slice(i + 1, i + 3)}`;
        i += 2;
      } else if (PASSTHROUGH_ESCAPES.includes(next) && !(inClass && (next === 'b' || next === 'B'))) out += `\\${next}`;
      else if (/[0-9A-Za-z]/.test(next)) throw unsupported(`\\${next}`);
      else if (JS_SYNTAX_CHARS.includes(next) || (inClass && next === '-')) out += `\\${next}`;
      else out += next; // `\-`, `\=`, `\@`…: a literal in Java, an error in u-mode JavaScript
    } else if (inClass) {
      if (char === '[') throw unsupported('a nested character class');
      if (char === '&' && next === '&') throw unsupported('class intersection');
      if (char === ']') inClass = false;
      out += char;
    } else if (char === '[') {
      inClass = true;
      out += char;
      // A `]` right after `[` or `[^` is a literal in Java.
      if (next === '^') out += pattern[++i];
      if (pattern[i + 1] === ']') throw unsupported('a leading ] in a class');
    } else if (char === '.') {
      out += JAVA_DOT;
    } else if (char === '(' && next === '?' && !/^\(\?(?:[:=!]|<[=!]|<[A-Za-z])/.test(pattern.slice(i))) {
      throw unsupported('inline flags or atomic groups');
    } else if ('+*?}'.includes(char) && next === '+') {
      throw unsupported('a possessive quantifier');
    } else {
      out += char;
    }
  }
  if (inClass) throw unsupported('an unterminated class');
  return new RegExp(`^(?:${out})$`, 'u');
}

// ---------------------------------------------------------------------------------------------
// Error reporting

/** Marks our own zod issues: a constraint violation, or a deserialisation failure with its message. */
type IssueParams = { constraint: true; valueText: string } | { serialization: string };

type Payload = z.core.ParsePayload<unknown>;

function addConstraintIssue(payload: Payload, constraint: string, valueText: string): void {
  // `continue` lets later checks (e.g. a list's length after its elements) still run, so every
  // violation is reported, as AWS does.
  const params: IssueParams = { constraint: true, valueText };
  payload.issues.push({ code: 'custom', message: constraint, input: payload.value, params, continue: true });
}

function addSerializationIssue(payload: Payload, message: string): void {
  const params: IssueParams = { serialization: message };
  payload.issues.push({ code: 'custom', message, input: payload.value, params });
}

const lowerFirst = (name: string) => name.charAt(0).toLowerCase() + name.slice(1);

/** `Tags[0].TagKey` → `tags.1.member.tagKey`, AWS's way of naming a member in messages. */
function awsMemberPath(rootShape: string, path: readonly PropertyKey[]): { text: string; shape: ModelShape | undefined } {
  const parts: string[] = [];
  let shape: ModelShape | undefined = shapeNamed(rootShape);
  for (const key of path) {
    if (!shape) break;
    if (shape.type === 'structure') {
      parts.push(lowerFirst(String(key)));
      const target = memberShapeName(shape, String(key));
      shape = target ? shapeNamed(target) : undefined;
    } else if (shape.type === 'list') {
      parts.push(String(Number(key) + 1), 'member');
      shape = shapeNamed(shape.member!);
    } else if (shape.type === 'map') {
      parts.push(String(key));
      shape = shapeNamed(shape.value!);
    }
  }
  return { text: parts.join('.'), shape };
}

/** Java-style names of JSON tokens, as AWS's deserialiser reports them. */
function jsonTokenName(value: unknown): string {
  if (typeof value === 'string') return 'STRING_VALUE';
  if (typeof value === 'number') return 'NUMBER_VALUE';
  if (value === true) return 'TRUE_VALUE';
  if (value === false) return 'FALSE_VALUE';
  return 'NULL_VALUE';
}

const TARGET_TYPE_NAMES: Record<ShapeType, string> = {
  structure: 'a Structure',
  list: 'a List',
  map: 'a Map',
  string: 'a String',
  blob: 'a Blob',
  boolean: 'a Boolean',
  integer: 'an Integer',
  long: 'a Long',
  timestamp: 'a Timestamp',
};

/** AWS's SerializationException wording for a JSON value of the wrong kind. */
function typeMismatchMessage(expected: ModelShape | undefined, received: unknown): string {
  if (Array.isArray(received)) return 'Start of list found where not expected.';
  if (typeof received === 'object' && received !== null) return 'Start of structure or map found where not expected.';
  const target = expected ? TARGET_TYPE_NAMES[expected.type] : 'the expected type';
  return `${jsonTokenName(received)} can not be converted to ${target}`;
}

/** The JSON value at a zod issue path (undefined if absent). */
function valueAtPath(body: unknown, path: readonly PropertyKey[]): unknown {
  let value = body;
  for (const key of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** Turns zod's issues for `body` into the one KmsError AWS would send. */
function toKmsError(inputShape: string, body: unknown, issues: readonly z.core.$ZodIssue[]): KmsError {
  const violations: string[] = [];
  for (const issue of issues) {
    const params = (issue as { params?: IssueParams }).params;
    if (params && 'serialization' in params) return new KmsError('SerializationException', params.serialization);
    const path = awsMemberPath(inputShape, issue.path);
    const received = valueAtPath(body, issue.path);
    if (params && 'constraint' in params) {
      violations.push(`Value${params.valueText} at '${path.text}' failed to satisfy constraint: ${issue.message}`);
    } else if (received === undefined) {
      // A required member that is absent (or was null, see parseInput).
      violations.push(`Value null at '${path.text}' failed to satisfy constraint: Member must not be null`);
    } else {
      return new KmsError('SerializationException', typeMismatchMessage(path.shape, received));
    }
  }
  const count = violations.length === 1 ? '1 validation error' : `${violations.length} validation errors`;
  return new KmsError('ValidationException', `${count} detected: ${violations.join('; ')}`);
}

/** How AWS (Java) prints a value in a validation message; sensitive values are never printed. */
function renderValue(shape: ModelShape, value: unknown): string {
  if (shape.sensitive) return '*** Sensitive Data Redacted ***';
  if (value instanceof Uint8Array) return `java.nio.HeapByteBuffer[pos=0 lim=${value.length} cap=${value.length}]`;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return `[${value.map((item) => renderValue(shapeNamed(shape.member!), item)).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (shape.type === 'map') return `{${entries.map(([k, v]) => `${k}=${renderValue(shapeNamed(shape.value!), v)}`).join(', ')}}`;
    return `{${entries
      .filter(([name]) => memberShapeName(shape, name) !== undefined)
      .map(([name, v]) => `${name}: ${renderValue(shapeNamed(memberShapeName(shape, name)!), v)}`)
      .join(', ')}}`;
  }
  return String(value);
}

/** The `Value 'x'` part of a message: ` 'x'`, or nothing at all for sensitive shapes. */
const valueText = (shape: ModelShape, value: unknown) => (shape.sensitive ? '' : ` '${renderValue(shape, value)}'`);

// ---------------------------------------------------------------------------------------------
// Schemas

/** Constraint messages, worded exactly as AWS words them. */
const lengthAtLeast = (n: number) => `Member must have length greater than or equal to ${n}`;
const lengthAtMost = (n: number) => `Member must have length less than or equal to ${n}`;
const valueAtLeast = (n: number) => `Member must have value greater than or equal to ${n}`;
const valueAtMost = (n: number) => `Member must have value less than or equal to ${n}`;

/** Checks a length (characters, bytes or entries) against the shape's min/max. */
function checkLength(payload: Payload, shape: ModelShape, value: unknown, length: number): void {
  if (shape.min !== undefined && length < shape.min) addConstraintIssue(payload, lengthAtLeast(shape.min), valueText(shape, value));
  if (shape.max !== undefined && length > shape.max) addConstraintIssue(payload, lengthAtMost(shape.max), valueText(shape, value));
}

/** Length in Unicode code points, which is how string lengths are measured. */
function codePointLength(text: string): number {
  let length = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        length--;
        i++;
      }
    }
  }
  return length;
}

function stringSchema(shape: ModelShape): z.ZodType {
  const { min, max } = shape;
  const pattern = shape.pattern === undefined ? undefined : javaPatternToRegExp(shape.pattern);
  const patternMessage = `Member must satisfy regular expression pattern: ${shape.pattern}`;
  const allowed = shape.enum ? new Set(shape.enum) : undefined;
  const enumMessage = `Member must satisfy enum value set: [${shape.enum?.join(', ')}]`;
  if (min === undefined && max === undefined && !pattern && !allowed) return z.string();

  return z.string().check((payload) => {
    const text = payload.value;
    // A string has at most as many code points as UTF-16 units and at least half as many, so
    // counting code points is only needed near the bounds.
    const units = text.length;
    if ((max !== undefined && units > max) || (min !== undefined && units < 2 * min)) {
      checkLength(payload, shape, text, codePointLength(text));
    }
    if (pattern && !pattern.test(text)) addConstraintIssue(payload, patternMessage, valueText(shape, text));
    if (allowed && !allowed.has(text)) addConstraintIssue(payload, enumMessage, valueText(shape, text));
  });
}

/** Standard base64, padding optional (Java's decoder accepts both); no whitespace or URL alphabet. */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function isBase64(text: string): boolean {
  if (!BASE64.test(text)) return false;
  const padded = text.endsWith('=');
  return padded ? text.length % 4 === 0 : text.length % 4 !== 1;
}

function blobSchema(shape: ModelShape): z.ZodType {
  return z.string().transform((text, payload) => {
    if (!isBase64(text)) {
      addSerializationIssue(payload, 'Invalid base64 encoding in a blob value.');
      return z.NEVER;
    }
    const bytes = Buffer.from(text, 'base64');
    // The length constraint applies to the decoded bytes, and messages show the byte buffer.
    checkLength(payload, shape, bytes, bytes.length);
    return bytes;
  });
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

function integerSchema(shape: ModelShape): z.ZodType {
  const isInRange =
    shape.type === 'long' ? Number.isSafeInteger : (n: number) => Number.isInteger(n) && n >= INT32_MIN && n <= INT32_MAX;
  const targetName = TARGET_TYPE_NAMES[shape.type];
  const { min, max } = shape;
  return z.number().check((payload) => {
    const n = payload.value;
    if (!isInRange(n)) return addSerializationIssue(payload, `NUMBER_VALUE can not be converted to ${targetName}`);
    if (min !== undefined && n < min) addConstraintIssue(payload, valueAtLeast(min), valueText(shape, n));
    if (max !== undefined && n > max) addConstraintIssue(payload, valueAtMost(max), valueText(shape, n));
  });
}

/** ISO 8601 date-time with an explicit zone; anything looser is ambiguous. */
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;

function timestampSchema(): z.ZodType {
  return z
    .custom<number | string>((value) => typeof value === 'number' || typeof value === 'string')
    .transform((value, payload) => {
      const millis = typeof value === 'number' ? value * 1000 : ISO_TIMESTAMP.test(value) ? Date.parse(value) : NaN;
      const date = new Date(millis);
      if (Number.isNaN(date.getTime())) {
        addSerializationIssue(payload, `${jsonTokenName(value)} can not be converted to a Timestamp`);
        return z.NEVER;
      }
      return date;
    });
}

function listSchema(shape: ModelShape): z.ZodType {
  const schema = z.array(shapeSchema(shape.member!));
  if (shape.min === undefined && shape.max === undefined) return schema;
  return schema.check((payload) => checkLength(payload, shape, payload.value, payload.value.length));
}

/** A string shape with no constraints: any JSON string is valid. */
const isPlainString = (shape: ModelShape) =>
  shape.type === 'string' && shape.min === undefined && shape.max === undefined && !shape.pattern && !shape.enum;

function mapSchema(shape: ModelShape): z.ZodType {
  const keyShape = shapeNamed(shape.key!);
  const valueShape = shapeNamed(shape.value!);
  const checkEntryCount = (payload: Payload & { value: object }) =>
    checkLength(payload, shape, payload.value, Object.keys(payload.value).length);
  if (!isPlainString(keyShape) || !isPlainString(valueShape)) {
    const schema = z.record(shapeSchema(shape.key!) as z.ZodType<string>, shapeSchema(shape.value!));
    return shape.min === undefined && shape.max === undefined ? schema : schema.check(checkEntryCount);
  }
  // string → string (EncryptionContext): checked in place, which is several times faster than
  // z.record and keeps a `__proto__` key as AWS would (z.record silently drops it).
  return z.custom<Record<string, unknown>>(isJsonObject).check((payload) => {
    const map = payload.value;
    // for…in rather than Object.entries: no per-request arrays (JSON objects have no inherited keys).
    for (const key in map) {
      const value = map[key];
      if (typeof value !== 'string') {
        const message = typeMismatchMessage(valueShape, value);
        const params: IssueParams = { serialization: message };
        payload.issues.push({ code: 'custom', message, input: value, path: [key], params });
      }
    }
    if (shape.min !== undefined || shape.max !== undefined) checkEntryCount(payload);
  });
}

function structureSchema(shape: ModelShape): z.ZodType {
  const required = new Set(shape.required ?? []);
  const members: Record<string, z.ZodType> = {};
  for (const [name, target] of Object.entries(shape.members ?? {})) {
    const schema = shapeSchema(target);
    // A required member that is missing fails with input `undefined`: see toKmsError.
    members[name] = required.has(name) ? schema : schema.optional();
  }
  // z.object drops members that the model does not know, as AWS ignores them.
  return z.object(members);
}

function buildShapeSchema(shape: ModelShape): z.ZodType {
  switch (shape.type) {
    case 'structure':
      return structureSchema(shape);
    case 'list':
      return listSchema(shape);
    case 'map':
      return mapSchema(shape);
    case 'string':
      return stringSchema(shape);
    case 'blob':
      return blobSchema(shape);
    case 'boolean':
      return z.boolean();
    case 'integer':
    case 'long':
      return integerSchema(shape);
    case 'timestamp':
      return timestampSchema();
  }
}

/** Schemas per shape name, shared by every operation that uses the shape. */
const shapeSchemas = new Map<string, z.ZodType>();
const shapesBeingBuilt = new Set<string>();

function shapeSchema(name: string): z.ZodType {
  const cached = shapeSchemas.get(name);
  if (cached) return cached;
  // The KMS input shapes are not recursive, but stay correct if a future model adds one.
  if (shapesBeingBuilt.has(name)) return z.lazy(() => shapeSchema(name));
  shapesBeingBuilt.add(name);
  try {
    const schema = buildShapeSchema(shapeNamed(name));
    shapeSchemas.set(name, schema);
    return schema;
  } finally {
    shapesBeingBuilt.delete(name);
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** AWS's deserialiser reads a JSON null member as an absent member. */
function withoutNullMembers(shape: ModelShape, value: unknown): unknown {
  if (shape.type === 'structure' && isJsonObject(value)) {
    const copy: Record<string, unknown> = {};
    for (const [name, member] of Object.entries(value)) {
      const target = memberShapeName(shape, name);
      if (member !== null && target) copy[name] = withoutNullMembers(shapeNamed(target), member);
    }
    return copy;
  }
  if (shape.type === 'list' && Array.isArray(value)) return value.map((item) => withoutNullMembers(shapeNamed(shape.member!), item));
  return value;
}

function containsNull(value: unknown): boolean {
  if (value === null) return true;
  if (typeof value !== 'object') return false;
  for (const item of Object.values(value)) if (containsNull(item)) return true;
  return false;
}

/**
 * Deserialises and validates the JSON body of `operation` the way AWS does. Returns the input
 * with PascalCase members as on the wire, blobs as Buffers and timestamps as Dates; members the
 * model does not know are dropped. Throws KmsError: SerializationException for a body or member
 * of the wrong JSON type, ValidationException listing every constraint violation,
 * UnknownOperationException for an operation that is not in the model.
 */
export function parseInput(operation: string, body: unknown): Record<string, unknown> {
  const inputShape = operationNamed(operation).input;
  if (!isJsonObject(body)) throw new KmsError('SerializationException', typeMismatchMessage(shapeNamed(inputShape), body));
  const schema = shapeSchema(inputShape);
  // No parse options: any (even `reportInput`) take zod off its compiled fast path (~10x slower).
  let result = schema.safeParse(body);
  // Rare slow path: explicit nulls fail the schema; retry with them removed so that an optional
  // null member is simply absent and a required one reads "Value null … must not be null".
  if (!result.success && containsNull(body)) {
    body = withoutNullMembers(shapeNamed(inputShape), body);
    result = schema.safeParse(body);
  }
  if (result.success) return result.data as Record<string, unknown>;
  throw toKmsError(inputShape, body, result.error.issues);
}

// ---------------------------------------------------------------------------------------------
// Responses

/** Writes one value of a shape as JSON text; `undefined` means "leave the member out". */
type JsonWriter = (value: unknown) => string | undefined;

const plainJson: JsonWriter = (value) => JSON.stringify(value);

/** Base64 text never needs escaping: it is written as is (JSON.stringify would scan it again). */
function blobJson(value: unknown): string | undefined {
  if (Buffer.isBuffer(value)) return `"${value.toString('base64')}"`;
  if (value instanceof Uint8Array) return `"${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')}"`;
  return JSON.stringify(value); // already a base64 string
}

/** Epoch seconds, with a fraction for sub-second precision (what AWS SDKs expect). */
const epochSecondsJson: JsonWriter = (value) => JSON.stringify(value instanceof Date ? value.getTime() / 1000 : value);

function buildWriter(shape: ModelShape): JsonWriter {
  switch (shape.type) {
    case 'structure': {
      const members = Object.entries(shape.members ?? {}).map(([name, target]) => [name, `${JSON.stringify(name)}:`, shapeWriter(target)] as const);
      return (value) => {
        if (!isJsonObject(value)) return JSON.stringify(value);
        let written = '';
        for (const [name, prefix, write] of members) {
          const member = value[name];
          if (member === undefined || member === null) continue;
          const text = write(member);
          if (text !== undefined) written += (written === '' ? prefix : `,${prefix}`) + text;
        }
        return `{${written}}`;
      };
    }
    case 'list': {
      const writeItem = shapeWriter(shape.member!);
      if (writeItem === plainJson) return plainJson;
      // JSON.stringify's rule for an array element it cannot write: null.
      return (value) => (Array.isArray(value) ? `[${value.map((item) => writeItem(item) ?? 'null').join(',')}]` : JSON.stringify(value));
    }
    case 'map': {
      const writeValue = shapeWriter(shape.value!);
      if (writeValue === plainJson) return plainJson;
      return (value) => {
        if (!isJsonObject(value)) return JSON.stringify(value);
        let written = '';
        for (const [key, item] of Object.entries(value)) {
          const text = writeValue(item);
          if (text !== undefined) written += `${written === '' ? '' : ','}${JSON.stringify(key)}:${text}`;
        }
        return `{${written}}`;
      };
    }
    case 'blob':
      return blobJson;
    case 'timestamp':
      return epochSecondsJson;
    default:
      return plainJson;
  }
}

const writers = new Map<string, JsonWriter>();

function shapeWriter(name: string): JsonWriter {
  let writer = writers.get(name);
  if (!writer) {
    // Placeholder first, so a recursive shape refers to the finished writer at call time.
    writers.set(name, (value) => writers.get(name)!(value));
    writer = buildWriter(shapeNamed(name));
    writers.set(name, writer);
  }
  return writer;
}

/**
 * The JSON body AWS would send for a handler's result: Buffers/Uint8Arrays as base64, Dates as
 * epoch seconds, undefined/null members and members not in the output shape left out, at every
 * depth. Operations without an output shape give `{}`. Written as text in one pass (no wire
 * object to stringify again).
 */
export function serializeOutput(operation: string, output: Record<string, unknown>): string {
  const outputShape = operationNamed(operation).output;
  if (!outputShape) return '{}';
  return shapeWriter(outputShape)(output) ?? '{}';
}
