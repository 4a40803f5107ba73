/** SHA-256 as lower-case hex, for the request path (SigV4) and the audit chain. */
import crypto, { createHash } from 'node:crypto';

// crypto.hash (Node >= 20.12) is a one-shot without the Hash object: same result, about half the
// cost for the few hundred bytes of a canonical request or an audit line (1.9 vs 0.8-1.1 µs).
const oneShot = (crypto as { hash?: (algorithm: string, data: string | Buffer, encoding: 'hex') => string }).hash;

export const sha256Hex = oneShot
  ? (data: string | Buffer) => oneShot('sha256', data, 'hex')
  : (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
