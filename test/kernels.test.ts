import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { referenceBackend, type Backend } from '../src/backends/backend.js';
import { createWasmBackend } from '../src/backends/wasm/backend.js';
import { instantiateKernelsSync } from '../src/backends/wasm/module.js';
import { enableRelaxedSimd } from '../src/node/wasm.js';
import {
  OPS,
  OP_NAMES,
  shufflePermutation,
  type Conv2dAttrs,
  type OpAttrs,
  type OpName,
} from '../src/ops/index.js';
import { ShapeError } from '../src/ops/shape.js';
import { Tensor, formatShape } from '../src/tensor/tensor.js';

/** Every backend must match PyTorch on the same cases; a new backend is one more entry here. */
const wasm = [instantiateKernelsSync()];
if (enableRelaxedSimd()) wasm.push(instantiateKernelsSync({ relaxed: true }));
const BACKENDS: readonly Backend[] = [
  referenceBackend,
  ...wasm.flatMap((k) => [createWasmBackend(k), createWasmBackend(k, 3)]),
];

interface Blob {
  shape: number[];
  data: string;
}
interface Case {
  name: string;
  op: OpName;
  attrs: OpAttrs[OpName];
  training: boolean;
  inputs: Blob[];
  params: Record<string, Blob>;
  output: Blob;
  after?: Record<string, Blob>;
}

// Written by tools/gen_kernel_fixtures.py (PyTorch, float64 maths rounded to float32).
const fixture = JSON.parse(readFileSync(new URL('./fixtures/kernels.json', import.meta.url), 'utf8')) as {
  torch: string;
  cases: Case[];
};

function decode(b: Blob): Tensor {
  const bytes = Buffer.from(b.data, 'base64');
  const data = new Float32Array(bytes.length / 4);
  // readFloatLE: the fixture is little-endian whatever the host is.
  for (let i = 0; i < data.length; i++) data[i] = bytes.readFloatLE(i * 4);
  return new Tensor(b.shape, data);
}

/** |a - b| <= 1e-5 |b| + 1e-6 everywhere; on failure names the worst index and both values. */
function assertClose(what: string, actual: Tensor, expected: Tensor): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  let worst = -1;
  let worstRatio = 0;
  let bad = 0;
  for (let i = 0; i < expected.size; i++) {
    const a = actual.data[i]!;
    const b = expected.data[i]!;
    const ratio = Math.abs(a - b) / (1e-5 * Math.abs(b) + 1e-6);
    const r = Number.isNaN(ratio) ? Infinity : ratio;
    if (r > 1) bad++;
    if (r > worstRatio) [worst, worstRatio] = [i, r];
  }
  if (bad) {
    assert.fail(
      `${what}: ${bad} of ${expected.size} values out of tolerance; worst at index ${worst}: ` +
        `got ${actual.data[worst]}, expected ${expected.data[worst]}`,
    );
  }
}

describe(`kernels match PyTorch ${fixture.torch}`, () => {
  it('every op has at least one fixture case', () => {
    const covered = new Set(fixture.cases.map((c) => c.op));
    assert.deepEqual(
      OP_NAMES.filter((op) => !covered.has(op)),
      [],
      'ops without a case: add them to tools/gen_kernel_fixtures.py',
    );
    for (const c of fixture.cases) assert.ok(OP_NAMES.includes(c.op), `${c.name}: unknown op ${c.op}`);
  });

  for (const backend of BACKENDS) {
    describe(backend.name, () => {
      for (const c of fixture.cases) {
        it(c.name, (t) => {
          if (!backend.supports(c.op)) return t.skip(`${backend.name} does not implement ${c.op}`);
          const spec = OPS[c.op];
          const inputs = c.inputs.map(decode);
          const params = Object.fromEntries(Object.entries(c.params).map(([k, v]) => [k, decode(v)]));
          // The fixture must fill exactly the op's present slots, with the shapes the op declares.
          const slots = spec.params(c.attrs as never).filter((s) => s.shape !== null);
          assert.deepEqual(
            Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v.shape])),
            Object.fromEntries(slots.map((s) => [s.slot, s.shape])),
            `${c.name}: param slots`,
          );

          const shape = spec.shape(
            inputs.map((x) => x.shape),
            c.attrs as never,
          );
          assert.deepEqual(shape, c.output.shape, `${c.name}: output shape`);
          const out = new Tensor(shape);
          backend.run(c.op, { out, inputs, params, attrs: c.attrs, ctx: { training: c.training } });
          assertClose(c.name, out, decode(c.output));
          for (const [slot, blob] of Object.entries(c.after ?? {})) {
            assertClose(`${c.name} ${slot} after update`, params[slot]!, decode(blob));
          }
        });
      }
    });
  }
});

describe('channel shuffle permutations', () => {
  const sizes: Array<[number, number]> = [
    [12, 3],
    [24, 8],
    [240, 3],
    [16, 4],
    [6, 2],
    [7, 1],
    [9, 9],
  ];

  it("'paper' and 'authors' are inverse permutations", () => {
    for (const [c, g] of sizes) {
      const paper = shufflePermutation(c, g, 'paper');
      const authors = shufflePermutation(c, g, 'authors');
      assert.deepEqual(
        [...paper].sort((a, b) => a - b),
        Array.from({ length: c }, (_, i) => i),
        `C=${c} g=${g}: not a permutation`,
      );
      for (let i = 0; i < c; i++) {
        assert.equal(authors[paper[i]!], i, `C=${c} g=${g}: authors(paper(${i}))`);
        assert.equal(paper[authors[i]!], i, `C=${c} g=${g}: paper(authors(${i}))`);
      }
    }
  });

  it('follows the formulas in SHUFFLENET.md', () => {
    for (const [c, g] of sizes) {
      const n = c / g;
      const paper = shufflePermutation(c, g, 'paper');
      const authors = shufflePermutation(c, g, 'authors');
      for (let i = 0; i < g; i++) {
        for (let j = 0; j < n; j++) {
          // Section 1: new channel j*g + i takes old channel i*n + j.
          assert.equal(paper[j * g + i], i * n + j, `paper C=${c} g=${g}`);
          // Section 6: out[j*n + i] = in[i*g + j], here with i < n and j < g.
          assert.equal(authors[i * n + j], j * g + i, `authors C=${c} g=${g}`);
        }
      }
    }
  });
});

describe('shape rules reject bad shapes', () => {
  const conv = (over: Partial<Conv2dAttrs>): Conv2dAttrs => ({
    inChannels: 4,
    outChannels: 8,
    kernel: [3, 3],
    stride: [1, 1],
    padding: [1, 1],
    dilation: [1, 1],
    groups: 1,
    bias: false,
    ...over,
  });

  function shapeError(fn: () => unknown): string {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof ShapeError, `expected a ShapeError, got ${String(e)}`);
      return e.message;
    }
    return assert.fail('expected a ShapeError, nothing was thrown');
  }

  it('conv2d with the wrong channel count names the input shape', () => {
    const msg = shapeError(() => OPS.conv2d.shape([[2, 3, 8, 8]], conv({})));
    assert.match(msg, /\[2, 3, 8, 8\]/);
    assert.match(msg, /4/);
  });

  it('conv2d with groups not dividing the channels names groups and channel counts', () => {
    const msg = shapeError(() => OPS.conv2d.shape([[2, 8, 8, 8]], conv({ inChannels: 8, groups: 3 })));
    assert.match(msg, /groups=3/);
    assert.match(msg, /in_channels=8/);
  });

  it('add with different shapes names both', () => {
    const [a, b] = [
      [2, 3, 4, 4],
      [2, 3, 4, 5],
    ];
    const msg = shapeError(() => OPS.add.shape([a!, b!], {}));
    assert.ok(msg.includes(formatShape(a!)) && msg.includes(formatShape(b!)), msg);
  });

  it('concat, linear and channelshuffle name the offending shape', () => {
    assert.match(
      shapeError(() =>
        OPS.concat.shape(
          [
            [2, 3, 4, 4],
            [2, 5, 4, 6],
          ],
          {},
        ),
      ),
      /\[2, 3, 4, 4\].*\[2, 5, 4, 6\]/,
    );
    assert.match(
      shapeError(() => OPS.linear.shape([[2, 10]], { inFeatures: 12, outFeatures: 3, bias: true })),
      /\[2, 10\]/,
    );
    assert.match(
      shapeError(() => OPS.channelshuffle.shape([[2, 10, 3, 3]], { groups: 3, order: 'paper' })),
      /\[2, 10, 3, 3\]/,
    );
  });
});
