/**
 * scripts/installed-tree.mjs, which decides whether the set-up runs `npm ci`: it trusts what npm
 * records (node_modules/.package-lock.json) and whether the native addons load, not a stamp of ours.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers/service.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const SCRIPT = path.join(ROOT, 'scripts/installed-tree.mjs');
const run = (cwd: string) => spawnSync(process.execPath, [SCRIPT], { cwd, encoding: 'utf8' });

function treeWith(hidden: Record<string, unknown> | undefined): string {
  const dir = tempDir('p11kms-tree-');
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify(lock));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  if (hidden) fs.writeFileSync(path.join(dir, 'node_modules/.package-lock.json'), JSON.stringify({ packages: hidden }));
  return dir;
}

describe('installed-tree check', () => {
  it('accepts this checkout, whose node_modules npm installed from package-lock.json', () => {
    expect(run(ROOT)).toMatchObject({ status: 0, stderr: '' });
  });

  it('names why a tree is not current: no completed install, another version, a missing package, addons that do not load', () => {
    expect(run(treeWith(undefined)).stderr).toContain('node_modules/.package-lock.json is missing');
    const { packages } = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/.package-lock.json'), 'utf8')) as { packages: Record<string, { version: string }> };
    const changed = { ...packages, 'node_modules/zod': { ...packages['node_modules/zod'], version: '0.0.1' } };
    expect(run(treeWith(changed))).toMatchObject({ status: 1, stderr: expect.stringContaining('node_modules/zod: version 0.0.1 installed') });
    const { ['node_modules/zod']: _zod, ...without } = packages;
    expect(run(treeWith(without)).stderr).toContain('node_modules/zod is locked but not installed');
    // npm's record matches, but the addons are not there (or were built for another Node).
    expect(run(treeWith(packages)).stderr).toContain(`a native addon does not load under Node ${process.version}`);
  });

  it('lists the packages whose install runs a build: the two addons the service needs, and only packages npm marks so', () => {
    const listed = execFileSync(process.execPath, [SCRIPT, '--native'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(listed).toEqual(expect.arrayContaining(['better-sqlite3', 'pkcs11js']));
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean }> };
    const marked = Object.entries(lock.packages).filter(([, e]) => e.hasInstallScript).map(([k]) => k.replace(/^.*node_modules\//, ''));
    expect(listed.sort()).toEqual(marked.sort());
  });
});
