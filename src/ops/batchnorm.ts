import { formatShape } from '../tensor/tensor.js';
import { fail } from './shape.js';
import type { BatchNormAttrs, OpSpec } from './types.js';

/**
 * Batch norm over NCHW (or NC) channels. In inference it uses the running statistics; with ctx.training it
 * normalises with the batch's biased variance and updates the running buffers with the unbiased one, as PyTorch does.
 */
export const batchnorm: OpSpec<BatchNormAttrs> = {
  arity: 1,
  params: (a) => [
    { slot: 'weight', kind: 'parameter', shape: [a.channels] },
    { slot: 'bias', kind: 'parameter', shape: [a.channels] },
    { slot: 'running_mean', kind: 'buffer', shape: [a.channels] },
    { slot: 'running_var', kind: 'buffer', shape: [a.channels] },
  ],
  shape([x], a) {
    if (!x || (x.length !== 4 && x.length !== 2))
      fail(`input must be NCHW or NC, got ${x ? formatShape(x) : 'nothing'}`);
    if (x[1] !== a.channels) fail(`input ${formatShape(x)} has ${x[1]} channels, expected ${a.channels}`);
    return x;
  },
  macs: () => 0,
  reference({ out, inputs: [x], params, attrs: a, ctx }) {
    const [n, c] = x!.shape as [number, number];
    const hw = x!.shape.length === 4 ? x!.shape[2]! * x!.shape[3]! : 1;
    const gamma = params.weight!.data;
    const beta = params.bias!.data;
    const rm = params.running_mean!.data;
    const rv = params.running_var!.data;
    const xd = x!.data;
    const od = out.data;
    for (let ch = 0; ch < c; ch++) {
      let mean: number;
      let variance: number;
      if (ctx.training) {
        const stats = channelStats(xd, n, c, hw, ch);
        mean = stats.mean;
        variance = stats.variance;
        const count = n * hw;
        const unbiased = count > 1 ? (variance * count) / (count - 1) : variance;
        rm[ch] = (1 - a.momentum) * rm[ch]! + a.momentum * mean;
        rv[ch] = (1 - a.momentum) * rv[ch]! + a.momentum * unbiased;
      } else {
        mean = rm[ch]!;
        variance = rv[ch]!;
      }
      const scale = gamma[ch]! / Math.sqrt(variance + a.eps);
      const shift = beta[ch]! - mean * scale;
      for (let b = 0; b < n; b++) {
        const base = (b * c + ch) * hw;
        for (let i = 0; i < hw; i++) od[base + i] = xd[base + i]! * scale + shift;
      }
    }
  },
  // y = gamma * xhat + beta with xhat = (x - mean) / sqrt(var + eps). In inference mean and var are constants;
  // in training they are the batch's, functions of x, which adds the two mean terms to dL/dx. The running
  // buffers were updated by the forward and get no gradient.
  backward({ gradOut, inputs: [x], params, attrs: a, ctx, gradInputs: [gx], gradParams }) {
    const [n, c] = x!.shape as [number, number];
    const hw = x!.shape.length === 4 ? x!.shape[2]! * x!.shape[3]! : 1;
    const count = n * hw;
    const gamma = params.weight!.data;
    const xd = x!.data;
    const gy = gradOut.data;
    const gxd = gx?.data;
    for (let ch = 0; ch < c; ch++) {
      const { mean, variance } = ctx.training
        ? channelStats(xd, n, c, hw, ch)
        : { mean: params.running_mean!.data[ch]!, variance: params.running_var!.data[ch]! };
      const invStd = 1 / Math.sqrt(variance + a.eps);
      let sumGy = 0;
      let sumGyXhat = 0;
      for (let b = 0; b < n; b++) {
        const base = (b * c + ch) * hw;
        for (let i = 0; i < hw; i++) {
          sumGy += gy[base + i]!;
          sumGyXhat += gy[base + i]! * (xd[base + i]! - mean) * invStd;
        }
      }
      if (gradParams.weight) gradParams.weight.data[ch]! += sumGyXhat;
      if (gradParams.bias) gradParams.bias.data[ch]! += sumGy;
      if (!gxd) continue;
      const k = gamma[ch]! * invStd;
      const meanGy = ctx.training ? sumGy / count : 0;
      const meanGyXhat = ctx.training ? sumGyXhat / count : 0;
      for (let b = 0; b < n; b++) {
        const base = (b * c + ch) * hw;
        for (let i = 0; i < hw; i++) {
          const xhat = (xd[base + i]! - mean) * invStd;
          gxd[base + i]! += k * (gy[base + i]! - meanGy - xhat * meanGyXhat);
        }
      }
    }
  },
};

/** Mean and biased variance of one channel over batch and space (two passes, float64). */
export function channelStats(
  xd: Float32Array,
  n: number,
  c: number,
  hw: number,
  ch: number,
): { mean: number; variance: number } {
  let sum = 0;
  for (let b = 0; b < n; b++) {
    const base = (b * c + ch) * hw;
    for (let i = 0; i < hw; i++) sum += xd[base + i]!;
  }
  const mean = sum / (n * hw);
  let sq = 0;
  for (let b = 0; b < n; b++) {
    const base = (b * c + ch) * hw;
    for (let i = 0; i < hw; i++) {
      const d = xd[base + i]! - mean;
      sq += d * d;
    }
  }
  return { mean, variance: sq / (n * hw) };
}
