import { instantiateKernels, kernelModule, relaxedSimdSupported } from '../backends/wasm/module.js';
import { Engine } from '../runtime/engine.js';
import { BrowserThreadPool } from './threads.js';

export interface BrowserEngineOptions {
  /** Threads including the page's own (default: the cores, at most 4); more than 1 needs cross-origin isolation. */
  threads?: number;
  /** 'auto' (default) uses relaxed SIMD when the browser accepts it. */
  relaxed?: boolean | 'auto';
}

/** The engine and what it chose, for the page to show. */
export interface BrowserEngine {
  engine: Engine;
  relaxed: boolean;
  /** Threads in use: the requested number, or 1 without cross-origin isolation. */
  threads: number;
  crossOriginIsolated: boolean;
  /** Why something asked for was not used (one thread, no relaxed SIMD). */
  notes: string[];
  /** Ends the workers. */
  close(): void;
}

/** Thrown when the browser cannot run the kernels at all. */
export class UnsupportedBrowserError extends Error {
  override name = 'UnsupportedBrowserError';
}

// (module (func (result v128) (v128.const 0)))
const SIMD_PROBE = Uint8Array.from(
  ('0061736d01000000' + '0105016000017b' + '03020100' + '0a160114' + '00fd0c' + '00'.repeat(16) + '0b').match(
    /../g,
  )!,
  (h) => parseInt(h, 16),
);

/** Whether this browser runs WebAssembly SIMD (fixed-width, 128-bit), which every kernel uses. */
export function simdSupported(): boolean {
  return typeof WebAssembly === 'object' && WebAssembly.validate(SIMD_PROBE);
}

/**
 * The engine for browsers: WASM SIMD kernels, relaxed SIMD where accepted, and Web Worker threads on a shared
 * memory where the page is cross-origin isolated (else one thread, with a note saying why).
 */
export async function createBrowserEngine(o: BrowserEngineOptions = {}): Promise<BrowserEngine> {
  if (!simdSupported()) {
    throw new UnsupportedBrowserError(
      'this browser does not run WebAssembly SIMD, which the kernels need (Chrome or Edge 91+, Firefox 89+, Safari 16.4+)',
    );
  }
  const cores = globalThis.navigator?.hardwareConcurrency || 1;
  const asked = o.threads ?? Math.min(cores, 4);
  if (!Number.isInteger(asked) || asked < 1)
    throw new RangeError(`threads must be a positive integer, got ${asked}`);
  const notes: string[] = [];
  const supported = relaxedSimdSupported();
  if (o.relaxed === true && !supported)
    throw new UnsupportedBrowserError('relaxed SIMD was requested but this browser rejects it');
  const relaxed = o.relaxed === false ? false : supported;
  if (o.relaxed !== false && !supported) notes.push('no relaxed SIMD in this browser: plain SIMD');
  const isolated = !!globalThis.crossOriginIsolated;
  let threads = asked;
  if (threads > 1 && !isolated) {
    notes.push(
      `one thread instead of ${asked}: the page is not cross-origin isolated (serve it with COOP/COEP headers)`,
    );
    threads = 1;
  }
  const shared = threads > 1;
  const kernels = await instantiateKernels({ relaxed, shared });
  let pool: BrowserThreadPool | undefined;
  if (shared) {
    try {
      pool = await BrowserThreadPool.start(kernelModule({ relaxed, shared }), kernels.memory, threads);
    } catch (e) {
      // The shared kernels run on one thread just as well.
      notes.push(`one thread instead of ${asked}: ${(e as Error).message}`);
      threads = 1;
    }
  }
  return {
    engine: new Engine(kernels, pool),
    relaxed,
    threads,
    crossOriginIsolated: isolated,
    notes,
    close: () => pool?.close(),
  };
}
