/** Timing summary of repeated runs (milliseconds). */
export interface Timing {
  median_ms: number;
  min_ms: number;
  max_ms: number;
  p90_ms: number;
  mean_ms: number;
  runs: number;
}

export function summarize(ms: readonly number[]): Timing {
  if (!ms.length) throw new RangeError('summarize: no timings');
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))]!;
  const mid = s.length >> 1;
  return {
    median_ms: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2,
    min_ms: s[0]!,
    max_ms: s.at(-1)!,
    p90_ms: q(0.9),
    mean_ms: s.reduce((a, b) => a + b, 0) / s.length,
    runs: s.length,
  };
}
