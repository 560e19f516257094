import {
  OPS,
  type AvgPool2dAttrs,
  type BatchNormAttrs,
  type Conv2dAttrs,
  type KernelArgs,
  type LinearAttrs,
  type OpName,
  type Pool2dAttrs,
} from '../../ops/index.js';
import type { Backend } from '../backend.js';
import type { WasmKernels } from './module.js';

const SUPPORTED: ReadonlySet<OpName> = new Set<OpName>([
  'conv2d',
  'batchnorm',
  'relu',
  'maxpool2d',
  'avgpool2d',
  'globalavgpool',
  'linear',
  'add',
]);

/**
 * The WASM kernels behind the Backend interface, op by op, for the conformance suite: each call copies its
 * tensors into the module's memory (bump allocation from heapBase, growing the memory as needed), runs every
 * one of `parts` parts in turn and copies the result out. Models run faster through a planner that keeps
 * activations in the memory and fuses ops. Dilated convolutions and training-mode batch norm run the
 * reference kernels.
 */
export function createWasmBackend(k: WasmKernels, parts = 1): Backend {
  const e = k.exports;
  let top = k.heapBase;

  function alloc(bytes: number): number {
    const p = (top + 15) & ~15;
    top = p + bytes;
    const short = top - k.memory.buffer.byteLength;
    if (short > 0) k.memory.grow(Math.ceil(short / 65536));
    return p;
  }
  function put(data: Float32Array | undefined): number {
    if (!data) return 0;
    const p = alloc(data.byteLength);
    new Float32Array(k.memory.buffer, p, data.length).set(data);
    return p;
  }
  function get(p: number, into: Float32Array): void {
    into.set(new Float32Array(k.memory.buffer, p, into.length));
  }
  function each(fn: (part: number) => void): void {
    for (let part = 0; part < parts; part++) fn(part);
  }

  function conv2d({ out, inputs: [x], params, attrs: a }: KernelArgs<Conv2dAttrs>): void {
    const [n, c, h, w] = x!.shape as [number, number, number, number];
    const [, o, oh, ow] = out.shape as [number, number, number, number];
    const [kh, kw] = a.kernel;
    const [sh, sw] = a.stride;
    const [ph, pw] = a.padding;
    const px = put(x!.data);
    const pwt = put(params.weight!.data);
    const pb = put(params.bias?.data);
    const py = alloc(out.data.byteLength);
    if (a.groups === c && o === c && kh === 3 && kw === 3 && ph === 1 && pw === 1 && sh === sw && sh <= 2) {
      each((p) => e.depthwise3x3(px, c, 0, pwt, pb, py, o, 0, 0, n, c, h, w, sh, 0, p, parts));
    } else if (kh === 1 && kw === 1 && sh === 1 && sw === 1 && ph === 0 && pw === 0) {
      each((p) => e.pointwise(px, c, 0, 0, pwt, pb, py, o, 0, 0, n, c, o, a.groups, h * w, 0, p, parts));
    } else {
      const scratch = alloc(e.conv2dScratchBytes(c, kh, kw, oh, ow, a.groups, parts));
      const geometry = [kh, kw, sh, sw, ph, pw, oh, ow] as const;
      each((p) =>
        e.conv2d(px, c, h, w, pwt, pb, py, o, 0, n, o, ...geometry, a.groups, 0, scratch, p, parts),
      );
    }
    get(py, out.data);
  }

  function batchnorm({ out, inputs: [x], params, attrs: a }: KernelArgs<BatchNormAttrs>): void {
    const [n, c] = x!.shape as [number, number];
    const hw = x!.size / (n * c);
    const scale = new Float32Array(c);
    const shift = new Float32Array(c);
    for (let i = 0; i < c; i++) {
      const s = params.weight!.data[i]! / Math.sqrt(params.running_var!.data[i]! + a.eps);
      scale[i] = s;
      shift[i] = params.bias!.data[i]! - params.running_mean!.data[i]! * s;
    }
    const px = put(x!.data);
    const ps = put(scale);
    const pt = put(shift);
    each((p) => e.channelAffine(px, n, c, hw, ps, pt, px, 0, p, parts));
    get(px, out.data);
  }

  function pool(
    op: 'maxpool2d' | 'avgpool2d',
    { out, inputs: [x], attrs: a }: KernelArgs<Pool2dAttrs>,
  ): void {
    const [n, c, h, w] = x!.shape as [number, number, number, number];
    const [, , oh, ow] = out.shape as [number, number, number, number];
    const px = put(x!.data);
    const py = alloc(out.data.byteLength);
    const geometry = [...a.kernel, ...a.stride, ...a.padding, oh, ow] as const;
    if (op === 'maxpool2d') each((p) => e.maxpool2d(px, c, 0, py, c, 0, n, c, h, w, ...geometry, p, parts));
    else {
      const include = (a as AvgPool2dAttrs).countIncludePad;
      each((p) => e.avgpool2d(px, c, 0, py, c, 0, n, c, h, w, ...geometry, include, p, parts));
    }
    get(py, out.data);
  }

  function linear({ out, inputs: [x], params, attrs: a }: KernelArgs<LinearAttrs>): void {
    const n = x!.shape[0]!;
    const px = put(x!.data);
    const pw = put(params.weight!.data);
    const pb = put(params.bias?.data);
    const py = alloc(out.data.byteLength);
    each((p) => e.linear(px, n, a.inFeatures, pw, pb, py, a.outFeatures, 0, p, parts));
    get(py, out.data);
  }

  return {
    name: `wasm ${k.relaxed ? 'relaxed-simd' : 'simd'}${k.shared ? ' shared' : ''}, ${parts} part${parts > 1 ? 's' : ''}`,
    supports: (op) => SUPPORTED.has(op),
    run(op, args) {
      top = k.heapBase;
      const fallback = () => (OPS[op].reference as (a: typeof args) => void)(args);
      switch (op) {
        case 'conv2d': {
          const a = args.attrs as Conv2dAttrs;
          return a.dilation[0] === 1 && a.dilation[1] === 1
            ? conv2d(args as KernelArgs<Conv2dAttrs>)
            : fallback();
        }
        case 'batchnorm':
          return args.ctx.training ? fallback() : batchnorm(args as KernelArgs<BatchNormAttrs>);
        case 'maxpool2d':
        case 'avgpool2d':
          return pool(op, args as KernelArgs<Pool2dAttrs>);
        case 'linear':
          return linear(args as KernelArgs<LinearAttrs>);
        case 'relu': {
          const x = put(args.inputs[0]!.data);
          each((p) => e.relu(x, x, args.out.size, p, parts));
          return get(x, args.out.data);
        }
        case 'add': {
          const a = put(args.inputs[0]!.data);
          const b = put(args.inputs[1]!.data);
          each((p) => e.add(a, b, a, args.out.size, 0, p, parts));
          return get(a, args.out.data);
        }
        case 'globalavgpool': {
          const [n, c, h, w] = args.inputs[0]!.shape as [number, number, number, number];
          const x = put(args.inputs[0]!.data);
          const y = alloc(args.out.data.byteLength);
          e.globalAvgPool(x, n, c, h * w, y);
          return get(y, args.out.data);
        }
        default:
          return fallback();
      }
    },
  };
}
