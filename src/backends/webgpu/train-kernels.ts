/**
 * The WGSL kernels of WebGPU training plans (train-plan.ts): the forward ops in training mode and their
 * gradients. Their bindings:
 * - the arena: everything that changes during a step (values, BN statistics, gradients, parameter
 *   gradients, partial sums), in one to MAX_SEGMENTS storage buffers ("segments": one binding holds at most
 *   maxStorageBufferBindingSize bytes, and a batch-256 ImageNet step needs several GiB). Kernels address it
 *   by a global float index, segment << SEGMENT_SHIFT | offset, through `ld` and `st`; with one segment
 *   these are plain array accesses;
 * - `weights`: the parameters (uploaded before each forward) and the folded channel-shuffle maps, as floats;
 * - `p`: the op's u32 parameters; buffers are whole NCHW values at global float indices (`x`, `gy`, ...).
 * Gradient kernels take `acc`: 0 writes the gradient (its first writer in the backward order), 1 adds to it.
 * Parameter gradients always add (the plan zeroes them once per backward).
 *
 * Long sums (weight gradients, BN statistics, bias gradients) are split: a first kernel writes partial sums
 * over chunks of the batch into the plan's scratch block, a second adds them up. This keeps every GPU core
 * busy (one invocation per weight summing 200,000 products would leave most of them idle) and keeps the
 * rounding near that of a pairwise sum. The chunking depends on the shapes only, so results are
 * deterministic.
 */
import {
  blockedConv,
  CONV_BLOCK,
  GEMM,
  gemm,
  gemmKey,
  vec4Body,
  leastPadding,
  oneD,
  planeGrid,
  planes,
  WORKGROUP,
  WORKGROUP_STORAGE,
  type Kernel,
} from './kernels.js';

export { planeGrid };

/** Segment k's floats start at global index k << SEGMENT_SHIFT: 2 GiB per segment, 8 segments in a u32. */
export const SEGMENT_SHIFT = 29;
export const SEGMENT_FLOATS_MAX = 2 ** SEGMENT_SHIFT;
export const MAX_SEGMENTS = 8;

/** A training kernel, compiled per number of arena segments (one WGSL variant each). */
export interface TrainKernel {
  name: string;
  fields: readonly string[];
  at(segments: number): Kernel;
}

function arenaAccess(segments: number): string {
  if (segments === 1)
    return `
fn ld(i: u32) -> f32 { return arena[i]; }
fn st(i: u32, v: f32) { arena[i] = v; }`;
  const mask = `${SEGMENT_FLOATS_MAX - 1}u`;
  const names = Array.from({ length: segments }, (_, s) => (s ? `arena${s}` : 'arena'));
  const cases = (f: (a: string) => string) =>
    names.map((a, s) => (s < segments - 1 ? `case ${s}u: { ${f(a)} }` : `default: { ${f(a)} }`)).join(' ');
  return `${names
    .slice(1)
    .map((a, s) => `@group(0) @binding(${s + 3}) var<storage, read_write> ${a}: array<f32>;`)
    .join('\n')}
fn ld(i: u32) -> f32 {
  let j = i & ${mask};
  var r = 0.0;
  switch (i >> ${SEGMENT_SHIFT}u) { ${cases((a) => `r = ${a}[j];`)} }
  return r;
}
fn st(i: u32, v: f32) {
  let j = i & ${mask};
  switch (i >> ${SEGMENT_SHIFT}u) { ${cases((a) => `${a}[j] = v;`)} }
}`;
}

/**
 * A kernel over the segmented arena: `body` uses ld(i), st(i, v) and put(i, v, acc). `writesWeights`: the
 * parameters are bound read-write (the optimizer).
 */
function trainKernel(
  name: string,
  fields: readonly string[],
  body: string,
  writesWeights = false,
): TrainKernel {
  const variants = new Map<number, Kernel>();
  return {
    name,
    fields,
    at(segments) {
      let k = variants.get(segments);
      if (!k) {
        const code = `struct Params { ${fields.map((f) => `${f}: u32,`).join(' ')} }
@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<storage, ${writesWeights ? 'read_write' : 'read'}> weights: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${arenaAccess(segments)}
fn put(i: u32, v: f32, acc: u32) { if (acc != 0u) { st(i, ld(i) + v); } else { st(i, v); } }
${body}`;
        const label = segments > 1 ? `${name} (${segments} segments)` : name;
        k = { name: label, fields, code, segments, writesWeights };
        variants.set(segments, k);
      }
      return k;
    },
  };
}

/** A workgroup sum: every invocation must call it (barriers). Each reducer has its own array. */
const reducer = (k: number) => `
var<workgroup> red${k}: array<f32, ${WORKGROUP}>;
fn reduce${k}(v: f32, li: u32) -> f32 {
  red${k}[li] = v;
  workgroupBarrier();
  for (var s = ${WORKGROUP / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { red${k}[li] += red${k}[li + s]; }
    workgroupBarrier();
  }
  let r = red${k}[0];
  workgroupBarrier();
  return r;
}`;

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

/**
 * Conv forward, any kernel, stride, padding, dilation and groups, reading its input through a channel map:
 * one output per invocation. Depthwise convs run it; 1x1 convs run pwForward, others CONV_FWD_BLOCK.
 */
export const CONV_FWD = trainKernel(
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
        s += weights[wb + ky * p.KW + kx] * ld(xb + u32(iy) * p.W + u32(ix));
      }
    }
  }
  if (p.relu != 0u) { s = max(s, 0.0); }
  st(p.y + i, s);`),
);

/**
 * CONV_FWD for convs with several output channels per group (the stem; not depthwise): blockedConv, as
 * inference's CONV, reading its input through a channel map.
 */
export const CONV_FWD_BLOCK = trainKernel(
  'train conv (blocked)',
  ['x', 'w', 'b', 'hasBias', 'map', 'hasMap', 'y', 'relu', ...convDims, 'total'],
  `
fn inRow(c: u32) -> u32 {
  if (p.hasMap != 0u) { return u32(weights[p.map + c]); }
  return c;
}
${blockedConv(
  'p.x + (n * p.C + inRow(#c)) * p.H * p.W',
  'p.w + (o0 * p.cin + ci) * taps',
  'select(0.0, weights[p.b + #o], p.hasBias != 0u)',
  'p.y + ((n * p.O + #o) * p.OH + oy) * p.OW + ox',
)}`,
);

/** A kernel per tile, made once: `name` gets the tile unless it is the default. */
function perTile<T extends object>(
  def: T,
  make: (t: T, name: (base: string) => string) => TrainKernel,
  keyOf: (t: T) => string,
) {
  const made = new Map<string, TrainKernel>();
  return (t: T = def): TrainKernel => {
    const key = keyOf(t);
    let k = made.get(key);
    if (!k) {
      const custom = key !== keyOf(def);
      made.set(key, (k = make(t, (base) => (custom ? `${base} ${key}` : base))));
    }
    return k;
  };
}

/**
 * Grouped 1x1 conv forward (stride 1, no padding) as a tiled GEMM per group, reading its input through a
 * channel map, with the bias and ReLU fused: y[n][g*cout + m][px] = sum_k w[g*cout + m][k] x[n][map(g*cin + k)][px].
 */
export const pwForward = perTile(
  GEMM,
  (t, name) =>
    trainKernel(
      name('train pointwise'),
      ['x', 'w', 'b', 'hasBias', 'map', 'hasMap', 'y', 'relu', 'N', 'C', 'O', 'HW', 'cin', 'cout'],
      gemm(
        'p.cout',
        'p.cin',
        'p.x + #n * p.C * p.HW + #px',
        'weights[p.w + (g * p.cout + #r) * p.cin + #k]',
        'bBase + xrow(g * p.cin + #k) * p.HW',
        `
      let o = g * p.cout + r;
      var v = s;
      if (p.hasBias != 0u) { v += weights[p.b + o]; }
      if (p.relu != 0u) { v = max(v, 0.0); }
      st(p.y + (n * p.O + o) * p.HW + px, v);`,
        t,
      ).replace(
        '\n@compute',
        `
fn xrow(c: u32) -> u32 {
  if (p.hasMap != 0u) { return u32(weights[p.map + c]); }
  return c;
}
@compute`,
      ),
    ),
  gemmKey,
);

/**
 * dL/dx of a grouped 1x1 conv as a tiled GEMM per group: dx[n][map(g*cin + k)][px] = sum_m
 * w[g*cout + m][k] gy[n][g*cout + m][px], written or added as p.acc says (the map is a permutation).
 */
export const pwBackwardInput = perTile(
  GEMM,
  (t, name) =>
    trainKernel(
      name('train pointwise backward input'),
      ['gy', 'w', 'map', 'hasMap', 'gx', 'acc', 'N', 'C', 'O', 'HW', 'cin', 'cout'],
      gemm(
        'p.cin',
        'p.cout',
        'p.gy + (#n * p.O + g * p.cout) * p.HW + #px',
        'weights[p.w + (g * p.cout + #k) * p.cin + #r]',
        'bBase + #k * p.HW',
        `
      let c = g * p.cin + r;${row}
      put(p.gx + (n * p.C + row) * p.HW + px, s, p.acc);`,
        t,
      ),
    ),
  gemmKey,
);

/**
 * The weight-gradient tile: TR output rows x TC input channels per workgroup of 16 x 8 invocations (each
 * TR / 8 x TC / 16), TQ columns deep. TR a multiple of 8, TC of 16, TQ one of 16, 32, 64, 128. V: 4 reads
 * the shared tiles as vec4 (TR a multiple of 32, TC 64 or 128, TQ 16 or 32), written TRxTCxTQv.
 */
export interface WgradTile {
  TR: number;
  TC: number;
  TQ: number;
  V?: 4;
}

/** A weight-gradient tile as its spec: TRxTCxTQ, with a v for the vec4 variant. */
export const wgradKey = (t: WgradTile) => `${t.TR}x${t.TC}x${t.TQ}${t.V ? 'v' : ''}`;
export const WGRAD: WgradTile = { TR: 32, TC: 32, TQ: 32 };

/** The weight-gradient tile that pads a gradient of `cout` x `cin` least (TQ 32 where it fits, else 16). */
export function fitWgradTile(cout: number, cin: number): WgradTile {
  const TR = leastPadding([16, 24, 32, 40, 48, 64], cout);
  const TC = leastPadding([16, 32, 48, 64, 80], cin);
  return { TR, TC, TQ: (TR + TC) * 33 * 4 <= WORKGROUP_STORAGE ? 32 : 16 };
}

/** Throws unless pwBackwardWeight can be built for `t`. */
export function checkWgradTile(t: WgradTile): void {
  const ok = t.TR >= 8 && t.TR % 8 === 0 && t.TC >= 16 && t.TC % 16 === 0 && [16, 32, 64, 128].includes(t.TQ);
  if (!ok)
    throw new RangeError(
      `weight-gradient tile ${wgradKey(t)}: needs TR a multiple of 8, TC of 16, and TQ 16, 32, 64 or 128`,
    );
  if (t.V !== undefined && !(t.V === 4 && t.TR % 32 === 0 && t.TC % 64 === 0 && t.TC <= 128 && t.TQ <= 32))
    throw new RangeError(
      `weight-gradient tile ${wgradKey(t)}: the vec4 variant needs TR a multiple of 32, TC 64 or 128, and TQ 16 or 32`,
    );
  const bytes = (t.V ? (t.TR + t.TC + 8) * t.TQ : (t.TR + t.TC) * (t.TQ + 1)) * 4;
  if (bytes > WORKGROUP_STORAGE)
    throw new RangeError(
      `weight-gradient tile ${wgradKey(t)}: ${bytes} bytes of workgroup memory, above ${WORKGROUP_STORAGE}`,
    );
}

/**
 * How a weight-gradient tile keeps its shared tiles: their declarations, this invocation's load column `j`
 * and the row it loads in round t (`pre` declares what they need), the stores of G(r, j) from gv and X(r, j)
 * from xv, the inner loop's body at column k, and which rows (m) and columns (k) an invocation owns.
 */
interface WgradLayout {
  shared: string;
  pre: string;
  row: string;
  storeG: string;
  storeX: string;
  inner: string;
  m: (u: string) => string;
  k: (b: string) => string;
}

/** Scalar loads: column li % TQ, rows li / TQ + (128 / TQ) t; owned rows lid.y + 8u, columns lid.x + 16b. */
const scalarWgrad = (t: WgradTile, RR: number, RC: number): WgradLayout => ({
  // Rows TQ + 1 apart: a warp's stores (q fastest) and reads (rows by lid.y, lid.x) hit distinct banks (with
  // the columns TR apart, every store of a warp fell into one bank: 32 at a time).
  shared: `const QS = TQ + 1u;
var<workgroup> Gs: array<f32, ${t.TR * (t.TQ + 1)}>; // [m][q]
var<workgroup> Xs: array<f32, ${t.TC * (t.TQ + 1)}>; // [k][q]`,
  pre: `
  let j = li % TQ;
  let r0 = li / TQ;`,
  row: 'r0',
  storeG: 'Gs[r * QS + j] = gv;',
  storeX: 'Xs[r * QS + j] = xv;',
  inner: `
      var xr: array<f32, ${RC}>;
      for (var b = 0u; b < ${RC}u; b++) { xr[b] = Xs[(lid.x + 16u * b) * QS + k]; }
      for (var u = 0u; u < ${RR}u; u++) {
        let gv = Gs[(lid.y + 8u * u) * QS + k];
        for (var b = 0u; b < ${RC}u; b++) { acc[u * ${RC}u + b] += gv * xr[b]; }
      }`,
  m: (u) => `lid.y + 8u * ${u}`,
  k: (b) => `lid.x + 16u * ${b}`,
});

/**
 * vec4 loads (a tile with V: 4): the tiles are stored [q][row], rows TR + 4 (TC + 4) apart, and read 4 rows
 * a load, so the inner loop issues TR / 32 + TC / 64 loads for TR / 8 x TC / 16 multiply-adds. A warp loads
 * 8 columns of 4 rows (a 32-byte sector a row), so that its stores fall into 32 distinct banks.
 */
const vec4Wgrad = (t: WgradTile, RR: number, RC: number): WgradLayout => {
  const QH = t.TQ / 8;
  return {
    shared: `const GS = ${t.TR / 4 + 1}u;
const XS = ${t.TC / 4 + 1}u;
var<workgroup> Gs: array<vec4f, ${t.TQ * (t.TR / 4 + 1)}>; // [q][m / 4]
var<workgroup> Xs: array<vec4f, ${t.TQ * (t.TC / 4 + 1)}>; // [q][k / 4]`,
    pre: `
  let j = (li / 32u) % ${QH}u * 8u + li % 8u;
  let r0 = li / ${32 * QH}u * 4u + (li / 8u) % 4u;`,
    row: 'r0',
    storeG: 'Gs[j * GS + r / 4u][r % 4u] = gv;',
    storeX: 'Xs[j * XS + r / 4u][r % 4u] = xv;',
    inner: vec4Body(RR, RC, ['Gs', 'GS'], ['Xs', 'XS']),
    m: (u) => `4u * (lid.y + 8u * (${u} / 4u)) + ${u} % 4u`,
    k: (b) => `4u * (lid.x + 16u * (${b} / 4u)) + ${b} % 4u`,
  };
};

/**
 * dL/dw of a grouped 1x1 conv, partial sums: workgroup (chunk s, row tile * column tile, group) sums
 * gy[n][g*cout + m][px] x[n][map(g*cin + k)][px] over the columns q = (n, px) of chunk s, into
 * part[((s * groups + g) * cout + m) * cin + k]; REDUCE adds the chunks into the gradient. The vec4 variant
 * sums in the same order.
 */
export const pwBackwardWeight = perTile(
  WGRAD,
  (t, name) => {
    checkWgradTile(t);
    const [RR, RC, step] = [t.TR / 8, t.TC / 16, 128 / t.TQ];
    const L = (t.V ? vec4Wgrad : scalarWgrad)(t, RR, RC);
    // Loads in rounds of 128 (the workgroup): rows row + step * t; a last partial round is guarded.
    const [gRounds, xRounds] = [Math.ceil((t.TR * t.TQ) / 128), Math.ceil((t.TC * t.TQ) / 128)];
    const gGuard = (t.TR * t.TQ) % 128 ? ' && r < TR' : '';
    const xGuard = (t.TC * t.TQ) % 128 ? ' && r < TC' : '';
    return trainKernel(
      name('train pointwise backward weight'),
      ['x', 'gy', 'map', 'hasMap', 'part', 'N', 'C', 'O', 'HW', 'cin', 'cout', 'groups', 'chunk'],
      `
const TR = ${t.TR}u;
const TC = ${t.TC}u;
const TQ = ${t.TQ}u;
${L.shared}

@compute @workgroup_size(16, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let s = wg.x;
  let g = wg.z;
  let cTiles = (p.cin + TC - 1u) / TC;
  let m0 = (wg.y / cTiles) * TR;
  let k0 = (wg.y % cTiles) * TC;
  let cols = p.N * p.HW;
  let qa = s * p.chunk;
  let qb = min(qa + p.chunk, cols);
  // Loads: column j, rows ${L.row} + ${step}t.${L.pre}
  var acc: array<f32, ${RR * RC}>;
  // Column q's (image, pixel), carried from one step to the next (TQ on) with adds, not two divisions.
  let dn = TQ / p.HW;
  let dp = TQ % p.HW;
  var n = (qa + j) / p.HW;
  var px = (qa + j) % p.HW;
  for (var q0 = qa; q0 < qb; q0 += TQ) {
    let q = q0 + j;
    for (var t = 0u; t < ${gRounds}u; t++) {
      let r = ${L.row} + ${step}u * t;
      var gv = 0.0;
      if (q < qb && m0 + r < p.cout${gGuard}) { gv = ld(p.gy + (n * p.O + g * p.cout + m0 + r) * p.HW + px); }
      ${gGuard ? `if (r < TR) { ${L.storeG} }` : L.storeG}
    }
    for (var t = 0u; t < ${xRounds}u; t++) {
      let r = ${L.row} + ${step}u * t;
      var xv = 0.0;
      if (q < qb && k0 + r < p.cin${xGuard}) {
        var c = g * p.cin + k0 + r;
        if (p.hasMap != 0u) { c = u32(weights[p.map + c]); }
        xv = ld(p.x + (n * p.C + c) * p.HW + px);
      }
      ${xGuard ? `if (r < TC) { ${L.storeX} }` : L.storeX}
    }
    n += dn;
    px += dp;
    if (px >= p.HW) { px -= p.HW; n += 1u; }
    workgroupBarrier();
    for (var k = 0u; k < TQ; k++) {${L.inner}
    }
    workgroupBarrier();
  }
  for (var u = 0u; u < ${RR}u; u++) {
    let m = m0 + ${L.m('u')};
    if (m >= p.cout) { continue; }
    for (var b = 0u; b < ${RC}u; b++) {
      let k = k0 + ${L.k('b')};
      if (k >= p.cin) { continue; }
      st(p.part + ((s * p.groups + g) * p.cout + m) * p.cin + k, acc[u * ${RC}u + b]);
    }
  }
}`,
    );
  },
  wgradKey,
);

/**
 * A workgroup's strided loop over the output positions q = qa + li, qa + li + WORKGROUP, ... < qb of
 * [N, OH, OW] planes: `n`, `r` (q's index in its plane), `oy` and `ox` are carried from one position to the
 * next with adds and compares (an integer division costs dozens of instructions; decoding q took five per
 * position). `body` sees them.
 */
const positions = (body: string) => `
  let plane = p.OH * p.OW;
  var n = (qa + li) / plane;
  var r = (qa + li) % plane;
  var oy = r / p.OW;
  var ox = r % p.OW;
  let dn = ${WORKGROUP}u / plane;
  let dr = ${WORKGROUP}u % plane;
  let dy = dr / p.OW;
  let dx = dr % p.OW;
  for (var q = qa + li; q < qb; q += ${WORKGROUP}u) {${body}
    r += dr;
    n += dn;
    if (r >= plane) { r -= plane; n += 1u; }
    ox += dx;
    oy += dy;
    if (ox >= p.OW) { ox -= p.OW; oy += 1u; }
    if (oy >= p.OH) { oy -= p.OH; }
  }`;

/** Loops over the taps of a kernel up to 3x3 with constant bounds, so that accumulators indexed by tap stay
 * in registers (a runtime index would put them in memory); \`body\` sees ky, kx, iy, ix (in the input). */
const taps3x3 = (body: string) => `
    for (var ky = 0u; ky < 3u; ky++) {
      let iy = i32(oy * p.SH + ky * p.DH) - i32(p.PH);
      if (ky >= p.KH || iy < 0 || iy >= i32(p.H)) { continue; }
      for (var kx = 0u; kx < 3u; kx++) {
        let ix = i32(ox * p.SW + kx * p.DW) - i32(p.PW);
        if (kx >= p.KW || ix < 0 || ix >= i32(p.W)) { continue; }${body}
      }
    }`;

/**
 * dL/dw of a conv up to 3x3 with one output channel per group (depthwise), partial sums: workgroup (chunk s,
 * item = o * cin + ci) sums gy * x over the output positions (n, oy, ox) of chunk s, all taps at once, into
 * part[(s * items + item) * KH*KW + tap]; REDUCE adds them. Items run on (y, z): y * z may exceed \`items\`.
 */
export const TAPS_BWD_WEIGHT = trainKernel(
  'train conv backward weight',
  ['x', 'gy', 'map', 'hasMap', 'part', 'N', ...convDims, 'items', 'chunk'],
  `${reducer(0)}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let s = wg.x;
  let item = wg.z * nw.y + wg.y;
  if (item >= p.items) { return; }
  let o = item / p.cin;
  let c = (o / p.cout) * p.cin + item % p.cin;${row}
  let qa = s * p.chunk;
  let qb = min(qa + p.chunk, p.N * p.OH * p.OW);
  var acc: array<f32, 9>;${positions(`
    let gv = ld(p.gy + (n * p.O + o) * plane + r);
    let xb = p.x + (n * p.C + row) * p.H * p.W;${taps3x3(`
        acc[ky * 3u + kx] += gv * ld(xb + u32(iy) * p.W + u32(ix));`)}`)}
  for (var t = 0u; t < 9u; t++) {
    let sum = reduce0(acc[t], li);
    let ky = t / 3u;
    let kx = t % 3u;
    if (li == 0u && ky < p.KH && kx < p.KW) {
      st(p.part + (s * p.items + item) * p.KH * p.KW + ky * p.KW + kx, sum);
    }
  }
}`,
);

/**
 * TAPS_BWD_WEIGHT for convs with several output channels per group (the stem): workgroup (chunk s, item =
 * (block of CONV_BLOCK output channels of a group) * cin + ci) loads each position's input taps once for
 * all the block's channels; the same partial sums, in the same layout (items = O * cin).
 */
export const TAPS_BWD_WEIGHT_BLOCK = trainKernel(
  'train conv backward weight (blocked)',
  ['x', 'gy', 'map', 'hasMap', 'part', 'N', ...convDims, 'items', 'chunk', 'blocked'],
  `${reducer(0)}
const CB = ${CONV_BLOCK}u;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let s = wg.x;
  let bi = wg.z * nw.y + wg.y;
  if (bi >= p.blocked) { return; }
  let ci = bi % p.cin;
  let ob = bi / p.cin;
  let blocks = (p.cout + CB - 1u) / CB;
  let g = ob / blocks;
  let o0 = g * p.cout + (ob % blocks) * CB;
  let nb = min(CB, (g + 1u) * p.cout - o0);
  let c = g * p.cin + ci;${row}
  let qa = s * p.chunk;
  let qb = min(qa + p.chunk, p.N * p.OH * p.OW);
  var acc: array<f32, ${CONV_BLOCK * 9}>;${positions(`
    let xb = p.x + (n * p.C + row) * p.H * p.W;
    var xt = array<f32, 9>(); // explicitly each position: SwiftShader's Vulkan kept the last one's padded taps${taps3x3(`
        xt[ky * 3u + kx] = ld(xb + u32(iy) * p.W + u32(ix));`)}
    let gb = p.gy + (n * p.O + o0) * plane + r;
    for (var b = 0u; b < CB; b++) {
      if (b < nb) {
        let gv = ld(gb + b * plane);
        for (var t = 0u; t < 9u; t++) { acc[b * 9u + t] += gv * xt[t]; }
      }
    }`)}
  for (var b = 0u; b < CB; b++) {
    if (b >= nb) { break; }
    for (var t = 0u; t < 9u; t++) {
      let sum = reduce0(acc[b * 9u + t], li);
      let ky = t / 3u;
      let kx = t % 3u;
      if (li == 0u && ky < p.KH && kx < p.KW) {
        st(p.part + (s * p.items + (o0 + b) * p.cin + ci) * p.KH * p.KW + ky * p.KW + kx, sum);
      }
    }
  }
}`,
);

/** dst[i] += (or =, as p.acc says) the sum over chunks s < S of part[s * L + i]. */
export const REDUCE = trainKernel(
  'train reduce partial sums',
  ['part', 'S', 'L', 'dst', 'acc', 'total'],
  oneD(`
  var s = 0.0;
  for (var t = 0u; t < p.S; t++) { s += ld(p.part + t * p.L + i); }
  put(p.dst + i, s, p.acc);`),
);

/**
 * dL/dx of a conv that is not 1x1: one input element per invocation gathers w * gy over the outputs that
 * read it, and goes to the physical row its channel map names (a permutation: no two invocations write one
 * element).
 */
export const CONV_BWD_INPUT = trainKernel(
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
        part += weights[wb + ky * p.KW + kx] * ld(gb + oy * p.OW + ox);
      }
    }
    s += part;
  }${row}
  put(p.gx + ((n * p.C + row) * p.H + u32(iy)) * p.W + u32(ix), s, p.acc);`),
);

/**
 * dL/dw of any other conv (more than 9 taps), one weight per invocation: rare (no preset has one), so
 * simple rather than fast.
 */
export const CONV_BWD_WEIGHT = trainKernel(
  'train conv backward weight (per weight)',
  ['x', 'gy', 'gw', 'map', 'hasMap', 'N', ...convDims, 'total'],
  oneD(`
  let kx = i % p.KW;
  let ky = (i / p.KW) % p.KH;
  let ci = (i / (p.KW * p.KH)) % p.cin;
  let o = i / (p.KW * p.KH * p.cin);
  let c = (o / p.cout) * p.cin + ci;${row}
  var s = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let xb = p.x + (n * p.C + row) * p.H * p.W;
    let gb = p.gy + (n * p.O + o) * p.OH * p.OW;
    var part = 0.0;
    for (var oy = 0u; oy < p.OH; oy++) {
      let iy = i32(oy * p.SH + ky * p.DH) - i32(p.PH);
      if (iy < 0 || iy >= i32(p.H)) { continue; }
      for (var ox = 0u; ox < p.OW; ox++) {
        let ix = i32(ox * p.SW + kx * p.DW) - i32(p.PW);
        if (ix < 0 || ix >= i32(p.W)) { continue; }
        part += ld(gb + oy * p.OW + ox) * ld(xb + u32(iy) * p.W + u32(ix));
      }
    }
    s += part;
  }
  st(p.gw + i, ld(p.gw + i) + s);`),
);

/**
 * A ReLU's backward on a BN's output, folded into the BN's backward (its forward affine applied the ReLU):
 * `g` (dL/dy) is zeroed where x * scale + shift, the ReLU's input as the affine computed it, is not positive.
 * Needs sc, sh and p.relu; x is read anyway, so the mask costs no memory traffic.
 */
const bnRelu = (x: string, g: string) => `
      if (p.relu != 0u && !(${x} * sc + sh > 0.0)) { ${g} = 0.0; }`;

/**
 * Per-channel partial sums over chunks of the batch (p.per images each): workgroup (chunk s, channel c)
 * writes part[(c * S + s) * 2 + j]. Mode 0: j=0 sums a (a bias gradient); mode 1 (BN statistics, in one
 * read of a from memory): j=0 sums a, j=1 sums (a - m)^2 about the chunk's own mean m, over the chunk again
 * (in cache), for CHANNEL_FINAL to merge; mode 2 (BN backward, a = gy, b = x): j=0 sums a, j=1 sums
 * a * (b - mean[c]). With `relu` (mode 2), a is masked as a ReLU on the BN's output would mask it (bnRelu).
 */
export const CHANNEL_PARTIAL = trainKernel(
  'train channel partial sums',
  ['a', 'b', 'mean', 'mode', 'N', 'C', 'HW', 'per', 'S', 'part', 'scale', 'shift', 'relu'],
  `${reducer(0)}${reducer(1)}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let s = wg.x;
  let c = wg.y;
  let n0 = s * p.per;
  let count = (min(n0 + p.per, p.N) - n0) * p.HW;
  var mean = 0.0;
  var sc = 0.0;
  var sh = 0.0;
  if (p.mode == 2u) { mean = ld(p.mean + c); }
  if (p.relu != 0u) {
    sc = ld(p.scale + c);
    sh = ld(p.shift + c);
  }
  // Element e of the chunk is at ((n0 + e / HW) * C + c) * HW + e % HW: carried from one e to the next
  // (a step of WORKGROUP) with adds, not two integer divisions each.
  let start = ((n0 + li / p.HW) * p.C + c) * p.HW + li % p.HW;
  let dAt = (${WORKGROUP}u / p.HW) * p.C * p.HW + ${WORKGROUP}u % p.HW;
  let dPx = ${WORKGROUP}u % p.HW;
  let wrap = (p.C - 1u) * p.HW;
  var s0 = 0.0;
  var s1 = 0.0;
  var at = start;
  var px = li % p.HW;
  for (var e = li; e < count; e += ${WORKGROUP}u) {
    var a = ld(p.a + at);
    if (p.mode == 2u) {
      let b = ld(p.b + at);${bnRelu('b', 'a')}
      s1 += a * (b - mean);
    }
    s0 += a;
    at += dAt;
    px += dPx;
    if (px >= p.HW) { px -= p.HW; at += wrap; }
  }
  let t0 = reduce0(s0, li);
  if (p.mode == 1u) {
    let m = t0 / f32(count);
    at = start;
    px = li % p.HW;
    for (var e = li; e < count; e += ${WORKGROUP}u) {
      let d = ld(p.a + at) - m;
      s1 += d * d;
      at += dAt;
      px += dPx;
      if (px >= p.HW) { px -= p.HW; at += wrap; }
    }
  }
  let t1 = reduce1(s1, li);
  if (li == 0u) {
    st(p.part + (c * p.S + s) * 2u, t0);
    st(p.part + (c * p.S + s) * 2u + 1u, t1);
  }
}`,
);

/**
 * Per channel (one invocation each, C = p.total), from CHANNEL_PARTIAL's sums over `count` elements in
 * chunks of `chunk` (the last one shorter). Mode 1: mean[c] and variance[c] (biased; the chunks' sums of
 * squares about their own means merged, as Chan et al.: sum_s M2_s + n_s (mean_s - mean)^2), and the affine
 * that normalises, scale = gamma / sqrt(var + eps), shift = beta - mean * scale. Mode 2 (BN backward):
 * dgamma += sum(gy * xhat), dbeta += sum(gy), and for BN_DX m[c] = mean(gy), m[C + c] = mean(gy * xhat).
 * Mode 3: a bias gradient, gBeta[c] += sum(gy).
 */
export const CHANNEL_FINAL = trainKernel(
  'train channel totals',
  [
    ...['part', 'S', 'mode', 'count', 'chunk', 'mean', 'variance', 'gamma', 'beta', 'scale', 'shift', 'eps'],
    ...['gGamma', 'gBeta', 'm', 'total'],
  ],
  oneD(`
  let c = i;
  var s0 = 0.0;
  var s1 = 0.0;
  for (var t = 0u; t < p.S; t++) {
    s0 += ld(p.part + (c * p.S + t) * 2u);
    s1 += ld(p.part + (c * p.S + t) * 2u + 1u);
  }
  let count = f32(p.count);
  if (p.mode == 1u) {
    let mean = s0 / count;
    var m2 = 0.0;
    for (var t = 0u; t < p.S; t++) {
      let n = f32(min(p.chunk, p.count - t * p.chunk));
      let d = ld(p.part + (c * p.S + t) * 2u) / n - mean;
      m2 += ld(p.part + (c * p.S + t) * 2u + 1u) + n * d * d;
    }
    let variance = m2 / count;
    let scale = weights[p.gamma + c] / sqrt(variance + bitcast<f32>(p.eps));
    st(p.mean + c, mean);
    st(p.variance + c, variance);
    st(p.scale + c, scale);
    st(p.shift + c, weights[p.beta + c] - mean * scale);
  } else if (p.mode == 2u) {
    let sgx = s1 / sqrt(ld(p.variance + c) + bitcast<f32>(p.eps));
    st(p.gGamma + c, ld(p.gGamma + c) + sgx);
    st(p.gBeta + c, ld(p.gBeta + c) + s0);
    st(p.m + c, s0 / count);
    st(p.m + p.total + c, sgx / count);
  } else {
    st(p.gBeta + c, ld(p.gBeta + c) + s0);
  }`),
);

/**
 * A per-channel elementwise kernel over an [N, C, HW] value (planes; the profile on the H200: the BN
 * backward, with five per-channel loads and a sqrt per element, took 3x the affine's time over the same
 * elements before). `pre` runs once, with `c` known; `body` per element `i`.
 */
const perChannel = (pre: string, body: string) =>
  planes(
    'p.HW',
    `
  let base = (n * p.C + c) * p.HW;${pre}`,
    `
    let i = base + px;${body}`,
  );

/**
 * Depthwise 3x3 convs (one input and one output channel per group, dilation 1, strides 1 or 2), plane by
 * plane (planeGrid over the plane they write): the workgroup's y and z are the channel and the image, the
 * channel's 9 weights sit in registers, and a pixel costs one division (the generic kernels decode n, c, y, x
 * from a flat index and divide by the stride at every tap: integer division, dozens of instructions each,
 * made them compute-bound on the H200, 10x from its memory bandwidth). The same sums in the same order.
 */
const depthwise = (plane: string, pre: string, body: string) =>
  planes(
    plane,
    `${row}
  var wt: array<f32, 9>;
  for (var t = 0u; t < 9u; t++) { wt[t] = weights[p.w + c * 9u + t]; }${pre}`,
    body,
  );

/** Depthwise 3x3 forward (see depthwise): y[n][c] from x[n][map(c)], bias and ReLU fused. */
export const DW_FWD = trainKernel(
  'train depthwise',
  ['x', 'w', 'b', 'hasBias', 'map', 'hasMap', 'y', 'relu', ...convDims],
  depthwise(
    'p.OH * p.OW',
    `
  let xb = p.x + (n * p.C + row) * p.H * p.W;
  let yb = p.y + (n * p.O + c) * p.OH * p.OW;
  var b = 0.0;
  if (p.hasBias != 0u) { b = weights[p.b + c]; }`,
    `
    let oy = px / p.OW;
    let ox = px - oy * p.OW;
    var s = b;${taps3x3(`
        s += wt[ky * 3u + kx] * ld(xb + u32(iy) * p.W + u32(ix));`)}
    if (p.relu != 0u) { s = max(s, 0.0); }
    st(yb + px, s);`,
  ),
);

/**
 * Depthwise 3x3 dL/dx (see depthwise): gx[n][map(c)][iy][ix] = sum over the taps (ky, kx) whose output
 * (iy + PH - ky, ix + PW - kx) / stride is whole and inside, of w[c][ky][kx] gy[n][c][oy][ox]; strides 1 or 2
 * as a mask and a shift. Written or added as p.acc says.
 */
export const DW_BWD_INPUT = trainKernel(
  'train depthwise backward input',
  ['gy', 'w', 'map', 'hasMap', 'gx', 'acc', ...convDims],
  depthwise(
    'p.H * p.W',
    `
  let gb = p.gy + (n * p.O + c) * p.OH * p.OW;
  let xb = p.gx + (n * p.C + row) * p.H * p.W;
  let sy = p.SH - 1u;
  let sx = p.SW - 1u;`,
    `
    let iy = px / p.W;
    let ix = px - iy * p.W;
    var part = 0.0;
    for (var ky = 0u; ky < 3u; ky++) {
      let ty = i32(iy + p.PH) - i32(ky);
      if (ty < 0 || (u32(ty) & sy) != 0u) { continue; }
      let oy = u32(ty) >> sy;
      if (oy >= p.OH) { continue; }
      for (var kx = 0u; kx < 3u; kx++) {
        let tx = i32(ix + p.PW) - i32(kx);
        if (tx < 0 || (u32(tx) & sx) != 0u) { continue; }
        let ox = u32(tx) >> sx;
        if (ox >= p.OW) { continue; }
        part += wt[ky * 3u + kx] * ld(gb + oy * p.OW + ox);
      }
    }
    put(xb + px, part, p.acc);`,
  ),
);

/**
 * BN backward with batch statistics, per element: dx = scale[c] * (gy - mg[c] - xhat * mgx[c]), scale =
 * gamma / sqrt(var + eps) from the forward, mg and mgx from CHANNEL_FINAL mode 2 at m[c] and m[C + c];
 * with `relu`, gy masked by the ReLU the forward affine applied (bnRelu). Dispatched by planeGrid.
 */
export const BN_DX = trainKernel(
  'train batchnorm backward',
  ['gy', 'x', 'mean', 'variance', 'scale', 'shift', 'relu', 'm', 'gx', 'acc', 'C', 'HW', 'eps', 'total'],
  perChannel(
    `
  let invstd = 1.0 / sqrt(ld(p.variance + c) + bitcast<f32>(p.eps));
  let mu = ld(p.mean + c);
  let sc = ld(p.scale + c);
  let sh = ld(p.shift + c);
  let mg = ld(p.m + c);
  let mgx = ld(p.m + p.C + c);`,
    `
    let xv = ld(p.x + i);
    var g = ld(p.gy + i);${bnRelu('xv', 'g')}
    let xhat = (xv - mu) * invstd;
    put(p.gx + i, sc * (g - mg - xhat * mgx), p.acc);`,
  ),
);

/**
 * y = x * scale[c] + shift[c] (scale and shift in the arena: CHANNEL_FINAL wrote them), plus res[i] when
 * hasRes (a BN whose only reader is an add: the add's output, and the BN's never written), optional ReLU.
 * Dispatched by planeGrid.
 */
export const AFFINE = trainKernel(
  'train channel affine',
  ['x', 'y', 'scale', 'shift', 'res', 'hasRes', 'C', 'HW', 'relu', 'total'],
  perChannel(
    `
  let sc = ld(p.scale + c);
  let sh = ld(p.shift + c);`,
    `
    var s = ld(p.x + i) * sc + sh;
    if (p.hasRes != 0u) { s += ld(p.res + i); }
    if (p.relu != 0u) { s = max(s, 0.0); }
    st(p.y + i, s);`,
  ),
);

export const RELU = trainKernel(
  'train relu',
  ['x', 'y', 'total'],
  oneD(`
  st(p.y + i, max(ld(p.x + i), 0.0));`),
);

/** dx = gy where the ReLU's output (or input: the same sign) is positive; in place when gx = gy. */
export const RELU_BWD = trainKernel(
  'train relu backward',
  ['y', 'gy', 'gx', 'acc', 'total'],
  oneD(`
  var v = 0.0;
  if (ld(p.y + i) > 0.0) { v = ld(p.gy + i); }
  put(p.gx + i, v, p.acc);`),
);

export const ADD = trainKernel(
  'train add',
  ['a', 'b', 'y', 'relu', 'total'],
  oneD(`
  var s = ld(p.a + i) + ld(p.b + i);
  if (p.relu != 0u) { s = max(s, 0.0); }
  st(p.y + i, s);`),
);

/**
 * Channels [sOff, sOff + C) of an [N, sC, HW] value to channels [dOff, dOff + C) of an [N, dC, HW] one,
 * written or added: a concat's forward (into its slices) and backward (out of them), and the add's backward.
 */
export const COPY = trainKernel(
  'train copy',
  ['src', 'sC', 'sOff', 'dst', 'dC', 'dOff', 'C', 'HW', 'acc'],
  planes(
    'p.HW',
    `
  let sb = p.src + (n * p.sC + p.sOff + c) * p.HW;
  let db = p.dst + (n * p.dC + p.dOff + c) * p.HW;`,
    `
    put(db + px, ld(sb + px), p.acc);`,
  ),
);

const poolDims = ['C', 'H', 'W', 'OH', 'OW', 'KH', 'KW', 'SH', 'SW', 'PH', 'PW', 'mode'];

/** a / s for a stride s: 1 and 2 (every preset's) without an integer division. */
const byStride = `
fn byStride(a: u32, s: u32) -> u32 {
  if (s == 1u) { return a; }
  if (s == 2u) { return a >> 1u; }
  return a / s;
}`;

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

/**
 * Max (mode 0) and average pooling (mode 1: over the padded window, 2: over the real one). Max pooling also
 * writes where each window's maximum is (its first in row-major order, PyTorch's choice on ties) to idx[i],
 * as a float (exact: a plane has far fewer than 2^24 elements), for MAXPOOL_BWD.
 */
export const POOL = trainKernel(
  'train pool',
  ['x', 'y', 'idx', ...poolDims],
  planes(
    'p.OH * p.OW',
    `
  let plane = n * p.C + c;`,
    `
    let i = plane * p.OH * p.OW + px;
    let oy = px / p.OW;
    let ox = px - oy * p.OW;${poolWindow}
  let xb = p.x + plane * p.H * p.W;
  var at = u32(y0) * p.W + u32(x0);
  var m = ld(xb + at);
  var s = 0.0;
  for (var yy = y0; yy < y1; yy++) {
    for (var xx = x0; xx < x1; xx++) {
      let k = u32(yy) * p.W + u32(xx);
      let v = ld(xb + k);
      if (v > m) {
        m = v;
        at = k;
      }
      s += v;
    }
  }
  var r = m;
  if (p.mode == 0u) { st(p.idx + i, f32(at)); }
  if (p.mode == 1u) { r = s / f32(padded); }
  if (p.mode == 2u) { r = s / f32((y1 - y0) * (x1 - x0)); }
  st(p.y + i, r);`,
  ),
);

/**
 * A pool's backward over its input planes (planes): `body` sees input element i = (plane, iy, ix) and the
 * windows that hold it, outputs [oy0, oy1) x [ox0, ox1).
 */
const poolWindowsOf = (body: string) =>
  byStride +
  planes(
    'p.H * p.W',
    `
  let plane = n * p.C + c;
  let gb = p.gy + plane * p.OH * p.OW;`,
    `
    let i = plane * p.H * p.W + px;
    let iy = i32(px / p.W);
    let ix = i32(px) - iy * i32(p.W);
    let ly = iy + i32(p.PH) - i32(p.KH) + 1;
    let lx = ix + i32(p.PW) - i32(p.KW) + 1;
    var oy0 = 0u;
    if (ly > 0) { oy0 = byStride(u32(ly) + p.SH - 1u, p.SH); }
    var ox0 = 0u;
    if (lx > 0) { ox0 = byStride(u32(lx) + p.SW - 1u, p.SW); }
    let oy1 = min(p.OH, byStride(u32(iy + i32(p.PH)), p.SH) + 1u);
    let ox1 = min(p.OW, byStride(u32(ix + i32(p.PW)), p.SW) + 1u);${body}`,
  );

/** Average pool backward as a gather: each input element collects from the windows that hold it. */
export const POOL_BWD = trainKernel(
  'train pool backward',
  ['gy', 'gx', 'acc', ...poolDims],
  poolWindowsOf(`
  var s = 0.0;
  for (var oy = oy0; oy < oy1; oy++) {
    for (var ox = ox0; ox < ox1; ox++) {${poolWindow}
      let g = ld(gb + oy * p.OW + ox);
      if (p.mode == 1u) {
        s += g / f32(padded);
      } else {
        s += g / f32((y1 - y0) * (x1 - x0));
      }
    }
  }
  put(p.gx + i, s, p.acc);`),
);

/**
 * Max pool backward as a gather: each input element collects gy from the windows whose maximum it is, as the
 * forward recorded in idx (one load a window, not a rescan of it).
 */
export const MAXPOOL_BWD = trainKernel(
  'train max pool backward',
  ['idx', 'gy', 'gx', 'acc', ...poolDims],
  poolWindowsOf(`
  let ib = p.idx + plane * p.OH * p.OW;
  let here = f32(px);
  var s = 0.0;
  for (var oy = oy0; oy < oy1; oy++) {
    for (var ox = ox0; ox < ox1; ox++) {
      if (ld(ib + oy * p.OW + ox) == here) { s += ld(gb + oy * p.OW + ox); }
    }
  }
  put(p.gx + i, s, p.acc);`),
);

export const GAP = trainKernel(
  'train global average pool',
  ['x', 'y', 'HW', 'total'],
  oneD(`
  let xb = p.x + i * p.HW;
  var s = 0.0;
  for (var k = 0u; k < p.HW; k++) { s += ld(xb + k); }
  st(p.y + i, s / f32(p.HW));`),
);

export const GAP_BWD = trainKernel(
  'train global average pool backward',
  ['gy', 'gx', 'HW', 'acc', 'total'],
  oneD(`
  put(p.gx + i, ld(p.gy + i / p.HW) / f32(p.HW), p.acc);`),
);

/**
 * Softmax cross-entropy with label smoothing s (src/train/loss.ts), one row per invocation: writes
 * dL/dlogits = (softmax - target) / N to gy, and the row's loss and whether its first largest logit is the
 * label to out[2n], out[2n + 1]. Labels are floats at p.labels; s is the float at p.hyper + 2.
 */
export const SOFTMAX_CE = trainKernel(
  'train softmax cross-entropy',
  ['y', 'labels', 'gy', 'out', 'hyper', 'K', 'total'],
  oneD(`
  let n = i;
  let row = p.y + n * p.K;
  let label = u32(ld(p.labels + n));
  let smoothing = ld(p.hyper + 2u);
  var m = ld(row);
  var best = 0u;
  for (var k = 1u; k < p.K; k++) {
    let v = ld(row + k);
    if (v > m) { m = v; best = k; }
  }
  var z = 0.0;
  for (var k = 0u; k < p.K; k++) { z += exp(ld(row + k) - m); }
  let logZ = m + log(z);
  var loss = 0.0;
  for (var k = 0u; k < p.K; k++) {
    var t = smoothing / f32(p.K);
    if (k == label) { t += 1.0 - smoothing; }
    let lp = ld(row + k) - logZ;
    loss -= t * lp;
    st(p.gy + n * p.K + k, (exp(lp) - t) / f32(p.total));
  }
  st(p.out + 2u * n, loss);
  st(p.out + 2u * n + 1u, select(0.0, 1.0, best == label));`),
);

/**
 * SGD as torch.optim.SGD (src/train/optim.ts), one invocation per parameter element: g = grad + wd p
 * (where its decay flag is 1); buf = g on the first step, else momentum buf + (1 - dampening) g; p -= lr
 * (Nesterov ? g + momentum buf : buf), or lr g without momentum. Parameters, gradients, momentum buffers and
 * flags are laid out alike from p.w, p.g, p.buf, p.flag. Hyperparameters are floats at p.hyper: lr, first,
 * (smoothing), momentum, dampening, nesterov, weight decay.
 */
export const SGD = trainKernel(
  'train sgd',
  ['w', 'g', 'buf', 'flag', 'hyper', 'total'],
  oneD(`
  let lr = ld(p.hyper);
  let momentum = ld(p.hyper + 3u);
  let x = weights[p.w + i];
  let g = ld(p.g + i) + ld(p.hyper + 6u) * ld(p.flag + i) * x;
  if (momentum == 0.0) {
    weights[p.w + i] = x - lr * g;
    return;
  }
  var b = g;
  if (ld(p.hyper + 1u) == 0.0) { b = momentum * ld(p.buf + i) + (1.0 - ld(p.hyper + 4u)) * g; }
  st(p.buf + i, b);
  var d = b;
  if (ld(p.hyper + 5u) != 0.0) { d = g + momentum * b; }
  weights[p.w + i] = x - lr * d;`),
  true,
);

/**
 * AdamW as torch.optim.AdamW (src/train/optim.ts), one invocation per parameter element: m = b1 m + (1 - b1)
 * g; v = b2 v + (1 - b2) g^2; p = p (1 - lr wd) (where its decay flag is 1) - stepSize m / (sqrt(v) / bc2 +
 * eps), stepSize = lr / (1 - b1^t) and bc2 = sqrt(1 - b2^t) from the host. Hyperparameters are floats at
 * p.hyper: lr, -, (smoothing), b1, b2, eps, weight decay, stepSize, bc2.
 */
export const ADAMW = trainKernel(
  'train adamw',
  ['w', 'g', 'm', 'v', 'flag', 'hyper', 'total'],
  oneD(`
  let h = p.hyper;
  let g = ld(p.g + i);
  let b1 = ld(h + 3u);
  let b2 = ld(h + 4u);
  let m = b1 * ld(p.m + i) + (1.0 - b1) * g;
  let v = b2 * ld(p.v + i) + (1.0 - b2) * g * g;
  st(p.m + i, m);
  st(p.v + i, v);
  let decay = 1.0 - ld(h) * ld(h + 6u) * ld(p.flag + i);
  weights[p.w + i] = weights[p.w + i] * decay - ld(h + 7u) * m / (sqrt(v) / ld(h + 8u) + ld(h + 5u));`),
  true,
);

export const TRAIN_KERNELS = [
  CONV_FWD,
  CONV_FWD_BLOCK,
  DW_FWD,
  DW_BWD_INPUT,
  pwForward(),
  pwBackwardInput(),
  pwBackwardWeight(),
  TAPS_BWD_WEIGHT,
  TAPS_BWD_WEIGHT_BLOCK,
  REDUCE,
  CONV_BWD_INPUT,
  CONV_BWD_WEIGHT,
  CHANNEL_PARTIAL,
  CHANNEL_FINAL,
  BN_DX,
  AFFINE,
  RELU,
  RELU_BWD,
  ADD,
  COPY,
  POOL,
  POOL_BWD,
  MAXPOOL_BWD,
  GAP,
  GAP_BWD,
  SOFTMAX_CE,
  SGD,
  ADAMW,
] as const;
