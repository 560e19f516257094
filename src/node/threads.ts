import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { Parallel, Step } from '../runtime/plan.js';

/**
 * Fork/join over worker_threads that share one WebAssembly.Memory. Plans register their steps once (as data);
 * a step then runs as: the caller bumps a generation counter with the step's id, each worker runs its part,
 * and the caller, after its own part, waits for the done count. No messages per step, no copies.
 */
const SEQ = 0;
const CMD = 1;
const PLAN = 2;
const STEP = 3;
const DONE = 4;
export const RUN = 1;
export const REGISTER = 2;
export const EXIT = 3;

export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  port: MessagePort;
  part: number;
  parts: number;
}

export class ThreadPool implements Parallel {
  private readonly control = new Int32Array(new SharedArrayBuffer(64));
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];

  private constructor(readonly threads: number) {}

  /** Starts `threads - 1` workers, each instantiating `module` on the shared `memory`. */
  static async start(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    threads: number,
  ): Promise<ThreadPool> {
    const pool = new ThreadPool(threads);
    const url = new URL(
      import.meta.url.endsWith('.ts') ? './thread-worker.ts' : './thread-worker.js',
      import.meta.url,
    );
    const ready: Promise<void>[] = [];
    for (let part = 1; part < threads; part++) {
      const { port1, port2 } = new MessageChannel();
      const init: WorkerInit = {
        module,
        memory,
        control: pool.control.buffer as SharedArrayBuffer,
        port: port2,
        part,
        parts: threads,
      };
      const worker = url.pathname.endsWith('.ts')
        ? // Running from TypeScript sources (tests, tsx): register tsx's loader in the worker first.
          new Worker(
            `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); });`,
            { eval: true, workerData: init, transferList: [port2] },
          )
        : new Worker(url, { workerData: init, transferList: [port2] });
      worker.unref();
      ready.push(
        new Promise((resolve, reject) => {
          worker.once('message', () => resolve());
          worker.once('error', reject);
        }),
      );
      pool.workers.push(worker);
      pool.ports.push(port1);
    }
    await Promise.all(ready);
    return pool;
  }

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
    for (const p of this.ports) p.postMessage({ id, steps });
    this.signal(REGISTER, id);
    this.join();
  }

  fork(id: number, index: number): void {
    this.signal(RUN, id, index);
  }

  /** Spins up to 2 ms (a step's other parts usually finish within microseconds of ours), then sleeps. */
  join(): void {
    const c = this.control;
    const want = this.threads - 1;
    const t0 = performance.now();
    while (performance.now() - t0 < 2) if (Atomics.load(c, DONE) >= want) return;
    // The caller blocks synchronously, so a worker that died (an exception in a kernel) is only noticed by the time.
    for (let d = Atomics.load(c, DONE); d < want; d = Atomics.load(c, DONE)) {
      if (performance.now() - t0 > 60_000) {
        throw new Error(
          `thread pool: ${want - d} worker(s) did not finish plan ${c[PLAN]} step ${c[STEP]} within 60 s`,
        );
      }
      Atomics.wait(c, DONE, d, 1000);
    }
  }

  async close(): Promise<void> {
    this.signal(EXIT);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
