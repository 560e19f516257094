import { at, evens, madd, odds, partStart, srelu, vrelu } from './common';

// Depthwise 3x3 and pooling compute four output columns per f32x4. A row's last vector may overlap the one
// before it: both store the same bits.

/** Last vector start >= first whose four outputs stay below OW and whose loads (to ox*S + reach) stay in the row. */
function lastStart(first: i32, OW: i32, W: i32, S: i32, reach: i32): i32 {
  const room = W - 1 - reach;
  return room < 0 ? first - 1 : min(OW - 4, room / S);
}

// @inline (a call per vector cost a third of the time) needs a method: TypeScript rejects decorators on functions.
class Dw {
  /**
   * Sum of taps kx = 0, 1, 2 of kernel row r for output columns ox..ox+3 (a chain per kernel row, added
   * afterwards: shorter dependency chains). Columns -1 and W (padding) are never loaded: they enter as zero
   * lanes shuffled in.
   */
  @inline static row(r: usize, ox: i32, W: i32, stride: i32, k0: v128, k1: v128, k2: v128): v128 {
    const z = f32x4.splat(0);
    if (stride == 1) {
      const c = v128.load(at(r, ox));
      const left = ox == 0 ? f32x4.shuffle(z, c, 3, 4, 5, 6) : v128.load(at(r, ox - 1));
      const right = ox + 4 == W ? f32x4.shuffle(c, z, 1, 2, 3, 4) : v128.load(at(r, ox + 1));
      return madd(right, k2, madd(c, k1, f32x4.mul(left, k0)));
    }
    // Stride 2: inputs 2ox - 1 .. 2ox + 7.
    const ix = ox * 2;
    const u = v128.load(at(r, ix));
    const v = ix + 7 < W ? v128.load(at(r, ix + 4)) : f32x4.shuffle(v128.load(at(r, ix + 3)), z, 1, 2, 3, 4);
    const o = odds(u, v);
    const before = ox == 0 ? z : v128.load32_splat(at(r, ix - 1));
    return madd(o, k2, madd(evens(u, v), k1, f32x4.mul(f32x4.shuffle(before, o, 3, 4, 5, 6), k0)));
  }
}

function dwScalar(
  xp: usize,
  wp: usize,
  b: f32,
  H: i32,
  W: i32,
  stride: i32,
  oy: i32,
  ox: i32,
  yr: usize,
  relu: bool,
): void {
  let a = b;
  for (let ky = 0; ky < 3; ky++) {
    const iy = oy * stride - 1 + ky;
    if (iy < 0 || iy >= H) continue;
    for (let kx = 0; kx < 3; kx++) {
      const ix = ox * stride - 1 + kx;
      if (ix >= 0 && ix < W) a += load<f32>(at(wp, ky * 3 + kx)) * load<f32>(at(xp, iy * W + ix));
    }
  }
  store<f32>(at(yr, ox), relu ? srelu(a) : a);
}

/** Depthwise 3x3, padding 1, stride 1 or 2; work items are (image, channel) planes. */
export function depthwise3x3(
  x: usize,
  xC: i32,
  xOff: i32,
  w: usize,
  bias: usize,
  y: usize,
  yC: i32,
  yOff: i32,
  outMap: usize,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  stride: i32,
  relu: bool,
  part: i32,
  parts: i32,
): void {
  const OH = (H - 1) / stride + 1;
  const OW = (W - 1) / stride + 1;
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const c = it % C;
    const n = it / C;
    const xp = at(x, (n * xC + xOff + c) * H * W);
    const oc = outMap ? load<i32>(at(outMap, c)) : c;
    const yp = at(y, (n * yC + yOff + oc) * OH * OW);
    const wp = at(w, c * 9);
    const b: f32 = bias ? load<f32>(at(bias, c)) : 0;
    const k0 = v128.load32_splat(wp);
    const k1 = v128.load32_splat(wp, 4);
    const k2 = v128.load32_splat(wp, 8);
    const k3 = v128.load32_splat(wp, 12);
    const k4 = v128.load32_splat(wp, 16);
    const k5 = v128.load32_splat(wp, 20);
    const k6 = v128.load32_splat(wp, 24);
    const k7 = v128.load32_splat(wp, 28);
    const k8 = v128.load32_splat(wp, 32);
    for (let oy = 0; oy < OH; oy++) {
      const iy = oy * stride - 1;
      const yr = at(yp, oy * OW);
      if (OW < 4) {
        for (let ox = 0; ox < OW; ox++) dwScalar(xp, wp, b, H, W, stride, oy, ox, yr, relu);
        continue;
      }
      for (let ox = 0; ; ox += 4) {
        if (ox > OW - 4) ox = OW - 4;
        let a = f32x4.splat(b);
        if (iy >= 0) a = f32x4.add(a, Dw.row(at(xp, iy * W), ox, W, stride, k0, k1, k2));
        a = f32x4.add(a, Dw.row(at(xp, (iy + 1) * W), ox, W, stride, k3, k4, k5));
        if (iy + 2 < H) a = f32x4.add(a, Dw.row(at(xp, (iy + 2) * W), ox, W, stride, k6, k7, k8));
        v128.store(at(yr, ox), relu ? vrelu(a) : a);
        if (ox == OW - 4) break;
      }
    }
  }
}

const MAX = 0;
const AVG_INCLUDE_PAD = 1;
const AVG_EXCLUDE_PAD = 2;

function pool(
  x: usize,
  xC: i32,
  xOff: i32,
  y: usize,
  yC: i32,
  yOff: i32,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  KH: i32,
  KW: i32,
  SH: i32,
  SW: i32,
  PH: i32,
  PW: i32,
  OH: i32,
  OW: i32,
  mode: i32,
  part: i32,
  parts: i32,
): void {
  // Max keeps the first of equal values and propagates NaN, as PyTorch's loop does: pmax (a < v ? v : a)
  // plus a NaN mask is that, and cheaper than f32x4.max.
  const isMax = mode == MAX;
  const include = mode == AVG_INCLUDE_PAD;
  // Interior vectors [first, last] load inside the row: ox * SW >= PW, last load at ox*SW - PW + KW - 1 + reach.
  // Other columns and strides > 2 go scalar.
  const first = (PW + SW - 1) / SW;
  const reach = SW == 1 ? 3 : KW == 3 ? 6 : 7;
  const last = SW <= 2 ? lastStart(first, OW, W + PW - KW + 1, SW, reach) : first - 1;
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const c = it % C;
    const n = it / C;
    const xp = at(x, (n * xC + xOff + c) * H * W);
    const yp = at(y, (n * yC + yOff + c) * OH * OW);
    for (let oy = 0; oy < OH; oy++) {
      const py0 = oy * SH - PH;
      const py1 = min(py0 + KH, H + PH);
      const y0 = max(py0, 0);
      const y1 = min(py1, H);
      const yr = at(yp, oy * OW);
      const div = f32x4.splat(<f32>((include ? py1 - py0 : y1 - y0) * KW));
      const vectors = last >= first;
      const head = vectors ? first : OW;
      for (let ox = 0; ox < head; ox++) poolScalar(xp, W, KW, SW, PW, y0, y1, py1 - py0, ox, yr, mode);
      if (!vectors) continue;
      for (let ox = first; ; ox = min(ox + 4, last)) {
        const a = windowInner(xp, W, y0, y1, ox * SW - PW, KW, SW, isMax);
        v128.store(at(yr, ox), isMax ? a : f32x4.div(a, div));
        if (ox == last) break;
      }
      for (let ox = last + 4; ox < OW; ox++) poolScalar(xp, W, KW, SW, PW, y0, y1, py1 - py0, ox, yr, mode);
    }
  }
}

/**
 * Max (first of equals wins, NaN propagates) or sum over window rows [y0, y1) and KW taps for four outputs
 * starting at input column ix, all loads inside the row.
 */
function windowInner(xp: usize, W: i32, y0: i32, y1: i32, ix: i32, KW: i32, SW: i32, isMax: bool): v128 {
  let a = f32x4.splat(isMax ? -Infinity : 0);
  let nan = f32x4.splat(0);
  for (let iy = y0; iy < y1; iy++) {
    const r = at(xp, iy * W + ix);
    if (KW == 3 && SW == 2) {
      // The common 3x3 stride-2 window reads columns ix .. ix + 8 with three loads: taps 0 and 1 are the
      // even and odd columns, tap 2 the even ones moved by one.
      const u = v128.load(r);
      const v = v128.load(r, 16);
      const t0 = evens(u, v);
      const t1 = odds(u, v);
      const t2 = f32x4.shuffle(t0, v128.load32_splat(r, 32), 1, 2, 3, 4);
      if (isMax) {
        a = f32x4.pmax(f32x4.pmax(f32x4.pmax(a, t0), t1), t2);
        nan = v128.or(nan, v128.or(v128.or(f32x4.ne(t0, t0), f32x4.ne(t1, t1)), f32x4.ne(t2, t2)));
      } else a = f32x4.add(f32x4.add(f32x4.add(a, t0), t1), t2);
      continue;
    }
    for (let s = r, e = at(r, KW); s < e; s += 4) {
      const v = SW == 1 ? v128.load(s) : evens(v128.load(s), v128.load(s, 16));
      if (isMax) {
        a = f32x4.pmax(a, v);
        nan = v128.or(nan, f32x4.ne(v, v));
      } else a = f32x4.add(a, v);
    }
  }
  return isMax ? v128.bitselect(f32x4.splat(NaN), a, nan) : a;
}

function poolScalar(
  xp: usize,
  W: i32,
  KW: i32,
  SW: i32,
  PW: i32,
  y0: i32,
  y1: i32,
  paddedRows: i32,
  ox: i32,
  yr: usize,
  mode: i32,
): void {
  const px0 = ox * SW - PW;
  const px1 = min(px0 + KW, W + PW);
  const x0 = max(px0, 0);
  const x1 = min(px1, W);
  let a: f32 = mode == MAX ? -Infinity : 0;
  for (let iy = y0; iy < y1; iy++) {
    for (let ix = x0; ix < x1; ix++) {
      const v = load<f32>(at(xp, iy * W + ix));
      if (mode != MAX) a += v;
      else if (v > a || isNaN(v)) a = v;
    }
  }
  if (mode == AVG_INCLUDE_PAD) a /= <f32>(paddedRows * (px1 - px0));
  else if (mode == AVG_EXCLUDE_PAD) a /= <f32>((y1 - y0) * (x1 - x0));
  store<f32>(at(yr, ox), a);
}

/** Max pool with PyTorch semantics (padding never wins); OH/OW from the caller, so ceil_mode works. */
export function maxpool2d(
  x: usize,
  xC: i32,
  xOff: i32,
  y: usize,
  yC: i32,
  yOff: i32,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  KH: i32,
  KW: i32,
  SH: i32,
  SW: i32,
  PH: i32,
  PW: i32,
  OH: i32,
  OW: i32,
  part: i32,
  parts: i32,
): void {
  pool(x, xC, xOff, y, yC, yOff, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, MAX, part, parts);
}

/** Average pool with PyTorch semantics: countIncludePad divides by the window clipped to [-P, H + P). */
export function avgpool2d(
  x: usize,
  xC: i32,
  xOff: i32,
  y: usize,
  yC: i32,
  yOff: i32,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  KH: i32,
  KW: i32,
  SH: i32,
  SW: i32,
  PH: i32,
  PW: i32,
  OH: i32,
  OW: i32,
  countIncludePad: bool,
  part: i32,
  parts: i32,
): void {
  const mode = countIncludePad ? AVG_INCLUDE_PAD : AVG_EXCLUDE_PAD;
  pool(x, xC, xOff, y, yC, yOff, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, mode, part, parts);
}
