/**
 * Shared pieces of the container tests: the Docker state from the global set-up, named volumes
 * that outlive a container, and an SDK client for a started p11kms container.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { KMSClient } from '@aws-sdk/client-kms';
import type { StartedP11kmsContainer } from 'p11kms/testcontainers';
import { inject, it } from 'vitest';

export const docker = inject('docker');

/** Registers one visibly skipped test that carries the reason when no Docker engine answers. */
export function reportSkippedWithoutDocker(): void {
  if (!docker.ready) it.skip(`container tests skipped: ${docker.reason}`, () => undefined);
}

export const dockerCli = promisify(execFile).bind(null, 'docker') as (args: string[]) => Promise<{ stdout: string; stderr: string }>;

export async function createVolume(purpose: string): Promise<string> {
  const name = `p11kms-test-${purpose}-${process.pid}-${Date.now().toString(36)}`;
  await dockerCli(['volume', 'create', '--label', 'org.testcontainers=true', name]);
  return name;
}

export async function removeVolume(name: string): Promise<void> {
  await dockerCli(['volume', 'rm', '-f', name]).catch(() => undefined);
}

export function kmsClient(kms: StartedP11kmsContainer, credentials = kms.getRootCredentials()): KMSClient {
  return new KMSClient({ endpoint: kms.getEndpoint(), region: kms.getRegion(), credentials, maxAttempts: 1 });
}

/** Runs a command in the container and returns its stdout; a non-zero exit fails the test. */
export async function execIn(kms: StartedP11kmsContainer, command: string[]): Promise<string> {
  const result = await kms.exec(command);
  if (result.exitCode !== 0) throw new Error(`${command.join(' ')} exited ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
}
