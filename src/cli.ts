#!/usr/bin/env node
/**
 * The `p11kms` command (package.json "bin"). Each subcommand lives in its own module under
 * src/cli/ and is loaded only when called.
 */
type Command = { summary: string; load: () => Promise<{ run(args: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  serve: { summary: 'run the service in the foreground (what `npm start` runs)', load: () => import('./cli/serve.js') },
  doctor: { summary: 'check (and --repair) token objects against the metadata database', load: () => import('./cli/doctor.js') },
  audit: { summary: 'verify the audit trail (`audit verify`) or search it (`audit query`)', load: () => import('./cli/audit.js') },
  seed: { summary: 'dry run of a seed file: what it would change (`seed --check FILE`)', load: () => import('./cli/seed.js') },
  usage: { summary: 'requests per key and operation for a month, with an AWS price estimate (`usage --month 2026-11`)', load: () => import('./cli/usage.js') },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  const command = name === undefined ? undefined : commands[name];
  if (!command) {
    const width = Math.max(...Object.keys(commands).map((c) => c.length));
    const list = Object.entries(commands).map(([c, { summary }]) => `  ${c.padEnd(width)}  ${summary}`);
    (name === undefined || name === 'help' || name === '--help' ? console.log : console.error)(`usage: p11kms <command> [options]\n\ncommands:\n${list.join('\n')}`);
    return name === undefined || name === 'help' || name === '--help' ? 0 : 2;
  }
  return (await command.load()).run(args);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0 || process.argv[2] !== 'serve') process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`p11kms: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
