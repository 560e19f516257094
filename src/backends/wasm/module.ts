import * as binaries from './binaries.js';

/** A wasm boolean: true/false or 1/0. */
export type Flag = boolean | number;

/**
 * The kernels (assembly/*.ts). Every pointer is a byte offset into the module's memory; tensors are f32
 * NCHW, an image's stride is channels*H*W floats; a map/bias/res pointer of 0 means "none" (identity map,
 * no bias, no residual). Kernels with `part, parts` do part `part` of `parts` deterministic, disjoint
 * slices: calling every part (in any order, on any threads sharing the memory) covers the output exactly
 * once, with the same bits whatever `parts` is. Work items, split into `parts` contiguous ranges:
 * pointwise (image, group, 8-pixel tile); conv2d (image, group, panel of up to 1024 pixels); depthwise3x3,
 * pools and channelAffine (image, channel) planes; linear 4-row blocks of w; relu/add 4-element blocks.
 * No kernel allocates, and the modules have no data segments: any number of instances (one per thread)
 * may share one memory.
 */
export interface KernelExports {
  /** Lowest byte offset the caller may use (below it: the module's static data, if any). */
  heapBase(): number;
  /**
   * Grouped 1x1 conv, channel shuffle folded into indexing: for o in group g, p < HW,
   * y[(n*yC + yOff + o)*HW + p] = relu?(bias[o] + sum_{j < inC/groups} w[o*(inC/groups) + j] *
   * x[(n*xC + xOff + map(g*(inC/groups) + j))*HW + p] + res[same index as y]), map(c) = inMap ? i32 at inMap+4c : c.
   */
  pointwise(
    x: number,
    xC: number,
    xOff: number,
    inMap: number,
    w: number,
    bias: number,
    y: number,
    yC: number,
    yOff: number,
    res: number,
    N: number,
    inC: number,
    outC: number,
    groups: number,
    HW: number,
    relu: Flag,
    part: number,
    parts: number,
  ): void;
  /**
   * Depthwise 3x3, padding 1, stride 1 or 2, OH = floor((H-1)/stride)+1 (same for W). Input channel c is x
   * row xOff + c; output channel c goes to y row yOff + (outMap ? i32 at outMap+4c : c); w is [C][9].
   */
  depthwise3x3(
    x: number,
    xC: number,
    xOff: number,
    w: number,
    bias: number,
    y: number,
    yC: number,
    yOff: number,
    outMap: number,
    N: number,
    C: number,
    H: number,
    W: number,
    stride: number,
    relu: Flag,
    part: number,
    parts: number,
  ): void;
  /**
   * General dense/grouped conv (dilation 1), w OIHW, x [N][C][H][W] dense, output rows yOff.. of a yC-channel
   * buffer. `scratch` holds conv2dScratchBytes(...) bytes; part k uses its own slice of it.
   */
  conv2d(
    x: number,
    C: number,
    H: number,
    W: number,
    w: number,
    bias: number,
    y: number,
    yC: number,
    yOff: number,
    N: number,
    O: number,
    KH: number,
    KW: number,
    SH: number,
    SW: number,
    PH: number,
    PW: number,
    OH: number,
    OW: number,
    groups: number,
    relu: Flag,
    scratch: number,
    part: number,
    parts: number,
  ): void;
  conv2dScratchBytes(
    C: number,
    KH: number,
    KW: number,
    OH: number,
    OW: number,
    groups: number,
    parts: number,
  ): number;
  /** PyTorch max pooling; the caller gives OH/OW (so ceil_mode works). */
  maxpool2d(...args: PoolArgs): void;
  /** PyTorch average pooling; countIncludePad divides by the window clipped to [-P, H+P), else by the real elements. */
  avgpool2d(...args: [...PoolHead, countIncludePad: Flag, part: number, parts: number]): void;
  /** y[n*C + c] = mean of plane (n, c). Single-threaded (it is tiny). */
  globalAvgPool(x: number, N: number, C: number, HW: number, y: number): void;
  /** y[n][m] = sum_k x[n][k] w[m][k] + bias[m], w = [M][K]. */
  linear(
    x: number,
    N: number,
    K: number,
    w: number,
    bias: number,
    y: number,
    M: number,
    relu: Flag,
    part: number,
    parts: number,
  ): void;
  /** y = x * scale[c] + shift[c] (inference batch norm), optional ReLU; y may equal x. */
  channelAffine(
    x: number,
    N: number,
    C: number,
    HW: number,
    scale: number,
    shift: number,
    y: number,
    relu: Flag,
    part: number,
    parts: number,
  ): void;
  relu(x: number, y: number, n: number, part: number, parts: number): void;
  add(a: number, b: number, y: number, n: number, relu: Flag, part: number, parts: number): void;
  /**
   * Input gradient of `pointwise`: dx[(n*xC + xOff + map(g*cin + j))*HW + p] (+)= sum_{o in group g}
   * w[o*cin + j] * dy[(n*yC + yOff + o)*HW + p], cin = inC/groups (accumulate: += instead of =).
   * Work items: (image, group, 8-pixel tile).
   */
  pointwiseBackwardInput(
    dy: number,
    yC: number,
    yOff: number,
    w: number,
    dx: number,
    xC: number,
    xOff: number,
    inMap: number,
    N: number,
    inC: number,
    outC: number,
    groups: number,
    HW: number,
    accumulate: Flag,
    part: number,
    parts: number,
  ): void;
  /**
   * Weight gradient of `pointwise`: dw[o*cin + j] += sum_{n,p} dy[n, yOff+o, p] * x[n, xOff+map(g*cin+j), p];
   * dbias[o] += sum_{n,p} dy[n, yOff+o, p] (dbias 0: none). Work items: (group, block of 4 outputs).
   * `scratch`: pointwiseBackwardWeightScratchBytes(inC, groups, HW, parts) (0 bytes: small planes only).
   */
  pointwiseBackwardWeight(
    x: number,
    xC: number,
    xOff: number,
    inMap: number,
    dy: number,
    yC: number,
    yOff: number,
    dw: number,
    dbias: number,
    N: number,
    inC: number,
    outC: number,
    groups: number,
    HW: number,
    scratch: number,
    part: number,
    parts: number,
  ): void;
  /** Bytes of scratch `pointwiseBackwardWeight` needs (it packs planes of under 64 pixels). */
  pointwiseBackwardWeightScratchBytes(inC: number, groups: number, HW: number, parts: number): number;
  /**
   * Input gradient of `depthwise3x3` (padding 1, stride 1 or 2): dx row xOff + c (+)= the transposed 3x3 conv of dy row
   * yOff + outMap(c) with w[c]. Work items: (image, channel) planes. `scratch`: conv3x3ScratchBytes(H, W, 0, parts).
   */
  depthwise3x3BackwardInput(
    dy: number,
    yC: number,
    yOff: number,
    outMap: number,
    w: number,
    dx: number,
    xC: number,
    xOff: number,
    N: number,
    C: number,
    H: number,
    W: number,
    stride: number,
    accumulate: Flag,
    scratch: number,
    part: number,
    parts: number,
  ): void;
  /**
   * Weight gradient of a 3x3 conv (padding 1, stride 1 or 2, kg input / og output channels per group; depthwise:
   * 1, 1): dw[o][i][9] += ..., work item j = (o = j % O, input i = j / O of o's group); dbias[o] += sum dy (0: none).
   * `scratch`: conv3x3ScratchBytes(H, W, O * kg, parts).
   */
  conv3x3BackwardWeight(
    x: number,
    xC: number,
    xOff: number,
    dy: number,
    yC: number,
    yOff: number,
    outMap: number,
    dw: number,
    dbias: number,
    N: number,
    O: number,
    kg: number,
    og: number,
    H: number,
    W: number,
    stride: number,
    scratch: number,
    part: number,
    parts: number,
  ): void;
  /** Bytes of scratch the 3x3 backward kernels need for an H x W input, `items` weight-gradient items, `parts` parts. */
  conv3x3ScratchBytes(H: number, W: number, items: number, parts: number): number;
  /**
   * Training batch statistics (one pass about a pivot, f64 across planes): mean[c], invstd[c] = 1/sqrt(biased
   * var + eps). Work items: channels. `sums`: 16 C bytes of scratch.
   */
  batchnormStats(
    x: number,
    N: number,
    C: number,
    HW: number,
    mean: number,
    invstd: number,
    eps: number,
    sums: number,
    part: number,
    parts: number,
  ): void;
  /**
   * Training batch-norm backward (PyTorch's formula): dgamma[c] += sum dy*xhat, dbeta[c] += sum dy (0: none),
   * dx = gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)) written (not accumulated; 0: none). Work items: channels.
   * With `scale` and `shift` (not 0: the forward's affine), dy is first masked by a ReLU that ran in place on the
   * output (kept where x * scale + shift > 0, computed as channelAffine does). `sums`: 16 C bytes of scratch.
   */
  batchnormBackward(
    dy: number,
    x: number,
    mean: number,
    invstd: number,
    gamma: number,
    dx: number,
    dgamma: number,
    dbeta: number,
    N: number,
    C: number,
    HW: number,
    scale: number,
    shift: number,
    sums: number,
    part: number,
    parts: number,
  ): void;
  /** dx = y > 0 ? dy : 0, y the ReLU's output. Work items: 4-element blocks. */
  reluBackward(y: number, dy: number, dx: number, n: number, part: number, parts: number): void;
  /**
   * Max pool backward (PyTorch: a window's gradient goes to its first maximum, row-major): dx (+)= the
   * scatter of dy; dx has x's layout (xC, xOff). Work items: (image, channel) planes.
   */
  maxpool2dBackward(
    x: number,
    xC: number,
    xOff: number,
    dy: number,
    yC: number,
    yOff: number,
    dx: number,
    ...rest: [...PoolDims, accumulate: Flag, part: number, parts: number]
  ): void;
  /** Average pool backward (PyTorch, countIncludePad as in avgpool2d): dx (+)= dy / divisor over each window. */
  avgpool2dBackward(
    dy: number,
    yC: number,
    yOff: number,
    dx: number,
    xC: number,
    xOff: number,
    ...rest: [...PoolDims, countIncludePad: Flag, accumulate: Flag, part: number, parts: number]
  ): void;
  /** dx[p*HW + i] (+)= dy[p] / HW, planes p = n*C + c. Work items: planes. */
  globalAvgPoolBackward(
    dy: number,
    dx: number,
    N: number,
    C: number,
    HW: number,
    accumulate: Flag,
    part: number,
    parts: number,
  ): void;
  /**
   * Linear backward, w = [M][K]: dx[n][k] (+)= sum_m dy[n][m] w[m][k] (dx 0: none); dw[m][k] += sum_n
   * dy[n][m] x[n][k]; db[m] += sum_n dy[n][m] (db 0: none). Work items: N rows of dx, then M rows of dw.
   */
  linearBackward(
    x: number,
    N: number,
    K: number,
    w: number,
    dy: number,
    M: number,
    dx: number,
    dw: number,
    db: number,
    accumulate: Flag,
    part: number,
    parts: number,
  ): void;
  /**
   * Input gradient of `conv2d` (w OIHW, groups, dilation 1, x/dy dense NCHW), direct loops (for stems):
   * dx (+)= the transposed convolution of dy. Work items: (image, input channel) planes.
   */
  conv2dBackwardInput(
    dy: number,
    w: number,
    dx: number,
    ...rest: [...ConvDims, accumulate: Flag, part: number, parts: number]
  ): void;
  /** Weight gradient of `conv2d`: dw += sum_{n,oy,ox} dy * x (padding 0), db += sum dy (0: none). Work items: outputs. */
  conv2dBackwardWeight(
    x: number,
    dy: number,
    dw: number,
    db: number,
    ...rest: [...ConvDims, part: number, parts: number]
  ): void;
}

type ConvDims = [
  N: number,
  C: number,
  H: number,
  W: number,
  O: number,
  KH: number,
  KW: number,
  SH: number,
  SW: number,
  PH: number,
  PW: number,
  OH: number,
  OW: number,
  groups: number,
];

type PoolDims = [
  N: number,
  C: number,
  H: number,
  W: number,
  KH: number,
  KW: number,
  SH: number,
  SW: number,
  PH: number,
  PW: number,
  OH: number,
  OW: number,
];

type PoolHead = [
  x: number,
  xC: number,
  xOff: number,
  y: number,
  yC: number,
  yOff: number,
  N: number,
  C: number,
  H: number,
  W: number,
  KH: number,
  KW: number,
  SH: number,
  SW: number,
  PH: number,
  PW: number,
  OH: number,
  OW: number,
];
type PoolArgs = [...PoolHead, part: number, parts: number];

export interface WasmKernels {
  exports: KernelExports;
  memory: WebAssembly.Memory;
  /** Lowest byte offset free for the caller. */
  heapBase: number;
  relaxed: boolean;
  shared: boolean;
}

export interface KernelOptions {
  /** Use the relaxed-SIMD build (f32x4.relaxed_madd); check relaxedSimdSupported() first. */
  relaxed?: boolean;
  /** Memory to use; by default a new one. */
  memory?: WebAssembly.Memory;
  /** The build for a shared memory, to call kernels from several threads; default: whether `memory` is shared. */
  shared?: boolean;
}

/** Pages a default shared memory may grow to (1 GiB); pass your own memory for more (the build allows 4 GiB). */
const SHARED_MAX_PAGES = 16384;

// (module (func (result v128) (f32x4.relaxed_madd (v128.const 0) (v128.const 0) (v128.const 0))))
const V128_ZERO = 'fd0c' + '00'.repeat(16);
const RELAXED_PROBE = Uint8Array.from(
  (
    '0061736d01000000' +
    '0105016000017b' +
    '03020100' +
    '0a3d013b00' +
    V128_ZERO.repeat(3) +
    'fd85020b'
  ).match(/../g)!,
  (h) => parseInt(h, 16),
);

/** Whether this engine accepts relaxed SIMD (Node 20 needs enableRelaxedSimd() from the node entry first). */
export function relaxedSimdSupported(): boolean {
  return WebAssembly.validate(RELAXED_PROBE);
}

function decode(base64: string): Uint8Array<ArrayBuffer> {
  const s = atob(base64);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

const compiled = new Map<string, WebAssembly.Module>();

function variant(o: KernelOptions): keyof typeof binaries {
  return `${o.relaxed ? 'relaxed' : 'simd'}${o.shared ? 'Shared' : ''}`;
}

/** The compiled module of a variant, cached (send it to workers rather than compiling there again). */
export function kernelModule(o: KernelOptions = {}): WebAssembly.Module {
  const name = variant(o);
  let m = compiled.get(name);
  if (!m) {
    m = new WebAssembly.Module(decode(binaries[name]));
    compiled.set(name, m);
  }
  return m;
}

/** Options with `shared` and `memory` settled. */
function settle(o: KernelOptions): Required<KernelOptions> {
  const shared =
    o.shared ?? (typeof SharedArrayBuffer !== 'undefined' && o.memory?.buffer instanceof SharedArrayBuffer);
  const memory =
    o.memory ??
    (shared
      ? new WebAssembly.Memory({ initial: 1, maximum: SHARED_MAX_PAGES, shared: true })
      : new WebAssembly.Memory({ initial: 1 }));
  return { relaxed: !!o.relaxed, shared, memory };
}

function wrap(instance: WebAssembly.Instance, o: Required<KernelOptions>): WasmKernels {
  const exports = instance.exports as unknown as KernelExports;
  return { exports, memory: o.memory, heapBase: exports.heapBase(), relaxed: o.relaxed, shared: o.shared };
}

/**
 * Synchronous instantiation. The binaries are ~10 KiB: browsers compile modules that big synchronously only
 * in workers, so prefer instantiateKernels on a page's main thread.
 */
export function instantiateKernelsSync(options: KernelOptions = {}): WasmKernels {
  const o = settle(options);
  return wrap(new WebAssembly.Instance(kernelModule(o), { env: { memory: o.memory } }), o);
}

export async function instantiateKernels(options: KernelOptions = {}): Promise<WasmKernels> {
  const o = settle(options);
  const name = variant(o);
  let m = compiled.get(name);
  if (!m) {
    m = await WebAssembly.compile(decode(binaries[name]));
    compiled.set(name, m);
  }
  return wrap(await WebAssembly.instantiate(m, { env: { memory: o.memory } }), o);
}
