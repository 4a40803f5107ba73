/**
 * Principals for authorization tests: users of the service's account and of another account,
 * written to a principals file for P11KMS_PRINCIPALS_FILE.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { KMSClient } from '@aws-sdk/client-kms';
import { ACCOUNT_ID, tempDir, type TestService } from './service.js';

export const OTHER_ACCOUNT_ID = '444455556666';

export interface TestPrincipal {
  arn: string;
  accessKeyId: string;
  secretAccessKey: string;
  policies?: unknown[];
  tags?: Record<string, string>;
}

let counter = 0;
export function testUser(name: string, policies: unknown[] = [], account = ACCOUNT_ID, tags: Record<string, string> = {}): TestPrincipal {
  const n = String(++counter).padStart(4, '0');
  return {
    arn: `arn:aws:iam::${account}:user/${name}`,
    accessKeyId: `AKIATEST${name.toUpperCase().replace(/[^A-Z0-9]/g, '').padEnd(8, 'X').slice(0, 8)}${n}`,
    secretAccessKey: `${name}-secret-0123456789abcdefghij`,
    policies,
    tags,
  };
}

export const identityPolicy = (...statements: Array<Record<string, unknown>>) => ({ Version: '2012-10-17', Statement: statements });

export function writePrincipalsFile(principals: TestPrincipal[]): string {
  const file = path.join(tempDir('p11kms-principals-'), 'principals.json');
  fs.writeFileSync(file, JSON.stringify({ principals }));
  return file;
}

export const credentials = (p: TestPrincipal) => ({ accessKeyId: p.accessKeyId, secretAccessKey: p.secretAccessKey });

/** `as(p)`: the service's client signing as principal `p`, made on first use and reused after. */
export function clientsByPrincipal(t: TestService): (p: TestPrincipal) => KMSClient {
  const clients = new Map<string, KMSClient>();
  return (p) => {
    if (!clients.has(p.arn)) clients.set(p.arn, t.clientFor(credentials(p)));
    return clients.get(p.arn)!;
  };
}
