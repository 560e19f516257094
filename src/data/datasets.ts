/**
 * Labelled image sets in one compact byte array, and the file formats they come from (Fashion-MNIST's gzipped
 * IDX files, CIFAR-10's binary batches, a cache of a decoded image folder). Platform-neutral: everything
 * works on bytes; reading files and folders is in src/node/datasets.ts.
 */
import { gunzipSync } from 'fflate';
import { centerCrop, resizeShorter, type RgbImage } from './image.js';
import { permutation, Rng } from './augment.js';
import { FASHION_MNIST_LABELS } from './labels.js';

/** N images of one size, 8-bit, channels interleaved (HWC), one after another, with a class per image. */
export interface ImageSet {
  count: number;
  height: number;
  width: number;
  channels: 1 | 3;
  /** count * height * width * channels bytes. */
  images: Uint8Array;
  labels: Int32Array;
  classes: readonly string[];
}

/** A malformed, truncated or inconsistent data file; the message names the file and what is wrong. */
export class DatasetError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatasetError';
  }
}

export const CIFAR10_LABELS: readonly string[] = [
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
];

/** Per-channel mean and std of 0..1 pixels over the training sets (the values everyone uses). */
export const FASHION_MNIST_STATS = { mean: [0.286], std: [0.353] } as const;
export const CIFAR10_STATS = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] } as const;

/** The bytes, inflated if they are gzip (by magic number, so a file that was unpacked by hand works too). */
export function maybeGunzip(bytes: Uint8Array, name: string): Uint8Array {
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  try {
    return gunzipSync(bytes);
  } catch (e) {
    const why = (e as Error).message;
    const hint = /EOF/.test(why) ? 'truncated gzip data' : 'corrupt gzip data';
    throw new DatasetError(`${name}: ${hint} (${why}); download the file again`, { cause: e });
  }
}

/**
 * An IDX file (LeCun's MNIST format): two zero bytes, a type byte, a dimension count, the dimensions as
 * big-endian u32, then the values. Only unsigned bytes (type 0x08) are used by these datasets.
 */
export function parseIdx(bytes: Uint8Array, name: string): { dims: number[]; data: Uint8Array } {
  bytes = maybeGunzip(bytes, name);
  const fail = (why: string): never => {
    throw new DatasetError(`${name}: ${why}`);
  };
  if (bytes.length < 4) fail(`${bytes.length} bytes is too short for an IDX header`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    const magic = [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join('');
    fail(`not an IDX file (magic number 0x${magic}, expected 0x000008NN)`);
  }
  if (bytes[2] !== 0x08) fail(`IDX type 0x${bytes[2]!.toString(16)} is not unsigned bytes (0x08)`);
  const nd = bytes[3]!;
  const start = 4 + 4 * nd;
  if (nd === 0 || bytes.length < start)
    fail(`truncated IDX header (${nd} dimensions, ${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: nd }, (_, i) => view.getUint32(4 + 4 * i, false));
  const need = dims.reduce((a, b) => a * b, 1);
  const have = bytes.length - start;
  if (have < need)
    fail(`truncated: the header says ${dims.join(' x ')} = ${need} bytes, the file has ${have}`);
  if (have > need) fail(`${have - need} unexpected bytes after the ${dims.join(' x ')} values`);
  return { dims, data: bytes.subarray(start) };
}

/** Fashion-MNIST (or MNIST) from its images (magic 2051) and labels (magic 2049) IDX files, gzipped or not. */
export function fashionMnist(
  imageBytes: Uint8Array,
  labelBytes: Uint8Array,
  names = { images: 'images', labels: 'labels' },
  classes: readonly string[] = FASHION_MNIST_LABELS,
): ImageSet {
  const img = parseIdx(imageBytes, names.images);
  const lab = parseIdx(labelBytes, names.labels);
  if (img.dims.length !== 3)
    throw new DatasetError(
      `${names.images}: expected an images file (N x rows x cols, magic 2051), got ${img.dims.length} dimensions`,
    );
  if (lab.dims.length !== 1)
    throw new DatasetError(
      `${names.labels}: expected a labels file (N, magic 2049), got ${lab.dims.length} dimensions`,
    );
  const [n, height, width] = img.dims as [number, number, number];
  if (lab.dims[0] !== n)
    throw new DatasetError(`${names.images} has ${n} images but ${names.labels} has ${lab.dims[0]} labels`);
  const labels = Int32Array.from(lab.data);
  const bad = labels.findIndex((l) => l >= classes.length);
  if (bad >= 0)
    throw new DatasetError(
      `${names.labels}: label ${labels[bad]} of item ${bad} is not a class in [0, ${classes.length})`,
    );
  return { count: n, height, width, channels: 1, images: img.data, labels, classes };
}

const CIFAR_RECORD = 1 + 3 * 32 * 32;

/** CIFAR-10's binary release (data_batch_*.bin, test_batch.bin): records of a label byte and 32x32 R, G, B planes. */
export function cifar10Binary(files: readonly { name: string; bytes: Uint8Array }[]): ImageSet {
  let count = 0;
  for (const f of files) {
    if (f.bytes.length === 0 || f.bytes.length % CIFAR_RECORD) {
      throw new DatasetError(
        `${f.name}: ${f.bytes.length} bytes is not a whole number of ${CIFAR_RECORD}-byte CIFAR-10 records` +
          ` (truncated, or not the binary version)`,
      );
    }
    count += f.bytes.length / CIFAR_RECORD;
  }
  const plane = 32 * 32;
  const images = new Uint8Array(count * 3 * plane);
  const labels = new Int32Array(count);
  let k = 0;
  for (const f of files) {
    for (let r = 0; r < f.bytes.length; r += CIFAR_RECORD, k++) {
      const label = f.bytes[r]!;
      if (label >= 10)
        throw new DatasetError(
          `${f.name}: record ${r / CIFAR_RECORD} has label ${label}, not a class in [0, 10)`,
        );
      labels[k] = label;
      const src = r + 1;
      const dst = k * 3 * plane;
      for (let i = 0; i < plane; i++) {
        for (let c = 0; c < 3; c++) images[dst + i * 3 + c] = f.bytes[src + c * plane + i]!;
      }
    }
  }
  return { count, height: 32, width: 32, channels: 3, images, labels, classes: CIFAR10_LABELS };
}

/** The first `n` images (or all, if fewer). Shares the bytes. */
export function limitSet(set: ImageSet, n: number): ImageSet {
  if (n >= set.count) return set;
  const size = set.height * set.width * set.channels;
  return { ...set, count: n, images: set.images.subarray(0, n * size), labels: set.labels.subarray(0, n) };
}

/**
 * A seeded random subset of n images (kept in their original order), copied into a compact set: `--limit`
 * on a folder dataset, whose images are sorted by class, still covers every class.
 */
export function sampleSet(set: ImageSet, n: number, seed: number): ImageSet {
  if (n >= set.count) return set;
  const pick = permutation(set.count, new Rng(seed)).subarray(0, n).sort();
  const size = set.height * set.width * set.channels;
  const images = new Uint8Array(n * size);
  pick.forEach((k, i) => images.set(set.images.subarray(k * size, (k + 1) * size), i * size));
  return { ...set, count: n, images, labels: Int32Array.from(pick, (k) => set.labels[k]!) };
}

/** Images start..end (exclusive) as their own set, sharing the bytes. */
export function sliceSet(set: ImageSet, start: number, end: number): ImageSet {
  const size = set.height * set.width * set.channels;
  end = Math.min(end, set.count);
  return {
    ...set,
    count: end - start,
    images: set.images.subarray(start * size, end * size),
    labels: set.labels.subarray(start, end),
  };
}

/** An image of any size made `width x height` the evaluation way: shorter side resized, centre crop. */
export function fitImage(img: RgbImage, width: number, height: number): RgbImage {
  if (img.width === width && img.height === height) return img;
  const resized = resizeShorter(img, Math.max(width, height));
  return centerCrop(resized, width, height);
}

/** Per-channel mean and std of the 0..1 pixel values (to normalise a dataset without known statistics). */
export function channelMeanStd(set: ImageSet): { mean: number[]; std: number[] } {
  const c = set.channels;
  const sum = new Float64Array(c);
  const sq = new Float64Array(c);
  const px = set.images;
  for (let i = 0; i < px.length; i++) {
    const v = px[i]! / 255;
    sum[i % c]! += v;
    sq[i % c]! += v * v;
  }
  const n = px.length / c;
  const mean = [...sum].map((s) => s / n);
  const std = [...sq].map((s, i) => Math.sqrt(Math.max(s / n - mean[i]! ** 2, 1e-12)));
  return { mean, std };
}

const CACHE_MAGIC = 'SNIMGSET';

/**
 * A decoded image set as one file: magic, u32 LE header length, JSON header (sizes, classes and the
 * source's fingerprint, so a changed folder is decoded again), labels as i32 LE, then the pixels.
 */
export function encodeImageSet(set: ImageSet, fingerprint: string): Uint8Array {
  const header = new TextEncoder().encode(
    JSON.stringify({
      version: 1,
      count: set.count,
      height: set.height,
      width: set.width,
      channels: set.channels,
      classes: set.classes,
      fingerprint,
    }),
  );
  const out = new Uint8Array(12 + header.length + 4 * set.count + set.images.length);
  out.set(new TextEncoder().encode(CACHE_MAGIC));
  new DataView(out.buffer).setUint32(8, header.length, true);
  out.set(header, 12);
  const labels = new DataView(out.buffer, 12 + header.length, 4 * set.count);
  set.labels.forEach((l, i) => labels.setInt32(4 * i, l, true));
  out.set(set.images, 12 + header.length + 4 * set.count);
  return out;
}

/** The set in a cache file, or undefined when the file is from another source (fingerprint) or damaged. */
export function decodeImageSet(bytes: Uint8Array, fingerprint: string): ImageSet | undefined {
  if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== CACHE_MAGIC) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hl = view.getUint32(8, true);
  let h: {
    count: number;
    height: number;
    width: number;
    channels: 1 | 3;
    classes: string[];
    fingerprint: string;
  };
  try {
    h = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + hl)));
  } catch {
    return undefined;
  }
  const start = 12 + hl + 4 * h.count;
  const size = h.count * h.height * h.width * h.channels;
  if (h.fingerprint !== fingerprint || bytes.length !== start + size) return undefined;
  const labels = Int32Array.from({ length: h.count }, (_, i) => view.getInt32(12 + hl + 4 * i, true));
  return {
    count: h.count,
    height: h.height,
    width: h.width,
    channels: h.channels,
    images: bytes.subarray(start),
    labels,
    classes: h.classes,
  };
}
