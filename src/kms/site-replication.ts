/**
 * Multi-Region keys across deployments (README, "Across sites"): ReplicateKey to a Region that a
 * peer deployment serves (P11KMS_PEERS_FILE, peers.ts), the peer's side of it, and rotations of
 * the primary pushed to its replicas at peer sites.
 *
 * What travels: each backing version of a SYMMETRIC_DEFAULT or HMAC multi-Region key, wrapped in
 * this token under the peer's trusted replication key (src/hsm/site-replication.ts: the token
 * wraps such a key under a trusted key and under nothing else), in a SigV4-signed request (signing
 * name `p11kms-peer`, the credential pair of the peers file) to the peer's front door; the peer
 * unwraps it in its token with its replication private key. Key pairs (RSA, ECC) stay at their
 * site: RSA-OAEP cannot wrap a private key, and an AES wrapping key could only be trusted by the
 * SO of the sending token, by hand, per key.
 *
 * The primary's deployment records the remote replica as a row in the replica's Region (a Region
 * it does not serve, so no request reaches it), which DescribeKey's MultiRegionConfiguration
 * lists. A rotation whose push fails is retried by every lifecycle pass until it gets through (and
 * once at start-up for every remote replica, so a restart loses no retry).
 *
 * Deletion follows AWS: the primary lists a replica until the replica is deleted. When the
 * waiting period of a replica of a primary at a peer site ends, the sweep destroys its token
 * objects and tells the primary's site (PEER_DELETIONS_PATH), which drops its record of the
 * replica (a primary in PendingReplicaDeletion then begins its own waiting period). Until the
 * primary's site has answered, the replica's row stays, gone for the API (past its deletion
 * date), and every lifecycle pass tries again: the retry lives in the store.
 *
 * Authorization at the peer (AWS: kms:CreateKey, and kms:TagResource with tags, in the replica's
 * Region for the caller of ReplicateKey): the peer deployment names its caller's ARN, and the peer
 * evaluates its own policies for that principal, which must be one of its principals (the same
 * ARN in its principals file, or the account root); any other is denied.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { z } from 'zod';
import { unwrapFromPeer, wrapForPeer, type TravellingMaterial } from '../hsm/site-replication.js';
import { HsmError } from '../hsm/types.js';
import type { MaterialRecord } from '../store/lifecycle.js';
import type { Principal } from '../auth/principals.js';
import type { KeyRecord, TagRecord } from '../store/types.js';
import { StoreConflictError } from '../store/types.js';
import { keyArn, keyEventScope } from './arn.js';
import type { RequestContext, Services } from './context.js';
import { KmsError, accessDenied, notFound, unsupported, validation } from './errors.js';
import { keySpecInfo } from './key-specs.js';
import { authorize, renderKeyMetadata } from './keys.js';
import { afterRegionalKeyDeleted } from './lifecycle/deletion.js';
import { newClaim } from './lifecycle/materials.js';
import { isMultiRegion } from './multi-region.js';
import type { Peer, Peers } from './peers.js';
import { regionalRowId } from './regional-store.js';

export const PEER_SIGNING_NAME = 'p11kms-peer';
export const PEER_REPLICAS_PATH = '/p11kms/peer/replicas';
export const PEER_VERSIONS_PATH = '/p11kms/peer/versions';
export const PEER_DELETIONS_PATH = '/p11kms/peer/deletions';
const PEER_TIMEOUT_MS = 15_000;

type Log = { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };

/** What a multi-Region key's material is, when it can travel; undefined for key pairs. */
export function travellingMaterial(keySpec: string): TravellingMaterial | undefined {
  const material = keySpecInfo(keySpec).material;
  if (material.kind === 'aes') return { kind: 'aes' };
  if (material.kind === 'hmac') return { kind: 'hmac', hash: material.hash };
  return undefined;
}

// ---- what goes over the wire -------------------------------------------------------------------

const versionWire = z.object({
  version: z.number().int().min(1).max(100_000),
  keyMaterialId: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.iso.datetime(),
  rotationType: z.enum(['AUTOMATIC', 'ON_DEMAND']).nullable(),
  rotatedAt: z.iso.datetime().nullable(),
  wrappedKey: z.base64().max(4096),
});
type VersionWire = z.infer<typeof versionWire>;

const principalArn = z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:(root|user\/.+|role\/.+|assumed-role\/.+)$/).max(2048);

const replicaWire = z.object({
  sourceRegion: z.string().max(64),
  /** Who called ReplicateKey at the primary's site (the peer authorizes that principal). */
  callerArn: principalArn,
  keyId: z.string().regex(/^mrk-[0-9a-f]{32}$/),
  keySpec: z.string().max(64),
  keyUsage: z.string().max(64),
  createdAt: z.iso.datetime(),
  description: z.string().max(8192),
  policy: z.string().max(32768),
  tags: z.array(z.object({ TagKey: z.string().max(128), TagValue: z.string().max(256) })).max(50),
  currentVersion: z.number().int().min(1),
  versions: z.array(versionWire).min(1).max(64),
});

const replicaDeletedWire = z.object({
  replicaRegion: z.string().max(64),
  keyId: z.string().regex(/^mrk-[0-9a-f]{32}$/),
});

const versionsWire = z.object({
  sourceRegion: z.string().max(64),
  keyId: z.string().regex(/^mrk-[0-9a-f]{32}$/),
  currentVersion: z.number().int().min(1),
  versions: z.array(versionWire).min(1).max(64),
});

export class SiteReplication {
  /** `${keyId} ${region}`: rotations not yet pushed to a remote replica. */
  private readonly pending = new Set<string>();

  constructor(
    readonly peers: Peers,
    private readonly log: Log,
  ) {}

  /** The peer serving `region`, if one is configured. */
  peerOf(region: string): Peer | undefined {
    return this.peers.ofRegion(region);
  }

  // ---- the primary's side --------------------------------------------------------------------

  /** ReplicateKey to a Region a peer serves: the peer creates the replica; this side records it. */
  async replicate(svc: Services, primary: KeyRecord, peer: Peer, input: { Description?: string; Policy?: string; Tags: TagRecord[]; policy: string; callerArn: string }): Promise<Record<string, unknown>> {
    const arn = keyArn(svc.account, primary.keyId);
    const material = travellingMaterial(primary.keySpec);
    if (!material) {
      throw unsupported(
        `${arn} is a multi-Region ${primary.keySpec} key, which cannot be replicated to ${peer.region}, a Region served by another deployment: its private key stays in this site's HSM (RSA-OAEP cannot wrap a private key, and only the security officer could make an AES wrapping key trusted). Replicate it within this deployment's Regions only.`,
      );
    }
    if (primary.origin !== 'AWS_KMS') {
      throw unsupported(`${arn} has imported key material, which does not travel to another deployment; import the same material into a replica there.`);
    }
    if ((await svc.store.multiRegionKeys(primary.keyId)).some((k) => k.region === peer.region)) {
      throw new KmsError('AlreadyExistsException', `${keyArn({ ...svc.account, region: peer.region }, primary.keyId)} already exists.`);
    }
    const versions = await this.wrapVersions(svc, primary, peer);
    const tags = input.Tags;
    await this.call(peer, PEER_REPLICAS_PATH, {
      sourceRegion: svc.account.region,
      callerArn: input.callerArn,
      keyId: primary.keyId,
      keySpec: primary.keySpec,
      keyUsage: primary.keyUsage,
      createdAt: primary.createdAt.toISOString(),
      description: input.Description ?? '',
      policy: input.policy,
      tags,
      currentVersion: primary.currentVersion,
      versions,
    });
    const replica: KeyRecord = {
      ...primary,
      region: peer.region,
      createdAt: svc.now(),
      description: input.Description ?? '',
      keyState: 'Enabled',
      policy: input.policy,
      deletionDate: null,
      pendingWindowInDays: null,
    };
    try {
      await svc.store.createRegionalKey(replica, tags);
    } catch (e) {
      if (!(e instanceof StoreConflictError)) throw e;
    }
    const remote: Services = { ...svc, account: { ...svc.account, region: peer.region } };
    return { ReplicaKeyMetadata: await renderKeyMetadata(remote, replica), ReplicaPolicy: input.policy, ReplicaTags: tags };
  }

  /** After a rotation of a multi-Region primary: the new version goes to every remote replica
   *  now; what does not get through waits for the next lifecycle pass. Never throws. */
  async afterRotation(svc: Services, key: KeyRecord): Promise<void> {
    // `key` is the primary's row (on demand) or the material row (lifecycle passes): either way
    // the replicas are the rows of Regions that peers serve.
    if (!isMultiRegion(key)) return;
    for (const region of await this.remoteReplicaRegions(svc, key)) {
      this.pending.add(`${key.keyId} ${region}`);
    }
    await this.retryPending(svc, key.keyId);
  }

  /** Queues a push of every remote replica (start-up: a pending retry does not survive a restart). */
  async queueAllRemoteReplicas(svc: Services): Promise<void> {
    for (const peer of this.peers.all()) {
      for (let after: string | undefined; ; ) {
        const page = await svc.store.listKeys(after, 100);
        for (const k of page) if (isMultiRegion(k) && k.region === peer.region && k.primaryRegion !== peer.region) this.pending.add(`${k.keyId.split('/')[0]} ${peer.region}`);
        if (page.length < 100) break;
        after = page.at(-1)!.keyId;
      }
    }
  }

  /** Pushes the pending rotations (all, or those of `keyId`); a lifecycle pass calls it. */
  async retryPending(svc: Services, keyId?: string): Promise<void> {
    for (const entry of [...this.pending]) {
      const [id, region] = entry.split(' ') as [string, string];
      if (keyId !== undefined && id !== keyId) continue;
      const peer = this.peerOf(region);
      const primary = await this.primaryRow(svc, id);
      if (!peer || !primary) {
        this.pending.delete(entry);
        continue;
      }
      try {
        const versions = await this.wrapVersions(svc, primary, peer);
        await this.call(peer, PEER_VERSIONS_PATH, { sourceRegion: primary.region, keyId: id, currentVersion: primary.currentVersion, versions });
        this.pending.delete(entry);
        this.log.info({ keyId: id, region }, 'multi-Region key versions pushed to the peer deployment');
      } catch (e) {
        this.log.warn({ keyId: id, region, err: e instanceof Error ? e.message : String(e) }, 'pushing a rotation to the peer deployment failed; retried at the next lifecycle pass');
      }
    }
  }

  /**
   * The sweep of `row` (a store row, in the whole store) is about to delete a Region's key: when
   * it is a replica whose primary is at a peer site, that site is told first. Throws when it
   * cannot be told, so that the row stays and the next lifecycle pass tries again.
   */
  async beforeReplicaDeleted(row: KeyRecord): Promise<void> {
    if (!row.primaryRegion || row.primaryRegion === row.region) return;
    const peer = this.peerOf(row.primaryRegion);
    if (!peer) return;
    const keyId = row.keyId.split('/')[0]!;
    await this.call(peer, PEER_DELETIONS_PATH, { replicaRegion: row.region, keyId });
    this.log.info({ keyId, region: row.region, primaryRegion: peer.region }, 'the primary key\'s site was told that its replica is deleted');
  }

  /** How many rotations wait to be pushed (metrics, tests). */
  pendingCount(): number {
    return this.pending.size;
  }

  private async primaryRow(svc: Services, keyId: string): Promise<KeyRecord | undefined> {
    const rows = await svc.store.multiRegionKeys(keyId);
    const primary = rows.find((k) => k.region === k.primaryRegion);
    const material = await svc.store.getKey(keyId);
    return primary && { ...primary, keyId, currentVersion: material?.currentVersion ?? primary.currentVersion };
  }

  private async remoteReplicaRegions(svc: Services, key: KeyRecord): Promise<string[]> {
    const rows = await svc.store.multiRegionKeys(key.keyId);
    return rows.filter((k) => k.region !== k.primaryRegion && this.peerOf(k.region) !== undefined && !svc.regionServices?.(k.region)).map((k) => k.region);
  }

  private async wrapVersions(svc: Services, key: KeyRecord, peer: Peer): Promise<VersionWire[]> {
    const materials = (await svc.store.lifecycle.listMaterials(key.keyId)).filter((m) => m.version <= key.currentVersion).sort((a, b) => a.version - b.version);
    const out: VersionWire[] = [];
    for (const m of materials) {
      let wrapped: Buffer;
      try {
        wrapped = await wrapForPeer(svc.hsm, { keyId: key.keyId, version: m.version }, peer.region, peer.fingerprint);
      } catch (e) {
        if (!(e instanceof HsmError)) throw e;
        if (e.ckr === 'CKR_WRAPPING_KEY_HANDLE_INVALID') {
          throw unsupported(`This deployment's HSM holds no trusted replication key of ${peer.region} with the fingerprint P11KMS_PEERS_FILE names: run the trust ceremony (\`p11kms sites trust --region ${peer.region}\` with the SO PIN) first.`);
        }
        throw unsupported(`The HSM refused to wrap ${keyArn(svc.account, key.keyId)} for ${peer.region} (${e.ckr}): only multi-Region keys created for travel wrap, and only under a trusted key.`);
      }
      out.push({
        version: m.version,
        keyMaterialId: m.keyMaterialId,
        createdAt: m.createdAt.toISOString(),
        rotationType: m.rotationType,
        rotatedAt: m.rotatedAt?.toISOString() ?? null,
        wrappedKey: wrapped.toString('base64'),
      });
    }
    return out;
  }

  /** One signed call to a peer; its refusal comes back as the same error type. */
  private async call(peer: Peer, path: string, body: unknown): Promise<unknown> {
    const url = new URL(path, `${peer.endpoint}/`);
    const payload = Buffer.from(JSON.stringify(body));
    const signer = new SignatureV4({
      service: PEER_SIGNING_NAME,
      region: peer.region,
      credentials: { accessKeyId: peer.accessKeyId, secretAccessKey: peer.secretAccessKey },
      sha256: NodeSha256,
    });
    const signed = await signer.sign({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      path: url.pathname,
      query: {},
      headers: { host: url.host, 'content-type': 'application/json', 'content-length': String(payload.length) },
      body: payload,
    });
    let answer: { status: number; text: string };
    try {
      answer = await post(url, signed.headers as Record<string, string>, payload);
    } catch (e) {
      throw new KmsError('DependencyTimeoutException', `The peer deployment serving ${peer.region} (${peer.endpoint}) could not be reached: ${(e as Error).message}`);
    }
    let parsed: { __type?: string; message?: string } = {};
    try {
      parsed = JSON.parse(answer.text);
    } catch {
      // not JSON: reported by status below
    }
    if (answer.status !== 200) {
      const type = parsed.__type ?? 'KMSInternalException';
      throw new KmsError(type, `The peer deployment serving ${peer.region} refused: ${parsed.message ?? `HTTP ${answer.status}`}`);
    }
    return parsed;
  }
}

function post(url: URL, headers: Record<string, string>, payload: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method: 'POST', headers, timeout: PEER_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${PEER_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The SHA-256 (and HMAC-SHA-256) the SDK signer takes, over node:crypto. */
type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytesOf = (d: SourceData): string | Buffer =>
  typeof d === 'string' ? d : d instanceof ArrayBuffer ? Buffer.from(d) : Buffer.from(d.buffer, d.byteOffset, d.byteLength);
class NodeSha256 {
  private readonly hash;
  constructor(secret?: SourceData) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytesOf(secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytesOf(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
}

// ---- the peer's side ---------------------------------------------------------------------------

function parseWire<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw validation(`${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  return parsed.data;
}

/** What the peer API hands the handlers besides the request's Region's services. */
export interface PeerRequestEnv {
  /** The services over the whole store (a primary's record of a remote replica). */
  whole: Services;
  principalOf(arn: string): Principal | undefined;
  sourceIp: string;
  secureTransport: boolean;
}

/**
 * AWS: ReplicateKey needs kms:CreateKey (and kms:TagResource with tags) in the replica's Region.
 * The peer deployment is authenticated and names its caller; this deployment decides with its own
 * policies for that principal, if it is one of its own, and denies otherwise (deny by default).
 */
async function authorizeReplicaCaller(svc: Services, peer: Peer, callerArn: string, tagged: boolean, env: PeerRequestEnv): Promise<void> {
  const principal = env.principalOf(callerArn);
  if (!principal || principal.integratedService !== undefined) {
    throw accessDenied(
      `User: ${callerArn} is not authorized to perform: kms:CreateKey in ${svc.account.region}, because this deployment does not know the principal: name it in its principals file (P11KMS_PRINCIPALS_FILE) with the permissions to create keys.`,
    );
  }
  const ctx: RequestContext = {
    requestId: '',
    eventId: '',
    caller: { principal, accessKeyId: peer.accessKeyId },
    sourceIp: env.sourceIp,
    userAgent: '',
    secureTransport: env.secureTransport,
    operation: 'ReplicateKey',
    input: {},
  };
  await authorize(svc, ctx, 'CreateKey', '*');
  if (tagged) await authorize(svc, ctx, 'TagResource', '*');
}

/** The replica a peer deployment's ReplicateKey sends, created in `svc`'s Region. */
export async function acceptReplica(svc: Services, peer: Peer, body: unknown, env: PeerRequestEnv): Promise<Record<string, unknown>> {
  const r = parseWire(replicaWire, body);
  if (r.sourceRegion !== peer.region) throw accessDenied(`The peer credential belongs to ${peer.region}, not to ${r.sourceRegion}.`);
  await authorizeReplicaCaller(svc, peer, r.callerArn, r.tags.length > 0, env);
  const material = travellingMaterial(r.keySpec);
  if (!material) throw unsupported(`KeySpec ${r.keySpec} does not travel between deployments.`);
  // A key of this ID here that is not the same primary's (its row in this Region, or another
  // Region's key of another primary) is never joined.
  const existing = await svc.store.multiRegionKeys(r.keyId);
  if (existing.some((k) => k.region === svc.account.region || k.primaryRegion !== r.sourceRegion)) {
    throw new KmsError('AlreadyExistsException', `${keyArn(svc.account, r.keyId)} already exists.`);
  }
  await installVersions(svc, r.keyId, material, r.versions, r.currentVersion, {
    keyId: r.keyId,
    accountId: svc.account.accountId,
    region: '',
    createdAt: new Date(r.createdAt),
    description: '',
    keyState: 'Enabled',
    keySpec: r.keySpec as KeyRecord['keySpec'],
    keyUsage: r.keyUsage as KeyRecord['keyUsage'],
    origin: 'AWS_KMS',
    policy: '{}',
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
    primaryRegion: r.sourceRegion,
  });
  const replica: KeyRecord = {
    keyId: r.keyId,
    accountId: svc.account.accountId,
    region: svc.account.region,
    createdAt: svc.now(),
    description: r.description,
    keyState: 'Enabled',
    keySpec: r.keySpec as KeyRecord['keySpec'],
    keyUsage: r.keyUsage as KeyRecord['keyUsage'],
    origin: 'AWS_KMS',
    policy: r.policy,
    currentVersion: r.currentVersion,
    deletionDate: null,
    pendingWindowInDays: null,
    primaryRegion: r.sourceRegion,
  };
  try {
    await svc.store.createRegionalKey(replica, r.tags);
  } catch (e) {
    if (e instanceof StoreConflictError) throw new KmsError('AlreadyExistsException', `${keyArn(svc.account, r.keyId)} already exists.`);
    throw e;
  }
  // AWS: the replica's Region records a CreateKey.
  const scope = keyEventScope(svc.account, replica);
  await svc.audit
    ?.recordServiceEvent({ eventName: 'CreateKey', ...scope, responseElements: { keyId: scope.keyArns[0]! }, additionalEventData: { replicatedFrom: r.sourceRegion, versions: r.versions.length } })
    .catch(() => undefined);
  return { KeyId: r.keyId };
}

/** Versions a peer's primary pushes after a rotation (idempotent: what is here is skipped). */
export async function acceptVersions(svc: Services, peer: Peer, body: unknown): Promise<Record<string, unknown>> {
  const v = parseWire(versionsWire, body);
  if (v.sourceRegion !== peer.region) throw accessDenied(`The peer credential belongs to ${peer.region}, not to ${v.sourceRegion}.`);
  const replica = await svc.store.getKey(v.keyId);
  if (!replica || replica.primaryRegion !== v.sourceRegion) throw notFound(`Key '${keyArn(svc.account, v.keyId)}' does not exist`);
  const material = travellingMaterial(replica.keySpec)!;
  const installed = await installVersions(svc, v.keyId, material, v.versions, v.currentVersion, undefined);
  if (installed > 0) {
    const scope = keyEventScope(svc.account, replica);
    await svc.audit?.recordServiceEvent({ eventName: 'RotateKey', ...scope, additionalEventData: { replicatedFrom: v.sourceRegion, currentVersion: v.currentVersion } }).catch(() => undefined);
  }
  return { KeyId: v.keyId, CurrentVersion: v.currentVersion };
}

/**
 * Unwraps the versions this token lacks and records them: the material row first (with
 * `newMaterialRow`, when the key is new here), then each further version as a rotation under a
 * claim, so that the replica's current version follows the primary's. Returns how many it added.
 */
async function installVersions(svc: Services, keyId: string, material: TravellingMaterial, versions: VersionWire[], currentVersion: number, newMaterialRow: KeyRecord | undefined): Promise<number> {
  const have = new Set((await svc.store.lifecycle.listMaterials(keyId)).map((m) => m.version));
  const sorted = [...versions].sort((a, b) => a.version - b.version);
  if (sorted.at(-1)!.version !== currentVersion || sorted.some((m, i) => m.version !== i + 1)) throw validation('versions: not the versions 1 to currentVersion');
  let added = 0;
  for (const m of sorted) {
    if (have.has(m.version)) continue;
    const ref = { keyId, version: m.version };
    // An object without a row is the leftover of an attempt that stopped before it: never used.
    await svc.hsm.destroyKey(ref);
    try {
      await unwrapFromPeer(svc.hsm, ref, material, Buffer.from(m.wrappedKey, 'base64'));
    } catch (e) {
      if (e instanceof HsmError) throw new KmsError('KMSInternalException', `The key material of version ${m.version} could not be unwrapped in this HSM (${e.ckr}): was it wrapped under this site's replication key?`);
      throw e;
    }
    const record: MaterialRecord = {
      keyId,
      version: m.version,
      createdAt: new Date(m.createdAt),
      keyMaterialId: m.keyMaterialId,
      rotationType: m.rotationType,
      rotatedAt: m.rotatedAt === null ? null : new Date(m.rotatedAt),
      importState: null,
      expirationModel: null,
      validTo: null,
      description: null,
      checkValue: null,
      custody: null,
    };
    if (m.version === 1 && newMaterialRow) {
      await svc.store.createKey(newMaterialRow, { keyId, version: 1, createdAt: record.createdAt, keyMaterialId: m.keyMaterialId }, []);
    } else {
      const claim = newClaim(svc);
      if (!(await svc.store.lifecycle.claimKey(keyId, 'rotation', claim))) throw new KmsError('ConflictException', `A rotation of ${keyId} is already in progress.`);
      try {
        if (!(await svc.store.lifecycle.commitRotation(keyId, claim.id, m.version - 1, record))) throw new KmsError('ConflictException', `The key ${keyId} changed while its version ${m.version} was added.`);
      } finally {
        await svc.store.lifecycle.releaseClaim(keyId, claim.id);
      }
    }
    added++;
  }
  return added;
}

/**
 * A replica of a primary key of `svc`'s Region was deleted at the peer's site: the primary no
 * longer lists it, and a primary waiting in PendingReplicaDeletion for it may begin its own
 * waiting period. Idempotent: a replica this site no longer records is answered the same way.
 */
export async function acceptReplicaDeleted(svc: Services, peer: Peer, body: unknown, env: PeerRequestEnv): Promise<Record<string, unknown>> {
  const d = parseWire(replicaDeletedWire, body);
  if (d.replicaRegion !== peer.region) throw accessDenied(`The peer credential belongs to ${peer.region}, not to ${d.replicaRegion}.`);
  const rows = await svc.store.multiRegionKeys(d.keyId);
  const replica = rows.find((k) => k.region === peer.region);
  if (replica) {
    if (replica.primaryRegion !== svc.account.region) throw notFound(`Key '${keyArn(svc.account, d.keyId)}' does not exist`);
    await env.whole.store.deleteKey(regionalRowId(d.keyId, peer.region));
    await afterRegionalKeyDeleted(env.whole, d.keyId);
    const scope = keyEventScope({ ...svc.account, region: peer.region }, replica);
    await svc.audit?.recordServiceEvent({ eventName: 'DeleteKey', ...scope, additionalEventData: { deletedAtPeer: peer.region } }).catch(() => undefined);
  }
  return { KeyId: d.keyId };
}
