import { instantiateKernelsSync, type WasmKernels } from '../../src/backends/wasm/module.js';
import { enableRelaxedSimd } from '../../src/node/wasm.js';
import type { Conv2dAttrs } from '../../src/ops/index.js';

/** Every kernel build this runtime accepts: simd and (where Node takes it) relaxed, each plain and shared. */
export const relaxed = enableRelaxedSimd();
export const variants: WasmKernels[] = [instantiateKernelsSync(), instantiateKernelsSync({ shared: true })];
if (relaxed)
  variants.push(
    instantiateKernelsSync({ relaxed: true }),
    instantiateKernelsSync({ relaxed: true, shared: true }),
  );

/** Bump allocation in a kernel module's memory. */
export class Arena {
  private top: number;
  constructor(readonly k: WasmKernels) {
    this.top = k.heapBase;
  }
  alloc(bytes: number): number {
    const p = (this.top + 15) & ~15;
    this.top = p + bytes;
    const short = this.top - this.k.memory.buffer.byteLength;
    if (short > 0) this.k.memory.grow(Math.ceil(short / 65536));
    return p;
  }
  put(data: Float32Array | Int32Array | undefined): number {
    if (!data) return 0;
    const p = this.alloc(data.byteLength);
    this.write(p, data);
    return p;
  }
  write(p: number, data: Float32Array | Int32Array): void {
    new Uint8Array(this.k.memory.buffer, p, data.byteLength).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
  }
  read(p: number, n: number): Float32Array {
    return new Float32Array(this.k.memory.buffer, p, n).slice();
  }
}

/** Rows [off, off + c) of each image of a [n][rows][plane] buffer, as [n][c][...] data. */
export function rowsOf(
  buf: Float32Array,
  n: number,
  rows: number,
  off: number,
  c: number,
  plane: number,
  map?: Int32Array,
) {
  const out = new Float32Array(n * c * plane);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < c; i++) {
      const src = (b * rows + off + (map ? map[i]! : i)) * plane;
      out.set(buf.subarray(src, src + plane), (b * c + i) * plane);
    }
  }
  return out;
}

/** Writes [n][c][plane] `data` into rows off + (map ? map[i] : i) of a [n][rows][plane] buffer. */
export function placeRows(
  buf: Float32Array,
  data: Float32Array,
  n: number,
  rows: number,
  off: number,
  c: number,
  plane: number,
  map?: Int32Array,
) {
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < c; i++) {
      const dst = (b * rows + off + (map ? map[i]! : i)) * plane;
      buf.set(data.subarray((b * c + i) * plane, (b * c + i + 1) * plane), dst);
    }
  }
}

/** Conv attributes: a 1x1, stride 1, no padding unless `over` says otherwise. */
export function conv(
  over: Partial<Conv2dAttrs> & Pick<Conv2dAttrs, 'inChannels' | 'outChannels'>,
): Conv2dAttrs {
  return {
    kernel: [1, 1],
    stride: [1, 1],
    padding: [0, 0],
    dilation: [1, 1],
    groups: 1,
    bias: false,
    ...over,
  };
}
