import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { presetsFitting, readCheckpoint, weightsFromStateDict, type Checkpoint } from '../io/checkpoint.js';
import { Model } from '../models/model.js';
import { buildPreset, type ModelOptions } from '../models/registry.js';
import { WEIGHTS, findWeights, type WeightsEntry } from '../models/weights.js';
import { sha256, writeFileAtomic } from './files.js';

/** Where registered weights are cached: $SHUFFLENET_HOME, else ~/.cache/shufflenet. */
export function shufflenetHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.SHUFFLENET_HOME || join(homedir(), '.cache', 'shufflenet');
}

export interface ResolveOptions {
  home?: string;
  registry?: readonly WeightsEntry[];
  /** Injected for tests; the global fetch otherwise. */
  fetch?: typeof fetch;
  /** Told about downloads (the CLI prints to stderr). */
  log?: (message: string) => void;
}

export interface ResolvedWeights {
  path: string;
  bytes: Uint8Array;
  /** The registry entry, by name or because the file's sha256 is a registered one. */
  entry?: WeightsEntry;
}

/**
 * `spec` is a file path or a registered name. A registered file comes from the cache folder, is downloaded
 * there (sha256-verified, written atomically) when absent, and is verified again on every use.
 */
export async function resolveWeights(spec: string, o: ResolveOptions = {}): Promise<ResolvedWeights> {
  const registry = o.registry ?? WEIGHTS;
  if (existsSync(spec)) {
    const bytes = new Uint8Array(readFileSync(spec));
    const digest = sha256(bytes);
    return {
      path: spec,
      bytes,
      entry: registry.find((w) => w.sha256 === digest || w.alsoSha256?.includes(digest)),
    };
  }
  const entry = findWeights(spec, registry);
  if (!entry) {
    throw new ConfigError(
      `--weights '${spec}': no such file, and no registered weights of that name ` +
        `(registered: ${registry.map((w) => w.name).join(', ')})`,
    );
  }
  const path = join(o.home ?? shufflenetHome(), entry.file);
  const where = `get it from ${entry.url} (sha256 ${entry.sha256}) and save it as ${path}, or pass --weights FILE`;
  if (existsSync(path)) {
    const bytes = new Uint8Array(readFileSync(path));
    const digest = sha256(bytes);
    if (digest !== entry.sha256) {
      throw new Error(
        `${path}: sha256 ${digest} is not the registered ${entry.sha256}; delete it to download again`,
      );
    }
    return { path, bytes, entry };
  }
  o.log?.(`downloading ${entry.name} from ${entry.url}`);
  let bytes: Uint8Array;
  try {
    const res = await (o.fetch ?? fetch)(entry.url);
    if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
    bytes = new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    throw new Error(`could not download ${entry.name}: ${(e as Error).message}. Offline? ${where}`);
  }
  const digest = sha256(bytes);
  if (digest !== entry.sha256) {
    throw new Error(
      `downloaded ${entry.name} has sha256 ${digest}, expected ${entry.sha256}; nothing was saved`,
    );
  }
  writeFileAtomic(path, bytes);
  o.log?.(`saved ${path}`);
  return { path, bytes, entry };
}

export interface LoadedModel {
  model: Model;
  checkpoint: Checkpoint;
  entry?: WeightsEntry;
  /** How the preset was chosen: the option, the registry, the file's metadata or its tensor shapes. */
  archFrom: 'option' | 'registry' | 'metadata' | 'shapes';
}

/** A model with weights from a file or registered name; the arch comes from --arch, the registry, metadata or the shapes. */
export async function loadModel(
  spec: string,
  o: ResolveOptions & { arch?: string; options?: ModelOptions } = {},
): Promise<LoadedModel> {
  const { path, bytes, entry } = await resolveWeights(spec, o);
  const checkpoint = readCheckpoint(bytes, path);
  let arch = o.arch;
  let archFrom: LoadedModel['archFrom'] = 'option';
  if (!arch && entry) [arch, archFrom] = [entry.arch, 'registry'];
  if (!arch && checkpoint.metadata.arch) [arch, archFrom] = [checkpoint.metadata.arch, 'metadata'];
  if (!arch) {
    const fits = presetsFitting(checkpoint.tensors);
    if (fits.length !== 1) {
      throw new ConfigError(
        `${path}: cannot tell the architecture from its tensors (${fits.length ? `fits ${fits.join(', ')}` : 'no preset fits'}); pass --arch NAME`,
      );
    }
    [arch, archFrom] = [fits[0]!, 'shapes'];
  }
  // Models trained here record their options (input channels, classes, small-input stem) in the metadata.
  const saved = checkpoint.metadata.model_options;
  const graph = buildPreset(arch, o.options ?? (saved ? (JSON.parse(saved) as ModelOptions) : undefined));
  return {
    model: new Model(graph, weightsFromStateDict(graph, checkpoint.tensors, path)),
    checkpoint,
    entry,
    archFrom,
  };
}
