import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { version_cpu } from '@tensorflow/tfjs-backend-cpu';
import { setThreadsCount, setWasmPaths, version_wasm } from '@tensorflow/tfjs-backend-wasm';
import { inferShapes, INPUT, type Graph, type Node } from '../../src/graph/graph.js';
import type { Conv2dAttrs } from '../../src/ops/types.js';
import type { Shape, Tensor } from '../../src/tensor/tensor.js';
import type { Runner, RunnerFactory, RunnerOptions } from './types.js';

type Backend = 'wasm' | 'cpu';
type Step = { out: string; inputs: string[]; f: (xs: tf.Tensor[]) => tf.Tensor };
type Activation = 'linear' | 'relu';

/**
 * Threads: tfjs-backend-wasm 4.22 turns multithreading off in Node (flags_wasm: WASM_HAS_MULTITHREAD_SUPPORT
 * is false when IS_NODE, tfjs issue #3830). Forcing the flag on fails too: emscripten starts its pthread
 * workers from a blob: URL, and Node's worker_threads.Worker rejects those (ERR_WORKER_PATH). So one thread.
 */
const NO_THREADS =
  'TF.js wasm runs one thread in Node: tfjs-backend-wasm 4.22 disables threads when IS_NODE, and forcing them ' +
  "fails (its pthread workers load from blob: URLs, which Node's Worker rejects)";

let wasmConfigured = false;

async function useBackend(backend: Backend, threads: number): Promise<void> {
  if (threads !== 1 && backend === 'wasm') throw new Error(NO_THREADS);
  if (threads !== 1) throw new Error('the TF.js cpu backend is plain single-threaded JS');
  if (backend === 'wasm' && !wasmConfigured) {
    // The Node build reads the .wasm with fs from this prefix: the installed package, so no network.
    setWasmPaths(`${dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'))}/`);
    setThreadsCount(1);
    wasmConfigured = true;
  }
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend '${backend}' failed to initialise`);
}

/** TF.js (NHWC) built op by op from our graph, with the fusions TF.js offers: BN folded, conv/matmul + bias + ReLU. */
export function tfjsFactory(backend: Backend): RunnerFactory {
  const name = backend === 'wasm' ? 'tfjs-wasm' : 'tfjs-cpu';
  return {
    name,
    async create(o: RunnerOptions): Promise<Runner> {
      await useBackend(backend, o.threads);
      const shapes = inferShapes(o.graph, [o.batch, o.graph.inputChannels, o.height, o.width]);
      const kept: tf.Tensor[] = [];
      const steps = compile(o.graph, o.weights, shapes, kept);
      const lastUse = new Map<string, number>();
      steps.forEach((s, i) => s.inputs.forEach((v) => lastUse.set(v, i)));
      const infer = () => {
        if (tf.getBackend() !== backend)
          throw new Error(`${name}: the TF.js backend is now ${tf.getBackend()}`);
        const out = tf.tidy(() => {
          const x = tf.tensor4d(o.input, shapes.get(INPUT) as [number, number, number, number]);
          const values = new Map<string, tf.Tensor>([[INPUT, tf.transpose(x, [0, 2, 3, 1])]]);
          x.dispose();
          steps.forEach((s, i) => {
            values.set(s.out, s.f(s.inputs.map((v) => values.get(v)!)));
            // Free as TF.js's own graph executor does, so memory (and cache) use is comparable.
            for (const v of s.inputs)
              if (lastUse.get(v) === i && v !== o.graph.output) values.get(v)!.dispose();
          });
          const y = values.get(o.graph.output)!;
          return y.rank === 4 ? tf.transpose(y, [0, 3, 1, 2]) : y;
        });
        const data = out.dataSync() as Float32Array;
        out.dispose();
        return data;
      };
      return {
        name,
        backend:
          backend === 'wasm'
            ? `TF.js ${tf.version_core}, wasm backend ${version_wasm} (XNNPACK, SIMD, 1 thread)`
            : `TF.js ${tf.version_core}, cpu backend ${version_cpu} (plain JS)`,
        threads: o.threads,
        batch: o.batch,
        run: () => void infer(),
        output: infer,
        close: () => kept.forEach((t) => t.dispose()),
      };
    },
  };
}

export const tfjsWasm = tfjsFactory('wasm');
export const tfjsCpu = tfjsFactory('cpu');

function compile(graph: Graph, weights: Map<string, Tensor>, shapes: Map<string, Shape>, kept: tf.Tensor[]) {
  const keep = <T extends tf.Tensor>(t: T) => (kept.push(t), t);
  const param = (n: Node, slot: string) => {
    const key = n.params[slot];
    return key === undefined ? undefined : weights.get(key)!.data;
  };
  const consumers = new Map<string, Node[]>();
  for (const n of graph.nodes) for (const v of n.inputs) consumers.set(v, [...(consumers.get(v) ?? []), n]);
  // The node that alone reads `v`, if it has op `op`: such a node can be fused into v's producer.
  const sole = (v: string, op: Node['op']) => {
    const c = consumers.get(v);
    return v !== graph.output && c?.length === 1 && c[0]!.op === op ? c[0] : undefined;
  };
  const absorbed = new Set<Node>();
  const steps: Step[] = [];
  const step = (out: string, inputs: string[], f: Step['f']) => steps.push({ out, inputs, f });

  for (const node of graph.nodes) {
    if (absorbed.has(node)) continue;
    const x = node.inputs;
    switch (node.op) {
      case 'conv2d': {
        const bn = sole(node.name, 'batchnorm');
        const relu = sole(bn?.name ?? node.name, 'relu');
        const out = (relu ?? bn ?? node).name;
        for (const n of [bn, relu]) if (n) absorbed.add(n);
        const w = Float32Array.from(param(node, 'weight')!);
        const b = Float32Array.from(param(node, 'bias') ?? new Float32Array(node.attrs.outChannels));
        if (bn) foldBn(w, b, bn, param);
        step(out, x, conv(node.attrs, w, b, relu ? 'relu' : 'linear', keep));
        break;
      }
      case 'linear': {
        const relu = sole(node.name, 'relu');
        if (relu) absorbed.add(relu);
        const { inFeatures: k, outFeatures: m } = node.attrs;
        const w = param(node, 'weight')!;
        const wt = new Float32Array(k * m);
        for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) wt[j * m + i] = w[i * k + j]!;
        const b = keep(tf.tensor1d(param(node, 'bias') ?? new Float32Array(m)));
        const wT = keep(tf.tensor2d(wt, [k, m]));
        const activation: Activation = relu ? 'relu' : 'linear';
        step((relu ?? node).name, x, ([v]) =>
          tf.fused.matMul({ a: v as tf.Tensor2D, b: wT, bias: b, activation }),
        );
        break;
      }
      case 'batchnorm': {
        const c = node.attrs.channels;
        const scale = new Float32Array(c).fill(1);
        const shift = new Float32Array(c);
        foldBn(scale, shift, node, param);
        const [s, t] = [keep(tf.tensor1d(scale)), keep(tf.tensor1d(shift))];
        step(node.name, x, ([v]) => tf.add(tf.mul(v!, s), t));
        break;
      }
      case 'relu':
        step(node.name, x, ([v]) => tf.relu(v!));
        break;
      case 'maxpool2d':
      case 'avgpool2d': {
        const a = node.attrs;
        const [ph, pw] = a.padding;
        const max = node.op === 'maxpool2d';
        const countPad = node.op === 'avgpool2d' && node.attrs.countIncludePad;
        if (a.ceilMode) throw new Error(`${node.name}: ceil_mode pooling is not mapped to TF.js`);
        if (!max && !countPad && ph !== pw) throw new Error(`${node.name}: uneven padding is not mapped`);
        const k = a.kernel as [number, number];
        const st = a.stride as [number, number];
        const pool = (v: tf.Tensor4D, pad: 'valid' | number) =>
          max ? tf.maxPool(v, k, st, pad) : tf.avgPool(v, k, st, pad);
        // TF pools leave padded cells out (as PyTorch's max pool and count_include_pad=False do); PyTorch's
        // default average pool divides by the whole window: zeros that count, so pad explicitly.
        step(node.name, x, ([v]) => {
          const t = v as tf.Tensor4D;
          if (ph === 0 && pw === 0) return pool(t, 'valid');
          if (countPad) return pool(padHW(t, ph, pw, 0), 'valid');
          if (ph === pw) return pool(t, ph);
          return pool(padHW(t, ph, pw, -Infinity), 'valid');
        });
        break;
      }
      case 'globalavgpool':
        step(node.name, x, ([v]) => tf.mean(v!, [1, 2], true));
        break;
      case 'adaptiveavgpool2d': {
        const [, , h, w] = shapes.get(x[0]!)! as [number, number, number, number];
        step(node.name, x, adaptiveAvgPool(h, w, node.attrs.output[0], node.attrs.output[1], keep));
        break;
      }
      case 'flatten':
        // Our flatten is over NCHW (C, H, W) order, which the next linear's weights expect.
        step(node.name, x, ([v]) => {
          const t = v!.rank === 4 && v!.shape[1]! * v!.shape[2]! > 1 ? tf.transpose(v!, [0, 3, 1, 2]) : v!;
          return tf.reshape(t, [t.shape[0]!, -1]);
        });
        break;
      case 'add':
        step(node.name, x, ([a, b]) => tf.add(a!, b!));
        break;
      case 'concat':
        step(node.name, x, (vs) => tf.concat(vs, 3));
        break;
      case 'softmax':
        step(node.name, x, ([v]) => tf.softmax(v!));
        break;
      case 'channelshuffle': {
        const g = node.attrs.groups;
        const paper = node.attrs.order === 'paper';
        // paper: channels as (g, n) -> (n, g), out[j*g + i] = in[i*n + j]; authors: (n, g) -> (g, n), the inverse.
        step(node.name, x, ([v]) => {
          const [n, h, w, c] = v!.shape as [number, number, number, number];
          const split = paper ? [g, c / g] : [c / g, g];
          const t = tf.transpose(tf.reshape(v!, [n * h * w, split[0]!, split[1]!]), [0, 2, 1]);
          return tf.reshape(t, [n, h, w, c]);
        });
        break;
      }
      default: {
        const never: never = node;
        throw new Error(`no TF.js form for ${(never as Node).op}`);
      }
    }
  }
  return steps;
}

// prettier-ignore
const padHW = (x: tf.Tensor4D, ph: number, pw: number, value: number) =>
  tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]], value);

/** BN (inference) as a per-channel affine applied on top of `w` (rows = output channels) and `b`, in float64. */
function foldBn(
  w: Float32Array,
  b: Float32Array,
  bn: Node,
  param: (n: Node, slot: string) => Float32Array | undefined,
): void {
  if (bn.op !== 'batchnorm') throw new Error('foldBn: not a batchnorm');
  const [gamma, beta, mean, variance] = ['weight', 'bias', 'running_mean', 'running_var'].map((s) =>
    param(bn, s)!,
  ) as [Float32Array, Float32Array, Float32Array, Float32Array];
  const per = w.length / b.length;
  for (let c = 0; c < b.length; c++) {
    const s = gamma[c]! / Math.sqrt(variance[c]! + bn.attrs.eps);
    for (let i = c * per; i < (c + 1) * per; i++) w[i] = w[i]! * s;
    b[c] = (b[c]! - mean[c]!) * s + beta[c]!;
  }
}

/**
 * A PyTorch conv (OIHW weights) as TF.js ops. TF.js has no grouped conv: depthwise maps to depthwiseConv2d
 * (HWC1 filter, HWCM for a channel multiplier), other groups to one conv2d per group and a concat.
 */
function conv(
  a: Conv2dAttrs,
  w: Float32Array,
  b: Float32Array,
  activation: Activation,
  keep: <T extends tf.Tensor>(t: T) => T,
): Step['f'] {
  const [kh, kw] = a.kernel;
  const [ph, pw] = a.padding;
  const strides = a.stride as [number, number];
  const dilations = a.dilation as [number, number];
  const g = a.groups;
  // fused.depthwiseConv2d takes only symmetric numeric padding: pad explicitly otherwise.
  const prePad = ph !== pw;
  const pad: 'valid' | number = prePad || ph === 0 ? 'valid' : ph;
  const padded = (x: tf.Tensor) => (prePad ? padHW(x as tf.Tensor4D, ph, pw, 0) : (x as tf.Tensor4D));
  if (g > 1 && g === a.inChannels) {
    const m = a.outChannels / g;
    const f = new Float32Array(w.length);
    for (let c = 0; c < g; c++)
      for (let j = 0; j < m; j++)
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++)
            f[((y * kw + x) * g + c) * m + j] = w[((c * m + j) * kh + y) * kw + x]!;
    const filter = keep(tf.tensor4d(f, [kh, kw, g, m]));
    const bias = keep(tf.tensor1d(b));
    return ([x]) =>
      tf.fused.depthwiseConv2d({ x: padded(x!), filter, strides, pad, dilations, bias, activation });
  }
  const ci = a.inChannels / g;
  const co = a.outChannels / g;
  const filters: tf.Tensor4D[] = [];
  const biases: tf.Tensor1D[] = [];
  for (let k = 0; k < g; k++) {
    const f = new Float32Array(kh * kw * ci * co);
    for (let o = 0; o < co; o++)
      for (let i = 0; i < ci; i++)
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++)
            f[((y * kw + x) * ci + i) * co + o] = w[(((k * co + o) * ci + i) * kh + y) * kw + x]!;
    filters.push(keep(tf.tensor4d(f, [kh, kw, ci, co])));
    biases.push(keep(tf.tensor1d(b.subarray(k * co, (k + 1) * co))));
  }
  const one = (x: tf.Tensor4D, k: number) =>
    tf.fused.conv2d({ x, filter: filters[k]!, strides, pad, dilations, bias: biases[k]!, activation });
  return ([x]) => {
    const xp = padded(x!);
    if (g === 1) return one(xp, 0);
    return tf.concat(
      tf.split(xp, g, 3).map((xs, k) => one(xs as tf.Tensor4D, k)),
      3,
    );
  };
}

/**
 * PyTorch's AdaptiveAvgPool2d: cell i averages rows [floor(i*H/oh), ceil((i+1)*H/oh)), likewise columns. When the
 * cells tile the input it is an average pool (the identity for AlexNet at 224); otherwise the cells overlap and it
 * is separable: rows then columns, each a matmul with an averaging matrix.
 */
function adaptiveAvgPool(
  h: number,
  w: number,
  oh: number,
  ow: number,
  keep: <T extends tf.Tensor>(t: T) => T,
): Step['f'] {
  if (h === oh && w === ow) return ([x]) => tf.clone(x!);
  if (h % oh === 0 && w % ow === 0) {
    const k: [number, number] = [h / oh, w / ow];
    return ([x]) => tf.avgPool(x as tf.Tensor4D, k, k, 'valid');
  }
  const averaging = (n: number, cells: number) => {
    const m = new Float32Array(cells * n);
    for (let i = 0; i < cells; i++) {
      const [lo, hi] = [Math.floor((i * n) / cells), Math.ceil(((i + 1) * n) / cells)];
      for (let j = lo; j < hi; j++) m[i * n + j] = 1 / (hi - lo);
    }
    return keep(tf.tensor2d(m, [cells, n]));
  };
  const [rows, cols] = [averaging(h, oh), averaging(w, ow)];
  return ([x]) => {
    const [n, , , c] = x!.shape as [number, number, number, number];
    // [N, H, W, C] -> [H, N*W*C], rows: [oh, N, W, C] -> [W, N*oh*C], columns: [ow, N, oh, C] -> [N, oh, ow, C].
    const r = tf.matMul(rows, tf.reshape(tf.transpose(x!, [1, 0, 2, 3]), [h, -1]));
    const s = tf.matMul(cols, tf.reshape(tf.transpose(tf.reshape(r, [oh, n, w, c]), [2, 1, 0, 3]), [w, -1]));
    return tf.transpose(tf.reshape(s, [ow, n, oh, c]), [1, 2, 0, 3]);
  };
}
