/**
 * The front door's routes for peer deployments (other sites) of multi-Region keys
 * (src/kms/site-replication.ts): a replica a peer's ReplicateKey creates here, and the versions
 * its rotations push. Each request is SigV4-signed with signing name `p11kms-peer` by the
 * credential pair of P11KMS_PEERS_FILE; the signing peer must be the one whose Region the body
 * names, and the scope's Region one this deployment serves. Everything else is denied, in AWS's
 * JSON error shape, and recorded in the audit trail (no key material: the wrapped keys are
 * neither logged nor recorded).
 *
 *   POST /p11kms/peer/replicas   a new replica (ReplicateKey at the primary's site)
 *   POST /p11kms/peer/versions   versions of an existing replica (rotation at the primary)
 *   POST /p11kms/peer/deletions  a replica of a primary here was deleted at the peer's site
 */
import { randomUUID } from 'node:crypto';
import express from 'express';
import type { Request, Response } from 'express';
import { SigV4Verifier } from '../auth/sigv4.js';
import type { Services } from '../kms/context.js';
import { KmsError, accessDenied } from '../kms/errors.js';
import type { Peers } from '../kms/peers.js';
import {
  PEER_DELETIONS_PATH,
  PEER_REPLICAS_PATH,
  PEER_SIGNING_NAME,
  PEER_VERSIONS_PATH,
  type PeerRequestEnv,
  acceptReplica,
  acceptReplicaDeleted,
  acceptVersions,
} from '../kms/site-replication.js';
import type { Logger } from '../log.js';
import { sendJsonAnswer, sendKmsError } from './error-response.js';

export interface PeerApiDeps {
  peers: Peers;
  regionalServices: Map<string, Services>;
  home: Services;
  /** The services over the whole store (what the lifecycle uses), for a remote replica's row. */
  whole: Services;
  /** This deployment's principals by ARN: a peer's ReplicateKey names its caller. */
  principalOf: PeerRequestEnv['principalOf'];
  maxSkewSeconds: number;
  log: Logger;
}

const MAX_BODY = '1mb';

export function createPeerRoutes(deps: PeerApiDeps): { handles: (method: string, path: string) => boolean; router: express.Router } {
  const regions = [...deps.regionalServices.keys()];
  const verifier = new SigV4Verifier(
    { region: deps.home.account.region, regions, service: PEER_SIGNING_NAME, maxSkewSeconds: deps.maxSkewSeconds, now: deps.home.now },
    (accessKeyId) => deps.peers.ofAccessKey(accessKeyId)?.secretAccessKey,
  );
  const router = express.Router();
  const raw = express.raw({ type: () => true, limit: MAX_BODY });
  const route = (operation: string, accept: typeof acceptReplica) => (req: Request, res: Response) => {
    void (async () => {
      const requestId = randomUUID();
      let svc = deps.home;
      let peerRegion: string | undefined;
      try {
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const { accessKeyId, region } = verifier.verifyScoped({ method: 'POST', url: req.originalUrl, headers: req.headers, rawHeaders: req.rawHeaders, body });
        const peer = deps.peers.ofAccessKey(accessKeyId);
        if (!peer) throw accessDenied('The caller is not a peer deployment.');
        peerRegion = peer.region;
        svc = deps.regionalServices.get(region) ?? deps.home;
        let parsed: unknown;
        try {
          parsed = JSON.parse(body.toString('utf8'));
        } catch {
          throw new KmsError('SerializationException', 'The request body is not JSON.');
        }
        const answer = await accept(svc, peer, parsed, { whole: deps.whole, principalOf: deps.principalOf, sourceIp: req.socket.remoteAddress ?? '', secureTransport: req.secure });
        deps.log.info({ requestId, operation, peerRegion, keyId: answer.KeyId }, 'peer deployment request served');
        sendJsonAnswer(res, requestId, answer);
      } catch (e) {
        const error = e instanceof KmsError ? e : internalError(deps.log, requestId, e);
        await svc.audit
          ?.recordServiceEvent({ eventName: operation, region: svc.account.region, errorCode: error.type, errorMessage: error.message, additionalEventData: { sourceIp: req.socket.remoteAddress ?? '', ...(peerRegion ? { peerRegion } : {}) } })
          .catch(() => undefined);
        deps.log.warn({ requestId, operation, peerRegion, error: error.type, message: error.message }, 'peer deployment request refused');
        sendKmsError(res, requestId, error);
      }
    })();
  };
  router.post(PEER_REPLICAS_PATH, raw, route('ReplicateKeyFromPeer', acceptReplica));
  router.post(PEER_VERSIONS_PATH, raw, route('RotateKeyFromPeer', acceptVersions));
  router.post(PEER_DELETIONS_PATH, raw, route('ReplicaDeletedAtPeer', acceptReplicaDeleted));
  const paths = new Set([PEER_REPLICAS_PATH, PEER_VERSIONS_PATH, PEER_DELETIONS_PATH]);
  return { handles: (_method, path) => paths.has(path), router };
}

function internalError(log: Logger, requestId: string, e: unknown): KmsError {
  log.error({ requestId, err: e instanceof Error ? { name: e.name, message: e.message, stack: e.stack } : String(e) }, 'peer API failed');
  return new KmsError('KMSInternalException', 'An internal error occurred.');
}
