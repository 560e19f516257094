// Speed of the WASM kernels on ShuffleNet v1 (1.0x, g = 3 and 8) and AlexNet shapes, batch 1, one thread,
// simd and relaxed-simd builds side by side. GFLOP/s counts 2 flops per multiply-add.
// Run: npx tsx bench/kernels.ts
import { instantiateKernelsSync, type KernelExports, type WasmKernels } from '../src/backends/wasm/module.js';
import { shufflePermutation } from '../src/ops/index.js';
import { enableRelaxedSimd } from '../src/node/wasm.js';

/** A kernel call on buffers x, w, y, s (16 MiB each, filled) and m (holding `map`); macs 0 for pools. */
interface Case {
  name: string;
  macs: number;
  map?: Int32Array;
  run(e: KernelExports, x: number, w: number, y: number, s: number, m: number): void;
}

function pointwise(inC: number, outC: number, groups: number, side: number, shuffled = false): Case {
  const HW = side * side;
  return {
    name: `pointwise ${inC}->${outC} g${groups} ${side}x${side}${shuffled ? ' +shuffle' : ''}`,
    macs: (outC * inC * HW) / groups,
    map: shufflePermutation(inC, groups, 'paper'),
    run: (e, x, w, y, _s, m) =>
      e.pointwise(x, inC, 0, shuffled ? m : 0, w, 0, y, outC, 0, 0, 1, inC, outC, groups, HW, 1, 0, 1),
  };
}

const cases: Case[] = [
  pointwise(240, 240, 3, 28),
  pointwise(240, 60, 3, 28, true),
  pointwise(60, 240, 3, 28, true),
  pointwise(480, 480, 3, 14),
  pointwise(960, 960, 3, 7),
  pointwise(384, 384, 8, 28),
  pointwise(768, 768, 8, 14),
  pointwise(1536, 1536, 8, 7),
  pointwise(256, 256, 1, 16), // a plain 256^3 GEMM
  {
    name: 'conv2d stem 3x3 s2 3->24 224->112',
    macs: 24 * 27 * 112 * 112,
    run: (e, x, w, y, s) =>
      e.conv2d(x, 3, 224, 224, w, 0, y, 24, 0, 1, 24, 3, 3, 2, 2, 1, 1, 112, 112, 1, 1, s, 0, 1),
  },
  {
    name: 'conv2d AlexNet 11x11 s4 3->96 224->55',
    macs: 96 * 363 * 55 * 55,
    run: (e, x, w, y, s) =>
      e.conv2d(x, 3, 224, 224, w, 0, y, 96, 0, 1, 96, 11, 11, 4, 4, 2, 2, 55, 55, 1, 1, s, 0, 1),
  },
  {
    name: 'depthwise3x3 s1 60x28x28',
    macs: 60 * 9 * 28 * 28,
    run: (e, x, w, y) => e.depthwise3x3(x, 60, 0, w, 0, y, 60, 0, 0, 1, 60, 28, 28, 1, 0, 0, 1),
  },
  {
    name: 'depthwise3x3 s2 60x56->28',
    macs: 60 * 9 * 28 * 28,
    run: (e, x, w, y) => e.depthwise3x3(x, 60, 0, w, 0, y, 60, 0, 0, 1, 60, 56, 56, 2, 0, 0, 1),
  },
  {
    name: 'depthwise3x3 s1 240x7x7',
    macs: 240 * 9 * 49,
    run: (e, x, w, y) => e.depthwise3x3(x, 240, 0, w, 0, y, 240, 0, 0, 1, 240, 7, 7, 1, 0, 0, 1),
  },
  {
    name: 'maxpool 3x3 s2 24x112->56',
    macs: 0,
    run: (e, x, _w, y) => e.maxpool2d(x, 24, 0, y, 24, 0, 1, 24, 112, 112, 3, 3, 2, 2, 1, 1, 56, 56, 0, 1),
  },
  {
    name: 'avgpool 3x3 s2 240x28->14',
    macs: 0,
    run: (e, x, _w, y) =>
      e.avgpool2d(x, 240, 0, y, 480, 0, 1, 240, 28, 28, 3, 3, 2, 2, 1, 1, 14, 14, 1, 0, 1),
  },
  {
    name: 'linear 960->1000 N=1 (GEMV)',
    macs: 960 * 1000,
    run: (e, x, w, y) => e.linear(x, 1, 960, w, 0, y, 1000, 0, 0, 1),
  },
  {
    name: 'linear 1024->1000 N=16',
    macs: 16 * 1024 * 1000,
    run: (e, x, w, y) => e.linear(x, 16, 1024, w, 0, y, 1000, 0, 0, 1),
  },
];

/** Median seconds per call, over 7 runs of enough calls to take ~50 ms. */
function time(fn: () => void): number {
  let reps = 1;
  for (let t = 0; t < 50; reps *= 2) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    t = performance.now() - t0;
  }
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    runs.push((performance.now() - t0) / reps / 1e3);
  }
  return runs.sort((a, b) => a - b)[3]!;
}

function measure(k: WasmKernels): Array<[ms: number, gflops: number]> {
  const mib = 1 << 20;
  const base = k.heapBase;
  k.memory.grow(Math.ceil((base + 64 * mib + 8192 - k.memory.buffer.byteLength) / 65536));
  const data = new Float32Array(k.memory.buffer, base, 16 * mib);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.5;
  const [x, w, y, s, m] = [base, base + 16 * mib, base + 32 * mib, base + 48 * mib, base + 64 * mib];
  return cases.map((c) => {
    if (c.map) new Int32Array(k.memory.buffer, m, c.map.length).set(c.map);
    const sec = time(() => c.run(k.exports, x, w, y, s, m));
    return [sec * 1e3, (2 * c.macs) / sec / 1e9];
  });
}

const variants = [instantiateKernelsSync()];
if (enableRelaxedSimd()) variants.push(instantiateKernelsSync({ relaxed: true }));
else console.log('relaxed SIMD is not available here');
const results = variants.map(measure);
const names = variants.map((v) => (v.relaxed ? 'relaxed' : 'simd'));

console.log(
  `${'batch 1, one thread'.padEnd(40)} ${names.map((n) => `${n} ms  GFLOP/s`.padStart(20)).join('')}`,
);
cases.forEach((c, i) => {
  const cols = results.map((r) => {
    const [ms, gflops] = r[i]!;
    return `${ms.toFixed(3).padStart(9)} ${c.macs ? gflops.toFixed(1).padStart(8) : '-'.padStart(8)}`.padStart(
      20,
    );
  });
  console.log(`${c.name.padEnd(40)} ${cols.join('')}`);
});
