/**
 * Structured logs (pino): JSON lines, or human-readable through pino-pretty (a worker thread, off
 * the event loop) when stdout is a terminal. Request payloads are never passed to the logger; the
 * redaction list is a second line of defence for fields that must never appear.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const pretty = destination === undefined && process.stdout.isTTY === true && level !== 'silent';
  return pino(
    {
      level,
      base: { service: 'p11kms' },
      redact: {
        paths: ['*.Plaintext', '*.plaintext', '*.secretAccessKey', '*.pin', '*.PIN', 'headers.authorization', '*.authorization'],
        censor: '[redacted]',
      },
    },
    pretty ? pino.transport({ target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' } }) : destination,
  );
}

/**
 * The logger of the per-request info line. Its fields are fixed by the front door — request ID,
 * operation, principal ARN, key reference, status, error type, milliseconds — all flat strings and
 * numbers, which the redaction paths (one level down: `*.Plaintext`, `headers.authorization` …)
 * can never match; so it skips the redaction pass, which cost 6.7 of 7.8 µs per line (measured
 * in-process, pino 10). Everything else keeps going through the redacting logger.
 */
export function requestLineLogger(log: Logger): Logger {
  return log.child({}, { redact: { paths: [] } });
}

