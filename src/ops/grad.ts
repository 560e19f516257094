import type { Tensor } from '../tensor/tensor.js';

/** target += values (float64 sums rounded once); gradients accumulate because a value may feed several ops. */
export function accumulate(target: Tensor | undefined, values: ArrayLike<number>, offset = 0): void {
  if (!target) return;
  const t = target.data;
  for (let i = 0; i < values.length; i++) t[offset + i]! += values[i]!;
}
