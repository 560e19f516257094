// Training throughput on the reference kernels (autograd tape): one SGD step at batch 128, ShuffleNet v1 0.5x
// g=3 with the small-input stem, 28x28x1 and 32x32x3, one thread, next to PyTorch 1.13 CPU on this machine
// (ENGINEERING.md). A per-op timer (forward and backward, convolutions split by kind) says where the time goes.
// Run: npx tsx bench/train.ts [--batch N] [--steps N] [--arch NAME]
import { makeBatch, Rng } from '../src/data/augment.js';
import type { ImageSet } from '../src/data/datasets.js';
import { complexity } from '../src/graph/complexity.js';
import { buildPreset } from '../src/models/registry.js';
import { initWeights } from '../src/nn/init.js';
import {
  OPS,
  OP_NAMES,
  type BackwardArgs,
  type Conv2dAttrs,
  type KernelArgs,
  type OpSpec,
} from '../src/ops/index.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';
import { sgd } from '../src/train/optim.js';
import { learnable, referenceTraining } from '../src/train/trainer.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : fallback;
};
const BATCH = Number(arg('--batch', '128'));
const STEPS = Number(arg('--steps', '2'));
const ARCH = arg('--arch', 'shufflenet_v1_g3_0.5x');
/** PyTorch 1.13 CPU, one thread, images/s (ENGINEERING.md), for 0.5x g=3. */
const PYTORCH: Record<string, number> = { '28x28x1': 254, '32x32x3': 226 };

const times = new Map<string, number>();
const add = (key: string, ms: number) => times.set(key, (times.get(key) ?? 0) + ms);

function kindOf(op: string, attrs: unknown): string {
  if (op !== 'conv2d') return op;
  const a = attrs as Conv2dAttrs;
  if (a.groups === a.inChannels && a.groups > 1) return `depthwise ${a.kernel.join('x')}`;
  if (a.kernel[0] === 1) return a.groups > 1 ? 'pointwise 1x1 grouped' : 'pointwise 1x1';
  return `conv ${a.kernel.join('x')}`;
}

/** Wraps every op's reference kernel and gradient with a timer (the bench's own process only). */
function instrument(): void {
  for (const name of OP_NAMES) {
    const spec = OPS[name] as unknown as OpSpec<unknown>;
    const { reference, backward } = spec;
    spec.reference = (a: KernelArgs<unknown>) => {
      const t = performance.now();
      reference(a);
      add(`${kindOf(name, a.attrs)}|forward`, performance.now() - t);
    };
    spec.backward = (a: BackwardArgs<unknown>) => {
      const t = performance.now();
      backward(a);
      add(`${kindOf(name, a.attrs)}|backward`, performance.now() - t);
    };
  }
}

function synthetic(h: number, w: number, c: 1 | 3, n: number): ImageSet {
  const rng = new Rng(1);
  return {
    count: n,
    height: h,
    width: w,
    channels: c,
    images: Uint8Array.from({ length: n * h * w * c }, () => rng.int(0, 256)),
    labels: Int32Array.from({ length: n }, () => rng.int(0, 10)),
    classes: Array.from({ length: 10 }, (_, i) => String(i)),
  };
}

instrument();
console.log(
  `training step, ${ARCH} small-input, batch ${BATCH}, reference kernels, 1 thread (Node ${process.version})`,
);
for (const [h, c] of [
  [28, 1],
  [32, 3],
] as const) {
  const key = `${h}x${h}x${c}`;
  const graph = buildPreset(ARCH, { inputChannels: c, numClasses: 10, smallInput: true, inputSize: [h, h] });
  const weights = initWeights(graph, 0);
  const params = learnable(graph, weights);
  const opt = sgd({ momentum: 0.9, weightDecay: 4e-5 });
  const set = synthetic(h, h, c, BATCH);
  const norm = { mean: new Array(c).fill(0.5), std: new Array(c).fill(0.25) };
  const idx = Int32Array.from({ length: BATCH }, (_, i) => i);
  const step = () => {
    let t = performance.now();
    const { input, labels } = makeBatch(set, idx, norm, {
      options: { randomCrop: { padding: 2 }, flip: true },
      rng: new Rng(2),
    });
    add('data (augment + batch)|', performance.now() - t);
    const { output, tape } = referenceTraining.forward(graph, weights, input);
    t = performance.now();
    const { grad } = softmaxCrossEntropy(output, labels, 0.1);
    add('loss|', performance.now() - t);
    const grads = referenceTraining.backward(tape, grad);
    t = performance.now();
    opt.step(params, grads, 0.01);
    add('optimizer step|', performance.now() - t);
  };
  step(); // warm-up: JIT
  times.clear();
  const t0 = performance.now();
  for (let i = 0; i < STEPS; i++) step();
  const ms = (performance.now() - t0) / STEPS;
  const ips = BATCH / (ms / 1000);
  const macs = complexity(graph, h, h).macs;
  const torch = PYTORCH[key];
  console.log(
    `\n${key}: ${(ms / 1000).toFixed(2)} s/step, ${ips.toFixed(1)} images/s ` +
      `(${((3 * macs * ips) / 1e9).toFixed(2)} GMAC/s at 3x the ${(macs / 1e6).toFixed(1)}M forward MACs)` +
      (torch && ARCH === 'shufflenet_v1_g3_0.5x' && BATCH === 128
        ? `; PyTorch 1.13 CPU, 1 thread: ${torch} images/s, ${(torch / ips).toFixed(1)}x faster`
        : ''),
  );
  const timed = [...times].map(([k, v]) => [k, v / STEPS] as const);
  const other = ms - timed.reduce((s, [, v]) => s + v, 0);
  const rows = [...timed, ['other (tape, shapes, allocation)|', other] as const].sort((a, b) => b[1] - a[1]);
  const total = ms;
  for (const [k, v] of rows.filter(([k, v], i) => i < 12 || !k.endsWith('ward') || v / ms > 0.005)) {
    const [op, dir] = k.split('|');
    console.log(
      `  ${op!.padEnd(32)} ${dir!.padEnd(9)} ${v.toFixed(0).padStart(7)} ms  ${((100 * v) / total).toFixed(1).padStart(5)}%`,
    );
  }
}
