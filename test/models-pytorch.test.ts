import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildPreset, execute, graphParams, PRESET_NAMES, type ModelOptions } from '../src/index.js';
import { decode, maxAbsDiff, readFixture, type Blob } from './helpers/fixtures.js';
import { syntheticInput, syntheticWeights } from './helpers/synthetic.js';

interface Case {
  preset: string;
  options: ModelOptions;
  input: number[];
  names: [string, number[]][];
  logits: Blob;
}

// Written by tools/gen_model_fixtures.py from the PyTorch modules in tools/reference_models.py.
const fixture = readFixture<{ torch: string; cases: Case[] }>('models.json');

describe(`models match PyTorch ${fixture.torch} reference code (synthetic weights)`, () => {
  it('has a case for every Table 4 preset (tools/reference_models.py Table4Net)', () => {
    const covered = new Set(fixture.cases.map((c) => c.preset));
    assert.deepEqual(
      PRESET_NAMES.filter((n) => n.startsWith('table4_') && !covered.has(n)),
      [],
    );
  });

  for (const c of fixture.cases) {
    it(`${c.preset} ${JSON.stringify(c.options)} on ${c.input.join('x')}`, () => {
      const graph = buildPreset(c.preset, c.options);
      // Same parameter names, shapes and order as the PyTorch state_dict (without num_batches_tracked).
      assert.deepEqual(
        graphParams(graph).map((p) => [p.name, [...p.shape]]),
        c.names,
      );
      const y = execute(graph, syntheticWeights(graph), syntheticInput(c.input));
      const expected = decode(c.logits);
      assert.deepEqual(y.shape, expected.shape);
      const scale = Math.max(1, ...expected.data.map(Math.abs));
      const diff = maxAbsDiff(y, expected);
      assert.ok(diff <= 1e-5 * scale, `max |diff| ${diff} (logit scale ${scale})`);
    });
  }
});
