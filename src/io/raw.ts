/**
 * The common currency of the checkpoint readers: a tensor exactly as stored (dtype, shape, little-endian
 * values in row-major order), before any conversion. Platform-neutral: everything works on Uint8Array.
 */

export type DType = 'F32' | 'F64' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export type RawData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Uint16Array;

/** F16 and BF16 keep their raw bits in a Uint16Array (there is no portable 16-bit float array); BOOL is 0/1 bytes. */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  data: RawData;
}

/** A malformed, truncated, unsupported or unsafe checkpoint file. The message says what is wrong with the file. */
export class CheckpointError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CheckpointError';
  }
}

type ArrayMaker = (buffer: ArrayBuffer) => RawData;

export const DTYPES: Readonly<Record<DType, { size: number; make: ArrayMaker }>> = {
  F32: { size: 4, make: (b) => new Float32Array(b) },
  F64: { size: 8, make: (b) => new Float64Array(b) },
  F16: { size: 2, make: (b) => new Uint16Array(b) },
  BF16: { size: 2, make: (b) => new Uint16Array(b) },
  I64: { size: 8, make: (b) => new BigInt64Array(b) },
  I32: { size: 4, make: (b) => new Int32Array(b) },
  I16: { size: 2, make: (b) => new Int16Array(b) },
  I8: { size: 1, make: (b) => new Int8Array(b) },
  U8: { size: 1, make: (b) => new Uint8Array(b) },
  BOOL: { size: 1, make: (b) => new Uint8Array(b) },
};

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, s);
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// Both formats store little-endian bytes and typed arrays use the host's order; rather than byte-swap
// everywhere for hosts nobody runs this on, say so clearly.
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Copies little-endian bytes into a fresh typed array. Always a copy: the source is usually a view into
 * a whole file at an arbitrary offset, and typed arrays need aligned memory of their own.
 */
export function typedFromBytes(dtype: DType, bytes: Uint8Array): RawData {
  if (!HOST_LITTLE_ENDIAN) throw new CheckpointError('big-endian hosts are not supported');
  // Not bytes.slice(): on a Node Buffer that is a view, and .buffer would be the whole shared pool.
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return DTYPES[dtype].make(copy.buffer);
}

/** Exact for F32/F16/BF16 (returns the tensor's own array for F32); F64 is rounded to nearest. */
export function toFloat32(t: RawTensor, name: string): Float32Array {
  const d = t.data;
  switch (t.dtype) {
    case 'F32':
      return d as Float32Array;
    case 'F64':
      return Float32Array.from(d as Float64Array);
    case 'BF16': {
      // bfloat16 is the top half of a float32.
      const out = new Uint32Array(d.length);
      const src = d as Uint16Array;
      for (let i = 0; i < src.length; i++) out[i] = (src[i] as number) << 16;
      return new Float32Array(out.buffer);
    }
    case 'F16': {
      const out = new Float32Array(d.length);
      const src = d as Uint16Array;
      for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i] as number);
      return out;
    }
    default:
      throw new CheckpointError(
        `tensor '${name}' has dtype ${t.dtype}; expected a floating-point dtype (F32, F64, F16 or BF16)`,
      );
  }
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero and subnormals
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
