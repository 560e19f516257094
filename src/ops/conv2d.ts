import { formatShape } from '../tensor/tensor.js';
import { accumulate } from './grad.js';
import { expectRank, fail, windowOut } from './shape.js';
import type { Conv2dAttrs, OpSpec } from './types.js';

function outSize(h: number, w: number, a: Conv2dAttrs): [number, number] {
  return [
    windowOut(h, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0], false),
    windowOut(w, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1], false),
  ];
}

/** 2-D convolution, NCHW, weight OIHW = [out, in/groups, kh, kw]; groups = in = out is depthwise. */
export const conv2d: OpSpec<Conv2dAttrs> = {
  arity: 1,
  params: (a) => [
    {
      slot: 'weight',
      kind: 'parameter',
      shape: [a.outChannels, a.inChannels / a.groups, a.kernel[0], a.kernel[1]],
    },
    { slot: 'bias', kind: 'parameter', shape: a.bias ? [a.outChannels] : null },
  ],
  shape([x], a) {
    const [n, c, h, w] = expectRank(x, 4) as [number, number, number, number];
    if (a.inChannels % a.groups || a.outChannels % a.groups) {
      fail(`groups=${a.groups} must divide in_channels=${a.inChannels} and out_channels=${a.outChannels}`);
    }
    if (c !== a.inChannels) fail(`input ${formatShape(x!)} has ${c} channels, expected ${a.inChannels}`);
    const [oh, ow] = outSize(h, w, a);
    if (oh < 1 || ow < 1) {
      fail(
        `input ${formatShape(x!)} is smaller than the ${a.kernel[0]}x${a.kernel[1]} kernel with padding ${a.padding[0]}`,
      );
    }
    return [n, a.outChannels, oh, ow];
  },
  macs: (_in, out, a) => {
    const [n, o, oh, ow] = out as [number, number, number, number];
    return n * o * oh * ow * (a.inChannels / a.groups) * a.kernel[0] * a.kernel[1];
  },
  reference({ out, inputs: [x], params, attrs: a }) {
    const [n, c, h, w] = x!.shape as [number, number, number, number];
    const [, o, oh, ow] = out.shape as [number, number, number, number];
    const [kh, kw] = a.kernel;
    const [sh, sw] = a.stride;
    const [ph, pw] = a.padding;
    const [dh, dw] = a.dilation;
    const cg = c / a.groups;
    const og = o / a.groups;
    const wt = params.weight!.data;
    const bias = params.bias?.data;
    const xd = x!.data;
    const od = out.data;
    // Accumulate in float64 so the oracle is more exact than any float32 backend it checks.
    const acc = new Float64Array(oh * ow);
    for (let b = 0; b < n; b++) {
      for (let oc = 0; oc < o; oc++) {
        acc.fill(bias ? bias[oc]! : 0);
        const g = Math.floor(oc / og);
        for (let icg = 0; icg < cg; icg++) {
          const plane = (b * c + g * cg + icg) * h * w;
          for (let i = 0; i < kh; i++) {
            for (let j = 0; j < kw; j++) {
              const wv = wt[((oc * cg + icg) * kh + i) * kw + j]!;
              const offH = i * dh - ph;
              const offW = j * dw - pw;
              // Output columns whose input column stays inside [0, w).
              const x0 = Math.max(0, Math.ceil(-offW / sw));
              const x1 = Math.min(ow, Math.floor((w - 1 - offW) / sw) + 1);
              for (let y = 0; y < oh; y++) {
                const iy = y * sh + offH;
                if (iy < 0 || iy >= h) continue;
                const row = plane + iy * w + offW;
                const ar = y * ow;
                for (let xx = x0; xx < x1; xx++) acc[ar + xx]! += wv * xd[row + xx * sw]!;
              }
            }
          }
        }
        od.set(acc, (b * o + oc) * oh * ow);
      }
    }
  },
  // The forward's loops with the multiply-add turned around: each weight tap sums gy * x over its output
  // positions, and each input position collects w * gy from every tap that read it.
  backward({ gradOut, inputs: [x], params, attrs: a, gradInputs: [gx], gradParams }) {
    const [n, c, h, w] = x!.shape as [number, number, number, number];
    const [, o, oh, ow] = gradOut.shape as [number, number, number, number];
    const [kh, kw] = a.kernel;
    const [sh, sw] = a.stride;
    const [ph, pw] = a.padding;
    const [dh, dw] = a.dilation;
    const cg = c / a.groups;
    const og = o / a.groups;
    const wt = params.weight!.data;
    const gwt = gradParams.weight?.data;
    const xd = x!.data;
    const gy = gradOut.data;
    const gxAcc = gx ? new Float64Array(x!.size) : undefined;
    for (let oc = 0; oc < o; oc++) {
      const g = Math.floor(oc / og);
      for (let icg = 0; icg < cg; icg++) {
        for (let i = 0; i < kh; i++) {
          for (let j = 0; j < kw; j++) {
            const wi = ((oc * cg + icg) * kh + i) * kw + j;
            const wv = wt[wi]!;
            const offH = i * dh - ph;
            const offW = j * dw - pw;
            const x0 = Math.max(0, Math.ceil(-offW / sw));
            const x1 = Math.min(ow, Math.floor((w - 1 - offW) / sw) + 1);
            let gw = 0;
            for (let b = 0; b < n; b++) {
              const plane = (b * c + g * cg + icg) * h * w;
              for (let y = 0; y < oh; y++) {
                const iy = y * sh + offH;
                if (iy < 0 || iy >= h) continue;
                const row = plane + iy * w + offW;
                const gr = ((b * o + oc) * oh + y) * ow;
                for (let xx = x0; xx < x1; xx++) {
                  const gv = gy[gr + xx]!;
                  gw += gv * xd[row + xx * sw]!;
                  if (gxAcc) gxAcc[row + xx * sw]! += wv * gv;
                }
              }
            }
            if (gwt) gwt[wi]! += gw;
          }
        }
      }
    }
    if (gxAcc) accumulate(gx, gxAcc);
    const gb = gradParams.bias?.data;
    if (gb) {
      for (let oc = 0; oc < o; oc++) {
        let s = 0;
        for (let b = 0; b < n; b++) {
          const base = (b * o + oc) * oh * ow;
          for (let k = 0; k < oh * ow; k++) s += gy[base + k]!;
        }
        gb[oc]! += s;
      }
    }
  },
};
