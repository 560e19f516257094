import { OPS } from '../ops/index.js';
import { shapeSize, type Shape } from '../tensor/tensor.js';
import { graphParams, inferShapes, type Graph } from './graph.js';

export interface LayerCost {
  name: string;
  op: string;
  output: Shape;
  /** Multiply-adds for one image (the paper's 'FLOPs'). */
  macs: number;
  /** Learnable parameters (PyTorch's model.parameters()), excluding buffers such as BN running stats. */
  params: number;
}

export interface Complexity {
  input: readonly [number, number, number];
  /** Conv + FC multiply-adds for one image. */
  macs: number;
  /** Convolutions only: what Table 1 of the paper counts. */
  macsConvOnly: number;
  /** All learnable parameters incl. BN gamma/beta and biases, as PyTorch counts them. */
  params: number;
  /** Weights of the conv and FC layers only (no BN, no biases). */
  weights: number;
  layers: LayerCost[];
}

/** Per-layer and total multiply-adds and parameters of a graph for an input of H x W. */
export function complexity(
  graph: Graph,
  height = graph.inputSize[0],
  width = graph.inputSize[1],
): Complexity {
  const shapes = inferShapes(graph, [1, graph.inputChannels, height, width]);
  const params = graphParams(graph);
  const layers = graph.nodes.map((node): LayerCost => {
    const out = shapes.get(node.name)!;
    const macs = (OPS[node.op].macs as (i: Shape[], o: Shape, a: unknown) => number)(
      node.inputs.map((v) => shapes.get(v)!),
      out,
      node.attrs,
    );
    const count = params
      .filter((p) => p.node === node && p.kind === 'parameter')
      .reduce((s, p) => s + shapeSize(p.shape), 0);
    return { name: node.name, op: node.op, output: out, macs, params: count };
  });
  const sum = (f: (l: LayerCost) => number) => layers.reduce((s, l) => s + f(l), 0);
  return {
    input: [graph.inputChannels, height, width],
    macs: sum((l) => l.macs),
    macsConvOnly: sum((l) => (l.op === 'conv2d' ? l.macs : 0)),
    params: sum((l) => l.params),
    weights: params
      .filter((p) => p.slot === 'weight' && (p.node.op === 'conv2d' || p.node.op === 'linear'))
      .reduce((s, p) => s + shapeSize(p.shape), 0),
    layers,
  };
}
