import type { Shape, Tensor } from '../tensor/tensor.js';

export type Pair = readonly [number, number];

export interface Conv2dAttrs {
  inChannels: number;
  outChannels: number;
  kernel: Pair;
  stride: Pair;
  padding: Pair;
  dilation: Pair;
  /** 1 = dense, inChannels = depthwise, anything between = grouped. */
  groups: number;
  bias: boolean;
}
export interface BatchNormAttrs {
  channels: number;
  eps: number;
  /** PyTorch convention: running = (1 - momentum) * running + momentum * batch. */
  momentum: number;
}
export interface Pool2dAttrs {
  kernel: Pair;
  stride: Pair;
  padding: Pair;
  ceilMode: boolean;
}
export interface AvgPool2dAttrs extends Pool2dAttrs {
  /** PyTorch's default true: border windows divide by the full kernel area. */
  countIncludePad: boolean;
}
export interface AdaptiveAvgPool2dAttrs {
  output: Pair;
}
export interface LinearAttrs {
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}
/**
 * 'paper': reshape channels to (g, n), transpose, flatten: out[j*g + i] = in[i*n + j].
 * 'authors': Megvii's released code, the inverse: out[j*n + i] = in[i*g + j].
 */
export type ShuffleOrder = 'paper' | 'authors';
export interface ChannelShuffleAttrs {
  groups: number;
  order: ShuffleOrder;
}
export type NoAttrs = Record<string, never>;

/** Every op and its attributes. Adding a key here makes the op table (ops/index.ts) fail to compile until it has an entry. */
export interface OpAttrs {
  conv2d: Conv2dAttrs;
  batchnorm: BatchNormAttrs;
  relu: NoAttrs;
  maxpool2d: Pool2dAttrs;
  avgpool2d: AvgPool2dAttrs;
  globalavgpool: NoAttrs;
  adaptiveavgpool2d: AdaptiveAvgPool2dAttrs;
  linear: LinearAttrs;
  add: NoAttrs;
  concat: NoAttrs;
  channelshuffle: ChannelShuffleAttrs;
  softmax: NoAttrs;
  flatten: NoAttrs;
}
export type OpName = keyof OpAttrs;

export interface RunContext {
  /** BatchNorm uses batch statistics and updates its running buffers when true. */
  training: boolean;
}

export interface ParamSlot {
  slot: string;
  /** 'parameter' is learnable (counted like PyTorch's model.parameters()); 'buffer' is state such as BN running stats. */
  kind: 'parameter' | 'buffer';
}

export interface KernelArgs<A> {
  out: Tensor;
  inputs: readonly Tensor[];
  /** Tensors by slot name (see OpSpec.params); optional slots may be absent. */
  params: Readonly<Record<string, Tensor | undefined>>;
  attrs: A;
  ctx: RunContext;
}

/**
 * The gradient pass of one op: given dL/d(out), ADD dL/d(input) and dL/d(param) into the tensors given (the same
 * value or parameter may feed several ops, so gradients accumulate). An undefined slot is not needed.
 */
export interface BackwardArgs<A> extends KernelArgs<A> {
  /** dL/d(out), shape of out. */
  gradOut: Tensor;
  /** One per input, shaped like it. */
  gradInputs: readonly (Tensor | undefined)[];
  /** By slot name; buffers (BN running statistics) are never given. */
  gradParams: Readonly<Record<string, Tensor | undefined>>;
}

/** One op in one place: its inputs, parameters, shape rule, cost, reference kernel and gradient. */
export interface OpSpec<A> {
  /** Number of tensor inputs, or 'variadic' (at least one). */
  arity: number | 'variadic';
  /** Parameter slots with their shapes for given attributes; slots with shape null are absent. */
  params(attrs: A): ReadonlyArray<ParamSlot & { shape: Shape | null }>;
  /** Output shape from input shapes (batch first); throws a message naming the shapes when they don't fit. */
  shape(inputs: readonly Shape[], attrs: A): Shape;
  /** Multiply-adds for the whole batch (the paper's 'FLOPs'); 0 for ops the paper does not count. */
  macs(inputs: readonly Shape[], out: Shape, attrs: A): number;
  /** The plain TypeScript kernel: the oracle every faster backend is tested against. Writes args.out. */
  reference(args: KernelArgs<A>): void;
  /**
   * The reverse-mode gradient of `reference` at the same args (ctx as in the forward), float64 accumulation.
   * Required, so an op without a gradient does not compile.
   */
  backward(args: BackwardArgs<A>): void;
}
