import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MEGVII_PREPROCESS, preprocess } from '../src/data/image.js';
import { IMAGENET_LABELS, topK } from '../src/data/labels.js';
import { buildPreset, createModel, execute } from '../src/index.js';
import { CheckpointError, exportSafetensors, readCheckpoint, weightsFromStateDict } from '../src/io/index.js';
import { WEIGHTS, type WeightsEntry } from '../src/models/weights.js';
import { sha256 } from '../src/node/files.js';
import { loadImage } from '../src/node/image.js';
import { loadModel, resolveWeights } from '../src/node/weights.js';
import { decode, maxAbsDiff, readFixture, type Blob } from './helpers/fixtures.js';
import { syntheticInput } from './helpers/synthetic.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const shared = join(root, '..', 'shared');
const weightsDir = join(shared, 'weights');
const skip = existsSync(weightsDir) ? false : `official weights not found at ${weightsDir}`;
const skipImages = existsSync(join(shared, 'images')) ? false : `photos not found at ${shared}/images`;

interface Official {
  preset: string;
  file: string;
  input: number[];
  logits: Blob;
}
const official = readFixture<{ official: Official[] }>('models.json').official;

describe('the authors ImageNet weights', { skip }, () => {
  for (const o of official) {
    for (const ext of ['.pth.tar', '.safetensors']) {
      const file = o.file.replace('.pth.tar', ext);
      it(`${file}: logits equal PyTorch running the authors' code within 1e-4`, async () => {
        const { model, archFrom } = await loadModel(join(weightsDir, file));
        assert.equal(model.name, o.preset);
        assert.equal(archFrom, 'registry'); // recognised by sha256, both formats
        const y = model.forward(syntheticInput(o.input, true));
        const expected = decode(o.logits);
        const diff = maxAbsDiff(y, expected);
        assert.ok(diff <= 1e-4, `max |diff| ${diff}`);
        assert.ok(Math.max(...expected.data.map(Math.abs)) > 1, 'logits are not trivially small');
      });
    }
  }

  const photos: [string, number, string][] = [
    ['chelsea.png', 285, 'Egyptian cat'],
    ['coffee.png', 967, 'espresso'],
    ['camera.png', 872, 'tripod'],
    ['grace_hopper.jpg', 457, 'bow tie'],
  ];
  for (const g of [3, 8]) {
    it(`0.5x g=${g} classifies the photos as the authors' model does`, { skip: skipImages }, async () => {
      const { model } = await loadModel(join(weightsDir, `shufflenet_v1_g${g}_0.5x.pth.tar`));
      for (const [file, index, label] of photos) {
        const x = preprocess(await loadImage(join(shared, 'images', file)), MEGVII_PREPROCESS);
        const [top] = topK(model.forward(x).data, 1, IMAGENET_LABELS);
        assert.equal(top!.index, index, `${file}: got ${top!.index} ${top!.label}`);
        assert.equal(top!.label, label);
      }
    });
  }

  it('the shuffle in the paper order gives wrong outputs with these weights (SOURCE.md)', async () => {
    const { model, checkpoint } = await loadModel(join(weightsDir, 'shufflenet_v1_g3_0.5x.safetensors'));
    const paper = buildPreset('shufflenet_v1_g3_0.5x', { shuffleOrder: 'paper' });
    const x = syntheticInput([1, 3, 224, 224], true);
    const wrong = execute(paper, weightsFromStateDict(paper, checkpoint.tensors), x);
    assert.ok(maxAbsDiff(wrong, model.forward(x)) > 1, 'the order must matter');
  });

  it('refuses weights of another architecture, naming every mis-shaped tensor', () => {
    const g8 = readCheckpoint(readFileSync(join(weightsDir, 'shufflenet_v1_g8_0.5x.safetensors')), 'g8');
    assert.throws(
      () => weightsFromStateDict(buildPreset('shufflenet_v1_g3_0.5x'), g8.tensors, 'g8'),
      (e: Error) =>
        e instanceof CheckpointError &&
        /g8 does not fit shufflenet_v1_g3_0\.5x: wrong shape \d+: first_conv\.0\.weight: expected \[12, 3, 3, 3\], got \[16, 3, 3, 3\]/.test(
          e.message,
        ),
    );
    const tensors = new Map(g8.tensors);
    tensors.delete('classifier.0.weight');
    tensors.set('classifier.0.bias', { dtype: 'F32', shape: [1000], data: new Float32Array(1000) });
    assert.throws(
      () => weightsFromStateDict(buildPreset('shufflenet_v1_g8_0.5x'), tensors),
      /missing 1: classifier\.0\.weight \[1000, 768\]; unexpected 1: classifier\.0\.bias/,
    );
  });

  it('the CLI classifies several files, reports a bad one by name and exits 1', { skip: skipImages }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'shufflenet-'));
    const broken = join(dir, 'broken.png');
    writeFileSync(broken, readFileSync(join(shared, 'images', 'chelsea.png')).subarray(0, 5000));
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'classify',
        join(shared, 'images', 'chelsea.png'),
        broken,
        join(shared, 'images', 'coffee.png'),
        '--weights',
        join(weightsDir, 'shufflenet_v1_g8_0.5x.pth.tar'),
        '--json',
        '--logits',
      ],
      { cwd: root, encoding: 'utf8' },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /broken\.png/);
    const out = JSON.parse(r.stdout) as {
      file: string;
      top?: { index: number; label: string }[];
      logits?: number[];
    }[];
    assert.equal(out.length, 3);
    assert.equal(out[0]!.top![0]!.label, 'Egyptian cat');
    assert.equal(out[0]!.logits!.length, 1000);
    assert.ok(!out[1]!.top);
    assert.equal(out[2]!.top![0]!.index, 967);
  });
});

describe('checkpoints written by this project', () => {
  it('export -> safetensors -> import is exact, and the arch is read back from the metadata', async () => {
    const model = createModel('shufflenet_v1_g2_0.25x', { seed: 4 });
    const dir = mkdtempSync(join(tmpdir(), 'shufflenet-'));
    const file = join(dir, 'm.safetensors');
    writeFileSync(file, exportSafetensors(model.graph, model.weights, { labels: 'imagenet' }));
    const loaded = await loadModel(file);
    assert.equal(loaded.archFrom, 'metadata');
    assert.equal(loaded.checkpoint.tensors.get('first_conv.1.num_batches_tracked')?.dtype, 'I64');
    for (const [k, t] of model.weights) assert.deepEqual(loaded.model.weights.get(k)!.data, t.data, k);
  });

  it('a corrupt or foreign file gets a clear error naming it', () => {
    assert.throws(
      () => readCheckpoint(new TextEncoder().encode('hello world, not weights'), 'notes.txt'),
      /notes\.txt: not a safetensors or PyTorch checkpoint/,
    );
    const model = createModel('shufflenet_v1_g1_0.25x');
    const bytes = exportSafetensors(model.graph, model.weights);
    assert.throws(
      () => readCheckpoint(bytes.subarray(0, bytes.length - 100), 'cut.safetensors'),
      (e: Error) => e instanceof CheckpointError && /^cut\.safetensors: /.test(e.message),
    );
  });
});

describe('the weights registry', () => {
  let server: Server;
  let url = '';
  let hits = 0;
  const payload = new TextEncoder().encode('pretend these are weights');
  before(async () => {
    server = createServer((req, res) => {
      hits++;
      if (req.url === '/w.bin') res.end(payload);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  const entry = (over: Partial<WeightsEntry>): WeightsEntry => ({
    ...WEIGHTS[0]!,
    name: 'test_weights',
    file: 'test.bin',
    sha256: sha256(payload),
    url: `${url}/w.bin`,
    ...over,
  });

  it('downloads once into the cache with sha256 verification, then uses the cache', async () => {
    const home = mkdtempSync(join(tmpdir(), 'shufflenet-home-'));
    const registry = [entry({})];
    hits = 0;
    const first = await resolveWeights('test_weights', { home, registry });
    assert.deepEqual(first.bytes, payload);
    assert.equal(first.path, join(home, 'test.bin'));
    const second = await resolveWeights('test_weights', { home, registry });
    assert.deepEqual(second.bytes, payload);
    assert.equal(hits, 1);
    assert.deepEqual(readdirSync(home), ['test.bin']); // no temporary files left behind
  });

  it('refuses a download with the wrong sha256 and saves nothing', async () => {
    const home = mkdtempSync(join(tmpdir(), 'shufflenet-home-'));
    const registry = [entry({ sha256: '0'.repeat(64) })];
    await assert.rejects(
      resolveWeights('test_weights', { home, registry }),
      /has sha256 [0-9a-f]{64}, expected 0{64}; nothing was saved/,
    );
    assert.deepEqual(readdirSync(home), []);
  });

  it('says where to get the file when it cannot download', async () => {
    const home = mkdtempSync(join(tmpdir(), 'shufflenet-home-'));
    const registry = [entry({ url: `${url}/missing.bin` })];
    await assert.rejects(
      resolveWeights('test_weights', { home, registry }),
      (e: Error) => /HTTP 404/.test(e.message) && e.message.includes(`save it as ${join(home, 'test.bin')}`),
    );
  });

  it('names the registered weights for an unknown name', async () => {
    await assert.rejects(
      resolveWeights('no_such_weights'),
      /registered: shufflenet_v1_g3_0\.5x, shufflenet_v1_g8_0\.5x/,
    );
  });
});
