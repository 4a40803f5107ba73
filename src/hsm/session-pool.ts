/**
 * PKCS#11 sessions with exclusive checkout. A session runs one operation at a time: Init + op is
 * one unit, and two async calls in flight on one session crash SoftHSM2 (SIGSEGV). A session that
 * saw any error is closed and replaced, never reused: a failed call can leave the operation active
 * (then every later *Init fails with CKR_OPERATION_ACTIVE) or the session handle may be dead.
 *
 * Closing a pooled session never logs the application out because the token wrapper keeps a
 * separate control session open for the lifetime of the module (PKCS#11 logs out when the last
 * session of the application closes).
 */
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
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

  constructor(
    /** Opens one ready-to-use (logged-in) session; throws HsmError. */
    private readonly openSession: () => Session,
    private readonly closeSession: (session: Session) => void,
    readonly maxSessions: number,
    /** Callers that may queue for a session; the next one fails at once instead of waiting. */
    private readonly maxWaiting = Number.POSITIVE_INFINITY,
  ) {
    if (!Number.isInteger(maxSessions) || maxSessions < 1) throw new RangeError('session pool size must be a positive integer');
  }

  /**
   * Runs `fn` with a session of its own. The session goes back to the pool when `fn` settles
   * normally and is closed and replaced when `fn` throws; the error is passed on unchanged.
   */
  async withSession<T>(fn: (session: Session) => T | Promise<T>): Promise<T> {
    const session = this.takeIdle() ?? (await this.acquireSlow());
    let result: T;
    try {
      result = await fn(session);
    } catch (err) {
      this.discard(session);
      throw err;
    }
    this.release(session);
    return result;
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
      this.discard(session);
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
  private openCounted(): Session {
    const session = this.openSession();
    this.openCount++;
    this.checkedOut++;
    return session;
  }

  private release(session: Session): void {
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
        waiter.resolve(this.openCounted());
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
