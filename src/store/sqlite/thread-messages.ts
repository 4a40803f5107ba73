/**
 * What the event loop and the SQLite store thread (store-thread.ts, store-thread-entry.ts) say to
 * each other. Arguments and results cross by structured clone (Dates stay Dates); errors cross as
 * their class name and message, and are rebuilt as the classes callers test for.
 */
import { SchemaTooNewError } from '../schema-version.js';
import { StoreConflictError, StoreUnavailableError } from '../types.js';

export interface StoreThreadData {
  file: string;
  /** How long a call may wait, from when it was sent, for the queue and another process's write lock. */
  writeWaitMs: number;
}

/** A store method by its path from the store (['createKey'], ['lifecycle', 'claimKey']). */
export interface CallMessage {
  type: 'call';
  id: number;
  path: string[];
  args: unknown[];
  /** Epoch ms after which the call is not started (and its lock wait ends). */
  deadline: number;
}

export type ToThread = CallMessage | { type: 'close' };

export type FromThread =
  | { type: 'ready' }
  | { type: 'open-failed'; error: CarriedError }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'failed'; id: number; error: CarriedError }
  | { type: 'closed' };

export interface CarriedError {
  kind: 'conflict' | 'unavailable' | 'schema-too-new' | 'range' | 'type' | 'other';
  message: string;
  /** SQLite's extended result code, when SQLite raised it. */
  code?: string;
}

export function carryError(err: unknown): CarriedError {
  if (!(err instanceof Error)) return { kind: 'other', message: String(err) };
  const { code } = err as { code?: unknown };
  const kind: CarriedError['kind'] =
    err instanceof StoreConflictError ? 'conflict'
    : err instanceof StoreUnavailableError ? 'unavailable'
    : err instanceof SchemaTooNewError ? 'schema-too-new'
    : err instanceof RangeError ? 'range'
    : err instanceof TypeError ? 'type'
    : 'other';
  return { kind, message: err.message, ...(typeof code === 'string' ? { code } : {}) };
}

export function rebuildError(carried: CarriedError): Error {
  const Class = {
    conflict: StoreConflictError,
    unavailable: StoreUnavailableError,
    'schema-too-new': SchemaTooNewError,
    range: RangeError,
    type: TypeError,
    other: Error,
  }[carried.kind];
  const err = new Class(carried.message);
  if (carried.code !== undefined) Object.assign(err, { code: carried.code });
  return err;
}

/** SQLite gave up waiting for a lock another connection holds (SQLITE_BUSY and its extended codes). */
export function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}
