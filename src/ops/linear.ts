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
  // dx = gy W, dW = gy^T x, db = column sums of gy.
  backward({ gradOut, inputs: [x], params, attrs: a, gradInputs: [gx], gradParams }) {
    const n = x!.shape[0]!;
    const { inFeatures: k, outFeatures: m } = a;
    const wd = params.weight!.data;
    const xd = x!.data;
    const gy = gradOut.data;
    if (gx) {
      for (let b = 0; b < n; b++) {
        for (let i = 0; i < k; i++) {
          let s = 0;
          for (let o = 0; o < m; o++) s += gy[b * m + o]! * wd[o * k + i]!;
          gx.data[b * k + i]! += s;
        }
      }
    }
    const gw = gradParams.weight?.data;
    const gb = gradParams.bias?.data;
    for (let o = 0; o < m; o++) {
      if (gw) {
        for (let i = 0; i < k; i++) {
          let s = 0;
          for (let b = 0; b < n; b++) s += gy[b * m + o]! * xd[b * k + i]!;
          gw[o * k + i]! += s;
        }
      }
      if (gb) {
        let s = 0;
        for (let b = 0; b < n; b++) s += gy[b * m + o]!;
        gb[o]! += s;
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
  // dx = p * (gy - sum(gy * p)), with p recomputed in float64 from x rather than read back from float32 out.
  backward({ gradOut, inputs: [x], gradInputs: [gx] }) {
    if (!gx) return;
    const [n, k] = x!.shape as [number, number];
    const inner = x!.size / (n * k);
    const xd = x!.data;
    const p = new Float64Array(k);
    for (let b = 0; b < n; b++) {
      for (let s = 0; s < inner; s++) {
        const at = (i: number) => (b * k + i) * inner + s;
        let m = -Infinity;
        for (let i = 0; i < k; i++) m = Math.max(m, xd[at(i)]!);
        let z = 0;
        for (let i = 0; i < k; i++) {
          p[i] = Math.exp(xd[at(i)]! - m);
          z += p[i]!;
        }
        let dot = 0;
        for (let i = 0; i < k; i++) {
          p[i]! /= z;
          dot += gradOut.data[at(i)]! * p[i]!;
        }
        for (let i = 0; i < k; i++) gx.data[at(i)]! += p[i]! * (gradOut.data[at(i)]! - dot);
      }
    }
  },
};
