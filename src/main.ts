/**
 * `npm start`: run the service in the foreground on its configuration (environment variables).
 * With P11KMS_WORKERS > 1 a primary process forks that many service processes sharing the port;
 * each has its own PKCS#11 session pool and store connection (SoftHSM2 and SQLite WAL are safe
 * across processes), so the KMS API uses more than one core.
 */
import cluster from 'node:cluster';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger } from './log.js';
import { serveClusterMetrics } from './metrics.js';
import { startService } from './service.js';

/** A refusal to start is one more JSON log line on stdout (where a container's logs are read). */
function exitWith(code: number, message: string): never {
  createLogger('info').fatal(message);
  process.exit(code);
}

function configOrExit(): Config {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) exitWith(2, e.message);
    throw e;
  }
}

async function runService(config: Config): Promise<void> {
  // Installed before the (possibly slow) start: SIGHUP's default action would end the process.
  let reloadTls = () => undefined as void;
  process.on('SIGHUP', () => reloadTls());
  const service = await startService(config);
  const stop = (signal: string) => {
    service.log.info({ signal }, 'shutting down');
    // The drain is bounded; this bounds flushing the audit trail and closing the token as well.
    const { shutdownDelayMs, shutdownTimeoutMs } = config.frontDoor;
    setTimeout(() => {
      service.log.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, shutdownDelayMs + shutdownTimeoutMs + SHUTDOWN_FLUSH_MS).unref();
    service.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  reloadTls = () => {
    try {
      service.reloadTls();
    } catch (e) {
      // The old certificate stays in use; a broken new one must not take the service down.
      service.log.error({ err: e instanceof Error ? e.message : String(e) }, 'TLS reload failed; keeping the current certificate');
    }
  };
}

/** Time allowed after the drain for the last audit digest, key-usage flush and token close. */
const SHUTDOWN_FLUSH_MS = 10_000;

function runPrimary(config: Config): void {
  const log = createLogger(config.logLevel);
  let stopping = false;
  const started = Date.now();
  let killedEarly = 0;
  serveClusterMetrics();
  for (let i = 0; i < config.workers; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    log.error({ pid: worker.process.pid, code, signal }, 'service process exited; starting a replacement');
    // A process that stops itself early (bad token, port in use) would do so again: give up
    // instead of looping. One killed by a signal is replaced, unless that keeps happening.
    const stoppedItself = code !== null && code !== 0;
    const early = Date.now() - started < 10_000;
    if (early && (stoppedItself || ++killedEarly > config.workers)) {
      log.fatal('service processes fail at start-up; stopping');
      process.exit(1);
    }
    cluster.fork();
  });
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.on('SIGHUP', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP');
  });
}

const config = configOrExit();
const main = config.workers > 1 && cluster.isPrimary ? Promise.resolve(runPrimary(config)) : runService(config);
main.catch((e: unknown) => exitWith(1, `failed to start: ${e instanceof Error ? e.message : String(e)}`));
