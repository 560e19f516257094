// Builds and serves the browser demo (demo/vite.config.ts: COOP/COEP headers) and drives Debian's Chromium.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { build, preview } from 'vite';
import type { DemoState } from '../../demo/main.js';

export const CHROMIUM = '/usr/bin/chromium';
export const chromiumMissing = existsSync(CHROMIUM)
  ? false
  : `Chromium not found at ${CHROMIUM} (apt-get install chromium)`;

const config = fileURLToPath(new URL('../../demo/vite.config.ts', import.meta.url));

/** Builds the demo into `outDir` and serves it on 127.0.0.1 at a free port. */
export async function serveDemo(outDir: string): Promise<{ url: string; close: () => Promise<void> }> {
  await build({ configFile: config, logLevel: 'warn', build: { outDir, emptyOutDir: true } });
  const server = await preview({
    configFile: config,
    logLevel: 'warn',
    build: { outDir },
    preview: { port: 0 },
  });
  const url = server.resolvedUrls?.local[0];
  if (!url) throw new Error('vite preview did not say where it listens');
  return { url, close: () => server.close() };
}

/**
 * WebGPU in headless Chromium without a GPU: SwiftShader's Vulkan (in Debian's chromium), a fallback adapter
 * that Chromium offers only with --enable-unsafe-webgpu. Without these flags `requestAdapter()` gives null.
 */
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

/**
 * Headless Chromium with the flags this machine needs (ENGINEERING.md) and `extra` ones; Playwright gives it
 * a fresh profile.
 */
export function launchChromium(extra: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extra,
    ],
  });
}

/** The page's state, with the input tensor as a plain array. */
export type Snapshot = Omit<DemoState, 'result'> & {
  result?: Omit<NonNullable<DemoState['result']>, 'input'> & { input: number[] };
};

export function snapshot(page: Page): Promise<Snapshot> {
  return page.evaluate(() => {
    const { result, ...rest } = window.demo;
    return { ...rest, ...(result ? { result: { ...result, input: Array.from(result.input) } } : {}) };
  });
}

/** Runs `action` and waits until the page has finished the operation it started. */
export async function act(page: Page, action: () => Promise<unknown>): Promise<Snapshot> {
  const done = await page.evaluate(() => window.demo.done);
  await action();
  await page.waitForFunction((d) => window.demo.done > d, done);
  return snapshot(page);
}
