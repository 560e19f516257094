/**
 * Evaluation preprocessing of the authors' ShuffleNet v1 weights (Megvii `train.py`, validation transform):
 * PIL decode to RGB -> OpencvResize(256) -> torchvision CenterCrop(224) -> ToBGRTensor (CHW, 0..255, no mean/std).
 * Platform-neutral: decoding files lives in src/node/image.ts.
 */
import { ConfigError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';

/** An 8-bit RGB image, channels interleaved, rows top to bottom. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export type ChannelOrder = 'BGR' | 'RGB';
export type Triple = readonly [number, number, number];

export interface TensorOptions {
  order: ChannelOrder;
  /** Multiplies the 0..255 values: 1 keeps 0..255, 1/255 gives 0..1. */
  scale: number;
  /** Per output channel, i.e. in `order`: out = (v * scale - mean[c]) / std[c]. */
  mean?: readonly number[];
  std?: readonly number[];
  /** 1 gives one luminance channel (PIL's convert('L'): (299 R + 587 G + 114 B) / 1000); default 3. */
  channels?: 1 | 3;
}

export interface Preprocess extends TensorOptions {
  /** Target of the shorter side; 0 = no resize. */
  resize: number;
  /** Side of the square centre crop; 0 = no crop. */
  crop: number;
}

/** What the released Megvii weights were evaluated with. */
export const MEGVII_PREPROCESS: Preprocess = { resize: 256, crop: 224, order: 'BGR', scale: 1 };

function checkSize(what: string, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new ConfigError(`${what}: image size must be positive integers, got ${width}x${height}`);
  }
}

function checkImage(what: string, img: RgbImage): void {
  checkSize(what, img.width, img.height);
  const need = img.width * img.height * 3;
  if (img.data.length !== need) {
    throw new ConfigError(
      `${what}: a ${img.width}x${img.height} RGB image needs ${need} bytes, got ${img.data.length}`,
    );
  }
}

/**
 * Greyscale (1), grey+alpha (2), RGB (3) or RGBA (4) samples to RGB. Alpha is dropped, not composited,
 * as PIL's `convert('RGB')` does.
 */
export function toRgb(data: Uint8Array, width: number, height: number, channels: 1 | 2 | 3 | 4): RgbImage {
  checkSize('toRgb', width, height);
  if (![1, 2, 3, 4].includes(channels)) {
    throw new ConfigError(`toRgb: channels must be 1, 2, 3 or 4, got ${channels}`);
  }
  const n = width * height;
  if (data.length !== n * channels) {
    throw new ConfigError(
      `toRgb: ${width}x${height} with ${channels} channel(s) needs ${n * channels} bytes, got ${data.length}`,
    );
  }
  if (channels === 3) return { width, height, data: data.slice() };
  const out = new Uint8Array(n * 3);
  const grey = channels <= 2;
  for (let i = 0; i < n; i++) {
    const s = i * channels;
    out[i * 3] = data[s]!;
    out[i * 3 + 1] = data[grey ? s : s + 1]!;
    out[i * 3 + 2] = data[grey ? s : s + 2]!;
  }
  return { width, height, data: out };
}

// OpenCV's INTER_LINEAR for 8-bit images (modules/imgproc/src/resize.cpp): weights are float32 fractions
// scaled by 2^11 and rounded half-to-even; the horizontal pass is exact integer arithmetic; the vertical pass
// is the SIMD formula, which OpenCV also uses for its scalar tail so that every pixel is bit-exact with it.
const COEF_SCALE = 2048;

interface Taps {
  index: Int32Array;
  w0: Int32Array;
  w1: Int32Array;
}

/** Source index and the two fixed-point weights for each destination coordinate. */
function taps(src: number, dst: number, clampWeights: boolean): Taps {
  // OpenCV works from inv_scale = dst/src and its reciprocal, both in double: keep the same roundings.
  const scale = 1 / (dst / src);
  const t: Taps = { index: new Int32Array(dst), w0: new Int32Array(dst), w1: new Int32Array(dst) };
  for (let d = 0; d < dst; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    // Columns clamp the position itself (border pixels get weight 1 on the edge); rows keep the fraction and
    // clamp the row index, which gives a slightly different rounding at the top and bottom borders.
    if (clampWeights && (s < 0 || s >= src - 1)) {
      f = 0;
      s = s < 0 ? 0 : src - 1;
    }
    t.index[d] = s;
    t.w0[d] = roundHalfEven(Math.fround(1 - f) * COEF_SCALE);
    t.w1[d] = roundHalfEven(f * COEF_SCALE);
  }
  return t;
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const r = x - f;
  if (r !== 0.5) return r < 0.5 ? f : f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** Bilinear resize with `cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)` semantics on uint8. */
export function resize(img: RgbImage, width: number, height: number): RgbImage {
  checkImage('resize', img);
  checkSize('resize target', width, height);
  if (width === img.width && height === img.height) return { width, height, data: img.data.slice() };
  const sw = img.width;
  const sh = img.height;
  const src = img.data;
  const xt = taps(sw, width, true);
  const yt = taps(sh, height, false);

  // Horizontal pass for every source row: values are pixel * 2048 (up to about 2^19).
  const rowLen = width * 3;
  const rows = new Int32Array(sh * rowLen);
  for (let y = 0; y < sh; y++) {
    const s = y * sw * 3;
    const o = y * rowLen;
    for (let x = 0; x < width; x++) {
      const sx = xt.index[x]!;
      const a0 = xt.w0[x]!;
      const a1 = xt.w1[x]!;
      const p = s + sx * 3;
      const q = sx + 1 < sw ? p + 3 : p;
      for (let c = 0; c < 3; c++) rows[o + x * 3 + c] = src[p + c]! * a0 + src[q + c]! * a1;
    }
  }

  const out = new Uint8Array(height * rowLen);
  for (let y = 0; y < height; y++) {
    const sy = yt.index[y]!;
    const r0 = Math.min(Math.max(sy, 0), sh - 1) * rowLen;
    const r1 = Math.min(Math.max(sy + 1, 0), sh - 1) * rowLen;
    const b0 = yt.w0[y]!;
    const b1 = yt.w1[y]!;
    const o = y * rowLen;
    for (let i = 0; i < rowLen; i++) {
      const v = (((rows[r0 + i]! >> 4) * b0) >> 16) + (((rows[r1 + i]! >> 4) * b1) >> 16);
      out[o + i] = Math.min(255, Math.max(0, (v + 2) >> 2));
    }
  }
  return { width, height, data: out };
}

/**
 * The authors' `OpencvResize(size)`: shorter side -> size, longer side `int(size / short * long + 0.5)`
 * (their operation order, which rounds differently from size * long / short in rare cases).
 */
export function resizeShorter(img: RgbImage, size: number): RgbImage {
  checkImage('resizeShorter', img);
  checkSize('resizeShorter target', size, size);
  const { width: w, height: h } = img;
  if (h < w) return resize(img, Math.trunc((size / h) * w + 0.5), size);
  return resize(img, size, Math.trunc((size / w) * h + 0.5));
}

/**
 * torchvision's `center_crop` placement: the offset of the crop in source coordinates. Negative where the image
 * is smaller than the crop and torchvision pads it with zeros first (the extra pixel of odd padding goes right
 * and bottom); Python's round() rounds half to even.
 */
export function centerCropBox(
  srcWidth: number,
  srcHeight: number,
  width: number,
  height: number,
): { left: number; top: number } {
  const place = (src: number, crop: number): number => {
    const pad = crop > src ? Math.floor((crop - src) / 2) : 0;
    const padded = crop > src ? src + pad + Math.floor((crop - src + 1) / 2) : src;
    return roundHalfEven((padded - crop) / 2) - pad;
  };
  return { left: place(srcWidth, width), top: place(srcHeight, height) };
}

/** torchvision `CenterCrop((height, width))`, zero padding included. */
export function centerCrop(img: RgbImage, width: number, height: number): RgbImage {
  checkImage('centerCrop', img);
  checkSize('centerCrop target', width, height);
  const { left, top } = centerCropBox(img.width, img.height, width, height);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    const x0 = Math.max(0, -left);
    const x1 = Math.min(width, img.width - left);
    if (x1 <= x0) continue;
    const s = (sy * img.width + left + x0) * 3;
    out.set(img.data.subarray(s, s + (x1 - x0) * 3), (y * width + x0) * 3);
  }
  return { width, height, data: out };
}

/** A [1, 3, H, W] float32 tensor, channels in `order`. */
export function toTensor(img: RgbImage, opts: TensorOptions): Tensor {
  checkImage('toTensor', img);
  if (opts.order !== 'BGR' && opts.order !== 'RGB') {
    throw new ConfigError(`toTensor: order must be 'BGR' or 'RGB', got '${String(opts.order)}'`);
  }
  if (!Number.isFinite(opts.scale))
    throw new ConfigError(`toTensor: scale must be finite, got ${opts.scale}`);
  if (opts.std?.some((s) => s === 0)) throw new ConfigError(`toTensor: std must not contain 0`);
  const n = img.width * img.height;
  const d = img.data;
  if (opts.channels === 1) {
    const [mean, std] = [opts.mean?.[0] ?? 0, opts.std?.[0] ?? 1];
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const grey = Math.floor((d[i * 3]! * 299 + d[i * 3 + 1]! * 587 + d[i * 3 + 2]! * 114 + 500) / 1000);
      data[i] = (grey * opts.scale - mean) / std;
    }
    return new Tensor([1, 1, img.height, img.width], data);
  }
  const data = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    const from = opts.order === 'BGR' ? 2 - c : c;
    const mean = opts.mean?.[c] ?? 0;
    const std = opts.std?.[c] ?? 1;
    const plane = c * n;
    for (let i = 0; i < n; i++) data[plane + i] = (d[i * 3 + from]! * opts.scale - mean) / std;
  }
  return new Tensor([1, 3, img.height, img.width], data);
}

/** Resize (shorter side), centre crop, then tensor: MEGVII_PREPROCESS reproduces the authors' evaluation. */
export function preprocess(img: RgbImage, p: Preprocess): Tensor {
  checkImage('preprocess', img);
  let out = img;
  if (p.resize > 0) out = resizeShorter(out, p.resize);
  if (p.crop > 0) out = centerCrop(out, p.crop, p.crop);
  return toTensor(out, p);
}
