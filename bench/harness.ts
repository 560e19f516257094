import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { summarize as summarizeTimes } from '../src/runtime/stats.js';
import type { Tensor } from '../src/tensor/tensor.js';
import type { Runner } from './peers/types.js';

export interface MeasureOptions {
  /** Untimed runs of each runner first (JIT, caches, lazily built kernels). */
  warmup: number;
  /** Timed rounds at most. */
  iterations: number;
  /** Stop after the round that ends this many ms after the first (but not before minIterations). */
  budgetMs?: number;
  minIterations?: number;
  /**
   * Idle ms after each timed run. Thread pools spin after a call (measured here: ORT-node ~25 ms, ORT-web
   * ~10 ms), and on 2 cores a spinning pool takes a core from whichever runner comes next.
   */
  settleMs?: number;
}

/** What a result keeps of its runner (plain data, so results can cross processes as JSON). */
export type RunnerInfo = Pick<Runner, 'name' | 'backend' | 'threads' | 'batch'>;

export interface Stats {
  runner: RunnerInfo;
  /** Every timed call, ms, in the order run. */
  times: number[];
  median: number;
  min: number;
  max: number;
  p90: number;
  /** batch x 1000 / median. */
  imagesPerSecond: number;
}

/**
 * Times each runner's run() the same number of times, interleaved: every round runs each runner once, in an
 * order rotated by one each round, so that machine noise (other processes, frequency changes, a slow phase)
 * falls on all of them alike instead of on whichever ran during it.
 */
export async function measure(runners: Runner[], o: MeasureOptions): Promise<Stats[]> {
  for (const r of runners) for (let i = 0; i < o.warmup; i++) await r.run();
  const times = runners.map(() => [] as number[]);
  const start = performance.now();
  for (let round = 0; round < o.iterations; round++) {
    for (let k = 0; k < runners.length; k++) {
      const i = (round + k) % runners.length;
      const t0 = performance.now();
      await runners[i]!.run();
      times[i]!.push(performance.now() - t0);
      if (o.settleMs) await new Promise((resolve) => setTimeout(resolve, o.settleMs));
    }
    const done = round + 1 >= (o.minIterations ?? 1);
    if (o.budgetMs !== undefined && done && performance.now() - start > o.budgetMs) break;
  }
  return runners.map(({ name, backend, threads, batch }, i) =>
    summarize({ name, backend, threads, batch }, times[i]!),
  );
}

export function summarize(runner: RunnerInfo, times: number[]): Stats {
  const t = summarizeTimes(times);
  return {
    runner,
    times,
    median: t.median_ms,
    min: t.min_ms,
    max: t.max_ms,
    p90: t.p90_ms,
    imagesPerSecond: (runner.batch * 1000) / t.median_ms,
  };
}

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

export interface Row {
  /** Leading cells, e.g. model, batch, threads. */
  cells: string[];
  stats: Stats;
  /** Relative error vs the reference; undefined when not checked. */
  error?: number;
}

/**
 * A markdown table: one line per runner with median, min-max, p90, images/s, the ratio of its median to the
 * baseline runner's median in the same group (same leading cells), and the check against the reference.
 */
export function markdownTable(
  head: string[],
  rows: Row[],
  o: { baseline: string; tolerance: number },
): string {
  const base = new Map<string, number>();
  for (const r of rows) if (r.stats.runner.name === o.baseline) base.set(r.cells.join('|'), r.stats.median);
  const lines = [
    [...head, 'runner', 'median ms', 'min-max ms', 'p90 ms', 'images/s', `x ${o.baseline}`, 'max rel. error'],
  ];
  for (const r of rows) {
    const s = r.stats;
    const b = base.get(r.cells.join('|'));
    const err =
      r.error === undefined
        ? 'not checked'
        : `${r.error.toExponential(1)}${r.error <= o.tolerance ? '' : ' **WRONG**'}`;
    lines.push([
      ...r.cells,
      s.runner.name,
      ms(s.median),
      `${ms(s.min)}-${ms(s.max)}`,
      ms(s.p90),
      s.imagesPerSecond.toFixed(s.imagesPerSecond >= 100 ? 0 : 1),
      b === undefined ? '' : (s.median / b).toFixed(2),
      err,
    ]);
  }
  const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [row(lines[0]!), row(lines[0]!.map(() => '---')), ...lines.slice(1).map(row)].join('\n');
}

/**
 * Weights as files for a PyTorch peer (tools/reference_models.py load_weights): dir/weights.json (names and
 * shapes, in order) and dir/weights.bin (the float32 values, one after another).
 */
export function writeWeightFiles(dir: string, weights: ReadonlyMap<string, Tensor>): void {
  const list = [...weights];
  writeFileSync(
    join(dir, 'weights.json'),
    JSON.stringify(list.map(([name, t]) => ({ name, shape: t.shape }))),
  );
  writeFileSync(
    join(dir, 'weights.bin'),
    Buffer.concat(list.map(([, t]) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))),
  );
}

/** A parser for positive integer flags of a script: a bad value exits 2 with the flag, the value and `usage`. */
export function positiveFlag(usage: string): (flag: string, v: string) => number {
  return (flag, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) {
      console.error(`${flag} '${v}': expected a positive integer\n\n${usage}`);
      process.exit(2);
    }
    return n;
  };
}

/** The parseArgs options that pick the model of the GPU scripts (bench/gpu.ts, bench/tune-webgpu.ts). */
export const MODEL_OPTIONS = {
  arch: { type: 'string', default: 'shufflenet_v1_g3_1.0x' },
  size: { type: 'string', default: '224' },
  classes: { type: 'string', default: '1000' },
  'small-input': { type: 'boolean', default: false },
} as const;
