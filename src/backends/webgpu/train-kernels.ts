/**
 * The WGSL kernels of WebGPU training plans (train-plan.ts): the forward ops in training mode and their
 * gradients. They use the inference kernels' three bindings (kernels.ts), with other roles:
 * - `arena`: everything that changes during a step: values, BN statistics, gradients, parameter gradients;
 * - `weights`: the parameters (uploaded before each forward) and the folded channel-shuffle maps, as floats;
 * - `p`: the op's u32 parameters; buffers are whole NCHW values at float offsets (`x`, `gy`, ... fields).
 * Gradient kernels take `acc`: 0 writes the gradient (its first writer in the backward order), 1 adds to it.
 * Parameter gradients always add (the plan zeroes them once per backward). Long f32 sums add partial
 * sums (per row, per tap or per invocation), so that their rounding stays near that of a pairwise sum.
 */
import { kernel, oneD, WORKGROUP } from './kernels.js';

/**
 * One workgroup per channel c (or other item, on a 2-D grid), with `reduce0` and `reduce1` (every invocation must call
 * them, in that order). Each has its own workgroup array: with one array for two reductions in a row
 * (barriers between them), llvmpipe gave wrong BN variances.
 */
const reducer = (k: number) => `
var<workgroup> red${k}: array<f32, ${WORKGROUP}>;
fn reduce${k}(v: f32, li: u32) -> f32 {
  red${k}[li] = v;
  workgroupBarrier();
  for (var s = ${WORKGROUP / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { red${k}[li] += red${k}[li + s]; }
    workgroupBarrier();
  }
  return red${k}[0];
}`;
const perChannel = (body: string, count = 'C') => `${reducer(0)}${reducer(1)}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let c = wg.y * nw.x + wg.x;
  if (c >= p.${count}) { return; }
${body}
}`;

/** Writes or adds v at arena[at] as p.acc says. */
const store = (at: string, v: string) => `
  if (p.acc != 0u) { arena[${at}] += ${v}; } else { arena[${at}] = ${v}; }`;

const convDims = [
  'C',
  'H',
  'W',
  'O',
  'OH',
  'OW',
  'KH',
  'KW',
  'SH',
  'SW',
  'PH',
  'PW',
  'DH',
  'DW',
  'cin',
  'cout',
];

/** The physical row of logical input channel c: a folded channel shuffle reads through a map. */
const row = `
  var row = c;
  if (p.hasMap != 0u) { row = u32(weights[p.map + c]); }`;

/** Whether the conv is 1x1, stride 1, no padding (most of the work): no window arithmetic. */
const isPointwise = 'p.KH * p.KW == 1u && p.SH * p.SW == 1u && p.PH + p.PW == 0u';

/**
 * Conv forward, any kernel, stride, padding, dilation and groups (the stem, depthwise 3x3 s1/s2 and the
 * grouped 1x1 convs), reading its input through a channel map: one output per invocation.
 */
export const CONV_FWD = kernel(
  'train conv',
  ['x', 'w', 'b', 'hasBias', 'map', 'hasMap', 'y', 'relu', ...convDims, 'total'],
  oneD(`
  let ox = i % p.OW;
  let oy = (i / p.OW) % p.OH;
  let o = (i / (p.OW * p.OH)) % p.O;
  let n = i / (p.OW * p.OH * p.O);
  let g = o / p.cout;
  let iy0 = i32(oy * p.SH) - i32(p.PH);
  let ix0 = i32(ox * p.SW) - i32(p.PW);
  var s = 0.0;
  if (p.hasBias != 0u) { s = weights[p.b + o]; }
  if (${isPointwise}) {
    let px = oy * p.OW + ox;
    for (var ci = 0u; ci < p.cin; ci++) {
      let c = g * p.cin + ci;${row}
      s += weights[p.w + o * p.cin + ci] * arena[p.x + (n * p.C + row) * p.H * p.W + px];
    }
  } else {
    for (var ci = 0u; ci < p.cin; ci++) {
      let c = g * p.cin + ci;${row}
      let xb = p.x + (n * p.C + row) * p.H * p.W;
      let wb = p.w + (o * p.cin + ci) * p.KH * p.KW;
      for (var ky = 0u; ky < p.KH; ky++) {
        let iy = iy0 + i32(ky * p.DH);
        if (iy < 0 || iy >= i32(p.H)) { continue; }
        for (var kx = 0u; kx < p.KW; kx++) {
          let ix = ix0 + i32(kx * p.DW);
          if (ix < 0 || ix >= i32(p.W)) { continue; }
          s += weights[wb + ky * p.KW + kx] * arena[xb + u32(iy) * p.W + u32(ix)];
        }
      }
    }
  }
  if (p.relu != 0u) { s = max(s, 0.0); }
  arena[p.y + i] = s;`),
);

/**
 * dL/dx of a conv: one input element per invocation gathers w * gy over the outputs that read it, and goes
 * to the physical row its channel map names (a permutation: no two invocations write one element).
 */
export const CONV_BWD_INPUT = kernel(
  'train conv backward input',
  ['gy', 'w', 'map', 'hasMap', 'gx', 'acc', ...convDims, 'total'],
  oneD(`
  let ix = i32(i % p.W);
  let iy = i32((i / p.W) % p.H);
  let c = (i / (p.W * p.H)) % p.C;
  let n = i / (p.W * p.H * p.C);
  let g = c / p.cin;
  let ci = c % p.cin;
  var s = 0.0;
  if (${isPointwise}) {
    let px = u32(iy) * p.W + u32(ix);
    for (var o = g * p.cout; o < (g + 1u) * p.cout; o++) {
      s += weights[p.w + o * p.cin + ci] * arena[p.gy + (n * p.O + o) * p.OH * p.OW + px];
    }
  } else {
    for (var o = g * p.cout; o < (g + 1u) * p.cout; o++) {
      let wb = p.w + (o * p.cin + ci) * p.KH * p.KW;
      let gb = p.gy + (n * p.O + o) * p.OH * p.OW;
      var part = 0.0;
      for (var ky = 0u; ky < p.KH; ky++) {
        let ty = iy + i32(p.PH) - i32(ky * p.DH);
        if (ty < 0 || ty % i32(p.SH) != 0) { continue; }
        let oy = u32(ty) / p.SH;
        if (oy >= p.OH) { continue; }
        for (var kx = 0u; kx < p.KW; kx++) {
          let tx = ix + i32(p.PW) - i32(kx * p.DW);
          if (tx < 0 || tx % i32(p.SW) != 0) { continue; }
          let ox = u32(tx) / p.SW;
          if (ox >= p.OW) { continue; }
          part += weights[wb + ky * p.KW + kx] * arena[gb + oy * p.OW + ox];
        }
      }
      s += part;
    }
  }${row}
  let at = p.gx + ((n * p.C + row) * p.H + u32(iy)) * p.W + u32(ix);${store('at', 's')}`),
);

/**
 * dL/dw of a conv, one weight per invocation: for layers with many weights (on llvmpipe a workgroup per
 * weight costs more in barriers than its sum does).
 */
export const CONV_BWD_WEIGHT = kernel(
  'train conv backward weight',
  ['x', 'gy', 'gw', 'map', 'hasMap', 'N', ...convDims, 'total'],
  oneD(`
  let kx = i % p.KW;
  let ky = (i / p.KW) % p.KH;
  let ci = (i / (p.KW * p.KH)) % p.cin;
  let o = i / (p.KW * p.KH * p.cin);
  let c = (o / p.cout) * p.cin + ci;${row}
  let plane = p.OH * p.OW;
  let pointwise = ${isPointwise};
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let xb = p.x + (n * p.C + row) * p.H * p.W;
    let gb = p.gy + (n * p.O + o) * plane;
    var part = 0.0;
    if (pointwise) {
      for (var q = 0u; q < plane; q++) { part += arena[gb + q] * arena[xb + q]; }
    } else {
      for (var oy = 0u; oy < p.OH; oy++) {
        let iy = i32(oy * p.SH + ky * p.DH) - i32(p.PH);
        if (iy < 0 || iy >= i32(p.H)) { continue; }
        for (var ox = 0u; ox < p.OW; ox++) {
          let ix = i32(ox * p.SW + kx * p.DW) - i32(p.PW);
          if (ix < 0 || ix >= i32(p.W)) { continue; }
          part += arena[gb + oy * p.OW + ox] * arena[xb + u32(iy) * p.W + u32(ix)];
        }
      }
    }
    s += part;
  }
  arena[p.gw + i] += s;`),
);

/**
 * dL/dw of a conv, one workgroup per weight (c) summing gy * x over the batch and the output positions, 64
 * at a time: for layers with few weights and long sums (the stem, the first units), where one weight per
 * invocation leaves most threads idle.
 */
export const CONV_BWD_WEIGHT_SPLIT = kernel(
  'train conv backward weight (split)',
  ['x', 'gy', 'gw', 'map', 'hasMap', 'N', ...convDims, 'total'],
  perChannel(
    `
  let kx = c % p.KW;
  let ky = (c / p.KW) % p.KH;
  let ci = (c / (p.KW * p.KH)) % p.cin;
  let o = c / (p.KW * p.KH * p.cin);
  let ch = (o / p.cout) * p.cin + ci;
  var row = ch;
  if (p.hasMap != 0u) { row = u32(weights[p.map + ch]); }
  let plane = p.OH * p.OW;
  var s = 0.0;
  let pointwise = ${isPointwise};
  for (var q = li; q < p.N * plane; q += ${WORKGROUP}u) {
    if (pointwise) {
      let n = q / plane;
      let px = q % plane;
      s += arena[p.gy + (n * p.O + o) * plane + px] * arena[p.x + (n * p.C + row) * plane + px];
      continue;
    }
    let n = q / plane;
    let oy = (q % plane) / p.OW;
    let ox = q % p.OW;
    let iy = i32(oy * p.SH + ky * p.DH) - i32(p.PH);
    let ix = i32(ox * p.SW + kx * p.DW) - i32(p.PW);
    if (iy < 0 || iy >= i32(p.H) || ix < 0 || ix >= i32(p.W)) { continue; }
    s += arena[p.gy + (n * p.O + o) * plane + oy * p.OW + ox] *
      arena[p.x + ((n * p.C + row) * p.H + u32(iy)) * p.W + u32(ix)];
  }
  let sum = reduce0(s, li);
  if (li == 0u) { arena[p.gw + c] += sum; }`,
    'total',
  ),
);

/** A bias gradient: gb[c] += the sum of gy over the batch and the plane. */
export const CHANNEL_SUM = kernel(
  'train channel sum',
  ['gy', 'gb', 'N', 'C', 'HW'],
  perChannel(`
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let base = p.gy + (n * p.C + c) * p.HW;
    for (var k = li; k < p.HW; k += ${WORKGROUP}u) { s += arena[base + k]; }
  }
  let total = reduce0(s, li);
  if (li == 0u) { arena[p.gb + c] += total; }`),
);

/**
 * BN training statistics, one workgroup per channel, two passes (mean, then the biased variance): writes
 * mean and variance (read back for the running buffers, and by the backward) and the affine that
 * normalises: scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
 */
export const BN_STATS = kernel(
  'train batchnorm statistics',
  ['x', 'N', 'C', 'HW', 'gamma', 'beta', 'mean', 'variance', 'scale', 'shift', 'eps'],
  perChannel(`
  let count = f32(p.N * p.HW);
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let base = p.x + (n * p.C + c) * p.HW;
    for (var k = li; k < p.HW; k += ${WORKGROUP}u) { s += arena[base + k]; }
  }
  let mean = reduce0(s, li) / count;
  var q = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let base = p.x + (n * p.C + c) * p.HW;
    for (var k = li; k < p.HW; k += ${WORKGROUP}u) {
      let d = arena[base + k] - mean;
      q += d * d;
    }
  }
  let variance = reduce1(q, li) / count;
  if (li == 0u) {
    let scale = weights[p.gamma + c] / sqrt(variance + bitcast<f32>(p.eps));
    arena[p.mean + c] = mean;
    arena[p.variance + c] = variance;
    arena[p.scale + c] = scale;
    arena[p.shift + c] = weights[p.beta + c] - mean * scale;
  }`),
);

/** y = x * scale[c] + shift[c] (scale and shift in the arena: BN_STATS wrote them), optional ReLU. */
export const AFFINE = kernel(
  'train channel affine',
  ['x', 'y', 'scale', 'shift', 'C', 'HW', 'relu', 'total'],
  oneD(`
  let c = (i / p.HW) % p.C;
  var s = arena[p.x + i] * arena[p.scale + c] + arena[p.shift + c];
  if (p.relu != 0u) { s = max(s, 0.0); }
  arena[p.y + i] = s;`),
);

/**
 * BN backward with batch statistics, one workgroup per channel: dgamma += sum(gy * xhat), dbeta += sum(gy),
 * dx = gamma / sqrt(var + eps) * (gy - mean(gy) - xhat * mean(gy * xhat)) when hasGx.
 */
export const BN_BWD = kernel(
  'train batchnorm backward',
  ['gy', 'x', 'mean', 'variance', 'gamma', 'gx', 'hasGx', 'acc', 'gGamma', 'gBeta', 'N', 'C', 'HW', 'eps'],
  perChannel(`
  let count = f32(p.N * p.HW);
  let mean = arena[p.mean + c];
  let invstd = 1.0 / sqrt(arena[p.variance + c] + bitcast<f32>(p.eps));
  var sg = 0.0;
  var sgx = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let base = (n * p.C + c) * p.HW;
    for (var k = li; k < p.HW; k += ${WORKGROUP}u) {
      let g = arena[p.gy + base + k];
      sg += g;
      sgx += g * (arena[p.x + base + k] - mean) * invstd;
    }
  }
  let sumGy = reduce0(sg, li);
  let sumGyXhat = reduce1(sgx, li);
  if (li == 0u) {
    arena[p.gGamma + c] += sumGyXhat;
    arena[p.gBeta + c] += sumGy;
  }
  if (p.hasGx == 0u) { return; }
  let k0 = weights[p.gamma + c] * invstd;
  let mg = sumGy / count;
  let mgx = sumGyXhat / count;
  for (var n = 0u; n < p.N; n++) {
    let base = (n * p.C + c) * p.HW;
    for (var k = li; k < p.HW; k += ${WORKGROUP}u) {
      let xhat = (arena[p.x + base + k] - mean) * invstd;
      let v = k0 * (arena[p.gy + base + k] - mg - xhat * mgx);
      let at = p.gx + base + k;${store('at', 'v')}
    }
  }`),
);

export const RELU = kernel(
  'train relu',
  ['x', 'y', 'total'],
  oneD(`
  arena[p.y + i] = max(arena[p.x + i], 0.0);`),
);

/** dx = gy where the ReLU's output (or input: the same sign) is positive; in place when gx = gy. */
export const RELU_BWD = kernel(
  'train relu backward',
  ['y', 'gy', 'gx', 'acc', 'total'],
  oneD(`
  var v = 0.0;
  if (arena[p.y + i] > 0.0) { v = arena[p.gy + i]; }
  let at = p.gx + i;${store('at', 'v')}`),
);

export const ADD = kernel(
  'train add',
  ['a', 'b', 'y', 'relu', 'total'],
  oneD(`
  var s = arena[p.a + i] + arena[p.b + i];
  if (p.relu != 0u) { s = max(s, 0.0); }
  arena[p.y + i] = s;`),
);

/**
 * Channels [sOff, sOff + C) of an [N, sC, HW] value to channels [dOff, dOff + C) of an [N, dC, HW] one,
 * written or added: a concat's forward (into its slices) and backward (out of them), and the add's backward.
 */
export const COPY = kernel(
  'train copy',
  ['src', 'sC', 'sOff', 'dst', 'dC', 'dOff', 'C', 'HW', 'acc', 'total'],
  oneD(`
  let px = i % p.HW;
  let c = (i / p.HW) % p.C;
  let n = i / (p.HW * p.C);
  let v = arena[p.src + (n * p.sC + p.sOff + c) * p.HW + px];
  let at = p.dst + (n * p.dC + p.dOff + c) * p.HW + px;${store('at', 'v')}`),
);

const poolDims = ['C', 'H', 'W', 'OH', 'OW', 'KH', 'KW', 'SH', 'SW', 'PH', 'PW', 'mode'];

/** The window of output (oy, ox), as src/ops/pool.ts: clipped to the padded input, then to the real one. */
const poolWindow = `
  let py0 = i32(oy * p.SH) - i32(p.PH);
  let px0 = i32(ox * p.SW) - i32(p.PW);
  let py1 = min(py0 + i32(p.KH), i32(p.H + p.PH));
  let px1 = min(px0 + i32(p.KW), i32(p.W + p.PW));
  let padded = (py1 - py0) * (px1 - px0);
  let y0 = max(py0, 0);
  let y1 = min(py1, i32(p.H));
  let x0 = max(px0, 0);
  let x1 = min(px1, i32(p.W));`;

/** Max (mode 0) and average pooling (mode 1: over the padded window, 2: over the real one). */
export const POOL = kernel(
  'train pool',
  ['x', 'y', ...poolDims, 'total'],
  oneD(`
  let ox = i % p.OW;
  let oy = (i / p.OW) % p.OH;
  let plane = i / (p.OW * p.OH);${poolWindow}
  let xb = p.x + plane * p.H * p.W;
  var m = arena[xb + u32(y0) * p.W + u32(x0)];
  var s = 0.0;
  for (var yy = y0; yy < y1; yy++) {
    for (var xx = x0; xx < x1; xx++) {
      let v = arena[xb + u32(yy) * p.W + u32(xx)];
      m = max(m, v);
      s += v;
    }
  }
  var r = m;
  if (p.mode == 1u) { r = s / f32(padded); }
  if (p.mode == 2u) { r = s / f32((y1 - y0) * (x1 - x0)); }
  arena[p.y + i] = r;`),
);

/**
 * Pool backward as a gather: each input element collects from the windows that hold it; for max pooling
 * only where it is the window's first maximum in row-major order (PyTorch's choice on ties).
 */
export const POOL_BWD = kernel(
  'train pool backward',
  ['x', 'gy', 'gx', 'acc', ...poolDims, 'total'],
  oneD(`
  let ix = i32(i % p.W);
  let iy = i32((i / p.W) % p.H);
  let plane = i / (p.W * p.H);
  let xb = p.x + plane * p.H * p.W;
  let gb = p.gy + plane * p.OH * p.OW;
  let ly = iy + i32(p.PH) - i32(p.KH) + 1;
  let lx = ix + i32(p.PW) - i32(p.KW) + 1;
  var oy0 = 0u;
  if (ly > 0) { oy0 = (u32(ly) + p.SH - 1u) / p.SH; }
  var ox0 = 0u;
  if (lx > 0) { ox0 = (u32(lx) + p.SW - 1u) / p.SW; }
  let oy1 = min(p.OH, u32(iy + i32(p.PH)) / p.SH + 1u);
  let ox1 = min(p.OW, u32(ix + i32(p.PW)) / p.SW + 1u);
  var s = 0.0;
  for (var oy = oy0; oy < oy1; oy++) {
    for (var ox = ox0; ox < ox1; ox++) {${poolWindow}
      let g = arena[gb + oy * p.OW + ox];
      if (p.mode == 0u) {
        var at = u32(y0) * p.W + u32(x0);
        for (var yy = y0; yy < y1; yy++) {
          for (var xx = x0; xx < x1; xx++) {
            let k = u32(yy) * p.W + u32(xx);
            if (arena[xb + k] > arena[xb + at]) { at = k; }
          }
        }
        if (at == u32(iy) * p.W + u32(ix)) { s += g; }
      } else if (p.mode == 1u) {
        s += g / f32(padded);
      } else {
        s += g / f32((y1 - y0) * (x1 - x0));
      }
    }
  }
  let at = p.gx + i;${store('at', 's')}`),
);

export const GAP = kernel(
  'train global average pool',
  ['x', 'y', 'HW', 'total'],
  oneD(`
  let xb = p.x + i * p.HW;
  var s = 0.0;
  for (var k = 0u; k < p.HW; k++) { s += arena[xb + k]; }
  arena[p.y + i] = s / f32(p.HW);`),
);

export const GAP_BWD = kernel(
  'train global average pool backward',
  ['gy', 'gx', 'HW', 'acc', 'total'],
  oneD(`
  let v = arena[p.gy + i / p.HW] / f32(p.HW);
  let at = p.gx + i;${store('at', 'v')}`),
);

/** y[n][m] = sum_k x[n][k] w[m][k] (+ b[m]). */
export const LINEAR = kernel(
  'train linear',
  ['x', 'w', 'b', 'hasBias', 'y', 'K', 'M', 'total'],
  oneD(`
  let m = i % p.M;
  let n = i / p.M;
  var s = 0.0;
  for (var k = 0u; k < p.K; k++) { s += weights[p.w + m * p.K + k] * arena[p.x + n * p.K + k]; }
  if (p.hasBias != 0u) { s += weights[p.b + m]; }
  arena[p.y + i] = s;`),
);

/** dx[n][k] = sum_m gy[n][m] w[m][k]. */
export const LINEAR_BWD_INPUT = kernel(
  'train linear backward input',
  ['gy', 'w', 'gx', 'acc', 'K', 'M', 'total'],
  oneD(`
  let k = i % p.K;
  let n = i / p.K;
  var s = 0.0;
  for (var m = 0u; m < p.M; m++) { s += arena[p.gy + n * p.M + m] * weights[p.w + m * p.K + k]; }
  let at = p.gx + i;${store('at', 's')}`),
);

/** dw[m][k] += sum_n gy[n][m] x[n][k] (invocations < M*K), db[m] += sum_n gy[n][m] (the M after them). */
export const LINEAR_BWD_WEIGHT = kernel(
  'train linear backward weight',
  ['x', 'gy', 'gw', 'gb', 'N', 'K', 'M', 'total'],
  oneD(`
  var s = 0.0;
  if (i < p.M * p.K) {
    let k = i % p.K;
    let m = i / p.K;
    for (var n = 0u; n < p.N; n++) { s += arena[p.gy + n * p.M + m] * arena[p.x + n * p.K + k]; }
    arena[p.gw + i] += s;
  } else {
    let m = i - p.M * p.K;
    for (var n = 0u; n < p.N; n++) { s += arena[p.gy + n * p.M + m]; }
    arena[p.gb + m] += s;
  }`),
);

export const TRAIN_KERNELS = [
  CONV_FWD,
  CONV_BWD_INPUT,
  CONV_BWD_WEIGHT,
  CONV_BWD_WEIGHT_SPLIT,
  CHANNEL_SUM,
  BN_STATS,
  AFFINE,
  BN_BWD,
  RELU,
  RELU_BWD,
  ADD,
  COPY,
  POOL,
  POOL_BWD,
  GAP,
  GAP_BWD,
  LINEAR,
  LINEAR_BWD_INPUT,
  LINEAR_BWD_WEIGHT,
] as const;
