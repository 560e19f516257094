/**
 * Training throughput side by side with PyTorch (issue 5): one SGD step at batch 128 on this engine's WASM
 * training plan and on PyTorch (tools/torch_train_bench.py, a persistent process), same model, initial weights
 * and batch, interleaved step by step. Run through bench/run.ts (`--train`); see its USAGE.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { makeBatch, Rng, type Normalize } from '../src/data/augment.js';
import { CIFAR10_STATS, fitImage, FASHION_MNIST_STATS, type ImageSet } from '../src/data/datasets.js';
import type { Graph } from '../src/graph/graph.js';
import { shufflenetWidths } from '../src/models/shufflenet.js';
import { buildPreset } from '../src/models/registry.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/node/datasets.js';
import { createNodeEngine } from '../src/node/engine.js';
import { decodeImage } from '../src/node/image.js';
import { ThreadPool } from '../src/node/threads.js';
import { initWeights } from '../src/nn/init.js';
import type { Engine } from '../src/runtime/engine.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { sgd } from '../src/train/optim.js';
import { learnable } from '../src/train/trainer.js';
import { measure, summarize, writeWeightFiles, type Stats } from './harness.js';
import { relativeDiff } from './models.js';
import type { Runner } from './peers/types.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const CIFAR10_TRAIN_DIR = join(ROOT, '..', 'shared', 'datasets', 'cifar10', 'train');
const LR = 0.01;
const LABEL_SMOOTHING = 0.1;
/**
 * First-step logits further apart than this (relative to the logit scale) are WRONG: a different model is off by
 * O(1). PyTorch NCHW agrees with ours to ~2e-6; its channels_last path (oneDNN's NHWC kernels) is ~20x less
 * exact against float64, which training-mode BN amplifies to ~1e-3 with these initial weights.
 */
const TOLERANCE = 1e-2;
/** Idle ms after each step with 2 threads, so that one side's spinning thread pool is not timed in the other's. */
const SETTLE_MS = 50;

export interface TrainBenchOptions {
  archs: string[];
  threads: number[];
  batch: number;
  /** Timed work per configuration (both sides) before stopping, ms. */
  budgetMs: number;
  minRounds: number;
  warmup: number;
  python: string;
  /** PyTorch memory formats to time (each a model of its own); the ratio is against the fastest. */
  torchFormats: TorchFormat[];
  cifarDir: string;
}

interface Batch {
  input: Tensor;
  labels: Int32Array;
  source: string;
}

interface Dataset {
  name: string;
  size: number;
  channels: 1 | 3;
  load(batch: number): Batch;
}

/** Uniform random bytes, labels 0..9 in turn: the fallback when the images are not on this machine. */
function syntheticSet(n: number, size: number, channels: 1 | 3): ImageSet {
  const rng = new Rng(1);
  return {
    count: n,
    height: size,
    width: size,
    channels,
    images: Uint8Array.from({ length: n * size * size * channels }, () => rng.int(0, 256)),
    labels: Int32Array.from({ length: n }, (_, i) => i % 10),
    classes: Array.from({ length: 10 }, (_, i) => String(i)),
  };
}

const firstBatch = (set: ImageSet, n: number, normalize: Normalize, source: string): Batch => ({
  ...makeBatch(
    set,
    Int32Array.from({ length: n }, (_, i) => i),
    normalize,
  ),
  source,
});

const DATASETS = (cifarDir: string): Dataset[] => [
  {
    name: 'Fashion-MNIST',
    size: 28,
    channels: 1,
    load(n) {
      if (!existsSync(FASHION_MNIST_DIR))
        return firstBatch(syntheticSet(n, 28, 1), n, FASHION_MNIST_STATS, 'synthetic bytes');
      const set = loadFashionMnist(FASHION_MNIST_DIR, 'train');
      return firstBatch(set, n, FASHION_MNIST_STATS, `the first ${n} training images`);
    },
  },
  {
    name: 'CIFAR-10',
    size: 32,
    channels: 3,
    load(n) {
      if (!existsSync(cifarDir))
        return firstBatch(syntheticSet(n, 32, 3), n, CIFAR10_STATS, 'synthetic bytes');
      // Image k is file floor(k / 10) (sorted) of class k % 10: every class alike.
      const classes = readdirSync(cifarDir).sort();
      const files = classes.map((c) => readdirSync(join(cifarDir, c)).sort());
      const set: ImageSet = { ...syntheticSet(n, 32, 3), classes };
      for (let k = 0; k < n; k++) {
        const [label, i] = [k % classes.length, Math.floor(k / classes.length)];
        const path = join(cifarDir, classes[label]!, files[label]![i]!);
        set.images.set(fitImage(decodeImage(readFileSync(path), path), 32, 32).data, k * 32 * 32 * 3);
        set.labels[k] = label;
      }
      return firstBatch(
        set,
        n,
        CIFAR10_STATS,
        `${n} training JPEGs, the classes in turn, the first files of each`,
      );
    },
  },
];

/** Stem and stage widths of a ShuffleNet v1 preset, for PyTorch's reference_models.ShuffleNetV1. */
function shufflenetSpec(arch: string): { groups: number; widths: readonly number[] } {
  const m = /^shufflenet_v1_g(\d+)_([\d.]+)x$/.exec(arch);
  if (!m) throw new Error(`--train-archs: '${arch}' is not a ShuffleNet v1 preset (shufflenet_v1_g{g}_{s}x)`);
  return { groups: Number(m[1]), widths: shufflenetWidths(Number(m[1]), Number(m[2])) };
}

interface Reply {
  error?: string;
  [key: string]: unknown;
}

/** tools/torch_train_bench.py: one JSON line per command, one per answer, in order. */
class Torch {
  private readonly proc: ChildProcessByStdio<Writable, Readable, null>;
  private readonly waiting: { resolve(r: Reply): void; reject(e: Error): void }[] = [];
  readonly ready: Promise<Reply>;

  constructor(python: string) {
    this.proc = spawn(python, [join(ROOT, 'tools', 'torch_train_bench.py')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.ready = this.next();
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const reply = JSON.parse(line) as Reply;
      const w = this.waiting.shift();
      if (!w) return;
      if (reply.error) w.reject(new Error(`PyTorch: ${reply.error}`));
      else w.resolve(reply);
    });
    const fail = (e: Error) => this.waiting.splice(0).forEach((w) => w.reject(e));
    this.proc.on('error', fail);
    this.proc.on('exit', (code) => fail(new Error(`${python} tools/torch_train_bench.py exited (${code})`)));
  }

  private next(): Promise<Reply> {
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  send(cmd: Record<string, unknown>): Promise<Reply> {
    const reply = this.next();
    this.proc.stdin.write(`${JSON.stringify(cmd)}\n`);
    return reply;
  }

  close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.proc.once('exit', () => resolve());
      this.proc.stdin.end();
    });
  }
}

/** The same weights, input and labels as files for PyTorch. */
function writeData(dir: string, weights: ReadonlyMap<string, Tensor>, batch: Batch): void {
  writeWeightFiles(dir, weights);
  writeFileSync(join(dir, 'input.f32'), batch.input.data);
  writeFileSync(join(dir, 'labels.i32'), batch.labels);
}

type TrainRunner = Runner & { loss: number; dispose(): void };

/** Our step: training-mode forward on the WASM plan, loss, backward, SGD update of the weights (in place). */
function ourRunner(engine: Engine, graph: Graph, weights: Map<string, Tensor>, batch: Batch): TrainRunner {
  const plan = engine.compileTraining(graph, batch.input.shape);
  const params = learnable(graph, weights);
  const opt = sgd({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  let logits: Float32Array = new Float32Array(0);
  const r: TrainRunner = {
    name: 'ours',
    backend: `shufflenet.ts ${engine.backend}, training plan on the WASM kernels`,
    threads: engine.threads,
    batch: batch.labels.length,
    loss: NaN,
    run() {
      const output = plan.forward(weights, batch.input);
      const { loss, grad } = softmaxCrossEntropy(output, batch.labels, LABEL_SMOOTHING);
      opt.step(params, plan.backward(grad), LR);
      [logits, r.loss] = [output.data, loss];
    },
    output: () => logits,
    dispose: () => plan.dispose(),
  };
  console.log(`  ours: training plan ${(plan.bytes / 2 ** 20).toFixed(0)} MiB of WASM memory`);
  return r;
}

export type TorchFormat = 'nchw' | 'channels_last';
const FORMAT_NAMES: Record<TorchFormat, string> = { nchw: 'NCHW', channels_last: 'channels_last' };

/** PyTorch's step on one model (`id`) in its process, timed there (`times`: perf_counter ms, no pipe). */
function torchRunner(torch: Torch, id: TorchFormat, threads: number, batch: number) {
  const r = {
    name: `PyTorch ${FORMAT_NAMES[id]}`,
    backend: 'PyTorch',
    threads,
    batch,
    loss: NaN,
    times: [] as number[],
    async run() {
      const reply = await torch.send({ cmd: 'step', id, steps: 1 });
      r.times.push(...(reply.ms as number[]));
      r.loss = reply.loss as number;
    },
    output: async () => Float32Array.from((await torch.send({ cmd: 'logits', id })).logits as number[]),
    dispose() {},
  };
  return r satisfies TrainRunner;
}

interface Result {
  arch: string;
  data: string;
  input: string;
  threads: number;
  ours: Stats;
  /** One per PyTorch memory format, in o.torchFormats' order. */
  torch: Stats[];
  /** The largest first-step logits difference between ours and a PyTorch model. */
  error: number;
}

const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const best = (stats: Stats[]) => Math.max(...stats.map((s) => s.imagesPerSecond));

/** Runs every configuration, prints progress, returns the markdown section. */
export async function trainBench(o: TrainBenchOptions): Promise<string> {
  const loadStart = os.loadavg()[0]!;
  const torch = new Torch(o.python);
  const info = await torch.ready;
  const blas = info.blas as { libblas: string | null; openblas: string | null };
  const torchInfo =
    `PyTorch ${String(info.torch)} (Python ${String(info.python)}), CPU capability ${String(info.capability)}, ` +
    `oneDNN ${info.mkldnn ? 'on' : 'off'}, BLAS ${blas.openblas ?? 'reference (netlib)'} (${blas.libblas ?? 'none'})`;
  console.log(`training: ${torchInfo}`);
  const dir = mkdtempSync(join(os.tmpdir(), 'train-bench-'));
  const results: Result[] = [];
  const sources = new Map<string, string>();
  const backends = new Set<string>();
  try {
    for (const threads of o.threads) {
      const engine = await createNodeEngine({ threads });
      try {
        for (const arch of o.archs) {
          const spec = shufflenetSpec(arch);
          for (const d of DATASETS(o.cifarDir)) {
            const { size: h, channels: c } = d;
            const input = `${h}x${h}x${c}`;
            const config = `${arch} ${d.name} ${input} batch ${o.batch} threads ${threads}`;
            console.log(config);
            const batch = d.load(o.batch);
            sources.set(d.name, batch.source);
            const graph = buildPreset(arch, {
              inputChannels: c,
              numClasses: 10,
              smallInput: true,
              inputSize: [h, h],
            });
            const weights = initWeights(graph, 0);
            writeData(dir, weights, batch);
            const ourParams = [...learnable(graph, weights).values()].reduce((s, t) => s + t.size, 0);
            for (const id of o.torchFormats) {
              const setup = { cmd: 'setup', id, ...spec, c, h, batch: o.batch, threads, data: dir, lr: LR };
              const { params } = await torch.send({ ...setup, channels_last: id === 'channels_last' });
              if (params !== ourParams)
                throw new Error(
                  `${config}: PyTorch's model has ${String(params)} parameters, ours ${ourParams}`,
                );
            }
            const ours = ourRunner(engine, graph, weights, batch);
            const pys = o.torchFormats.map((id) => torchRunner(torch, id, threads, o.batch));
            try {
              // The first step from the same weights on the same batch: the logits must agree.
              ours.run();
              let error = 0;
              for (const py of pys) {
                await py.run();
                const e = relativeDiff(await py.output(), await ours.output());
                error = Math.max(error, e);
                console.log(
                  `  first step: loss ours ${ours.loss.toFixed(5)}, ${py.name} ${py.loss.toFixed(5)}; ` +
                    `logits rel. diff ${e.toExponential(1)}${e <= TOLERANCE ? '' : ' WRONG'}`,
                );
              }
              const [s, ...ts] = await measure([ours, ...pys], {
                warmup: o.warmup,
                iterations: 100_000,
                minIterations: o.minRounds,
                budgetMs: o.budgetMs,
                settleMs: threads > 1 ? SETTLE_MS : 0,
              });
              const torchStats = ts.map((t, i) => summarize(t.runner, pys[i]!.times.slice(-t.times.length)));
              console.log(
                `  ${s!.times.length} rounds: ` +
                  [s!, ...torchStats]
                    .map(
                      (t) => `${t.runner.name} ${fmt(t.median)} ms (${t.imagesPerSecond.toFixed(0)} img/s)`,
                    )
                    .join(', ') +
                  `; ours / best PyTorch ${(s!.imagesPerSecond / best(torchStats)).toFixed(2)}x`,
              );
              results.push({ arch, data: d.name, input, threads, ours: s!, torch: torchStats, error });
              backends.add(ours.backend);
            } finally {
              ours.dispose();
            }
          }
        }
      } finally {
        if (engine.parallel instanceof ThreadPool) await engine.parallel.close();
      }
    }
  } finally {
    await torch.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return section(o, results, { torchInfo, ours: [...backends].join('; '), sources, loadStart });
}

function section(
  o: TrainBenchOptions,
  results: Result[],
  m: { torchInfo: string; ours: string; sources: Map<string, string>; loadStart: number },
): string {
  const cpu = os.cpus();
  const argv = process.argv.slice(2);
  const internal = argv.indexOf('--train-json'); // added by bench/run.ts for its training child
  if (internal >= 0) argv.splice(internal, 2);
  const command = `npx tsx bench/run.ts ${argv.join(' ')}`.trim();
  const formats = o.torchFormats.map((f) => FORMAT_NAMES[f]);
  const head = [
    'model',
    'data',
    'input',
    'threads',
    'ours ms/step (min-max)',
    'ours images/s',
    ...formats.map((f) => `PyTorch ${f} ms/step (min-max)`),
    'PyTorch images/s (best)',
    'ours / PyTorch',
    'first-step logits rel. diff',
  ];
  const ms = (s: Stats) => `${fmt(s.median)} (${fmt(s.min)}-${fmt(s.max)})`;
  const rows = results.map((r) => [
    r.arch,
    r.data,
    r.input,
    String(r.threads),
    ms(r.ours),
    r.ours.imagesPerSecond.toFixed(0),
    ...r.torch.map(ms),
    best(r.torch).toFixed(0),
    `**${(r.ours.imagesPerSecond / best(r.torch)).toFixed(2)}x**`,
    `${r.error.toExponential(1)}${r.error <= TOLERANCE ? '' : ' **WRONG**'}`,
  ]);
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    '## Training throughput, side by side with PyTorch',
    '',
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`,
    `- Load average (1 min) at start / end: ${m.loadStart.toFixed(2)} / ${os.loadavg()[0]!.toFixed(2)}`,
    `- Command: \`${command}\``,
    `- Ours: ${m.ours}`,
    `- PyTorch: ${m.torchInfo}; in ${formats.join(' and ')} memory format` +
      `${formats.length > 1 ? ' (two models, timed alike; the ratio is against the faster)' : ''}; ` +
      'tools/torch_train_bench.py, models from tools/reference_models.py',
    `- One step, batch ${o.batch}: forward (training-mode BN) + softmax cross entropy (label smoothing ` +
      `${LABEL_SMOOTHING}) + backward + SGD (momentum 0.9, Nesterov, weight decay 5e-4 on weights of 2+ ` +
      `dimensions, lr ${LR}; PyTorch: zero_grad(set_to_none=True) first). ShuffleNet v1 with the small-input ` +
      'stem (3x3 stride-1 conv, no max pool), 10 classes.',
    '- Data loading is not timed: one fixed batch, normalised once and reused every step, the same floats on ' +
      `both sides (${[...m.sources].map(([k, v]) => `${k}: ${v}`).join('; ')}). Both start from the same ` +
      "weights (initWeights seed 0); the first step's logits are compared (max abs difference / max abs logit, " +
      `WRONG above ${TOLERANCE}).`,
    `- Timing: one checked step and ${o.warmup} warm-up step(s) each, then rounds of one step per model, in ` +
      `an order rotated each round, for ${o.budgetMs} ms (at least ${o.minRounds} rounds). Ours timed with ` +
      'performance.now() around the step; PyTorch inside its process with time.perf_counter() (no pipe ' +
      `overhead). With 2 threads an idle ${SETTLE_MS} ms follows each step. images/s = batch / median.`,
    '',
    line(head),
    line(head.map(() => '---')),
    ...rows.map(line),
    '',
  ].join('\n');
}
