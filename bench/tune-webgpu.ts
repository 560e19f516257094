/**
 * Times whole WebGPU training steps at several tiles of the 1x1 convs (TrainPlanOptions.tiles): first the
 * GEMM tile of the forward and dL/dx (with the default weight-gradient tile), then the weight-gradient tile
 * (with the best GEMM tile). Each candidate is a fresh plan from the same weights and batch; candidates run
 * in rounds, in a rotated order each round, and each keeps the median of its steps over all rounds. The
 * first step's loss must agree across candidates (a wrong tile shows there). Prints a markdown table.
 *
 * The tile whose step is fastest on the GPU belongs in GEMM / WGRAD (kernels.ts, train-kernels.ts); every
 * tile listed here also passes test/webgpu-train.test.ts's kernel checks (three of them there).
 *   node dist/device/tune-webgpu.js [options]     (here: npx tsx bench/tune-webgpu.ts [options])
 */
import { parseArgs } from 'node:util';
import { gemmKey, type GemmTile } from '../src/backends/webgpu/kernels.js';
import { wgradKey, type WgradTile } from '../src/backends/webgpu/train-kernels.js';
import { gemmTile, type TrainPlanOptions, wgradTile } from '../src/backends/webgpu/train-plan.js';
import { createNodeWebGpuEngine } from '../src/node/webgpu.js';
import { writeFileAtomic } from '../src/node/files.js';
import { seededRandom, Tensor } from '../src/tensor/tensor.js';
import { sgd } from '../src/train/optim.js';
import { MODEL_OPTIONS, positiveFlag } from './harness.js';
import { benchModel } from './models.js';

const GEMMS = '32x64x16,fit,64x64x16,32x128x16,40x64x16,32x64x8,32x64x16v,64x64x16v,32x128x8v';
const WGRADS = '32x32x32,fit,32x64x32,64x32x32,64x64x16,24x80x16,32x64x32v,64x64x16v';
const USAGE = `node dist/device/tune-webgpu.js [options]     (here: npx tsx bench/tune-webgpu.ts [options])
  --arch NAME         ShuffleNet v1 preset (default shufflenet_v1_g3_1.0x)
  --size N            input N x N (default 224); --small-input, --classes N as bench/gpu.ts
  --batch N           images per step (default 256)
  --gemm LIST         GEMM tiles TMxTNxTK or fit (per conv, the least padding), the default first (default ${GEMMS})
  --wgrad LIST        weight-gradient tiles TRxTCxTQ or fit, the default first (default ${WGRADS})
  --steps N           timed steps per candidate and round (default 6), after 2 untimed
  --rounds N          rounds (default 2)
  --budget-s S        no candidate started after S seconds, half of them for each search (default 120)
  --out FILE          also write the markdown to FILE
  --tiles-out FILE    write the fastest tiles to FILE as GEMM/WGRAD (train --gpu-tiles, bench-gpu --tiles)`;

const { values: args } = parseArgs({
  options: {
    ...MODEL_OPTIONS,
    batch: { type: 'string', default: '256' },
    gemm: { type: 'string', default: GEMMS },
    wgrad: { type: 'string', default: WGRADS },
    steps: { type: 'string', default: '6' },
    rounds: { type: 'string', default: '2' },
    'budget-s': { type: 'string', default: '120' },
    out: { type: 'string' },
    'tiles-out': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const positive = positiveFlag(USAGE);
/** A comma-separated list of tiles, each parsed by `tile` (a bad one exits 2 with its message). */
const tileList = <T>(flag: string, v: string, tile: (t: string) => T): T[] =>
  v.split(',').map((t) => {
    try {
      return tile(t.trim());
    } catch (e) {
      console.error(`${flag}: ${(e as Error).message}\n${USAGE}`);
      process.exit(2);
    }
  });
const [size, batch, steps, rounds] = ['size', 'batch', 'steps', 'rounds'].map((k) =>
  positive(`--${k}`, args[k as 'size'] as string),
) as [number, number, number, number];
const classes = positive('--classes', args.classes);
const budgetS = positive('--budget-s', args['budget-s']);
const gemms = tileList('--gemm', args.gemm, gemmTile);
const wgrads = tileList('--wgrad', args.wgrad, wgradTile);

const { graph, weights } = benchModel(args.arch, {
  numClasses: classes,
  smallInput: args['small-input'],
  inputSize: [size, size],
});
const shape = [batch, 3, size, size];
const x = Tensor.random(shape, seededRandom(2025));
const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % classes);
// A tile as train --gpu-tiles takes it back (GEMM tiles with their vec4 'v').
const key = (t: object | string) =>
  typeof t === 'string' ? t : 'TM' in t ? gemmKey(t as GemmTile) : wgradKey(t as WgradTile);
const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
const started = performance.now();

interface Candidate {
  label: string;
  tiles: NonNullable<TrainPlanOptions['tiles']>;
  times: number[];
  firstLoss?: number;
  error?: string;
}

const engine = await createNodeWebGpuEngine();
console.log(`WebGPU adapter: ${engine.adapter}; ${args.arch} at ${size}x${size}, batch ${batch}`);

/** One candidate's plan: 2 untimed steps, then `steps` timed ones (each awaits its losses). */
async function measure(c: Candidate): Promise<void> {
  const plan = engine.compileTraining(graph, shape, { tiles: c.tiles });
  try {
    const w = new Map([...weights].map(([k, t]) => [k, new Tensor(t.shape, t.data.slice())]));
    plan.load(w, sgd({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 }));
    const first = (await plan.step(x, labels, 0.01, 0.1)).loss;
    c.firstLoss ??= first;
    await plan.step(undefined, labels, 0.01, 0.1);
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      const { loss } = await plan.step(undefined, labels, 0.01, 0.1);
      c.times.push(performance.now() - t0);
      if (!Number.isFinite(loss)) throw new Error(`the loss is ${loss}`);
    }
  } finally {
    plan.dispose();
  }
}

/**
 * Rounds over the candidates, in a rotated order each round, until `deadline` (ms on performance.now()): a
 * candidate is not started after it, and the default (the first) always runs. Returns them fastest first.
 */
async function tune(what: string, candidates: Candidate[], deadline: number): Promise<Candidate[]> {
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[(i + r) % candidates.length]!;
      if (c.error || (performance.now() > deadline && (c !== candidates[0] || c.times.length))) continue;
      try {
        await measure(c);
      } catch (e) {
        c.error = (e instanceof Error ? e.message : String(e)).split('\n')[0];
      }
      const m = c.times.length ? `${median(c.times).toFixed(2)} ms` : c.error;
      console.log(`  ${what} ${c.label} (round ${r + 1}): ${m}`);
    }
  }
  const ok = candidates.filter((c) => c.times.length);
  const loss0 = candidates[0]!.firstLoss;
  for (const c of ok)
    if (loss0 !== undefined && Math.abs(c.firstLoss! - loss0) > 1e-4 * Math.max(1, Math.abs(loss0)))
      c.error = `first loss ${c.firstLoss} differs from the default tile's ${loss0}`;
  return [...candidates].sort((a, b) => rank(a) - rank(b));
}
const rank = (c: Candidate) => (c.error || !c.times.length ? Infinity : median(c.times));

// Half the budget for each search.
const gemmRuns = await tune(
  'gemm',
  gemms.map((g) => ({ label: key(g), tiles: { gemm: g }, times: [] })),
  started + (budgetS * 1000) / 2,
);
const bestGemm = gemmRuns[0]!.error ? gemms[0]! : gemmRuns[0]!.tiles.gemm!;
const wgradRuns = await tune(
  'wgrad',
  wgrads.map((w) => ({ label: key(w), tiles: { gemm: bestGemm, wgrad: w }, times: [] })),
  started + budgetS * 1000,
);
engine.destroy();

const table = (title: string, runs: Candidate[], def: string) => {
  const base = runs.find((c) => c.label === def);
  const lines = [
    `| ${title} | step ms (median) | steps | images/s | vs ${def} |`,
    '| --- | --- | --- | --- | --- |',
  ];
  for (const c of runs) {
    if (c.error || !c.times.length) {
      lines.push(`| ${c.label} | ${c.error ?? 'not run'} | | | |`);
      continue;
    }
    const ms = median(c.times);
    const ratio = base?.times.length ? (median(base.times) / ms).toFixed(2) + 'x' : '';
    lines.push(
      `| ${c.label} | ${ms.toFixed(2)} | ${c.times.length} | ${((batch * 1000) / ms).toFixed(0)} | ${ratio} |`,
    );
  }
  return lines.join('\n');
};
const best = `${key(bestGemm)}/${wgradRuns[0]!.error ? key(wgrads[0]!) : wgradRuns[0]!.label}`;
const md = [
  `Training-step tiles: ${args.arch} at ${size}x${size}, batch ${batch}, on ${engine.adapter}`,
  `(${new Date().toISOString().slice(0, 10)}; ${steps} timed steps per candidate and round, up to ${rounds} rounds)`,
  '',
  table('GEMM tile (TMxTNxTK), default weight-gradient tile', gemmRuns, key(gemms[0]!)),
  '',
  table(`weight-gradient tile (TRxTCxTQ), GEMM ${key(bestGemm)}`, wgradRuns, key(wgrads[0]!)),
  '',
  `Fastest: \`--gpu-tiles ${best}\` (GEMM/weight gradient).`,
].join('\n');
console.log(`\n${md}`);
if (args.out) writeFileAtomic(args.out, md + '\n');
if (args['tiles-out']) writeFileAtomic(args['tiles-out'], best + '\n');
