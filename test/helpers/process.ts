/**
 * Runs the built service (`node dist/src/main.js`, what `npm start` runs after its set-up) and
 * CLI (`node dist/src/cli.js`) as child processes, as an operator would.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { freePort } from '../../scripts/bench/free-port.js';
import { ROOT, tempDir } from './service.js';

// The bench's helper: a plain node:net module, no bench plumbing and no vitest on either side.
export { freePort };

const MAIN = path.resolve(import.meta.dirname, '../../dist/src/main.js');
const CLI = path.resolve(import.meta.dirname, '../../dist/src/cli.js');

/** Runs the built CLI (`node dist/src/cli.js …args`) on `dataDir` with nothing of this process's
 *  environment but PATH; resolves with its exit code and output (never rejects). */
export function runCli(args: string[], dataDir: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', P11KMS_DATA_DIR: dataDir, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

export interface ServiceProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

export function spawnService(env: Record<string, string>): ServiceProcess {
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => output,
    exited,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** The built service on a free loopback port, a fresh data dir and the test root credentials;
 *  `env` adds or overrides settings (not yet healthy: see waitHealthy). */
export async function spawnTestService(env: Record<string, string> = {}): Promise<{ proc: ServiceProcess; port: number; dataDir: string }> {
  const port = await freePort();
  const dataDir = env.P11KMS_DATA_DIR ?? tempDir('p11kms-proc-');
  const proc = spawnService({
    P11KMS_DATA_DIR: dataDir,
    P11KMS_PORT: String(port),
    P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId,
    P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
    P11KMS_LOG_LEVEL: 'warn',
    ...env,
  });
  return { proc, port, dataDir };
}

/** Polls /healthz until it answers 200 (or the process dies / the deadline passes). */
export async function waitHealthy(url: string, proc: ServiceProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null) throw new Error(`service exited with ${proc.child.exitCode}:\n${proc.output()}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`service not healthy after ${timeoutMs} ms:\n${proc.output()}`);
}
