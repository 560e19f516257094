import type { Graph } from '../../src/graph/graph.js';
import { exportOnnx } from '../../src/io/onnx/export.js';
import type { Tensor } from '../../src/tensor/tensor.js';

// Both ORT runners load the same file; AlexNet's is ~240 MB, so export it once per weights and size.
const cache = new WeakMap<Map<string, Tensor>, Map<string, Uint8Array>>();

/** The model as ONNX with BN folded into the convs (what a deployment would ship), at a fixed H x W. */
export function onnxBytes(
  graph: Graph,
  weights: Map<string, Tensor>,
  height: number,
  width: number,
): Uint8Array {
  const perSize = cache.get(weights) ?? new Map<string, Uint8Array>();
  cache.set(weights, perSize);
  const key = `${graph.name} ${height}x${width}`;
  let bytes = perSize.get(key);
  if (!bytes) {
    bytes = exportOnnx(graph, weights, { foldBn: true, inputSize: [height, width] });
    perSize.set(key, bytes);
  }
  return bytes;
}

/** The NCHW input shape ORT is fed. */
export const inputShape = (o: { graph: Graph; batch: number; height: number; width: number }) => [
  o.batch,
  o.graph.inputChannels,
  o.height,
  o.width,
];
