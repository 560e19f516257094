/**
 * safetensors (https://github.com/huggingface/safetensors): u64 LE header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {string: string}}`, then the data.
 * Offsets are relative to the end of the header. Validation follows the reference implementation: the
 * tensors must tile the data section exactly (no gaps, no overlap, nothing left over).
 */
import { CheckpointError, DTYPES, isDType, numelOf, typedFromBytes, type RawTensor } from './raw.js';

// The reference implementation refuses bigger headers too; it keeps a hostile length from allocating gigabytes.
const MAX_HEADER = 100_000_000;

export interface Safetensors {
  tensors: Map<string, RawTensor>;
  metadata: Record<string, string>;
}

export function readSafetensors(bytes: Uint8Array): Safetensors {
  const bad = (msg: string): CheckpointError => new CheckpointError(`safetensors: ${msg}`);
  if (bytes.length < 8) throw bad(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(bytes.length - 8)) {
    throw bad(
      `header length ${n} runs past the end of the file (${bytes.length - 8} bytes after the length)`,
    );
  }
  if (n > BigInt(MAX_HEADER)) throw bad(`header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
  const headerEnd = 8 + Number(n);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, headerEnd)));
  } catch (e) {
    throw new CheckpointError(`safetensors: header is not valid UTF-8 JSON (${(e as Error).message})`, {
      cause: e,
    });
  }
  if (!isPlainObject(header)) throw bad('header JSON is not an object');

  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: RawTensor['dtype']; shape: number[]; begin: number; end: number }[] =
    [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isPlainObject(info)) throw bad('__metadata__ is not an object');
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') throw bad(`__metadata__ value for '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor '${name}'`;
    if (!isPlainObject(info)) throw bad(`${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (!isDType(dtype)) {
      throw bad(`${where}: unsupported dtype ${show(dtype)} (known: ${Object.keys(DTYPES).join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw bad(`${where}: shape ${show(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      throw bad(`${where}: data_offsets ${show(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw bad(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
    const want = numelOf(shape) * DTYPES[dtype].size;
    if (end - begin !== want) {
      throw bad(
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} [${shape.join(', ')}] needs ${want}`,
      );
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }

  const dataLen = bytes.length - headerEnd;
  let cursor = 0;
  for (const e of [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end)) {
    if (e.begin < cursor) throw bad(`tensor '${e.name}': data_offsets overlap the previous tensor's data`);
    if (e.begin > cursor)
      throw bad(`tensor '${e.name}': gap of ${e.begin - cursor} unused bytes before its data`);
    if (e.end > dataLen) {
      throw bad(
        `tensor '${e.name}': data ends at byte ${e.end} but the data section has ${dataLen} (truncated file?)`,
      );
    }
    cursor = e.end;
  }
  if (cursor !== dataLen) throw bad(`${dataLen - cursor} trailing bytes after the last tensor's data`);

  const tensors = new Map<string, RawTensor>();
  for (const e of entries) {
    const data = typedFromBytes(e.dtype, bytes.subarray(headerEnd + e.begin, headerEnd + e.end));
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

/** Writes tensors in the order given, with an 8-byte aligned header so every tensor's data starts aligned. */
export function writeSafetensors(
  tensors: Map<string, RawTensor> | Iterable<[string, RawTensor]>,
  metadata?: Record<string, string>,
): Uint8Array {
  // Null prototype: a tensor named '__proto__' or 'constructor' must be just a key.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__')
      throw new CheckpointError("safetensors: '__metadata__' is reserved, not a tensor name");
    if (Object.prototype.hasOwnProperty.call(header, name))
      throw new CheckpointError(`safetensors: duplicate tensor name '${name}'`);
    if (!isDType(t.dtype))
      throw new CheckpointError(`safetensors: tensor '${name}': unknown dtype '${t.dtype}'`);
    const size = numelOf(t.shape) * DTYPES[t.dtype].size;
    if (t.data.byteLength !== size) {
      throw new CheckpointError(
        `safetensors: tensor '${name}': ${t.dtype} [${t.shape.join(', ')}] needs ${size} bytes, data has ${t.data.byteLength}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    parts.push(new Uint8Array(t.data.buffer, t.data.byteOffset, size));
    offset += size;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20); // the spec pads with spaces, which JSON ignores
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const show = (v: unknown): string => (v === undefined ? '(missing)' : JSON.stringify(v));

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}
