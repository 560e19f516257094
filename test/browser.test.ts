// The browser demo (demo/) in headless Chromium: built with Vite, served with COOP/COEP, driven by Playwright.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { exportOnnx, modelIO, preprocess, topK, type Engine, type Model } from '../src/index.js';
import { createNodeEngine, loadImage, loadModel, ThreadPool } from '../src/node/index.js';
import {
  act,
  chromiumMissing,
  launchChromium,
  serveDemo,
  snapshot,
  WEBGPU_FLAGS,
  type Snapshot,
} from './helpers/demo.js';

const fashion = fileURLToPath(new URL('../assets/fashion-mnist/', import.meta.url));
const weightsDir = fileURLToPath(new URL('../../shared/weights', import.meta.url));
const imagesDir = fileURLToPath(new URL('../../shared/images', import.meta.url));
const official = join(weightsDir, 'shufflenet_v1_g3_0.5x.pth.tar');
const chelsea = join(imagesDir, 'chelsea.png');
const noWeights = existsSync(official) && existsSync(chelsea) ? false : `${official} or ${chelsea} not found`;

/** The Node engine's logits for the tensor the page ran on. */
async function nodeLogits(
  engine: Engine,
  model: Model,
  r: NonNullable<Snapshot['result']>,
): Promise<Float32Array> {
  const [, , height, width] = r.inputShape;
  const plan = engine.compile(model, { height, width });
  try {
    return plan.run(Float32Array.from(r.input)).slice();
  } finally {
    plan.dispose();
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('the browser demo in headless Chromium', { skip: chromiumMissing }, () => {
  const out = mkdtempSync(join(tmpdir(), 'shufflenet-demo-'));
  let server: Awaited<ReturnType<typeof serveDemo>>;
  let browser: Browser;
  let page: Page;
  let engine: Engine;
  const pageErrors: string[] = [];
  let sneakerLogits: number[] | undefined;

  before(async () => {
    [server, browser, engine] = await Promise.all([
      serveDemo(join(out, 'site')),
      launchChromium(),
      createNodeEngine({ threads: 1 }),
    ]);
    page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(`${server.url}?threads=2`);
    await page.waitForFunction(() => window.demo?.done >= 1);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    if (engine?.parallel instanceof ThreadPool) await engine.parallel.close();
    rmSync(out, { recursive: true, force: true });
  });

  it('starts on 2 Web Worker threads of a cross-origin isolated page, with the built-in model', async () => {
    const s = await snapshot(page);
    assert.equal(s.error, undefined);
    assert.equal(s.engine?.crossOriginIsolated, true);
    assert.equal(s.engine?.threads, 2);
    assert.deepEqual(s.engine?.notes, []);
    assert.equal(s.model?.file, 'model.safetensors');
    assert.match((await page.textContent('#backend')) ?? '', /2 threads \(cross-origin isolated\)/);
    // Launched without --enable-unsafe-webgpu, this Chromium gives no adapter: WebGPU is offered disabled.
    assert.equal(s.backend, 'wasm');
    assert.equal(s.webgpu?.available, false);
    assert.match(s.webgpu?.reason ?? '', /no WebGPU adapter/);
    assert.equal(await page.isDisabled('#backend-select option[value=webgpu]'), true);
    assert.equal(await page.isDisabled('#backend-select'), false);
    assert.match(
      (await page.textContent('#webgpu-status')) ?? '',
      /^WebGPU unavailable: .*no WebGPU adapter/,
    );
  });

  it('classifies a shipped sample as the Node engine does (logits within 1e-5)', async (t) => {
    const s = await act(page, () => page.click('[data-sample=sneaker]'));
    assert.equal(s.error, undefined);
    const r = s.result!;
    assert.equal(r.image, 'sneaker.png');
    assert.equal(r.backend, 'wasm');
    const { model, checkpoint } = await loadModel(join(fashion, 'model.safetensors'));
    const io = modelIO(undefined, checkpoint.metadata, 'model.safetensors');
    // The browser's PNG decoder and canvas give the pixels Node's decoder does.
    const expected = preprocess(await loadImage(join(fashion, 'samples', 'sneaker.png')), io.preprocess);
    assert.deepEqual(r.inputShape, expected.shape);
    assert.equal(maxAbsDiff(r.input, expected.data), 0);
    const logits = await nodeLogits(engine, model, r);
    const diff = maxAbsDiff(r.logits, logits);
    t.diagnostic(`page vs Node logits: max |diff| ${diff}`);
    assert.ok(diff <= 1e-5, `page vs Node logits: max |diff| ${diff}`);
    sneakerLogits = r.logits;
    assert.equal(r.top[0]?.label, topK(logits, 1, io.labels)[0]?.label);
    // The sample's own class: any trained model gets this easy one (the placeholder says Sneaker to everything).
    assert.equal(r.top[0]?.label, 'Sneaker');
    assert.match((await page.textContent('#result-title')) ?? '', /sneaker\.png: Sneaker/);
  });

  it('says which file was unreadable', async () => {
    const bad = { name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not a PNG') };
    let s = await act(page, () => page.setInputFiles('#image-file', bad));
    assert.match(s.error ?? '', /^broken\.png: not an image this browser can decode/);
    assert.equal(await page.isVisible('#error'), true);
    const junk = {
      name: 'junk.safetensors',
      mimeType: 'application/octet-stream',
      buffer: Buffer.alloc(64, 7),
    };
    s = await act(page, () => page.setInputFiles('#model-file', junk));
    assert.match(s.error ?? '', /^junk\.safetensors: not a safetensors or PyTorch checkpoint/);
    assert.equal(s.model?.file, 'model.safetensors', 'the previous model stays');
  });

  it(
    'classifies chelsea.png as an Egyptian cat with the official 0.5x g=3 checkpoint opened from disk',
    { skip: noWeights },
    async (t) => {
      let s = await act(page, () => page.setInputFiles('#model-file', official));
      assert.equal(s.error, undefined);
      assert.equal(s.model?.name, 'shufflenet_v1_g3_0.5x');
      assert.equal(Math.round(s.model?.mflops ?? 0), 38);
      s = await act(page, () => page.setInputFiles('#image-file', chelsea));
      assert.equal(s.error, undefined);
      const r = s.result!;
      assert.equal(r.image, 'chelsea.png');
      assert.deepEqual(r.top[0] && { index: r.top[0].index, label: r.top[0].label }, {
        index: 285,
        label: 'Egyptian cat',
      });
      assert.ok(r.forks > 0, 'no step ran on the worker thread');
      const { model, entry } = await loadModel(official);
      const expected = preprocess(await loadImage(chelsea), entry!.preprocess);
      assert.equal(maxAbsDiff(r.input, expected.data), 0);
      const diff = maxAbsDiff(r.logits, await nodeLogits(engine, model, r));
      t.diagnostic(`page (2 threads) vs Node (1 thread) logits: max |diff| ${diff}`);
      assert.ok(diff <= 1e-5, `page vs Node logits: max |diff| ${diff}`);
    },
  );

  it('runs the same model from an .onnx file', { skip: noWeights }, async () => {
    const { model } = await loadModel(official);
    const onnx = {
      name: 'g3.onnx',
      mimeType: 'application/octet-stream',
      buffer: Buffer.from(exportOnnx(model.graph, model.weights)),
    };
    // A new model classifies the image on the page again (chelsea.png).
    const s = await act(page, () => page.setInputFiles('#model-file', onnx));
    assert.equal(s.error, undefined);
    assert.equal(s.model?.format, 'onnx');
    const r = s.result!;
    assert.equal(r.image, 'chelsea.png');
    assert.equal(r.top[0]?.label, 'Egyptian cat');
    const diff = maxAbsDiff(r.logits, await nodeLogits(engine, model, r));
    assert.ok(diff <= 1e-5, `page vs Node logits: max |diff| ${diff}`);
  });

  it('runs on one thread and says why when the page is not cross-origin isolated', async () => {
    const plain = await browser.newPage();
    // The same files without the COOP/COEP headers.
    await plain.route('**/*', async (route) => {
      const response = await route.fetch();
      const headers = response.headers();
      delete headers['cross-origin-opener-policy'];
      delete headers['cross-origin-embedder-policy'];
      await route.fulfill({ response, headers });
    });
    await plain.goto(`${server.url}?threads=2`);
    await plain.waitForFunction(() => window.demo?.done >= 1);
    const s = await act(plain, () => plain.click('[data-sample=sneaker]'));
    await plain.close();
    assert.equal(s.error, undefined);
    assert.equal(s.engine?.crossOriginIsolated, false);
    assert.equal(s.engine?.threads, 1);
    assert.match(
      s.engine?.notes.join() ?? '',
      /one thread instead of 2: the page is not cross-origin isolated/,
    );
    // The kernels give the same bits on any number of threads, shared memory or not.
    if (sneakerLogits) assert.deepEqual(s.result?.logits, sneakerLogits);
  });

  it('says so when the browser has no WebAssembly SIMD', async () => {
    const old = await browser.newPage();
    await old.addInitScript(() => {
      WebAssembly.validate = () => false;
    });
    await old.goto(server.url);
    await old.waitForFunction(() => window.demo?.done >= 1);
    const s = await snapshot(old);
    const shown = await old.textContent('#error');
    await old.close();
    assert.match(s.error ?? '', /^This browser cannot run the demo: .*does not run WebAssembly SIMD/);
    assert.equal(shown, s.error);
  });

  // Its own Chromium (SwiftShader's WebGPU is slow and has crashed in some orderings of operations), on the
  // same server; the page's WASM engine on one thread.
  describe('WebGPU (SwiftShader, in a browser of its own)', () => {
    let gpuBrowser: Browser;
    const gpuErrors: string[] = [];
    before(async () => {
      gpuBrowser = await launchChromium(WEBGPU_FLAGS);
    });
    after(() => gpuBrowser?.close());

    async function open(init?: () => void): Promise<Page> {
      const p = await gpuBrowser.newPage();
      p.on('pageerror', (e) => gpuErrors.push(e.message));
      if (init) await p.addInitScript(init);
      await p.goto(`${server.url}?threads=1`);
      await p.waitForFunction(() => window.demo?.done >= 1);
      return p;
    }

    it('classifies the sneaker through WebGPU with the WASM logits (within 1e-4)', async (t) => {
      const p = await open();
      try {
        let s = await snapshot(p);
        assert.equal(s.webgpu?.available, true, `no WebGPU adapter: ${s.webgpu?.reason}`);
        assert.match(s.webgpu?.adapter ?? '', /swiftshader/);
        assert.equal(await p.isDisabled('#backend-select option[value=webgpu]'), false);
        const wasm = (await act(p, () => p.click('[data-sample=sneaker]'))).result!;
        assert.equal(wasm.backend, 'wasm');
        // Choosing WebGPU classifies the image on the page again.
        s = await act(p, () => p.selectOption('#backend-select', 'webgpu'));
        assert.equal(s.error, undefined);
        assert.equal(s.backend, 'webgpu');
        const r = s.result!;
        assert.equal(r.backend, 'webgpu');
        assert.equal(r.image, 'sneaker.png');
        assert.match(r.adapter ?? '', /swiftshader/);
        assert.deepEqual(r.input, wasm.input);
        const diff = maxAbsDiff(r.logits, wasm.logits);
        t.diagnostic(`WebGPU (${r.adapter}) vs WASM logits: max |diff| ${diff}, ${r.ms.toFixed(1)} ms a run`);
        assert.ok(diff <= 1e-4, `WebGPU vs WASM logits: max |diff| ${diff}`);
        assert.equal(r.top[0]?.label, 'Sneaker');
        assert.match((await p.textContent('#backend')) ?? '', /^WebGPU on .*swiftshader/);
        assert.match((await p.textContent('#timing')) ?? '', /on WebGPU \(.*swiftshader.*\)/);
        // And back: WASM gives its own logits again.
        s = await act(p, () => p.selectOption('#backend-select', 'wasm'));
        assert.equal(s.result?.backend, 'wasm');
        assert.deepEqual(s.result?.logits, wasm.logits);
      } finally {
        await p.close();
      }
      assert.deepEqual(gpuErrors, []);
    });

    it('falls back to WASM and says why when WebGPU gives no device', async () => {
      const p = await open(() => {
        GPUAdapter.prototype.requestDevice = () => Promise.reject(new Error('test: no device today'));
      });
      try {
        await act(p, () => p.click('[data-sample=sneaker]'));
        const s = await act(p, () => p.selectOption('#backend-select', 'webgpu'));
        assert.equal(s.error, undefined);
        assert.equal(s.backend, 'wasm');
        assert.equal(s.result?.backend, 'wasm');
        assert.equal(s.webgpu?.available, false);
        assert.match(
          s.webgpu?.reason ?? '',
          /no WebGPU device: test: no device today; running on WebAssembly/,
        );
        assert.equal(await p.inputValue('#backend-select'), 'wasm');
        assert.equal(await p.isDisabled('#backend-select option[value=webgpu]'), true);
        assert.match((await p.textContent('#webgpu-status')) ?? '', /^WebGPU unavailable: no WebGPU device/);
        assert.match((await p.textContent('#backend')) ?? '', /^WebAssembly/);
      } finally {
        await p.close();
      }
    });
  });

  it("classifies webcam frames (Chromium's fake camera) as the Node engine does, and stops", async () => {
    const cam = await launchChromium([
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
    ]);
    try {
      const p = await cam.newPage();
      const errors: string[] = [];
      p.on('pageerror', (e) => errors.push(e.message));
      await p.goto(`${server.url}?threads=2`);
      await p.waitForFunction(() => window.demo?.done >= 1, null, { timeout: 60_000 });
      assert.equal(await p.isHidden('#webcam'), false);
      const before = await p.evaluate(() => window.demo.done);
      await p.click('#webcam');
      // Frame after frame by itself, and the page still answers (this evaluate is a task of its own).
      await p.waitForFunction(
        (d) => window.demo.done >= d + 3 && window.demo.result?.image === 'webcam',
        before,
        { timeout: 60_000 },
      );
      assert.equal(await p.textContent('#webcam'), 'Stop webcam');
      const s = await snapshot(p);
      assert.equal(s.error, undefined);
      const r = s.result!;
      assert.equal(r.image, 'webcam');
      assert.ok(new Set(r.input).size > 1, 'the frame is not blank');
      const { model } = await loadModel(join(fashion, 'model.safetensors'));
      const diff = maxAbsDiff(r.logits, await nodeLogits(engine, model, r));
      assert.ok(diff <= 1e-5, `webcam frame, page vs Node logits: max |diff| ${diff}`);
      await p.click('#webcam', { timeout: 10_000 });
      await p.waitForFunction(() => document.querySelector('#webcam')?.textContent === 'Webcam', null, {
        timeout: 10_000,
      });
      // Stopped: at most the frame in flight finishes.
      const stopped = await p.evaluate(() => window.demo.done);
      await p.waitForTimeout(500);
      assert.ok((await p.evaluate(() => window.demo.done)) <= stopped + 1, 'frames after Stop');
      assert.deepEqual(errors, []);
    } finally {
      await cam.close();
    }
  });

  it('takes a screenshot, with no page errors', async (t) => {
    const file = join(tmpdir(), 'shufflenet-demo.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(statSync(file).size > 10_000);
    t.diagnostic(`screenshot: ${file}`);
    assert.deepEqual(pageErrors, []);
  });
});
