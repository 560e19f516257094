import type { Graph } from '../../src/graph/graph.js';
import type { Tensor } from '../../src/tensor/tensor.js';

/** One engine with one model loaded, ready to run one fixed input (batch x C x H x W, NCHW) again and again. */
export interface Runner {
  /** Short column name, e.g. 'ort-node'. */
  name: string;
  /** What runs underneath, with versions: printed under the table. */
  backend: string;
  threads: number;
  batch: number;
  /** One inference on the fixed input, logits read back to JS: what the benchmark times. */
  run(): Promise<void> | void;
  /** One inference returning the logits (NCHW order for non-2D outputs): what the correctness check compares. */
  output(): Promise<Float32Array> | Float32Array;
  close?(): Promise<void> | void;
}

export interface RunnerOptions {
  graph: Graph;
  /** state_dict name -> tensor, BN unfolded (each runner folds what it wants to fold). */
  weights: Map<string, Tensor>;
  batch: number;
  threads: number;
  height: number;
  width: number;
  /** NCHW, batch x graph.inputChannels x height x width values. */
  input: Float32Array;
}

export interface RunnerFactory {
  name: string;
  /** Throws (with the reason) when this engine cannot run this model or setting; the benchmark then skips it. */
  create(o: RunnerOptions): Promise<Runner>;
}
