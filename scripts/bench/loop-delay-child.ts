/**
 * Event-loop delay while slow token calls run: opens the Hsm as the service does (own SoftHSM2
 * token), samples an idle baseline, then runs N concurrent hsm.generateAesKey calls (C_GenerateKey
 * in the slow lane: threads of our own, the excess queued — here the queue holds all N, so that
 * every call is measured rather than refused) under perf_hooks.monitorEventLoopDelay.
 * Usage: node loop-delay-child.js '{"dataDir":"…","keygens":1000}' → prints `BENCH_RESULT {json}`.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { TokenConfig } from '../../src/config.js';
import { openHsm } from '../../src/hsm/pkcs11-token.js';

interface Args {
  dataDir: string;
  keygens: number;
}

const RESOLUTION_MS = 1;
const args = JSON.parse(process.argv[2]!) as Args;

function summary(h: ReturnType<typeof monitorEventLoopDelay>) {
  return { p50Ms: h.percentile(50) / 1e6, p99Ms: h.percentile(99) / 1e6, maxMs: h.max / 1e6, meanMs: h.mean / 1e6, samples: h.count };
}

async function main(): Promise<void> {
  const token: TokenConfig = { label: 'p11kms', poolSize: 8, symmetricCalls: 'sync', slowLane: { queueMax: args.keygens, deadlineMs: 600_000 } };
  const hsm = await openHsm(token, args.dataDir);

  const idle = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  idle.enable();
  await new Promise((r) => setTimeout(r, 1000));
  idle.disable();

  const busy = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  busy.enable();
  const started = performance.now();
  const settled = await Promise.allSettled(Array.from({ length: args.keygens }, (_, i) => hsm.generateAesKey({ keyId: `bench-keygen-${i}`, version: 1 })));
  const totalMs = performance.now() - started;
  busy.disable();

  // Failures are reported, not thrown: how many and why is itself a result.
  const errors = new Map<string, number>();
  for (const s of settled) {
    if (s.status === 'rejected') {
      const msg = s.reason instanceof Error ? s.reason.message : String(s.reason);
      errors.set(msg, (errors.get(msg) ?? 0) + 1);
    }
  }
  const failed = settled.filter((s) => s.status === 'rejected').length;
  const keys = (await hsm.listBackingKeys()).length;
  await hsm.close();
  process.stdout.write(
    `BENCH_RESULT ${JSON.stringify({
      keygens: args.keygens,
      poolSize: token.poolSize,
      uvThreadpoolSize: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
      resolutionMs: RESOLUTION_MS,
      totalMs,
      keysPerSec: (args.keygens - failed) / (totalMs / 1000),
      failed,
      tokenKeys: keys,
      errors: [...errors].map(([message, count]) => ({ message, count })),
      idle: summary(idle),
      busy: summary(busy),
    })}\n`,
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
