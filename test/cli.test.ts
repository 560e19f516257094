import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FASHION_MNIST_DIR } from '../src/node/datasets.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs the real CLI entry point as a user would, through tsx (no build needed). */
function shufflenet(...args: string[]) {
  return shufflenetWith({}, ...args);
}

function shufflenetWith(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('shufflenet CLI', () => {
  it('flops --json gives macs, macsConvOnly, params and layers', () => {
    const r = shufflenet('flops', '--arch', 'shufflenet_v1_g3_1.0x', '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.macs, 137_460_672);
    assert.equal(j.macsConvOnly, 136_500_672);
    assert.equal(j.params, 1_864_728);
    assert.ok(Array.isArray(j.layers) && j.layers.some((l: { name: string }) => l.name === 'classifier.0'));
  });

  it('flops takes --input HxW and model options, and prints a per-layer table', () => {
    const r = shufflenet(
      'flops',
      '--arch',
      'shufflenet_v1_g8_0.5x',
      '--input',
      '32',
      '--small-input',
      '--classes',
      '10',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^features\.0\.branch_main_1\.0\s+conv2d\s+\[48, 32, 32\]/m);
    assert.match(r.stdout, /at 3x32x32: [\d,]+ MACs/);
    const wide = JSON.parse(shufflenet('flops', '--arch', 'alexnet', '--input', '480x640', '--json').stdout);
    assert.deepEqual(wide.input, [3, 480, 640]);
  });

  it('models lists every preset with MFLOPs and params', () => {
    const r = shufflenet('models', '--json');
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { name: string; mflops: number; params: number }[];
    const g3 = rows.find((x) => x.name === 'shufflenet_v1_g3_0.5x')!;
    assert.equal(Math.round(g3.mflops * 10), 376);
    assert.ok(rows.some((x) => x.name === 'mobilenet_v1_0.5') && rows.some((x) => x.name === 'alexnet'));
  });

  it('exits 2 with the valid choices for an unknown arch, an impossible (g, s), a bad size or option', () => {
    const bad = shufflenet('flops', '--arch', 'shufflenet_v1_g5_1.0x');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /g in \{1, 2, 3, 4, 8\} and s in \{0\.25, 0\.5, 1\.0, 1\.5, 2\.0\}/);
    const unknown = shufflenet('flops', '--arch', 'vgg16');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /valid presets: .*mobilenet_v1_0\.25/);
    assert.equal(shufflenet('flops', '--arch', 'alexnet', '--input', '0x5').code, 2);
    assert.equal(shufflenet('flops', '--arch', 'alexnet', '--frobnicate').code, 2);
    assert.equal(shufflenet('nonsense').code, 2);
  });

  it('has --help everywhere', () => {
    for (const args of [['--help'], ['flops', '--help'], ['models', '--help']]) {
      const r = shufflenet(...args);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /Usage: shufflenet/);
    }
  });
});

/** Where Dawn (the `webgpu` package) cannot load, the WebGPU runs skip (as in webgpu.test.ts). */
const dawn = await import('webgpu').then(
  () => false as const,
  (e: Error) => `the webgpu package cannot load on ${process.platform}-${process.arch}: ${e.message}`,
);

describe('shufflenet eval --backend', () => {
  const noData = !existsSync(FASHION_MNIST_DIR) && `no ${FASHION_MNIST_DIR}`;

  it(
    'webgpu gives the metrics wasm gives (embedded model, 100 test images)',
    { skip: dawn || noData },
    () => {
      // 64 + 36 images: the last batch is padded to the plan's batch on both backends.
      const args = ['eval', '--dataset', 'fashion-mnist', '--limit', '100', '--batch-size', '64', '--json'];
      const wasm = shufflenet(...args);
      assert.equal(wasm.code, 0, wasm.stderr);
      // Dawn's OpenGL ES backend on llvmpipe here; SHUFFLENET_WEBGPU_BACKEND=vulkan on a GPU.
      const env = { SHUFFLENET_WEBGPU_BACKEND: process.env.SHUFFLENET_WEBGPU_BACKEND ?? 'opengles' };
      const gpu = shufflenetWith(env, ...args, '--backend', 'webgpu');
      assert.equal(gpu.code, 0, gpu.stderr);
      type Metrics = { count: number; top1: number; top5: number; loss: number; confusion: number[][] };
      const [w, g] = [JSON.parse(wasm.stdout), JSON.parse(gpu.stdout)] as [Metrics, Metrics];
      assert.equal(w.count, 100);
      assert.ok(w.top1 >= 0.8, `top-1 ${w.top1}`);
      assert.deepEqual({ ...g, loss: 0 }, { ...w, loss: 0 });
      assert.ok(Math.abs(g.loss - w.loss) <= 1e-4 * w.loss, `loss: webgpu ${g.loss}, wasm ${w.loss}`);
      // f16's rounding (f16 storage itself needs shader-f16: test/webgpu.test.ts on the GPU machine).
      const half = shufflenetWith(env, ...args, '--backend', 'webgpu', '--precision', 'f16-rounded');
      assert.equal(half.code, 0, half.stderr);
      const h = JSON.parse(half.stdout) as Metrics;
      assert.ok(Math.abs(h.top1 - w.top1) <= 0.02, `top-1: f16-rounded ${h.top1}, f32 ${w.top1}`);
      assert.ok(Math.abs(h.loss - w.loss) <= 1e-2 * w.loss, `loss: f16-rounded ${h.loss}, f32 ${w.loss}`);
      assert.notEqual(h.loss, g.loss, 'f16-rounded rounded nothing');
    },
  );

  it('refuses --precision f16 off WebGPU, naming the fix', { skip: noData }, () => {
    const r = shufflenet('eval', '--dataset', 'fashion-mnist', '--precision', 'f16');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--precision f16 runs on WebGPU only: use --backend webgpu/);
  });

  it('refuses an unknown backend with the choices', () => {
    const r = shufflenet('eval', '--dataset', 'fashion-mnist', '--backend', 'cuda');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Allowed choices are wasm, webgpu, auto/);
  });
});
