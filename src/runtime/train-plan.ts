import { inferShapes, INPUT, type Graph, type Node } from '../graph/graph.js';
import { OPS, type BackwardArgs, type KernelArgs } from '../ops/index.js';
import { formatShape, Tensor, type Shape } from '../tensor/tensor.js';
import { firstFit } from './first-fit.js';
import { GradientBook, rootLifetimes, trainingViews } from './train-views.js';
import {
  avgIsDepthwise,
  newPlanId,
  runSteps,
  type KernelHost,
  type KernelName,
  type MemoryPool,
  type Parallel,
  type Step,
} from './plan.js';

/**
 * A training step compiled onto the WASM kernels: every value, gradient, parameter and parameter gradient of
 * one batch size lives in one span of the kernel memory, and the forward and backward passes are lists of
 * kernel calls as data (so worker threads replay them, as in inference plans). Ops without a fast kernel run
 * their reference kernel and gradient on views of the same memory. A channel shuffle whose consumers are all
 * 1x1 convolutions costs no copy: they read (and their gradients write) through the permutation.
 *
 * Gradients are written, not summed, by the first op that produces them in the backward order, and summed by
 * the others; the plan decides which is which once, so nothing is zeroed per step but the parameter gradients.
 */
export class TrainPlan {
  private readonly ids = [newPlanId(), newPlanId()];
  readonly inputShape: Shape;
  readonly outputShape: Shape;
  /** Bytes of kernel memory the plan holds. */
  readonly bytes: number;
  private readonly forwardSteps: Step[] = [];
  private readonly backwardSteps: Step[] = [];
  private readonly fallbacks: (() => void)[] = [];
  private readonly values = new Map<string, Value>();
  private readonly params = new Map<string, { ptr: number; grad: number; size: number; shape: Shape }>();
  /** BN running statistics: checked, and updated in the caller's tensors. */
  private readonly buffers = new Map<string, Shape>();
  private heap: Float32Array;
  /** Floats of gradient buffer k-1 (token -k), then its byte offset once laid out. */
  private readonly gradSizes: number[] = [];
  private readonly gradPtrs: number[] = [];
  private weights: ReadonlyMap<string, Tensor> = new Map();
  private readonly start: number;
  private disposed = false;

  constructor(
    readonly graph: Graph,
    inputShape: Shape,
    private readonly host: KernelHost,
    private readonly pool: MemoryPool,
    private readonly parallel: Parallel | undefined,
    o: { minParallelWork?: number } = {},
  ) {
    this.inputShape = inputShape;
    const shapes = inferShapes(graph, inputShape);
    this.outputShape = shapes.get(graph.output)!;
    this.start = pool.used;
    this.heap = new Float32Array(host.memory.buffer);
    const alloc = (floats: number) => pool.alloc(floats * 4);

    // Values: a buffer each, unless the value is a view of another (flatten, a ReLU in place, a shuffle that
    // only 1x1 convolutions read). Gradient buffers are tokens until the backward pass is laid out.
    const own = (name: string, shape: Shape): Value => {
      this.gradSizes.push(size(shape));
      return { name, shape, ptr: alloc(size(shape)), grad: -this.gradSizes.length, base: name, map: 0 };
    };
    this.values.set(INPUT, { ...own(INPUT, inputShape), grad: 0 });
    const views = trainingViews(graph, shapes, isPointwise);
    for (const node of graph.nodes) {
      const shape = shapes.get(node.name)!;
      const view = views.get(node.name)!;
      if (view.kind === 'own') {
        this.values.set(node.name, own(node.name, shape));
        continue;
      }
      const x = this.values.get(view.of)!;
      if (view.kind === 'shuffle') {
        // A 1x1 conv reads its input channel c from channel perm[c] of the unshuffled buffer.
        const at = alloc(view.perm.length);
        new Int32Array(host.memory.buffer, at, view.perm.length).set(view.perm);
        this.values.set(node.name, { ...x, name: node.name, shape, map: at });
      } else this.values.set(node.name, { ...x, name: node.name, shape, inPlace: view.kind === 'relu' });
    }
    for (const node of graph.nodes) {
      const slots = (OPS[node.op].params as (a: unknown) => ReturnType<(typeof OPS)['conv2d']['params']>)(
        node.attrs,
      );
      for (const s of slots) {
        const key = node.params[s.slot];
        if (!s.shape || !key || this.params.has(key) || this.buffers.has(key)) continue;
        const n = size(s.shape);
        // BN's running statistics stay in the caller's tensors: the kernels normalise with batch statistics.
        if (s.kind === 'buffer') this.buffers.set(key, s.shape);
        else this.params.set(key, { ptr: alloc(n), grad: alloc(n), size: n, shape: s.shape });
      }
    }
    const emitter = new Emitter(this, alloc);
    for (const node of graph.nodes) emitter.forward(node);
    emitter.backward();
    this.layoutGradients(emitter.gradUses);
    pool.keep(this.start);
    this.bytes = pool.used - this.start;
    const minWork = o.minParallelWork ?? 1_000_000;
    for (const s of [...this.forwardSteps, ...this.backwardSteps]) s.splittable &&= s.work >= minWork;
    parallel?.register(this.ids[0]!, this.forwardSteps);
    parallel?.register(this.ids[1]!, this.backwardSteps);
  }

  /** Training-mode forward: copies the weights in, updates BN running buffers in `weights`, returns the output. */
  forward(weights: ReadonlyMap<string, Tensor>, input: Tensor): Tensor {
    this.check(input.shape, this.inputShape, 'input');
    const heap = this.view();
    this.weights = weights;
    const check = (key: string, shape: Shape) => {
      const t = weights.get(key);
      if (!t || t.data.length !== size(shape))
        throw new RangeError(`${this.graph.name}: weight '${key}' is missing or not ${formatShape(shape)}`);
      return t;
    };
    for (const [key, shape] of this.buffers) check(key, shape);
    for (const [key, p] of this.params) heap.set(check(key, p.shape).data, p.ptr / 4);
    heap.set(input.data, this.values.get(INPUT)!.ptr / 4);
    this.run(this.forwardSteps, this.ids[0]!);
    const out = this.values.get(this.graph.output)!;
    return new Tensor(this.outputShape, this.view().slice(out.ptr / 4, out.ptr / 4 + size(out.shape)));
  }

  /** dL/d(parameter) for every learnable parameter of the last forward, given dL/d(output). */
  backward(gradOutput: Tensor): Map<string, Tensor> {
    this.check(gradOutput.shape, this.outputShape, 'output gradient');
    let heap = this.view();
    for (const p of this.params.values()) heap.fill(0, p.grad / 4, p.grad / 4 + p.size);
    heap.set(gradOutput.data, this.gradPtr(this.values.get(this.graph.output)!.grad) / 4);
    this.run(this.backwardSteps, this.ids[1]!);
    heap = this.view();
    const grads = new Map<string, Tensor>();
    for (const [key, p] of this.params) {
      grads.set(key, new Tensor(p.shape, heap.slice(p.grad / 4, p.grad / 4 + p.size)));
    }
    return grads;
  }

  /**
   * Copies of the last forward's values by name, as the reference autograd tape holds them (for tests and
   * debugging). A value that a ReLU overwrote in place reads as the ReLU's output: only that ReLU reads it,
   * and only its sign.
   */
  forwardValues(): Map<string, Tensor> {
    const heap = this.view();
    const out = new Map<string, Tensor>();
    for (const v of this.values.values()) {
      const data = heap.slice(v.ptr / 4, v.ptr / 4 + size(v.shape));
      if (v.map) {
        const map = new Int32Array(this.host.memory.buffer, v.map, v.shape[1]!).slice();
        const [n, c] = [v.shape[0]!, v.shape[1]!];
        const plane = data.length / (n * c);
        const shuffled = new Float32Array(data.length);
        for (let b = 0; b < n; b++)
          for (let i = 0; i < c; i++)
            shuffled.set(
              data.subarray((b * c + map[i]!) * plane, (b * c + map[i]! + 1) * plane),
              (b * c + i) * plane,
            );
        out.set(v.name, new Tensor(v.shape, shuffled));
      } else out.set(v.name, new Tensor(v.shape, data));
    }
    return out;
  }

  /**
   * Gradient `token` shares the buffer of `of` from now on (the caller knows `of` is read no more, or only
   * before the buffer changes). Both must have the same size.
   */
  aliasGradient(token: number, of: number): void {
    this.aliasOf.set(token, this.rootOf(of));
  }
  private rootOf(token: number): number {
    return this.aliasOf.get(token) ?? token;
  }
  private readonly aliasOf = new Map<number, number>();

  /** A gradient pointer: tokens (< 0) become byte offsets once the backward pass is laid out. */
  gradPtr(token: number): number {
    return token < 0 ? this.gradPtrs[-token - 1]! : token;
  }

  /**
   * Gradient buffers live from their first write to their last read in the backward order, so they share one
   * block: greedy first-fit by size, as the inference arena does.
   */
  private layoutGradients(uses: ReadonlyMap<number, { first: number; last: number }>): void {
    const merged = rootLifetimes(uses, (t) => this.rootOf(t));
    const tokens = [...merged.keys()];
    const { at, total } = firstFit(
      tokens.map((t) => ({ size: Math.ceil((this.gradSizes[-t - 1]! * 4) / 64) * 64, ...merged.get(t)! })),
    );
    const base = this.pool.alloc(total);
    tokens.forEach((t, i) => (this.gradPtrs[-t - 1] = base + at[i]!));
    for (const t of this.aliasOf.keys()) this.gradPtrs[-t - 1] = this.gradPtrs[-this.rootOf(t) - 1]!;
    for (const step of this.backwardSteps) {
      if (step.fn !== 'js') step.args = step.args.map((a) => this.gradPtr(a));
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.pool.free(this.start);
  }

  private check(got: Shape, want: Shape, what: string): void {
    if (this.disposed) throw new Error('this training plan was disposed');
    if (got.length !== want.length || got.some((d, i) => d !== want[i]))
      throw new RangeError(
        `${this.graph.name}: ${what} ${formatShape(got)} does not fit the plan's ${formatShape(want)}`,
      );
  }

  private run(steps: readonly Step[], id: number): void {
    runSteps(steps, this.host.exports, this.parallel, id, this.fallbacks);
  }

  /** @internal */
  view(): Float32Array {
    if (this.heap.buffer !== this.host.memory.buffer) this.heap = new Float32Array(this.host.memory.buffer);
    return this.heap;
  }

  /** @internal The emitter's access to the plan's tables. */
  get internals() {
    return {
      values: this.values,
      params: this.params,
      forwardSteps: this.forwardSteps,
      backwardSteps: this.backwardSteps,
      fallbacks: this.fallbacks,
      weights: () => this.weights,
      threads: this.parallel?.threads ?? 1,
      exports: this.host.exports,
    };
  }
}

interface Value {
  name: string;
  shape: Shape;
  ptr: number;
  /** Gradient buffer token (< 0; see TrainPlan.gradPtr), 0 for the input, which needs none. */
  grad: number;
  /** A ReLU computed in place on its base. */
  inPlace?: boolean;
  /** The value whose buffers this one shares. */
  base: string;
  /** i32 channel map into `base` (a folded shuffle), 0 for none. */
  map: number;
}

const size = (s: Shape) => s.reduce((a, b) => a * b, 1);

function isPointwise(n: Node): boolean {
  if (n.op !== 'conv2d') return false;
  const a = n.attrs;
  return (
    a.kernel[0] === 1 &&
    a.kernel[1] === 1 &&
    a.stride[0] === 1 &&
    a.stride[1] === 1 &&
    a.padding[0] === 0 &&
    a.padding[1] === 0 &&
    a.dilation[0] === 1 &&
    a.dilation[1] === 1
  );
}

function isDepthwise3x3(n: Node): boolean {
  return (
    n.op === 'conv2d' &&
    is3x3(n) &&
    n.attrs.groups === n.attrs.inChannels &&
    n.attrs.outChannels === n.attrs.inChannels
  );
}

/** 3x3, padding 1, equal strides of 1 or 2, dilation 1: what the conv3x3 backward kernels take. */
function is3x3(n: Node): boolean {
  if (n.op !== 'conv2d') return false;
  const a = n.attrs;
  return (
    a.kernel[0] === 3 &&
    a.kernel[1] === 3 &&
    a.padding[0] === 1 &&
    a.padding[1] === 1 &&
    a.stride[0] === a.stride[1] &&
    a.stride[0] <= 2 &&
    a.dilation[0] === 1 &&
    a.dilation[1] === 1
  );
}

/** Turns graph nodes into forward and backward steps. */
class Emitter {
  private readonly t: TrainPlan['internals'];
  private readonly book: GradientBook;
  /** Per node, in forward order: how to emit its backward. */
  private readonly backs: (() => void)[] = [];

  constructor(
    private readonly plan: TrainPlan,
    private readonly alloc: (floats: number) => number,
  ) {
    this.t = plan.internals;
    this.book = new GradientBook(
      (name) => this.v(name),
      () => this.t.backwardSteps.length,
    );
  }

  private v(name: string): Value {
    return this.t.values.get(name)!;
  }
  private p(node: Node, slot: string): { ptr: number; grad: number } {
    const key = node.params[slot];
    return key ? this.t.params.get(key)! : { ptr: 0, grad: 0 };
  }
  private step(
    list: Step[],
    fn: KernelName,
    args: number[],
    work: number,
    node: Node,
    splittable = true,
  ): void {
    if (list === this.t.backwardSteps) for (const a of args) this.use(a);
    list.push({ fn, args, splittable, work, node: node.name });
  }
  use(token: number, at?: number): void {
    this.book.use(token, at);
  }
  get gradUses() {
    return this.book.uses;
  }
  private fwd(fn: KernelName, args: number[], work: number, node: Node, splittable = true): void {
    this.step(this.t.forwardSteps, fn, args, work, node, splittable);
  }
  private bwd(fn: KernelName, args: number[], work: number, node: Node, splittable = true): void {
    this.step(this.t.backwardSteps, fn, args, work, node, splittable);
  }
  private js(list: Step[], node: Node, fn: () => void): void {
    this.t.fallbacks.push(fn);
    list.push({ fn: 'js', args: [this.t.fallbacks.length - 1], splittable: false, work: 0, node: node.name });
  }

  /** Scratch for the 3x3 backward kernels on H x W inputs (one block, shared by the steps: they run one at a time). */
  private scratch3x3(H: number, W: number, items = 0): number {
    return this.scratch(this.t.exports.conv3x3ScratchBytes(H, W, items, this.t.threads));
  }
  /** A block of scratch of at least `bytes`, shared by all steps (they run one at a time). */
  private scratch(bytes: number): number {
    if (bytes > this.scratchBytes) [this.scratchPtr, this.scratchBytes] = [this.alloc(bytes / 4), bytes];
    return this.scratchPtr;
  }
  private scratchPtr = 0;
  private scratchBytes = 0;
  /** Batch norms whose output a ReLU overwrites in place (their backward applies its mask). */
  private readonly fusedRelu = new Set<string>();

  hasGrad(name: string): boolean {
    return this.book.has(name);
  }
  private acc(name: string): number | undefined {
    return this.book.acc(name);
  }

  private tensor(ptr: number, shape: Shape): Tensor {
    ptr = this.plan.gradPtr(ptr);
    const heap = this.plan.view();
    return new Tensor(shape, heap.subarray(ptr / 4, ptr / 4 + size(shape)));
  }

  forward(node: Node): void {
    const y = this.v(node.name);
    if (y.inPlace) {
      const n = size(y.shape);
      // After batch norm, the affine kernel applies the ReLU as it writes, and the batch norm's backward
      // applies its mask as it reads dy (a pass less each way).
      const last = this.t.forwardSteps.at(-1);
      if (last?.fn === 'channelAffine' && last.args[6] === y.ptr) {
        last.args[7] = 1;
        this.fusedRelu.add(last.node);
        this.backs.push(() => {});
      } else {
        this.fwd('relu', [y.ptr, y.ptr, n], n, node);
        this.backs.push(() => this.bwd('reluBackward', [y.ptr, y.grad, y.grad, n], n, node));
      }
      return;
    }
    if (y.base !== node.name) {
      this.backs.push(() => {}); // a view: its gradient is its base's
      return;
    }
    const x = this.v(node.inputs[0] ?? INPUT);
    const [N, C, H, W] = [x.shape[0]!, x.shape[1]!, x.shape[2] ?? 1, x.shape[3] ?? 1];
    const [O, OH, OW] = [y.shape[1]!, y.shape[2] ?? 1, y.shape[3] ?? 1];
    const n = size(y.shape);
    const spec = OPS[node.op];
    const macs = spec.macs(
      node.inputs.map((i) => this.v(i).shape),
      y.shape,
      node.attrs as never,
    );
    const work = Math.max(macs, n);
    switch (node.op) {
      case 'conv2d': {
        const a = node.attrs;
        const w = this.p(node, 'weight');
        const b = this.p(node, 'bias');
        if (isPointwise(node)) {
          this.fwd(
            'pointwise',
            [x.ptr, C, 0, x.map, w.ptr, b.ptr, y.ptr, O, 0, 0, N, C, O, a.groups, H * W, 0],
            work,
            node,
          );
          const packBytes = this.t.exports.pointwiseBackwardWeightScratchBytes(
            C,
            a.groups,
            H * W,
            this.t.threads,
          );
          const pack = packBytes ? this.scratch(packBytes) : 0;
          this.backs.push(() => {
            const f = this.acc(x.name);
            if (f !== undefined)
              this.bwd(
                'pointwiseBackwardInput',
                [y.grad, O, 0, w.ptr, x.grad, C, 0, x.map, N, C, O, a.groups, H * W, f],
                work,
                node,
              );
            this.bwd(
              'pointwiseBackwardWeight',
              [x.ptr, C, 0, x.map, y.grad, O, 0, w.grad, b.grad, N, C, O, a.groups, H * W, pack],
              work,
              node,
            );
          });
          return;
        }
        if (x.map) break;
        if (isDepthwise3x3(node)) {
          const s = a.stride[0];
          this.fwd('depthwise3x3', [x.ptr, C, 0, w.ptr, b.ptr, y.ptr, C, 0, 0, N, C, H, W, s, 0], work, node);
          this.backs.push(() => {
            const f = this.acc(x.name);
            if (f !== undefined)
              this.bwd(
                'depthwise3x3BackwardInput',
                [y.grad, C, 0, 0, w.ptr, x.grad, C, 0, N, C, H, W, s, f, this.scratch3x3(H, W)],
                work,
                node,
              );
            this.bwd(
              'conv3x3BackwardWeight',
              [x.ptr, C, 0, y.grad, C, 0, 0, w.grad, b.grad, N, C, 1, 1, H, W, s, this.scratch3x3(H, W, C)],
              work,
              node,
            );
          });
          return;
        }
        if (a.dilation[0] !== 1 || a.dilation[1] !== 1) break;
        const dims = [N, C, H, W, O, ...a.kernel, ...a.stride, ...a.padding, OH, OW, a.groups];
        const scratch = this.alloc(
          this.t.exports.conv2dScratchBytes(C, a.kernel[0], a.kernel[1], OH, OW, a.groups, this.t.threads) /
            4,
        );
        this.fwd(
          'conv2d',
          [
            x.ptr,
            C,
            H,
            W,
            w.ptr,
            b.ptr,
            y.ptr,
            O,
            0,
            N,
            O,
            ...a.kernel,
            ...a.stride,
            ...a.padding,
            OH,
            OW,
            a.groups,
            0,
            scratch,
          ],
          work,
          node,
        );
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f !== undefined)
            this.bwd('conv2dBackwardInput', [y.grad, w.ptr, x.grad, ...dims, f], work, node);
          if (is3x3(node)) {
            const [kg, og] = [C / a.groups, O / a.groups];
            const args = [x.ptr, C, 0, y.grad, O, 0, 0, w.grad, b.grad, N, O, kg, og, H, W, a.stride[0]];
            this.bwd('conv3x3BackwardWeight', [...args, this.scratch3x3(H, W, O * kg)], work, node);
          } else this.bwd('conv2dBackwardWeight', [x.ptr, y.grad, w.grad, b.grad, ...dims], work, node);
        });
        return;
      }
      case 'batchnorm': {
        if (x.map) break;
        const a = node.attrs;
        const HW = H * W;
        const [mean, invstd, scale, shift] = [this.alloc(C), this.alloc(C), this.alloc(C), this.alloc(C)];
        const sums = this.alloc(4 * C); // 2 C f64
        const gamma = this.p(node, 'weight');
        const beta = this.p(node, 'bias');
        this.fwd('batchnormStats', [x.ptr, N, C, HW, mean, invstd, a.eps, sums], work, node);
        const count = N * HW;
        this.js(this.t.forwardSteps, node, () => {
          const h = this.plan.view();
          const w = this.t.weights();
          const rm = w.get(node.params.running_mean!)!.data;
          const rv = w.get(node.params.running_var!)!.data;
          for (let c = 0; c < C; c++) {
            const m = h[mean / 4 + c]!;
            const is = h[invstd / 4 + c]!;
            const s = h[gamma.ptr / 4 + c]! * is;
            h[scale / 4 + c] = s;
            h[shift / 4 + c] = h[beta.ptr / 4 + c]! - m * s;
            const variance = 1 / (is * is) - a.eps;
            const unbiased = count > 1 ? (variance * count) / (count - 1) : variance;
            rm[c] = (1 - a.momentum) * rm[c]! + a.momentum * m;
            rv[c] = (1 - a.momentum) * rv[c]! + a.momentum * unbiased;
          }
        });
        this.fwd('channelAffine', [x.ptr, N, C, HW, scale, shift, y.ptr, 0], work, node);
        this.backs.push(() => {
          const relu = this.fusedRelu.has(node.name);
          const f = this.acc(x.name);
          if (f === 1) {
            // The kernel writes dx; a sum needs the reference (after the ReLU's mask, when one was fused).
            if (relu) this.bwd('reluBackward', [y.ptr, y.grad, y.grad, n], n, node);
            return this.fallbackBackward(node, true);
          }
          const dx = f === 0 ? x.grad : 0;
          const [s, t] = relu ? [scale, shift] : [0, 0];
          this.bwd(
            'batchnormBackward',
            [y.grad, x.ptr, mean, invstd, gamma.ptr, dx, gamma.grad, beta.grad, N, C, HW, s, t, sums],
            work,
            node,
          );
        });
        return;
      }
      case 'relu': {
        if (x.map) break;
        this.fwd('relu', [x.ptr, y.ptr, n], work, node);
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f === 1) return this.fallbackBackward(node, true);
          if (f === 0) this.bwd('reluBackward', [y.ptr, y.grad, x.grad, n], work, node);
        });
        return;
      }
      case 'add': {
        const b = this.v(node.inputs[1]!);
        if (x.map || b.map) break;
        this.fwd('add', [x.ptr, b.ptr, y.ptr, n, 0], work, node);
        // Backward: dL/dx = dL/db = dL/dy. The first input whose gradient starts here takes dy's buffer (dy is
        // read no more). The second may share it too when only its producer, the node just before this one
        // (so the next backward step), reads it and does not write it: nothing can add to the first input's
        // gradient in between.
        const at = this.plan.graph.nodes.indexOf(node);
        const prev = this.plan.graph.nodes[at - 1];
        const readNext = (v: Value) =>
          prev !== undefined &&
          v.base === v.name &&
          v.name === prev.name &&
          (prev.op === 'batchnorm' || prev.op === 'conv2d');
        this.backs.push(() => {
          let shared = false;
          for (const v of [x, b]) {
            const f = this.acc(v.name);
            if (f === 0 && (!shared || readNext(v))) {
              this.plan.aliasGradient(v.grad, y.grad);
              [v.grad, y.grad].forEach((g) => this.use(g));
              shared = true;
            } else if (f === 0) {
              [v.grad, y.grad].forEach((g) => this.use(g));
              this.js(this.t.backwardSteps, node, () => {
                const [to, from] = [this.plan.gradPtr(v.grad) / 4, this.plan.gradPtr(y.grad) / 4];
                this.plan.view().copyWithin(to, from, from + n);
              });
            } else if (f === 1) this.bwd('add', [v.grad, y.grad, v.grad, n, 0], work, node);
          }
        });
        return;
      }
      case 'concat': {
        const ins = node.inputs.map((i) => this.v(i));
        if (ins.some((i) => i.map)) break;
        const HW = H * W;
        const slices = ins.map((v, i) => ({
          v,
          off: ins.slice(0, i).reduce((s, u) => s + u.shape[1]!, 0) * HW,
          len: v.shape[1]! * HW,
        }));
        this.js(this.t.forwardSteps, node, () => {
          const h = this.plan.view();
          for (let b = 0; b < N; b++)
            for (const s of slices)
              h.copyWithin(
                y.ptr / 4 + b * O * HW + s.off,
                s.v.ptr / 4 + b * s.len,
                s.v.ptr / 4 + (b + 1) * s.len,
              );
        });
        this.backs.push(() => {
          const fs = slices.map((s) => this.acc(s.v.name));
          [y, ...ins].forEach((v) => this.use(v.grad));
          this.js(this.t.backwardSteps, node, () => {
            const h = this.plan.view();
            slices.forEach((s, i) => {
              const f = fs[i];
              if (f === undefined) return;
              for (let b = 0; b < N; b++) {
                const from = this.plan.gradPtr(y.grad) / 4 + b * O * HW + s.off;
                const to = this.plan.gradPtr(s.v.grad) / 4 + b * s.len;
                if (f === 0) h.copyWithin(to, from, from + s.len);
                else for (let j = 0; j < s.len; j++) h[to + j]! += h[from + j]!;
              }
            });
          });
        });
        return;
      }
      case 'maxpool2d':
      case 'avgpool2d': {
        if (x.map) break;
        const a = node.attrs;
        const dims = [N, C, H, W, ...a.kernel, ...a.stride, ...a.padding, OH, OW];
        if (node.op === 'maxpool2d') {
          this.fwd('maxpool2d', [x.ptr, C, 0, y.ptr, C, 0, ...dims], work, node);
          this.backs.push(() => {
            const f = this.acc(x.name);
            if (f !== undefined)
              this.bwd('maxpool2dBackward', [x.ptr, C, 0, y.grad, C, 0, x.grad, ...dims, f], work, node);
          });
        } else if (avgIsDepthwise(node.attrs, H, W, OH, OW)) {
          const w = this.alloc(C * 9);
          this.plan.view().fill(1 / 9, w / 4, w / 4 + C * 9);
          const s = a.stride[0];
          this.fwd('depthwise3x3', [x.ptr, C, 0, w, 0, y.ptr, C, 0, 0, N, C, H, W, s, 0], work, node);
          this.backs.push(() => {
            const f = this.acc(x.name);
            if (f !== undefined)
              this.bwd(
                'depthwise3x3BackwardInput',
                [y.grad, C, 0, 0, w, x.grad, C, 0, N, C, H, W, s, f, this.scratch3x3(H, W)],
                work,
                node,
              );
          });
        } else {
          const cip = +node.attrs.countIncludePad;
          this.fwd('avgpool2d', [x.ptr, C, 0, y.ptr, C, 0, ...dims, cip], work, node);
          this.backs.push(() => {
            const f = this.acc(x.name);
            if (f !== undefined)
              this.bwd('avgpool2dBackward', [y.grad, C, 0, x.grad, C, 0, ...dims, cip, f], work, node);
          });
        }
        return;
      }
      case 'globalavgpool': {
        if (x.map) break;
        this.fwd('globalAvgPool', [x.ptr, N, C, H * W, y.ptr], work, node, false);
        this.backs.push(() => {
          const f = this.acc(x.name);
          if (f !== undefined)
            this.bwd('globalAvgPoolBackward', [y.grad, x.grad, N, C, H * W, f], work, node);
        });
        return;
      }
      case 'linear': {
        if (x.map) break;
        const w = this.p(node, 'weight');
        const b = this.p(node, 'bias');
        const K = C * H * W;
        this.fwd('linear', [x.ptr, N, K, w.ptr, b.ptr, y.ptr, O, 0], work, node);
        this.backs.push(() => {
          const f = this.acc(x.name);
          this.bwd(
            'linearBackward',
            [x.ptr, N, K, w.ptr, y.grad, O, f === undefined ? 0 : x.grad, w.grad, b.grad, f ?? 0],
            work,
            node,
          );
        });
        return;
      }
      default:
        break;
    }
    this.fallback(node);
  }

  /** The reference kernel and gradient on views of the plan's memory. */
  private fallback(node: Node): void {
    for (const i of node.inputs) {
      if (this.v(i).map) throw new Error(`${node.op} '${node.name}': cannot read a folded channel shuffle`);
    }
    this.js(this.t.forwardSteps, node, () => {
      (OPS[node.op].reference as (a: KernelArgs<never>) => void)(this.kernelArgs(node));
    });
    this.backs.push(() => this.fallbackBackward(node, false));
  }

  /** The reference gradient, which sums into dx: a gradient not written yet is zeroed first. */
  private fallbackBackward(node: Node, decided: boolean): void {
    // `decided`: the caller already took the accumulate flag of input 0 (and it was 1: written before).
    const zero = node.inputs.map((i, k) => {
      if (decided && k === 0) return 0;
      const v = this.v(i);
      return this.acc(i) === 0 ? v.grad : 0;
    });
    [node.name, ...node.inputs].forEach((v) => this.use(this.v(v).grad));
    this.js(this.t.backwardSteps, node, () => {
      const h = this.plan.view();
      node.inputs.forEach((i, k) => {
        const at = this.plan.gradPtr(zero[k]!) / 4;
        if (zero[k]) h.fill(0, at, at + size(this.v(i).shape));
      });
      const args: BackwardArgs<never> = {
        ...this.kernelArgs(node),
        gradOut: this.tensor(this.v(node.name).grad, this.v(node.name).shape),
        gradInputs: node.inputs.map((i) =>
          this.v(i).grad ? this.tensor(this.v(i).grad, this.v(i).shape) : undefined,
        ),
        gradParams: Object.fromEntries(
          Object.entries(node.params).map(([slot, key]) => {
            const p = this.t.params.get(key);
            return [slot, p ? this.tensor(p.grad, p.shape) : undefined];
          }),
        ),
      };
      (OPS[node.op].backward as (a: BackwardArgs<never>) => void)(args);
    });
  }

  private kernelArgs(node: Node): KernelArgs<never> {
    return {
      out: this.tensor(this.v(node.name).ptr, this.v(node.name).shape),
      inputs: node.inputs.map((i) => this.tensor(this.v(i).ptr, this.v(i).shape)),
      params: Object.fromEntries(
        Object.entries(node.params).map(([slot, key]) => {
          const p = this.t.params.get(key);
          // BN's running buffers are the caller's tensors (the reference forward updates them).
          return [slot, p ? this.tensor(p.ptr, p.shape) : this.t.weights().get(key)];
        }),
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
      const node = graph.nodes[i]!;
      if (!this.hasGrad(node.name)) continue;
      this.backs[i]!();
    }
  }
}
