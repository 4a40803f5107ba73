/**
 * The one place where PKCS#11 calls are measured: every `C_*` function (sync and `*Async`) of a
 * loaded pkcs11js module is wrapped once, right after load, so call latency and failures per
 * function reach the metrics without touching any call site. The wrapper costs two
 * performance.now() calls and one observer call (the metrics side keeps precomputed label
 * children), far below the microseconds a token call takes.
 *
 * Calls made on our worker threads (call-workers.ts) are timed there and reach the same observer
 * through reportPkcs11Calls.
 *
 * The observer is process-wide: a process has one initialised module (PKCS#11 allows one
 * C_Initialize per process), and the service that owns it installs its metrics as observer.
 */
import { performance } from 'node:perf_hooks';
import type * as P11 from 'pkcs11js';
import { parseCkr } from './errors.js';

export interface Pkcs11Observer {
  /** A call of `fn` (the PKCS#11 name, `Async` stripped) finished after `seconds`, ok or not. */
  call(fn: string, seconds: number): void;
  /** A call of `fn` failed with `ckr` (CKR_* name, or 'error' for non-PKCS#11 failures). */
  error(fn: string, ckr: string): void;
}

let observer: Pkcs11Observer | undefined;

/** Installs (or with undefined removes) the process-wide observer. */
export function setPkcs11Observer(o: Pkcs11Observer | undefined): void {
  observer = o;
}

/** A call timed on a worker thread: function, seconds, and the error message when it failed. */
export type TimedCall = [fn: string, seconds: number, error?: string];

/** Feeds calls a worker thread made (and timed) to the observer. */
export function reportPkcs11Calls(calls: readonly TimedCall[]): void {
  const o = observer;
  if (o === undefined) return;
  for (const [fn, seconds, error] of calls) {
    o.call(fn, seconds);
    if (error !== undefined) o.error(fn, parseCkr(new Error(error))?.name ?? 'error');
  }
}

const WRAPPED = Symbol('p11kms.instrumented');

/** Wraps the `C_*` functions of `p` in place (idempotent). */
export function instrumentPkcs11(p: P11.PKCS11): void {
  const target = p as unknown as Record<string | symbol, unknown>;
  if (target[WRAPPED]) return;
  target[WRAPPED] = true;
  const names = new Set<string>();
  for (let o: object | null = p; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (name.startsWith('C_') && !name.endsWith('Callback')) names.add(name);
    }
  }
  for (const name of names) {
    const original = target[name];
    if (typeof original !== 'function') continue;
    const fn = name.endsWith('Async') ? name.slice(0, -5) : name;
    const call = original as (...args: unknown[]) => unknown;
    target[name] = function instrumented(this: unknown, ...args: unknown[]): unknown {
      const o = observer;
      if (o === undefined) return call.apply(p, args);
      const started = performance.now();
      let result: unknown;
      try {
        result = call.apply(p, args);
      } catch (err) {
        o.call(fn, (performance.now() - started) / 1000);
        o.error(fn, parseCkr(err)?.name ?? 'error');
        throw err;
      }
      if (result instanceof Promise) {
        return result.then(
          (value: unknown) => {
            o.call(fn, (performance.now() - started) / 1000);
            return value;
          },
          (err: unknown) => {
            o.call(fn, (performance.now() - started) / 1000);
            o.error(fn, parseCkr(err)?.name ?? 'error');
            throw err;
          },
        );
      }
      o.call(fn, (performance.now() - started) / 1000);
      return result;
    };
  }
}
