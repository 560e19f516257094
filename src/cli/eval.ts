/** `shufflenet eval`: top-1, top-5, loss and the confusion matrix on a test set, on WASM or WebGPU. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { streamSeed, type Normalize } from '../data/augment.js';
import { sampleSet } from '../data/datasets.js';
import { ConfigError } from '../errors.js';
import { readCheckpoint } from '../io/checkpoint.js';
import { modelFromCheckpoint } from '../models/load.js';
import { hasTestSplit, loadDataset } from '../node/datasets.js';
import { defaultModelPath } from '../node/weights.js';
import { evaluateAsync, type EvalResult } from '../train/trainer.js';
import { positiveInt } from './args.js';
import type { Precision } from '../backends/webgpu/kernels.js';
import {
  backendOption,
  checkPrecision,
  openWebGpu,
  planInfer,
  precisionOption,
  wasmInfer,
  type BackendChoice,
} from './backend.js';
import { datasetHelp, folderOptions, modelOptionsFor } from './train.js';

export function printEval(r: EvalResult, classes: readonly string[]): void {
  console.log(
    `top-1 ${(r.top1 * 100).toFixed(2)}%  top-5 ${(r.top5 * 100).toFixed(2)}%  loss ${r.loss.toFixed(4)}  (${r.count} images)`,
  );
  const width = Math.max(5, ...r.confusion.flat().map((v) => String(v).length + 1));
  const nameW = Math.max(...classes.map((c) => c.length));
  console.log(`\nconfusion matrix (rows: true class, columns: predicted)`);
  console.log(`${''.padEnd(nameW)} ${classes.map((_, i) => String(i).padStart(width)).join('')}`);
  r.confusion.forEach((row, i) =>
    console.log(`${classes[i]!.padEnd(nameW)} ${row.map((v) => String(v).padStart(width)).join('')}`),
  );
}

interface EvalFlags {
  dataset: string;
  weights?: string;
  arch?: string;
  json?: boolean;
  limit?: number;
  batchSize: number;
  cacheDir?: string;
  cache: boolean;
  backend: BackendChoice;
  precision: Precision;
}

async function runEval(o: EvalFlags): Promise<void> {
  // A folder without a test split of its own is evaluated whole.
  const data = loadDataset(o.dataset, hasTestSplit(o.dataset) ? 'test' : 'train', folderOptions(o));
  const set = o.limit ? sampleSet(data.set, o.limit, streamSeed(0, 5)) : data.set;
  const file = o.weights ?? defaultModelPath();
  const ckpt = readCheckpoint(new Uint8Array(readFileSync(file)), file);
  const meta = ckpt.metadata;
  const arch = o.arch ?? meta.arch;
  if (!arch) throw new ConfigError(`${file}: no arch in its metadata; pass --arch NAME`);
  // Without recorded options (a checkpoint from elsewhere), the model's channels and classes follow the data.
  const { model } = modelFromCheckpoint(ckpt, file, {
    arch,
    options: meta.model_options ? undefined : modelOptionsFor(arch, set),
  });
  const { graph, weights } = model;
  // The training run's normalisation, when the file says it.
  const pre = meta.preprocessing ? (JSON.parse(meta.preprocessing) as Normalize) : data.normalize;
  const gpu = await openWebGpu(o.backend);
  let r: EvalResult;
  try {
    checkPrecision(o.precision, gpu);
    const infer = gpu ? planInfer(gpu, o.precision) : await wasmInfer(1);
    r = await evaluateAsync(graph, weights, set, pre, { infer, batchSize: o.batchSize });
  } finally {
    gpu?.destroy();
  }
  const classes = meta.classes ? (JSON.parse(meta.classes) as string[]) : set.classes;
  if (o.json) console.log(JSON.stringify({ ...r, classes }));
  else printEval(r, classes);
}

/** `shufflenet eval`. */
export function addEvalCommand(program: Command): Command {
  program
    .command('eval')
    .description(
      'top-1, top-5, loss and the confusion matrix of trained weights on a test set, on WASM or WebGPU',
    )
    .requiredOption('--dataset <spec>', datasetHelp)
    .option(
      '--weights <file>',
      'a .safetensors written by `shufflenet train` (or any checkpoint with --arch; default: the embedded Fashion-MNIST model)',
    )
    .option('--arch <name>', "model preset (default: the file's metadata)")
    .option('--batch-size <n>', 'images per forward pass', positiveInt('--batch-size'), 100)
    .option('--limit <n>', 'only N test images (a fixed random subset)', positiveInt('--limit'))
    .option('--cache-dir <dir>', 'where decoded image folders are cached')
    .option('--no-cache', 'do not cache decoded image folders')
    .option('--json', 'one JSON object: top1, top5, loss, count, confusion, classes')
    .addOption(backendOption())
    .addOption(precisionOption())
    .action((o: EvalFlags) => runEval(o));
  return program;
}
