/**
 * Structured JSON logs (pino). Request payloads are never passed to the logger; the redaction
 * list is a second line of defence for fields that must never appear.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'p11kms' },
      redact: {
        paths: ['*.Plaintext', '*.plaintext', '*.secretAccessKey', '*.pin', '*.PIN', 'headers.authorization', '*.authorization'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
