/**
 * The XKS Proxy API v1 on the wire: POST <prefix>/kms/xks/v1/keys/<externalKeyId>/{metadata,
 * encrypt, decrypt} and POST <prefix>/kms/xks/v1/health, JSON with Base64 members, SigV4 with the
 * service name `kms-xks-proxy`, and the spec's error names and statuses.
 *
 * Request path: route (InvalidUriPathException, 405 for another method) → SigV4
 * (AuthenticationFailedException) → JSON → schema (ValidationException) → src/kms/xks → JSON.
 * Every request that reaches an XKS path is audited before it is answered.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { claimedAccessKeyId } from '../../audit/api-call.js';
import type { XksAuditor } from '../../audit/xks-call.js';
import type { SigV4Verifier } from '../../auth/sigv4.js';
import { HsmError } from '../../hsm/types.js';
import { keyArn } from '../../kms/arn.js';
import { KmsError } from '../../kms/errors.js';
import { XksError, xksValidation } from '../../kms/xks/errors.js';
import * as xks from '../../kms/xks/operations.js';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics.js';
import { readBody } from '../body.js';
import { sendXksError } from './error-response.js';

export const XKS_API_PATH = '/kms/xks/v1';
/** Far above the largest valid request (Base64 of 4300 bytes plaintext and 8192 bytes AAD plus
 *  metadata with 2048-character ARNs). */
const MAX_BODY_BYTES = 64 * 1024;
const EXTERNAL_KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;

export interface XksHttpDeps {
  /** e.g. '/xks/v1prefix' ('' for none). */
  uriPrefix: string;
  verifier: SigV4Verifier;
  xks: xks.XksServices;
  log: Logger;
  auditor?: XksAuditor;
  metrics?: Metrics;
}

type Operation = 'GetKeyMetadata' | 'Encrypt' | 'Decrypt' | 'GetHealthStatus';

/** Whether a request path is meant for an XKS proxy (under any prefix): those get XKS errors,
 *  never the KMS API's. */
export function isXksPath(path: string): boolean {
  return path.includes(`${XKS_API_PATH}/`) || path.endsWith(XKS_API_PATH);
}

export function createXksHandler(deps: XksHttpDeps): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const base = deps.uriPrefix + XKS_API_PATH;
  return async (req, res) => {
    const requestId = randomUUID();
    const started = process.hrtime.bigint();
    const eventTime = deps.xks.svc.now();
    const path = (req.url ?? '/').split('?', 1)[0]!;
    let operation: Operation | undefined;
    let externalKeyId: string | undefined;
    let accessKeyId: string | undefined;
    let body: Record<string, unknown> | undefined;
    let keyArnOfRequest: string | undefined;
    try {
      const route = routeOf(path, base);
      operation = route.operation;
      externalKeyId = route.externalKeyId;
      if (req.method !== 'POST') {
        // The spec's one answer outside its error table.
        drain(req);
        res.writeHead(405, { Allow: 'POST', 'Content-Type': 'application/json', 'x-amzn-RequestId': requestId });
        res.end(JSON.stringify({ errorMessage: `${String(req.method).slice(0, 16)} is not allowed here; XKS Proxy API calls are POST requests.` }));
        await audit(deps, { requestId, eventTime, operation, externalKeyId, req, error: new XksError('ValidationException', `HTTP method ${String(req.method).slice(0, 16)} is not allowed.`) });
        return;
      }
      const raw = await readBody(req, MAX_BODY_BYTES);
      body = jsonObjectOrUndefined(raw); // for the audit record, even when authentication fails
      accessKeyId = authenticate(deps, req, raw);
      body = parseJsonObject(raw);
      if (externalKeyId !== undefined) {
        if (!EXTERNAL_KEY_ID.test(externalKeyId)) throw xksValidation('The externalKeyId must be 1-128 letters, digits, periods, hyphens or underscores.');
        keyArnOfRequest = keyArn(deps.xks.svc.account, externalKeyId);
      }
      const output = await perform(deps, operation, externalKeyId, body);
      await audit(deps, { requestId, eventTime, operation, externalKeyId, keyArn: keyArnOfRequest, accessKeyId, req, body });
      res.writeHead(200, { 'Content-Type': 'application/json', 'x-amzn-RequestId': requestId });
      res.end(JSON.stringify(output));
      deps.metrics?.request(`Xks${operation}`, 'OK', elapsedSeconds(started));
    } catch (e) {
      let error = toXksError(e, deps.log, requestId);
      try {
        await audit(deps, { requestId, eventTime, operation, externalKeyId, keyArn: error.errorName === 'KeyNotFoundException' ? undefined : keyArnOfRequest, accessKeyId, req, body, error });
      } catch (auditErr) {
        // No record, no answer but a failure: AWS KMS must not take this for a result.
        deps.log.error({ requestId, err: auditErr instanceof Error ? auditErr.message : String(auditErr) }, 'XKS audit record could not be written');
        error = new XksError('InternalException', 'The request could not be recorded.');
      }
      sendXksError(res, requestId, error);
      deps.metrics?.request(`Xks${operation ?? 'UnknownOperation'}`, error.errorName, elapsedSeconds(started));
    }
    deps.log.debug(
      { requestId, xksOperation: operation, externalKeyId, kmsRequestId: kmsRequestIdOf(body), status: res.statusCode, ms: elapsedSeconds(started) * 1000 },
      'xks request',
    );
  };
}

function routeOf(path: string, base: string): { operation: Operation; externalKeyId?: string } {
  if (path.startsWith(base)) {
    const rest = path.slice(base.length);
    if (rest === '/health') return { operation: 'GetHealthStatus' };
    const m = /^\/keys\/([^/]+)\/(metadata|encrypt|decrypt)$/.exec(rest);
    if (m) {
      const operation = m[2] === 'metadata' ? 'GetKeyMetadata' : m[2] === 'encrypt' ? 'Encrypt' : 'Decrypt';
      return { operation, externalKeyId: decodeURIComponentSafe(m[1]!) };
    }
  }
  throw new XksError('InvalidUriPathException', 'The URI path is not an XKS Proxy API path of this proxy.');
}

function authenticate(deps: XksHttpDeps, req: IncomingMessage, raw: Buffer): string {
  try {
    return deps.verifier.verify({ method: 'POST', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders, body: raw });
  } catch (e) {
    if (e instanceof KmsError) throw new XksError('AuthenticationFailedException', e.message);
    throw e;
  }
}

async function perform(deps: XksHttpDeps, operation: Operation, externalKeyId: string | undefined, body: Record<string, unknown>): Promise<unknown> {
  switch (operation) {
    case 'GetHealthStatus':
      parse(healthRequest, body);
      return xks.getHealthStatus(deps.xks);
    case 'GetKeyMetadata':
      return xks.getKeyMetadata(deps.xks, externalKeyId!, parse(metadataRequest, body));
    case 'Encrypt': {
      const out = await xks.encrypt(deps.xks, externalKeyId!, parse(encryptRequest, body));
      return {
        ciphertext: out.ciphertext.toString('base64'),
        ciphertextMetadata: out.ciphertextMetadata.toString('base64'),
        initializationVector: out.initializationVector.toString('base64'),
        authenticationTag: out.authenticationTag.toString('base64'),
        ...(out.ciphertextDataIntegrityValue ? { ciphertextDataIntegrityValue: out.ciphertextDataIntegrityValue.toString('base64') } : {}),
      };
    }
    case 'Decrypt': {
      const out = await xks.decrypt(deps.xks, externalKeyId!, parse(decryptRequest, body));
      return { plaintext: out.plaintext.toString('base64') };
    }
  }
}

// Request shapes. requestMetadata members are opaque strings (kmsRequestId must not be parsed);
// unknown members are accepted, since AWS KMS may add fields (spec, Appendix B).
const arnLike = z.string().max(2048);
const opaque = z.string().max(2048);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const base64 = z
  .string()
  .refine((s) => BASE64.test(s), 'must be Base64 (RFC 4648, with padding)')
  .transform((s) => Buffer.from(s, 'base64'));
const cryptoMetadata = z.object({
  awsPrincipalArn: arnLike,
  kmsKeyArn: arnLike,
  kmsOperation: opaque,
  kmsRequestId: opaque,
  kmsViaService: opaque.optional(),
  awsSourceVpc: opaque.optional(),
  awsSourceVpce: opaque.optional(),
});
const metadataRequest = z.object({ requestMetadata: cryptoMetadata.extend({ kmsKeyArn: arnLike.optional() }) });
const healthRequest = z.object({ requestMetadata: z.object({ kmsRequestId: opaque, kmsOperation: opaque }) });
const encryptRequest = z.object({
  requestMetadata: cryptoMetadata,
  plaintext: base64,
  encryptionAlgorithm: z.literal('AES_GCM'),
  additionalAuthenticatedData: base64.optional(),
  ciphertextDataIntegrityValueAlgorithm: z.literal('SHA_256').optional(),
});
const decryptRequest = z.object({
  requestMetadata: cryptoMetadata,
  ciphertext: base64,
  ciphertextMetadata: base64.optional(),
  encryptionAlgorithm: z.literal('AES_GCM'),
  additionalAuthenticatedData: base64.optional(),
  initializationVector: base64,
  authenticationTag: base64,
});

function parse<T extends z.ZodType>(schema: T, body: Record<string, unknown>): z.output<T> {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const member = issue.path.join('.') || '(body)';
  const problem = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message;
  throw xksValidation(`${member} ${problem}.`);
}

function parseJsonObject(raw: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw xksValidation('The request body is not valid JSON.');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw xksValidation('The request body must be a JSON object.');
  return parsed as Record<string, unknown>;
}

function jsonObjectOrUndefined(raw: Buffer): Record<string, unknown> | undefined {
  try {
    return parseJsonObject(raw);
  } catch {
    return undefined;
  }
}

function drain(req: IncomingMessage): void {
  req.resume();
}

/** Domain and token failures in the spec's words; details go to the log only. */
function toXksError(e: unknown, log: Logger, requestId: string): XksError {
  if (e instanceof XksError) return e;
  // The shared body reader's refusals (too large, cut short, broken HTTP): the input is invalid.
  if (e instanceof KmsError && (e.type === 'RequestEntityTooLargeException' || e.type === 'SerializationException')) return xksValidation(e.message);
  if (e instanceof KmsError && e.type === 'KMSInvalidStateException') return new XksError('InvalidStateException', e.message);
  if (e instanceof HsmError) {
    log.error({ requestId, ckr: e.ckr, fn: e.fn, kind: e.kind }, 'XKS token call failed');
    return new XksError('InternalException', 'The HSM could not perform the operation. Retry the request.');
  }
  log.error({ requestId, err: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) }, 'XKS internal error');
  return new XksError('InternalException', 'An internal error occurred.');
}

interface AuditFacts {
  requestId: string;
  eventTime: Date;
  operation: Operation | undefined;
  externalKeyId?: string;
  keyArn?: string;
  accessKeyId?: string;
  req: IncomingMessage;
  body?: Record<string, unknown>;
  error?: XksError;
}

async function audit(deps: XksHttpDeps, f: AuditFacts): Promise<void> {
  if (!deps.auditor) return;
  const userAgent = f.req.headers['user-agent'];
  await deps.auditor.record({
    requestId: f.requestId,
    eventTime: f.eventTime,
    operation: f.operation,
    externalKeyId: f.externalKeyId,
    keyArn: f.keyArn,
    accessKeyId: f.accessKeyId ?? claimedAccessKeyId(f.req.headers),
    sourceIp: f.req.socket.remoteAddress ?? '',
    userAgent: typeof userAgent === 'string' ? userAgent : '',
    body: f.body,
    error: f.error ? { name: f.error.errorName, message: f.error.message } : undefined,
  });
}

function kmsRequestIdOf(body: Record<string, unknown> | undefined): string | undefined {
  const metadata = body?.requestMetadata as Record<string, unknown> | undefined;
  return typeof metadata?.kmsRequestId === 'string' ? metadata.kmsRequestId.slice(0, 128) : undefined;
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

const elapsedSeconds = (started: bigint) => Number(process.hrtime.bigint() - started) / 1e9;
