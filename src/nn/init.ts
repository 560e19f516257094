import { graphParams, type Graph } from '../graph/graph.js';
import { gaussian, seededRandom, Tensor } from '../tensor/tensor.js';

/**
 * The authors' initialisation (ShuffleNet-Series train code): conv weights N(0, 1/fan_in) with fan_in =
 * in_channels / groups (the stem N(0, 0.01)), linear N(0, 0.01) with zero bias, BN gamma 1, beta 1e-4,
 * running mean 0, running var 1. Seeded, so a model is reproducible from (preset, seed).
 */
export function initWeights(graph: Graph, seed = 0): Map<string, Tensor> {
  const normal = gaussian(seededRandom(seed));
  const weights = new Map<string, Tensor>();
  const stem = graph.nodes.find((n) => n.op === 'conv2d')?.name;
  for (const p of graphParams(graph)) {
    const t = new Tensor(p.shape);
    const fill = (v: number) => t.data.fill(v);
    const op = p.node.op;
    if (p.slot === 'weight' && (op === 'conv2d' || op === 'linear')) {
      const std = op === 'linear' || p.node.name === stem ? 0.01 : 1 / p.shape[1]!;
      for (let i = 0; i < t.size; i++) t.data[i] = std * normal();
    } else if (op === 'batchnorm') {
      fill({ weight: 1, bias: 1e-4, running_mean: 0, running_var: 1 }[p.slot] ?? 0);
    } else fill(0);
    weights.set(p.name, t);
  }
  return weights;
}
