/**
 * The slow lane: token calls that take milliseconds to seconds (key generation of every kind,
 * RSA and EC private-key operations: sign, decrypt, derive) run on a few worker threads of their
 * own (call-workers.ts), in sync and async mode alike. This is about starvation, not about
 * network HSMs: pkcs11js's *Async variants run on libuv's four-thread pool, and four RSA-4096
 * generations there held every thread for seconds while the audit trail's durable writes (file
 * system work, the same pool) waited behind them.
 *
 * At most `threads` slow calls run at once; the next ones wait in FIFO order, and beyond
 * `queueMax` waiting a call is refused at once (HsmError 'busy': ThrottlingException, the client
 * backs off). A caller is admitted before it takes a session from the pool, so waiting slow
 * calls never hold sessions the data plane needs. Each call has the lane's own (longer) deadline
 * from the moment a thread took it; past it the answer is HsmError 'timeout'
 * (DependencyTimeoutException) and the thread, which may be stuck in the token, is abandoned and
 * replaced, as in the async call workers.
 */
import { availableParallelism } from 'node:os';
import { CallWorkers, type WorkerAnswer, type WorkerCall, answerOrThrow } from './call-workers.js';
import { HsmError, SLOW_LANE_FN } from './types.js';

export interface SlowLaneConfig {
  /** Undefined: defaultSlowThreads. */
  threads?: number;
  queueMax: number;
  deadlineMs: number;
}

export const DEFAULT_SLOW_LANE: SlowLaneConfig = { queueMax: 64, deadlineMs: 60_000 };

/**
 * A local software token generates keys on this machine's cores, which the data plane needs
 * too: half of them (at least one). Measured on 2 cores with 4 RSA-4096 CreateKey loops beside
 * Encrypt at 8 clients: with 2 slow threads Encrypt's p99 was 3.1-4.4x its p99 alone, with 1
 * thread 1.1x. A network HSM generates on the appliance, and the threads only wait: 2.
 */
export function defaultSlowThreads(localSoftware: boolean): number {
  return localSoftware ? Math.max(1, Math.floor(availableParallelism() / 2)) : 2;
}

/** Runs one call on the thread the caller was admitted to; throws HsmError on failure. */
export type SlowCall = (call: WorkerCall, what: string) => Promise<WorkerAnswer>;

export class SlowLane {
  private readonly workers: CallWorkers;
  private running = 0;
  private readonly waiting: Array<{ admit: () => void; refuse: (err: Error) => void }> = [];
  private closed = false;

  private readonly threads: number;

  constructor(
    modulePath: string,
    private readonly config: SlowLaneConfig,
    localSoftware: boolean,
    private readonly label: string,
  ) {
    this.threads = config.threads ?? defaultSlowThreads(localSoftware);
    this.workers = new CallWorkers(modulePath, this.threads);
  }

  /**
   * Runs `work` once a slow-lane thread is free. `work` takes its session(s) itself and makes
   * its token calls through the SlowCall it is given (one at a time).
   */
  async run<T>(work: (call: SlowCall) => Promise<T>): Promise<T> {
    if (this.closed) throw closedError();
    if (this.running < this.threads) {
      this.running++;
    } else {
      if (this.waiting.length >= this.config.queueMax) {
        throw new HsmError('busy', 'CKR_FUNCTION_FAILED', SLOW_LANE_FN, `${this.running} slow token calls are running and ${this.waiting.length} are queued`);
      }
      // Admitted by the call that finishes (it hands its place over, running stays the same).
      await new Promise<void>((admit, refuse) => this.waiting.push({ admit, refuse }));
    }
    try {
      return await work((call, what) => this.call(call, what));
    } finally {
      const next = this.waiting.shift();
      if (next) next.admit();
      else this.running--;
    }
  }

  private async call(call: WorkerCall, what: string): Promise<WorkerAnswer> {
    const answer = await this.workers.run(call, this.config.deadlineMs);
    if (answer.error?.fn === 'worker') answer.error.message = `${what} did not answer within ${this.config.deadlineMs} ms`;
    return answerOrThrow(answer, what, this.label);
  }

  /** Runs one call on a lane thread outside the admission queue (recovery's probe in sync mode,
   *  which must not wait on the event loop for a token that may hang again). */
  async probe(call: WorkerCall, deadlineMs: number): Promise<WorkerAnswer> {
    return this.workers.run(call, deadlineMs);
  }

  /** Slow calls running (never more than threads) and waiting (metrics). */
  stats(): { threads: number; running: number; queued: number } {
    return { threads: this.threads, running: this.running, queued: this.waiting.length };
  }

  /** See CallWorkers.idle: no call running, abandoned ones included. */
  idle(boundMs?: number): Promise<void> {
    return this.workers.idle(boundMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const { refuse } of this.waiting.splice(0)) refuse(closedError());
    await this.workers.close();
  }
}

function closedError(): HsmError {
  return new HsmError('unavailable', 'CKR_CRYPTOKI_NOT_INITIALIZED', 'slow lane', 'the HSM connection is closed');
}
