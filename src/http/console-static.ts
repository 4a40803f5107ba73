/**
 * Serves the web console (built by `npm run build` into dist/console) at /console/. The console
 * runs entirely in the browser: it signs every call with SigV4 there and calls the same KMS API
 * and operator API as any client, so it adds no privilege on the server. A strict
 * Content-Security-Policy allows only this origin's scripts, styles and API (no inline script, no
 * third-party origin, no framing).
 */
import fs from 'node:fs';
import path from 'node:path';
import express, { type Router } from 'express';
import { PROJECT_ROOT } from '../package-info.js';

export const CONSOLE_DIR = path.join(PROJECT_ROOT, 'dist', 'console');

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
};

/** The console's routes: GET (and HEAD) under /console; not audited, like the probes (static
 *  files and the public settings; every call the console makes is an audited API call). */
export function createConsoleRoutes(settings: { region: string; accountId: string }): { handles: (method: string, path: string) => boolean; router: Router } {
  return {
    handles: (method, path) => (method === 'GET' || method === 'HEAD') && (path === '/console' || path.startsWith('/console/')),
    router: createConsoleRouter(settings),
  };
}

function createConsoleRouter(settings: { region: string; accountId: string }): Router {
  // Strict: '/console' (redirected) and '/console/' (the app) are different routes.
  const router = express.Router({ strict: true });
  router.use('/console', (_req, res, next) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    next();
  });
  router.get('/console', (_req, res) => res.redirect(301, '/console/'));
  // What the browser needs to sign requests; nothing secret.
  router.get('/console/settings.json', (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.json({ region: settings.region, accountId: settings.accountId });
  });
  if (fs.existsSync(path.join(CONSOLE_DIR, 'index.html'))) {
    router.use('/console', express.static(CONSOLE_DIR, { index: 'index.html', fallthrough: true, maxAge: '1h', setHeaders: noCacheForHtml }));
  } else {
    router.get('/console/', (_req, res) => {
      res.status(503).type('text/plain').send('The console is not built: run `npm run build`.');
    });
  }
  return router;
}

function noCacheForHtml(res: express.Response, file: string): void {
  if (file.endsWith('.html')) res.setHeader('Cache-Control', 'no-cache');
}
