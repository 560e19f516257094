/**
 * A restricted pickle VM (protocols 2-5) for PyTorch checkpoints. Pickle is a program, not a data format:
 * its GLOBAL + REDUCE opcodes call any importable Python function. This VM never runs anything; it maps
 * the few globals a state_dict needs onto pure JS functions (see pytorch.ts) and refuses every other
 * global the moment the opcode naming it is read, before any call could happen.
 */
import { CheckpointError } from './raw.js';

/** A global the caller allows; `call` must be pure (it only builds values). Anything else may be a plain value. */
export class PyCallable {
  constructor(
    readonly name: string,
    readonly call: (args: unknown[]) => unknown,
  ) {}
}

export interface UnpickleOptions {
  /** 'module.name' -> value. A miss is refused with a CheckpointError naming the global. */
  globals: ReadonlyMap<string, unknown>;
  /** Resolves BINPERSID ids (PyTorch's storage references). */
  persistentLoad: (pid: unknown) => unknown;
}

/** Sequential little-endian reads that fail as CheckpointError, never RangeError, at the end of the input. */
export class ByteReader {
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
export function unpickle(r: ByteReader, opts: UnpickleOptions): unknown {
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
    if (Array.isArray(l)) for (const x of items) l.push(x); // no spread: huge APPENDS would overflow the call stack
    else if (l instanceof Set) for (const x of items) l.add(x);
    else throw corrupt('APPEND(S)/ADDITEMS on a value that is not a list or set');
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
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x91: // FROZENSET
        stack.push(new Set(popMark()));
        break;
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
        if (typeof module !== 'string' || typeof name !== 'string') throw corrupt('STACK_GLOBAL needs two strings');
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
