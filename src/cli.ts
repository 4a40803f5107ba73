#!/usr/bin/env node
/**
 * The `p11kms` command (package.json "bin"; in the project folder `npx p11kms`). Each subcommand
 * lives in its own module under src/cli/ and is loaded only when called; its options are parsed
 * there with node:util parseArgs, and `p11kms <command> --help` prints its usage.
 */
import fs from 'node:fs';

type Command = { summary: string; usage: string; load: () => Promise<{ run(args: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  serve: {
    summary: 'run the service in the foreground (what `npm start` runs)',
    usage: 'usage: p11kms serve\n\nConfigured by the P11KMS_* environment variables (README, Configuration).',
    load: () => import('./cli/serve.js'),
  },
  doctor: {
    summary: 'check (and --repair) token objects against the metadata database',
    usage:
      'usage: p11kms doctor [--repair [--destroy-orphans] [--force]] [--json]\n\n' +
      '  --repair           fix what needs no destruction (refused while a service runs on the data dir, unless --force)\n' +
      '  --destroy-orphans  with --repair: also destroy token objects without metadata\n' +
      '  --json             the report as JSON\n\nExit code: 0 consistent, 1 divergences remain, 2 usage, configuration or token error.',
    load: () => import('./cli/doctor.js'),
  },
  audit: {
    summary: 'verify the audit trail (`audit verify`) or search it (`audit query`)',
    usage:
      'usage: p11kms audit verify [--fingerprint <hex>] [--check-token] [--json]\n' +
      '       p11kms audit query [--from <time>] [--to <time>] [--key <id|arn>] [--principal <arn|access key>] [--event <name>] [--limit <n>]',
    load: () => import('./cli/audit.js'),
  },
  seed: {
    summary: 'dry run of a seed file: what it would change (`seed --check FILE`)',
    usage: 'usage: p11kms seed --check FILE\n\nPrints what applying FILE as P11KMS_SEED_FILE would change, and what it would leave alone.',
    load: () => import('./cli/seed.js'),
  },
  sites: {
    summary: 'the trust ceremony between two sites: `sites export`, `sites trust` (multi-Region keys across deployments)',
    usage:
      'usage: p11kms sites export [--json]\n' +
      '       p11kms sites trust --region <peer Region> --public-key <file> --fingerprint <hex> [--so-pin-file <file>]\n\n' +
      '  export  print this site\'s public replication key (PEM) and its SHA-256 fingerprint (created on first use)\n' +
      '  trust   install a peer site\'s public replication key as trusted, as the token\'s security officer\n' +
      '          (SO PIN from --so-pin-file or P11KMS_SO_PIN_FILE; refused unless --fingerprint matches)',
    load: () => import('./cli/sites.js'),
  },
  usage: {
    summary: 'requests per key and operation for a month, with an AWS price estimate (`usage --month 2026-11`)',
    usage: 'usage: p11kms usage [--month YYYY-MM] [--prices] [--json]',
    load: () => import('./cli/usage.js'),
  },
};

function help(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  const list = Object.entries(commands).map(([c, { summary }]) => `  ${c.padEnd(width)}  ${summary}`);
  return [
    'usage: p11kms <command> [options]',
    '       p11kms <command> --help | p11kms --help | p11kms --version',
    '',
    'commands:',
    ...list,
    '',
    'Every command reads the service configuration from the P11KMS_* environment variables (P11KMS_DATA_DIR: ./data).',
  ].join('\n');
}

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined) {
    console.error(help());
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? args[0] : undefined;
    console.log(topic !== undefined && commands[topic] ? commands[topic].usage : help());
    return 0;
  }
  if (name === '--version' || name === '-V') {
    console.log(`p11kms ${version()}`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`p11kms: unknown command '${name}'\n\n${help()}`);
    return 2;
  }
  if (args.includes('--help') || args.includes('-h')) {
    console.log(command.usage);
    return 0;
  }
  return (await command.load()).run(args);
}

// `p11kms audit query | head`: the reader went away; stop quietly instead of dying on EPIPE.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0 || process.argv[2] !== 'serve') process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`p11kms: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
