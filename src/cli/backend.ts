import { Option } from 'commander';
import type { WebGpuEngine } from '../backends/webgpu/engine.js';
import type { Precision } from '../backends/webgpu/kernels.js';
import { ConfigError } from '../errors.js';
import type { Model } from '../models/model.js';
import { createNodeEngine } from '../node/engine.js';
import { createNodeWebGpuEngine } from '../node/webgpu.js';
import type { Graph } from '../graph/graph.js';
import type { PlanOptions } from '../runtime/plan.js';
import { Tensor } from '../tensor/tensor.js';
import { referenceInfer, type AsyncInfer } from '../train/trainer.js';

/** Where inference runs: WASM SIMD, WebGPU, or WebGPU when an adapter exists and WASM otherwise. */
export type BackendChoice = 'wasm' | 'webgpu' | 'auto';

export const backendOption = (extra: string[] = []) =>
  new Option('--backend <name>', 'inference engine (auto: webgpu when there is an adapter, else wasm)')
    .choices(['wasm', 'webgpu', 'auto', ...extra])
    .default('wasm');

export const precisionOption = () =>
  new Option(
    '--precision <p>',
    "WebGPU: activations in f32, f16 (the adapter's shader-f16: half the memory) or f16-rounded (f16's rounding on f32)",
  )
    .choices(['f32', 'f16', 'f16-rounded'])
    .default('f32');

/** --precision other than f32 needs the WebGPU engine (`gpu`: the one openWebGpu gave, if any). */
export function checkPrecision(precision: Precision, gpu: WebGpuEngine | undefined): void {
  if (precision !== 'f32' && !gpu)
    throw new ConfigError(`--precision ${precision} runs on WebGPU only: use --backend webgpu`);
}

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
  precision: Precision = 'f32',
): Promise<{ run(x: Tensor): Promise<Float32Array>; close(): void }> {
  const gpu = await openWebGpu(choice);
  try {
    checkPrecision(precision, gpu);
  } catch (e) {
    gpu?.destroy();
    throw e;
  }
  const engine: PlanCompiler = gpu ?? (await createNodeEngine());
  const plans = new Map<string, ReturnType<PlanCompiler['compile']>>();
  return {
    async run(x) {
      const [batch, , height, width] = x.shape as [number, number, number, number];
      const key = x.shape.join('x');
      let plan = plans.get(key);
      if (!plan) plans.set(key, (plan = engine.compile(model, { batch, height, width, precision })));
      // A WASM plan's output is a view into its arena, overwritten by the next run.
      return (await plan.run(x.data)).slice();
    },
    close() {
      for (const p of plans.values()) p.dispose();
      gpu?.destroy();
    },
  };
}

/** What compiles a model into a plan: the WASM engine (runs return a view of its arena) or WebGPU (promises). */
export interface PlanCompiler {
  compile(
    model: { graph: Graph; weights: ReadonlyMap<string, Tensor> },
    options: PlanOptions & { precision?: Precision },
  ): { run(input: Float32Array): Float32Array | Promise<Float32Array>; dispose(): void };
}

/**
 * Evaluation on an engine's fused plan: one plan per evaluation for `batch` images, the last batch padded
 * with zeros to that size (its padding rows are dropped from the logits).
 */
export function planInfer(engine: PlanCompiler, precision: Precision = 'f32'): AsyncInfer {
  return (graph, weights, batch) => {
    const [c, h, w] = [graph.inputChannels, ...graph.inputSize] as [number, number, number];
    const plan = engine.compile({ graph, weights }, { batch, height: h, width: w, precision });
    const full = new Float32Array(batch * c * h * w);
    const logits = (n: number, out: Float32Array) => {
      const k = out.length / batch;
      return new Tensor([n, k], out.slice(0, n * k));
    };
    return {
      run(input) {
        const n = input.shape[0]!;
        full.fill(0).set(input.data);
        const out = plan.run(full);
        return out instanceof Promise ? out.then((o) => logits(n, o)) : logits(n, out);
      },
      dispose: () => plan.dispose(),
    };
  };
}

/** Evaluation on a WASM engine of `threads` threads, or the reference kernels where WASM SIMD is missing. */
export async function wasmInfer(threads: number): Promise<AsyncInfer> {
  try {
    return planInfer(await createNodeEngine({ threads }));
  } catch {
    return referenceInfer;
  }
}
