/**
 * The trainer's own time per step on a device backend: a stand-in backend whose step() resolves `--device-ms`
 * after it is called (a timer standing in for the GPU, which the trainer must not keep idle), on CIFAR-10-sized
 * batches with the CIFAR-10 augmentation. Reports the median gap between a step's result and the next step's
 * call (the device's idle time) and the mean step time beyond the stand-in's.
 *   npx tsx bench/train-loop.ts [--device-ms 20] [--steps 40] [--batch 256]
 */
import { parseArgs } from 'node:util';
import { CIFAR10_STATS } from '../src/data/datasets.js';
import { buildPreset } from '../src/models/registry.js';
import { initWeights } from '../src/nn/init.js';
import { Tensor } from '../src/tensor/tensor.js';
import { sgd } from '../src/train/optim.js';
import { train, type TrainBackend } from '../src/train/trainer.js';
import { positiveFlag } from './harness.js';

const USAGE = 'npx tsx bench/train-loop.ts [--device-ms 20] [--steps 40] [--batch 256]';
const { values: a } = parseArgs({
  options: {
    'device-ms': { type: 'string', default: '20' },
    steps: { type: 'string', default: '40' },
    batch: { type: 'string', default: '256' },
  },
});
const positive = positiveFlag(USAGE);
const [deviceMs, steps, B] = [a['device-ms']!, a.steps!, a.batch!].map((v, i) =>
  positive(['--device-ms', '--steps', '--batch'][i]!, v),
) as [number, number, number];

const count = B * steps;
const images = new Uint8Array(count * 32 * 32 * 3);
for (let i = 0; i < images.length; i++) images[i] = (i * 2654435761) >>> 24;
const set = {
  count,
  height: 32,
  width: 32,
  channels: 3 as const,
  images,
  labels: Int32Array.from({ length: count }, (_, i) => i % 10),
  classes: Array.from({ length: 10 }, (_, i) => String(i)),
};
const graph = buildPreset('shufflenet_v1_g3_0.25x', {
  numClasses: 10,
  smallInput: true,
  inputSize: [32, 32],
});
const gaps: number[] = [];
let resolvedAt = 0;
const backend: TrainBackend = {
  name: 'stand-in device',
  forward: () => {
    throw new Error('whole steps only');
  },
  backward: () => {
    throw new Error('whole steps only');
  },
  step: () => {
    const t = performance.now();
    if (resolvedAt) gaps.push(t - resolvedAt);
    // Polled on every turn of the event loop, as Dawn's Node binding polls its device.
    return new Promise((resolve) => {
      const poll = () => {
        if (performance.now() - t < deviceMs) return void setImmediate(poll);
        resolvedAt = performance.now();
        resolve({ output: new Tensor([B, 10]), loss: 1, correct: 0 });
      };
      poll();
    });
  },
};
const began = performance.now();
await train({
  graph,
  weights: initWeights(graph, 0),
  train: set,
  normalize: CIFAR10_STATS,
  augment: { randomCrop: { padding: 4 }, flip: true, cutout: { size: 16 } },
  batchSize: B,
  epochs: 1,
  optimizer: sgd({ momentum: 0.9 }),
  schedule: () => 0.1,
  backend,
});
const per = (performance.now() - began) / steps;
const sorted = [...gaps].sort((x, y) => x - y);
console.log(
  `${steps} steps of a ${deviceMs}-ms stand-in device step, batch ${B} (32x32, crop, flip, cutout): ` +
    `${per.toFixed(2)} ms a step, ${(per - deviceMs).toFixed(2)} beyond the device's; the device idle between ` +
    `a step's result and the next call: median ${sorted[sorted.length >> 1]!.toFixed(3)} ms, ` +
    `max ${sorted.at(-1)!.toFixed(2)} ms`,
);
