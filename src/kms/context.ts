/**
 * What every operation handler gets: the service's dependencies and the request's caller.
 */
import type { Authorizer } from '../auth/authorize.js';
import type { Caller } from '../auth/principals.js';
import type { Hsm } from '../hsm/types.js';
import type { MetadataStore } from '../store/types.js';
import type { Account } from './arn.js';

export interface Services {
  account: Account;
  store: MetadataStore;
  hsm: Hsm;
  authorizer: Authorizer;
  /** Injectable clock (tests move time). */
  now: () => Date;
  /** The audit trail, for internal actions (automatic rotation, deletion sweep, import expiry):
   *  `await svc.audit?.recordServiceEvent({ eventName: 'RotateKey', keyArns: [arn] })` records an
   *  AwsServiceEvent as CloudTrail does (src/audit/record.ts ServiceEvent). Absent in unit tests. */
  audit?: { recordServiceEvent(event: import('../audit/record.js').ServiceEvent): Promise<void> };
  /** P11KMS_STRICT_KEY_CUSTODY: imports whose material would pass through service memory are
   *  refused. Absent means false. */
  strictKeyCustody?: boolean;
  /** Counts AES-GCM encryptions per backing version and the threshold that rotates a key
   *  (lifecycle/gcm-wear.ts). Absent in unit tests: nothing is counted. */
  gcmWear?: { meter: import('./lifecycle/gcm-wear.js').GcmEncryptionMeter; rotateAfter: number };
  /** Last successful cryptographic use per key (key-usage.ts). Absent in unit tests. */
  keyUses?: import('./key-usage.js').KeyUseTracker;
  /** The Services of each Region this deployment serves (P11KMS_REGIONS), for multi-Region keys;
   *  undefined for a Region not served here. */
  regionServices?: (region: string) => Services | undefined;
  /** Peer deployments (other sites) of multi-Region keys (P11KMS_PEERS_FILE); undefined without. */
  sites?: import('./site-replication.js').SiteReplication;
}

export interface RequestContext {
  requestId: string;
  /** The eventID of this request's audit record (GetKeyLastUsage names it). */
  eventId: string;
  caller: Caller;
  sourceIp: string;
  userAgent: string;
  /** False on plain HTTP (aws:SecureTransport). */
  secureTransport: boolean;
  /** The API operation and its validated input (request condition keys derive from it). */
  operation: string;
  input: Record<string, unknown>;
  /** Key ARNs the request was authorized against (UpdateAlias: the alias's current and new
   *  target), for the audit record's resources; filled by authorize(). */
  resources?: Set<string>;
}

/** A handler receives the validated input (blobs as Buffers, timestamps as Dates) and returns
 *  the output members (Buffers and Dates are serialised by the HTTP layer). */
export type OperationHandler = (
  input: Record<string, any>,
  ctx: RequestContext,
  svc: Services,
) => Promise<Record<string, unknown> | undefined>;
