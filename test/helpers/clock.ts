/**
 * A movable clock for lifecycle tests: the service reads it through StartOptions.now, and the SDK
 * client signs with the same offset (systemClockOffset) so SigV4 stays within the skew window.
 */
import { KMSClient } from '@aws-sdk/client-kms';
import { REGION, ROOT } from './service.js';

export const DAY_MS = 86_400_000;

export class TestClock {
  private offsetMs = 0;
  private endpoint: string | undefined;
  private current: KMSClient | undefined;

  readonly now = (): Date => new Date(Date.now() + this.offsetMs);

  advance(ms: number): void {
    this.offsetMs += ms;
    this.reconnect();
  }

  advanceDays(days: number): void {
    this.advance(days * DAY_MS);
  }

  /** Points the clock's client at a (re)started service. */
  connect(endpoint: string): void {
    this.endpoint = endpoint;
    this.reconnect();
  }

  /** A root client signing with this clock (a new one after every move). */
  get client(): KMSClient {
    if (!this.current) throw new Error('TestClock: connect() first');
    return this.current;
  }

  private reconnect(): void {
    this.current?.destroy();
    this.current =
      this.endpoint === undefined
        ? undefined
        : new KMSClient({ endpoint: this.endpoint, region: REGION, credentials: ROOT, maxAttempts: 1, systemClockOffset: this.offsetMs });
  }
}
