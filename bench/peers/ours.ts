import { createNodeEngine } from '../../src/node/engine.js';
import { ThreadPool } from '../../src/node/threads.js';
import type { Runner, RunnerFactory } from './types.js';

/** This project: the fused plan on the WASM SIMD kernels (relaxed SIMD when Node accepts it), worker threads. */
export const ours: RunnerFactory = {
  name: 'ours',
  async create(o): Promise<Runner> {
    const engine = await createNodeEngine({ threads: o.threads });
    const plan = engine.compile(
      { graph: o.graph, weights: o.weights },
      { batch: o.batch, height: o.height, width: o.width },
    );
    const out = new Float32Array(plan.outputShape.reduce((a, b) => a * b, 1));
    return {
      name: 'ours',
      backend: `shufflenet.ts ${engine.backend}, fused plan (arena ${(plan.bytes.arena / 2 ** 20).toFixed(1)} MiB)`,
      threads: o.threads,
      batch: o.batch,
      // Reads the logits back into a JS array, as the peers' run() does.
      run: () => void plan.run(o.input, out),
      output: () => plan.run(o.input, new Float32Array(out.length)),
      close: async () => {
        plan.dispose();
        if (engine.parallel instanceof ThreadPool) await engine.parallel.close();
      },
    };
  },
};
