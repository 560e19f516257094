/**
 * The benchmark's peers compute what our reference computes, so bench/run.ts compares equal work. No timing here.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { execute } from '../src/index.js';
import { benchInput, benchModel, relativeDiff, type BenchModel } from '../bench/models.js';
import { ortNode } from '../bench/peers/ort-node.js';
import { ortWeb } from '../bench/peers/ort-web.js';
import { tfjsCpu, tfjsWasm } from '../bench/peers/tfjs.js';
import type { RunnerFactory } from '../bench/peers/types.js';

const TOLERANCE = 1e-4;

async function check(factory: RunnerFactory, m: BenchModel, height: number, width: number, batch = 2) {
  const input = benchInput(m.graph, batch, height, width);
  const reference = execute(m.graph, m.weights, input).data;
  const runner = await factory.create({ ...m, batch, threads: 1, height, width, input: input.data });
  try {
    const out = await runner.output();
    assert.equal(out.length, reference.length);
    const err = relativeDiff(out, reference);
    assert.ok(err <= TOLERANCE, `${factory.name} on ${m.name}: relative error ${err} > ${TOLERANCE}`);
    await runner.run();
    assert.deepEqual(await runner.output(), out, 'a second run gives the same logits');
  } finally {
    await runner.close?.();
  }
}

for (const factory of [tfjsCpu, tfjsWasm, ortNode, ortWeb]) {
  describe(`bench peer ${factory.name}`, () => {
    for (const model of ['shufflenet_v1_g3_0.25x', 'mobilenet_v1_0.25']) {
      it(`${model} at 64x64, batch 2: equals execute() within ${TOLERANCE} of the logit scale`, () =>
        check(factory, benchModel(model), 64, 64));
    }
  });
}

describe('bench peer TF.js: ops only AlexNet uses', () => {
  it('AlexNet at 127x95: an adaptive average pool whose 6x6 cells overlap (3x2 input)', () =>
    check(tfjsWasm, benchModel('alexnet'), 127, 95, 1));
  it('ShuffleNet g=8 with the paper shuffle order, before the depthwise conv', () => {
    const options = { shuffleOrder: 'paper', shufflePosition: 'before-dw' } as const;
    return check(tfjsWasm, benchModel('shufflenet_v1_g8_0.25x', options), 64, 64);
  });
});
