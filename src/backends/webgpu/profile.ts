/**
 * Where a plan's time goes on the GPU: each dispatch runs alone (one submission, awaited) and is timed on
 * the host. A launch and a round trip per dispatch make the sum larger than a real run, so read the shares
 * of the large kernels, not the total.
 */

import { dispatch, type Recorded } from './encode.js';

/** One recorded dispatch, with what it runs for the report. */
export interface NamedDispatch extends Recorded {
  node: string;
  kernel: string;
}

export interface DispatchTime {
  node: string;
  kernel: string;
  ms: number;
}

export async function timeDispatches(
  device: GPUDevice,
  dispatches: readonly NamedDispatch[],
): Promise<DispatchTime[]> {
  await device.queue.onSubmittedWorkDone();
  const times: DispatchTime[] = [];
  for (const d of dispatches) {
    const t0 = performance.now();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    dispatch(pass, d);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    times.push({ node: d.node, kernel: d.kernel, ms: performance.now() - t0 });
  }
  return times;
}

/** The times summed by kernel, largest first, with their share of the whole. */
export function byKernel(
  times: readonly DispatchTime[],
): { kernel: string; ms: number; count: number; share: number }[] {
  const total = times.reduce((s, t) => s + t.ms, 0);
  const m = new Map<string, { ms: number; count: number }>();
  for (const t of times) {
    const e = m.get(t.kernel) ?? { ms: 0, count: 0 };
    e.ms += t.ms;
    e.count++;
    m.set(t.kernel, e);
  }
  return [...m].map(([kernel, e]) => ({ kernel, ...e, share: e.ms / total })).sort((a, b) => b.ms - a.ms);
}
