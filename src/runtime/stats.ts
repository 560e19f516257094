/** Timing summary of repeated runs (milliseconds). */
export interface Timing {
  median_ms: number;
  min_ms: number;
  max_ms: number;
  p90_ms: number;
  mean_ms: number;
  runs: number;
}

/** Linear interpolation between the closest ranks of sorted values (numpy's default). */
export function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function summarize(ms: readonly number[]): Timing {
  if (!ms.length) throw new RangeError('summarize: no timings');
  const s = [...ms].sort((a, b) => a - b);
  return {
    median_ms: quantile(s, 0.5),
    min_ms: s[0]!,
    max_ms: s.at(-1)!,
    p90_ms: quantile(s, 0.9),
    mean_ms: s.reduce((a, b) => a + b, 0) / s.length,
    runs: s.length,
  };
}
