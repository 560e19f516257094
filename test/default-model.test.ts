// The embedded default model (issue 5): a ShuffleNet trained here on Fashion-MNIST, shipped in
// assets/fashion-mnist with its training command, metrics log and curve; `classify` and `eval` use it when no
// weights are given.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { readCheckpoint } from '../src/io/checkpoint.js';
import { FASHION_MNIST_DIR } from '../src/node/datasets.js';
import { defaultModelPath } from '../src/node/weights.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const assets = join(root, 'assets', 'fashion-mnist');
const samples = [
  't-shirt-top',
  'trouser',
  'pullover',
  'dress',
  'coat',
  'sandal',
  'shirt',
  'sneaker',
  'bag',
  'ankle-boot',
];

function shufflenet(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    encoding: 'utf8',
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the embedded Fashion-MNIST model', () => {
  it('ships with its training command, metrics log and curve, and says what it is', () => {
    assert.equal(defaultModelPath(), join(assets, 'model.safetensors'));
    const meta = readCheckpoint(new Uint8Array(readFileSync(defaultModelPath()))).metadata;
    assert.equal(meta.dataset, 'fashion-mnist');
    assert.match(meta.arch ?? '', /^shufflenet_v1_g3_/);
    assert.deepEqual(JSON.parse(meta.model_options!), {
      inputChannels: 1,
      numClasses: 10,
      inputSize: [28, 28],
      smallInput: true,
    });
    for (const f of ['metrics.jsonl.gz', 'training.svg', 'README.md'])
      assert.ok(existsSync(join(assets, f)), f);
    // The log ends where the model's metadata says training ended.
    const lines = gunzipSync(readFileSync(join(assets, 'metrics.jsonl.gz')))
      .toString('utf8')
      .trim()
      .split('\n');
    const steps = lines
      .map((l) => JSON.parse(l) as { type: string; step: number })
      .filter((r) => r.type === 'step');
    assert.equal(String(steps.at(-1)!.step), meta.step);
    assert.match(readFileSync(join(assets, 'README.md'), 'utf8'), /shufflenet train --dataset fashion-mnist/);
  });

  it('classify without --weights labels the ten shipped samples', () => {
    const files = samples.map((s) => join('assets', 'fashion-mnist', 'samples', `${s}.png`));
    const r = shufflenet('classify', ...files, '--json', '--topk', '1');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { file: string; top: { label: string }[] }[];
    const norm = (label: string) => label.toLowerCase().replace(/[^a-z]+/g, '-');
    for (const o of out) assert.equal(norm(o.top[0]!.label), basename(o.file, '.png'), o.file);
  });

  it(
    'reaches at least 93% top-1 on the 10,000 test images (eval without --weights)',
    { skip: !existsSync(FASHION_MNIST_DIR) && `no ${FASHION_MNIST_DIR}` },
    () => {
      const r = shufflenet('eval', '--dataset', 'fashion-mnist', '--json');
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout) as { top1: number; count: number };
      console.log(`embedded model: test top-1 ${(result.top1 * 100).toFixed(2)}% on ${result.count} images`);
      assert.equal(result.count, 10_000);
      assert.ok(result.top1 >= 0.93, `top-1 ${result.top1}`);
    },
  );
});
