/**
 * Where a plan's time goes on the GPU. With the adapter's `timestamp-query` (the engine asks for it), every
 * dispatch runs in a compute pass of its own, all in one submission, and the GPU stamps each pass's start
 * and end: its own execution time, without launches or round trips. Without it, each dispatch runs alone
 * (one submission, awaited) and is timed on the host: a launch and a round trip per dispatch make the sum
 * larger than a real run, so read the shares of the large kernels, not the total.
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
  /** 'gpu': the pass's timestamps; 'host': one submission awaited. */
  clock: 'gpu' | 'host';
}

// WebGPU's usage flags (GPUBufferUsage is not a global everywhere).
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, QUERY_RESOLVE: 0x200 } as const;
/** Timestamps per query set (the spec caps a set at 4096 queries): two per dispatch. */
const QUERIES = 4096;

export async function timeDispatches(
  device: GPUDevice,
  dispatches: readonly NamedDispatch[],
): Promise<DispatchTime[]> {
  await device.queue.onSubmittedWorkDone();
  if (device.features.has('timestamp-query')) return gpuTimes(device, dispatches);
  const times: DispatchTime[] = [];
  for (const d of dispatches) {
    const t0 = performance.now();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    dispatch(pass, d);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    times.push({ node: d.node, kernel: d.kernel, ms: performance.now() - t0, clock: 'host' });
  }
  return times;
}

async function gpuTimes(device: GPUDevice, dispatches: readonly NamedDispatch[]): Promise<DispatchTime[]> {
  const times: DispatchTime[] = [];
  const per = QUERIES / 2;
  for (let first = 0; first < dispatches.length; first += per) {
    const chunk = dispatches.slice(first, first + per);
    const count = 2 * chunk.length;
    const querySet = device.createQuerySet({ type: 'timestamp', count });
    const resolved = device.createBuffer({ size: count * 8, usage: USAGE.QUERY_RESOLVE | USAGE.COPY_SRC });
    const read = device.createBuffer({ size: count * 8, usage: USAGE.MAP_READ | USAGE.COPY_DST });
    try {
      const encoder = device.createCommandEncoder();
      chunk.forEach((d, i) => {
        const timestampWrites = {
          querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        };
        const pass = encoder.beginComputePass({ timestampWrites });
        dispatch(pass, d);
        pass.end();
      });
      encoder.resolveQuerySet(querySet, 0, count, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, read, 0, count * 8);
      device.queue.submit([encoder.finish()]);
      await read.mapAsync(0x1 /* GPUMapMode.READ */);
      const t = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      chunk.forEach((d, i) => {
        // Nanoseconds; an end before its start (a reset clock) counts as 0.
        const ns = t[2 * i + 1]! > t[2 * i]! ? Number(t[2 * i + 1]! - t[2 * i]!) : 0;
        times.push({ node: d.node, kernel: d.kernel, ms: ns / 1e6, clock: 'gpu' });
      });
    } finally {
      querySet.destroy();
      resolved.destroy();
      read.destroy();
    }
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
