/**
 * The paper's ablations as training runs: Table 2 (the group number g at 1x / 0.5x / 0.25x), Table 3 (the
 * channel shuffle on and off), Table 4 (other units at equal cost) and Table 5 (MobileNet against ShuffleNet
 * at about the same cost). Every model trains with one recipe (`shufflenet train`, one run folder each) on a
 * dataset you choose, and the results go into tables beside the paper's ImageNet numbers. The paper trained
 * on ImageNet for 3e5 steps of 1024 images; on CIFAR-10 or Fashion-MNIST the errors are not the paper's, but
 * the comparisons (g, shuffle, unit) can be read the same way.
 *
 *   npx tsx tools/ablations.ts --dataset SPEC --out DIR [--tables 2,3,4,5] [--scales 1.0,0.5,0.25]
 *                              [--only REGEX] [--seeds 0,1,2] [--dry-run] [-- more train flags]
 *
 * Everything after `--` goes to every `train` (e.g. `-- --epochs 30 --batch-size 256 --lr 0.2 --schedule
 * cosine --nesterov --weight-decay 5e-4 --backend auto`). A run that finished is not run again; one that was
 * stopped resumes, so the tool can be interrupted and rerun. DIR/results.md and DIR/results.json are rewritten
 * (atomically) after each run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { complexity } from '../src/graph/complexity.js';
import { buildPreset, type ModelOptions } from '../src/models/registry.js';
import { writeFileAtomic } from '../src/node/files.js';

const USAGE = `npx tsx tools/ablations.ts --dataset SPEC --out DIR [options] [-- train flags]
  --dataset SPEC     as \`shufflenet train --dataset\` (fashion-mnist, cifar10:DIR, folder:DIR)
  --out DIR          one run folder per model in DIR, and DIR/results.md, DIR/results.json
  --tables LIST      which of the paper's tables: 2 (g), 3 (shuffle), 4 (units), 5 (MobileNet) (default 2,3,4,5)
  --scales LIST      the ShuffleNet widths of tables 2 and 3 (default 1.0,0.5,0.25)
  --only REGEX       only the runs whose name matches
  --seeds LIST       train each model once per seed (default 0): the table gives mean ± standard deviation
  --dry-run          list the runs and their commands, train nothing
  -- FLAGS           passed to every \`shufflenet train\` (epochs, batch size, lr, backend, ...)`;

/** One model to train: a preset and its options (the shuffle switch). */
interface Run {
  name: string;
  arch: string;
  options: ModelOptions;
  flags: string[];
}

/** A row of a table: the run it reads and the paper's ImageNet top-1 error for that model (%). */
interface Row {
  label: string;
  run: Run;
  paper?: number;
}

interface Table {
  id: string;
  title: string;
  rows: Row[];
  /** Pairs of rows (indices) whose difference the table shows: Table 3's shuffle, Table 5's MobileNet. */
  pairs?: [number, number][];
}

const GROUPS = [1, 2, 3, 4, 8];
// ../shared/paper/SHUFFLENET.md, section 4 (ImageNet top-1 error, %).
const TABLE2: Record<string, number[]> = {
  '1.0': [33.6, 32.7, 32.6, 32.8, 32.4],
  '0.5': [45.1, 44.4, 43.2, 41.6, 42.3],
  '0.25': [57.1, 56.8, 55.0, 54.2, 52.7],
};
const TABLE3: [string, number, number, number][] = [
  ['1.0', 3, 34.5, 32.6],
  ['1.0', 8, 37.6, 32.4],
  ['0.5', 3, 45.7, 43.2],
  ['0.5', 8, 48.1, 42.3],
  ['0.25', 3, 56.3, 55.0],
  ['0.25', 8, 56.5, 52.7],
];
// Table 4 at 140 / 38 / 13 MFLOPs; ShuffleNet's row is its best g at each cost (Table 2).
const TABLE4: [string, string, (number | undefined)[]][] = [
  ['VGG-like', 'table4_vgg', [50.7, undefined, undefined]],
  ['ResNet', 'table4_resnet', [37.3, 48.8, 63.7]],
  ['Xception-like', 'table4_xception', [33.6, 45.1, 57.1]],
  ['ResNeXt', 'table4_resnext', [33.3, 46.0, 65.2]],
];
const TABLE4_SHUFFLENET: [string, number][] = [
  ['shufflenet_v1_g8_1.0x', 32.4],
  ['shufflenet_v1_g4_0.5x', 41.6],
  ['shufflenet_v1_g8_0.25x', 52.7],
];
const TABLE5: [string, number, string, number][] = [
  ['mobilenet_v1_1.0', 29.4, 'shufflenet_v1_g3_2.0x', 26.3],
  ['mobilenet_v1_0.75', 31.6, 'shufflenet_v1_g3_1.5x', 28.5],
  ['mobilenet_v1_0.5', 36.3, 'shufflenet_v1_g8_1.0x', 32.4],
  ['mobilenet_v1_0.25', 49.4, 'shufflenet_v1_g4_0.5x', 41.6],
];

const shufflenet = (g: number, s: string) => `shufflenet_v1_g${g}_${s}x`;

function run(arch: string, shuffle = true): Run {
  return shuffle
    ? { name: arch, arch, options: {}, flags: [] }
    : { name: `${arch}_noshuffle`, arch, options: { shuffle: false }, flags: ['--no-shuffle'] };
}

/** The tables asked for, their rows in the paper's order. */
export function ablationTables(tables: string[], scales: string[]): Table[] {
  const out: Table[] = [];
  for (const s of scales)
    if (!TABLE2[s])
      throw new Error(`--scales: ${s} is not one of the paper's (${Object.keys(TABLE2).join(', ')})`);
  for (const t of tables) {
    if (t === '2') {
      for (const s of scales)
        out.push({
          id: `2-${s}`,
          title: `Table 2: ShuffleNet ${s}x, the group number g`,
          rows: GROUPS.map((g, i) => ({
            label: `g = ${g}`,
            run: run(shufflenet(g, s)),
            paper: TABLE2[s]![i],
          })),
        });
    } else if (t === '3') {
      const rows: Row[] = [];
      for (const [s, g, off, on] of TABLE3.filter(([s]) => scales.includes(s)))
        rows.push(
          { label: `${s}x g = ${g}, no shuffle`, run: run(shufflenet(g, s), false), paper: off },
          { label: `${s}x g = ${g}, shuffle`, run: run(shufflenet(g, s)), paper: on },
        );
      out.push({
        id: '3',
        title: 'Table 3: the channel shuffle, off and on',
        rows,
        pairs: rows.flatMap((_, i): [number, number][] => (i % 2 ? [] : [[i, i + 1]])),
      });
    } else if (t === '4') {
      const rows: Row[] = [];
      ['140', '38', '13'].forEach((cost, k) => {
        for (const [label, prefix, paper] of TABLE4)
          if (label !== 'VGG-like' || k === 0)
            rows.push({
              label: `${label} (${cost} MFLOPs)`,
              run: run(`${prefix}_${cost}m`),
              paper: paper[k],
            });
        const [arch, paper] = TABLE4_SHUFFLENET[k]!;
        rows.push({ label: `ShuffleNet (${cost} MFLOPs: ${arch})`, run: run(arch), paper });
      });
      out.push({ id: '4', title: 'Table 4: other units at about the same cost', rows });
    } else if (t === '5') {
      const rows = TABLE5.flatMap(([m, mp, s, sp]): Row[] => [
        { label: m, run: run(m), paper: mp },
        { label: s, run: run(s), paper: sp },
      ]);
      out.push({
        id: '5',
        title: 'Table 5: MobileNet against ShuffleNet at about the same cost',
        rows,
        pairs: rows.flatMap((_, i): [number, number][] => (i % 2 ? [] : [[i, i + 1]])),
      });
    } else throw new Error(`--tables: unknown table '${t}' (2, 3, 4, 5)`);
  }
  return out;
}

interface Result {
  /** Top-1 on the test set after the last epoch. */
  top1?: number;
  top5?: number;
  steps?: number;
  seconds?: number;
  error?: string;
}

/** The last evaluation in a run's metrics.jsonl, and whether the run finished (state.json). */
function readRun(dir: string): Result & { finished: boolean; started: boolean } {
  const state = join(dir, 'state.json');
  if (!existsSync(state)) return { finished: false, started: false };
  const s = JSON.parse(readFileSync(state, 'utf8')) as { step: number; totalSteps: number };
  const lines = existsSync(join(dir, 'metrics.jsonl'))
    ? readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as { type: string; top1?: number; top5?: number; seconds?: number })
    : [];
  const last = lines.filter((l) => l.type === 'eval').at(-1);
  const seconds = lines.filter((l) => l.type === 'step').reduce((a, l) => a + (l.seconds ?? 0), 0);
  return {
    finished: s.step >= s.totalSteps && existsSync(join(dir, 'model.safetensors')),
    started: true,
    top1: last?.top1,
    top5: last?.top5,
    steps: s.step,
    seconds,
  };
}

/** A run's folder and results key for one seed (seed 0: the run's own name). */
export const runKey = (name: string, seed: number) => (seed === 0 ? name : `${name}_seed${seed}`);

/** Mean and (n > 1) sample standard deviation. */
function meanStd(v: number[]): { mean: number; std?: number } {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  if (v.length < 2) return { mean };
  return { mean, std: Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) };
}

/** The markdown of every table: ours (error on the dataset, over the seeds) beside the paper's (ImageNet). */
export function formatTables(
  tables: Table[],
  results: ReadonlyMap<string, Result>,
  about: { dataset: string; flags: string[]; seeds?: number[] },
): string {
  const seeds = about.seeds ?? [0];
  const mflops = new Map<string, string>();
  const cost = (r: Run) => {
    let m = mflops.get(r.name);
    if (m === undefined) {
      const c = complexity(buildPreset(r.arch, r.options), 224, 224);
      mflops.set(r.name, (m = (c.macs / 1e6).toFixed(0)));
    }
    return m;
  };
  /** A run over the seeds: its errors' mean (and spread), top-5, training time, the first failure. */
  const summary = (run: Run) => {
    const rs = seeds.map((s) => results.get(runKey(run.name, s)));
    const done = rs.filter((r): r is Result & { top1: number } => r?.top1 !== undefined && !r.error);
    return {
      error: done.length ? meanStd(done.map((r) => 1 - r.top1)) : undefined,
      top5: done.length ? meanStd(done.map((r) => r.top5 ?? 0)).mean : undefined,
      n: done.length,
      seconds: rs.reduce((a, r) => a + (r?.seconds ?? 0), 0),
      failure: rs.find((r) => r?.error)?.error,
    };
  };
  const pct = (v: number) => (v * 100).toFixed(2);
  const out = [
    `Dataset: ${about.dataset}; train flags: \`${about.flags.join(' ') || '(defaults)'}\`; seeds ${seeds.join(', ')}.`,
    "Error = 100 - top-1 (%) on the dataset's test set after the last epoch (mean ± standard deviation over the",
    "seeds); the paper's column is ImageNet top-1 error (%), for reference. MFLOPs: conv + FC multiply-adds at",
    '224x224, as the paper counts them.',
    '',
  ];
  for (const t of tables) {
    out.push(
      `### ${t.title}`,
      '',
      '| model | MFLOPs (224) | paper: ImageNet error | ours: error | ours: top-5 | training time | run |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const row of t.rows) {
      const r = summary(row.run);
      const e = r.error;
      const ours = e
        ? `${pct(e.mean)}${e.std !== undefined ? ` ± ${pct(e.std)}` : ''}${r.n < seeds.length ? ` (${r.n} of ${seeds.length} seeds)` : ''}`
        : r.failure
          ? r.failure.startsWith('stopped')
            ? r.failure
            : `failed (${r.failure})`
          : 'not run';
      out.push(
        `| ${row.label} | ${cost(row.run)} | ${row.paper?.toFixed(1) ?? '-'} | ${ours} | ` +
          `${r.top5 === undefined ? '' : pct(r.top5)} | ${r.seconds ? `${(r.seconds / 60).toFixed(1)} min` : ''} | ` +
          `${row.run.name} |`,
      );
    }
    if (t.pairs) out.push('');
    for (const [a, b] of t.pairs ?? []) {
      const [ra, rb] = [t.rows[a]!, t.rows[b]!];
      const [ea, eb] = [summary(ra.run).error, summary(rb.run).error];
      const paper = ra.paper !== undefined && rb.paper !== undefined ? (rb.paper - ra.paper).toFixed(1) : '-';
      const ours = ea && eb ? ((eb.mean - ea.mean) * 100).toFixed(2) : '-';
      out.push(`- ${rb.label} vs ${ra.label}: error ${ours} points here, ${paper} in the paper`);
    }
    out.push('');
  }
  return out.join('\n');
}

function main(): number {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf('--');
  const trainFlags = dash < 0 ? [] : argv.slice(dash + 1);
  let a;
  try {
    a = parseArgs({
      args: dash < 0 ? argv : argv.slice(0, dash),
      options: {
        dataset: { type: 'string' },
        out: { type: 'string' },
        tables: { type: 'string', default: '2,3,4,5' },
        scales: { type: 'string', default: '1.0,0.5,0.25' },
        only: { type: 'string' },
        seeds: { type: 'string', default: '0' },
        'dry-run': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  if (!a.dataset || !a.out) {
    console.error(`--dataset and --out are required\n${USAGE}`);
    return 2;
  }
  for (const f of ['--arch', '--out', '--dataset', '--resume', '--no-shuffle', '--seed'])
    if (trainFlags.includes(f)) {
      console.error(`${f} is the tool's to set, not a train flag to pass after --`);
      return 2;
    }
  let tables: Table[];
  let only: RegExp | undefined;
  const seeds = a.seeds.split(',').map(Number);
  try {
    if (!seeds.every((s) => Number.isInteger(s) && s >= 0) || new Set(seeds).size !== seeds.length)
      throw new Error(`--seeds '${a.seeds}': expected distinct non-negative integers, e.g. 0,1,2`);
    tables = ablationTables(a.tables.split(','), a.scales.split(','));
    only = a.only ? new RegExp(a.only) : undefined;
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  // Each model once (tables share some), each seed in turn.
  const models = new Map<string, Run>();
  for (const t of tables)
    for (const r of t.rows) if (!only || only.test(r.run.name)) models.set(r.run.name, r.run);
  const runs = seeds.flatMap((seed) =>
    [...models.values()].map((run) => ({ run, seed, key: runKey(run.name, seed) })),
  );
  const cli = shufflenetCommand();
  const results = new Map<string, Result>();
  const about = { dataset: a.dataset, flags: trainFlags, seeds };
  const save = () => {
    writeFileAtomic(join(a.out!, 'results.md'), formatTables(tables, results, about));
    writeFileAtomic(
      join(a.out!, 'results.json'),
      JSON.stringify({ ...about, runs: Object.fromEntries(results) }, null, 1) + '\n',
    );
  };
  if (!a['dry-run']) mkdirSync(a.out, { recursive: true });
  let failed = 0;
  // Ctrl-C (or `timeout -s INT`) reaches the whole process group: the train run in flight stops after its
  // step with a checkpoint (exit 0, unfinished), and this process, instead of dying at once (spawnSync holds
  // the event loop, so the handler itself runs too late to tell), writes the tables and stops after it.
  process.on('SIGINT', () => {});
  let i = 0;
  for (const { run: r, seed, key } of runs) {
    i++;
    const dir = join(a.out, key);
    const before = readRun(dir);
    const args = [
      'train',
      '--dataset',
      a.dataset,
      '--arch',
      r.arch,
      '--out',
      dir,
      ...r.flags,
      '--seed',
      String(seed),
    ];
    args.push(...trainFlags);
    if (before.started) args.push('--resume');
    const what = `[${i}/${runs.length}] ${key}`;
    if (a['dry-run']) {
      console.log(`${what}: ${before.finished ? 'done' : `shufflenet ${args.join(' ')}`}`);
      continue;
    }
    if (before.finished) {
      console.error(`${what}: done already (${dir})`);
      results.set(key, before);
    } else {
      console.error(`${what}: ${before.started ? 'resuming' : 'training'} in ${dir}`);
      // The caller's directory: --dataset and --out are relative to it here and in the child alike.
      const p = spawnSync(cli[0]!, [...cli.slice(1), ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
      const after = readRun(dir);
      if (p.status !== 0 || !after.finished) {
        failed++;
        const stopped = p.signal === 'SIGINT' || (p.status === 0 && !after.finished);
        const error = stopped
          ? 'stopped: a rerun resumes it'
          : p.signal
            ? `stopped by ${p.signal}`
            : `train exited ${p.status}`;
        results.set(key, { ...after, error });
        console.error(`${what}: ${error}`);
        if (stopped) {
          save();
          return 130;
        }
      } else results.set(key, after);
    }
    save();
  }
  if (!a['dry-run']) {
    save();
    console.log(formatTables(tables, results, about));
  }
  return failed ? 1 : 0;
}

/**
 * How to run `shufflenet`: the bundle beside this file when there is one (dist/device/ablations.js runs
 * dist/device/cli.js on the GPU machine, which has no tsx), else the sources through tsx.
 */
function shufflenetCommand(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const bundled = join(here, 'cli.js');
  if (existsSync(bundled)) return [process.execPath, bundled];
  return [
    process.execPath,
    '--import',
    import.meta.resolve('tsx'),
    join(here, '..', 'src', 'cli', 'main.ts'),
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = main();
