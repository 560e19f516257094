import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { WasmKernels } from '../src/backends/wasm/module.js';
import { OPS, channelStats, shufflePermutation, type OpAttrs, type OpName } from '../src/ops/index.js';
import { Tensor, seededRandom } from '../src/tensor/tensor.js';
import { Arena, conv, placeRows, rowsOf, variants } from './helpers/wasm.js';

// Randomized checks of the WASM backward kernels against the reference gradients (`backward` of the ops in
// src/ops, float64 accumulation), on shapes off the tile sizes, with channel offsets, shuffle maps, stride 2
// and accumulate on/off; every kernel must give the same bits for parts = 1, 2 and 3.

const SENTINEL = 1234.5;

/** An output buffer of a kernel: where it is and what it holds before each run. */
interface Out {
  p: number;
  init: Float32Array;
}

/**
 * Runs `kernel` with parts = 1, 2, 3 (parts in reverse order), resetting every output first; asserts every
 * output is bit-identical across the three and returns them (from parts = 1).
 */
function runParts(a: Arena, outs: Out[], kernel: (part: number, parts: number) => void): Float32Array[] {
  let first: Float32Array[] | undefined;
  for (const parts of [1, 2, 3]) {
    for (const o of outs) a.write(o.p, o.init);
    for (let p = parts - 1; p >= 0; p--) kernel(p, parts);
    const got = outs.map((o) => a.read(o.p, o.init.length));
    if (!first) first = got;
    else {
      got.forEach((g, k) => {
        const f = new Uint32Array(first![k]!.buffer);
        const diff = new Uint32Array(g.buffer).findIndex((v, i) => v !== f[i]);
        assert.equal(diff, -1, `output ${k}: parts=${parts} differs from parts=1 at ${diff}`);
      });
    }
  }
  return first!;
}

/** float32's unit roundoff. */
const U = 2 ** -24;

/** Worst |a - b| / (U * scale[i]) seen by assertClose with a scale, per test label (reported at the end). */
const worst = new Map<string, number>();

/**
 * |a - b| <= 1e-5 |b| + 1e-6 everywhere, plus SLACK * U * scale[i] when `scale` is given. A float32 sum of
 * terms t_k, in any order, is within (about) n U sum |t_k| of the exact one, and the reference is exact
 * (float64): where the terms cancel (a result much smaller than sum |t_k|) no order-independent relative
 * tolerance holds, so long reductions (dw, dbias) and batch norm's dx are checked against U times the sum of
 * the magnitudes of what was added (scale), with SLACK = 16 (the worst seen is printed by the last test).
 */
const SLACK = 16;
function assertClose(what: string, actual: Float32Array, expected: Float32Array, scale?: Float64Array): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const label = what.split(' ')[0] + ' ' + what.split(' ').at(-1);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    const extra = scale ? SLACK * U * scale[i]! : 0;
    if (scale) worst.set(label, Math.max(worst.get(label) ?? 0, Math.abs(a - b) / (U * scale[i]!)));
    if (!(Math.abs(a - b) <= 1e-5 * Math.abs(b) + 1e-6 + extra)) {
      assert.fail(`${what}: index ${i}: got ${a}, expected ${b} (scale ${scale?.[i]})`);
    }
  }
}

const abs = (t: Float32Array) => t.map(Math.abs);

/** Runs the reference gradient of `op`; gradients are added into the tensors given. */
function runBackward<K extends OpName>(
  op: K,
  inputs: Tensor[],
  params: Record<string, Tensor | undefined>,
  attrs: OpAttrs[K],
  gradOut: Tensor,
  gradInputs: (Tensor | undefined)[],
  gradParams: Record<string, Tensor | undefined>,
  training = false,
): void {
  const spec = OPS[op];
  const out = new Tensor(gradOut.shape);
  (spec.backward as (a: unknown) => void)({
    out,
    inputs,
    params,
    attrs,
    ctx: { training },
    gradOut,
    gradInputs,
    gradParams,
  });
}

const rng = seededRandom(20251126);
const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
const uniform = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (2 * rng() - 1) * scale);

/** dx as the kernel should leave it: init outside the rows, init (if accumulating) + gx inside. */
function expectedDx(
  init: Float32Array,
  gx: Float32Array,
  acc: boolean,
  n: number,
  rows: number,
  off: number,
  c: number,
  plane: number,
  map?: Int32Array,
): Float32Array {
  const e = init.slice();
  const v = gx.slice();
  if (acc) {
    const old = rowsOf(init, n, rows, off, c, plane, map);
    for (let i = 0; i < v.length; i++) v[i] = Math.fround(old[i]! + v[i]!);
  }
  placeRows(e, v, n, rows, off, c, plane, map);
  return e;
}

interface PointwiseCase {
  N: number;
  inC: number;
  outC: number;
  groups: number;
  H: number;
  W: number;
  map: 'none' | 'paper' | 'authors';
  bias: boolean;
  acc: boolean;
  xPad: number;
  yPad: number;
}

function pointwiseCases(): PointwiseCase[] {
  const fixed: PointwiseCase[] = [
    {
      N: 2,
      inC: 60,
      outC: 240,
      groups: 3,
      H: 7,
      W: 7,
      map: 'paper',
      bias: true,
      acc: true,
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
      map: 'authors',
      bias: false,
      acc: false,
      xPad: 0,
      yPad: 24,
    },
    {
      N: 3,
      inC: 24,
      outC: 60,
      groups: 1,
      H: 13,
      W: 11,
      map: 'none',
      bias: true,
      acc: false,
      xPad: 1,
      yPad: 2,
    },
    { N: 1, inC: 48, outC: 32, groups: 2, H: 1, W: 1, map: 'paper', bias: true, acc: true, xPad: 1, yPad: 2 },
    // Enough images for the weight gradient to take several chunks (128 KiB of a group's rows each): packed
    // 4x4 planes, and unpacked 14x14 ones.
    {
      N: 30,
      inC: 480,
      outC: 24,
      groups: 3,
      H: 4,
      W: 4,
      map: 'paper',
      bias: true,
      acc: true,
      xPad: 0,
      yPad: 0,
    },
    {
      N: 7,
      inC: 120,
      outC: 24,
      groups: 3,
      H: 14,
      W: 14,
      map: 'none',
      bias: true,
      acc: false,
      xPad: 2,
      yPad: 1,
    },
  ];
  const random: PointwiseCase[] = Array.from({ length: 50 }, () => {
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
    ] as const);
    return {
      N: int(1, 3),
      inC: groups * int(1, 13),
      outC: groups * int(1, 13),
      groups,
      H,
      W,
      map: pick(['none', 'paper', 'authors'] as const),
      bias: rng() < 0.5,
      acc: rng() < 0.5,
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
  const cin = inC / groups;
  const [xC, xOff] = [inC + c.xPad, c.xPad >> 1];
  const [yC, yOff] = [outC + c.yPad, c.yPad - (c.yPad >> 1)];
  const map = c.map === 'none' ? undefined : shufflePermutation(inC, groups, c.map);
  const x = uniform(N * xC * HW);
  const dy = uniform(N * yC * HW);
  const w = uniform(outC * cin, 1 / Math.sqrt(cin));
  const dx0 = c.acc ? uniform(N * xC * HW) : new Float32Array(N * xC * HW).fill(SENTINEL);
  const dw0 = uniform(outC * cin);
  const db0 = c.bias ? uniform(outC) : undefined;

  const xin = new Tensor([N, inC, c.H, c.W], rowsOf(x, N, xC, xOff, inC, HW, map));
  const gy = new Tensor([N, outC, c.H, c.W], rowsOf(dy, N, yC, yOff, outC, HW));
  const gx = new Tensor(xin.shape);
  const gw = new Tensor([outC, cin, 1, 1], dw0.slice());
  const gb = db0 && new Tensor([outC], db0.slice());
  runBackward(
    'conv2d',
    [xin],
    { weight: new Tensor([outC, cin, 1, 1], w) },
    conv({ inChannels: inC, outChannels: outC, groups, bias: c.bias }),
    gy,
    [gx],
    { weight: gw, bias: gb },
  );
  const what = `pointwise ${JSON.stringify(c)}`;
  // Sum of |terms| of each dw/dbias element: the same backward on |x|, |dy|, |dw0|, |db0|.
  const sw = new Tensor(gw.shape, abs(dw0));
  const sb = db0 && new Tensor([outC], abs(db0));
  runBackward(
    'conv2d',
    [new Tensor(xin.shape, abs(xin.data))],
    { weight: new Tensor([outC, cin, 1, 1], w) },
    conv({ inChannels: inC, outChannels: outC, groups, bias: c.bias }),
    new Tensor(gy.shape, abs(gy.data)),
    [undefined],
    { weight: sw, bias: sb },
  );

  const [px, pdy, pw, pm] = [a.put(x), a.put(dy), a.put(w), a.put(map)];
  const pdx = a.put(dx0);
  const [gotDx] = runParts(a, [{ p: pdx, init: dx0 }], (p, parts) =>
    k.exports.pointwiseBackwardInput(
      pdy,
      yC,
      yOff,
      pw,
      pdx,
      xC,
      xOff,
      pm,
      N,
      inC,
      outC,
      groups,
      HW,
      c.acc,
      p,
      parts,
    ),
  );
  assertClose(`${what} dx`, gotDx!, expectedDx(dx0, gx.data, c.acc, N, xC, xOff, inC, HW, map));

  const pdw = a.put(dw0);
  const pdb = a.put(db0);
  const scratch = a.alloc(k.exports.pointwiseBackwardWeightScratchBytes(inC, groups, HW, 3));
  const outs = [{ p: pdw, init: dw0 }];
  if (db0) outs.push({ p: pdb, init: db0 });
  const got = runParts(a, outs, (p, parts) =>
    k.exports.pointwiseBackwardWeight(
      px,
      xC,
      xOff,
      pm,
      pdy,
      yC,
      yOff,
      pdw,
      pdb,
      N,
      inC,
      outC,
      groups,
      HW,
      scratch,
      p,
      parts,
    ),
  );
  assertClose(`${what} dw`, got[0]!, gw.data, Float64Array.from(sw.data));
  if (gb) assertClose(`${what} dbias`, got[1]!, gb.data, Float64Array.from(sb!.data));
}

function checkDepthwise(k: WasmKernels, fixed?: { C: number; H: number; W: number; stride: number }): void {
  const a = new Arena(k);
  const { C, H, W, stride } = fixed ?? {
    C: int(1, 10),
    H: pick([1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 16]),
    W: pick([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 28]),
    stride: int(1, 2),
  };
  const N = int(1, 3);
  const rnd = rng() < 0.7;
  const acc = rng() < 0.5;
  const [xC, xOff] = rnd ? [C + 3, 2] : [C, 0];
  const [yC, yOff] = rnd ? [C + 2, 1] : [C, 0];
  const outMap = rnd ? shufflePermutation(C, C % 2 ? 1 : 2, 'paper') : undefined;
  const hasBias = rng() < 0.5;
  const OH = Math.floor((H - 1) / stride) + 1;
  const OW = Math.floor((W - 1) / stride) + 1;
  const x = uniform(N * xC * H * W);
  const dy = uniform(N * yC * OH * OW);
  const w = uniform(C * 9, 1 / 3);
  const dx0 = acc ? uniform(N * xC * H * W) : new Float32Array(N * xC * H * W).fill(SENTINEL);
  const dw0 = uniform(C * 9);
  const db0 = hasBias ? uniform(C) : undefined;
  const attrs = conv({
    inChannels: C,
    outChannels: C,
    groups: C,
    kernel: [3, 3],
    stride: [stride, stride],
    padding: [1, 1],
    bias: hasBias,
  });
  const xin = new Tensor([N, C, H, W], rowsOf(x, N, xC, xOff, C, H * W));
  const gy = new Tensor([N, C, OH, OW], rowsOf(dy, N, yC, yOff, C, OH * OW, outMap));
  const gx = new Tensor(xin.shape);
  const gw = new Tensor([C, 1, 3, 3], dw0.slice());
  const gb = db0 && new Tensor([C], db0.slice());
  runBackward('conv2d', [xin], { weight: new Tensor([C, 1, 3, 3], w) }, attrs, gy, [gx], {
    weight: gw,
    bias: gb,
  });
  const what = `depthwise N=${N} C=${C} ${H}x${W} s${stride} offsets/map=${rnd} acc=${acc}`;
  const sw = new Tensor(gw.shape, abs(dw0));
  const sb = db0 && new Tensor([C], abs(db0));
  runBackward(
    'conv2d',
    [new Tensor(xin.shape, abs(xin.data))],
    { weight: new Tensor([C, 1, 3, 3], w) },
    attrs,
    new Tensor(gy.shape, abs(gy.data)),
    [undefined],
    { weight: sw, bias: sb },
  );

  const [px, pdy, pw, pm] = [a.put(x), a.put(dy), a.put(w), a.put(outMap)];
  const pdx = a.put(dx0);
  const scratch = a.alloc(k.exports.conv3x3ScratchBytes(H, W, C, 3));
  const [gotDx] = runParts(a, [{ p: pdx, init: dx0 }], (p, parts) =>
    k.exports.depthwise3x3BackwardInput(
      pdy,
      yC,
      yOff,
      pm,
      pw,
      pdx,
      xC,
      xOff,
      N,
      C,
      H,
      W,
      stride,
      acc,
      scratch,
      p,
      parts,
    ),
  );
  assertClose(`${what} dx`, gotDx!, expectedDx(dx0, gx.data, acc, N, xC, xOff, C, H * W));

  const pdw = a.put(dw0);
  const pdb = a.put(db0);
  const outs = [{ p: pdw, init: dw0 }];
  if (db0) outs.push({ p: pdb, init: db0 });
  const got = runParts(a, outs, (p, parts) =>
    k.exports.conv3x3BackwardWeight(
      px,
      xC,
      xOff,
      pdy,
      yC,
      yOff,
      pm,
      pdw,
      pdb,
      N,
      C,
      1,
      1,
      H,
      W,
      stride,
      scratch,
      p,
      parts,
    ),
  );
  assertClose(`${what} dw`, got[0]!, gw.data, Float64Array.from(sw.data));
  if (gb) assertClose(`${what} dbias`, got[1]!, gb.data, Float64Array.from(sb!.data));
}

function checkBatchnorm(k: WasmKernels): void {
  const a = new Arena(k);
  const N = int(1, 4);
  const C = int(1, 9);
  const HW = pick([1, 2, 3, 4, 5, 7, 16, 25, 49]);
  const eps = 1e-5;
  // Sometimes far from 0, as activations can be: the one-pass statistics must not cancel.
  const centre = pick([0.5, 0.5, 300]);
  const x = uniform(N * C * HW, 2);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + centre;
  const dy = uniform(N * C * HW);
  const gamma = uniform(C);
  const dg0 = uniform(C);
  const db0 = uniform(C);
  // Half the cases fuse the mask of a ReLU that ran in place on the output: dy counts where the affine
  // kernel's output (x * scale + shift) is > 0.
  const relu = rng() < 0.5;
  const what = `batchnorm N=${N} C=${C} HW=${HW} relu=${relu}`;

  const px = a.put(x);
  const [pmean, pinv, sums] = [a.alloc(C * 4), a.alloc(C * 4), a.alloc(C * 16)];
  const stats = runParts(
    a,
    [
      { p: pmean, init: new Float32Array(C) },
      { p: pinv, init: new Float32Array(C) },
    ],
    (p, parts) => k.exports.batchnormStats(px, N, C, HW, pmean, pinv, eps, sums, p, parts),
  );
  const mean = new Float32Array(C);
  const inv = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    const s = channelStats(x, N, C, HW, c);
    mean[c] = s.mean;
    inv[c] = 1 / Math.sqrt(s.variance + eps);
  }
  assertClose(`${what} mean`, stats[0]!, mean);
  assertClose(`${what} invstd`, stats[1]!, inv);

  let g = dy;
  let [ps, pt] = [0, 0];
  if (relu) {
    const scale = uniform(C);
    // x is centred on `centre`: the output crosses 0 about half the time.
    [ps, pt] = [a.put(scale), a.put(scale.map((v) => -centre * v))];
    const py = a.alloc(x.byteLength);
    k.exports.channelAffine(px, N, C, HW, ps, pt, py, 1, 0, 1);
    const y = a.read(py, x.length);
    g = dy.map((v, i) => (y[i]! > 0 ? v : 0));
    assert.ok(g.some((v) => v === 0) || x.length < 16, `${what}: the mask keeps everything`);
  }
  const shape = HW === 1 ? [N, C] : [N, C, 1, HW];
  const gx = new Tensor(shape);
  const gg = new Tensor([C], dg0.slice());
  const gb = new Tensor([C], db0.slice());
  runBackward(
    'batchnorm',
    [new Tensor(shape, x)],
    { weight: new Tensor([C], gamma), bias: new Tensor([C]) },
    { channels: C, eps, momentum: 0.1 },
    new Tensor(shape, g),
    [gx],
    { weight: gg, bias: gb },
    true,
  );
  const [pdy, pg] = [a.put(dy), a.put(gamma)];
  const [pdx, pdg, pdb] = [a.alloc(x.byteLength), a.put(dg0), a.put(db0)];
  const got = runParts(
    a,
    [
      { p: pdx, init: new Float32Array(x.length).fill(SENTINEL) },
      { p: pdg, init: dg0 },
      { p: pdb, init: db0 },
    ],
    (p, parts) =>
      k.exports.batchnormBackward(pdy, px, pmean, pinv, pg, pdx, pdg, pdb, N, C, HW, ps, pt, sums, p, parts),
  );
  // dx = k (dy - mean(dy) - xhat mean(dy xhat)) cancels (to exactly 0 when N*HW = 2): float32 rounds each
  // term, and xhat = (x - mean) invstd inherits mean's float32 rounding (as in PyTorch, which also keeps the
  // saved mean and invstd in float32). Scale: k (|dy| + |mean(dy)| + |xhat mean(dy xhat)| + |mean| invstd
  // |mean(dy xhat)|).
  const sx = new Float64Array(x.length);
  const sg = new Float64Array(C);
  const sgx = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const { mean: m, variance } = channelStats(x, N, C, HW, c);
    const is = 1 / Math.sqrt(variance + eps);
    let sum = 0;
    let gxh = 0;
    let ag = 0;
    let agx = 0;
    for (let b = 0; b < N; b++) {
      for (let i = 0; i < HW; i++) {
        const j = (b * C + c) * HW + i;
        sum += g[j]!;
        gxh += g[j]! * (x[j]! - m) * is;
        ag += Math.abs(g[j]!);
        agx += Math.abs(g[j]! * (x[j]! - m) * is);
      }
    }
    const mg = sum / (N * HW);
    const mgx = gxh / (N * HW);
    const k = Math.abs(gamma[c]! * is);
    for (let b = 0; b < N; b++) {
      for (let i = 0; i < HW; i++) {
        const j = (b * C + c) * HW + i;
        const xh = Math.abs((x[j]! - m) * is);
        sx[j] = k * (Math.abs(g[j]!) + Math.abs(mg) + (xh + Math.abs(m) * is) * Math.abs(mgx));
      }
    }
    sg[c] = ag + Math.abs(db0[c]!);
    sgx[c] = agx + Math.abs(m) * is * ag + Math.abs(dg0[c]!); // xhat carries the float32 mean's rounding
  }
  assertClose(`${what} dx`, got[0]!, gx.data, sx);
  assertClose(`${what} dgamma`, got[1]!, gg.data, sgx);
  assertClose(`${what} dbeta`, got[2]!, gb.data, sg);
}

function checkRelu(k: WasmKernels): void {
  const a = new Arena(k);
  const n = int(1, 70);
  const x = uniform(n);
  x[0] = 0;
  const y = x.map((v) => (v > 0 ? v : 0));
  const dy = uniform(n);
  const gx = new Tensor([n]);
  runBackward('relu', [new Tensor([n], x)], {}, {}, new Tensor([n], dy), [gx], {});
  const [py, pdy, pdx] = [a.put(y), a.put(dy), a.alloc(n * 4)];
  const [got] = runParts(a, [{ p: pdx, init: new Float32Array(n).fill(SENTINEL) }], (p, parts) =>
    k.exports.reluBackward(py, pdy, pdx, n, p, parts),
  );
  assertClose(`relu n=${n}`, got!, gx.data);
}

/** Returns whether the random shape was valid (window within the padded input). */
function checkPool(k: WasmKernels, kind: 'max' | 'avg'): boolean {
  const a = new Arena(k);
  const N = int(1, 2);
  const C = int(1, 5);
  const H = int(1, 17);
  const W = int(1, 17);
  const KH = pick([1, 2, 3]);
  const KW = pick([1, 2, 3]);
  const attrs = {
    kernel: [KH, KW] as [number, number],
    stride: [int(1, 3), int(1, 3)] as [number, number],
    padding: [int(0, KH >> 1), int(0, KW >> 1)] as [number, number],
    ceilMode: rng() < 0.5,
    countIncludePad: rng() < 0.5,
  };
  let shape: readonly number[];
  try {
    shape = OPS[kind === 'max' ? 'maxpool2d' : 'avgpool2d'].shape([[N, C, H, W]], attrs);
  } catch {
    return false; // window larger than the input
  }
  const [OH, OW] = [shape[2]!, shape[3]!];
  const acc = rng() < 0.5;
  const [xC, xOff] = [C + 2, 1];
  const [yC, yOff] = [C + 1, 1];
  const x = uniform(N * xC * H * W);
  if (rng() < 0.5) for (let i = 0; i < x.length; i++) x[i] = Math.round(x[i]! * 2); // ties
  const dy = uniform(N * yC * OH * OW);
  const dx0 = acc ? uniform(x.length) : new Float32Array(x.length).fill(SENTINEL);
  const xin = new Tensor([N, C, H, W], rowsOf(x, N, xC, xOff, C, H * W));
  const gx = new Tensor(xin.shape);
  const gy = new Tensor([N, C, OH, OW], rowsOf(dy, N, yC, yOff, C, OH * OW));
  runBackward(kind === 'max' ? 'maxpool2d' : 'avgpool2d', [xin], {}, attrs, gy, [gx], {});
  const [px, pdy, pdx] = [a.put(x), a.put(dy), a.put(dx0)];
  const dims = [N, C, H, W, KH, KW, ...attrs.stride, ...attrs.padding, OH, OW] as const;
  const [got] = runParts(a, [{ p: pdx, init: dx0 }], (p, parts) => {
    if (kind === 'max') k.exports.maxpool2dBackward(px, xC, xOff, pdy, yC, yOff, pdx, ...dims, acc, p, parts);
    else
      k.exports.avgpool2dBackward(
        pdy,
        yC,
        yOff,
        pdx,
        xC,
        xOff,
        ...dims,
        attrs.countIncludePad,
        acc,
        p,
        parts,
      );
  });
  const what = `${kind}pool ${JSON.stringify({ N, C, H, W, acc, ...attrs })} dx`;
  assertClose(what, got!, expectedDx(dx0, gx.data, acc, N, xC, xOff, C, H * W));
  return true;
}

function checkGlobalAvgPool(k: WasmKernels): void {
  const a = new Arena(k);
  const [N, C, H, W] = [int(1, 3), int(1, 9), int(1, 7), int(1, 7)];
  const acc = rng() < 0.5;
  const dy = uniform(N * C);
  const dx0 = acc ? uniform(N * C * H * W) : new Float32Array(N * C * H * W).fill(SENTINEL);
  const gx = new Tensor([N, C, H, W]);
  runBackward('globalavgpool', [new Tensor([N, C, H, W])], {}, {}, new Tensor([N, C, 1, 1], dy), [gx], {});
  const [pdy, pdx] = [a.put(dy), a.put(dx0)];
  const [got] = runParts(a, [{ p: pdx, init: dx0 }], (p, parts) =>
    k.exports.globalAvgPoolBackward(pdy, pdx, N, C, H * W, acc, p, parts),
  );
  assertClose(
    `globalavgpool N=${N} C=${C} ${H}x${W} acc=${acc} dx`,
    got!,
    expectedDx(dx0, gx.data, acc, N, C, 0, C, H * W),
  );
}

function checkLinear(k: WasmKernels): void {
  const a = new Arena(k);
  const [N, K, M] = [int(1, 9), pick([1, 3, 4, 15, 16, 17, 37, 64]), int(1, 21)];
  const acc = rng() < 0.5;
  const x = uniform(N * K);
  const w = uniform(M * K, 1 / Math.sqrt(K));
  const dy = uniform(N * M);
  const dx0 = acc ? uniform(N * K) : new Float32Array(N * K).fill(SENTINEL);
  const dw0 = uniform(M * K);
  const db0 = uniform(M);
  const gx = new Tensor([N, K]);
  const gw = new Tensor([M, K], dw0.slice());
  const gb = new Tensor([M], db0.slice());
  const attrs = { inFeatures: K, outFeatures: M, bias: true };
  runBackward(
    'linear',
    [new Tensor([N, K], x)],
    { weight: new Tensor([M, K], w) },
    attrs,
    new Tensor([N, M], dy),
    [gx],
    {
      weight: gw,
      bias: gb,
    },
  );
  const sx = new Tensor([N, K], abs(dx0));
  const sw = new Tensor([M, K], abs(dw0));
  const sb = new Tensor([M], abs(db0));
  runBackward(
    'linear',
    [new Tensor([N, K], abs(x))],
    { weight: new Tensor([M, K], abs(w)) },
    attrs,
    new Tensor([N, M], abs(dy)),
    [sx],
    { weight: sw, bias: sb },
  );
  const [px, pw, pdy] = [a.put(x), a.put(w), a.put(dy)];
  const [pdx, pdw, pdb] = [a.put(dx0), a.put(dw0), a.put(db0)];
  const got = runParts(
    a,
    [
      { p: pdx, init: dx0 },
      { p: pdw, init: dw0 },
      { p: pdb, init: db0 },
    ],
    (p, parts) => k.exports.linearBackward(px, N, K, pw, pdy, M, pdx, pdw, pdb, acc, p, parts),
  );
  const what = `linear N=${N} K=${K} M=${M} acc=${acc}`;
  const ex = acc ? gx.data.map((v, i) => Math.fround(v + dx0[i]!)) : gx.data;
  assertClose(`${what} dx`, got[0]!, ex, Float64Array.from(sx.data));
  assertClose(`${what} dw`, got[1]!, gw.data, Float64Array.from(sw.data));
  assertClose(`${what} dbias`, got[2]!, gb.data, Float64Array.from(sb.data));
}

/** Returns whether the random shape was valid. */
function checkConv(k: WasmKernels, is3x3 = false): boolean {
  const a = new Arena(k);
  const groups = pick([1, 1, 2, 3]);
  const C = groups * int(1, 3);
  const O = groups * int(1, 4);
  const [N, H, W] = [int(1, 2), int(1, 13), int(1, 13)];
  const [KH, KW] = is3x3 ? [3, 3] : [pick([1, 2, 3, 5]), pick([1, 3, 4])];
  const s3 = int(1, 2);
  const attrs = conv({
    inChannels: C,
    outChannels: O,
    groups,
    kernel: [KH, KW],
    stride: is3x3 ? [s3, s3] : [int(1, 3), int(1, 2)],
    padding: is3x3 ? [1, 1] : [int(0, 2), int(0, 2)],
    bias: rng() < 0.5,
  });
  let shape: readonly number[];
  try {
    shape = OPS.conv2d.shape([[N, C, H, W]], attrs);
  } catch {
    return false;
  }
  const [OH, OW] = [shape[2]!, shape[3]!];
  if (OH < 1 || OW < 1) return false;
  const acc = rng() < 0.5;
  const cg = C / groups;
  const x = uniform(N * C * H * W);
  const w = uniform(O * cg * KH * KW, 1 / Math.sqrt(cg * KH * KW));
  const dy = uniform(N * O * OH * OW);
  const dx0 = acc ? uniform(x.length) : new Float32Array(x.length).fill(SENTINEL);
  const dw0 = uniform(w.length);
  const db0 = attrs.bias ? uniform(O) : undefined;
  const xin = new Tensor([N, C, H, W], x);
  const gy = new Tensor([N, O, OH, OW], dy);
  const wt = new Tensor([O, cg, KH, KW], w);
  const gx = new Tensor(xin.shape);
  const gw = new Tensor(wt.shape, dw0.slice());
  const gb = db0 && new Tensor([O], db0.slice());
  runBackward('conv2d', [xin], { weight: wt }, attrs, gy, [gx], { weight: gw, bias: gb });
  const sx = new Tensor(xin.shape, abs(dx0));
  const sw = new Tensor(wt.shape, abs(dw0));
  const sb = db0 && new Tensor([O], abs(db0));
  runBackward(
    'conv2d',
    [new Tensor(xin.shape, abs(x))],
    { weight: new Tensor(wt.shape, abs(w)) },
    attrs,
    new Tensor(gy.shape, abs(dy)),
    [sx],
    { weight: sw, bias: sb },
  );
  const dims = [N, C, H, W, O, KH, KW, ...attrs.stride, ...attrs.padding, OH, OW, groups] as const;
  const [px, pw, pdy] = [a.put(x), a.put(w), a.put(dy)];
  const [pdx, pdw, pdb] = [a.put(dx0), a.put(dw0), a.put(db0)];
  const what = `conv2d ${JSON.stringify({ N, C, H, W, O, acc, ...attrs })}`;
  const [gotDx] = runParts(a, [{ p: pdx, init: dx0 }], (p, parts) =>
    k.exports.conv2dBackwardInput(pdy, pw, pdx, ...dims, acc, p, parts),
  );
  const ex = acc ? gx.data.map((v, i) => Math.fround(v + dx0[i]!)) : gx.data;
  assertClose(`${what} dx`, gotDx!, ex, Float64Array.from(sx.data));
  const outs = [{ p: pdw, init: dw0 }];
  if (db0) outs.push({ p: pdb, init: db0 });
  const got = runParts(a, outs, (p, parts) =>
    k.exports.conv2dBackwardWeight(px, pdy, pdw, pdb, ...dims, p, parts),
  );
  assertClose(`${what} dw`, got[0]!, gw.data, Float64Array.from(sw.data));
  if (gb) assertClose(`${what} dbias`, got[1]!, gb.data, Float64Array.from(sb!.data));
  if (is3x3) {
    const [kg, og, s] = [C / groups, O / groups, attrs.stride[0]];
    const scratch = a.alloc(k.exports.conv3x3ScratchBytes(H, W, O * kg, 3));
    const got3 = runParts(a, outs, (p, parts) =>
      k.exports.conv3x3BackwardWeight(
        px,
        C,
        0,
        pdy,
        O,
        0,
        0,
        pdw,
        pdb,
        N,
        O,
        kg,
        og,
        H,
        W,
        s,
        scratch,
        p,
        parts,
      ),
    );
    assertClose(`conv3x3 ${what} dw`, got3[0]!, gw.data, Float64Array.from(sw.data));
    if (gb) assertClose(`conv3x3 ${what} dbias`, got3[1]!, gb.data, Float64Array.from(sb!.data));
  }
  return true;
}

for (const k of variants) {
  describe(`wasm backward kernels (${k.relaxed ? 'relaxed' : 'simd'}${k.shared ? ', shared' : ''})`, () => {
    it('pointwise backward input and weight match conv2d backward', () => {
      for (const c of pointwiseCases()) checkPointwise(k, c);
    });
    it('depthwise 3x3 backward input and weight match conv2d backward', () => {
      checkDepthwise(k, { C: 4, H: 1, W: 1, stride: 1 });
      checkDepthwise(k, { C: 3, H: 2, W: 1, stride: 2 });
      checkDepthwise(k, { C: 5, H: 14, W: 14, stride: 2 });
      checkDepthwise(k, { C: 3, H: 9, W: 28, stride: 2 });
      checkDepthwise(k, { C: 2, H: 5, W: 17, stride: 1 });
      checkDepthwise(k, { C: 2, H: 6, W: 27, stride: 2 });
      for (let i = 0; i < 40; i++) checkDepthwise(k);
    });
    it('batch norm statistics and training backward match batchnorm backward', () => {
      for (let i = 0; i < 20; i++) checkBatchnorm(k);
    });
    it('relu backward matches relu backward', () => {
      for (let i = 0; i < 10; i++) checkRelu(k);
    });
    it('max and average pool backward match their reference gradients', () => {
      for (const kind of ['max', 'avg'] as const) {
        let ran = 0;
        for (let i = 0; i < 60; i++) ran += +checkPool(k, kind);
        assert.ok(ran >= 30, `only ${ran} valid ${kind} pool shapes`);
      }
    });
    it('global average pool backward matches globalavgpool backward', () => {
      for (let i = 0; i < 10; i++) checkGlobalAvgPool(k);
    });
    it('general conv2d backward input and weight match conv2d backward', () => {
      let ran = 0;
      for (let i = 0; i < 60; i++) ran += +checkConv(k);
      assert.ok(ran >= 30, `only ${ran} valid conv2d shapes`);
    });
    it('3x3 conv weight gradient (grouped, stride 1 and 2) matches conv2d backward', () => {
      for (let i = 0; i < 30; i++) assert.ok(checkConv(k, true));
    });
    it('linear backward matches linear backward', () => {
      for (let i = 0; i < 20; i++) checkLinear(k);
    });
  });
}

describe('wasm backward tolerances', () => {
  it('reports the worst error of the long reductions in units of U * sum |terms|', (t) => {
    t.diagnostic(JSON.stringify(Object.fromEntries([...worst].map(([k, v]) => [k, +v.toFixed(2)]))));
  });
});
