import { instantiateKernels, kernelModule } from '../backends/wasm/module.js';
import { Engine } from '../runtime/engine.js';
import { ThreadPool } from './threads.js';
import { enableRelaxedSimd } from './wasm.js';

export interface NodeEngineOptions {
  /** Worker threads sharing the plan's memory (1 = the calling thread only). */
  threads?: number;
  /** 'auto' (default) uses relaxed SIMD when this Node accepts it, with the V8 flag set here. */
  relaxed?: boolean | 'auto';
}

/** The engine for Node: relaxed SIMD where possible, a shared memory and a worker pool when threads > 1. */
export async function createNodeEngine(o: NodeEngineOptions = {}): Promise<Engine> {
  const threads = o.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1)
    throw new RangeError(`threads must be a positive integer, got ${threads}`);
  const supported = o.relaxed === false ? false : enableRelaxedSimd();
  if (o.relaxed === true && !supported)
    throw new Error('relaxed SIMD was requested but this runtime rejects it');
  const relaxed = o.relaxed === 'auto' || o.relaxed === undefined ? supported : o.relaxed;
  const shared = threads > 1;
  // Node reserves a shared memory's maximum up front; 4 GiB (the wasm32 limit) leaves room for training plans.
  const memory = shared ? new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true }) : undefined;
  const kernels = await instantiateKernels({ relaxed, shared, memory });
  const pool = shared
    ? await ThreadPool.start(kernelModule({ relaxed, shared }), kernels.memory, threads)
    : undefined;
  return new Engine(kernels, pool);
}
