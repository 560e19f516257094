import { formatShape } from '../tensor/tensor.js';
import { accumulate } from './grad.js';
import { expectRank, fail, windowOut } from './shape.js';
import type { AdaptiveAvgPool2dAttrs, AvgPool2dAttrs, NoAttrs, OpSpec, Pool2dAttrs } from './types.js';

function poolShape(x: readonly number[] | undefined, a: Pool2dAttrs): number[] {
  const [n, c, h, w] = expectRank(x, 4) as [number, number, number, number];
  if (a.padding[0] > a.kernel[0] / 2 || a.padding[1] > a.kernel[1] / 2) {
    fail(`padding ${a.padding.join('x')} must be at most half the kernel ${a.kernel.join('x')}`);
  }
  const oh = windowOut(h, a.kernel[0], a.stride[0], a.padding[0], 1, a.ceilMode);
  const ow = windowOut(w, a.kernel[1], a.stride[1], a.padding[1], 1, a.ceilMode);
  if (oh < 1 || ow < 1) fail(`input ${formatShape(x!)} is smaller than the ${a.kernel.join('x')} window`);
  return [n, c, oh, ow];
}

/** Visits every output cell with its window clipped to the padded ([lo, hi) incl. padding) and real input. */
function eachWindow(
  dims: { planes: number; h: number; w: number; oh: number; ow: number },
  a: Pool2dAttrs,
  visit: (plane: number, o: number, y0: number, y1: number, x0: number, x1: number, padded: number) => void,
): void {
  const { planes, h, w, oh, ow } = dims;
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < oh; y++) {
      const py0 = y * a.stride[0] - a.padding[0];
      const py1 = Math.min(py0 + a.kernel[0], h + a.padding[0]);
      for (let x = 0; x < ow; x++) {
        const px0 = x * a.stride[1] - a.padding[1];
        const px1 = Math.min(px0 + a.kernel[1], w + a.padding[1]);
        const padded = (py1 - py0) * (px1 - px0);
        visit(
          p,
          (p * oh + y) * ow + x,
          Math.max(py0, 0),
          Math.min(py1, h),
          Math.max(px0, 0),
          Math.min(px1, w),
          padded,
        );
      }
    }
  }
}

function dimsOf(xs: readonly number[], os: readonly number[]) {
  return { planes: xs[0]! * xs[1]!, h: xs[2]!, w: xs[3]!, oh: os[2]!, ow: os[3]! };
}

/** Max pool with PyTorch semantics (padding acts as -infinity). */
export const maxpool2d: OpSpec<Pool2dAttrs> = {
  arity: 1,
  params: () => [],
  shape: ([x], a) => poolShape(x, a),
  macs: () => 0,
  reference({ out, inputs: [x], attrs: a }) {
    const d = dimsOf(x!.shape, out.shape);
    const xd = x!.data;
    eachWindow(d, a, (p, o, y0, y1, x0, x1) => {
      let m = -Infinity;
      const base = p * d.h * d.w;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m = Math.max(m, xd[base + y * d.w + x]!);
      out.data[o] = m;
    });
  },
  // All of a window's gradient goes to its maximum; on ties to the first in row-major order, as PyTorch.
  backward({ gradOut, inputs: [x], attrs: a, gradInputs: [gx] }) {
    if (!gx) return;
    const d = dimsOf(x!.shape, gradOut.shape);
    const xd = x!.data;
    const acc = new Float64Array(x!.size);
    eachWindow(d, a, (p, o, y0, y1, x0, x1) => {
      const base = p * d.h * d.w;
      let at = base + y0 * d.w + x0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) if (xd[base + y * d.w + x]! > xd[at]!) at = base + y * d.w + x;
      }
      acc[at]! += gradOut.data[o]!;
    });
    accumulate(gx, acc);
  },
};

/** Average pool with PyTorch semantics, including count_include_pad (divide by the padded window). */
export const avgpool2d: OpSpec<AvgPool2dAttrs> = {
  arity: 1,
  params: () => [],
  shape: ([x], a) => poolShape(x, a),
  macs: () => 0,
  reference({ out, inputs: [x], attrs: a }) {
    const d = dimsOf(x!.shape, out.shape);
    const xd = x!.data;
    eachWindow(d, a, (p, o, y0, y1, x0, x1, padded) => {
      let s = 0;
      const base = p * d.h * d.w;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) s += xd[base + y * d.w + x]!;
      out.data[o] = s / (a.countIncludePad ? padded : (y1 - y0) * (x1 - x0));
    });
  },
  backward({ gradOut, inputs: [x], attrs: a, gradInputs: [gx] }) {
    if (!gx) return;
    const d = dimsOf(x!.shape, gradOut.shape);
    const acc = new Float64Array(x!.size);
    eachWindow(d, a, (p, o, y0, y1, x0, x1, padded) => {
      const g = gradOut.data[o]! / (a.countIncludePad ? padded : (y1 - y0) * (x1 - x0));
      const base = p * d.h * d.w;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) acc[base + y * d.w + x]! += g;
    });
    accumulate(gx, acc);
  },
};

/** Mean over H and W, keeping NCHW with H = W = 1 (PyTorch's AdaptiveAvgPool2d(1)). */
export const globalavgpool: OpSpec<NoAttrs> = {
  arity: 1,
  params: () => [],
  shape([x]) {
    const [n, c] = expectRank(x, 4) as [number, number];
    return [n, c, 1, 1];
  },
  macs: () => 0,
  reference({ out, inputs: [x] }) {
    const hw = x!.shape[2]! * x!.shape[3]!;
    const xd = x!.data;
    for (let p = 0; p < out.size; p++) {
      let s = 0;
      for (let i = 0; i < hw; i++) s += xd[p * hw + i]!;
      out.data[p] = s / hw;
    }
  },
  backward({ gradOut, inputs: [x], gradInputs: [gx] }) {
    if (!gx) return;
    const hw = x!.shape[2]! * x!.shape[3]!;
    for (let p = 0; p < gradOut.size; p++) {
      const g = gradOut.data[p]! / hw;
      for (let i = 0; i < hw; i++) gx.data[p * hw + i]! += g;
    }
  },
};

/** PyTorch's adaptive pooling cells: output i of `out` covers inputs [floor(i*n/out), ceil((i+1)*n/out)). */
export function adaptiveCell(i: number, n: number, out: number): [number, number] {
  return [Math.floor((i * n) / out), Math.ceil(((i + 1) * n) / out)];
}

/**
 * Adaptive average pooling along one axis of `n` into `out` cells as a matrix of 1 / cell size: [out, n], or
 * [n, out] transposed (what ONNX export writes for cells AveragePool cannot express, and import recognises).
 */
export function adaptiveAveraging(n: number, out: number, transposed: boolean): Float32Array {
  const m = new Float32Array(n * out);
  for (let i = 0; i < out; i++) {
    const [a, b] = adaptiveCell(i, n, out);
    for (let k = a; k < b; k++) m[transposed ? k * out + i : i * n + k] = 1 / (b - a);
  }
  return m;
}

/** PyTorch's AdaptiveAvgPool2d: cell i covers [floor(i*H/oh), ceil((i+1)*H/oh)) (adaptiveCell). */
export const adaptiveavgpool2d: OpSpec<AdaptiveAvgPool2dAttrs> = {
  arity: 1,
  params: () => [],
  shape([x], a) {
    const [n, c] = expectRank(x, 4) as [number, number];
    return [n, c, a.output[0], a.output[1]];
  },
  macs: () => 0,
  reference({ out, inputs: [x], attrs: a }) {
    const [n, c, h, w] = x!.shape as [number, number, number, number];
    const [oh, ow] = a.output;
    const xd = x!.data;
    for (let p = 0; p < n * c; p++) {
      for (let i = 0; i < oh; i++) {
        const [y0, y1] = adaptiveCell(i, h, oh);
        for (let j = 0; j < ow; j++) {
          const [x0, x1] = adaptiveCell(j, w, ow);
          let s = 0;
          for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) s += xd[(p * h + y) * w + x]!;
          out.data[(p * oh + i) * ow + j] = s / ((y1 - y0) * (x1 - x0));
        }
      }
    }
  },
  // Cells may overlap (when H is not a multiple of oh), so an input can collect from several.
  backward({ gradOut, inputs: [x], attrs: a, gradInputs: [gx] }) {
    if (!gx) return;
    const [n, c, h, w] = x!.shape as [number, number, number, number];
    const [oh, ow] = a.output;
    const acc = new Float64Array(x!.size);
    for (let p = 0; p < n * c; p++) {
      for (let i = 0; i < oh; i++) {
        const [y0, y1] = adaptiveCell(i, h, oh);
        for (let j = 0; j < ow; j++) {
          const [x0, x1] = adaptiveCell(j, w, ow);
          const g = gradOut.data[(p * oh + i) * ow + j]! / ((y1 - y0) * (x1 - x0));
          for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) acc[(p * h + y) * w + x]! += g;
        }
      }
    }
    accumulate(gx, acc);
  },
};
