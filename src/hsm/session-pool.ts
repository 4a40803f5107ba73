/**
 * PKCS#11 sessions with exclusive checkout. A session runs one operation at a time: Init + op is
 * one unit, and two async calls in flight on one session crash SoftHSM2 (SIGSEGV). A session that
 * saw an error is closed and replaced only when the error may have left it unusable (errors.ts
 * spoilsSession: the session is gone, an operation may still be active, or the call timed out);
 * an error that ends its operation cleanly (a failed C_Decrypt, say) leaves the session in the
 * pool. After the token was lost, reset() retires every session of the old token generation.
 * A call past its deadline is answered with DependencyTimeout at once, while its session stays
 * checked out until the token answers and is then closed.
 *
 * Closing a pooled session never logs the application out because the token wrapper keeps a
 * separate control session open for the lifetime of the module (PKCS#11 logs out when the last
 * session of the application closes).
 */
import type * as P11 from 'pkcs11js';
import { spoilsSession, toHsmError } from './errors.js';
import { HsmError } from './types.js';

type Session = P11.Handle;

export const NO_IDLE_SESSION: unique symbol = Symbol('no idle session');

interface Waiter {
  resolve(session: Session): void;
  reject(err: Error): void;
}

export class SessionPool {
  /** Free sessions; used LIFO so the hottest session stays warm. */
  private readonly idle: Session[] = [];
  /** Callers waiting for a session, served FIFO. */
  private readonly waiters: Waiter[] = [];
  /** Sessions currently open, idle or checked out. */
  private openCount = 0;
  private checkedOut = 0;
  private closed = false;
  private drained: (() => void) | undefined;
  /** Bumped by reset(); a session of an older generation is closed when it comes back. */
  private generation = 0;
  private readonly generationOf = new WeakMap<Session, number>();

  constructor(
    /** Opens one ready-to-use (logged-in) session; throws HsmError. Async for network HSMs,
     *  where even C_OpenSession must not wait on the event loop. */
    private readonly openSession: () => Session | Promise<Session>,
    private readonly closeSession: (session: Session) => void,
    readonly maxSessions: number,
    /** Callers that may queue for a session; the next one fails at once instead of waiting. */
    private readonly maxWaiting = Number.POSITIVE_INFINITY,
    /** Sees every error a session's work threw (the token guard watches for lost tokens). */
    private readonly observe: (err: unknown) => void = () => {},
  ) {
    if (!Number.isInteger(maxSessions) || maxSessions < 1) throw new RangeError('session pool size must be a positive integer');
  }

  /**
   * Runs `fn` with a session of its own. The session goes back to the pool when `fn` settles
   * (closed and replaced when the error spoils it); an error is passed on unchanged. With
   * `deadlineMs`, an answer later than that rejects with HsmError kind 'timeout'.
   */
  async withSession<T>(fn: (session: Session) => T | Promise<T>, deadlineMs?: number, what = 'token call'): Promise<T> {
    const session = this.takeIdle() ?? (await this.acquireSlow());
    let result: T;
    try {
      const pending = fn(session);
      result = deadlineMs === undefined || !(pending instanceof Promise) ? await pending : await this.withinDeadline(session, pending, deadlineMs, what);
    } catch (err) {
      this.settleAfterError(session, err);
      throw err;
    }
    this.release(session);
    return result;
  }

  /** Retires every session: idle ones now, checked-out ones when they come back. */
  reset(): void {
    this.generation++;
    for (const session of this.idle.splice(0)) this.closeQuietly(session);
    // Calls past their deadline may never come back from a lost token: their sessions no longer
    // count against the pool (the token closed them, or recovery does).
    for (const session of this.late) {
      this.openCount--;
      this.checkedOut--;
    }
    this.late.clear();
  }

  private withinDeadline<T>(session: Session, pending: Promise<T>, deadlineMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The session stays checked out until the token answers, then it is closed.
        this.late.add(session);
        pending.then(
          () => this.discardLate(session),
          () => this.discardLate(session),
        );
        reject(new HsmError('timeout', 'CKR_FUNCTION_FAILED', what, `${what} did not answer within ${deadlineMs} ms`));
      }, deadlineMs);
      pending.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  /** Sessions whose caller gave up at the deadline; they return through discardLate only. */
  private readonly late = new Set<Session>();

  private discardLate(session: Session): void {
    if (this.late.delete(session)) this.discard(session);
  }

  private settleAfterError(session: Session, err: unknown): void {
    this.observe(err);
    if (this.late.has(session)) return;
    if (spoilsSession(err)) this.discard(session);
    else this.release(session);
  }

  /**
   * The synchronous fast path: runs `fn` right now on an idle session, with the same
   * release/discard rules as withSession, and returns NO_IDLE_SESSION (without calling `fn`)
   * when every session is busy. Saves the promise hops of withSession for sync token calls.
   */
  runIfIdle<T>(fn: (session: Session) => T): T | typeof NO_IDLE_SESSION {
    const session = this.takeIdle();
    if (session === undefined) return NO_IDLE_SESSION;
    let result: T;
    try {
      result = fn(session);
    } catch (err) {
      this.settleAfterError(session, err);
      throw err;
    }
    this.release(session);
    return result;
  }

  /** Sessions open right now (for tests and diagnostics). */
  get size(): number {
    return this.openCount;
  }

  /** Sessions checked out right now, and callers waiting for one (metrics). */
  get busy(): number {
    return this.checkedOut;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Rejects waiters, waits for checked-out sessions to come back, then closes every session. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closedError = poolClosedError();
    for (const waiter of this.waiters.splice(0)) waiter.reject(closedError);
    if (this.checkedOut > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    for (const session of this.idle.splice(0)) this.closeQuietly(session);
  }

  private takeIdle(): Session | undefined {
    const session = this.idle.pop();
    if (session !== undefined) this.checkedOut++;
    return session;
  }

  private acquireSlow(): Promise<Session> | Session {
    if (this.closed) throw poolClosedError();
    if (this.openCount < this.maxSessions) return this.openCounted();
    if (this.waiters.length >= this.maxWaiting) throw poolBusyError(this.waiters.length);
    return new Promise<Session>((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Opens a session that is checked out to the caller. */
  private openCounted(): Session | Promise<Session> {
    this.openCount++;
    this.checkedOut++;
    const generation = this.generation;
    const opened = (session: Session) => {
      this.generationOf.set(session, generation);
      return session;
    };
    const failed = (err: unknown): never => {
      this.openCount--;
      this.checkedOut--;
      throw err;
    };
    let pending: Session | Promise<Session>;
    try {
      pending = this.openSession();
    } catch (err) {
      return failed(err);
    }
    return pending instanceof Promise ? pending.then(opened, failed) : opened(pending);
  }

  private release(session: Session): void {
    if (this.generationOf.get(session) !== this.generation) {
      this.discard(session);
      return;
    }
    if (this.closed) {
      this.checkedOut--;
      this.closeQuietly(session);
      this.checkDrained();
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.resolve(session); // handed straight over: stays checked out
    } else {
      this.checkedOut--;
      this.idle.push(session);
    }
  }

  private discard(session: Session): void {
    this.checkedOut--;
    this.closeQuietly(session);
    if (this.closed) {
      this.checkDrained();
      return;
    }
    // The slot freed by the broken session goes to the next waiter, if any, as a fresh session.
    while (this.waiters.length > 0 && this.openCount < this.maxSessions) {
      const waiter = this.waiters.shift()!;
      try {
        const pending = this.openCounted();
        if (pending instanceof Promise) pending.then(waiter.resolve, (err: unknown) => waiter.reject(toHsmError(err, 'C_OpenSession')));
        else waiter.resolve(pending);
      } catch (err) {
        waiter.reject(toHsmError(err, 'C_OpenSession'));
      }
    }
  }

  private closeQuietly(session: Session): void {
    this.openCount--;
    try {
      this.closeSession(session);
    } catch {
      // The session may already be gone (token removed, handle invalid); nothing left to free.
    }
  }

  private checkDrained(): void {
    if (this.checkedOut === 0 && this.drained) {
      this.drained();
      this.drained = undefined;
    }
  }
}

function poolBusyError(queued: number): HsmError {
  return new HsmError('busy', 'CKR_SESSION_COUNT', 'withSession', `every PKCS#11 session is busy and ${queued} callers are queued`);
}

function poolClosedError(): HsmError {
  return new HsmError('unavailable', 'CKR_CRYPTOKI_NOT_INITIALIZED', 'withSession', 'the HSM connection is closed');
}
