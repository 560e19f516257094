import { checkWeights, execute, type ExecuteOptions } from '../graph/execute.js';
import { complexity, type Complexity } from '../graph/complexity.js';
import type { Graph } from '../graph/graph.js';
import { initWeights } from '../nn/init.js';
import type { Tensor } from '../tensor/tensor.js';
import { buildPreset, type ModelOptions } from './registry.js';

/** A graph with its weights (parameters and buffers, named like the PyTorch state_dict). */
export class Model {
  readonly graph: Graph;
  readonly weights: Map<string, Tensor>;

  constructor(graph: Graph, weights?: Map<string, Tensor>) {
    this.graph = graph;
    this.weights = weights ?? initWeights(graph);
    checkWeights(graph, this.weights);
  }

  get name(): string {
    return this.graph.name;
  }

  /** NCHW input -> the graph's output (logits for classifiers). */
  forward(input: Tensor, options?: ExecuteOptions): Tensor {
    return execute(this.graph, this.weights, input, options);
  }

  complexity(height?: number, width?: number): Complexity {
    return complexity(this.graph, height, width);
  }
}

/** A preset with freshly initialised (seeded) weights. */
export function createModel(name: string, options: ModelOptions & { seed?: number } = {}): Model {
  const { seed, ...rest } = options;
  const graph = buildPreset(name, rest);
  return new Model(graph, initWeights(graph, seed ?? 0));
}
