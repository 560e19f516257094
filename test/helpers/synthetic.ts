import { graphParams, Tensor, type Graph, type Shape } from '../../src/index.js';

/** The same hash-based values as tools/gen_model_fixtures.py, bit for bit, so fixtures need no weights. */
function fmix(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** n values in [-1, 1), as float64. */
export function uniform(name: string, n: number): Float64Array {
  const h = fnv1a(name);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (fmix((h ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0) / 4294967296) * 2 - 1;
  return out;
}

export function synthetic(name: string, shape: Shape): Tensor {
  const v = uniform(
    name,
    shape.reduce((a, b) => a * b, 1),
  );
  const fan = shape.slice(1).reduce((a, b) => a * b, 1);
  const f = name.endsWith('running_var')
    ? (x: number) => 0.5 + (x + 1) / 2
    : name.endsWith('running_mean') || name.endsWith('bias')
      ? (x: number) => 0.1 * x
      : shape.length === 1
        ? (x: number) => 1 + 0.2 * x
        : (x: number) => x * Math.sqrt(6 / fan);
  return new Tensor(shape, Float32Array.from(v, f));
}

export function syntheticWeights(graph: Graph): Map<string, Tensor> {
  return new Map(graphParams(graph).map((p) => [p.name, synthetic(p.name, p.shape)]));
}

/** Uniform [-1, 1) input, or 0..255 with `image`. */
export function syntheticInput(shape: Shape, image = false): Tensor {
  const v = uniform(
    'input',
    shape.reduce((a, b) => a * b, 1),
  );
  return new Tensor(shape, Float32Array.from(v, image ? (x) => ((x + 1) / 2) * 255 : (x) => x));
}
