import type { Graph, Node } from '../../graph/graph.js';
import { OPS } from '../../ops/index.js';
import { lower, type LOp, type Program, type Ref } from '../../runtime/lower.js';
import { arenaLayout, type PlanOptions } from '../../runtime/plan.js';
import { fromHalf, roundToHalf, toHalf } from '../../tensor/half.js';
import { formatShape, shapeSize, Tensor, type Shape } from '../../tensor/tensor.js';
import { timeDispatches, type DispatchTime, type NamedDispatch } from './profile.js';
import { dispatch } from './encode.js';
import {
  ADD,
  AFFINE,
  CONV,
  convGrid,
  DEPTHWISE,
  GAP,
  LINEAR,
  PIXELS,
  POINTWISE,
  POOL,
  RELU,
  GEMM,
  planeGrid,
  WORKGROUP,
  withPrecision,
  type Kernel,
  type Precision,
} from './kernels.js';

/** A WebGPU plan's options: the WASM plan's, and how activations are stored (Precision). */
export interface WebGpuPlanOptions extends PlanOptions {
  /** 'f16' needs the adapter's shader-f16 feature; 'f16-rounded' gives f16's numerics on f32 storage. */
  precision?: Precision;
  /** Take the input as uint8 pixels, normalised on the GPU (PixelInput): a quarter of the bytes to upload. */
  pixels?: PixelInput;
}

/**
 * uint8 input (0-255, NCHW, a Uint8Array), normalised per channel c on the GPU as preprocess()'s toTensor
 * does: (v * scale - mean[c]) / std[c]. scale defaults to 1 / 255 (torchvision's ToTensor, with the ImageNet
 * mean and std: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }); the authors' weights take
 * BGR 0-255 as it is: { scale: 1 }. mean defaults to 0, std to 1.
 */
export interface PixelInput {
  scale?: number;
  mean?: readonly number[];
  std?: readonly number[];
}

/** GPUBufferUsage bits as numbers: Node's `webgpu` defines no globals (GPU* types: @webgpu/types). */
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 } as const;
const MAP_MODE_READ = 0x1; // GPUMapMode.READ

/** What a plan needs from its engine: the device, the bind group layout and one pipeline per kernel. */
export interface GpuContext {
  readonly device: GPUDevice;
  readonly layout: GPUBindGroupLayout;
  /** The layout of kernels over `segments` arena buffers (training plans; the optimizer writes weights). */
  layoutFor(segments: number, writesWeights?: boolean): GPUBindGroupLayout;
  pipeline(k: Kernel): GPUComputePipeline;
  /** Why the device was lost, once it is. */
  readonly lost: string | undefined;
  /** Resolves to a message if the kernel failed to compile. */
  pipelineError(k: Kernel): Promise<string | undefined>;
}

/** One dispatch: a kernel, its u32 parameters, its weights, its grid of workgroups. */
interface GpuStep {
  node: string;
  kernel: Kernel;
  params: Uint32Array;
  weights: Float32Array;
  grid: [number, number, number];
}

/** A step ready to record. */
type Dispatch = NamedDispatch;

/** An op without a WGSL kernel: read its inputs back, run its reference kernel, write its output back. */
interface CpuStep {
  node: string;
  graphNode: Node;
  inputs: Ref[];
  y: Ref;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;
const hw = (r: Ref) => (r.shape[2] ?? 1) * (r.shape[3] ?? 1);
const concat = (...parts: ArrayLike<number>[]) => {
  const out = new Float32Array(parts.reduce((s, a) => s + a.length, 0));
  let at = 0;
  for (const a of parts) {
    out.set(a, at);
    at += a.length;
  }
  return out;
};

/**
 * A compiled inference plan on a WebGPU device, from the same lowered program as the WASM plan (BN folded,
 * ReLU/add/concat fused, the shuffle folded into channel maps). Compiling uploads the weights once into one
 * buffer and lays every activation out in one arena buffer (`arenaLayout`, as the WASM plan); a run writes
 * the input, records every dispatch in one command encoder, submits it once and reads back only the output.
 * Ops without a kernel (none in the presets) split the run: their inputs are read back, the reference
 * kernel runs on the CPU and its output is written back.
 */
export class WebGpuPlan {
  readonly inputShape: Shape;
  readonly outputShape: Shape;
  readonly program: Program;
  /** Bytes: the weight buffer (with maps, aligned slices), the arena, and all activations without reuse. */
  readonly bytes: { weights: number; arena: number; unplanned: number };
  /** The graph nodes that run on the CPU (reference kernels) for want of a WGSL kernel. */
  readonly cpuNodes: string[];
  /** What a run does, in order. */
  private readonly schedule: (Dispatch | CpuStep)[];
  private readonly buffers: GPUBuffer[] = [];
  private readonly arena: GPUBuffer;
  private readonly readback: GPUBuffer;
  private readonly staging: GPUBuffer | undefined;
  private readonly at: (number | undefined)[];
  private readonly weights: ReadonlyMap<string, Tensor>;
  /** Resolves to a message if creating the buffers, bind groups or pipelines failed. */
  private readonly created: Promise<string | undefined>;
  /** Runs one at a time: they share the arena and the readback buffer. */
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;
  /** An input is on the device (run() without one reuses it), and the run leaves it there. */
  private hasInput = false;
  private readonly inputKept: boolean;
  /** The next run's command buffer, encoded while the last run ran (plans without CPU steps). */
  private nextRun: GPUCommandBuffer | undefined;
  /** uint8 input (options.pixels): the buffer the PIXELS kernel reads, and a padded copy when N % 4 != 0. */
  private readonly pixels: { buffer: GPUBuffer; padded?: Uint8Array<ArrayBuffer> } | undefined;
  /** The input converted for an f16 or f16-rounded arena (writeInput). */
  private halfInput: Uint16Array | undefined;
  private roundedInput: Float32Array | undefined;
  /** How activations are stored, and the bytes of one in the arena (2 for f16). */
  readonly precision: Precision;
  private readonly elementBytes: number;

  constructor(
    private readonly gpu: GpuContext,
    private readonly graph: Graph,
    weights: ReadonlyMap<string, Tensor>,
    o: WebGpuPlanOptions = {},
  ) {
    this.precision = o.precision ?? 'f32';
    if (!['f32', 'f16', 'f16-rounded'].includes(this.precision))
      throw new RangeError(`precision '${this.precision}': expected f32, f16 or f16-rounded`);
    if (this.precision === 'f16' && !gpu.device.features.has('shader-f16'))
      throw new RangeError(
        `precision f16 needs the adapter's 'shader-f16' feature, which this device lacks: use f32 ` +
          `(or f16-rounded, f16's rounding on f32 storage)`,
      );
    this.elementBytes = this.precision === 'f16' ? 2 : 4;
    const batch = o.batch ?? 1;
    const [h, w] = [o.height ?? graph.inputSize[0], o.width ?? graph.inputSize[1]];
    this.inputShape = [batch, graph.inputChannels, h, w];
    this.weights = weights;
    this.program = lower(graph, weights, this.inputShape);
    const p = this.program;
    this.outputShape = p.output.shape;
    if (p.output.off !== 0 || p.output.C !== p.output.bufC || p.output.map)
      throw new Error(`${graph.name}: output is not a whole buffer`);

    const { device } = gpu;
    const limits = device.limits;
    const layout = arenaLayout(p, batch, { keepInput: true });
    // No op writes over the input (or the pixels, which stay in their own buffer, are unpacked each run).
    this.inputKept = !!o.pixels || !p.ops.some((op) => op.y.buf === 0);
    this.at = layout.at;
    const steps = p.ops.map((op) => this.encode(op, batch));
    this.cpuNodes = steps.filter((s): s is CpuStep => 'graphNode' in s).map((s) => s.node);
    if (this.cpuNodes.length && this.precision !== 'f32')
      throw new RangeError(
        `${graph.name}: ops without a WebGPU kernel (${this.cpuNodes.join(', ')}) run on the CPU in f32 only: ` +
          `use precision f32`,
      );

    // The layout is in f32 bytes (every buffer 4-byte aligned); an f16 arena is half of it.
    const arenaBytes = Math.max((layout.bytes / 4) * this.elementBytes, 4);
    if (arenaBytes > limits.maxStorageBufferBindingSize || arenaBytes > limits.maxBufferSize) {
      throw new RangeError(
        `${graph.name} ${formatShape(this.inputShape)}: the activation arena needs ${arenaBytes} bytes, ` +
          `the device binds at most ${Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize)}: ` +
          `use a smaller batch or input`,
      );
    }

    // Each dispatch binds its own aligned slice of one weight buffer and of one parameter buffer.
    const gpuSteps = steps.filter((s): s is GpuStep => 'kernel' in s);
    const wAlign = limits.minStorageBufferOffsetAlignment;
    const uAlign = limits.minUniformBufferOffsetAlignment;
    let wBytes = 0;
    let uBytes = 0;
    const slices = gpuSteps.map((s) => {
      const size = Math.max(s.weights.byteLength, 4);
      if (size > limits.maxStorageBufferBindingSize) {
        throw new RangeError(
          `${s.kernel.name} '${s.node}': ${size} bytes of weights, the device binds at most ` +
            `${limits.maxStorageBufferBindingSize} per buffer`,
        );
      }
      const slice = { w: wBytes, wSize: size, u: uBytes, uSize: alignUp(s.params.byteLength, 16) };
      wBytes = alignUp(wBytes + size, wAlign);
      uBytes = alignUp(uBytes + slice.uSize, uAlign);
      return slice;
    });
    if (wBytes > limits.maxBufferSize) {
      throw new RangeError(
        `${graph.name}: ${wBytes} bytes of weights, the device allows buffers of at most ${limits.maxBufferSize}`,
      );
    }

    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    const upload = (usage: number, bytes: number, fill: (b: ArrayBuffer) => void, label: string) => {
      const b = device.createBuffer({
        size: alignUp(Math.max(bytes, 16), 4),
        usage,
        mappedAtCreation: true,
        label,
      });
      fill(b.getMappedRange());
      b.unmap();
      this.buffers.push(b);
      return b;
    };
    const weightBuf = upload(
      USAGE.STORAGE,
      wBytes,
      (b) => {
        gpuSteps.forEach((s, i) => new Float32Array(b, slices[i]!.w, s.weights.length).set(s.weights));
      },
      `${graph.name} weights`,
    );
    const paramBuf = upload(
      USAGE.UNIFORM,
      uBytes,
      (b) => {
        gpuSteps.forEach((s, i) => new Uint32Array(b, slices[i]!.u, s.params.length).set(s.params));
      },
      `${graph.name} parameters`,
    );
    const buffer = (size: number, usage: number, label: string) => {
      const b = device.createBuffer({ size: alignUp(Math.max(size, 4), 4), usage, label });
      this.buffers.push(b);
      return b;
    };
    this.arena = buffer(arenaBytes, USAGE.STORAGE | USAGE.COPY_DST | USAGE.COPY_SRC, `${graph.name} arena`);
    this.readback = buffer(this.outputBytes, USAGE.MAP_READ | USAGE.COPY_DST, 'output');
    const cpuBytes = steps.map((s) =>
      'graphNode' in s ? s.inputs.reduce((n, r) => n + shapeSize(r.shape) * 4, 0) : 0,
    );
    this.staging = this.cpuNodes.length
      ? buffer(Math.max(...cpuBytes), USAGE.MAP_READ | USAGE.COPY_DST, 'CPU op inputs')
      : undefined;
    const dispatches = gpuSteps.map((s, i): Dispatch => {
      const slice = slices[i]!;
      const bindGroup = device.createBindGroup({
        label: s.node,
        layout: gpu.layout,
        entries: [
          { binding: 0, resource: { buffer: this.arena } },
          { binding: 1, resource: { buffer: weightBuf, offset: slice.w, size: slice.wSize } },
          { binding: 2, resource: { buffer: paramBuf, offset: slice.u, size: slice.uSize } },
        ],
      });
      return {
        node: s.node,
        kernel: s.kernel.name,
        pipeline: gpu.pipeline(withPrecision(s.kernel, this.precision)),
        bindGroup,
        grid: s.grid,
      };
    });
    let d = 0;
    this.schedule = steps.map((s) => ('kernel' in s ? dispatches[d++]! : s));
    this.pixels = o.pixels && this.pixelInput(o.pixels, upload);
    if (this.pixels) this.schedule.unshift(this.unpack(this.pixels.buffer, upload));
    const errors = [device.popErrorScope(), device.popErrorScope()].map((e) => e.then((x) => x?.message));
    const kernels = new Set([
      ...gpuSteps.map((s) => withPrecision(s.kernel, this.precision)),
      ...(this.pixels ? [withPrecision(PIXELS, this.precision)] : []),
    ]);
    this.created = Promise.all([...[...kernels].map((k) => gpu.pipelineError(k)), ...errors]).then(
      (e) => e.find((x) => x),
      (e: Error) => e.message,
    );
    this.bytes = {
      weights: wBytes,
      arena: (layout.bytes / 4) * this.elementBytes,
      unplanned: p.buffers.reduce((s, b) => s + b.C * b.hw * batch * 4, 0),
    };
  }

  /** Element offset of a value's buffer in the arena. */
  private base(r: Ref): number {
    return this.at[r.buf]! / 4;
  }

  /** Byte offset of a value's buffer in the arena. */
  private byteAt(buf: number): number {
    return (this.at[buf]! / 4) * this.elementBytes;
  }

  /** The pixels' buffer (`options.pixels`): the pixel words, then the scale, the means and the std's. */
  private pixelInput(
    { scale = 1 / 255, mean = [], std = [] }: PixelInput,
    upload: (usage: number, bytes: number, fill: (b: ArrayBuffer) => void, label: string) => GPUBuffer,
  ): { buffer: GPUBuffer; padded?: Uint8Array<ArrayBuffer> } {
    const C = this.inputShape[1]!;
    const [m, d] = [
      mean.length ? mean : new Array<number>(C).fill(0),
      std.length ? std : new Array<number>(C).fill(1),
    ];
    const bad = (v: readonly number[], ok: (x: number) => boolean) =>
      !Array.isArray(v) || v.length !== C || !v.every((x) => typeof x === 'number' && ok(x));
    if (
      bad(m, Number.isFinite) ||
      bad(d, (x) => Number.isFinite(x) && x > 0) ||
      !(Number.isFinite(scale) && scale > 0)
    )
      throw new RangeError(
        `${this.graph.name}: pixels needs a positive scale, ${C} finite means and ${C} positive standard ` +
          `deviations (one per input channel), got scale ${scale}, mean ${JSON.stringify(mean)}, std ${JSON.stringify(std)}`,
      );
    const n = shapeSize(this.inputShape);
    const words = Math.ceil(n / 4);
    const b = upload(
      USAGE.STORAGE | USAGE.COPY_DST,
      (words + 1 + 2 * C) * 4,
      (a) => new Float32Array(a, words * 4, 1 + 2 * C).set([scale, ...m, ...d]),
      `${this.graph.name} pixels`,
    );
    return { buffer: b, ...(n % 4 ? { padded: new Uint8Array(words * 4) } : {}) };
  }

  /** The dispatch that unpacks and normalises the pixels into the input (first in every run). */
  private unpack(
    pixels: GPUBuffer,
    upload: (usage: number, bytes: number, fill: (b: ArrayBuffer) => void, label: string) => GPUBuffer,
  ): Dispatch {
    const [, C, H, W] = this.inputShape as number[];
    const n = shapeSize(this.inputShape);
    const words = Math.ceil(n / 4);
    const values = [this.at[0]! / 4, C!, H! * W!, n, words, words];
    const params = upload(
      USAGE.UNIFORM,
      alignUp(values.length * 4, 16),
      (a) => new Uint32Array(a).set(values),
      'pixel parameters',
    );
    const { device } = this.gpu;
    return {
      node: 'input',
      kernel: PIXELS.name,
      pipeline: this.gpu.pipeline(withPrecision(PIXELS, this.precision)),
      bindGroup: device.createBindGroup({
        label: 'input pixels',
        layout: this.gpu.layout,
        entries: [
          { binding: 0, resource: { buffer: this.arena } },
          { binding: 1, resource: { buffer: pixels } },
          { binding: 2, resource: { buffer: params } },
        ],
      }),
      grid: this.grid(PIXELS, 'input', words),
    };
  }

  /** The output's bytes in the arena, rounded up to the 4 that copies need (an f16 arena has room). */
  private get outputBytes(): number {
    return alignUp(shapeSize(this.outputShape) * this.elementBytes, 4);
  }

  /** Writes an input into the arena in its storage type, or uint8 pixels into theirs (unpacked by the run). */
  private writeInput(input: Float32Array | Uint8Array): void {
    const { queue } = this.gpu.device;
    if (input instanceof Uint8Array) {
      let data = input;
      // writeBuffer copies whole words; a shared buffer (threaded WASM memory) crashes Node's webgpu.
      if (this.pixels!.padded) (data = this.pixels!.padded).set(input);
      else if (typeof SharedArrayBuffer !== 'undefined' && input.buffer instanceof SharedArrayBuffer)
        data = input.slice();
      queue.writeBuffer(this.pixels!.buffer, 0, data as Uint8Array<ArrayBuffer>);
      this.hasInput = true;
      return;
    }
    // Node's webgpu crashes on views of a SharedArrayBuffer (threaded WASM memory): copy those first.
    const shared = typeof SharedArrayBuffer !== 'undefined' && input.buffer instanceof SharedArrayBuffer;
    let data: Float32Array | Uint16Array = shared ? input.slice() : input;
    // One staging array per plan: a run allocates nothing for the conversion.
    if (this.precision === 'f16') data = toHalf(input, (this.halfInput ??= new Uint16Array(input.length)));
    if (this.precision === 'f16-rounded') {
      (this.roundedInput ??= new Float32Array(input.length)).set(input);
      data = roundToHalf(this.roundedInput);
    }
    queue.writeBuffer(this.arena, this.byteAt(0), data as Float32Array<ArrayBuffer>);
    this.hasInput = true;
  }

  /** Turns one lowered op into a dispatch (its parameters, weights and grid) or a CPU step. */
  private encode(op: LOp, N: number): GpuStep | CpuStep {
    if (op.k === 'js') {
      for (const r of [...op.inputs, op.y]) this.whole(op.node, op.graphNode.op, r);
      return { node: op.node, graphNode: op.graphNode, inputs: op.inputs, y: op.y };
    }
    const { x, y } = op;
    if (x.map && op.k !== 'pointwise')
      throw new Error(`${op.k} '${op.node}': reads a channel-shuffled value, which only 1x1 convs can`);
    const io = [this.base(x), x.bufC, x.off, this.base(y), y.bufC, y.off];
    const [H, W] = [x.shape[2] ?? 1, x.shape[3] ?? 1];
    const [OH, OW] = [y.shape[2] ?? 1, y.shape[3] ?? 1];
    const total = shapeSize(y.shape);
    const step = (
      kernel: Kernel,
      values: number[],
      weights: Float32Array,
      grid?: [number, number, number],
    ) => {
      if (values.length !== kernel.fields.length)
        throw new Error(
          `${kernel.name} '${op.node}': ${values.length} parameters for ${kernel.fields.length} fields`,
        );
      return {
        node: op.node,
        kernel,
        params: Uint32Array.from(values),
        weights,
        grid: grid ?? this.grid(kernel, op.node, values[values.length - 1]!),
      };
    };
    switch (op.k) {
      case 'pointwise': {
        const [cin, cout] = [x.C / op.groups, y.C / op.groups];
        const res = op.res;
        if (res?.map) throw new Error(`pointwise '${op.node}': the residual is channel-shuffled`);
        const map = op.inMap ? Float32Array.from(op.inMap) : new Float32Array(0);
        const grid: [number, number, number] = [
          Math.ceil((N * op.HW) / GEMM.TN),
          Math.ceil(cout / GEMM.TM),
          op.groups,
        ];
        this.checkGrid(POINTWISE, op.node, grid);
        return step(
          POINTWISE,
          [
            ...io,
            res ? this.base(res) : 0,
            res?.bufC ?? 0,
            res?.off ?? 0,
            +!!res,
            N,
            op.HW,
            cin,
            cout,
            +!!op.inMap,
            +op.relu,
            op.w.length,
            op.w.length + op.bias.length,
          ],
          concat(op.w, op.bias, map),
          grid,
        );
      }
      case 'depthwise': {
        const map = op.outMap ? Float32Array.from(op.outMap) : new Float32Array(0);
        const { w, bias } = op;
        const grid = planeGrid(N, x.C, OH * OW);
        this.checkGrid(DEPTHWISE, op.node, grid);
        return step(
          DEPTHWISE,
          [...io, x.C, H, W, OH, OW, op.stride, +op.relu, +!!op.outMap, w.length, w.length + bias.length],
          concat(w, bias, map),
          grid,
        );
      }
      case 'conv': {
        const a = op.a;
        const grid = convGrid(N, OH, OW, a.groups, y.C / a.groups);
        this.checkGrid(CONV, op.node, grid);
        return step(
          CONV,
          [
            ...io,
            y.C,
            H,
            W,
            OH,
            OW,
            ...a.kernel,
            ...a.stride,
            ...a.padding,
            ...a.dilation,
            x.C / a.groups,
            y.C / a.groups,
            +op.relu,
            op.w.length,
            total,
          ],
          concat(op.w, op.bias),
          grid,
        );
      }
      case 'maxpool':
      case 'avgpool': {
        const a = op.a;
        const mode = op.k === 'maxpool' ? 0 : a.countIncludePad ? 1 : 2;
        return step(
          POOL,
          [...io, y.C, H, W, OH, OW, ...a.kernel, ...a.stride, ...a.padding, mode, total],
          new Float32Array(0),
        );
      }
      case 'gap':
        return step(GAP, [...io, x.C, H * W, N * x.C], new Float32Array(0));
      case 'linear':
        this.whole(op.node, 'linear', x);
        return step(
          LINEAR,
          [this.base(x), op.K, this.base(y), y.bufC, y.off, op.M, +op.relu, op.w.length, N * op.M],
          concat(op.w, op.bias),
        );
      case 'affine':
        return step(
          AFFINE,
          [...io, x.C, H * W, +op.relu, op.scale.length, total],
          concat(op.scale, op.shift),
        );
      case 'add': {
        const b = op.b;
        if (b.map) throw new Error(`add '${op.node}': its second input is channel-shuffled`);
        return step(
          ADD,
          [...io, this.base(b), b.bufC, b.off, y.C, hw(y), +op.relu, total],
          new Float32Array(0),
        );
      }
      case 'relu':
        return step(RELU, [...io, y.C, hw(y), total], new Float32Array(0));
    }
  }

  private whole(node: string, op: string, r: Ref): void {
    if (r.off !== 0 || r.C !== r.bufC || r.map)
      throw new Error(
        `${op} '${node}': needs whole buffers, got channels ${r.off}..${r.off + r.C} of ${r.bufC}`,
      );
  }

  /** The (x, y) grid of a 1-D kernel over `total` invocations. */
  private grid(kernel: Kernel, node: string, total: number): [number, number, number] {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const groups = Math.max(1, Math.ceil(total / WORKGROUP));
    const x = Math.min(groups, max);
    const grid: [number, number, number] = [x, Math.ceil(groups / x), 1];
    this.checkGrid(kernel, node, grid);
    return grid;
  }

  private checkGrid(kernel: Kernel, node: string, grid: [number, number, number]): void {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    if (grid.some((g) => g > max))
      throw new RangeError(
        `${kernel.name} '${node}': needs ${grid.join('x')} workgroups, the device allows ${max} per dimension: ` +
          `use a smaller batch or input`,
      );
  }

  /**
   * Writes `input` (NCHW, the plan's shape), runs every step and resolves to the output (a new array
   * unless `out` is given). Without `input`, the last run's input, still on the device, is used again.
   * Runs on one plan are queued: they share its buffers.
   */
  run(input: Float32Array | Uint8Array | undefined, out?: Float32Array): Promise<Float32Array> {
    if (this.disposed) return Promise.reject(new Error('this plan was disposed'));
    const run = this.queue.then(() => this.runNow(input, out));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Each dispatch of a run on `input` timed alone (src/backends/webgpu/profile.ts): where the time goes.
   * Plans with CPU steps cannot be profiled.
   */
  profile(input: Float32Array | Uint8Array): Promise<DispatchTime[]> {
    const run = this.queue.then(async () => {
      this.checkInput(input);
      if (this.cpuNodes.length)
        throw new Error(`${this.graph.name}: a plan with CPU steps cannot be profiled`);
      const failed = await this.created;
      if (failed) throw new Error(`WebGPU: compiling ${this.graph.name} failed: ${failed}`);
      this.writeInput(input);
      return timeDispatches(this.gpu.device, this.schedule as Dispatch[]);
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** An input of the plan's size and kind: uint8 pixels for a plan compiled with `pixels`, else floats. */
  private checkInput(input: Float32Array | Uint8Array): void {
    const n = shapeSize(this.inputShape);
    const shape = formatShape(this.inputShape);
    if (this.pixels && !(input instanceof Uint8Array))
      throw new TypeError(
        `${this.graph.name}: this plan was compiled with pixels (uint8 input, normalised on the GPU): pass ` +
          `a Uint8Array of ${n} pixels for input ${shape}, not a ${input.constructor.name}`,
      );
    if (!this.pixels && !(input instanceof Float32Array))
      throw new TypeError(
        `${this.graph.name}: this plan takes a Float32Array of normalised values; compile it with ` +
          `{ pixels: { scale, mean, std } } to pass uint8 pixels`,
      );
    if (input.length !== n)
      throw new RangeError(`plan for input ${shape} needs ${n} values, got ${input.length}`);
  }

  private async runNow(
    input: Float32Array | Uint8Array | undefined,
    out?: Float32Array,
  ): Promise<Float32Array> {
    if (this.gpu.lost) throw new Error(`the WebGPU device was lost: ${this.gpu.lost}`);
    if (!input && !this.hasInput)
      throw new Error(`${this.graph.name}: a run without an input before any input`);
    if (!input && !this.inputKept)
      throw new Error(`${this.graph.name}: an op of the plan writes over its input: pass the input`);
    if (input) this.checkInput(input);
    const failed = await this.created;
    if (failed) throw new Error(`WebGPU: compiling ${this.graph.name} failed: ${failed}`);
    const { device } = this.gpu;
    device.pushErrorScope('validation');
    let error: GPUError | null;
    try {
      await this.submit(input);
    } finally {
      error = await device.popErrorScope();
    }
    if (error) throw new Error(`WebGPU: running ${this.graph.name}: ${error.message}`);
    const m = shapeSize(this.outputShape);
    await this.readback.mapAsync(MAP_MODE_READ);
    const result: Float32Array = out ?? new Float32Array(m);
    const mapped = this.readback.getMappedRange();
    if (this.precision === 'f16') fromHalf(new Uint16Array(mapped, 0, m), result);
    else result.set(new Float32Array(mapped, 0, m));
    this.readback.unmap();
    return result;
  }

  /** Writes the input (if given), records every step and submits (once, unless CPU steps split the run). */
  private async submit(input: Float32Array | Uint8Array | undefined): Promise<void> {
    const { device } = this.gpu;
    if (input) this.writeInput(input);
    if (!this.cpuNodes.length) {
      // Every run records the same commands: the next run's are encoded while the GPU runs this one.
      const commands = this.nextRun ?? this.encodeRun();
      this.nextRun = undefined;
      device.queue.submit([commands]);
      this.nextRun = this.encodeRun();
      return;
    }
    let encoder = device.createCommandEncoder();
    let pass = encoder.beginComputePass();
    for (const s of this.schedule) {
      if ('grid' in s) {
        dispatch(pass, s);
        continue;
      }
      pass.end();
      await this.runOnCpu(s, encoder);
      encoder = device.createCommandEncoder();
      pass = encoder.beginComputePass();
    }
    pass.end();
    const from = this.byteAt(this.program.output.buf);
    encoder.copyBufferToBuffer(this.arena, from, this.readback, 0, this.outputBytes);
    device.queue.submit([encoder.finish()]);
  }

  /** A whole run's commands (a plan without CPU steps): every dispatch, then the output's copy. */
  private encodeRun(): GPUCommandBuffer {
    const encoder = this.gpu.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const s of this.schedule as Dispatch[]) {
      dispatch(pass, s);
    }
    pass.end();
    const from = this.byteAt(this.program.output.buf);
    encoder.copyBufferToBuffer(this.arena, from, this.readback, 0, this.outputBytes);
    return encoder.finish();
  }

  /** Ends the work recorded so far with a readback of the op's inputs; runs it; writes its output back. */
  private async runOnCpu(s: CpuStep, encoder: GPUCommandEncoder): Promise<void> {
    const { device } = this.gpu;
    const staging = this.staging!;
    let at = 0;
    for (const r of s.inputs) {
      const bytes = shapeSize(r.shape) * 4;
      encoder.copyBufferToBuffer(this.arena, this.at[r.buf]!, staging, at, bytes);
      at += bytes;
    }
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(MAP_MODE_READ);
    const data = new Float32Array(staging.getMappedRange(), 0, at / 4).slice();
    staging.unmap();
    let from = 0;
    const inputs = s.inputs.map((r) => {
      const t = new Tensor(r.shape, data.subarray(from, from + shapeSize(r.shape)));
      from += t.size;
      return t;
    });
    const node = s.graphNode;
    const out = new Tensor(s.y.shape);
    const params = Object.fromEntries(
      Object.entries(node.params).map(([slot, key]) => [slot, this.weights.get(key)]),
    );
    (OPS[node.op].reference as (a: unknown) => void)({
      out,
      inputs,
      params,
      attrs: node.attrs,
      ctx: { training: false },
    });
    device.queue.writeBuffer(this.arena, this.at[s.y.buf]!, out.data as Float32Array<ArrayBuffer>);
  }

  /** Frees the plan's GPU buffers (after the runs already queued). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    void this.queue.then(() => {
      for (const b of this.buffers) b.destroy();
    });
  }
}
