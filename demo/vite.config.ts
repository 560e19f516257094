import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/** Cross-origin isolation: SharedArrayBuffer, and so the worker threads, exist only on pages served with these. */
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

// `npm run demo` builds into dist/demo and serves it on 127.0.0.1 (vite preview); the browser test builds the same.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  // Relative asset URLs, so the built page works from any folder of any static host.
  base: './',
  build: { outDir: fileURLToPath(new URL('../dist/demo', import.meta.url)), emptyOutDir: true },
  worker: { format: 'es' },
  server: { host: '127.0.0.1', headers: ISOLATION_HEADERS },
  preview: { host: '127.0.0.1', headers: ISOLATION_HEADERS },
});
