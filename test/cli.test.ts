import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs the real CLI entry point as a user would, through tsx (no build needed). */
function shufflenet(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    encoding: 'utf8',
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('shufflenet CLI', () => {
  it('flops --json gives macs, macsConvOnly, params and layers', () => {
    const r = shufflenet('flops', '--arch', 'shufflenet_v1_g3_1.0x', '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.macs, 137_460_672);
    assert.equal(j.macsConvOnly, 136_500_672);
    assert.equal(j.params, 1_864_728);
    assert.ok(Array.isArray(j.layers) && j.layers.some((l: { name: string }) => l.name === 'classifier.0'));
  });

  it('flops takes --input HxW and model options, and prints a per-layer table', () => {
    const r = shufflenet(
      'flops',
      '--arch',
      'shufflenet_v1_g8_0.5x',
      '--input',
      '32',
      '--small-input',
      '--classes',
      '10',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^features\.0\.branch_main_1\.0\s+conv2d\s+\[48, 32, 32\]/m);
    assert.match(r.stdout, /at 3x32x32: [\d,]+ MACs/);
    const wide = JSON.parse(shufflenet('flops', '--arch', 'alexnet', '--input', '480x640', '--json').stdout);
    assert.deepEqual(wide.input, [3, 480, 640]);
  });

  it('models lists every preset with MFLOPs and params', () => {
    const r = shufflenet('models', '--json');
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { name: string; mflops: number; params: number }[];
    const g3 = rows.find((x) => x.name === 'shufflenet_v1_g3_0.5x')!;
    assert.equal(Math.round(g3.mflops * 10), 376);
    assert.ok(rows.some((x) => x.name === 'mobilenet_v1_0.5') && rows.some((x) => x.name === 'alexnet'));
  });

  it('exits 2 with the valid choices for an unknown arch, an impossible (g, s), a bad size or option', () => {
    const bad = shufflenet('flops', '--arch', 'shufflenet_v1_g5_1.0x');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /g in \{1, 2, 3, 4, 8\} and s in \{0\.25, 0\.5, 1\.0, 1\.5, 2\.0\}/);
    const unknown = shufflenet('flops', '--arch', 'vgg16');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /valid presets: .*mobilenet_v1_0\.25/);
    assert.equal(shufflenet('flops', '--arch', 'alexnet', '--input', '0x5').code, 2);
    assert.equal(shufflenet('flops', '--arch', 'alexnet', '--frobnicate').code, 2);
    assert.equal(shufflenet('nonsense').code, 2);
  });

  it('has --help everywhere', () => {
    for (const args of [['--help'], ['flops', '--help'], ['models', '--help']]) {
      const r = shufflenet(...args);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /Usage: shufflenet/);
    }
  });
});
