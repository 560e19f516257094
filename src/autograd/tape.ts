import { checkWeights } from '../graph/execute.js';
import { graphParams, inferShapes, INPUT, type Graph } from '../graph/graph.js';
import { OPS, type BackwardArgs, type KernelArgs, type RunContext } from '../ops/index.js';
import { formatShape, sameShape, Tensor } from '../tensor/tensor.js';

/** What backward needs from a forward pass: the graph, its weights and every value it computed. */
export interface Tape {
  graph: Graph;
  weights: ReadonlyMap<string, Tensor>;
  values: ReadonlyMap<string, Tensor>;
  ctx: RunContext;
}

export interface Gradients {
  /** dL/d(parameter) for every learnable parameter (kind 'parameter'; not BN running buffers), by state_dict key. */
  params: Map<string, Tensor>;
  input: Tensor;
}

/** Kernel arguments of one node, the same in the forward and the backward pass. */
function nodeArgs(tape: Tape, index: number): KernelArgs<never> {
  const node = tape.graph.nodes[index]!;
  return {
    out: tape.values.get(node.name)!,
    inputs: node.inputs.map((v) => tape.values.get(v)!),
    params: Object.fromEntries(
      Object.entries(node.params).map(([slot, key]) => [slot, tape.weights.get(key)]),
    ),
    attrs: node.attrs as never,
    ctx: tape.ctx,
  };
}

/**
 * Runs the graph with the reference kernels and keeps every value for `backward`. With `training`, batch norm
 * normalises with batch statistics and updates its running buffers in `weights`, once, here.
 */
export function forwardWithTape(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  input: Tensor,
  options: { training?: boolean } = {},
): { output: Tensor; tape: Tape } {
  checkWeights(graph, weights);
  const shapes = inferShapes(graph, input.shape);
  const values = new Map<string, Tensor>([[INPUT, input]]);
  const tape: Tape = { graph, weights, values, ctx: { training: options.training ?? false } };
  graph.nodes.forEach((node, i) => {
    values.set(node.name, new Tensor(shapes.get(node.name)!));
    (OPS[node.op].reference as (a: KernelArgs<never>) => void)(nodeArgs(tape, i));
  });
  return { output: values.get(graph.output)!, tape };
}

/** Reverse-mode gradients of L given gradOutput = dL/d(output), visiting the nodes in reverse. */
export function backward(tape: Tape, gradOutput: Tensor): Gradients {
  const { graph } = tape;
  const output = tape.values.get(graph.output)!;
  if (!sameShape(gradOutput.shape, output.shape)) {
    throw new RangeError(
      `backward: gradient ${formatShape(gradOutput.shape)} does not fit the output ${formatShape(output.shape)}`,
    );
  }
  const params = new Map<string, Tensor>();
  for (const p of graphParams(graph)) if (p.kind === 'parameter') params.set(p.name, new Tensor(p.shape));
  const grads = new Map<string, Tensor>([[graph.output, new Tensor(output.shape, gradOutput.data.slice())]]);
  const gradOf = (v: string) => {
    let g = grads.get(v);
    if (!g) grads.set(v, (g = new Tensor(tape.values.get(v)!.shape)));
    return g;
  };
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const node = graph.nodes[i]!;
    const gradOut = grads.get(node.name);
    if (!gradOut) continue; // the output does not depend on this node
    const args: BackwardArgs<never> = {
      ...nodeArgs(tape, i),
      gradOut,
      gradInputs: node.inputs.map(gradOf),
      gradParams: Object.fromEntries(
        Object.entries(node.params).map(([slot, key]) => [slot, params.get(key)]),
      ),
    };
    (OPS[node.op].backward as (a: BackwardArgs<never>) => void)(args);
    grads.delete(node.name);
  }
  return { params, input: grads.get(INPUT) ?? new Tensor(tape.values.get(INPUT)!.shape) };
}
