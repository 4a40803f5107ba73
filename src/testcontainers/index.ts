/**
 * `import { P11kmsContainer } from 'p11kms/testcontainers'`: a testcontainers module that starts
 * the p11kms image (a real SoftHSM2 token inside the container), waits until GET /healthz
 * answers 200 and hands back the endpoint and the account root's credentials, for test suites
 * that want an AWS KMS endpoint without AWS, as LocalStack's module does.
 *
 * testcontainers is a peer dependency: the user's suite brings it (^11 on Node 20).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { AbstractStartedContainer, GenericContainer, Wait, type StartedTestContainer } from 'testcontainers';

export const P11KMS_IMAGE = 'p11kms:local';
const API_PORT = 8080;
const DATA_DIR = '/var/lib/p11kms';
const CONFIG_DIR = '/etc/p11kms';
const DEFAULT_REGION = 'us-east-1';
const DEFAULT_ACCOUNT_ID = '111122223333';

export interface P11kmsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export class P11kmsContainer extends GenericContainer {
  private rootCredentials?: P11kmsCredentials;
  private dataVolume?: string;
  private readonly startupLog: string[] = [];

  constructor(image = P11KMS_IMAGE) {
    super(image);
    this.withStartupTimeout(60_000).withLogConsumer((stream) => {
      stream.on('data', (chunk: Buffer | string) => {
        this.startupLog.push(...chunk.toString().split('\n').filter((line) => line.length > 0));
        this.startupLog.splice(0, Math.max(0, this.startupLog.length - 50));
      });
    });
  }

  /** A seed file (JSON, or YAML when named *.yaml/*.yml) applied at start: P11KMS_SEED_FILE. */
  withSeedFile(hostPath: string): this {
    const target = `${CONFIG_DIR}/seed${path.extname(hostPath)}`;
    return this.withCopyFilesToContainer([{ source: hostPath, target, mode: 0o644 }]).withEnvironment({ P11KMS_SEED_FILE: target });
  }

  /** IAM users and roles with their access keys and policies: P11KMS_PRINCIPALS_FILE. */
  withPrincipalsFile(hostPath: string): this {
    const target = `${CONFIG_DIR}/principals.json`;
    return this.withCopyFilesToContainer([{ source: hostPath, target, mode: 0o644 }]).withEnvironment({ P11KMS_PRINCIPALS_FILE: target });
  }

  /** The account root's credentials; without them the container generates its own on first
   *  start (read back from the volume after start). */
  withRootCredentials(credentials: P11kmsCredentials): this {
    this.rootCredentials = credentials;
    return this.withEnvironment({
      P11KMS_ROOT_ACCESS_KEY_ID: credentials.accessKeyId,
      P11KMS_ROOT_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    });
  }

  /** Keeps the service's state (token, database, audit trail) in a named Docker volume, so a
   *  second container on the same volume sees the same keys. */
  withDataVolume(volumeName: string): this {
    this.dataVolume = volumeName;
    return this;
  }

  override async start(): Promise<StartedP11kmsContainer> {
    // Added here, not through withBindMounts, which replaces the caller's own bind mounts.
    if (this.dataVolume) this.hostConfig.Binds = [...(this.hostConfig.Binds ?? []), `${this.dataVolume}:${DATA_DIR}:rw`];
    const hostNetwork = this.networkMode === 'host';
    if (hostNetwork) {
      // No port mapping on the host's network: the service listens on a free loopback port.
      const port = this.environment.P11KMS_PORT ?? String(await freeLoopbackPort());
      this.withEnvironment({ P11KMS_HOST: this.environment.P11KMS_HOST ?? '127.0.0.1', P11KMS_PORT: port });
      this.withWaitStrategy(Wait.forLogMessage(/"msg":"p11kms listening"/));
    } else {
      this.withEnvironment({ P11KMS_PORT: String(API_PORT) }).withExposedPorts(API_PORT);
      this.withWaitStrategy(Wait.forHttp('/healthz', API_PORT).forStatusCode(200));
    }
    let started: StartedTestContainer;
    try {
      started = await super.start();
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`p11kms container did not become healthy: ${reason}\nlast log lines:\n${this.startupLog.join('\n')}`, { cause: err });
    }
    const host = hostNetwork ? this.environment.P11KMS_HOST : started.getHost();
    const port = hostNetwork ? Number(this.environment.P11KMS_PORT) : started.getMappedPort(API_PORT);
    const endpoint = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    try {
      if (hostNetwork) await waitForHealth(endpoint, this.startupTimeoutMs ?? 60_000);
      const credentials = this.rootCredentials ?? (await readGeneratedRootCredentials(started));
      return new StartedP11kmsContainer(started, {
        endpoint,
        credentials,
        region: this.environment.P11KMS_REGION ?? DEFAULT_REGION,
        accountId: this.environment.P11KMS_ACCOUNT_ID ?? DEFAULT_ACCOUNT_ID,
      });
    } catch (err) {
      await started.stop().catch(() => undefined);
      throw err;
    }
  }
}

export class StartedP11kmsContainer extends AbstractStartedContainer {
  constructor(
    startedTestContainer: StartedTestContainer,
    private readonly details: { endpoint: string; credentials: P11kmsCredentials; region: string; accountId: string },
  ) {
    super(startedTestContainer);
  }

  /** The AWS KMS endpoint, for `new KMSClient({ endpoint })` or `aws --endpoint-url`. */
  getEndpoint(): string {
    return this.details.endpoint;
  }

  /** Credentials of arn:aws:iam::<account>:root. */
  getRootCredentials(): P11kmsCredentials {
    return { ...this.details.credentials };
  }

  getRegion(): string {
    return this.details.region;
  }

  getAccountId(): string {
    return this.details.accountId;
  }
}

/** A random pair in IAM's shapes, for callers that want to choose the root's credentials. */
export function randomRootCredentials(): P11kmsCredentials {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const id = Array.from(randomBytes(16), (b) => alphabet[b % 32]).join('');
  return { accessKeyId: `AKIA${id}`, secretAccessKey: randomBytes(30).toString('base64') };
}

async function readGeneratedRootCredentials(container: StartedTestContainer): Promise<P11kmsCredentials> {
  const result = await container.exec(['cat', `${DATA_DIR}/root-credentials.json`]);
  if (result.exitCode !== 0) throw new Error(`cannot read ${DATA_DIR}/root-credentials.json in the container (exit ${result.exitCode})`);
  const parsed = JSON.parse(result.stdout) as Partial<P11kmsCredentials>;
  if (typeof parsed.accessKeyId !== 'string' || typeof parsed.secretAccessKey !== 'string') {
    throw new Error(`${DATA_DIR}/root-credentials.json in the container has no accessKeyId/secretAccessKey`);
  }
  return { accessKeyId: parsed.accessKeyId, secretAccessKey: parsed.secretAccessKey };
}

async function waitForHealth(endpoint: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${endpoint}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}: ${await res.text()}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`p11kms at ${endpoint} not healthy within ${timeoutMs} ms (${last})`);
}

async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
