/**
 * Where a WebGPU plan's time goes: each dispatch of an inference run or a whole training step timed alone
 * (src/backends/webgpu/profile.ts: the GPU's timestamps where the adapter has timestamp-query, else the
 * host's clock, whose launch and round trip per dispatch inflate the total), summed by kernel and listed by
 * node. On the GPU machine (scripts/device-gpu.sh profile) it runs from dist/device/profile-webgpu.js.
 *   npx tsx bench/profile-webgpu.ts [--arch NAME] [--size N] [--batch N] [--small-input] [--classes N]
 *                                   [--train] [--runs N] [--top N]
 */
import { parseArgs } from 'node:util';
import { byKernel, type DispatchTime } from '../src/backends/webgpu/profile.js';
import { parseTiles } from '../src/backends/webgpu/train-plan.js';
import { buildPreset } from '../src/models/registry.js';
import { initWeights } from '../src/nn/init.js';
import { createNodeWebGpuEngine } from '../src/node/webgpu.js';
import { seededRandom, Tensor } from '../src/tensor/tensor.js';
import { sgd } from '../src/train/optim.js';

const { values: a } = parseArgs({
  options: {
    arch: { type: 'string', default: 'shufflenet_v1_g3_1.0x' },
    size: { type: 'string', default: '224' },
    batch: { type: 'string', default: '256' },
    classes: { type: 'string', default: '1000' },
    'small-input': { type: 'boolean', default: false },
    train: { type: 'boolean', default: false },
    runs: { type: 'string', default: '3' },
    top: { type: 'string', default: '25' },
    tiles: { type: 'string' },
  },
});
// --tiles GEMM[/WGRAD]: the training plan's 1x1 tiles (train --gpu-tiles; default the kernels' own).
const tiles = a.tiles === undefined ? undefined : parseTiles(a.tiles);
const [size, batch, classes, runs, top] = [a.size, a.batch, a.classes, a.runs, a.top].map(Number) as number[];
const graph = buildPreset(a.arch!, {
  numClasses: classes,
  smallInput: a['small-input'],
  inputSize: [size!, size!],
});
const weights = initWeights(graph, 0);
const shape = [batch!, 3, size!, size!];
const x = Tensor.random(shape, seededRandom(7));
const engine = await createNodeWebGpuEngine();
const what = `${a.arch}${a['small-input'] ? ' (small-input stem)' : ''} at ${size}x${size}, batch ${batch}`;
console.log(
  `${a.train ? 'training step' : 'inference'}: ${what}, on ${engine.adapter}` +
    (a.train && a.tiles ? `, 1x1 tiles ${a.tiles}` : ''),
);

let profile: () => Promise<DispatchTime[]>;
if (a.train) {
  const plan = engine.compileTraining(graph, shape, { tiles });
  plan.load(weights, sgd({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 }));
  const labels = Int32Array.from({ length: batch! }, (_, i) => i % classes!);
  await plan.step(x, labels, 0.01); // warm-up: pipelines, first touches
  profile = () => plan.profile(x, labels, 0.01);
} else {
  const plan = engine.compile({ graph, weights }, { batch, height: size, width: size });
  await plan.run(x.data);
  profile = () => plan.profile(x.data);
}
// The median run of `runs` by total time.
const all: DispatchTime[][] = [];
for (let r = 0; r < runs!; r++) all.push(await profile());
const total = (t: DispatchTime[]) => t.reduce((s, d) => s + d.ms, 0);
all.sort((p, q) => total(p) - total(q));
const times = all[Math.floor(all.length / 2)]!;
const ms = (v: number) => v.toFixed(3);
const clock =
  times[0]?.clock === 'gpu'
    ? "on the GPU's clock (timestamp-query: each dispatch in a pass of its own, one submission)"
    : 'timed one by one on the host (no timestamp-query: a launch and a round trip each)';
console.log(`\n${times.length} dispatches, ${ms(total(times))} ms ${clock}, median of ${runs} runs\n`);
console.log('| kernel | dispatches | ms | share |\n| --- | --- | --- | --- |');
for (const k of byKernel(times))
  console.log(`| ${k.kernel} | ${k.count} | ${ms(k.ms)} | ${(k.share * 100).toFixed(1)}% |`);
console.log(`\nthe ${top} slowest dispatches\n\n| node | kernel | ms |\n| --- | --- | --- |`);
for (const d of [...times].sort((p, q) => q.ms - p.ms).slice(0, top))
  console.log(`| ${d.node} | ${d.kernel} | ${ms(d.ms)} |`);
engine.destroy();
