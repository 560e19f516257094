import { ConfigError, OpError } from '../errors.js';
import { OPS, type OpAttrs, type OpName, type ParamSlot } from '../ops/index.js';
import { ShapeError } from '../ops/shape.js';
import { formatShape, type Shape } from '../tensor/tensor.js';

/**
 * A model is a graph of ops in topological order. Each node's output value is named after the node, and its
 * parameters are named by the PyTorch state_dict keys they correspond to, so import and export are a name map.
 */
export type Node = {
  [K in OpName]: {
    /** Unique; also the name of the node's output value. The module path in PyTorch terms (e.g. `features.3.branch_main_1.0`). */
    name: string;
    op: K;
    inputs: string[];
    attrs: OpAttrs[K];
    /** Parameter slot (e.g. 'weight', 'running_var') -> state_dict key. */
    params: Record<string, string>;
  };
}[OpName];

export interface Graph {
  /** The preset (or user) name, used in error messages. */
  name: string;
  /** The input is NCHW with this many channels; `inputSize` is the size the model was designed for. */
  inputChannels: number;
  inputSize: readonly [number, number];
  nodes: Node[];
  output: string;
}

export const INPUT = 'input';

export interface ParamInfo extends ParamSlot {
  /** state_dict key. */
  name: string;
  shape: Shape;
  node: Node;
}

/** Every parameter and buffer of the graph in node order (the order of PyTorch's state_dict). */
export function graphParams(graph: Graph): ParamInfo[] {
  const out: ParamInfo[] = [];
  for (const node of graph.nodes) {
    const slots = (OPS[node.op].params as (a: unknown) => ReturnType<(typeof OPS)[OpName]['params']>)(
      node.attrs,
    );
    for (const s of slots) {
      if (!s.shape) continue;
      const name = node.params[s.slot];
      if (!name) throw new Error(`${node.op} '${node.name}': parameter slot '${s.slot}' has no name`);
      out.push({ name, slot: s.slot, kind: s.kind, shape: s.shape, node });
    }
  }
  return out;
}

/** Output shape of one node from its input shapes, with the node named in any error. */
export function nodeShape(node: Node, inputs: readonly Shape[]): Shape {
  try {
    return (OPS[node.op].shape as (i: readonly Shape[], a: unknown) => Shape)(inputs, node.attrs);
  } catch (e) {
    if (e instanceof ShapeError) throw new OpError(node.op, node.name, e.message);
    throw e;
  }
}

/** Checks an NCHW input shape against the graph and returns the shape of every value. */
export function inferShapes(graph: Graph, input: Shape): Map<string, Shape> {
  if (
    input.length !== 4 ||
    input[1] !== graph.inputChannels ||
    input.some((d) => !Number.isInteger(d) || d < 1)
  ) {
    throw new ConfigError(
      `${graph.name}: input ${formatShape(input)} does not fit; expected [N, ${graph.inputChannels}, H, W] ` +
        `(designed for H x W = ${graph.inputSize.join(' x ')})`,
    );
  }
  const shapes = new Map<string, Shape>([[INPUT, input]]);
  for (const node of graph.nodes) {
    shapes.set(
      node.name,
      nodeShape(
        node,
        node.inputs.map((v) => shapes.get(v)!),
      ),
    );
  }
  return shapes;
}
