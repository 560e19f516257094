/** Datasets from files: Fashion-MNIST IDX files, CIFAR-10 binary batches, folders of images (one per class). */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import type { Normalize } from '../data/augment.js';
import {
  channelMeanStd,
  cifar10Binary,
  CIFAR10_STATS,
  decodeImageSet,
  encodeImageSet,
  fashionMnist,
  fitImage,
  FASHION_MNIST_STATS,
  type ImageSet,
} from '../data/datasets.js';
import { joinPackParts, parsePack } from '../data/pack.js';
import { sha256, writeFileAtomic } from './files.js';
import { decodeImage } from './image.js';

export type Split = 'train' | 'test';

/** Where Debian's dataset-fashion-mnist package puts the files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

const bytesOf = (path: string) => {
  const b = readFileSync(path);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
};

/** `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, gzipped or not. */
export function loadFashionMnist(dir: string, split: Split): ImageSet {
  const find = (kind: string) => {
    const stem = join(dir, `${split === 'train' ? 'train' : 't10k'}-${kind}-ubyte`);
    const path = [`${stem}.gz`, stem].find((p) => existsSync(p));
    if (!path)
      throw new ConfigError(`Fashion-MNIST: no ${stem}.gz or ${stem} (apt install dataset-fashion-mnist)`);
    return path;
  };
  const [images, labels] = [find('images-idx3'), find('labels-idx1')];
  return fashionMnist(bytesOf(images), bytesOf(labels), { images, labels });
}

/** The binary release: `data_batch_1..5.bin` (train) and `test_batch.bin`, in DIR or DIR/cifar-10-batches-bin. */
export function loadCifar10Binary(dir: string, split: Split): ImageSet {
  const names = split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'];
  const missing = names.map((n) => join(dir, n)).filter((p) => !existsSync(p));
  if (missing.length) throw new ConfigError(`CIFAR-10: missing ${missing.join(', ')}`);
  return cifar10Binary(names.map((n) => ({ name: join(dir, n), bytes: bytesOf(join(dir, n)) })));
}

const IMAGE_FILE = /\.(png|jpe?g)$/i;

export interface FolderOptions {
  /** H x W of every image (others are resized, shorter side, and centre-cropped); default: the first image's. */
  size?: readonly [number, number];
  /** Where the decoded set is cached: 'beside' the folder, a directory, or nowhere (false). */
  cache?: 'beside' | { dir: string } | false;
  log?: (message: string) => void;
}

/** An image-class folder's files: classes are the sorted sub-folder names, files sorted in each. */
export interface FolderListing {
  classes: string[];
  /** path: on disk; name: class/file (as a pack stores it). */
  files: { path: string; name: string; label: number }[];
  /** One line per file with its size and time (the decoded cache's fingerprint). */
  lines: string[];
}

/** The PNG/JPEG files of an image-class folder, in the order every loader and the packer use. */
export function listImageFolder(dir: string): FolderListing {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError(`'${dir}' is not a folder`);
  const classes = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
  if (!classes.length)
    throw new ConfigError(`'${dir}' has no class sub-folders (expected DIR/<class>/*.png|jpg)`);
  const files: FolderListing['files'] = [];
  const lines: string[] = [];
  classes.forEach((cls, label) => {
    for (const f of readdirSync(join(dir, cls))
      .filter((f) => IMAGE_FILE.test(f))
      .sort()) {
      const path = join(dir, cls, f);
      const st = statSync(path);
      files.push({ path, name: `${cls}/${f}`, label });
      lines.push(`${cls}/${f}:${st.size}:${st.mtimeMs}`);
    }
  });
  if (!files.length) throw new ConfigError(`'${dir}': no .png or .jpg files in its class folders`);
  return { classes, files, lines };
}

/** What decodeImages decodes: `count` images, image i's file bytes, name (for messages) and label. */
interface EncodedImages {
  count: number;
  item(i: number): { bytes: Uint8Array; name: string; label: number };
  classes: readonly string[];
}

/**
 * The decoded set of the images that `open` lists, all made the first image's size (or o.size) the way the
 * evaluation does, cached under `source.fingerprint` as o.cache says (`open` is called only when the cache
 * cannot answer). The folder and pack loaders share it, so the same files give the same bytes.
 */
function decodeImages(
  source: { name: string; fingerprint: string; cacheBeside: string },
  open: () => EncodedImages,
  o: FolderOptions,
): ImageSet {
  const { fingerprint } = source;
  const cachePath =
    o.cache === 'beside'
      ? source.cacheBeside
      : o.cache
        ? join(o.cache.dir, `${basename(resolve(source.name))}-${fingerprint.slice(0, 16)}.bin`)
        : undefined;
  if (cachePath && existsSync(cachePath)) {
    const cached = decodeImageSet(bytesOf(cachePath), fingerprint);
    if (cached) return cached;
  }
  const { count, item, classes } = open();
  o.log?.(`decoding ${count} images in ${source.name}`);
  let set: ImageSet | undefined;
  for (let i = 0; i < count; i++) {
    const { bytes, name, label } = item(i);
    let img = decodeImage(bytes, name);
    if (!set) {
      const [height, width] = o.size ?? [img.height, img.width];
      const images = new Uint8Array(count * height * width * 3);
      set = { count, height, width, channels: 3, images, labels: new Int32Array(count), classes };
    }
    img = fitImage(img, set.width, set.height);
    set.images.set(img.data, i * img.data.length);
    set.labels[i] = label;
  }
  if (cachePath) {
    writeFileAtomic(cachePath, encodeImageSet(set!, fingerprint));
    o.log?.(`cached them in ${cachePath}`);
  }
  return set!;
}

/**
 * A folder with one sub-folder of PNG/JPEG files per class; classes are the sorted folder names. Every image is
 * decoded once into one Uint8Array, and the result is cached (atomically) under a fingerprint of the file
 * list, sizes and times, so a changed folder is decoded again.
 */
export function loadImageFolder(dir: string, o: FolderOptions = {}): ImageSet {
  const { classes, files, lines } = listImageFolder(dir);
  const listing = [`size=${o.size?.join('x') ?? 'first'}`, ...lines];
  const fingerprint = sha256(new TextEncoder().encode(listing.join('\n')));
  return decodeImages(
    { name: dir, fingerprint, cacheBeside: join(dir, '.shufflenet-images.bin') },
    () => ({
      count: files.length,
      item: (i) => ({ bytes: bytesOf(files[i]!.path), name: files[i]!.path, label: files[i]!.label }),
      classes,
    }),
    o,
  );
}

/** A pack's file name for a split: SPLIT.imgpack, or its parts SPLIT.imgpack.001, .002, ... */
export const PACK_SUFFIX = '.imgpack';
const PART_NAME = /\.imgpack\.\d{3,}$/;

/**
 * The pack of `split` in `dir` (tools/pack-images.ts writes them): DIR/train.imgpack for the training split,
 * DIR/test.imgpack (else val.imgpack) for the test split, or their parts; undefined when there is none.
 */
export function findPack(dir: string, split: Split): string[] | undefined {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return undefined;
  const names = readdirSync(dir);
  for (const stem of split === 'train' ? ['train'] : ['test', 'val']) {
    const whole = `${stem}${PACK_SUFFIX}`;
    if (names.includes(whole)) return [join(dir, whole)];
    const parts = names.filter((n) => n.startsWith(`${whole}.`) && PART_NAME.test(n)).sort();
    if (parts.length) return parts.map((n) => join(dir, n));
  }
  return undefined;
}

/**
 * The images of a pack (one file, or all the parts of one), decoded by the same decoder and resizing as an
 * image folder: the same files give the same ImageSet. Cached like a folder, under a fingerprint of the
 * files' names, sizes and times. Damaged packs throw a DatasetError naming the file and the problem.
 */
export function loadImagePack(paths: readonly string[], o: FolderOptions = {}): ImageSet {
  if (!paths.length) throw new ConfigError('no image pack files given');
  const missing = paths.filter((p) => !existsSync(p));
  if (missing.length) throw new ConfigError(`no such image pack file: ${missing.join(', ')}`);
  const lines = paths.map((p) => {
    const st = statSync(p);
    return `${basename(p)}:${st.size}:${st.mtimeMs}`;
  });
  const fingerprint = sha256(
    new TextEncoder().encode([`pack size=${o.size?.join('x') ?? 'first'}`, ...lines].join('\n')),
  );
  const name = paths.length === 1 ? paths[0]! : paths[0]!.replace(/\.\d+$/, '');
  return decodeImages(
    { name, fingerprint, cacheBeside: `${name}.decoded.bin` },
    () => {
      const bytes =
        paths.length === 1
          ? bytesOf(paths[0]!)
          : joinPackParts(paths.map((p) => ({ name: p, bytes: bytesOf(p) })));
      const pack = parsePack(bytes, name);
      return {
        count: pack.count,
        item: (i) => ({
          bytes: pack.image(i),
          name: `${name}: image ${i} (${pack.files[i]})`,
          label: pack.labels[i]!,
        }),
        classes: pack.classes,
      };
    },
    o,
  );
}

export interface LoadedDataset {
  /** 'fashion-mnist', 'cifar10' or 'folder' */
  kind: string;
  set: ImageSet;
  normalize: Normalize;
}

/**
 * `fashion-mnist[:DIR]`, `cifar10:DIR` (the binary release, train/ and test/ class folders, or image packs) or
 * `folder:DIR` (class folders, or DIR/train and DIR/test (or val) of them; without a split, both are DIR; or
 * image packs). Image packs (tools/pack-images.ts): DIR/train.imgpack and DIR/test.imgpack (or val), each
 * possibly in parts (train.imgpack.001, ...), decoded as the folders they were made from.
 */
export function loadDataset(spec: string, split: Split, o: FolderOptions = {}): LoadedDataset {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const dir = colon < 0 ? '' : spec.slice(colon + 1);
  const splitDir = (d: string) => {
    const names = split === 'train' ? ['train'] : ['test', 'val'];
    const sub = names.map((n) => join(d, n)).find((p) => existsSync(p) && statSync(p).isDirectory());
    return sub ?? d;
  };
  const folder = (d: string, normalize?: Normalize): LoadedDataset => {
    const set = findPack(d, 'train') ? loadPackSplit(d) : loadImageFolder(splitDir(d), o);
    return { kind, set, normalize: normalize ?? channelMeanStd(set) };
  };
  const loadPackSplit = (d: string) => {
    const paths = findPack(d, split);
    if (!paths)
      throw new ConfigError(
        `'${d}' has a train${PACK_SUFFIX} but no test${PACK_SUFFIX} or val${PACK_SUFFIX}`,
      );
    return loadImagePack(paths, o);
  };
  if (kind === 'fashion-mnist') {
    return { kind, set: loadFashionMnist(dir || FASHION_MNIST_DIR, split), normalize: FASHION_MNIST_STATS };
  }
  if (kind === 'cifar10' && dir) {
    const bin = [dir, join(dir, 'cifar-10-batches-bin')].find((d) => existsSync(join(d, 'test_batch.bin')));
    if (bin) return { kind, set: loadCifar10Binary(bin, split), normalize: CIFAR10_STATS };
    return folder(dir, CIFAR10_STATS);
  }
  // Statistics of the split itself; evaluation takes the training statistics from the checkpoint instead.
  if (kind === 'folder' && dir) return folder(dir);
  throw new ConfigError(`--dataset '${spec}': expected fashion-mnist[:DIR], cifar10:DIR or folder:DIR`);
}

/**
 * Whether `folder:DIR` has a test split of its own (DIR/test or DIR/val folders, or a test or val pack);
 * without one, training runs without evaluation. Every other dataset has one.
 */
export function hasTestSplit(spec: string): boolean {
  if (!spec.startsWith('folder:')) return true;
  const dir = spec.slice('folder:'.length);
  if (findPack(dir, 'train')) return findPack(dir, 'test') !== undefined;
  return ['test', 'val'].some((s) => existsSync(join(dir, s)) && statSync(join(dir, s)).isDirectory());
}
