/**
 * Connection handling for the listener: header, request and keep-alive timeouts (slow or idle
 * connections are closed), a maximum of open connections overall and per source address, a
 * maximum of API requests in flight, and the graceful drain at shutdown (stop accepting, answer
 * what is in flight with `Connection: close`, cut what is left after a bound).
 */
import type http from 'node:http';
import type { Socket } from 'node:net';
import type { ConnectionLimits } from '../config.js';
import { Throttled } from '../kms/quotas/quotas.js';

/** How often node checks header and request timeouts (its default, 30 s, would let a slow
 *  client hold a connection up to 30 s past its timeout). */
export const connectionsCheckingIntervalMs = (limits: ConnectionLimits) => Math.min(1000, Math.max(100, Math.floor(limits.headersTimeoutMs / 4)));

export class ConnectionGuard {
  private readonly perSource = new Map<string, number>();
  private apiInFlight = 0;
  private readonly inFlight = new Set<http.ServerResponse>();
  /** The responses of admitted API requests, until they close. */
  private readonly apiResponses = new WeakSet<http.ServerResponse>();
  /** The one 'close' listener of every response (`this` is the response): no closures per request. */
  private readonly responseClosed: (this: http.ServerResponse) => void;
  private draining = false;

  constructor(
    private readonly server: http.Server,
    private readonly limits: ConnectionLimits,
  ) {
    server.headersTimeout = limits.headersTimeoutMs;
    server.requestTimeout = limits.requestTimeoutMs;
    server.keepAliveTimeout = limits.keepAliveTimeoutMs;
    server.maxConnections = limits.maxConnections;
    // Raw TCP connections (before any TLS handshake), so a flood costs no handshakes.
    server.on('connection', (socket: Socket) => this.admitConnection(socket));
    const guard = this;
    this.responseClosed = function (this: http.ServerResponse) {
      guard.inFlight.delete(this);
      if (guard.apiResponses.delete(this)) guard.apiInFlight--;
    };
  }

  /** Open API requests (for tests and diagnostics). */
  get requestsInFlight(): number {
    return this.apiInFlight;
  }

  private admitConnection(socket: Socket): void {
    const source = socket.remoteAddress ?? '';
    const open = (this.perSource.get(source) ?? 0) + 1;
    if (open > this.limits.maxConnectionsPerSource) {
      socket.destroy();
      return;
    }
    this.perSource.set(source, open);
    socket.once('close', () => {
      const left = (this.perSource.get(source) ?? 1) - 1;
      if (left === 0) this.perSource.delete(source);
      else this.perSource.set(source, left);
    });
  }

  /** Every request: while draining, the answer closes its connection. */
  onRequest(res: http.ServerResponse): void {
    if (this.draining) res.setHeader('Connection', 'close');
    this.watch(res);
  }

  private watch(res: http.ServerResponse): void {
    if (this.inFlight.has(res)) return;
    this.inFlight.add(res);
    res.on('close', this.responseClosed);
  }

  /** An API request starts; throws Throttled when the in-flight bound is reached. */
  admitApiRequest(res: http.ServerResponse): void {
    if (this.apiInFlight >= this.limits.maxRequestsInFlight) {
      throw new Throttled('requests-in-flight', `${this.limits.maxRequestsInFlight} requests are in flight already`);
    }
    this.apiInFlight++;
    this.apiResponses.add(res);
    this.watch(res);
  }

  /**
   * Stops accepting, lets in-flight requests finish (each answer closing its connection), closes
   * idle keep-alive connections, and after `timeoutMs` cuts whatever is still open.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const res of this.inFlight) {
      if (!res.headersSent) res.setHeader('Connection', 'close');
      else res.once('finish', () => res.socket?.destroySoon());
    }
    this.server.closeIdleConnections();
    const timer = setTimeout(() => this.server.closeAllConnections(), timeoutMs);
    try {
      await closed;
    } finally {
      clearTimeout(timer);
    }
  }
}
