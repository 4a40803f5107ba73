/**
 * Starts a worker thread on a module of this package, whether the caller runs compiled (dist/:
 * the worker loads the .js file next to it) or from its TypeScript sources (vitest). From sources,
 * the worker first registers module hooks that strip the types from each .ts file it loads, so it
 * runs the very code its caller was loaded from, never a stale build. The type stripping uses the
 * transformer the test tool chain brings (rolldown, with vite), which is only there in development.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** `entry` is the module's URL as the caller sees it (its .ts or .js file). */
export function startWorkerModule(entry: URL, options: WorkerOptions): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const transformer = pathToFileURL(createRequire(import.meta.url).resolve('rolldown/utils')).href;
  const workerData = { ...(options.workerData as object), [SOURCE_ENTRY]: { entry: entry.href, hooks: HOOKS_URL, transformer } };
  return new Worker(BOOTSTRAP, { ...options, eval: true, workerData });
}

const SOURCE_ENTRY = 'p11kmsSourceEntry';

// Runs as the worker's first script (CommonJS): hooks first, then the entry module.
const BOOTSTRAP = `
const { register } = require('node:module');
const { entry, hooks, transformer } = require('node:worker_threads').workerData.${SOURCE_ENTRY};
register(hooks, { data: { transformer } });
import(entry).catch((err) => { setImmediate(() => { throw err; }); });
`;

// Module hooks (they run on Node's loader thread): TypeScript sources import each other as
// './x.js', so a missing .js imported from a .ts file is looked for as .ts.
const HOOKS = `
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
let transformSync;
export async function initialize({ transformer }) {
  ({ transformSync } = await import(transformer));
}
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !specifier.endsWith('.js') || !context.parentURL?.endsWith('.ts')) throw err;
    return next(specifier.slice(0, -3) + '.ts', context);
  }
}
export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const file = fileURLToPath(url);
  const { code, errors } = transformSync(file, await readFile(file, 'utf8'), { lang: 'ts', sourcemap: false });
  if (errors.length > 0) throw new Error(file + ': ' + errors.map((e) => e.message).join('; '));
  return { format: 'module', source: code, shortCircuit: true };
}
`;
const HOOKS_URL = `data:text/javascript,${encodeURIComponent(HOOKS)}`;
