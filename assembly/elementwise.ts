import { at, madd, partStart, srelu, vrelu } from './common';

/** y[n*C + c] = mean of plane (n, c): four lane sums, then a fixed horizontal order. */
export function globalAvgPool(x: usize, N: i32, C: i32, HW: i32, y: usize): void {
  const hw4 = HW & ~3;
  for (let p = 0; p < N * C; p++) {
    const xp = at(x, p * HW);
    let a = f32x4.splat(0);
    for (let i = 0; i < hw4; i += 4) a = f32x4.add(a, v128.load(at(xp, i)));
    let s =
      f32x4.extract_lane(a, 0) +
      f32x4.extract_lane(a, 1) +
      (f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3));
    for (let i = hw4; i < HW; i++) s += load<f32>(at(xp, i));
    store<f32>(at(y, p), s / <f32>HW);
  }
}

/** y = x * scale[c] + shift[c] per channel (inference batch norm); work items are (image, channel) planes. */
export function channelAffine(
  x: usize,
  N: i32,
  C: i32,
  HW: i32,
  scale: usize,
  shift: usize,
  y: usize,
  relu: bool,
  part: i32,
  parts: i32,
): void {
  const hw4 = HW & ~3;
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let p = partStart(total, part, parts); p < end; p++) {
    const c = p % C;
    const s = load<f32>(at(scale, c));
    const t = load<f32>(at(shift, c));
    const vs = f32x4.splat(s);
    const vt = f32x4.splat(t);
    const xp = at(x, p * HW);
    const yp = at(y, p * HW);
    for (let i = 0; i < hw4; i += 4) {
      const a = madd(v128.load(at(xp, i)), vs, vt);
      v128.store(at(yp, i), relu ? vrelu(a) : a);
    }
    for (let i = hw4; i < HW; i++) {
      const a = load<f32>(at(xp, i)) * s + t;
      store<f32>(at(yp, i), relu ? srelu(a) : a);
    }
  }
}

/** First element of part `part`: parts split whole 4-element vectors. */
function split(n: i32, part: i32, parts: i32): i32 {
  return min(partStart((n + 3) >> 2, part, parts) << 2, n);
}

export function relu(x: usize, y: usize, n: i32, part: i32, parts: i32): void {
  const hi = split(n, part + 1, parts);
  let i = split(n, part, parts);
  for (; i + 4 <= hi; i += 4) v128.store(at(y, i), vrelu(v128.load(at(x, i))));
  for (; i < hi; i++) store<f32>(at(y, i), srelu(load<f32>(at(x, i))));
}

export function add(a: usize, b: usize, y: usize, n: i32, relu: bool, part: i32, parts: i32): void {
  const hi = split(n, part + 1, parts);
  let i = split(n, part, parts);
  for (; i + 4 <= hi; i += 4) {
    const s = f32x4.add(v128.load(at(a, i)), v128.load(at(b, i)));
    v128.store(at(y, i), relu ? vrelu(s) : s);
  }
  for (; i < hi; i++) {
    const s = load<f32>(at(a, i)) + load<f32>(at(b, i));
    store<f32>(at(y, i), relu ? srelu(s) : s);
  }
}
