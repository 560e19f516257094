import { formatShape, type Shape } from '../tensor/tensor.js';

/** Thrown by shape rules; the graph runner adds the op and node name (see OpError). */
export class ShapeError extends Error {}

export function fail(message: string): never {
  throw new ShapeError(message);
}

export function expectRank(shape: Shape | undefined, rank: number, what = 'input'): Shape {
  if (!shape || shape.length !== rank) {
    fail(`${what} must have rank ${rank}, got ${shape ? formatShape(shape) : 'nothing'}`);
  }
  return shape;
}

/** PyTorch's output size of a sliding window (conv or pool), including ceil_mode's rule. */
export function windowOut(size: number, k: number, s: number, p: number, d: number, ceil: boolean): number {
  const span = size + 2 * p - d * (k - 1) - 1;
  let out = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // In ceil mode the last window must start inside the input or its left padding.
  if (ceil && (out - 1) * s >= size + p) out--;
  return out;
}
