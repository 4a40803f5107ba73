/**
 * The service as an operator runs it (`node dist/src/main.js`) over TLS: SIGHUP reloads the
 * certificate without dropping connections; SIGTERM turns /readyz 503 first, then stops
 * accepting, answers busy keep-alive clients with `Connection: close`, flushes the audit trail
 * and exits within its bound while the load goes on.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { CreateKeyCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { queryAuditRecords } from '../src/audit/query.js';
import { runCli, spawnTestService, type ServiceProcess } from './helpers/process.js';
import { tempDir } from './helpers/service.js';
import { httpsKmsClient, makeTestCa, type TestCa } from './helpers/tls.js';

async function startTlsService(ca: TestCa, env: Record<string, string> = {}) {
  const dir = tempDir('p11kms-frontdoor-');
  const issued = ca.issue(`server-${path.basename(dir)}`, { subject: '/CN=localhost', server: true });
  const certFile = path.join(dir, 'server.pem');
  const keyFile = path.join(dir, 'server.key');
  fs.copyFileSync(issued.certFile, certFile);
  fs.copyFileSync(issued.keyFile, keyFile);
  fs.chmodSync(keyFile, 0o600);
  const { proc, port, dataDir } = await spawnTestService({ P11KMS_LOG_LEVEL: 'info', P11KMS_TLS_CERT_FILE: certFile, P11KMS_TLS_KEY_FILE: keyFile, ...env });
  const url = `https://127.0.0.1:${port}`;
  const ca_ = fs.readFileSync(ca.caFile);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`service exited:\n${proc.output()}`);
    const status = await httpsGet(new https.Agent({ ca: ca_ }), `${url}/healthz`).then((r) => r.status, () => 0);
    if (status === 200) break;
    if (Date.now() > deadline) throw new Error(`service not healthy:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, url, port, certFile, keyFile, dataDir };
}

function httpsGet(agent: https.Agent, url: string): Promise<{ status: number; connection?: string; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { agent }, (res) => {
      const socket = res.socket as tls.TLSSocket; // detached from the response once it ends
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, socket }));
    });
    req.on('error', reject);
  });
}

function servedCertificate(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}

const fingerprint = (file: string) => new X509Certificate(fs.readFileSync(file)).fingerprint256;

/** Encrypts in a loop until stopped; records what each request did and when. */
function encryptLoop(client: KMSClient, keyId: string) {
  const results: Array<{ at: number; ok: boolean; error?: string }> = [];
  let running = true;
  const done = (async () => {
    while (running) {
      try {
        await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('load') }));
        results.push({ at: Date.now(), ok: true });
      } catch (e) {
        results.push({ at: Date.now(), ok: false, error: `${(e as Error).name}: ${(e as Error).message}` });
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  })();
  return { results, stop: async () => ((running = false), await done) };
}

describe('SIGHUP', () => {
  it('reloads the certificate while requests run, without dropping a connection', async () => {
    const ca = makeTestCa();
    const caPem = fs.readFileSync(ca.caFile);
    const svc = await startTlsService(ca);
    const client = httpsKmsClient(svc.url, ca.caFile);
    try {
      const before = await servedCertificate(svc.port, caPem);
      expect(before).toBe(fingerprint(svc.certFile));
      const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
      const load = encryptLoop(client, KeyMetadata!.KeyId!);
      // One keep-alive connection opened before the reload, used again after it.
      const keepAlive = new https.Agent({ ca: caPem, keepAlive: true, maxSockets: 1 });
      const first = await httpsGet(keepAlive, `${svc.url}/readyz`);
      await new Promise((r) => setTimeout(r, 500));
      const next = ca.issue('rotated', { subject: '/CN=localhost', server: true });
      fs.copyFileSync(next.keyFile, svc.keyFile);
      fs.copyFileSync(next.certFile, svc.certFile);
      const reloadedAt = Date.now();
      svc.proc.child.kill('SIGHUP');
      let after = before;
      while (after === before && Date.now() - reloadedAt < 5000) {
        await new Promise((r) => setTimeout(r, 100));
        after = await servedCertificate(svc.port, caPem);
      }
      expect(after).toBe(fingerprint(next.certFile));
      const again = await httpsGet(keepAlive, `${svc.url}/readyz`);
      expect(again.status).toBe(200);
      expect(again.socket).toBeInstanceOf(tls.TLSSocket);
      expect(again.socket).toBe(first.socket);
      expect(again.socket.getPeerX509Certificate()!.fingerprint256).toBe(before);
      keepAlive.destroy();
      await new Promise((r) => setTimeout(r, 500));
      // A broken pair on the next SIGHUP keeps the current certificate and the service.
      fs.writeFileSync(svc.certFile, fs.readFileSync(ca.caFile));
      svc.proc.child.kill('SIGHUP');
      await new Promise((r) => setTimeout(r, 500));
      expect(await servedCertificate(svc.port, caPem)).toBe(fingerprint(next.certFile));
      await load.stop();
      expect(load.results.filter((r) => !r.ok)).toEqual([]);
      expect(load.results.filter((r) => r.at > reloadedAt).length).toBeGreaterThan(10);
      expect(svc.proc.output()).toContain('TLS certificate and key reloaded');
      expect(svc.proc.output()).toContain('TLS reload failed; keeping the current certificate');
    } finally {
      client.destroy();
      await svc.proc.stop();
    }
  });
});

describe('SIGTERM', () => {
  it('goes unready first, drains busy keep-alive clients with Connection: close, flushes the audit trail and exits in time', async () => {
    const ca = makeTestCa();
    const caPem = fs.readFileSync(ca.caFile);
    const DELAY = 1000;
    const TIMEOUT = 3000;
    const svc = await startTlsService(ca, { P11KMS_SHUTDOWN_DELAY_MS: String(DELAY), P11KMS_SHUTDOWN_TIMEOUT_MS: String(TIMEOUT) });
    const client = httpsKmsClient(svc.url, ca.caFile);
    const probeAgent = new https.Agent({ ca: caPem, keepAlive: true, maxSockets: 1 });
    let proc: ServiceProcess | undefined = svc.proc;
    try {
      const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
      const load = encryptLoop(client, KeyMetadata!.KeyId!);
      await new Promise((r) => setTimeout(r, 300));
      // A request in flight across the start of the drain: its body is finished only after it.
      const inFlight = tls.connect({ host: '127.0.0.1', port: svc.port, ca: caPem });
      let answer = '';
      inFlight.on('data', (d) => (answer += d.toString()));
      const inFlightClosed = new Promise<void>((r) => inFlight.once('close', () => r()));
      await new Promise((r) => inFlight.once('secureConnect', r));
      inFlight.write('POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Length: 2\r\n\r\n{');
      // ... and one whose body never comes: the drain cuts it after P11KMS_SHUTDOWN_TIMEOUT_MS.
      const stuck = tls.connect({ host: '127.0.0.1', port: svc.port, ca: caPem });
      await new Promise((r) => stuck.once('secureConnect', r));
      stuck.write('POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Length: 2\r\n\r\n{');
      stuck.on('error', () => undefined);
      const stuckClosed = new Promise<number>((r) => stuck.once('close', () => r(Date.now())));
      const signalledAt = Date.now();
      svc.proc.child.kill('SIGTERM');
      setTimeout(() => inFlight.write('}'), DELAY + 300);
      // A busy keep-alive client of /readyz: 503 first, then its connection is closed by the drain.
      const probes: Array<{ at: number; status: number; connection?: string }> = [];
      let refusedAt: number | undefined;
      while (Date.now() - signalledAt < DELAY + TIMEOUT) {
        try {
          const r = await httpsGet(probeAgent, `${svc.url}/readyz`);
          probes.push({ at: Date.now() - signalledAt, status: r.status, connection: r.connection });
        } catch {
          refusedAt = Date.now() - signalledAt;
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      const code = await svc.proc.exited;
      const exitedAfter = Date.now() - signalledAt;
      proc = undefined;
      await load.stop();

      expect(code).toBe(0);
      expect(exitedAfter).toBeLessThan(DELAY + TIMEOUT + 2000);
      expect(probes[0]!.status).toBe(503);
      expect(probes.every((p) => p.status === 503)).toBe(true);
      // The drain (after the delay) closed the idle keep-alive probe and refused new connections ...
      expect(refusedAt).toBeGreaterThanOrEqual(DELAY - 100);
      // ... answered the request in flight with Connection: close and closed that connection ...
      await inFlightClosed;
      expect(answer).toMatch(/^HTTP\/1\.1 \d{3} /);
      expect(answer).toMatch(/\r\nConnection: close\r\n/i);
      // ... cut the request that never finished once the drain timed out ...
      const stuckAfter = (await stuckClosed) - signalledAt;
      expect(stuckAfter).toBeGreaterThanOrEqual(DELAY + TIMEOUT - 100);
      expect(stuckAfter).toBeLessThan(DELAY + TIMEOUT + 1500);
      // ... and served the busy keep-alive SDK client no longer (it was served for 17 s more before).
      expect(load.results.filter((r) => r.ok && r.at > signalledAt + DELAY + 500)).toEqual([]);
      // Requests went on being served while unready, and none failed before the listener closed.
      const served = load.results.filter((r) => r.ok && r.at >= signalledAt && r.at < signalledAt + DELAY - 100);
      expect(served.length).toBeGreaterThan(5);
      expect(load.results.filter((r) => !r.ok && r.at < signalledAt + DELAY - 100)).toEqual([]);
      // Everything answered is in the audit trail, which verifies intact (final digest signed at shutdown).
      const ok = load.results.filter((r) => r.ok).length;
      let audited = 0;
      for await (const rec of queryAuditRecords(svc.dataDir, { eventName: 'Encrypt' })) if (!rec.errorCode) audited++;
      expect(audited).toBeGreaterThanOrEqual(ok);
      const verify = await runCli(['audit', 'verify', '--check-token'], svc.dataDir);
      expect(verify.stdout + verify.stderr).not.toMatch(/altered|removed|reordered/);
      expect(verify.code).toBe(0);
    } finally {
      client.destroy();
      probeAgent.destroy();
      await proc?.stop();
    }
  });
});
