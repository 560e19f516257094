import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'fflate';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import {
  colorJitter,
  cropResize,
  hflip,
  makeBatch,
  permutation,
  randomCrop,
  randomResizedCrop,
  Rng,
  streamSeed,
  augment,
  type Image8,
} from '../src/data/augment.js';
import {
  cifar10Binary,
  CIFAR10_LABELS,
  decodeImageSet,
  encodeImageSet,
  fashionMnist,
  parseIdx,
  sampleSet,
  type ImageSet,
} from '../src/data/datasets.js';
import { joinPackParts, packImages, parsePack, splitPack } from '../src/data/pack.js';
import {
  FASHION_MNIST_DIR,
  hasTestSplit,
  loadDataset,
  loadFashionMnist,
  loadImageFolder,
} from '../src/node/datasets.js';
import { packImageFolder } from '../src/node/pack.js';

/** An IDX file of unsigned bytes with the given dimensions. */
function idx(dims: number[], values?: Uint8Array): Uint8Array {
  const n = dims.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(4 + 4 * dims.length + n);
  out.set([0, 0, 8, dims.length]);
  const view = new DataView(out.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(values ?? Uint8Array.from({ length: n }, (_, i) => (i * 37) & 255), 4 + 4 * dims.length);
  return out;
}

describe('IDX files (Fashion-MNIST)', () => {
  const images = idx([3, 4, 5]);
  const labels = idx([3], Uint8Array.from([9, 0, 4]));

  it('parses gzipped and plain files into one byte array with labels', () => {
    for (const pack of [(b: Uint8Array) => b, (b: Uint8Array) => gzipSync(b)]) {
      const set = fashionMnist(pack(images), pack(labels));
      assert.equal(set.count, 3);
      assert.deepEqual([set.height, set.width, set.channels], [4, 5, 1]);
      assert.deepEqual([...set.labels], [9, 0, 4]);
      assert.deepEqual([...set.images], [...images.subarray(16)]);
      assert.equal(set.classes[9], 'Ankle boot');
    }
  });

  it('names the file and the problem for corrupt, truncated and mismatched files', () => {
    const bad = (f: () => unknown, re: RegExp) => assert.throws(f, re);
    bad(
      () => parseIdx(Uint8Array.from([1, 2, 8, 1, 0, 0, 0, 1, 5]), 'x.idx'),
      /x\.idx: not an IDX file \(magic number 0x01020801/,
    );
    bad(
      () => parseIdx(Uint8Array.from([0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]), 'f'),
      /IDX type 0xd is not unsigned bytes/,
    );
    bad(() => parseIdx(images.subarray(0, 10), 'img'), /img: truncated IDX header/);
    bad(
      () => parseIdx(images.subarray(0, images.length - 1), 'img'),
      /img: truncated: the header says 3 x 4 x 5 = 60 bytes, the file has 59/,
    );
    bad(() => parseIdx(Uint8Array.from([...images, 0]), 'img'), /1 unexpected bytes after/);
    const z = gzipSync(images);
    bad(() => parseIdx(z.subarray(0, z.length - 10), 'a.gz'), /a\.gz: truncated gzip data/);
    const corrupt = z.slice();
    corrupt[12]! ^= 0xff;
    corrupt[13]! ^= 0x55;
    bad(() => parseIdx(corrupt, 'a.gz'), /a\.gz: (corrupt|truncated) gzip data/);
    bad(() => fashionMnist(labels, labels, { images: 'L', labels: 'L' }), /L: expected an images file/);
    bad(
      () => fashionMnist(images, idx([2], Uint8Array.from([1, 2])), { images: 'I', labels: 'L' }),
      /I has 3 images but L has 2 labels/,
    );
    bad(
      () => fashionMnist(images, idx([3], Uint8Array.from([1, 10, 2])), { images: 'I', labels: 'L' }),
      /L: label 10 of item 1 is not a class/,
    );
  });

  it('reads the installed Fashion-MNIST test set', { skip: !existsSync(FASHION_MNIST_DIR) }, () => {
    const set = loadFashionMnist(FASHION_MNIST_DIR, 'test');
    assert.deepEqual([set.count, set.height, set.width, set.channels], [10000, 28, 28, 1]);
    const counts = new Array(10).fill(0);
    for (const l of set.labels) counts[l]++;
    assert.deepEqual(counts, new Array(10).fill(1000));
  });
});

describe('CIFAR-10 binary batches', () => {
  const record = (label: number, seed: number) => {
    const r = new Uint8Array(3073);
    r[0] = label;
    for (let i = 1; i < r.length; i++) r[i] = (i * seed) & 255;
    return r;
  };

  it('turns planar R, G, B records into HWC images with labels', () => {
    const a = Uint8Array.from([...record(3, 7), ...record(9, 11)]);
    const set = cifar10Binary([{ name: 'data_batch_1.bin', bytes: a }]);
    assert.deepEqual([set.count, set.height, set.width, set.channels], [2, 32, 32, 3]);
    assert.deepEqual([...set.labels], [3, 9]);
    assert.equal(set.classes, CIFAR10_LABELS);
    // Pixel (y=1, x=2) of image 1, channel G: plane offset 1024 + 1 * 32 + 2 in record 1.
    const p = 32 + 2;
    assert.equal(set.images[3072 + p * 3 + 1], a[3073 + 1 + 1024 + p]);
    assert.equal(set.images[p * 3 + 2], a[1 + 2048 + p]);
  });

  it('loads data_batch_1..5.bin and test_batch.bin from cifar10:DIR', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shufflenet-cifar-'));
    try {
      for (let i = 1; i <= 5; i++) writeFileSync(join(dir, `data_batch_${i}.bin`), record(i, i + 2));
      writeFileSync(join(dir, 'test_batch.bin'), Uint8Array.from([...record(0, 1), ...record(7, 2)]));
      const train = loadDataset(`cifar10:${dir}`, 'train');
      assert.deepEqual([...train.set.labels], [1, 2, 3, 4, 5]);
      assert.equal(train.normalize.mean.length, 3);
      assert.deepEqual([...loadDataset(`cifar10:${dir}`, 'test').set.labels], [0, 7]);
      rmSync(join(dir, 'data_batch_3.bin'));
      assert.throws(() => loadDataset(`cifar10:${dir}`, 'train'), /missing .*data_batch_3\.bin/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses truncated files and labels out of range', () => {
    assert.throws(
      () => cifar10Binary([{ name: 'b.bin', bytes: record(1, 3).subarray(0, 3000) }]),
      /b\.bin: 3000 bytes is not a whole number of 3073-byte/,
    );
    assert.throws(
      () => cifar10Binary([{ name: 'b.bin', bytes: record(12, 3) }]),
      /b\.bin: record 0 has label 12/,
    );
  });
});

const image = (w: number, h: number, c: number, seed: number): Image8 => ({
  width: w,
  height: h,
  channels: c,
  data: Uint8Array.from({ length: w * h * c }, (_, i) => (i * 31 + seed * 17 + ((i * i) >> 3)) & 255),
});

describe('augmentations', () => {
  const img = image(12, 10, 3, 1);

  it('are deterministic per seed and keep shapes and ranges', () => {
    const o = {
      randomResizedCrop: { scale: [0.3, 1] as [number, number] },
      flip: true,
      colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 },
    };
    const a = augment(img, o, new Rng(5));
    const b = augment(img, o, new Rng(5));
    const c = augment(img, o, new Rng(6));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.data, c.data);
    assert.deepEqual([a.width, a.height, a.channels, a.data.length], [12, 10, 3, 360]);
    const d = augment(image(28, 28, 1, 2), { randomCrop: { padding: 2 }, flip: true }, new Rng(1));
    assert.deepEqual([d.width, d.height, d.channels, d.data.length], [28, 28, 1, 784]);
  });

  it('cutout: one square of the given size per image (clipped at the borders) set to 0 after normalisation', () => {
    const [n, h, w, c] = [40, 10, 12, 3];
    const set = {
      count: n,
      height: h,
      width: w,
      channels: c as 3,
      images: Uint8Array.from({ length: n * h * w * c }, (_, i) => 1 + ((i * 7) % 250)),
      labels: new Int32Array(n),
      classes: ['a'],
    };
    const norm = { mean: [0.1, 0.3, 0.5], std: [0.5, 0.5, 0.5] }; // no pixel normalises to 0
    const idx = Int32Array.from({ length: n }, (_, i) => i);
    const plain = makeBatch(set, idx, norm).input.data;
    const cut = (seed: number) =>
      makeBatch(set, idx, norm, { options: { cutout: { size: 6 } }, rng: new Rng(seed) }).input.data;
    const a = cut(3);
    assert.deepEqual(a, cut(3));
    assert.notDeepEqual(a, cut(4));
    const sizes = new Set<string>();
    for (let b = 0; b < n; b++) {
      // The zeroed pixels of each channel form one rectangle of at most 6 x 6, the same in every channel.
      const zeros = Array.from({ length: c }, () => [] as [number, number][]);
      for (let ch = 0; ch < c; ch++)
        for (let y = 0; y < h; y++)
          for (let x = 0; x < w; x++) {
            const i = ((b * c + ch) * h + y) * w + x;
            if (a[i] === 0) zeros[ch]!.push([y, x]);
            else assert.equal(a[i], plain[i]);
          }
      assert.deepEqual(zeros[1], zeros[0]);
      assert.deepEqual(zeros[2], zeros[0]);
      const [ys, xs] = [zeros[0]!.map(([y]) => y), zeros[0]!.map(([, x]) => x)];
      const [y0, y1, x0, x1] = [Math.min(...ys), Math.max(...ys), Math.min(...xs), Math.max(...xs)];
      assert.equal(ys.length, (y1 - y0 + 1) * (x1 - x0 + 1), `image ${b}: a rectangle`);
      assert.ok(y1 - y0 < 6 && x1 - x0 < 6, `image ${b}: at most 6 x 6`);
      assert.ok(
        (y1 - y0 + 1 === 6 || y0 === 0 || y1 === h - 1) && (x1 - x0 + 1 === 6 || x0 === 0 || x1 === w - 1),
      );
      sizes.add(`${y1 - y0 + 1}x${x1 - x0 + 1}`);
    }
    assert.ok(sizes.has('6x6') && sizes.size > 1, [...sizes].join(' '));
  });

  it('are exact where they should be the identity', () => {
    assert.deepEqual(cropResize(img, 0, 0, 10, 12, 10, 12), img);
    assert.deepEqual(randomResizedCrop(img, 10, 12, new Rng(1), [1, 1], [1.2, 1.2]), img);
    assert.deepEqual(randomCrop(img, 10, 12, 0, new Rng(3)), img);
    assert.deepEqual(hflip(hflip(img)), img);
    assert.deepEqual(colorJitter(img, {}, new Rng(1)).data, img.data);
    assert.equal(hflip(img).data[0], img.data[11 * 3]);
  });

  it('random crop with padding shifts the image and fills with zeros', () => {
    const seen = new Set<string>();
    for (let s = 0; s < 40; s++) {
      const out = randomCrop(img, 10, 12, 2, new Rng(s));
      // Find the shift by matching one interior pixel row.
      seen.add(out.data.slice(0, 6).join());
    }
    assert.ok(seen.size > 3, 'different seeds give different crops');
    assert.ok(seen.has('0,0,0,0,0,0'), 'some crops start in the zero padding');
  });

  it('colour jitter clamps to 0..255 and does not wrap', () => {
    const bright = { width: 1, height: 1, channels: 3, data: Uint8Array.from([250, 128, 5]) };
    for (let s = 0; s < 20; s++) {
      const out = colorJitter(bright, { brightness: 0.9, contrast: 0.9, saturation: 0.9 }, new Rng(s));
      assert.ok(out.data[0]! >= out.data[2]!, `seed ${s}: ${[...out.data]}`);
    }
  });

  it('shuffles with a seeded permutation; Rng state can be saved and continued', () => {
    const p = permutation(50, new Rng(streamSeed(1, 2)));
    assert.deepEqual(
      [...p].sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.deepEqual(p, permutation(50, new Rng(streamSeed(1, 2))));
    assert.notDeepEqual(p, permutation(50, new Rng(streamSeed(1, 3))));
    const r = new Rng(9);
    r.next();
    const saved = r.state;
    const a = [r.next(), r.next()];
    const q = new Rng(0);
    q.state = saved;
    assert.deepEqual([q.next(), q.next()], a);
  });

  it('makes normalised NCHW float32 batches', () => {
    const set: ImageSet = {
      count: 2,
      height: 2,
      width: 3,
      channels: 3,
      images: Uint8Array.from({ length: 36 }, (_, i) => i * 7),
      labels: Int32Array.from([4, 1]),
      classes: ['a', 'b', 'c', 'd', 'e'],
    };
    const norm = { mean: [0.5, 0.25, 0], std: [0.5, 0.25, 1] };
    const { input, labels } = makeBatch(set, [1, 0], norm);
    assert.deepEqual(input.shape, [2, 3, 2, 3]);
    assert.deepEqual([...labels], [1, 4]);
    // Batch 0 is image 1; channel 1, pixel (1, 2) = byte 18 + (1 * 3 + 2) * 3 + 1.
    const v = set.images[18 + 5 * 3 + 1]!;
    assert.ok(Math.abs(input.data[(0 * 3 + 1) * 6 + 5]! - (v / 255 - 0.25) / 0.25) < 1e-6);
    assert.throws(() => makeBatch(set, [0], { mean: [0.5], std: [1] }), /1 means for 3-channel/);
  });
});

describe('image folders', () => {
  const root = mkdtempSync(join(tmpdir(), 'shufflenet-data-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  const png = (path: string, w: number, h: number, v: (x: number, y: number) => [number, number, number]) => {
    const p = new PNG({ width: w, height: h });
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const [r, g, b] = v(x, y);
        p.data.set([r, g, b, 255], (y * w + x) * 4);
      }
    writeFileSync(path, PNG.sync.write(p));
  };

  it('decodes sorted class folders once into one array and caches them', () => {
    const dir = join(root, 'set');
    for (const cls of ['zebra', 'ant']) mkdirSync(join(dir, cls), { recursive: true });
    png(join(dir, 'zebra', '1.png'), 4, 4, (x, y) => [x * 10, y * 10, 200]);
    png(join(dir, 'ant', 'b.png'), 4, 4, () => [1, 2, 3]);
    png(join(dir, 'ant', 'c.png'), 8, 6, (x) => [x < 4 ? 0 : 255, 0, 0]); // resized and centre-cropped to 4x4
    writeFileSync(join(dir, 'ant', 'notes.txt'), 'not an image');
    const set = loadImageFolder(dir, { cache: 'beside' });
    assert.deepEqual(set.classes, ['ant', 'zebra']);
    assert.deepEqual([set.count, set.height, set.width, set.channels], [3, 4, 4, 3]);
    assert.deepEqual([...set.labels], [0, 0, 1]);
    assert.deepEqual([...set.images.subarray(0, 3)], [1, 2, 3]); // ant/b.png, first pixel
    assert.deepEqual([...set.images.subarray(48, 54)], [0, 0, 0, 0, 0, 0]); // ant/c.png, left half red 0
    assert.deepEqual([...set.images.subarray(96 + 3 * 4 * 3 + 1 * 3, 96 + 3 * 4 * 3 + 2 * 3)], [10, 30, 200]);
    assert.ok(readdirSync(dir).includes('.shufflenet-images.bin'));
    assert.deepEqual(loadImageFolder(dir, { cache: 'beside' }), { ...set, images: set.images });

    png(join(dir, 'zebra', '2.png'), 4, 4, () => [9, 9, 9]);
    assert.equal(loadImageFolder(dir, { cache: 'beside' }).count, 4, 'a changed folder is decoded again');

    const cacheDir = join(root, 'cache');
    loadImageFolder(dir, { cache: { dir: cacheDir } });
    assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith('.bin')).length, 1);
    assert.ok(!readdirSync(cacheDir).some((f) => f.endsWith('.tmp')));
  });

  it('uses train/ and test/ splits of a folder dataset', () => {
    const dir = join(root, 'split');
    for (const split of ['train', 'test'])
      for (const cls of ['a', 'b']) {
        mkdirSync(join(dir, split, cls), { recursive: true });
        png(join(dir, split, cls, '0.png'), 2, 2, () => [split === 'train' ? 10 : 20, 0, 0]);
      }
    const train = loadDataset(`folder:${dir}`, 'train', { cache: false });
    const test = loadDataset(`folder:${dir}`, 'test', { cache: false });
    assert.equal(train.set.images[0], 10);
    assert.equal(test.set.images[0], 20);
    assert.ok(Math.abs(train.normalize.mean[0]! - 10 / 255) < 1e-9);
  });

  it('--limit takes a seeded random subset, so class-sorted folders keep every class', () => {
    const sorted: ImageSet = {
      count: 100,
      height: 1,
      width: 1,
      channels: 1,
      images: Uint8Array.from({ length: 100 }, (_, i) => i),
      labels: Int32Array.from({ length: 100 }, (_, i) => Math.floor(i / 10)),
      classes: Array.from({ length: 10 }, (_, i) => String(i)),
    };
    const a = sampleSet(sorted, 30, 1);
    assert.deepEqual(a, sampleSet(sorted, 30, 1));
    assert.equal(a.count, 30);
    assert.ok(new Set(a.labels).size >= 7, `classes ${[...a.labels]}`);
    assert.deepEqual(
      [...a.labels],
      [...a.images].map((v) => Math.floor(v / 10)),
    );
    assert.equal(sampleSet(sorted, 200, 1), sorted);
  });

  it('cache files round-trip and refuse another source', () => {
    const set: ImageSet = {
      count: 2,
      height: 1,
      width: 2,
      channels: 1,
      images: Uint8Array.from([1, 2, 3, 4]),
      labels: Int32Array.from([1, 0]),
      classes: ['x', 'y'],
    };
    const bytes = encodeImageSet(set, 'abc');
    assert.deepEqual(decodeImageSet(bytes, 'abc'), set);
    assert.equal(decodeImageSet(bytes, 'abd'), undefined);
    assert.equal(decodeImageSet(bytes.subarray(0, bytes.length - 1), 'abc'), undefined);
  });
});

describe('image packs (tools/pack-images.ts)', () => {
  const root = mkdtempSync(join(tmpdir(), 'shufflenet-pack-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const cifar = join(import.meta.dirname, '..', '..', 'shared', 'datasets', 'cifar10');

  /** A JPEG of w x h with a pattern from `seed` (jpeg-js, quality 80). */
  const jpg = (w: number, h: number, seed: number): Uint8Array => {
    const data = Buffer.alloc(w * h * 4);
    for (let i = 0; i < w * h; i++)
      data.set([(i * 7 + seed * 40) & 255, (i * 13 + seed) & 255, (seed * 91) & 255, 255], i * 4);
    return new Uint8Array(jpeg.encode({ data, width: w, height: h }, 80).data);
  };
  /** A train/test dataset of JPEG class folders: `per` images a class and split. */
  const folders = (dir: string, classes: string[], per: number, size = 8) => {
    for (const split of ['train', 'test'])
      classes.forEach((cls, c) => {
        mkdirSync(join(dir, split, cls), { recursive: true });
        for (let i = 0; i < per; i++)
          writeFileSync(
            join(dir, split, cls, `${i}.jpg`),
            jpg(size, size, c * 10 + i + (split === 'test' ? 5 : 0)),
          );
      });
  };

  it('packs the JPEG bytes unchanged, and decodes to the same images and labels as the folders', () => {
    const src = join(root, 'synthetic');
    folders(src, ['b', 'a'], 3);
    for (const [name, o] of [
      ['gzipped', {}],
      ['plain', { gzip: false }],
      ['in parts', { partBytes: 300 }],
    ] as const) {
      const out = join(root, `out-${name}`);
      const r = packImageFolder(src, out, o);
      assert.deepEqual(
        r.map((p) => [p.split, p.images, p.classes]),
        [
          ['train', 6, 2],
          ['test', 6, 2],
        ],
      );
      if (name === 'in parts') assert.ok(r[0]!.files.length > 1, `${r[0]!.files.length} parts`);
      else assert.deepEqual(readdirSync(out).sort(), ['test.imgpack', 'train.imgpack']);
      for (const split of ['train', 'test'] as const) {
        const fromFolders = loadDataset(`folder:${src}`, split, { cache: false });
        const fromPack = loadDataset(`folder:${out}`, split, { cache: false });
        assert.deepEqual(fromPack.set, fromFolders.set, `${name} ${split}`);
        assert.deepEqual(fromPack.normalize, fromFolders.normalize);
      }
      assert.ok(hasTestSplit(`folder:${out}`));
    }
    // The stored bytes are the files' own.
    const pack = parsePack(readFileSync(join(root, 'out-gzipped', 'train.imgpack')), 'train.imgpack');
    assert.deepEqual(pack.classes, ['a', 'b']);
    assert.deepEqual(pack.files.slice(0, 2), ['a/0.jpg', 'a/1.jpg']);
    assert.deepEqual([...pack.labels], [0, 0, 0, 1, 1, 1]);
    assert.deepEqual(pack.image(4), new Uint8Array(readFileSync(join(src, 'train', 'b', '1.jpg'))));
    // Packing again in parts replaces the whole pack (and back), so no stale file is read with the new ones.
    packImageFolder(src, join(root, 'out-gzipped'), { partBytes: 300 });
    assert.ok(!readdirSync(join(root, 'out-gzipped')).includes('train.imgpack'));
    packImageFolder(src, join(root, 'out-gzipped'));
    assert.deepEqual(readdirSync(join(root, 'out-gzipped')).sort(), ['test.imgpack', 'train.imgpack']);
    // Without a test split, folder:OUT trains without evaluation.
    const only = join(root, 'out-train-only');
    packImageFolder(join(src, 'train'), only);
    assert.deepEqual(readdirSync(only), ['train.imgpack']);
    assert.equal(hasTestSplit(`folder:${only}`), false);
  });

  it(
    'gives bit-identical tensors to the CIFAR-10 JPEG folders',
    { skip: !existsSync(cifar) && 'no ../shared/datasets/cifar10' },
    () => {
      // A few dozen CIFAR-10 JPEGs: the first 3 of each class in train, 2 in test.
      const src = join(root, 'cifar-src');
      for (const [split, n] of [
        ['train', 3],
        ['test', 2],
      ] as const)
        for (const cls of CIFAR10_LABELS) {
          mkdirSync(join(src, split, cls), { recursive: true });
          for (const f of readdirSync(join(cifar, split, cls))
            .sort()
            .slice(0, n))
            copyFileSync(join(cifar, split, cls, f), join(src, split, cls, f));
        }
      const out = join(root, 'cifar-pack');
      packImageFolder(src, out, { partBytes: 4096 });
      assert.ok(readdirSync(out).filter((f) => f.startsWith('train.imgpack.')).length > 1);
      for (const split of ['train', 'test'] as const) {
        const a = loadDataset(`cifar10:${src}`, split, { cache: false });
        const b = loadDataset(`cifar10:${out}`, split, { cache: false });
        assert.equal(b.set.count, split === 'train' ? 30 : 20);
        assert.deepEqual(b.set.classes, CIFAR10_LABELS);
        assert.deepEqual(b.normalize, a.normalize);
        assert.deepEqual([...b.set.labels], [...a.set.labels]);
        assert.deepEqual(b.set.images, a.set.images, `${split}: pixels`);
        const idx = Int32Array.from({ length: 8 }, (_, i) => (i * 7) % b.set.count);
        const x = makeBatch(a.set, idx, a.normalize);
        const y = makeBatch(b.set, idx, b.normalize);
        assert.deepEqual(y.input.data, x.input.data, `${split}: normalised batch`);
      }
    },
  );

  it('names the file and the problem for damaged packs', () => {
    const items = [0, 1, 2].map((i) => ({ label: i % 2, name: `c${i % 2}/${i}.jpg`, bytes: jpg(4, 4, i) }));
    const good = packImages(items, ['c0', 'c1']);
    const bad = (bytes: Uint8Array, re: RegExp) => assert.throws(() => parsePack(bytes, 'x.imgpack'), re);
    assert.equal(parsePack(good, 'x.imgpack').count, 3);
    bad(Uint8Array.from([1, 2, 3]), /^DatasetError: x\.imgpack: not an image pack \(3 bytes\)/);
    bad(
      new TextEncoder().encode('PK\x03\x04 a zip, not a pack at all'),
      /x\.imgpack: not an image pack \(starts with 50 4b 03 04/,
    );
    bad(good.subarray(0, 10), /x\.imgpack: truncated image pack \(10 bytes/);
    bad(good.subarray(0, 40), /x\.imgpack: truncated image pack \(its \d+-byte header runs past/);
    bad(
      good.subarray(0, good.length - 5),
      /x\.imgpack: truncated image pack: \d+ bytes, its header says \d+ \(3 images/,
    );
    bad(gzipSync(good).subarray(0, 200), /x\.imgpack: truncated gzip data/);
    const edit = (f: (v: DataView, indexAt: number) => void) => {
      const b = good.slice();
      const v = new DataView(b.buffer);
      f(v, 16 + v.getUint32(12, true));
      return b;
    };
    bad(
      edit((v) => v.setUint32(8, 7, true)),
      /x\.imgpack: image pack format version 7; this program reads version 1/,
    );
    bad(
      edit((v, at) => v.setUint32(at + 12 + 4, 1e6, true)),
      /x\.imgpack: index: image 1 \(c1\/1\.jpg\) is bytes 1000000\.\.\d+ of the data, outside its \d+ bytes/,
    );
    bad(
      edit((v, at) => v.setUint32(at + 24, 5, true)),
      /x\.imgpack: index: image 2 \(c0\/2\.jpg\) has label 5, not a class in \[0, 2\)/,
    );
    bad(
      edit((v) => v.setUint8(v.byteLength - 3, v.getUint8(v.byteLength - 3) ^ 1)),
      /x\.imgpack: image data checksum mismatch/,
    );
    bad(splitPack(good, 200)[0]!, /x\.imgpack: this is one part of a split pack/);
    assert.throws(
      () => packImages([{ ...items[0]!, label: 2 }], ['c0', 'c1']),
      /c0\/0\.jpg: label 2 is not a class/,
    );

    // Parts: all of one pack, whole.
    const parts = splitPack(good, 300).map((bytes, i) => ({ name: `x.imgpack.00${i + 1}`, bytes }));
    assert.ok(parts.length >= 3);
    assert.deepEqual(joinPackParts([...parts].reverse()), good);
    const join_ = (p: typeof parts, re: RegExp) => assert.throws(() => joinPackParts(p), re);
    join_(parts.slice(1), /image pack x\.imgpack\.002: missing part\(s\) 1 of \d+/);
    join_([parts[0]!, parts[0]!, ...parts.slice(2)], /x\.imgpack\.001 and x\.imgpack\.001 are the same part/);
    join_(
      [{ ...parts[1]!, bytes: parts[1]!.bytes.subarray(0, 100) }, parts[0]!],
      /x\.imgpack\.002: truncated part of an image pack \(64 of its 264 bytes\)/,
    );
    const other = splitPack(packImages(items.slice(1), ['c0', 'c1']), 300);
    join_(
      [parts[0]!, { name: 'y.imgpack.002', bytes: other[1]! }],
      /y\.imgpack\.002 and x\.imgpack\.001 are parts of different image packs/,
    );
    join_([{ name: 'x.imgpack.001', bytes: good }], /x\.imgpack\.001: a whole image pack, not a part/);
    const flipped = parts.map((p) => ({ ...p, bytes: p.bytes.slice() }));
    flipped[1]!.bytes[50]! ^= 1;
    join_(flipped, /the joined parts fail their checksum/);

    // Through the loader: the file's path, and for a bad image inside a good pack, which image.
    const dir = join(root, 'damaged');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'train.imgpack'), good.subarray(0, good.length - 1));
    assert.throws(
      () => loadDataset(`folder:${dir}`, 'train', { cache: false }),
      (e: Error) => e.message.startsWith(`${join(dir, 'train.imgpack')}: truncated image pack`),
    );
    const broken = packImages(
      [items[0]!, { ...items[1]!, bytes: items[1]!.bytes.subarray(0, 40) }],
      ['c0', 'c1'],
    );
    writeFileSync(join(dir, 'train.imgpack'), broken);
    assert.throws(
      () => loadDataset(`folder:${dir}`, 'train', { cache: false }),
      /train\.imgpack: image 1 \(c1\/1\.jpg\): truncated JPEG data/,
    );
    assert.throws(
      () => loadDataset(`cifar10:${dir}`, 'test', { cache: false }),
      /has a train\.imgpack but no test\.imgpack or val\.imgpack/,
    );
  });

  it('the tool: usage errors exit 2; packs in parts', () => {
    const tool = ['--import', 'tsx', join(import.meta.dirname, '..', 'tools', 'pack-images.ts')];
    const bad = spawnSync(process.execPath, [...tool, 'only-one'], { encoding: 'utf8' });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /expected SRC and OUT/);
    const src = join(root, 'tool-src');
    folders(src, ['x', 'y'], 2);
    const out = join(root, 'tool-out');
    const r = spawnSync(process.execPath, [...tool, src, out, '--part-mib', '0.0003'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /4 images, 2 classes/);
    assert.match(r.stdout, /verified: 4 images decode to 8x8x3/);
    assert.ok(readdirSync(out).includes('train.imgpack.002'));
    const missing = spawnSync(process.execPath, [...tool, join(root, 'nope'), out], { encoding: 'utf8' });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /pack-images: '.*nope' is not a folder/);
  });
});
