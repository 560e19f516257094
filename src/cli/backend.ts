import { Option } from 'commander';
import type { WebGpuEngine } from '../backends/webgpu/engine.js';
import type { Model } from '../models/model.js';
import { createNodeEngine } from '../node/engine.js';
import { createNodeWebGpuEngine } from '../node/webgpu.js';
import type { Tensor } from '../tensor/tensor.js';

/** Where inference runs: WASM SIMD, WebGPU, or WebGPU when an adapter exists and WASM otherwise. */
export type BackendChoice = 'wasm' | 'webgpu' | 'auto';

export const backendOption = (extra: string[] = []) =>
  new Option('--backend <name>', 'inference engine (auto: webgpu when there is an adapter, else wasm)')
    .choices(['wasm', 'webgpu', 'auto', ...extra])
    .default('wasm');

/**
 * The WebGPU engine for --backend webgpu (its errors are the command's), or for auto when there is an
 * adapter; undefined means WASM. Auto says on stderr which it took.
 */
export async function openWebGpu(choice: string): Promise<WebGpuEngine | undefined> {
  if (choice !== 'webgpu' && choice !== 'auto') return undefined;
  try {
    const engine = await createNodeWebGpuEngine();
    if (choice === 'auto') console.error(`shufflenet: backend webgpu (${engine.adapter})`);
    return engine;
  } catch (e) {
    if (choice === 'webgpu') throw e;
    console.error(`shufflenet: backend wasm (${(e as Error).message})`);
    return undefined;
  }
}

/** Runs one model on the chosen engine, with one compiled plan per input shape. */
export async function openInference(
  model: Model,
  choice: BackendChoice,
): Promise<{ run(x: Tensor): Promise<Float32Array>; close(): void }> {
  const gpu = await openWebGpu(choice);
  const engine = gpu ?? (await createNodeEngine());
  type AnyPlan = { run(x: Float32Array): Float32Array | Promise<Float32Array>; dispose(): void };
  const plans = new Map<string, AnyPlan>();
  return {
    async run(x) {
      const [batch, , height, width] = x.shape as [number, number, number, number];
      const key = x.shape.join('x');
      let plan = plans.get(key);
      if (!plan) plans.set(key, (plan = engine.compile(model, { batch, height, width })));
      // A WASM plan's output is a view into its arena, overwritten by the next run.
      return (await plan.run(x.data)).slice();
    },
    close() {
      for (const p of plans.values()) p.dispose();
      gpu?.destroy();
    },
  };
}
