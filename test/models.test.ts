import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildPreset,
  ConfigError,
  createModel,
  complexity,
  execute,
  inferShapes,
  OpError,
  PRESET_NAMES,
  presetFamily,
  seededRandom,
  shufflenetConfig,
  shufflenetWidths,
  SHUFFLENET_GROUPS,
  SHUFFLENET_SCALES,
  Tensor,
  validateShuffleNetConfig,
  buildShuffleNet,
  AUTHORS_WIDTHS,
  shufflePermutation,
} from '../src/index.js';

const mflops = (n: number) => Math.round(n / 1e6);

describe('complexity: the paper (SHUFFLENET.md §3)', () => {
  it('reproduces Table 1 at 1x: 143/140/137/133/137 MFLOPs conv-only for g = 1/2/3/4/8', () => {
    const expected: Record<number, number> = { 1: 143, 2: 140, 3: 137, 4: 133, 8: 137 };
    for (const g of SHUFFLENET_GROUPS) {
      const c = complexity(buildPreset(`shufflenet_v1_g${g}_1.0x`));
      assert.equal(mflops(c.macsConvOnly), expected[g], `g=${g}: ${c.macsConvOnly}`);
    }
  });

  it('gives the exact counts of §3', () => {
    const g3 = complexity(buildPreset('shufflenet_v1_g3_1.0x'));
    assert.equal(g3.macs, 137_460_672);
    assert.equal(g3.macsConvOnly, 136_500_672);
    assert.equal(g3.weights, 1_840_248);
    assert.equal(g3.params, 1_864_728);
    const g8 = complexity(buildPreset('shufflenet_v1_g8_1.0x'));
    assert.equal(g8.macs, 138_365_952);
    assert.equal(g8.weights, 2_394_600);
    const half3 = complexity(buildPreset('shufflenet_v1_g3_0.5x'));
    assert.equal(half3.macs, 37_589_856);
    assert.equal(half3.weights, 705_084);
    assert.equal(half3.params, 717_324);
    assert.equal(complexity(buildPreset('shufflenet_v1_g8_0.5x')).params, 1_010_448);
  });

  it('gives 292 and 524 MFLOPs (conv + FC) for 1.5x and 2x g=3 (Table 5)', () => {
    assert.equal(mflops(complexity(buildPreset('shufflenet_v1_g3_1.5x')).macs), 292);
    assert.equal(mflops(complexity(buildPreset('shufflenet_v1_g3_2.0x')).macs), 524);
  });

  it('keeps every g near the paper complexity at 0.5x (38) and 0.25x (13), Table 2', () => {
    for (const g of SHUFFLENET_GROUPS) {
      const half = complexity(buildPreset(`shufflenet_v1_g${g}_0.5x`)).macsConvOnly / 1e6;
      const quarter = complexity(buildPreset(`shufflenet_v1_g${g}_0.25x`)).macsConvOnly / 1e6;
      assert.ok(Math.abs(half - 38) / 38 < 0.06, `0.5x g=${g}: ${half}`);
      assert.ok(Math.abs(quarter - 13) / 13 < 0.2, `0.25x g=${g}: ${quarter}`);
    }
  });

  it('counts the comparison networks: MobileNet v1 41/149/325/569 MFLOPs, AlexNet like torchvision', () => {
    const mobile: Record<string, number> = { '0.25': 41, '0.5': 149, '0.75': 325, '1.0': 569 };
    for (const [a, m] of Object.entries(mobile)) {
      assert.equal(mflops(complexity(buildPreset(`mobilenet_v1_${a}`)).macs), m, `mobilenet ${a}`);
    }
    assert.equal(complexity(buildPreset('mobilenet_v1_1.0')).params, 4_231_976);
    const alex = complexity(buildPreset('alexnet'));
    assert.equal(alex.params, 61_100_840); // sum(p.numel()) of torchvision.models.alexnet()
    assert.equal(alex.macs, 714_188_480);
  });

  it('puts the Table 4 units at their complexity (ResNeXt: bottlenecks in multiples of 16 limit its widths)', () => {
    const tolerance: Record<string, number> = { table4_resnext_38m: 0.15, table4_resnext_13m: 0.4 };
    for (const name of PRESET_NAMES.filter((n) => n.startsWith('table4_'))) {
      const target = Number(/_(\d+)m$/.exec(name)![1]);
      const got = complexity(buildPreset(name)).macsConvOnly / 1e6;
      const tol = tolerance[name] ?? 0.05;
      assert.ok(Math.abs(got - target) / target < tol, `${name}: ${got.toFixed(1)} vs ${target}`);
    }
  });

  it('gives every stride-2 unit a non-empty branch (widths grow stage to stage)', () => {
    for (const name of PRESET_NAMES) {
      for (const l of complexity(buildPreset(name)).layers)
        assert.ok(
          l.output.every((d) => d > 0),
          `${name} ${l.name}`,
        );
    }
  });

  it('scales with the input: 480x640 costs about (480*640)/(224*224) times 224x224 for convs', () => {
    const g = buildPreset('shufflenet_v1_g3_1.0x');
    const ratio = complexity(g, 480, 640).macsConvOnly / complexity(g).macsConvOnly;
    assert.ok(Math.abs(ratio - (480 * 640) / (224 * 224)) < 0.3, `ratio ${ratio}`);
  });

  it('reports every layer with a cost, summing to the totals', () => {
    const c = complexity(buildPreset('shufflenet_v1_g8_0.5x'));
    assert.equal(
      c.layers.reduce((s, l) => s + l.macs, 0),
      c.macs,
    );
    assert.equal(
      c.layers.reduce((s, l) => s + l.params, 0),
      c.params,
    );
    const fc = c.layers.find((l) => l.name === 'classifier.0')!;
    assert.equal(fc.macs, 768 * 1000);
  });
});

describe('the ShuffleNet config table', () => {
  it('uses the authors widths for their released models', () => {
    assert.deepEqual(shufflenetWidths(3, 0.5), [12, 120, 240, 480]);
    assert.deepEqual(shufflenetWidths(8, 0.5), [16, 192, 384, 768]);
    assert.deepEqual(shufflenetWidths(3, 1.5), [24, 360, 720, 1440]);
    assert.deepEqual(shufflenetWidths(8, 2.0), [48, 768, 1536, 3072]);
  });

  it('the width rule reproduces the authors stage widths and gives valid groups for every (g, s)', () => {
    for (const [key, widths] of Object.entries(AUTHORS_WIDTHS)) {
      const [g, s] = key.slice(1).split('_').map(Number) as [number, number];
      const base = { 3: [240, 480, 960], 8: [384, 768, 1536] }[g]!;
      const rule = base.map((w) => Math.max(4 * g, Math.round((w * s) / (4 * g)) * 4 * g));
      assert.deepEqual(rule, widths.slice(1), key);
    }
    for (const g of SHUFFLENET_GROUPS) {
      for (const s of SHUFFLENET_SCALES)
        assert.doesNotThrow(() => validateShuffleNetConfig(shufflenetConfig(g, s)));
    }
  });

  it('names parameters like the authors state_dict (SOURCE.md)', () => {
    const g = buildPreset('shufflenet_v1_g3_0.5x');
    const model = createModel('shufflenet_v1_g3_0.5x');
    const names = [...model.weights.keys()];
    assert.equal(names.length, 295 - 49); // the checkpoint's 295 minus the 49 BNs' num_batches_tracked
    assert.equal(names[0], 'first_conv.0.weight');
    assert.deepEqual(model.weights.get('features.0.branch_main_1.0.weight')!.shape, [30, 12, 1, 1]);
    assert.deepEqual(model.weights.get('features.0.branch_main_2.0.weight')!.shape, [108, 10, 1, 1]);
    assert.deepEqual(model.weights.get('features.1.branch_main_1.0.weight')!.shape, [30, 40, 1, 1]);
    assert.deepEqual(model.weights.get('classifier.0.weight')!.shape, [1000, 480]);
    assert.equal(model.weights.has('classifier.0.bias'), false);
    const shuffles = g.nodes.filter((n) => n.op === 'channelshuffle');
    assert.equal(shuffles.length, 16);
    // The authors shuffle after the depthwise conv + BN, in their (inverse) order.
    const i = g.nodes.findIndex((n) => n.name === 'features.0.shuffle');
    assert.equal(g.nodes[i - 1]!.name, 'features.0.branch_main_1.4');
    assert.deepEqual(shuffles[0]!.attrs, { groups: 3, order: 'authors' });
  });

  it('follows the options: no shuffle, paper order before the depthwise conv, g=1 has none', () => {
    const none = buildPreset('shufflenet_v1_g3_1.0x', { shuffle: false });
    assert.equal(none.nodes.filter((n) => n.op === 'channelshuffle').length, 0);
    const paper = buildPreset('shufflenet_v1_g8_1.0x', {
      shuffleOrder: 'paper',
      shufflePosition: 'before-dw',
    });
    const i = paper.nodes.findIndex((n) => n.name === 'features.3.shuffle');
    assert.equal(paper.nodes[i - 1]!.name, 'features.3.branch_main_1.2');
    assert.equal(paper.nodes[i + 1]!.name, 'features.3.branch_main_1.3');
    assert.equal(
      buildPreset('shufflenet_v1_g1_1.0x').nodes.filter((n) => n.op === 'channelshuffle').length,
      0,
    );
    // Shuffling costs nothing: the counts do not change.
    assert.equal(complexity(none).macs, complexity(buildPreset('shufflenet_v1_g3_1.0x')).macs);
  });

  it('rejects impossible configs, naming the widths', () => {
    const bad = { ...shufflenetConfig(8, 1), stages: [384, 768, 1540] as const };
    assert.throws(
      () => buildShuffleNet('custom', bad),
      (e: Error) => e instanceof ConfigError && /1540/.test(e.message),
    );
    assert.throws(() => shufflenetWidths(5, 1), /groups must be one of 1, 2, 3, 4, 8/);
    assert.throws(() => shufflenetWidths(3, 0.75), /scale one of 0.25, 0.5, 1, 1.5, 2/);
  });

  it('rejects unknown presets and ShuffleNet options on other families, listing the choices', () => {
    assert.throws(() => buildPreset('shufflenet_v1_g5_1.0x'), /g in \{1, 2, 3, 4, 8\}/);
    assert.throws(() => buildPreset('resnet50'), /valid presets: shufflenet_v1_g1_0.25x/);
    assert.throws(() => buildPreset('alexnet', { shuffle: false }), /applies to ShuffleNet models only/);
    assert.throws(
      () => buildPreset('alexnet', { smallInput: true }),
      /option smallInput applies to ShuffleNet and MobileNet models only/,
    );
  });

  it("MobileNet's small-input stem downsamples 8x, not 32x (4x4 before the pool at 32x32)", () => {
    for (const [smallInput, side] of [
      [false, 1],
      [true, 4],
    ] as const) {
      const g = buildPreset('mobilenet_v1_0.25', { smallInput, inputSize: [32, 32], numClasses: 10 });
      const pool = g.nodes.find((n) => n.name === 'pool')!;
      const shapes = inferShapes(g, [1, 3, 32, 32]);
      assert.deepEqual(shapes.get(pool.inputs[0]!), [1, 256, side, side]);
    }
  });
});

describe('forward passes', () => {
  it('every preset maps a random 224x224 image to [1, 1000] finite logits', () => {
    for (const name of PRESET_NAMES) {
      const model = createModel(name, { seed: 1 });
      const y = model.forward(Tensor.random([1, 3, 224, 224], seededRandom(7)));
      assert.deepEqual(y.shape, [1, 1000], name);
      assert.ok(y.data.every(Number.isFinite), `${name}: non-finite logits`);
      assert.ok(
        y.data.some((v) => v !== 0),
        `${name}: all-zero logits`,
      );
    }
  });

  it('runs batches, other class counts and the small-input stem on 28x28 greyscale', () => {
    const model = createModel('shufflenet_v1_g3_0.5x', {
      inputChannels: 1,
      numClasses: 10,
      smallInput: true,
    });
    const x = Tensor.random([3, 1, 28, 28], seededRandom(3));
    const y = model.forward(x);
    assert.deepEqual(y.shape, [3, 10]);
    // Each image in a batch gives what it gives alone.
    const one = model.forward(new Tensor([1, 1, 28, 28], x.data.slice(784, 2 * 784)));
    for (let k = 0; k < 10; k++) assert.ok(Math.abs(one.data[k]! - y.data[10 + k]!) < 1e-6);
    assert.equal(model.complexity(28, 28).input.join('x'), '1x28x28');
  });

  it('shuffling before the depthwise conv with permuted DW/BN weights equals shuffling after it (SOURCE.md)', () => {
    const after = createModel('shufflenet_v1_g3_0.25x', { seed: 2 });
    for (const [k, t] of after.weights) {
      if (/running_var$/.test(k)) t.data.forEach((_, i) => (t.data[i] = 0.5 + ((i * 7919) % 13) / 13));
      if (/running_mean$|\.bias$/.test(k))
        t.data.forEach((_, i) => (t.data[i] = (((i * 104729) % 17) - 8) / 40));
    }
    const x = Tensor.random([2, 3, 64, 64], seededRandom(5));
    const y1 = after.forward(x);
    const before = buildPreset('shufflenet_v1_g3_0.25x', { shufflePosition: 'before-dw' });
    const weights = new Map(after.weights);
    for (let u = 0; u < 16; u++) {
      for (const key of ['3.weight', '4.weight', '4.bias', '4.running_mean', '4.running_var']) {
        const name = `features.${u}.branch_main_1.${key}`;
        const t = after.weights.get(name)!;
        const c = t.shape[0]!;
        const per = t.size / c;
        const perm = shufflePermutation(c, 3, 'authors');
        const p = new Tensor(t.shape);
        for (let o = 0; o < c; o++)
          p.data.set(t.data.subarray(perm[o]! * per, (perm[o]! + 1) * per), o * per);
        weights.set(name, p);
      }
    }
    const y2 = execute(before, weights, x);
    for (let i = 0; i < y1.size; i++) assert.ok(Math.abs(y1.data[i]! - y2.data[i]!) < 1e-5, `logit ${i}`);
    // The paper's order is the inverse permutation: with the same weights it gives other logits.
    const y3 = createModel('shufflenet_v1_g3_0.25x', { seed: 2, shuffleOrder: 'paper' });
    for (const [k, t] of after.weights) y3.weights.set(k, t);
    const z = y3.forward(x);
    assert.ok(
      z.data.some((v, i) => Math.abs(v - y1.data[i]!) > 1e-3),
      'the two orders must differ',
    );
  });

  it('names the model and the expected shape for a wrong input', () => {
    const model = createModel('shufflenet_v1_g3_0.25x');
    assert.throws(
      () => model.forward(Tensor.zeros([1, 1, 224, 224])),
      (e: Error) =>
        e instanceof ConfigError &&
        /shufflenet_v1_g3_0\.25x: input \[1, 1, 224, 224\].*\[N, 3, H, W\]/.test(e.message),
    );
    assert.throws(() => model.forward(Tensor.zeros([3, 224, 224])), /expected \[N, 3, H, W\]/);
  });

  it('names the op, the node and the shapes when a layer does not fit', () => {
    const alex = buildPreset('alexnet');
    // 32x32 is too small for AlexNet's pooling stack.
    assert.throws(
      () => execute(alex, createModel('alexnet').weights, Tensor.zeros([1, 3, 32, 32])),
      (e: Error) =>
        e instanceof OpError &&
        /^maxpool2d 'features\.(5|12)': input \[1, (192|256), \d+, \d+\]/.test(e.message),
    );
    assert.equal(presetFamily('alexnet'), 'alexnet');
  });
});
