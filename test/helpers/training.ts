import assert from 'node:assert/strict';
import type { ModelOptions } from '../../src/models/registry.js';
import { seededRandom, Tensor, type Shape } from '../../src/tensor/tensor.js';

/** Deep copies of weights (each plan updates BN running statistics in the map it is given). */
export const copyWeights = (w: ReadonlyMap<string, Tensor>) =>
  new Map([...w].map(([k, t]) => [k, new Tensor(t.shape, t.data.slice())]));

/** Uniform [-1, 1) from a seed. */
export function randomInput(shape: Shape, seed: number): Tensor {
  const rnd = seededRandom(seed);
  return new Tensor(
    shape,
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1),
  );
}

/** max |a - b| over max |b| + floor: gradients that are ~0 in exact arithmetic are float32 noise in both. */
export function maxError(a: Float32Array, b: Float32Array, floor: number): number {
  assert.equal(a.length, b.length, 'sizes differ');
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / (scale + floor);
}

export interface TrainingCase {
  name: string;
  arch: string;
  options: ModelOptions;
  input: Shape;
}

/** The authors' unit with its shuffle after the depthwise conv (folded into the next 1x1 conv). */
export const AUTHORS_UNIT: TrainingCase = {
  name: 'g=3 0.25x, small-input stem, 1x28x28, batch 4',
  arch: 'shufflenet_v1_g3_0.25x',
  options: { inputChannels: 1, numClasses: 10, smallInput: true, inputSize: [28, 28] },
  input: [4, 1, 28, 28],
};

/** The paper's unit: the shuffle before the depthwise conv, in the paper's order. */
export const PAPER_UNIT = (batch: number): TrainingCase => ({
  name: `g=8 0.25x, the paper's order before the depthwise conv, 3x32x32, batch ${batch}`,
  arch: 'shufflenet_v1_g8_0.25x',
  options: {
    inputChannels: 3,
    numClasses: 10,
    smallInput: true,
    inputSize: [32, 32],
    shufflePosition: 'before-dw',
    shuffleOrder: 'paper',
  },
  input: [batch, 3, 32, 32],
});
