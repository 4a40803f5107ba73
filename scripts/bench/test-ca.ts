/**
 * A throw-away CA and certificates made with the openssl CLI (for the bench's HTTPS service and
 * the tests' TLS cases): a server certificate for 127.0.0.1/localhost, client certificates for
 * mutual TLS. Keys are written 0600, as the service requires.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface TestCa {
  dir: string;
  caFile: string;
  /** Issues a certificate signed by this CA; returns the cert and key file paths. */
  issue(name: string, options: { subject: string; server?: boolean }): { certFile: string; keyFile: string };
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

export function makeCa(dir: string, label: string): TestCa {
  fs.mkdirSync(dir, { recursive: true });
  openssl(['req', '-x509', ...P256, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${label}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return {
    dir,
    caFile: path.join(dir, 'ca.pem'),
    issue(name, { subject, server }) {
      const keyFile = path.join(dir, `${name}.key`);
      const certFile = path.join(dir, `${name}.pem`);
      openssl(['req', ...P256, '-keyout', keyFile, '-out', `${name}.csr`, '-subj', subject], dir);
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
