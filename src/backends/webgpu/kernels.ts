/**
 * The WGSL kernels: one compute shader per lowered op kind (src/runtime/lower.ts), the same fused maths as
 * the WASM kernels (assembly/). Every shader sees three bindings:
 * - `arena`: the plan's one activation buffer (NCHW values at element offsets, read with ld() and written with
 *   st(), which convert from and to the storage type: Precision);
 * - `weights`: this op's slice of the plan's weight buffer (weights, bias, channel maps stored as floats), or
 *   another read-only buffer (PIXELS: the uint8 input);
 * - `p`: this op's parameters (u32 fields, in the order of `fields`).
 * A value is `C` channels at channel offset `off` of a buffer with `bufC` channels, so a kernel can read a
 * concat slice or write straight into one. 1-D kernels run 64 invocations per workgroup on a 2-D grid
 * (`gridFor`), since one dispatch dimension holds at most 65535 workgroups.
 */

export interface Kernel {
  /** The op kind it runs; also the shader's label in errors. */
  name: string;
  /** The u32 parameters, in the order `p` declares them. */
  fields: readonly string[];
  code: string;
  /** Arena buffers it binds (training kernels on a segmented arena); 1 when absent. */
  segments?: number;
  /** It writes the parameters (the optimizer): binding 1 is read-write. */
  writesWeights?: boolean;
}

/** Invocations per workgroup of the 1-D kernels (compatibility mode allows at most 128). */
export const WORKGROUP = 64;

/**
 * How an inference plan stores activations in its arena (the weights stay f32, the arithmetic is f32):
 * - 'f32';
 * - 'f16': half the bytes, for adapters with the `shader-f16` feature;
 * - 'f16-rounded': f32 storage, every store rounded to f16 (pack2x16float): f16's numerics on any adapter,
 *   which is how the f16 path is tested where no adapter has the feature.
 */
export type Precision = 'f32' | 'f16' | 'f16-rounded';

const STORAGE: Record<Precision, { enable: string; type: string; ld: string; st: string }> = {
  f32: { enable: '', type: 'f32', ld: 'arena[i]', st: 'v' },
  f16: { enable: 'enable f16;\n', type: 'f16', ld: 'f32(arena[i])', st: 'f16(v)' },
  'f16-rounded': {
    enable: '',
    type: 'f32',
    ld: 'arena[i]',
    st: 'unpack2x16float(pack2x16float(vec2f(v, 0.0))).x',
  },
};

/** A kernel's body and its binding 1 (the weights, or another read-only buffer). */
const bodies = new WeakMap<Kernel, { body: string; binding1: string }>();
const variants = new WeakMap<Kernel, Map<Precision, Kernel>>();
const WEIGHTS = 'weights: array<f32>';

function source(fields: readonly string[], body: string, precision: Precision, binding1 = WEIGHTS): string {
  const s = STORAGE[precision];
  return `${s.enable}struct Params { ${fields.map((f) => `${f}: u32,`).join(' ')} }
@group(0) @binding(0) var<storage, read_write> arena: array<${s.type}>;
@group(0) @binding(1) var<storage, read> ${binding1};
@group(0) @binding(2) var<uniform> p: Params;
fn ld(i: u32) -> f32 { return ${s.ld}; }
fn st(i: u32, v: f32) { arena[i] = ${s.st}; }
${body}`;
}

/**
 * An inference kernel with its uniform fields (u32) over the arena and weights buffers (f32 storage), or
 * over another read-only buffer at binding 1 (`binding1`: its WGSL declaration).
 */
export function kernel(name: string, fields: readonly string[], body: string, binding1 = WEIGHTS): Kernel {
  const k = { name, fields, code: source(fields, body, 'f32', binding1) };
  bodies.set(k, { body, binding1 });
  return k;
}

/** The kernel with its activations stored in `precision` (see Precision); the f32 kernel is itself. */
export function withPrecision(k: Kernel, precision: Precision): Kernel {
  const b = bodies.get(k);
  if (precision === 'f32') return k;
  if (b === undefined) throw new Error(`kernel '${k.name}' has no ${precision} variant`);
  let m = variants.get(k);
  if (!m) variants.set(k, (m = new Map()));
  let v = m.get(precision);
  if (!v)
    m.set(
      precision,
      (v = {
        name: `${k.name} (${precision})`,
        fields: k.fields,
        code: source(k.fields, b.body, precision, b.binding1),
      }),
    );
  return v;
}

/** The 1-D kernels: invocation i < p.total (their last field), on a grid of (x, y) workgroups. */
export const oneD = (body: string) => `
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nw: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * nw.x + wg.x) * ${WORKGROUP}u + li;
  if (i >= p.total) { return; }
${body}
}`;

/** Elements per invocation of the per-channel kernels (planeGrid). */
export const PLANE_PER = 4;

/** The grid of a per-channel kernel over an [N, C, HW] value: (chunks of a plane, channel, image). */
export const planeGrid = (N: number, C: number, HW: number): [number, number, number] => {
  if (C > 65535 || N > 65535)
    throw new RangeError(`a plane-by-plane kernel over ${N} images of ${C} channels: at most 65535 of each`);
  return [Math.ceil(HW / (WORKGROUP * PLANE_PER)), C, N];
};

/**
 * A kernel dispatched plane by plane (planeGrid over planes of `size` elements): the workgroup's y and z are
 * the channel `c` and the image `n`, so no invocation divides to find them (an integer division costs
 * dozens of instructions: kernels that decoded a flat index were compute-bound on the H200), and what depends
 * on the channel loads once for PLANE_PER elements. `pre` runs once; `body` for each element `px` of the plane.
 */
export const planes = (size: string, pre: string, body: string) => `
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let c = wg.y;
  let n = wg.z;${pre}
  for (var k = 0u; k < ${PLANE_PER}u; k++) {
    let px = (wg.x * ${PLANE_PER}u + k) * ${WORKGROUP}u + li;
    if (px >= ${size}) { return; }${body}
  }
}`;

/** i -> (n, c, px) over an [N, C, HW] value. */
const nchw = `
  let px = i % p.HW;
  let c = (i / p.HW) % p.C;
  let n = i / (p.HW * p.C);`;

/** i -> (n, c, oy, ox) over an [N, C, OH, OW] output. */
const nchwOut = `
  let ox = i % p.OW;
  let oy = (i / p.OW) % p.OH;
  let c = (i / (p.OW * p.OH)) % p.C;
  let n = i / (p.OW * p.OH * p.C);`;

const io = ['x', 'xC', 'xOff', 'y', 'yC', 'yOff'];

/**
 * A GEMM tile of the 1x1 convs: TM rows x TN columns per workgroup of 16 x 8 invocations, each summing
 * TM / 8 x TN / 16 outputs, TK deep. TM a multiple of 8, TN one of 16, 32, 64, 128, TK any. V: 4 reads the
 * shared tiles as vec4 (4 rows and 4 columns a load: a quarter of the load instructions per multiply-add;
 * TM a multiple of 32, TN 64 or 128), written TMxTNxTKv.
 */
export interface GemmTile {
  TM: number;
  TN: number;
  TK: number;
  V?: 4;
}

/** A GEMM tile as its spec: TMxTNxTK, with a v for the vec4 variant. */
export const gemmKey = (t: GemmTile) => `${t.TM}x${t.TN}x${t.TK}${t.V ? 'v' : ''}`;

/** WebGPU's default maxComputeWorkgroupStorageSize (bytes), which every adapter offers. */
export const WORKGROUP_STORAGE = 16384;

/** The tile of inference and, by default, of training. */
export const GEMM: GemmTile = { TM: 32, TN: 64, TK: 16 };

/** Of `sizes`, the one that pads `n` least (the largest of those that tie). */
export const leastPadding = (sizes: readonly number[], n: number): number =>
  sizes.reduce((best, t) => {
    const [a, b] = [Math.ceil(n / t) * t, Math.ceil(n / best) * best];
    return a < b || (a === b && t > best) ? t : best;
  });

/**
 * The GEMM tile that pads a GEMM of `rows` x `depth` least (ShuffleNet's 1x1 convs have 20, 40, 72 or 80
 * rows and depths per group: 32 x 16 tiles pad them to 1.41x the useful multiply-adds, these to 1.04x).
 */
export const fitGemmTile = (rows: number, depth: number): GemmTile => ({
  TM: leastPadding([16, 24, 32, 40, 48, 64], rows),
  TN: 64,
  TK: leastPadding([8, 16], depth),
});

/** Throws unless the kernels below can be built for `t`. */
export function checkGemmTile(t: GemmTile): void {
  const ok =
    t.TM >= 8 && t.TM % 8 === 0 && [16, 32, 64, 128].includes(t.TN) && Number.isInteger(t.TK) && t.TK >= 1;
  if (!ok)
    throw new RangeError(
      `GEMM tile ${gemmKey(t)}: needs TM a multiple of 8, TN 16, 32, 64 or 128, and TK a positive integer`,
    );
  if (t.V !== undefined && !(t.V === 4 && t.TM % 32 === 0 && t.TN >= 64))
    throw new RangeError(
      `GEMM tile ${gemmKey(t)}: the vec4 variant needs TM a multiple of 32 and TN 64 or 128`,
    );
  const bytes = (t.V ? t.TK * (t.TM + 4) + t.TK * t.TN : t.TM * (t.TK + 1) + t.TK * t.TN) * 4;
  if (bytes > WORKGROUP_STORAGE)
    throw new RangeError(
      `GEMM tile ${gemmKey(t)}: ${bytes} bytes of workgroup memory, above ${WORKGROUP_STORAGE}`,
    );
}

/**
 * How a GEMM tile keeps its shared tiles: their declarations, the stores of A(r, k) and B(k, j) from `v`, the
 * inner loop's body at depth k, and which rows and columns an invocation owns (acc[u * RN + b]: local row
 * row(u), column col(b)); its columns come in groups of `group`, `within` apart, groups `between` apart.
 */
interface GemmLayout {
  shared: string;
  storeA: string;
  storeB: string;
  inner: string;
  row: (u: string) => string;
  col: (b: string) => string;
  group: number;
  within: number;
  between: number;
}

/** Scalar loads: rows lid.y + 8u, columns lid.x + 16b; A stored [r][k] with rows TK + 1 apart. */
const scalarGemm = (t: GemmTile, RM: number, RN: number): GemmLayout => ({
  // A's rows are TK + 1 apart: its stores (k fastest) and its reads (a row per lid.y) hit distinct banks
  // (with rows TM apart, 16 stores of a warp fell into one bank).
  shared: `const AS = TK + 1u;
var<workgroup> As: array<f32, ${t.TM * (t.TK + 1)}>; // [r][k]
var<workgroup> Bs: array<f32, ${t.TK * t.TN}>; // [k][q]`,
  storeA: 'As[r * AS + k] = v;',
  storeB: 'Bs[k * TN + j] = v;',
  inner: `
      var av: array<f32, ${RM}>;
      for (var u = 0u; u < ${RM}u; u++) { av[u] = As[(lid.y + 8u * u) * AS + k]; }
      for (var b = 0u; b < ${RN}u; b++) {
        let bv = Bs[k * TN + lid.x + 16u * b];
        for (var u = 0u; u < ${RM}u; u++) { acc[u * ${RN}u + b] += av[u] * bv; }
      }`,
  row: (u) => `lid.y + 8u * ${u}`,
  col: (b) => `lid.x + 16u * ${b}`,
  group: 1,
  within: 0,
  between: 16,
});

/**
 * A vec4 tile's inner-loop body at depth k: the loads of an invocation's rows (`rows` of them, 4 a load, from
 * A[k * AS + lid.y + 8u]) and columns (from B[k * BS + lid.x + 16b]), then acc[u * cols + b] += row u x col b,
 * unrolled. GEMMs and weight gradients share it.
 */
export function vec4Body(rows: number, cols: number, [A, AS]: [string, string], [B, BS]: [string, string]) {
  const xyzw = ['x', 'y', 'z', 'w'];
  const loads = [
    ...Array.from({ length: rows / 4 }, (_, u) => `let a${u} = ${A}[k * ${AS} + lid.y + ${8 * u}u];`),
    ...Array.from({ length: cols / 4 }, (_, b) => `let b${b} = ${B}[k * ${BS} + lid.x + ${16 * b}u];`),
  ];
  const fmas = Array.from({ length: rows * cols }, (_, i) => {
    const [u, b] = [Math.floor(i / cols), i % cols];
    return `acc[${i}] += a${u >> 2}.${xyzw[u & 3]} * b${b >> 2}.${xyzw[b & 3]};`;
  });
  return ['', ...loads, ...fmas].join('\n      ');
}

/**
 * vec4 loads (a tile with V: 4): the shared tiles are read 4 rows and 4 columns a load, so the inner loop
 * issues RM / 4 + RN / 4 loads for RM x RN multiply-adds instead of RM + RN. An invocation owns rows
 * 4 (lid.y + 8 u) + 0..3 and columns 4 (lid.x + 16 b) + 0..3. A is stored [k][r], rows TM + 4 apart (its
 * stores, k fastest, meet at most two to a bank); B [k][q].
 */
const vec4Gemm = (t: GemmTile, RM: number, RN: number): GemmLayout => ({
  shared: `const AS = ${t.TM / 4 + 1}u;
const BS = ${t.TN / 4}u;
var<workgroup> As: array<vec4f, ${t.TK * (t.TM / 4 + 1)}>; // [k][r / 4]
var<workgroup> Bs: array<vec4f, ${(t.TK * t.TN) / 4}>; // [k][q / 4]`,
  storeA: 'As[k * AS + r / 4u][r % 4u] = v;',
  storeB: 'Bs[k * BS + j / 4u][j % 4u] = v;',
  inner: vec4Body(RM, RN, ['As', 'AS'], ['Bs', 'BS']),
  row: (u) => `4u * (lid.y + 8u * (${u} / 4u)) + ${u} % 4u`,
  col: (b) => `4u * (lid.x + 16u * (${b} / 4u)) + ${b} % 4u`,
  group: 4,
  within: 1,
  between: 61,
});

/**
 * A grouped 1x1 conv's GEMM over columns q = (image, pixel): out[r][q] = sum_k A(r, k) B(k, q), workgroup
 * (column tile, row tile, group). `a(r, k)` reads the weights (#r, #k), `bBase` is the arena index of this
 * invocation's load column (#n, #px) and `bAt(k)` that of B(k, q) from it, read with ld(); `store` writes
 * out[r][q] from `s` (g, r, q, n, px in scope). Inference (POINTWISE) and training (train-kernels.ts) share it.
 */
export const gemm = (
  rows: string,
  depth: string,
  bBase: string,
  a: string,
  bAt: string,
  store: string,
  t: GemmTile = GEMM,
): string => {
  checkGemmTile(t);
  const [RM, RN] = [t.TM / 8, t.TN / 16];
  const L = (t.V ? vec4Gemm : scalarGemm)(t, RM, RN);
  // Loads in rounds of 128 (the workgroup); a last partial round is guarded.
  const [aLoads, bLoads] = [t.TM * t.TK, t.TK * t.TN];
  const aGuard = aLoads % 128 ? `e < ${aLoads}u` : '';
  const bGuard = bLoads % 128 ? ` && k < TK` : '';
  return `
const TM = ${t.TM}u;
const TN = ${t.TN}u;
const TK = ${t.TK}u;
${L.shared}

@compute @workgroup_size(16, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let g = wg.z;
  let r0 = wg.y * TM;
  let q0 = wg.x * TN;
  let cols = p.N * p.HW;
  // This invocation loads column j of B, rows li / TN + ${128 / t.TN}t.
  let j = li % TN;
  let lq = q0 + j;
  let inCols = lq < cols;
  let bBase = ${bBase.replaceAll('#n', '(lq / p.HW)').replaceAll('#px', '(lq % p.HW)')};
  var acc: array<f32, ${RM * RN}>;
  for (var k0 = 0u; k0 < ${depth}; k0 += TK) {
    for (var t = 0u; t < ${Math.ceil(aLoads / 128)}u; t++) {
      let e = li + 128u * t;
      let r = e / TK;
      let k = e % TK;
      var v = 0.0;
      if (r0 + r < ${rows} && k0 + k < ${depth}) { v = ${a.replaceAll('#r', '(r0 + r)').replaceAll('#k', '(k0 + k)')}; }
      ${aGuard ? `if (${aGuard}) { ${L.storeA} }` : L.storeA}
    }
    for (var t = 0u; t < ${Math.ceil(bLoads / 128)}u; t++) {
      let k = li / TN + ${128 / t.TN}u * t;
      var v = 0.0;
      if (inCols && k0 + k < ${depth}${bGuard}) { v = ld(${bAt.replaceAll('#k', '(k0 + k)')}); }
      ${bGuard ? `if (k < TK) { ${L.storeB} }` : L.storeB}
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {${L.inner}
    }
    workgroupBarrier();
  }
  // The (image, pixel) of this invocation's output columns: carried from one to the next with adds (two
  // integer divisions per output cost more than a shallow GEMM's sums).
  var cn: array<u32, ${RN}>;
  var cp: array<u32, ${RN}>;
  let wn = ${L.within}u / p.HW;
  let wp = ${L.within}u % p.HW;
  let bn = ${L.between}u / p.HW;
  let bp = ${L.between}u % p.HW;
  var n0 = (q0 + ${L.col('0u')}) / p.HW;
  var p0 = (q0 + ${L.col('0u')}) % p.HW;
  for (var b = 0u; b < ${RN}u; b++) {
    cn[b] = n0;
    cp[b] = p0;
    if (b % ${L.group}u == ${L.group - 1}u) {
      n0 += bn;
      p0 += bp;
    } else {
      n0 += wn;
      p0 += wp;
    }
    if (p0 >= p.HW) { p0 -= p.HW; n0 += 1u; }
  }
  for (var u = 0u; u < ${RM}u; u++) {
    let r = r0 + ${L.row('u')};
    if (r >= ${rows}) { continue; }
    for (var b = 0u; b < ${RN}u; b++) {
      let q = q0 + ${L.col('b')};
      if (q >= cols) { continue; }
      let n = cn[b];
      let px = cp[b];
      let s = acc[u * ${RN}u + b];${store}
    }
  }
}`;
};

/**
 * Grouped 1x1 conv as a tiled GEMM per group (gemm): Y[o, q] = sum_j W[o, j] X[map(g*cin + j), q] over
 * columns q = (image, pixel), with the bias, an optional residual (read in its own layout) and ReLU fused.
 * Weights slice: w [outC][cin], bias [outC] at bOff, the input map [inC] at mapOff (if hasMap).
 */
export const POINTWISE = kernel(
  'pointwise',
  [...io, 'res', 'resC', 'resOff', 'hasRes', 'N', 'HW', 'cin', 'cout', 'hasMap', 'relu', 'bOff', 'mapOff'],
  `
fn xrow(c: u32) -> u32 {
  if (p.hasMap != 0u) { return u32(weights[p.mapOff + c]); }
  return c;
}
${gemm(
  'p.cout',
  'p.cin',
  'p.x + (#n * p.xC + p.xOff) * p.HW + #px',
  'weights[(g * p.cout + #r) * p.cin + #k]',
  'bBase + xrow(g * p.cin + #k) * p.HW',
  `
      let o = g * p.cout + r;
      var v = s + weights[p.bOff + o];
      if (p.hasRes != 0u) { v += ld(p.res + (n * p.resC + p.resOff + o) * p.HW + px); }
      if (p.relu != 0u) { v = max(v, 0.0); }
      st(p.y + (n * p.yC + p.yOff + o) * p.HW + px, v);`,
)}`,
);

/**
 * Depthwise 3x3, padding 1, stride 1 or 2, plane by plane (planeGrid over the output planes): channel c reads
 * x row c and is written to y row outMap(c); its 9 weights in registers, one division a pixel.
 * Weights slice: w [C][9], bias [C] at bOff, the output map [C] at mapOff (if hasMap).
 */
export const DEPTHWISE = kernel(
  'depthwise',
  [...io, 'C', 'H', 'W', 'OH', 'OW', 'stride', 'relu', 'hasMap', 'bOff', 'mapOff'],
  planes(
    'p.OH * p.OW',
    `
  let xb = p.x + (n * p.xC + p.xOff + c) * p.H * p.W;
  var row = c;
  if (p.hasMap != 0u) { row = u32(weights[p.mapOff + c]); }
  let yb = p.y + (n * p.yC + p.yOff + row) * p.OH * p.OW;
  var wt: array<f32, 9>;
  for (var t = 0u; t < 9u; t++) { wt[t] = weights[c * 9u + t]; }
  let b = weights[p.bOff + c];`,
    `
    let oy = px / p.OW;
    let ox = px - oy * p.OW;
    let iy0 = i32(oy * p.stride) - 1;
    let ix0 = i32(ox * p.stride) - 1;
    var s = b;
    for (var ky = 0; ky < 3; ky++) {
      let iy = iy0 + ky;
      if (iy < 0 || iy >= i32(p.H)) { continue; }
      for (var kx = 0; kx < 3; kx++) {
        let ix = ix0 + kx;
        if (ix < 0 || ix >= i32(p.W)) { continue; }
        s += wt[ky * 3 + kx] * ld(xb + u32(iy) * p.W + u32(ix));
      }
    }
    if (p.relu != 0u) { s = max(s, 0.0); }
    st(yb + px, s);`,
  ),
);

/** Output channels per invocation of a blocked conv (convGrid). */
export const CONV_BLOCK = 8;

/** A blocked conv's grid: (pixel tiles of an output plane, channel blocks of every group, image). */
export const convGrid = (N: number, OH: number, OW: number, groups: number, cout: number) =>
  [Math.ceil((OH * OW) / WORKGROUP), groups * Math.ceil(cout / CONV_BLOCK), N] as [number, number, number];

/**
 * A conv whose invocations compute one output pixel of CONV_BLOCK output channels of a group (grid:
 * convGrid), so each input tap is loaded once for all of them; a workgroup shares its channel block, so the
 * weight loads are one address across it. Each sum starts at the bias and adds the taps in (ci, ky, kx)
 * order, with the ReLU if p.relu. `xPlane`: the arena index of input channel #c's plane of image n; `w0`:
 * the weights' index of output channel o0's first tap of input channel ci; `bias`: output channel #o's first
 * value; `yAt`: where output channel #o's pixel (oy, ox) goes. Inference (CONV) and training
 * (CONV_FWD_BLOCK) share it.
 */
export const blockedConv = (xPlane: string, w0: string, bias: string, yAt: string) => `
const CB = ${CONV_BLOCK}u;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let q = wg.x * ${WORKGROUP}u + li;
  if (q >= p.OH * p.OW) { return; }
  let blocks = (p.cout + CB - 1u) / CB;
  let g = wg.y / blocks;
  let o0 = g * p.cout + (wg.y % blocks) * CB;
  let nb = min(CB, (g + 1u) * p.cout - o0);
  let n = wg.z;
  let oy = q / p.OW;
  let ox = q % p.OW;
  let iy0 = i32(oy * p.SH) - i32(p.PH);
  let ix0 = i32(ox * p.SW) - i32(p.PW);
  let taps = p.KH * p.KW;
  let next = p.cin * taps; // from one output channel's weights to the next one's
  var s: array<f32, ${CONV_BLOCK}>;
  for (var b = 0u; b < CB; b++) {
    if (b < nb) { s[b] = ${bias.replaceAll('#o', '(o0 + b)')}; }
  }
  for (var ci = 0u; ci < p.cin; ci++) {
    let xb = ${xPlane.replaceAll('#c', '(g * p.cin + ci)')};
    let wb = ${w0};
    for (var ky = 0u; ky < p.KH; ky++) {
      let iy = iy0 + i32(ky * p.DH);
      if (iy < 0 || iy >= i32(p.H)) { continue; }
      for (var kx = 0u; kx < p.KW; kx++) {
        let ix = ix0 + i32(kx * p.DW);
        if (ix < 0 || ix >= i32(p.W)) { continue; }
        let xv = ld(xb + u32(iy) * p.W + u32(ix));
        let wt = wb + ky * p.KW + kx;
        for (var b = 0u; b < CB; b++) {
          if (b < nb) { s[b] += weights[wt + b * next] * xv; }
        }
      }
    }
  }
  for (var b = 0u; b < nb; b++) {
    var v = s[b];
    if (p.relu != 0u) { v = max(v, 0.0); }
    st(${yAt.replaceAll('#o', '(o0 + b)')}, v);
  }
}`;

/**
 * Any conv that is not 1x1 or depthwise (the stem, AlexNet's, grouped 3x3), with the bias and an optional
 * ReLU, blocked (blockedConv; one output channel per invocation loaded the stem's taps 24 times: 6.2 ms of a
 * 15 ms batch-256 run on the H200). Weights slice: w OIHW, bias [O] at bOff.
 */
export const CONV = kernel(
  'conv',
  [
    ...io,
    ...['C', 'H', 'W', 'OH', 'OW', 'KH', 'KW', 'SH', 'SW', 'PH', 'PW', 'DH', 'DW'],
    ...['cin', 'cout', 'relu', 'bOff', 'total'],
  ],
  blockedConv(
    'p.x + (n * p.xC + p.xOff + #c) * p.H * p.W',
    '(o0 * p.cin + ci) * taps',
    'weights[p.bOff + #o]',
    'p.y + ((n * p.yC + p.yOff + #o) * p.OH + oy) * p.OW + ox',
  ),
);

/**
 * Max and average pooling with PyTorch's semantics (src/ops/pool.ts): the window clipped to the padded
 * input [-P, H+P) and to the real one; mode 0 max, 1 average over the padded window, 2 over the real one.
 */
export const POOL = kernel(
  'pool',
  [...io, 'C', 'H', 'W', 'OH', 'OW', 'KH', 'KW', 'SH', 'SW', 'PH', 'PW', 'mode', 'total'],
  oneD(`${nchwOut}
  let py0 = i32(oy * p.SH) - i32(p.PH);
  let px0 = i32(ox * p.SW) - i32(p.PW);
  let py1 = min(py0 + i32(p.KH), i32(p.H + p.PH));
  let px1 = min(px0 + i32(p.KW), i32(p.W + p.PW));
  let padded = (py1 - py0) * (px1 - px0);
  let y0 = max(py0, 0);
  let y1 = min(py1, i32(p.H));
  let x0 = max(px0, 0);
  let x1 = min(px1, i32(p.W));
  let xb = p.x + (n * p.xC + p.xOff + c) * p.H * p.W;
  var m = ld(xb + u32(y0) * p.W + u32(x0)); // every window holds a real element (padding <= kernel / 2)
  var s = 0.0;
  for (var yy = y0; yy < y1; yy++) {
    for (var xx = x0; xx < x1; xx++) {
      let v = ld(xb + u32(yy) * p.W + u32(xx));
      m = max(m, v);
      s += v;
    }
  }
  var r = m;
  if (p.mode == 1u) { r = s / f32(padded); }
  if (p.mode == 2u) { r = s / f32((y1 - y0) * (x1 - x0)); }
  st(p.y + ((n * p.yC + p.yOff + c) * p.OH + oy) * p.OW + ox, r);`),
);

/** Global average pool: one invocation per (image, channel) plane. */
export const GAP = kernel(
  'gap',
  [...io, 'C', 'HW', 'total'],
  oneD(`
  let c = i % p.C;
  let n = i / p.C;
  let xb = p.x + (n * p.xC + p.xOff + c) * p.HW;
  var s = 0.0;
  for (var k = 0u; k < p.HW; k++) { s += ld(xb + k); }
  st(p.y + n * p.yC + p.yOff + c, s / f32(p.HW));`),
);

/** Fully connected: y[n][m] = sum_k x[n][k] w[m][k] + bias[m]; weights slice: w [M][K], bias [M] at bOff. */
export const LINEAR = kernel(
  'linear',
  ['x', 'K', 'y', 'yC', 'yOff', 'M', 'relu', 'bOff', 'total'],
  oneD(`
  let m = i % p.M;
  let n = i / p.M;
  let xb = p.x + n * p.K;
  let wb = m * p.K;
  var s = 0.0;
  for (var k = 0u; k < p.K; k++) { s += weights[wb + k] * ld(xb + k); }
  s += weights[p.bOff + m];
  if (p.relu != 0u) { s = max(s, 0.0); }
  st(p.y + n * p.yC + p.yOff + m, s);`),
);

/** Inference batch norm: y = x * scale[c] + shift[c]; weights slice: scale [C], shift [C] at shOff. */
export const AFFINE = kernel(
  'affine',
  [...io, 'C', 'HW', 'relu', 'shOff', 'total'],
  oneD(`${nchw}
  var s = ld(p.x + (n * p.xC + p.xOff + c) * p.HW + px) * weights[c] + weights[p.shOff + c];
  if (p.relu != 0u) { s = max(s, 0.0); }
  st(p.y + (n * p.yC + p.yOff + c) * p.HW + px, s);`),
);

/** y = x + b, optional ReLU. */
export const ADD = kernel(
  'add',
  [...io, 'b', 'bC', 'bOff', 'C', 'HW', 'relu', 'total'],
  oneD(`${nchw}
  var s = ld(p.x + (n * p.xC + p.xOff + c) * p.HW + px) + ld(p.b + (n * p.bC + p.bOff + c) * p.HW + px);
  if (p.relu != 0u) { s = max(s, 0.0); }
  st(p.y + (n * p.yC + p.yOff + c) * p.HW + px, s);`),
);

export const RELU = kernel(
  'relu',
  [...io, 'C', 'HW', 'total'],
  oneD(`${nchw}
  st(p.y + (n * p.yC + p.yOff + c) * p.HW + px, max(ld(p.x + (n * p.xC + p.xOff + c) * p.HW + px), 0.0));`),
);

/**
 * uint8 pixels into the input (plans compiled with `pixels`): binding 1 holds the pixels, 4 NCHW bytes a
 * word (little-endian), then at `scaleAt` the scale, the C means and the C standard deviations (f32 bits), as
 * preprocess()'s toTensor: x = (v * scale - mean[c]) / std[c]. An invocation a word; a quarter of the f32
 * upload.
 */
export const PIXELS = kernel(
  'pixels',
  ['y', 'C', 'HW', 'count', 'scaleAt', 'total'],
  oneD(`
  let word = pixels[i];
  let scale = bitcast<f32>(pixels[p.scaleAt]);
  for (var j = 0u; j < 4u; j++) {
    let e = i * 4u + j;
    if (e >= p.count) { return; }
    let c = (e / p.HW) % p.C;
    let v = f32((word >> (8u * j)) & 255u);
    let mean = bitcast<f32>(pixels[p.scaleAt + 1u + c]);
    st(p.y + e, (v * scale - mean) / bitcast<f32>(pixels[p.scaleAt + 1u + p.C + c]));
  }`),
  'pixels: array<u32>',
);

export const KERNELS = [POINTWISE, DEPTHWISE, CONV, POOL, GAP, LINEAR, AFFINE, ADD, RELU, PIXELS] as const;
