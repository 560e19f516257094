/**
 * From a checkpoint's bytes to a model with its labels and preprocessing, on any platform: the choices the
 * CLI and the browser demo make alike. Files, downloads and the cache are in src/node/weights.ts.
 */
import { ConfigError } from '../errors.js';
import { MEGVII_PREPROCESS, type Preprocess } from '../data/image.js';
import { FASHION_MNIST_LABELS, IMAGENET_LABELS } from '../data/labels.js';
import { presetsFitting, readCheckpoint, weightsFromStateDict, type Checkpoint } from '../io/checkpoint.js';
import { importOnnx } from '../io/onnx/import.js';
import { Model } from './model.js';
import { buildPreset, type ModelOptions } from './registry.js';
import { WEIGHTS, type WeightsEntry } from './weights.js';

export interface ArchOptions {
  /** The preset; by default from the registry entry, the file's metadata, or the tensor shapes. */
  arch?: string;
  /** Overrides the options recorded in the file's metadata. */
  options?: ModelOptions;
  /** The registry entry the file was recognised as (by name or sha256). */
  entry?: WeightsEntry;
  /** What the error that cannot tell the arch asks the user to do. */
  archHint?: string;
}

export interface CheckpointModel {
  model: Model;
  checkpoint: Checkpoint;
  entry?: WeightsEntry;
  /** How the preset was chosen: the option, the registry, the file's metadata or its tensor shapes. */
  archFrom: 'option' | 'registry' | 'metadata' | 'shapes';
}

/** The model of a checkpoint; the arch comes from `arch`, the registry entry, the metadata, or the shapes. */
export function modelFromCheckpoint(
  checkpoint: Checkpoint,
  name: string,
  o: ArchOptions = {},
): CheckpointModel {
  const { entry } = o;
  let arch = o.arch;
  let archFrom: CheckpointModel['archFrom'] = 'option';
  if (!arch && entry) [arch, archFrom] = [entry.arch, 'registry'];
  if (!arch && checkpoint.metadata.arch) [arch, archFrom] = [checkpoint.metadata.arch, 'metadata'];
  if (!arch) {
    const fits = presetsFitting(checkpoint.tensors);
    if (fits.length !== 1) {
      throw new ConfigError(
        `${name}: cannot tell the architecture from its tensors (${fits.length ? `fits ${fits.join(', ')}` : 'no preset fits'}); ${o.archHint ?? 'pass --arch NAME'}`,
      );
    }
    [arch, archFrom] = [fits[0]!, 'shapes'];
  }
  // Models trained here record their options (input channels, classes, small-input stem) in the metadata.
  const saved = checkpoint.metadata.model_options;
  const graph = buildPreset(
    arch,
    o.options ?? (saved ? parseJson<ModelOptions>(saved, name, 'model_options') : undefined),
  );
  return {
    model: new Model(graph, weightsFromStateDict(graph, checkpoint.tensors, name)),
    checkpoint,
    entry,
    archFrom,
  };
}

/** What a model's inputs and outputs need: its class names and its preprocessing. */
export interface ModelIO {
  labels: readonly string[];
  preprocess: Preprocess;
}

/** The preprocessing `shufflenet train` records: the training size (resized, centre-cropped), RGB or grey, scale, mean/std. */
interface TrainedPreprocessing {
  channels: number;
  size: [number, number];
  order?: 'RGB' | 'BGR';
  scale: number;
  mean: number[];
  std: number[];
}

/**
 * Labels and preprocessing from the registry entry or the file's metadata (models trained here write `classes`,
 * `labels` and `preprocessing`); without either, the authors' ImageNet classes and evaluation preprocessing.
 */
export function modelIO(
  entry: WeightsEntry | undefined,
  metadata: Record<string, string>,
  name: string,
): ModelIO {
  const set = entry?.labels ?? metadata.labels;
  const labels = metadata.classes
    ? parseJson<string[]>(metadata.classes, name, 'classes')
    : set === 'fashion-mnist'
      ? FASHION_MNIST_LABELS
      : set === 'imagenet' || !set
        ? IMAGENET_LABELS
        : [];
  if (!metadata.preprocessing) return { labels, preprocess: { ...(entry?.preprocess ?? MEGVII_PREPROCESS) } };
  const p = parseJson<TrainedPreprocessing>(metadata.preprocessing, name, 'preprocessing');
  return {
    labels,
    preprocess: {
      resize: p.size[0],
      crop: p.size[0],
      order: p.order ?? 'RGB',
      scale: p.scale,
      mean: p.mean,
      std: p.std,
      channels: p.channels === 1 ? 1 : 3,
    },
  };
}

function parseJson<T>(text: string, name: string, key: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ConfigError(`${name}: metadata '${key}' is not valid JSON (${(e as Error).message})`);
  }
}

/** The registry entry whose sha256 (or a faithful copy's) is that of `bytes`, through Web Crypto. */
export async function recogniseWeights(
  bytes: Uint8Array<ArrayBuffer>,
  registry: readonly WeightsEntry[] = WEIGHTS,
): Promise<WeightsEntry | undefined> {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  return registry.find((w) => w.sha256 === hex || w.alsoSha256?.includes(hex));
}

export interface LoadedFile extends ModelIO {
  model: Model;
  format: 'safetensors' | 'pytorch' | 'onnx';
  entry?: WeightsEntry;
  archFrom?: CheckpointModel['archFrom'];
  metadata: Record<string, string>;
}

/**
 * A model from a file's bytes: ONNX by its name (`.onnx`), else a safetensors or PyTorch checkpoint by its
 * content; a registered file is recognised by its sha256. Errors start with `name`.
 */
export async function loadModelBytes(
  bytes: Uint8Array<ArrayBuffer>,
  name: string,
  o: Omit<ArchOptions, 'entry'> & { registry?: readonly WeightsEntry[] } = {},
): Promise<LoadedFile> {
  if (/\.onnx$/i.test(name)) {
    const { graph, weights } = importOnnx(bytes, name);
    return {
      model: new Model(graph, weights),
      format: 'onnx',
      metadata: {},
      ...modelIO(undefined, {}, name),
    };
  }
  const checkpoint = readCheckpoint(bytes, name);
  const entry = await recogniseWeights(bytes, o.registry);
  const { model, archFrom } = modelFromCheckpoint(checkpoint, name, { ...o, entry });
  const { metadata, format } = checkpoint;
  return { model, format, entry, archFrom, metadata, ...modelIO(entry, metadata, name) };
}
