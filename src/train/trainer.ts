/**
 * The training loop: batches -> forward (training mode, taped) -> softmax cross-entropy -> backward ->
 * optimizer step; evaluation; checkpoints that resume exactly; the authors' BN recalibration. Platform-
 * neutral: files go through a CheckpointStore, and the kernels through a TrainBackend, so that faster
 * forward/backward kernels (and a fast inference engine for evaluation) slot in without touching the loop.
 */
import { backward, forwardWithTape, type Tape } from '../autograd/tape.js';
import {
  permutation,
  makeBatch,
  Rng,
  streamSeed,
  type AugmentOptions,
  type Normalize,
} from '../data/augment.js';
import type { ImageSet } from '../data/datasets.js';
import { ConfigError } from '../errors.js';
import { execute } from '../graph/execute.js';
import { graphParams, type Graph } from '../graph/graph.js';
import { exportSafetensors, readCheckpoint, weightsFromStateDict } from '../io/checkpoint.js';
import { toFloat32, type RawTensor } from '../io/raw.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { Engine } from '../runtime/engine.js';
import type { TrainPlan } from '../runtime/train-plan.js';
import { Tensor } from '../tensor/tensor.js';
import { softmaxCrossEntropy } from './loss.js';
import type { Optimizer } from './optim.js';

/**
 * Gradients of a training step. The reference backend is the autograd tape over the reference kernels.
 * A backend may answer asynchronously (WebGPU reads its results back); the loop awaits either.
 */
export interface TrainBackend {
  readonly name: string;
  /** Training-mode forward (BN uses batch statistics and updates its running buffers in `weights`). */
  forward(
    graph: Graph,
    weights: ReadonlyMap<string, Tensor>,
    input: Tensor,
  ): TrainForward | Promise<TrainForward>;
  /** dL/d(parameter) for every learnable parameter, given dL/d(output). */
  backward(
    tape: unknown,
    gradOutput: Tensor,
  ): ReadonlyMap<string, Tensor> | Promise<ReadonlyMap<string, Tensor>>;
  /**
   * Optional: a whole step (forward, softmax cross-entropy, backward, the optimizer's update) on a device
   * that keeps the parameters between steps (WebGPU with SGD). Undefined when it cannot for this optimizer
   * or graph: the loop then runs forward, the loss, backward and the optimizer itself.
   */
  step?(
    graph: Graph,
    weights: ReadonlyMap<string, Tensor>,
    input: Tensor,
    labels: Int32Array,
    o: { lr: number; smoothing: number; optimizer: Optimizer },
  ): Promise<{ output: Tensor; loss: number; correct: number } | undefined>;
  /** Copies what step() keeps on the device into `weights` and the optimizer's state. */
  sync?(graph: Graph, weights: ReadonlyMap<string, Tensor>, optimizer: Optimizer): Promise<void>;
}

export interface TrainForward {
  output: Tensor;
  tape: unknown;
}

export const referenceTraining: TrainBackend = {
  name: 'reference',
  forward: (graph, weights, input) => forwardWithTape(graph, weights, input, { training: true }),
  backward: (tape, gradOutput) => backward(tape as Tape, gradOutput).params,
};

/** Training steps on an engine's WASM kernels (and threads): one compiled plan per graph and input shape. */
export function engineTraining(engine: Engine): TrainBackend {
  const plans = new WeakMap<Graph, Map<string, TrainPlan>>();
  return {
    name: `${engine.backend}${engine.threads > 1 ? ` x${engine.threads}` : ''}`,
    forward(graph, weights, input) {
      let byShape = plans.get(graph);
      if (!byShape) plans.set(graph, (byShape = new Map()));
      const key = input.shape.join('x');
      let plan = byShape.get(key);
      if (!plan) byShape.set(key, (plan = engine.compileTraining(graph, input.shape)));
      return { output: plan.forward(weights, input), tape: plan };
    },
    backward: (tape, gradOutput) => (tape as TrainPlan).backward(gradOutput),
  };
}

/**
 * Inference for evaluation: made once per evaluation for at most `batch` images at a time, so that an engine
 * can compile the weights into a plan and dispose of it afterwards.
 */
export type Infer = (
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  batch: number,
) => { run(input: Tensor): Tensor; dispose(): void };

export const referenceInfer: Infer = (graph, weights) => ({
  run: (x) => execute(graph, weights, x),
  dispose() {},
});

/** Named files of a run (a folder in Node); `write` must be atomic: readers see the old file or the new one. */
export interface CheckpointStore {
  read(name: string): Uint8Array | undefined;
  write(name: string, data: Uint8Array | string): void;
  remove(name: string): void;
}

/** A store in memory (tests, browsers). */
export function memoryStore(): CheckpointStore & { files: Map<string, Uint8Array> } {
  const files = new Map<string, Uint8Array>();
  return {
    files,
    read: (name) => files.get(name),
    write: (name, data) =>
      void files.set(name, typeof data === 'string' ? new TextEncoder().encode(data) : data.slice()),
    remove: (name) => void files.delete(name),
  };
}

export interface StepMetrics {
  /** Steps done (1 after the first). */
  step: number;
  totalSteps: number;
  /** 0-based epoch of this step. */
  epoch: number;
  loss: number;
  /** Top-1 accuracy on this (augmented) batch. */
  accuracy: number;
  lr: number;
  imagesPerSecond: number;
  seconds: number;
}

export interface EvalResult {
  count: number;
  top1: number;
  top5: number;
  /** Mean cross entropy (no label smoothing). */
  loss: number;
  /** confusion[true][predicted]: image counts. */
  confusion: number[][];
}

/** The loop's own state (state.json): the commit point of a checkpoint, written after the files it names. */
export interface LoopState {
  version: 1;
  step: number;
  epoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
  batchSize: number;
  weights: string;
  optimizer: string;
  optimizerKind: string;
  /** The batch order of epoch e and the augmentation of step s come from seeds derived from (seed, e) and (seed, s). */
  rng: { seed: number; shuffle: 'streamSeed(seed, 1, epoch)'; augment: 'streamSeed(seed, 2, step)' };
  /** Whatever the caller keeps with the run (the CLI: its options, for --resume). */
  options?: unknown;
  /** The run was cut to fit a time budget (TimeBudget): totalSteps is the fitted length, kept on resume. */
  fit?: FitResult;
}

/**
 * A wall-time budget for the whole run. At the end of the first epoch this process runs (its evaluation and
 * checkpoint included; or the second, fitAfterEpochs), the run is cut to the epochs that fit before `deadline` at that epoch's pace, and the
 * schedule is rebuilt for the new length: a run that must end by a deadline still finishes its schedule (one
 * cut off near its peak learning rate never anneals). With a warmup at least an epoch long, the steps before
 * the fit do not depend on the length. The fit is saved in state.json; a resumed run keeps it.
 */
export interface TimeBudget {
  /** Seconds on `clock` by which the last epoch must be done. */
  deadline: number;
  /** Seconds (default: performance.now() / 1000). */
  clock?: () => number;
  /** The schedule of a run of `totalSteps` steps. */
  reschedule: (totalSteps: number) => (step: number) => number;
  /**
   * Fit at the end of this epoch of the process (default 1). 2 measures a pace without the one-off work of the
   * first (plans compiled for training and evaluation); the warmup should then cover both.
   */
  fitAfterEpochs?: number;
}

export interface FitResult {
  /** Epochs of the fitted run (at most TrainConfig.epochs). */
  epochs: number;
  /** The pace it was fitted at: the median step times the steps of an epoch, plus the epoch's other work. */
  secondsPerEpoch: number;
  /** Seconds left before the deadline at the fit. */
  secondsLeft: number;
  /** The step it was made after. */
  step: number;
}

export const STATE_FILE = 'state.json';
/** The latest weights under a stable name (also written at the end of training). */
export const MODEL_FILE = 'model.safetensors';

export interface TrainConfig {
  graph: Graph;
  /** Parameters and buffers; updated in place. */
  weights: Map<string, Tensor>;
  train: ImageSet;
  test?: ImageSet;
  normalize: Normalize;
  augment?: AugmentOptions;
  batchSize: number;
  epochs: number;
  optimizer: Optimizer;
  /** Learning rate at each step, 0-based (see lrSchedule). */
  schedule: (step: number) => number;
  labelSmoothing?: number;
  seed?: number;
  /** Checkpoints at the end of each epoch, every `checkpointEvery` steps, and when stopped. */
  store?: CheckpointStore;
  checkpointEvery?: number;
  /** Continue from the store's last checkpoint (if it has one). */
  resume?: boolean;
  /** Stop (with a checkpoint) after this step, as if interrupted there. */
  stopAtStep?: number;
  /** Weights' safetensors metadata: arch, labels, preprocessing. */
  metadata?: Record<string, string>;
  /** Kept in state.json. */
  options?: unknown;
  /** Cut the epochs to fit a wall-time budget (see TimeBudget). */
  timeBudget?: TimeBudget;
  onFit?(fit: FitResult): void;
  backend?: TrainBackend;
  /** The inference the evaluations run on (it may be asynchronous: WebGPU); default: the reference. */
  infer?: AsyncInfer;
  /**
   * Evaluate on `test` after every `evalEvery` epochs (default 1), after the last one, and after the one a
   * time budget is fitted at (whose pace then counts 1 / evalEvery of an evaluation an epoch).
   */
  evalEvery?: number;
  evalBatchSize?: number;
  onStep?(m: StepMetrics): void;
  onEval?(r: EvalResult, at: { epoch: number; step: number }): void;
  onCheckpoint?(s: LoopState): void;
  /** Asked after every step (after yielding to the event loop); true ends the loop with a checkpoint (Ctrl-C). */
  stopRequested?(): boolean;
}

export interface TrainResult {
  step: number;
  totalSteps: number;
  /** Stopped early (stopRequested or stopAtStep). */
  stopped: boolean;
  /** The step the run resumed from (0 for a fresh run). */
  resumedFrom: number;
  lastEval?: EvalResult;
}

/** Every learnable parameter (not BN running buffers) by name. */
export function learnable(graph: Graph, weights: ReadonlyMap<string, Tensor>): Map<string, Tensor> {
  return new Map(
    graphParams(graph)
      .filter((p) => p.kind === 'parameter')
      .map((p) => [p.name, weights.get(p.name)!]),
  );
}

/**
 * A macrotask without setTimeout's clamp (1 ms in Node, 4 ms once nested in browsers): the loop yields after
 * every step, so that a SIGINT handler (or a UI) runs between steps, and a clamped yield there is time the
 * device sits idle. Node: setImmediate; browsers: a MessageChannel message; else setTimeout.
 */
export function macrotaskFor(env: {
  setImmediate?: (f: () => void) => unknown;
  MessageChannel?: typeof MessageChannel;
  setTimeout: (f: () => void, ms: number) => unknown;
}): (f: () => void) => void {
  if (typeof env.setImmediate === 'function') return (f) => void env.setImmediate!(f);
  const Channel = env.MessageChannel;
  if (typeof Channel === 'function') {
    const waiting: (() => void)[] = [];
    let port: MessagePort | undefined;
    return (f) => {
      if (!port) {
        const channel = new Channel();
        // Closed once nothing waits: an open port would keep Node alive.
        channel.port1.onmessage = () => {
          const next = waiting.shift();
          if (!waiting.length) {
            channel.port1.close();
            port = undefined;
          }
          next?.();
        };
        port = channel.port2;
      }
      waiting.push(f);
      port.postMessage(0);
    };
  }
  return (f) => void env.setTimeout(f, 0);
}
const macrotask = macrotaskFor(globalThis as Parameters<typeof macrotaskFor>[0]);
const yieldToEventLoop = () => new Promise<void>((r) => macrotask(r));

export async function train(cfg: TrainConfig): Promise<TrainResult> {
  const { graph, weights, train: set, batchSize: B, optimizer } = cfg;
  const backend = cfg.backend ?? referenceTraining;
  const seed = cfg.seed ?? 0;
  if (!Number.isInteger(B) || B < 1) throw new ConfigError(`batch size ${B} must be a positive integer`);
  if (set.count < 2) throw new ConfigError(`training needs at least 2 images, got ${set.count}`);
  // Whole batches only (drop_last): a last batch of one image would break batch norm.
  const stepsPerEpoch = Math.max(1, Math.floor(set.count / B));
  let totalSteps = cfg.epochs * stepsPerEpoch;
  if (!(totalSteps >= 1)) throw new ConfigError(`epochs ${cfg.epochs} gives no training steps`);
  const params = learnable(graph, weights);
  const evalEvery = cfg.evalEvery ?? 1;
  if (!Number.isInteger(evalEvery) || evalEvery < 1)
    throw new ConfigError(`evalEvery ${evalEvery} must be a positive integer (epochs)`);
  const budget = cfg.timeBudget;
  const clock = budget?.clock ?? (() => performance.now() / 1000);
  let schedule = cfg.schedule;
  let fit: FitResult | undefined;

  let step = 0;
  if (cfg.resume && cfg.store?.read(STATE_FILE)) {
    const s = restoreCheckpoint(cfg.store, graph, weights, optimizer);
    const mismatch = [
      s.batchSize !== B ? `batch size ${s.batchSize} -> ${B}` : '',
      s.fit
        ? s.totalSteps > totalSteps
          ? `epochs ${cfg.epochs} < the ${s.fit.epochs} fitted`
          : ''
        : s.totalSteps !== totalSteps
          ? `total steps ${s.totalSteps} -> ${totalSteps}`
          : '',
      s.rng.seed !== seed ? `seed ${s.rng.seed} -> ${seed}` : '',
    ].filter(Boolean);
    if (mismatch.length) throw new ConfigError(`cannot resume: the run differs (${mismatch.join(', ')})`);
    if (s.fit) {
      if (!budget)
        throw new ConfigError(`cannot resume: the run was fitted to a time budget; resume it with one`);
      [fit, totalSteps, schedule] = [s.fit, s.totalSteps, budget.reschedule(s.totalSteps)];
    }
    step = s.step;
  }
  const resumedFrom = step;
  let end = Math.min(totalSteps, cfg.stopAtStep ?? Infinity);
  let savedAt = -1;
  const save = () => {
    savedAt = step;
    if (!cfg.store) return;
    const s = saveCheckpoint(cfg.store, cfg, { step, stepsPerEpoch, totalSteps, seed, fit });
    cfg.onCheckpoint?.(s);
  };
  // The pace of the epoch the fit measures: its steps' times and its wall time.
  const stepTimes: number[] = [];
  let epochBegan = clock();
  let epochsSeen = 0;
  let evalSeconds = 0;
  const fitToBudget = () => {
    const now = clock();
    const sorted = [...stepTimes].sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1]!;
    // The steps at their median (the first ones compile plans), the rest (evaluation, checkpoint) as measured,
    // with the evaluation spread over the epochs that share one.
    const other = Math.max(0, now - epochBegan - stepTimes.reduce((a, b) => a + b, 0) - evalSeconds);
    const secondsPerEpoch = median * stepsPerEpoch + other + evalSeconds / evalEvery;
    const done = step / stepsPerEpoch;
    const secondsLeft = budget!.deadline - now;
    // 5% of the time left for the pace's drift (a run that overruns its deadline is cut off unannealed): the
    // H200's CIFAR-10 run, fitted at 8.0 s an epoch, averaged 8.4 after. The last epoch evaluates anyway.
    const spare = 0.95 * secondsLeft - (evalEvery > 1 ? evalSeconds : 0);
    const more = Math.max(0, Math.floor(spare / secondsPerEpoch));
    const epochs = Math.min(cfg.epochs, done + more);
    fit = { epochs, secondsPerEpoch, secondsLeft, step };
    totalSteps = epochs * stepsPerEpoch;
    schedule = budget!.reschedule(totalSteps);
    end = Math.min(totalSteps, cfg.stopAtStep ?? Infinity);
    cfg.onFit?.(fit);
  };
  let perm: Int32Array = new Int32Array(0);
  let permEpoch = -1;
  /** Step s's batch: its epoch's permutation, its own augmentation stream. */
  const batchAt = (s: number) => {
    const epoch = Math.floor(s / stepsPerEpoch);
    const first = (s % stepsPerEpoch) * B;
    if (epoch !== permEpoch)
      [perm, permEpoch] = [permutation(set.count, new Rng(streamSeed(seed, 1, epoch))), epoch];
    const aug = cfg.augment ? { options: cfg.augment, rng: new Rng(streamSeed(seed, 2, s)) } : undefined;
    return makeBatch(set, perm.subarray(first, Math.min(set.count, first + B)), cfg.normalize, aug);
  };
  let next: ReturnType<typeof batchAt> | undefined;
  let lastEval: EvalResult | undefined;
  while (step < end) {
    const epoch = Math.floor(step / stepsPerEpoch);
    const t0 = performance.now();
    const began = budget && !fit ? clock() : 0;
    const { input, labels } = next ?? batchAt(step);
    next = undefined;
    const lr = schedule(step);
    const smoothing = cfg.labelSmoothing ?? 0;
    const pending = backend.step?.(graph, weights, input, labels, { lr, smoothing, optimizer });
    if (pending && step + 1 < end) {
      // While the device works (the step is submitted once the event loop turns), the next batch.
      await yieldToEventLoop();
      next = batchAt(step + 1);
    }
    const whole = await pending;
    const { loss, correct } =
      whole ?? (await separateStep(backend, graph, weights, params, input, labels, lr, cfg));
    if (!Number.isFinite(loss)) {
      throw new Error(
        `the loss is ${loss} at step ${step + 1} (lr ${lr}); the last checkpoint is kept. Lower --lr?`,
      );
    }
    step++;
    const seconds = (performance.now() - t0) / 1000;
    if (budget && !fit) stepTimes.push(clock() - began);
    const n = labels.length;
    cfg.onStep?.({
      step,
      totalSteps,
      epoch,
      loss,
      accuracy: correct / n,
      lr,
      imagesPerSecond: n / seconds,
      seconds,
    });
    const epochEnd = step % stepsPerEpoch === 0;
    const saving = epochEnd || step === end || (cfg.checkpointEvery && step % cfg.checkpointEvery === 0);
    const fitting = !!budget && !fit && step < end && epochsSeen + 1 >= (budget.fitAfterEpochs ?? 1);
    const evaluating =
      epochEnd && !!cfg.test && ((step / stepsPerEpoch) % evalEvery === 0 || step === end || fitting);
    // Evaluation and checkpoints read the weights here: a device that holds them copies them back.
    if (evaluating || saving) await backend.sync?.(graph, weights, optimizer);
    if (evaluating) {
      const infer = cfg.infer ?? referenceInfer;
      const began = fitting ? clock() : 0;
      lastEval = await evaluateAsync(graph, weights, cfg.test!, cfg.normalize, {
        infer,
        batchSize: cfg.evalBatchSize,
      });
      if (fitting) evalSeconds = clock() - began;
      cfg.onEval?.(lastEval, { epoch, step });
    }
    if (saving) save();
    if (budget && !fit && epochEnd && step < end) {
      if (++epochsSeen >= (budget.fitAfterEpochs ?? 1)) {
        fitToBudget();
        if (cfg.store) save(); // state.json with the fit
      } else {
        stepTimes.length = 0;
        epochBegan = clock();
      }
    }
    // After the yield, so that a signal that came during the step is seen before the next one starts.
    await yieldToEventLoop();
    if (step < end && cfg.stopRequested?.()) {
      await backend.sync?.(graph, weights, optimizer);
      if (savedAt !== step) save();
      return { step, totalSteps, stopped: true, resumedFrom, lastEval };
    }
  }
  await backend.sync?.(graph, weights, optimizer);
  return { step, totalSteps, stopped: step < totalSteps, resumedFrom, lastEval };
}

/**
 * A step in parts: the backend's forward and backward, the loss and the optimizer here. A loss that is not
 * finite returns before the update.
 */
async function separateStep(
  backend: TrainBackend,
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  params: ReadonlyMap<string, Tensor>,
  input: Tensor,
  labels: Int32Array,
  lr: number,
  cfg: TrainConfig,
): Promise<{ loss: number; correct: number }> {
  const { output, tape } = await backend.forward(graph, weights, input);
  const { loss, grad, correct } = softmaxCrossEntropy(output, labels, cfg.labelSmoothing ?? 0);
  if (Number.isFinite(loss)) cfg.optimizer.step(params, await backend.backward(tape, grad), lr);
  return { loss, correct };
}

const tag = (step: number) => String(step).padStart(8, '0');

/**
 * Writes the weights and the optimizer state under step-tagged names, then state.json naming them (the commit:
 * a run killed at any point resumes from a complete checkpoint), then model.safetensors, then removes the files
 * of the checkpoint before.
 */
export function saveCheckpoint(
  store: CheckpointStore,
  cfg: Pick<TrainConfig, 'graph' | 'weights' | 'optimizer' | 'metadata' | 'options' | 'batchSize'>,
  at: { step: number; stepsPerEpoch: number; totalSteps: number; seed: number; fit?: FitResult },
): LoopState {
  const state: LoopState = {
    version: 1,
    step: at.step,
    epoch: Math.floor(at.step / at.stepsPerEpoch),
    stepsPerEpoch: at.stepsPerEpoch,
    totalSteps: at.totalSteps,
    batchSize: cfg.batchSize,
    weights: `weights-${tag(at.step)}.safetensors`,
    optimizer: `optimizer-${tag(at.step)}.safetensors`,
    optimizerKind: cfg.optimizer.kind,
    rng: { seed: at.seed, shuffle: 'streamSeed(seed, 1, epoch)', augment: 'streamSeed(seed, 2, step)' },
    options: cfg.options,
    ...(at.fit ? { fit: at.fit } : {}),
  };
  const previous = readState(store);
  const model = exportSafetensors(cfg.graph, cfg.weights, {
    ...cfg.metadata,
    step: String(at.step),
    epoch: String(at.step / at.stepsPerEpoch),
  });
  const opt = new Map<string, RawTensor>(
    [...cfg.optimizer.state()].map(([k, t]) => [k, { dtype: 'F32', shape: [...t.shape], data: t.data }]),
  );
  store.write(state.weights, model);
  store.write(state.optimizer, writeSafetensors(opt, { optimizer: cfg.optimizer.kind }));
  store.write(STATE_FILE, JSON.stringify(state, null, 1));
  store.write(MODEL_FILE, model);
  if (previous) {
    for (const f of [previous.weights, previous.optimizer])
      if (f !== state.weights && f !== state.optimizer) store.remove(f);
  }
  return state;
}

export function readState(store: CheckpointStore): LoopState | undefined {
  const bytes = store.read(STATE_FILE);
  if (!bytes) return undefined;
  const s = JSON.parse(new TextDecoder().decode(bytes)) as LoopState;
  if (s.version !== 1 || !Number.isInteger(s.step))
    throw new ConfigError(`${STATE_FILE}: not a training state`);
  return s;
}

/** Loads the last checkpoint's weights (in place) and optimizer state; returns the loop state. */
export function restoreCheckpoint(
  store: CheckpointStore,
  graph: Graph,
  weights: Map<string, Tensor>,
  optimizer: Optimizer,
): LoopState {
  const s = readState(store);
  if (!s) throw new ConfigError(`no ${STATE_FILE}: nothing to resume`);
  if (s.optimizerKind !== optimizer.kind)
    throw new ConfigError(
      `cannot resume: the checkpoint's optimizer is ${s.optimizerKind}, not ${optimizer.kind}`,
    );
  const need = (name: string) => {
    const b = store.read(name);
    if (!b) throw new ConfigError(`${STATE_FILE} names ${name}, which is missing`);
    return b;
  };
  const loaded = weightsFromStateDict(graph, readCheckpoint(need(s.weights), s.weights).tensors, s.weights);
  for (const [k, t] of loaded) weights.get(k)!.data.set(t.data);
  const opt = readSafetensors(need(s.optimizer)).tensors;
  optimizer.loadState(
    new Map([...opt].map(([k, t]) => [k, new Tensor(t.shape, Float32Array.from(toFloat32(t, k)))])),
  );
  return s;
}

/** Top-1, top-5 (rank of the true class among the logits, ties counted against it) and the confusion matrix. */
export function evaluate(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  set: ImageSet,
  normalize: Normalize,
  o: { infer?: Infer; batchSize?: number } = {},
): EvalResult {
  const B = o.batchSize ?? 100;
  const tally = evalTally(set.classes.length);
  const runner = (o.infer ?? referenceInfer)(graph, weights, Math.min(B, set.count));
  try {
    for (const { input, labels } of evalBatches(set, normalize, B)) tally.add(runner.run(input), labels);
  } finally {
    runner.dispose();
  }
  return tally.result();
}

/** Inference for evaluateAsync: as Infer, but a run may return a promise (WebGPU plans). Any Infer is one. */
export type AsyncInfer = (
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  batch: number,
) => { run(input: Tensor): Tensor | Promise<Tensor>; dispose(): void };

/** evaluate() with an inference that may be asynchronous: the same batches and the same metrics. */
export async function evaluateAsync(
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  set: ImageSet,
  normalize: Normalize,
  o: { infer?: AsyncInfer; batchSize?: number } = {},
): Promise<EvalResult> {
  const B = o.batchSize ?? 100;
  const tally = evalTally(set.classes.length);
  const runner = (o.infer ?? referenceInfer)(graph, weights, Math.min(B, set.count));
  try {
    for (const { input, labels } of evalBatches(set, normalize, B))
      tally.add(await runner.run(input), labels);
  } finally {
    runner.dispose();
  }
  return tally.result();
}

/** The set in order, `B` images a batch (the last one shorter). */
function* evalBatches(set: ImageSet, normalize: Normalize, B: number) {
  for (let start = 0; start < set.count; start += B) {
    const idx = Int32Array.from({ length: Math.min(B, set.count - start) }, (_, i) => start + i);
    yield makeBatch(set, idx, normalize);
  }
}

/** The running counts of an evaluation over `k` classes, batch by batch. */
function evalTally(k: number) {
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  let [n, top1, top5, loss] = [0, 0, 0, 0];
  return {
    add(logits: Tensor, labels: Int32Array): void {
      const classes = logits.shape[1]!;
      if (classes !== k) throw new ConfigError(`the model has ${classes} outputs, the dataset ${k} classes`);
      loss += softmaxCrossEntropy(logits, labels).loss * labels.length;
      n += labels.length;
      labels.forEach((label, b) => {
        const row = logits.data.subarray(b * k, (b + 1) * k);
        let rank = 0;
        let best = 0;
        for (let j = 0; j < k; j++) {
          if (row[j]! > row[label]! || (row[j] === row[label] && j < label)) rank++;
          if (row[j]! > row[best]!) best = j;
        }
        if (rank === 0) top1++;
        if (rank < 5) top5++;
        confusion[label]![best]!++;
      });
    },
    result: (): EvalResult => ({ count: n, top1: top1 / n, top5: top5 / n, loss: loss / n, confusion }),
  };
}

/**
 * The authors' BN recalibration: forward passes in training mode (as a step at learning rate 0) so that the
 * running statistics describe the final weights. With `average`, the statistics are instead the exact mean
 * over the batches (PyTorch's momentum=None). Only BN running buffers change. Returns the batch count.
 */
export function recalibrateBatchNorm(
  graph: Graph,
  weights: Map<string, Tensor>,
  batches: Iterable<Tensor>,
  o: { average?: boolean } = {},
): number {
  let k = 0;
  for (const input of batches) {
    // momentum 1 / (k + 1) keeps a running mean of the per-batch statistics; the first batch replaces the old ones.
    const g: Graph = o.average
      ? {
          ...graph,
          nodes: graph.nodes.map((n) =>
            n.op === 'batchnorm' ? { ...n, attrs: { ...n.attrs, momentum: 1 / (k + 1) } } : n,
          ),
        }
      : graph;
    execute(g, weights, input, { training: true });
    k++;
  }
  return k;
}
