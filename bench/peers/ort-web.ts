import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-web';
import { inputShape, onnxBytes } from './onnx.js';
import type { Runner, RunnerFactory } from './types.js';

/**
 * onnxruntime-web's wasm EP (SIMD) in Node. The package's `node` export condition picks ort.node.min.mjs; in
 * Node it import()s ort-wasm-simd-threaded.mjs from wasmPaths (a file:// URL of the installed dist/ folder),
 * which reads the .wasm next to it with fs: nothing is fetched, so it works offline.
 *
 * Threads: emscripten pthreads on Node worker_threads (numThreads - 1 extra OS threads, shared wasm memory).
 * env.wasm.numThreads is read once, when the first session initialises the wasm module (it cannot be
 * initialised again), so a process runs one thread count: bench/run.ts runs each in a process of its own.
 */
let poolThreads: number | undefined;

export const ortWeb: RunnerFactory = {
  name: 'ort-web',
  async create(o): Promise<Runner> {
    if (poolThreads === undefined) {
      poolThreads = o.threads;
      ort.env.wasm.numThreads = o.threads;
      ort.env.wasm.simd = true;
      ort.env.wasm.proxy = false;
      const dist = dirname(createRequire(import.meta.url).resolve('onnxruntime-web'));
      ort.env.wasm.wasmPaths = `${pathToFileURL(dist).href}/`;
    } else if (poolThreads !== o.threads) {
      throw new Error(
        `this process's ORT-web wasm thread pool has ${poolThreads} thread(s), fixed at its first session; ` +
          `${o.threads} needs another process`,
      );
    }
    const session = await ort.InferenceSession.create(onnxBytes(o.graph, o.weights, o.height, o.width), {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    });
    const [inName, outName] = [session.inputNames[0]!, session.outputNames[0]!];
    const infer = async () => {
      const out = await session.run({ [inName]: new ort.Tensor('float32', o.input, inputShape(o)) });
      return out[outName]!.data as Float32Array;
    };
    return {
      name: 'ort-web',
      backend: `onnxruntime-web ${ort.env.versions.web ?? '?'} (wasm EP, SIMD, ${o.threads} thread(s))`,
      threads: o.threads,
      batch: o.batch,
      run: async () => void (await infer()),
      output: infer,
      close: () => session.release(),
    };
  },
};
