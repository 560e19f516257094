import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { instantiateKernels, instantiateKernelsSync, type WasmKernels } from '../src/backends/wasm/module.js';
import { OPS, shufflePermutation, type OpAttrs, type OpName } from '../src/ops/index.js';
import { Tensor, seededRandom, type Shape } from '../src/tensor/tensor.js';
import { Arena, conv, placeRows, relaxed, rowsOf, variants } from './helpers/wasm.js';

// Randomized checks of every WASM kernel against the reference kernels (src/ops), on shapes that hit the
// edges of the tiles and vectors, with channel offsets, maps, residuals and ReLU; every kernel with parts
// must give the same bits for parts = 1, 2 and 3.

const SENTINEL = 1234.5;

/**
 * Runs `kernel` with parts = 1, 2, 3 (parts in reverse order, as threads may finish in any order), each time
 * after `reset`; asserts the n floats at y are bit-identical and returns them.
 */
function runParts(
  a: Arena,
  y: number,
  n: number,
  reset: () => void,
  kernel: (part: number, parts: number) => void,
): Float32Array {
  let first: Float32Array | undefined;
  for (const parts of [1, 2, 3]) {
    reset();
    for (let p = parts - 1; p >= 0; p--) kernel(p, parts);
    const got = a.read(y, n);
    if (!first) first = got;
    else {
      const diff = new Uint32Array(got.buffer).findIndex((v, i) => v !== new Uint32Array(first!.buffer)[i]);
      assert.equal(
        diff,
        -1,
        `parts=${parts} differs from parts=1 at ${diff}: ${got[diff]} vs ${first[diff]}`,
      );
    }
  }
  return first!;
}

/** |a - b| <= 1e-5 |b| + 1e-6 everywhere (NaN where NaN is expected). */
function assertClose(what: string, actual: Float32Array, expected: Float32Array): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    if (!(Math.abs(a - b) <= 1e-5 * Math.abs(b) + 1e-6) && !(Number.isNaN(a) && Number.isNaN(b))) {
      assert.fail(`${what}: index ${i}: got ${a}, expected ${b}`);
    }
  }
}

function runRef<K extends OpName>(
  op: K,
  inputs: Tensor[],
  params: Record<string, Tensor | undefined>,
  attrs: OpAttrs[K],
) {
  const spec = OPS[op];
  const out = new Tensor(spec.shape(inputs.map((t) => t.shape) as Shape[], attrs as never));
  (spec.reference as (a: unknown) => void)({ out, inputs, params, attrs, ctx: { training: false } });
  return out;
}

const rng = seededRandom(20240607);
const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
const uniform = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (2 * rng() - 1) * scale);

interface PointwiseCase {
  N: number;
  inC: number;
  outC: number;
  groups: number;
  H: number;
  W: number;
  map: 'none' | 'paper' | 'authors';
  bias: boolean;
  res: 'none' | 'separate' | 'in place';
  relu: boolean;
  xPad: number;
  yPad: number;
}

function pointwiseCases(): PointwiseCase[] {
  const fixed: PointwiseCase[] = [
    {
      N: 1,
      inC: 24,
      outC: 60,
      groups: 1,
      H: 13,
      W: 11,
      map: 'none',
      bias: true,
      res: 'none',
      relu: true,
      xPad: 0,
      yPad: 0,
    },
    {
      N: 2,
      inC: 60,
      outC: 240,
      groups: 3,
      H: 7,
      W: 7,
      map: 'authors',
      bias: true,
      res: 'in place',
      relu: true,
      xPad: 3,
      yPad: 0,
    },
    {
      N: 1,
      inC: 96,
      outC: 360,
      groups: 8,
      H: 5,
      W: 5,
      map: 'paper',
      bias: false,
      res: 'none',
      relu: true,
      xPad: 0,
      yPad: 24,
    },
    {
      N: 1,
      inC: 48,
      outC: 32,
      groups: 2,
      H: 1,
      W: 1,
      map: 'paper',
      bias: true,
      res: 'separate',
      relu: false,
      xPad: 1,
      yPad: 2,
    },
  ];
  const random: PointwiseCase[] = Array.from({ length: 60 }, () => {
    const groups = pick([1, 2, 3, 8]);
    const [H, W] = pick([
      [1, 1],
      [1, 2],
      [1, 3],
      [2, 2],
      [7, 7],
      [13, 11],
      [4, 4],
      [5, 3],
      [3, 17],
      [14, 14],
      [28, 28],
    ] as const);
    return {
      N: int(1, 2),
      inC: groups * int(1, 13),
      outC: groups * int(1, 13),
      groups,
      H,
      W,
      map: pick(['none', 'paper', 'authors'] as const),
      bias: rng() < 0.5,
      res: pick(['none', 'separate', 'in place'] as const),
      relu: rng() < 0.5,
      xPad: int(0, 1) * int(0, 5),
      yPad: int(0, 1) * int(0, 5),
    };
  });
  return [...fixed, ...random];
}

function checkPointwise(k: WasmKernels, c: PointwiseCase): void {
  const a = new Arena(k);
  const { N, inC, outC, groups } = c;
  const HW = c.H * c.W;
  const kg = inC / groups;
  const [xC, xOff] = [inC + c.xPad, c.xPad >> 1];
  const [yC, yOff] = [outC + c.yPad, c.yPad - (c.yPad >> 1)];
  const map = c.map === 'none' ? undefined : shufflePermutation(inC, groups, c.map);
  const x = uniform(N * xC * HW);
  const w = uniform(outC * kg, 1 / Math.sqrt(kg));
  const bias = c.bias ? uniform(outC) : undefined;
  const yInit = c.res === 'in place' ? uniform(N * yC * HW) : new Float32Array(N * yC * HW).fill(SENTINEL);
  const res = c.res === 'separate' ? uniform(N * yC * HW) : c.res === 'in place' ? yInit : undefined;

  const xin = new Tensor([N, inC, c.H, c.W], rowsOf(x, N, xC, xOff, inC, HW, map));
  const params = { weight: new Tensor([outC, kg, 1, 1], w), bias: bias && new Tensor([outC], bias) };
  const ref = runRef(
    'conv2d',
    [xin],
    params,
    conv({ inChannels: inC, outChannels: outC, groups, bias: c.bias }),
  );
  const expected = yInit.slice();
  const r = ref.data;
  if (res) {
    const rr = rowsOf(res, N, yC, yOff, outC, HW);
    for (let i = 0; i < r.length; i++) r[i] = r[i]! + rr[i]!;
  }
  if (c.relu) for (let i = 0; i < r.length; i++) r[i] = Math.max(r[i]!, 0);
  placeRows(expected, r, N, yC, yOff, outC, HW);

  const [px, pw, pb, pm] = [a.put(x), a.put(w), a.put(bias), a.put(map)];
  const py = a.put(yInit);
  const pr = c.res === 'separate' ? a.put(res) : c.res === 'in place' ? py : 0;
  const got = runParts(
    a,
    py,
    yInit.length,
    () => a.write(py, yInit),
    (p, parts) =>
      k.exports.pointwise(
        px,
        xC,
        xOff,
        pm,
        pw,
        pb,
        py,
        yC,
        yOff,
        pr,
        N,
        inC,
        outC,
        groups,
        HW,
        c.relu,
        p,
        parts,
      ),
  );
  assertClose(`pointwise ${JSON.stringify(c)}`, got, expected);
}

function checkDepthwise(
  k: WasmKernels,
  rnd: boolean,
  fixed?: { C: number; H: number; W: number; stride: number },
): void {
  const a = new Arena(k);
  const { C, H, W, stride } = fixed ?? {
    C: int(1, 10),
    H: pick([1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 16]),
    W: pick([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 28]),
    stride: int(1, 2),
  };
  const N = int(1, 2);
  const [xC, xOff] = rnd ? [C + 3, 2] : [C, 0];
  const [yC, yOff] = rnd ? [C + 2, 1] : [C, 0];
  const outMap = rnd ? shufflePermutation(C, C % 2 ? 1 : 2, 'paper') : undefined;
  const bias = rnd ? uniform(C) : undefined;
  const relu = rnd;
  const x = uniform(N * xC * H * W);
  const w = uniform(C * 9, 1 / 3);
  const attrs = conv({
    inChannels: C,
    outChannels: C,
    groups: C,
    kernel: [3, 3],
    stride: [stride, stride],
    padding: [1, 1],
    bias: !!bias,
  });
  const xin = new Tensor([N, C, H, W], rowsOf(x, N, xC, xOff, C, H * W));
  const ref = runRef(
    'conv2d',
    [xin],
    { weight: new Tensor([C, 1, 3, 3], w), bias: bias && new Tensor([C], bias) },
    attrs,
  );
  const [OH, OW] = [ref.shape[2]!, ref.shape[3]!];
  assert.deepEqual([OH, OW], [Math.floor((H - 1) / stride) + 1, Math.floor((W - 1) / stride) + 1]);
  if (relu) ref.data.forEach((v, i) => (ref.data[i] = Math.max(v, 0)));
  const expected = new Float32Array(N * yC * OH * OW).fill(SENTINEL);
  placeRows(expected, ref.data, N, yC, yOff, C, OH * OW, outMap);

  const [px, pw, pb, pm] = [a.put(x), a.put(w), a.put(bias), a.put(outMap)];
  const py = a.alloc(expected.byteLength);
  const got = runParts(
    a,
    py,
    expected.length,
    () => a.write(py, new Float32Array(expected.length).fill(SENTINEL)),
    (p, parts) =>
      k.exports.depthwise3x3(px, xC, xOff, pw, pb, py, yC, yOff, pm, N, C, H, W, stride, relu, p, parts),
  );
  assertClose(`depthwise N=${N} C=${C} ${H}x${W} s${stride} offsets/map/bias/relu=${rnd}`, got, expected);
}

interface ConvCase {
  N: number;
  C: number;
  O: number;
  H: number;
  W: number;
  k: [number, number];
  s: [number, number];
  p: [number, number];
  g: number;
}

const convCases: ConvCase[] = [
  { N: 2, C: 3, O: 8, H: 17, W: 15, k: [3, 3], s: [2, 2], p: [1, 1], g: 1 }, // stem
  { N: 1, C: 3, O: 24, H: 32, W: 32, k: [3, 3], s: [2, 2], p: [1, 1], g: 1 },
  { N: 1, C: 3, O: 5, H: 31, W: 29, k: [11, 11], s: [4, 4], p: [2, 2], g: 1 }, // AlexNet conv1
  { N: 1, C: 8, O: 6, H: 13, W: 13, k: [5, 5], s: [1, 1], p: [2, 2], g: 2 }, // AlexNet conv2
  { N: 2, C: 6, O: 7, H: 9, W: 10, k: [3, 3], s: [1, 1], p: [1, 1], g: 1 },
  { N: 1, C: 6, O: 9, H: 7, W: 7, k: [3, 3], s: [1, 1], p: [1, 1], g: 3 },
  { N: 1, C: 16, O: 8, H: 6, W: 5, k: [3, 3], s: [2, 2], p: [1, 1], g: 8 },
  { N: 2, C: 4, O: 5, H: 7, W: 9, k: [1, 1], s: [2, 2], p: [0, 0], g: 1 },
  { N: 1, C: 3, O: 4, H: 9, W: 8, k: [3, 5], s: [2, 1], p: [1, 2], g: 1 },
  { N: 1, C: 3, O: 4, H: 7, W: 7, k: [3, 3], s: [1, 1], p: [0, 0], g: 1 },
  { N: 1, C: 2, O: 3, H: 3, W: 11, k: [3, 3], s: [1, 1], p: [1, 1], g: 1 }, // 33 pixels: a 1-pixel last panel
  { N: 1, C: 4, O: 6, H: 1, W: 1, k: [3, 3], s: [1, 1], p: [1, 1], g: 2 },
  { N: 1, C: 5, O: 5, H: 8, W: 8, k: [5, 5], s: [1, 1], p: [2, 2], g: 5 }, // depthwise 5x5 through conv2d
];

function checkConv2d(k: WasmKernels, c: ConvCase, extras: boolean): void {
  const a = new Arena(k);
  const { N, C, O, H, W, g } = c;
  const cg = C / g;
  const K = cg * c.k[0] * c.k[1];
  const attrs = conv({
    inChannels: C,
    outChannels: O,
    groups: g,
    kernel: c.k,
    stride: c.s,
    padding: c.p,
    bias: extras,
  });
  const x = uniform(N * C * H * W);
  const w = uniform(O * K, 1 / Math.sqrt(K));
  const bias = extras ? uniform(O) : undefined;
  const ref = runRef(
    'conv2d',
    [new Tensor([N, C, H, W], x)],
    { weight: new Tensor([O, cg, ...c.k], w), bias: bias && new Tensor([O], bias) },
    attrs,
  );
  const [OH, OW] = [ref.shape[2]!, ref.shape[3]!];
  const [yC, yOff] = extras ? [O + 3, 2] : [O, 0];
  if (extras) ref.data.forEach((v, i) => (ref.data[i] = Math.max(v, 0)));
  const expected = new Float32Array(N * yC * OH * OW).fill(SENTINEL);
  placeRows(expected, ref.data, N, yC, yOff, O, OH * OW);

  const [px, pw, pb] = [a.put(x), a.put(w), a.put(bias)];
  const py = a.alloc(expected.byteLength);
  const scratch = a.alloc(k.exports.conv2dScratchBytes(C, c.k[0], c.k[1], OH, OW, g, 3));
  const got = runParts(
    a,
    py,
    expected.length,
    () => a.write(py, new Float32Array(expected.length).fill(SENTINEL)),
    (p, parts) =>
      k.exports.conv2d(
        px,
        C,
        H,
        W,
        pw,
        pb,
        py,
        yC,
        yOff,
        N,
        O,
        ...c.k,
        ...c.s,
        ...c.p,
        OH,
        OW,
        g,
        extras,
        scratch,
        p,
        parts,
      ),
  );
  assertClose(`conv2d ${JSON.stringify(c)} bias/relu/offset=${extras}`, got, expected);
}

interface PoolCase {
  H: number;
  W: number;
  k: [number, number];
  s: [number, number];
  p: [number, number];
  ceil: boolean;
}

const poolCases: PoolCase[] = [
  { H: 9, W: 11, k: [3, 3], s: [2, 2], p: [1, 1], ceil: false },
  { H: 56, W: 56, k: [3, 3], s: [2, 2], p: [1, 1], ceil: false },
  { H: 28, W: 29, k: [3, 3], s: [2, 2], p: [1, 1], ceil: true },
  { H: 7, W: 9, k: [2, 2], s: [2, 2], p: [0, 0], ceil: true },
  { H: 13, W: 13, k: [3, 3], s: [2, 2], p: [0, 0], ceil: false },
  { H: 27, W: 27, k: [3, 3], s: [2, 2], p: [0, 0], ceil: true },
  { H: 14, W: 14, k: [3, 3], s: [1, 1], p: [1, 1], ceil: false },
  { H: 11, W: 17, k: [5, 5], s: [3, 3], p: [2, 2], ceil: true },
  { H: 10, W: 23, k: [3, 2], s: [1, 2], p: [1, 1], ceil: false },
  { H: 1, W: 1, k: [3, 3], s: [2, 2], p: [1, 1], ceil: false },
  { H: 3, W: 4, k: [2, 2], s: [1, 1], p: [0, 0], ceil: false },
];

function checkPool(
  k: WasmKernels,
  c: PoolCase,
  mode: 'max' | 'avg include pad' | 'avg exclude pad',
  offsets: boolean,
): void {
  const a = new Arena(k);
  const N = 2;
  const C = 3;
  const { H, W } = c;
  const [xC, xOff] = offsets ? [C + 2, 1] : [C, 0];
  const [yC, yOff] = offsets ? [C + 3, 3] : [C, 0];
  const x = uniform(N * xC * H * W);
  // NaN propagates through both pools, as in PyTorch.
  if (offsets) for (let i = 5; i < x.length; i += 37) x[i] = NaN;
  const xin = new Tensor([N, C, H, W], rowsOf(x, N, xC, xOff, C, H * W));
  const base = { kernel: c.k, stride: c.s, padding: c.p, ceilMode: c.ceil };
  const ref =
    mode === 'max'
      ? runRef('maxpool2d', [xin], {}, base)
      : runRef('avgpool2d', [xin], {}, { ...base, countIncludePad: mode === 'avg include pad' });
  const [OH, OW] = [ref.shape[2]!, ref.shape[3]!];
  const expected = new Float32Array(N * yC * OH * OW).fill(SENTINEL);
  placeRows(expected, ref.data, N, yC, yOff, C, OH * OW);

  const px = a.put(x);
  const py = a.alloc(expected.byteLength);
  const geometry = [H, W, ...c.k, ...c.s, ...c.p, OH, OW] as const;
  const got = runParts(
    a,
    py,
    expected.length,
    () => a.write(py, new Float32Array(expected.length).fill(SENTINEL)),
    (p, parts) =>
      mode === 'max'
        ? k.exports.maxpool2d(px, xC, xOff, py, yC, yOff, N, C, ...geometry, p, parts)
        : k.exports.avgpool2d(
            px,
            xC,
            xOff,
            py,
            yC,
            yOff,
            N,
            C,
            ...geometry,
            mode === 'avg include pad',
            p,
            parts,
          ),
  );
  assertClose(`${mode} pool ${JSON.stringify(c)} offsets=${offsets}`, got, expected);
}

describe('relaxed SIMD detection', () => {
  it('Node accepts relaxed SIMD after enableRelaxedSimd()', () => assert.ok(relaxed));
});

for (const k of variants) {
  const name = `${k.relaxed ? 'relaxed-simd' : 'simd'}${k.shared ? ', shared memory' : ''}`;
  describe(`wasm kernels (${name}) match the reference kernels`, () => {
    it('heapBase is small and 16-byte aligned', () => {
      assert.ok(k.heapBase > 0 && k.heapBase <= 4096 && k.heapBase % 16 === 0, String(k.heapBase));
    });

    it('pointwise: groups 1/2/3/8, shuffle maps, residual (separate and in place), ReLU, offsets, odd HW', () => {
      for (const c of pointwiseCases()) checkPointwise(k, c);
    });

    it('depthwise3x3: strides 1/2 on odd and tiny sizes, outMap, offsets, bias, ReLU', () => {
      for (const size of [28, 56]) {
        for (const stride of [1, 2]) checkDepthwise(k, true, { C: 3, H: size, W: size, stride });
      }
      for (let i = 0; i < 60; i++) checkDepthwise(k, i % 2 === 0);
    });

    it('conv2d: stems, AlexNet layers, dense and grouped 3x3, 1x1 stride 2, non-square', () => {
      for (const c of convCases) for (const extras of [false, true]) checkConv2d(k, c, extras);
    });

    it('maxpool2d and avgpool2d: PyTorch semantics incl. ceil_mode and count_include_pad', () => {
      for (const c of poolCases) {
        for (const mode of ['max', 'avg include pad', 'avg exclude pad'] as const) {
          for (const offsets of [false, true]) checkPool(k, c, mode, offsets);
        }
      }
    });

    it('linear: GEMV and small batches, K and M off the tile sizes', () => {
      for (const N of [1, 2, 3, 5]) {
        for (const K of [1, 3, 4, 7, 38, 101]) {
          for (const M of [1, 3, 4, 9, 13]) {
            const extras = rng() < 0.5;
            const a = new Arena(k);
            const x = uniform(N * K);
            const w = uniform(M * K, 1 / Math.sqrt(K));
            const bias = extras ? uniform(M) : undefined;
            const params = { weight: new Tensor([M, K], w), bias: bias && new Tensor([M], bias) };
            const ref = runRef('linear', [new Tensor([N, K], x)], params, {
              inFeatures: K,
              outFeatures: M,
              bias: extras,
            });
            if (extras) ref.data.forEach((v, i) => (ref.data[i] = Math.max(v, 0)));
            const [px, pw, pb] = [a.put(x), a.put(w), a.put(bias)];
            const py = a.alloc(N * M * 4);
            const got = runParts(
              a,
              py,
              N * M,
              () => {},
              (p, parts) => k.exports.linear(px, N, K, pw, pb, py, M, extras, p, parts),
            );
            assertClose(`linear N=${N} K=${K} M=${M} bias/relu=${extras}`, got, ref.data);
          }
        }
      }
    });

    it('globalAvgPool, channelAffine, relu and add', () => {
      for (const [N, C, H, W] of [
        [1, 3, 1, 1],
        [2, 5, 7, 7],
        [1, 4, 13, 11],
        [3, 2, 2, 3],
        [1, 16, 14, 14],
      ] as const) {
        const a = new Arena(k);
        const HW = H * W;
        const x = uniform(N * C * HW);
        const px = a.put(x);

        const gap = runRef('globalavgpool', [new Tensor([N, C, H, W], x)], {}, {});
        const pg = a.alloc(N * C * 4);
        k.exports.globalAvgPool(px, N, C, HW, pg);
        assertClose(`globalAvgPool ${N}x${C}x${H}x${W}`, a.read(pg, N * C), gap.data);

        for (const relu of [false, true]) {
          const scale = uniform(C);
          const shift = uniform(C);
          const expected = x.map((v, i) => {
            const c = Math.floor(i / HW) % C;
            const s = v * scale[c]! + shift[c]!;
            return relu ? Math.max(s, 0) : s;
          });
          const [ps, pt] = [a.put(scale), a.put(shift)];
          const py = a.alloc(x.byteLength);
          const got = runParts(
            a,
            py,
            x.length,
            () => {},
            (p, parts) => k.exports.channelAffine(px, N, C, HW, ps, pt, py, relu, p, parts),
          );
          assertClose(`channelAffine ${N}x${C}x${HW} relu=${relu}`, got, expected);
        }

        const n = x.length;
        const b = uniform(n);
        const pb = a.put(b);
        const py = a.alloc(n * 4);
        const shape = [N, C, H, W];
        const relu = runParts(
          a,
          py,
          n,
          () => {},
          (p, parts) => k.exports.relu(px, py, n, p, parts),
        );
        assertClose(`relu n=${n}`, relu, runRef('relu', [new Tensor(shape, x)], {}, {}).data);
        const sum = runRef('add', [new Tensor(shape, x), new Tensor(shape, b)], {}, {}).data;
        const added = runParts(
          a,
          py,
          n,
          () => {},
          (p, parts) => k.exports.add(px, pb, py, n, false, p, parts),
        );
        assertClose(`add n=${n}`, added, sum);
        const addRelu = runParts(
          a,
          py,
          n,
          () => {},
          (p, parts) => k.exports.add(px, pb, py, n, true, p, parts),
        );
        assertClose(
          `add+relu n=${n}`,
          addRelu,
          sum.map((v) => Math.max(v, 0)),
        );
      }
    });
  });
}

describe('wasm kernels on one shared memory', () => {
  it('two instances (as two threads would have) each doing its part give the one-part result', async () => {
    const memory = new WebAssembly.Memory({ initial: 4, maximum: 64, shared: true });
    // The shared build is picked from the memory.
    const [k1, k2] = [instantiateKernelsSync({ memory }), await instantiateKernels({ memory })];
    assert.ok(k1.shared && k2.shared && k1.memory === k2.memory);
    const a = new Arena(k1);
    const [inC, outC, groups, HW] = [48, 48, 3, 49];
    const map = a.put(shufflePermutation(inC, groups, 'paper'));
    const x = a.put(uniform(inC * HW));
    const w = a.put(uniform(outC * (inC / groups), 0.25));
    const y = a.alloc(outC * HW * 4);
    const one = runParts(
      a,
      y,
      outC * HW,
      () => {},
      (p, parts) =>
        k1.exports.pointwise(x, inC, 0, map, w, 0, y, outC, 0, 0, 1, inC, outC, groups, HW, true, p, parts),
    );
    a.write(y, new Float32Array(outC * HW));
    k2.exports.pointwise(x, inC, 0, map, w, 0, y, outC, 0, 0, 1, inC, outC, groups, HW, true, 1, 2);
    k1.exports.pointwise(x, inC, 0, map, w, 0, y, outC, 0, 0, 1, inC, outC, groups, HW, true, 0, 2);
    assert.deepEqual(a.read(y, outC * HW), one);
  });
});
