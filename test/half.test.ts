import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fromHalf, fromHalfBits, roundToHalf, toHalf, toHalfBits } from '../src/tensor/half.js';
import { seededRandom } from '../src/tensor/tensor.js';

describe('f16 conversion (src/tensor/half.ts)', () => {
  it('known values: exact, ties to even, subnormals, overflow, signed zero, NaN', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff], // the largest half
      [65519.99, 0x7bff], // rounds down to it
      [65520, 0x7c00], // the tie above rounds to infinity
      [1e9, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // the smallest normal
      [2 ** -24, 0x0001], // the smallest subnormal
      [2 ** -25, 0x0000], // a tie with zero: to even
      [1.5 * 2 ** -25, 0x0001],
      [3 * 2 ** -25, 0x0002], // a tie between subnormals 1 and 2: to even
      [1 + 2 ** -11, 0x3c00], // a tie between 1 and its successor: to even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // a tie: to even (up)
      [-0, 0x8000],
    ];
    for (const [v, bits] of cases) assert.equal(toHalfBits(v), bits, `${v}`);
    assert.ok(Number.isNaN(fromHalfBits(toHalfBits(NaN))));
    const decoded: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x7bff, 65504],
      [0x0400, 2 ** -14],
      [0x0001, 2 ** -24],
      [0x7c00, Infinity],
      [0x8000, -0],
    ];
    for (const [bits, v] of decoded) assert.equal(fromHalfBits(bits), v, bits.toString(16));
  });

  it('every half survives the round trip', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = fromHalfBits(h);
      if (!Number.isNaN(v)) assert.equal(toHalfBits(v), h, h.toString(16));
    }
  });

  const python = ['/usr/bin/python3', 'python3'].find(
    (p) => spawnSync(p, ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0,
  );
  it(
    'equals numpy float16 on 20,000 values of every magnitude',
    { skip: !python && 'no python3 with numpy' },
    () => {
      const r = seededRandom(11);
      const values = Float32Array.from({ length: 20000 }, (_, i) => (r() - 0.5) * 2 ** ((i % 60) - 30));
      const py = spawnSync(
        python!,
        [
          '-c',
          'import sys, numpy as np; sys.stdout.buffer.write(np.frombuffer(sys.stdin.buffer.read(), "<f4").astype("<f2").tobytes())',
        ],
        { input: Buffer.from(values.buffer), maxBuffer: 1 << 20 },
      );
      assert.equal(py.status, 0, py.stderr?.toString());
      const expected = new Uint16Array(py.stdout.buffer, py.stdout.byteOffset, values.length);
      assert.deepEqual(toHalf(values), Uint16Array.from(expected));
      assert.deepEqual(roundToHalf(values.slice()), fromHalf(expected));
    },
  );
});
