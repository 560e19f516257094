import { referenceBackend, type Backend } from '../backends/backend.js';
import { ConfigError } from '../errors.js';
import { OPS } from '../ops/index.js';
import { formatShape, Tensor } from '../tensor/tensor.js';
import { graphParams, inferShapes, INPUT, type Graph } from './graph.js';

export interface ExecuteOptions {
  training?: boolean;
  /** Kernels to use where the backend supports the op; the reference kernels otherwise. */
  backend?: Backend;
}

/** Checks that `weights` holds every parameter of the graph with the right shape; names all that are wrong. */
export function checkWeights(graph: Graph, weights: ReadonlyMap<string, Tensor>): void {
  const problems: string[] = [];
  for (const p of graphParams(graph)) {
    const t = weights.get(p.name);
    if (!t) problems.push(`missing ${p.name} ${formatShape(p.shape)}`);
    else if (t.shape.join() !== p.shape.join()) {
      problems.push(`${p.name}: expected ${formatShape(p.shape)}, got ${formatShape(t.shape)}`);
    }
  }
  if (problems.length)
    throw new ConfigError(`${graph.name}: weights do not fit:\n  ${problems.join('\n  ')}`);
}

/**
 * Runs the graph node by node (the interpreter; plans with fused kernels and an arena come from the runtime).
 * Intermediate values are dropped after their last use.
 */
export function execute(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  input: Tensor,
  options: ExecuteOptions = {},
): Tensor {
  const shapes = inferShapes(graph, input.shape);
  const backend = options.backend ?? referenceBackend;
  const ctx = { training: options.training ?? false };
  const lastUse = new Map<string, number>();
  graph.nodes.forEach((n, i) => n.inputs.forEach((v) => lastUse.set(v, i)));
  const values = new Map<string, Tensor>([[INPUT, input]]);
  graph.nodes.forEach((node, i) => {
    const out = new Tensor(shapes.get(node.name)!);
    const params = Object.fromEntries(
      Object.entries(node.params).map(([slot, key]) => [slot, weights.get(key)]),
    );
    const args = {
      out,
      inputs: node.inputs.map((v) => values.get(v)!),
      params,
      attrs: node.attrs as never,
      ctx,
    };
    if (backend.supports(node.op)) backend.run(node.op, args);
    else (OPS[node.op].reference as (a: typeof args) => void)(args);
    values.set(node.name, out);
    for (const v of node.inputs) if (lastUse.get(v) === i && v !== graph.output) values.delete(v);
  });
  return values.get(graph.output)!;
}
