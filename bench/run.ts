/**
 * Side-by-side inference benchmark (issue 4): our engine and its peers on the same graph, weights and input,
 * each checked against the reference execute(), then timed interleaved. Then training throughput next to
 * PyTorch (issue 5, bench/train.ts). See USAGE.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { complexity } from '../src/graph/complexity.js';
import { execute } from '../src/graph/execute.js';
import { buildPreset } from '../src/models/registry.js';
import { markdownTable, measure, summarize, type Row } from './harness.js';
import {
  BENCH_MODELS,
  benchInput,
  benchModel,
  relativeDiff,
  TABLE8_MODELS,
  TABLE8_PAPER_MS,
  TABLE8_SIZES,
} from './models.js';
import { ortNode } from './peers/ort-node.js';
import { ortWeb } from './peers/ort-web.js';
import { ours } from './peers/ours.js';
import { tfjsWasm } from './peers/tfjs.js';
import type { Runner, RunnerFactory } from './peers/types.js';
import { CIFAR10_TRAIN_DIR, trainBench, type TorchFormat } from './train.js';

const USAGE = `npx tsx bench/run.ts [options]
  (default)         ${BENCH_MODELS.join(', ')}
                    at 224x224, batch 1 and 8, 1 and 2 threads (about 10 minutes on 2 cores), then
                    the training benchmark below (about 3 minutes)
  --quick           a smoke run: batch 1 only, short timing (about a minute, then a minute of training)
  --table8          instead, the paper's Table 8 study: ${TABLE8_MODELS.join(', ')}
                    at ${TABLE8_SIZES.map(([h, w]) => `${h}x${w}`).join(', ')}, batch 1, one thread
  --models A,B      --batches 1,8     --threads 1,2     override the grid
  --baseline NAME   the runner the ratios divide by (default ort-node)
  --budget-ms N     timed work per configuration before stopping (default 8000; --quick 600)
  --out FILE        also write the results as a markdown section to FILE
  --no-check        skip the comparison with the reference execute() (slow at large sizes)

Training (after the inference grid by default; not with --table8):
  --train           only the training benchmark: ShuffleNet v1 small-input stem, batch 128, 1 and 2 threads,
                    28x28x1 (Fashion-MNIST) and 32x32x3 (CIFAR-10), ours next to PyTorch (about 3 minutes
                    per model; with --quick about 1 minute)
  --no-train        the inference grid only
  --train-archs A,B      ShuffleNet v1 presets (default shufflenet_v1_g3_0.5x)
  --train-batch N        (default 128)      --train-budget-ms N   timed work per configuration
                         (default 30000; --quick 2000)      --threads also applies
  --python PATH          PyTorch's interpreter (default /usr/bin/python3; it uses the BLAS that Debian's
                         alternatives select, printed in the header; LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/blas
                         before the command gives it the reference BLAS instead)
  --torch-format F       nchw, channels_last or both (default: both, each timed; the ratio is against the
                         faster; in smoke runs here, channels_last at 1 thread)
  --cifar-dir DIR        CIFAR-10 training class folders (default ${CIFAR10_TRAIN_DIR})`;

/** Relative error (vs the logit scale) above which a runner is marked WRONG. */
const TOLERANCE = 1e-3;
const FACTORIES: RunnerFactory[] = [ours, ortNode, ortWeb, tfjsWasm];
/**
 * Idle pause after each timed run with more than one thread, so the last runner's spinning pool has stopped.
 * ORT-node's workers spin ~25 ms after a call: with 30 ms here ORT-web at 2 threads measured 69 ms a run
 * (0.5x g=3, interleaved with ORT-node), with 50 ms 4.2 ms.
 */
const SETTLE_MS = 50;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    table8: { type: 'boolean', default: false },
    models: { type: 'string' },
    batches: { type: 'string' },
    threads: { type: 'string' },
    baseline: { type: 'string', default: 'ort-node' },
    'budget-ms': { type: 'string' },
    out: { type: 'string' },
    'no-check': { type: 'boolean', default: false },
    train: { type: 'boolean', default: false },
    'no-train': { type: 'boolean', default: false },
    'train-archs': { type: 'string' },
    'train-batch': { type: 'string' },
    'train-budget-ms': { type: 'string' },
    python: { type: 'string', default: '/usr/bin/python3' },
    'torch-format': { type: 'string', default: 'both' },
    'cifar-dir': { type: 'string', default: CIFAR10_TRAIN_DIR },
    'train-json': { type: 'string' }, // internal: the training child writes its markdown here
    help: { type: 'boolean', short: 'h', default: false },
    json: { type: 'string' }, // internal: a child process writes its results here
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const list = (s: string | undefined, d: readonly string[]) => (s ? s.split(',').filter(Boolean) : [...d]);
const numbers = (s: string | undefined, d: readonly number[]) => (s ? s.split(',').map(Number) : [...d]);
const models = list(args.models, args.table8 ? TABLE8_MODELS : BENCH_MODELS);
const sizes = args.table8 ? TABLE8_SIZES : [[224, 224] as const];
const batches = numbers(args.batches, args.table8 || args.quick ? [1] : [1, 8]);
const threadCounts = numbers(args.threads, args.table8 ? [1] : [1, 2]);
const budgetMs = Number(args['budget-ms'] ?? (args.quick ? 600 : 8000));
const timing = args.quick
  ? { warmup: 1, iterations: 50, minIterations: 3, budgetMs }
  : { warmup: 3, iterations: 500, minIterations: 5, budgetMs };

interface Results {
  rows: Row[];
  /** runner name -> reason -> configurations it was skipped in. */
  skipped: Record<string, Record<string, string[]>>;
  backends: string[];
}

const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/** Every configuration at one thread count: create, check, measure, close. */
async function runAll(threads: number): Promise<Results> {
  const results: Results = { rows: [], skipped: {}, backends: [] };
  for (const name of models) {
    const m = benchModel(name);
    for (const [height, width] of sizes) {
      const maxBatch = Math.max(...batches);
      const input = benchInput(m.graph, maxBatch, height, width);
      let reference: Float32Array | undefined;
      if (!args['no-check']) {
        const t0 = performance.now();
        reference = execute(m.graph, m.weights, input).data;
        console.log(
          `${name} ${height}x${width}: reference execute() at batch ${maxBatch}: ${fmt(performance.now() - t0)} ms`,
        );
      }
      for (const batch of batches) {
        const config = `${name} ${height}x${width} batch ${batch} threads ${threads}`;
        const perImage = input.size / maxBatch;
        const o = {
          graph: m.graph,
          weights: m.weights,
          batch,
          threads,
          height,
          width,
          input: input.data.subarray(0, batch * perImage),
        };
        const skip = (f: { name: string }, e: unknown) => {
          const reason = (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
          console.log(`  skip ${f.name}: ${reason}`);
          ((results.skipped[f.name] ??= {})[reason] ??= []).push(config);
        };
        let runners: Runner[] = [];
        for (const f of FACTORIES) {
          try {
            runners.push(await f.create(o));
          } catch (e) {
            skip(f, e);
          }
        }
        const ref = reference?.subarray(0, (reference.length / maxBatch) * batch);
        const errors = new Map<Runner, number | undefined>();
        for (const r of runners) {
          try {
            errors.set(r, ref && relativeDiff(await r.output(), ref));
          } catch (e) {
            skip(r, e);
            await r.close?.();
          }
        }
        runners = runners.filter((r) => errors.has(r));
        const cells = [name, `${height}x${width}`, String(batch), String(threads)];
        const stats = await measure(runners, { ...timing, settleMs: threads > 1 ? SETTLE_MS : 0 });
        console.log(`${config}: ${stats[0]?.times.length ?? 0} interleaved rounds`);
        stats.forEach((s, i) => {
          const r = runners[i]!;
          const err = errors.get(r);
          const check = err === undefined ? '' : `  rel. error ${err.toExponential(1)}`;
          console.log(
            `  ${r.name.padEnd(10)} median ${fmt(s.median).padStart(7)} ms  min-max ${fmt(s.min)}-${fmt(s.max)}  ` +
              `${s.imagesPerSecond.toFixed(1)} img/s${check}${err !== undefined && !(err <= TOLERANCE) ? '  WRONG' : ''}`,
          );
          results.rows.push({ cells, stats: s, error: err });
          if (!results.backends.includes(r.backend)) results.backends.push(r.backend);
        });
        for (const r of runners) await r.close?.();
      }
    }
  }
  return results;
}

/**
 * ORT-web fixes its wasm thread pool at its first session and TF.js its backend at init, so each thread
 * count runs in a child process of its own (same flags, one --threads) and the parent merges the results.
 */
function runChildren(): Results {
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-'));
  const merged: Results = { rows: [], skipped: {}, backends: [] };
  try {
    for (const t of threadCounts) {
      const file = join(dir, `threads-${t}.json`);
      const forward = process.argv.slice(2).filter((a, i, all) => {
        const flag = (s: string) => a === s || a.startsWith(`${s}=`) || all[i - 1] === s;
        return !flag('--threads') && !flag('--out') && !flag('--json');
      });
      const child = spawnSync(
        process.execPath,
        [...process.execArgv, process.argv[1]!, ...forward, '--threads', String(t), '--json', file],
        { stdio: 'inherit' },
      );
      if (child.status !== 0) throw new Error(`the ${t}-thread run failed (exit ${child.status})`);
      const r = JSON.parse(readFileSync(file, 'utf8')) as Results;
      merged.rows.push(
        ...r.rows.map((row) => ({ ...row, stats: summarize(row.stats.runner, row.stats.times) })),
      );
      for (const [name, reasons] of Object.entries(r.skipped))
        for (const [reason, configs] of Object.entries(reasons))
          ((merged.skipped[name] ??= {})[reason] ??= []).push(...configs);
      for (const b of r.backends) if (!merged.backends.includes(b)) merged.backends.push(b);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return merged;
}

/** Table 8 as the paper shows it: ms per model and size, each runner's median next to the paper's phone. */
function table8(rows: Row[]): string {
  const runners = [...new Set(rows.map((r) => r.stats.runner.name))];
  const median = (model: string, size: string, runner: string) =>
    rows.find((r) => r.cells[0] === model && r.cells[1] === size && r.stats.runner.name === runner)?.stats
      .median;
  const head = ['model', 'input', 'MFLOPs', 'paper (Snapdragon 820)', ...runners];
  const lines = [head, head.map(() => '---')];
  const ratio = (a?: number, b?: number) => (a && b ? `${(a / b).toFixed(1)}x` : '');
  for (const [si, [h, w]] of TABLE8_SIZES.entries()) {
    const size = `${h}x${w}`;
    for (const model of models) {
      const mflops = complexity(buildPreset(model), h, w).macs / 1e6;
      const paper = TABLE8_PAPER_MS[model]?.[si];
      lines.push([
        model,
        size,
        mflops.toFixed(0),
        paper === undefined ? '' : fmt(paper),
        ...runners.map((r) => {
          const v = median(model, size, r);
          return v === undefined ? '' : fmt(v);
        }),
      ]);
    }
    const [a, s] = ['alexnet', 'shufflenet_v1_g3_0.5x'];
    lines.push([
      '**AlexNet / ShuffleNet 0.5x**',
      size,
      '',
      ratio(TABLE8_PAPER_MS[a]?.[si], TABLE8_PAPER_MS[s]?.[si]),
      ...runners.map((r) => ratio(median(a, size, r), median(s, size, r))),
    ]);
  }
  return lines.map((l) => `| ${l.join(' | ')} |`).join('\n');
}

function section(results: Results, loadStart: number): string {
  const cpu = os.cpus();
  const command = `npx tsx bench/run.ts ${process.argv.slice(2).join(' ')}`.trim();
  const head = ['model', 'input', 'batch', 'threads'];
  const table = markdownTable(head, results.rows, { baseline: args.baseline, tolerance: TOLERANCE });
  const skipped = Object.entries(results.skipped).flatMap(([name, reasons]) =>
    Object.entries(reasons).map(([reason, configs]) => `- ${name} (${configs.length}x): ${reason}`),
  );
  return [
    args.table8 ? '## Table 8 speed study, side by side' : '## Inference speed, side by side',
    '',
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`,
    `- Load average (1 min) at start / end: ${loadStart.toFixed(2)} / ${os.loadavg()[0]!.toFixed(2)}; ` +
      'other work on the machine slows every runner (interleaving spreads it evenly, it does not remove it)',
    `- Command: \`${command}\``,
    `- Runners: ${results.backends.join('; ')}`,
    '- Same graph, weights (createModel seed 0, BN statistics calibrated, BN folded by each engine) and input ' +
      '(uniform [-1, 1), seed 2024) for all; each output checked against the reference execute() ' +
      `(max abs difference / max abs logit; WRONG above ${TOLERANCE}).`,
    `- Timing: ${timing.warmup} warm-up run(s) each, then rounds that run every runner once, in an order ` +
      `rotated each round, for ${timing.budgetMs} ms (at least ${timing.minIterations} rounds); one run = ` +
      'input tensor in, inference, logits read back, timed with performance.now(). With 2 threads an idle ' +
      `${SETTLE_MS} ms follows each run, so that the last engine's spinning thread pool does not steal a core ` +
      'from the next.',
    ...(skipped.length ? ['- Skipped:', ...skipped.map((s) => `  ${s}`)] : []),
    '',
    ...(args.table8 ? [table8(results.rows), ''] : []),
    table,
    '',
  ].join('\n');
}

function torchFormats(f: string): TorchFormat[] {
  if (f === 'both') return ['nchw', 'channels_last'];
  if (f === 'nchw' || f === 'channels_last') return [f];
  console.error(`--torch-format: '${f}' is not nchw, channels_last or both`);
  process.exit(2);
}

/** The training benchmark in this process (--train). */
const trainSection = () =>
  trainBench({
    archs: list(args['train-archs'], ['shufflenet_v1_g3_0.5x']),
    threads: numbers(args.threads, [1, 2]),
    batch: Number(args['train-batch'] ?? 128),
    budgetMs: Number(args['train-budget-ms'] ?? (args.quick ? 2000 : 30000)),
    minRounds: args.quick ? 2 : 5,
    warmup: args.quick ? 1 : 2,
    python: args.python,
    torchFormats: torchFormats(args['torch-format']),
    cifarDir: args['cifar-dir'],
  });

/** The training benchmark in a child process (no ORT-web or TF.js threads beside it): its markdown. */
function trainChild(): string {
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-train-'));
  try {
    const file = join(dir, 'train.json');
    const forward = process.argv.slice(2).filter((a, i, all) => {
      const flag = (s: string) => a === s || a.startsWith(`${s}=`) || all[i - 1] === s;
      return !flag('--out') && !flag('--json') && !flag('--train-json');
    });
    const child = spawnSync(
      process.execPath,
      [...process.execArgv, process.argv[1]!, ...forward, '--train-json', file],
      { stdio: 'inherit' },
    );
    if (child.status !== 0) throw new Error(`the training benchmark failed (exit ${child.status})`);
    return (JSON.parse(readFileSync(file, 'utf8')) as { markdown: string }).markdown;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const loadStart = os.loadavg()[0]!;
if (args['train-json'] !== undefined) {
  writeFileSync(args['train-json'], JSON.stringify({ markdown: await trainSection() }));
} else if (args.json !== undefined) {
  writeFileSync(args.json, JSON.stringify(await runAll(threadCounts[0]!)));
} else {
  let md = '';
  if (!args.train) {
    const results = threadCounts.length > 1 ? runChildren() : await runAll(threadCounts[0]!);
    md = section(results, loadStart);
    console.log(`\n${md}`);
  }
  if (args.train || !(args.table8 || args['no-train'])) {
    const train = args.train ? await trainSection() : trainChild();
    console.log(`\n${train}`);
    md += (md ? '\n' : '') + train;
  }
  if (args.out) {
    writeFileSync(args.out, md);
    console.log(`written to ${args.out}`);
  }
}
// ORT-web's pthread workers would keep the process alive.
process.exit(0);
