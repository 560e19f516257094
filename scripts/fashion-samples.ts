// Writes the first test image of each Fashion-MNIST class as a greyscale PNG into assets/fashion-mnist/samples
// (the samples that `shufflenet classify` and the browser demo ship with). Needs Debian's dataset-fashion-mnist.
// Run: npx tsx scripts/fashion-samples.ts
import { mkdirSync } from 'node:fs';
import { PNG } from 'pngjs';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/node/datasets.js';
import { writeFileAtomic } from '../src/node/files.js';

const out = new URL('../assets/fashion-mnist/samples/', import.meta.url).pathname;
mkdirSync(out, { recursive: true });
const set = loadFashionMnist(FASHION_MNIST_DIR, 'test');
const size = set.height * set.width;
for (let label = 0; label < 10; label++) {
  const i = set.labels.indexOf(label);
  const png = new PNG({ width: set.width, height: set.height, colorType: 0, inputColorType: 0 });
  png.data = Buffer.from(set.images.subarray(i * size, (i + 1) * size));
  const name = FASHION_MNIST_LABELS[label]!.toLowerCase().replace(/[^a-z]+/g, '-');
  const file = `${out}${name}.png`;
  writeFileAtomic(file, PNG.sync.write(png, { colorType: 0, inputColorType: 0 }));
  console.log(`test image ${i}: ${file}`);
}
