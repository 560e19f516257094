import { inferShapes, INPUT, type Graph } from '../src/graph/graph.js';
import { createModel } from '../src/models/model.js';
import type { ModelOptions } from '../src/models/registry.js';
import { OPS } from '../src/ops/index.js';
import { seededRandom, Tensor } from '../src/tensor/tensor.js';

/** `npm run bench`: issue 4's grid (each at batch 1 and 8, 1 and 2 threads, 224x224). */
export const BENCH_MODELS = [
  'shufflenet_v1_g3_1.0x',
  'shufflenet_v1_g8_1.0x',
  'shufflenet_v1_g3_0.5x',
  'mobilenet_v1_0.5',
  'alexnet',
] as const;

/** The paper's Table 8 speed study: these models at three input sizes, batch 1, one thread. */
export const TABLE8_MODELS = [
  'shufflenet_v1_g3_0.5x',
  'shufflenet_v1_g3_1.0x',
  'shufflenet_v1_g3_2.0x',
  'mobilenet_v1_1.0',
  'alexnet',
] as const;
export const TABLE8_SIZES: ReadonlyArray<readonly [number, number]> = [
  [224, 224],
  [480, 640],
  [720, 1280],
];
/** Table 8 as published: ms on a Qualcomm Snapdragon 820, one thread, at the three sizes. */
export const TABLE8_PAPER_MS: Readonly<Record<string, readonly [number, number, number]>> = {
  'shufflenet_v1_g3_0.5x': [15.2, 87.4, 260.1],
  'shufflenet_v1_g3_1.0x': [37.8, 222.2, 684.5],
  'shufflenet_v1_g3_2.0x': [108.8, 617.0, 1857.6],
  'mobilenet_v1_1.0': [110.0, 612.0, 1879.2],
  alexnet: [184.0, 1156.7, 3633.9],
};

export interface BenchModel {
  name: string;
  graph: Graph;
  weights: Map<string, Tensor>;
}

/**
 * createModel(name, { seed: 0, ...options }) with its BatchNorms made non-trivial and healthy. The authors' init leaves BN
 * at mean 0, var 1, gamma 1, so folding would be a no-op, and its N(0, 1/fan_in) convs shrink activations
 * layer by layer until the logits are the BN biases alone, whatever the input: a check would pass against
 * wrong weights. So one reference pass at `calibrate` x `calibrate` (default 128) sets each BN's running stats to the batch
 * stats of its input (var scaled by 0.7-1.4), and gamma and beta become random (0.6-1.4, -0.2-0.2).
 */
export function benchModel(name: string, o: ModelOptions & { calibrate?: number } = {}): BenchModel {
  const { calibrate = 128, ...options } = o;
  const { graph, weights } = createModel(name, { ...options, seed: 0 });
  if (!graph.nodes.some((n) => n.op === 'batchnorm')) return { name, graph, weights };
  const rng = seededRandom(12345);
  const uniform = (lo: number, hi: number) => lo + (hi - lo) * rng();
  const x = benchInput(graph, 1, calibrate, calibrate);
  const shapes = inferShapes(graph, x.shape);
  const values = new Map<string, Tensor>([[INPUT, x]]);
  for (const node of graph.nodes) {
    const inputs = node.inputs.map((v) => values.get(v)!);
    const params = Object.fromEntries(Object.entries(node.params).map(([s, k]) => [s, weights.get(k)]));
    if (node.op === 'batchnorm') {
      const { mean, variance } = channelStats(inputs[0]!);
      const set = (slot: string, f: (c: number) => number) => {
        const t = params[slot]!;
        for (let c = 0; c < t.size; c++) t.data[c] = f(c);
      };
      set('running_mean', (c) => mean[c]!);
      set('running_var', (c) => variance[c]! * uniform(0.7, 1.4) + 1e-3);
      set('weight', () => uniform(0.6, 1.4));
      set('bias', () => uniform(-0.2, 0.2));
    }
    const out = new Tensor(shapes.get(node.name)!);
    const args = { out, inputs, params, attrs: node.attrs as never, ctx: { training: false } };
    (OPS[node.op].reference as (a: typeof args) => void)(args);
    values.set(node.name, out);
  }
  return { name, graph, weights };
}

function channelStats(x: Tensor): { mean: Float64Array; variance: Float64Array } {
  const [n, c] = x.shape as [number, number];
  const hw = x.size / (n * c);
  const mean = new Float64Array(c);
  const variance = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    let s2 = 0;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * hw;
      for (let i = 0; i < hw; i++) {
        const v = x.data[base + i]!;
        s += v;
        s2 += v * v;
      }
    }
    mean[ch] = s / (n * hw);
    variance[ch] = Math.max(s2 / (n * hw) - mean[ch]! ** 2, 0);
  }
  return { mean, variance };
}

/** Uniform in [-1, 1) from a fixed seed; image b is the same whatever the batch, so batch 1 is batch 8's first. */
export function benchInput(graph: Graph, batch: number, height: number, width: number): Tensor {
  return Tensor.random([batch, graph.inputChannels, height, width], seededRandom(2024));
}

/** max |a - ref| / max |ref|: the error relative to the logit scale. */
export function relativeDiff(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (a.length !== ref.length) return Infinity;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - ref[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  return Number.isNaN(diff) ? Infinity : diff / (scale || 1);
}
