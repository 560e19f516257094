/**
 * IEEE 754 binary16 ("half", f16) from and to float32, as the GPU converts: round to nearest, ties to even;
 * subnormals kept; above the largest half (65504) infinity; NaN stays NaN. For f16 activation buffers.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The half bits of a float32 value. */
export function toHalfBits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf, NaN (quiet)
  // The value's exponent, rebiased from 127 to 15.
  const e = exp - 112;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    // Subnormal half (or zero): shift the mantissa with its implicit 1 in, rounding to nearest even.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) r++; // may carry into the exponent, up to infinity: right
  return sign | r;
}

/** The float32 value of half bits. */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Halves of `values` (into `out` if given). */
export function toHalf(
  values: ArrayLike<number>,
  out: Uint16Array = new Uint16Array(values.length),
): Uint16Array {
  for (let i = 0; i < values.length; i++) out[i] = toHalfBits(values[i]!);
  return out;
}

/** Float32 values of halves (into `out` if given). */
export function fromHalf(
  halves: ArrayLike<number>,
  out: Float32Array = new Float32Array(halves.length),
): Float32Array {
  for (let i = 0; i < halves.length; i++) out[i] = fromHalfBits(halves[i]!);
  return out;
}

/** `values` rounded to the nearest half, in place: what an f16 buffer would hold. */
export function roundToHalf(values: Float32Array): Float32Array {
  for (let i = 0; i < values.length; i++) values[i] = fromHalfBits(toHalfBits(values[i]!));
  return values;
}
