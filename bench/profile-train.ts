// Where a training step's time goes: builds the WASM training plan of a ShuffleNet v1 preset (small-input stem,
// batch 128, one thread), runs a few steps with every kernel call timed on its own, and prints the time per step
// by kernel (and, with --by-node, by kernel and graph node, with GFLOP/s for the 1x1 convolutions). Timing each
// call adds a little overhead; the step total is printed next to the kernels' sum.
// Run: npx tsx bench/profile-train.ts [--arch shufflenet_v1_g3_0.5x] [--input 28|32] [--steps 10] [--by-node]
import { parseArgs } from 'node:util';
import { buildPreset } from '../src/models/registry.js';
import { createNodeEngine } from '../src/node/engine.js';
import { initWeights } from '../src/nn/init.js';
import type { Step } from '../src/runtime/plan.js';
import { Tensor } from '../src/tensor/tensor.js';
import { softmaxCrossEntropy } from '../src/train/loss.js';

const { values: o } = parseArgs({
  options: {
    arch: { type: 'string', default: 'shufflenet_v1_g3_0.5x' },
    input: { type: 'string', default: '28' },
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '10' },
    'by-node': { type: 'boolean', default: false },
  },
});
const side = Number(o.input);
const channels = side === 28 ? 1 : 3;
const N = Number(o.batch);
const engine = await createNodeEngine({ threads: 1 });
const graph = buildPreset(o.arch!, {
  smallInput: true,
  numClasses: 10,
  inputChannels: channels,
  inputSize: [side, side],
});
const weights = initWeights(graph, 0);
const input = new Tensor(
  [N, channels, side, side],
  Float32Array.from({ length: N * channels * side * side }, (_, i) => Math.sin(i)),
);
const labels = Int32Array.from({ length: N }, (_, i) => i % 10);

// The plan's step lists and kernels are internal: this replaces its runner with one that times each call.
interface Internals {
  forwardSteps: Step[];
  host: { exports: Record<string, (...a: number[]) => void> };
  fallbacks: (() => void)[];
  run(steps: readonly Step[], id: number): void;
}
const plan = engine.compileTraining(graph, input.shape);
const p = plan as unknown as Internals;
const times = new Map<string, number>();
const flops = new Map<string, number>();
p.run = (steps) => {
  const pass = steps === p.forwardSteps ? 'forward' : 'backward';
  for (const s of steps) {
    const t = performance.now();
    if (s.fn === 'js') p.fallbacks[s.args[0]!]!();
    else if (s.fn === 'globalAvgPool') p.host.exports[s.fn]!(...s.args);
    else p.host.exports[s.fn]!(...s.args, 0, 1);
    const key = o['by-node'] ? `${pass} ${s.fn} ${s.node}` : `${pass} ${s.fn}`;
    times.set(key, (times.get(key) ?? 0) + performance.now() - t);
    if (s.fn.startsWith('pointwise')) flops.set(key, 2 * s.work);
  }
};
const step = () => {
  const out = plan.forward(weights, input);
  plan.backward(softmaxCrossEntropy(out, labels, 0.1).grad);
};
for (let i = 0; i < 3; i++) step();
times.clear();
const steps = Number(o.steps);
const t0 = performance.now();
for (let i = 0; i < steps; i++) step();
const total = (performance.now() - t0) / steps;
let sum = 0;
console.log(`${o.arch} ${side}x${side}x${channels}, batch ${N}, one thread, ${engine.backend}: ms per step`);
for (const [key, t] of [...times].sort((a, b) => b[1] - a[1])) {
  const ms = t / steps;
  sum += ms;
  const f = flops.get(key);
  const rate = f && !o['by-node'] ? '' : f ? `  ${(f / ms / 1e6).toFixed(1)} GFLOP/s` : '';
  console.log(`  ${key.padEnd(o['by-node'] ? 72 : 40)} ${ms.toFixed(2).padStart(7)}${rate}`);
}
console.log(`  kernels ${sum.toFixed(1)} ms; whole step (forward, loss, backward) ${total.toFixed(1)} ms`);
plan.dispose();
process.exit(0);
