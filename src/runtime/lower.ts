import { inferShapes, INPUT, type Graph, type Node } from '../graph/graph.js';
import { shufflePermutation, type OpAttrs } from '../ops/index.js';
import type { Shape, Tensor } from '../tensor/tensor.js';

/**
 * Lowering: a model graph becomes a short list of fused kernels over channel ranges of buffers.
 * - BN after a conv is folded into its weights and bias;
 * - ReLU, the residual add (+ ReLU) and the stride-2 concat are done by the kernel that produces the value
 *   (a concat input is written straight into its slice of the concat buffer);
 * - a channel shuffle next to a depthwise conv becomes that conv's output-row map (with its weights permuted
 *   when the shuffle comes first), or the input-row map of the 1x1 conv that reads it: no copy at all.
 * What no kernel covers runs as a reference-kernel step on views of the same buffers.
 */

/** A value: `C` channels at channel offset `off` of buffer `buf` (which has `bufC` channels). */
export interface Ref {
  buf: number;
  off: number;
  C: number;
  bufC: number;
  /** The value's NCHW shape (batch first). */
  shape: Shape;
  /** A folded channel shuffle: logical channel c is row `off + map[c]` (only 1x1 convs read such values). */
  map?: Int32Array;
}

interface Common {
  node: string;
  x: Ref;
  y: Ref;
  /** Multiply-adds or element visits: decides whether a step is worth splitting across threads. */
  work: number;
}

export type LOp =
  | (Common & {
      k: 'pointwise';
      inMap?: Int32Array;
      w: Float32Array;
      bias: Float32Array;
      res?: Ref;
      relu: boolean;
      groups: number;
      HW: number;
    })
  | (Common & {
      k: 'depthwise';
      w: Float32Array;
      bias: Float32Array;
      outMap?: Int32Array;
      stride: number;
      relu: boolean;
    })
  | (Common & { k: 'conv'; w: Float32Array; bias: Float32Array; a: OpAttrs['conv2d']; relu: boolean })
  | (Common & { k: 'maxpool' | 'avgpool'; a: OpAttrs['avgpool2d'] })
  | (Common & { k: 'gap' })
  | (Common & { k: 'linear'; w: Float32Array; bias: Float32Array; K: number; M: number; relu: boolean })
  | (Common & { k: 'affine'; scale: Float32Array; shift: Float32Array; relu: boolean })
  | (Common & { k: 'add'; b: Ref; relu: boolean })
  | (Common & { k: 'relu' })
  | { k: 'js'; node: string; graphNode: Node; inputs: Ref[]; y: Ref; work: number };

export interface Program {
  ops: LOp[];
  /** Channels and per-image size (C x H x W floats) of every buffer; buffer 0 is the input. */
  buffers: { C: number; hw: number }[];
  output: Ref;
  inputShape: Shape;
}

const isPointwise = (a: OpAttrs['conv2d']) =>
  a.kernel.every((k) => k === 1) && a.stride.every((s) => s === 1) && a.padding.every((p) => p === 0);
const isDepthwise3x3 = (a: OpAttrs['conv2d']) =>
  a.groups === a.inChannels &&
  a.outChannels === a.inChannels &&
  a.kernel.every((k) => k === 3) &&
  a.padding.every((p) => p === 1) &&
  a.stride[0] === a.stride[1] &&
  a.stride[0] <= 2 &&
  a.dilation.every((d) => d === 1);

function invert(perm: Int32Array): Int32Array {
  const inv = new Int32Array(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

export function lower(graph: Graph, weights: ReadonlyMap<string, Tensor>, input: Shape): Program {
  const shapes = inferShapes(graph, input);
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  const consumers = new Map<string, Node[]>();
  for (const n of graph.nodes) for (const v of n.inputs) consumers.set(v, [...(consumers.get(v) ?? []), n]);
  const only = (v: string): Node | undefined => {
    const c = consumers.get(v);
    return c?.length === 1 && v !== graph.output ? c[0] : undefined;
  };
  const param = (n: Node, slot: string) => weights.get(n.params[slot]!)!.data;

  const buffers: Program['buffers'] = [];
  const newRef = (shape: Shape): Ref => {
    const C = shape[1]!;
    const hw = shape.slice(2).reduce((a, b) => a * b, 1);
    buffers.push({ C, hw });
    return { buf: buffers.length - 1, off: 0, C, bufC: C, shape };
  };
  const refs = new Map<string, Ref>([[INPUT, newRef(input)]]);
  const ops: LOp[] = [];
  const done = new Set<string>(); // nodes absorbed into an earlier op
  /** Values a concat wants written into its buffer, decided before their producers are emitted. */
  const placed = new Map<string, Ref>();
  /** Shuffles folded into the depthwise conv that reads them. */
  const preShuffles = new Map<string, OpAttrs['channelshuffle']>();
  const aliasOps = new Set<Node['op']>(['flatten', 'channelshuffle', 'adaptiveavgpool2d', 'concat']);

  // Concats whose every input is produced by a kernel-backed op used only by the concat get one buffer up front.
  for (const n of graph.nodes) {
    if (n.op !== 'concat') continue;
    const ref = newRef(shapes.get(n.name)!);
    let off = 0;
    const slices = n.inputs.map((v) => {
      const s: Ref = { ...ref, off, C: shapes.get(v)![1]!, shape: shapes.get(v)! };
      off += s.C;
      return s;
    });
    if (n.inputs.every((v) => only(v) === n && v !== INPUT && !aliasOps.has(byName.get(v)!.op))) {
      n.inputs.forEach((v, i) => placed.set(v, slices[i]!));
      refs.set(n.name, ref);
      done.add(n.name);
    } else buffers.pop();
  }

  const out = (v: string): Ref => placed.get(v) ?? newRef(shapes.get(v)!);

  for (const n of graph.nodes) {
    if (done.has(n.name)) continue;
    const x = refs.get(n.inputs[0]!)!;
    const shape = shapes.get(n.name)!;
    const N = shape[0]!;
    let last = n.name; // the graph value this op finally produces
    const absorb = (next: Node | undefined, op: Node['op']): Node | undefined => {
      if (next?.op !== op) return undefined;
      done.add(next.name);
      last = next.name;
      return next;
    };

    if (n.op === 'conv2d') {
      const a = n.attrs as OpAttrs['conv2d'];
      const O = a.outChannels;
      const per = (a.inChannels / a.groups) * a.kernel[0] * a.kernel[1];
      const w = Float32Array.from(param(n, 'weight'));
      const bias = a.bias ? Float32Array.from(param(n, 'bias')) : new Float32Array(O);
      const bn = absorb(only(n.name), 'batchnorm');
      if (bn) {
        const [g, b, m, v] = ['weight', 'bias', 'running_mean', 'running_var'].map((s) => param(bn, s));
        const eps = (bn.attrs as OpAttrs['batchnorm']).eps;
        for (let o = 0; o < O; o++) {
          const s = g![o]! / Math.sqrt(v![o]! + eps);
          for (let i = 0; i < per; i++) w[o * per + i]! *= s;
          bias[o] = (bias[o]! - m![o]!) * s + b![o]!;
        }
      }
      const work = N * O * per * shape[2]! * shape[3]!;
      if (isDepthwise3x3(a)) {
        let outMap: Int32Array | undefined;
        const pre = preShuffles.get(n.inputs[0]!);
        const after = only(last);
        if (pre) {
          // Shuffle before it (paper position): read the unshuffled input; channel i of it needs the
          // weights of output channel perm^-1[i] and is written to that row.
          outMap = invert(shufflePermutation(O, pre.groups, pre.order));
          const w0 = w.slice();
          const b0 = bias.slice();
          for (let i = 0; i < O; i++) {
            w.set(w0.subarray(outMap[i]! * 9, outMap[i]! * 9 + 9), i * 9);
            bias[i] = b0[outMap[i]!]!;
          }
        } else if (after?.op === 'channelshuffle') {
          // Shuffle after it (the authors' position): write channel i to row perm^-1[i].
          const s = after.attrs as OpAttrs['channelshuffle'];
          outMap = invert(shufflePermutation(O, s.groups, s.order));
          done.add(after.name);
          last = after.name;
        }
        const relu = !!absorb(only(last), 'relu');
        ops.push({
          k: 'depthwise',
          node: n.name,
          x,
          y: out(last),
          w,
          bias,
          outMap,
          stride: a.stride[0],
          relu,
          work,
        });
      } else if (isPointwise(a)) {
        let res: Ref | undefined;
        const add = only(last);
        if (add?.op === 'add') {
          const other = add.inputs.find((v) => v !== last);
          const r = other ? refs.get(other) : undefined;
          const relu = only(add.name);
          // The kernel reads the residual in the output's layout: both must be whole, fresh buffers.
          const fresh = !placed.has(add.name) && !(relu?.op === 'relu' && placed.has(relu.name));
          if (r && !r.map && r.off === 0 && r.C === r.bufC && fresh) {
            res = r;
            done.add(add.name);
            last = add.name;
          }
        }
        const relu = !!absorb(only(last), 'relu');
        const HW = shape[2]! * shape[3]!;
        ops.push({
          k: 'pointwise',
          node: n.name,
          x,
          inMap: x.map,
          y: out(last),
          w,
          bias,
          res,
          relu,
          groups: a.groups,
          HW,
          work,
        });
      } else {
        const relu = !!absorb(only(last), 'relu');
        ops.push({ k: 'conv', node: n.name, x, y: out(last), w, bias, a, relu, work });
      }
    } else if (n.op === 'channelshuffle') {
      const s = n.attrs as OpAttrs['channelshuffle'];
      const users = consumers.get(n.name) ?? [];
      const dw =
        users.length === 1 &&
        users[0]!.op === 'conv2d' &&
        isDepthwise3x3(users[0]!.attrs as OpAttrs['conv2d']);
      const pw =
        users.length > 0 &&
        users.every((u) => u.op === 'conv2d' && isPointwise(u.attrs as OpAttrs['conv2d']));
      if (dw && !x.map) {
        preShuffles.set(n.name, s);
        refs.set(n.name, x);
        continue;
      }
      if (pw && !x.map) {
        refs.set(n.name, { ...x, map: shufflePermutation(x.C, s.groups, s.order) });
        continue;
      }
      ops.push({ k: 'js', node: n.name, graphNode: n, inputs: [x], y: out(n.name), work: 0 });
      refs.set(n.name, ops.at(-1)!.y);
      continue;
    } else if (n.op === 'maxpool2d' || n.op === 'avgpool2d') {
      const a = { ...(n.attrs as OpAttrs['avgpool2d']) };
      if (n.op === 'maxpool2d') a.countIncludePad = true;
      ops.push({
        k: n.op === 'maxpool2d' ? 'maxpool' : 'avgpool',
        node: n.name,
        x,
        y: out(n.name),
        a,
        work: N * shape[1]! * shape[2]! * shape[3]! * 9,
      });
    } else if (n.op === 'globalavgpool') {
      ops.push({ k: 'gap', node: n.name, x, y: out(n.name), work: 0 });
    } else if (
      n.op === 'flatten' ||
      (n.op === 'adaptiveavgpool2d' && shapes.get(n.inputs[0]!)!.join() === shape.join())
    ) {
      refs.set(n.name, { ...x, C: shape[1]!, bufC: shape[1]!, shape });
      continue;
    } else if (n.op === 'linear') {
      const a = n.attrs as OpAttrs['linear'];
      const w = param(n, 'weight');
      const bias = a.bias ? param(n, 'bias') : new Float32Array(a.outFeatures);
      const relu = !!absorb(only(n.name), 'relu');
      ops.push({
        k: 'linear',
        node: n.name,
        x,
        y: out(last),
        w,
        bias,
        K: a.inFeatures,
        M: a.outFeatures,
        relu,
        work: N * a.inFeatures * a.outFeatures,
      });
    } else if (n.op === 'batchnorm') {
      const [g, b, m, v] = ['weight', 'bias', 'running_mean', 'running_var'].map((s) => param(n, s));
      const eps = (n.attrs as OpAttrs['batchnorm']).eps;
      const scale = Float32Array.from(g!, (gi, i) => gi / Math.sqrt(v![i]! + eps));
      const shift = Float32Array.from(b!, (bi, i) => bi - m![i]! * scale[i]!);
      const relu = !!absorb(only(n.name), 'relu');
      ops.push({ k: 'affine', node: n.name, x, y: out(last), scale, shift, relu, work: 0 });
    } else if (n.op === 'add') {
      const relu = !!absorb(only(n.name), 'relu');
      ops.push({ k: 'add', node: n.name, x, b: refs.get(n.inputs[1]!)!, y: out(last), relu, work: 0 });
    } else if (n.op === 'relu') {
      ops.push({ k: 'relu', node: n.name, x, y: out(n.name), work: 0 });
    } else {
      const inputs = n.inputs.map((v) => refs.get(v)!);
      ops.push({ k: 'js', node: n.name, graphNode: n, inputs, y: out(n.name), work: 0 });
    }
    refs.set(last, ops.at(-1)!.y);
  }
  return { ops, buffers, output: refs.get(graph.output)!, inputShape: input };
}
