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

/** How many times `byte` occurs in `body`, counting no further than `max` + 1 (memchr speed). */
function countUpTo(body: Buffer, byte: number, max: number): number {
  let count = 0;
  for (let at = body.indexOf(byte); at !== -1 && count <= max; at = body.indexOf(byte, at + 1)) count++;
  return count;
}

/** The index of the quote that closes the string whose opening quote is at `open` (or -1). */
function closingQuote(body: Buffer, open: number): number {
  for (let at = body.indexOf(QUOTE, open + 1); at !== -1; at = body.indexOf(QUOTE, at + 1)) {
    let backslashes = 0;
    while (body[at - 1 - backslashes] === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
  return -1;
}

/**
 * Whether arrays and objects in `body` nest deeper than `limit`. Works on UTF-8 bytes: no byte of
 * a multi-byte character is ASCII, so quotes, backslashes and brackets are what they seem. Each
 * level needs its own opening byte, so a body with few of them (every usual request) is let
 * through after two native scans; only the rest is walked, skipping strings natively.
 */
export function nestsDeeperThan(body: Buffer, limit: number): boolean {
  if (countUpTo(body, OPEN_BRACKET, limit) + countUpTo(body, OPEN_BRACE, limit) <= limit) return false;
  let depth = 0;
  for (let i = 0; i < body.length; i++) {
    const byte = body[i]!;
    if (byte === QUOTE) {
      i = closingQuote(body, i);
      if (i === -1) return false; // an unterminated string: JSON.parse refuses it
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
