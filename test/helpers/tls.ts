/**
 * TLS for tests: a CA made in the test (openssl CLI, shared with the bench), SPKI fingerprints,
 * and a real AWS SDK client over HTTPS trusting that CA.
 */
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { KMSClient } from '@aws-sdk/client-kms';
import { makeCa, type TestCa } from '../../scripts/bench/test-ca.js';
import { REGION, ROOT, tempDir } from './service.js';

export type { TestCa };

export function makeTestCa(label = 'p11kms test CA'): TestCa {
  return makeCa(tempDir('p11kms-tls-'), label);
}

/** The SHA-256 of a certificate's SubjectPublicKeyInfo, hex (what a principal may be bound to). */
export function spkiSha256(certFile: string): string {
  const spki = new X509Certificate(fs.readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

/** A real AWS SDK client over HTTPS trusting `caFile` (and presenting a client certificate). */
export function httpsKmsClient(
  url: string,
  caFile: string,
  options: { client?: { certFile: string; keyFile: string }; credentials?: { accessKeyId: string; secretAccessKey: string }; maxAttempts?: number } = {},
): KMSClient {
  const httpsAgent = new https.Agent({
    ca: fs.readFileSync(caFile),
    cert: options.client ? fs.readFileSync(options.client.certFile) : undefined,
    key: options.client ? fs.readFileSync(options.client.keyFile) : undefined,
    keepAlive: true,
  });
  return new KMSClient({ endpoint: url, region: REGION, credentials: options.credentials ?? ROOT, maxAttempts: options.maxAttempts ?? 1, requestHandler: { httpsAgent } });
}
