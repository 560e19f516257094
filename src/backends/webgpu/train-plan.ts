import { graphParams, inferShapes, INPUT, type Graph, type Node } from '../../graph/graph.js';
import { OPS, type BackwardArgs, type KernelArgs } from '../../ops/index.js';
import { formatShape, shapeSize, Tensor, type Shape } from '../../tensor/tensor.js';
import { firstFit } from '../../runtime/first-fit.js';
import { GradientBook, rootLifetimes, trainingViews } from '../../runtime/train-views.js';
import type { Optimizer } from '../../train/optim.js';
import type { TrainBackend } from '../../train/trainer.js';
import {
  checkGemmTile,
  CONV_BLOCK,
  convGrid,
  fitGemmTile,
  GEMM,
  type GemmTile,
  WORKGROUP,
} from './kernels.js';
import type { GpuContext } from './plan.js';
import { timeDispatches, type DispatchTime } from './profile.js';
import * as K from './train-kernels.js';
import { MAX_SEGMENTS, SEGMENT_FLOATS_MAX, type TrainKernel } from './train-kernels.js';
import { dispatch, type Recorded } from './encode.js';

/** GPUBufferUsage bits as numbers: Node's `webgpu` defines no globals. */
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 } as const;
const MAP_MODE_READ = 0x1;

/** A dispatch before layout: its arguments may hold gradient tokens (< 0). */
interface GpuStep {
  node: string;
  kernel: TrainKernel;
  args: number[];
  /** Workgroups (x, y, z), or (when undefined) one invocation per element of the last argument. */
  groups?: [number, number, number];
  /** The float offset the step writes and the index of its ReLU flag: a ReLU in place may fuse into it. */
  out?: number;
  relu?: number;
}

/** An op without a kernel: its reference on a copy of the arena read back (`mirror`), then written back. */
interface CpuStep {
  node: string;
  run(mirror: Float32Array): void;
}

type Step = GpuStep | CpuStep;

type Ready = Recorded;

interface Value {
  name: string;
  shape: Shape;
  /** Float offset in the arena. */
  ptr: number;
  /** Gradient token (< 0, see gradPtr); 0: none (the input, unless asked for). */
  grad: number;
  /** The value whose buffers this one shares (itself if none). */
  base: string;
  /** A folded channel shuffle: logical channel c is row map[c] of the base; its float offset in `weights`. */
  map?: Int32Array;
  mapAt: number;
  inPlace?: boolean;
  /** Never written: a BN output whose only reader, an add, took its affine (forwardValues reads NaN). */
  elided?: boolean;
}

interface Param {
  shape: Shape;
  size: number;
  /** Float offsets: the value in `weights`, the gradient in the arena (-1: a buffer, no gradient). */
  at: number;
  grad: number;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** Arguments at or below this are places in the scratch block: SCRATCH - offset (gradient tokens are above). */
const SCRATCH = -(2 ** 40);

/** The optimizer a whole step runs: its kind and its rule (one of sgd, adamw). */
type Rule = Pick<Optimizer, 'kind' | 'sgd' | 'adamw'>;

/** One whole training step's results: the logits, the mean loss and how many rows were right. */
export interface DeviceStep {
  output: Tensor;
  loss: number;
  correct: number;
}

export interface TrainPlanOptions {
  /** Also return dL/d(input) from backward, under the key 'input' (tests). */
  inputGradient?: boolean;
  /**
   * Floats per arena buffer (segment); default: what one storage binding holds (at most 2^29). Smaller
   * values exercise the segmented arena in tests.
   */
  segmentFloats?: number;
  /**
   * About how many elements one workgroup sums in the split reductions (BN statistics, weight gradients);
   * default 4096. Small values exercise the chunking in tests.
   */
  chunkElements?: number;
  /**
   * The 1x1 convs' tiles: `gemm` for the forward and dL/dx, `wgrad` for dL/dw (default GEMM and WGRAD;
   * bench/tune-webgpu.ts times others on a real GPU).
   */
  tiles?: Tiles;
}

/** The 1x1 convs' tiles; 'fit': per conv, the tile that pads its shape least (fitGemmTile, fitWgradTile). */
export interface Tiles {
  gemm?: GemmTile | 'fit';
  wgrad?: K.WgradTile | 'fit';
}

/**
 * Tiles as `GEMM[/WGRAD]`, e.g. '64x64x16/32x64x32' (TMxTNxTK, TRxTCxTQ; bench/tune-webgpu.ts's notation).
 */
export function parseTiles(spec: string): Tiles {
  const [g, w, more] = spec.trim().split('/');
  if (!g || more !== undefined)
    throw new RangeError(
      `tiles '${spec}': expected GEMM or GEMM/WGRAD, each AxBxC or fit, e.g. 32x64x16/32x32x32`,
    );
  return { gemm: gemmTile(g), ...(w === undefined ? {} : { wgrad: wgradTile(w) }) };
}

/** AxBxC, or AxBxCv for the vec4 variant: the three sizes and { V: 4 } when vec4. */
const dims = (what: string, t: string): [number, number, number, { V?: 4 }] => {
  const m = /^(\d+)x(\d+)x(\d+)(v?)$/.exec(t);
  if (!m)
    throw new RangeError(`${what} tile '${t}': expected AxBxC (or AxBxCv: vec4 loads) or fit, e.g. 32x64x16`);
  return [Number(m[1]), Number(m[2]), Number(m[3]), m[4] ? { V: 4 } : {}];
};

/** A GEMM tile as TMxTNxTK (TMxTNxTKv: the vec4 variant), or 'fit'. */
export function gemmTile(t: string): GemmTile | 'fit' {
  if (t === 'fit') return t;
  const [TM, TN, TK, v] = dims('GEMM', t);
  const tile: GemmTile = { TM, TN, TK, ...v };
  checkGemmTile(tile);
  return tile;
}

/** A weight-gradient tile as TRxTCxTQ (TRxTCxTQv: the vec4 variant), or 'fit'. */
export function wgradTile(t: string): K.WgradTile | 'fit' {
  if (t === 'fit') return t;
  const [TR, TC, TQ, v] = dims('weight-gradient', t);
  const tile: K.WgradTile = { TR, TC, TQ, ...v };
  K.checkWgradTile(tile);
  return tile;
}

/**
 * A training step compiled onto a WebGPU device: the same plan as the WASM TrainPlan (src/runtime/train-
 * plan.ts) on an arena of up to 8 buffers (train-kernels.ts): values, BN statistics, parameter gradients,
 * and value gradients laid out by their lifetime in the backward order (first writer writes, the others
 * add), ReLUs in place, channel shuffles that only convs read folded into their indexing. Parameters live
 * in a buffer of their own.
 * - load() / step() / sync(): whole steps, one submission each (forward, loss, backward, SGD or AdamW), the
 *   parameters and the optimizer's state staying on the device; the logits, losses and BN batch statistics
 *   are read back (the running buffers move on the CPU).
 * - forward() / backward(): the step in two submissions, the parameters uploaded and their gradients read
 *   back (any optimizer on the CPU; tests compare with the reference tape).
 * Ops without a kernel (softmax, adaptive pooling, a shuffle that something other than a conv reads) run
 * their reference on the CPU on a read-back copy of the arena, splitting the submission (forward() and
 * backward() only).
 */
export class WebGpuTrainPlan {
  readonly inputShape: Shape;
  readonly outputShape: Shape;
  /**
   * Bytes: the arena, the parameter buffer, the value gradients as laid out by lifetime, and the value
   * gradients without that reuse.
   */
  readonly bytes: { arena: number; weights: number; gradients: number; unplannedGradients: number };
  /** The arena's buffers (each at most one storage binding) and their floats. */
  readonly segments: number[] = [];
  /** Nodes whose forward and backward run on the CPU for want of a kernel. */
  readonly cpuNodes: string[] = [];
  private readonly values = new Map<string, Value>();
  private readonly params = new Map<string, Param>();
  private readonly forwardSteps: Step[] = [];
  private readonly backwardSteps: Step[] = [];
  private forwardReady: (Ready | CpuStep)[] = [];
  /** step(): the loss (softmax cross-entropy), then one optimizer dispatch over every parameter. */
  private readonly lossSteps: GpuStep[] = [];
  private readonly optimizerSteps: { sgd?: GpuStep; adamw?: GpuStep } = {};
  /** A whole step's dispatches before the optimizer's (forward, loss, backward), and those steps. */
  private stepReady: (Ready | CpuStep)[] = [];
  private stepSteps: GpuStep[] = [];
  private optimizerReady: { sgd?: Ready; adamw?: Ready } = {};
  private fused = { labels: 0, rows: 0, hyper: 0, flags: 0, moments: 0 };
  /** The dispatches of a forward and a backward, as 'node: kernel' (tests check what folded into what). */
  get dispatches(): { forward: string[]; backward: string[] } {
    const names = (steps: Step[]) =>
      steps.flatMap((s) => ('kernel' in s ? [`${s.node}: ${s.kernel.name}`] : []));
    return { forward: names(this.forwardSteps), backward: names(this.backwardSteps) };
  }
  /** Whether step() can run: logits [N, K] out, and a kernel for every op. */
  get wholeSteps(): boolean {
    return this.stepReady.length > 0;
  }
  /**
   * step()'s state: the rule that runs (after load()); whether SGD's momentum holds a step; AdamW's step
   * count.
   */
  private loaded: Rule | undefined;
  /** step()'s next command buffer, encoded while the last step ran (executeStep). */
  private nextStep: { kind: Rule['kind']; commands: GPUCommandBuffer } | undefined;
  private momentumSet = false;
  private adamSteps = 0;
  /** An input is on the device (step() without one reuses it). */
  private hasInput = false;
  private backwardReady: (Ready | CpuStep)[] = [];
  /** Floats of gradient buffer k-1 (token -k), then its float offset once laid out. */
  private readonly gradSizes: number[] = [];
  private readonly gradAt: number[] = [];
  /** BN nodes on the GPU: where their batch mean and variance are (in the statistics block). */
  private readonly bnStats: { node: Node; at: number; C: number; count: number }[] = [];
  private statsBlock = { at: 0, size: 0 };
  private gradBlock = { at: 0, size: 0 };
  private paramFloats = 0;
  private scratchAt = 0;
  private weights: ReadonlyMap<string, Tensor> = new Map();
  private readonly staging: Float32Array<ArrayBuffer>;
  private readonly buffers: GPUBuffer[] = [];
  private arena: GPUBuffer[] = [];
  private weightBuf!: GPUBuffer;
  private forwardRead!: GPUBuffer;
  private backwardRead!: GPUBuffer;
  private mirrorRead: GPUBuffer | undefined;
  private created: Promise<string | undefined> = Promise.resolve(undefined);
  private inputGrad = 0;
  private forwarded = false;
  private disposed = false;
  /** Steps run one at a time: they share the buffers. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly gpu: GpuContext,
    readonly graph: Graph,
    inputShape: Shape,
    o: TrainPlanOptions = {},
  ) {
    this.inputShape = inputShape;
    const shapes = inferShapes(graph, inputShape);
    this.outputShape = shapes.get(graph.output)!;
    const { limits } = gpu.device;
    const cap =
      Math.floor(
        Math.min(
          o.segmentFloats ?? Infinity,
          SEGMENT_FLOATS_MAX,
          limits.maxStorageBufferBindingSize / 4,
          limits.maxBufferSize / 4,
        ) / 64,
      ) * 64;
    const most = Math.min(MAX_SEGMENTS, limits.maxStorageBuffersPerShaderStage - 1);
    // Bump allocation into segments: a block never straddles two (global index: segment << SHIFT | offset).
    const alloc = (floats: number, what = 'a buffer') => {
      const size = alignUp(Math.max(floats, 1), 64);
      if (size > cap)
        throw new RangeError(
          `${graph.name} ${formatShape(inputShape)}: training needs ${what} of ${size * 4} bytes, the device ` +
            `binds at most ${cap * 4} per buffer: use a smaller batch or input`,
        );
      if (!this.segments.length || this.segments.at(-1)! + size > cap) this.segments.push(0);
      if (this.segments.length > most)
        throw new RangeError(
          `${graph.name} ${formatShape(inputShape)}: training needs more than ${most} arena buffers of ` +
            `${cap * 4} bytes (at most ${MAX_SEGMENTS} by the arena's addressing, and the device binds ` +
            `${limits.maxStorageBuffersPerShaderStage} storage buffers per kernel, one for the weights): use a ` +
            `smaller batch or input`,
        );
      const s = this.segments.length - 1;
      const offset = this.segments[s]!;
      this.segments[s] = offset + size;
      return s * SEGMENT_FLOATS_MAX + offset;
    };
    const maps: Int32Array[] = [];

    // Parameters: values in `weights`, gradients in one arena block (zeroed once per backward).
    const learnable = graphParams(graph).filter((p) => p.kind === 'parameter');
    for (const p of learnable) {
      this.params.set(p.name, { shape: p.shape, size: shapeSize(p.shape), at: this.paramFloats, grad: 0 });
      this.paramFloats += shapeSize(p.shape);
    }
    this.gradBlock = { at: alloc(this.paramFloats, 'the parameter gradients'), size: this.paramFloats };
    for (const p of this.params.values()) p.grad = this.gradBlock.at + p.at;
    this.staging = new Float32Array(this.paramFloats);

    // BN batch statistics (mean, variance per channel), together: one readback after the forward.
    const bnNodes = graph.nodes.filter((n) => n.op === 'batchnorm');
    const statsFloats = bnNodes.reduce((s, n) => s + 2 * shapes.get(n.name)![1]!, 0);
    this.statsBlock = { at: alloc(statsFloats, 'the BN statistics'), size: statsFloats };

    const own = (name: string, shape: Shape, grad = true): Value => {
      this.gradSizes.push(shapeSize(shape));
      return {
        name,
        shape,
        ptr: alloc(shapeSize(shape), `the value '${name}'`),
        grad: grad ? -this.gradSizes.length : 0,
        base: name,
        mapAt: 0,
      };
    };
    this.values.set(INPUT, own(INPUT, inputShape, !!o.inputGradient));
    let mapAt = this.paramFloats;
    // Every conv kernel reads its input channel c from row map[c] of the unshuffled buffer.
    const views = trainingViews(graph, shapes, (reader) => reader.op === 'conv2d');
    for (const node of graph.nodes) {
      const shape = shapes.get(node.name)!;
      const view = views.get(node.name)!;
      if (view.kind === 'own') {
        this.values.set(node.name, own(node.name, shape));
        continue;
      }
      const x = this.values.get(view.of)!;
      if (view.kind === 'shuffle') {
        maps.push(view.perm);
        this.values.set(node.name, { ...x, name: node.name, shape, map: view.perm, mapAt });
        mapAt += view.perm.length;
      } else this.values.set(node.name, { ...x, name: node.name, shape, inPlace: view.kind === 'relu' });
    }

    const tiles = { gemm: o.tiles?.gemm ?? GEMM, wgrad: o.tiles?.wgrad ?? K.WGRAD };
    if (tiles.gemm !== 'fit') checkGemmTile(tiles.gemm);
    if (tiles.wgrad !== 'fit') K.checkWgradTile(tiles.wgrad);
    const emitter = new Emitter(this, alloc, o.chunkElements ?? 4096, tiles);
    for (const node of graph.nodes) emitter.forward(node);
    emitter.backward();
    this.scratchAt = alloc(emitter.scratchFloats, 'a scratch block');
    if (this.outputShape.length === 2) {
      // step(): labels, the rows' losses and hits, the hyperparameters, decay flags, and the optimizer's
      // state (SGD's momentum, or AdamW's two moments), laid out as the parameters.
      const [N, Kc] = this.outputShape as [number, number];
      const f = {
        labels: alloc(N, 'the labels'),
        rows: alloc(2 * N, 'the losses'),
        hyper: alloc(16, 'the hyperparameters'),
        flags: alloc(this.paramFloats, 'the decay flags'),
        moments: alloc(2 * this.paramFloats, "the optimizer's state"),
      };
      this.fused = f;
      const out = this.values.get(graph.output)!;
      const args = [out.ptr, f.labels, out.grad, f.rows, f.hyper, Kc, N];
      this.lossSteps.push({ node: graph.output, kernel: K.SOFTMAX_CE, args });
      // One dispatch for every parameter: values, gradients, state and flags are laid out alike.
      const [g, n] = [this.gradBlock.at, this.paramFloats];
      this.optimizerSteps.sgd = { node: 'sgd', kernel: K.SGD, args: [0, g, f.moments, f.flags, f.hyper, n] };
      this.optimizerSteps.adamw = {
        node: 'adamw',
        kernel: K.ADAMW,
        args: [0, g, f.moments, f.moments + n, f.flags, f.hyper, n],
      };
    }
    const input = this.values.get(INPUT)!;
    if (input.grad && emitter.hasGrad(INPUT)) {
      emitter.use(input.grad, Infinity); // read after the last step
      this.inputGrad = input.grad;
    }
    const gradients = this.layoutGradients(emitter.gradUses, (n) => alloc(n, 'a gradient block'));
    if (this.cpuNodes.length && this.segments.length > 1)
      throw new RangeError(
        `${graph.name} ${formatShape(inputShape)}: ops without a WebGPU kernel (${this.cpuNodes.join(', ')}) ` +
          `need the arena in one buffer, and this one needs ${this.segments.length}: use a smaller batch or input`,
      );
    this.bytes = {
      arena: this.segments.reduce((a, b) => a + b, 0) * 4,
      weights: mapAt * 4,
      gradients: gradients * 4,
      unplannedGradients: [...emitter.gradUses.keys()].reduce((s, t) => s + this.gradSizes[-t - 1]! * 4, 0),
    };
    this.createBuffers(mapAt, maps);
  }

  /**
   * An argument's global float index: gradient tokens (< 0) become places once the backward pass is laid
   * out, and scratch places (<= SCRATCH) once the scratch block is.
   */
  gradPtr(token: number): number {
    if (token <= SCRATCH) return this.scratchAt + SCRATCH - token;
    return token < 0 ? this.gradAt[-this.rootOf(token) - 1]! : token;
  }

  /**
   * Gradient `token` shares the buffer of `of` from now on (the caller knows `of` is read no more, or only
   * before the buffer changes). Both must have the same size.
   */
  aliasGradient(token: number, of: number): void {
    this.aliasOf.set(token, this.rootOf(of));
  }
  /** The gradient token whose buffer `token` uses (itself unless aliased). */
  rootOf(token: number): number {
    return this.aliasOf.get(token) ?? token;
  }
  private readonly aliasOf = new Map<number, number>();

  /** The buffer and byte offset of a global float index. */
  private locate(at: number): [GPUBuffer, number] {
    const s = Math.floor(at / SEGMENT_FLOATS_MAX);
    return [this.arena[s]!, (at - s * SEGMENT_FLOATS_MAX) * 4];
  }

  /**
   * Gradient buffers live from their first to their last use in the backward order, so they share one
   * block: greedy first fit by size. Returns the block's floats.
   */
  private layoutGradients(
    uses: ReadonlyMap<number, { first: number; last: number }>,
    alloc: (floats: number) => number,
  ): number {
    const merged = rootLifetimes(uses, (t) => this.rootOf(t));
    const tokens = [...merged.keys()];
    const { at, total } = firstFit(
      tokens.map((t) => ({ size: alignUp(this.gradSizes[-t - 1]!, 16), ...merged.get(t)! })),
    );
    const base = alloc(total);
    tokens.forEach((t, i) => (this.gradAt[-t - 1] = base + at[i]!));
    for (const s of [...this.forwardSteps, ...this.backwardSteps, ...this.lossSteps])
      if ('kernel' in s) s.args = s.args.map((a) => this.gradPtr(a));
    return total;
  }

  private createBuffers(weightFloats: number, maps: Int32Array[]): void {
    const { device } = this.gpu;
    const limits = device.limits;
    const most = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    if (weightFloats * 4 > most)
      throw new RangeError(
        `${this.graph.name}: ${weightFloats * 4} bytes of parameters, the device binds at most ${most}`,
      );
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    const buffer = (bytes: number, usage: number, label: string) => {
      const b = device.createBuffer({ size: alignUp(Math.max(bytes, 16), 4), usage, label });
      this.buffers.push(b);
      return b;
    };
    this.arena = this.segments.map((floats, k) =>
      buffer(floats * 4, USAGE.STORAGE | USAGE.COPY_DST | USAGE.COPY_SRC, `${this.graph.name} arena ${k}`),
    );
    this.weightBuf = buffer(
      weightFloats * 4,
      USAGE.STORAGE | USAGE.COPY_DST | USAGE.COPY_SRC,
      `${this.graph.name} weights`,
    );
    const mapData = new Float32Array(weightFloats - this.paramFloats);
    let at = 0;
    for (const m of maps) {
      mapData.set(m, at);
      at += m.length;
    }
    if (mapData.length) device.queue.writeBuffer(this.weightBuf, this.paramFloats * 4, mapData);
    const outFloats = shapeSize(this.outputShape);
    this.forwardRead = buffer(
      (outFloats + this.statsBlock.size + 2 * (this.outputShape[0] ?? 0)) * 4,
      USAGE.MAP_READ | USAGE.COPY_DST,
      'output',
    );
    const inputFloats = this.inputGrad ? shapeSize(this.inputShape) : 0;
    this.backwardRead = buffer(
      (this.paramFloats + inputFloats) * 4,
      USAGE.MAP_READ | USAGE.COPY_DST,
      'parameter gradients',
    );
    if (this.cpuNodes.length)
      this.mirrorRead = buffer(this.segments[0]! * 4, USAGE.MAP_READ | USAGE.COPY_DST, 'CPU ops');

    // One uniform slice per dispatch, in one buffer.
    const uAlign = limits.minUniformBufferOffsetAlignment;
    const gpuSteps = [
      ...this.forwardSteps,
      ...this.backwardSteps,
      ...this.lossSteps,
      ...Object.values(this.optimizerSteps),
    ].filter((s): s is GpuStep => 'kernel' in s);
    let uBytes = 0;
    const slices = new Map<GpuStep, { at: number; size: number }>();
    for (const s of gpuSteps) {
      if (s.args.length !== s.kernel.fields.length)
        throw new Error(
          `${s.kernel.name} '${s.node}': ${s.args.length} arguments for ${s.kernel.fields.length} fields`,
        );
      if (s.args.some((a) => !Number.isInteger(a) || a < 0 || a > 0xffffffff))
        throw new Error(`${s.kernel.name} '${s.node}': bad arguments ${s.args.join(', ')}`);
      const size = alignUp(s.args.length * 4, 16);
      slices.set(s, { at: uBytes, size });
      uBytes = alignUp(uBytes + size, uAlign);
    }
    const uniforms = device.createBuffer({
      size: Math.max(uBytes, 16),
      usage: USAGE.UNIFORM,
      mappedAtCreation: true,
    });
    this.buffers.push(uniforms);
    const u = uniforms.getMappedRange();
    for (const [s, slice] of slices) new Uint32Array(u, slice.at, s.args.length).set(s.args);
    uniforms.unmap();
    const segments = this.segments.length;
    const ready = (s: Step): Ready | CpuStep => {
      if (!('kernel' in s)) return s;
      const slice = slices.get(s)!;
      const bindGroup = device.createBindGroup({
        label: s.node,
        layout: this.gpu.layoutFor(segments, s.kernel.at(segments).writesWeights),
        entries: [
          { binding: 0, resource: { buffer: this.arena[0]! } },
          { binding: 1, resource: { buffer: this.weightBuf } },
          { binding: 2, resource: { buffer: uniforms, offset: slice.at, size: slice.size } },
          ...this.arena.slice(1).map((buffer, k) => ({ binding: k + 3, resource: { buffer } })),
        ],
      });
      return { pipeline: this.gpu.pipeline(s.kernel.at(segments)), bindGroup, grid: this.grid(s) };
    };
    this.forwardReady = this.forwardSteps.map(ready);
    this.backwardReady = this.backwardSteps.map(ready);
    if (this.lossSteps.length && !this.cpuNodes.length) {
      this.stepReady = [...this.forwardReady, ...this.lossSteps.map(ready), ...this.backwardReady];
      this.stepSteps = [...this.forwardSteps, ...this.lossSteps, ...this.backwardSteps] as GpuStep[];
      const { sgd, adamw } = this.optimizerSteps;
      this.optimizerReady = { sgd: ready(sgd!) as Ready, adamw: ready(adamw!) as Ready };
    }
    const errors = [device.popErrorScope(), device.popErrorScope()].map((e) => e.then((x) => x?.message));
    const kernels = new Set(gpuSteps.map((s) => s.kernel.at(segments)));
    this.created = Promise.all([...[...kernels].map((k) => this.gpu.pipelineError(k)), ...errors]).then(
      (e) => e.find((x) => x),
      (e: Error) => e.message,
    );
  }

  private grid(s: GpuStep): [number, number, number] {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const groups = Math.max(1, Math.ceil(s.args[s.args.length - 1]! / WORKGROUP));
    const x = Math.min(groups, max);
    const grid: [number, number, number] = s.groups ?? [x, Math.ceil(groups / x), 1];
    if (grid.some((g) => g > max))
      throw new RangeError(
        `${s.kernel.name} '${s.node}': needs ${grid.join('x')} workgroups, the device allows ${max} per ` +
          `dimension: use a smaller batch or input`,
      );
    return grid;
  }

  /**
   * Training-mode forward: uploads the parameters, updates the BN running buffers in `weights` (as PyTorch:
   * unbiased variance) and resolves to the output. Calls on one plan run one after the other.
   */
  forward(weights: ReadonlyMap<string, Tensor>, input: Tensor): Promise<Tensor> {
    return this.enqueue(() => this.forwardNow(weights, input));
  }

  /** dL/d(parameter) for every learnable parameter of the last forward (and the input's, if asked for). */
  backward(gradOutput: Tensor): Promise<Map<string, Tensor>> {
    return this.enqueue(() => this.backwardNow(gradOutput));
  }

  /**
   * Copies of the last forward's values by name, as the reference tape holds them (tests). A value a ReLU
   * overwrote in place reads as the ReLU's output: only that ReLU reads it, and only its sign. A BN output
   * that an add's kernel took in (Value.elided) reads as NaN: no gradient needs it.
   */
  forwardValues(): Promise<Map<string, Tensor>> {
    return this.enqueue(async () => {
      const values = [...this.values.values()];
      const all = await this.read(values.map((v) => [v.ptr, shapeSize(v.shape)]));
      const out = new Map<string, Tensor>();
      let at = 0;
      for (const v of values) {
        const data = all.slice(at, (at += shapeSize(v.shape)));
        if (v.elided) data.fill(NaN);
        if (!v.map) {
          out.set(v.name, new Tensor(v.shape, data));
          continue;
        }
        const [n, c] = [v.shape[0]!, v.shape[1]!];
        const plane = data.length / (n * c);
        const shuffled = new Float32Array(data.length);
        for (let b = 0; b < n; b++)
          for (let i = 0; i < c; i++)
            shuffled.set(
              data.subarray((b * c + v.map[i]!) * plane, (b * c + v.map[i]! + 1) * plane),
              (b * c + i) * plane,
            );
        out.set(v.name, new Tensor(v.shape, shuffled));
      }
      return out;
    });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    void this.queue.then(() => {
      for (const b of this.buffers) b.destroy();
    });
  }

  private enqueue<T>(f: () => Promise<T>): Promise<T> {
    if (this.disposed) return Promise.reject(new Error('this training plan was disposed'));
    const run = this.queue.then(f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private check(got: Shape, want: Shape, what: string): void {
    if (got.length !== want.length || got.some((d, i) => d !== want[i]))
      throw new RangeError(
        `${this.graph.name}: ${what} ${formatShape(got)} does not fit the plan's ${formatShape(want)}`,
      );
  }

  /**
   * Starts whole steps on the device (step()) with `optimizer`'s rule (SGD or AdamW): uploads the parameters
   * and the optimizer's state, named as Optimizer.state() names it (SGD: momentum_buffer.<parameter>; AdamW:
   * step, exp_avg, exp_avg_sq; none: the next step is the first). From here on the device holds the
   * parameters: sync() copies them back. `weights` also holds the BN running buffers, which step() updates
   * in place.
   */
  load(
    weights: ReadonlyMap<string, Tensor>,
    optimizer: Rule,
    state: ReadonlyMap<string, Tensor> = new Map(),
  ): void {
    if (!this.stepReady.length)
      throw new Error(
        `${this.graph.name}: whole steps on the device need logits [N, K] as the output and a kernel for ` +
          `every op` +
          (this.cpuNodes.length ? ` (on the CPU: ${this.cpuNodes.join(', ')})` : ''),
      );
    const rule = optimizer.sgd ?? optimizer.adamw;
    if (!rule) throw new Error(`${this.graph.name}: no device rule for the ${optimizer.kind} optimizer`);
    this.upload(weights);
    const n = this.paramFloats;
    const slots = optimizer.sgd ? ['momentum_buffer'] : ['exp_avg', 'exp_avg_sq'];
    const moments = new Float32Array(2 * n);
    const found = slots.flatMap((slot, k) =>
      [...this.params].map(([name, p]) => {
        const t = state.get(`${slot}.${name}`);
        if (t && t.data.length !== p.size)
          throw new RangeError(`${this.graph.name}: ${slot}.${name} is not ${formatShape(p.shape)}`);
        if (t) moments.set(t.data, k * n + p.at);
        return !!t;
      }),
    );
    if (found.some((f) => f) && !found.every((f) => f))
      throw new Error(`${this.graph.name}: the optimizer state covers some parameters only`);
    const steps = new Set([...this.params.keys()].map((k) => state.get(`step.${k}`)?.data[0] ?? 0));
    if (optimizer.adamw && steps.size > 1)
      throw new Error(
        `${this.graph.name}: AdamW's step counts differ between parameters (${[...steps].join(', ')})`,
      );
    const { queue } = this.gpu.device;
    queue.writeBuffer(...this.locate(this.fused.moments), moments);
    const flags = new Float32Array(n);
    for (const [name, p] of this.params) flags.fill(+rule.decays(name, p.shape), p.at, p.at + p.size);
    queue.writeBuffer(...this.locate(this.fused.flags), flags);
    this.loaded = { kind: optimizer.kind, sgd: optimizer.sgd, adamw: optimizer.adamw };
    this.momentumSet = !!found[0];
    this.adamSteps = optimizer.adamw ? [...steps][0]! : 0;
  }

  /**
   * One whole training step on the device in one submission: forward (batch statistics), softmax
   * cross-entropy with label smoothing, backward, the optimizer's update at learning rate `lr`. Reads back
   * only the logits, the rows' losses and hits, and the BN batch statistics (the running buffers move on the
   * CPU). Without `input`, the last step's input, still on the device, is used again.
   */
  step(input: Tensor | undefined, labels: ArrayLike<number>, lr: number, smoothing = 0): Promise<DeviceStep> {
    return this.enqueue(async () => {
      const rule = this.loaded;
      if (!rule) throw new Error(`${this.graph.name}: step() before load()`);
      if (input) this.check(input.shape, this.inputShape, 'input');
      else if (!this.hasInput)
        throw new Error(`${this.graph.name}: a step without an input before any input`);
      const [N, Kc] = this.outputShape as [number, number];
      if (labels.length !== N) throw new RangeError(`${labels.length} labels for ${N} rows of logits`);
      const floats = Float32Array.from(labels, (label, b) => {
        if (!Number.isInteger(label) || label < 0 || label >= Kc)
          throw new RangeError(`label ${label} of row ${b} is not a class in [0, ${Kc})`);
        return label;
      });
      if (!(smoothing >= 0 && smoothing <= 1))
        throw new RangeError(`label smoothing ${smoothing} is not in [0, 1]`);
      this.writeStep(rule, input, floats, lr, smoothing);
      const outFloats = N * Kc;
      const read = await this.executeStep(rule.kind, outFloats);
      this.stepped(rule);
      this.updateRunning(read, outFloats);
      let loss = 0;
      let correct = 0;
      const rows = outFloats + this.statsBlock.size;
      for (let b = 0; b < N; b++) {
        loss += read[rows + 2 * b]!;
        correct += read[rows + 2 * b + 1]!;
      }
      return { output: new Tensor(this.outputShape, read.slice(0, outFloats)), loss: loss / N, correct };
    });
  }

  /** Uploads a step's input, labels and hyperparameters (the optimizer's, at its next step). */
  private writeStep(
    { sgd, adamw }: Rule,
    input: Tensor | undefined,
    labels: Float32Array<ArrayBuffer>,
    lr: number,
    smoothing: number,
  ): void {
    const { queue } = this.gpu.device;
    if (input) queue.writeBuffer(...this.locate(this.values.get(INPUT)!.ptr), copyOf(input.data));
    this.hasInput ||= !!input;
    queue.writeBuffer(...this.locate(this.fused.labels), labels);
    let rule: number[] = [];
    if (sgd) rule = [sgd.momentum, sgd.dampening, +sgd.nesterov, sgd.weightDecay];
    if (adamw) {
      const [b1, b2] = adamw.betas;
      const t = this.adamSteps + 1;
      rule = [b1, b2, adamw.eps, adamw.weightDecay, lr / (1 - b1 ** t), Math.sqrt(1 - b2 ** t)];
    }
    const hyper = [lr, +!this.momentumSet, smoothing, ...rule];
    queue.writeBuffer(...this.locate(this.fused.hyper), Float32Array.from(hyper));
  }

  /** After a step's update: SGD's momentum holds a step, AdamW counts one more. */
  private stepped(rule: Rule): void {
    this.momentumSet = (rule.sgd?.momentum ?? 0) > 0;
    if (rule.adamw) this.adamSteps++;
  }

  /**
   * A whole step (after load()) with each dispatch timed alone (src/backends/webgpu/profile.ts): where a
   * step's time goes. It updates the parameters as step() does; the BN running buffers do not move.
   */
  profile(input: Tensor, labels: ArrayLike<number>, lr: number): Promise<DispatchTime[]> {
    return this.enqueue(async () => {
      const rule = this.loaded;
      if (!rule) throw new Error(`${this.graph.name}: profile() before load()`);
      this.check(input.shape, this.inputShape, 'input');
      const failed = await this.created;
      if (failed)
        throw new Error(`WebGPU: compiling the training plan of ${this.graph.name} failed: ${failed}`);
      this.writeStep(rule, input, Float32Array.from(labels), lr, 0);
      const { device } = this.gpu;
      const e = device.createCommandEncoder();
      e.clearBuffer(...this.locate(this.gradBlock.at), alignUp(this.paramFloats, 4) * 4);
      device.queue.submit([e.finish()]);
      const kind = rule.kind;
      const steps = [...this.stepSteps, this.optimizerSteps[kind]!];
      const ready = [...this.stepReady, this.optimizerReady[kind]!];
      const times = await timeDispatches(
        device,
        steps.map((s, i) => ({ ...(ready[i] as Ready), node: s.node, kernel: s.kernel.name })),
      );
      this.stepped(rule);
      return times;
    });
  }

  /**
   * Copies the device's parameters into their tensors in `weights` (in place), and resolves to the
   * optimizer's state as Optimizer.state() names it (empty before the first step, or SGD without momentum).
   */
  sync(weights: ReadonlyMap<string, Tensor>): Promise<Map<string, Tensor>> {
    return this.enqueue(async () => {
      const rule = this.loaded;
      if (!rule) throw new Error(`${this.graph.name}: sync() before load()`);
      const { device } = this.gpu;
      const n = this.paramFloats;
      const b = device.createBuffer({ size: alignUp(n * 4, 16), usage: USAGE.MAP_READ | USAGE.COPY_DST });
      let params: Float32Array;
      try {
        const e = device.createCommandEncoder();
        if (n) e.copyBufferToBuffer(this.weightBuf, 0, b, 0, n * 4);
        device.queue.submit([e.finish()]);
        await b.mapAsync(MAP_MODE_READ);
        params = new Float32Array(b.getMappedRange(), 0, n).slice();
      } finally {
        b.destroy();
      }
      const adam = !!rule.adamw && this.adamSteps > 0;
      const slots = adam ? ['exp_avg', 'exp_avg_sq'] : this.momentumSet ? ['momentum_buffer'] : [];
      const moments = slots.length ? await this.read([[this.fused.moments, slots.length * n]]) : undefined;
      const state = new Map<string, Tensor>();
      for (const [key, p] of this.params) {
        weights.get(key)!.data.set(params.subarray(p.at, p.at + p.size));
        slots.forEach((slot, k) =>
          state.set(
            `${slot}.${key}`,
            new Tensor(p.shape, moments!.slice(k * n + p.at, k * n + p.at + p.size)),
          ),
        );
        if (adam) state.set(`step.${key}`, new Tensor([], Float32Array.of(this.adamSteps)));
      }
      return state;
    });
  }

  /** Copies the parameters in `weights` to the device (and keeps `weights` for the BN running buffers). */
  private upload(weights: ReadonlyMap<string, Tensor>): void {
    for (const [key, p] of this.params) {
      const t = weights.get(key);
      if (!t || t.data.length !== p.size)
        throw new RangeError(`${this.graph.name}: weight '${key}' is missing or not ${formatShape(p.shape)}`);
      this.staging.set(t.data, p.at);
    }
    this.weights = weights;
    this.gpu.device.queue.writeBuffer(this.weightBuf, 0, this.staging);
  }

  private async forwardNow(weights: ReadonlyMap<string, Tensor>, input: Tensor): Promise<Tensor> {
    this.check(input.shape, this.inputShape, 'input');
    this.upload(weights);
    this.loaded = undefined; // the caller's weights replace the device's: step() needs load() again
    const { queue } = this.gpu.device;
    queue.writeBuffer(...this.locate(this.values.get(INPUT)!.ptr), copyOf(input.data));
    this.hasInput = true;
    const out = this.values.get(this.graph.output)!;
    const outFloats = shapeSize(this.outputShape);
    const read = await this.execute(this.forwardReady, this.forwardRead, [
      [out.ptr, outFloats],
      [this.statsBlock.at, this.statsBlock.size],
    ]);
    this.updateRunning(read, outFloats);
    this.forwarded = true;
    return new Tensor(this.outputShape, read.slice(0, outFloats));
  }

  /**
   * The BN running buffers move as PyTorch's (momentum, unbiased variance), from the batch statistics
   * read back after `outFloats` floats of output.
   */
  private updateRunning(read: Float32Array, outFloats: number): void {
    const weights = this.weights;
    for (const { node, at, C, count } of this.bnStats) {
      if (node.op !== 'batchnorm') continue;
      const m = node.attrs.momentum;
      const rm = weights.get(node.params.running_mean!)!.data;
      const rv = weights.get(node.params.running_var!)!.data;
      const s = outFloats + at - this.statsBlock.at;
      for (let c = 0; c < C; c++) {
        const variance = read[s + C + c]!;
        const unbiased = count > 1 ? (variance * count) / (count - 1) : variance;
        rm[c] = (1 - m) * rm[c]! + m * read[s + c]!;
        rv[c] = (1 - m) * rv[c]! + m * unbiased;
      }
    }
  }

  private async backwardNow(gradOutput: Tensor): Promise<Map<string, Tensor>> {
    this.check(gradOutput.shape, this.outputShape, 'output gradient');
    if (!this.forwarded) throw new Error(`${this.graph.name}: backward before any forward`);
    const { queue } = this.gpu.device;
    queue.writeBuffer(
      ...this.locate(this.gradPtr(this.values.get(this.graph.output)!.grad)),
      copyOf(gradOutput.data),
    );
    const inputFloats = this.inputGrad ? shapeSize(this.inputShape) : 0;
    const read = await this.execute(
      this.backwardReady,
      this.backwardRead,
      [
        [this.gradBlock.at, this.paramFloats],
        [this.gradPtr(this.inputGrad), inputFloats],
      ],
      (e) => e.clearBuffer(...this.locate(this.gradBlock.at), alignUp(this.paramFloats, 4) * 4),
    );
    const grads = new Map<string, Tensor>();
    for (const [key, p] of this.params) grads.set(key, new Tensor(p.shape, read.slice(p.at, p.at + p.size)));
    const input = this.values.get(INPUT)!;
    if (input.grad) {
      const data = this.inputGrad
        ? read.slice(this.paramFloats, this.paramFloats + inputFloats)
        : new Float32Array(shapeSize(this.inputShape));
      grads.set(INPUT, new Tensor(this.inputShape, data));
    }
    return grads;
  }

  /**
   * Records the steps in one command encoder (split only by CPU steps), copies the `reads` (float offset,
   * count) into `readback` and resolves to their floats, one after the other.
   */
  private async execute(
    steps: readonly (Ready | CpuStep)[],
    readback: GPUBuffer,
    reads: [number, number][],
    prologue?: (e: GPUCommandEncoder) => void,
  ): Promise<Float32Array> {
    if (this.gpu.lost) throw new Error(`the WebGPU device was lost: ${this.gpu.lost}`);
    const failed = await this.created;
    if (failed)
      throw new Error(`WebGPU: compiling the training plan of ${this.graph.name} failed: ${failed}`);
    const { device } = this.gpu;
    device.pushErrorScope('validation');
    let error: GPUError | null;
    let floats = 0;
    try {
      let encoder = device.createCommandEncoder();
      prologue?.(encoder);
      let pass = encoder.beginComputePass();
      for (const s of steps) {
        if ('pipeline' in s) {
          dispatch(pass, s);
          continue;
        }
        pass.end();
        const mirror = await this.readArena(encoder);
        s.run(mirror);
        device.queue.writeBuffer(this.arena[0]!, 0, mirror);
        encoder = device.createCommandEncoder();
        pass = encoder.beginComputePass();
      }
      pass.end();
      floats = this.copyReads(encoder, reads, readback);
      device.queue.submit([encoder.finish()]);
    } finally {
      error = await device.popErrorScope();
    }
    if (error) throw new Error(`WebGPU: a training step of ${this.graph.name}: ${error.message}`);
    await readback.mapAsync(MAP_MODE_READ);
    const out = new Float32Array(readback.getMappedRange(), 0, floats).slice();
    readback.unmap();
    return out;
  }

  /** Copies the arena's [at, at + n) floats of each read, one after the other, into `dst`; returns the floats. */
  private copyReads(e: GPUCommandEncoder, reads: readonly [number, number][], dst: GPUBuffer): number {
    let floats = 0;
    for (const [at, n] of reads) {
      if (n) e.copyBufferToBuffer(...this.locate(at), dst, floats * 4, n * 4);
      floats += n;
    }
    return floats;
  }

  /**
   * A whole step's submission. Every step records the same commands (only the buffers' contents change), so
   * the next step's command buffer is encoded right after this one is submitted, while the GPU runs it: a
   * step then starts on the GPU as soon as its input is written (encoding ~700 dispatches takes ~2 ms of
   * JavaScript). Resolves to the logits, the BN statistics and the rows' losses and hits.
   */
  private async executeStep(kind: Rule['kind'], outFloats: number): Promise<Float32Array> {
    if (this.gpu.lost) throw new Error(`the WebGPU device was lost: ${this.gpu.lost}`);
    const failed = await this.created;
    if (failed)
      throw new Error(`WebGPU: compiling the training plan of ${this.graph.name} failed: ${failed}`);
    const { device } = this.gpu;
    const N = this.outputShape[0]!;
    const reads: [number, number][] = [
      [this.values.get(this.graph.output)!.ptr, outFloats],
      [this.statsBlock.at, this.statsBlock.size],
      [this.fused.rows, 2 * N],
    ];
    const floats = reads.reduce((a, [, n]) => a + n, 0);
    const encode = () => {
      const e = device.createCommandEncoder();
      e.clearBuffer(...this.locate(this.gradBlock.at), alignUp(this.paramFloats, 4) * 4);
      const pass = e.beginComputePass();
      for (const s of [...this.stepReady, this.optimizerReady[kind]!] as Ready[]) {
        dispatch(pass, s);
      }
      pass.end();
      this.copyReads(e, reads, this.forwardRead);
      return { kind, commands: e.finish() };
    };
    device.pushErrorScope('validation');
    let error: GPUError | null;
    try {
      const ready = this.nextStep?.kind === kind ? this.nextStep : encode();
      this.nextStep = undefined;
      device.queue.submit([ready.commands]);
      this.nextStep = encode();
    } finally {
      error = await device.popErrorScope();
    }
    if (error) {
      this.nextStep = undefined;
      throw new Error(`WebGPU: a training step of ${this.graph.name}: ${error.message}`);
    }
    await this.forwardRead.mapAsync(MAP_MODE_READ);
    const out = new Float32Array(this.forwardRead.getMappedRange(), 0, floats).slice();
    this.forwardRead.unmap();
    return out;
  }

  /** Copies of arena ranges (global float index, count), one after the other. */
  private async read(ranges: [number, number][]): Promise<Float32Array> {
    const { device } = this.gpu;
    const floats = ranges.reduce((s, [, n]) => s + n, 0);
    const b = device.createBuffer({ size: alignUp(floats * 4, 16), usage: USAGE.MAP_READ | USAGE.COPY_DST });
    try {
      const e = device.createCommandEncoder();
      let at = 0;
      for (const [from, n] of ranges) {
        if (n) e.copyBufferToBuffer(...this.locate(from), b, at * 4, n * 4);
        at += n;
      }
      device.queue.submit([e.finish()]);
      await b.mapAsync(MAP_MODE_READ);
      return new Float32Array(b.getMappedRange(), 0, floats).slice();
    } finally {
      b.destroy();
    }
  }

  /** The whole arena (one segment: plans with CPU steps have one), after the work recorded in `encoder`. */
  private async readArena(encoder: GPUCommandEncoder): Promise<Float32Array<ArrayBuffer>> {
    const { device } = this.gpu;
    const e = encoder;
    const mirror = this.mirrorRead!;
    e.copyBufferToBuffer(this.arena[0]!, 0, mirror, 0, this.segments[0]! * 4);
    device.queue.submit([e.finish()]);
    await mirror.mapAsync(MAP_MODE_READ);
    const out = new Float32Array(mirror.getMappedRange()).slice();
    mirror.unmap();
    return out;
  }

  /** @internal The emitter's access to the plan's tables. */
  get internals() {
    return {
      values: this.values,
      params: this.params,
      forwardSteps: this.forwardSteps,
      backwardSteps: this.backwardSteps,
      bnStats: this.bnStats,
      statsAt: () => this.statsBlock.at,
      cpuNodes: this.cpuNodes,
      weights: () => this.weights,
    };
  }
}

/** Node's webgpu crashes on views of a SharedArrayBuffer: copy those (and unaligned views) first. */
function copyOf(data: Float32Array): Float32Array<ArrayBuffer> {
  const shared = typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer;
  return (shared ? data.slice() : data) as Float32Array<ArrayBuffer>;
}

const f32bits = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0]!;

/** Turns graph nodes into forward and backward steps (the WASM TrainPlan's Emitter, on WGSL kernels). */
class Emitter {
  private readonly t: WebGpuTrainPlan['internals'];
  private readonly book: GradientBook;
  /** Per node, in forward order: how to emit its backward. */
  private readonly backs: (() => void)[] = [];
  private statsUsed = 0;
  /** Each BN's forward affine (a ReLU or an add may fold into it), and whether a ReLU did. */
  private readonly affines = new Map<string, { step: GpuStep; relu: boolean }>();
  /** How many nodes read each value. */
  private readonly readers = new Map<string, number>();
  /** The scratch block's floats: the most that one op's partial sums need (ops run one after another). */
  scratchFloats = 0;

  constructor(
    private readonly plan: WebGpuTrainPlan,
    private readonly alloc: (floats: number) => number,
    private readonly chunkElements: number,
    private readonly tiles: Required<Tiles>,
  ) {
    this.t = plan.internals;
    for (const n of plan.graph.nodes)
      for (const i of n.inputs) this.readers.set(i, (this.readers.get(i) ?? 0) + 1);
    this.book = new GradientBook(
      (name) => this.v(name),
      () => this.t.backwardSteps.length,
    );
  }

  private v(name: string): Value {
    return this.t.values.get(name)!;
  }
  /** A parameter's offsets ({ at: 0, grad: 0 } and absent when the slot is empty). */
  private p(node: Node, slot: string): { at: number; grad: number; present: boolean } {
    const key = node.params[slot];
    const p = key ? this.t.params.get(key) : undefined;
    return p ? { at: p.at, grad: p.grad, present: true } : { at: 0, grad: 0, present: false };
  }
  use(token: number, at?: number): void {
    this.book.use(token, at);
  }
  get gradUses() {
    return this.book.uses;
  }
  private fwd(node: Node, kernel: TrainKernel, args: number[], more: Partial<GpuStep> = {}): void {
    this.t.forwardSteps.push({ node: node.name, kernel, args, ...more });
  }
  private bwd(node: Node, kernel: TrainKernel, args: number[], groups?: GpuStep['groups']): void {
    for (const a of args) if (a > SCRATCH) this.use(a);
    this.t.backwardSteps.push({ node: node.name, kernel, args, groups });
  }

  /** The scratch place `offset` floats in, reserving `floats` from there. */
  private scratch(offset: number, floats: number): number {
    this.scratchFloats = Math.max(this.scratchFloats, offset + floats);
    return SCRATCH - offset;
  }

  /**
   * Splits `cols` summed columns into S chunks of `chunk` (a multiple of `align`), so that about 2048
   * workgroups run when there are `tiles` per chunk, each summing at least chunkElements / 4 columns.
   */
  private split(cols: number, tiles: number, align: number): { S: number; chunk: number } {
    const least = Math.max(align, this.chunkElements / 4);
    const S = Math.max(1, Math.min(Math.ceil(2048 / tiles), Math.floor(cols / least)));
    const chunk = alignUp(Math.ceil(cols / S), align);
    return { S: Math.ceil(cols / chunk), chunk };
  }

  /**
   * Per-channel sums over an [N, C, HW] value in two dispatches: CHANNEL_PARTIAL over chunks of images, then
   * CHANNEL_FINAL in mode `[partial, final]` (its `final` arguments after part, S, mode, count and chunk).
   */
  private channelSums(
    emit: (kernel: TrainKernel, args: number[], groups?: GpuStep['groups']) => void,
    a: number,
    b: number,
    mean: number,
    [mode, finalMode]: [number, number],
    [N, C, HW]: number[],
    final: number[],
    relu: [scale: number, shift: number, on: number] = [0, 0, 0],
  ): void {
    const per = Math.max(1, Math.floor(this.chunkElements / HW!));
    const S = Math.ceil(N! / per);
    const part = this.scratch(0, 2 * C! * S);
    emit(K.CHANNEL_PARTIAL, [a, b, mean, mode, N!, C!, HW!, per, S, part, ...relu], [S, C!, 1]);
    emit(K.CHANNEL_FINAL, [part, S, finalMode, N! * HW!, per * HW!, ...final]);
  }

  hasGrad(name: string): boolean {
    return this.book.has(name);
  }
  private acc(name: string): number | undefined {
    return this.book.acc(name);
  }

  forward(node: Node): void {
    const y = this.v(node.name);
    if (y.inPlace) {
      const n = shapeSize(y.shape);
      // The kernel that wrote the value applies the ReLU as it writes (one pass less). Steps since then (a
      // stride-2 unit's pool) do not read it: the ReLU is its only reader.
      let wrote: GpuStep | undefined;
      for (const s of this.t.forwardSteps) if ('kernel' in s && s.out === y.ptr) wrote = s;
      const bn = this.affines.get(node.inputs[0]!);
      if (wrote?.relu !== undefined) wrote.args[wrote.relu] = 1;
      else this.fwd(node, K.RELU, [y.ptr, y.ptr, n]);
      if (bn && bn.step === wrote) {
        // On a BN's output, the BN's backward masks dL/dy itself (its kernels read x, whose sign after the
        // affine is the ReLU's): no pass of its own.
        bn.relu = true;
        this.backs.push(() => {});
      } else this.backs.push(() => this.bwd(node, K.RELU_BWD, [y.ptr, y.grad, y.grad, 0, n]));
      return;
    }
    if (y.base !== node.name) {
      this.backs.push(() => {}); // a view: its gradient is its base's
      return;
    }
    const x = this.v(node.inputs[0] ?? INPUT);
    const [N, C, H, W] = [x.shape[0]!, x.shape[1]!, x.shape[2] ?? 1, x.shape[3] ?? 1];
    const [O, OH, OW] = [y.shape[1]!, y.shape[2] ?? 1, y.shape[3] ?? 1];
    const n = shapeSize(y.shape);
    const mapped = node.inputs.some((i) => this.v(i).map);
    switch (node.op) {
      case 'conv2d': {
        const a = node.attrs;
        const w = this.p(node, 'weight');
        const b = this.p(node, 'bias');
        const [cin, cout] = [C / a.groups, O / a.groups];
        const map = [x.mapAt, +!!x.map];
        const pointwise =
          a.kernel[0] * a.kernel[1] === 1 &&
          a.stride[0] * a.stride[1] === 1 &&
          a.padding[0] + a.padding[1] === 0;
        const wn = O * cin * a.kernel[0] * a.kernel[1];
        if (pointwise) {
          this.pointwise(node, x, y, w, b, a.groups, [N, C, O, H * W]);
          return;
        }
        const dims = [C, H, W, O, OH, OW, ...a.kernel, ...a.stride, ...a.padding, ...a.dilation, cin, cout];
        // Several output channels per group (the stem): blocked; depthwise 3x3 (strides 1, 2): plane by
        // plane; others: one output per invocation.
        const blocked = cout > 1;
        const dw =
          cin === 1 &&
          cout === 1 &&
          a.kernel.every((k) => k === 3) &&
          a.dilation.every((d) => d === 1) &&
          a.stride.every((s) => s === 1 || s === 2);
        const fwdArgs = [x.ptr, w.at, b.at, +b.present, ...map, y.ptr, 0, ...dims];
        if (dw)
          this.fwd(node, K.DW_FWD, fwdArgs, { out: y.ptr, relu: 7, groups: K.planeGrid(N, O, OH * OW) });
        else
          this.fwd(node, blocked ? K.CONV_FWD_BLOCK : K.CONV_FWD, [...fwdArgs, n], {
            out: y.ptr,
            relu: 7,
            ...(blocked ? { groups: convGrid(N, OH, OW, a.groups, cout) } : {}),
          });
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f !== undefined) {
            const dx = [y.grad, w.at, ...map, x.grad, f, ...dims];
            if (dw) this.bwd(node, K.DW_BWD_INPUT, dx, K.planeGrid(N, C, H * W));
            else this.bwd(node, K.CONV_BWD_INPUT, [...dx, shapeSize(x.shape)]);
          }
          if (a.kernel[0] <= 3 && a.kernel[1] <= 3) {
            // Up to 3x3 (the stem, depthwise): all taps of one (output, input channel) pair at once; with
            // several output channels per group (the stem), blocks of them share each position's taps.
            const items = O * cin;
            const blocked = cout > 1 ? a.groups * Math.ceil(cout / CONV_BLOCK) * cin : 0;
            const { S, chunk } = this.split(N * OH * OW, blocked || items, 1);
            const part = this.scratch(0, S * wn);
            const y1 = Math.min(blocked || items, 65535);
            const grid: GpuStep['groups'] = [S, y1, Math.ceil((blocked || items) / y1)];
            const args = [x.ptr, y.grad, ...map, part, N, ...dims, items, chunk];
            if (blocked) this.bwd(node, K.TAPS_BWD_WEIGHT_BLOCK, [...args, blocked], grid);
            else this.bwd(node, K.TAPS_BWD_WEIGHT, args, grid);
            this.bwd(node, K.REDUCE, [part, S, wn, w.grad, 1, wn]);
          } else this.bwd(node, K.CONV_BWD_WEIGHT, [x.ptr, y.grad, w.grad, ...map, N, ...dims, wn]);
          if (b.present) this.biasGradient(node, y.grad, b.grad, [N, O, OH * OW]);
        });
        return;
      }
      case 'batchnorm': {
        if (mapped) break;
        const a = node.attrs;
        const HW = H * W;
        const mean = this.t.statsAt() + this.statsUsed;
        const variance = mean + C;
        this.statsUsed += 2 * C;
        this.t.bnStats.push({ node, at: mean, C, count: N * HW });
        const [scale, shift] = [this.alloc(C), this.alloc(C)];
        const gamma = this.p(node, 'weight');
        const beta = this.p(node, 'bias');
        const eps = f32bits(a.eps);
        const emit = (k: TrainKernel, args: number[], groups?: GpuStep['groups']) =>
          this.fwd(node, k, args, { groups });
        // One read of x: each chunk's sum and its sum of squares about its own mean, merged per channel.
        const rest = [mean, variance, gamma.at, beta.at, scale, shift, eps, 0, 0, 0, C];
        this.channelSums(emit, x.ptr, 0, 0, [1, 1], [N, C, HW], rest);
        const affine: GpuStep = {
          node: node.name,
          kernel: K.AFFINE,
          args: [x.ptr, y.ptr, scale, shift, 0, 0, C, HW, 0, n],
          out: y.ptr,
          relu: 8,
          groups: K.planeGrid(N, C, HW),
        };
        this.t.forwardSteps.push(affine);
        const folded = { step: affine, relu: false };
        this.affines.set(node.name, folded);
        this.backs.push(() => {
          const relu: [number, number, number] = [scale, shift, +folded.relu];
          const f = this.acc(x.name);
          const per = Math.max(1, Math.floor(this.chunkElements / HW));
          // mean(gy) and mean(gy * xhat) per channel, after the partial sums in the scratch block.
          const m = this.scratch(2 * C * Math.ceil(N / per), 2 * C);
          const final = [mean, variance, gamma.at, beta.at, scale, shift, eps, gamma.grad, beta.grad, m, C];
          this.channelSums(
            (k, args, g) => this.bwd(node, k, args, g),
            y.grad,
            x.ptr,
            mean,
            [2, 2],
            [N, C, HW],
            final,
            relu,
          );
          if (f !== undefined)
            this.bwd(
              node,
              K.BN_DX,
              [y.grad, x.ptr, mean, variance, scale, shift, relu[2], m, x.grad, f, C, HW, eps, n],
              K.planeGrid(N, C, HW),
            );
        });
        return;
      }
      case 'relu': {
        if (mapped) break;
        this.fwd(node, K.RELU, [x.ptr, y.ptr, n]);
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f !== undefined) this.bwd(node, K.RELU_BWD, [y.ptr, y.grad, x.grad, f, n]);
        });
        return;
      }
      case 'add': {
        const b = this.v(node.inputs[1]!);
        if (mapped) break;
        // A BN output read by this add alone, its affine the last step: the affine adds the other input and
        // writes the sum (the BN's output is never written; its backward reads x, the add's none).
        const last = this.t.forwardSteps.at(-1);
        const [bn, other] = [
          [b, x],
          [x, b],
        ].find(([v]) => {
          const a = this.affines.get(v!.name);
          return (
            a?.step === last &&
            !a!.relu &&
            v!.base === v!.name &&
            v!.name !== this.plan.graph.output &&
            this.readers.get(v!.name) === 1
          );
        }) ?? [undefined, undefined];
        if (bn && other) {
          const step = this.affines.get(bn.name)!.step;
          [step.args[1], step.args[4], step.args[5], step.out] = [y.ptr, other.ptr, 1, y.ptr];
          bn.elided = true;
        } else this.fwd(node, K.ADD, [x.ptr, b.ptr, y.ptr, 0, n], { out: y.ptr, relu: 3 });
        // Backward: dL/dx = dL/db = dL/dy, with no copy where it can be (as the WASM plan). The first input
        // whose gradient starts here takes dy's buffer (dy is read no more). The second may share it too when
        // its producer is the node just before this one (so the next backward step), a conv or BN that reads
        // it and writes none of this buffer: nothing adds to the first input's gradient in between.
        const { nodes } = this.plan.graph;
        const prev = nodes[nodes.indexOf(node) - 1];
        this.backs.push(() => {
          let shared = false;
          for (const v of [x, b]) {
            const f = this.acc(v.name);
            if (f === undefined) continue;
            const readNext =
              prev !== undefined &&
              v.base === v.name &&
              v.name === prev.name &&
              (prev.op === 'batchnorm' || prev.op === 'conv2d') &&
              prev.inputs.every((i) => this.plan.rootOf(this.v(i).grad) !== this.plan.rootOf(y.grad));
            if (f === 0 && (!shared || readNext)) {
              this.plan.aliasGradient(v.grad, y.grad);
              [v.grad, y.grad].forEach((g) => this.use(g));
              shared = true;
            } else
              this.bwd(node, K.COPY, [y.grad, O, 0, v.grad, O, 0, O, H * W, f], K.planeGrid(N, O, H * W));
          }
        });
        return;
      }
      case 'concat': {
        if (mapped) break;
        const HW = H * W;
        let off = 0;
        const slices = node.inputs.map((i) => {
          const v = this.v(i);
          const s = { v, off, C: v.shape[1]! };
          off += s.C;
          return s;
        });
        for (const s of slices)
          this.fwd(node, K.COPY, [s.v.ptr, s.C, 0, y.ptr, O, s.off, s.C, HW, 0], {
            groups: K.planeGrid(N, s.C, HW),
          });
        this.backs.push(() => {
          for (const s of slices) {
            const f = this.acc(s.v.name);
            if (f !== undefined)
              this.bwd(
                node,
                K.COPY,
                [y.grad, O, s.off, s.v.grad, s.C, 0, s.C, HW, f],
                K.planeGrid(N, s.C, HW),
              );
          }
        });
        return;
      }
      case 'maxpool2d':
      case 'avgpool2d': {
        if (mapped) break;
        const a = node.attrs;
        const mode = node.op === 'maxpool2d' ? 0 : node.attrs.countIncludePad ? 1 : 2;
        const dims = [C, H, W, OH, OW, ...a.kernel, ...a.stride, ...a.padding, mode];
        // Max pooling keeps where each window's maximum was, for its backward (not x: a rescan per window).
        const idx = mode === 0 ? this.alloc(n) : 0;
        this.fwd(node, K.POOL, [x.ptr, y.ptr, idx, ...dims], { groups: K.planeGrid(N, C, OH * OW) });
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f === undefined) return;
          const at = [y.grad, x.grad, f, ...dims];
          const groups = K.planeGrid(N, C, H * W);
          if (mode === 0) this.bwd(node, K.MAXPOOL_BWD, [idx, ...at], groups);
          else this.bwd(node, K.POOL_BWD, at, groups);
        });
        return;
      }
      case 'globalavgpool': {
        if (mapped) break;
        this.fwd(node, K.GAP, [x.ptr, y.ptr, H * W, N * C]);
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f !== undefined) this.bwd(node, K.GAP_BWD, [y.grad, x.grad, H * W, f, shapeSize(x.shape)]);
        });
        return;
      }
      case 'linear': {
        // A 1x1 conv on [N, K, 1, 1]: the same GEMMs.
        const [w, b] = [this.p(node, 'weight'), this.p(node, 'bias')];
        this.pointwise(node, x, y, w, b, 1, [N, node.attrs.inFeatures, node.attrs.outFeatures, 1]);
        return;
      }
      default:
        break;
    }
    this.fallback(node);
  }

  /**
   * A grouped 1x1 conv (or a linear layer: HW = 1) as tiled GEMMs per group: forward and dL/dx; dL/dw as
   * partial sums over chunks of columns (image, pixel), then added up.
   */
  private pointwise(
    node: Node,
    x: Value,
    y: Value,
    w: { at: number; grad: number },
    b: { at: number; grad: number; present: boolean },
    groups: number,
    [N, C, O, HW]: [number, number, number, number],
  ): void {
    const [cin, cout] = [C / groups, O / groups];
    const map = [x.mapAt, +!!x.map];
    const cols = N * HW;
    // The forward's GEMM has cout rows and cin deep, dL/dx's the other way round.
    const gemmFor = (rows: number, depth: number) =>
      this.tiles.gemm === 'fit' ? fitGemmTile(rows, depth) : this.tiles.gemm;
    const [fwdTile, dxTile] = [gemmFor(cout, cin), gemmFor(cin, cout)];
    const wgrad = this.tiles.wgrad === 'fit' ? K.fitWgradTile(cout, cin) : this.tiles.wgrad;
    const tiles = (t: GemmTile, rows: number): GpuStep['groups'] => [
      Math.ceil(cols / t.TN),
      Math.ceil(rows / t.TM),
      groups,
    ];
    const dims = [N, C, O, HW, cin, cout];
    this.fwd(node, K.pwForward(fwdTile), [x.ptr, w.at, b.at, +b.present, ...map, y.ptr, 0, ...dims], {
      out: y.ptr,
      relu: 7,
      groups: tiles(fwdTile, cout),
    });
    this.backs.push(() => {
      const f = this.acc(x.name);
      if (f !== undefined)
        this.bwd(
          node,
          K.pwBackwardInput(dxTile),
          [y.grad, w.at, ...map, x.grad, f, ...dims],
          tiles(dxTile, cin),
        );
      const wn = O * cin;
      const wTiles = Math.ceil(cout / wgrad.TR) * Math.ceil(cin / wgrad.TC);
      const { S, chunk } = this.split(cols, wTiles * groups, wgrad.TQ);
      const part = this.scratch(0, S * wn);
      this.bwd(
        node,
        K.pwBackwardWeight(wgrad),
        [x.ptr, y.grad, ...map, part, ...dims, groups, chunk],
        [S, wTiles, groups],
      );
      this.bwd(node, K.REDUCE, [part, S, wn, w.grad, 1, wn]);
      if (b.present) this.biasGradient(node, y.grad, b.grad, [N, O, HW]);
    });
  }

  /** A conv bias's gradient: gb[c] += the sum of gy over the batch and the plane. */
  private biasGradient(node: Node, gy: number, gb: number, [N, C, HW]: number[]): void {
    const final = [0, 0, 0, 0, 0, 0, 0, 0, gb, 0, C!];
    this.channelSums((k, args, g) => this.bwd(node, k, args, g), gy, 0, 0, [0, 3], [N!, C!, HW!], final);
  }

  private cpu(list: Step[], node: Node, run: (mirror: Float32Array) => void): void {
    list.push({ node: node.name, run });
  }

  /** A view of the mirror at a float offset (or gradient token). */
  private view(mirror: Float32Array, at: number, shape: Shape): Tensor {
    const ptr = this.plan.gradPtr(at);
    return new Tensor(shape, mirror.subarray(ptr, ptr + shapeSize(shape)));
  }

  /** The reference kernel and gradient on the CPU, on a read-back copy of the arena. */
  private fallback(node: Node): void {
    for (const i of node.inputs)
      if (this.v(i).map) throw new Error(`${node.op} '${node.name}': cannot read a folded channel shuffle`);
    this.t.cpuNodes.push(node.name);
    this.cpu(this.t.forwardSteps, node, (mirror) => {
      (OPS[node.op].reference as (a: KernelArgs<never>) => void)(this.kernelArgs(node, mirror));
    });
    this.backs.push(() => {
      // The reference gradient adds into dx: a gradient no one wrote yet is zeroed first.
      const zero = node.inputs.map((i) => (this.acc(i) === 0 ? this.v(i).grad : 0));
      for (const v of [node.name, ...node.inputs]) this.use(this.v(v).grad);
      this.cpu(this.t.backwardSteps, node, (mirror) => {
        node.inputs.forEach((i, k) => {
          const at = this.plan.gradPtr(zero[k]!);
          if (zero[k]) mirror.fill(0, at, at + shapeSize(this.v(i).shape));
        });
        const y = this.v(node.name);
        const args: BackwardArgs<never> = {
          ...this.kernelArgs(node, mirror),
          gradOut: this.view(mirror, y.grad, y.shape),
          gradInputs: node.inputs.map((i) => {
            const v = this.v(i);
            return v.grad ? this.view(mirror, v.grad, v.shape) : undefined;
          }),
          gradParams: Object.fromEntries(
            Object.entries(node.params).map(([slot, key]) => {
              const p = this.t.params.get(key);
              return [slot, p ? this.view(mirror, p.grad, p.shape) : undefined];
            }),
          ),
        };
        (OPS[node.op].backward as (a: BackwardArgs<never>) => void)(args);
      });
    });
  }

  private kernelArgs(node: Node, mirror: Float32Array): KernelArgs<never> {
    const y = this.v(node.name);
    return {
      out: this.view(mirror, y.ptr, y.shape),
      inputs: node.inputs.map((i) => this.view(mirror, this.v(i).ptr, this.v(i).shape)),
      // The caller's tensors: the parameters as uploaded, BN's running buffers updated in place.
      params: Object.fromEntries(
        Object.entries(node.params).map(([slot, key]) => [slot, this.t.weights().get(key)]),
      ),
      attrs: node.attrs as never,
      ctx: { training: true },
    };
  }

  /** Emits the backward steps, last node first, from the output's gradient. */
  backward(): void {
    const { graph } = this.plan;
    this.book.seed(graph.output); // its gradient is written before the first step
    for (let i = graph.nodes.length - 1; i >= 0; i--) {
      if (this.hasGrad(graph.nodes[i]!.name)) this.backs[i]!();
    }
  }
}

/**
 * Training steps on a WebGPU device: one compiled plan per graph and input shape (asynchronous steps). With
 * SGD, whole steps run on the device (step()), the parameters and momentum staying there between steps
 * until sync() copies them back.
 */
export function webgpuTraining(
  engine: {
    adapter: string;
    compileTraining(graph: Graph, inputShape: Shape, o?: TrainPlanOptions): WebGpuTrainPlan;
  },
  options: TrainPlanOptions = {},
): TrainBackend {
  const plans = new WeakMap<Graph, Map<string, WebGpuTrainPlan>>();
  const planFor = (graph: Graph, shape: Shape) => {
    let byShape = plans.get(graph);
    if (!byShape) plans.set(graph, (byShape = new Map()));
    const key = shape.join('x');
    let plan = byShape.get(key);
    if (!plan) byShape.set(key, (plan = engine.compileTraining(graph, shape, options)));
    return plan;
  };
  /** The plan that holds the parameters (after load()), if any. */
  let holder: WebGpuTrainPlan | undefined;
  const t = options.tiles;
  const name = (x: object | string | undefined) =>
    x === undefined ? 'default' : typeof x === 'string' ? x : Object.values(x).join('x');
  const tiles = t && `${name(t.gemm)}/${name(t.wgrad)}`;
  return {
    name: `webgpu (${engine.adapter})${tiles ? `, 1x1 tiles ${tiles}` : ''}`,
    async forward(graph, weights, input) {
      const plan = planFor(graph, input.shape);
      holder = undefined; // forward() uploads the caller's weights
      return { output: await plan.forward(weights, input), tape: plan };
    },
    backward: (tape, gradOutput) => (tape as WebGpuTrainPlan).backward(gradOutput),
    async step(graph, weights, input, labels, { lr, smoothing, optimizer }) {
      const plan = planFor(graph, input.shape);
      if (!(optimizer.sgd || optimizer.adamw) || !plan.wholeSteps) return undefined;
      if (holder !== plan) {
        if (holder) optimizer.loadState(await holder.sync(weights));
        plan.load(weights, optimizer, optimizer.state());
        holder = plan;
      }
      return plan.step(input, labels, lr, smoothing);
    },
    async sync(_graph, weights, optimizer) {
      if (holder) optimizer.loadState(await holder.sync(weights));
    },
  };
}
