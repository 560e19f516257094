import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backward, forwardWithTape } from '../src/autograd/tape.js';
import { buildPreset, execute, graphParams, Tensor, type ModelOptions, type Shape } from '../src/index.js';
import {
  OPS,
  OP_NAMES,
  type Conv2dAttrs,
  type OpAttrs,
  type OpName,
  type OpSpec,
  type Pair,
} from '../src/ops/index.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { decode, readFixture, type Blob } from './helpers/fixtures.js';
import { syntheticInput, syntheticWeights, uniform } from './helpers/synthetic.js';

const specOf = (op: OpName) => OPS[op] as unknown as OpSpec<unknown>;

/** Runs the op's reference forward and then its backward with gradOut; gradients start at zero. */
function opGradients(
  op: OpName,
  attrs: unknown,
  inputs: Tensor[],
  params: Record<string, Tensor>,
  gradOut: Tensor,
  training: boolean,
): { inputs: Tensor[]; params: Record<string, Tensor> } {
  const spec = specOf(op);
  const ctx = { training };
  const out = new Tensor(
    spec.shape(
      inputs.map((x) => x.shape),
      attrs,
    ),
  );
  // A training-mode forward updates BN running buffers: it gets copies, so the backward sees the given ones.
  const forwardParams = Object.fromEntries(
    Object.entries(params).map(([k, t]) => [k, new Tensor(t.shape, t.data.slice())]),
  );
  spec.reference({ out, inputs, params: forwardParams, attrs, ctx });
  const learnable = spec.params(attrs).filter((s) => s.kind === 'parameter' && s.shape);
  const grads = {
    inputs: inputs.map((x) => new Tensor(x.shape)),
    params: Object.fromEntries(learnable.map((s) => [s.slot, new Tensor(s.shape!)])),
  };
  spec.backward({
    out,
    inputs,
    params,
    attrs,
    ctx,
    gradOut,
    gradInputs: grads.inputs,
    gradParams: grads.params,
  });
  return grads;
}

/** |a - b| <= rel |b| + abs everywhere; on failure names the worst index and both values. */
function assertClose(what: string, actual: Tensor, expected: Tensor, rel = 1e-5, abs = 1e-6): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < expected.size; i++) {
    const r = Math.abs(actual.data[i]! - expected.data[i]!) / (rel * Math.abs(expected.data[i]!) + abs);
    const ratio = Number.isNaN(r) ? Infinity : r;
    if (ratio > worstRatio) [worst, worstRatio] = [i, ratio];
  }
  if (worstRatio > 1) {
    assert.fail(
      `${what}: worst at index ${worst}: got ${actual.data[worst]}, expected ${expected.data[worst]} ` +
        `(${worstRatio.toFixed(1)}x the tolerance)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------
// (a) Finite differences of the reference forward kernels.

interface FdCase {
  name: string;
  op: OpName;
  attrs: unknown;
  inputs: Shape[];
  training?: boolean;
  /** 'away': |x| >= 0.1, so ReLU's kink is never within eps; 'spaced': values 0.05 apart, so no max changes. */
  draw?: 'away' | 'spaced';
}

function fd<K extends OpName>(
  name: string,
  op: K,
  attrs: OpAttrs[K],
  inputs: Shape[],
  extra: Partial<FdCase> = {},
): FdCase {
  return { name, op, attrs, inputs, ...extra };
}

const p = (v: number | Pair): Pair => (typeof v === 'number' ? [v, v] : v);
function conv(
  c: number,
  o: number,
  k: number,
  { stride = 1, padding = 0, dilation = 1, groups = 1, bias = false } = {},
): Conv2dAttrs {
  const [kernel, s, pad, d] = [p(k), p(stride), p(padding), p(dilation)];
  return { inChannels: c, outChannels: o, kernel, stride: s, padding: pad, dilation: d, groups, bias };
}
const pool = (k: number, s: number, pad: number, ceilMode = false) => ({
  kernel: p(k),
  stride: p(s),
  padding: p(pad),
  ceilMode,
});
const bn = (c: number) => ({ channels: c, eps: 1e-5, momentum: 0.1 });

const FD_CASES: FdCase[] = [
  fd('conv2d/dense_3x3_p1_bias', 'conv2d', conv(3, 4, 3, { padding: 1, bias: true }), [[2, 3, 5, 6]]),
  fd('conv2d/groups3_1x1', 'conv2d', conv(6, 9, 1, { groups: 3 }), [[2, 6, 4, 5]]),
  fd('conv2d/groups8_1x1_bias', 'conv2d', conv(16, 8, 1, { groups: 8, bias: true }), [[1, 16, 3, 3]]),
  fd('conv2d/depthwise_3x3_s2_p1_odd', 'conv2d', conv(4, 4, 3, { stride: 2, padding: 1, groups: 4 }), [
    [2, 4, 7, 5],
  ]),
  fd(
    'conv2d/groups3_3x3_s2_p2_dilation2_odd',
    'conv2d',
    conv(6, 3, 3, { stride: 2, padding: 2, dilation: 2, groups: 3 }),
    [[1, 6, 9, 7]],
  ),
  fd('batchnorm/inference', 'batchnorm', bn(3), [[2, 3, 4, 5]]),
  fd('batchnorm/training_nchw', 'batchnorm', bn(3), [[2, 3, 3, 5]], { training: true }),
  fd('batchnorm/training_nc', 'batchnorm', bn(4), [[5, 4]], { training: true }),
  fd('relu', 'relu', {}, [[2, 3, 4, 5]], { draw: 'away' }),
  fd('maxpool2d/3x3_s2_p1_odd', 'maxpool2d', pool(3, 2, 1), [[2, 2, 7, 9]], { draw: 'spaced' }),
  fd('maxpool2d/2x2_s2_ceil_odd', 'maxpool2d', pool(2, 2, 0, true), [[1, 2, 5, 7]], { draw: 'spaced' }),
  fd('avgpool2d/3x3_s2_p1_ceil_include_pad', 'avgpool2d', { ...pool(3, 2, 1, true), countIncludePad: true }, [
    [2, 2, 6, 8],
  ]),
  fd('avgpool2d/3x3_s2_p1_exclude_pad_odd', 'avgpool2d', { ...pool(3, 2, 1), countIncludePad: false }, [
    [2, 2, 7, 9],
  ]),
  fd('globalavgpool', 'globalavgpool', {}, [[2, 3, 3, 5]]),
  fd('adaptiveavgpool2d/7x5_to_3x2', 'adaptiveavgpool2d', { output: [3, 2] }, [[2, 2, 7, 5]]),
  fd('linear/bias', 'linear', { inFeatures: 7, outFeatures: 5, bias: true }, [[3, 7]]),
  fd('add', 'add', {}, [
    [2, 3, 2, 3],
    [2, 3, 2, 3],
  ]),
  fd('concat', 'concat', {}, [
    [2, 1, 3, 2],
    [2, 3, 3, 2],
  ]),
  fd('channelshuffle/g3_paper', 'channelshuffle', { groups: 3, order: 'paper' }, [[2, 6, 2, 2]]),
  fd('channelshuffle/g3_authors', 'channelshuffle', { groups: 3, order: 'authors' }, [[2, 6, 2, 2]]),
  fd('channelshuffle/g4_authors_12', 'channelshuffle', { groups: 4, order: 'authors' }, [[1, 12, 1, 2]]),
  fd('softmax/nk', 'softmax', {}, [[3, 6]]),
  fd('softmax/nchw', 'softmax', {}, [[2, 4, 2, 3]]),
  fd('flatten', 'flatten', {}, [[2, 3, 2, 2]]),
];

function draw(name: string, shape: Shape, how: FdCase['draw']): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const u = uniform(name, n);
  if (how === 'away') {
    return new Tensor(
      shape,
      Float32Array.from(u, (v) => Math.sign(v) * (0.1 + Math.abs(v))),
    );
  }
  if (how === 'spaced') {
    const rank = [...u.keys()].sort((a, b) => u[a]! - u[b]!);
    const x = new Tensor(shape);
    rank.forEach((i, r) => (x.data[i] = (r - n / 2) * 0.05));
    return x;
  }
  return new Tensor(shape, Float32Array.from(u));
}

const EPS = 1e-2;

/**
 * The kernels store float32, so L = sum(out * r) carries a rounding error of at most 2^-24 sum |out * r| (each
 * output is rounded once from float64); over a step of ~2 eps that is `noise`. The step itself is exact: it is
 * measured between the two float32 values actually used. The ops are piecewise linear (no truncation error: the
 * draws keep kinks farther than eps) except BN in training and softmax, whose O(eps^2) truncation the 1e-3
 * relative term covers.
 */
function checkFiniteDifferences(c: FdCase): void {
  const spec = specOf(c.op);
  const ctx = { training: c.training ?? false };
  const inputs = c.inputs.map((s, i) => draw(`${c.name}/x${i}`, s, c.draw));
  const params: Record<string, Tensor> = {};
  for (const s of spec.params(c.attrs)) {
    if (!s.shape) continue;
    const t = draw(`${c.name}/${s.slot}`, s.shape, undefined);
    if (s.slot === 'running_var') t.data.forEach((v, i) => (t.data[i] = 1 + 0.5 * v));
    params[s.slot] = t;
  }
  const outShape = spec.shape(
    inputs.map((x) => x.shape),
    c.attrs,
  );
  const r = draw(`${c.name}/r`, outShape, undefined);
  const lossAt = (): { value: number; magnitude: number } => {
    const out = new Tensor(outShape);
    spec.reference({ out, inputs, params, attrs: c.attrs, ctx });
    let value = 0;
    let magnitude = 0;
    for (let i = 0; i < out.size; i++) {
      value += out.data[i]! * r.data[i]!;
      magnitude += Math.abs(out.data[i]! * r.data[i]!);
    }
    return { value, magnitude };
  };
  const grads = opGradients(c.op, c.attrs, inputs, params, r, ctx.training);
  const targets: [string, Tensor, Tensor][] = [
    ...inputs.map((x, i): [string, Tensor, Tensor] => [`input ${i}`, x, grads.inputs[i]!]),
    ...Object.entries(grads.params).map(([slot, g]): [string, Tensor, Tensor] => [slot, params[slot]!, g]),
  ];
  for (const [what, t, g] of targets) {
    for (let i = 0; i < t.size; i++) {
      const x0 = t.data[i]!;
      t.data[i] = x0 + EPS;
      const plus = lossAt();
      t.data[i] = x0 - EPS;
      const minus = lossAt();
      const step = Math.fround(x0 + EPS) - Math.fround(x0 - EPS);
      t.data[i] = x0;
      const numeric = (plus.value - minus.value) / step;
      const noise = (2 ** -24 * (plus.magnitude + minus.magnitude)) / step;
      const analytic = g.data[i]!;
      const ratio = Math.abs(numeric - analytic) / (2 * noise + 1e-3 * Math.abs(analytic) + 1e-6);
      assert.ok(
        ratio <= 1,
        `${c.name} d/d(${what})[${i}]: backward ${analytic}, finite difference ${numeric} (noise ${noise})`,
      );
    }
  }
}

describe('op gradients match finite differences of the reference kernels', () => {
  it('every op has a finite-difference case', () => {
    const covered = new Set(FD_CASES.map((c) => c.op));
    assert.deepEqual(
      OP_NAMES.filter((op) => !covered.has(op)),
      [],
    );
  });
  for (const c of FD_CASES) {
    it(c.name, () => {
      checkFiniteDifferences(c);
    });
  }

  for (const smoothing of [0, 0.1]) {
    it(`softmaxCrossEntropy, label smoothing ${smoothing}`, () => {
      const logits = draw(`ce/${smoothing}`, [4, 5], undefined);
      logits.data.forEach((v, i) => (logits.data[i] = 3 * v));
      const labels = [0, 4, 2, 2];
      const { grad } = softmaxCrossEntropy(logits, labels, smoothing);
      for (let i = 0; i < logits.size; i++) {
        const x0 = logits.data[i]!;
        logits.data[i] = x0 + 1e-3;
        const plus = softmaxCrossEntropy(logits, labels, smoothing).loss;
        logits.data[i] = x0 - 1e-3;
        const minus = softmaxCrossEntropy(logits, labels, smoothing).loss;
        const step = Math.fround(x0 + 1e-3) - Math.fround(x0 - 1e-3);
        logits.data[i] = x0;
        // The loss is float64 throughout, so only the O(eps^2) truncation remains.
        const numeric = (plus - minus) / step;
        assert.ok(Math.abs(numeric - grad.data[i]!) <= 1e-6, `[${i}]: ${grad.data[i]} vs ${numeric}`);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// (b) PyTorch autograd, written by tools/gen_grad_fixtures.py (float64 maths, stored as float32).

interface OpCase {
  name: string;
  op: OpName;
  attrs: unknown;
  training: boolean;
  inputs: Blob[];
  params: Record<string, Blob>;
  gradOut: Blob;
  gradInputs: Blob[];
  gradParams: Record<string, Blob>;
}
interface LossCase {
  name: string;
  smoothing: number;
  labels: number[];
  logits: Blob;
  loss: number;
  grad: Blob;
}
interface ModelCase {
  preset: string;
  options: ModelOptions;
  input: number[];
  labels: number[];
  smoothing: number;
  loss: number;
  logits: Blob;
  inputGrad: Blob;
  grads: Record<string, { shape: number[]; sumAbs: number; dot: number; index: number[]; values: Blob }>;
  running: Record<string, Blob>;
}
const fixture = readFixture<{ torch: string; cases: OpCase[]; losses: LossCase[]; model: ModelCase }>(
  'grads.json',
);

describe(`gradients match PyTorch ${fixture.torch} autograd`, () => {
  it('every op has a fixture case', () => {
    const covered = new Set(fixture.cases.map((c) => c.op));
    assert.deepEqual(
      OP_NAMES.filter((op) => !covered.has(op)),
      [],
      'ops without a case: add them to tools/gen_grad_fixtures.py',
    );
  });

  for (const c of fixture.cases) {
    it(c.name, () => {
      const params = Object.fromEntries(Object.entries(c.params).map(([k, v]) => [k, decode(v)]));
      const grads = opGradients(c.op, c.attrs, c.inputs.map(decode), params, decode(c.gradOut), c.training);
      assert.deepEqual(Object.keys(grads.params).sort(), Object.keys(c.gradParams).sort(), 'learnable slots');
      c.gradInputs.forEach((g, i) => assertClose(`${c.name} input ${i}`, grads.inputs[i]!, decode(g)));
      for (const [slot, g] of Object.entries(c.gradParams)) {
        assertClose(`${c.name} ${slot}`, grads.params[slot]!, decode(g));
      }
    });
  }

  for (const c of fixture.losses) {
    it(c.name, () => {
      const { loss, grad } = softmaxCrossEntropy(decode(c.logits), c.labels, c.smoothing);
      assert.ok(Math.abs(loss - c.loss) <= 1e-6 * Math.abs(c.loss), `loss ${loss}, PyTorch ${c.loss}`);
      assertClose(`${c.name} grad`, grad, decode(c.grad));
    });
  }

  const m = fixture.model;
  it(`${m.preset} ${JSON.stringify(m.options)}, training mode, cross entropy (smoothing ${m.smoothing})`, () => {
    const graph = buildPreset(m.preset, m.options);
    const weights = syntheticWeights(graph);
    const { output, tape } = forwardWithTape(graph, weights, syntheticInput(m.input), { training: true });
    assertClose('logits', output, decode(m.logits), 1e-4, 1e-5);
    const { loss, grad, correct } = softmaxCrossEntropy(output, m.labels, m.smoothing);
    assert.ok(Math.abs(loss - m.loss) <= 1e-4 * m.loss, `loss ${loss}, PyTorch ${m.loss}`);
    const pt = decode(m.logits);
    const k = pt.shape[1]!;
    const ptCorrect = m.labels.filter((label, b) => {
      const row = pt.data.subarray(b * k, (b + 1) * k);
      return row.indexOf(Math.max(...row)) === label;
    }).length;
    assert.equal(correct, ptCorrect);
    const grads = backward(tape, grad);

    // Exactly the learnable parameters, in state_dict order; running buffers get no gradient.
    assert.deepEqual([...grads.params.keys()], Object.keys(m.grads));
    // Each gradient is held to 1e-4 of its own size plus 1e-4 of its layer's scale (mean |g| over the node's
    // parameters): the bias of a BN followed by a 1x1 conv and a training-mode BN has a gradient of exactly zero,
    // which float32 only approximates. (PyTorch's own float32 autograd is 3-10x further from float64 than this.)
    const layerOf = (name: string) => name.slice(0, name.lastIndexOf('.'));
    const layers = new Map<string, { sum: number; count: number }>();
    for (const [name, e] of Object.entries(m.grads)) {
      const l = layers.get(layerOf(name)) ?? { sum: 0, count: 0 };
      layers.set(layerOf(name), {
        sum: l.sum + e.sumAbs,
        count: l.count + e.shape.reduce((a, b) => a * b, 1),
      });
    }
    for (const [name, e] of Object.entries(m.grads)) {
      const g = grads.params.get(name)!;
      assert.deepEqual(g.shape, e.shape, `${name}: shape`);
      const layer = layers.get(layerOf(name))!;
      const floor = (1e-4 * layer.sum) / layer.count;
      const r = uniform(`r/${name}`, g.size);
      let sumAbs = 0;
      let dot = 0;
      let dotScale = 0;
      for (let i = 0; i < g.size; i++) {
        sumAbs += Math.abs(g.data[i]!);
        dot += g.data[i]! * r[i]!;
        dotScale += Math.abs(g.data[i]! * r[i]!);
      }
      assert.ok(
        Math.abs(sumAbs - e.sumAbs) <= 1e-4 * e.sumAbs + floor * g.size,
        `${name}: sum |g| ${sumAbs}, PyTorch ${e.sumAbs}`,
      );
      assert.ok(
        Math.abs(dot - e.dot) <= 1e-4 * dotScale + floor * g.size,
        `${name}: sum g*r ${dot}, PyTorch ${e.dot}`,
      );
      const sampled = new Tensor(
        [e.index.length],
        Float32Array.from(e.index, (i) => g.data[i]!),
      );
      assertClose(`${name} sampled`, sampled, decode(e.values), 1e-4, floor);
    }
    const inputGrad = decode(m.inputGrad);
    const inputFloor = (1e-4 * inputGrad.data.reduce((a, v) => a + Math.abs(v), 0)) / inputGrad.size;
    assertClose('input', grads.input, inputGrad, 1e-4, inputFloor);
    for (const [name, blob] of Object.entries(m.running)) {
      assertClose(`${name} after one training forward`, weights.get(name)!, decode(blob), 1e-5, 1e-6);
    }
  });

  it('backward leaves weights and buffers alone, and inference-mode tapes give the same as execute', () => {
    const graph = buildPreset(m.preset, m.options);
    const weights = syntheticWeights(graph);
    const before = graphParams(graph).map((p) => weights.get(p.name)!.data.slice());
    const { output, tape } = forwardWithTape(graph, weights, syntheticInput(m.input));
    assert.deepEqual(output.data, execute(graph, weights, syntheticInput(m.input)).data);
    backward(tape, softmaxCrossEntropy(output, m.labels).grad);
    graphParams(graph).forEach((p, i) => assert.deepEqual(weights.get(p.name)!.data, before[i], p.name));
  });
});
