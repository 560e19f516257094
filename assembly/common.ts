/** a * b + c on four lanes; the relaxed build may fuse it (one rounding instead of two). */
export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** ReLU that maps NaN and -0 to +0, like the reference `x > 0 ? x : 0`. */
export function vrelu(a: v128): v128 {
  return f32x4.pmax(f32x4.splat(0), a);
}

export function srelu(a: f32): f32 {
  return a > 0 ? a : 0;
}

/** First item of part `part` when `total` items are split into `parts` contiguous ranges. */
export function partStart(total: i32, part: i32, parts: i32): i32 {
  return <i32>((<i64>total * part) / parts);
}

/** Byte address of float `i` from `base`. */
export function at(base: usize, i: i32): usize {
  return base + ((<usize>i) << 2);
}

/** Lanes 0, 2, 4, 6 of a:b, i.e. every other column. */
export function evens(a: v128, b: v128): v128 {
  return f32x4.shuffle(a, b, 0, 2, 4, 6);
}

export function odds(a: v128, b: v128): v128 {
  return f32x4.shuffle(a, b, 1, 3, 5, 7);
}

/** Horizontal sum of four lanes in f64. */
export function hsum64(a: v128): f64 {
  return (
    <f64>f32x4.extract_lane(a, 0) +
    <f64>f32x4.extract_lane(a, 1) +
    <f64>f32x4.extract_lane(a, 2) +
    <f64>f32x4.extract_lane(a, 3)
  );
}
