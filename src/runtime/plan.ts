import type { KernelExports } from '../backends/wasm/module.js';
import type { Graph } from '../graph/graph.js';
import { OPS, type OpAttrs } from '../ops/index.js';
import { formatShape, Tensor, type Shape } from '../tensor/tensor.js';
import { firstFit } from './first-fit.js';
import { lower, type LOp, type Program, type Ref } from './lower.js';

/** A kernel export that runs over (part, parts): every export but the size and address queries. */
export type KernelName = Exclude<
  keyof KernelExports,
  'conv2dScratchBytes' | 'conv3x3ScratchBytes' | 'pointwiseBackwardWeightScratchBytes' | 'heapBase'
>;

export interface KernelHost {
  exports: KernelExports;
  memory: WebAssembly.Memory;
  /** The lowest byte offset plans may use. */
  heapBase: number;
}

/** A kernel call as data, so that worker threads can replay it: `exports[fn](...args, part, parts)`. */
export interface Step {
  /** 'js': a reference kernel on the main thread (index `args[0]` of the plan's fallbacks). */
  fn: KernelName | 'js';
  args: number[];
  /** Whether it takes (part, parts) and is big enough to split across threads. */
  splittable: boolean;
  work: number;
  node: string;
}

/** Runs several parts of a step at once (worker threads); the planner runs one part itself. */
export interface Parallel {
  threads: number;
  /** Runs step `index` of plan `id` with parts 1..threads-1 elsewhere while the caller runs part 0. */
  fork(id: number, index: number): void;
  join(): void;
  register(id: number, steps: readonly Step[]): void;
}

const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/**
 * A bump allocator over one memory, shared by the plans that use it. Each plan takes one contiguous span;
 * freeing a span lowers the top to the highest span still in use, so memory is reused last-in, first-out.
 */
export class MemoryPool {
  private top: number;
  private readonly base: number;
  private readonly spans = new Map<number, number>(); // start -> end

  constructor(
    readonly memory: WebAssembly.Memory,
    heapBase: number,
  ) {
    this.base = this.top = align(heapBase);
  }

  alloc(bytes: number): number {
    const at = this.top;
    this.top = align(at + Math.max(bytes, 4));
    const need = this.top - this.memory.buffer.byteLength;
    if (need > 0) this.memory.grow(Math.ceil(need / 65536));
    return at;
  }

  get used(): number {
    return this.top;
  }

  /** Records [start, top) as one live span. */
  keep(start: number): void {
    this.spans.set(start, this.top);
  }

  free(start: number): void {
    this.spans.delete(start);
    this.top = Math.max(this.base, ...this.spans.values());
  }
}

export interface PlanOptions {
  batch?: number;
  height?: number;
  width?: number;
  /** Work (multiply-adds) below which a step stays on one thread: a fork/join costs 15-70 us. */
  minParallelWork?: number;
}

let nextPlanId = 1;
/** A plan id unique in this process (worker threads find a plan's steps by it). */
export const newPlanId = () => nextPlanId++;

/**
 * A compiled inference plan: fused kernels, weights packed once, every activation in one arena whose
 * buffers are reused as soon as their values are dead. After the first run, `run` allocates nothing.
 */
export class Plan {
  readonly id = newPlanId();
  readonly steps: Step[] = [];
  readonly inputShape: Shape;
  readonly outputShape: Shape;
  readonly program: Program;
  /** Bytes: packed weights and maps, the activation arena, and the sum of all activations without reuse. */
  readonly bytes: { weights: number; arena: number; unplanned: number };
  /** Typed arrays and tensors this plan has created; tests read it to show runs allocate nothing. */
  allocations = 0;
  private readonly fallbacks: (() => void)[] = [];
  private readonly inputPtr: number;
  private readonly outputPtr: number;
  private heap: Float32Array;
  private readonly start: number;
  private disposed = false;

  constructor(
    graph: Graph,
    weights: ReadonlyMap<string, Tensor>,
    private readonly host: KernelHost,
    private readonly pool: MemoryPool,
    private readonly parallel: Parallel | undefined,
    o: PlanOptions = {},
  ) {
    const batch = o.batch ?? 1;
    const [h, w] = [o.height ?? graph.inputSize[0], o.width ?? graph.inputSize[1]];
    this.inputShape = [batch, graph.inputChannels, h, w];
    this.program = lower(graph, weights, this.inputShape);
    const p = this.program;
    this.outputShape = p.output.shape;
    if (p.output.off !== 0 || p.output.C !== p.output.bufC)
      throw new Error(`${graph.name}: output is not a whole buffer`);

    const start = pool.used;
    this.start = start;
    const offsets = this.arena(p, batch);
    const weightStart = pool.used;
    const ptr = (r: Ref) => offsets[r.buf]!;
    const f32 = (a: Float32Array) => this.put(a);
    const i32 = (a: Int32Array | undefined) => (a ? this.put(a) : 0);
    const N = batch;
    for (const op of p.ops) this.emit(op, N, ptr, f32, i32);
    const weightEnd = pool.used;
    pool.keep(start);
    this.inputPtr = ptr({ buf: 0 } as Ref);
    this.outputPtr = ptr(p.output);
    this.bytes = {
      weights: weightEnd - weightStart,
      arena: weightStart - start,
      unplanned: p.buffers.reduce((s, b) => s + b.C * b.hw * batch * 4, 0),
    };
    this.heap = this.view();
    const minWork = o.minParallelWork ?? 2_000_000;
    for (const s of this.steps) s.splittable &&= s.work >= minWork;
    parallel?.register(this.id, this.steps);
  }

  private view(): Float32Array {
    this.allocations++;
    return new Float32Array(this.host.memory.buffer);
  }

  private put(a: Float32Array | Int32Array): number {
    const at = this.pool.alloc(a.byteLength);
    new (a.constructor as typeof Float32Array)(this.host.memory.buffer, at, a.length).set(a as Float32Array);
    return at;
  }

  /** The arena's buffers, laid out by `arenaLayout`, in one allocation from the pool. */
  private arena(p: Program, batch: number): number[] {
    const { at, bytes } = arenaLayout(p, batch);
    const base = this.pool.alloc(bytes);
    return at.map((o) => (o === undefined ? 0 : base + o));
  }

  private emit(
    op: LOp,
    N: number,
    ptr: (r: Ref) => number,
    f32: (a: Float32Array) => number,
    i32: (a: Int32Array | undefined) => number,
  ): void {
    const step = (fn: KernelName, args: number[], splittable = true): void => {
      this.steps.push({ fn, args, splittable, work: op.work, node: op.node });
    };
    const whole = (r: Ref, what: string) => {
      if (r.off !== 0 || r.C !== r.bufC || r.map)
        throw new Error(`${op.node}: ${what} must be a whole buffer`);
      return ptr(r);
    };
    const [H, W] = [op.k === 'js' ? 0 : (op.x.shape[2] ?? 1), op.k === 'js' ? 0 : (op.x.shape[3] ?? 1)];
    const [OH, OW] = [op.y.shape[2] ?? 1, op.y.shape[3] ?? 1];
    switch (op.k) {
      case 'pointwise':
        return step('pointwise', [
          ptr(op.x),
          op.x.bufC,
          op.x.off,
          i32(op.inMap),
          f32(op.w),
          f32(op.bias),
          ptr(op.y),
          op.y.bufC,
          op.y.off,
          op.res ? whole(op.res, 'residual') : 0,
          N,
          op.x.C,
          op.y.C,
          op.groups,
          op.HW,
          +op.relu,
        ]);
      case 'depthwise':
        return step('depthwise3x3', [
          ptr(op.x),
          op.x.bufC,
          op.x.off,
          f32(op.w),
          f32(op.bias),
          ptr(op.y),
          op.y.bufC,
          op.y.off,
          i32(op.outMap),
          N,
          op.x.C,
          H,
          W,
          op.stride,
          +op.relu,
        ]);
      case 'conv': {
        const a = op.a;
        const parts = this.parallel?.threads ?? 1;
        const scratch = this.pool.alloc(
          this.host.exports.conv2dScratchBytes(op.x.C, a.kernel[0], a.kernel[1], OH, OW, a.groups, parts),
        );
        return step('conv2d', [
          whole(op.x, 'conv input'),
          op.x.C,
          H,
          W,
          f32(op.w),
          f32(op.bias),
          ptr(op.y),
          op.y.bufC,
          op.y.off,
          N,
          op.y.C,
          ...a.kernel,
          ...a.stride,
          ...a.padding,
          OH,
          OW,
          a.groups,
          +op.relu,
          scratch,
        ]);
      }
      case 'maxpool':
      case 'avgpool': {
        const a = op.a;
        const args = [
          ptr(op.x),
          op.x.bufC,
          op.x.off,
          ptr(op.y),
          op.y.bufC,
          op.y.off,
          N,
          op.x.C,
          H,
          W,
          ...a.kernel,
          ...a.stride,
          ...a.padding,
          OH,
          OW,
        ];
        if (op.k === 'avgpool' && avgIsDepthwise(a, H, W, OH, OW)) {
          const ninths = f32(new Float32Array(op.x.C * 9).fill(1 / 9));
          const [y, yC, yOff] = [ptr(op.y), op.y.bufC, op.y.off];
          return step('depthwise3x3', [
            args[0]!,
            args[1]!,
            args[2]!,
            ninths,
            0,
            y,
            yC,
            yOff,
            0,
            N,
            op.x.C,
            H,
            W,
            a.stride[0],
            0,
          ]);
        }
        return op.k === 'maxpool'
          ? step('maxpool2d', args)
          : step('avgpool2d', [...args, +a.countIncludePad]);
      }
      case 'gap':
        return step(
          'globalAvgPool',
          [whole(op.x, 'pool input'), N, op.x.C, H * W, whole(op.y, 'pool output')],
          false,
        );
      case 'linear':
        return step('linear', [
          whole(op.x, 'FC input'),
          N,
          op.K,
          f32(op.w),
          f32(op.bias),
          ptr(op.y),
          op.M,
          +op.relu,
        ]);
      case 'affine':
        return step('channelAffine', [
          whole(op.x, 'BN input'),
          N,
          op.x.C,
          H * W,
          f32(op.scale),
          f32(op.shift),
          whole(op.y, 'BN output'),
          +op.relu,
        ]);
      case 'add':
        return step('add', [
          whole(op.x, 'add input'),
          whole(op.b, 'add input'),
          whole(op.y, 'add output'),
          op.y.shape.reduce((a, b) => a * b, 1),
          +op.relu,
        ]);
      case 'relu':
        return step('relu', [
          whole(op.x, 'ReLU input'),
          whole(op.y, 'ReLU output'),
          op.y.shape.reduce((a, b) => a * b, 1),
        ]);
      case 'js': {
        // Ops without a fast kernel run the reference kernel on views of the same memory.
        const n = op.graphNode;
        const views = () => ({
          ins: op.inputs.map(
            (r) =>
              new Tensor(
                r.shape,
                this.heap.subarray(whole(r, 'input') / 4, whole(r, 'input') / 4 + size(r.shape)),
              ),
          ),
          out: new Tensor(
            op.y.shape,
            this.heap.subarray(whole(op.y, 'output') / 4, whole(op.y, 'output') / 4 + size(op.y.shape)),
          ),
        });
        let v: ReturnType<typeof views> | undefined;
        let heap: Float32Array | undefined;
        const params = Object.fromEntries(Object.entries(n.params).map(([s]) => [s, undefined]));
        this.fallbacks.push(() => {
          if (!v || heap !== this.heap) [v, heap] = [views(), this.heap];
          (OPS[n.op].reference as (a: unknown) => void)({
            out: v.out,
            inputs: v.ins,
            params,
            attrs: n.attrs,
            ctx: { training: false },
          });
        });
        this.steps.push({
          fn: 'js',
          args: [this.fallbacks.length - 1],
          splittable: false,
          work: 0,
          node: op.node,
        });
        return;
      }
    }
  }

  /**
   * Gives the plan's memory back to the engine (reused once no later plan sits above it).
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.pool.free(this.start);
  }

  /** Copies `input` (NCHW, the plan's shape) in, runs every step, and returns the output (a view into memory unless `out` is given). */
  run(input: Float32Array, out?: Float32Array): Float32Array {
    if (this.disposed) throw new Error('this plan was disposed');
    const n = size(this.inputShape);
    if (input.length !== n) {
      throw new RangeError(
        `plan for input ${formatShape(this.inputShape)} needs ${n} values, got ${input.length}`,
      );
    }
    if (this.heap.buffer !== this.host.memory.buffer) this.heap = this.view();
    this.heap.set(input, this.inputPtr / 4);
    runSteps(this.steps, this.host.exports, this.parallel, this.id, this.fallbacks);
    const m = size(this.outputShape);
    const view = this.heap.subarray(this.outputPtr / 4, this.outputPtr / 4 + m);
    if (!out) return view;
    out.set(view);
    return out;
  }
}

const size = (s: Shape) => s.reduce((a, b) => a * b, 1);

/**
 * Greedy first-fit of a program's buffers by size over their lifetimes (first write to last read): byte
 * offsets in one arena (undefined for a buffer no op touches) and the arena's size. Shared by every backend.
 * `keepInput`: the input's buffer lives through the whole run (a device plan may run again on it).
 */
export function arenaLayout(
  p: Program,
  batch: number,
  o: { keepInput?: boolean } = {},
): { at: (number | undefined)[]; bytes: number } {
  const first = p.buffers.map(() => Infinity);
  const last = p.buffers.map(() => -Infinity);
  const touch = (r: Ref, i: number) => {
    first[r.buf] = Math.min(first[r.buf]!, i);
    last[r.buf] = Math.max(last[r.buf]!, i);
  };
  touch(p.output, p.ops.length);
  first[0] = -1;
  if (o.keepInput) last[0] = p.ops.length;
  p.ops.forEach((op, i) => {
    for (const r of op.k === 'js'
      ? op.inputs
      : [op.x, ...('res' in op && op.res ? [op.res] : []), ...(op.k === 'add' ? [op.b] : [])]) {
      touch(r, i);
    }
    touch(op.y, i);
  });
  const used = p.buffers.map((_, i) => i).filter((b) => first[b] !== Infinity); // unused: a value only aliased
  const { at: offsets, total } = firstFit(
    used.map((b) => ({
      size: align(p.buffers[b]!.C * p.buffers[b]!.hw * batch * 4),
      first: first[b]!,
      last: last[b]!,
    })),
  );
  const at: (number | undefined)[] = [];
  used.forEach((b, i) => (at[b] = offsets[i]));
  return { at, bytes: total };
}

/** Runs a plan's steps in order: splittable ones on every thread (part 0 here), the rest on this thread. */
/**
 * Whether an average pool divides by 9 everywhere (3x3, padding 1, equal strides of 1 or 2, counting the
 * padding, the conv's output size): then it is a depthwise conv with weights 1/9, which the plans run on the
 * faster depthwise kernels.
 */
export function avgIsDepthwise(
  a: OpAttrs['avgpool2d'],
  H: number,
  W: number,
  OH: number,
  OW: number,
): boolean {
  const s = a.stride[0];
  return (
    a.countIncludePad &&
    [...a.kernel, ...a.padding, a.stride[1]].join() === `3,3,1,1,${s}` &&
    s <= 2 &&
    OH === Math.floor((H - 1) / s) + 1 &&
    OW === Math.floor((W - 1) / s) + 1
  );
}

export function runSteps(
  steps: readonly Step[],
  exports: KernelExports,
  parallel: Parallel | undefined,
  id: number,
  fallbacks: readonly (() => void)[],
): void {
  const k = exports as unknown as Record<string, (...a: number[]) => void>;
  const threads = parallel?.threads ?? 1;
  steps.forEach((s, i) => {
    if (s.fn === 'js') return fallbacks[s.args[0]!]!();
    const fn = k[s.fn]!;
    if (!s.splittable || threads === 1) {
      if (s.fn === 'globalAvgPool') fn(...s.args);
      else fn(...s.args, 0, 1);
      return;
    }
    parallel!.fork(id, i);
    fn(...s.args, 0, threads);
    parallel!.join();
  });
}
