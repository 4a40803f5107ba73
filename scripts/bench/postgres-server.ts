/**
 * A real PostgreSQL server for a test file or the bench, started by it: Debian's `postgresql`
 * package (installed with apt-get when missing and we are root), a fresh cluster in a temporary
 * directory, listening on a free loopback port with password (SCRAM) authentication. PostgreSQL
 * refuses to run as root, so as root the server runs as the `postgres` user the package creates.
 *
 *   const pg = await startPostgres();
 *   const url = await pg.createDatabase();   // postgresql://p11kms:…@127.0.0.1:<port>/<fresh db>
 *   await pg.stop();
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './free-port.js';

export interface PostgresServer {
  port: number;
  /** URL of the `postgres` maintenance database (for CREATE DATABASE and looking behind the store). */
  adminUrl: string;
  /** Creates an empty database and returns its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server as a crash would (`-m immediate`), or cleanly (`fast`). */
  stopServer(mode?: 'immediate' | 'fast'): void;
  startServer(): void;
  /** Suspends the server's processes (SIGSTOP): connections stay open and nothing answers, as
   *  across a network partition. */
  freeze(): void;
  /** Resumes a frozen server (SIGCONT). */
  thaw(): void;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

const USER = 'p11kms';

export function postgresBinDir(): string {
  const found = installedBinDir();
  if (found) return found;
  if (process.getuid?.() === 0 && commandExists('apt-get')) {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
    execFileSync('apt-get', ['install', '-y', '-qq', 'postgresql'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    const installed = installedBinDir();
    if (installed) return installed;
  }
  throw new Error('PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql) and cannot be installed from here');
}

function installedBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return undefined;
  const versions = fs
    .readdirSync(root)
    .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] && path.join(root, versions[0], 'bin');
}

function commandExists(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Runs a PostgreSQL program as an unprivileged user (`postgres` when we are root). */
function runAsServerUser(program: string, args: string[]): void {
  const asRoot = process.getuid?.() === 0;
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', program, ...args]] : [program, args];
  const result = spawnSync(cmd, argv, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${path.basename(program)} failed: ${result.stderr || result.stdout}`);
}

export interface PostgresOptions {
  /** fsync and synchronous commit as in production (benchmarks, crash tests); off by default for
   *  test speed: crash durability of PostgreSQL itself is not what most tests examine. */
  durable?: boolean;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const bin = postgresBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-pg-'));
  const dataDir = path.join(dir, 'data');
  const password = randomBytes(12).toString('hex');
  const pwFile = path.join(dir, 'pw');
  fs.writeFileSync(pwFile, password, { mode: 0o600 });
  if (process.getuid?.() === 0) {
    const { uid, gid } = serverUser();
    fs.chownSync(dir, uid, gid);
    fs.chownSync(pwFile, uid, gid);
  }
  runAsServerUser(path.join(bin, 'initdb'), ['-D', dataDir, '-U', USER, '--auth=scram-sha-256', `--pwfile=${pwFile}`, '-E', 'UTF8', '--locale=C.UTF-8']);
  fs.rmSync(pwFile);
  const port = await freePort();
  const settings = [
    `-c listen_addresses=127.0.0.1`,
    `-c port=${port}`,
    `-c unix_socket_directories=${dir}`,
    '-c max_connections=200',
    '-c shared_buffers=32MB',
    ...(options.durable ? [] : ['-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off']),
  ].join(' ');
  const startServer = () => runAsServerUser(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-l', path.join(dir, 'server.log'), '-o', settings, '-w', '-t', '60', 'start']);
  const stopServer = (mode: 'immediate' | 'fast' = 'fast') => runAsServerUser(path.join(bin, 'pg_ctl'), ['-D', dataDir, '-m', mode, '-w', 'stop']);
  startServer();
  const urlOf = (db: string) => `postgresql://${USER}:${password}@127.0.0.1:${port}/${db}`;
  const adminUrl = urlOf('postgres');
  let running = true;
  return {
    port,
    adminUrl,
    async createDatabase() {
      const name = `t_${randomBytes(6).toString('hex')}`;
      const client = new pg.Client(adminUrl);
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return urlOf(name);
    },
    stopServer(mode) {
      stopServer(mode);
      running = false;
    },
    startServer() {
      startServer();
      running = true;
    },
    freeze() {
      for (const pid of serverProcesses(dataDir)) process.kill(pid, 'SIGSTOP');
    },
    thaw() {
      for (const pid of serverProcesses(dataDir)) process.kill(pid, 'SIGCONT');
    },
    async stop() {
      if (running) stopServer('immediate');
      running = false;
      if (process.env.P11KMS_KEEP_TEMP !== '1') fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The postmaster (from its pid file) and every process it started. */
function serverProcesses(dataDir: string): number[] {
  const postmaster = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so read after the last ')'.
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster;
      } catch {
        return false; // ended meanwhile
      }
    })
    .map(Number);
  return [postmaster, ...children];
}

function serverUser(): { uid: number; gid: number } {
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('no postgres user (it comes with the Debian postgresql package)');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}
