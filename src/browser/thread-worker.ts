import type { Step } from '../runtime/plan.js';
import { workerLoop, type PlanSteps, type WorkerInit } from '../runtime/threads-protocol.js';

// One worker of a BrowserThreadPool. The first message is its WorkerInit; the others are plans' steps. A
// browser has no synchronous receive, so a registering plan waits here for its message event.
const pending = new Map<number, readonly Step[]>();
const waiting = new Map<number, (steps: readonly Step[]) => void>();

function receive(id: number): readonly Step[] | Promise<readonly Step[]> {
  const steps = pending.get(id);
  if (steps) {
    pending.delete(id);
    return steps;
  }
  return new Promise((resolve) => waiting.set(id, resolve));
}

self.addEventListener('message', (e: MessageEvent<WorkerInit | PlanSteps>) => {
  const m = e.data;
  if ('module' in m) {
    // An error before 'ready' (the module does not instantiate) is the pool's start error; later, the pool's
    // caller notices a dead worker by its timeout.
    workerLoop(m, receive, () => self.postMessage('ready')).then(
      () => self.close(),
      (err: unknown) => self.postMessage({ error: err instanceof Error ? err.message : String(err) }),
    );
    return;
  }
  const resolve = waiting.get(m.id);
  if (resolve) {
    waiting.delete(m.id);
    resolve(m.steps);
  } else {
    pending.set(m.id, m.steps);
  }
});
