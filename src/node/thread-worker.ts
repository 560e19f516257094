import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { Step } from '../runtime/plan.js';
import { workerLoop, type PlanSteps } from '../runtime/threads-protocol.js';
import type { NodeWorkerInit } from './threads.js';

// One worker of a ThreadPool: runs part `part` of the steps it is signalled, on the shared memory.
const init = workerData as NodeWorkerInit;
const pending = new Map<number, readonly Step[]>();

/** The steps of plan `id`, read synchronously from the port (the pool posted them before signalling). */
function receive(id: number): readonly Step[] {
  for (let m = receiveMessageOnPort(init.port); m; m = receiveMessageOnPort(init.port)) {
    const { id: got, steps } = m.message as PlanSteps;
    pending.set(got, steps);
  }
  const steps = pending.get(id);
  if (!steps) throw new Error(`thread worker ${init.part}: plan ${id} registered without its steps`);
  pending.delete(id);
  return steps;
}

await workerLoop(init, receive, () => parentPort!.postMessage('ready'));
