import * as ort from 'onnxruntime-node';
import { inputShape, onnxBytes } from './onnx.js';
import type { Runner, RunnerFactory } from './types.js';

/** onnxruntime-node: the native CPU execution provider (MLAS kernels), the strongest peer on this machine. */
export const ortNode: RunnerFactory = {
  name: 'ort-node',
  async create(o): Promise<Runner> {
    const session = await ort.InferenceSession.create(onnxBytes(o.graph, o.weights, o.height, o.width), {
      executionProviders: ['cpu'],
      intraOpNumThreads: o.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    const [inName, outName] = [session.inputNames[0]!, session.outputNames[0]!];
    const infer = async () => {
      const out = await session.run({ [inName]: new ort.Tensor('float32', o.input, inputShape(o)) });
      return out[outName]!.data as Float32Array;
    };
    return {
      name: 'ort-node',
      backend: `onnxruntime-node ${ort.env.versions.node ?? '?'} (native CPU EP, graph optimization 'all')`,
      threads: o.threads,
      batch: o.batch,
      run: async () => void (await infer()),
      output: infer,
      close: () => session.release(),
    };
  },
};
