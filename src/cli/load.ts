import { ConfigError } from '../errors.js';
import { createModel, type Model } from '../models/model.js';
import type { WeightsEntry } from '../models/weights.js';
import { defaultModelPath, loadModel } from '../node/weights.js';
import { loadOnnxModel } from './onnx.js';

export interface CliModel {
  model: Model;
  entry?: WeightsEntry;
  /** 'imagenet', 'fashion-mnist', ... from the registry or the file's metadata. */
  labels?: string;
  /** Preprocessing recorded in the file by `shufflenet train` (JSON), if any. */
  preprocessing?: string;
}

/**
 * The model of `--model FILE.onnx`, `--weights FILE|NAME` (with an optional --arch), or, if allowed, `--arch`
 * alone (random weights); with none of them and `useDefault`, the embedded Fashion-MNIST model.
 */
export async function loadCliModel(
  o: { model?: string; weights?: string; arch?: string },
  allowRandom: boolean,
  useDefault = false,
): Promise<CliModel> {
  if (o.model && o.weights)
    throw new ConfigError('give either --model FILE.onnx or --weights FILE|NAME, not both');
  if (o.model) return loadOnnxModel(o.model);
  const weights = o.weights ?? (useDefault && !o.arch ? defaultModelPath() : undefined);
  if (weights) {
    const l = await loadModel(weights, { arch: o.arch, log: (m) => console.error(m) });
    const meta = l.checkpoint.metadata;
    return {
      model: l.model,
      entry: l.entry,
      labels: l.entry?.labels ?? meta.labels,
      preprocessing: meta.preprocessing,
    };
  }
  if (o.arch && allowRandom) return { model: createModel(o.arch) };
  throw new ConfigError(
    `needs --weights FILE|NAME or --model FILE.onnx${allowRandom ? ' or --arch NAME' : ''}`,
  );
}
