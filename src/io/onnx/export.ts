import { ConfigError } from '../../errors.js';
import { checkWeights } from '../../graph/execute.js';
import { inferShapes, INPUT, type Graph, type Node } from '../../graph/graph.js';
import type { Tensor } from '../../tensor/tensor.js';
import { adaptiveAveraging } from '../../ops/pool.js';
import { AttrType, DataType, encodeModel, type NodeProto } from './proto.js';

export interface OnnxExportOptions {
  /** Fold each BatchNorm that is the only consumer of a Conv into that Conv's weight and bias. */
  foldBn?: boolean;
  /** H x W of the input; the shuffle's reshapes fix spatial sizes, so the file runs at this size only. */
  inputSize?: readonly [number, number];
  /** 13 (default) to 21; the nodes written are the same for all of them. */
  opset?: number;
}

/** The name of the exported model's output. */
export const ONNX_OUTPUT = 'logits';

const MIN_OPSET = 13; // Softmax over one axis (opset 13 semantics) is what our softmax computes
const MAX_OPSET = 21;

const ints = (name: string, v: readonly number[]) => ({ name, type: AttrType.INTS, ints: [...v] });
const int = (name: string, i: number) => ({ name, type: AttrType.INT, i });
const float = (name: string, f: number) => ({ name, type: AttrType.FLOAT, f });
const pads = ([h, w]: readonly [number, number]) => ints('pads', [h, w, h, w]);

function leBytes(a: Float32Array | BigInt64Array): Uint8Array {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1)
    throw new Error('big-endian hosts are not supported');
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const floatTensor = (name: string, dims: readonly number[], data: Float32Array) => ({
  name,
  dims: [...dims],
  data_type: DataType.FLOAT,
  raw_data: leBytes(data),
});

const int64Tensor = (name: string, values: readonly number[]) => ({
  name,
  dims: [values.length],
  data_type: DataType.INT64,
  raw_data: leBytes(BigInt64Array.from(values, (v) => BigInt(v))),
});

const valueInfo = (name: string, dims: readonly (number | string)[]) => ({
  name,
  type: {
    tensor_type: {
      elem_type: DataType.FLOAT,
      shape: { dim: dims.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) },
    },
  },
});

/** IR version of the ONNX release that introduced each opset (ONNX docs/Versioning.md). */
const irVersion = (opset: number) => (opset <= 14 ? 7 : opset <= 18 ? 8 : opset <= 20 ? 9 : 10);

/**
 * The graph as an ONNX model: input `input` [N, C, H, W] with a symbolic batch, output `logits`, parameters as
 * initializers named by their state_dict keys. The channel shuffle, which ONNX lacks, becomes
 * Reshape -> Transpose -> Reshape; importOnnx turns that back into one channelshuffle node.
 */
export function exportOnnx(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  o: OnnxExportOptions = {},
): Uint8Array {
  const opset = o.opset ?? MIN_OPSET;
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET) {
    throw new ConfigError(`ONNX opset ${opset} is not supported; choose ${MIN_OPSET} to ${MAX_OPSET}`);
  }
  checkWeights(graph, weights);
  const [h, w] = o.inputSize ?? graph.inputSize;
  const shapes = inferShapes(graph, [1, graph.inputChannels, h, w]);
  const consumers = new Map<string, Node[]>();
  for (const n of graph.nodes) for (const v of n.inputs) consumers.set(v, [...(consumers.get(v) ?? []), n]);

  const names = new Set<string>();
  const define = (name: string) => {
    if (names.has(name))
      throw new ConfigError(`${graph.name}: the name '${name}' is used twice in the ONNX file`);
    names.add(name);
    return name;
  };
  define(INPUT);
  define(ONNX_OUTPUT);
  const value = (v: string) => (v === graph.output ? ONNX_OUTPUT : v);
  const initializers: object[] = [];
  const initializer = (key: string, dims: readonly number[], data: Float32Array) => {
    initializers.push(floatTensor(define(key), dims, data));
    return key;
  };
  const shapeInitializer = (key: string, values: readonly number[]) => {
    initializers.push(int64Tensor(define(key), values));
    return key;
  };
  const written = new Set<string>();
  const param = (key: string) => {
    if (written.has(key)) return key; // shared by several nodes
    written.add(key);
    const t = weights.get(key)!;
    return initializer(key, t.shape, t.data);
  };
  const nodes: NodeProto[] = [];
  const emit = (op_type: string, name: string, input: string[], output: string, attribute: object[] = []) => {
    nodes.push({ name, op_type, input, output: [output], attribute } as NodeProto);
  };
  const skip = new Set<Node>();

  for (const node of graph.nodes) {
    if (skip.has(node)) continue;
    const { name } = node;
    if (name !== graph.output) define(name);
    const x = node.inputs.map(value);
    const out = value(name);
    switch (node.op) {
      case 'conv2d': {
        const attrs = [
          ints('kernel_shape', node.attrs.kernel),
          ints('strides', node.attrs.stride),
          pads(node.attrs.padding),
          ints('dilations', node.attrs.dilation),
          int('group', node.attrs.groups),
        ];
        const next = consumers.get(name);
        const bn = next?.length === 1 && name !== graph.output ? next[0] : undefined;
        if (o.foldBn && bn?.op === 'batchnorm') {
          const f = foldBn(node, bn, weights);
          skip.add(bn);
          if (bn.name !== graph.output) define(bn.name);
          const wKey = initializer(node.params.weight!, f.weightShape, f.weight);
          const bKey = initializer(node.params.bias ?? `${name}.bias`, [f.bias.length], f.bias);
          emit('Conv', name, [x[0]!, wKey, bKey], value(bn.name), attrs);
        } else {
          const p = [param(node.params.weight!), ...(node.params.bias ? [param(node.params.bias)] : [])];
          emit('Conv', name, [x[0]!, ...p], out, attrs);
        }
        break;
      }
      case 'batchnorm': {
        const slots = ['weight', 'bias', 'running_mean', 'running_var'].map((s) => param(node.params[s]!));
        emit('BatchNormalization', name, [x[0]!, ...slots], out, [
          float('epsilon', node.attrs.eps),
          float('momentum', 1 - node.attrs.momentum), // ONNX keeps this share of the running value
        ]);
        break;
      }
      case 'relu':
        emit('Relu', name, x, out);
        break;
      case 'maxpool2d':
      case 'avgpool2d': {
        const attrs = [
          ints('kernel_shape', node.attrs.kernel),
          ints('strides', node.attrs.stride),
          pads(node.attrs.padding),
          int('ceil_mode', node.attrs.ceilMode ? 1 : 0),
        ];
        if (node.op === 'avgpool2d') attrs.push(int('count_include_pad', node.attrs.countIncludePad ? 1 : 0));
        emit(node.op === 'maxpool2d' ? 'MaxPool' : 'AveragePool', name, x, out, attrs);
        break;
      }
      case 'globalavgpool':
        emit('GlobalAveragePool', name, x, out);
        break;
      case 'adaptiveavgpool2d': {
        const [, , ih, iw] = shapes.get(node.inputs[0]!)! as [number, number, number, number];
        const [oh, ow] = node.attrs.output;
        if (ih % oh === 0 && iw % ow === 0) {
          const k = [ih / oh, iw / ow];
          emit('AveragePool', name, x, out, [ints('kernel_shape', k), ints('strides', k)]);
          break;
        }
        // Cells of unequal size (or overlapping), which AveragePool cannot express: two averaging matrices,
        // Y = R X C with R [oh, ih] and C [iw, ow] (MatMul broadcasts over N and C). The export size is fixed.
        const rows = initializer(`${name}/rows`, [oh, ih], adaptiveAveraging(ih, oh, false));
        const cols = initializer(`${name}/cols`, [iw, ow], adaptiveAveraging(iw, ow, true));
        emit('MatMul', define(`${name}/columns`), [x[0]!, cols], define(`${name}/pooled_columns`));
        emit('MatMul', name, [rows, `${name}/pooled_columns`], out);
        break;
      }
      case 'flatten':
        emit('Flatten', name, x, out, [int('axis', 1)]);
        break;
      case 'linear': {
        const p = [param(node.params.weight!), ...(node.params.bias ? [param(node.params.bias)] : [])];
        emit('Gemm', name, [x[0]!, ...p], out, [int('transB', 1)]);
        break;
      }
      case 'add':
        emit('Add', name, x, out);
        break;
      case 'concat':
        emit('Concat', name, x, out, [int('axis', 1)]);
        break;
      case 'softmax':
        emit('Softmax', name, x, out, [int('axis', 1)]);
        break;
      case 'channelshuffle': {
        const [, c, sh, sw] = shapes.get(node.inputs[0]!)! as [number, number, number, number];
        const g = node.attrs.groups;
        // 'authors' splits channels as (C/g, g), 'paper' as (g, C/g); either way the transpose swaps the two.
        const split = node.attrs.order === 'authors' ? [c / g, g] : [g, c / g];
        // 0 copies the input's (symbolic) batch size.
        const splitShape = shapeInitializer(`${name}/split_shape`, [0, ...split, sh, sw]);
        const mergeShape = shapeInitializer(`${name}/merge_shape`, [0, c, sh, sw]);
        emit('Reshape', define(`${name}/split`), [x[0]!, splitShape], `${name}/split`);
        emit('Transpose', name, [`${name}/split`], define(`${name}/transposed`), [
          ints('perm', [0, 2, 1, 3, 4]),
        ]);
        emit('Reshape', define(`${name}/merge`), [`${name}/transposed`, mergeShape], out);
        break;
      }
      default: {
        const never: never = node;
        throw new Error(`exportOnnx: no ONNX form for ${(never as Node).op}`);
      }
    }
  }
  if (graph.output === INPUT) emit('Identity', 'output', [INPUT], ONNX_OUTPUT);

  const outShape = shapes.get(graph.output)!;
  return encodeModel({
    ir_version: irVersion(opset),
    opset_import: [{ domain: '', version: opset }],
    producer_name: 'shufflenet.ts',
    graph: {
      name: graph.name,
      node: nodes,
      initializer: initializers,
      input: [valueInfo(INPUT, ['N', graph.inputChannels, h, w])],
      output: [valueInfo(ONNX_OUTPUT, ['N', ...outShape.slice(1)])],
    },
  });
}

/** Conv then BN as one Conv: W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps), in float64. */
function foldBn(conv: Node, bn: Node, weights: ReadonlyMap<string, Tensor>) {
  if (conv.op !== 'conv2d' || bn.op !== 'batchnorm')
    throw new Error('foldBn: expected conv2d then batchnorm');
  const get = (n: Node, slot: string) => weights.get(n.params[slot]!)?.data;
  const w = weights.get(conv.params.weight!)!;
  const [gamma, beta, mean, variance] = ['weight', 'bias', 'running_mean', 'running_var'].map((s) =>
    get(bn, s)!,
  );
  const b0 = get(conv, 'bias');
  const channels = w.shape[0]!;
  const per = w.size / channels;
  const weight = new Float32Array(w.size);
  const bias = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    const s = gamma![c]! / Math.sqrt(variance![c]! + bn.attrs.eps);
    for (let i = c * per; i < (c + 1) * per; i++) weight[i] = w.data[i]! * s;
    bias[c] = ((b0?.[c] ?? 0) - mean![c]!) * s + beta![c]!;
  }
  return { weight, weightShape: w.shape, bias };
}
