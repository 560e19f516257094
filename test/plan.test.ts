import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MEGVII_PREPROCESS, preprocess } from '../src/data/image.js';
import { IMAGENET_LABELS, topK } from '../src/data/labels.js';
import { createModel, execute, PRESET_NAMES, seededRandom, Tensor, type Model } from '../src/index.js';
import { createNodeEngine } from '../src/node/engine.js';
import { loadImage } from '../src/node/image.js';
import { ThreadPool } from '../src/node/threads.js';
import { loadModel } from '../src/node/weights.js';
import { createEngine, type Engine } from '../src/runtime/engine.js';
import { lower } from '../src/runtime/lower.js';

const shared = join(fileURLToPath(new URL('..', import.meta.url)), '..', 'shared');

/** Non-trivial BN statistics, so folding BN into the convolutions is really exercised. */
function model(name: string): Model {
  const m = createModel(name, { seed: 3 });
  const r = seededRandom(11);
  for (const [k, t] of m.weights) {
    if (k.endsWith('running_var')) t.data.forEach((_, i) => (t.data[i] = 0.5 + r()));
    if (k.endsWith('running_mean') || (k.endsWith('.bias') && !k.startsWith('classifier'))) {
      t.data.forEach((_, i) => (t.data[i] = (r() - 0.5) / 5));
    }
  }
  return m;
}

function assertClose(what: string, actual: Float32Array, expected: Tensor): void {
  const scale = Math.max(...expected.data.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < expected.size; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected.data[i]!));
  assert.ok(worst <= 1e-4 * scale, `${what}: max |diff| ${worst} vs logit scale ${scale}`);
}

describe('lowering', () => {
  it('fuses a ShuffleNet into convolutions only: BN, ReLU, add, concat and shuffle cost no step', () => {
    for (const options of [{}, { shuffleOrder: 'paper' as const, shufflePosition: 'before-dw' as const }]) {
      const m = createModel('shufflenet_v1_g3_1.0x', options);
      const p = lower(m.graph, m.weights, [1, 3, 224, 224]);
      const kinds = p.ops.map((o) => o.k);
      assert.deepEqual([...new Set(kinds)].sort(), [
        'avgpool',
        'conv',
        'depthwise',
        'gap',
        'linear',
        'maxpool',
        'pointwise',
      ]);
      assert.equal(kinds.length, 1 + 1 + 32 + 16 + 3 + 1 + 1);
      // Every shuffle became a channel map of a depthwise conv.
      assert.equal(p.ops.filter((o) => o.k === 'depthwise' && o.outMap).length, 16);
    }
  });
});

const engines: { name: string; engine: Engine }[] = [];
before(async () => {
  // The core's engine: the non-shared build, for runtimes without SharedArrayBuffer.
  engines.push({ name: 'core simd x1', engine: await createEngine() });
  for (const threads of [1, 2]) {
    for (const relaxed of [false, true]) {
      engines.push({
        name: `${relaxed ? 'relaxed' : 'simd'} x${threads}`,
        engine: await createNodeEngine({ threads, relaxed }),
      });
    }
  }
});
after(async () => {
  for (const { engine } of engines) if (engine.parallel instanceof ThreadPool) await engine.parallel.close();
});

describe('plans equal the reference kernels within 1e-4 (core engine; simd, relaxed; 1 and 2 threads)', () => {
  for (const name of PRESET_NAMES) {
    it(name, () => {
      const m = model(name);
      // Batch 1 at the design size; batch 8 at a small size (AlexNet's adaptive pool then runs as a fallback).
      for (const [batch, size] of [
        [1, 224],
        [8, name === 'alexnet' ? 96 : 64],
      ] as const) {
        const x = Tensor.random([batch, 3, size, size], seededRandom(batch));
        const expected = execute(m.graph, m.weights, x);
        for (const { name: e, engine } of engines) {
          const plan = engine.compile(m, { batch, height: size, width: size, minParallelWork: 0 });
          assertClose(`${e} batch ${batch} ${size}x${size}`, plan.run(x.data), expected);
          plan.dispose();
        }
      }
    });
  }
});

describe('plan memory', () => {
  it('repeated inference allocates nothing after warm-up', () => {
    for (const { engine } of engines) {
      const plan = engine.compile(model('shufflenet_v1_g3_0.5x'), { batch: 2 });
      const x = Tensor.random([2, 3, 224, 224], seededRandom(1)).data;
      const out = new Float32Array(2000);
      plan.run(x, out);
      const [allocations, bytes] = [plan.allocations, engine.kernels.memory.buffer.byteLength];
      for (let i = 0; i < 5; i++) plan.run(x, out);
      assert.equal(plan.allocations, allocations);
      assert.equal(engine.kernels.memory.buffer.byteLength, bytes);
      plan.dispose();
    }
  });

  it('reuses activation buffers: the arena is far smaller than all activations together', () => {
    const plan = engines[0]!.engine.compile(model('shufflenet_v1_g3_1.0x'));
    assert.ok(plan.bytes.arena * 4 < plan.bytes.unplanned, JSON.stringify(plan.bytes));
    plan.dispose();
  });

  it('disposing plans gives their memory back', () => {
    const { engine } = engines[0]!;
    const before = engine.memoryBytes;
    const a = engine.compile(model('shufflenet_v1_g8_0.5x'));
    const b = engine.compile(model('shufflenet_v1_g3_0.5x'));
    a.dispose();
    assert.ok(engine.memoryBytes > before);
    b.dispose();
    assert.equal(engine.memoryBytes, before);
    assert.throws(() => b.run(new Float32Array(3 * 224 * 224)), /disposed/);
  });

  it('names the expected size for a wrong input', () => {
    const plan = engines[0]!.engine.compile(model('shufflenet_v1_g3_0.25x'));
    assert.throws(
      () => plan.run(new Float32Array(10)),
      /plan for input \[1, 3, 224, 224\] needs 150528 values, got 10/,
    );
    plan.dispose();
  });
});

const skip =
  existsSync(join(shared, 'weights')) && existsSync(join(shared, 'images'))
    ? false
    : 'no ../shared weights/images';
describe('the official weights through the plan', { skip }, () => {
  for (const g of [3, 8]) {
    it(`0.5x g=${g} labels the photos as the authors' model does`, async () => {
      const { model: m } = await loadModel(join(shared, 'weights', `shufflenet_v1_g${g}_0.5x.pth.tar`));
      for (const { name, engine } of engines) {
        const plan = engine.compile(m);
        for (const [file, index] of [
          ['chelsea.png', 285],
          ['coffee.png', 967],
          ['camera.png', 872],
          ['grace_hopper.jpg', 457],
        ] as const) {
          const x = preprocess(await loadImage(join(shared, 'images', file)), MEGVII_PREPROCESS);
          assert.equal(topK(plan.run(x.data), 1, IMAGENET_LABELS)[0]!.index, index, `${name} ${file}`);
        }
        plan.dispose();
      }
    });
  }
});
