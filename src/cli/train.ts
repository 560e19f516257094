/** `shufflenet train` (`shufflenet eval`: eval.ts). */
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { parseTiles, webgpuTraining } from '../backends/webgpu/train-plan.js';
import { makeBatch, Rng, streamSeed, type AugmentOptions } from '../data/augment.js';
import { sampleSet, type ImageSet } from '../data/datasets.js';
import { ConfigError } from '../errors.js';
import { exportSafetensors } from '../io/checkpoint.js';
import { buildPreset, hasSmallInputStem, presetFamily, type ModelOptions } from '../models/registry.js';
import { initWeights } from '../nn/init.js';
import { hasTestSplit, loadDataset, type FolderOptions, type LoadedDataset } from '../node/datasets.js';
import { createNodeEngine } from '../node/engine.js';
import { writeFileAtomic } from '../node/files.js';
import { shufflenetHome } from '../node/weights.js';
import { adamw, lrSchedule, sgd, type ScheduleKind } from '../train/optim.js';
import { smooth, thin, trainingCurveSvg, type CurvePoint } from '../train/plot.js';
import {
  evaluateAsync,
  MODEL_FILE,
  readState,
  recalibrateBatchNorm,
  engineTraining,
  referenceTraining,
  train,
  type CheckpointStore,
} from '../train/trainer.js';
import { integer, positiveInt } from './args.js';
import { openWebGpu, planInfer, wasmInfer } from './backend.js';

/** A folder as a CheckpointStore; every write is atomic (temporary file + rename). */
export function dirStore(dir: string): CheckpointStore {
  return {
    read: (name) => (existsSync(join(dir, name)) ? new Uint8Array(readFileSync(join(dir, name))) : undefined),
    write: (name, data) => writeFileAtomic(join(dir, name), data),
    remove: (name) => rmSync(join(dir, name), { force: true }),
  };
}

const number =
  (name: string, min: number, max = Infinity) =>
  (text: string): number => {
    const v = Number(text);
    if (text.trim() === '' || !(v >= min && v <= max) || !Number.isFinite(v))
      throw new ConfigError(
        `${name} '${text}': expected a number ${max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`}`,
      );
    return v;
  };

/** Model options from the data: channels, classes, and the small-input stem for images up to 64 pixels. */
export function modelOptionsFor(arch: string, set: ImageSet): ModelOptions {
  const o: ModelOptions = {
    inputChannels: set.channels,
    numClasses: set.classes.length,
    inputSize: [set.height, set.width],
  };
  const family = presetFamily(arch);
  if (hasSmallInputStem(family) && Math.max(set.height, set.width) <= 64) o.smallInput = true;
  return o;
}

/** The usual recipes: pad-and-crop plus flips for small images; the authors' crop, flip and jitter for large ones. */
export function defaultAugment(data: LoadedDataset): AugmentOptions {
  const { height: h, width: w } = data.set;
  if (Math.max(h, w) <= 64)
    return { randomCrop: { padding: Math.max(2, Math.floor(Math.min(h, w) / 8)) }, flip: true };
  return {
    randomResizedCrop: { scale: [0.25, 1] },
    flip: true,
    colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 },
  };
}

interface TrainFlags {
  dataset: string;
  arch: string;
  out: string;
  epochs: number;
  batchSize: number;
  lr?: number;
  schedule: ScheduleKind;
  warmup?: number;
  weightDecay?: number;
  labelSmoothing: number;
  momentum: number;
  nesterov?: boolean;
  optimizer: 'sgd' | 'adamw';
  seed: number;
  limit?: number;
  testLimit?: number;
  augment: boolean;
  cutout: number;
  bnRecalibrate: number;
  checkpointEvery?: number;
  evalEvery: number;
  gpuTiles?: ReturnType<typeof parseTiles>;
  cacheDir?: string;
  cache: boolean;
  resume?: boolean;
  threads: number;
  backend: 'wasm' | 'webgpu' | 'auto' | 'reference';
  shuffle?: boolean;
  shuffleOrder?: 'authors' | 'paper';
  shufflePosition?: 'after-dw' | 'before-dw';
  timeBudget?: number;
}

/** The options that define a run (saved in state.json; --resume takes them from there). */
const RUN_OPTIONS = [
  'dataset',
  'arch',
  'epochs',
  'batchSize',
  'lr',
  'schedule',
  'warmup',
  'weightDecay',
  'labelSmoothing',
  'momentum',
  'nesterov',
  'optimizer',
  'seed',
  'limit',
  'augment',
  'cutout',
  'shuffle',
  'shuffleOrder',
  'shufflePosition',
  'timeBudget',
] as const;

const fmtTime = (s: number) =>
  !Number.isFinite(s)
    ? '?'
    : s < 90
      ? `${Math.round(s)}s`
      : s < 5400
        ? `${Math.round(s / 60)}m`
        : `${(s / 3600).toFixed(1)}h`;

/** How image folders are decoded: cached under --cache-dir unless --no-cache. */
export function folderOptions(o: { cache: boolean; cacheDir?: string }): FolderOptions {
  return {
    cache: o.cache ? { dir: o.cacheDir ?? join(shufflenetHome(), 'datasets') } : false,
    log: (m) => console.error(m),
  };
}

/** Metrics log lines after `step` are dropped: a resumed run writes them again. */
function trimLog(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => {
      try {
        return (JSON.parse(l) as { step: number }).step <= step;
      } catch {
        return false; // an empty or torn last line
      }
    });
  writeFileAtomic(path, kept.map((l) => `${l}\n`).join(''));
}

/** The run's training.svg from its metrics.jsonl. */
export function writePlot(out: string, title: string): void {
  const path = join(out, 'metrics.jsonl');
  if (!existsSync(path)) return;
  const loss: CurvePoint[] = [];
  const accuracy: CurvePoint[] = [];
  const testAccuracy: CurvePoint[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line) as {
      type: string;
      step: number;
      loss: number;
      accuracy: number;
      top1: number;
    };
    if (r.type === 'step') {
      loss.push({ step: r.step, value: r.loss });
      accuracy.push({ step: r.step, value: r.accuracy });
    } else if (r.type === 'eval') testAccuracy.push({ step: r.step, value: r.top1 });
  }
  const window = Math.max(1, Math.round(loss.length / 50));
  writeFileAtomic(
    join(out, 'training.svg'),
    trainingCurveSvg({
      loss: thin(smooth(loss, window)),
      accuracy: thin(smooth(accuracy, window)),
      testAccuracy,
      title,
    }),
  );
}

async function runTrain(o: TrainFlags, cmd: Command): Promise<void> {
  const store = dirStore(o.out);
  const saved = existsSync(join(o.out, 'state.json')) ? readState(store) : undefined;
  if (saved && !o.resume)
    throw new ConfigError(
      `${o.out} already holds a run (state.json); pass --resume to continue it, or another --out`,
    );
  if (o.resume && saved) {
    const prev = saved.options as Partial<TrainFlags>;
    const ignored = RUN_OPTIONS.filter(
      (k) => cmd.getOptionValueSource(k) === 'cli' && JSON.stringify(o[k]) !== JSON.stringify(prev[k]),
    );
    if (ignored.length)
      console.error(`--resume keeps the run's own options; ignoring --${ignored.join(', --')}`);
    Object.assign(o, Object.fromEntries(RUN_OPTIONS.map((k) => [k, prev[k]])));
    console.error(`resuming ${o.out} at step ${saved.step} of ${saved.totalSteps}`);
  } else if (o.resume) console.error(`nothing to resume in ${o.out}; starting a new run`);

  const folder = folderOptions(o);
  const data = loadDataset(o.dataset, 'train', folder);
  const trainSet = o.limit ? sampleSet(data.set, o.limit, streamSeed(o.seed, 4)) : data.set;
  const testData = loadTestSet(o.dataset, folder, data);
  const testSet =
    testData && o.testLimit ? sampleSet(testData, o.testLimit, streamSeed(o.seed, 5)) : testData;
  // The ablations' switches (Table 3: shuffle on/off; the shuffle's order and place). A run from before
  // these flags has none saved: the defaults.
  const options: ModelOptions = {
    ...modelOptionsFor(o.arch, trainSet),
    ...(o.shuffle === false ? { shuffle: false } : {}),
    ...(o.shuffleOrder ? { shuffleOrder: o.shuffleOrder } : {}),
    ...(o.shufflePosition ? { shufflePosition: o.shufflePosition } : {}),
  };
  const graph = buildPreset(o.arch, options);
  const weights = initWeights(graph, o.seed);
  const stepsPerEpoch = Math.max(1, Math.floor(trainSet.count / o.batchSize));
  const totalSteps = o.epochs * stepsPerEpoch;
  const lr = o.lr ?? (o.optimizer === 'sgd' ? 0.05 : 0.002);
  // The authors' init with BN takes huge first steps at full lr: warm up unless told otherwise.
  const warmup = o.warmup ?? Math.min(200, Math.floor(totalSteps / 10));
  const optimizer =
    o.optimizer === 'sgd'
      ? sgd({ momentum: o.momentum, nesterov: !!o.nesterov, weightDecay: o.weightDecay ?? 4e-5 })
      : adamw({ weightDecay: o.weightDecay ?? 0.05 });
  const augment = o.augment
    ? { ...defaultAugment(data), ...(o.cutout ? { cutout: { size: o.cutout } } : {}) }
    : undefined;
  const preprocessing = {
    channels: trainSet.channels,
    size: [trainSet.height, trainSet.width],
    order: 'RGB',
    scale: 1 / 255,
    mean: data.normalize.mean,
    std: data.normalize.std,
  };
  const metadata = {
    model_options: JSON.stringify(options),
    classes: JSON.stringify(trainSet.classes),
    ...(data.kind === 'fashion-mnist' ? { labels: 'fashion-mnist' } : {}),
    preprocessing: JSON.stringify(preprocessing),
    augmentation: JSON.stringify(augment ?? {}),
    dataset: o.dataset,
  };
  const log = join(o.out, 'metrics.jsonl');
  mkdirSync(o.out, { recursive: true });
  if (saved && o.resume) trimLog(log, saved.step);
  else rmSync(log, { force: true });
  const title = `${o.arch} on ${o.dataset}, ${o.optimizer} lr ${lr} ${o.schedule}, batch ${o.batchSize}`;
  console.error(
    `${title}: ${trainSet.count} training images (${trainSet.width}x${trainSet.height}x${trainSet.channels}), ` +
      `${testSet ? `${testSet.count} test images, ` : ''}${totalSteps} steps`,
  );

  // The steps run synchronously, so the handler runs between steps: the step in flight and any checkpoint
  // write finish first, and the loop then ends with a checkpoint of its own (the previous one stays until then).
  let stop = false;
  const onSigint = () => {
    if (!stop) process.stderr.write('\nstopping after this step (and a checkpoint)\n');
    stop = true;
  };
  process.on('SIGINT', onSigint);
  // auto: WebGPU when there is an adapter, else WASM (openWebGpu says which on stderr).
  const gpu = await openWebGpu(o.backend);
  const wasm = o.backend === 'wasm' || (o.backend === 'auto' && !gpu);
  const engine = wasm ? await createNodeEngine({ threads: o.threads }) : undefined;
  const backend = gpu
    ? webgpuTraining(gpu, { tiles: o.gpuTiles })
    : engine
      ? engineTraining(engine)
      : referenceTraining;
  const compiler = gpu ?? engine;
  const infer = compiler ? planInfer(compiler) : await wasmInfer(1);
  console.error(`backend: ${backend.name}`);
  const tty = process.stderr.isTTY;
  const began = performance.now();
  let firstStep: number | undefined;
  try {
    const result = await train({
      graph,
      weights,
      train: trainSet,
      test: testSet,
      normalize: data.normalize,
      augment,
      batchSize: o.batchSize,
      epochs: o.epochs,
      optimizer,
      schedule: lrSchedule({ kind: o.schedule, lr, totalSteps, warmupSteps: warmup }),
      // From the process's start (performance.now()'s origin): loading the data counts too.
      ...(o.timeBudget
        ? {
            timeBudget: {
              deadline: o.timeBudget,
              reschedule: (n: number) =>
                lrSchedule({ kind: o.schedule, lr, totalSteps: n, warmupSteps: Math.min(warmup, n - 1) }),
              // The second epoch's pace: the first compiles the plans (warmup covers it at batch 256 on CIFAR-10).
              fitAfterEpochs: o.epochs >= 6 ? 2 : 1,
            },
          }
        : {}),
      onFit(f) {
        console.error(
          `time budget ${o.timeBudget} s: ${f.epochs} epochs (of at most ${o.epochs}) at ${f.secondsPerEpoch.toFixed(1)} s ` +
            `an epoch, ${f.secondsLeft.toFixed(0)} s left`,
        );
        appendFileSync(log, JSON.stringify({ type: 'fit', ...f }) + '\n');
      },
      labelSmoothing: o.labelSmoothing,
      seed: o.seed,
      store,
      checkpointEvery: o.checkpointEvery,
      evalEvery: o.evalEvery,
      resume: !!o.resume,
      metadata,
      options: Object.fromEntries(RUN_OPTIONS.map((k) => [k, o[k]])),
      backend,
      // Evaluations run where training does (the reference trainer's on one WASM thread).
      infer,
      stopRequested: () => stop,
      onStep(m) {
        firstStep ??= m.step - 1;
        appendFileSync(log, JSON.stringify({ type: 'step', ...m }) + '\n');
        const elapsed = (performance.now() - began) / 1000;
        const eta = (elapsed / (m.step - firstStep)) * (m.totalSteps - m.step);
        const line =
          `step ${m.step}/${m.totalSteps} epoch ${m.epoch + 1}/${m.totalSteps / stepsPerEpoch}  loss ${m.loss.toFixed(4)}  ` +
          `acc ${(m.accuracy * 100).toFixed(1)}%  ${m.imagesPerSecond.toFixed(1)} img/s  lr ${m.lr.toPrecision(3)}  ETA ${fmtTime(eta)}`;
        if (tty) process.stderr.write(`\r${line}\x1b[K`);
        else if (m.step % Math.max(1, Math.round(m.totalSteps / 50)) === 0 || m.step === m.totalSteps)
          console.error(line);
      },
      onEval(r, at) {
        appendFileSync(log, JSON.stringify({ type: 'eval', step: at.step, epoch: at.epoch, ...r }) + '\n');
        if (tty) process.stderr.write('\n');
        console.error(
          `epoch ${at.epoch + 1}: test top-1 ${(r.top1 * 100).toFixed(2)}%  top-5 ${(r.top5 * 100).toFixed(2)}%  loss ${r.loss.toFixed(4)}`,
        );
      },
      onCheckpoint: () => writePlot(o.out, title),
    });
    if (tty) process.stderr.write('\n');
    if (result.stopped) {
      console.error(`stopped at step ${result.step}; the checkpoint in ${o.out} continues with --resume`);
      return;
    }
    if (o.bnRecalibrate > 0) {
      // The authors' lr-0 pass: training batches (augmented as in training) from a stream of their own.
      const rng = new Rng(streamSeed(o.seed, 3));
      const batches = (function* () {
        for (let i = 0; i < o.bnRecalibrate; i++) {
          const idx = Int32Array.from({ length: Math.min(o.batchSize, trainSet.count) }, () =>
            rng.int(0, trainSet.count),
          );
          yield makeBatch(trainSet, idx, data.normalize, augment ? { options: augment, rng } : undefined)
            .input;
        }
      })();
      recalibrateBatchNorm(graph, weights, batches);
      writeFileAtomic(
        join(o.out, MODEL_FILE),
        exportSafetensors(graph, weights, { ...metadata, bn_recalibrated: String(o.bnRecalibrate) }),
      );
      console.error(`re-estimated the BN statistics on ${o.bnRecalibrate} batches`);
      if (testSet) {
        const r = await evaluateAsync(graph, weights, testSet, data.normalize, { infer });
        console.error(
          `after recalibration: test top-1 ${(r.top1 * 100).toFixed(2)}%  top-5 ${(r.top5 * 100).toFixed(2)}%`,
        );
      }
    }
    console.error(`wrote ${join(o.out, MODEL_FILE)}`);
  } finally {
    process.off('SIGINT', onSigint);
    gpu?.destroy();
    writePlot(o.out, title);
  }
}

/** The test split, where the dataset has one (a folder without train/ and test/ has none). */
function loadTestSet(spec: string, folder: FolderOptions, train: LoadedDataset): ImageSet | undefined {
  if (!hasTestSplit(spec)) return undefined;
  const test = loadDataset(spec, 'test', folder).set;
  if (
    test.height !== train.set.height ||
    test.width !== train.set.width ||
    test.channels !== train.set.channels
  ) {
    throw new ConfigError(`the test images (${test.width}x${test.height}) differ from the training images`);
  }
  return test;
}

export const datasetHelp =
  'fashion-mnist[:DIR], cifar10:DIR (binary batches, train/test class folders, or train/test.imgpack from ' +
  'tools/pack-images.ts), folder:DIR';

/** `shufflenet train`. */
export function addTrainCommands(program: Command): Command {
  program
    .command('train')
    .description('train a model on Fashion-MNIST, CIFAR-10 or a folder of class folders')
    .requiredOption('--dataset <spec>', datasetHelp)
    .requiredOption(
      '--arch <name>',
      'model preset (see `shufflenet models`); channels, classes and stem follow the data',
    )
    .requiredOption('--out <dir>', 'run folder: checkpoints, metrics.jsonl, training.svg, model.safetensors')
    .option('--epochs <n>', 'epochs', positiveInt('--epochs'), 10)
    .option('--batch-size <n>', 'images per step', positiveInt('--batch-size'), 64)
    .option('--lr <x>', 'peak learning rate (default: 0.05 for sgd, 0.002 for adamw)', number('--lr', 0))
    .addOption(
      new Option('--schedule <kind>', 'learning-rate schedule (linear: the paper)')
        .choices(['linear', 'cosine', 'step', 'constant'])
        .default('linear'),
    )
    .option(
      '--warmup <steps>',
      'linear warmup steps in front of the schedule (default: a tenth of the steps, at most 200)',
      integer('--warmup', 0),
    )
    .option(
      '--weight-decay <x>',
      'on weights, not BN or biases (default: 4e-5 sgd as in the paper, 0.05 adamw)',
      number('--weight-decay', 0),
    )
    .option(
      '--label-smoothing <x>',
      'label smoothing (the authors: 0.1)',
      number('--label-smoothing', 0, 1),
      0.1,
    )
    .option('--momentum <x>', 'SGD momentum', number('--momentum', 0, 1), 0.9)
    .option('--nesterov', 'SGD with Nesterov momentum')
    .addOption(new Option('--optimizer <name>', 'optimizer').choices(['sgd', 'adamw']).default('sgd'))
    .option(
      '--seed <n>',
      'seed of the weights, the batch order and the augmentation',
      integer('--seed', 0),
      0,
    )
    .option(
      '--limit <n>',
      'use only N training images (a random subset, from --seed)',
      positiveInt('--limit'),
    )
    .option(
      '--test-limit <n>',
      'evaluate on only N test images (a random subset)',
      positiveInt('--test-limit'),
    )
    .option('--no-shuffle', 'ShuffleNet: remove the channel shuffle (the ablation of Table 3)')
    .addOption(
      new Option(
        '--shuffle-order <order>',
        "ShuffleNet: the shuffle's permutation (default: authors)",
      ).choices(['authors', 'paper']),
    )
    .addOption(
      new Option(
        '--shuffle-position <pos>',
        'ShuffleNet: the shuffle after the depthwise conv + BN (the authors) or before it (the paper)',
      ).choices(['after-dw', 'before-dw']),
    )
    .option('--no-augment', 'no data augmentation')
    .option(
      '--cutout <n>',
      'also cut out an N x N square of each training image (set to the mean colour; CIFAR: 16)',
      integer('--cutout', 0),
      0,
    )
    .option(
      '--bn-recalibrate <n>',
      'after training, re-estimate BN statistics on N batches (the authors)',
      integer('--bn-recalibrate', 0),
      0,
    )
    .option(
      '--time-budget <seconds>',
      'fit the run into this wall time (from the start, data loading included): after an epoch or two, ' +
        '--epochs is cut to what fits at their pace, and the schedule ends with them',
      number('--time-budget', 1),
    )
    .option(
      '--eval-every <epochs>',
      'evaluate on the test set every N epochs, after the last, and after the one --time-budget fits at',
      positiveInt('--eval-every'),
      1,
    )
    .option(
      '--gpu-tiles <tiles>',
      "WebGPU: the 1x1 convs' GEMM tile and weight-gradient tile, TMxTNxTK[/TRxTCxTQ], each or fit (per " +
        'conv, the least padding; a trailing v: the vec4 variant; default 32x64x16/32x32x32; ' +
        'bench/tune-webgpu.ts times them)',
      (text: string) => {
        try {
          return parseTiles(text);
        } catch (e) {
          throw new ConfigError(`--gpu-tiles: ${(e as Error).message}`);
        }
      },
    )
    .option(
      '--checkpoint-every <n>',
      'also checkpoint every N steps (default: each epoch)',
      positiveInt('--checkpoint-every'),
    )
    .option(
      '--cache-dir <dir>',
      'where decoded image folders are cached (default: $SHUFFLENET_HOME/datasets)',
    )
    .option('--no-cache', 'do not cache decoded image folders')
    .option('--resume', "continue the run in --out from its last checkpoint (with the run's own options)")
    .option(
      '--threads <n>',
      'worker threads for the WASM kernels (results are the same for any number)',
      positiveInt('--threads'),
      Math.min(4, availableParallelism()),
    )
    .addOption(
      new Option(
        '--backend <kind>',
        'kernels: WASM SIMD plans, WebGPU, auto (WebGPU when there is an adapter, else WASM), or the plain TypeScript reference',
      )
        .choices(['wasm', 'webgpu', 'auto', 'reference'])
        .default('wasm'),
    )
    .action((o: TrainFlags, cmd: Command) => runTrain(o, cmd));

  return program;
}
