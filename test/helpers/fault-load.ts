/**
 * Load through the AWS SDK while a fault is injected: concurrent Encrypt loops (every fourth
 * request a Decrypt of an acknowledged ciphertext), each outcome recorded with its time, every
 * acknowledged ciphertext kept so that the test can decrypt them all afterwards.
 */
import { randomBytes } from 'node:crypto';
import { DecryptCommand, EncryptCommand, type KMSClient } from '@aws-sdk/client-kms';

export interface Outcome {
  at: number;
  ok: boolean;
  op: 'Encrypt' | 'Decrypt';
  error?: string;
  status?: number;
}

export interface Acknowledged {
  plaintext: Buffer;
  ciphertext: Uint8Array;
}

export class FaultLoad {
  readonly outcomes: Outcome[] = [];
  readonly acknowledged: Acknowledged[] = [];
  /** Decrypts that answered with different bytes than were encrypted (must stay 0). */
  wrongResults = 0;
  private running = true;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly client: KMSClient,
    private readonly keyId: string,
    concurrency = 4,
  ) {
    for (let i = 0; i < concurrency; i++) this.loops.push(this.loop(i));
  }

  private async loop(index: number): Promise<void> {
    for (let n = index; this.running; n++) {
      const decrypt = n % 4 === 3 && this.acknowledged.length > 0;
      const started = Date.now();
      try {
        if (decrypt) {
          const known = this.acknowledged[Math.floor(Math.random() * this.acknowledged.length)]!;
          const out = await this.client.send(new DecryptCommand({ CiphertextBlob: known.ciphertext }));
          if (!Buffer.from(out.Plaintext!).equals(known.plaintext)) this.wrongResults++;
        } else {
          const plaintext = randomBytes(24);
          const out = await this.client.send(new EncryptCommand({ KeyId: this.keyId, Plaintext: plaintext }));
          this.acknowledged.push({ plaintext, ciphertext: out.CiphertextBlob! });
        }
        this.outcomes.push({ at: started, ok: true, op: decrypt ? 'Decrypt' : 'Encrypt' });
      } catch (e) {
        const err = e as { name: string; $metadata?: { httpStatusCode?: number } };
        this.outcomes.push({ at: started, ok: false, op: decrypt ? 'Decrypt' : 'Encrypt', error: err.name, status: err.$metadata?.httpStatusCode });
        await new Promise((r) => setTimeout(r, 5)); // a client backs off a little
      }
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Outcomes of requests started in [from, to). */
  between(from: number, to: number): Outcome[] {
    return this.outcomes.filter((o) => o.at >= from && o.at < to);
  }

  /** Start time of the first successful request started at or after `from`. */
  firstSuccessAfter(from: number): number | undefined {
    return this.outcomes.filter((o) => o.ok && o.at >= from).reduce<number | undefined>((min, o) => (min === undefined || o.at < min ? o.at : min), undefined);
  }
}

export const successRate = (outcomes: Outcome[]) => (outcomes.length === 0 ? NaN : outcomes.filter((o) => o.ok).length / outcomes.length);

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
