/**
 * The GPU benchmark (issue 8): ShuffleNet v1 on this project's WebGPU engine (inference plans and the
 * training plan) next to PyTorch on CUDA (tools/torch_gpu_bench.py) on the same model, weights and batch, in
 * one run; prints a markdown section for BENCHMARKS.md. Sizes are arguments, so that it also runs on a
 * software adapter with tiny shapes (a smoke test; no speed claims there). See USAGE.
 *
 * On the GPU machine it runs from a bundle (no tsx, no node_modules there): `node scripts/build-device.mjs`
 * writes dist/device/bench-gpu.js; scripts/device-gpu.sh's `bench` phase runs it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { WebGpuEngine } from '../src/backends/webgpu/engine.js';
import type { Precision } from '../src/backends/webgpu/kernels.js';
import { parseTiles } from '../src/backends/webgpu/train-plan.js';
import { execute } from '../src/graph/execute.js';
import { shufflenetWidths } from '../src/models/shufflenet.js';
import { createNodeWebGpuEngine } from '../src/node/webgpu.js';
import { writeFileAtomic } from '../src/node/files.js';
import { seededRandom, Tensor } from '../src/tensor/tensor.js';
import { sgd } from '../src/train/optim.js';
import { MODEL_OPTIONS, positiveFlag, summarize, writeWeightFiles, type Stats } from './harness.js';
import { benchModel, relativeDiff } from './models.js';

const USAGE = `node dist/device/bench-gpu.js [options]     (here: npx tsx bench/gpu.ts [options])
  --arch NAME            ShuffleNet v1 preset (default shufflenet_v1_g3_1.0x)
  --size N               input N x N (default 224)
  --classes N            classes (default 1000)
  --small-input          the small-input stem (3x3 stride 1, no max pool), as training on CIFAR-10 uses
  --infer-batches A,B    inference batches (default 1,256; empty: none)
  --f16-batches A,B      inference batches again with f16 activations (default 256; where the adapter has
                         shader-f16, else a note; empty: none)
  --f16-rounded          those rows in f16-rounded instead (f16's rounding on f32 storage: any adapter)
  --pixel-batches A,B    inference batches again on uint8 pixels, normalised on the GPU (a quarter of the
                         f32 upload; default 256; empty: none)
  --train-batches A,B    training batches (default 256; empty: none)
  --tiles T1,T2,...      the training plan's 1x1 tiles, each GEMM[/WGRAD] as bench/tune-webgpu.ts prints
                         them, or default (the kernels' own; the default): a training row per tiling, each
                         against the same PyTorch row, e.g. default,fit/fit
  --warmup N             untimed runs first (default 3)
  --iterations N         timed runs at most (default 30), fewer when --budget-ms runs out (at least 5)
  --budget-ms N          timed work per row on our side (default 20000)
  --no-check             skip the batch-1 check against the reference kernels (CPU) and PyTorch
  --python PATH          PyTorch's interpreter (default python3); --no-torch leaves PyTorch out
  --torch-device D       auto | cuda | cpu (default auto: CUDA when there is one)
  --torch-threads N      PyTorch's CPU threads (CPU only; default torch's)
  --host-io              also time PyTorch with the input and logits on the host (as our plans run)
  --tf32                 PyTorch with TF32 convolutions and matmuls (default: strict fp32, as ours)
  --out FILE             also write the markdown section to FILE
  --json FILE            also write every result as JSON to FILE (rewritten after each row)
The WebGPU backend: $SHUFFLENET_WEBGPU_BACKEND (vulkan on the GPU machine; opengles on llvmpipe), else
the native one, then opengles.`;

const TOLERANCE = 1e-3;
/** f16 activations round every stored value to 11 bits (test/webgpu.test.ts: 1-2e-3 on the photos). */
const F16_TOLERANCE = 1e-2;
const LR = 0.01;
const LABEL_SMOOTHING = 0.1;

const { values: args } = parseArgs({
  options: {
    ...MODEL_OPTIONS,
    'infer-batches': { type: 'string', default: '1,256' },
    'f16-batches': { type: 'string', default: '256' },
    'f16-rounded': { type: 'boolean', default: false },
    'pixel-batches': { type: 'string', default: '256' },
    'train-batches': { type: 'string', default: '256' },
    tiles: { type: 'string' },
    warmup: { type: 'string', default: '3' },
    iterations: { type: 'string', default: '30' },
    'budget-ms': { type: 'string', default: '20000' },
    'no-check': { type: 'boolean', default: false },
    python: { type: 'string', default: 'python3' },
    'no-torch': { type: 'boolean', default: false },
    'torch-device': { type: 'string', default: 'auto' },
    'torch-threads': { type: 'string' },
    'host-io': { type: 'boolean', default: false },
    tf32: { type: 'boolean', default: false },
    out: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const positive = positiveFlag(USAGE);
const list = (flag: string, v: string) =>
  v
    .split(',')
    .filter((s) => s.trim())
    .map((s) => positive(flag, s));

const arch = args.arch;
const size = positive('--size', args.size);
const classes = positive('--classes', args.classes);
const smallInput = args['small-input'];
const inferBatches = list('--infer-batches', args['infer-batches']);
const f16Batches = list('--f16-batches', args['f16-batches']);
const f16Precision = args['f16-rounded'] ? 'f16-rounded' : 'f16';
const trainBatches = list('--train-batches', args['train-batches']);
const pixelBatches = list('--pixel-batches', args['pixel-batches']);
/** The training rows' tilings: [label, tiles]; 'default' (undefined tiles) is the kernels' own. */
let tilings: [string, ReturnType<typeof parseTiles> | undefined][];
try {
  const specs = (args.tiles ?? 'default').split(',').map((t) => t.trim());
  if (specs.some((t) => !t) || new Set(specs).size !== specs.length)
    throw new RangeError(`'${args.tiles}': expected distinct tilings separated by commas`);
  tilings = specs.map((t) => [t, t === 'default' ? undefined : parseTiles(t)]);
} catch (e) {
  console.error(`--tiles: ${(e as Error).message}`);
  process.exit(2);
}
/** A row's label for a tiling: none when the kernels' defaults are the only tiling. */
const tilingLabel = (t: string) => (tilings.length === 1 && t === 'default' ? undefined : t);
const warmup = Number(args.warmup);
const iterations = positive('--iterations', args.iterations);
const budgetMs = positive('--budget-ms', args['budget-ms']);
const archMatch = /^shufflenet_v1_g(\d+)_([\d.]+)x$/.exec(arch);
if (!archMatch) {
  console.error(`--arch '${arch}': expected a ShuffleNet v1 preset (shufflenet_v1_g{g}_{s}x)`);
  process.exit(2);
}
const groups = Number(archMatch[1]);
const widths = shufflenetWidths(groups, Number(archMatch[2]));

/** One row of the table: ours and PyTorch's timings (or why a side has none). */
interface Row {
  kind: 'infer' | 'train';
  batch: number;
  /** How our plan stores activations (inference; f32 when absent). PyTorch stays fp32. */
  precision?: Precision;
  /** The training plan's 1x1 tiles (--tiles) when several are measured; PyTorch's row is the first's. */
  tiles?: string;
  /** Inference on uint8 pixels, normalised on the GPU (--pixel-batches); PyTorch's row is the f32 one's. */
  pixels?: boolean;
  /** Ours with the input uploaded each run (as from the CPU), and with it left on the GPU. */
  ours?: Stats & { memory?: string };
  oursResident?: Stats;
  oursError?: string;
  /** PyTorch's measurements of this row: format/io -> timing or error. */
  torch: TorchRow[];
}

interface TorchRow {
  kind: string;
  format: string;
  io: string;
  batch: number;
  median_ms?: number;
  min_ms?: number;
  max_ms?: number;
  iterations?: number;
  images_per_s?: number;
  error?: string;
}

const rows: Row[] = [];
const notes: string[] = [];
const started = new Date();
let torchInfo: Record<string, unknown> | undefined;
let adapter = 'no adapter';

const saveJson = () => {
  if (args.json)
    writeFileAtomic(args.json, JSON.stringify({ arch, size, adapter, torchInfo, rows, notes }, null, 1));
};
const row = (
  kind: Row['kind'],
  batch: number,
  precision?: Precision,
  tiles?: string,
  pixels = false,
): Row => {
  let r = rows.find(
    (x) =>
      x.kind === kind &&
      x.batch === batch &&
      x.precision === precision &&
      x.tiles === tiles &&
      !!x.pixels === pixels,
  );
  if (!r) {
    r = {
      kind,
      batch,
      torch: [],
      ...(precision ? { precision } : {}),
      ...(tiles ? { tiles } : {}),
      ...(pixels ? { pixels } : {}),
    };
    rows.push(r);
  }
  return r;
};
const message = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)).split('\n')[0]!;
const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/** warmup untimed calls, then up to `iterations` timed ones until `budgetMs` has passed (at least 5). */
async function time(name: string, batch: number, run: () => Promise<unknown>): Promise<Stats> {
  for (let i = 0; i < warmup; i++) await run();
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
    if (times.length >= Math.min(5, iterations) && performance.now() - start > budgetMs) break;
  }
  return summarize({ name, backend: 'webgpu', threads: 1, batch }, times);
}

/** One row's measurement: an error becomes the row's (reported; the other rows go on), then the JSON is saved. */
async function measured(r: Row, what: string, f: () => Promise<void>): Promise<void> {
  try {
    await f();
  } catch (e) {
    r.oursError = message(e);
    console.log(`  ${what}: ${r.oursError}`);
  }
  saveJson();
}

const ROOT_CANDIDATES = [
  process.cwd(),
  join(dirname(fileURLToPath(import.meta.url)), '..'),
  join(dirname(fileURLToPath(import.meta.url)), '..', '..'),
];
const torchScript = ROOT_CANDIDATES.map((r) => join(r, 'tools', 'torch_gpu_bench.py')).find((p) =>
  existsSync(p),
);

const { graph, weights } = benchModel(arch, {
  numClasses: classes,
  smallInput,
  inputSize: [size, size],
});
const input1 = Tensor.random([1, 3, size, size], seededRandom(2024));

/** PyTorch in a child process (before ours, so that a crash on our side still leaves its numbers). */
function runTorch(dataDir: string | undefined): Float32Array | undefined {
  if (args['no-torch']) return undefined;
  if (!torchScript) {
    notes.push('PyTorch: tools/torch_gpu_bench.py not found');
    return undefined;
  }
  const torchArgs = [
    torchScript,
    '--device',
    args['torch-device'],
    '--widths',
    widths.join(','),
    '--groups',
    String(groups),
    '--classes',
    String(classes),
    ...(smallInput ? ['--small-input'] : []),
    '--size',
    String(size),
    '--infer-batches',
    inferBatches.join(','),
    '--train-batches',
    trainBatches.join(','),
    ...(f16Batches.length ? ['--half-batches', f16Batches.join(',')] : []),
    '--warmup',
    String(Math.max(warmup, 1)),
    '--iterations',
    String(Math.max(iterations, 5)),
    '--budget-s',
    String(budgetMs / 1000),
    ...(args['host-io'] ? ['--host-io'] : []),
    ...(args.tf32 ? ['--tf32'] : []),
    ...(args['torch-threads'] ? ['--threads', args['torch-threads']] : []),
    ...(dataDir ? ['--data', dataDir] : []),
  ];
  console.log(`PyTorch: ${args.python} ${torchArgs.join(' ')}`);
  const r = spawnSync(args.python, torchArgs, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 256 * 2 ** 20,
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  if (r.error) notes.push(`PyTorch did not run: ${message(r.error)}`);
  else if (r.status !== 0) notes.push(`PyTorch exited with ${r.status ?? r.signal}`);
  let logits: Float32Array | undefined;
  for (const line of (r.stdout ?? '').split('\n')) {
    if (!line.trim()) continue;
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      console.log(`PyTorch: ${line}`);
      continue;
    }
    if (m.kind === 'info') torchInfo = m;
    else if (m.kind === 'logits') logits = Float32Array.from(m.logits as number[]);
    else if (m.kind === 'infer' || m.kind === 'train') {
      const t = m as unknown as TorchRow & { precision?: string };
      // PyTorch's fp16 inference belongs with our f16 rows.
      // Our training rows, one per tiling, share the first tiling's row of PyTorch numbers.
      const tiles = m.kind === 'train' ? tilingLabel(tilings[0]![0]) : undefined;
      row(m.kind, t.batch, t.precision === 'fp16' ? f16Precision : undefined, tiles).torch.push(t);
      console.log(
        `  PyTorch ${t.kind}${t.precision ? ` ${t.precision}` : ''} batch ${t.batch} ${t.format} ${t.io}: ` +
          (t.error ?? `median ${fmt(t.median_ms!)} ms, ${fmt(t.images_per_s!)} images/s`),
      );
    } else if (m.kind === 'error') notes.push(`PyTorch: ${String(m.error)}`);
  }
  saveJson();
  return logits;
}

/** Our inference rows, in f32 activations and then in f16 (`--f16-batches`) where the adapter has them. */
async function inference(engine: WebGpuEngine, reference?: Float32Array, torchLogits?: Float32Array) {
  const f16 = f16Precision === 'f16-rounded' || engine.hasF16;
  if (f16Batches.length && !f16) notes.push(`f16 rows: the adapter has no shader-f16 (${engine.adapter})`);
  if (f16Batches.length && f16)
    notes.push(
      `${f16Precision} rows: the same plan with its activations stored in ${f16Precision === 'f16' ? 'f16 (shader-f16)' : 'f32 rounded to f16'}; ` +
        'weights and arithmetic f32 (BN folded first); the ratio is against PyTorch with model and input in ' +
        'fp16 (model.half()) where that ran, else PyTorch fp32',
    );
  const runs: [number, Precision | undefined][] = [
    ...inferBatches.map((b): [number, undefined] => [b, undefined]),
    ...(f16 ? f16Batches.map((b): [number, Precision] => [b, f16Precision]) : []),
  ];
  for (const [batch, precision] of runs) {
    const r = row('infer', batch, precision);
    await measured(r, `ours infer${precision ? ` ${precision}` : ''} batch ${batch}`, async () => {
      const plan = engine.compile({ graph, weights }, { batch, height: size, width: size, precision });
      try {
        const x = batch === 1 ? input1 : Tensor.random([batch, 3, size, size], seededRandom(2024));
        const out = new Float32Array(plan.outputShape.reduce((a, b) => a * b, 1));
        if ((batch === 1 || precision) && (reference || torchLogits)) {
          // The first image's logits (batch-1 input; a batch's first row for the f16 rows).
          const x1 = new Float32Array(x.data.length);
          x1.set(input1.data);
          const y = (await plan.run(batch === 1 ? x.data : x1, new Float32Array(out.length))).subarray(
            0,
            classes,
          );
          const check = (what: string, ref?: Float32Array) => {
            if (!ref) return;
            const e = relativeDiff(y, ref);
            const tolerance = precision ? F16_TOLERANCE : TOLERANCE;
            notes.push(
              `batch ${batch}${precision ? ` ${precision}` : ''} logits, ours vs ${what}: max abs difference / ` +
                `max abs logit ${e.toExponential(1)}` +
                (e <= tolerance ? '' : ' **WRONG**'),
            );
            console.log(`  check: ${notes.at(-1)}`);
          };
          check('the reference kernels (CPU)', reference);
          check('PyTorch', torchLogits);
        }
        const s = await time('ours', batch, () => plan.run(x.data, out));
        r.ours = {
          ...s,
          memory: `arena ${(plan.bytes.arena / 2 ** 20).toFixed(1)} MiB${precision ? ` (${precision})` : ''}`,
        };
        const d = await time('ours', batch, () => plan.run(undefined, out));
        r.oursResident = d;
        console.log(
          `  ours infer${precision ? ` ${precision}` : ''} batch ${batch}: median ${fmt(s.median)} ms, ${fmt(s.imagesPerSecond)} images/s; ` +
            `input on the GPU: ${fmt(d.median)} ms, ${fmt(d.imagesPerSecond)} images/s`,
        );
      } finally {
        plan.dispose();
      }
    });
  }
}

/**
 * Our inference rows on uint8 pixels (`pixels` plans): the upload is a quarter of the f32 rows', and the
 * logits those of the same pixels normalised on the CPU.
 */
async function pixelInference(engine: WebGpuEngine) {
  // ImageNet's mean and std (preprocess's default), on pixels of a fixed random image per batch.
  const pixels = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
  for (const batch of pixelBatches) {
    const r = row('infer', batch, undefined, undefined, true);
    const what = `ours infer batch ${batch}, uint8 pixels`;
    await measured(r, what, async () => {
      const plan = engine.compile({ graph, weights }, { batch, height: size, width: size, pixels });
      try {
        const rand = seededRandom(2026);
        const u8 = Uint8Array.from({ length: batch * 3 * size * size }, () => Math.floor(rand() * 256));
        const out = new Float32Array(plan.outputShape.reduce((a, b) => a * b, 1));
        // The first image against the f32 plan on the same pixels normalised here.
        const f32 = engine.compile({ graph, weights }, { batch: 1, height: size, width: size });
        try {
          const plane = size * size;
          const x = Float32Array.from({ length: 3 * plane }, (_, i) => {
            const c = Math.floor(i / plane);
            return (u8[i]! / 255 - pixels.mean[c]!) / pixels.std[c]!;
          });
          const e = relativeDiff((await plan.run(u8, out)).subarray(0, classes), await f32.run(x));
          notes.push(
            `batch ${batch} uint8 pixels, image 0's logits vs the f32 plan on them normalised on the CPU: ` +
              `${e.toExponential(1)}${e <= TOLERANCE ? '' : ' **WRONG**'}`,
          );
          console.log(`  check: ${notes.at(-1)}`);
        } finally {
          f32.dispose();
        }
        const s = await time('ours', batch, () => plan.run(u8, out));
        r.ours = { ...s, memory: `arena ${(plan.bytes.arena / 2 ** 20).toFixed(1)} MiB` };
        r.oursResident = await time('ours', batch, () => plan.run(undefined, out));
        console.log(
          `  ${what}: median ${fmt(s.median)} ms, ${fmt(s.imagesPerSecond)} images/s; ` +
            `pixels on the GPU: ${fmt(r.oursResident.median)} ms`,
        );
      } finally {
        plan.dispose();
      }
    });
  }
}

/**
 * Our training rows: whole steps on the device, as the trainer runs them with SGD (forward with batch
 * statistics, softmax cross-entropy, backward, SGD in one submission; logits, losses and BN statistics read
 * back).
 */
async function training(engine: WebGpuEngine) {
  for (const batch of trainBatches)
    for (const [label, tiles] of tilings) await trainingRow(engine, batch, label, tiles);
}

async function trainingRow(
  engine: WebGpuEngine,
  batch: number,
  label: string,
  tiles: ReturnType<typeof parseTiles> | undefined,
) {
  const r = row('train', batch, undefined, tilingLabel(label));
  const what = `ours train batch ${batch}${r.tiles ? ` (tiles ${r.tiles})` : ''}`;
  await measured(r, what, async () => {
    const shape = [batch, 3, size, size];
    const plan = engine.compileTraining(graph, shape, { tiles });
    try {
      const w = new Map([...weights].map(([k, t]) => [k, new Tensor(t.shape, t.data.slice())]));
      const opt = sgd({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
      plan.load(w, opt);
      const x = Tensor.random(shape, seededRandom(2025));
      const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % classes);
      let loss = NaN;
      const step = async () => {
        loss = (await plan.step(x, labels, LR, LABEL_SMOOTHING)).loss;
      };
      const s = await time('ours', batch, step);
      if (!Number.isFinite(loss)) throw new Error(`the loss is ${loss}`);
      const d = await time('ours', batch, async () => {
        loss = (await plan.step(undefined, labels, LR, LABEL_SMOOTHING)).loss;
      });
      r.oursResident = d;
      const mib = (plan.bytes.arena + plan.bytes.weights) / 2 ** 20;
      r.ours = { ...s, memory: `${mib.toFixed(0)} MiB on the GPU` };
      console.log(
        `  ${what}: median ${fmt(s.median)} ms, ${fmt(s.imagesPerSecond)} images/s; ` +
          `input on the GPU: ${fmt(d.median)} ms, ${fmt(d.imagesPerSecond)} images/s; last loss ${loss.toFixed(4)}`,
      );
    } finally {
      plan.dispose();
    }
  });
}

function section(): string {
  const cpu = os.cpus();
  const ti = torchInfo ?? {};
  const gpu = ti.gpu ? `${String(ti.gpu)}, CUDA ${String(ti.cuda)}, cuDNN ${String(ti.cudnn)}` : 'no CUDA';
  const best = (ts: TorchRow[]) =>
    ts
      .filter((t) => t.io === 'device' && t.images_per_s !== undefined)
      .sort((a, b) => b.images_per_s! - a.images_per_s!)[0];
  const torchCell = (r: Row, format: string, io = 'device') => {
    const t = r.torch.find((x) => x.format === format && x.io === io);
    if (!t) return '';
    return t.error ? `failed: ${t.error}` : `${fmt(t.median_ms!)} (${fmt(t.min_ms!)}-${fmt(t.max_ms!)})`;
  };
  const formats = [...new Set(rows.flatMap((r) => r.torch.map((t) => t.format)))];
  const hostIo = rows.some((r) => r.torch.some((t) => t.io === 'host'));
  const head = [
    'measurement',
    'batch',
    'input',
    'ours ms, input uploaded (min-max)',
    'ours images/s, uploaded',
    'ours ms, input on the GPU (min-max)',
    'ours images/s, on the GPU',
    ...formats.map((f) => `PyTorch ${f === 'nchw' ? 'NCHW' : f} ms (min-max)`),
    ...(hostIo ? ['PyTorch host I/O images/s (best)'] : []),
    'PyTorch images/s (best)',
    'ours / PyTorch, input on the GPU',
    ...(hostIo ? ['ours / PyTorch, host I/O'] : []),
  ];
  const lines = rows.map((r) => {
    // An f16 row's peer is PyTorch in fp16 (--half-batches) where it ran, else PyTorch fp32 at that batch.
    const half = r.precision !== undefined && best(r.torch) !== undefined;
    // A training row of another tiling is compared with the first tiling's PyTorch numbers.
    const other = (r.tiles !== undefined && r.tiles !== tilingLabel(tilings[0]![0])) || !!r.pixels;
    const torch =
      (r.precision && !half) || r.pixels
        ? (rows.find((x) => x.kind === r.kind && x.batch === r.batch && !x.precision && !x.pixels)?.torch ??
          [])
        : other
          ? (rows.find(
              (x) => x.kind === r.kind && x.batch === r.batch && x.tiles === tilingLabel(tilings[0]![0]),
            )?.torch ?? [])
          : r.torch;
    const b = best(torch);
    const host = torch
      .filter((t) => t.io === 'host' && t.images_per_s !== undefined)
      .sort((x, y) => y.images_per_s! - x.images_per_s!)[0];
    const ours = r.ours;
    const dev = r.oursResident;
    const ms = (s: Stats) => `${fmt(s.median)} (${fmt(s.min)}-${fmt(s.max)})`;
    return [
      r.kind === 'infer'
        ? `inference${r.precision ? `, ${r.precision} activations (PyTorch: ${half ? 'fp16' : 'fp32'})` : ''}` +
          (r.pixels ? ', uint8 pixels normalised on the GPU' : '')
        : `training step${r.tiles ? `, 1x1 tiles ${r.tiles}` : ''}`,
      String(r.batch),
      `${size}x${size}`,
      ours ? ms(ours) : `failed: ${r.oursError ?? 'not run'}`,
      ours ? fmt(ours.imagesPerSecond) : '',
      dev ? ms(dev) : '',
      dev ? fmt(dev.imagesPerSecond) : '',
      ...formats.map((f) => (r.precision && !half ? '' : other ? '(as above)' : torchCell(r, f))),
      ...(hostIo ? [host ? fmt(host.images_per_s!) : ''] : []),
      b ? fmt(b.images_per_s!) : '',
      dev && b ? `**${(dev.imagesPerSecond / b.images_per_s!).toFixed(2)}x**` : '',
      ...(hostIo ? [ours && host ? `${(ours.imagesPerSecond / host.images_per_s!).toFixed(2)}x` : ''] : []),
    ];
  });
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  const command = `node dist/device/bench-gpu.js ${process.argv.slice(2).join(' ')}`.trim();
  const memory = rows
    .filter((r) => r.ours?.memory)
    .map(
      (r) =>
        `${r.kind} batch ${r.batch}${r.pixels ? ' (uint8 pixels)' : ''}${r.tiles ? ` (${r.tiles})` : ''}: ${r.ours!.memory}`,
    )
    .join('; ');
  return [
    `## GPU: ${arch}${smallInput ? ' (small-input stem)' : ''} at ${size}x${size} on WebGPU, side by side with PyTorch`,
    '',
    `- Date: ${started.toISOString()}`,
    `- Machine: ${String(ti.gpu ?? (torchInfo ? 'no CUDA GPU' : 'GPU: the adapter below'))}; ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`,
    `- Command: \`${command}\` (scripts/device-gpu.sh bench)`,
    `- Ours: shufflenet.ts WebGPU engine on Dawn (npm webgpu), adapter: ${adapter}` +
      `${memory ? `; ${memory}` : ''}`,
    torchInfo
      ? `- PyTorch: ${String(ti.torch)} (Python ${String(ti.python ?? '?')}), ${gpu}, ` +
        `${String(ti.precision ?? 'fp32')} (${String(ti.precision_setting ?? '')}), cudnn.benchmark on, ` +
        'tools/torch_gpu_bench.py, model from tools/reference_models.py'
      : '- PyTorch: not run',
    `- Same model: ShuffleNet v1 widths ${widths.join('/')}, g=${groups}, ${classes} classes` +
      `${smallInput ? ', the small-input stem (3x3 stride 1, no max pool)' : ''}, the same weights ` +
      '(createModel seed 0, BN statistics calibrated; PyTorch loads ours) and the same batch-1 input ' +
      `(uniform [-1, 1), seed 2024); larger batches: random inputs of the same distribution.`,
    '- Inference: ours = `await plan.run(input, out)`: the input uploaded, one submission, the logits read ' +
      'back; "on the GPU": `plan.run(undefined, out)`, the input left on the device by the run before; ' +
      'PyTorch = eval mode, torch.no_grad(), input resident on the GPU, logits left there' +
      `${hostIo ? ' (host I/O column: input from and logits to the CPU, as ours uploaded)' : ''}. The ratio ` +
      'compares ours with the input on the GPU to PyTorch with its input there.',
    '- Training step: ours = a whole step on the device in one submission, as `shufflenet train --backend ' +
      'webgpu` runs with SGD: the input uploaded (or, "on the GPU", the batch left there), forward with ' +
      'training-mode BN, softmax cross entropy (label ' +
      `smoothing ${LABEL_SMOOTHING}), backward, SGD (momentum 0.9, Nesterov, weight decay 5e-4, lr ${LR}); ` +
      'the logits, losses and BN statistics read back (the running buffers move on the CPU); PyTorch = ' +
      'zero_grad, forward, the same loss, backward, the same SGD, all on the GPU.' +
      (args.tiles
        ? ` Our 1x1 tiles: --tiles ${args.tiles} (a training row per tiling, one after the other).`
        : ''),
    `- Timing: ${warmup} warm-up run(s), then up to ${iterations} timed runs (stopping after ` +
      `${budgetMs / 1000} s once 5 ran), each awaited (PyTorch: torch.cuda.synchronize() around each); ` +
      'medians; images/s = batch / median. PyTorch first, then ours, in the same device run.',
    ...notes.map((n) => `- ${n}`),
    '',
    line(head),
    line(head.map(() => '---')),
    ...lines.map(line),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  let reference: Float32Array | undefined;
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-gpu-'));
  try {
    if (!args['no-check']) {
      const t0 = performance.now();
      reference = execute(graph, weights, input1).data;
      console.log(`reference execute() at batch 1: ${fmt(performance.now() - t0)} ms`);
      writeWeightFiles(dir, weights);
      writeFileSync(join(dir, 'input.f32'), input1.data);
    }
    const torchLogits = runTorch(args['no-check'] ? undefined : dir);
    let engine: WebGpuEngine | undefined;
    try {
      engine = await createNodeWebGpuEngine();
      adapter = engine.adapter;
      console.log(`WebGPU adapter: ${adapter}`);
      await inference(engine, reference, torchLogits);
      await pixelInference(engine);
      await training(engine);
    } catch (e) {
      notes.push(`ours: ${message(e)}`);
      console.log(`ours: ${message(e)}`);
    } finally {
      engine?.destroy();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  saveJson();
  const md = section();
  console.log(`\n${md}`);
  if (args.out) {
    writeFileAtomic(args.out, md);
    console.log(`written to ${args.out}`);
  }
}

await main();
