/** The machine the figures come from, printed above the tables. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  softhsm: string;
  wrk: string;
  kernel: string;
  loadAverage: number[];
}

function command(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

export function describeMachine(wrkVersion: string): Machine {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // not Linux
  }
  return {
    cpus: os.availableParallelism(),
    cpuModel,
    memoryGiB: os.totalmem() / 1024 ** 3,
    node: process.version,
    softhsm: command('softhsm2-util', ['--version']),
    wrk: wrkVersion,
    kernel: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg(),
  };
}

export function machineMarkdown(m: Machine): string {
  return [
    `- CPU: ${m.cpus} × ${m.cpuModel}`,
    `- memory: ${m.memoryGiB.toFixed(1)} GiB; ${m.kernel}`,
    `- Node ${m.node}, SoftHSM ${m.softhsm}, wrk ${m.wrk}`,
    `- load average at start: ${m.loadAverage.map((l) => l.toFixed(2)).join(' / ')}`,
  ].join('\n');
}
