import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { backward, forwardWithTape } from '../src/autograd/tape.js';
import type { WebGpuEngine } from '../src/backends/webgpu/index.js';
import {
  parseTiles,
  webgpuTraining,
  type TrainPlanOptions,
  type WebGpuTrainPlan,
} from '../src/backends/webgpu/train-plan.js';
import { FASHION_MNIST_STATS, limitSet } from '../src/data/datasets.js';
import { makeBatch } from '../src/data/augment.js';
import { GraphBuilder, type Value } from '../src/graph/builder.js';
import type { Graph } from '../src/graph/graph.js';
import { buildPreset } from '../src/models/registry.js';
import { initWeights } from '../src/nn/init.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/node/datasets.js';
import { createNodeWebGpuEngine } from '../src/node/webgpu.js';
import { seededRandom, Tensor, type Shape } from '../src/tensor/tensor.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { adamw, decaysByDefault, lrSchedule, sgd } from '../src/train/optim.js';
import { learnable, memoryStore, train, type TrainConfig } from '../src/train/trainer.js';
import {
  AUTHORS_UNIT,
  copyWeights,
  maxError,
  PAPER_UNIT,
  randomInput,
  type TrainingCase,
} from './helpers/training.js';

/**
 * Training on the WebGPU backend, on Dawn's OpenGL ES backend over Mesa's llvmpipe (no GPU needed;
 * SHUFFLENET_WEBGPU_BACKEND=vulkan runs it on a GPU): every gradient kernel and whole ShuffleNets against
 * the reference autograd tape. Without an adapter the tests fail; they skip only where the `webgpu` package
 * cannot load.
 */
const dawn = await import('webgpu').then(
  () => false as const,
  (e: Error) => `the webgpu package cannot load on ${process.platform}-${process.arch}: ${e.message}`,
);

/** Non-trivial BN parameters and biases, so that every term of their gradients matters. */
function randomized(graph: Graph, seed: number): Map<string, Tensor> {
  const weights = initWeights(graph, seed);
  const r = seededRandom(seed + 7);
  for (const [k, t] of weights) {
    if (k.endsWith('running_var')) t.data.forEach((_, i) => (t.data[i] = 0.5 + r()));
    if (k.endsWith('running_mean') || k.endsWith('.bias') || (k.endsWith('.weight') && t.shape.length === 1))
      t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) / 2 + (k.endsWith('.weight') ? 1 : 0)));
  }
  return weights;
}

/** Dawn's backend: OpenGL ES (Mesa's llvmpipe) here; vulkan on a GPU, or on SwiftShader (test/webgpu-vulkan.test.ts). */
const BACKEND = process.env.SHUFFLENET_WEBGPU_BACKEND ?? 'opengles';

describe(`WebGPU training (Dawn's ${BACKEND} backend)`, { skip: dawn }, () => {
  let engine: WebGpuEngine;
  before(async () => {
    engine = await createNodeWebGpuEngine({ backend: BACKEND });
    await engine.warmUp(); // every WGSL kernel, inference and training, compiles
  });
  after(() => engine?.destroy());

  /**
   * One training step of `graph` on WebGPU against the reference: the output, then every parameter
   * gradient and dL/d(input) from the reference tape at the plan's own forward values, then the BN
   * running buffers. Returns the CPU-fallback nodes; `inspect` sees the plan before it is disposed.
   */
  async function check(
    what: string,
    graph: Graph,
    input: Shape,
    {
      seed = 1,
      inputValues,
      inspect,
      options,
    }: {
      seed?: number;
      inputValues?: (x: Tensor) => void;
      inspect?: (plan: WebGpuTrainPlan) => void;
      options?: TrainPlanOptions;
    } = {},
  ): Promise<string[]> {
    const init = randomized(graph, seed);
    const x = randomInput(input, seed + 1);
    inputValues?.(x);
    const plan = engine.compileTraining(graph, input, { inputGradient: true, ...options });
    try {
      const weights = copyWeights(init);
      const refWeights = copyWeights(init);
      const ref = forwardWithTape(graph, refWeights, x, { training: true });
      const out = await plan.forward(weights, x);
      assert.ok(maxError(out.data, ref.output.data, 0) < 1e-4, `${what}: output`);
      const gradOut = randomInput(out.shape, seed + 2);
      const grads = await plan.backward(gradOut);
      // The reference gradient at the plan's own values: float32 rounding may flip a ReLU near zero.
      const tape = { graph, weights, values: await plan.forwardValues(), ctx: { training: true } };
      const refGrads = backward(tape, gradOut);
      const all = new Map([...refGrads.params, ['input', refGrads.input]]);
      let gmax = 0;
      for (const t of all.values()) for (const v of t.data) gmax = Math.max(gmax, Math.abs(v));
      assert.deepEqual([...grads.keys()].sort(), [...all.keys()].sort(), `${what}: gradient names`);
      for (const [k, t] of all) {
        const e = maxError(grads.get(k)!.data, t.data, 1e-3 * gmax);
        assert.ok(e < 1e-4, `${what}: gradient of ${k} off by ${e}`);
      }
      for (const [k, t] of refWeights) {
        if (/running_/.test(k))
          assert.ok(maxError(weights.get(k)!.data, t.data, 1e-4) < 1e-4, `${what}: ${k}`);
      }
      inspect?.(plan);
      return plan.cpuNodes;
    } finally {
      plan.dispose();
    }
  }

  const graphOf = (
    name: string,
    channels: number,
    size: [number, number],
    f: (b: GraphBuilder, x: Value) => Value,
  ) => {
    const b = new GraphBuilder(name, channels, size);
    return b.build(f(b, b.input()));
  };

  describe('every gradient kernel equals the reference gradient within 1e-4', () => {
    it('grouped 1x1 conv: forward, backward input and weight, bias; reading a folded shuffle (both orders)', async () => {
      for (const order of ['paper', 'authors'] as const) {
        const g = graphOf(`pw ${order}`, 6, [5, 7], (b, x) => {
          const y = b.shuffle('s', b.conv('c1', x, 12, 1, { groups: 3 }), 3, order);
          return b.conv('c2', y, 9, 1, { groups: 3, bias: true });
        });
        assert.deepEqual(await check(`pw ${order}`, g, [3, 6, 5, 7]), []);
      }
      // Several GEMM tiles in every direction (48 outputs, 40 inputs, 30 columns per image).
      const big = graphOf('pw big', 40, [3, 5], (b, x) => b.conv('c', x, 48, 1, { bias: true }));
      assert.deepEqual(await check('pw big', big, [2, 40, 3, 5]), []);
      // Other tiles (bench/tune-webgpu.ts times them): more and fewer rows, columns and depth per workgroup.
      const grouped = graphOf('pw tiles', 36, [3, 7], (b, x) => {
        const y = b.shuffle('s', b.conv('c1', x, 60, 1, { groups: 3 }), 3, 'authors');
        return b.conv('c2', y, 36, 1, { groups: 3, bias: true });
      });
      // c1: forward 20 rows x 12 deep, dL/dx 12 x 20, dL/dw 20 x 12 per group. Expected kernels: the forward's,
      // dL/dx's and dL/dw's tiles ('fit': the least padding; a partial last round of loads at 24x32x3).
      const tiles: [NonNullable<TrainPlanOptions['tiles']>, string, string, string][] = [
        [
          { gemm: { TM: 16, TN: 32, TK: 8 }, wgrad: { TR: 16, TC: 16, TQ: 64 } },
          '16x32x8',
          '16x32x8',
          '16x16x64',
        ],
        [
          { gemm: { TM: 64, TN: 128, TK: 8 }, wgrad: { TR: 64, TC: 32, TQ: 16 } },
          '64x128x8',
          '64x128x8',
          '64x32x16',
        ],
        [
          { gemm: { TM: 24, TN: 16, TK: 16 }, wgrad: { TR: 24, TC: 48, TQ: 16 } },
          '24x16x16',
          '24x16x16',
          '24x48x16',
        ],
        [{ gemm: { TM: 24, TN: 32, TK: 3 }, wgrad: 'fit' }, '24x32x3', '24x32x3', '24x16x32'],
        [{ gemm: 'fit', wgrad: 'fit' }, '24x64x16', '16x64x8', '24x16x32'],
        // The vec4 variant: rows and columns past the shape, partial rounds of both tiles' loads.
        [
          { gemm: { TM: 32, TN: 64, TK: 5, V: 4 }, wgrad: { TR: 32, TC: 64, TQ: 32, V: 4 } },
          '32x64x5v',
          '32x64x5v',
          '32x64x32v',
        ],
        [
          { gemm: { TM: 64, TN: 128, TK: 3, V: 4 }, wgrad: { TR: 64, TC: 128, TQ: 16, V: 4 } },
          '64x128x3v',
          '64x128x3v',
          '64x128x16v',
        ],
      ];
      for (const [t, fwd, dx, dw] of tiles) {
        const what = `pw ${JSON.stringify(t)}`;
        let names: string[] = [];
        const inspect = (p: WebGpuTrainPlan) => (names = [...p.dispatches.forward, ...p.dispatches.backward]);
        assert.deepEqual(await check(what, grouped, [2, 36, 3, 7], { options: { tiles: t }, inspect }), []);
        const c1 = names.filter((n) => n.startsWith('c1: train pointwise'));
        assert.deepEqual(
          c1,
          [
            `c1: train pointwise ${fwd}`,
            `c1: train pointwise backward input ${dx}`,
            `c1: train pointwise backward weight ${dw}`,
          ],
          what,
        );
      }
      // 98 columns: a 128-wide vec4 tile's second group of columns (each invocation's 4..7) holds outputs.
      const wide = graphOf('pw wide', 8, [7, 7], (b, x) => b.conv('c', x, 40, 1, { groups: 2 }));
      const v4 = { gemm: { TM: 32, TN: 128, TK: 8, V: 4 as const } };
      assert.deepEqual(await check('pw wide v4', wide, [2, 8, 7, 7], { options: { tiles: v4 } }), []);
      assert.throws(
        () => engine.compileTraining(grouped, [2, 36, 3, 7], { tiles: { gemm: { TM: 12, TN: 64, TK: 16 } } }),
        /GEMM tile 12x64x16: needs TM a multiple of 8/,
      );
      assert.throws(
        () =>
          engine.compileTraining(grouped, [2, 36, 3, 7], {
            tiles: { gemm: { TM: 24, TN: 64, TK: 16, V: 4 } },
          }),
        /GEMM tile 24x64x16v: the vec4 variant needs TM a multiple of 32 and TN 64 or 128/,
      );
      assert.throws(
        () =>
          engine.compileTraining(grouped, [2, 36, 3, 7], {
            tiles: { wgrad: { TR: 32, TC: 64, TQ: 64, V: 4 } },
          }),
        /weight-gradient tile 32x64x64v: the vec4 variant needs TR a multiple of 32, TC 64 or 128, and TQ 16 or 32/,
      );
      assert.throws(
        () =>
          engine.compileTraining(grouped, [2, 36, 3, 7], { tiles: { wgrad: { TR: 16, TC: 16, TQ: 128 } } }),
        /weight-gradient tile 16x16x128: 16512 bytes of workgroup memory, above 16384/,
      );
      // Specs as --gpu-tiles takes them: a trailing v is the vec4 variant; anything else is refused by name.
      assert.deepEqual(parseTiles('32x64x16v/32x64x32v'), {
        gemm: { TM: 32, TN: 64, TK: 16, V: 4 },
        wgrad: { TR: 32, TC: 64, TQ: 32, V: 4 },
      });
      assert.deepEqual(parseTiles('32x64x16/fit'), { gemm: { TM: 32, TN: 64, TK: 16 }, wgrad: 'fit' });
      assert.throws(() => parseTiles('32x64x16w'), /GEMM tile '32x64x16w': expected AxBxC \(or AxBxCv/);
      assert.throws(
        () => parseTiles('24x64x16v'),
        /GEMM tile 24x64x16v: the vec4 variant needs TM a multiple of 32/,
      );
    });

    it('depthwise 3x3 stride 1 and 2 (odd sizes, padding 1 and 0), reading a folded shuffle (the paper unit)', async () => {
      for (const [stride, padding] of [
        [1, 1],
        [2, 1],
        [2, 0],
      ] as const) {
        const what = `dw s${stride} p${padding}`;
        const g = graphOf(what, 6, [9, 7], (b, x) => {
          const y = b.shuffle('s', b.conv('pw', x, 6, 1, { groups: 2 }), 2, 'paper');
          return b.conv('dw', y, 6, 3, { stride, padding, groups: 6, bias: padding === 0 });
        });
        let names: string[] = [];
        const inspect = (p: WebGpuTrainPlan) => (names = [...p.dispatches.forward, ...p.dispatches.backward]);
        assert.deepEqual(await check(what, g, [2, 6, 9, 7], { inspect }), []);
        // Plane by plane (the kernels without a division per tap), not the generic conv.
        assert.deepEqual(
          names.filter((d) => d.startsWith('dw: ') && !/weight|reduce|channel/.test(d)),
          ['dw: train depthwise', 'dw: train depthwise backward input'],
        );
      }
    });

    it('general conv: the stem (3x3 stride 2), 5x5 grouped with bias, dilated', async () => {
      const cases: [string, number, number, Parameters<GraphBuilder['conv']>[4]][] = [
        ['stem', 3, 3, { stride: 2, padding: 1 }],
        ['5x5 grouped', 5, 4, { padding: 2, groups: 2, bias: true }],
        ['dilated', 3, 4, { padding: 2, dilation: 2, stride: 2 }],
        ['3x3 with 1152 weights', 3, 16, { padding: 1, stride: 2 }],
      ];
      for (const [what, k, channels, options] of cases) {
        const g = graphOf(what, channels, [11, 9], (b, x) => b.conv('c', x, 8, k, options));
        assert.deepEqual(await check(what, g, [2, channels, 11, 9]), []);
      }
    });

    it('batch norm (statistics, affine, backward) with the ReLU in place, on the input and after a conv', async () => {
      const g = graphOf('bn', 5, [6, 7], (b, x) => {
        const y = b.relu('r1', b.bn('bn1', x));
        return b.relu('r2', b.bn('bn2', b.conv('c', y, 7, 1)));
      });
      assert.deepEqual(await check('bn', g, [3, 5, 6, 7]), []);
    });

    it("folds: a BN read by an add alone adds the other input in its affine; a BN's ReLU masks its backward", async () => {
      const g = graphOf('fold', 4, [6, 5], (b, x) => {
        const c = b.conv('c', x, 4, 1);
        const s1 = b.relu('r1', b.add('a1', c, b.bn('bn1', b.conv('c1', c, 4, 1)))); // the BN second
        const s2 = b.add('a2', b.bn('bn2', b.conv('c2', s1, 4, 3, { padding: 1 })), s1); // the BN first
        const bn3 = b.bn('bn3', b.conv('c3', s2, 4, 1));
        const pool = b.avgpool('p', s2, 3, 1, 1, true); // a step between the BN and its ReLU
        const bn4 = b.bn('bn4', b.conv('c4', s2, 4, 1)); // two readers: its add stays
        const s4 = b.add('a4', b.conv('c5', bn4, 4, 1), bn4);
        return b.concat('cat', [pool, b.relu('r3', bn3), s4]);
      });
      let dispatches = { forward: [] as string[], backward: [] as string[] };
      assert.deepEqual(
        await check('fold', g, [2, 4, 6, 5], { inspect: (p) => (dispatches = p.dispatches) }),
        [],
      );
      const { forward, backward } = dispatches;
      const has = (list: string[], node: string) => list.filter((d) => d.startsWith(`${node}: `));
      assert.deepEqual([...has(forward, 'a1'), ...has(forward, 'a2'), ...has(forward, 'r1')], []);
      assert.deepEqual(has(forward, 'a4'), ['a4: train add']);
      assert.deepEqual([...has(forward, 'r3'), ...has(backward, 'r3')], []);
      assert.deepEqual(has(backward, 'r1'), ['r1: train relu backward']); // after an add: its own pass
    });

    it('ReLU (not in place), add + ReLU, a value read by several ops (gradients summed)', async () => {
      const g = graphOf('add', 4, [5, 6], (b, x) => {
        const c = b.conv('c', x, 4, 1);
        const r = b.relu('r', c); // c has two readers: not in place
        return b.relu('r2', b.add('a', b.add('a0', r, c), b.conv('c2', c, 4, 3, { padding: 1 })));
      });
      assert.deepEqual(await check('add', g, [2, 4, 5, 6]), []);
    });

    it('the stride-2 unit: avg pool and a branch concatenated, ReLU in place on the concat', async () => {
      const g = graphOf('concat', 6, [9, 11], (b, x) => {
        const proj = b.avgpool('proj', x, 3, 2, 1, true);
        const branch = b.bn('bn', b.conv('dw', x, 6, 3, { stride: 2, padding: 1, groups: 6 }));
        return b.conv('pw', b.relu('r', b.concat('cat', [proj, branch])), 8, 1);
      });
      assert.deepEqual(await check('concat', g, [2, 6, 9, 11]), []);
    });

    it('max pool (padding, ceil mode, ties after a ReLU) and avg pool (count_include_pad on and off)', async () => {
      const pools: [string, (b: GraphBuilder, x: Value) => Value][] = [
        ['max', (b, x) => b.maxpool('m', b.relu('r', b.conv('c', x, 4, 1)), 3, 2, 1)],
        ['max ceil', (b, x) => b.maxpool('m', b.conv('c', x, 4, 1), 3, 2, 0, true)],
        ['avg incl', (b, x) => b.avgpool('a', b.conv('c', x, 4, 1), 3, 2, 1, true)],
        ['avg excl', (b, x) => b.avgpool('a', b.conv('c', x, 4, 1), 3, 2, 1, false)],
      ];
      for (const [what, f] of pools) {
        const g = graphOf(what, 4, [10, 9], f);
        assert.deepEqual(await check(what, g, [2, 4, 10, 9]), []);
      }
      // Ties at non-zero values, on the input (its gradient is compared): the first maximum in row-major
      // order takes the gradient, as PyTorch's.
      const g = graphOf('max ties', 3, [9, 8], (b, x) => b.conv('c', b.maxpool('m', x, 3, 2, 1), 4, 1));
      const levels = (x: Tensor) => x.data.forEach((v, i) => (x.data[i] = Math.round(v * 2) / 2));
      assert.deepEqual(await check('max ties', g, [2, 3, 9, 8], { seed: 3, inputValues: levels }), []);
    });

    it('global average pool, flatten, linear with and without bias', async () => {
      const g = graphOf('head', 6, [5, 5], (b, x) =>
        b.linear(
          'fc2',
          b.relu('r', b.linear('fc1', b.flatten('f', b.globalAvgPool('g', x), 6), 9)),
          5,
          false,
        ),
      );
      assert.deepEqual(await check('head', g, [3, 6, 5, 5]), []);
    });

    it('ops without a kernel run their reference and gradient on the CPU (softmax, adaptive pool, a shuffle)', async () => {
      const g = graphOf('cpu', 6, [6, 6], (b, x) => {
        const y = b.relu('r', b.shuffle('s', b.conv('c', x, 6, 1), 3, 'paper')); // a ReLU reads it: a copy
        const pooled = b.adaptiveAvgPool('ap', y, 2);
        return b.softmax('sm', b.linear('fc', b.flatten('f', pooled, 24), 5));
      });
      assert.deepEqual(await check('cpu', g, [2, 6, 6, 6]), ['s', 'ap', 'sm']);
    });
  });

  const CASES: TrainingCase[] = [AUTHORS_UNIT, PAPER_UNIT(2)];

  describe('whole ShuffleNets equal the reference autograd tape', () => {
    for (const c of CASES) {
      it(c.name, async () => {
        const graph = buildPreset(c.arch, c.options);
        const init = initWeights(graph, 1);
        const x = randomInput(c.input, 2);
        const labels = Int32Array.from({ length: c.input[0]! }, (_, i) => i % 7);
        const refWeights = copyWeights(init);
        const ref = forwardWithTape(graph, refWeights, x, { training: true });
        const plan = engine.compileTraining(graph, c.input);
        assert.deepEqual(plan.cpuNodes, []);
        // Gradient buffers share memory by lifetime.
        assert.ok(plan.bytes.gradients * 3 < plan.bytes.unplannedGradients, JSON.stringify(plan.bytes));
        const weights = copyWeights(init);
        const out = await plan.forward(weights, x);
        assert.ok(maxError(out.data, ref.output.data, 0) < 1e-4, 'logits');
        const gradOut = softmaxCrossEntropy(out, labels, 0.1).grad;
        const grads = await plan.backward(gradOut);
        const tape = { graph, weights, values: await plan.forwardValues(), ctx: { training: true } };
        const refGrads = backward(tape, gradOut).params;
        let gmax = 0;
        for (const t of refGrads.values()) for (const v of t.data) gmax = Math.max(gmax, Math.abs(v));
        assert.deepEqual([...grads.keys()].sort(), [...refGrads.keys()].sort());
        for (const [k, t] of refGrads) {
          const e = maxError(grads.get(k)!.data, t.data, 1e-3 * gmax);
          assert.ok(e < 1e-4, `gradient of ${k} off by ${e}`);
        }
        for (const [k, t] of refWeights) {
          if (/running_/.test(k)) assert.ok(maxError(weights.get(k)!.data, t.data, 1e-4) < 1e-3, k);
        }
        // A second step on the same plan gives the same gradients (no state leaks between steps), with one
        // submission per forward and one per backward.
        const queue = engine.device.queue;
        const submit = queue.submit.bind(queue);
        let submits = 0;
        queue.submit = (buffers) => {
          submits++;
          submit(buffers);
        };
        try {
          const again = await plan.backward(
            softmaxCrossEntropy(await plan.forward(copyWeights(init), x), labels, 0.1).grad,
          );
          assert.equal(submits, 2);
          for (const [k, t] of grads) assert.deepEqual(again.get(k)!.data, t.data, `step 2, ${k}`);
        } finally {
          queue.submit = submit;
        }
        plan.dispose();
      });
    }

    it('sums split into many chunks, on an arena in several buffers: the reference, and the same bits', async () => {
      const c = CASES[0]!;
      const graph = buildPreset(c.arch, c.options);
      const init = initWeights(graph, 3);
      const x = randomInput(c.input, 4);
      const labels = Int32Array.from({ length: c.input[0]! }, (_, i) => i % 5);
      const ref = forwardWithTape(graph, copyWeights(init), x, { training: true });
      const step = async (o: Parameters<WebGpuEngine['compileTraining']>[2]) => {
        const plan = engine.compileTraining(graph, c.input, o);
        try {
          const weights = copyWeights(init);
          const out = await plan.forward(weights, x);
          const grads = await plan.backward(softmaxCrossEntropy(out, labels, 0).grad);
          return { segments: plan.segments.length, out, grads, weights, values: await plan.forwardValues() };
        } finally {
          plan.dispose();
        }
      };
      // Chunks of 16 elements: every BN, bias and weight-gradient sum runs over many chunks.
      const one = await step({ chunkElements: 16 });
      const split = await step({ chunkElements: 16, segmentFloats: 400_000 });
      assert.equal(one.segments, 1);
      assert.ok(split.segments > 3, `${split.segments} segments`);
      assert.ok(maxError(one.out.data, ref.output.data, 0) < 1e-4, 'logits');
      const refGrads = backward(
        { graph, weights: one.weights, values: one.values, ctx: { training: true } },
        softmaxCrossEntropy(one.out, labels, 0).grad,
      ).params;
      let gmax = 0;
      for (const t of refGrads.values()) for (const v of t.data) gmax = Math.max(gmax, Math.abs(v));
      for (const [k, t] of refGrads) {
        const e = maxError(one.grads.get(k)!.data, t.data, 1e-3 * gmax);
        assert.ok(e < 1e-4, `gradient of ${k} off by ${e}`);
        assert.deepEqual(split.grads.get(k)!.data, one.grads.get(k)!.data, `segmented: ${k}`);
      }
      assert.deepEqual(split.out.data, one.out.data);
      // A block larger than one buffer gets a message that names it.
      assert.throws(
        () => engine.compileTraining(graph, c.input, { segmentFloats: 50_000 }),
        /training needs the parameter gradients of 269312 bytes, the device binds at most 199936 per buffer/,
      );
    });

    it('whole steps on the device (loss, backward, SGD or AdamW) equal forward, loss, backward and the update on the CPU', async () => {
      const c = CASES[1]!;
      const graph = buildPreset(c.arch, c.options);
      const labels = Int32Array.from({ length: c.input[0]! }, (_, i) => (3 * i + 1) % 10);
      const o = { momentum: 0.9, dampening: 0, nesterov: true, weightDecay: 5e-3, decays: decaysByDefault };
      const largest = (ts: Iterable<Tensor>) =>
        Math.max(...[...ts].map((t) => Math.max(...t.data.map(Math.abs))));
      const close = (a: Tensor, b: Tensor, what: string, floor: number) => {
        const e = maxError(a.data, b.data, floor);
        assert.ok(e < 1e-4, `${what}: off by ${e}`);
      };
      // AdamW moves every parameter by about lr whatever its gradient's size, and some gradients here are
      // rounding noise (a BN's bias before a conv and another BN): eps 1e-3 keeps those updates small.
      for (const make of [() => sgd(o), () => adamw({ weightDecay: 0.05, eps: 1e-3 })]) {
        const dev = randomized(graph, 5);
        const split = engine.compileTraining(graph, c.input);
        let plan = engine.compileTraining(graph, c.input);
        const opt = make();
        plan.load(dev, opt);
        await assert.rejects(plan.step(undefined, labels, 0.1), /a step without an input before any input/);
        for (const [k, lr] of [0.1, 0.05, 0.02].entries()) {
          // Each step from the same weights and state: forward and backward on the device (checked above),
          // the loss and the update on the CPU; then the whole step on the device.
          const what = `${opt.kind} step ${k + 1}`;
          const x = randomInput(c.input, k === 1 ? 6 : 6 + k);
          const cpu = copyWeights(dev);
          const out = await split.forward(cpu, x);
          const want = softmaxCrossEntropy(out, labels, 0.1);
          opt.step(learnable(graph, cpu), await split.backward(want.grad), lr);
          // Step 2 runs on step 1's batch again, left on the device.
          const got = await plan.step(k === 1 ? undefined : x, labels, lr, 0.1);
          close(got.output, out, `${what}: logits`, 0);
          assert.ok(Math.abs(got.loss - want.loss) < 1e-5 * want.loss, `${what}: loss ${got.loss}`);
          assert.equal(got.correct, want.correct);
          const state = await plan.sync(dev);
          const cpuState = opt.state();
          assert.deepEqual([...state.keys()].sort(), [...cpuState.keys()].sort());
          for (const [key, t] of cpuState) {
            const slot = key.slice(0, key.indexOf('.'));
            const floor =
              1e-3 * largest([...cpuState].filter(([k2]) => k2.startsWith(`${slot}.`)).map(([, v]) => v));
            close(state.get(key)!, t, `${what}: ${key}`, floor);
          }
          for (const [key, t] of cpu) close(dev.get(key)!, t, `${what}: ${key}`, 1e-3);
          // The device's state is the next CPU step's; after step 2, a fresh plan resumes from it.
          opt.loadState(state);
          if (k === 1) {
            plan.dispose();
            plan = engine.compileTraining(graph, c.input);
            plan.load(dev, opt, state);
          }
        }
        split.dispose();
        await assert.rejects(
          plan.step(randomInput(c.input, 1), [0, 10], 0.1),
          /label 10 of row 1 is not a class in \[0, 10\)/,
        );
        await plan.forward(dev, randomInput(c.input, 1));
        await assert.rejects(plan.step(randomInput(c.input, 1), labels, 0.1), /step\(\) before load\(\)/);
        plan.dispose();
      }
    });

    it('names the shape that does not fit the plan, and refuses steps after dispose', async () => {
      const c = CASES[0]!;
      const graph = buildPreset(c.arch, c.options);
      const plan = engine.compileTraining(graph, c.input);
      await assert.rejects(
        plan.forward(initWeights(graph, 0), randomInput([4, 1, 32, 32], 0)),
        /input \[4, 1, 32, 32\] does not fit the plan's \[4, 1, 28, 28\]/,
      );
      plan.dispose();
      await assert.rejects(plan.forward(initWeights(graph, 0), randomInput(c.input, 0)), /disposed/);
    });

    it('refuses optimizer state it cannot take, and an arena in more buffers than a kernel binds', () => {
      const c = CASES[0]!;
      const graph = buildPreset(c.arch, c.options);
      const weights = initWeights(graph, 0);
      const plan = engine.compileTraining(graph, c.input);
      try {
        const names = [...learnable(graph, weights).keys()];
        const one = new Map([[`momentum_buffer.${names[0]}`, weights.get(names[0]!)!]]);
        assert.throws(() => plan.load(weights, sgd({ momentum: 0.9 }), one), /covers some parameters only/);
        const state = new Map<string, Tensor>();
        names.forEach((n, i) => {
          state.set(`step.${n}`, new Tensor([], Float32Array.of(i ? 3 : 2)));
          state.set(`exp_avg.${n}`, weights.get(n)!);
          state.set(`exp_avg_sq.${n}`, weights.get(n)!);
        });
        assert.throws(
          () => plan.load(weights, adamw(), state),
          /AdamW's step counts differ between parameters \(2, 3\)/,
        );
        const { kind } = sgd();
        assert.throws(() => plan.load(weights, { kind }), /no device rule for the sgd optimizer/);
      } finally {
        plan.dispose();
      }
      assert.throws(
        () => engine.compileTraining(graph, c.input, { segmentFloats: 300_000 }),
        /training needs more than 8 arena buffers of 1199872 bytes \(at most 8 by the arena's addressing/,
      );
    });
  });

  const haveData = existsSync(FASHION_MNIST_DIR);
  describe('the trainer on WebGPU (Fashion-MNIST)', { skip: !haveData && 'no Fashion-MNIST' }, () => {
    let all: ReturnType<typeof loadFashionMnist> | undefined;
    const config = (images: number, o: Partial<TrainConfig>): TrainConfig => {
      all ??= loadFashionMnist(FASHION_MNIST_DIR, 'train');
      const graph = buildPreset('shufflenet_v1_g3_0.25x', {
        inputChannels: 1,
        numClasses: 10,
        smallInput: true,
        inputSize: [28, 28],
      });
      return {
        graph,
        weights: initWeights(graph, 3),
        train: limitSet(all, images),
        normalize: FASHION_MNIST_STATS,
        batchSize: 16,
        epochs: 1,
        optimizer: sgd({ momentum: 0.9 }),
        schedule: lrSchedule({ kind: 'constant', lr: 0.01, totalSteps: 4 }),
        seed: 11,
        ...o,
      };
    };

    it('steps through the trainer: the reference gradients on real batches; 64 images, lower loss', async () => {
      const gpu = webgpuTraining(engine);
      // The reference gradient at the plan's own forward values (see above), checked at every step.
      let checked = 0;
      const one = config(16, {});
      one.backend = {
        name: gpu.name,
        forward: (graph, weights, input) => gpu.forward(graph, weights, input),
        async backward(tape, gradOut) {
          const grads = await gpu.backward(tape, gradOut);
          const values = await (tape as WebGpuTrainPlan).forwardValues();
          const ref = backward(
            { graph: one.graph, weights: one.weights, values, ctx: { training: true } },
            gradOut,
          );
          let gmax = 0;
          for (const t of ref.params.values()) for (const v of t.data) gmax = Math.max(gmax, Math.abs(v));
          for (const [k, t] of ref.params) {
            const e = maxError(grads.get(k)!.data, t.data, 1e-3 * gmax);
            assert.ok(e < 1e-4, `step ${checked + 1}: gradient of ${k} off by ${e}`);
          }
          checked++;
          return grads;
        },
      };
      await train(one);
      assert.equal(checked, 1);

      const cfg = config(64, { backend: gpu, epochs: 2 });
      const all = makeBatch(
        cfg.train,
        Int32Array.from({ length: 64 }, (_, i) => i),
        cfg.normalize,
      );
      const loss = () => {
        const y = forwardWithTape(cfg.graph, copyWeights(cfg.weights), all.input, { training: true }).output;
        return softmaxCrossEntropy(y, all.labels).loss;
      };
      const before = loss();
      const t0 = performance.now();
      const r = await train(cfg);
      const seconds = (performance.now() - t0) / 1000;
      assert.equal(r.step, 8);
      const afterLoss = loss();
      console.log(
        `WebGPU: 8 steps in ${seconds.toFixed(1)} s, loss on the 64 images ${before} -> ${afterLoss}`,
      );
      assert.ok(afterLoss < before - 0.1, `loss on the 64 images ${before} -> ${afterLoss}`);
    });

    it('whole steps on the device through the trainer: as separate steps; stopped and resumed, the same bits', async () => {
      const rule = { momentum: 0.9, nesterov: true, weightDecay: 5e-4 };
      const o = (more: Partial<TrainConfig>) => config(64, { epochs: 1, optimizer: sgd(rule), ...more });
      const gpu = webgpuTraining(engine);
      let wholeSteps = 0;
      const step = gpu.step!;
      gpu.step = (...a) => (wholeSteps++, step(...a));
      // One step, then the same on separate steps (the loss and SGD on the CPU). Later steps drift apart
      // by more than rounding: float32 differences grow through the batch statistics.
      const one = o({ backend: gpu, stopAtStep: 1 });
      await train(one);
      assert.equal(wholeSteps, 1);
      const separate = o({ backend: { ...webgpuTraining(engine), step: undefined }, stopAtStep: 1 });
      await train(separate);
      for (const [k, t] of separate.weights) {
        const e = maxError(one.weights.get(k)!.data, t.data, 1e-2);
        assert.ok(e < 1e-5, `${k} off by ${e}`);
      }
      // Four steps straight, and stopped after step 2 (the checkpoint copies the device's weights and
      // momentum back), then resumed on a new plan: the same bits.
      const straight = o({ backend: webgpuTraining(engine) });
      await train(straight);
      const store = memoryStore();
      await train(o({ backend: webgpuTraining(engine), store, stopAtStep: 2 }));
      const again = o({ backend: webgpuTraining(engine), store, resume: true });
      const r = await train(again);
      assert.equal(r.resumedFrom, 2);
      for (const [k, t] of straight.weights) assert.deepEqual(again.weights.get(k)!.data, t.data, k);
    });

    // The bundle that the GPU machine runs (scripts/device-gpu.sh check) has no CLI source beside it.
    const cli = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
    it(
      'shufflenet train --backend webgpu',
      { skip: !existsSync(cli) && 'no src/cli/main.ts (a bundle)' },
      () => {
        const out = mkdtempSync(join(tmpdir(), 'shufflenet-webgpu-'));
        try {
          const args = ['--dataset', 'fashion-mnist', '--arch', 'shufflenet_v1_g3_0.25x', '--out', out];
          const more = [
            '--limit',
            '32',
            '--test-limit',
            '20',
            '--epochs',
            '1',
            '--batch-size',
            '16',
            '--backend',
            'webgpu',
          ];
          const train = (...extra: string[]) =>
            spawnSync(
              process.execPath,
              ['--import', 'tsx', 'src/cli/main.ts', 'train', ...args, ...more, ...extra],
              {
                cwd: fileURLToPath(new URL('..', import.meta.url)),
                encoding: 'utf8',
                env: {
                  ...process.env,
                  SHUFFLENET_WEBGPU_BACKEND: process.env.SHUFFLENET_WEBGPU_BACKEND ?? 'opengles',
                },
              },
            );
          const r = train('--gpu-tiles', '16x32x8/16x16x64');
          assert.equal(r.status, 0, r.stderr);
          assert.match(r.stderr, /backend: webgpu \(.*\), 1x1 tiles 16x32x8\/16x16x64\n/);
          assert.match(r.stderr, /step 2\/2/);
          assert.ok(existsSync(join(out, 'model.safetensors')));
          const bad = train('--gpu-tiles', '32x64x16/32x20x32');
          assert.notEqual(bad.status, 0);
          assert.match(
            bad.stderr,
            /--gpu-tiles: weight-gradient tile 32x20x32: needs TR a multiple of 8, TC of 16/,
          );
        } finally {
          rmSync(out, { recursive: true, force: true });
        }
      },
    );
  });
});
