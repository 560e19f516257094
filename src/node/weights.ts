import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.js';
import { readCheckpoint } from '../io/checkpoint.js';
import { modelFromCheckpoint, type CheckpointModel } from '../models/load.js';
import type { ModelOptions } from '../models/registry.js';
import { WEIGHTS, findWeights, type WeightsEntry } from '../models/weights.js';
import { sha256, writeFileAtomic } from './files.js';

/** Where registered weights are cached: $SHUFFLENET_HOME, else ~/.cache/shufflenet. */
export function shufflenetHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.SHUFFLENET_HOME || join(homedir(), '.cache', 'shufflenet');
}

/**
 * The embedded default: a ShuffleNet trained here on Fashion-MNIST (assets/fashion-mnist, with its command,
 * log and curve), shipped with the package so that `classify` works offline. Found from the sources
 * (src/node) and from the build (dist/src/node).
 */
export function defaultModelPath(): string {
  const candidates = [
    '../../assets/fashion-mnist/model.safetensors',
    '../../../assets/fashion-mnist/model.safetensors',
  ];
  for (const c of candidates) {
    const path = fileURLToPath(new URL(c, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw new Error(
    `the embedded model is missing (looked for ${candidates.join(', ')} next to ${import.meta.url})`,
  );
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

/** A model with its checkpoint, its registry entry and how its preset was chosen. */
export type LoadedModel = CheckpointModel;

/** A model with weights from a file or registered name; the arch comes from --arch, the registry, metadata or the shapes. */
export async function loadModel(
  spec: string,
  o: ResolveOptions & { arch?: string; options?: ModelOptions } = {},
): Promise<LoadedModel> {
  const { path, bytes, entry } = await resolveWeights(spec, o);
  return modelFromCheckpoint(readCheckpoint(bytes, path), path, { arch: o.arch, options: o.options, entry });
}
