import type { OpAttrs, OpName, Pair, ShuffleOrder } from '../ops/index.js';
import { INPUT, type Graph, type Node } from './graph.js';

/** A value while building: its name and channel count (spatial sizes are inferred at run time). */
export interface Value {
  name: string;
  channels: number;
}

const pair = (v: number | Pair): Pair => (typeof v === 'number' ? [v, v] : v);

/**
 * Builds graphs with PyTorch module names, the way nn.Sequential numbers its children, so that a model's
 * parameters are named exactly like the reference implementation's state_dict.
 */
export class GraphBuilder {
  private readonly nodes: Node[] = [];
  private readonly names = new Set<string>([INPUT]);

  constructor(
    private readonly name: string,
    private readonly inputChannels: number,
    private readonly inputSize: readonly [number, number],
  ) {}

  input(): Value {
    return { name: INPUT, channels: this.inputChannels };
  }

  private node<K extends OpName>(
    op: K,
    name: string,
    inputs: Value[],
    attrs: OpAttrs[K],
    params: string[],
    channels: number,
  ): Value {
    if (this.names.has(name)) throw new Error(`GraphBuilder(${this.name}): duplicate node name '${name}'`);
    this.names.add(name);
    const p = Object.fromEntries(params.map((slot) => [slot, `${name}.${slot}`]));
    this.nodes.push({ name, op, inputs: inputs.map((v) => v.name), attrs, params: p } as Node);
    return { name, channels };
  }

  conv(
    name: string,
    x: Value,
    out: number,
    kernel: number | Pair,
    o: {
      stride?: number | Pair;
      padding?: number | Pair;
      dilation?: number | Pair;
      groups?: number;
      bias?: boolean;
    } = {},
  ): Value {
    const bias = o.bias ?? false;
    const attrs = {
      inChannels: x.channels,
      outChannels: out,
      kernel: pair(kernel),
      stride: pair(o.stride ?? 1),
      padding: pair(o.padding ?? 0),
      dilation: pair(o.dilation ?? 1),
      groups: o.groups ?? 1,
      bias,
    };
    return this.node('conv2d', name, [x], attrs, bias ? ['weight', 'bias'] : ['weight'], out);
  }

  bn(name: string, x: Value, eps = 1e-5, momentum = 0.1): Value {
    const slots = ['weight', 'bias', 'running_mean', 'running_var'];
    return this.node('batchnorm', name, [x], { channels: x.channels, eps, momentum }, slots, x.channels);
  }

  relu(name: string, x: Value): Value {
    return this.node('relu', name, [x], {}, [], x.channels);
  }

  maxpool(name: string, x: Value, kernel: number, stride: number, padding = 0, ceilMode = false): Value {
    const attrs = { kernel: pair(kernel), stride: pair(stride), padding: pair(padding), ceilMode };
    return this.node('maxpool2d', name, [x], attrs, [], x.channels);
  }

  avgpool(
    name: string,
    x: Value,
    kernel: number,
    stride: number,
    padding = 0,
    countIncludePad = true,
  ): Value {
    const attrs = {
      kernel: pair(kernel),
      stride: pair(stride),
      padding: pair(padding),
      ceilMode: false,
      countIncludePad,
    };
    return this.node('avgpool2d', name, [x], attrs, [], x.channels);
  }

  globalAvgPool(name: string, x: Value): Value {
    return this.node('globalavgpool', name, [x], {}, [], x.channels);
  }

  adaptiveAvgPool(name: string, x: Value, output: number | Pair): Value {
    return this.node('adaptiveavgpool2d', name, [x], { output: pair(output) }, [], x.channels);
  }

  /** Flatten NCHW to [N, features]; the caller says how many features that is (channels x H x W). */
  flatten(name: string, x: Value, features: number): Value {
    return this.node('flatten', name, [x], {}, [], features);
  }

  linear(name: string, x: Value, out: number, bias = true): Value {
    const attrs = { inFeatures: x.channels, outFeatures: out, bias };
    return this.node('linear', name, [x], attrs, bias ? ['weight', 'bias'] : ['weight'], out);
  }

  add(name: string, a: Value, b: Value): Value {
    return this.node('add', name, [a, b], {}, [], a.channels);
  }

  concat(name: string, xs: Value[]): Value {
    return this.node(
      'concat',
      name,
      xs,
      {},
      [],
      xs.reduce((s, x) => s + x.channels, 0),
    );
  }

  shuffle(name: string, x: Value, groups: number, order: ShuffleOrder): Value {
    return this.node('channelshuffle', name, [x], { groups, order }, [], x.channels);
  }

  softmax(name: string, x: Value): Value {
    return this.node('softmax', name, [x], {}, [], x.channels);
  }

  build(output: Value): Graph {
    return {
      name: this.name,
      inputChannels: this.inputChannels,
      inputSize: this.inputSize,
      nodes: this.nodes,
      output: output.name,
    };
  }
}
