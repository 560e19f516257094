import { at, hsum64, madd, partStart } from './common';

// Backward (training) kernels. Same conventions as the forward ones: byte pointers, f32 NCHW, map 0 =
// identity, `part, parts` split deterministic work items; every output value is computed by exactly one work
// item in an order fixed by the shape only, so the bits do not depend on `parts`.

/** Channel index through an optional i32 map. */
function mapped(map: usize, c: i32): i32 {
  return map ? load<i32>(at(map, c)) : c;
}

/** Horizontal sum of four lanes in a fixed order. */
function hsum(a: v128): f32 {
  return (
    f32x4.extract_lane(a, 0) +
    f32x4.extract_lane(a, 1) +
    (f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3))
  );
}

// ---------------------------------------------------------------------------------------------------------
// Pointwise (grouped 1x1) backward.

/** Pixels per work item of the input gradient: a multiple of 8 whose `rows` dy rows stay in L1. */
function pixelChunk(rows: i32, HW: i32): i32 {
  const p = max(8, ((24 << 10) / (rows * 4)) & ~7);
  return min(p, (HW + 7) & ~7);
}

/** dx row store: a (+ old value when accumulating). */
function putv(p: usize, a: v128, acc: bool): void {
  v128.store(p, acc ? f32x4.add(v128.load(p), a) : a);
}

function puts(p: usize, a: f32, acc: bool): void {
  store<f32>(p, acc ? load<f32>(p) + a : a);
}

/**
 * Up to 4 dx rows (rows j..j+rows-1 of a group; missing rows repeat the last one and are not stored) times
 * `np` pixels from pixel 0 of dyb: acc[r][p] = sum_o w[o*cin + j + r] * dy[o][p], o in order.
 * w points at w[j] of the group's first output; ws = cin*4 bytes; dyb at the group's first dy row, rs its stride.
 * d0..d3 are the dx row addresses (at pixel 0).
 */
function bwdInTile(
  rows: i32,
  np: i32,
  w: usize,
  ws: usize,
  K: i32,
  dyb: usize,
  rs: usize,
  d0: usize,
  d1: usize,
  d2: usize,
  d3: usize,
  acc: bool,
): void {
  const o1: usize = rows > 1 ? 4 : 0;
  const o2: usize = rows > 2 ? 8 : o1;
  const o3: usize = rows > 3 ? 12 : o2;
  let p = 0;
  for (; p + 8 <= np; p += 8) {
    let a00 = f32x4.splat(0);
    let a01 = a00;
    let a10 = a00;
    let a11 = a00;
    let a20 = a00;
    let a21 = a00;
    let a30 = a00;
    let a31 = a00;
    let yr = dyb + ((<usize>p) << 2);
    let wk = w;
    for (let k = 0; k < K; k++, yr += rs, wk += ws) {
      const x0 = v128.load(yr);
      const x1 = v128.load(yr, 16);
      let b = v128.load32_splat(wk);
      a00 = madd(b, x0, a00);
      a01 = madd(b, x1, a01);
      b = v128.load32_splat(wk + o1);
      a10 = madd(b, x0, a10);
      a11 = madd(b, x1, a11);
      b = v128.load32_splat(wk + o2);
      a20 = madd(b, x0, a20);
      a21 = madd(b, x1, a21);
      b = v128.load32_splat(wk + o3);
      a30 = madd(b, x0, a30);
      a31 = madd(b, x1, a31);
    }
    const pb = (<usize>p) << 2;
    putv(d0 + pb, a00, acc);
    putv(d0 + pb + 16, a01, acc);
    if (rows > 1) {
      putv(d1 + pb, a10, acc);
      putv(d1 + pb + 16, a11, acc);
    }
    if (rows > 2) {
      putv(d2 + pb, a20, acc);
      putv(d2 + pb + 16, a21, acc);
    }
    if (rows > 3) {
      putv(d3 + pb, a30, acc);
      putv(d3 + pb + 16, a31, acc);
    }
  }
  for (; p + 4 <= np; p += 4) {
    let a0 = f32x4.splat(0);
    let a1 = a0;
    let a2 = a0;
    let a3 = a0;
    let yr = dyb + ((<usize>p) << 2);
    let wk = w;
    for (let k = 0; k < K; k++, yr += rs, wk += ws) {
      const x0 = v128.load(yr);
      a0 = madd(v128.load32_splat(wk), x0, a0);
      a1 = madd(v128.load32_splat(wk + o1), x0, a1);
      a2 = madd(v128.load32_splat(wk + o2), x0, a2);
      a3 = madd(v128.load32_splat(wk + o3), x0, a3);
    }
    const pb = (<usize>p) << 2;
    putv(d0 + pb, a0, acc);
    if (rows > 1) putv(d1 + pb, a1, acc);
    if (rows > 2) putv(d2 + pb, a2, acc);
    if (rows > 3) putv(d3 + pb, a3, acc);
  }
  for (; p < np; p++) {
    const pb = (<usize>p) << 2;
    for (let r = 0; r < rows; r++) {
      const off: usize = (<usize>r) << 2;
      let a: f32 = 0;
      let yr = dyb + pb;
      let wk = w + off;
      for (let k = 0; k < K; k++, yr += rs, wk += ws) a += load<f32>(wk) * load<f32>(yr);
      puts((r == 0 ? d0 : r == 1 ? d1 : r == 2 ? d2 : d3) + pb, a, acc);
    }
  }
}

/**
 * Input gradient of `pointwise`: dx[n, xOff + map(g*cin + j), p] (+)= sum_{o in group g} w[o*cin + j] *
 * dy[n, yOff + o, p], cin = inC/groups. Work items: (image, group, chunk of pixels): each block of 4 dx rows sweeps the chunk, so dx is
 * read and written row by row in memory order (a stream per row, not 4 x 8 floats of every row per item).
 */
export function pointwiseBackwardInput(
  dy: usize,
  yC: i32,
  yOff: i32,
  w: usize,
  dx: usize,
  xC: i32,
  xOff: i32,
  inMap: usize,
  N: i32,
  inC: i32,
  outC: i32,
  groups: i32,
  HW: i32,
  accumulate: bool,
  part: i32,
  parts: i32,
): void {
  const cin = inC / groups;
  const og = outC / groups;
  const P = pixelChunk(og, HW);
  const chunks = (HW + P - 1) / P;
  const total = N * groups * chunks;
  const end = partStart(total, part + 1, parts);
  const rs = (<usize>HW) << 2;
  const ws = (<usize>cin) << 2;
  for (let it = partStart(total, part, parts); it < end; it++) {
    const t = it % chunks;
    const g = (it / chunks) % groups;
    const n = it / chunks / groups;
    const p = t * P;
    const np = min(P, HW - p);
    const dyb = at(dy, (n * yC + yOff + g * og) * HW + p);
    const xb = at(dx, n * xC * HW + p);
    const wg = at(w, g * og * cin);
    for (let j = 0; j < cin; j += 4) {
      const rows = min(4, cin - j);
      const c = g * cin + j;
      const d0 = xb + <usize>(xOff + mapped(inMap, c)) * rs;
      const d1 = rows > 1 ? xb + <usize>(xOff + mapped(inMap, c + 1)) * rs : d0;
      const d2 = rows > 2 ? xb + <usize>(xOff + mapped(inMap, c + 2)) * rs : d1;
      const d3 = rows > 3 ? xb + <usize>(xOff + mapped(inMap, c + 3)) * rs : d2;
      bwdInTile(rows, np, at(wg, j), ws, og, dyb, rs, d0, d1, d2, d3, accumulate);
    }
  }
}

/**
 * dw for 4 outputs (rows ya..yd of dy, repeated when fewer) x 2 inputs (rows xa, xb of x) over all images:
 * adds sum_{n,p} dy*x into dw (rows `ro` <= 4 of stride ws bytes, columns `cj` <= 2). Addresses are for
 * image 0; ys and xs are the image strides of dy and x in bytes.
 */
function bwdWTile(
  ro: i32,
  cj: i32,
  y0: usize,
  y1: usize,
  y2: usize,
  y3: usize,
  ys: usize,
  x0: usize,
  x1: usize,
  xs: usize,
  N: i32,
  HW: i32,
  dw: usize,
  ws: usize,
): void {
  const hw4 = HW & ~3;
  let a00 = f32x4.splat(0);
  let a01 = a00;
  let a10 = a00;
  let a11 = a00;
  let a20 = a00;
  let a21 = a00;
  let a30 = a00;
  let a31 = a00;
  let s00: f32 = 0;
  let s01: f32 = 0;
  let s10: f32 = 0;
  let s11: f32 = 0;
  let s20: f32 = 0;
  let s21: f32 = 0;
  let s30: f32 = 0;
  let s31: f32 = 0;
  for (let n = 0; n < N; n++) {
    const yo = <usize>n * ys;
    const xo = <usize>n * xs;
    const pa = y0 + yo;
    const pb = y1 + yo;
    const pc = y2 + yo;
    const pd = y3 + yo;
    const qa = x0 + xo;
    const qb = x1 + xo;
    for (let i = 0; i < hw4; i += 4) {
      const off = (<usize>i) << 2;
      const u = v128.load(qa + off);
      const v = v128.load(qb + off);
      let d = v128.load(pa + off);
      a00 = madd(d, u, a00);
      a01 = madd(d, v, a01);
      d = v128.load(pb + off);
      a10 = madd(d, u, a10);
      a11 = madd(d, v, a11);
      d = v128.load(pc + off);
      a20 = madd(d, u, a20);
      a21 = madd(d, v, a21);
      d = v128.load(pd + off);
      a30 = madd(d, u, a30);
      a31 = madd(d, v, a31);
    }
    for (let i = hw4; i < HW; i++) {
      const off = (<usize>i) << 2;
      const u = load<f32>(qa + off);
      const v = load<f32>(qb + off);
      let d = load<f32>(pa + off);
      s00 += d * u;
      s01 += d * v;
      d = load<f32>(pb + off);
      s10 += d * u;
      s11 += d * v;
      d = load<f32>(pc + off);
      s20 += d * u;
      s21 += d * v;
      d = load<f32>(pd + off);
      s30 += d * u;
      s31 += d * v;
    }
  }
  addw(dw, hsum(a00) + s00);
  if (cj > 1) addw(dw + 4, hsum(a01) + s01);
  if (ro > 1) {
    addw(dw + ws, hsum(a10) + s10);
    if (cj > 1) addw(dw + ws + 4, hsum(a11) + s11);
  }
  if (ro > 2) {
    addw(dw + 2 * ws, hsum(a20) + s20);
    if (cj > 1) addw(dw + 2 * ws + 4, hsum(a21) + s21);
  }
  if (ro > 3) {
    addw(dw + 3 * ws, hsum(a30) + s30);
    if (cj > 1) addw(dw + 3 * ws + 4, hsum(a31) + s31);
  }
}

function addw(p: usize, v: f32): void {
  store<f32>(p, load<f32>(p) + v);
}

/** dbias[o] += sum_{n,p} of dy row `y` (image 0 address, image stride ys). */
function rowSum(y: usize, ys: usize, N: i32, HW: i32): f32 {
  const hw4 = HW & ~3;
  let a = f32x4.splat(0);
  let s: f32 = 0;
  for (let n = 0; n < N; n++) {
    const r = y + <usize>n * ys;
    for (let i = 0; i < hw4; i += 4) a = f32x4.add(a, v128.load(at(r, i)));
    for (let i = hw4; i < HW; i++) s += load<f32>(at(r, i));
  }
  return hsum(a) + s;
}

/**
 * Weight gradient of `pointwise`: dw[o*cin + j] += sum_{n,p} dy[n, yOff+o, p] * x[n, xOff + map(g*cin+j), p];
 * dbias[o] += sum_{n,p} dy[n, yOff+o, p] (dbias 0: skipped). Work items: (group, block of 4 outputs), each
 * reducing over all pixels of a chunk of images (f32x4 lane sums, then a fixed horizontal order) and adding
 * that into dw chunk by chunk. A chunk's rows of the group (dy and x) fit in L2, so the items re-read them
 * from there instead of memory. Planes under PACK_BELOW pixels are first copied into one contiguous row per
 * channel (`scratch`, pointwiseBackwardWeightScratchBytes): a 4x4 plane is too short a loop, and the copy
 * doubles the speed there. Chunks depend on the shape only, so the bits do not depend on parts.
 */
export function pointwiseBackwardWeight(
  x: usize,
  xC: i32,
  xOff: i32,
  inMap: usize,
  dy: usize,
  yC: i32,
  yOff: i32,
  dw: usize,
  dbias: usize,
  N: i32,
  inC: i32,
  outC: i32,
  groups: i32,
  HW: i32,
  scratch: usize,
  part: i32,
  parts: i32,
): void {
  const cin = inC / groups;
  const og = outC / groups;
  const blocks = (og + 3) >> 2;
  const total = groups * blocks;
  const first = partStart(total, part, parts);
  const end = partStart(total, part + 1, parts);
  const rs = (<usize>HW) << 2;
  const ys = <usize>yC * rs;
  const xs = <usize>xC * rs;
  const ws = (<usize>cin) << 2;
  const pack = HW < PACK_BELOW;
  const chunk = pack ? packChunk(cin, HW, N) : max(1, min(N, CHUNK_BYTES / ((og + cin) * HW * 4)));
  const xp = scratch + <usize>part * <usize>packBytes(cin, HW);
  for (let n0 = 0; n0 < N; n0 += chunk) {
    const nc = min(chunk, N - n0);
    const L = nc * HW; // packed row length
    const lb = (<usize>L) << 2;
    const yb = dy + <usize>n0 * ys;
    const xbase = x + <usize>n0 * xs;
    let packed = -1; // the group whose x rows xp holds
    const yp = xp + <usize>cin * lb;
    for (let it = first; it < end; it++) {
      const g = it / blocks;
      const ob = (it % blocks) << 2;
      const ro = min(4, og - ob);
      const o = g * og + ob;
      let y0 = yb + <usize>(yOff + o) * rs;
      let yStride = ys;
      let xStride = xs;
      let images = nc;
      let plane = HW;
      if (pack) {
        if (packed != g) {
          for (let j = 0; j < cin; j++) {
            gather(xbase + <usize>(xOff + mapped(inMap, g * cin + j)) * rs, xs, nc, HW, xp + <usize>j * lb);
          }
          packed = g;
        }
        for (let r = 0; r < ro; r++) gather(y0 + <usize>r * rs, ys, nc, HW, yp + <usize>r * lb);
        y0 = yp;
        yStride = 0;
        xStride = 0;
        images = 1;
        plane = L;
      }
      const yr = pack ? lb : rs;
      const y1 = ro > 1 ? y0 + yr : y0;
      const y2 = ro > 2 ? y1 + yr : y1;
      const y3 = ro > 3 ? y2 + yr : y2;
      for (let j = 0; j < cin; j += 2) {
        const cj = min(2, cin - j);
        let xa: usize;
        let xb: usize;
        if (pack) {
          xa = xp + <usize>j * lb;
          xb = cj > 1 ? xa + lb : xa;
        } else {
          xa = xbase + <usize>(xOff + mapped(inMap, g * cin + j)) * rs;
          xb = cj > 1 ? xbase + <usize>(xOff + mapped(inMap, g * cin + j + 1)) * rs : xa;
        }
        bwdWTile(ro, cj, y0, y1, y2, y3, yStride, xa, xb, xStride, images, plane, at(dw, o * cin + j), ws);
      }
      if (dbias) {
        for (let r = 0; r < ro; r++)
          addw(at(dbias, o + r), rowSum(y0 + <usize>r * yr, yStride, images, plane));
      }
    }
  }
}

/** Bytes of one group's dy and x rows that a chunk of images may take (a part of a 1 MiB L2). */
const CHUNK_BYTES = 128 << 10;
const PACK_BELOW = 64;

/** Images per chunk when packing: the group's x rows and 4 dy rows within CHUNK_BYTES (at least one image). */
function packChunk(cin: i32, HW: i32, N: i32): i32 {
  return max(1, min(N, CHUNK_BYTES / ((cin + 4) * HW * 4)));
}

/** One part's packed rows: (cin + 4) rows of a chunk. */
function packBytes(cin: i32, HW: i32): i32 {
  return (((cin + 4) * HW * 4 * max(1, CHUNK_BYTES / ((cin + 4) * HW * 4)) + 63) & ~63) + 64;
}

/** Scratch of `pointwiseBackwardWeight` for all parts (0 when its planes are not packed). */
export function pointwiseBackwardWeightScratchBytes(inC: i32, groups: i32, HW: i32, parts: i32): i32 {
  return HW < PACK_BELOW ? packBytes(inC / groups, HW) * parts : 0;
}

/** Copies `nc` planes of HW floats, `stride` bytes apart from `src`, into one row at `dst`. */
function gather(src: usize, stride: usize, nc: i32, HW: i32, dst: usize): void {
  const hw4 = HW & ~3;
  for (let n = 0; n < nc; n++) {
    const s = src + <usize>n * stride;
    const d = at(dst, n * HW);
    let i = 0;
    for (; i < hw4; i += 4) v128.store(at(d, i), v128.load(at(s, i)));
    for (; i < HW; i++) store<f32>(at(d, i), load<f32>(at(s, i)));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Batch norm (training) and ReLU backward.

/** Horizontal sum of two f32x4 accumulators, in f64. */
function hsum2(a: v128, b: v128): f64 {
  const v = f32x4.add(a, b);
  return (
    <f64>f32x4.extract_lane(v, 0) +
    <f64>f32x4.extract_lane(v, 1) +
    <f64>f32x4.extract_lane(v, 2) +
    <f64>f32x4.extract_lane(v, 3)
  );
}

/** sum of p[0..n) (SIMD in f32 within a plane; callers sum planes in f64). */
function planeSum(p: usize, n: i32): f64 {
  let a = f32x4.splat(0);
  let b = f32x4.splat(0);
  const n8 = n & ~7;
  let i = 0;
  for (; i < n8; i += 8) {
    a = f32x4.add(a, v128.load(at(p, i)));
    b = f32x4.add(b, v128.load(at(p, i + 4)));
  }
  let s = hsum2(a, b);
  for (; i < n; i++) s += <f64>load<f32>(at(p, i));
  return s;
}

/** The second result of planeMoments (a global: each thread has its own instance). */
let squares: f64 = 0;

/** sum of (p[i] - m) over i < n, returned, and sum of (p[i] - m)^2, in `squares`. */
function planeMoments(p: usize, n: i32, m: f32): f64 {
  const vm = f32x4.splat(m);
  let a = f32x4.splat(0);
  let b = f32x4.splat(0);
  const n4 = n & ~3;
  let i = 0;
  for (; i < n4; i += 4) {
    const d = f32x4.sub(v128.load(at(p, i)), vm);
    a = f32x4.add(a, d);
    b = f32x4.add(b, f32x4.mul(d, d));
  }
  let s = hsum64(a);
  let q = hsum64(b);
  for (; i < n; i++) {
    const d = <f64>load<f32>(at(p, i)) - <f64>m;
    s += d;
    q += d * d;
  }
  squares = q;
  return s;
}

/**
 * Batch statistics per channel in one pass: sums of d = x - pivot and of d^2 (SIMD f32 within an image's
 * plane, f64 across planes, images in order), pivot = the mean of the channel's plane in image 0, so d is
 * centred and E[d^2] - E[d]^2 does not cancel; mean[c], invstd[c] = 1/sqrt(biased var + eps). Work items:
 * channels; the pass walks the images and, within an image, the part's channels (one contiguous block:
 * memory order, not a stride per plane). `sums`: 2 C f64 of scratch.
 */
export function batchnormStats(
  x: usize,
  N: i32,
  C: i32,
  HW: i32,
  mean: usize,
  invstd: usize,
  eps: f32,
  sums: usize,
  part: i32,
  parts: i32,
): void {
  const c0 = partStart(C, part, parts);
  const c1 = partStart(C, part + 1, parts);
  for (let c = c0; c < c1; c++) {
    const sp = sums + ((<usize>c) << 4);
    store<f64>(sp, 0);
    store<f64>(sp, 0, 8);
    store<f32>(at(mean, c), <f32>(planeSum(at(x, c * HW), HW) / <f64>HW)); // the pivot, for now
  }
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      const sp = sums + ((<usize>c) << 4);
      const s = planeMoments(at(x, (n * C + c) * HW), HW, load<f32>(at(mean, c)));
      store<f64>(sp, load<f64>(sp) + s);
      store<f64>(sp, load<f64>(sp, 8) + squares, 8);
    }
  }
  const count = <f64>(N * HW);
  for (let c = c0; c < c1; c++) {
    const sp = sums + ((<usize>c) << 4);
    const d = load<f64>(sp) / count;
    const v = max(0, load<f64>(sp, 8) / count - d * d);
    store<f32>(at(mean, c), <f32>(<f64>load<f32>(at(mean, c)) + d));
    store<f32>(at(invstd, c), <f32>(1 / Math.sqrt(v + <f64>eps)));
  }
}

/**
 * dy masked by a ReLU that ran in place on this batch norm's output (scale 0: none): the output is recomputed
 * from x as the affine kernel computed it (madd on whole vectors, x * s + t on a plane's last HW % 4), and dy
 * kept where it is > 0.
 */
function maskedDy(dy: v128, x: v128, vs: v128, vt: v128, relu: bool): v128 {
  if (!relu) return dy;
  return v128.and(dy, f32x4.gt(madd(x, vs, vt), f32x4.splat(0)));
}

function maskedDyScalar(dy: f32, x: f32, s: f32, t: f32, relu: bool): f32 {
  return !relu || x * s + t > 0 ? dy : 0;
}

/**
 * Training batch-norm backward (PyTorch): xhat = (x - mean) invstd; dgamma[c] += sum dy*xhat; dbeta[c] +=
 * sum dy; dx = gamma invstd (dy - mean(dy) - xhat mean(dy*xhat)) (dx written, not accumulated; dgamma/dbeta 0:
 * skipped). With `scale` (not 0), dy is first masked by the ReLU that followed in place (see maskedDy: one
 * pass over memory less than a separate ReLU backward). Channel sums: SIMD f32 within a plane, f64 across
 * planes in image order. Work items: channels, walked image by image as in batchnormStats. `sums`: 2 C f64.
 */
export function batchnormBackward(
  dy: usize,
  x: usize,
  mean: usize,
  invstd: usize,
  gamma: usize,
  dx: usize,
  dgamma: usize,
  dbeta: usize,
  N: i32,
  C: i32,
  HW: i32,
  scale: usize,
  shift: usize,
  sums: usize,
  part: i32,
  parts: i32,
): void {
  const c0 = partStart(C, part, parts);
  const c1 = partStart(C, part + 1, parts);
  const count = <f64>(N * HW);
  const relu = scale != 0;
  const hw4 = HW & ~3;
  for (let c = c0; c < c1; c++) {
    store<f64>(sums + ((<usize>c) << 4), 0);
    store<f64>(sums + ((<usize>c) << 4), 0, 8);
  }
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      const o = (n * C + c) * HW;
      const m = load<f32>(at(mean, c));
      const s = relu ? load<f32>(at(scale, c)) : 0;
      const t = relu ? load<f32>(at(shift, c)) : 0;
      const vm = f32x4.splat(m);
      const vs = f32x4.splat(s);
      const vt = f32x4.splat(t);
      let a = f32x4.splat(0);
      let b = a;
      for (let i = 0; i < hw4; i += 4) {
        const xv = v128.load(at(x, o + i));
        const g = maskedDy(v128.load(at(dy, o + i)), xv, vs, vt, relu);
        a = f32x4.add(a, g);
        b = f32x4.add(b, f32x4.mul(g, f32x4.sub(xv, vm)));
      }
      let sg = hsum64(a);
      let sgx = hsum64(b);
      for (let i = hw4; i < HW; i++) {
        const xs = load<f32>(at(x, o + i));
        const g = <f64>maskedDyScalar(load<f32>(at(dy, o + i)), xs, s, t, relu);
        sg += g;
        sgx += g * (<f64>xs - <f64>m);
      }
      const sp = sums + ((<usize>c) << 4);
      store<f64>(sp, load<f64>(sp) + sg);
      store<f64>(sp, load<f64>(sp, 8) + sgx, 8);
    }
  }
  for (let c = c0; c < c1; c++) {
    const sp = sums + ((<usize>c) << 4);
    const is = <f64>load<f32>(at(invstd, c));
    const sg = load<f64>(sp);
    const sgx = load<f64>(sp, 8) * is;
    store<f64>(sp, sgx, 8);
    if (dgamma) store<f32>(at(dgamma, c), load<f32>(at(dgamma, c)) + <f32>sgx);
    if (dbeta) store<f32>(at(dbeta, c), load<f32>(at(dbeta, c)) + <f32>sg);
  }
  if (!dx) return;
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      const sp = sums + ((<usize>c) << 4);
      const is = <f64>load<f32>(at(invstd, c));
      const k = <f32>(<f64>load<f32>(at(gamma, c)) * is);
      const mg = <f32>(load<f64>(sp) / count);
      const mgx = <f32>(load<f64>(sp, 8) / count);
      const mf = load<f32>(at(mean, c));
      const isf = <f32>is;
      const s = relu ? load<f32>(at(scale, c)) : 0;
      const t = relu ? load<f32>(at(shift, c)) : 0;
      const vs = f32x4.splat(s);
      const vt = f32x4.splat(t);
      const vk = f32x4.splat(k);
      const vmg = f32x4.splat(mg);
      const vmgx = f32x4.splat(mgx);
      const vm = f32x4.splat(mf);
      const vis = f32x4.splat(isf);
      const o = (n * C + c) * HW;
      for (let i = 0; i < hw4; i += 4) {
        const xv = v128.load(at(x, o + i));
        const g = maskedDy(v128.load(at(dy, o + i)), xv, vs, vt, relu);
        const xh = f32x4.mul(f32x4.sub(xv, vm), vis);
        v128.store(at(dx, o + i), f32x4.mul(vk, f32x4.sub(f32x4.sub(g, vmg), f32x4.mul(xh, vmgx))));
      }
      for (let i = hw4; i < HW; i++) {
        const xs = load<f32>(at(x, o + i));
        const g = maskedDyScalar(load<f32>(at(dy, o + i)), xs, s, t, relu);
        store<f32>(at(dx, o + i), k * (g - mg - (xs - mf) * isf * mgx));
      }
    }
  }
}

/** First element of part `part`: parts split whole 4-element vectors. */
function split(n: i32, part: i32, parts: i32): i32 {
  return min(partStart((n + 3) >> 2, part, parts) << 2, n);
}

/** dx = y > 0 ? dy : 0 (y: the ReLU's output). Work items: 4-element blocks. */
export function reluBackward(y: usize, dy: usize, dx: usize, n: i32, part: i32, parts: i32): void {
  const hi = split(n, part + 1, parts);
  let i = split(n, part, parts);
  const z = f32x4.splat(0);
  for (; i + 4 <= hi; i += 4)
    v128.store(at(dx, i), v128.and(v128.load(at(dy, i)), f32x4.gt(v128.load(at(y, i)), z)));
  for (; i < hi; i++) store<f32>(at(dx, i), load<f32>(at(y, i)) > 0 ? load<f32>(at(dy, i)) : 0);
}

// ---------------------------------------------------------------------------------------------------------
// Pools, global average pool and linear backward.

/** Zeroes plane `p` (count floats) unless accumulating. */
function clearUnless(p: usize, count: i32, acc: bool): void {
  if (!acc) memory.fill(p, 0, (<usize>count) << 2);
}

/**
 * Max pool backward (PyTorch semantics: padding is -infinity; a window's gradient goes to its first maximum in
 * row-major order): dx (+)= the scatter of dy onto the argmax of each window, in output order. x and dx share
 * the layout (xC channels, rows xOff..). Work items: (image, channel) planes.
 */
export function maxpool2dBackward(
  x: usize,
  xC: i32,
  xOff: i32,
  dy: usize,
  yC: i32,
  yOff: i32,
  dx: usize,
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
  accumulate: bool,
  part: i32,
  parts: i32,
): void {
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const c = it % C;
    const n = it / C;
    const xp = at(x, (n * xC + xOff + c) * H * W);
    const dp = at(dx, (n * xC + xOff + c) * H * W);
    const yp = at(dy, (n * yC + yOff + c) * OH * OW);
    clearUnless(dp, H * W, accumulate);
    for (let oy = 0; oy < OH; oy++) {
      const py0 = oy * SH - PH;
      const y0 = max(py0, 0);
      const y1 = min(min(py0 + KH, H + PH), H);
      for (let ox = 0; ox < OW; ox++) {
        const px0 = ox * SW - PW;
        const x0 = max(px0, 0);
        const x1 = min(min(px0 + KW, W + PW), W);
        if (y0 >= y1 || x0 >= x1) continue;
        let best = y0 * W + x0;
        let bv = load<f32>(at(xp, best));
        for (let iy = y0; iy < y1; iy++) {
          for (let ix = x0; ix < x1; ix++) {
            const v = load<f32>(at(xp, iy * W + ix));
            if (v > bv) {
              bv = v;
              best = iy * W + ix;
            }
          }
        }
        const d = at(dp, best);
        store<f32>(d, load<f32>(d) + load<f32>(at(yp, oy * OW + ox)));
      }
    }
  }
}

/**
 * Average pool backward (PyTorch semantics): each window spreads dy / divisor over its real input elements,
 * divisor = the window clipped to [-P, H + P) when countIncludePad, else its real elements; dx (+)= the sum,
 * in output order. Work items: (image, channel) planes.
 */
export function avgpool2dBackward(
  dy: usize,
  yC: i32,
  yOff: i32,
  dx: usize,
  xC: i32,
  xOff: i32,
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
  accumulate: bool,
  part: i32,
  parts: i32,
): void {
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const c = it % C;
    const n = it / C;
    const dp = at(dx, (n * xC + xOff + c) * H * W);
    const yp = at(dy, (n * yC + yOff + c) * OH * OW);
    clearUnless(dp, H * W, accumulate);
    for (let oy = 0; oy < OH; oy++) {
      const py0 = oy * SH - PH;
      const py1 = min(py0 + KH, H + PH);
      const y0 = max(py0, 0);
      const y1 = min(py1, H);
      for (let ox = 0; ox < OW; ox++) {
        const px0 = ox * SW - PW;
        const px1 = min(px0 + KW, W + PW);
        const x0 = max(px0, 0);
        const x1 = min(px1, W);
        if (y0 >= y1 || x0 >= x1) continue;
        const div = countIncludePad ? (py1 - py0) * (px1 - px0) : (y1 - y0) * (x1 - x0);
        const g = load<f32>(at(yp, oy * OW + ox)) / <f32>div;
        for (let iy = y0; iy < y1; iy++) {
          const r = at(dp, iy * W);
          for (let ix = x0; ix < x1; ix++) store<f32>(at(r, ix), load<f32>(at(r, ix)) + g);
        }
      }
    }
  }
}

/** dx[p*HW + i] (+)= dy[p] / HW for planes p = n*C + c (dense NCHW). Work items: planes. */
export function globalAvgPoolBackward(
  dy: usize,
  dx: usize,
  N: i32,
  C: i32,
  HW: i32,
  accumulate: bool,
  part: i32,
  parts: i32,
): void {
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  const hw4 = HW & ~3;
  for (let p = partStart(total, part, parts); p < end; p++) {
    const g = load<f32>(at(dy, p)) / <f32>HW;
    const vg = f32x4.splat(g);
    const d = at(dx, p * HW);
    for (let i = 0; i < hw4; i += 4) putv(at(d, i), vg, accumulate);
    for (let i = hw4; i < HW; i++) puts(at(d, i), g, accumulate);
  }
}

/**
 * Linear backward, w = [M][K], x = [N][K], dy = [N][M]: dx[n][k] (+)= sum_m dy[n][m] w[m][k] (dx 0: skipped);
 * dw[m][k] += sum_n dy[n][m] x[n][k]; db[m] += sum_n dy[n][m] (db 0: skipped). Work items: the N rows of dx,
 * then the M rows of dw (16 columns at a time, f32x4 sums over m or n in order).
 */
export function linearBackward(
  x: usize,
  N: i32,
  K: i32,
  w: usize,
  dy: usize,
  M: i32,
  dx: usize,
  dw: usize,
  db: usize,
  accumulate: bool,
  part: i32,
  parts: i32,
): void {
  const rows = dx ? N : 0;
  const total = rows + M;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    if (it < rows) {
      // dx row n: sum over m of dy[n][m] * w row m.
      const d = at(dx, it * K);
      const g = at(dy, it * M);
      sumRows(g, 4, M, w, (<usize>K) << 2, K, d, accumulate);
    } else {
      const m = it - rows;
      // dw row m: sum over n of dy[n][m] * x row n.
      sumRows(at(dy, m), (<usize>M) << 2, N, x, (<usize>K) << 2, K, at(dw, m * K), true);
      if (db) {
        let s: f32 = 0;
        for (let n = 0; n < N; n++) s += load<f32>(at(dy, n * M + m));
        store<f32>(at(db, m), load<f32>(at(db, m)) + s);
      }
    }
  }
}

/** out[k] (+)= sum_{r < R} c[r] * A[r][k], k < K, r in order; c stride cs bytes, A row stride as bytes. */
function sumRows(c: usize, cs: usize, R: i32, A: usize, as: usize, K: i32, out: usize, acc: bool): void {
  let k = 0;
  for (; k + 16 <= K; k += 16) {
    let a0 = f32x4.splat(0);
    let a1 = a0;
    let a2 = a0;
    let a3 = a0;
    let cr = c;
    let ar = at(A, k);
    for (let r = 0; r < R; r++, cr += cs, ar += as) {
      const b = v128.load32_splat(cr);
      a0 = madd(b, v128.load(ar), a0);
      a1 = madd(b, v128.load(ar, 16), a1);
      a2 = madd(b, v128.load(ar, 32), a2);
      a3 = madd(b, v128.load(ar, 48), a3);
    }
    const o = at(out, k);
    putv(o, a0, acc);
    putv(o + 16, a1, acc);
    putv(o + 32, a2, acc);
    putv(o + 48, a3, acc);
  }
  for (; k + 4 <= K; k += 4) {
    let a0 = f32x4.splat(0);
    let cr = c;
    let ar = at(A, k);
    for (let r = 0; r < R; r++, cr += cs, ar += as) a0 = madd(v128.load32_splat(cr), v128.load(ar), a0);
    putv(at(out, k), a0, acc);
  }
  for (; k < K; k++) {
    let s: f32 = 0;
    let cr = c;
    let ar = at(A, k);
    for (let r = 0; r < R; r++, cr += cs, ar += as) s += load<f32>(cr) * load<f32>(ar);
    puts(at(out, k), s, acc);
  }
}

// ---------------------------------------------------------------------------------------------------------
// General (stem) convolution backward: direct loops, dense NCHW, dilation 1.

function floorDiv(a: i32, b: i32): i32 {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/** Output range [lo, hi) of one axis whose input o*S - P + k lies in [0, size). */
function tapLo(P: i32, k: i32, S: i32): i32 {
  return max(0, -floorDiv(k - P, S));
}

function tapHi(size: i32, P: i32, k: i32, S: i32, out: i32): i32 {
  return min(out, floorDiv(size - 1 + P - k, S) + 1);
}

/**
 * Input gradient of `conv2d` (w OIHW, groups, dilation 1; x and dy dense): dx[n][c][iy][ix] (+)= sum over
 * the group's outputs o and taps (ky, kx) with oy*SH - PH + ky = iy, ox*SW - PW + kx = ix of w[o][c'][ky][kx]
 * * dy[n][o][oy][ox]. Work items: (image, input channel) planes.
 */
export function conv2dBackwardInput(
  dy: usize,
  w: usize,
  dx: usize,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  O: i32,
  KH: i32,
  KW: i32,
  SH: i32,
  SW: i32,
  PH: i32,
  PW: i32,
  OH: i32,
  OW: i32,
  groups: i32,
  accumulate: bool,
  part: i32,
  parts: i32,
): void {
  const cg = C / groups;
  const og = O / groups;
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const c = it % C;
    const n = it / C;
    const g = c / cg;
    const ci = c - g * cg;
    const dp = at(dx, (n * C + c) * H * W);
    for (let iy = 0; iy < H; iy++) {
      for (let ix = 0; ix < W; ix++) {
        let s: f32 = 0;
        for (let o = g * og; o < (g + 1) * og; o++) {
          const yp = at(dy, (n * O + o) * OH * OW);
          const wp = at(w, (o * cg + ci) * KH * KW);
          for (let ky = 0; ky < KH; ky++) {
            const ty = iy + PH - ky;
            if (ty < 0 || ty % SH != 0 || ty / SH >= OH) continue;
            const yr = at(yp, (ty / SH) * OW);
            for (let kx = 0; kx < KW; kx++) {
              const tx = ix + PW - kx;
              if (tx < 0 || tx % SW != 0 || tx / SW >= OW) continue;
              s += load<f32>(at(wp, ky * KW + kx)) * load<f32>(at(yr, tx / SW));
            }
          }
        }
        puts(at(dp, iy * W + ix), s, accumulate);
      }
    }
  }
}

/**
 * Weight gradient of `conv2d`: dw[o][c'][ky][kx] += sum_{n,oy,ox} dy[n][o][oy][ox] * x[n][g*cg + c'][oy*SH -
 * PH + ky][ox*SW - PW + kx] (padding 0); db[o] += sum dy (db 0: skipped). Work items: output channels.
 */
export function conv2dBackwardWeight(
  x: usize,
  dy: usize,
  dw: usize,
  db: usize,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  O: i32,
  KH: i32,
  KW: i32,
  SH: i32,
  SW: i32,
  PH: i32,
  PW: i32,
  OH: i32,
  OW: i32,
  groups: i32,
  part: i32,
  parts: i32,
): void {
  const cg = C / groups;
  const og = O / groups;
  const end = partStart(O, part + 1, parts);
  for (let o = partStart(O, part, parts); o < end; o++) {
    const g = o / og;
    for (let ci = 0; ci < cg; ci++) {
      for (let ky = 0; ky < KH; ky++) {
        const oy0 = tapLo(PH, ky, SH);
        const oy1 = tapHi(H, PH, ky, SH, OH);
        for (let kx = 0; kx < KW; kx++) {
          const ox0 = tapLo(PW, kx, SW);
          const ox1 = tapHi(W, PW, kx, SW, OW);
          let s: f32 = 0;
          for (let n = 0; n < N; n++) {
            const yp = at(dy, (n * O + o) * OH * OW);
            const xp = at(x, (n * C + g * cg + ci) * H * W);
            for (let oy = oy0; oy < oy1; oy++) {
              const yr = at(yp, oy * OW);
              const xr = at(xp, (oy * SH - PH + ky) * W - PW + kx);
              for (let ox = ox0; ox < ox1; ox++) s += load<f32>(at(yr, ox)) * load<f32>(at(xr, ox * SW));
            }
          }
          addw(at(dw, ((o * cg + ci) * KH + ky) * KW + kx), s);
        }
      }
    }
    if (db) addw(at(db, o), rowSum(at(dy, o * OH * OW), (<usize>(O * OH * OW)) << 2, N, OH * OW));
  }
}
