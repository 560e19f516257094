import { at, madd, partStart, srelu, vrelu } from './common';

// The GEMM micro-kernel computes TR = 4 output rows x TP = 8 pixels in eight f32x4 accumulators, K innermost,
// with broadcast weights (more accumulators spill in V8 and run slower). Every output value, in a full tile or
// an edge, is bias then madd over k in order, so it has the same bits whichever tile or part computes it.
const TR = 4;
const TP = 8;

/** Address of input row `c` (a channel, or a panel row): the channel shuffle is folded in through `map`. */
function xrow(xb: usize, rs: usize, map: usize, c: i32): usize {
  return xb + <usize>(map ? load<i32>(at(map, c)) : c) * rs;
}

function put(y: usize, res: usize, a: v128, relu: bool): void {
  if (res) a = f32x4.add(a, v128.load(res));
  if (relu) a = vrelu(a);
  v128.store(y, a);
}

function putRow(y: usize, res: usize, a0: v128, a1: v128, relu: bool): void {
  put(y, res, a0, relu);
  put(y + 16, res ? res + 16 : 0, a1, relu);
}

/** `put` for lanes [skip, 4) only. */
function putLanes(y: usize, res: usize, a: v128, relu: bool, skip: i32): void {
  if (skip == 0) return put(y, res, a, relu);
  if (res) a = f32x4.add(a, v128.load(res));
  if (relu) a = vrelu(a);
  if (skip == 1) store<f32>(y, f32x4.extract_lane(a, 1), 4);
  if (skip <= 2) store<f32>(y, f32x4.extract_lane(a, 2), 8);
  store<f32>(y, f32x4.extract_lane(a, 3), 12);
}

/**
 * Rows [0, rows) (rows <= 4) x pixels [0, 8): acc[r][p] = bias[r] + sum_k w[r*K + k] * X[c0 + k][p], X row c
 * at xrow(c).
 * y (and res, when not 0) point at row 0, pixel 0 of the tile; ys is their row stride in bytes.
 */
function tile(
  rows: i32,
  w: usize,
  K: i32,
  bias: usize,
  xb: usize,
  rs: usize,
  map: usize,
  c0: i32,
  y: usize,
  ys: usize,
  res: usize,
  relu: bool,
): void {
  const kb = (<usize>K) << 2;
  const wend = w + kb;
  // Fewer than four rows repeat the last one (computed, not stored): a full tile is faster than an edge.
  const r1 = <usize>min(1, rows - 1);
  const r2 = <usize>min(2, rows - 1);
  const r3 = <usize>min(3, rows - 1);
  const o1 = r1 * kb;
  const o2 = r2 * kb;
  const o3 = r3 * kb;
  let a00 = f32x4.splat(0);
  let a10 = a00;
  let a20 = a00;
  let a30 = a00;
  if (bias) {
    a00 = v128.load32_splat(bias);
    a10 = v128.load32_splat(bias + (r1 << 2));
    a20 = v128.load32_splat(bias + (r2 << 2));
    a30 = v128.load32_splat(bias + (r3 << 2));
  }
  let a01 = a00;
  let a11 = a10;
  let a21 = a20;
  let a31 = a30;
  // Two copies of the loop: a map test inside it costs 15-20%.
  if (map) {
    for (let wk = w, mp = at(map, c0); wk < wend; wk += 4, mp += 4) {
      const xr = xb + <usize>load<i32>(mp) * rs;
      const x0 = v128.load(xr);
      const x1 = v128.load(xr, 16);
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
  } else {
    for (let wk = w, xr = xb + <usize>c0 * rs; wk < wend; wk += 4, xr += rs) {
      const x0 = v128.load(xr);
      const x1 = v128.load(xr, 16);
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
  }
  putRow(y, res, a00, a01, relu);
  if (rows > 1) putRow(y + ys, res ? res + ys : 0, a10, a11, relu);
  if (rows > 2) putRow(y + 2 * ys, res ? res + 2 * ys : 0, a20, a21, relu);
  if (rows > 3) putRow(y + 3 * ys, res ? res + 3 * ys : 0, a30, a31, relu);
}

/**
 * A partial tile, `rows` <= 4 rows x `np` <= 8 pixels, four rows x four pixels at a time (missing rows repeat
 * the last one and are not stored). A last group of fewer than four pixels is computed as the four ending at
 * np, storing only the new ones, when `back` (readable pixels before pixel 0) allows; else scalar code.
 */
function edge(
  rows: i32,
  np: i32,
  back: i32,
  w: usize,
  K: i32,
  bias: usize,
  xb: usize,
  rs: usize,
  map: usize,
  c0: i32,
  y: usize,
  ys: usize,
  res: usize,
  relu: bool,
): void {
  const kb = (<usize>K) << 2;
  const w1 = w + <usize>min(1, rows - 1) * kb;
  const w2 = w + <usize>min(2, rows - 1) * kb;
  const w3 = w + <usize>min(3, rows - 1) * kb;
  const z = f32x4.splat(0);
  const b0 = bias ? v128.load32_splat(bias) : z;
  const b1 = bias ? v128.load32_splat(at(bias, min(1, rows - 1))) : z;
  const b2 = bias ? v128.load32_splat(at(bias, min(2, rows - 1))) : z;
  const b3 = bias ? v128.load32_splat(at(bias, min(3, rows - 1))) : z;
  for (let q = 0; q < np; q += 4) {
    const s = min(q, np - 4);
    if (s < -back) {
      edgeScalar(rows, q, np, w, K, bias, xb, rs, map, c0, y, ys, res, relu);
      return;
    }
    let a0 = b0;
    let a1 = b1;
    let a2 = b2;
    let a3 = b3;
    const xs = xb + <usize>(s << 2);
    const d1 = w1 - w;
    const d2 = w2 - w;
    const d3 = w3 - w;
    const wend = at(w, K);
    if (map) {
      for (let wk = w, mp = at(map, c0); wk < wend; wk += 4, mp += 4) {
        const x = v128.load(xs + <usize>load<i32>(mp) * rs);
        a0 = madd(v128.load32_splat(wk), x, a0);
        a1 = madd(v128.load32_splat(wk + d1), x, a1);
        a2 = madd(v128.load32_splat(wk + d2), x, a2);
        a3 = madd(v128.load32_splat(wk + d3), x, a3);
      }
    } else {
      for (let wk = w, xr = xs + <usize>c0 * rs; wk < wend; wk += 4, xr += rs) {
        const x = v128.load(xr);
        a0 = madd(v128.load32_splat(wk), x, a0);
        a1 = madd(v128.load32_splat(wk + d1), x, a1);
        a2 = madd(v128.load32_splat(wk + d2), x, a2);
        a3 = madd(v128.load32_splat(wk + d3), x, a3);
      }
    }
    for (let r = 0; r < rows; r++) {
      const a = r == 0 ? a0 : r == 1 ? a1 : r == 2 ? a2 : a3;
      const off = <usize>r * ys + ((<usize>s) << 2);
      putLanes(y + off, res ? res + off : 0, a, relu, q - s);
    }
  }
}

/** Pixels [q, np) of `edge` one by one (only when fewer than four pixels are readable). */
function edgeScalar(
  rows: i32,
  q: i32,
  np: i32,
  w: usize,
  K: i32,
  bias: usize,
  xb: usize,
  rs: usize,
  map: usize,
  c0: i32,
  y: usize,
  ys: usize,
  res: usize,
  relu: bool,
): void {
  for (let r = 0; r < rows; r++) {
    const wr = w + <usize>(r * K) * 4;
    for (let p = q; p < np; p++) {
      let a: f32 = bias ? load<f32>(at(bias, r)) : 0;
      for (let k = 0; k < K; k++) a += load<f32>(at(wr, k)) * load<f32>(at(xrow(xb, rs, map, c0 + k), p));
      const off = <usize>r * ys + ((<usize>p) << 2);
      if (res) a += load<f32>(res + off);
      store<f32>(y + off, relu ? srelu(a) : a);
    }
  }
}

/**
 * All `rows` output rows of one group for pixels [0, np) (np <= TP). w points at the group's first weight row
 * (K floats per row); y/res at its first row, first pixel; `back` pixels before pixel 0 may be read.
 */
function rowsOf(
  rows: i32,
  np: i32,
  back: i32,
  w: usize,
  K: i32,
  bias: usize,
  xb: usize,
  rs: usize,
  map: usize,
  c0: i32,
  y: usize,
  ys: usize,
  res: usize,
  relu: bool,
): void {
  for (let r = 0; r < rows; r += TR) {
    const wr = w + <usize>(r * K) * 4;
    const br = bias ? at(bias, r) : 0;
    const yr = y + <usize>r * ys;
    const rr = res ? res + <usize>r * ys : 0;
    if (np == TP) tile(min(TR, rows - r), wr, K, br, xb, rs, map, c0, yr, ys, rr, relu);
    else edge(min(TR, rows - r), np, back, wr, K, br, xb, rs, map, c0, yr, ys, rr, relu);
  }
}

/**
 * Grouped 1x1 convolution with the channel shuffle folded into input indexing (see the contract in
 * src/backends/wasm/module.ts). Work items are (image, group, chunk of pixels); within one, each block of TR
 * output rows sweeps the chunk's pixel tiles. An output too big for the caches (a training batch) takes
 * chunks whose input rows stay in L1, so it is written row by row in memory order rather than TP floats of
 * every row per item; a smaller one takes single tiles (more items to share among threads).
 */
export function pointwise(
  x: usize,
  xC: i32,
  xOff: i32,
  inMap: usize,
  w: usize,
  bias: usize,
  y: usize,
  yC: i32,
  yOff: i32,
  res: usize,
  N: i32,
  inC: i32,
  outC: i32,
  groups: i32,
  HW: i32,
  relu: bool,
  part: i32,
  parts: i32,
): void {
  const kg = inC / groups;
  const og = outC / groups;
  const P = <i64>N * outC * HW > STREAM_ABOVE ? pixelChunk(kg, HW) : TP;
  const chunks = (HW + P - 1) / P;
  const total = N * groups * chunks;
  const end = partStart(total, part + 1, parts);
  const rs = (<usize>HW) << 2;
  for (let it = partStart(total, part, parts); it < end; it++) {
    const t = it % chunks;
    const g = (it / chunks) % groups;
    const n = it / chunks / groups;
    const p0 = t * P;
    const p1 = min(HW, p0 + P);
    const xb = at(x, (n * xC + xOff) * HW);
    for (let r = 0; r < og; r += TR) {
      const rows = min(TR, og - r);
      const o = g * og + r;
      const wr = w + <usize>(o * kg) * 4;
      const br = bias ? at(bias, o) : 0;
      const yr = y + ((<usize>((n * yC + yOff + o) * HW)) << 2);
      const rr = res ? res + (yr - y) : 0;
      for (let p = p0; p < p1; p += TP) {
        const np = min(TP, p1 - p);
        const pb = (<usize>p) << 2;
        const rp = rr ? rr + pb : 0;
        if (np == TP) tile(rows, wr, kg, br, xb + pb, rs, inMap, g * kg, yr + pb, rs, rp, relu);
        else edge(rows, np, p, wr, kg, br, xb + pb, rs, inMap, g * kg, yr + pb, rs, rp, relu);
      }
    }
  }
}

/** Outputs of more floats than this are written in row order (see `pointwise`). */
const STREAM_ABOVE: i64 = 1 << 20;

/** Pixels per work item: a multiple of TP whose `rows` input rows stay in L1. */
function pixelChunk(rows: i32, HW: i32): i32 {
  const p = max(TP, ((24 << 10) / (rows * 4)) & ~(TP - 1));
  return min(p, (HW + TP - 1) & ~(TP - 1));
}

// conv2d gathers a panel of output pixels (K = C/groups*KH*KW rows) into scratch, then runs the micro-kernel.
// Wide panels amortize the gather's per-row setup; the 64 KiB budget keeps a panel in L2 next to the weights.
function panelWidth(K: i32, OHW: i32): i32 {
  return min(OHW, min(1024, max(32, (16384 / K) & ~7)));
}

/** Bytes of scratch `conv2d` needs for all `parts` (part k uses the k-th slice). */
export function conv2dScratchBytes(C: i32, KH: i32, KW: i32, OH: i32, OW: i32, groups: i32, parts: i32): i32 {
  const K = (C / groups) * KH * KW;
  return K * panelWidth(K, OH * OW) * 4 * parts;
}

/** Panel row for input plane xp, tap (ky, kx): output pixels [p0, p0 + np), zero where the tap hits padding. */
function gatherRow(
  xp: usize,
  H: i32,
  W: i32,
  ky: i32,
  kx: i32,
  SH: i32,
  SW: i32,
  PH: i32,
  PW: i32,
  OW: i32,
  p0: i32,
  np: i32,
  dst: usize,
): void {
  let oy = p0 / OW;
  let ox = p0 % OW;
  // Output columns whose input column kx - PW + ox * SW lies in [0, W).
  const off = kx - PW;
  const lo = off >= 0 ? 0 : (-off + SW - 1) / SW;
  const hi = off > W - 1 ? 0 : min(OW, (W - 1 - off) / SW + 1);
  // Vectors of four columns end at or before vend: inside [lo, hi), and stride 2 loads columns 2ox .. 2ox + 7.
  const vend = SW == 1 ? hi : SW == 2 && W - 8 - off >= 0 ? min(hi, (W - 8 - off) / 2 + 4) : 0;
  let d = dst;
  const dend = at(dst, np);
  while (d < dend) {
    const end = ox + min(OW - ox, (<i32>(dend - d)) >> 2);
    const iy = oy * SH - PH + ky;
    if (iy < 0 || iy >= H) {
      for (; ox < end; ox++, d += 4) store<f32>(d, 0);
    } else {
      for (; ox < min(end, lo); ox++, d += 4) store<f32>(d, 0);
      let src = at(xp, iy * W + off + ox * SW);
      if (SW == 1) {
        for (; ox + 4 <= min(end, vend); ox += 4, d += 16, src += 16) v128.store(d, v128.load(src));
      } else if (SW == 2) {
        for (; ox + 4 <= min(end, vend); ox += 4, d += 16, src += 32) {
          v128.store(d, f32x4.shuffle(v128.load(src), v128.load(src, 16), 0, 2, 4, 6));
        }
      }
      for (; ox < min(end, hi); ox++, d += 4, src += (<usize>SW) << 2) store<f32>(d, load<f32>(src));
      for (; ox < end; ox++, d += 4) store<f32>(d, 0);
    }
    ox = 0;
    oy++;
  }
}

/** General dense or grouped convolution (dilation 1) by panels of im2col + the GEMM micro-kernel. */
export function conv2d(
  x: usize,
  C: i32,
  H: i32,
  W: i32,
  w: usize,
  bias: usize,
  y: usize,
  yC: i32,
  yOff: i32,
  N: i32,
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
  relu: bool,
  scratch: usize,
  part: i32,
  parts: i32,
): void {
  const cg = C / groups;
  const og = O / groups;
  const K = cg * KH * KW;
  const OHW = OH * OW;
  const pw = panelWidth(K, OHW);
  const panel = scratch + <usize>(K * pw) * 4 * part;
  const prs = (<usize>pw) << 2;
  const ys = (<usize>OHW) << 2;
  const blocks = (OHW + pw - 1) / pw;
  const total = N * groups * blocks;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const p0 = (it % blocks) * pw;
    const g = (it / blocks) % groups;
    const n = it / blocks / groups;
    const np = min(pw, OHW - p0);
    for (let c = 0; c < cg; c++) {
      const xp = at(x, (n * C + g * cg + c) * H * W);
      for (let ky = 0; ky < KH; ky++) {
        for (let kx = 0; kx < KW; kx++) {
          const row = (c * KH + ky) * KW + kx;
          gatherRow(xp, H, W, ky, kx, SH, SW, PH, PW, OW, p0, np, panel + <usize>row * prs);
        }
      }
    }
    const o = g * og;
    for (let q = 0; q < np; q += TP) {
      rowsOf(
        og,
        min(TP, np - q),
        q,
        w + <usize>(o * K) * 4,
        K,
        bias ? at(bias, o) : 0,
        at(panel, q),
        prs,
        0,
        0,
        at(y, (n * yC + yOff + o) * OHW + p0 + q),
        ys,
        0,
        relu,
      );
    }
  }
}

/**
 * Sum over k of x[n][k] * w[m][k] for rows m0..m0+3 (clamped to the last row, stores skipped) and images
 * n0, n1 (n1 may equal n0): lane-wise partial sums, then a fixed horizontal order, so every (n, m) gets the
 * same bits whichever tile computes it.
 */
function dot4x2(
  x0: usize,
  x1: usize,
  two: bool,
  K: i32,
  w: usize,
  m0: i32,
  M: i32,
  bias: usize,
  y0: usize,
  y1: usize,
  relu: bool,
): void {
  const kb = (<usize>K) << 2;
  const last = M - 1;
  const w0 = w + <usize>m0 * kb;
  const w1 = w + <usize>min(m0 + 1, last) * kb;
  const w2 = w + <usize>min(m0 + 2, last) * kb;
  const w3 = w + <usize>min(m0 + 3, last) * kb;
  let a0 = f32x4.splat(0);
  let a1 = a0;
  let a2 = a0;
  let a3 = a0;
  let b0 = a0;
  let b1 = a0;
  let b2 = a0;
  let b3 = a0;
  const K4 = K & ~3;
  for (let k = 0; k < K4; k += 4) {
    const u = v128.load(at(x0, k));
    const v = v128.load(at(x1, k));
    let t = v128.load(at(w0, k));
    a0 = madd(t, u, a0);
    b0 = madd(t, v, b0);
    t = v128.load(at(w1, k));
    a1 = madd(t, u, a1);
    b1 = madd(t, v, b1);
    t = v128.load(at(w2, k));
    a2 = madd(t, u, a2);
    b2 = madd(t, v, b2);
    t = v128.load(at(w3, k));
    a3 = madd(t, u, a3);
    b3 = madd(t, v, b3);
  }
  finishDot(a0, x0, w0, K4, K, bias, m0, y0, relu);
  if (m0 + 1 <= last) finishDot(a1, x0, w1, K4, K, bias, m0 + 1, y0, relu);
  if (m0 + 2 <= last) finishDot(a2, x0, w2, K4, K, bias, m0 + 2, y0, relu);
  if (m0 + 3 <= last) finishDot(a3, x0, w3, K4, K, bias, m0 + 3, y0, relu);
  if (!two) return;
  finishDot(b0, x1, w0, K4, K, bias, m0, y1, relu);
  if (m0 + 1 <= last) finishDot(b1, x1, w1, K4, K, bias, m0 + 1, y1, relu);
  if (m0 + 2 <= last) finishDot(b2, x1, w2, K4, K, bias, m0 + 2, y1, relu);
  if (m0 + 3 <= last) finishDot(b3, x1, w3, K4, K, bias, m0 + 3, y1, relu);
}

function finishDot(
  a: v128,
  x: usize,
  w: usize,
  k: i32,
  K: i32,
  bias: usize,
  m: i32,
  y: usize,
  relu: bool,
): void {
  let s =
    f32x4.extract_lane(a, 0) +
    f32x4.extract_lane(a, 1) +
    (f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3));
  for (; k < K; k++) s += load<f32>(at(x, k)) * load<f32>(at(w, k));
  if (bias) s += load<f32>(at(bias, m));
  store<f32>(at(y, m), relu ? srelu(s) : s);
}

/** y[n][m] = sum_k x[n][k] w[m][k] + bias[m]; work items are 4-row blocks of w, each for every image. */
export function linear(
  x: usize,
  N: i32,
  K: i32,
  w: usize,
  bias: usize,
  y: usize,
  M: i32,
  relu: bool,
  part: i32,
  parts: i32,
): void {
  const blocks = (M + 3) >> 2;
  const end = partStart(blocks, part + 1, parts);
  for (let b = partStart(blocks, part, parts); b < end; b++) {
    for (let n = 0; n < N; n += 2) {
      const n1 = min(n + 1, N - 1);
      dot4x2(at(x, n * K), at(x, n1 * K), n1 > n, K, w, b * 4, M, bias, at(y, n * M), at(y, n1 * M), relu);
    }
  }
}
