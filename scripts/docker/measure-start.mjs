// Start-up figures of the image (printed by `npm run image`): `docker run` → first 200 on
// GET /healthz, on a new volume (provisions the token) and again on the provisioned volume, and
// how long a graceful stop (SIGTERM) takes. Host networking on a free loopback port.
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';

const run = promisify(execFile);
const image = process.argv[2] ?? 'p11kms:local';
const volume = `p11kms-measure-${process.pid}`;

async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startUntilHealthy(port) {
  const started = performance.now();
  const { stdout } = await run('docker', ['run', '-d', '--network', 'host', '-v', `${volume}:/var/lib/p11kms`,
    '-e', 'P11KMS_HOST=127.0.0.1', '-e', `P11KMS_PORT=${port}`, image]);
  const id = stdout.trim();
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (res.status === 200) return { id, ms: performance.now() - started };
    } catch {
      // not listening yet
    }
    if (performance.now() - started > 30_000) throw new Error(`no 200 on /healthz within 30 s:\n${(await run('docker', ['logs', id])).stdout}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function stop(id) {
  const started = performance.now();
  await run('docker', ['stop', '--time', '20', id]);
  const ms = performance.now() - started;
  const { stdout } = await run('docker', ['inspect', id, '--format', '{{.State.ExitCode}}']);
  await run('docker', ['rm', id]);
  return { ms, exitCode: Number(stdout.trim()) };
}

try {
  const port = await freePort();
  const first = await startUntilHealthy(port);
  const firstStop = await stop(first.id);
  const second = await startUntilHealthy(port);
  const secondStop = await stop(second.id);
  const f = (ms) => `${(ms / 1000).toFixed(2)} s`;
  console.error(`p11kms image: start-up (docker run → 200 on /healthz): new volume ${f(first.ms)} (provisions the token), provisioned volume ${f(second.ms)}`);
  console.error(`p11kms image: graceful stop (SIGTERM → exit ${secondStop.exitCode}): ${f(secondStop.ms)} (first run: exit ${firstStop.exitCode}, ${f(firstStop.ms)})`);
} finally {
  await run('docker', ['volume', 'rm', '-f', volume]).catch(() => undefined);
}
