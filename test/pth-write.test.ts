import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Command } from 'commander';
import { unzipSync } from 'fflate';

import { addOnnxCommands } from '../src/cli/onnx.js';
import { exportOnnx } from '../src/io/onnx/export.js';
import { crc32 } from '../src/io/pytorch-write.js';
import {
  CheckpointError,
  readPytorch,
  readSafetensors,
  stateDictFromWeights,
  writePytorch,
  type DType,
  type RawTensor,
} from '../src/io/index.js';
import { createModel } from '../src/models/model.js';
import { loadModel } from '../src/node/weights.js';

const WEIGHTS = new URL('../../shared/weights/', import.meta.url);
const NO_WEIGHTS = existsSync(fileURLToPath(WEIGHTS))
  ? false
  : `official weights not found at ${fileURLToPath(WEIGHTS)}`;
const EMBEDDED = fileURLToPath(new URL('../assets/fashion-mnist/model.safetensors', import.meta.url));

/** An interpreter with torch and numpy: Debian's python3-torch lives in /usr/bin/python3 (pyenv may shadow it). */
function findTorchPython(): string | undefined {
  for (const py of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(py, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return undefined;
}
const PYTHON = findTorchPython();
const NO_TORCH = PYTHON
  ? false
  : 'python3 with torch and numpy not found (tried /usr/bin/python3 and python3): torch.load not checked';

const TORCH_DTYPE: Record<DType, string> = {
  F32: 'torch.float32',
  F64: 'torch.float64',
  F16: 'torch.float16',
  BF16: 'torch.bfloat16',
  I64: 'torch.int64',
  I32: 'torch.int32',
  I16: 'torch.int16',
  I8: 'torch.int8',
  U8: 'torch.uint8',
  BOOL: 'torch.bool',
};
const DTYPES = Object.keys(TORCH_DTYPE) as DType[];
const SIZE: Record<DType, number> = {
  F32: 4,
  F64: 8,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

const bytesOf = (t: RawTensor): Uint8Array =>
  new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const numel = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** Row-major strides, written out here rather than imported, so a wrong stride in the writer shows. */
function strides(shape: number[]): number[] {
  return shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * Math.max(b, 1), 1));
}

let seed = 7; // a fixed LCG: the same tensors every run
const randomByte = (): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed >>> 24;
};

/** A tensor of random bits (every bit pattern: NaN payloads, -0, infinities, subnormals); BOOL is 0/1. */
function tensor(dtype: DType, shape: number[]): RawTensor {
  const buf = new ArrayBuffer(numel(shape) * SIZE[dtype]);
  const bytes = new Uint8Array(buf);
  for (let i = 0; i < bytes.length; i++) bytes[i] = dtype === 'BOOL' ? randomByte() & 1 : randomByte();
  const data = {
    F32: () => new Float32Array(buf),
    F64: () => new Float64Array(buf),
    F16: () => new Uint16Array(buf),
    BF16: () => new Uint16Array(buf),
    I64: () => new BigInt64Array(buf),
    I32: () => new Int32Array(buf),
    I16: () => new Int16Array(buf),
    I8: () => new Int8Array(buf),
    U8: () => new Uint8Array(buf),
    BOOL: () => new Uint8Array(buf),
  }[dtype]();
  return { dtype, shape, data };
}

const SHAPES = [
  [],
  [0],
  [1],
  [5],
  [3, 1],
  [2, 3, 4, 5],
  [1, 0, 3],
  [2, 0],
  [300, 0],
  [70000, 0],
  [2 ** 31, 0],
];

/** Every dtype in every odd shape, under names that are neither ASCII nor plain. */
function everyDtype(): Map<string, RawTensor> {
  const m = new Map<string, RawTensor>();
  for (const dtype of DTYPES) {
    for (const shape of SHAPES) m.set(`${dtype}.[${shape.join(',')}]`, tensor(dtype, shape));
  }
  m.set('ünïcødé.名前', tensor('F32', [2, 2]));
  m.set('', tensor('I64', []));
  m.set('0', tensor('U8', [3]));
  return m;
}

function assertSameTensors(got: Map<string, RawTensor>, want: ReadonlyMap<string, RawTensor>): void {
  assert.deepEqual([...got.keys()], [...want.keys()]);
  for (const [name, w] of want) {
    const g = got.get(name)!;
    assert.equal(g.dtype, w.dtype, name);
    assert.deepEqual(g.shape, w.shape, name);
    assert.equal(g.data.constructor, w.data.constructor, name);
    assert.deepEqual(bytesOf(g), bytesOf(w), name); // bit-identical, NaN payloads included
  }
}

/** The local headers as a zip reader sees them: name, method, sizes, CRC, where the data starts. */
function localEntries(zip: Uint8Array) {
  const v = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const out = [];
  let o = 0;
  while (v.getUint32(o, true) === 0x04034b50) {
    const nameLen = v.getUint16(o + 26, true);
    const extraLen = v.getUint16(o + 28, true);
    const start = o + 30 + nameLen + extraLen;
    const size = v.getUint32(o + 22, true);
    out.push({
      name: new TextDecoder().decode(zip.subarray(o + 30, o + 30 + nameLen)),
      method: v.getUint16(o + 8, true),
      flags: v.getUint16(o + 6, true),
      crc: v.getUint32(o + 14, true),
      compressed: v.getUint32(o + 18, true),
      size,
      start,
      data: zip.subarray(start, start + size),
    });
    o = start + size;
  }
  assert.equal(v.getUint32(o, true), 0x02014b50, 'the central directory follows the last entry');
  return out;
}

interface TorchTensor {
  dtype: string;
  shape: number[];
  stride: number[];
  offset: number;
  requires_grad: boolean;
  contiguous: boolean;
  sha256: string;
}

const TORCH_REPORT = `
import collections, hashlib, json, sys, zipfile, torch
out = []
for path in sys.argv[1:]:
    assert zipfile.ZipFile(path).testzip() is None, 'bad CRC in ' + path
    d = torch.load(path, weights_only=True)
    assert type(d) is collections.OrderedDict, type(d)
    items = []
    for k, t in d.items():
        assert type(t) is torch.Tensor, (k, type(t))
        a = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        items.append([k, dict(dtype=str(t.dtype), shape=list(t.shape), stride=list(t.stride()),
                              offset=t.storage_offset(), requires_grad=t.requires_grad,
                              contiguous=t.is_contiguous(),
                              sha256=hashlib.sha256(a.numpy().tobytes()).hexdigest())])
    out.append(items)
print(json.dumps(out))
`;

/** What torch.load(path, weights_only=True) gives, per file: [name, tensor facts][] in the dict's order. */
function torchLoad(...paths: string[]): [string, TorchTensor][][] {
  const r = spawnSync('nice', [PYTHON!, '-c', TORCH_REPORT, ...paths], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  assert.equal(r.status, 0, `python failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as [string, TorchTensor][][];
}

function assertTorchSees(report: [string, TorchTensor][], want: ReadonlyMap<string, RawTensor>): void {
  assert.deepEqual(
    report.map(([k]) => k),
    [...want.keys()],
  );
  for (const [name, t] of report) {
    const w = want.get(name)!;
    assert.deepEqual(
      t,
      {
        dtype: TORCH_DTYPE[w.dtype],
        shape: w.shape,
        stride: strides(w.shape),
        offset: 0,
        requires_grad: false,
        contiguous: true,
        sha256: sha(bytesOf(w)),
      },
      name,
    );
  }
}

const dir = mkdtempSync(join(tmpdir(), 'shufflenet-pth-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('writePytorch', () => {
  it('round trip through readPytorch: every dtype, scalar, empty, 1-D and 4-D shapes, bit-identical', () => {
    const tensors = everyDtype();
    assertSameTensors(readPytorch(writePytorch(tensors)), tensors);
  });

  it('round trip of 2500 tensors (the pickle batches SETITEMS by 1000, a last lone one as SETITEM)', () => {
    for (const n of [1, 1001, 2500]) {
      const tensors = new Map([...Array(n).keys()].map((i) => [`t${i}`, tensor('F32', [i % 3])]));
      assertSameTensors(readPytorch(writePytorch(tensors)), tensors);
    }
    assertSameTensors(readPytorch(writePytorch(new Map())), new Map());
  });

  it('is deterministic: the same tensors give the same bytes', () => {
    const tensors = everyDtype();
    const a = writePytorch(tensors);
    const copy = new Map([...tensors].map(([k, t]) => [k, { ...t, data: t.data.slice() }]));
    assert.deepEqual(writePytorch(copy), a);
    assert.equal(sha(writePytorch(tensors)), sha(a));
  });

  it("lays the zip out as torch.save: stored entries, data 64-byte aligned, CRC-32, 'little', '3\\n'", () => {
    const tensors = everyDtype();
    const zip = writePytorch(tensors, { archiveName: 'model' });
    const entries = localEntries(zip);
    assert.deepEqual(
      entries.map((e) => e.name),
      [
        'model/data.pkl',
        'model/byteorder',
        ...[...tensors.keys()].map((_, i) => `model/data/${i}`),
        'model/version',
      ],
    );
    assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926); // the CRC-32 check value
    const unzipped = unzipSync(zip);
    for (const e of entries) {
      assert.equal(e.method, 0, `${e.name} is stored`);
      assert.equal(e.flags, 0, e.name);
      assert.equal(e.compressed, e.size, e.name);
      assert.equal(e.start % 64, 0, `${e.name}'s data starts at ${e.start}`);
      assert.equal(e.crc, crc32(e.data), e.name);
      assert.deepEqual(unzipped[e.name], e.data, e.name);
    }
    const text = (name: string): string => new TextDecoder().decode(unzipped[name]);
    assert.equal(text('model/byteorder'), 'little');
    assert.equal(text('model/version'), '3\n');
    [...tensors.values()].forEach((t, i) => assert.deepEqual(unzipped[`model/data/${i}`], bytesOf(t)));
    // The pickle: protocol 2, an OrderedDict, and only the globals a state_dict needs.
    const pkl = unzipped['model/data.pkl']!;
    assert.deepEqual([...pkl.subarray(0, 2)], [0x80, 2]);
    const globals = [...text('model/data.pkl').matchAll(/c([\w.]+)\n(\w+)\n/g)].map((m) => `${m[1]}.${m[2]}`);
    assert.deepEqual(globals, [
      'collections.OrderedDict',
      'torch._utils._rebuild_tensor_v2',
      ...DTYPES.map(
        (d) =>
          `torch.${{ F32: 'Float', F64: 'Double', F16: 'Half', BF16: 'BFloat16', I64: 'Long', I32: 'Int', I16: 'Short', I8: 'Char', U8: 'Byte', BOOL: 'Bool' }[d]}Storage`,
      ),
    ]);
  });

  it('refuses what it cannot write with CheckpointError, naming the tensor', () => {
    const bad = (t: RawTensor, re: RegExp): void =>
      assert.throws(
        () => writePytorch(new Map([['w', t]])),
        (e: Error) => e instanceof CheckpointError && re.test(e.message),
      );
    bad(
      { dtype: 'F32', shape: [2, 3], data: new Float32Array(5) },
      /tensor 'w': F32 \[2, 3\] needs 24 bytes, data has 20/,
    );
    bad({ dtype: 'F33' as DType, shape: [1], data: new Float32Array(1) }, /tensor 'w': unknown dtype 'F33'/);
    bad({ dtype: 'F32', shape: [-1], data: new Float32Array(0) }, /tensor 'w': shape \[-1\]/);
    bad({ dtype: 'F32', shape: [1.5], data: new Float32Array(0) }, /tensor 'w': shape \[1\.5\]/);
    bad(
      { dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 2]) },
      /tensor 'w': BOOL data holds a byte other than 0 or 1/,
    );
    assert.throws(() => writePytorch(new Map(), { archiveName: 'a/b' }), CheckpointError);
    assert.throws(() => writePytorch(new Map(), { archiveName: '' }), CheckpointError);
  });

  it('writes views of a bigger buffer as their own elements only', () => {
    const big = new Float32Array([9, 1, 2, 3, 9]);
    const t: RawTensor = { dtype: 'F32', shape: [3], data: big.subarray(1, 4) };
    const back = readPytorch(writePytorch(new Map([['v', t]])));
    assert.deepEqual(Array.from(back.get('v')!.data as Float32Array), [1, 2, 3]);
  });
});

describe('official ShuffleNet v1 checkpoints written back as .pth', () => {
  for (const g of ['g3', 'g8']) {
    it(
      `${g}: .pth.tar -> writePytorch -> readPytorch is identical, and torch.load agrees`,
      { skip: NO_WEIGHTS },
      (t) => {
        const official = readPytorch(readFileSync(new URL(`shufflenet_v1_${g}_0.5x.pth.tar`, WEIGHTS)));
        assert.ok(official.size > 100);
        const bytes = writePytorch(official);
        assertSameTensors(readPytorch(bytes), official);
        assert.deepEqual(writePytorch(readPytorch(bytes)), bytes, 'a second round trip gives the same bytes');
        if (NO_TORCH) return t.diagnostic(`skipped the torch.load check: ${NO_TORCH}`);
        const path = join(dir, `${g}.pth`);
        writeFileSync(path, bytes);
        assertTorchSees(torchLoad(path)[0]!, official);
      },
    );
  }
});

describe('torch.load(weights_only=True) reads what we write', () => {
  it('every dtype and odd shape, bit-identical (sha256 of each tensor in Python)', { skip: NO_TORCH }, () => {
    const tensors = everyDtype();
    const many = new Map([...Array(1001).keys()].map((i) => [`layer${i}.weight`, tensor('F16', [2, i % 4])]));
    const paths = [join(dir, 'every.pth'), join(dir, 'many.pt')];
    writeFileSync(paths[0]!, writePytorch(tensors));
    writeFileSync(paths[1]!, writePytorch(many, { archiveName: 'many' }));
    const [a, b] = torchLoad(...paths);
    assertTorchSees(a!, tensors);
    assertTorchSees(b!, many);
  });
});

describe('CLI: shufflenet convert to .pth / .pt', () => {
  before(() => mock.method(console, 'log', () => {}));
  after(() => mock.restoreAll());
  const cli = (...args: string[]) => {
    const program = new Command('shufflenet').exitOverride().configureOutput({ writeErr: () => {} });
    return addOnnxCommands(program).parseAsync(args, { from: 'user' });
  };

  it('.safetensors -> .pth keeps every tensor; torch.load opens it; no temporary file is left', async (t) => {
    const sub = mkdtempSync(join(dir, 'cli-'));
    const out = join(sub, 'fashion.pth');
    await cli('convert', EMBEDDED, out);
    assert.deepEqual(readdirSync(sub), ['fashion.pth']);
    const want = readSafetensors(readFileSync(EMBEDDED)).tensors;
    assertSameTensors(readPytorch(readFileSync(out)), want);
    if (NO_TORCH) return t.diagnostic(`skipped the torch.load check: ${NO_TORCH}`);
    assertTorchSees(torchLoad(out)[0]!, want);
  });

  it('.onnx -> .pt gives the model state_dict (with num_batches_tracked), as PyTorch names it', async () => {
    const model = createModel('shufflenet_v1_g3_0.25x', { seed: 5 });
    const onnx = join(dir, 'm.onnx');
    writeFileSync(onnx, exportOnnx(model.graph, model.weights, { foldBn: false, opset: 13 }));
    const out = join(dir, 'm.pt');
    await cli('convert', onnx, out);
    assertSameTensors(readPytorch(readFileSync(out)), stateDictFromWeights(model.graph, model.weights));
    // Back to a model: a .pth has no metadata, the arch is inferred from the names and shapes.
    const loaded = await loadModel(out);
    assert.equal(loaded.model.name, 'shufflenet_v1_g3_0.25x');
    for (const [k, w] of model.weights) assert.deepEqual(loaded.model.weights.get(k)!.data, w.data, k);
  });

  it('.pth.tar (legacy) -> .pth (zip) keeps the official tensors', { skip: NO_WEIGHTS }, async () => {
    const src = fileURLToPath(new URL('shufflenet_v1_g3_0.5x.pth.tar', WEIGHTS));
    const out = join(dir, 'official-zip.pth');
    await cli('convert', src, out);
    const back = readFileSync(out);
    assert.deepEqual([...back.subarray(0, 4)], [0x50, 0x4b, 3, 4]);
    assertSameTensors(readPytorch(back), readPytorch(readFileSync(src)));
  });
});
