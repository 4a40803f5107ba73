/**
 * The one place that speaks HTTP: awsJson1_1 at POST / with X-Amz-Target: TrentService.<Op>,
 * SigV4-authenticated, AWS's error shapes and status codes, and GET /healthz; STS
 * GetCallerIdentity (query protocol) on the same POST / (sts.ts).
 *
 * Request path: target → SigV4 → JSON → model validation → handler → model serialisation.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import express from 'express';
import type { ApiAuditor } from '../audit/api-call.js';
import type { Caller, PrincipalRegistry } from '../auth/principals.js';
import type { SigV4Verifier } from '../auth/sigv4.js';
import { HsmError } from '../hsm/types.js';
import type { RequestContext, Services } from '../kms/context.js';
import { operationHandlers } from '../kms/operations/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { KmsError, internal, unsupported } from '../kms/errors.js';
import { httpStatusOf } from './error-response.js';
import { operationNames, parseInput, serializeOutput } from './model.js';
import { handleStsRequest, isStsRequest, type StsDeps } from './sts.js';

const TARGET_PREFIX = 'TrentService.';
const JSON_CONTENT_TYPE = 'application/x-amz-json-1.1';
/** Far above any valid KMS request (the largest members are a 32 KB policy and 8 KB blobs). */
const MAX_BODY_BYTES = 1024 * 1024;

export interface HttpDeps {
  services: Services;
  principals: PrincipalRegistry;
  verifier: SigV4Verifier;
  log: Logger;
  /** Resolves when token and store answer; rejects with the reason otherwise. */
  checkHealth: () => Promise<void>;
  /** Records every API request (allowed, denied, failed, malformed) before it is answered. */
  auditor?: ApiAuditor;
  metrics?: Metrics;
  /** undefined when ready to serve, else why not (GET /readyz; no token round trip). */
  checkReady?: () => string | undefined;
  /** STS GetCallerIdentity on the same port (sts.ts). */
  sts?: StsDeps;
}

/**
 * The node:http request listener. The KMS API (POST /) is served straight from node's request
 * and response objects: it is the hot path, and Express's per-request set-up cost four times what
 * a bare node:http handler costs here (5.8k vs 23k requests/s measured on 2 cores). Express serves
 * every other route.
 */
export function createRequestListener(deps: HttpDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const app = createHttpApp(deps);
  return (req, res) => {
    // SDKs correct their SigV4 clock by the Date header, so it comes from the service clock that
    // SigV4 verification also uses (tests move it).
    res.setHeader('Date', deps.services.now().toUTCString());
    if (req.method === 'POST' && req.url === '/') void handleApiRequest(deps, req, res);
    else app(req, res);
  };
}

function createHttpApp(deps: HttpDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.get('/healthz', (_req, res) => {
    deps.checkHealth().then(
      () => sendJson(res, 200, { status: 'ok' }),
      (e: unknown) => sendJson(res, 503, { status: 'unavailable', reason: e instanceof Error ? e.message : String(e) }),
    );
  });
  app.get('/readyz', (_req, res) => {
    const problem = deps.checkReady?.();
    if (problem === undefined) sendJson(res, 200, { status: 'ready' });
    else sendJson(res, 503, { status: 'not ready', reason: problem });
  });
  app.get('/metrics', (_req, res) => {
    const metrics = deps.metrics;
    if (!metrics) {
      sendJson(res, 404, { status: 'metrics disabled' });
      return;
    }
    metrics.render().then(
      (text) => {
        res.writeHead(200, { 'Content-Type': metrics.contentType() });
        res.end(text);
      },
      () => sendJson(res, 500, { status: 'metrics unavailable' }),
    );
  });
  // POST with a query string or another path still speaks the API's error language.
  app.post('/', (req, res) => {
    void handleApiRequest(deps, req, res);
  });
  app.use((req, res) => {
    const requestId = randomUUID();
    sendError(res, requestId, new KmsError('UnknownOperationException', `No route for ${req.method} ${req.path}.`));
  });
  return app;
}

async function handleApiRequest(deps: HttpDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const requestId = randomUUID();
  const eventId = randomUUID();
  const started = process.hrtime.bigint();
  const eventTime = deps.services.now();
  let operation = '-';
  let principalArn: string | undefined;
  // What the audit record needs, filled in as the request gets through each stage.
  let caller: Caller | undefined;
  let auditInput: unknown;
  let output: Record<string, unknown> | undefined;
  try {
    const body = await readBody(req);
    if (deps.sts && isStsRequest(req)) {
      const outcome = handleStsRequest(deps.sts, req, res, body, requestId);
      deps.log.info({ requestId, ...outcome, ms: roundMs(started) }, 'request');
      return;
    }
    operation = operationOf(req.headers['x-amz-target']);
    const accessKeyId = deps.verifier.verify({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders, body });
    caller = deps.principals.caller(accessKeyId);
    principalArn = caller.principal.arn;
    auditInput = parseJson(body);
    const input = parseInput(operation, auditInput);
    auditInput = input;
    const handler = operationHandlers[operation];
    if (!handler) throw unsupported(`${operation} is not supported by this service.`);
    const ctx: RequestContext = {
      requestId,
      eventId,
      caller,
      sourceIp: req.socket.remoteAddress ?? '',
      userAgent: req.headers['user-agent'] ?? '',
      secureTransport: false,
      operation,
      input,
    };
    output = await handler(input, ctx, deps.services);
    const responseBody = output === undefined ? '{}' : JSON.stringify(serializeOutput(operation, output));
    // Durable before the response: the record is on disk when the client hears back.
    if (deps.auditor) await deps.auditor.record(auditFacts(req, requestId, eventId, eventTime, operation, caller, auditInput, output, undefined));
    res.writeHead(200, { 'Content-Type': JSON_CONTENT_TYPE, 'x-amzn-RequestId': requestId });
    res.end(responseBody);
    deps.metrics?.request(operation, 'OK', elapsedMs(started) / 1000);
    deps.log.info({ requestId, operation, principal: principalArn, key: keyOf(output) ?? keyOf(auditInput), status: 200, ms: roundMs(started) }, 'request');
  } catch (e) {
    let error = toKmsError(e, deps.log, requestId, operation);
    if (deps.auditor) {
      try {
        await deps.auditor.record(auditFacts(req, requestId, eventId, eventTime, operation, caller, auditInput, undefined, error));
      } catch (auditErr) {
        // No record, no answer but a failure: the client must not take this for a result.
        deps.log.error({ requestId, operation, err: auditErr instanceof Error ? auditErr.message : String(auditErr) }, 'audit record could not be written');
        error = internal();
      }
    }
    sendError(res, requestId, error);
    deps.metrics?.request(operation, error.type, elapsedMs(started) / 1000);
    deps.log.info({ requestId, operation, principal: principalArn, key: keyOf(auditInput), status: httpStatusOf(error), error: error.type, ms: roundMs(started) }, 'request');
  }
}

function auditFacts(
  req: IncomingMessage,
  requestId: string,
  eventId: string,
  eventTime: Date,
  operation: string,
  caller: Caller | undefined,
  input: unknown,
  output: Record<string, unknown> | undefined,
  error: KmsError | undefined,
) {
  return {
    requestId,
    eventId,
    eventTime,
    operation: operation === '-' ? undefined : operation,
    headers: req.headers,
    sourceIp: req.socket.remoteAddress ?? '',
    caller,
    input,
    output,
    error: error ? { type: error.type, message: error.message } : undefined,
  };
}

function operationOf(target: string | string[] | undefined): string {
  if (typeof target !== 'string' || !target.startsWith(TARGET_PREFIX)) {
    throw new KmsError('UnknownOperationException', 'The X-Amz-Target header must name a TrentService operation.');
  }
  const operation = target.slice(TARGET_PREFIX.length);
  if (!operationNames.has(operation)) throw new KmsError('UnknownOperationException', `Unknown operation ${operation}.`);
  return operation;
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new KmsError('SerializationException', 'The request body is not valid JSON.');
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new KmsError('SerializationException', `The request body exceeds ${MAX_BODY_BYTES} bytes.`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Anything that is not already an API error becomes one; internal details go to the log only. */
function toKmsError(e: unknown, log: Logger, requestId: string, operation: string): KmsError {
  if (e instanceof KmsError) return e;
  if (e instanceof HsmError) {
    log.error({ requestId, operation, ckr: e.ckr, fn: e.fn, kind: e.kind }, 'token call failed');
    if (e.kind === 'unavailable') return new KmsError('KeyUnavailableException', 'The HSM that holds the key is not available. Retry the request.');
    if (e.kind === 'unsupported') return unsupported(`The token does not support a mechanism this operation needs (${e.fn}: ${e.ckr}).`);
    return internal();
  }
  log.error({ requestId, operation, err: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) }, 'internal error');
  return internal();
}

function sendError(res: ServerResponse, requestId: string, error: KmsError): void {
  if (res.headersSent) return;
  res.writeHead(httpStatusOf(error), { 'Content-Type': JSON_CONTENT_TYPE, 'x-amzn-RequestId': requestId, 'X-Amzn-ErrorType': error.type });
  res.end(JSON.stringify({ __type: error.type, message: error.message }));
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

const elapsedMs = (started: bigint) => Number(process.hrtime.bigint() - started) / 1e6;
const roundMs = (started: bigint) => Math.round(elapsedMs(started) * 100) / 100;

/** The key a request names (as given: ID, ARN or alias) or the output reports; never other members. */
function keyOf(members: unknown): string | undefined {
  if (typeof members !== 'object' || members === null) return undefined;
  const { KeyId, SourceKeyId, KeyMetadata } = members as { KeyId?: unknown; SourceKeyId?: unknown; KeyMetadata?: { KeyId?: unknown } };
  const key = KeyId ?? SourceKeyId ?? KeyMetadata?.KeyId;
  return typeof key === 'string' ? key.slice(0, 256) : undefined;
}
