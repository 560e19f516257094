import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  CheckpointError,
  readPytorch,
  readSafetensors,
  toFloat32,
  writeSafetensors,
  type RawTensor,
} from '../src/io/index.js';

const FIXTURES = new URL('./fixtures/io/', import.meta.url);
const WEIGHTS = new URL('../../shared/weights/', import.meta.url);
const HAVE_WEIGHTS = existsSync(fileURLToPath(WEIGHTS));
const NO_WEIGHTS = HAVE_WEIGHTS ? false : `official weights not found at ${fileURLToPath(WEIGHTS)}`;
const PWNED = '/tmp/pwned';

const fixture = (name: string): Uint8Array => readFileSync(new URL(name, FIXTURES));
const weights = (name: string): Uint8Array => readFileSync(new URL(name, WEIGHTS));

interface Expected {
  dtype: string;
  shape: number[];
  values: (number | string)[];
  bits?: number[];
}
const EXPECTED = JSON.parse(readFileSync(new URL('tiny_expected.json', FIXTURES), 'utf8')) as Record<
  string,
  Expected
>;

const bytesOf = (t: RawTensor): Uint8Array =>
  new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Same bytes at an odd offset of a bigger buffer: readers must copy out, not alias unaligned memory. */
function unaligned(bytes: Uint8Array): Uint8Array {
  const big = new Uint8Array(bytes.length + 3);
  big.set(bytes, 3);
  return big.subarray(3);
}

function assertMatchesExpected(tensors: Map<string, RawTensor>): void {
  assert.deepEqual([...tensors.keys()], Object.keys(EXPECTED));
  for (const [name, want] of Object.entries(EXPECTED)) {
    const t = tensors.get(name) as RawTensor;
    assert.equal(t.dtype, want.dtype, name);
    assert.deepEqual(t.shape, want.shape, name);
    const values = want.values.map(Number); // 'Infinity' etc. arrive as strings
    switch (t.dtype) {
      case 'I64':
        assert.deepEqual(Array.from(t.data as BigInt64Array), values.map(BigInt), name);
        break;
      case 'F16':
      case 'BF16':
        assert.deepEqual(Array.from(t.data as Uint16Array), want.bits, name);
        assert.deepEqual(Array.from(toFloat32(t, name)), values, name);
        break;
      default:
        // deepEqual on numbers is Object.is: exact, and -0 differs from 0.
        assert.deepEqual(Array.from(t.data as Float64Array), values, name);
    }
    if (t.dtype === 'F32' || t.dtype === 'F64') {
      assert.deepEqual(Array.from(toFloat32(t, name)), values.map(Math.fround), name);
    }
  }
}

/** Runs fn and requires that it either succeeds or throws a CheckpointError, nothing else. */
function onlyCheckpointError(fn: () => unknown, what: string): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (!(e instanceof CheckpointError))
      assert.fail(`${what}: threw ${String(e)} instead of a CheckpointError`);
    return false;
  }
}

describe('PyTorch fixtures', () => {
  it('reads the zip format (torch >= 1.6) exactly', () => {
    assertMatchesExpected(readPytorch(fixture('tiny_zip.pt')));
  });

  it("reads the legacy format, unwraps {'state_dict'} and strips 'module.'", () => {
    assertMatchesExpected(readPytorch(fixture('tiny_legacy.pth.tar')));
  });

  it("unwraps {'model': state_dict} and ignores non-tensor entries", () => {
    assertMatchesExpected(readPytorch(fixture('tiny_model_zip.pt')));
  });

  it('copies out of unaligned input', () => {
    assertMatchesExpected(readPytorch(unaligned(fixture('tiny_legacy.pth.tar'))));
    assertMatchesExpected(readPytorch(unaligned(fixture('tiny_zip.pt'))));
  });

  it('toFloat32 refuses integer tensors, naming them', () => {
    const t = readPytorch(fixture('tiny_zip.pt')).get('bn.num_batches_tracked') as RawTensor;
    assert.throws(() => toFloat32(t, 'bn.num_batches_tracked'), {
      name: 'CheckpointError',
      message: /tensor 'bn\.num_batches_tracked' has dtype I64/,
    });
  });

  it('gives CheckpointError for every truncation', () => {
    for (const name of ['tiny_zip.pt', 'tiny_legacy.pth.tar', 'tiny_model_zip.pt']) {
      const bytes = fixture(name);
      for (let cut = 0; cut < bytes.length; cut += name.endsWith('.tar') ? 1 : 3) {
        assert.equal(
          onlyCheckpointError(() => readPytorch(bytes.subarray(0, cut)), `${name} cut at ${cut}`),
          false,
        );
      }
    }
  });

  it('gives CheckpointError or a result, never a crash, for corrupted bytes', () => {
    let seed = 12345; // a fixed LCG so failures reproduce
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (const name of ['tiny_zip.pt', 'tiny_legacy.pth.tar']) {
      const original = fixture(name);
      for (let trial = 0; trial < 1500; trial++) {
        const bytes = original.slice();
        for (let k = 1 + rand(3); k > 0; k--) bytes[rand(bytes.length)] = rand(256);
        onlyCheckpointError(() => readPytorch(bytes), `${name} trial ${trial}`);
      }
    }
  });
});

describe('malicious pickles', () => {
  const pwnedBefore = existsSync(PWNED);
  const cases: [string, string][] = [
    ['evil_zip.pt', 'posix.system'],
    ['evil_legacy.pth.tar', 'posix.system'],
    ['evil_raw.pkl', 'posix.system'],
    ['evil_eval_p4.pkl', 'builtins.eval'],
  ];
  for (const [file, global] of cases) {
    it(`refuses ${file} naming '${global}'`, () => {
      assert.throws(
        () => readPytorch(fixture(file)),
        (e: unknown) => {
          assert.ok(e instanceof CheckpointError);
          assert.ok(e.message.includes(`refusing to load global '${global}'`), e.message);
          assert.match(e.message, /never run code/);
          return true;
        },
      );
      if (!pwnedBefore) assert.equal(existsSync(PWNED), false, `${PWNED} was created`);
    });
  }

  it('refuses other dangerous globals, via GLOBAL and STACK_GLOBAL', () => {
    const enc = (s: string): number[] => [...new TextEncoder().encode(s)];
    const viaGlobal = (mod: string, name: string): Uint8Array =>
      new Uint8Array([0x80, 2, 0x63, ...enc(`${mod}\n${name}\n`), 0x29, 0x52, 0x2e]); // GLOBAL () REDUCE STOP
    const viaStack = (mod: string, name: string): Uint8Array =>
      new Uint8Array([
        0x80,
        4,
        0x8c,
        mod.length,
        ...enc(mod),
        0x8c,
        name.length,
        ...enc(name),
        0x93,
        0x29,
        0x52,
        0x2e,
      ]);
    for (const [mod, name] of [
      ['os', 'system'],
      ['subprocess', 'Popen'],
      ['builtins', 'exec'],
      ['torch.storage', '_load_from_bytes'],
      ['collections', '__builtins__'],
    ] as const) {
      for (const bytes of [viaGlobal(mod, name), viaStack(mod, name)]) {
        assert.throws(() => readPytorch(bytes), {
          name: 'CheckpointError',
          message: new RegExp(`refusing to load global '${mod}\\.${name}'`),
        });
      }
    }
  });

  it('refuses calling allowed values that are not functions', () => {
    const bytes = new Uint8Array([
      0x80,
      2,
      0x63,
      ...new TextEncoder().encode('torch\nFloatStorage\n'),
      0x29,
      0x52,
      0x2e,
    ]);
    assert.throws(() => readPytorch(bytes), { name: 'CheckpointError', message: /not an allowed global/ });
  });
});

describe('safetensors', () => {
  it('round-trips writeSafetensors -> readSafetensors bit for bit', () => {
    const tensors = readPytorch(fixture('tiny_zip.pt'));
    const file = writeSafetensors(tensors, { note: 'tiny' });
    const headerLen = Number(new DataView(file.buffer).getBigUint64(0, true));
    assert.equal(headerLen % 8, 0, 'header padded to 8 bytes');
    const back = readSafetensors(unaligned(file));
    assert.deepEqual(back.metadata, { note: 'tiny' });
    assert.deepEqual([...back.tensors.keys()], [...tensors.keys()]);
    for (const [name, t] of tensors) {
      const u = back.tensors.get(name) as RawTensor;
      assert.equal(u.dtype, t.dtype);
      assert.deepEqual(u.shape, t.shape);
      assert.deepEqual(bytesOf(u), bytesOf(t), name);
      assert.equal(u.data.constructor, t.data.constructor, name);
    }
    assertMatchesExpected(back.tensors);
  });

  it('accepts an iterable of pairs and no metadata', () => {
    const t: RawTensor = { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) };
    const back = readSafetensors(writeSafetensors([['a', t]]));
    assert.deepEqual(back.metadata, {});
    assert.deepEqual(back.tensors.get('a')?.data, new Float32Array([1, 2]));
  });

  it('refuses to write data that does not match the shape', () => {
    const t: RawTensor = { dtype: 'F32', shape: [3], data: new Float32Array([1, 2]) };
    assert.throws(() => writeSafetensors([['a', t]]), {
      name: 'CheckpointError',
      message: /'a'.*needs 12 bytes/,
    });
  });

  /** A file with this header and `dataLen` zero bytes of data (the header is taken as given, unpadded). */
  function build(header: unknown, dataLen: number, headerLen?: number): Uint8Array {
    const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
    const out = new Uint8Array(8 + json.length + dataLen);
    new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? json.length), true);
    out.set(json, 8);
    return out;
  }
  const f32 = (shape: number[], begin: number, end: number): unknown => ({
    dtype: 'F32',
    shape,
    data_offsets: [begin, end],
  });

  it('reads a hand-built valid file', () => {
    const { tensors } = readSafetensors(build({ b: f32([1], 8, 12), a: f32([2], 0, 8) }, 12));
    assert.deepEqual([...tensors.keys()], ['b', 'a']);
  });

  const corrupt: [string, Uint8Array, RegExp][] = [
    ['a file shorter than 8 bytes', new Uint8Array(5), /too short/],
    ['a header length past the end', build({}, 0, 1000), /header length 1000 runs past the end/],
    ['a 2^63 header length', build({}, 0, 2 ** 63), /runs past the end/],
    ['bad JSON', build('{"a": ', 0), /not valid UTF-8 JSON/],
    ['invalid UTF-8', build('{"\xff": 1}', 0).map((b, i) => (i === 10 ? 0xff : b)), /not valid UTF-8 JSON/],
    ['a JSON array', build([], 0), /header JSON is not an object/],
    [
      'an unknown dtype',
      build({ w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, 1),
      /'w'.*unsupported dtype "F8_E4M3"/,
    ],
    ['a negative dimension', build({ w: f32([-1], 0, 4) }, 4), /'w'.*shape/],
    ['missing data_offsets', build({ w: { dtype: 'F32', shape: [1] } }, 4), /'w'.*data_offsets/],
    ['reversed data_offsets', build({ w: f32([0], 4, 0) }, 4), /'w'.*end before they begin/],
    [
      'offsets not matching the shape',
      build({ w: f32([2], 0, 4) }, 4),
      /'w'.*span 4 bytes but F32 \[2\] needs 8/,
    ],
    ['offsets past the data', build({ w: f32([2], 0, 8) }, 4), /'w'.*data ends at byte 8 .* has 4/],
    ['overlapping tensors', build({ a: f32([2], 0, 8), b: f32([1], 4, 8) }, 8), /overlap/],
    ['a gap between tensors', build({ a: f32([1], 0, 4), b: f32([1], 8, 12) }, 12), /'b'.*gap of 4/],
    ['trailing data', build({ a: f32([1], 0, 4) }, 8), /4 trailing bytes/],
    ['non-string metadata', build({ __metadata__: { n: 1 } }, 0), /__metadata__ value for 'n'/],
  ];
  for (const [what, bytes, message] of corrupt) {
    it(`names the problem: ${what}`, () => {
      assert.throws(
        () => readSafetensors(bytes),
        (e: unknown) => {
          assert.ok(e instanceof CheckpointError, String(e));
          assert.match(e.message, message);
          return true;
        },
      );
    });
  }

  it('gives CheckpointError for every truncation of a small file', () => {
    const file = writeSafetensors(readPytorch(fixture('tiny_zip.pt')));
    for (let cut = 0; cut < file.length; cut++) {
      assert.equal(
        onlyCheckpointError(() => readSafetensors(file.subarray(0, cut)), `cut at ${cut}`),
        false,
      );
    }
  });
});

describe('official ShuffleNet v1 checkpoints', () => {
  // Stem and last-stage widths from SOURCE.md.
  for (const [g, width, c4] of [
    ['g3', 12, 480],
    ['g8', 16, 768],
  ] as const) {
    it(`${g}: .pth.tar (legacy) and .safetensors give bit-identical tensors`, { skip: NO_WEIGHTS }, (t) => {
      const pth = weights(`shufflenet_v1_${g}_0.5x.pth.tar`);
      const st = weights(`shufflenet_v1_${g}_0.5x.safetensors`);
      let start = performance.now();
      const fromPth = readPytorch(pth);
      const pthMs = performance.now() - start;
      start = performance.now();
      const fromSt = readSafetensors(st);
      t.diagnostic(
        `read .pth.tar in ${pthMs.toFixed(1)} ms, .safetensors in ${(performance.now() - start).toFixed(1)} ms`,
      );

      // The listing that ships with the weights: name, dtype, shape, in file order.
      const listing = readFileSync(new URL(`TENSORS_${g}_0.5x.txt`, WEIGHTS), 'utf8')
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => l.split('\t'));
      assert.equal(listing.length, 295);
      assert.deepEqual(
        [...fromPth.keys()],
        listing.map(([name]) => (name as string).replace(/^module\./, '')),
      );
      assert.deepEqual(
        [...fromSt.tensors.keys()],
        listing.map(([name]) => name),
      );
      for (const [name, dtype, shape] of listing) {
        const a = fromPth.get((name as string).slice('module.'.length)) as RawTensor;
        const b = fromSt.tensors.get(name as string) as RawTensor;
        assert.equal(a.dtype, dtype === 'float32' ? 'F32' : 'I64', name);
        assert.deepEqual(a.shape, shape === 'scalar' ? [] : (shape as string).split('x').map(Number), name);
        assert.equal(b.dtype, a.dtype, name);
        assert.deepEqual(b.shape, a.shape, name);
        assert.ok(Buffer.compare(bytesOf(a), bytesOf(b)) === 0, `${name}: bytes differ`);
      }
      assert.deepEqual(fromPth.get('first_conv.0.weight')?.shape, [width, 3, 3, 3]);
      assert.equal(
        toFloat32(fromPth.get('classifier.0.weight') as RawTensor, 'classifier.0.weight').length,
        1000 * c4,
      );
    });

    it(`${g}: rewriting the .safetensors reproduces the file byte for byte`, { skip: NO_WEIGHTS }, () => {
      const st = weights(`shufflenet_v1_${g}_0.5x.safetensors`);
      const { tensors, metadata } = readSafetensors(st);
      assert.ok(Buffer.compare(writeSafetensors(tensors, metadata), st) === 0);
    });

    it(`${g}: truncated files give CheckpointError`, { skip: NO_WEIGHTS }, () => {
      for (const file of [`shufflenet_v1_${g}_0.5x.pth.tar`, `shufflenet_v1_${g}_0.5x.safetensors`]) {
        const bytes = weights(file);
        // Inside the five legacy pickles (header, object, key list), inside the data, one byte short.
        for (const cut of [
          0,
          1,
          8,
          15,
          21,
          100,
          137,
          5000,
          52100,
          56700,
          bytes.length >> 1,
          bytes.length - 1,
        ]) {
          assert.equal(
            onlyCheckpointError(
              () => (file.endsWith('.tar') ? readPytorch : readSafetensors)(bytes.subarray(0, cut)),
              `${file} cut at ${cut}`,
            ),
            false,
          );
        }
      }
    });
  }
});
