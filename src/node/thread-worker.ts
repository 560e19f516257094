import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { Step } from '../runtime/plan.js';
import { EXIT, REGISTER, RUN, type WorkerInit } from './threads.js';

// One worker of a ThreadPool: runs part `part` of the steps it is signalled, on the shared memory.
const { module, memory, control, port, part, parts } = workerData as WorkerInit;
const c = new Int32Array(control);
const instance = new WebAssembly.Instance(module, {
  env: {
    memory,
    abort: () => {
      throw new Error('wasm abort');
    },
  },
});
const k = instance.exports as Record<string, (...a: number[]) => void>;
const plans = new Map<number, readonly Step[]>();
parentPort!.postMessage('ready');

let seen = Atomics.load(c, 0);
for (;;) {
  // Spin up to 2 ms before sleeping: steps of a running plan come microseconds apart, and waking from
  // Atomics.wait costs far more than that on a busy machine.
  const t0 = performance.now();
  while (Atomics.load(c, 0) === seen && performance.now() - t0 < 2);
  if (Atomics.load(c, 0) === seen) Atomics.wait(c, 0, seen);
  seen = Atomics.load(c, 0);
  const cmd = c[1];
  if (cmd === EXIT) break;
  if (cmd === REGISTER) {
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
      const { id, steps } = m.message as { id: number; steps: Step[] };
      plans.set(id, steps);
    }
  } else if (cmd === RUN) {
    const s = plans.get(c[2]!)![c[3]!]!;
    k[s.fn]!(...s.args, part, parts);
  }
  Atomics.add(c, 4, 1);
  Atomics.notify(c, 4);
}
