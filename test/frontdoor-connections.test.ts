/**
 * Connection limits on a real listener over loopback: slow-header (slowloris) connections are
 * closed after P11KMS_HEADERS_TIMEOUT_MS while real SDK clients keep being served; one source
 * address may hold only so many connections; requests in flight are bounded; idle keep-alive
 * connections are closed.
 */
import net from 'node:net';
import { CreateKeyCommand, EncryptCommand } from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it } from 'vitest';
import { errorOf, useTestService } from './helpers/service.js';

const HEADERS_TIMEOUT_MS = 1500;
const t = useTestService({
  P11KMS_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
  P11KMS_REQUEST_TIMEOUT_MS: '3000',
  P11KMS_KEEP_ALIVE_TIMEOUT_MS: '1000',
  P11KMS_MAX_CONNECTIONS_PER_SOURCE: '120',
  P11KMS_MAX_CONNECTIONS: '350',
  P11KMS_MAX_REQUESTS_IN_FLIGHT: '40',
});

interface Probe {
  socket: net.Socket;
  closedAt: Promise<number>;
  data: () => string;
}

const opened: net.Socket[] = [];
afterAll(() => {
  for (const s of opened) s.destroy();
});

/** A raw TCP connection to the service from `localAddress` (any 127.x.y.z is loopback on Linux). */
function connect(localAddress: string): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: t.service.port, localAddress });
    opened.push(socket);
    let data = '';
    socket.on('data', (d) => (data += d.toString()));
    const closedAt = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
    socket.once('error', () => undefined);
    socket.once('connect', () => resolve({ socket, closedAt, data: () => data }));
    socket.once('error', reject);
  });
}

/** A slowloris client: a request head that never ends, one header line every 300 ms. */
function trickleHeaders(p: Probe): () => void {
  p.socket.write('POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  let n = 0;
  const timer = setInterval(() => {
    if (!p.socket.destroyed) p.socket.write(`X-Slow-${n++}: 1\r\n`);
  }, 300);
  return () => clearInterval(timer);
}

describe('slow and idle connections', () => {
  it('serves real clients while 300 slow-header connections are open, and closes those within the header timeout', async () => {
    const sources = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const started = Date.now();
    const slow = await Promise.all(Array.from({ length: 300 }, (_, i) => connect(sources[i % sources.length]!)));
    const stops = slow.map(trickleHeaders);
    try {
      const { KeyMetadata } = await t.client.send(new CreateKeyCommand({}));
      const latencies: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = Date.now();
        await t.client.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from(`request ${i}`) }));
        latencies.push(Date.now() - t0);
      }
      expect(Math.max(...latencies)).toBeLessThan(1000);
      // Still open while the real client was served: they were slow, not refused.
      expect(slow.filter((p) => p.socket.destroyed).length).toBeLessThan(300);
      const closed = await Promise.all(slow.map((p) => p.closedAt));
      const lastClosedMs = Math.max(...closed) - started;
      expect(lastClosedMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 100);
      // The header timeout plus node's check interval (a quarter of it) plus slack for 2 busy cores.
      expect(lastClosedMs).toBeLessThan(HEADERS_TIMEOUT_MS + 3000);
      expect(slow.filter((p) => p.data().startsWith('HTTP/1.1 408')).length).toBeGreaterThan(0);
    } finally {
      for (const stop of stops) stop();
    }
  });

  it('closes connections beyond the bound per source address at once; other sources are not affected', async () => {
    const probes = await Promise.all(Array.from({ length: 130 }, () => connect('127.0.0.5')));
    const quick = await Promise.all(probes.map((p) => Promise.race([p.closedAt.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500))])));
    expect(quick.filter(Boolean).length).toBe(10);
    const other = await connect('127.0.0.6');
    other.socket.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 200));
    expect(other.data()).toMatch(/^HTTP\/1.1 200/);
    for (const p of probes) p.socket.destroy();
    other.socket.destroy();
  });

  it('closes connections beyond P11KMS_MAX_CONNECTIONS at once, whatever their source', async () => {
    const sources = ['127.0.0.10', '127.0.0.11', '127.0.0.12', '127.0.0.13'];
    const probes = await Promise.all(Array.from({ length: 380 }, (_, i) => connect(sources[i % sources.length]!)));
    const quick = await Promise.all(probes.map((p) => Promise.race([p.closedAt.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500))])));
    // 350 at most stay open (a few may still be counted from the previous test's closing sockets).
    expect(quick.filter(Boolean).length).toBeGreaterThanOrEqual(30);
    expect(quick.filter(Boolean).length).toBeLessThan(60);
    for (const p of probes) p.socket.destroy();
    await Promise.all(probes.map((p) => p.closedAt));
    await new Promise((r) => setTimeout(r, 200));
    await expect(t.client.send(new CreateKeyCommand({}))).resolves.toBeDefined();
  });

  it('closes an idle keep-alive connection after the keep-alive timeout', async () => {
    const p = await connect('127.0.0.7');
    const t0 = Date.now();
    p.socket.write('GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
    const closedAfter = (await p.closedAt) - t0;
    expect(p.data()).toMatch(/^HTTP\/1.1 200/);
    expect(closedAfter).toBeGreaterThanOrEqual(900);
    expect(closedAfter).toBeLessThan(4000);
  });
});

describe('requests in flight', () => {
  it('answers ThrottlingException beyond P11KMS_MAX_REQUESTS_IN_FLIGHT and serves again once they are done', async () => {
    // 40 API requests whose bodies never arrive: each is in flight until the request timeout.
    const stuck = await Promise.all(Array.from({ length: 40 }, () => connect('127.0.0.8')));
    for (const p of stuck) p.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n{');
    await new Promise((r) => setTimeout(r, 300));
    const err = await errorOf(t.client.send(new CreateKeyCommand({})));
    expect(err.name).toBe('ThrottlingException');
    expect(err.message).toContain('40 requests are in flight');
    await Promise.all(stuck.map((p) => p.closedAt)); // the request timeout ends them
    await expect(t.client.send(new CreateKeyCommand({}))).resolves.toBeDefined();
  });
});
