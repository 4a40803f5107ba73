/**
 * Phase "nodes" (issue 11): Encrypt and CreateKey through one and through two service nodes on
 * PostgreSQL, beside one service on the embedded SQLite file, in the same run; and the database's
 * own cost per request (a round trip, and the store's createKey) measured in this process.
 *
 * The PostgreSQL server is started here (scripts/bench/postgres-server.ts) with production
 * durability (fsync, synchronous commit). The nodes share one SoftHSM2 token, initialised here
 * with softhsm2-util as an operator would, so they serialise its object writes through the
 * token's lock file (as P11KMS_WORKERS processes do); the SQLite service uses its own embedded
 * token, without that lock, and CreateKey is also measured through P11KMS_WORKERS=2 on SQLite,
 * which takes the same lock, to tell the lock's cost from the database's.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import pg from 'pg';
import { locateSoftHsmModule } from '../../src/hsm/provision.js';
import { openPostgresStore } from '../../src/store/postgres/store.js';
import { openSqliteStore } from '../../src/store/sqlite/store.js';
import type { MetadataStore } from '../../src/store/types.js';
import { REGION, ROOT_CREDENTIALS, median, progress, type Settings } from './common.js';
import { WARM_UP_SECONDS, firstKeys, inputFor, startService, stopService, type Service } from './kms.js';
import { startPostgres, type PostgresServer } from './postgres-server.js';
import { presign, sendOnce } from './sign.js';
import { runWrk, type WrkResult } from './wrk.js';

export const NODE_SETUPS = ['SQLite, 1 process', 'PostgreSQL, 1 node', 'PostgreSQL, 2 nodes'] as const;
/** CreateKey also through two SQLite workers: the same SoftHSM2 object-write lock as the nodes. */
const LOCKED_SQLITE = 'SQLite, P11KMS_WORKERS=2';
export type NodeSetup = (typeof NODE_SETUPS)[number] | typeof LOCKED_SQLITE;
export const NODES_CLIENTS = [8, 32];
const CREATE_CONCURRENCY = 8;

export interface NodesEncryptPoint {
  setup: NodeSetup;
  clients: number;
  rps: number;
  /** The slower node's figure when there are two. */
  p50Ms: number;
  p99Ms: number;
}

export interface NodesCreatePoint {
  setup: NodeSetup;
  keys: number;
  keysPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

export interface NodesResult {
  postgresVersion: string;
  /** SELECT 1 from this process over loopback, median of 2,000. */
  roundTripMs: number;
  /** MetadataStore.createKey (key, version, no tags), sequential, median ms. */
  storeCreateKeyMs: { sqlite: number; postgres: number };
  /** getKey of a key not in the cache (a miss is one query on PostgreSQL), median ms. */
  storeGetKeyUncachedMs: { sqlite: number; postgres: number };
  encrypt: NodesEncryptPoint[];
  createKey: NodesCreatePoint[];
  createKeysPerSetup: number;
}

export async function nodesPhase(wrk: string, settings: Settings, work: string): Promise<NodesResult> {
  progress('nodes: Encrypt and CreateKey through 1 and 2 nodes on PostgreSQL beside SQLite');
  const server = await startPostgres({ durable: true });
  const services: Service[] = [];
  try {
    const url = await server.createDatabase();
    const result: NodesResult = {
      postgresVersion: await postgresVersion(url),
      roundTripMs: await roundTripMs(url),
      storeCreateKeyMs: { sqlite: NaN, postgres: NaN },
      storeGetKeyUncachedMs: { sqlite: NaN, postgres: NaN },
      encrypt: [],
      createKey: [],
      createKeysPerSetup: Math.min(settings.keys, 400),
    };
    await storeCosts(server, work, result);
    progress(`nodes: PostgreSQL round trip ${result.roundTripMs.toFixed(3)} ms; store createKey ${result.storeCreateKeyMs.postgres.toFixed(2)} ms (SQLite ${result.storeCreateKeyMs.sqlite.toFixed(2)} ms)`);

    const token = initSharedToken(work);
    const nodeEnv = (name: string) => ({
      P11KMS_DATABASE_URL: url,
      P11KMS_PKCS11_MODULE: locateSoftHsmModule(),
      P11KMS_TOKEN_LABEL: token.label,
      P11KMS_PIN_FILE: token.pinFile,
      SOFTHSM2_CONF: token.conf,
      P11KMS_DATA_DIR: path.join(work, `nodes-${name}-data`),
    });
    const sqlite = await startService('nodes-sqlite', path.join(work, 'nodes-sqlite-data'), work, settings);
    services.push(sqlite);
    const a = await startService('nodes-pg-a', nodeEnv('a').P11KMS_DATA_DIR, work, settings, nodeEnv('a'));
    services.push(a);
    const b = await startService('nodes-pg-b', nodeEnv('b').P11KMS_DATA_DIR, work, settings, nodeEnv('b'));
    services.push(b);
    const sqliteKey = (await firstKeys(sqlite.client, 1))[0]!;
    const pgKey = (await firstKeys(a.client, 1))[0]!;
    const setups: Record<(typeof NODE_SETUPS)[number], Array<{ service: Service; keyId: string }>> = {
      'SQLite, 1 process': [{ service: sqlite, keyId: sqliteKey }],
      'PostgreSQL, 1 node': [{ service: a, keyId: pgKey }],
      'PostgreSQL, 2 nodes': [
        { service: a, keyId: pgKey },
        { service: b, keyId: pgKey },
      ],
    };
    for (const clients of NODES_CLIENTS) {
      for (const setup of NODE_SETUPS) result.encrypt.push(await encryptPoint(wrk, settings, work, setup, setups[setup], clients));
    }
    const workers = await startService('nodes-sqlite-workers', path.join(work, 'nodes-sqlite-workers-data'), work, settings, { P11KMS_WORKERS: '2' });
    services.push(workers);
    const createThrough: Array<[NodeSetup, KMSClient[]]> = [
      ...NODE_SETUPS.map((setup): [NodeSetup, KMSClient[]] => [setup, setups[setup].map((s) => s.service.client)]),
      [LOCKED_SQLITE, [workers.client]],
    ];
    for (const [setup, clients] of createThrough) {
      const point = await createKeyPoint(setup, clients, result.createKeysPerSetup);
      progress(`nodes: CreateKey ${setup}: ${point.keysPerSec.toFixed(0)} keys/s, p50 ${point.p50Ms.toFixed(1)} ms`);
      result.createKey.push(point);
    }
    return result;
  } finally {
    for (const s of services) await stopService(s);
    await server.stop();
  }
}

/** One wrk per node, at the same time, the clients split between them; req/s summed. */
async function encryptPoint(wrk: string, settings: Settings, work: string, setup: NodeSetup, targets: Array<{ service: Service; keyId: string }>, clients: number): Promise<NodesEncryptPoint> {
  const perNode = Math.max(1, Math.round(clients / targets.length));
  const runs = await Promise.all(
    targets.map(async ({ service, keyId }, i) => {
      const target = { port: service.port, keyId, ciphertext: '' };
      const request = await presign(service.port, 'Encrypt', inputFor('Encrypt', target), ROOT_CREDENTIALS, REGION);
      const once = await sendOnce(service.port, request);
      if (once.status !== 200) throw new Error(`${setup}: Encrypt answered HTTP ${once.status}: ${once.text}`);
      const label = `nodes ${setup} node ${i + 1}`;
      await runWrk(wrk, { label: `${label} warm-up`, port: service.port, clients: perNode, seconds: WARM_UP_SECONDS, request, workDir: work });
      return runWrk(wrk, { label, port: service.port, clients: perNode, seconds: settings.seconds, request, workDir: work });
    }),
  );
  const point: NodesEncryptPoint = {
    setup,
    clients,
    rps: runs.reduce((sum, r: WrkResult) => sum + r.rps, 0),
    p50Ms: Math.max(...runs.map((r) => r.p50Ms)),
    p99Ms: Math.max(...runs.map((r) => r.p99Ms)),
  };
  progress(`nodes: Encrypt ${setup.padEnd(20)} c=${String(clients).padStart(2)}  ${Math.round(point.rps).toString().padStart(6)} req/s  p50 ${point.p50Ms.toFixed(2)} ms  p99 ${point.p99Ms.toFixed(2)} ms`);
  return point;
}

/** `keys` CreateKeys, CREATE_CONCURRENCY at a time in all, spread over the clients (nodes). */
async function createKeyPoint(setup: NodeSetup, clients: KMSClient[], keys: number): Promise<NodesCreatePoint> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CREATE_CONCURRENCY }, async (_, w) => {
      const client = clients[w % clients.length]!;
      while (next < keys) {
        next++;
        const t = performance.now();
        await client.send(new CreateKeyCommand({ Description: 'p11kms bench nodes' }));
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((x, y) => x - y);
  return { setup, keys, keysPerSec: keys / seconds, p50Ms: median(latencies), p99Ms: latencies[Math.floor(latencies.length * 0.99)] ?? NaN };
}

async function postgresVersion(url: string): Promise<string> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    return String((await client.query('SHOW server_version')).rows[0].server_version);
  } finally {
    await client.end();
  }
}

async function roundTripMs(url: string): Promise<number> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    const times: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const t = performance.now();
      await client.query('SELECT 1');
      times.push(performance.now() - t);
    }
    return median(times);
  } finally {
    await client.end();
  }
}

/** The stores themselves, in this process: what one write and one uncached read cost. */
async function storeCosts(server: PostgresServer, work: string, result: NodesResult): Promise<void> {
  const measure = async (store: MetadataStore): Promise<{ create: number; get: number }> => {
    const creates: number[] = [];
    const gets: number[] = [];
    try {
      for (let i = 0; i < 500; i++) {
        const keyId = crypto.randomUUID();
        const now = new Date();
        const t = performance.now();
        await store.createKey(
          { keyId, accountId: '111122223333', region: 'us-east-1', createdAt: now, description: '', keyState: 'Enabled', keySpec: 'SYMMETRIC_DEFAULT', keyUsage: 'ENCRYPT_DECRYPT', origin: 'AWS_KMS', policy: '{}', currentVersion: 1, deletionDate: null, pendingWindowInDays: null },
          { keyId, version: 1, createdAt: now, keyMaterialId: 'a'.repeat(64) },
          [],
        );
        creates.push(performance.now() - t);
        // The writer invalidated its own entry: this read goes to the database.
        const g = performance.now();
        await store.getKey(keyId);
        gets.push(performance.now() - g);
      }
      return { create: median(creates), get: median(gets) };
    } finally {
      await store.close();
    }
  };
  const sqlite = await measure(await openSqliteStore(path.join(work, 'nodes-store-bench.db')));
  const postgres = await measure(await openPostgresStore(await server.createDatabase()));
  result.storeCreateKeyMs = { sqlite: sqlite.create, postgres: postgres.create };
  result.storeGetKeyUncachedMs = { sqlite: sqlite.get, postgres: postgres.get };
}

/** A SoftHSM2 token as an operator sets one up (softhsm2-util), in the bench's scratch dir. */
function initSharedToken(work: string): { label: string; conf: string; pinFile: string } {
  const dir = path.join(work, 'nodes-token');
  const tokenDir = path.join(dir, 'tokens');
  fs.mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\n`, { mode: 0o600 });
  const pin = crypto.randomBytes(8).toString('hex');
  const pinFile = path.join(dir, 'user.pin');
  fs.writeFileSync(pinFile, pin, { mode: 0o600 });
  const label = 'bench-nodes';
  // Scratch token for the bench only: its throwaway PINs may sit on this command line.
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', crypto.randomBytes(8).toString('hex')], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    stdio: 'ignore',
  });
  return { label, conf, pinFile };
}
