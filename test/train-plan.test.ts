import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backward, forwardWithTape } from '../src/autograd/tape.js';
import { FASHION_MNIST_STATS, limitSet, sliceSet } from '../src/data/datasets.js';
import { buildPreset } from '../src/models/registry.js';
import { initWeights } from '../src/nn/init.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/node/datasets.js';
import { createNodeEngine } from '../src/node/engine.js';
import { ThreadPool } from '../src/node/threads.js';
import { enableRelaxedSimd } from '../src/node/wasm.js';
import type { Engine } from '../src/runtime/engine.js';
import { Tensor } from '../src/tensor/tensor.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { lrSchedule, sgd } from '../src/train/optim.js';
import {
  engineTraining,
  evaluate,
  memoryStore,
  train,
  type StepMetrics,
  type TrainConfig,
} from '../src/train/trainer.js';
import { existsSync } from 'node:fs';
import {
  AUTHORS_UNIT,
  copyWeights,
  maxError,
  PAPER_UNIT,
  randomInput,
  type TrainingCase,
} from './helpers/training.js';

const CASES: TrainingCase[] = [
  AUTHORS_UNIT,
  PAPER_UNIT(3),
  {
    // The ImageNet stem: stride-2 3x3 conv and max pool.
    name: 'g=1 0.25x, ImageNet stem, 3x64x64',
    arch: 'shufflenet_v1_g1_0.25x',
    options: { inputChannels: 3, numClasses: 7, inputSize: [64, 64] },
    input: [2, 3, 64, 64],
  },
  {
    name: 'no shuffle, g=3 0.25x',
    arch: 'shufflenet_v1_g3_0.25x',
    options: { inputChannels: 1, numClasses: 10, smallInput: true, inputSize: [28, 28], shuffle: false },
    input: [2, 1, 28, 28],
  },
];

const relaxed = enableRelaxedSimd();
const engines: { name: string; engine: Engine }[] = [];
before(async () => {
  for (const threads of [1, 2]) {
    for (const r of relaxed ? [false, true] : [false]) {
      engines.push({
        name: `${r ? 'relaxed' : 'simd'} x${threads}`,
        engine: await createNodeEngine({ threads, relaxed: r }),
      });
    }
  }
});
after(async () => {
  for (const { engine } of engines) if (engine.parallel instanceof ThreadPool) await engine.parallel.close();
});

describe('training plans equal the reference autograd tape (simd, relaxed; 1 and 2 threads)', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const graph = buildPreset(c.arch, c.options);
      const init = initWeights(graph, 1);
      const x = randomInput(c.input, 2);
      const labels = Int32Array.from({ length: c.input[0]! }, (_, i) => i % 7);
      const refWeights = copyWeights(init);
      const ref = forwardWithTape(graph, refWeights, x, { training: true });
      const bits: Map<string, Tensor>[] = [];
      for (const { name, engine } of engines) {
        const weights = copyWeights(init);
        const plan = engine.compileTraining(graph, c.input);
        const out = plan.forward(weights, x);
        assert.ok(maxError(out.data, ref.output.data, 0) < 1e-4, `${name}: logits`);
        const gradOut = softmaxCrossEntropy(out, labels, 0.1).grad;
        const grads = plan.backward(gradOut);
        // The reference gradient at the plan's own forward values: float32 rounding may flip a ReLU whose
        // input is ~1e-6 from zero, and batch norm over a tiny batch turns that into a visible difference.
        const tape = { graph, weights, values: plan.forwardValues(), ctx: { training: true } };
        const refGrads = backward(tape, gradOut).params;
        let gmax = 0;
        for (const t of refGrads.values()) for (const v of t.data) gmax = Math.max(gmax, Math.abs(v));
        assert.deepEqual([...grads.keys()].sort(), [...refGrads.keys()].sort());
        for (const [k, t] of refGrads) {
          const e = maxError(grads.get(k)!.data, t.data, 1e-3 * gmax);
          assert.ok(e < 1e-4, `${name}: gradient of ${k} off by ${e}`);
        }
        // BN running statistics move as PyTorch's do (unbiased variance, momentum 0.1).
        for (const [k, t] of refWeights) {
          if (!/running_/.test(k)) continue;
          assert.ok(maxError(weights.get(k)!.data, t.data, 1e-4) < 1e-3, `${name}: ${k}`);
        }
        // A second step on the same plan gives the same gradients (no state leaks between steps).
        const again = plan.backward(
          softmaxCrossEntropy(plan.forward(copyWeights(init), x), labels, 0.1).grad,
        );
        for (const [k, t] of grads) assert.deepEqual(again.get(k)!.data, t.data, `${name}: step 2, ${k}`);
        bits.push(grads);
        plan.dispose();
      }
      // The kernels split work into disjoint parts: any number of threads gives the same bits.
      for (let i = 0; i < engines.length; i++) {
        const same = engines.findIndex((e) => e.name.split(' ')[0] === engines[i]!.name.split(' ')[0]);
        for (const [k, t] of bits[i]!)
          assert.deepEqual(t.data, bits[same]!.get(k)!.data, `${engines[i]!.name}: ${k}`);
      }
    });
  }

  it('names the shape that does not fit the plan', () => {
    const c = CASES[0]!;
    const graph = buildPreset(c.arch, c.options);
    const plan = engines[0]!.engine.compileTraining(graph, c.input);
    assert.throws(
      () => plan.forward(initWeights(graph, 0), randomInput([4, 1, 32, 32], 0)),
      /input \[4, 1, 32, 32\] does not fit the plan's \[4, 1, 28, 28\]/,
    );
    const missing = initWeights(graph, 0);
    missing.delete('first_conv.1.running_var');
    assert.throws(
      () => plan.forward(missing, randomInput(c.input, 0)),
      /weight 'first_conv.1.running_var' is missing or not \[12\]/,
    );
    plan.dispose();
  });
});

const haveData = existsSync(FASHION_MNIST_DIR);

describe('training on the WASM kernels (Fashion-MNIST)', { skip: !haveData && 'no Fashion-MNIST' }, () => {
  const all = haveData ? loadFashionMnist(FASHION_MNIST_DIR, 'train') : undefined;
  const ARCH = 'shufflenet_v1_g3_0.25x';
  const config = (engine: Engine, o: Partial<TrainConfig> & { images: number }): TrainConfig => {
    const graph = buildPreset(ARCH, {
      inputChannels: 1,
      numClasses: 10,
      smallInput: true,
      inputSize: [28, 28],
    });
    const batchSize = o.batchSize ?? 32;
    const epochs = o.epochs ?? 1;
    const set = limitSet(all!, o.images);
    const total = epochs * Math.floor(set.count / batchSize);
    return {
      graph,
      weights: initWeights(graph, 3),
      train: set,
      normalize: FASHION_MNIST_STATS,
      augment: { randomCrop: { padding: 2 }, flip: true },
      batchSize,
      epochs,
      optimizer: sgd({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 }),
      schedule: lrSchedule({
        kind: 'linear',
        lr: 0.05,
        totalSteps: total,
        warmupSteps: Math.min(20, total - 1),
      }),
      labelSmoothing: 0.1,
      seed: 11,
      backend: engineTraining(engine),
      ...o,
    };
  };

  it('learns: 4,800 images, 3 epochs, well above chance on 1,000 held-out images', async () => {
    const engine = engines.find((e) => e.name.endsWith('x2'))!.engine;
    const steps: StepMetrics[] = [];
    const cfg = config(engine, { images: 4800, epochs: 3, onStep: (m) => void steps.push(m) });
    const held = sliceSet(all!, 50_000, 51_000);
    const t0 = performance.now();
    const r = await train(cfg);
    const seconds = (performance.now() - t0) / 1000;
    const result = evaluate(cfg.graph, cfg.weights, held, FASHION_MNIST_STATS);
    const mean = (xs: StepMetrics[]) => xs.reduce((s, m) => s + m.loss, 0) / xs.length;
    const [first, last] = [mean(steps.slice(0, 10)), mean(steps.slice(-10))];
    console.log(
      `WASM run: ${r.step} steps in ${seconds.toFixed(1)} s; train loss ${first.toFixed(3)} -> ${last.toFixed(3)}; ` +
        `held-out top-1 ${(result.top1 * 100).toFixed(1)}%`,
    );
    assert.equal(r.step, 450);
    assert.ok(last < first - 0.8, `loss ${first} -> ${last}`);
    assert.ok(result.top1 > 0.7, `held-out top-1 ${result.top1} (chance 0.1)`);
  });

  it('resumes exactly on the WASM kernels, with a different number of threads', async () => {
    const [one, two] = [engines[0]!.engine, engines.find((e) => e.name.endsWith('x2'))!.engine];
    const straight = config(one, { images: 96 });
    await train(straight);
    const store = memoryStore();
    assert.equal((await train(config(two, { images: 96, store, stopAtStep: 1 }))).step, 1);
    const resumed = config(one, { images: 96, store, resume: true });
    assert.equal((await train(resumed)).step, 3);
    for (const [k, t] of straight.weights) assert.deepEqual(resumed.weights.get(k)!.data, t.data, k);
  });
});
