/** Dense float32 tensors in row-major (NCHW) order. No arithmetic lives here: see ops/. */

export type Shape = readonly number[];

export function shapeSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export class Tensor {
  readonly shape: Shape;
  readonly data: Float32Array;

  constructor(shape: Shape, data?: Float32Array) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new RangeError(`Tensor: invalid shape ${formatShape(shape)}`);
    }
    const size = shapeSize(shape);
    if (data && data.length !== size) {
      throw new RangeError(`Tensor: shape ${formatShape(shape)} needs ${size} values, got ${data.length}`);
    }
    this.shape = [...shape];
    this.data = data ?? new Float32Array(size);
  }

  get size(): number {
    return this.data.length;
  }

  static zeros(shape: Shape): Tensor {
    return new Tensor(shape);
  }

  static from(shape: Shape, values: ArrayLike<number>): Tensor {
    return new Tensor(shape, Float32Array.from(values));
  }

  /** Uniform in [lo, hi) from a seeded generator, so tests and benchmarks are repeatable. */
  static random(shape: Shape, rng: () => number, lo = -1, hi = 1): Tensor {
    const t = new Tensor(shape);
    for (let i = 0; i < t.data.length; i++) t.data[i] = lo + (hi - lo) * rng();
    return t;
  }

  reshape(shape: Shape): Tensor {
    return new Tensor(shape, this.data);
  }
}

/** Mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) from a uniform generator. */
export function gaussian(rng: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = 1 - rng();
    const v = rng();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}
