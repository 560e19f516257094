import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { buildPreset, complexity } from '../src/index.js';
import { FASHION_MNIST_DIR } from '../src/node/datasets.js';
import { ablationTables, formatTables, runKey } from '../tools/ablations.js';

describe("tools/ablations.ts: the paper's Tables 2-5 as training runs", () => {
  it("lists the tables in the paper's order, with its numbers, on presets that exist", () => {
    const tables = ablationTables(['2', '3', '4', '5'], ['1.0', '0.5', '0.25']);
    assert.deepEqual(
      tables.map((t) => [t.id, t.rows.length]),
      [
        ['2-1.0', 5],
        ['2-0.5', 5],
        ['2-0.25', 5],
        ['3', 12],
        ['4', 13],
        ['5', 8],
      ],
    );
    assert.deepEqual(
      tables[0]!.rows.map((r) => [r.run.arch, r.paper]),
      [1, 2, 3, 4, 8].map((g, i) => [`shufflenet_v1_g${g}_1.0x`, [33.6, 32.7, 32.6, 32.8, 32.4][i]]),
    );
    const t3 = tables[3]!;
    assert.deepEqual(t3.rows[0]!.run.options, { shuffle: false });
    assert.equal(t3.rows[0]!.run.arch, t3.rows[1]!.run.arch);
    assert.deepEqual([t3.rows[0]!.paper, t3.rows[1]!.paper], [34.5, 32.6]);
    // Table 4 compares at about equal cost: each unit within 40% of the target (ResNeXt: widths in 16s, so
    // 17.7 MFLOPs for 13; README.md, "Models").
    const t4 = tables[4]!.rows;
    for (const cost of [140, 38, 13]) {
      const rows = t4.filter((r) => r.label.includes(`(${cost} MFLOPs`));
      const m = rows.map((r) => complexity(buildPreset(r.run.arch, r.run.options), 224, 224).macs / 1e6);
      for (const v of m) assert.ok(Math.abs(v / cost - 1) < 0.4, `${cost}: ${m.join(', ')}`);
    }
    for (const t of tables) for (const r of t.rows) buildPreset(r.run.arch, r.run.options);
    assert.throws(() => ablationTables(['6'], ['1.0']), /unknown table '6'/);
    assert.throws(() => ablationTables(['2'], ['0.3']), /0\.3 is not one of the paper's/);
  });

  it('formats ours beside the paper, with the differences of the pairs', () => {
    const tables = ablationTables(['3'], ['1.0']);
    const md = formatTables(
      tables,
      new Map([
        ['shufflenet_v1_g3_1.0x_noshuffle', { top1: 0.8, top5: 0.95, seconds: 120 }],
        ['shufflenet_v1_g3_1.0x', { top1: 0.85, top5: 0.97, seconds: 90 }],
      ]),
      { dataset: 'cifar10:x', flags: ['--epochs', '5'] },
    );
    assert.match(md, /\| 1.0x g = 3, no shuffle \| 137 \| 34\.5 \| 20\.00 \| 95\.00 \| 2\.0 min \|/);
    assert.match(md, /\| 1.0x g = 3, shuffle \| 137 \| 32\.6 \| 15\.00 \| 97\.00 \| 1\.5 min \|/);
    assert.match(md, /error -5\.00 points here, -1\.9 in the paper/);
    assert.match(md, /1.0x g = 8, no shuffle .* not run/);
    assert.match(
      md,
      /\| model \| MFLOPs \(224\) \| paper: ImageNet error \| ours: error \| ours: top-5 \| training time \| run \|/,
    );
    for (const line of md.split('\n').filter((l) => l.startsWith('|')))
      assert.equal(line.split('|').length, 9, `7 cells: ${line}`);
  });

  it('over seeds: the mean and standard deviation, and how many seeds finished', () => {
    const tables = ablationTables(['3'], ['1.0']);
    const md = formatTables(
      tables,
      new Map([
        ['shufflenet_v1_g3_1.0x', { top1: 0.8, top5: 0.9, seconds: 60 }],
        [runKey('shufflenet_v1_g3_1.0x', 1), { top1: 0.85, top5: 1, seconds: 60 }],
        ['shufflenet_v1_g3_1.0x_noshuffle', { top1: 0.7, top5: 0.9, seconds: 60 }],
        [runKey('shufflenet_v1_g3_1.0x_noshuffle', 1), { top1: 0.75, error: 'train exited 1' }],
      ]),
      { dataset: 'cifar10:x', flags: [], seeds: [0, 1] },
    );
    assert.equal(runKey('a', 0), 'a');
    assert.equal(runKey('a', 2), 'a_seed2');
    assert.match(md, /\| 1.0x g = 3, shuffle \| 137 \| 32\.6 \| 17\.50 ± 3\.54 \| 95\.00 \| 2\.0 min \|/);
    assert.match(md, /\| 1.0x g = 3, no shuffle \| 137 \| 34\.5 \| 30\.00 \(1 of 2 seeds\) \|/);
    assert.match(md, /error -12\.50 points here, -1\.9 in the paper/);
  });

  const haveData = existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'));
  const root = fileURLToPath(new URL('..', import.meta.url));
  /** The tool on Fashion-MNIST, Table 3 at 0.25x: the runs that `only` matches, `train` after `--`. */
  const toolArgs = (outDir: string, only: string, train: string[]) => [
    ...['--import', import.meta.resolve('tsx'), join(root, 'tools/ablations.ts')],
    ...`--dataset fashion-mnist --tables 3 --scales 0.25 --only ${only} --out`.split(' '),
    ...[outDir, '--', ...train],
  ];
  /** Tiny training runs: one epoch of `limit` images, batch 16, one thread. */
  const tiny = (limit: number) =>
    `--epochs 1 --batch-size 16 --limit ${limit} --test-limit 40 --threads 1`.split(' ');

  it(
    'trains, tabulates, and skips what is done on a rerun',
    { skip: !haveData && 'no Fashion-MNIST' },
    () => {
      const out = mkdtempSync(join(tmpdir(), 'ablations-'));
      after(() => rmSync(out, { recursive: true, force: true }));
      const tool = (train: string[]) =>
        spawnSync(process.execPath, toolArgs('runs', 'g3_0.25x_noshuffle', train), {
          // --out relative to the caller's directory, for the tool and its train runs alike
          cwd: out,
          encoding: 'utf8',
          env: { ...process.env, SHUFFLENET_HOME: join(out, 'home') },
        });
      const flags = tiny(32);
      const r = tool(flags);
      assert.equal(r.status, 0, r.stderr);
      const runs = join(out, 'runs');
      const json = JSON.parse(readFileSync(join(runs, 'results.json'), 'utf8'));
      const run = json.runs['shufflenet_v1_g3_0.25x_noshuffle'];
      assert.equal(run.finished, true);
      assert.ok(run.top1 >= 0 && run.top1 <= 1);
      const md = readFileSync(join(runs, 'results.md'), 'utf8');
      assert.match(
        md,
        new RegExp(`0.25x g = 3, no shuffle \\| 13 \\| 56\\.3 \\| ${((1 - run.top1) * 100).toFixed(2)} \\|`),
      );
      assert.match(md, /0.25x g = 3, shuffle \| 13 \| 55\.0 \| not run/);
      const meta = readFileSync(join(runs, 'shufflenet_v1_g3_0.25x_noshuffle', 'model.safetensors'));
      assert.match(meta.subarray(0, 4000).toString('latin1'), /\\"shuffle\\":false/);
      const again = tool(flags);
      assert.equal(again.status, 0, again.stderr);
      assert.match(again.stderr, /done already/);
      const bad = tool(['--no-shuffle']);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--no-shuffle is the tool's to set/);
    },
  );

  it(
    'stops on Ctrl-C with the tables written, and a rerun resumes the stopped run',
    { skip: !haveData && 'no Fashion-MNIST' },
    async () => {
      const out = mkdtempSync(join(tmpdir(), 'ablations-int-'));
      after(() => rmSync(out, { recursive: true, force: true }));
      const args = (only: string) => toolArgs(out, only, tiny(3200));
      const env = { ...process.env, SHUFFLENET_HOME: join(out, 'home') };
      // Its own process group, as a shell's Ctrl-C or `timeout -s INT` signals the tool and its train run.
      const child = spawn(process.execPath, args('g3_0.25x'), {
        env,
        detached: true,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      let sent = false;
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/step \d+\/200/.test(stderr) && !sent) {
          sent = true;
          process.kill(-child.pid!, 'SIGINT');
        }
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 130, stderr);
      assert.match(stderr, /\[1\/2\] shufflenet_v1_g3_0.25x_noshuffle: stopped: a rerun resumes it/);
      assert.doesNotMatch(stderr, /\[2\/2\]/);
      const md = readFileSync(join(out, 'results.md'), 'utf8');
      assert.match(md, /0.25x g = 3, no shuffle \| 13 \| 56\.3 \| stopped: a rerun resumes it \|/);
      const again = spawnSync(process.execPath, args('g3_0.25x_noshuffle$'), {
        env,
        encoding: 'utf8',
      });
      assert.equal(again.status, 0, again.stderr);
      assert.match(again.stderr, /resuming in .*shufflenet_v1_g3_0.25x_noshuffle/);
      assert.match(
        readFileSync(join(out, 'results.md'), 'utf8'),
        /0.25x g = 3, no shuffle \| 13 \| 56\.3 \| \d/,
      );
    },
  );
});
