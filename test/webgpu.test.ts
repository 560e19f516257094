import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Precision, WebGpuEngine } from '../src/backends/webgpu/index.js';
import { MEGVII_PREPROCESS, preprocess } from '../src/data/image.js';
import { IMAGENET_LABELS, topK } from '../src/data/labels.js';
import {
  createModel,
  execute,
  GraphBuilder,
  initWeights,
  seededRandom,
  Tensor,
  Model,
  type Graph,
  type Value,
} from '../src/index.js';
import { loadImage } from '../src/node/image.js';
import { createNodeWebGpuEngine } from '../src/node/webgpu.js';
import { loadModel } from '../src/node/weights.js';
import { createEngine } from '../src/runtime/engine.js';
import { lower, type LOp } from '../src/runtime/lower.js';

/**
 * The WebGPU backend on Dawn's OpenGL ES backend over Mesa's llvmpipe (a CPU rasteriser: no GPU needed;
 * SHUFFLENET_WEBGPU_BACKEND=vulkan runs it on a GPU). Without an adapter the tests fail (CI has Mesa
 * through Debian's chromium); they skip only where the `webgpu` package itself cannot load.
 */
const shared = join(fileURLToPath(new URL('..', import.meta.url)), '..', 'shared');
const dawn = await import('webgpu').then(
  () => false as const,
  (e: Error) => `the webgpu package cannot load on ${process.platform}-${process.arch}: ${e.message}`,
);

/** Non-trivial BN statistics and biases, so folding BN into the kernels is really exercised. */
function randomized(graph: Graph, seed: number): Model {
  const weights = initWeights(graph, seed);
  const r = seededRandom(seed + 7);
  for (const [k, t] of weights) {
    if (k.endsWith('running_var')) t.data.forEach((_, i) => (t.data[i] = 0.5 + r()));
    if (k.endsWith('running_mean') || k.endsWith('.bias') || (k.endsWith('.weight') && t.shape.length === 1))
      t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) / 2 + (k.endsWith('.weight') ? 1 : 0)));
  }
  return new Model(graph, weights);
}

/** max |actual - expected| <= tolerance * max |expected| (1e-4: f32; f16 activations round to 2^-11). */
function assertClose(what: string, actual: Float32Array, expected: Tensor, tolerance = 1e-4): number {
  assert.equal(actual.length, expected.size, `${what}: size`);
  const scale = Math.max(...expected.data.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < expected.size; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected.data[i]!));
  assert.ok(scale > 0, `${what}: the reference output is all zeros`);
  assert.ok(worst <= tolerance * scale, `${what}: max |diff| ${worst} vs output scale ${scale}`);
  return worst / scale;
}

/** Dawn's backend: OpenGL ES (Mesa's llvmpipe) here; vulkan on a GPU, or on SwiftShader (test/webgpu-vulkan.test.ts). */
const BACKEND = process.env.SHUFFLENET_WEBGPU_BACKEND ?? 'opengles';

describe(`WebGPU inference (Dawn's ${BACKEND} backend)`, { skip: dawn }, () => {
  let engine: WebGpuEngine;
  before(async () => {
    engine = await createNodeWebGpuEngine({ backend: BACKEND });
    await engine.warmUp(); // every WGSL kernel compiles
  });
  after(() => engine?.destroy());

  /** Runs `graph` on WebGPU and on the reference kernels; checks which lowered ops it made. */
  async function check(
    what: string,
    build: (b: GraphBuilder, x: Value) => Value,
    o: {
      channels?: number;
      size?: [number, number];
      batch?: number;
      expect: (ops: LOp[]) => boolean;
      precision?: Precision;
      tolerance?: number;
    },
  ): Promise<void> {
    const [channels, [h, w], batch] = [o.channels ?? 6, o.size ?? [9, 11], o.batch ?? 2];
    const b = new GraphBuilder(what, channels, [h, w]);
    const graph = b.build(build(b, b.input()));
    const m = randomized(graph, 5);
    const ops = lower(graph, m.weights, [batch, channels, h, w]).ops;
    assert.ok(o.expect(ops), `${what}: lowered to ${ops.map((op) => op.k).join(', ')}`);
    const x = Tensor.random([batch, channels, h, w], seededRandom(3));
    const plan = engine.compile(m, { batch, height: h, width: w, precision: o.precision });
    assertClose(what, await plan.run(x.data), execute(graph, m.weights, x), o.tolerance);
    plan.dispose();
  }
  const has =
    (k: LOp['k'], when: (op: LOp) => boolean = () => true) =>
    (ops: LOp[]) =>
      ops.some((op) => op.k === k && when(op));

  describe('every lowered op kind equals the reference kernels within 1e-4', () => {
    it('pointwise: grouped 1x1 conv + BN + ReLU (a GEMM per group, tile edges)', () =>
      check('pw', (b, x) => b.relu('r', b.bn('bn', b.conv('c', x, 39, 1, { groups: 3 }))), {
        expect: has('pointwise', (op) => op.k === 'pointwise' && op.groups === 3 && op.relu),
        size: [13, 7],
      }));

    it('pointwise: dense, many input channels (several K steps), with bias, batch 3', () =>
      check('pw dense', (b, x) => b.conv('c', x, 70, 1, { bias: true }), {
        channels: 37,
        batch: 3,
        expect: has('pointwise', (op) => op.k === 'pointwise' && op.groups === 1),
      }));

    it('pointwise reading a folded channel shuffle (input map), both orders', async () => {
      for (const order of ['paper', 'authors'] as const)
        await check(
          `pw map ${order}`,
          (b, x) =>
            b.conv('c2', b.shuffle('s', b.conv('c1', x, 12, 1, { groups: 3 }), 3, order), 12, 1, {
              groups: 3,
            }),
          { expect: has('pointwise', (op) => op.k === 'pointwise' && !!op.inMap) },
        );
    });

    it('pointwise with the residual add and ReLU fused', () =>
      check('pw res', (b, x) => b.relu('r', b.add('a', b.bn('bn', b.conv('c', x, 6, 1)), x)), {
        expect: has('pointwise', (op) => op.k === 'pointwise' && !!op.res && op.relu),
      }));

    it('depthwise 3x3, stride 1 and 2, the shuffle folded as output map (after) or weights (before)', async () => {
      for (const stride of [1, 2]) {
        for (const position of ['after', 'before'] as const) {
          await check(
            `dw s${stride} ${position}`,
            (b, x) => {
              const dw = (v: Value) => b.bn('bn', b.conv('dw', v, 6, 3, { stride, padding: 1, groups: 6 }));
              const y =
                position === 'after'
                  ? b.shuffle('s', dw(x), 3, 'authors')
                  : dw(b.shuffle('s', x, 3, 'paper'));
              return b.conv('pw', y, 6, 1);
            },
            { expect: has('depthwise', (op) => op.k === 'depthwise' && !!op.outMap && op.stride === stride) },
          );
        }
      }
    });

    it('the stride-2 unit: avg pool and a branch written into their concat slices, then a 1x1 conv', () =>
      check(
        'concat',
        (b, x) => {
          const proj = b.avgpool('proj', x, 3, 2, 1, true);
          const branch = b.relu('r', b.bn('bn', b.conv('dw', x, 6, 3, { stride: 2, padding: 1, groups: 6 })));
          return b.conv('pw', b.concat('cat', [proj, branch]), 8, 1);
        },
        { expect: (ops) => ops.filter((op) => op.k !== 'js' && op.y.off > 0).length === 1 },
      ));

    it('general conv: the stem (3x3 stride 2), AlexNet-like 11x11/4 and 5x5, grouped, dilated', async () => {
      const cases: [string, number, number, Parameters<GraphBuilder['conv']>[4], [number, number]][] = [
        ['stem', 3, 3, { stride: 2, padding: 1 }, [17, 15]],
        ['11x11/4', 11, 3, { stride: 4, padding: 2, bias: true }, [35, 31]],
        ['5x5 grouped', 5, 6, { padding: 2, groups: 2, bias: true }, [9, 11]],
        ['dilated', 3, 6, { padding: 2, dilation: 2 }, [9, 11]],
      ];
      for (const [what, k, channels, options, size] of cases)
        await check(what, (b, x) => b.relu('r', b.bn('bn', b.conv('c', x, 8, k, options))), {
          channels,
          size,
          expect: has('conv', (op) => op.k === 'conv' && op.relu),
        });
    });

    it('max pool (padding, ceil mode) and average pool (count_include_pad on and off)', async () => {
      await check('maxpool', (b, x) => b.maxpool('m', x, 3, 2, 1), { expect: has('maxpool') });
      await check('maxpool ceil', (b, x) => b.maxpool('m', x, 3, 2, 0, true), { expect: has('maxpool') });
      for (const include of [true, false])
        await check(`avgpool ${include}`, (b, x) => b.avgpool('a', x, 3, 2, 1, include), {
          expect: has('avgpool'),
        });
    });

    it('global average pool, flatten, linear + ReLU, linear', () =>
      check(
        'head',
        (b, x) =>
          b.linear('fc2', b.relu('r', b.linear('fc1', b.flatten('f', b.globalAvgPool('g', x), 6), 40)), 10),
        { expect: (ops) => has('gap')(ops) && has('linear', (op) => op.k === 'linear' && op.relu)(ops) },
      ));

    it('channel affine (a BN that follows no conv) + ReLU, add + ReLU, ReLU', () =>
      check(
        'affine add relu',
        (b, x) => b.relu('r2', b.add('a', b.relu('r1', x), b.relu('r0', b.bn('bn', x)))),
        {
          expect: (ops) => ['affine', 'add', 'relu'].every((k) => has(k as LOp['k'])(ops)),
        },
      ));

    it('ops without a kernel run the reference kernel on the CPU between submissions', async () => {
      const build = (b: GraphBuilder, x: Value) => {
        const y = b.shuffle('s', b.relu('r', x), 3, 'paper'); // not next to a conv: a real shuffle
        const cat = b.concat('cat', [x, y]); // the input is not written by a kernel: a real concat
        const pooled = b.adaptiveAvgPool('ap', cat, 2); // not the identity
        return b.softmax('sm', b.linear('fc', b.flatten('f', pooled, 48), 5));
      };
      await check('cpu ops', build, { expect: (ops) => ops.filter((op) => op.k === 'js').length === 4 });
      const b = new GraphBuilder('cpu ops', 6, [9, 11]);
      const plan = engine.compile(randomized(b.build(build(b, b.input())), 1), { batch: 2 });
      assert.deepEqual(plan.cpuNodes, ['s', 'cat', 'ap', 'sm']);
      plan.dispose();
    });
  });

  // A model for the whole-preset checks: non-trivial BN statistics, as in test/plan.test.ts.
  const preset = (name: string) => {
    const m = createModel(name, { seed: 3 });
    return randomized(m.graph, 3);
  };

  describe('whole presets equal the reference and the WASM plan within 1e-4 (64x64, batch 1 and 2)', () => {
    for (const name of [
      'shufflenet_v1_g1_0.25x',
      'shufflenet_v1_g1_0.5x',
      'shufflenet_v1_g3_0.25x',
      'shufflenet_v1_g3_0.5x',
      'shufflenet_v1_g8_0.25x',
      'shufflenet_v1_g8_0.5x',
    ]) {
      it(name, async () => {
        const m = preset(name);
        const wasm = await createEngine();
        for (const batch of [1, 2]) {
          const x = Tensor.random([batch, 3, 64, 64], seededRandom(batch));
          const plan = engine.compile(m, { batch, height: 64, width: 64 });
          assert.deepEqual(plan.cpuNodes, []);
          const y = await plan.run(x.data);
          assertClose(`${name} batch ${batch}`, y, execute(m.graph, m.weights, x));
          const w = wasm.compile(m, { batch, height: 64, width: 64 });
          assertClose(`${name} batch ${batch} vs WASM`, y, new Tensor(w.outputShape, w.run(x.data)));
          plan.dispose();
        }
      });
    }

    it("the paper's shuffle position and order (folded into the depthwise conv's weights)", async () => {
      const m = createModel('shufflenet_v1_g3_0.25x', {
        shuffleOrder: 'paper',
        shufflePosition: 'before-dw',
      });
      const x = Tensor.random([1, 3, 64, 64], seededRandom(4));
      const r = randomized(m.graph, 4);
      const plan = engine.compile(r, { height: 64, width: 64 });
      assertClose('before-dw', await plan.run(x.data), r.forward(x));
      plan.dispose();
    });
  });

  describe('plans', () => {
    it('one submission per run, the same output every run, and runs on the input left on the device', async () => {
      const plan = engine.compile(preset('shufflenet_v1_g3_0.25x'), { height: 64, width: 64 });
      const x = Tensor.random([1, 3, 64, 64], seededRandom(9)).data;
      await assert.rejects(plan.run(undefined), /a run without an input before any input/);
      const first = await plan.run(x);
      assert.deepEqual(await plan.run(undefined), first);
      const queue = engine.device.queue;
      const submit = queue.submit.bind(queue);
      let submits = 0;
      queue.submit = (buffers) => {
        submits++;
        submit(buffers);
      };
      try {
        const out = new Float32Array(1000);
        assert.equal(await plan.run(x, out), out);
        assert.equal(submits, 1);
        assert.deepEqual(out, first);
      } finally {
        queue.submit = submit;
      }
      plan.dispose();
    });

    it('runs from a SharedArrayBuffer view (threaded WASM memory) and queued runs', async () => {
      const plan = engine.compile(preset('shufflenet_v1_g8_0.25x'), { batch: 2, height: 32, width: 32 });
      const x = Tensor.random([2, 3, 32, 32], seededRandom(2)).data;
      const shared = new Float32Array(new SharedArrayBuffer(x.byteLength));
      shared.set(x);
      const [a, b] = await Promise.all([plan.run(shared), plan.run(x)]);
      assert.deepEqual(a, b);
      plan.dispose();
    });

    it('names the expected size for a wrong input, and refuses runs after dispose', async () => {
      const plan = engine.compile(preset('shufflenet_v1_g3_0.25x'), { height: 32, width: 32 });
      await assert.rejects(
        plan.run(new Float32Array(10)),
        /plan for input \[1, 3, 32, 32\] needs 3072 values, got 10/,
      );
      plan.dispose();
      await assert.rejects(plan.run(new Float32Array(3072)), /disposed/);
    });

    it('uint8 pixels (compiled with pixels) normalised on the GPU: the logits of the CPU-normalised input', async () => {
      const m = preset('shufflenet_v1_g3_0.25x');
      // Unlike channels' statistics, so that a pixel normalised as another channel's shows; and the authors'
      // preprocessing (BGR 0-255 as it is: scale 1, no mean or std).
      const cases = [
        { scale: 1 / 255, mean: [0.1, 0.5, 0.9], std: [0.2, 0.5, 0.3] },
        { scale: 1, mean: [], std: [] },
      ];
      // 2 x 3 x 33 x 31 = 6138 bytes, not a whole number of words (the padded copy); 2 x 3 x 32 x 32 is.
      for (const [h, w] of [
        [33, 31],
        [32, 32],
      ] as const) {
        for (const norm of cases) {
          const n = 2 * 3 * h * w;
          const r = seededRandom(h);
          const pixels = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
          pixels[0] = 0;
          pixels[n - 1] = 255; // the last byte of a partial word
          const x = new Tensor([2, 3, h, w]);
          for (let i = 0; i < n; i++) {
            const c = Math.floor(i / (h * w)) % 3;
            x.data[i] = (pixels[i]! * norm.scale - (norm.mean[c] ?? 0)) / (norm.std[c] ?? 1);
          }
          const expected = execute(m.graph, m.weights, x);
          for (const precision of ['f32', 'f16-rounded'] as const) {
            const plan = engine.compile(m, { batch: 2, height: h, width: w, pixels: norm, precision });
            const what = `pixels ${h}x${w} scale ${norm.scale.toFixed(4)} ${precision}`;
            const y = await plan.run(pixels);
            assertClose(what, y, expected, precision === 'f32' ? 1e-5 : 5e-3);
            assert.deepEqual(await plan.run(undefined), y, `${what}: again on the pixels left on the device`);
            plan.dispose();
          }
        }
      }
    });

    it('refuses pixels of the wrong kind, size or normalisation, by name', async () => {
      const m = preset('shufflenet_v1_g3_0.25x');
      const pixels = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
      const plan = engine.compile(m, { height: 32, width: 32, pixels });
      await assert.rejects(
        plan.run(new Float32Array(3072)),
        /compiled with pixels .* pass a Uint8Array of 3072/,
      );
      await assert.rejects(plan.run(new Uint8Array(3071)), /needs 3072 values, got 3071/);
      plan.dispose();
      const float = engine.compile(m, { height: 32, width: 32 });
      await assert.rejects(
        float.run(new Uint8Array(3072)),
        /compile it with \{ pixels: \{ scale, mean, std \} \}/,
      );
      float.dispose();
      for (const bad of [
        { mean: [0.5, 0.5], std: [0.25, 0.25, 0.25] },
        { mean: [0.5, 0.5, 0.5], std: [0.25, 0, 0.25] },
        { mean: [0.5, NaN, 0.5], std: [0.25, 0.25, 0.25] },
        { scale: 0 },
        { scale: -1 / 255 },
      ])
        assert.throws(
          () => engine.compile(m, { height: 32, width: 32, pixels: bad }),
          /pixels needs a positive scale, 3 finite means and 3 positive standard deviations/,
        );
    });

    it("profiles a run: a time per dispatch, on the GPU's clock where the adapter has timestamp-query", async () => {
      const model = preset('shufflenet_v1_g3_0.25x');
      const plan = engine.compile(model, { batch: 2, height: 32, width: 32 });
      const x = Tensor.random([2, 3, 32, 32], seededRandom(4)).data;
      const first = await plan.run(x);
      const times = await plan.profile(x);
      const clock = engine.device.features.has('timestamp-query') ? 'gpu' : 'host';
      const nodes = new Set(model.graph.nodes.map((n) => n.name));
      // A dispatch per lowered op: convs (BN folded, ReLU fused), pools, the classifier; no shuffle copies.
      assert.ok(times.length > 40 && times.length < model.graph.nodes.length, String(times.length));
      for (const t of times) {
        assert.ok(nodes.has(t.node), t.node);
        assert.ok(Number.isFinite(t.ms) && t.ms >= 0, JSON.stringify(t));
        assert.equal(t.clock, clock);
      }
      assert.ok(times.some((t) => t.kernel === 'pointwise' && t.ms > 0));
      assert.deepEqual(await plan.run(x), first);
      plan.dispose();
    });

    it('reuses activation buffers: the arena is far smaller than all activations together', () => {
      const plan = engine.compile(preset('shufflenet_v1_g3_0.5x'));
      assert.ok(plan.bytes.arena * 4 < plan.bytes.unplanned, JSON.stringify(plan.bytes));
      plan.dispose();
    });
  });

  describe('f16 activations (shader-f16; f16-rounded: the same rounding on f32 storage, on any adapter)', () => {
    // 'f16' runs where the adapter has shader-f16 (the GPU machine's check: scripts/device-gpu.sh); Mesa's
    // llvmpipe and SwiftShader have none, so here 'f16-rounded' carries the numerics.
    const precisions: Precision[] = ['f16-rounded', 'f16'];
    const needs = (precision: Precision, t: { skip: (m: string) => void }) => {
      if (precision !== 'f16' || engine.hasF16) return false;
      t.skip(`this adapter (${engine.adapter}) has no shader-f16`);
      return true;
    };
    // Activations rounded to 11 significant bits at every store, through 17 units: measured 4-7e-4 of the
    // output scale for the presets below.
    const F16 = 5e-3;

    for (const precision of precisions) {
      it(`${precision}: every kernel within ${F16} of the reference`, async (t) => {
        if (needs(precision, t)) return;
        const o = { precision, tolerance: F16 };
        await check('pointwise', (b, x) => b.relu('r', b.bn('bn', b.conv('c', x, 9, 1, { groups: 3 }))), {
          ...o,
          expect: has('pointwise'),
        });
        await check(
          'depthwise',
          (b, x) => b.bn('bn', b.conv('c', x, 6, 3, { stride: 2, padding: 1, groups: 6 })),
          {
            ...o,
            expect: has('depthwise'),
          },
        );
        await check(
          'conv + pools',
          (b, x) =>
            b.maxpool('m', b.avgpool('a', b.conv('c', x, 8, 3, { padding: 1 }), 3, 1, 1, true), 3, 2, 1),
          {
            ...o,
            expect: (ops) => ['conv', 'avgpool', 'maxpool'].every((k) => has(k as LOp['k'])(ops)),
          },
        );
        await check('head', (b, x) => b.linear('fc', b.flatten('f', b.globalAvgPool('g', x), 6), 10), {
          ...o,
          expect: (ops) => has('gap')(ops) && has('linear')(ops),
        });
        await check(
          'affine add relu',
          (b, x) => b.relu('r2', b.add('a', b.relu('r1', x), b.relu('r0', b.bn('bn', x)))),
          {
            ...o,
            expect: (ops) => ['affine', 'add', 'relu'].every((k) => has(k as LOp['k'])(ops)),
          },
        );
      });

      it(`${precision}: ShuffleNets within ${F16} of the reference (f16: in half the arena)`, async (t) => {
        if (needs(precision, t)) return;
        for (const name of ['shufflenet_v1_g3_0.5x', 'shufflenet_v1_g8_0.25x']) {
          const m = preset(name);
          const x = Tensor.random([2, 3, 64, 64], seededRandom(5));
          const plan = engine.compile(m, { batch: 2, height: 64, width: 64, precision });
          const f32 = engine.compile(m, { batch: 2, height: 64, width: 64 });
          const err = assertClose(
            `${name} ${precision}`,
            await plan.run(x.data),
            execute(m.graph, m.weights, x),
            F16,
          );
          t.diagnostic(`${name}: max |diff| / output scale ${err.toExponential(1)}`);
          assert.ok(err > 0, `${precision} equals f32 exactly: nothing was rounded`);
          assert.equal(plan.bytes.arena, precision === 'f16' ? f32.bytes.arena / 2 : f32.bytes.arena);
          // The input left on the device, in its storage type.
          assert.deepEqual(await plan.run(undefined), await plan.run(x.data));
          plan.dispose();
          f32.dispose();
        }
      });
    }

    it('f16 and f16-rounded give nearly the same logits (the same roundings, up to the GPU rounding mode)', async (t) => {
      if (needs('f16', t)) return;
      const m = preset('shufflenet_v1_g3_0.5x');
      const x = Tensor.random([2, 3, 64, 64], seededRandom(6));
      const [a, b] = await Promise.all(
        (['f16', 'f16-rounded'] as const).map(async (precision) => {
          const plan = engine.compile(m, { batch: 2, height: 64, width: 64, precision });
          const y = await plan.run(x.data);
          plan.dispose();
          return y;
        }),
      );
      assertClose('f16 vs f16-rounded', a!, new Tensor([2, 1000], b!), F16);
    });

    it('refuses f16 without shader-f16 and unknown precisions, by name', () => {
      const m = preset('shufflenet_v1_g3_0.25x');
      if (!engine.hasF16)
        assert.throws(
          () => engine.compile(m, { precision: 'f16' }),
          /precision f16 needs the adapter's 'shader-f16' feature/,
        );
      assert.throws(
        () => engine.compile(m, { precision: 'f8' as Precision }),
        /precision 'f8': expected f32, f16 or f16-rounded/,
      );
    });
  });

  const skip =
    existsSync(join(shared, 'weights')) && existsSync(join(shared, 'images'))
      ? false
      : 'no ../shared weights/images';
  it("the authors' 0.5x g=3 weights label the photos as their model does", { skip }, async () => {
    const { model } = await loadModel(join(shared, 'weights', 'shufflenet_v1_g3_0.5x.pth.tar'));
    const plan = engine.compile(model);
    for (const [file, index] of [
      ['chelsea.png', 285],
      ['coffee.png', 967],
      ['camera.png', 872],
      ['grace_hopper.jpg', 457],
    ] as const) {
      const x = preprocess(await loadImage(join(shared, 'images', file)), MEGVII_PREPROCESS);
      const logits = await plan.run(x.data);
      assert.equal(topK(logits, 1, IMAGENET_LABELS)[0]!.index, index, file);
      if (file === 'chelsea.png') assertClose(file, logits, model.forward(x));
    }
    plan.dispose();
  });

  it(
    "the authors' weights in f16 activations: the same labels, logits within 5e-3 (BN folded first)",
    { skip },
    async (t) => {
      // BN folds into the f32 weights before anything is stored in f16: the first BN's running_var (231,415) is
      // above f16's range, its activations are not.
      const { model } = await loadModel(join(shared, 'weights', 'shufflenet_v1_g3_0.5x.pth.tar'));
      const images = await Promise.all(
        ['chelsea.png', 'coffee.png', 'camera.png', 'grace_hopper.jpg'].map(async (f) =>
          preprocess(await loadImage(join(shared, 'images', f)), MEGVII_PREPROCESS),
        ),
      );
      for (const precision of ['f16-rounded', ...(engine.hasF16 ? ['f16' as const] : [])] as Precision[]) {
        const plan = engine.compile(model, { precision });
        for (const [i, x] of images.entries()) {
          const logits = await plan.run(x.data);
          const expected = model.forward(x);
          assert.equal(
            topK(logits, 1, IMAGENET_LABELS)[0]!.index,
            [285, 967, 872, 457][i],
            `${precision} image ${i}`,
          );
          const err = assertClose(`${precision} image ${i}`, logits, expected, 5e-3);
          t.diagnostic(`${precision} image ${i}: max |diff| / output scale ${err.toExponential(1)}`);
        }
        plan.dispose();
      }
    },
  );
});
