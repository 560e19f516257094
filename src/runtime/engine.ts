import type { Graph } from '../graph/graph.js';
import { instantiateKernels, type WasmKernels } from '../backends/wasm/module.js';
import type { Shape, Tensor } from '../tensor/tensor.js';
import { MemoryPool, Plan, type Parallel, type PlanOptions } from './plan.js';
import { TrainPlan } from './train-plan.js';

/** The fast inference engine: WASM SIMD kernels on one memory, plans compiled into it, optional threads. */
export class Engine {
  private readonly pool: MemoryPool;

  constructor(
    readonly kernels: WasmKernels,
    readonly parallel?: Parallel,
  ) {
    this.pool = new MemoryPool(kernels.memory, kernels.heapBase);
  }

  get threads(): number {
    return this.parallel?.threads ?? 1;
  }

  /** 'wasm-simd' or 'wasm-relaxed-simd'. */
  get backend(): string {
    return this.kernels.relaxed ? 'wasm-relaxed-simd' : 'wasm-simd';
  }

  compile(model: { graph: Graph; weights: ReadonlyMap<string, Tensor> }, options: PlanOptions = {}): Plan {
    return new Plan(model.graph, model.weights, this.kernels, this.pool, this.parallel, options);
  }

  /** A training step (forward and backward) for one input shape, on this engine's kernels and threads. */
  compileTraining(graph: Graph, inputShape: Shape): TrainPlan {
    return new TrainPlan(graph, inputShape, this.kernels, this.pool, this.parallel);
  }

  /** Bytes of WASM memory in use by all plans (weights, arenas, maps). */
  get memoryBytes(): number {
    return this.pool.used;
  }
}

/** A single-threaded engine anywhere WebAssembly SIMD runs (browsers without cross-origin isolation too). */
export async function createEngine(o: { relaxed?: boolean } = {}): Promise<Engine> {
  return new Engine(await instantiateKernels({ relaxed: o.relaxed ?? false }));
}
