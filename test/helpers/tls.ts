/**
 * A test CA and certificates made with the openssl CLI: a server certificate for 127.0.0.1 and
 * localhost, and client certificates for mutual TLS. Keys are written 0600, as the service wants.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { REGION, ROOT, tempDir } from './service.js';

export interface TestCa {
  dir: string;
  caFile: string;
  /** Issues a certificate signed by this CA; returns the cert and key file paths. */
  issue(name: string, options: { subject: string; server?: boolean }): { certFile: string; keyFile: string };
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

export function makeTestCa(label = 'p11kms test CA'): TestCa {
  const dir = tempDir('p11kms-tls-');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${label}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return {
    dir,
    caFile: path.join(dir, 'ca.pem'),
    issue(name, { subject, server }) {
      const keyFile = path.join(dir, `${name}.key`);
      const certFile = path.join(dir, `${name}.pem`);
      openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', `${name}.csr`, '-subj', subject], dir);
      const ext = server
        ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n'
        : 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n';
      fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
      openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', certFile, '-days', '2', '-extfile', `${name}.ext`], dir);
      fs.chmodSync(keyFile, 0o600);
      return { certFile, keyFile };
    },
  };
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
