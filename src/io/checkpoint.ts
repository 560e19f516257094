import { graphParams, type Graph } from '../graph/graph.js';
import { buildPreset, PRESET_NAMES } from '../models/registry.js';
import { formatShape, Tensor } from '../tensor/tensor.js';
import { readPytorch } from './pytorch.js';
import { CheckpointError, toFloat32, type RawTensor } from './raw.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';

export interface Checkpoint {
  format: 'safetensors' | 'pytorch';
  /** state_dict keys with any 'module.' prefix (nn.DataParallel) removed. */
  tensors: Map<string, RawTensor>;
  /** safetensors `__metadata__` (empty for PyTorch files). */
  metadata: Record<string, string>;
}

/** Reads a safetensors or PyTorch (zip or legacy) checkpoint, recognised by its content, not its name. */
export function readCheckpoint(bytes: Uint8Array, name = 'checkpoint'): Checkpoint {
  const zip = bytes[0] === 0x50 && bytes[1] === 0x4b;
  const pickle = bytes[0] === 0x80; // PROTO opcode: legacy torch.save starts with a pickled magic number
  // safetensors starts with a small u64 header length followed by '{'.
  const st = bytes.length > 9 && bytes[8] === 0x7b && bytes[6] === 0 && bytes[7] === 0;
  try {
    if (st) {
      const { tensors, metadata } = readSafetensors(bytes);
      return { format: 'safetensors', tensors: stripModule(tensors), metadata };
    }
    if (zip || pickle) return { format: 'pytorch', tensors: readPytorch(bytes), metadata: {} };
  } catch (e) {
    if (e instanceof CheckpointError) throw new CheckpointError(`${name}: ${e.message}`, { cause: e });
    throw e;
  }
  throw new CheckpointError(`${name}: not a safetensors or PyTorch checkpoint (unrecognised first bytes)`);
}

function stripModule(tensors: Map<string, RawTensor>): Map<string, RawTensor> {
  return new Map([...tensors].map(([k, v]) => [k.startsWith('module.') ? k.slice(7) : k, v]));
}

const IGNORED = /(^|\.)num_batches_tracked$/;

/**
 * Maps a state_dict onto a graph's parameters and buffers by name. Strict: every missing, unexpected or
 * mis-shaped tensor is reported by name in one error, and nothing is returned half-loaded.
 */
export function weightsFromStateDict(
  graph: Graph,
  tensors: ReadonlyMap<string, RawTensor>,
  source = 'checkpoint',
): Map<string, Tensor> {
  const params = graphParams(graph);
  const known = new Set(params.map((p) => p.name));
  const missing: string[] = [];
  const misShaped: string[] = [];
  const out = new Map<string, Tensor>();
  for (const p of params) {
    const t = tensors.get(p.name);
    if (!t) missing.push(`${p.name} ${formatShape(p.shape)}`);
    else if (t.shape.join() !== p.shape.join()) {
      misShaped.push(`${p.name}: expected ${formatShape(p.shape)}, got ${formatShape(t.shape)}`);
    } else out.set(p.name, new Tensor(p.shape, Float32Array.from(toFloat32(t, p.name))));
  }
  const unexpected = [...tensors.keys()].filter((k) => !known.has(k) && !IGNORED.test(k));
  if (missing.length || misShaped.length || unexpected.length) {
    const parts = [
      missing.length ? `missing ${missing.length}: ${missing.join(', ')}` : '',
      misShaped.length ? `wrong shape ${misShaped.length}: ${misShaped.join('; ')}` : '',
      unexpected.length ? `unexpected ${unexpected.length}: ${unexpected.join(', ')}` : '',
    ].filter(Boolean);
    throw new CheckpointError(`${source} does not fit ${graph.name}: ${parts.join('; ')}`);
  }
  return out;
}

/** The model's state_dict as PyTorch writes it (with BN num_batches_tracked), in graph order. */
export function stateDictFromWeights(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const p of graphParams(graph)) {
    const t = weights.get(p.name)!;
    out.set(p.name, { dtype: 'F32', shape: [...t.shape], data: t.data });
    if (p.slot === 'running_var') {
      const prefix = p.name.slice(0, -'running_var'.length);
      out.set(`${prefix}num_batches_tracked`, { dtype: 'I64', shape: [], data: new BigInt64Array(1) });
    }
  }
  return out;
}

/** safetensors bytes for a model, with its preset name (and any other metadata) in `__metadata__`. */
export function exportSafetensors(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  return writeSafetensors(stateDictFromWeights(graph, weights), { arch: graph.name, ...metadata });
}

/** Presets (with default options) whose parameter names and shapes are exactly those of the state_dict. */
export function presetsFitting(tensors: ReadonlyMap<string, RawTensor>): string[] {
  const keys = [...tensors.keys()].filter((k) => !IGNORED.test(k));
  return PRESET_NAMES.filter((name) => {
    const params = graphParams(buildPreset(name));
    return (
      params.length === keys.length &&
      params.every((p) => tensors.get(p.name)?.shape.join() === p.shape.join())
    );
  });
}
