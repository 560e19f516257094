/**
 * Packs an image-class-folder dataset into image packs (src/data/pack.ts): the files' bytes as they are (no
 * re-encoding: the pixels stay the JPEGs'), an index, gzipped, optionally cut into parts. `shufflenet train
 * --dataset cifar10:OUT` (or folder:OUT) reads them like the folders.
 *
 *   npx tsx tools/pack-images.ts SRC OUT [--part-mib N] [--no-gzip] [--per-class N] [--no-verify]
 *
 * SRC with train/ and test/ (or val/) folders gives OUT/train.imgpack and OUT/test.imgpack; SRC of class
 * folders alone gives OUT/train.imgpack. E.g. CIFAR-10 for the GPU machine (docs: README.md, "GPU machine"):
 *   npx tsx tools/pack-images.ts ../shared/datasets/cifar10 dist/cifar10-pack
 */
import { parseArgs } from 'node:util';
import { packImageFolder } from '../src/node/pack.js';

const USAGE = `npx tsx tools/pack-images.ts SRC OUT [options]
  SRC               image-class folders (SRC/<class>/*.jpg|png), or SRC/train and SRC/test (or val) of them
  OUT               the folder for train.imgpack and test.imgpack (or val.imgpack)
  --part-mib N      cut each pack into parts of at most N MiB (NAME.imgpack.001, .002, ...)
  --no-gzip         store the pack uncompressed (default: gzip level 9)
  --per-class N     only the first N files of each class (small packs for tests)
  --no-verify       do not decode the written packs once to check them`;

function main(): number {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        'part-mib': { type: 'string' },
        'no-gzip': { type: 'boolean', default: false },
        'per-class': { type: 'string' },
        'no-verify': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values: a, positionals } = parsed;
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 2) {
    console.error(`expected SRC and OUT\n\n${USAGE}`);
    return 2;
  }
  const positive = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!(n > 0) || !Number.isFinite(n)) throw new RangeError(`${flag} '${v}': expected a number > 0`);
    return n;
  };
  const [src, out] = positionals as [string, string];
  const t0 = performance.now();
  const mib = positive('--part-mib', a['part-mib']);
  const perClass = positive('--per-class', a['per-class']);
  const results = packImageFolder(src, out, {
    gzip: !a['no-gzip'],
    partBytes: mib === undefined ? undefined : Math.floor(mib * 2 ** 20),
    perClass: perClass === undefined ? undefined : Math.floor(perClass),
    verify: !a['no-verify'],
    log: (m) => console.log(m),
  });
  const total = results.reduce((s, r) => s + r.files.reduce((t, f) => t + f.bytes, 0), 0);
  console.log(
    `${results.length} pack(s), ${(total / 2 ** 20).toFixed(1)} MiB in all, ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return 0;
}

try {
  process.exitCode = main();
} catch (e) {
  console.error(`pack-images: ${(e as Error).message}`);
  process.exitCode = 1;
}
