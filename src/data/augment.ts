/**
 * Training-time data: seeded augmentations on 8-bit images (torchvision's RandomResizedCrop, RandomCrop with
 * padding, RandomHorizontalFlip, ColorJitter), shuffling, and normalised NCHW float32 batches. Every random
 * choice comes from an explicit generator, so a batch is a function of (seed, step) and a resumed run sees
 * the same batches as an uninterrupted one.
 */
import { ConfigError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import type { ImageSet } from './datasets.js';

/** Mulberry32 (as `seededRandom`) with its state readable and settable. */
export class Rng {
  state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  /** An integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor((hi - lo) * this.next());
  }
}

/** A seed for an independent stream, e.g. (seed, epoch) for the shuffle or (seed, step) for augmentation. */
export function streamSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/** 0..n-1 in a random order (Fisher-Yates). */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/** One 8-bit image, channels interleaved. */
export interface Image8 {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

/**
 * The crop of (top, left, h, w) resized to outW x outH, bilinear with half-pixel centres (torchvision's
 * resize without antialias); out-of-image samples clamp to the border.
 */
export function cropResize(
  img: Image8,
  top: number,
  left: number,
  h: number,
  w: number,
  outH: number,
  outW: number,
): Image8 {
  const c = img.channels;
  const out = new Uint8Array(outH * outW * c);
  const sy = h / outH;
  const sx = w / outW;
  const clamp = (v: number, hi: number) => (v < 0 ? 0 : v > hi ? hi : v);
  for (let y = 0; y < outH; y++) {
    const fy = clamp(top + (y + 0.5) * sy - 0.5, img.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, img.height - 1);
    const ay = fy - y0;
    for (let x = 0; x < outW; x++) {
      const fx = clamp(left + (x + 0.5) * sx - 0.5, img.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, img.width - 1);
      const ax = fx - x0;
      for (let ch = 0; ch < c; ch++) {
        const p = (yy: number, xx: number) => img.data[(yy * img.width + xx) * c + ch]!;
        const top_ = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * ax;
        const bot = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * ax;
        out[(y * outW + x) * c + ch] = Math.round(top_ + (bot - top_) * ay);
      }
    }
  }
  return { width: outW, height: outH, channels: c, data: out };
}

/** torchvision RandomResizedCrop: a random area fraction in `scale` and aspect ratio in `ratio` (log-uniform). */
export function randomResizedCrop(
  img: Image8,
  outH: number,
  outW: number,
  rng: Rng,
  scale: readonly [number, number] = [0.08, 1],
  ratio: readonly [number, number] = [3 / 4, 4 / 3],
): Image8 {
  const { width: W, height: H } = img;
  const area = W * H;
  const logR = [Math.log(ratio[0]), Math.log(ratio[1])] as const;
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logR[0], logR[1]));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= W && h <= H) {
      const top = rng.int(0, H - h + 1);
      const left = rng.int(0, W - w + 1);
      return cropResize(img, top, left, h, w, outH, outW);
    }
  }
  // torchvision's fallback: the largest centred crop within the ratio range.
  const inRatio = W / H;
  let w = W;
  let h = H;
  if (inRatio < ratio[0]) h = Math.round(W / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(H * ratio[1]);
  return cropResize(img, Math.floor((H - h) / 2), Math.floor((W - w) / 2), h, w, outH, outW);
}

/** torchvision RandomCrop(size, padding): zero-pad every side by `padding`, then a random outH x outW window. */
export function randomCrop(img: Image8, outH: number, outW: number, padding: number, rng: Rng): Image8 {
  const c = img.channels;
  const top = rng.int(0, img.height + 2 * padding - outH + 1) - padding;
  const left = rng.int(0, img.width + 2 * padding - outW + 1) - padding;
  const out = new Uint8Array(outH * outW * c);
  for (let y = 0; y < outH; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    const x0 = Math.max(0, -left);
    const x1 = Math.min(outW, img.width - left);
    if (x1 <= x0) continue;
    const s = (sy * img.width + left + x0) * c;
    out.set(img.data.subarray(s, s + (x1 - x0) * c), (y * outW + x0) * c);
  }
  return { width: outW, height: outH, channels: c, data: out };
}

export function hflip(img: Image8): Image8 {
  const { width: w, height: h, channels: c } = img;
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (y * w + x) * c;
      const d = (y * w + (w - 1 - x)) * c;
      for (let ch = 0; ch < c; ch++) out[d + ch] = img.data[s + ch]!;
    }
  }
  return { ...img, data: out };
}

export interface JitterOptions {
  brightness?: number;
  contrast?: number;
  saturation?: number;
}

const luma = (d: ArrayLike<number>, i: number, c: number) =>
  c === 1 ? d[i]! : (d[i]! * 299 + d[i + 1]! * 587 + d[i + 2]! * 114) / 1000;

/**
 * torchvision ColorJitter on PIL images: each factor uniform in [max(0, 1 - x), 1 + x], applied in a random
 * order; brightness blends with black, contrast with the mean grey level, saturation with each pixel's grey.
 */
export function colorJitter(img: Image8, o: JitterOptions, rng: Rng): Image8 {
  const c = img.channels;
  // Clamped: blends overshoot 0..255, and a plain Uint8Array would wrap them around.
  const d = Uint8ClampedArray.from(img.data);
  const pixels = img.width * img.height;
  const factor = (x = 0) => (x > 0 ? rng.uniform(Math.max(0, 1 - x), 1 + x) : 1);
  const blend = (i: number, grey: number, f: number) => {
    for (let ch = 0; ch < c; ch++) d[i + ch] = grey + (d[i + ch]! - grey) * f;
  };
  const ops = [
    () => {
      const f = factor(o.brightness);
      if (f !== 1) for (let i = 0; i < d.length; i++) d[i] = d[i]! * f;
    },
    () => {
      const f = factor(o.contrast);
      if (f === 1) return;
      let sum = 0;
      for (let p = 0; p < pixels; p++) sum += luma(d, p * c, c);
      const mean = Math.round(sum / pixels);
      for (let p = 0; p < pixels; p++) blend(p * c, mean, f);
    },
    () => {
      const f = factor(o.saturation);
      if (f === 1 || c === 1) return;
      for (let p = 0; p < pixels; p++) blend(p * c, luma(d, p * c, c), f);
    },
  ];
  const order = permutation(ops.length, rng);
  for (const k of order) ops[k]!();
  return { ...img, data: new Uint8Array(d.buffer) };
}

/** What a training batch goes through, in this order; all optional. JSON-serialisable (checkpoint metadata). */
export interface AugmentOptions {
  randomResizedCrop?: { scale: [number, number]; ratio?: [number, number] };
  /** Random crop of the image's own size after zero padding (the CIFAR recipe). */
  randomCrop?: { padding: number };
  flip?: boolean;
  colorJitter?: JitterOptions;
  /**
   * Cutout (DeVries & Taylor, 2017): a size x size square at a random centre, clipped to the image, set to 0
   * after normalisation (the mean colour).
   */
  cutout?: { size: number };
}

export interface Normalize {
  /** Per channel, on 0..1 pixels: (v / 255 - mean) / std. */
  mean: readonly number[];
  std: readonly number[];
}

export function augment(img: Image8, o: AugmentOptions, rng: Rng): Image8 {
  let out = img;
  const { height: h, width: w } = img;
  if (o.randomResizedCrop) {
    out = randomResizedCrop(out, h, w, rng, o.randomResizedCrop.scale, o.randomResizedCrop.ratio);
  }
  if (o.randomCrop) out = randomCrop(out, h, w, o.randomCrop.padding, rng);
  if (o.flip && rng.next() < 0.5) out = hflip(out);
  if (o.colorJitter) out = colorJitter(out, o.colorJitter, rng);
  return out;
}

/**
 * The images at `indices` as a normalised [N, C, H, W] float32 batch with their labels, augmented when
 * `augment` and `rng` are given (the random choices are made image by image, in order).
 */
export function makeBatch(
  set: ImageSet,
  indices: ArrayLike<number>,
  normalize: Normalize,
  augmentation?: { options: AugmentOptions; rng: Rng },
): { input: Tensor; labels: Int32Array } {
  const { height: h, width: w, channels: c } = set;
  if (normalize.mean.length !== c || normalize.std.length !== c) {
    throw new ConfigError(`normalisation has ${normalize.mean.length} means for ${c}-channel images`);
  }
  const n = indices.length;
  const hw = h * w;
  const input = new Tensor([n, c, h, w]);
  const labels = new Int32Array(n);
  const scale = normalize.std.map((s) => 1 / (255 * s));
  const shift = normalize.mean.map((m, ch) => -m / normalize.std[ch]!);
  for (let b = 0; b < n; b++) {
    const k = indices[b]!;
    if (!(k >= 0 && k < set.count)) throw new RangeError(`image index ${k} is not in [0, ${set.count})`);
    labels[b] = set.labels[k]!;
    let img: Image8 = {
      width: w,
      height: h,
      channels: c,
      data: set.images.subarray(k * hw * c, (k + 1) * hw * c),
    };
    if (augmentation) img = augment(img, augmentation.options, augmentation.rng);
    const px = img.data;
    for (let ch = 0; ch < c; ch++) {
      const plane = (b * c + ch) * hw;
      const a = scale[ch]!;
      const s = shift[ch]!;
      for (let i = 0; i < hw; i++) input.data[plane + i] = px[i * c + ch]! * a + s;
    }
    const cut = augmentation?.options.cutout;
    if (cut && cut.size > 0) {
      const { rng } = augmentation;
      const [cy, cx] = [Math.floor(rng.next() * h), Math.floor(rng.next() * w)];
      const half = Math.floor(cut.size / 2);
      const [y0, y1] = [Math.max(0, cy - half), Math.min(h, cy - half + cut.size)];
      const [x0, x1] = [Math.max(0, cx - half), Math.min(w, cx - half + cut.size)];
      for (let ch = 0; ch < c; ch++)
        for (let y = y0; y < y1; y++)
          input.data.fill(0, (b * c + ch) * hw + y * w + x0, (b * c + ch) * hw + y * w + x1);
    }
  }
  return { input, labels };
}
