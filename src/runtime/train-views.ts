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

/**
 * The backward pass's bookkeeping, shared by the training plans: which gradient buffers (by base value) some
 * step has written already, so that the first writer writes and later ones add; and each gradient token's
 * first and last use in the backward order, for the gradients' first-fit layout.
 */
export class GradientBook {
  readonly uses = new Map<number, { first: number; last: number }>();
  private readonly written = new Set<string>();

  constructor(
    private readonly valueOf: (name: string) => { base: string; grad: number },
    /** The index the next backward step will have. */
    private readonly now: () => number,
  ) {}

  /** Records a use of gradient `token` (< 0; others are not laid out) at step `at`. */
  use(token: number, at = this.now()): void {
    if (token >= 0) return;
    const u = this.uses.get(token);
    if (!u) this.uses.set(token, { first: at, last: at });
    else u.last = Math.max(u.last, at);
  }

  /** Whether dL/d(value) has any contribution yet (false: the value is not on a path to the output). */
  has(name: string): boolean {
    return this.written.has(this.valueOf(name).base);
  }

  /** The output's gradient, written before the first backward step. */
  seed(name: string): void {
    this.written.add(this.valueOf(name).base);
    this.use(this.valueOf(name).grad, -1);
  }

  /** Accumulate flag for a gradient written into `name`'s buffer now (0: write, 1: add), or undefined when it needs none. */
  acc(name: string): number | undefined {
    const x = this.valueOf(name);
    if (!x.grad) return undefined;
    const first = !this.written.has(x.base);
    this.written.add(x.base);
    return first ? 0 : 1;
  }
}

/** Gradient lifetimes by buffer: an alias lives in its root's buffer, so the root's lifetime covers both. */
export function rootLifetimes(
  uses: ReadonlyMap<number, { first: number; last: number }>,
  rootOf: (token: number) => number,
): Map<number, { first: number; last: number }> {
  const merged = new Map<number, { first: number; last: number }>();
  for (const [t, u] of uses) {
    const r = rootOf(t);
    const m = merged.get(r);
    merged.set(r, m ? { first: Math.min(m.first, u.first), last: Math.max(m.last, u.last) } : { ...u });
  }
  return merged;
}
