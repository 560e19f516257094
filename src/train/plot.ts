/** A training curve as a small self-contained SVG: loss (left axis) and accuracy (right axis, 0-100%) vs step. */

export interface CurvePoint {
  step: number;
  value: number;
}

export interface CurveData {
  loss: CurvePoint[];
  accuracy: CurvePoint[];
  /** Held-out top-1 after evaluations (drawn as dots). */
  testAccuracy?: CurvePoint[];
  title?: string;
}

/** A moving average over `window` points, so that per-batch noise does not hide the trend. */
export function smooth(points: readonly CurvePoint[], window: number): CurvePoint[] {
  let sum = 0;
  return points.map((p, i) => {
    sum += p.value - (i >= window ? points[i - window]!.value : 0);
    return { step: p.step, value: sum / Math.min(i + 1, window) };
  });
}

/** At most `max` points, evenly spaced, with the last kept: a long run's curve needs no more in a 720-px plot. */
export function thin(points: readonly CurvePoint[], max = 500): CurvePoint[] {
  const k = Math.ceil(points.length / max);
  return points.filter((_, i) => i % k === 0 || i === points.length - 1);
}

const esc = (s: string) => s.replace(/[<>&]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[c]!);

export function trainingCurveSvg(d: CurveData): string {
  const [W, H, L, R, T, B] = [720, 360, 56, 56, 32, 40];
  const steps = [...d.loss, ...d.accuracy].map((p) => p.step);
  const maxStep = Math.max(1, ...steps);
  const maxLoss = Math.max(1e-6, ...d.loss.map((p) => p.value)) * 1.05;
  const x = (s: number) => L + ((W - L - R) * s) / maxStep;
  const yLoss = (v: number) => T + (H - T - B) * (1 - v / maxLoss);
  const yAcc = (v: number) => T + (H - T - B) * (1 - v);
  const line = (pts: readonly CurvePoint[], y: (v: number) => number, color: string) =>
    pts.length
      ? `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts
          .map((p) => `${x(p.step).toFixed(1)},${y(p.value).toFixed(1)}`)
          .join(' ')}"/>`
      : '';
  const ticks: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const f = i / 4;
    const yy = T + (H - T - B) * (1 - f);
    ticks.push(
      `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${yy + 4}" text-anchor="end" fill="#c0392b">${(maxLoss * f).toPrecision(2)}</text>`,
      `<text x="${W - R + 6}" y="${yy + 4}" fill="#2471a3">${Math.round(f * 100)}%</text>`,
      `<text x="${x(maxStep * f)}" y="${H - B + 16}" text-anchor="middle">${Math.round(maxStep * f)}</text>`,
    );
  }
  const dots = (d.testAccuracy ?? [])
    .map(
      (p) => `<circle cx="${x(p.step).toFixed(1)}" cy="${yAcc(p.value).toFixed(1)}" r="3.5" fill="#1e8449"/>`,
    )
    .join('');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    ...ticks,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`,
    line(d.loss, yLoss, '#c0392b'),
    line(d.accuracy, yAcc, '#2471a3'),
    dots,
    `<text x="${L}" y="20" font-size="13">${esc(d.title ?? 'training')}</text>`,
    `<text x="${W - R}" y="20" text-anchor="end"><tspan fill="#c0392b">train loss</tspan>  ` +
      `<tspan fill="#2471a3">train accuracy</tspan>  <tspan fill="#1e8449">test top-1</tspan></text>`,
    `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">step</text>`,
    `</svg>`,
    '',
  ].join('\n');
}
