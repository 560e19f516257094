import { formatShape } from '../tensor/tensor.js';
import { accumulate } from './grad.js';
import { fail } from './shape.js';
import type { ChannelShuffleAttrs, OpSpec, ShuffleOrder } from './types.js';

/**
 * The input channel that output channel `c` takes, for C channels in g groups (n = C / g).
 * paper:   reshape (g, n) -> transpose -> flatten, so out[j*g + i] = in[i*n + j].
 * authors: reshape (n, g) -> transpose -> flatten, so out[j*n + i] = in[i*g + j] (the inverse).
 */
export function shuffleSource(c: number, channels: number, groups: number, order: ShuffleOrder): number {
  const n = channels / groups;
  return order === 'paper' ? (c % groups) * n + Math.floor(c / groups) : (c % n) * groups + Math.floor(c / n);
}

/** The whole permutation as an array: perm[out] = in. */
export function shufflePermutation(channels: number, groups: number, order: ShuffleOrder): Int32Array {
  const perm = new Int32Array(channels);
  for (let c = 0; c < channels; c++) perm[c] = shuffleSource(c, channels, groups, order);
  return perm;
}

/** Channel shuffle: a fixed permutation of channels with no arithmetic (its gradient is the inverse permutation). */
export const channelshuffle: OpSpec<ChannelShuffleAttrs> = {
  arity: 1,
  params: () => [],
  shape([x], a) {
    if (!x || x.length < 2) fail(`input must be NCHW, got ${x ? formatShape(x) : 'nothing'}`);
    if (x[1]! % a.groups)
      fail(`input ${formatShape(x)} has ${x[1]} channels, not divisible by groups=${a.groups}`);
    return x;
  },
  macs: () => 0,
  reference({ out, inputs: [x], attrs: a }) {
    const [n, c] = x!.shape as [number, number];
    const hw = x!.size / (n * c);
    const perm = shufflePermutation(c, a.groups, a.order);
    for (let b = 0; b < n; b++) {
      for (let oc = 0; oc < c; oc++) {
        const src = (b * c + perm[oc]!) * hw;
        out.data.set(x!.data.subarray(src, src + hw), (b * c + oc) * hw);
      }
    }
  },
  // out channel oc came from perm[oc], so its gradient goes back there: the inverse permutation.
  backward({ gradOut, attrs: a, gradInputs: [gx] }) {
    if (!gx) return;
    const [n, c] = gradOut.shape as [number, number];
    const hw = gradOut.size / (n * c);
    const perm = shufflePermutation(c, a.groups, a.order);
    for (let b = 0; b < n; b++) {
      for (let oc = 0; oc < c; oc++) {
        const at = (b * c + oc) * hw;
        accumulate(gx, gradOut.data.subarray(at, at + hw), (b * c + perm[oc]!) * hw);
      }
    }
  },
};
