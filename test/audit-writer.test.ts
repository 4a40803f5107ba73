/**
 * The audit trail's durable write runs on a thread of its own: an append is answered while every
 * thread of node's shared libuv pool is held by other work (here: opens of FIFOs that no writer
 * has opened yet, which block their pool threads until one does).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openAuditTrail } from '../src/audit/trail.js';
import { threadRecordWriter } from '../src/audit/writer-thread.js';
import { AUDIT_DIR } from '../src/audit/format.js';
import { tempDir } from './helpers/service.js';

const quietLog = { info() {}, warn() {}, error() {} };

/** Holds `threads` libuv pool threads until release() (each blocks in open(2) of a FIFO). */
function holdThreadPool(dir: string, threads: number): { held: Promise<void>[]; release(): void } {
  const fifos = Array.from({ length: threads }, (_, i) => path.join(dir, `hold-${i}.fifo`));
  for (const fifo of fifos) execFileSync('mkfifo', [fifo]);
  const held = fifos.map((fifo) => fs.promises.open(fifo, 'r').then((h) => h.close()));
  return {
    held,
    // Opening the write end (O_RDWR never blocks on a FIFO) lets each blocked open return.
    release: () => {
      for (const fifo of fifos) fs.closeSync(fs.openSync(fifo, fs.constants.O_RDWR));
    },
  };
}

describe('audit writer thread', () => {
  it('answers an append while every libuv pool thread is busy, and the record is in the file', async () => {
    const dataDir = tempDir('p11kms-audit-writer-');
    const trail = await openAuditTrail({
      dataDir,
      account: { partition: 'aws', region: 'us-east-1', accountId: '111122223333' },
      now: () => new Date(),
      fileMaxBytes: 64 * 1024 * 1024,
      digestIntervalSeconds: 3600,
      signingKey: undefined,
      log: quietLog,
    });
    const pool = holdThreadPool(dataDir, Number(process.env.UV_THREADPOOL_SIZE ?? 4));
    const settled: string[] = [];
    const poolDone = Promise.all(pool.held).then(() => settled.push('pool'));
    try {
      // Let the opens reach the pool before the append.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const appended = trail.recordServiceEvent({ eventName: 'RotateKey', keyArns: ['arn:aws:kms:us-east-1:111122223333:key/writer-test'] }).then(() => settled.push('append'));
      // On the shared pool the append would wait here for as long as the pool is held (forever):
      // the bound only turns that hang into a failure that says so.
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([
        appended,
        new Promise((_, reject) => (bound = setTimeout(() => reject(new Error('the append waited for the busy libuv pool')), 20_000))),
      ]).finally(() => clearTimeout(bound));
      expect(settled).toEqual(['append']);
    } finally {
      pool.release();
      await poolDone;
    }
    expect(settled).toEqual(['append', 'pool']);
    await trail.close();
    const dir = path.join(dataDir, AUDIT_DIR);
    const text = fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl')).map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('');
    expect(text).toContain('writer-test');
  });

  it('writes batches in call order, also one larger than its shared buffer, and reports a failed write with its errno code', async () => {
    const dir = tempDir('p11kms-audit-writer-');
    const file = path.join(dir, 'records.jsonl');
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_DSYNC);
    const writer = threadRecordWriter();
    try {
      const batches = [Buffer.from('first\n'), Buffer.alloc(700 * 1024, 'b'), Buffer.from('\nlast\n')];
      // Called without waiting: the writer itself keeps them in order.
      await Promise.all(batches.map((b) => writer.write(fd, b)));
      expect(fs.readFileSync(file).equals(Buffer.concat(batches))).toBe(true);
      const readOnly = fs.openSync(file, 'r');
      try {
        await expect(writer.write(readOnly, Buffer.from('x'))).rejects.toMatchObject({ code: 'EBADF' });
      } finally {
        fs.closeSync(readOnly);
      }
      await writer.write(fd, Buffer.from('after the failure\n'));
      expect(fs.readFileSync(file, 'utf8').endsWith('\nlast\nafter the failure\n')).toBe(true);
    } finally {
      await writer.close();
      fs.closeSync(fd);
    }
  });
});

