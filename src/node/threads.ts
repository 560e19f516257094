import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { ForkJoinPool, type PlanSteps, type WorkerInit } from '../runtime/threads-protocol.js';

/** What a Node worker gets as workerData: the pool's WorkerInit and the port its plans' steps arrive on. */
export interface NodeWorkerInit extends WorkerInit {
  port: MessagePort;
}

/**
 * Fork/join over worker_threads that share one WebAssembly.Memory (the protocol is in
 * src/runtime/threads-protocol.ts). Steps travel on a MessagePort per worker, which the worker reads
 * synchronously when a plan registers.
 */
export class ThreadPool extends ForkJoinPool {
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];

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
      const init: NodeWorkerInit = { ...pool.init(module, memory, part), port: port2 };
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

  protected post(message: PlanSteps): void {
    for (const p of this.ports) p.postMessage(message);
  }

  async close(): Promise<void> {
    this.exit();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
