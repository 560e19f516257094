// Speed of the WASM pointwise backward kernels (dX = W^T dY and dW = dY X^T) on the grouped 1x1 convs of
// ShuffleNet v1 0.5x, g = 3, small-input training (28x28 input, batch 128): stage widths 120/240/480 at
// 14x14/7x7/4x4, bottleneck width a quarter of the output, the channel shuffle folded in where the unit has
// it. The forward pointwise kernel on the same shape is listed for comparison. One thread, simd and
// relaxed-simd builds side by side. GFLOP/s counts 2 flops per multiply-add.
// Run: npx tsx bench/backward.ts
import { instantiateKernelsSync, type KernelExports, type WasmKernels } from '../src/backends/wasm/module.js';
import { shufflePermutation } from '../src/ops/index.js';
import { enableRelaxedSimd } from '../src/node/wasm.js';

const N = 128;
const GROUPS = 3;

interface Shape {
  inC: number;
  outC: number;
  side: number;
  /** The 1x1 conv after the shuffle (input channels read through the shuffle map). */
  shuffled: boolean;
}

const shapes: Shape[] = [
  { inC: 120, outC: 30, side: 14, shuffled: false },
  { inC: 30, outC: 120, side: 14, shuffled: true },
  { inC: 240, outC: 60, side: 7, shuffled: false },
  { inC: 60, outC: 240, side: 7, shuffled: true },
  { inC: 480, outC: 120, side: 4, shuffled: false },
  { inC: 120, outC: 480, side: 4, shuffled: true },
];

type Kind = 'forward' | 'backward input' | 'backward weight';
const kinds: Kind[] = ['forward', 'backward input', 'backward weight'];

/** Median seconds per call, over 5 runs of enough calls to take ~100 ms. */
function time(fn: () => void): number {
  let reps = 1;
  for (let t = 0; t < 100; reps *= 2) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    t = performance.now() - t0;
  }
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    runs.push((performance.now() - t0) / reps / 1e3);
  }
  return runs.sort((a, b) => a - b)[2]!;
}

function run(e: KernelExports, kind: Kind, s: Shape, x: number, w: number, y: number, m: number): void {
  const HW = s.side * s.side;
  const map = s.shuffled ? m : 0;
  if (kind === 'forward')
    e.pointwise(x, s.inC, 0, map, w, 0, y, s.outC, 0, 0, N, s.inC, s.outC, GROUPS, HW, 0, 0, 1);
  else if (kind === 'backward input')
    e.pointwiseBackwardInput(y, s.outC, 0, w, x, s.inC, 0, map, N, s.inC, s.outC, GROUPS, HW, 0, 0, 1);
  else
    e.pointwiseBackwardWeight(
      x,
      s.inC,
      0,
      map,
      y,
      s.outC,
      0,
      w,
      0,
      N,
      s.inC,
      s.outC,
      GROUPS,
      HW,
      m + 65536,
      0,
      1,
    );
}

/** [shape][kind] -> [ms, GFLOP/s]. */
function measure(k: WasmKernels): Array<Array<[number, number]>> {
  const mib = 1 << 20;
  const base = k.heapBase;
  const buf = 32 * mib; // floats per buffer: max 128*480*16 = 1M floats = 4 MiB; room to spare
  k.memory.grow(Math.ceil((base + 3 * buf + 2 * mib - k.memory.buffer.byteLength) / 65536));
  const data = new Float32Array(k.memory.buffer, base, (3 * buf) / 4);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.5;
  const [x, w, y, m] = [base, base + buf, base + 2 * buf, base + 3 * buf];
  return shapes.map((s) => {
    const map = shufflePermutation(s.inC, GROUPS, 'paper');
    new Int32Array(k.memory.buffer, m, map.length).set(map);
    const macs = (N * s.side * s.side * s.inC * s.outC) / GROUPS;
    return kinds.map((kind): [number, number] => {
      const sec = time(() => run(k.exports, kind, s, x, w, y, m));
      return [sec * 1e3, (2 * macs) / sec / 1e9];
    });
  });
}

/**
 * Accuracy of the long dW reduction (N*HW terms per weight) on one shape: the kernel's dw against float64,
 * as the largest |error| / (U * sum |terms|) (U = 2^-24) and the largest |error| / |exact|.
 */
function accuracy(k: WasmKernels, s: Shape): string {
  const HW = s.side * s.side;
  const cin = s.inC / GROUPS;
  const og = s.outC / GROUPS;
  const base = k.heapBase;
  const [x, dy, dw] = [base, base + 32 * (1 << 20), base + 64 * (1 << 20)];
  const f = (p: number, n: number) => new Float32Array(k.memory.buffer, p, n);
  const xs = f(x, N * s.inC * HW);
  const ys = f(dy, N * s.outC * HW);
  for (let i = 0; i < xs.length; i++) xs[i] = Math.sin(i * 0.37) + 0.3;
  for (let i = 0; i < ys.length; i++) ys[i] = Math.cos(i * 0.11) * 0.01;
  f(dw, s.outC * cin).fill(0);
  k.exports.pointwiseBackwardWeight(
    x,
    s.inC,
    0,
    0,
    dy,
    s.outC,
    0,
    dw,
    0,
    N,
    s.inC,
    s.outC,
    GROUPS,
    HW,
    dw + (1 << 20),
    0,
    1,
  );
  const got = f(dw, s.outC * cin);
  let worstU = 0;
  let worstRel = 0;
  for (let o = 0; o < s.outC; o++) {
    const g = Math.floor(o / og);
    for (let j = 0; j < cin; j++) {
      let e = 0;
      let m = 0;
      for (let n = 0; n < N; n++) {
        const yr = (n * s.outC + o) * HW;
        const xr = (n * s.inC + g * cin + j) * HW;
        for (let p = 0; p < HW; p++) {
          const t = ys[yr + p]! * xs[xr + p]!;
          e += t;
          m += Math.abs(t);
        }
      }
      const err = Math.abs(got[o * cin + j]! - e);
      worstU = Math.max(worstU, err / (2 ** -24 * m));
      worstRel = Math.max(worstRel, err / Math.abs(e));
    }
  }
  return `dW accuracy ${s.inC}->${s.outC} ${s.side}x${s.side}, ${N * HW} terms per weight: max |err| = ${worstU.toFixed(1)} U sum|terms|, max relative ${worstRel.toExponential(2)}`;
}

const variants = [instantiateKernelsSync()];
if (enableRelaxedSimd()) variants.push(instantiateKernelsSync({ relaxed: true }));
else console.log('relaxed SIMD is not available here');
const results = variants.map(measure);
const names = variants.map((v) => (v.relaxed ? 'relaxed' : 'simd'));

console.log(
  `${`batch ${N}, g=${GROUPS}, one thread`.padEnd(44)} ${names.map((n) => `${n} ms  GFLOP/s`.padStart(20)).join('')}`,
);
shapes.forEach((s, i) => {
  kinds.forEach((kind, j) => {
    const name = `${s.inC}->${s.outC} ${s.side}x${s.side}${s.shuffled ? ' +shuffle' : ''} ${kind}`;
    const cols = results.map((r) => {
      const [ms, gflops] = r[i]![j]!;
      return `${ms.toFixed(3).padStart(9)} ${gflops.toFixed(1).padStart(8)}`.padStart(20);
    });
    console.log(`${name.padEnd(44)} ${cols.join('')}`);
  });
});
/** Depthwise 3x3 forward and backward on the stage shapes (bottleneck widths 30/60/120, stride 1 and 2). */
const dwShapes = [
  { C: 30, H: 14, stride: 1 },
  { C: 30, H: 28, stride: 2 },
  { C: 60, H: 7, stride: 1 },
  { C: 60, H: 14, stride: 2 },
  { C: 120, H: 4, stride: 1 },
  { C: 120, H: 7, stride: 2 },
];
function measureDw(k: WasmKernels): Array<Array<[number, number]>> {
  const e = k.exports;
  const mib = 1 << 20;
  const [x, w, y, d] = [k.heapBase, k.heapBase + 32 * mib, k.heapBase + 64 * mib, k.heapBase + 96 * mib];
  const scratch = d + 32 * mib;
  const short = scratch + 2 * mib - k.memory.buffer.byteLength;
  if (short > 0) k.memory.grow(Math.ceil(short / 65536));
  return dwShapes.map(({ C, H, stride: s }) => {
    const OH = Math.floor((H - 1) / s) + 1;
    const macs = N * C * 9 * OH * OH;
    const runs = [
      () => e.depthwise3x3(x, C, 0, w, 0, y, C, 0, 0, N, C, H, H, s, 0, 0, 1),
      () => e.depthwise3x3BackwardInput(y, C, 0, 0, w, d, C, 0, N, C, H, H, s, 0, scratch, 0, 1),
      () => e.conv3x3BackwardWeight(x, C, 0, y, C, 0, 0, w + 16 * mib, 0, N, C, 1, 1, H, H, s, scratch, 0, 1),
    ];
    return runs.map((fn): [number, number] => {
      const sec = time(fn);
      return [sec * 1e3, (2 * macs) / sec / 1e9];
    });
  });
}
const dwResults = variants.map(measureDw);
dwShapes.forEach((s, i) => {
  kinds.forEach((kind, j) => {
    const name = `depthwise ${s.C}x${s.H}x${s.H} s${s.stride} ${kind}`;
    const cols = dwResults.map((r) => {
      const [ms, gflops] = r[i]![j]!;
      return `${ms.toFixed(3).padStart(9)} ${gflops.toFixed(1).padStart(8)}`.padStart(20);
    });
    console.log(`${name.padEnd(44)} ${cols.join('')}`);
  });
});

for (const k of variants) {
  const name = k.relaxed ? 'relaxed' : 'simd';
  for (const s of [shapes[0]!, shapes[4]!]) console.log(`${name}: ${accuracy(k, s)}`);
}
