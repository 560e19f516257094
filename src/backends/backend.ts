import { OPS, type KernelArgs, type OpAttrs, type OpName } from '../ops/index.js';

/**
 * A backend is a small table of kernels. `supports` lets a fast backend implement only some ops; the
 * runtime falls back to the reference kernels for the rest. Every backend passes the same conformance suite
 * (test/kernels.test.ts).
 */
export interface Backend {
  readonly name: string;
  supports(op: OpName): boolean;
  run<K extends OpName>(op: K, args: KernelArgs<OpAttrs[K]>): void;
}

/** The plain TypeScript kernels from the op table: readable, complete, float64 accumulation. */
export const referenceBackend: Backend = {
  name: 'reference',
  supports: () => true,
  run(op, args) {
    (OPS[op].reference as (a: typeof args) => void)(args);
  },
};
