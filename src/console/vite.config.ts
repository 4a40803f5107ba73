// Builds the console into dist/console, served by the service at /console/ (src/http/console-static.ts).
import preact from '@preact/preset-vite';
import { defineConfig } from 'vite';

export default defineConfig({
  root: new URL('.', import.meta.url).pathname,
  base: '/console/',
  plugins: [preact()],
  build: {
    outDir: new URL('../../dist/console', import.meta.url).pathname,
    emptyOutDir: true,
    // No inline scripts or styles: the Content-Security-Policy allows only files from this origin.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 2048,
  },
});
