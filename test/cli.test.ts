/**
 * The `p11kms` command line as an operator meets it: help and version, exit codes, a pipe closed
 * early (`audit query | head`), and doctor next to a running service.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { GenerateRandomCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/process.js';
import { startTestService, tempDir } from './helpers/service.js';

const CLI = path.resolve(import.meta.dirname, '../dist/src/cli.js');
const VERSION = (JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../package.json'), 'utf8')) as { version: string }).version;

describe('p11kms command line', () => {
  it('--help lists every command and exits 0; no arguments prints the same help and exits 2', async () => {
    const dataDir = tempDir('p11kms-cli-');
    const help = await runCli(['--help'], dataDir);
    expect(help.code).toBe(0);
    for (const command of ['serve', 'doctor', 'audit', 'seed', 'usage']) expect(help.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    const bare = await runCli([], dataDir);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toBe(`${help.stdout}`);
    const unknown = await runCli(['frobnicate'], dataDir);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");
  });

  it('<command> --help prints that command\'s usage and exits 0 without doing anything', async () => {
    const dataDir = tempDir('p11kms-cli-');
    for (const [command, text] of [
      ['doctor', '--destroy-orphans'],
      ['audit', 'audit query'],
      ['seed', 'seed --check FILE'],
      ['usage', '--month YYYY-MM'],
      ['serve', 'P11KMS_*'],
    ] as const) {
      const r = await runCli([command, '--help'], dataDir);
      expect(r.code, command).toBe(0);
      expect(r.stdout).toContain(text);
    }
    expect(fs.readdirSync(dataDir)).toEqual([]); // nothing was opened or provisioned
  });

  it('--version prints the package version', async () => {
    const r = await runCli(['--version'], tempDir('p11kms-cli-'));
    expect(r).toMatchObject({ code: 0, stdout: `p11kms ${VERSION}\n` });
  });

  it('`audit query | head -1` ends quietly; doctor warns while a service runs and refuses --repair', async () => {
    const t = await startTestService();
    try {
      for (let i = 0; i < 300; i++) await t.client.send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
      await t.service.audit.digestNow();
      const piped = await new Promise<{ code: string; stdout: string; stderr: string }>((resolve) =>
        execFile(
          'bash',
          ['--norc', '--noprofile', '-c', `node ${CLI} audit query | head -1; echo "\${PIPESTATUS[0]}"`],
          { env: { PATH: process.env.PATH ?? '', P11KMS_DATA_DIR: t.dataDir } },
          (_err, stdout, stderr) => resolve({ code: stdout.trim().split('\n').at(-1)!, stdout, stderr }),
        ),
      );
      expect(piped.stderr).toBe('');
      expect(piped.code).toBe('0');
      expect(JSON.parse(piped.stdout.split('\n')[0]!).eventSource).toBe('kms.amazonaws.com');

      const repair = await runCli(['doctor', '--repair'], t.dataDir);
      expect(repair.code).toBe(2);
      expect(repair.stderr).toContain(`a p11kms service is running on ${t.dataDir} (pid ${process.pid})`);
      const look = await runCli(['doctor'], t.dataDir);
      expect(look.stderr).toContain('warning: a p11kms service is running');
      expect(look.code).toBe(0);
    } finally {
      await t.stop();
    }
    // Stopped: no warning any more.
    const after = await runCli(['doctor'], t.dataDir);
    expect(after).toMatchObject({ code: 0, stderr: '' });
  });
});
