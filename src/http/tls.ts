/**
 * HTTPS for the listener (P11KMS_TLS_CERT_FILE / P11KMS_TLS_KEY_FILE) and mutual TLS
 * (P11KMS_TLS_CLIENT_CA_FILE): TLS 1.2 at least (Node negotiates 1.3 when the client offers it),
 * the certificate and key re-read on SIGHUP without dropping connections, and the peer
 * certificate's identity for principals bound to a certificate.
 */
import { createHash, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import type https from 'node:https';
import type { Socket } from 'node:net';
import { TLSSocket, createSecureContext, type SecureContextOptions } from 'node:tls';
import { normalizeSubject } from '../auth/principals.js';
import type { TlsConfig } from '../config.js';

export class TlsConfigError extends Error {}

/** The certificate, key and client CA as the server needs them; refuses a key others may read. */
export function readTlsMaterial(tls: TlsConfig): SecureContextOptions {
  const mode = statMode(tls.keyFile, 'P11KMS_TLS_KEY_FILE');
  if ((mode & 0o007) !== 0) {
    throw new TlsConfigError(`P11KMS_TLS_KEY_FILE ${tls.keyFile} is accessible by others (mode ${(mode & 0o777).toString(8)}); restrict it, e.g. chmod 600`);
  }
  const material: SecureContextOptions = {
    cert: readFile(tls.certFile, 'P11KMS_TLS_CERT_FILE'),
    key: readFile(tls.keyFile, 'P11KMS_TLS_KEY_FILE'),
    ca: tls.clientCaFile ? readFile(tls.clientCaFile, 'P11KMS_TLS_CLIENT_CA_FILE') : undefined,
    minVersion: 'TLSv1.2',
  };
  try {
    createSecureContext(material); // a key that does not match the certificate fails here, not at the first handshake
  } catch (e) {
    throw new TlsConfigError(`the TLS certificate and key cannot be used: ${(e as Error).message}`);
  }
  return material;
}

/** Server options for https.createServer; mutual TLS refuses clients without a valid certificate. */
export function tlsServerOptions(tls: TlsConfig, handshakeTimeoutMs: number): https.ServerOptions {
  const mutual = tls.clientCaFile !== undefined;
  return { ...readTlsMaterial(tls), requestCert: mutual, rejectUnauthorized: mutual, handshakeTimeout: handshakeTimeoutMs };
}

/** Re-reads certificate, key and client CA: new handshakes use them, open connections go on. */
export function reloadTlsMaterial(server: https.Server, tls: TlsConfig): void {
  server.setSecureContext(readTlsMaterial(tls));
}

export const isTlsSocket = (socket: Socket): socket is TLSSocket => socket instanceof TLSSocket;

/** Who the client's certificate names: its subject (RDNs in certificate order, comma-separated)
 *  and the SHA-256 of its SubjectPublicKeyInfo (lower-case hex). */
export interface PeerIdentity {
  subject: string;
  spkiSha256: string;
}

const peerIdentities = new WeakMap<TLSSocket, PeerIdentity | null>();

/** The verified client certificate's identity on this connection (computed once per connection). */
export function peerIdentityOf(socket: Socket): PeerIdentity | undefined {
  if (!isTlsSocket(socket) || !socket.authorized) return undefined;
  let identity = peerIdentities.get(socket);
  if (identity === undefined) {
    const cert = socket.getPeerX509Certificate();
    identity = cert ? identityOf(cert) : null;
    peerIdentities.set(socket, identity);
  }
  return identity ?? undefined;
}

function identityOf(cert: X509Certificate): PeerIdentity {
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return { subject: normalizeSubject(cert.subject.split('\n')), spkiSha256: createHash('sha256').update(spki).digest('hex') };
}

function statMode(file: string, variable: string): number {
  try {
    return fs.statSync(file).mode;
  } catch (e) {
    throw new TlsConfigError(`${variable} ${file} cannot be read: ${(e as Error).message}`);
  }
}

function readFile(file: string, variable: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new TlsConfigError(`${variable} ${file} cannot be read: ${(e as Error).message}`);
  }
}
