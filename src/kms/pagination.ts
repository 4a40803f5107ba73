/**
 * Limit/Marker pagination as AWS's List* operations do it: an opaque marker, NextMarker only when
 * Truncated is true. Markers encode the last item returned, so pages stay stable under inserts,
 * and the listing they belong to (kind, plus the key for per-key lists), so a marker from another
 * listing is InvalidMarkerException rather than a silently wrong page.
 */
import { KmsError, constraintViolation } from './errors.js';

const invalidMarker = () => new KmsError('InvalidMarkerException', 'The marker that specifies where pagination should next begin is not valid.');

export function decodeMarker(kind: string, marker: string | undefined): string | undefined {
  if (marker === undefined) return undefined;
  const decoded = Buffer.from(marker, 'base64url').toString('utf8');
  const prefix = `${kind}:`;
  if (!decoded.startsWith(prefix) || Buffer.from(decoded, 'utf8').toString('base64url') !== marker) throw invalidMarker();
  return decoded.slice(prefix.length);
}

const encodeMarker = (kind: string, last: string) => Buffer.from(`${kind}:${last}`, 'utf8').toString('base64url');

/**
 * Fetches one page: `fetch` is asked for limit + 1 items so truncation is known without a count.
 */
export async function paginate<T>(
  kind: string,
  input: { Limit?: number; Marker?: string },
  defaultLimit: number,
  maxLimit: number,
  fetch: (after: string | undefined, limit: number) => Promise<T[]>,
  cursorOf: (item: T) => string,
): Promise<{ items: T[]; Truncated: boolean; NextMarker?: string }> {
  // The model allows Limit up to 1000 everywhere; each operation documents its own maximum.
  if (input.Limit !== undefined && input.Limit > maxLimit) {
    throw constraintViolation(input.Limit, 'limit', `Member must have value less than or equal to ${maxLimit}`);
  }
  const limit = input.Limit ?? defaultLimit;
  const after = decodeMarker(kind, input.Marker);
  const fetched = await fetch(after, limit + 1);
  const truncated = fetched.length > limit;
  const items = truncated ? fetched.slice(0, limit) : fetched;
  return { items, Truncated: truncated, NextMarker: truncated ? encodeMarker(kind, cursorOf(items[items.length - 1]!)) : undefined };
}
