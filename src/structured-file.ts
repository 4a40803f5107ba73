/**
 * Operator-written files (seed, quotas, peers): JSON, or YAML when named *.yaml/*.yml. Read and
 * parse errors pass unchanged, so that each caller names its own setting in the message.
 */
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';

export function readStructuredFile(file: string): unknown {
  const text = fs.readFileSync(file, 'utf8');
  return /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
}
