// Writes docs/demo.png for the README: the demo in headless Chromium with the authors' 0.5x g=3 weights on
// chelsea.png (from ../shared). Run: npm run demo:screenshot
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { act, launchChromium, serveDemo } from '../test/helpers/demo.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const shared = join(root, '..', 'shared');
const out = join(root, 'docs', 'demo.png');
const site = mkdtempSync(join(tmpdir(), 'shufflenet-demo-'));
const server = await serveDemo(site);
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
  await page.goto(`${server.url}?threads=2`);
  await page.waitForFunction(() => window.demo?.done >= 1);
  await act(page, () =>
    page.setInputFiles('#model-file', join(shared, 'weights', 'shufflenet_v1_g3_0.5x.pth.tar')),
  );
  const s = await act(page, () => page.setInputFiles('#image-file', join(shared, 'images', 'chelsea.png')));
  if (s.error) throw new Error(`the demo failed: ${s.error}`);
  mkdirSync(join(root, 'docs'), { recursive: true });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}: ${s.result?.top[0]?.label}`);
} finally {
  await browser.close();
  await server.close();
  rmSync(site, { recursive: true, force: true });
}
