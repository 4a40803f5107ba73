/**
 * Starts a worker thread on a module of this package, whether the caller runs compiled (dist/:
 * the worker loads the .js file next to it) or from its TypeScript sources (vitest): then the
 * module and what it imports from the sources are bundled into one plain ES module (once per
 * process), so the worker runs the very code its caller was loaded from, never a stale build.
 * The bundler is the one the test tool chain brings (rolldown, with vite), only there in development.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** `entry` is the module's URL as the caller sees it (its .ts or .js file). */
export async function startWorkerModule(entry: URL, options: WorkerOptions): Promise<Worker> {
  return new Worker(entry.pathname.endsWith('.ts') ? await bundledFromSources(entry) : entry, options);
}

const bundles = new Map<string, Promise<URL>>();

function bundledFromSources(entry: URL): Promise<URL> {
  let bundle = bundles.get(entry.href);
  if (!bundle) {
    bundle = bundleSources(entry);
    bundles.set(entry.href, bundle);
    bundle.catch(() => bundles.delete(entry.href));
  }
  return bundle;
}

async function bundleSources(entry: URL): Promise<URL> {
  const require = createRequire(import.meta.url);
  const { rolldown } = (await import(pathToFileURL(require.resolve('rolldown')).href)) as typeof import('rolldown');
  // Packages stay imports; only this package's own modules (relative paths) go into the bundle.
  const build = await rolldown({ input: fileURLToPath(entry), platform: 'node', external: (id) => !id.startsWith('.') && !path.isAbsolute(id), logLevel: 'silent' });
  let code: string;
  try {
    code = (await build.generate({ format: 'esm' })).output[0].code;
  } finally {
    await build.close();
  }
  // Inside node_modules, so that the bundle's package imports resolve as the sources' do; .mjs,
  // as no package.json there says "module"; named by content, so concurrent writers agree.
  const dir = path.join(path.dirname(require.resolve('rolldown/package.json')), '..', '.cache', 'p11kms-workers');
  const name = `${path.basename(entry.pathname, '.ts')}-${crypto.createHash('sha256').update(code).digest('hex').slice(0, 16)}.mjs`;
  const file = path.join(dir, name);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    const partial = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(partial, code);
    fs.renameSync(partial, file);
  }
  return pathToFileURL(file);
}
