/**
 * The one place that speaks HTTP: awsJson1_1 at POST / with X-Amz-Target: TrentService.<Op>,
 * SigV4-authenticated, AWS's error shapes and status codes, and GET /healthz. The second front
 * door, the XKS proxy API, has its own router beside this one (./xks/router.ts); STS
 * GetCallerIdentity (query protocol) is answered on the same POST / (sts.ts).
 *
 * Request path: target → SigV4 → JSON → model validation → handler → model serialisation.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import express from 'express';
import type { ApiAuditor } from '../audit/api-call.js';
import { ON_BEHALF_OF_HEADER, type Caller, type PrincipalRegistry, presentsBoundCertificate } from '../auth/principals.js';
import type { SigV4Verifier } from '../auth/sigv4.js';
import { HsmError, SLOW_LANE_FN } from '../hsm/types.js';
import type { RequestContext, Services } from '../kms/context.js';
import { operationHandlers } from '../kms/operations/index.js';
import { type Logger, requestLineLogger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { KmsError, accessDenied, internal, unsupported } from '../kms/errors.js';
import { type RequestQuotas, Throttled } from '../kms/quotas/quotas.js';
import type { ConnectionGuard } from './connections.js';
import { httpStatusOf, sendKmsError } from './error-response.js';
import { notHttp, readBody } from './body.js';
import { parseJsonBody } from './json-body.js';
import { operationNames, parseInput, serializeOutput } from './model.js';
import { isXksPath } from './xks/router.js';
import { isTlsSocket, peerIdentityOf } from './tls.js';
import { answerStsRequest, isStsRequest, sendStsAnswer, type StsDeps } from './sts.js';

const TARGET_PREFIX = 'TrentService.';
const JSON_CONTENT_TYPE = 'application/x-amz-json-1.1';
/** Far above any valid KMS request (the largest members are a 32 KB policy and 8 KB blobs). */
const MAX_BODY_BYTES = 1024 * 1024;

export interface HttpDeps {
  /** The home Region's services (clock, audit, console). */
  services: Services;
  /** Each served Region's services, by the Region a request is signed for (P11KMS_REGIONS);
   *  absent: the home Region alone. */
  regionalServices?: ReadonlyMap<string, Services>;
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
  /** The XKS proxy API (src/http/xks), when P11KMS_XKS_URI_PREFIX turns it on. */
  xks?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  /** Further routes beside the KMS API, each saying which requests are its own: the operator API
   *  (./operator-api.ts, which authenticates and audits its requests) and the console's static
   *  files (./console-static.ts). */
  routes?: { handles: (method: string, path: string) => boolean; router: express.Router }[];
  /** Request quotas (P11KMS_QUOTAS); absent: unlimited. */
  quotas?: RequestQuotas;
  /** Connection limits and the shutdown drain (src/http/connections.ts). */
  connections?: ConnectionGuard;
  /** STS GetCallerIdentity on the same port (sts.ts). */
  sts?: StsDeps;
}

/** What the API path needs: the deps and the logger of its per-request line. */
type ApiDeps = HttpDeps & { requestLog: Logger };

/** The operational probes (GET only, no authentication, not audited: see README). */
const PROBE_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The node:http request listener. The KMS API (POST /) is served straight from node's request
 * and response objects: it is the hot path, and Express's per-request set-up cost four times what
 * a bare node:http handler costs here (5.8k vs 23k requests/s measured on 2 cores). Express serves
 * the probes. Every other request (another method or path) goes the API's way too, to be
 * attributed, recorded and answered UnknownOperationException.
 */
export function createRequestListener(httpDeps: HttpDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const deps: ApiDeps = { ...httpDeps, requestLog: requestLineLogger(httpDeps.log) };
  const app = createHttpApp(deps);
  return (req, res) => {
    // SDKs correct their SigV4 clock by the Date header, so it comes from the service clock that
    // SigV4 verification also uses (tests move it).
    res.setHeader('Date', httpDate(deps.services.now()));
    deps.connections?.onRequest(res);
    if (req.method === 'POST' && req.url === '/') {
      void handleApiRequest(deps, req, res);
      return;
    }
    const path = (req.url ?? '').split('?', 1)[0]!;
    if (deps.xks && isXksPath(path)) void deps.xks(req, res);
    else if (req.method === 'GET' && PROBE_PATHS.has(path)) app(req, res);
    else if (deps.routes?.some((r) => r.handles(req.method ?? '', path))) app(req, res);
    // POST with a query string still speaks the API.
    else if (req.method === 'POST' && path === '/') void handleApiRequest(deps, req, res);
    else void handleApiRequest(deps, req, res, new KmsError('UnknownOperationException', `No route for ${req.method} ${path.slice(0, 256)}.`));
  };
}

/**
 * node:http's clientError: bytes too broken to parse as HTTP (request line, headers, chunking),
 * headers over node's limit, or a request that did not arrive in time never reach the request
 * listener. Each is recorded (no caller: nothing was authenticated) and answered with an
 * AWS-style error, as node would answer it (400, 431, 408), then the connection closes. A
 * connection reset by the client carries no request and is only closed.
 */
export function createClientErrorListener(deps: HttpDeps): (err: Error & { code?: string }, socket: Duplex) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // node:http's own link from a socket to the response it is serving (set for the request in flight).
    const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage;
    if (inFlight && !inFlight.req.complete) {
      // The bytes broke inside a request the listener already serves (bad chunking): that request
      // fails with the parse error and is recorded and answered once, by the API path.
      inFlight.shouldKeepAlive = false;
      inFlight.req.emit('error', err);
      return;
    }
    const sourceIp = (socket as Duplex & { remoteAddress?: string }).remoteAddress ?? '';
    void (async () => {
      const requestId = randomUUID();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      let error = notHttp(err.code);
      try {
        const facts = { requestId, eventId: randomUUID(), eventTime: deps.services.now(), operation: undefined, headers: {}, sourceIp, caller: undefined, input: undefined, output: undefined };
        await deps.auditor?.record({ ...facts, error: { type: error.type, message: error.message } });
      } catch (auditErr) {
        deps.log.error({ requestId, err: auditErr instanceof Error ? auditErr.message : String(auditErr) }, 'audit record could not be written');
        error = internal();
      }
      deps.metrics?.request('-', error.type, 0);
      if (inFlight) {
        // Garbage pipelined behind a complete request: its answer must not cut into that one's.
        inFlight.once('finish', () => socket.destroy());
        return;
      }
      const body = JSON.stringify({ __type: error.type, message: error.message });
      const code = error.type === 'KMSInternalException' ? 500 : status;
      socket.end(
        `HTTP/1.1 ${code} ${STATUS_CODES[code]}\r\n` +
          `Content-Type: ${JSON_CONTENT_TYPE}\r\nx-amzn-RequestId: ${requestId}\r\nX-Amzn-ErrorType: ${error.type}\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    })();
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
  for (const route of deps.routes ?? []) app.use(route.router);
  return app;
}

/**
 * Serves one API request, or with `notApi` the answer for a request outside the API (another
 * method or path), which is still authenticated where it can be, so its record names the caller.
 */
async function handleApiRequest(deps: ApiDeps, req: IncomingMessage, res: ServerResponse, notApi?: KmsError): Promise<void> {
  const requestId = randomUUID();
  const eventId = randomUUID();
  const started = process.hrtime.bigint();
  const eventTime = deps.services.now();
  // Read now: a client that disconnects takes its socket's address with it.
  const sourceIp = req.socket.remoteAddress ?? '';
  let operation = '-';
  let principalArn: string | undefined;
  // What the audit record needs, filled in as the request gets through each stage.
  let caller: Caller | undefined;
  let auditInput: unknown;
  let output: Record<string, unknown> | undefined;
  const resources = new Set<string>();
  // The home Region's until the signature names the request's.
  let services = deps.services;
  try {
    deps.connections?.admitApiRequest(res);
    const body = await readBody(req, MAX_BODY_BYTES);
    if (notApi) {
      try {
        caller = deps.principals.caller(deps.verifier.verify({ method: req.method ?? '', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders, body }));
        principalArn = caller.principal.arn;
      } catch {
        // Not (validly) signed: recorded with the access key it claims, if any.
      }
      throw notApi;
    }
    if (deps.sts && isStsRequest(req)) {
      const answer = answerStsRequest(deps.sts, req, body, requestId);
      let ok = true;
      if (deps.auditor) {
        // Recorded before it is answered, like every KMS request (CloudTrail's eventSource for STS).
        ok = await deps.auditor
          .record({
            requestId, eventId, eventTime, operation: answer.operation, headers: req.headers, sourceIp, caller: answer.caller, input: undefined, output: undefined,
            error: answer.error && { type: answer.error.code, message: answer.error.message }, eventSource: 'sts.amazonaws.com',
          })
          .then(() => true, (auditErr: unknown) => {
            deps.log.error({ requestId, err: auditErr instanceof Error ? auditErr.message : String(auditErr) }, 'audit record could not be written');
            return false;
          });
      }
      if (ok) sendStsAnswer(res, requestId, answer);
      else sendError(res, requestId, internal());
      deps.requestLog.info({ requestId, operation: `sts:${answer.operation}`, principal: answer.caller?.principal.arn, status: ok ? answer.status : 500, error: answer.error?.code, ms: roundMs(started) }, 'request');
      return;
    }
    operation = operationOf(req.headers['x-amz-target']);
    const { accessKeyId, region } = deps.verifier.verifyScoped({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders, body });
    services = deps.regionalServices?.get(region) ?? deps.services;
    caller = deps.principals.caller(accessKeyId);
    principalArn = caller.principal.arn;
    if (!presentsBoundCertificate(caller.principal, peerIdentityOf(req.socket))) {
      throw accessDenied(`${principalArn} must call with the client certificate bound to it.`);
    }
    const onBehalfOf = req.headers[ON_BEHALF_OF_HEADER];
    if (onBehalfOf !== undefined) {
      caller = deps.principals.onBehalfOf(caller, String(onBehalfOf), services.account.region);
      principalArn = caller.principal.arn;
    }
    auditInput = parseJsonBody(body);
    const input = parseInput(operation, auditInput);
    auditInput = input;
    deps.quotas?.admit(operation, input, principalArn);
    const handler = operationHandlers[operation];
    if (!handler) throw unsupported(`${operation} is not supported by this service.`);
    const ctx: RequestContext = {
      requestId,
      eventId,
      caller,
      sourceIp,
      userAgent: req.headers['user-agent'] ?? '',
      secureTransport: isTlsSocket(req.socket),
      operation,
      input,
      resources,
    };
    output = await handler(input, ctx, services);
    const responseBody = output === undefined ? '{}' : serializeOutput(operation, output);
    // Durable before the response: the record is on disk when the client hears back.
    if (deps.auditor) await deps.auditor.record(auditFacts(req, sourceIp, requestId, eventId, eventTime, operation, caller, auditInput, output, undefined, resources, services));
    res.writeHead(200, { 'Content-Type': JSON_CONTENT_TYPE, 'x-amzn-RequestId': requestId });
    res.end(responseBody);
    deps.metrics?.request(operation, 'OK', elapsedMs(started) / 1000);
    deps.requestLog.info({ requestId, operation, principal: principalArn, key: keyOf(output) ?? keyOf(auditInput), status: 200, ms: roundMs(started) }, 'request');
  } catch (e) {
    let error = toKmsError(e, deps.log, requestId, operation);
    if (deps.auditor) {
      try {
        await deps.auditor.record(auditFacts(req, sourceIp, requestId, eventId, eventTime, operation, caller, auditInput, undefined, error, resources, services));
      } catch (auditErr) {
        // No record, no answer but a failure: the client must not take this for a result.
        deps.log.error({ requestId, operation, err: auditErr instanceof Error ? auditErr.message : String(auditErr) }, 'audit record could not be written');
        error = internal();
      }
    }
    sendError(res, requestId, error);
    if (error instanceof Throttled) deps.metrics?.throttled(operation, error.family);
    deps.metrics?.request(operation, error.type, elapsedMs(started) / 1000);
    deps.requestLog.info({ requestId, operation, principal: principalArn, key: keyOf(auditInput), status: httpStatusOf(error), error: error.type, ms: roundMs(started) }, 'request');
  }
}

function auditFacts(
  req: IncomingMessage,
  sourceIp: string,
  requestId: string,
  eventId: string,
  eventTime: Date,
  operation: string,
  caller: Caller | undefined,
  input: unknown,
  output: Record<string, unknown> | undefined,
  error: KmsError | undefined,
  resources: Set<string>,
  regional: Services,
) {
  return {
    requestId,
    eventId,
    eventTime,
    operation: operation === '-' ? undefined : operation,
    headers: req.headers,
    sourceIp,
    caller,
    input,
    output,
    error: error ? { type: error.type, message: error.message } : undefined,
    authorizedKeyArns: [...resources],
    regional,
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

/** Anything that is not already an API error becomes one; internal details go to the log only. */
function toKmsError(e: unknown, log: Logger, requestId: string, operation: string): KmsError {
  if (e instanceof KmsError) return e;
  // Back-pressure, not a fault: answered at once so that the client backs off.
  if (e instanceof HsmError && e.kind === 'busy') {
    return e.fn === SLOW_LANE_FN ? new Throttled('slow-token-calls', 'too many key generations and private-key operations are waiting for the HSM') : new Throttled('pkcs11-sessions', 'every HSM session is busy');
  }
  if (e instanceof HsmError) {
    log.error({ requestId, operation, ckr: e.ckr, fn: e.fn, kind: e.kind }, 'token call failed');
    if (e.kind === 'unavailable') return new KmsError('KeyUnavailableException', 'The HSM that holds the key is not available. Retry the request.');
    if (e.kind === 'timeout') return new KmsError('DependencyTimeoutException', 'The HSM that holds the key did not answer in time. Retry the request.');
    if (e.kind === 'unsupported') return unsupported(`The token does not support a mechanism this operation needs (${e.fn}: ${e.ckr}).`);
    return internal();
  }
  log.error({ requestId, operation, err: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) }, 'internal error');
  return internal();
}

function sendError(res: ServerResponse, requestId: string, error: KmsError): void {
  sendKmsError(res, requestId, error, JSON_CONTENT_TYPE);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

let lastHttpDate = { second: NaN, text: '' };
/** The Date header's text (to the second): made once per second of the service clock. */
function httpDate(now: Date): string {
  const second = Math.floor(now.getTime() / 1000);
  if (second !== lastHttpDate.second) lastHttpDate = { second, text: now.toUTCString() };
  return lastHttpDate.text;
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
