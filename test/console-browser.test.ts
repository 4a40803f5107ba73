/**
 * The web console in a real headless Chromium (Debian's, driven by playwright-core) against a real
 * service: sign in, create a key, edit its policy (an invalid one shows AWS's error), add an alias
 * and a tag, rotate, schedule deletion, find the calls in the audit view, and sign in as a
 * principal without rights to see AccessDenied shown plainly. Every console action must be an
 * ordinary signed API call, recorded with the user's identity. Screenshots of each page land in
 * test-artifacts/console/.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryAuditRecords } from '../src/audit/query.js';
import { CONSOLE_DIR } from '../src/http/console-static.js';
import { ROOT, tempDir, useTestService } from './helpers/service.js';

const ARTIFACTS = path.resolve('test-artifacts/console');
const NOBODY = { accessKeyId: 'AKIACONSOLENOBODY001', secretAccessKey: 'console-nobody-secret-0123456789abcdef' };

function findChromium(): { path?: string; reason?: string } {
  try {
    return { path: execFileSync('bash', ['scripts/ensure-chromium.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() };
  } catch (e) {
    return { reason: String((e as { stderr?: string }).stderr ?? e).trim() };
  }
}

const browserPath = findChromium();
if (!browserPath.path) console.warn(`SKIPPED console browser tests: no Chromium (${browserPath.reason})`);

describe.skipIf(!browserPath.path)('web console in Chromium', () => {
  const t = useTestService(() => {
    const file = path.join(tempDir('p11kms-console-'), 'principals.json');
    fs.writeFileSync(file, JSON.stringify({ principals: [{ arn: 'arn:aws:iam::111122223333:user/nobody', ...NOBODY, policies: [] }] }));
    return { P11KMS_PRINCIPALS_FILE: file };
  });
  let browser: Browser;
  let page: Page;
  const cspViolations: string[] = [];
  let keyId = '';

  beforeAll(async () => {
    expect(fs.existsSync(path.join(CONSOLE_DIR, 'index.html')), 'the console is built by npm test\'s set-up (scripts/prepare.sh)').toBe(true);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: browserPath.path,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text());
    });
  });
  afterAll(async () => {
    await browser?.close();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

  async function signIn(credentials: { accessKeyId: string; secretAccessKey: string }) {
    await page.goto(`${t.service.url}/console/`);
    await page.getByLabel('Access key ID').fill(credentials.accessKeyId);
    await page.getByLabel('Secret access key').fill(credentials.secretAccessKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  it('signs in, with every input labelled and reachable by keyboard', async () => {
    await page.goto(`${t.service.url}/console/`);
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('access-key-id');
    await shot('sign-in');
    await signIn(ROOT);
    await expect.poll(() => page.getByRole('heading', { name: 'Keys' }).isVisible()).toBe(true);
    await shot('keys');
  });

  it('creates a key from the dialog', async () => {
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.getByLabel('Description').fill('made in the console');
    await page.getByLabel('Tags (one key=value per line)').fill('team=security');
    await shot('create-key');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    await page.waitForURL(/#\/keys\/[0-9a-f-]{36}$/);
    keyId = page.url().split('/').pop()!;
    await expect.poll(() => page.getByText('made in the console').isVisible()).toBe(true);
    await shot('key-configuration');
  });

  it('edits the key policy: invalid JSON and a policy AWS refuses are shown inline', async () => {
    await page.getByRole('tab', { name: 'Key policy' }).click();
    const editor = page.getByLabel('Key policy (JSON)');
    await expect.poll(async () => (await editor.inputValue()).includes('Enable IAM User Permissions')).toBe(true);
    await editor.fill('{ not json');
    await page.getByRole('button', { name: 'Save policy' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('MalformedPolicyDocumentException');
    await editor.fill(JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Perhaps', Principal: '*', Action: 'kms:*', Resource: '*' }] }));
    await page.getByRole('button', { name: 'Save policy' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/MalformedPolicyDocumentException: .*Effect/);
    await shot('key-policy-error');
    const good = { Version: '2012-10-17', Statement: [{ Sid: 'root', Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::111122223333:root' }, Action: 'kms:*', Resource: '*' }] };
    await editor.fill(JSON.stringify(good));
    await page.getByRole('button', { name: 'Save policy' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Key policy saved');
  });

  it('adds an alias and a tag', async () => {
    await page.getByRole('tab', { name: 'Aliases' }).click();
    await page.getByLabel('New alias').fill('alias/console-test');
    await page.getByRole('button', { name: 'Add alias' }).click();
    await expect.poll(() => page.getByText('alias/console-test').isVisible()).toBe(true);
    await page.getByRole('tab', { name: 'Tags' }).click();
    await page.getByLabel('Tag key').fill('env');
    await page.getByLabel('Tag value').fill('test');
    await page.getByRole('button', { name: 'Add tag' }).click();
    await expect.poll(() => page.getByRole('cell', { name: 'env', exact: true }).isVisible()).toBe(true);
    await shot('key-tags');
  });

  it('rotates on demand and lists the rotation', async () => {
    await page.getByRole('tab', { name: 'Rotation' }).click();
    await page.getByRole('button', { name: 'Rotate now' }).click();
    await expect.poll(() => page.getByRole('cell', { name: 'ON_DEMAND' }).count()).toBe(1);
    await shot('key-rotation');
  });

  it('schedules deletion only after the key ID is typed', async () => {
    await page.getByRole('tab', { name: 'Configuration' }).click();
    const schedule = page.getByRole('button', { name: 'Schedule key deletion' });
    expect(await schedule.isDisabled()).toBe(true);
    await page.getByLabel('Waiting period (7-30 days)').fill('7');
    await page.getByLabel(/Type the key ID/).fill(keyId);
    await schedule.click();
    await expect.poll(() => page.getByText('PendingDeletion').isVisible()).toBe(true);
    await shot('key-pending-deletion');
  });

  it('finds the calls in the audit view, with the chains verified', async () => {
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByLabel('Event name').fill('CreateAlias');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => page.locator('tr.record').count()).toBe(1);
    await page.locator('tr.record button.link').click();
    await expect.poll(() => page.locator('pre.code').textContent()).toContain('alias/console-test');
    await expect.poll(() => page.locator('.verification p.state').textContent()).toMatch(/^(intact|unanchored tail):/);
    await shot('audit');
  });

  it('shows the usage and service pages', async () => {
    await page.getByRole('link', { name: 'Usage' }).click();
    await expect.poll(() => page.locator('svg.chart rect').count()).toBeGreaterThan(0);
    await shot('usage');
    await page.getByRole('link', { name: 'Service' }).click();
    await expect.poll(() => page.getByRole('cell', { name: 'SYMMETRIC_DEFAULT' }).first().isVisible()).toBe(true);
    await shot('service');
  });

  it('lists the key with its alias and state, and filters by state', async () => {
    await page.getByRole('link', { name: 'Keys' }).click();
    const row = page.locator('table.keys tbody tr', { hasText: keyId });
    await expect.poll(() => row.textContent()).toMatch(/alias\/console-test.*SYMMETRIC_DEFAULT.*PendingDeletion/);
    await shot('keys-list');
    await page.getByLabel('State').selectOption('Enabled');
    await expect.poll(() => row.count()).toBe(0);
    await page.getByLabel('State').selectOption('PendingDeletion');
    await expect.poll(() => row.count()).toBe(1);
  });

  it('adds no privilege: every console action was a signed API call recorded with the user\'s identity', async () => {
    const byConsole = new Map<string, string | undefined>();
    for await (const r of queryAuditRecords(t.dataDir, { key: keyId })) byConsole.set(r.eventName, r.userIdentity?.accessKeyId);
    for (const op of ['CreateKey', 'PutKeyPolicy', 'CreateAlias', 'TagResource', 'RotateKeyOnDemand', 'ScheduleKeyDeletion']) {
      expect(byConsole.get(op), op).toBe(ROOT.accessKeyId);
    }
    expect(cspViolations).toEqual([]);
  });

  it('a principal without rights sees AccessDenied plainly', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signIn(NOBODY);
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/AccessDeniedException: User: arn:aws:iam::111122223333:user\/nobody is not authorized to perform: kms:ListKeys/);
    await shot('access-denied');
    await page.getByRole('link', { name: 'Audit' }).click();
    await expect.poll(() => page.getByRole('alert').first().textContent()).toContain('p11kms:ReadAuditTrail');
  });

  it('a wrong secret does not sign in', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signIn({ accessKeyId: ROOT.accessKeyId, secretAccessKey: 'not-the-secret-0000000000000000000000' });
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('InvalidSignatureException');
    expect(await page.getByRole('heading', { name: 'Keys' }).count()).toBe(0);
  });
});
