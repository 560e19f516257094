/** Writing image packs (src/data/pack.ts) from image-class folders: tools/pack-images.ts, tests. */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { packImages, splitPack, type PackItem } from '../data/pack.js';
import { ConfigError } from '../errors.js';
import { PACK_SUFFIX, listImageFolder, loadImagePack } from './datasets.js';
import { writeFileAtomic } from './files.js';

export interface PackOptions {
  /** Gzip the pack (level 9; default true): small JPEGs repeat their tables, CIFAR-10 shrinks ~3x. */
  gzip?: boolean;
  /** Cut the stored pack into parts of at most this many bytes each (NAME.imgpack.001, .002, ...). */
  partBytes?: number;
  /** Only the first N files (sorted) of each class. */
  perClass?: number;
  /** Decode every image of the written pack once (as training will), to fail here rather than there. */
  verify?: boolean;
  log?: (message: string) => void;
}

export interface PackResult {
  split: string;
  source: string;
  images: number;
  classes: number;
  /** The image files' bytes together. */
  imageBytes: number;
  files: { path: string; bytes: number }[];
}

/**
 * Packs an image-class folder: SRC/train and SRC/test (or val) into OUT/train.imgpack and OUT/test.imgpack
 * (or val.imgpack) when SRC has such splits, else SRC itself into OUT/train.imgpack. Each file is written
 * atomically; older files of the same split (a whole pack or parts) are removed after the new ones are in.
 */
export function packImageFolder(src: string, out: string, o: PackOptions = {}): PackResult[] {
  if (!existsSync(src) || !statSync(src).isDirectory()) throw new ConfigError(`'${src}' is not a folder`);
  const isDir = (p: string) => existsSync(p) && statSync(p).isDirectory();
  const splits = isDir(join(src, 'train'))
    ? [
        ['train', join(src, 'train')],
        ...['test', 'val'].filter((s) => isDir(join(src, s))).map((s) => [s, join(src, s)]),
      ]
    : [['train', src]];
  return splits.map(([split, dir]) => packSplit(split!, dir!, out, o));
}

function packSplit(split: string, dir: string, out: string, o: PackOptions): PackResult {
  const { classes, files } = listImageFolder(dir);
  const kept = o.perClass === undefined ? files : perClass(files, o.perClass);
  const items: PackItem[] = kept.map((f) => {
    const b = readFileSync(f.path);
    return { label: f.label, name: f.name, bytes: new Uint8Array(b.buffer, b.byteOffset, b.byteLength) };
  });
  const imageBytes = items.reduce((s, it) => s + it.bytes.length, 0);
  const whole = packImages(items, classes, { gzip: o.gzip ?? true });
  const stem = `${split}${PACK_SUFFIX}`;
  const parts = o.partBytes && whole.length > o.partBytes ? splitPack(whole, o.partBytes) : [whole];
  const names =
    parts.length === 1 ? [stem] : parts.map((_, i) => `${stem}.${String(i + 1).padStart(3, '0')}`);
  names.forEach((n, i) => writeFileAtomic(join(out, n), parts[i]!));
  // Whatever else this split had (a whole pack, more parts) would be read with the new files: remove it.
  for (const n of readdirSync(out))
    if ((n === stem || (n.startsWith(`${stem}.`) && /\.\d{3,}$/.test(n))) && !names.includes(n))
      rmSync(join(out, n), { force: true });
  const written = names.map((n, i) => ({ path: join(out, n), bytes: parts[i]!.length }));
  o.log?.(
    `${dir}: ${items.length} images, ${classes.length} classes, ${imageBytes} bytes of image files -> ` +
      written.map((w) => `${w.path} (${w.bytes} bytes)`).join(', '),
  );
  if (o.verify) {
    const set = loadImagePack(
      written.map((w) => w.path),
      { cache: false },
    );
    o.log?.(`  verified: ${set.count} images decode to ${set.width}x${set.height}x${set.channels}`);
  }
  return { split, source: dir, images: items.length, classes: classes.length, imageBytes, files: written };
}

function perClass<T extends { label: number }>(files: T[], n: number): T[] {
  const seen = new Map<number, number>();
  return files.filter((f) => {
    const k = seen.get(f.label) ?? 0;
    seen.set(f.label, k + 1);
    return k < n;
  });
}
