/**
 * The JSON of a request body, read the way AWS's deserialiser reads it: an empty body is `{}`,
 * anything that is not JSON is a SerializationException, and so is JSON nested deeper than any
 * request can be. The nesting limit keeps every later stage (model validation, audit) from
 * recursing through hostile input; 1000 levels is also the default limit of Jackson, the usual
 * JSON parser of Java services. The deepest KMS input (CreateGrant's Constraints) nests three.
 */
import { KmsError } from '../kms/errors.js';

export const MAX_JSON_NESTING = 1000;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** Whether arrays and objects in `body` nest deeper than `limit`. Works on UTF-8 bytes: no byte of
 *  a multi-byte character is ASCII, so quotes, backslashes and brackets are what they seem. */
export function nestsDeeperThan(body: Uint8Array, limit: number): boolean {
  // Each level needs its own opening byte: a short body cannot be too deep (every usual request).
  if (body.length <= limit) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const byte = body[i]!;
    if (inString) {
      if (byte === BACKSLASH) i++;
      else if (byte === QUOTE) inString = false;
    } else if (byte === QUOTE) {
      inString = true;
    } else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > limit) return true;
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--;
    }
  }
  return false;
}

export function parseJsonBody(body: Buffer): unknown {
  if (body.length === 0) return {};
  if (nestsDeeperThan(body, MAX_JSON_NESTING)) {
    throw new KmsError('SerializationException', `The request body nests JSON arrays or objects deeper than ${MAX_JSON_NESTING} levels.`);
  }
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new KmsError('SerializationException', 'The request body is not valid JSON.');
  }
}
