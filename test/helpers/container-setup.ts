/**
 * Global set-up of the container tests: a Docker engine that answers (scripts/docker/engine.sh
 * installs and starts one when it can) and a p11kms:local image built from these sources
 * (rebuilt by scripts/docker/image.sh when its source-hash label differs). Without an engine the
 * tests skip, and this prints why; a failing image build fails the run.
 * P11KMS_CONTAINER_TESTS=off skips them on purpose.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
export const CONTAINER_IMAGE = 'p11kms:local';

export interface DockerState {
  ready: boolean;
  reason?: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    docker: DockerState;
  }
}

async function prepare(): Promise<DockerState> {
  if (process.env.P11KMS_CONTAINER_TESTS === 'off') return { ready: false, reason: 'P11KMS_CONTAINER_TESTS=off' };
  try {
    await run('bash', [path.join(ROOT, 'scripts/docker/engine.sh')], { cwd: ROOT });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    return { ready: false, reason: `no Docker engine answers: ${stderr || (err as Error).message}` };
  }
  const { stdout: hash } = await run('bash', [path.join(ROOT, 'scripts/docker/source-hash.sh')], { cwd: ROOT });
  const label = await run('docker', ['image', 'inspect', CONTAINER_IMAGE, '--format', '{{index .Config.Labels "p11kms.source-hash"}}']).then(
    ({ stdout }) => stdout.trim(),
    () => undefined,
  );
  if (label !== hash.trim()) {
    console.log(`container tests: ${label === undefined ? 'building' : 'rebuilding (sources changed)'} ${CONTAINER_IMAGE} with npm run image`);
    const started = Date.now();
    await run('bash', [path.join(ROOT, 'scripts/docker/image.sh')], { cwd: ROOT, env: { ...process.env, P11KMS_IMAGE_MEASURE: '0' }, maxBuffer: 64 * 1024 * 1024 }).catch(
      (err: { stderr?: string }) => {
        throw new Error(`building ${CONTAINER_IMAGE} failed:\n${err.stderr?.split('\n').slice(-30).join('\n')}`);
      },
    );
    console.log(`container tests: ${CONTAINER_IMAGE} built in ${Math.round((Date.now() - started) / 1000)} s`);
  }
  // Without the reaper, a crashed earlier run can leave containers behind.
  const { stdout: leftovers } = await run('docker', ['ps', '-aq', '--filter', 'label=org.testcontainers=true']);
  const ids = leftovers.split('\n').filter(Boolean);
  if (ids.length > 0) await run('docker', ['rm', '-f', ...ids]);
  return { ready: true };
}

export default async function setup(project: TestProject): Promise<void> {
  const state = await prepare();
  if (!state.ready) console.warn(`container tests SKIPPED: ${state.reason}`);
  project.provide('docker', state);
}
