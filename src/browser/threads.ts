import { ForkJoinPool, type PlanSteps } from '../runtime/threads-protocol.js';

/**
 * Fork/join over Web Workers that share one WebAssembly.Memory (the protocol is in
 * src/runtime/threads-protocol.ts). Needs a cross-origin isolated page (COOP/COEP headers), where
 * SharedArrayBuffer exists. The page's thread cannot block, so it spins while it waits for the workers.
 */
export class BrowserThreadPool extends ForkJoinPool {
  private readonly workers: Worker[] = [];

  /** Starts `threads - 1` module workers, each instantiating `module` on the shared `memory`. */
  static async start(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    threads: number,
  ): Promise<BrowserThreadPool> {
    if (typeof SharedArrayBuffer === 'undefined' || !globalThis.crossOriginIsolated) {
      throw new Error(
        'threads need a cross-origin isolated page (served with Cross-Origin-Opener-Policy: same-origin and ' +
          'Cross-Origin-Embedder-Policy: require-corp); this one is not, so SharedArrayBuffer is unavailable',
      );
    }
    const pool = new BrowserThreadPool(threads);
    const ready: Promise<void>[] = [];
    for (let part = 1; part < threads; part++) {
      // This exact form lets bundlers (Vite, webpack, esbuild) find and emit the worker; they map .js to .ts.
      const worker = new Worker(new URL('./thread-worker.js', import.meta.url), { type: 'module' });
      pool.workers.push(worker);
      ready.push(
        new Promise((resolve, reject) => {
          worker.addEventListener(
            'message',
            (e: MessageEvent<'ready' | { error: string }>) =>
              e.data === 'ready'
                ? resolve()
                : reject(new Error(`thread worker ${part} did not start: ${e.data.error}`)),
            { once: true },
          );
          worker.addEventListener(
            'error',
            (e) =>
              reject(new Error(`thread worker ${part} did not start: ${e.message || 'no reason given'}`)),
            { once: true },
          );
        }),
      );
      worker.postMessage(pool.init(module, memory, part));
    }
    try {
      await Promise.all(ready);
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  protected post(message: PlanSteps): void {
    for (const w of this.workers) w.postMessage(message);
  }

  close(): void {
    this.exit();
    for (const w of this.workers) w.terminate();
  }
}
