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

/**
 * A folder with one sub-folder of PNG/JPEG files per class; classes are the sorted folder names. Every image is
 * decoded once into one Uint8Array, and the result is cached (atomically) under a fingerprint of the file
 * list, sizes and times, so a changed folder is decoded again.
 */
export function loadImageFolder(dir: string, o: FolderOptions = {}): ImageSet {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError(`'${dir}' is not a folder`);
  const classes = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
  if (!classes.length)
    throw new ConfigError(`'${dir}' has no class sub-folders (expected DIR/<class>/*.png|jpg)`);
  const files: { path: string; label: number }[] = [];
  const listing: string[] = [`size=${o.size?.join('x') ?? 'first'}`];
  classes.forEach((cls, label) => {
    for (const f of readdirSync(join(dir, cls))
      .filter((f) => IMAGE_FILE.test(f))
      .sort()) {
      const path = join(dir, cls, f);
      const st = statSync(path);
      files.push({ path, label });
      listing.push(`${cls}/${f}:${st.size}:${st.mtimeMs}`);
    }
  });
  if (!files.length) throw new ConfigError(`'${dir}': no .png or .jpg files in its class folders`);
  const fingerprint = sha256(new TextEncoder().encode(listing.join('\n')));
  const cachePath =
    o.cache === 'beside'
      ? join(dir, '.shufflenet-images.bin')
      : o.cache
        ? join(o.cache.dir, `${basename(resolve(dir))}-${fingerprint.slice(0, 16)}.bin`)
        : undefined;
  if (cachePath && existsSync(cachePath)) {
    const cached = decodeImageSet(bytesOf(cachePath), fingerprint);
    if (cached) return cached;
  }
  o.log?.(`decoding ${files.length} images in ${dir}`);
  let set: ImageSet | undefined;
  files.forEach(({ path, label }, i) => {
    let img = decodeImage(bytesOf(path), path);
    if (!set) {
      const [height, width] = o.size ?? [img.height, img.width];
      const images = new Uint8Array(files.length * height * width * 3);
      set = {
        count: files.length,
        height,
        width,
        channels: 3,
        images,
        labels: new Int32Array(files.length),
        classes,
      };
    }
    img = fitImage(img, set.width, set.height);
    set.images.set(img.data, i * img.data.length);
    set.labels[i] = label;
  });
  if (cachePath) {
    writeFileAtomic(cachePath, encodeImageSet(set!, fingerprint));
    o.log?.(`cached them in ${cachePath}`);
  }
  return set!;
}

export interface LoadedDataset {
  /** 'fashion-mnist', 'cifar10' or 'folder' */
  kind: string;
  set: ImageSet;
  normalize: Normalize;
}

/**
 * `fashion-mnist[:DIR]`, `cifar10:DIR` (the binary release, or train/ and test/ class folders) or
 * `folder:DIR` (class folders, or DIR/train and DIR/test (or val) of them; without a split, both are DIR).
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
    const set = loadImageFolder(splitDir(d), o);
    return { kind, set, normalize: normalize ?? channelMeanStd(set) };
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
