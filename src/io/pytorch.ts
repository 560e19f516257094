/**
 * PyTorch checkpoints (torch.save), both layouts:
 *  - zip (torch >= 1.6): `<folder>/data.pkl` + `<folder>/data/<key>` raw storages (+ optional `byteorder`);
 *  - legacy (torch < 1.6, the official `.pth.tar` files): five pickles in a row (magic number, protocol,
 *    sys_info, the object, the list of storage keys), then each storage as an int64 element count + raw data.
 * Tensors in the object pickle are `_rebuild_tensor_v2(storage, offset, size, stride, ...)` where storage is a
 * persistent id ('storage', torch.XStorage, key, location, numel[, view]), so the object can be parsed
 * before the legacy layout's data has been seen; tensors are cut out of the storages afterwards.
 *
 * Pickle is a program, not a data format: GLOBAL + REDUCE call any importable Python function. The
 * restricted VM below never runs anything; it maps the few globals a state_dict needs onto pure JS
 * functions and refuses every other global as soon as the opcode naming it is read.
 */
import { unzipSync } from 'fflate';
import {
  CheckpointError,
  DTYPES,
  numelOf,
  typedFromBytes,
  type DType,
  type RawData,
  type RawTensor,
} from './raw.js';

/** The result is the state_dict: 'module.' (nn.DataParallel) is stripped and non-tensor entries are dropped. */
export function readPytorch(bytes: Uint8Array): Map<string, RawTensor> {
  try {
    const zip =
      bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 3 && bytes[3] === 4;
    return zip ? readZip(bytes) : readLegacy(bytes);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    // Safety net: a slip in the bounds checks (or an allocation failure) is still a bad file, not a crash.
    throw new CheckpointError(`corrupt PyTorch checkpoint: ${(e as Error).message}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------------------
// The restricted pickle VM (protocols 2-5). It comes first because the allow-list below instantiates
// PyCallable when the module loads.

/** A global the caller allows; `call` must be pure (it only builds values). Anything else may be a plain value. */
class PyCallable {
  constructor(
    readonly name: string,
    readonly call: (args: unknown[]) => unknown,
  ) {}
}

interface UnpickleOptions {
  /** 'module.name' -> value. A miss is refused with a CheckpointError naming the global. */
  globals: ReadonlyMap<string, unknown>;
  /** Resolves BINPERSID ids (PyTorch's storage references). */
  persistentLoad: (pid: unknown) => unknown;
}

/** Sequential little-endian reads that fail as CheckpointError, never RangeError, at the end of the input. */
class ByteReader {
  pos: number;
  private readonly view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    pos = 0,
  ) {
    this.pos = pos;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private need(n: number): number {
    if (n > this.bytes.length - this.pos) {
      throw new CheckpointError(
        `truncated file: needed ${n} bytes at byte ${this.pos}, but it ends at byte ${this.bytes.length}`,
      );
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  take(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }
  u8(): number {
    return this.bytes[this.need(1)] as number;
  }
  u16(): number {
    return this.view.getUint16(this.need(2), true);
  }
  i32(): number {
    return this.view.getInt32(this.need(4), true);
  }
  u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  /** A length or count: u64/i64 that must fit a safe integer, else the file is corrupt. */
  count64(what: string): number {
    const v = this.view.getBigInt64(this.need(8), true);
    if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError(`corrupt ${what}: ${v}`);
    return Number(v);
  }
  f64be(): number {
    return this.view.getFloat64(this.need(8), false);
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new CheckpointError(`truncated file: unterminated text line at byte ${this.pos}`);
    return latin1(this.take(end - this.pos + 1).subarray(0, -1));
  }
}

const utf8 = new TextDecoder('utf-8');
const latin1 = (b: Uint8Array): string => {
  let s = '';
  for (const c of b) s += String.fromCharCode(c);
  return s;
};

/** Two's-complement little-endian, as LONG1/LONG4 store it; a number when it is a safe integer. */
function decodeLong(b: Uint8Array): number | bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i] as number);
  if (b.length > 0 && (b[b.length - 1] as number) & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Runs one pickle from r.pos up to and including its STOP; leaves r.pos just after it. */
function unpickle(r: ByteReader, opts: UnpickleOptions): unknown {
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let at = r.pos;
  let op = 0;
  const corrupt = (msg: string): CheckpointError =>
    new CheckpointError(`corrupt pickle: ${msg} (opcode 0x${op.toString(16)} at byte ${at})`);
  const pop = (): unknown => {
    if (stack.length === 0) throw corrupt('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw corrupt('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = metastack.pop();
    if (prev === undefined) throw corrupt('no MARK on the stack');
    stack = prev;
    return items;
  };
  const get = (i: number): void => {
    if (!memo.has(i)) throw corrupt(`memo slot ${i} is empty`);
    stack.push(memo.get(i));
  };
  const global = (module: string, name: string): void => {
    const full = `${module}.${name}`;
    if (!opts.globals.has(full)) {
      throw new CheckpointError(
        `refusing to load global '${full}' (byte ${at}): only tensor, storage and OrderedDict constructors ` +
          `are allowed, because a checkpoint must never run code`,
      );
    }
    stack.push(opts.globals.get(full));
  };
  const call = (fn: unknown, args: unknown): void => {
    if (!(fn instanceof PyCallable)) throw corrupt('call of a value that is not an allowed global');
    if (!Array.isArray(args)) throw corrupt(`arguments to ${fn.name} are not a tuple`);
    stack.push(fn.call(args));
  };
  const setItems = (items: unknown[]): void => {
    const d = top();
    if (!(d instanceof Map)) throw corrupt('SETITEM(S) on a value that is not a dict');
    if (items.length % 2) throw corrupt('odd number of items for a dict');
    for (let i = 0; i < items.length; i += 2) d.set(items[i], items[i + 1]);
  };
  const appendTo = (items: unknown[]): void => {
    const l = top();
    if (!Array.isArray(l) && !(l instanceof Set)) throw corrupt('APPEND(S)/ADDITEMS on a non-list');
    // A loop, not push(...items): a huge APPENDS would overflow the call stack.
    for (const x of items) {
      if (Array.isArray(l)) l.push(x);
      else l.add(x);
    }
  };

  for (;;) {
    at = r.pos;
    op = r.u8();
    switch (op) {
      case 0x80: {
        const proto = r.u8(); // PROTO
        if (proto > 5) throw corrupt(`unsupported pickle protocol ${proto}`);
        break;
      }
      case 0x95: // FRAME: only a read-ahead hint
        r.count64('frame length');
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        metastack.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;

      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(r.i32());
        break;
      case 0x4b: // BININT1
        stack.push(r.u8());
        break;
      case 0x4d: // BININT2
        stack.push(r.u16());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(r.take(r.u8())));
        break;
      case 0x8b: {
        const n = r.i32(); // LONG4
        // Decoding is quadratic in the length; no checkpoint has integers this large.
        if (n < 0 || n > 256) throw corrupt(`LONG4 of ${n} bytes`);
        stack.push(decodeLong(r.take(n)));
        break;
      }
      case 0x47: // BINFLOAT
        stack.push(r.f64be());
        break;

      case 0x58: // BINUNICODE
        stack.push(utf8.decode(r.take(r.u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8.decode(r.take(r.u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8.decode(r.take(r.count64('string length'))));
        break;
      case 0x54: // BINSTRING (Python 2 str)
        stack.push(latin1(r.take(r.u32())));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1(r.take(r.u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(r.take(r.u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(r.take(r.u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(r.take(r.count64('bytes length')).slice());
        break;

      case 0x29: // EMPTY_TUPLE
      case 0x5d: // EMPTY_LIST (tuples and lists are both JS arrays)
        stack.push([]);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x74: // TUPLE
      case 0x6c: {
        // LIST. Not `stack.push(popMark())`: that would push onto the stack popMark() is replacing.
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x91: {
        const items = popMark(); // FROZENSET
        stack.push(new Set(items));
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        const b = pop(); // TUPLE2
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        const c = pop(); // TUPLE3
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x64: {
        const items = popMark(); // DICT
        stack.push(new Map());
        setItems(items);
        break;
      }
      case 0x73: {
        const v = pop(); // SETITEM
        const k = pop();
        setItems([k, v]);
        break;
      }
      case 0x75: // SETITEMS
        setItems(popMark());
        break;
      case 0x61: // APPEND
        appendTo([pop()]);
        break;
      case 0x65: // APPENDS
      case 0x90: // ADDITEMS
        appendTo(popMark());
        break;

      case 0x71: // BINPUT
        memo.set(r.u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(r.u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        get(r.u8());
        break;
      case 0x6a: // LONG_BINGET
        get(r.u32());
        break;

      case 0x63: {
        const module = r.line(); // GLOBAL
        global(module, r.line());
        break;
      }
      case 0x93: {
        const name = pop(); // STACK_GLOBAL
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') {
          throw corrupt('STACK_GLOBAL needs two strings');
        }
        global(module, name);
        break;
      }
      case 0x52: {
        const args = pop(); // REDUCE
        call(pop(), args);
        break;
      }
      case 0x81: {
        const args = pop(); // NEWOBJ: cls.__new__(cls, *args); our allowed classes build the same either way
        call(pop(), args);
        break;
      }
      case 0x92: {
        pop(); // NEWOBJ_EX: keyword arguments are not used by any allowed global
        const args = pop();
        call(pop(), args);
        break;
      }
      case 0x62: // BUILD: sets object state, e.g. a state_dict's _metadata; tensors don't need it
        pop();
        top();
        break;
      case 0x51: // BINPERSID
        stack.push(opts.persistentLoad(pop()));
        break;

      default:
        throw corrupt(
          `unsupported opcode${op >= 0x20 && op < 0x7f ? ` '${String.fromCharCode(op)}'` : ''} ` +
            `(text-protocol, out-of-band buffer or not a pickle at all)`,
        );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// PyTorch's side: the allow-list, storages and tensors.

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;
// A copy this big is a hostile size/stride-0 trick, not a weight; typed arrays can't hold it anyway.
const MAX_TENSOR_BYTES = 2 ** 31 - 1;

/** A storage as a tensor sees it: `numel` elements of `dtype` starting `offset` elements into root `key`. */
class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly offset: number,
    readonly numel: number,
  ) {}
}

class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: number[],
    readonly stride: number[],
  ) {}
}

class StorageType {
  constructor(readonly dtype: DType) {}
}

const STORAGE_TYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

const count = (v: unknown, what: string): number => {
  if (!Number.isSafeInteger(v) || (v as number) < 0) {
    throw new CheckpointError(`corrupt checkpoint: ${what} is ${describe(v)}, not a non-negative integer`);
  }
  return v as number;
};
const counts = (v: unknown, what: string): number[] => {
  if (!Array.isArray(v)) {
    throw new CheckpointError(`corrupt checkpoint: ${what} is ${describe(v)}, not a tuple`);
  }
  return v.map((x) => count(x, what));
};

function rebuildTensor(args: unknown[]): TensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) {
    throw new CheckpointError(`corrupt checkpoint: tensor rebuilt from ${describe(storage)}, not a storage`);
  }
  return new TensorRef(
    storage,
    count(offset, 'storage offset'),
    counts(size, 'size'),
    counts(stride, 'stride'),
  );
}

/** Everything a state_dict pickle may name. Storage types are markers read by persistentLoad, never called. */
const ALLOWED_GLOBALS: ReadonlyMap<string, unknown> = new Map<string, unknown>([
  [
    'collections.OrderedDict',
    new PyCallable('OrderedDict', (args) => {
      const items = args[0] ?? [];
      if (!Array.isArray(items)) throw new CheckpointError('corrupt checkpoint: OrderedDict of a non-list');
      return new Map(
        items.map((kv) => {
          if (!Array.isArray(kv) || kv.length !== 2) {
            throw new CheckpointError('corrupt checkpoint: OrderedDict item');
          }
          return [kv[0], kv[1]];
        }),
      );
    }),
  ],
  ['torch._utils._rebuild_tensor', new PyCallable('_rebuild_tensor', rebuildTensor)],
  ['torch._utils._rebuild_tensor_v2', new PyCallable('_rebuild_tensor_v2', rebuildTensor)],
  // A Parameter is its data tensor (requires_grad and hooks don't matter for weights).
  ['torch._utils._rebuild_parameter', new PyCallable('_rebuild_parameter', (args) => args[0])],
  [
    'torch._utils._rebuild_parameter_with_state',
    new PyCallable('_rebuild_parameter_with_state', (args) => args[0]),
  ],
  ...Object.entries(STORAGE_TYPES).map(([name, dtype]): [string, unknown] => [
    `torch.${name}`,
    new StorageType(dtype),
  ]),
]);

/**
 * Turns a persistent id into a StorageRef and records each root storage's dtype and size (needed to read
 * the legacy layout's data, which follows the pickle and carries no dtype of its own).
 */
function storageLoader(roots: Map<string, { dtype: DType; numel: number }>): (pid: unknown) => StorageRef {
  return (pid) => {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || (pid.length !== 5 && pid.length !== 6)) {
      throw new CheckpointError(
        `unsupported persistent id ${describe(pid)} (only tensor storages are supported)`,
      );
    }
    const [, type, key, , n, view] = pid as unknown[];
    if (!(type instanceof StorageType)) {
      throw new CheckpointError(`corrupt checkpoint: storage type ${describe(type)}`);
    }
    if (typeof key !== 'string') {
      throw new CheckpointError(`corrupt checkpoint: storage key ${describe(key)}`);
    }
    const numel = count(n, `size of storage '${key}'`);
    const seen = roots.get(key);
    if (seen && (seen.dtype !== type.dtype || seen.numel !== numel)) {
      throw new CheckpointError(
        `corrupt checkpoint: storage '${key}' is declared twice with different types or sizes`,
      );
    }
    roots.set(key, { dtype: type.dtype, numel });
    if (view === undefined || view === null) return new StorageRef(key, type.dtype, 0, numel);
    // Old torch (< 1.0) saved views of storages as (view_key, offset, size) in elements of the root.
    if (!Array.isArray(view) || view.length !== 3) {
      throw new CheckpointError(`corrupt checkpoint: storage view ${describe(view)}`);
    }
    const offset = count(view[1], 'storage view offset');
    const size = count(view[2], 'storage view size');
    if (offset + size > numel) {
      throw new CheckpointError(
        `corrupt checkpoint: view [${offset}, ${offset + size}) of storage '${key}' past its ${numel} elements`,
      );
    }
    return new StorageRef(key, type.dtype, offset, size);
  };
}

function readZip(bytes: Uint8Array): Map<string, RawTensor> {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    throw new CheckpointError(
      `PyTorch zip checkpoint is not a readable zip archive (${(e as Error).message})`,
      {
        cause: e,
      },
    );
  }
  const names = Object.keys(files);
  // The top folder is named after the file it was saved as ('archive' since torch 2.x); find it.
  const pkl = names.find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkl === undefined) throw new CheckpointError('PyTorch zip checkpoint has no <folder>/data.pkl entry');
  const prefix = pkl.slice(0, -'data.pkl'.length);
  const entry = (name: string): Uint8Array | undefined =>
    Object.hasOwn(files, name) ? files[name] : undefined;
  const byteorder = entry(`${prefix}byteorder`);
  if (byteorder && new TextDecoder().decode(byteorder) !== 'little') {
    throw new CheckpointError('PyTorch zip checkpoint stores big-endian data, which is not supported');
  }

  const roots = new Map<string, { dtype: DType; numel: number }>();
  const top = unpickle(new ByteReader(entry(pkl) as Uint8Array), {
    globals: ALLOWED_GLOBALS,
    persistentLoad: storageLoader(roots),
  });
  const data = new Map<string, Uint8Array>();
  for (const [key, { dtype, numel }] of roots) {
    const d = entry(`${prefix}data/${key}`);
    if (d === undefined) {
      throw new CheckpointError(`PyTorch zip checkpoint lacks the data of storage '${key}'`);
    }
    if (d.length !== numel * DTYPES[dtype].size) {
      throw new CheckpointError(
        `PyTorch zip checkpoint: storage '${key}' has ${d.length} bytes, expected ${numel} x ${dtype} = ${numel * DTYPES[dtype].size}`,
      );
    }
    data.set(key, d);
  }
  return collectStateDict(top, data);
}

function readLegacy(bytes: Uint8Array): Map<string, RawTensor> {
  if (bytes.length >= 262 && new TextDecoder().decode(bytes.subarray(257, 262)) === 'ustar') {
    throw new CheckpointError(
      'tar-format PyTorch checkpoints (torch < 0.1.10) are not supported; re-save it with torch',
    );
  }
  const r = new ByteReader(bytes);
  const plain = {
    globals: ALLOWED_GLOBALS,
    persistentLoad: (): never => {
      throw new CheckpointError('corrupt checkpoint: storage reference outside the object pickle');
    },
  };
  // Anything that is not a zip is tried as the legacy stream, so a bare pickle still goes through the
  // restricted VM (and a malicious one is refused by name) before the magic number check can fail.
  const magic = unpickle(r, plain);
  if (magic !== LEGACY_MAGIC) {
    throw new CheckpointError('not a PyTorch checkpoint: neither a zip archive nor the legacy magic number');
  }
  const protocol = unpickle(r, plain);
  if (protocol !== LEGACY_PROTOCOL) {
    throw new CheckpointError(`unsupported legacy checkpoint protocol ${describe(protocol)}`);
  }
  const sysInfo = unpickle(r, plain);
  if (sysInfo instanceof Map && sysInfo.get('little_endian') === false) {
    throw new CheckpointError('legacy checkpoint stores big-endian data, which is not supported');
  }

  const roots = new Map<string, { dtype: DType; numel: number }>();
  const top = unpickle(r, { globals: ALLOWED_GLOBALS, persistentLoad: storageLoader(roots) });
  const keys = unpickle(r, plain);
  if (!Array.isArray(keys)) {
    throw new CheckpointError(`corrupt legacy checkpoint: storage key list is ${describe(keys)}`);
  }
  const data = new Map<string, Uint8Array>();
  for (const key of keys) {
    const root = typeof key === 'string' ? roots.get(key) : undefined;
    // The data carries no dtype, so a key no tensor refers to can't even be skipped.
    if (root === undefined) {
      throw new CheckpointError(`corrupt legacy checkpoint: data for unknown storage ${describe(key)}`);
    }
    const n = r.count64(`element count of storage '${key}'`);
    if (n !== root.numel) {
      throw new CheckpointError(
        `corrupt legacy checkpoint: storage '${key}' has ${n} elements, the pickle says ${root.numel}`,
      );
    }
    data.set(key as string, r.take(n * DTYPES[root.dtype].size));
  }
  return collectStateDict(top, data);
}

function collectStateDict(top: unknown, data: Map<string, Uint8Array>): Map<string, RawTensor> {
  if (!(top instanceof Map)) {
    throw new CheckpointError(`checkpoint holds ${describe(top)}, not a dict of tensors`);
  }
  // Training scripts save {'state_dict': ..., 'epoch': ...} or {'model': ...}; a bare state_dict is the dict itself.
  const inner: unknown = [top.get('state_dict'), top.get('model')].find((v) => v instanceof Map);
  const dict = inner instanceof Map ? inner : top;
  const out = new Map<string, RawTensor>();
  for (const [k, v] of dict) {
    if (typeof k !== 'string' || !(v instanceof TensorRef)) continue;
    const name = k.startsWith('module.') ? k.slice('module.'.length) : k;
    if (out.has(name)) {
      throw new CheckpointError(`checkpoint has tensor '${name}' both with and without 'module.'`);
    }
    out.set(name, materialize(v, data, name));
  }
  return out;
}

/** A contiguous row-major copy of the tensor's elements, whatever its offset and strides. */
function materialize(t: TensorRef, data: Map<string, Uint8Array>, name: string): RawTensor {
  const { storage: s, size, stride } = t;
  const bad = (msg: string): CheckpointError => new CheckpointError(`tensor '${name}': ${msg}`);
  const bytes = data.get(s.key);
  if (bytes === undefined) throw bad(`the data of its storage '${s.key}' is missing`);
  if (size.length !== stride.length) throw bad(`${size.length} sizes but ${stride.length} strides`);
  const itemsize = DTYPES[s.dtype].size;
  const n = numelOf(size);
  const shape = [...size];
  if (n === 0) return { dtype: s.dtype, shape, data: typedFromBytes(s.dtype, new Uint8Array(0)) };
  if (n * itemsize > MAX_TENSOR_BYTES) throw bad(`${n} elements is too large`);
  let last = t.offset; // the furthest element the tensor reads
  for (let i = 0; i < size.length; i++) last += ((size[i] as number) - 1) * (stride[i] as number);
  if (last >= s.numel) {
    throw bad(
      `offset ${t.offset}, size [${size.join(', ')}] and stride [${stride.join(', ')}] reach element ${last} ` +
        `of a storage with ${s.numel}`,
    );
  }
  const base = (s.offset + t.offset) * itemsize;
  let expected = 1;
  let contiguous = true;
  for (let i = size.length - 1; i >= 0; i--) {
    if (size[i] !== 1 && stride[i] !== expected) contiguous = false;
    expected *= size[i] as number;
  }
  if (contiguous) {
    return {
      dtype: s.dtype,
      shape,
      data: typedFromBytes(s.dtype, bytes.subarray(base, base + n * itemsize)),
    };
  }

  // Strided: copy just the spanned range once (aligned), then gather with an odometer over the indices.
  const src = typedFromBytes(s.dtype, bytes.subarray(base, (s.offset + last + 1) * itemsize));
  const dst = DTYPES[s.dtype].make(new ArrayBuffer(n * itemsize));
  gather(src, dst, size, stride);
  return { dtype: s.dtype, shape, data: dst };
}

function gather(src: RawData, dst: RawData, size: number[], stride: number[]): void {
  // src and dst have the same element type; index them untyped so bigint and number arrays share one loop.
  const from = src as unknown as Record<number, unknown>;
  const to = dst as unknown as Record<number, unknown>;
  const idx = new Array<number>(size.length).fill(0);
  let at = 0;
  for (let j = 0; j < dst.length; j++) {
    to[j] = from[at];
    for (let k = size.length - 1; k >= 0; k--) {
      const sk = stride[k] as number;
      if (++(idx[k] as number) < (size[k] as number)) {
        at += sk;
        break;
      }
      at -= ((size[k] as number) - 1) * sk;
      idx[k] = 0;
    }
  }
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (Array.isArray(v)) return `a tuple of ${v.length}`;
  if (v instanceof Map) return 'a dict';
  if (v instanceof TensorRef) return 'a tensor';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'object') return `a ${v.constructor.name}`;
  return String(v);
}
