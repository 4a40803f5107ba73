/**
 * Reading a request body within a size limit, for both front doors (the KMS API in server.ts and
 * the XKS proxy API in xks/router.ts): the same drain, the same answers to a body cut short.
 */
import type { IncomingMessage } from 'node:http';
import { KmsError } from '../kms/errors.js';

/** HTTP that node's parser or the body stream rejected. */
export const notHttp = (code: string | undefined) => new KmsError('SerializationException', `The request is not valid HTTP (${code ?? 'parse error'}).`);

/** How long the rest of a refused oversized body is read and discarded before the connection
 *  is cut: closing at once would reset the connection under the client, answer unread. */
const OVERSIZED_DRAIN_MS = 10_000;

/** The body, at most `maxBytes`. A larger one (announced or sent) is refused at once with an
 *  error the caller answers (RequestEntityTooLargeException); the rest is drained, so the client
 *  reads that answer. A body cut short, or HTTP that breaks mid-body, is a SerializationException. */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const refuse = () => {
      req.removeListener('data', onData);
      req.resume();
      const cut = setTimeout(() => req.destroy(), OVERSIZED_DRAIN_MS).unref();
      req.once('end', () => clearTimeout(cut));
      req.once('close', () => clearTimeout(cut));
      reject(new KmsError('RequestEntityTooLargeException', `The request body exceeds the limit of ${maxBytes} bytes.`));
    };
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) refuse();
      else chunks.push(chunk);
    };
    // A client that goes away mid-body: its request is still recorded, as this.
    const cutShort = () => reject(new KmsError('SerializationException', 'The connection closed before the request body was complete.'));
    // Anything else (also while a refused body drains): the body's framing broke or it timed out
    // (see createClientErrorListener).
    req.on('error', (e: Error & { code?: string }) => (e.code === 'ECONNRESET' || e.code === 'HPE_INVALID_EOF_STATE' ? cutShort() : reject(notHttp(e.code))));
    req.on('close', () => {
      if (!req.complete) cutShort();
    });
    if (Number(req.headers['content-length']) > maxBytes) return refuse();
    req.on('data', onData);
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
  });
}

