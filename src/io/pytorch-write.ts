/**
 * Writes a state_dict as torch.save does by default since torch 1.6: a zip archive, every entry stored
 * (uncompressed) with its data 64-byte aligned (torch.load may mmap it), holding
 *  - `<archive>/data.pkl`: a protocol-2 pickle of `collections.OrderedDict([(name, tensor), ...])`, each tensor
 *    `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with the storage a
 *    persistent id `('storage', torch.<X>Storage, key, 'cpu', numel)`;
 *  - `<archive>/byteorder`: "little";
 *  - `<archive>/data/<key>`: each tensor's elements, little-endian, row-major (one storage per tensor);
 *  - `<archive>/version`: "3\n", the file format version torch.save writes.
 * The pickle names only globals that torch.load(weights_only=True) accepts. Platform-neutral and
 * deterministic: the same tensors give the same bytes (no clock, no file name inside).
 */
import { CheckpointError, DTYPES, isDType, numelOf, type DType, type RawTensor } from './raw.js';

export interface PytorchWriteOptions {
  /** The zip's top folder (torch names it after the file, or 'archive'; torch.load ignores it). */
  archiveName?: string;
}

/** The storage class torch pickles for each dtype (torch/storage.py's legacy typed storages). */
const STORAGE_CLASS: Readonly<Record<DType, string>> = {
  F32: 'FloatStorage',
  F64: 'DoubleStorage',
  F16: 'HalfStorage',
  BF16: 'BFloat16Storage',
  I64: 'LongStorage',
  I32: 'IntStorage',
  I16: 'ShortStorage',
  I8: 'CharStorage',
  U8: 'ByteStorage',
  BOOL: 'BoolStorage',
};

const UTF8 = new TextEncoder();
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** torch.save's zip bytes for a state_dict, the tensors in the map's order. */
export function writePytorch(
  tensors: ReadonlyMap<string, RawTensor>,
  options: PytorchWriteOptions = {},
): Uint8Array {
  const archive = options.archiveName ?? 'archive';
  if (!/^[A-Za-z0-9_.-]+$/.test(archive) || archive === '.' || archive === '..') {
    throw new CheckpointError(
      `PyTorch writer: archive name '${archive}' must be letters, digits, '_', '.' or '-'`,
    );
  }
  if (!HOST_LITTLE_ENDIAN) throw new CheckpointError('big-endian hosts are not supported');

  const storages: Uint8Array[] = [];
  const p = new Pickler();
  p.proto(2);
  p.global('collections', 'OrderedDict');
  p.emptyTuple();
  p.reduce();
  const entries = [...tensors];
  // As Python's pickler: SETITEMS in batches of 1000, a lone item as SETITEM.
  for (let b = 0; b < entries.length; b += 1000) {
    const batch = entries.slice(b, b + 1000);
    if (batch.length > 1) p.mark();
    for (const [name, t] of batch) {
      if (typeof name !== 'string') {
        throw new CheckpointError(`PyTorch writer: tensor name ${String(name)} is not a string`);
      }
      const bytes = checkedBytes(name, t);
      const key = String(storages.length);
      storages.push(bytes);
      p.unicode(name);
      writeTensor(p, t, key);
    }
    p.op(batch.length > 1 ? SETITEMS : SETITEM);
  }
  p.op(STOP);

  const ascii = (s: string): Uint8Array => UTF8.encode(s);
  return storedZip([
    [`${archive}/data.pkl`, p.bytes()],
    [`${archive}/byteorder`, ascii('little')],
    ...storages.map((s, i): [string, Uint8Array] => [`${archive}/data/${i}`, s]),
    [`${archive}/version`, ascii('3\n')],
  ]);
}

/** The tensor's bytes, after checking that its dtype, shape and data agree. */
function checkedBytes(name: string, t: RawTensor): Uint8Array {
  const bad = (msg: string): CheckpointError =>
    new CheckpointError(`PyTorch writer: tensor '${name}': ${msg}`);
  if (!isDType(t.dtype)) throw bad(`unknown dtype '${String(t.dtype)}'`);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`shape [${String(t.shape)}] is not a list of non-negative integers`);
  }
  const size = numelOf(t.shape) * DTYPES[t.dtype].size;
  if (t.data.byteLength !== size) {
    throw bad(`${t.dtype} [${t.shape.join(', ')}] needs ${size} bytes, data has ${t.data.byteLength}`);
  }
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, size);
  if (t.dtype === 'BOOL' && bytes.some((v) => v > 1)) throw bad('BOOL data holds a byte other than 0 or 1');
  return bytes;
}

/** Row-major strides as torch computes them: a size-0 dimension counts as 1 for the ones before it. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= Math.max(shape[i] as number, 1);
  }
  return stride;
}

function writeTensor(p: Pickler, t: RawTensor, key: string): void {
  p.global('torch._utils', '_rebuild_tensor_v2');
  p.mark();
  // The persistent id: ('storage', torch.XStorage, key, 'cpu', numel).
  p.mark();
  p.unicode('storage');
  p.global('torch', STORAGE_CLASS[t.dtype]);
  p.unicode(key);
  p.unicode('cpu');
  p.int(numelOf(t.shape));
  p.op(TUPLE);
  p.op(BINPERSID);
  p.int(0); // storage offset
  p.intTuple(t.shape);
  p.intTuple(contiguousStrides(t.shape));
  p.op(NEWFALSE); // requires_grad
  p.global('collections', 'OrderedDict'); // backward hooks: an empty OrderedDict
  p.emptyTuple();
  p.reduce();
  p.op(TUPLE);
  p.reduce();
}

// ---------------------------------------------------------------------------------------------------------
// A protocol-2 pickler for the few values above. Globals are memoized (BINPUT once, BINGET after), as
// Python's pickler does; nothing else is, so no memo slot can alias a mutable value.

const MARK = 0x28;
const STOP = 0x2e;
const BINPERSID = 0x51;
const REDUCE = 0x52;
const TUPLE = 0x74;
const EMPTY_TUPLE = 0x29;
const SETITEM = 0x73;
const SETITEMS = 0x75;
const NEWFALSE = 0x89;
const TUPLE_N = [EMPTY_TUPLE, 0x85, 0x86, 0x87]; // EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3

class Pickler {
  private buf = new Uint8Array(1024);
  private len = 0;
  private readonly memo = new Map<string, number>();

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  private raw(b: ArrayLike<number>): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  private u32(v: number): number[] {
    return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
  }

  op(code: number): void {
    this.raw([code]);
  }
  proto(v: number): void {
    this.raw([0x80, v]);
  }
  mark(): void {
    this.op(MARK);
  }
  emptyTuple(): void {
    this.op(EMPTY_TUPLE);
  }
  reduce(): void {
    this.op(REDUCE);
  }
  /** GLOBAL 'module\nname\n' the first time, then BINGET / LONG_BINGET of its memo slot. */
  global(module: string, name: string): void {
    const full = `${module}\n${name}\n`;
    const slot = this.memo.get(full);
    if (slot !== undefined) {
      this.raw(slot < 256 ? [0x68, slot] : [0x6a, ...this.u32(slot)]); // BINGET, LONG_BINGET
      return;
    }
    this.op(0x63); // GLOBAL
    this.raw(UTF8.encode(full));
    const n = this.memo.size;
    this.memo.set(full, n);
    this.raw(n < 256 ? [0x71, n] : [0x72, ...this.u32(n)]); // BINPUT, LONG_BINPUT
  }
  unicode(s: string): void {
    const b = UTF8.encode(s);
    this.raw([0x58, ...this.u32(b.length)]); // BINUNICODE
    this.raw(b);
  }
  /** As Python's save_long at protocol 2: BININT1, BININT2, BININT, else LONG1 (two's complement). */
  int(v: number): void {
    if (!Number.isSafeInteger(v)) throw new CheckpointError(`PyTorch writer: ${v} is not an integer`);
    if (v >= 0 && v < 256) this.raw([0x4b, v]);
    else if (v >= 0 && v < 65536) this.raw([0x4d, v & 0xff, v >> 8]);
    else if (v >= -(2 ** 31) && v < 2 ** 31) this.raw([0x4a, ...this.u32(v)]);
    else {
      const bytes: number[] = [];
      let x = BigInt(v);
      // Little-endian two's complement, as short as keeps the sign bit right.
      for (;;) {
        const byte = Number(x & 0xffn);
        bytes.push(byte);
        x >>= 8n;
        if ((x === 0n && !(byte & 0x80)) || (x === -1n && byte & 0x80)) break;
      }
      this.raw([0x8a, bytes.length, ...bytes]); // LONG1
    }
  }
  intTuple(vs: readonly number[]): void {
    if (vs.length > 3) this.mark();
    for (const v of vs) this.int(v);
    this.op(vs.length > 3 ? TUPLE : (TUPLE_N[vs.length] as number));
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The zip container: stored entries, each data start 64-byte aligned by padding the local header's extra
// field (id 'FB', filled with 'Z', as torch's writer does). Plain zip, not ZIP64: archives up to 4 GiB.

const ALIGNMENT = 64;
const LOCAL_HEADER = 30;
const CENTRAL_HEADER = 46;
const END_RECORD = 22;
const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01: fixed, so the bytes never depend on the clock
const VERSION = 20; // 2.0: what a stored entry needs

function storedZip(files: [string, Uint8Array][]): Uint8Array {
  if (files.length > 0xffff) {
    throw new CheckpointError(`PyTorch writer: ${files.length} zip entries; at most 65535 are supported`);
  }
  const layout: { name: Uint8Array; data: Uint8Array; at: number; pad: number; crc: number }[] = [];
  let at = 0;
  for (const [n, data] of files) {
    const name = UTF8.encode(n);
    const start = at + LOCAL_HEADER + name.length + 4; // 4: the padding field's own header
    const pad = (ALIGNMENT - (start % ALIGNMENT)) % ALIGNMENT;
    layout.push({ name, data, at, pad, crc: crc32(data) });
    at = start + pad + data.length;
  }
  const centralAt = at;
  for (const f of layout) at += CENTRAL_HEADER + f.name.length;
  const end = at + END_RECORD;
  if (end > 0xffffffff) {
    throw new CheckpointError(`PyTorch writer: ${end} bytes; archives over 4 GiB (ZIP64) are not supported`);
  }

  const out = new Uint8Array(end);
  const v = new DataView(out.buffer);
  const u16 = (o: number, x: number): void => v.setUint16(o, x, true);
  const u32 = (o: number, x: number): void => v.setUint32(o, x, true);
  for (const f of layout) {
    let o = f.at;
    u32(o, 0x04034b50);
    u16(o + 4, VERSION);
    u16(o + 6, 0); // flags: sizes and CRC are in this header
    u16(o + 8, 0); // method: stored
    u16(o + 10, 0); // time
    u16(o + 12, DOS_DATE);
    u32(o + 14, f.crc);
    u32(o + 18, f.data.length);
    u32(o + 22, f.data.length);
    u16(o + 26, f.name.length);
    u16(o + 28, 4 + f.pad);
    o += LOCAL_HEADER;
    out.set(f.name, o);
    o += f.name.length;
    out.set([0x46, 0x42], o); // 'FB'
    u16(o + 2, f.pad);
    out.fill(0x5a, o + 4, o + 4 + f.pad); // 'Z'
    out.set(f.data, o + 4 + f.pad);
  }
  let o = centralAt;
  for (const f of layout) {
    u32(o, 0x02014b50);
    u16(o + 4, VERSION); // made by: MS-DOS, 2.0
    u16(o + 6, VERSION);
    u16(o + 8, 0);
    u16(o + 10, 0);
    u16(o + 12, 0);
    u16(o + 14, DOS_DATE);
    u32(o + 16, f.crc);
    u32(o + 20, f.data.length);
    u32(o + 24, f.data.length);
    u16(o + 28, f.name.length);
    // extra length, comment length, disk number, internal and external attributes: all 0
    u32(o + 42, f.at);
    out.set(f.name, o + CENTRAL_HEADER);
    o += CENTRAL_HEADER + f.name.length;
  }
  u32(o, 0x06054b50);
  u16(o + 8, layout.length);
  u16(o + 10, layout.length);
  u32(o + 12, o - centralAt);
  u32(o + 16, centralAt);
  return out;
}

let CRC_TABLE: Uint32Array | undefined;

/** CRC-32 (ISO 3309, as zip uses it). */
export function crc32(data: Uint8Array): number {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  const table = CRC_TABLE;
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = (table[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
