/**
 * PNG and JPEG files to RgbImage, decoded the way the authors' pipeline sees them (PIL `convert('RGB')`):
 * alpha and transparency are dropped, greyscale is replicated, 16-bit samples are cut to 8 bits as PIL does.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { toRgb, type RgbImage } from '../data/image.js';

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Decodes a PNG or JPEG (chosen by magic number). Errors start with `name` and say what was wrong. */
export function decodeImage(bytes: Uint8Array, name = 'image'): RgbImage {
  const fail = (why: string): never => {
    throw new Error(`${name}: ${why}`);
  };
  if (bytes.length === 0) fail('empty file');
  const isPngStart = PNG_SIGNATURE.every((b, i) => i >= bytes.length || bytes[i] === b);
  if (isPngStart) {
    if (bytes.length < PNG_SIGNATURE.length) fail('truncated PNG data (incomplete signature)');
    return decodePng(bytes, fail);
  }
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && (bytes.length < 3 || bytes[2] === 0xff)) {
    return decodeJpeg(bytes, fail);
  }
  return fail('not a PNG or JPEG file');
}

/** Reads and decodes an image file; errors name the file. */
export async function loadImage(path: string): Promise<RgbImage> {
  const bytes = await readFile(path);
  return decodeImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), basename(path));
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function decodePng(bytes: Uint8Array, fail: (why: string) => never): RgbImage {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kept: Uint8Array[] = [bytes.subarray(0, 8)];
  let width = 0;
  let height = 0;
  let depth = 0;
  let colorType = 0;
  let offset = 8;
  for (let ended = false; !ended;) {
    if (offset + 8 > bytes.length)
      fail(`truncated PNG data (file ends at byte ${bytes.length}, before IEND)`);
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const end = offset + 12 + length;
    if (end > bytes.length) {
      fail(`truncated PNG data (${type} chunk at byte ${offset} needs ${end - bytes.length} more bytes)`);
    }
    if (offset === 8) {
      if (type !== 'IHDR' || length < 13) fail('corrupt PNG data (no IHDR chunk first)');
      width = view.getUint32(offset + 8);
      height = view.getUint32(offset + 12);
      depth = bytes[offset + 16]!;
      colorType = bytes[offset + 17]!;
      if (width === 0 || height === 0) fail(`zero-size image (${width}x${height})`);
    }
    // pngjs zeroes the colour of pixels matching a tRNS key; PIL's convert('RGB') ignores tRNS entirely.
    if (type !== 'tRNS') kept.push(bytes.subarray(offset, end));
    ended = type === 'IEND';
    offset = end;
  }
  const input = Buffer.concat(kept);
  let png: PNG;
  try {
    // 16-bit samples are fetched raw so that they can be reduced exactly as PIL does, not rescaled by pngjs.
    png = PNG.sync.read(input, { skipRescale: depth === 16 });
  } catch (e) {
    return fail(`corrupt PNG data (${message(e)})`);
  }
  const n = width * height;
  const rgba = new Uint8Array(n * 4);
  const src = png.data as ArrayLike<number>;
  if (src.length !== n * 4) fail(`corrupt PNG data (decoded ${src.length} samples, expected ${n * 4})`);
  if (depth === 16) {
    // PIL opens 16-bit greyscale as mode 'I' and clips it to 0..255 on convert('RGB'); the other 16-bit
    // modes are unpacked to their high byte.
    const reduce = colorType === 0 ? (v: number) => Math.min(v, 255) : (v: number) => v >> 8;
    for (let i = 0; i < rgba.length; i++) rgba[i] = reduce(src[i]!);
  } else {
    rgba.set(src);
  }
  return toRgb(rgba, width, height, 4);
}

function decodeJpeg(bytes: Uint8Array, fail: (why: string) => never): RgbImage {
  // For plain YCbCr files, take jpeg-js's raw planes and finish the way libjpeg (PIL) does; jpeg-js's own
  // nearest-neighbour chroma upsampling is up to 46 grey levels off libjpeg's on grace_hopper.jpg.
  const layout = jpegLayout(bytes);
  const raw = layout !== undefined;
  let decoded: { width: number; height: number; data: Uint8Array };
  try {
    decoded = jpeg.decode(bytes, {
      useTArray: true,
      formatAsRGBA: false,
      // Otherwise jpeg-js decides from the file (Adobe transform flag, component count).
      ...(raw ? { colorTransform: false } : {}),
      // jpeg-js counts about 18 bytes a pixel for 4:4:4, so its default 512 MB stops near 29 MP;
      // 2 GB covers its own 100 MP resolution cap.
      maxResolutionInMP: 100,
      maxMemoryUsageInMB: 2048,
    });
  } catch (e) {
    const n = bytes.length;
    const hasEnd = n >= 4 && bytes[n - 2] === 0xff && bytes[n - 1] === 0xd9;
    return fail(
      hasEnd
        ? `corrupt JPEG data (${message(e)})`
        : `truncated JPEG data (no end-of-image marker; decoder: ${message(e)})`,
    );
  }
  const { width, height, data } = decoded;
  if (width === 0 || height === 0) fail(`zero-size image (${width}x${height})`);
  if (raw) libjpegYccToRgb(data, width, height, layout);
  return toRgb(data, width, height, 3);
}

interface ChromaLayout {
  /** Luma sampling factors over chroma 1x1. */
  h: number;
  v: number;
  /** libjpeg's triangle filter, which it skips for chroma rows of two samples or fewer (replicating them). */
  fancy: boolean;
}

/**
 * The chroma layout of a 3-component YCbCr JPEG in 4:4:4, 4:2:2 or 4:2:0. Undefined for anything else
 * (greyscale, CMYK, Adobe-transformed or unusual layouts), which keeps jpeg-js's own conversion.
 */
function jpegLayout(bytes: Uint8Array): ChromaLayout | undefined {
  let offset = 2;
  while (offset + 4 <= bytes.length && bytes[offset] === 0xff) {
    const marker = bytes[offset + 1]!;
    const length = (bytes[offset + 2]! << 8) | bytes[offset + 3]!;
    if (marker === 0xee) return undefined; // Adobe APP14: the colour transform is the file's to choose
    const isSof = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isSof) {
      const count = bytes[offset + 9];
      if (count !== 3 || offset + 10 + 9 > bytes.length) return undefined;
      const factor = (i: number): number => bytes[offset + 11 + 3 * i]!;
      const [y, cb, cr] = [factor(0), factor(1), factor(2)];
      const width = (bytes[offset + 7]! << 8) | bytes[offset + 8]!;
      const h = y >> 4;
      const v = y & 15;
      const ok = cb === 0x11 && cr === 0x11 && ((h === 1 && v === 1) || (h === 2 && (v === 1 || v === 2)));
      return ok ? { h, v, fancy: h === 2 && Math.ceil(width / 2) > 2 } : undefined;
    }
    if (marker === 0xda) return undefined;
    offset += 2 + length;
  }
  return undefined;
}

/**
 * In place: raw Y, Cb, Cr (chroma replicated by jpeg-js) to RGB as libjpeg-turbo computes it: triangle-filter
 * ("fancy") chroma upsampling (jdsample.c) and fixed-point YCbCr -> RGB with 16 fraction bits (jdcolor.c).
 */
function libjpegYccToRgb(data: Uint8Array, width: number, height: number, layout: ChromaLayout): void {
  const { h, v } = layout;
  const cw = Math.ceil(width / h);
  const ch = Math.ceil(height / v);
  const up = (c: number): Uint8Array => {
    const plane = new Uint8Array(cw * ch);
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) plane[y * cw + x] = data[(y * v * width + x * h) * 3 + c]!;
    }
    const out = new Uint8Array(width * height);
    const at = (x: number, y: number): number => plane[Math.min(Math.max(y, 0), ch - 1) * cw + x]!;
    for (let y = 0; y < height; y++) {
      const cy = Math.floor(y / v);
      // 4:2:0 weighs the nearer chroma row 3/4 and the next nearer (above for even rows) 1/4.
      const far = v === 2 ? (y % 2 === 0 ? cy - 1 : cy + 1) : cy;
      const col = (x: number): number => {
        const cx = Math.min(Math.max(x, 0), cw - 1);
        return v === 2 ? 3 * at(cx, cy) + at(cx, far) : at(cx, cy);
      };
      for (let x = 0; x < width; x++) {
        const cx = Math.floor(x / h);
        let value: number;
        if (h === 1) value = col(cx);
        else if (v === 2)
          value = (3 * col(cx) + col(x % 2 === 0 ? cx - 1 : cx + 1) + (x % 2 === 0 ? 8 : 7)) >> 4;
        else value = (3 * col(cx) + col(x % 2 === 0 ? cx - 1 : cx + 1) + (x % 2 === 0 ? 1 : 2)) >> 2;
        out[y * width + x] = value;
      }
    }
    return out;
  };
  // Without the filter, jpeg-js's replicated chroma is already what libjpeg computes.
  const plane = (c: number): Uint8Array => (layout.fancy ? up(c) : data.filter((_, i) => i % 3 === c));
  const cb = plane(1);
  const cr = plane(2);
  for (let i = 0; i < width * height; i++) {
    const y = data[i * 3]!;
    const b = cb[i]! - 128;
    const r = cr[i]! - 128;
    // Products stay below 2^31, so `>> 16` is jdcolor.c's arithmetic RIGHT_SHIFT.
    data[i * 3] = clamp255(y + ((FIX_1_402 * r + HALF) >> 16));
    data[i * 3 + 1] = clamp255(y + ((-FIX_0_34414 * b - FIX_0_71414 * r + HALF) >> 16));
    data[i * 3 + 2] = clamp255(y + ((FIX_1_772 * b + HALF) >> 16));
  }
}

// jdcolor.c's FIX(x) = (int)(x * 2^16 + 0.5).
const FIX_1_402 = 91881;
const FIX_0_34414 = 22554;
const FIX_0_71414 = 46802;
const FIX_1_772 = 116130;
const HALF = 1 << 15;

function clamp255(x: number): number {
  return x < 0 ? 0 : x > 255 ? 255 : x;
}
