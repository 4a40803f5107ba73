/**
 * From one API request to its audit record: who (userIdentity, or what the request claimed when
 * authentication failed), what (eventName, whitelisted requestParameters / responseElements), on
 * which keys (resources: key ARNs from the output, the input's key IDs/ARNs, an alias looked up in
 * the store, or the key named by a ciphertext header), and how it ended (errorCode/errorMessage).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Caller } from '../auth/principals.js';
import { keyArn } from '../kms/arn.js';
import { parseBlob } from '../kms/ciphertext.js';
import type { Services } from '../kms/context.js';
import { apiCallRecord, identityOf, unknownIdentity } from './record.js';
import type { AuditTrail } from './trail.js';

export interface ApiCallAudit {
  requestId: string;
  /** Chosen by the HTTP layer so the request's handler can name it (GetKeyLastUsage). */
  eventId: string;
  eventTime: Date;
  /** The validated operation name; undefined when the target was missing or unknown. */
  operation: string | undefined;
  headers: IncomingHttpHeaders;
  sourceIp: string;
  caller: Caller | undefined;
  /** Validated input when validation passed, else the parsed JSON body (if any). */
  input: unknown;
  output: Record<string, unknown> | undefined;
  error: { type: string; message: string } | undefined;
  /** Keys the handler was authorized against (UpdateAlias: the alias's previous target too). */
  authorizedKeyArns?: readonly string[];
  /** Another AWS service's API answered on the same port (STS GetCallerIdentity). */
  eventSource?: string;
  /** The services of the Region the request was signed for (P11KMS_REGIONS); absent: the home Region's. */
  regional?: Services;
}

const TARGET_PREFIX = 'TrentService.';
const KEY_ID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/;
const KEY_MEMBERS = ['KeyId', 'TargetKeyId', 'SourceKeyId', 'DestinationKeyId'];

/** eventName for a request whose operation could not be validated (still recorded). */
function eventNameOf(a: ApiCallAudit): string {
  if (a.operation !== undefined) return a.operation;
  const target = a.headers['x-amz-target'];
  if (typeof target === 'string' && target.startsWith(TARGET_PREFIX)) {
    const name = target.slice(TARGET_PREFIX.length);
    if (/^[A-Za-z0-9]{1,64}$/.test(name)) return name;
  }
  return 'UnknownOperation';
}

/** The access key a request claimed in its SigV4 Authorization header or query (for failed auth). */
export function claimedAccessKeyId(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth !== 'string') return undefined;
  const m = /Credential=([A-Za-z0-9]{1,128})\//.exec(auth);
  return m ? m[1] : undefined;
}

export class ApiAuditor {
  constructor(
    private readonly trail: AuditTrail,
    private readonly svc: Services,
  ) {}

  get enabled(): boolean {
    return this.trail.enabled;
  }

  record(a: ApiCallAudit): Promise<void> {
    if (!this.trail.enabled) return Promise.resolve();
    const input = a.input !== null && typeof a.input === 'object' && !Array.isArray(a.input) ? (a.input as Record<string, unknown>) : undefined;
    const svc = a.regional ?? this.svc;
    try {
      // Synchronous unless an alias must be looked up: no extra promise on the hot path.
      const keyArns = this.keyArnsOf(svc, input, a.output);
      return keyArns instanceof Promise ? keyArns.then((arns) => this.append(a, svc, input, arns)) : this.append(a, svc, input, keyArns);
    } catch (e) {
      return Promise.reject(e); // a failure is a rejection, as from an async function
    }
  }

  private append(a: ApiCallAudit, svc: Services, input: Record<string, unknown> | undefined, keyArns: Set<string>): Promise<void> {
    for (const arn of a.authorizedKeyArns ?? []) keyArns.add(arn);
    const userAgent = a.headers['user-agent'];
    const record = apiCallRecord({
      account: svc.account,
      eventTime: a.eventTime,
      eventId: a.eventId,
      requestId: a.requestId,
      eventName: eventNameOf(a),
      identity: a.caller ? identityOf(a.caller) : unknownIdentity(claimedAccessKeyId(a.headers)),
      sourceIp: a.sourceIp.startsWith('::ffff:') ? a.sourceIp.slice(7) : a.sourceIp,
      userAgent: typeof userAgent === 'string' ? userAgent : '',
      input,
      output: a.output,
      error: a.error,
      keyArns,
      eventSource: a.eventSource,
    });
    return this.trail.append(record);
  }

  /** The keys a request names: key ARNs in the output, the input's key IDs and ARNs, else the key
   *  of an alias it names (a store lookup) or of its ciphertext. */
  private keyArnsOf(svc: Services, input: Record<string, unknown> | undefined, output: Record<string, unknown> | undefined): Set<string> | Promise<Set<string>> {
    const arns = new Set<string>();
    const account = svc.account;
    const keyArnPrefix = `arn:${account.partition}:kms:${account.region}:${account.accountId}:key/`;
    const fromOutput = (v: unknown) => {
      if (typeof v === 'string' && v.startsWith(keyArnPrefix)) arns.add(v);
    };
    if (output) {
      const meta = output.KeyMetadata as { Arn?: unknown } | undefined;
      fromOutput(meta?.Arn);
      fromOutput(output.SourceKeyId);
      fromOutput(output.KeyId);
    }
    if (input) return this.addInputKeys(svc, keyArnPrefix, input, arns, 0);
    return arns;
  }

  /** Adds the keys of the input's key members from `first` on, then of its ciphertext if none. */
  private addInputKeys(svc: Services, keyArnPrefix: string, input: Record<string, unknown>, arns: Set<string>, first: number): Set<string> | Promise<Set<string>> {
    const account = svc.account;
    for (let i = first; i < KEY_MEMBERS.length; i++) {
      const raw = input[KEY_MEMBERS[i]!];
      if (typeof raw !== 'string') continue;
      if (raw.startsWith(keyArnPrefix)) arns.add(raw);
      else if (KEY_ID.test(raw)) arns.add(keyArn(account, raw));
      else if (arns.size === 0 && (raw.startsWith('alias/') || raw.includes(':alias/'))) {
        // Only when nothing else named the key (e.g. a denied or failed call through an alias).
        const aliasName = raw.startsWith('alias/') ? raw : raw.slice(raw.indexOf(':alias/') + 1);
        return svc.store.getAlias(account.region, aliasName).then(
          (alias) => {
            if (alias) arns.add(keyArn(account, alias.targetKeyId));
            return this.addInputKeys(svc, keyArnPrefix, input, arns, i + 1);
          },
          // the record still names the alias in requestParameters
          () => this.addInputKeys(svc, keyArnPrefix, input, arns, i + 1),
        );
      }
    }
    if (arns.size === 0 && Buffer.isBuffer(input.CiphertextBlob)) {
      try {
        arns.add(keyArn(account, parseBlob(input.CiphertextBlob).keyId));
      } catch {
        // not one of ours: no resource
      }
    }
    return arns;
  }
}
