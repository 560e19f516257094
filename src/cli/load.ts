import { ConfigError } from '../errors.js';
import { createModel, type Model } from '../models/model.js';
import { modelIO, type ModelIO } from '../models/load.js';
import { defaultModelPath, loadModel } from '../node/weights.js';
import { loadOnnxModel } from './onnx.js';

export interface CliModel {
  model: Model;
  /** Class names and preprocessing from the registry or the file's metadata (ImageNet's by default). */
  io: ModelIO;
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
  if (o.model) return { ...loadOnnxModel(o.model), io: modelIO(undefined, {}, o.model) };
  const weights = o.weights ?? (useDefault && !o.arch ? defaultModelPath() : undefined);
  if (weights) {
    const l = await loadModel(weights, { arch: o.arch, log: (m) => console.error(m) });
    return { model: l.model, io: modelIO(l.entry, l.checkpoint.metadata, weights) };
  }
  if (o.arch && allowRandom) return { model: createModel(o.arch), io: modelIO(undefined, {}, o.arch) };
  throw new ConfigError(
    `needs --weights FILE|NAME or --model FILE.onnx${allowRandom ? ' or --arch NAME' : ''}`,
  );
}
