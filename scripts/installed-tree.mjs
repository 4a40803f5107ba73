// Whether node_modules is what package-lock.json asks for, judged by what npm itself records:
// npm writes node_modules/.package-lock.json (its "hidden lockfile") at the end of every install.
// Every package recorded there must match the lockfile (version, resolved, integrity), and every
// package of the lockfile must be recorded unless it is optional (another platform's binary).
// The native addons must also load under this Node (a tree built for another ABI does not).
// Run by scripts/prepare.sh before the TypeScript is compiled, so plain JavaScript.
//   node scripts/installed-tree.mjs          exit 0 current, 1 not (reason on stderr)
//   node scripts/installed-tree.mjs --native the packages that build native code (one a line)
import fs from 'node:fs';
import { createRequire } from 'node:module';

const readJson = (file) => JSON.parse(fs.readFileSync(file, 'utf8'));
const wanted = readJson('package-lock.json').packages;

if (process.argv[2] === '--native') {
  for (const [key, entry] of Object.entries(wanted)) if (entry.hasInstallScript) console.log(key.replace(/^.*node_modules\//, ''));
  process.exit(0);
}

function problem() {
  let installed;
  try {
    installed = readJson('node_modules/.package-lock.json').packages;
  } catch {
    return 'node_modules/.package-lock.json is missing (no completed npm install)';
  }
  for (const [key, entry] of Object.entries(installed)) {
    const want = wanted[key];
    if (!want) return `${key} is installed but not in package-lock.json`;
    for (const field of ['version', 'resolved', 'integrity']) {
      if (want[field] !== entry[field]) return `${key}: ${field} ${entry[field]} installed, ${want[field]} locked`;
    }
  }
  for (const [key, entry] of Object.entries(wanted)) {
    if (key !== '' && !installed[key] && !entry.optional && !entry.devOptional) return `${key} is locked but not installed`;
  }
  const require = createRequire(`${process.cwd()}/`);
  try {
    require('pkcs11js');
    new (require('better-sqlite3'))(':memory:').close();
  } catch (err) {
    return `a native addon does not load under Node ${process.version}: ${String(err.message).split('\n')[0]}`;
  }
  return undefined;
}

const why = problem();
if (why) {
  console.error(why);
  process.exit(1);
}
