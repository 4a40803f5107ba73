/**
 * Whether the token is usable, and getting it back without a restart. A call that shows the
 * token lost (errors.ts isTokenLost: sessions gone, login gone, device removed, library wedged,
 * a call past its deadline) marks it down; from then on requests fail fast with
 * KeyUnavailableException without touching the token, /healthz answers 503 naming it, and one
 * recovery loop (never one per request: no storm of logins) retries `recover` with exponential
 * backoff and jitter until the token answers again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { HsmLog } from './token-access.js';
import { HsmError } from './types.js';

export interface GuardTimings {
  firstRetryMs: number;
  maxRetryMs: number;
}

export const DEFAULT_GUARD_TIMINGS: GuardTimings = { firstRetryMs: 25, maxRetryMs: 1000 };

export class TokenGuard {
  private down: { since: number; cause: HsmError; attempts: number } | undefined;
  private loop: Promise<void> | undefined;
  private closed = false;
  /** Completed recoveries (tests, metrics) and how long the last outage lasted. */
  recoveries = 0;
  lastOutageMs: number | undefined;

  constructor(
    private readonly label: string,
    private readonly log: HsmLog,
    /** Brings the token back (sessions, login, handles); throws while it cannot. `attempt`
     *  counts from 1 within one outage, `cause` is the last error seen. */
    private readonly recover: (attempt: number, cause: HsmError) => Promise<void>,
    private readonly timings: GuardTimings = DEFAULT_GUARD_TIMINGS,
  ) {}

  get isDown(): boolean {
    return this.down !== undefined;
  }

  /** Why the token is unusable, naming it; undefined while it is up. */
  problem(): string | undefined {
    if (!this.down) return undefined;
    const seconds = ((Date.now() - this.down.since) / 1000).toFixed(1);
    return `PKCS#11 token '${this.label}' unavailable for ${seconds} s (${this.down.cause.fn}: ${this.down.cause.ckr}); reconnecting`;
  }

  /** Throws the fast-failure error while the token is down. */
  assertUp(fn: string): void {
    if (this.down) throw new HsmError('unavailable', this.down.cause.ckr, fn, this.problem());
  }

  /** Reports a token-level fault; starts the recovery loop once. */
  lost(cause: HsmError): void {
    if (this.closed) return;
    if (this.down) {
      this.down.cause = cause;
      return;
    }
    this.down = { since: Date.now(), cause, attempts: 0 };
    this.log('warn', `PKCS#11 token '${this.label}' lost (${cause.fn}: ${cause.ckr}); failing requests fast and reconnecting`);
    this.loop = this.recoverLoop();
  }

  private async recoverLoop(): Promise<void> {
    let delay = this.timings.firstRetryMs;
    while (this.down && !this.closed) {
      await sleep(delay * (0.5 + Math.random() * 0.5));
      if (this.closed) return;
      const down = this.down;
      down.attempts++;
      try {
        await this.recover(down.attempts, down.cause);
        this.lastOutageMs = Date.now() - down.since;
        this.recoveries++;
        this.down = undefined;
        this.log('info', `PKCS#11 token '${this.label}' back after ${this.lastOutageMs} ms (${down.attempts} attempt(s))`);
        return;
      } catch (err) {
        if (err instanceof HsmError) down.cause = err;
        delay = Math.min(delay * 2, this.timings.maxRetryMs);
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.loop;
  }
}
