import { formatShape, sameShape } from '../tensor/tensor.js';
import { accumulate } from './grad.js';
import { fail } from './shape.js';
import type { NoAttrs, OpSpec } from './types.js';

export const relu: OpSpec<NoAttrs> = {
  arity: 1,
  params: () => [],
  shape: ([x]) => x!,
  macs: () => 0,
  reference({ out, inputs: [x] }) {
    const xd = x!.data;
    for (let i = 0; i < xd.length; i++) out.data[i] = xd[i]! > 0 ? xd[i]! : 0;
  },
  // Zero at x = 0, as PyTorch.
  backward({ gradOut, inputs: [x], gradInputs: [gx] }) {
    if (!gx) return;
    const xd = x!.data;
    for (let i = 0; i < xd.length; i++) if (xd[i]! > 0) gx.data[i]! += gradOut.data[i]!;
  },
};

/** Elementwise sum of two tensors of the same shape (the residual connection). */
export const add: OpSpec<NoAttrs> = {
  arity: 2,
  params: () => [],
  shape([a, b]) {
    if (!sameShape(a!, b!)) fail(`cannot add ${formatShape(a!)} and ${formatShape(b!)}: shapes differ`);
    return a!;
  },
  macs: () => 0,
  reference({ out, inputs: [a, b] }) {
    const ad = a!.data;
    const bd = b!.data;
    for (let i = 0; i < ad.length; i++) out.data[i] = ad[i]! + bd[i]!;
  },
  backward({ gradOut, gradInputs }) {
    for (const g of gradInputs) accumulate(g, gradOut.data);
  },
};

/** Concatenation along the channel axis (axis 1), in input order. */
export const concat: OpSpec<NoAttrs> = {
  arity: 'variadic',
  params: () => [],
  shape(xs) {
    const first = xs[0]!;
    let c = 0;
    for (const x of xs) {
      if (x.length !== first.length || x[0] !== first[0] || x.slice(2).some((d, i) => d !== first[i + 2])) {
        fail(`cannot concatenate ${xs.map(formatShape).join(' and ')} along channels: other dims differ`);
      }
      c += x[1]!;
    }
    return [first[0]!, c, ...first.slice(2)];
  },
  macs: () => 0,
  reference({ out, inputs }) {
    const n = out.shape[0]!;
    const per = out.size / n;
    for (let b = 0; b < n; b++) {
      let off = b * per;
      for (const x of inputs) {
        const len = x.size / n;
        out.data.set(x.data.subarray(b * len, (b + 1) * len), off);
        off += len;
      }
    }
  },
  backward({ gradOut, inputs, gradInputs }) {
    const n = gradOut.shape[0]!;
    const per = gradOut.size / n;
    for (let b = 0; b < n; b++) {
      let off = b * per;
      inputs.forEach((x, k) => {
        const len = x.size / n;
        accumulate(gradInputs[k], gradOut.data.subarray(off, off + len), b * len);
        off += len;
      });
    }
  },
};

/** [N, C, H, W] (or any rank >= 2) -> [N, C*H*W]. */
export const flatten: OpSpec<NoAttrs> = {
  arity: 1,
  params: () => [],
  shape([x]) {
    if (!x || x.length < 2)
      fail(`input must have a batch axis and at least one more, got ${x ? formatShape(x) : 'nothing'}`);
    return [x[0]!, x.slice(1).reduce((p, d) => p * d, 1)];
  },
  macs: () => 0,
  reference({ out, inputs: [x] }) {
    out.data.set(x!.data);
  },
  backward({ gradOut, gradInputs: [gx] }) {
    accumulate(gx, gradOut.data);
  },
};
