/**
 * Image packs: an image-class-folder dataset as one file, for machines where thousands of small files are
 * slow to carry (the GPU machine: one transfer, a size limit). The files' bytes are stored as they are (the
 * JPEGs or PNGs are not re-encoded, so the decoded pixels are those of the folder), after an index.
 * Platform-neutral: everything works on bytes; listing, reading and writing files is in src/node/datasets.ts
 * and tools/pack-images.ts.
 *
 * A pack (all integers little-endian):
 *   bytes 0-7    'SNIMGPAK'
 *   8-11         u32 format version (1)
 *   12-15        u32 H, the length of the JSON header that follows:
 *                {count, classes, files (each image's class/file name), dataBytes, adler32 (of the data)}
 *   16+H ...     the index, count x 12 bytes: u32 label, u32 offset (from the data's start), u32 length
 *   then         the data: the image files' bytes, one after another
 * The whole pack may be gzipped (packImages' `gzip`; found by the gzip magic number), and the stored file may
 * be cut into parts (splitPack), each with a header of its own, which joinPackParts checks and joins.
 */
import { gzipSync } from 'fflate';
import { DatasetError, maybeGunzip } from './datasets.js';

export const PACK_MAGIC = 'SNIMGPAK';
export const PACK_PART_MAGIC = 'SNIMGPRT';
export const PACK_VERSION = 1;
const PART_HEADER = 36;
const ENTRY = 12;

/** One image of a pack: its class index, the name it had (for messages) and its file's bytes. */
export interface PackItem {
  label: number;
  name: string;
  bytes: Uint8Array;
}

export interface ImagePack {
  classes: string[];
  /** The images' names (class/file), in pack order. */
  files: string[];
  labels: Int32Array;
  /** Image i's file bytes: a view into the pack. */
  image(i: number): Uint8Array;
  count: number;
}

interface PackHeader {
  count: number;
  classes: string[];
  files: string[];
  dataBytes: number;
  adler32: number;
}

/** Adler-32 (zlib's checksum): cheap, and enough to tell a damaged pack from a good one. */
export function adler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  // 5552 is the most bytes that cannot overflow b before the modulo (zlib's NMAX).
  for (let start = 0; start < bytes.length; start += 5552) {
    const end = Math.min(start + 5552, bytes.length);
    for (let i = start; i < end; i++) {
      a += bytes[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** The pack of `items` (in this order) with these class names; gzipped (level 9) when `gzip` is set. */
export function packImages(
  items: readonly PackItem[],
  classes: readonly string[],
  o: { gzip?: boolean } = {},
): Uint8Array {
  let dataBytes = 0;
  for (const it of items) {
    if (!Number.isInteger(it.label) || it.label < 0 || it.label >= classes.length)
      throw new DatasetError(`${it.name}: label ${it.label} is not a class in [0, ${classes.length})`);
    dataBytes += it.bytes.length;
  }
  if (dataBytes > 0xffffffff)
    throw new DatasetError(`${dataBytes} bytes of images: a pack holds at most 4 GiB (split the dataset)`);
  const data = new Uint8Array(dataBytes);
  const index = new Uint8Array(items.length * ENTRY);
  const iv = new DataView(index.buffer);
  let at = 0;
  items.forEach((it, i) => {
    data.set(it.bytes, at);
    iv.setUint32(i * ENTRY, it.label, true);
    iv.setUint32(i * ENTRY + 4, at, true);
    iv.setUint32(i * ENTRY + 8, it.bytes.length, true);
    at += it.bytes.length;
  });
  const header: PackHeader = {
    count: items.length,
    classes: [...classes],
    files: items.map((it) => it.name),
    dataBytes,
    adler32: adler32(data),
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(16 + json.length + index.length + data.length);
  out.set(new TextEncoder().encode(PACK_MAGIC));
  const view = new DataView(out.buffer);
  view.setUint32(8, PACK_VERSION, true);
  view.setUint32(12, json.length, true);
  out.set(json, 16);
  out.set(index, 16 + json.length);
  out.set(data, 16 + json.length + index.length);
  return o.gzip ? gzipSync(out, { level: 9 }) : out;
}

const ascii = (b: Uint8Array) => String.fromCharCode(...b);

/**
 * A pack's classes, labels and images (views into `bytes`, inflated first if gzipped). Every inconsistency
 * (wrong magic or version, truncation, an index entry outside the data, a label that is not a class, a
 * checksum mismatch) throws a DatasetError that starts with `name`.
 */
export function parsePack(bytes: Uint8Array, name: string): ImagePack {
  const fail = (why: string): never => {
    throw new DatasetError(`${name}: ${why}`);
  };
  bytes = maybeGunzip(bytes, name);
  if (bytes.length >= 8 && ascii(bytes.subarray(0, 8)) === PACK_PART_MAGIC)
    fail('this is one part of a split pack: load all its parts together (name.imgpack.001, .002, ...)');
  if (bytes.length < 16) {
    const start = ascii(bytes.subarray(0, 8));
    fail(
      start === PACK_MAGIC.slice(0, start.length)
        ? `truncated image pack (${bytes.length} bytes, shorter than its 16-byte header)`
        : `not an image pack (${bytes.length} bytes)`,
    );
  }
  const magic = bytes.subarray(0, 8);
  if (ascii(magic) !== PACK_MAGIC) {
    const hex = [...magic].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    fail(`not an image pack (starts with ${hex}, expected '${PACK_MAGIC}')`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== PACK_VERSION)
    fail(`image pack format version ${version}; this program reads version ${PACK_VERSION}`);
  const hl = view.getUint32(12, true);
  if (16 + hl > bytes.length)
    fail(`truncated image pack (its ${hl}-byte header runs past the end of the ${bytes.length}-byte file)`);
  let h: PackHeader;
  try {
    h = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + hl))) as PackHeader;
  } catch (e) {
    return fail(`corrupt image pack header (${(e as Error).message})`);
  }
  const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  if (
    !isCount(h.count) ||
    !isCount(h.dataBytes) ||
    !isCount(h.adler32) ||
    !Array.isArray(h.classes) ||
    !h.classes.length ||
    !Array.isArray(h.files) ||
    h.files.length !== h.count
  )
    fail('corrupt image pack header (count, classes, files, dataBytes or adler32 missing or inconsistent)');
  const indexStart = 16 + hl;
  const dataStart = indexStart + h.count * ENTRY;
  const expected = dataStart + h.dataBytes;
  if (bytes.length < expected)
    fail(
      `truncated image pack: ${bytes.length} bytes, its header says ${expected} ` +
        `(${h.count} images, ${h.dataBytes} bytes of image data)`,
    );
  if (bytes.length > expected)
    fail(`${bytes.length - expected} unexpected bytes after the ${h.count} images of this image pack`);
  const labels = new Int32Array(h.count);
  const offsets = new Uint32Array(h.count);
  const lengths = new Uint32Array(h.count);
  for (let i = 0; i < h.count; i++) {
    const e = indexStart + i * ENTRY;
    const [label, offset, length] = [0, 4, 8].map((k) => view.getUint32(e + k, true)) as [
      number,
      number,
      number,
    ];
    const what = `image ${i} (${h.files[i]})`;
    if (label >= h.classes.length)
      fail(`index: ${what} has label ${label}, not a class in [0, ${h.classes.length})`);
    if (length === 0 || offset + length > h.dataBytes)
      fail(
        `index: ${what} is bytes ${offset}..${offset + length} of the data, ` +
          `outside its ${h.dataBytes} bytes (damaged index)`,
      );
    [labels[i], offsets[i], lengths[i]] = [label, offset, length];
  }
  const data = bytes.subarray(dataStart);
  const sum = adler32(data);
  if (sum !== h.adler32)
    fail(
      `image data checksum mismatch (adler32 ${sum.toString(16)}, header ${h.adler32.toString(16)}): damaged`,
    );
  return {
    classes: h.classes,
    files: h.files,
    labels,
    count: h.count,
    image: (i) => data.subarray(offsets[i]!, offsets[i]! + lengths[i]!),
  };
}

/**
 * A stored pack (gzipped or not) cut into parts of at most `maxBytes` each (header included). Each part:
 * 'SNIMGPRT', u32 version, u32 part index, u32 part count, u32 adler32 of the whole, u64 whole length
 * (two u32: low, high), u32 length of this part's slice, then the slice.
 */
export function splitPack(whole: Uint8Array, maxBytes: number): Uint8Array[] {
  const chunk = Math.floor(maxBytes) - PART_HEADER;
  if (!(chunk > 0))
    throw new RangeError(`parts of ${maxBytes} bytes cannot hold a ${PART_HEADER}-byte header`);
  const count = Math.max(1, Math.ceil(whole.length / chunk));
  const sum = adler32(whole);
  return Array.from({ length: count }, (_, i) => {
    const slice = whole.subarray(i * chunk, Math.min((i + 1) * chunk, whole.length));
    const part = new Uint8Array(PART_HEADER + slice.length);
    part.set(new TextEncoder().encode(PACK_PART_MAGIC));
    const v = new DataView(part.buffer);
    v.setUint32(8, PACK_VERSION, true);
    v.setUint32(12, i, true);
    v.setUint32(16, count, true);
    v.setUint32(20, sum, true);
    v.setUint32(24, whole.length % 2 ** 32, true);
    v.setUint32(28, Math.floor(whole.length / 2 ** 32), true);
    v.setUint32(32, slice.length, true);
    part.set(slice, PART_HEADER);
    return part;
  });
}

/** The stored pack from its parts (in any order): all present, from the same pack, whole and undamaged. */
export function joinPackParts(parts: readonly { name: string; bytes: Uint8Array }[]): Uint8Array {
  if (!parts.length) throw new DatasetError('no parts of an image pack');
  const heads = parts.map(({ name, bytes }) => {
    const fail = (why: string): never => {
      throw new DatasetError(`${name}: ${why}`);
    };
    const start = ascii(bytes.subarray(0, 8));
    if (bytes.length < PART_HEADER && start === PACK_PART_MAGIC.slice(0, start.length))
      fail(
        `truncated part of an image pack (${bytes.length} bytes, shorter than its ${PART_HEADER}-byte header)`,
      );
    if (start !== PACK_PART_MAGIC)
      fail(
        start === PACK_MAGIC
          ? 'a whole image pack, not a part: name it NAME.imgpack'
          : `not a part of an image pack (expected '${PACK_PART_MAGIC}' and a ${PART_HEADER}-byte header)`,
      );
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = v.getUint32(8, true);
    if (version !== PACK_VERSION)
      fail(`image pack part format version ${version}; this program reads version ${PACK_VERSION}`);
    const length = v.getUint32(32, true);
    if (bytes.length !== PART_HEADER + length)
      fail(
        bytes.length < PART_HEADER + length
          ? `truncated part of an image pack (${bytes.length - PART_HEADER} of its ${length} bytes)`
          : `${bytes.length - PART_HEADER - length} unexpected bytes after this part's ${length}`,
      );
    return {
      name,
      bytes,
      index: v.getUint32(12, true),
      count: v.getUint32(16, true),
      sum: v.getUint32(20, true),
      total: v.getUint32(24, true) + v.getUint32(28, true) * 2 ** 32,
    };
  });
  const first = heads[0]!;
  for (const p of heads) {
    if (p.count !== first.count || p.sum !== first.sum || p.total !== first.total)
      throw new DatasetError(
        `${p.name} and ${first.name} are parts of different image packs (part count, length or checksum differ)`,
      );
    if (p.index >= p.count)
      throw new DatasetError(`${p.name}: part index ${p.index} is not in [0, ${p.count})`);
  }
  const byIndex = new Map<number, (typeof heads)[number]>();
  for (const p of heads) {
    const dup = byIndex.get(p.index);
    if (dup)
      throw new DatasetError(`${dup.name} and ${p.name} are the same part (${p.index + 1} of ${p.count})`);
    byIndex.set(p.index, p);
  }
  const missing = Array.from({ length: first.count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length)
    throw new DatasetError(
      `image pack ${first.name}: missing part(s) ${missing.map((i) => i + 1).join(', ')} of ${first.count}`,
    );
  const size = heads.reduce((s, p) => s + p.bytes.length - PART_HEADER, 0);
  if (size !== first.total)
    throw new DatasetError(
      `image pack ${first.name}: its ${first.count} parts hold ${size} bytes, their headers say ${first.total}`,
    );
  const whole = new Uint8Array(size);
  let at = 0;
  for (let i = 0; i < first.count; i++) {
    const b = byIndex.get(i)!.bytes.subarray(PART_HEADER);
    whole.set(b, at);
    at += b.length;
  }
  if (adler32(whole) !== first.sum)
    throw new DatasetError(`image pack ${first.name}: the joined parts fail their checksum (a damaged part)`);
  return whole;
}
