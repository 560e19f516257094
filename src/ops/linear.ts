import { formatShape } from '../tensor/tensor.js';
import { expectRank, fail } from './shape.js';
import type { LinearAttrs, NoAttrs, OpSpec } from './types.js';

/** y = x W^T + b with W = [out, in], as torch.nn.Linear. */
export const linear: OpSpec<LinearAttrs> = {
  arity: 1,
  params: (a) => [
    { slot: 'weight', kind: 'parameter', shape: [a.outFeatures, a.inFeatures] },
    { slot: 'bias', kind: 'parameter', shape: a.bias ? [a.outFeatures] : null },
  ],
  shape([x], a) {
    const [n, f] = expectRank(x, 2) as [number, number];
    if (f !== a.inFeatures) fail(`input ${formatShape(x!)} has ${f} features, expected ${a.inFeatures}`);
    return [n, a.outFeatures];
  },
  macs: (_in, out, a) => out[0]! * a.outFeatures * a.inFeatures,
  reference({ out, inputs: [x], params, attrs: a }) {
    const n = x!.shape[0]!;
    const { inFeatures: k, outFeatures: m } = a;
    const wd = params.weight!.data;
    const bias = params.bias?.data;
    const xd = x!.data;
    for (let b = 0; b < n; b++) {
      for (let o = 0; o < m; o++) {
        let s = bias ? bias[o]! : 0;
        for (let i = 0; i < k; i++) s += xd[b * k + i]! * wd[o * k + i]!;
        out.data[b * m + o] = s;
      }
    }
  },
};

/** Softmax over axis 1 of [N, K] (or over channels of NCHW), max-subtracted for stability. */
export const softmax: OpSpec<NoAttrs> = {
  arity: 1,
  params: () => [],
  shape([x]) {
    if (!x || x.length < 2) fail(`input must have at least 2 axes, got ${x ? formatShape(x) : 'nothing'}`);
    return x;
  },
  macs: () => 0,
  reference({ out, inputs: [x] }) {
    const [n, k] = x!.shape as [number, number];
    const inner = x!.size / (n * k);
    const xd = x!.data;
    for (let b = 0; b < n; b++) {
      for (let s = 0; s < inner; s++) {
        const at = (i: number) => (b * k + i) * inner + s;
        let m = -Infinity;
        for (let i = 0; i < k; i++) m = Math.max(m, xd[at(i)]!);
        let z = 0;
        for (let i = 0; i < k; i++) z += Math.exp(xd[at(i)]! - m);
        for (let i = 0; i < k; i++) out.data[at(i)] = Math.exp(xd[at(i)]! - m) / z;
      }
    }
  },
};
