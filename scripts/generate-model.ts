/**
 * Derives `src/http/kms-model.json` from the official botocore KMS model
 * (`botocore/data/kms/2014-11-01/service-2.json`, checked in as `scripts/model/service-2.json`).
 *
 * The derived copy keeps only what request validation and response serialisation need:
 * operations (input/output shape names, error names) and shapes (type, members and their target
 * shape, required, min/max, pattern, enum, sensitive, exception flags). Documentation is dropped.
 *
 * Regenerate from the repo root, then commit the JSON:
 *
 *   npx tsc -p tsconfig.json && node dist/scripts/generate-model.js [service-2.json] [output.json]
 *
 * The source defaults to `scripts/model/service-2.json` and the output to
 * `src/http/kms-model.json`, both relative to the repo root. test/model.test.ts checks that the
 * committed JSON is exactly what this script produces.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { KmsModel, ModelOperation, ModelShape } from '../src/http/model.js';

/** Where the source file lives upstream; recorded in the output for provenance. */
const UPSTREAM_PATH = 'boto/botocore: botocore/data/kms/2014-11-01/service-2.json';

/** The parts of a botocore shape that we read (documentation and the like are ignored). */
interface BotocoreShape {
  type: ModelShape['type'];
  members?: Record<string, { shape: string }>;
  member?: { shape: string };
  key?: { shape: string };
  value?: { shape: string };
  required?: string[];
  min?: number;
  max?: number;
  pattern?: string;
  enum?: string[];
  sensitive?: boolean;
  exception?: boolean;
  fault?: boolean;
}

interface BotocoreModel {
  metadata: { apiVersion: string; targetPrefix: string; jsonVersion: string };
  operations: Record<
    string,
    { input?: { shape: string }; output?: { shape: string }; errors?: { shape: string }[] }
  >;
  shapes: Record<string, BotocoreShape>;
}

const SHAPE_TYPES = new Set(['structure', 'list', 'map', 'string', 'blob', 'boolean', 'integer', 'long', 'timestamp']);

/** The repo root: the nearest directory above this file (scripts/ or dist/scripts/) with a package.json. */
export function findRepoRoot(start = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

export function defaultSourcePath(repoRoot = findRepoRoot()): string {
  return resolve(repoRoot, 'scripts/model/service-2.json');
}

export function defaultOutputPath(repoRoot = findRepoRoot()): string {
  return resolve(repoRoot, 'src/http/kms-model.json');
}

function trimShape(name: string, shape: BotocoreShape): ModelShape {
  if (!SHAPE_TYPES.has(shape.type)) throw new Error(`shape ${name}: unsupported type ${shape.type}`);
  // Fixed key order so that the output is stable and diffs stay small.
  const trimmed: ModelShape = { type: shape.type };
  if (shape.required?.length) trimmed.required = [...shape.required];
  if (shape.members) {
    trimmed.members = {};
    for (const [memberName, member] of Object.entries(shape.members)) trimmed.members[memberName] = member.shape;
  }
  if (shape.member) trimmed.member = shape.member.shape;
  if (shape.key) trimmed.key = shape.key.shape;
  if (shape.value) trimmed.value = shape.value.shape;
  if (shape.min !== undefined) trimmed.min = shape.min;
  if (shape.max !== undefined) trimmed.max = shape.max;
  if (shape.pattern !== undefined) trimmed.pattern = shape.pattern;
  if (shape.enum) trimmed.enum = [...shape.enum];
  if (shape.sensitive) trimmed.sensitive = true;
  if (shape.exception) trimmed.exception = true;
  if (shape.fault) trimmed.fault = true;
  return trimmed;
}

/** Builds the trimmed model. Throws if an operation or member points at a shape that is missing. */
export function trimModel(source: BotocoreModel, sourceSha256: string): KmsModel {
  const shapes: Record<string, ModelShape> = {};
  for (const name of Object.keys(source.shapes).sort()) shapes[name] = trimShape(name, source.shapes[name]!);

  const assertShape = (name: string, where: string) => {
    if (!shapes[name]) throw new Error(`${where} refers to unknown shape ${name}`);
  };
  for (const [name, shape] of Object.entries(shapes)) {
    for (const target of Object.values(shape.members ?? {})) assertShape(target, `shape ${name}`);
    for (const target of [shape.member, shape.key, shape.value]) if (target) assertShape(target, `shape ${name}`);
  }

  const operations: Record<string, ModelOperation> = {};
  for (const name of Object.keys(source.operations).sort()) {
    const operation = source.operations[name]!;
    if (!operation.input) throw new Error(`operation ${name} has no input shape`);
    const trimmed: ModelOperation = {
      input: operation.input.shape,
      ...(operation.output && { output: operation.output.shape }),
      errors: (operation.errors ?? []).map((error) => error.shape),
    };
    for (const target of [trimmed.input, trimmed.output, ...trimmed.errors]) {
      if (target) assertShape(target, `operation ${name}`);
    }
    operations[name] = trimmed;
  }

  const { apiVersion, targetPrefix, jsonVersion } = source.metadata;
  return {
    source: { file: UPSTREAM_PATH, sha256: sourceSha256 },
    metadata: { apiVersion, targetPrefix, jsonVersion },
    operations,
    shapes,
  };
}

/** The exact text of `kms-model.json` for a given `service-2.json` content. */
export function generateModelJson(sourceText: string): string {
  const sha256 = createHash('sha256').update(sourceText).digest('hex');
  const model = trimModel(JSON.parse(sourceText) as BotocoreModel, sha256);
  return `${JSON.stringify(model, null, 2)}\n`;
}

function main(argv: string[]): void {
  const sourcePath = resolve(argv[0] ?? defaultSourcePath());
  const outputPath = resolve(argv[1] ?? defaultOutputPath());
  if (!existsSync(sourcePath)) {
    console.error(`generate-model: ${sourcePath} not found (pass the path to service-2.json as the first argument)`);
    process.exit(1);
  }
  const json = generateModelJson(readFileSync(sourcePath, 'utf8'));
  writeFileSync(outputPath, json);
  const model = JSON.parse(json) as KmsModel;
  console.log(
    `wrote ${outputPath}: ${Object.keys(model.operations).length} operations, ${Object.keys(model.shapes).length} shapes`,
  );
}

// Run only when executed directly, so tests can import the functions above.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2));
}
