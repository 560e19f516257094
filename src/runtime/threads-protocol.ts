import type { Parallel, Step } from './plan.js';

/**
 * Fork/join over workers that share one WebAssembly.Memory, for any platform (Node's worker_threads, a
 * browser's Web Workers): only starting workers and posting messages differ, in src/node/threads.ts and
 * src/browser/threads.ts. Plans register their steps once (as data); a step then runs as: the caller bumps a
 * generation counter with the step's id, each worker runs its part, and the caller, after its own part, waits
 * for the done count. No messages per step, no copies.
 */

/** Int32 slots of the control block: generation, command, plan id, step index, workers done. */
const SEQ = 0;
const CMD = 1;
const PLAN = 2;
const STEP = 3;
const DONE = 4;
const CONTROL_BYTES = 64;
const RUN = 1;
const REGISTER = 2;
const EXIT = 3;

/** Spinning before sleeping: steps of a running plan come microseconds apart; waking from a wait costs more. */
const SPIN_MS = 2;
/** A caller blocks synchronously, so a worker that died (an exception in a kernel) is only noticed by the time. */
const STUCK_MS = 60_000;

/** What a worker needs to join a pool; structured-cloned once when it starts. */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  part: number;
  parts: number;
}

/** A plan's steps, posted to every worker when the plan registers. */
export interface PlanSteps {
  id: number;
  steps: readonly Step[];
}

/** Whether this thread may block in Atomics.wait (a browser's main thread may not). */
export function canBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}

/** The caller's side of the pool; subclasses start the workers and deliver PlanSteps to them. */
export abstract class ForkJoinPool implements Parallel {
  protected readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_BYTES));
  /** Steps run on several threads so far (to show that threads were used, not how fast). */
  forks = 0;
  private readonly blocking = canBlock();

  protected constructor(readonly threads: number) {}

  /** The WorkerInit of worker `part` (1..threads-1). */
  protected init(module: WebAssembly.Module, memory: WebAssembly.Memory, part: number): WorkerInit {
    return { module, memory, control: this.control.buffer as SharedArrayBuffer, part, parts: this.threads };
  }

  /** Sends `message` to every worker; it must be there (or on its way) before this returns. */
  protected abstract post(message: PlanSteps): void;

  private signal(cmd: number, plan = 0, step = 0): void {
    const c = this.control;
    c[CMD] = cmd;
    c[PLAN] = plan;
    c[STEP] = step;
    Atomics.store(c, DONE, 0);
    Atomics.add(c, SEQ, 1);
    Atomics.notify(c, SEQ);
  }

  register(id: number, steps: readonly Step[]): void {
    this.post({ id, steps });
    this.signal(REGISTER, id);
    this.join();
  }

  fork(id: number, index: number): void {
    this.forks++;
    this.signal(RUN, id, index);
  }

  /** Spins up to 2 ms (a step's other parts usually finish within microseconds of ours), then sleeps if it may. */
  join(): void {
    const c = this.control;
    const want = this.threads - 1;
    const t0 = performance.now();
    while (performance.now() - t0 < SPIN_MS) if (Atomics.load(c, DONE) >= want) return;
    for (let d = Atomics.load(c, DONE); d < want; d = Atomics.load(c, DONE)) {
      if (performance.now() - t0 > STUCK_MS) {
        throw new Error(
          `thread pool: ${want - d} worker(s) did not finish plan ${c[PLAN]} step ${c[STEP]} within ${STUCK_MS / 1000} s`,
        );
      }
      if (this.blocking) Atomics.wait(c, DONE, d, 1000);
    }
  }

  /** Tells the workers to leave their loops; the subclass then ends them. */
  protected exit(): void {
    this.signal(EXIT);
  }
}

/**
 * The worker's side: instantiates the kernels on the shared memory, calls `ready`, then runs its part of every
 * step it is signalled until told to exit. `receive(id)` gives the steps of plan `id` while it registers: Node
 * reads its message port synchronously; a browser worker must return to its event loop for the message.
 */
export async function workerLoop(
  init: WorkerInit,
  receive: (id: number) => readonly Step[] | Promise<readonly Step[]>,
  ready: () => void,
): Promise<void> {
  const { module, memory, control, part, parts } = init;
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
  ready();
  let seen = Atomics.load(c, SEQ);
  for (;;) {
    const t0 = performance.now();
    while (Atomics.load(c, SEQ) === seen && performance.now() - t0 < SPIN_MS);
    if (Atomics.load(c, SEQ) === seen) Atomics.wait(c, SEQ, seen);
    seen = Atomics.load(c, SEQ);
    const cmd = c[CMD];
    if (cmd === EXIT) break;
    if (cmd === REGISTER) {
      const id = c[PLAN]!;
      const steps = receive(id);
      plans.set(id, steps instanceof Promise ? await steps : steps);
    } else if (cmd === RUN) {
      const s = plans.get(c[PLAN]!)![c[STEP]!]!;
      k[s.fn]!(...s.args, part, parts);
    }
    Atomics.add(c, DONE, 1);
    Atomics.notify(c, DONE);
  }
}
