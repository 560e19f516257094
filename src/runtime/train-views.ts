import { INPUT, type Graph, type Node } from '../graph/graph.js';
import { shufflePermutation } from '../ops/index.js';
import type { Shape } from '../tensor/tensor.js';

/** How a training plan stores a value: in a buffer of its own, or as a view of another value's buffer. */
export type ValueView =
  | { kind: 'own' }
  /** flatten: the same data, another shape. */
  | { kind: 'same'; of: string }
  /** A ReLU computed in place on its input's buffer. */
  | { kind: 'relu'; of: string }
  /** A channel shuffle left to its consumers: channel c is channel perm[c] of `of`. */
  | { kind: 'shuffle'; of: string; perm: Int32Array };

/**
 * The views both training plans (WASM and WebGPU) take. A ReLU works in place when it is its input's only
 * reader and the input's producer does not read its own output in its gradient; a shuffle is folded when
 * every reader can index through the permutation (`foldsShuffle`) and it is not the graph's output.
 */
export function trainingViews(
  graph: Graph,
  shapes: ReadonlyMap<string, Shape>,
  foldsShuffle: (reader: Node) => boolean,
): Map<string, ValueView> {
  const readers = new Map<string, Node[]>();
  for (const n of graph.nodes) for (const v of n.inputs) readers.set(v, [...(readers.get(v) ?? []), n]);
  const producer = new Map(graph.nodes.map((n) => [n.name, n]));
  const views = new Map<string, ValueView>([[INPUT, { kind: 'own' }]]);
  for (const node of graph.nodes) {
    const x = node.inputs[0];
    const xv = x === undefined ? undefined : views.get(x);
    let view: ValueView = { kind: 'own' };
    if (node.op === 'flatten' && xv && xv.kind !== 'shuffle') view = { kind: 'same', of: x! };
    else if (
      node.op === 'relu' &&
      xv?.kind === 'own' &&
      readers.get(x!)!.length === 1 &&
      ['batchnorm', 'add', 'concat', 'conv2d'].includes(producer.get(x!)?.op ?? '')
    ) {
      view = { kind: 'relu', of: x! };
    } else if (
      node.op === 'channelshuffle' &&
      xv &&
      xv.kind !== 'shuffle' &&
      x !== INPUT &&
      node.name !== graph.output &&
      (readers.get(node.name) ?? []).every(foldsShuffle)
    ) {
      const { groups, order } = node.attrs;
      view = { kind: 'shuffle', of: x!, perm: shufflePermutation(shapes.get(node.name)![1]!, groups, order) };
    }
    views.set(node.name, view);
  }
  return views;
}
