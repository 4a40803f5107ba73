/**
 * The product's own read-only operator API, for the console and for scripts: the audit trail, the
 * usage report and the service's state. Each route is SigV4-signed with the same credentials as
 * the KMS API (service `kms`), authorized by the same policy engine on actions of the product's
 * own (resource `*`; the account root always, IAM users and roles only where an identity policy
 * allows the action), answered in AWS's JSON error shape, and audited like any KMS request.
 *
 *   GET /audit?from&to&key&principal&eventName&errorCode&limit  p11kms:ReadAuditTrail
 *   GET /audit/verification                                      p11kms:ReadAuditTrail
 *   GET /usage?month=YYYY-MM&prices=true                         p11kms:GetUsageReport
 *   GET /service                                                 p11kms:DescribeService
 */
import { randomUUID } from 'node:crypto';
import type { Request, Response, Router } from 'express';
import express from 'express';
import { z } from 'zod';
import type { ApiAuditor } from '../audit/api-call.js';
import { queryAuditRecords, type StoredRecord } from '../audit/query.js';
import type { VerifyResult } from '../audit/verify.js';
import { verifyAuditTrailInWorker } from '../audit/verify-worker.js';
import type { Caller, PrincipalRegistry } from '../auth/principals.js';
import type { DatabaseConfig } from '../config.js';
import type { SigV4Verifier } from '../auth/sigv4.js';
import { capabilityTable } from '../kms/capabilities.js';
import type { Services } from '../kms/context.js';
import { KmsError, validation } from '../kms/errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { PRODUCT_VERSION } from '../package-info.js';
import { dailyUsage } from '../usage/daily.js';
import { usageReport } from '../usage/report.js';
import { sendJsonAnswer, sendKmsError } from './error-response.js';

export interface OperatorApiDeps {
  services: Services;
  principals: PrincipalRegistry;
  verifier: SigV4Verifier;
  log: Logger;
  dataDir: string;
  database: DatabaseConfig;
  checkHealth: () => Promise<void>;
  auditor?: ApiAuditor;
  metrics?: Metrics;
}

const MAX_RECORDS = 1000;
/** A verification reads the whole trail: its answer is reused this long. */
const VERIFICATION_REUSE_MS = 15_000;

const auditQuery = z
  .object({
    from: z.iso.datetime({ offset: true }).optional(),
    to: z.iso.datetime({ offset: true }).optional(),
    key: z.string().max(2048).optional(),
    principal: z.string().max(2048).optional(),
    eventName: z.string().max(128).optional(),
    errorCode: z.string().max(128).optional(),
    limit: z.coerce.number().int().min(1).max(MAX_RECORDS).optional(),
  })
  .strict();
const usageQuery = z
  .object({ month: z.string().regex(/^\d{4}-(0[1-9]|1[0-2])$/, 'must be YYYY-MM'), prices: z.enum(['true', 'false']).optional() })
  .strict();
const noQuery = z.object({}).strict();

const OPERATOR_PATHS = new Set(['/audit', '/audit/verification', '/usage', '/service']);

/** The routes, and which requests are theirs (every other request goes to the KMS API's router). */
export function createOperatorRoutes(deps: OperatorApiDeps): { handles: (method: string, path: string) => boolean; router: Router } {
  return { handles: (method, path) => method === 'GET' && OPERATOR_PATHS.has(path), router: createOperatorRouter(deps) };
}

function createOperatorRouter(deps: OperatorApiDeps): Router {
  const router = express.Router();
  let verification: { at: number; result: Promise<VerifyResult> } | undefined;

  router.get(
    '/audit',
    operatorRoute(deps, 'ReadAuditTrail', auditQuery, async (q) => {
      const limit = q.limit ?? 100;
      // Newest first: keep the last `limit` matches of the (chronological) trail.
      const newest: StoredRecord[] = [];
      for await (const rec of queryAuditRecords(deps.dataDir, {
        from: q.from ? new Date(q.from) : undefined,
        to: q.to ? new Date(q.to) : undefined,
        key: q.key,
        principal: q.principal,
        eventName: q.eventName,
      })) {
        if (q.errorCode !== undefined && (q.errorCode === '' ? !rec.errorCode : rec.errorCode !== q.errorCode)) continue;
        newest.push(rec);
        if (newest.length > limit) newest.shift();
      }
      return { records: newest.reverse() };
    }),
  );

  router.get(
    '/audit/verification',
    operatorRoute(deps, 'ReadAuditTrail', noQuery, async () => {
      const now = Date.now();
      if (verification === undefined || now - verification.at > VERIFICATION_REUSE_MS) {
        const entry = { at: now, result: verifyAuditTrailInWorker(deps.dataDir) };
        entry.result.catch(() => (verification = undefined));
        verification = entry;
      }
      const r = await verification.result;
      return {
        verifiedAt: new Date(verification.at).toISOString(),
        // Broken: a finding. Unanchored tail: the newest records are hash-chained but no signed
        // digest covers them yet (normal while the service runs between digests).
        state: !r.ok ? 'broken' : r.notes.some((n) => n.includes('not yet covered by a signed digest')) ? 'unanchored tail' : 'intact',
        ...r,
      };
    }),
  );

  router.get(
    '/usage',
    operatorRoute(deps, 'GetUsageReport', usageQuery, async (q) => {
      const report = await usageReport(deps.dataDir, deps.database, q.month, q.prices === 'true');
      return { report, daily: await dailyUsage(deps.dataDir, q.month) };
    }),
  );

  router.get(
    '/service',
    operatorRoute(deps, 'DescribeService', noQuery, async () => {
      let health: { status: 'ok' | 'unavailable'; reason?: string } = { status: 'ok' };
      try {
        await deps.checkHealth();
      } catch (e) {
        health = { status: 'unavailable', reason: e instanceof Error ? e.message : String(e) };
      }
      const svc = deps.services;
      return {
        version: PRODUCT_VERSION,
        account: svc.account,
        token: svc.hsm.info,
        health,
        capabilities: capabilityTable(svc),
        requests: (await deps.metrics?.requestSummary()) ?? [],
      };
    }),
  );
  return router;
}

/** One authenticated, authorized, audited GET route with a validated query string. */
function operatorRoute<T extends z.ZodType>(deps: OperatorApiDeps, operation: string, schema: T, answer: (query: z.output<T>) => Promise<unknown>) {
  return (req: Request, res: Response): void => {
    void (async () => {
      const requestId = randomUUID();
      const eventId = randomUUID();
      const started = process.hrtime.bigint();
      const eventTime = deps.services.now();
      let caller: Caller | undefined;
      let input: Record<string, unknown> = {};
      let error: KmsError | undefined;
      let body: unknown;
      try {
        const accessKeyId = deps.verifier.verify({ method: 'GET', url: req.originalUrl, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0) });
        caller = deps.principals.caller(accessKeyId);
        const parsed = schema.safeParse(req.query);
        if (!parsed.success) {
          const issue = parsed.error.issues[0]!;
          throw validation(`${issue.path.join('.') || 'query'}: ${issue.message}`);
        }
        input = parsed.data as Record<string, unknown>;
        await deps.services.authorizer.authorize({
          caller,
          action: `p11kms:${operation}`,
          resource: '*',
          operation,
          input,
          sourceIp: req.socket.remoteAddress ?? '',
          secureTransport: false,
          now: eventTime,
        });
        body = await answer(parsed.data);
      } catch (e) {
        error = e instanceof KmsError ? e : internalError(deps.log, requestId, e);
      }
      try {
        await deps.auditor?.record({ requestId, eventId, eventTime, operation, headers: req.headers, sourceIp: req.socket.remoteAddress ?? '', caller, input, output: undefined, error: error && { type: error.type, message: error.message } });
      } catch (auditErr) {
        deps.log.error({ requestId, err: auditErr instanceof Error ? auditErr.message : String(auditErr) }, 'audit record could not be written');
        error = new KmsError('KMSInternalException', 'An internal error occurred.');
      }
      deps.metrics?.request(operation, error ? error.type : 'OK', Number(process.hrtime.bigint() - started) / 1e9);
      if (error) sendKmsError(res, requestId, error);
      else sendJsonAnswer(res, requestId, body);
    })();
  };
}

function internalError(log: Logger, requestId: string, e: unknown): KmsError {
  log.error({ requestId, err: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) }, 'operator API failed');
  return new KmsError('KMSInternalException', 'An internal error occurred.');
}


