import { OpError } from '../../errors.js';
import { INPUT, nodeShape, type Graph, type Node } from '../../graph/graph.js';
import type { OpAttrs, OpName } from '../../ops/index.js';
import { adaptiveAveraging } from '../../ops/pool.js';
import { formatShape, shapeSize, Tensor } from '../../tensor/tensor.js';
import { DTYPES, toFloat32, typedFromBytes, type DType } from '../raw.js';
import {
  DataType,
  decodeModel,
  OnnxError,
  type AttributeProto,
  type GraphProto,
  type NodeProto,
  type TensorProto,
} from './proto.js';

export interface OnnxModel {
  graph: Graph;
  /** Parameters keyed by their initializer names (derived ones, e.g. a transposed MatMul weight, by `node.slot`). */
  weights: Map<string, Tensor>;
}

/** The symbolic batch size inside integer tensors that PyTorch computes shapes with. */
const N = 'N';
type Int = number | typeof N;

/**
 * What an ONNX value is while importing. Only 'tensor' values become graph values; the others are folded
 * away: constants into parameters and attributes, shape arithmetic into constants, the shuffle's rank-5
 * view and a Pad into the node that consumes them.
 */
type Val =
  /** Computed from the input; `shape` has batch 1 (the batch is always axis 0). */
  | TensorVal
  /** Reshape [N, C, H, W] -> [N, a, b, H, W] (then transposed: [N, b, a, H, W]), awaiting the rest of a shuffle. */
  | { kind: 'view'; src: TensorVal; shape: number[]; split: [number, number]; transposedBy?: string }
  /** [N, C, H, W] times a column-averaging [W, ow] constant, awaiting the row-averaging MatMul of an adaptive
   * average pool that exportOnnx wrote as two matrices. */
  | { kind: 'pooledColumns'; src: TensorVal; shape: number[]; ow: number }
  /** Zero padding of H and W, awaiting the Conv or AveragePool that absorbs it. */
  | { kind: 'padded'; src: TensorVal; shape: number[]; pads: [number, number] }
  /** A float constant; `key` is its initializer (or Constant) name, absent when derived by the import. */
  | { kind: 'float'; dims: number[]; data: Float32Array; key?: string; transposeOf?: FloatVal }
  | { kind: 'ints'; dims: number[]; values: Int[] };
type FloatVal = Extract<Val, { kind: 'float' }>;
type IntsVal = Extract<Val, { kind: 'ints' }>;
interface TensorVal {
  kind: 'tensor';
  name: string;
  shape: number[];
}

const FLOAT_TYPES: Partial<Record<number, [DType, keyof TensorProto]>> = {
  [DataType.FLOAT]: ['F32', 'float_data'],
  [DataType.FLOAT16]: ['F16', 'int32_data'],
  [DataType.BFLOAT16]: ['BF16', 'int32_data'],
  [DataType.DOUBLE]: ['F64', 'double_data'],
};
const INT_TYPES: Partial<Record<number, [DType, keyof TensorProto]>> = {
  [DataType.INT64]: ['I64', 'int64_data'],
  [DataType.INT32]: ['I32', 'int32_data'],
};

/**
 * Reads a model's external data (tensors stored beside the .onnx file): `length` bytes at `offset` of the file
 * `location`, a path relative to the model's folder (the rest of the file when `length` is undefined).
 */
export type ExternalDataReader = (location: string, offset: number, length: number | undefined) => Uint8Array;

/** A tensor's bytes in an external file, through `external` (absent: the model came without its files). */
function externalBytes(t: TensorProto, where: string, external: ExternalDataReader | undefined): Uint8Array {
  const e = new Map((t.external_data ?? []).map((kv) => [kv.key ?? '', kv.value ?? '']));
  const location = e.get('location');
  if (!location) throw new OnnxError(`${where}: external data without a location`);
  if (!external) {
    throw new OnnxError(
      `${where}: its data is in the external file '${location}', which is read only when the model is loaded ` +
        'from its file (shufflenet classify --model FILE.onnx, convert)',
    );
  }
  const number = (key: string) => {
    const v = e.get(key);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n))
      throw new OnnxError(`${where}: external data ${key} '${v}' is not a byte count`);
    return n;
  };
  return external(location, number('offset') ?? 0, number('length'));
}

/** An initializer or Constant tensor as a float or integer constant, with its size checked against its dims. */
function tensorValue(t: TensorProto, where: string, external?: ExternalDataReader): FloatVal | IntsVal {
  const dims = t.dims;
  if (dims.some((d) => !Number.isInteger(d) || d < 0))
    throw new OnnxError(`${where}: invalid dims ${formatShape(dims)}`);
  const type = t.data_type ?? 0;
  const spec = FLOAT_TYPES[type] ?? INT_TYPES[type];
  if (!spec) {
    throw new OnnxError(
      `${where}: data type ${type} is not supported (float32, float16, bfloat16, float64, int32, int64)`,
    );
  }
  const [dtype, field] = spec;
  const count = shapeSize(dims);
  const raw = t.data_location === 1 ? externalBytes(t, where, external) : t.raw_data;
  if (raw?.length && raw.length !== count * DTYPES[dtype].size) {
    throw new OnnxError(
      `${where}: raw_data has ${raw.length} bytes, but dims ${formatShape(dims)} need ${count * DTYPES[dtype].size}`,
    );
  }
  const data = raw?.length
    ? typedFromBytes(dtype, raw)
    : dtype === 'F16' || dtype === 'BF16'
      ? Uint16Array.from(t.int32_data) // float16 and bfloat16 keep their bits in int32_data
      : (t[field] as number[]);
  if (data.length !== count) {
    throw new OnnxError(
      `${where}: holds ${data.length} values, but its dims ${formatShape(dims)} need ${count}`,
    );
  }
  if (INT_TYPES[type])
    return { kind: 'ints', dims, values: Array.from(data as ArrayLike<number | bigint>, Number) };
  const f32 =
    data instanceof Float32Array
      ? data
      : data instanceof Uint16Array
        ? toFloat32({ dtype, shape: dims, data }, where)
        : Float32Array.from(data as ArrayLike<number>);
  return { kind: 'float', dims, data: f32, key: t.name };
}

/** The float32 value printed as the shortest decimal that reads back as the same float32 (1e-5, not 9.99e-6). */
function shortest(x: number): number {
  for (let p = 1; p < 17; p++) {
    const v = Number(x.toPrecision(p));
    if (Math.fround(v) === Math.fround(x)) return v;
  }
  return x;
}

const SUPPORTED = [
  ...'Conv BatchNormalization Relu MaxPool AveragePool GlobalAveragePool Add Concat Reshape Transpose'.split(
    ' ',
  ),
  ...'Flatten Gemm MatMul Softmax Identity Constant'.split(' '),
  // shape arithmetic as PyTorch emits it for a dynamic batch, folded at import
  ...'Shape Gather Unsqueeze Squeeze Cast Mul Div Sub Pad'.split(' '),
];

/**
 * Reads an ONNX model made of the ops ShuffleNet, MobileNet and AlexNet need into a graph and its weights.
 * A Reshape -> Transpose(0,2,1,3,4) -> Reshape channel shuffle becomes one `channelshuffle` node, a Reshape to
 * [N, features] a `flatten`, MatMul (+ Add) a `linear`, and PyTorch's Shape/Gather/... arithmetic is folded.
 * `name` (e.g. the file name) prefixes every error.
 */
export function importOnnx(
  bytes: Uint8Array,
  name?: string,
  o: { external?: ExternalDataReader } = {},
): OnnxModel {
  try {
    const model = decodeModel(bytes);
    if (!model.graph)
      throw new OnnxError('not an ONNX model: it has no graph (truncated or another format?)');
    const opset = model.opset_import.find((o) => !o.domain || o.domain === 'ai.onnx')?.version;
    if (!opset) throw new OnnxError('not an ONNX model: no opset for the default domain (truncated file?)');
    return new Importer(model.graph, opset, name, o.external).run();
  } catch (e) {
    const label = name ?? 'ONNX model';
    if (e instanceof OnnxError || e instanceof OpError)
      throw new OnnxError(`${label}: ${e.message}`, { cause: e });
    // Whatever else a malformed file trips over is still the file's fault: say so, never a bare RangeError.
    throw new OnnxError(`${label}: cannot import (${(e as Error).message})`, { cause: e });
  }
}

class Importer {
  private readonly values = new Map<string, Val>();
  private readonly initializers = new Map<string, TensorProto>();
  private readonly nodes: Node[] = [];
  private readonly byName = new Map<string, Node>();
  private readonly weights = new Map<string, Tensor>();
  private readonly names = new Set<string>([INPUT]);
  private readonly uses = new Map<string, number>();
  private readonly shuffles: { node: Node; split: [number, number] }[] = [];
  private batch: Int = N;
  private current: NodeProto = { input: [], output: [], attribute: [] };
  private label = '';

  constructor(
    private readonly g: GraphProto,
    private readonly opset: number,
    private readonly fileName?: string,
    private readonly external?: ExternalDataReader,
  ) {}

  run(): OnnxModel {
    const g = this.g;
    for (const t of g.initializer) this.initializers.set(t.name ?? '', t);
    const inputs = g.input.filter((i) => !this.initializers.has(i.name ?? ''));
    if (inputs.length !== 1) {
      throw new OnnxError(
        `the graph has ${inputs.length} inputs besides initializers (${inputs.map((i) => `'${i.name}'`).join(', ')}); ` +
          'expected exactly one image input',
      );
    }
    if (g.output.length !== 1) throw new OnnxError(`the graph has ${g.output.length} outputs; expected one`);
    const input = inputs[0]!;
    const type = input.type?.tensor_type;
    const dims = (type?.shape?.dim ?? []).map((d) => d.dim_value ?? d.dim_param ?? '?');
    const [batch, c, h, w] = dims;
    if (type?.elem_type !== DataType.FLOAT || dims.length !== 4 || typeof c !== 'number') {
      throw new OnnxError(
        `input '${input.name}' must be a float32 [N, C, H, W] tensor with a fixed C, got ` +
          `${type?.elem_type === DataType.FLOAT ? 'float32' : `elem_type ${type?.elem_type}`} [${dims.join(', ')}]`,
      );
    }
    if (typeof batch === 'number') this.batch = batch;
    // A symbolic H or W: the graph still runs at any size; 224 is only its nominal size.
    const inputSize: [number, number] = [typeof h === 'number' ? h : 224, typeof w === 'number' ? w : 224];
    this.values.set(input.name ?? '', { kind: 'tensor', name: INPUT, shape: [1, c, ...inputSize] });

    for (const n of this.sorted(input.name ?? '')) {
      this.current = n;
      this.label = `${n.op_type ?? 'node'} '${n.name || n.output[0]}'`;
      this.node(n);
    }
    const outName = g.output[0]!.name ?? '';
    const out = this.values.get(outName);
    if (out?.kind !== 'tensor' || out.name === INPUT) {
      throw new OnnxError(`output '${outName}' is not computed by any supported node from the input`);
    }
    const graph: Graph = {
      name: g.name || this.fileName || 'onnx',
      inputChannels: c,
      inputSize,
      nodes: this.prune(out.name),
      output: out.name,
    };
    this.orderShuffles(graph);
    const used = new Set(graph.nodes.flatMap((n) => Object.values(n.params)));
    return { graph, weights: new Map([...this.weights].filter(([k]) => used.has(k))) };
  }

  /** Nodes in dependency order; names every undefined value, doubly defined value and cycle. */
  private sorted(input: string): NodeProto[] {
    const nodes = this.g.node;
    const label = (i: number) => `${nodes[i]!.op_type ?? 'node'} '${nodes[i]!.name || `#${i}`}'`;
    const producer = new Map<string, number>();
    nodes.forEach((n, i) => {
      for (const o of n.output) {
        if (!o) continue;
        if (producer.has(o) || this.initializers.has(o) || o === input) {
          throw new OnnxError(`value '${o}' is defined twice (again by ${label(i)})`);
        }
        producer.set(o, i);
      }
    });
    const waiting = nodes.map(() => 0);
    const next = nodes.map((): number[] => []);
    nodes.forEach((n, i) => {
      for (const v of n.input) {
        if (!v) continue;
        this.uses.set(v, (this.uses.get(v) ?? 0) + 1);
        const p = producer.get(v);
        if (p !== undefined) {
          waiting[i]!++;
          next[p]!.push(i);
        } else if (!this.initializers.has(v) && v !== input) {
          throw new OnnxError(`${label(i)} reads '${v}', which no node, initializer or graph input defines`);
        }
      }
    });
    for (const o of this.g.output) {
      const v = o.name ?? '';
      this.uses.set(v, (this.uses.get(v) ?? 0) + 1);
      if (!producer.has(v) && v !== input)
        throw new OnnxError(`the graph output '${v}' is not defined by any node`);
    }
    const order: NodeProto[] = [];
    const done = nodes.map(() => false);
    // Kahn's algorithm taking the earliest ready node each time, so a sorted file keeps its order.
    for (let i = 0; i < nodes.length;) {
      if (done[i] || waiting[i]) {
        i++;
        continue;
      }
      done[i] = true;
      order.push(nodes[i]!);
      let first = i + 1;
      for (const j of next[i]!) if (--waiting[j]! === 0 && j < first) first = j;
      i = first;
    }
    if (order.length < nodes.length) {
      const stuck = nodes.flatMap((_, i) => (done[i] ? [] : [label(i)]));
      throw new OnnxError(`the graph has a cycle through ${stuck.slice(0, 6).join(', ')}`);
    }
    return order;
  }

  // ---- reading inputs and attributes of the current node ----

  private fail(message: string): never {
    throw new OnnxError(`${this.label}: ${message}`);
  }

  private val(i: number): Val {
    const name = this.current.input[i];
    if (!name) this.fail(`input ${i} is missing`);
    const v = this.values.get(name);
    if (v) return v;
    const t = this.initializers.get(name);
    if (!t) this.fail(`input '${name}' is produced by a node that is not supported here`);
    const c = tensorValue(t, `initializer '${name}'`, this.external);
    this.values.set(name, c);
    return c;
  }

  private has(i: number): boolean {
    return !!this.current.input[i];
  }

  private tensor(i: number): TensorVal {
    const v = this.val(i);
    if (v.kind === 'tensor') return v;
    const name = this.current.input[i];
    if (v.kind === 'view') {
      this.fail(
        `reads '${name}', a rank-5 Reshape that is only supported inside a channel shuffle ` +
          '(Reshape -> Transpose(0,2,1,3,4) -> Reshape back to 4-D)',
      );
    }
    if (v.kind === 'padded')
      this.fail(`reads '${name}', a Pad output; Pad is only supported before Conv or AveragePool`);
    if (v.kind === 'pooledColumns')
      this.fail(
        `reads '${name}', a MatMul by an averaging matrix that only an adaptive average pool's second MatMul may read`,
      );
    this.fail(`input '${name}' is a constant; expected a tensor computed from the graph input`);
  }

  private float(i: number, what: string): FloatVal {
    const v = this.val(i);
    if (v.kind !== 'float') {
      this.fail(
        `${what} '${this.current.input[i]}' must be a float initializer or Constant, not a ${v.kind} value`,
      );
    }
    return v;
  }

  private ints(i: number, what: string): IntsVal {
    const v = this.val(i);
    if (v.kind !== 'ints') this.fail(`${what} '${this.current.input[i]}' must be an int64 constant`);
    return v;
  }

  private known(v: IntsVal, what: string): number[] {
    if (v.values.includes(N)) this.fail(`${what} depends on the batch size`);
    return v.values as number[];
  }

  private attr(name: string): AttributeProto | undefined {
    return this.current.attribute.find((a) => a.name === name);
  }

  private int(name: string, fallback: number): number {
    return this.attr(name)?.i ?? fallback;
  }

  private intList(name: string, fallback: number[]): number[] {
    const a = this.attr(name);
    return a ? a.ints : fallback;
  }

  private floatAttr(name: string, fallback: number): number {
    const a = this.attr(name);
    return a?.f !== undefined ? shortest(a.f) : fallback;
  }

  private text(name: string, fallback: string): string {
    const s = this.attr(name)?.s;
    return s ? new TextDecoder().decode(s) : fallback;
  }

  /**
   * ONNX pads [h0, w0, h1, w1] as our symmetric [h, w]. auto_pad SAME_UPPER / SAME_LOWER are worked out from the
   * input size (known at import), the kernel, stride and dilation: out = ceil(in / stride), the extra row or
   * column of an odd total at the end (UPPER) or the start (LOWER), which only symmetric totals allow.
   */
  private pads(
    x: TensorVal,
    kernel: [number, number],
    stride: [number, number],
    dilation: [number, number],
  ): [number, number] {
    const auto = this.text('auto_pad', 'NOTSET');
    if (!['NOTSET', 'VALID', 'SAME_UPPER', 'SAME_LOWER'].includes(auto))
      this.fail(`auto_pad=${auto} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER`);
    let list = auto === 'VALID' ? [] : this.intList('pads', []);
    if (auto.startsWith('SAME')) {
      const total = [0, 1].map((a) => {
        const n = x.shape[2 + a]!;
        const out = Math.ceil(n / stride[a]!);
        return Math.max(0, (out - 1) * stride[a]! + (kernel[a]! - 1) * dilation[a]! + 1 - n);
      });
      const small = total.map((t) => Math.floor(t / 2));
      const big = total.map((t, a) => t - small[a]!);
      list = auto === 'SAME_UPPER' ? [...small, ...big] : [...big, ...small];
    }
    const [h0 = 0, w0 = 0, h1 = 0, w1 = 0] = list;
    if (h0 !== h1 || w0 !== w1) this.fail(`asymmetric pads [${h0}, ${w0}, ${h1}, ${w1}] are not supported`);
    return [h0, w0];
  }

  private pair(name: string, fallback: number): [number, number] {
    const v = this.intList(name, [fallback, fallback]);
    if (v.length !== 2) this.fail(`${name} [${v.join(', ')}] must have 2 values (only 2-D is supported)`);
    return [v[0]!, v[1]!];
  }

  private checkOneOutput(): void {
    if (this.current.output.slice(1).some(Boolean)) {
      this.fail(
        `only the first output is supported, but '${this.current.output.filter(Boolean).slice(1).join("', '")}' is used`,
      );
    }
  }

  private axis(v: { shape: number[] }, axis: number): number {
    return axis < 0 ? axis + v.shape.length : axis;
  }

  // ---- writing results ----

  private set(v: Val): void {
    this.values.set(this.current.output[0]!, v);
  }

  private unique(base: string): string {
    let name = base;
    for (let k = 2; this.names.has(name); k++) name = `${base}_${k}`;
    this.names.add(name);
    return name;
  }

  /** A weight under its initializer name, or under `node.slot` when the import derived it. */
  private param(v: FloatVal, node: string, slot: string, dims = v.dims): string {
    let key = v.key;
    if (!key || (this.weights.has(key) && this.weights.get(key)!.shape.join() !== dims.join())) {
      key = `${node}.${slot}`;
      for (let k = 2; this.weights.has(key) || this.initializers.has(key); k++) key = `${node}.${slot}_${k}`;
    }
    if (!this.weights.has(key)) this.weights.set(key, new Tensor(dims, v.data));
    return key;
  }

  private emit<K extends OpName>(
    op: K,
    inputs: TensorVal[],
    attrs: OpAttrs[K],
    params: Record<string, string> = {},
    name = this.current.name || `${this.current.op_type}_${this.nodes.length}`,
  ): Node {
    const node = { name: this.unique(name), op, inputs: inputs.map((v) => v.name), attrs, params } as Node;
    const shape = nodeShape(
      node,
      inputs.map((v) => v.shape),
    );
    this.nodes.push(node);
    this.byName.set(node.name, node);
    this.set({ kind: 'tensor', name: node.name, shape: [...shape] });
    return node;
  }

  // ---- the ops ----

  private node(n: NodeProto): void {
    const op = n.op_type ?? '';
    if ((n.domain && n.domain !== 'ai.onnx') || !SUPPORTED.includes(op)) {
      this.fail(
        `op ${n.domain ? `${n.domain}.` : ''}${op} is not supported (supported: ${SUPPORTED.slice(0, 16).join(', ')})`,
      );
    }
    switch (op) {
      case 'Conv':
        return this.conv();
      case 'BatchNormalization':
        return this.batchnorm();
      case 'Relu':
        return void this.emit('relu', [this.tensor(0)], {});
      case 'MaxPool':
      case 'AveragePool':
        return this.pool(op);
      case 'GlobalAveragePool':
        return void this.emit('globalavgpool', [this.tensor(0)], {});
      case 'Flatten': {
        const x = this.tensor(0);
        if (this.axis(x, this.int('axis', 1)) !== 1)
          this.fail('only axis=1 (keep the batch axis) is supported');
        return x.shape.length === 2 ? this.set(x) : void this.emit('flatten', [x], {});
      }
      case 'Gemm':
        return this.gemm();
      case 'MatMul':
        return this.matmul();
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
        return this.arithmetic(op);
      case 'Concat':
        return this.concat();
      case 'Softmax': {
        const x = this.tensor(0);
        if (this.opset < 13 && x.shape.length > 2)
          this.fail('Softmax before opset 13 flattens its input; not supported');
        const axis = this.axis(x, this.int('axis', this.opset < 13 ? 1 : -1));
        if (axis !== 1) this.fail(`only a softmax over axis 1 is supported, not axis ${axis}`);
        return void this.emit('softmax', [x], {});
      }
      case 'Identity':
        return this.set(this.val(0));
      case 'Constant':
        return this.constant();
      case 'Reshape':
        return this.reshape();
      case 'Transpose':
        return this.transpose();
      case 'Pad':
        return this.pad();
      default:
        return this.shapeOp(op);
    }
  }

  private conv(): void {
    const v = this.val(0);
    const x = v.kind === 'padded' ? v.src : this.tensor(0);
    const extra = v.kind === 'padded' ? v.pads : [0, 0];
    const w = this.float(1, 'weight');
    const b = this.has(2) ? this.float(2, 'bias') : undefined;
    const group = this.int('group', 1);
    const c = x.shape[1]!;
    const [o, cg, kh, kw] = w.dims;
    if (w.dims.length !== 4 || group < 1 || cg! * group !== c || o! % group) {
      this.fail(
        `weight '${w.key}' has shape ${formatShape(w.dims)}, which does not fit the input ${formatShape(x.shape)} ` +
          `with group=${group} (expected [out, ${c / group}, kh, kw], out divisible by ${group})`,
      );
    }
    const kernel = this.intList('kernel_shape', [kh!, kw!]);
    if (kernel.join() !== [kh, kw].join())
      this.fail(`kernel_shape [${kernel}] does not match the weight's [${kh}, ${kw}]`);
    if (b && b.dims.join() !== String(o)) {
      this.fail(`bias '${b.key}' has shape ${formatShape(b.dims)}, expected [${o}]`);
    }
    const [stride, dilation] = [this.pair('strides', 1), this.pair('dilations', 1)];
    const [ph, pw] = this.pads(x, [kh!, kw!], stride, dilation);
    const name = this.current.name || `Conv_${this.nodes.length}`;
    this.emit(
      'conv2d',
      [x],
      {
        inChannels: c,
        outChannels: o!,
        kernel: [kh!, kw!],
        stride,
        padding: [ph + extra[0]!, pw + extra[1]!],
        dilation,
        groups: group,
        bias: !!b,
      },
      { weight: this.param(w, name, 'weight'), ...(b ? { bias: this.param(b, name, 'bias') } : {}) },
      name,
    );
  }

  private batchnorm(): void {
    const x = this.tensor(0);
    this.checkOneOutput();
    if (this.int('training_mode', 0)) this.fail('training_mode=1 is not supported');
    const c = x.shape[1]!;
    const name = this.current.name || `BatchNormalization_${this.nodes.length}`;
    const slots = ['weight', 'bias', 'running_mean', 'running_var'];
    const params = Object.fromEntries(
      ['scale', 'B', 'input_mean', 'input_var'].map((what, i) => {
        const p = this.float(i + 1, what);
        if (p.dims.join() !== String(c)) {
          this.fail(
            `${what} '${p.key}' has shape ${formatShape(p.dims)}, expected [${c}] (the input has ${c} channels)`,
          );
        }
        return [slots[i]!, this.param(p, name, slots[i]!)];
      }),
    );
    // ONNX momentum is the share kept of the running statistic; PyTorch's the share of the new batch.
    const momentum = Number((1 - this.floatAttr('momentum', 0.9)).toPrecision(12));
    this.emit(
      'batchnorm',
      [x],
      { channels: c, eps: this.floatAttr('epsilon', 1e-5), momentum },
      params,
      name,
    );
  }

  private pool(op: 'MaxPool' | 'AveragePool'): void {
    this.checkOneOutput();
    const v = this.val(0);
    const padded = op === 'AveragePool' && v.kind === 'padded' ? v : undefined;
    const x = padded ? padded.src : this.tensor(0);
    if (x.shape.length !== 4) this.fail(`input ${formatShape(x.shape)} must be NCHW`);
    if (this.intList('dilations', [1, 1]).some((d) => d !== 1)) this.fail('dilated pooling is not supported');
    if (!this.attr('kernel_shape')) this.fail('kernel_shape is missing');
    const kernel = this.pair('kernel_shape', 0);
    const stride = this.pair('strides', 1);
    let padding = this.pads(x, kernel, stride, [1, 1]);
    const ceilMode = this.int('ceil_mode', 0) === 1;
    if (op === 'MaxPool') return void this.emit('maxpool2d', [x], { kernel, stride, padding, ceilMode });
    let countIncludePad = this.int('count_include_pad', 0) === 1;
    if (padded) {
      // Explicit zeros count in the average: the same as padding with count_include_pad.
      if ((padding[0] || padding[1]) && !countIncludePad)
        this.fail('Pad before a padded AveragePool is not supported');
      if (ceilMode) this.fail('Pad before an AveragePool with ceil_mode is not supported');
      padding = [padding[0] + padded.pads[0], padding[1] + padded.pads[1]];
      countIncludePad = true;
    }
    this.emit('avgpool2d', [x], { kernel, stride, padding, ceilMode, countIncludePad });
  }

  private gemm(): void {
    const x = this.tensor(0);
    const b = this.float(1, 'B');
    if (this.int('transA', 0)) this.fail('transA=1 is not supported');
    if (x.shape.length !== 2 || b.dims.length !== 2) {
      this.fail(`expected a 2-D input and weight, got ${formatShape(x.shape)} and ${formatShape(b.dims)}`);
    }
    let w = this.int('transB', 0) ? b : transpose2d(b);
    const alpha = this.floatAttr('alpha', 1);
    if (alpha !== 1) w = { kind: 'float', dims: w.dims, data: w.data.map((v) => v * alpha) };
    const name = this.current.name || `Gemm_${this.nodes.length}`;
    const node = this.linear(x, w, name);
    if (this.has(2)) this.addBias(node, this.float(2, 'C'), this.floatAttr('beta', 1));
  }

  private matmul(): void {
    // An adaptive average pool that AveragePool cannot express, as exportOnnx writes it: (X C) then R (X C),
    // with C and R the averaging matrices of the columns and rows.
    const [first, second] = [this.val(0), this.val(1)];
    const averages = (m: Val, n: number, out: number | undefined, transposed: boolean): m is FloatVal => {
      if (m.kind !== 'float' || m.dims.length !== 2 || out === undefined) return false;
      const want = adaptiveAveraging(n, out, transposed);
      return m.data.length === want.length && m.data.every((v, i) => Math.abs(v - want[i]!) <= 1e-6);
    };
    const dims = (m: Val) => (m.kind === 'float' ? m.dims : []);
    if (first.kind === 'tensor' && first.shape.length === 4) {
      const ow = dims(second)[1];
      if (!averages(second, first.shape[3]!, ow, true) || second.dims[0] !== first.shape[3])
        this.fail(
          'a MatMul of a 4-D tensor is only supported as the column-averaging half of an adaptive average pool',
        );
      return this.set({
        kind: 'pooledColumns',
        src: first,
        shape: [...first.shape.slice(0, 3), ow!],
        ow: ow!,
      });
    }
    if (second.kind === 'pooledColumns') {
      const oh = dims(first)[0];
      if (!averages(first, second.src.shape[2]!, oh, false) || first.dims[1] !== second.src.shape[2])
        this.fail('the second MatMul of an adaptive average pool needs the row-averaging matrix first');
      return void this.emit('adaptiveavgpool2d', [second.src], { output: [oh!, second.ow] });
    }
    const x = this.tensor(0);
    const b = this.float(1, 'B');
    if (x.shape.length !== 2 || b.dims.length !== 2) {
      this.fail(
        `only [N, K] x [K, M] with a constant [K, M] is supported, got ${formatShape(x.shape)} x ${formatShape(b.dims)}`,
      );
    }
    this.linear(x, b.transposeOf ?? transpose2d(b), this.current.name || `MatMul_${this.nodes.length}`);
  }

  private linear(x: TensorVal, w: FloatVal, name: string): Node {
    const [m, k] = w.dims as [number, number];
    if (k !== x.shape[1]) {
      this.fail(
        `weight '${w.key ?? 'B'}' of shape ${formatShape(w.dims)} (as [out, in]) does not fit the input ${formatShape(x.shape)}`,
      );
    }
    const attrs = { inFeatures: k, outFeatures: m, bias: false };
    return this.emit('linear', [x], attrs, { weight: this.param(w, name, 'weight') }, name);
  }

  /** A constant added after a Conv or linear without bias becomes its bias. */
  private addBias(node: Node, c: FloatVal, scale = 1): void {
    if ((node.op !== 'linear' && node.op !== 'conv2d') || node.attrs.bias) {
      this.fail('adding a constant is only supported as the bias of a Conv, Gemm or MatMul without one');
    }
    const out = node.op === 'linear' ? node.attrs.outFeatures : node.attrs.outChannels;
    if (shapeSize(c.dims) !== out || c.dims.filter((d) => d !== 1).length > 1) {
      this.fail(`bias '${c.key}' has shape ${formatShape(c.dims)}, expected ${out} values`);
    }
    const scaled = scale === 1 ? c : { ...c, key: undefined, data: c.data.map((v) => v * scale) };
    node.attrs.bias = true;
    node.params.bias = this.param(scaled, node.name, 'bias', [out]);
  }

  private arithmetic(op: 'Add' | 'Sub' | 'Mul' | 'Div'): void {
    const [a, b] = [this.val(0), this.val(1)];
    if (a.kind === 'ints' && b.kind === 'ints') return this.set(intArithmetic(op, a, b, (m) => this.fail(m)));
    if (op === 'Add' && a.kind === 'tensor' && b.kind === 'tensor') return void this.emit('add', [a, b], {});
    if (op === 'Add' && (a.kind === 'tensor' || b.kind === 'tensor')) {
      const [x, c] =
        a.kind === 'tensor' ? [a, this.float(1, 'addend')] : [this.tensor(1), this.float(0, 'addend')];
      const node = this.byName.get(x.name);
      const only = this.uses.get(this.current.input[a.kind === 'tensor' ? 0 : 1]!) === 1;
      if (!node || !only)
        this.fail('adding a constant is only supported as the bias of a Conv, Gemm or MatMul');
      this.addBias(node, c);
      return this.set(x);
    }
    this.fail(
      `${op} is only supported on integer shape constants${op === 'Add' ? ', as a residual or as a bias' : ''}`,
    );
  }

  private concat(): void {
    const vals = this.current.input.map((_, i) => this.val(i));
    if (vals.every((v) => v.kind === 'ints')) {
      if (vals.some((v) => v.dims.length !== 1)) this.fail('only 1-D integer constants can be concatenated');
      const values = vals.flatMap((v) => v.values);
      return this.set({ kind: 'ints', dims: [values.length], values });
    }
    const xs = vals.map((_, i) => this.tensor(i));
    if (this.axis(xs[0]!, this.int('axis', 0)) !== 1)
      this.fail('only concatenation along channels (axis 1) is supported');
    this.emit('concat', xs, {});
  }

  private constant(): void {
    const a = this.current.attribute[0];
    const out = this.current.output[0]!;
    if (a?.name === 'value' && a.t) {
      const v = tensorValue(a.t, this.label, this.external);
      return this.set(v.kind === 'float' ? { ...v, key: out } : v);
    }
    if (a?.name === 'value_float')
      return this.set({ kind: 'float', dims: [], data: Float32Array.of(a.f ?? 0), key: out });
    if (a?.name === 'value_floats')
      return this.set({
        kind: 'float',
        dims: [a.floats.length],
        data: Float32Array.from(a.floats),
        key: out,
      });
    if (a?.name === 'value_int') return this.set({ kind: 'ints', dims: [], values: [a.i ?? 0] });
    if (a?.name === 'value_ints') return this.set({ kind: 'ints', dims: [a.ints.length], values: a.ints });
    this.fail(`attribute '${a?.name}' is not supported`);
  }

  private reshape(): void {
    const v = this.val(0);
    const target = this.ints(1, 'shape').values;
    if (this.int('allowzero', 0) && target.includes(0))
      this.fail('allowzero=1 with a 0 in the shape is not supported');
    if (v.kind === 'float') {
      const dims = resolveReshape(v.dims, this.known(this.ints(1, 'shape'), 'the shape'), (m) =>
        this.fail(m),
      );
      return this.set({ kind: 'float', dims, data: v.data });
    }
    if (v.kind !== 'tensor' && v.kind !== 'view') return void this.tensor(0);
    const from = v.shape;
    // The batch (axis 0) may be written as N, as 0 (copy) or as the input's fixed batch size.
    const head = target[0] === N || target[0] === 0 || target[0] === this.batch ? 1 : target[0];
    if (target.slice(1).includes(N)) this.fail('the batch size may only appear on axis 0');
    const to = resolveReshape(from, [head as number, ...(target.slice(1) as number[])], (m) => this.fail(m));
    if (to[0] !== 1) this.fail(`Reshape to [${target.join(', ')}] does not keep the batch axis first`);
    const what = `Reshape from ${formatShape(from)} to ${formatShape(to)} (batch 1)`;
    if (v.kind === 'view') {
      const [, c, h, w] = to;
      if (
        !v.transposedBy ||
        to.length !== 4 ||
        c !== v.split[0] * v.split[1] ||
        h !== from[3] ||
        w !== from[4]
      ) {
        this.fail(`${what} is not the end of a channel shuffle (Reshape -> Transpose(0,2,1,3,4) -> Reshape)`);
      }
      const node = this.emit(
        'channelshuffle',
        [v.src],
        { groups: v.split[1], order: 'authors' },
        {},
        v.transposedBy,
      );
      return void this.shuffles.push({ node, split: v.split });
    }
    const x = v;
    if (to.join() === from.join()) return this.set(x);
    if (to.length === 2) return void this.emit('flatten', [x], {});
    if (from.length === 4 && to.length === 5 && to[3] === from[2] && to[4] === from[3]) {
      return this.set({ kind: 'view', src: x, shape: to, split: [to[1]!, to[2]!] });
    }
    this.fail(
      `${what} is not supported: only flattening to [N, features] and the channel shuffle ` +
        'Reshape -> Transpose(0,2,1,3,4) -> Reshape',
    );
  }

  private transpose(): void {
    const v = this.val(0);
    const perm = this.intList('perm', []);
    if (v.kind === 'float' && v.dims.length === 2 && (!perm.length || perm.join() === '1,0')) {
      return this.set({ ...transpose2d(v), transposeOf: v });
    }
    if (v.kind === 'view' && !v.transposedBy && perm.join() === '0,2,1,3,4') {
      const [n, a, b, h, w] = v.shape;
      const name = this.current.name || `Transpose_${this.nodes.length}`;
      return this.set({ ...v, shape: [n!, b!, a!, h!, w!], transposedBy: name });
    }
    if (v.kind === 'tensor' && perm.every((p, i) => p === i)) return this.set(v);
    this.fail(
      `Transpose with perm [${perm.join(', ')}] is only supported as part of a channel shuffle ` +
        '(Reshape -> Transpose(0,2,1,3,4) -> Reshape) or on a 2-D constant',
    );
  }

  private pad(): void {
    const x = this.tensor(0);
    if (this.text('mode', 'constant') !== 'constant')
      this.fail(`mode '${this.text('mode', '')}' is not supported`);
    const pads = this.has(1) ? this.known(this.ints(1, 'pads'), 'pads') : this.intList('pads', []);
    if (this.has(2) && this.float(2, 'constant_value').data.some((v) => v !== 0)) {
      this.fail('only zero padding is supported');
    }
    if (this.has(3)) this.fail('the axes input is not supported');
    const [n0, c0, h0, w0, n1, c1, h1, w1] = pads;
    if (x.shape.length !== 4 || pads.length !== 8 || n0 || c0 || n1 || c1 || h0 !== h1 || w0 !== w1) {
      this.fail(
        `only symmetric padding of H and W of an NCHW tensor is supported, got pads [${pads.join(', ')}]`,
      );
    }
    const [n, c, h, w] = x.shape as [number, number, number, number];
    this.set({ kind: 'padded', src: x, shape: [n, c, h + 2 * h0!, w + 2 * w0!], pads: [h0!, w0!] });
  }

  /** Shape, Gather, Unsqueeze, Squeeze and Cast on constants: PyTorch's dynamic-batch shape arithmetic. */
  private shapeOp(op: string): void {
    const v = this.val(0);
    if (op === 'Shape') {
      const dims = v.kind === 'float' || v.kind === 'ints' ? v.dims : v.shape;
      const values: Int[] = v.kind === 'float' || v.kind === 'ints' ? dims : [this.batch, ...dims.slice(1)];
      const start = this.int('start', 0);
      const end = this.attr('end')?.i;
      const sliced = values.slice(start, end);
      return this.set({ kind: 'ints', dims: [sliced.length], values: sliced });
    }
    if (op === 'Cast') {
      const to = this.int('to', 0);
      const toFloat = [DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE].includes(to as 1);
      if (v.kind === 'tensor' && to === DataType.FLOAT) return this.set(v);
      if (v.kind === 'ints' && (to === DataType.INT64 || to === DataType.INT32)) return this.set(v);
      if (v.kind === 'ints' && toFloat) {
        return this.set({ kind: 'float', dims: v.dims, data: Float32Array.from(this.known(v, 'the value')) });
      }
      if (v.kind === 'float' && toFloat) return this.set(v);
      this.fail(`Cast of a ${v.kind} value to type ${to} is not supported`);
    }
    if (v.kind !== 'ints') this.fail(`${op} is only supported on integer shape constants`);
    if (op === 'Gather') {
      const idx = this.known(this.ints(1, 'indices'), 'indices');
      if (this.int('axis', 0) !== 0 || v.dims.length !== 1)
        this.fail('only axis 0 of a 1-D tensor is supported');
      const values = idx.map((i) => v.values[i < 0 ? i + v.values.length : i]);
      if (values.some((x) => x === undefined)) this.fail(`index out of range in [${idx.join(', ')}]`);
      return this.set({ kind: 'ints', dims: this.ints(1, 'indices').dims, values: values as Int[] });
    }
    // Unsqueeze / Squeeze: axes as an input since opset 13, an attribute before.
    const axes = this.has(1) ? this.known(this.ints(1, 'axes'), 'axes') : this.intList('axes', []);
    const rank = v.dims.length + (op === 'Unsqueeze' ? axes.length : 0);
    const norm = axes.map((a) => (a < 0 ? a + rank : a));
    let dims: number[];
    if (op === 'Unsqueeze') {
      dims = [];
      for (let i = 0, j = 0; i < rank; i++) dims.push(norm.includes(i) ? 1 : v.dims[j++]!);
    } else {
      dims = v.dims.filter((d, i) => (norm.length ? !norm.includes(i) : d !== 1));
    }
    this.set({ kind: 'ints', dims, values: v.values });
  }

  // ---- after all nodes ----

  /** Only the nodes the output depends on (shape arithmetic leaves none, but dead branches may exist). */
  private prune(output: string): Node[] {
    const live = new Set([output]);
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i]!;
      if (live.has(n.name)) for (const v of n.inputs) live.add(v);
    }
    return this.nodes.filter((n) => live.has(n.name));
  }

  /**
   * A split (a, b) is the authors' order with g = b or the paper's with g = a: the same permutation. Name it
   * after the group count of the next grouped convolution, looking past per-channel BN, ReLU and depthwise
   * convs, so that export -> import gives back the same node; without one, g is the smaller factor.
   */
  private orderShuffles(graph: Graph): void {
    const consumers = new Map<string, Node[]>();
    for (const n of graph.nodes) for (const v of n.inputs) consumers.set(v, [...(consumers.get(v) ?? []), n]);
    for (const { node, split } of this.shuffles) {
      const [a, b] = split;
      let g: number | undefined;
      for (let cur = consumers.get(node.name); cur?.length === 1; cur = consumers.get(cur[0]!.name)) {
        const n = cur[0]!;
        if (n.op === 'batchnorm' || n.op === 'relu') continue;
        const depthwise =
          n.op === 'conv2d' &&
          n.attrs.groups === n.attrs.inChannels &&
          n.attrs.groups === n.attrs.outChannels;
        if (n.op === 'conv2d' && !depthwise) g = n.attrs.groups;
        if (!depthwise) break;
      }
      const paper = g === a && g !== b ? true : g === b ? false : a < b;
      node.attrs = paper ? { groups: a, order: 'paper' } : { groups: b, order: 'authors' };
    }
  }
}

function transpose2d(v: FloatVal): FloatVal {
  const [r, c] = v.dims as [number, number];
  const data = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) data[j * r + i] = v.data[i * c + j]!;
  return { kind: 'float', dims: [c, r], data };
}

/** Reshape target with 0 (copy) and one -1 (infer) resolved; every other entry must be a known size. */
function resolveReshape(from: number[], target: number[], fail: (m: string) => never): number[] {
  const to = target.map((d, i) => (d === 0 ? (from[i] ?? 0) : d));
  const known = to.filter((d) => d !== -1).reduce((p, d) => p * d, 1);
  const total = shapeSize(from);
  const infer = to.filter((d) => d === -1).length;
  if (infer > 1 || to.some((d) => d < -1 || d === 0) || (infer ? total % known : total !== known)) {
    fail(`cannot reshape ${formatShape(from)} (batch 1) to [${target.join(', ')}]`);
  }
  return to.map((d) => (d === -1 ? total / known : d));
}

function intArithmetic(op: string, a: IntsVal, b: IntsVal, fail: (m: string) => never): IntsVal {
  const [x, y] = [a, b].map((v) => {
    if (v.values.includes(N)) fail(`${op} on the batch size is not supported`);
    return v.values as number[];
  }) as [number[], number[]];
  const n = Math.max(x.length, y.length);
  if ((x.length !== n && x.length !== 1) || (y.length !== n && y.length !== 1))
    fail(`${op}: shapes do not broadcast`);
  const values = Array.from({ length: n }, (_, i) => {
    const [p, q] = [x[x.length === 1 ? 0 : i]!, y[y.length === 1 ? 0 : i]!];
    if (op === 'Div' && q === 0) fail('integer division by zero');
    return op === 'Add' ? p + q : op === 'Sub' ? p - q : op === 'Mul' ? p * q : Math.trunc(p / q);
  });
  return { kind: 'ints', dims: a.dims.length >= b.dims.length ? a.dims : b.dims, values };
}
