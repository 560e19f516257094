import { Command, CommanderError, Option } from 'commander';
import { ConfigError, OpError } from '../errors.js';
import { complexity } from '../graph/complexity.js';
import { buildPreset, PRESET_NAMES, presetDescription, type ModelOptions } from '../models/registry.js';
import { formatShape } from '../tensor/tensor.js';
import { preprocess } from '../data/image.js';
import { topK } from '../data/labels.js';
import { loadImage } from '../node/image.js';
import { integer, parseSize, positiveInt } from './args.js';
import type { Precision } from '../backends/webgpu/kernels.js';
import { backendOption, openInference, precisionOption, type BackendChoice } from './backend.js';
import { addBenchCommand } from './bench.js';
import { addEvalCommand } from './eval.js';
import { loadCliModel } from './load.js';
import { addOnnxCommands } from './onnx.js';
import { addTrainCommands } from './train.js';

/** Exit code for bad usage: unknown options, archs or sizes. */
const USAGE = 2;

const num = (n: number) => n.toLocaleString('en-US');

/** Model options shared by every command that builds a model. */
function modelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--arch <name>', 'model preset (see `shufflenet models`)')
    .option('--in-channels <n>', 'input channels', positiveInt('--in-channels'))
    .option('--classes <n>', 'number of classes', positiveInt('--classes'))
    .option('--small-input', 'ShuffleNet: stride-1 stem and no max pool, for 28x28 or 32x32 images')
    .option('--no-shuffle', 'ShuffleNet: remove the channel shuffle (Table 3)')
    .addOption(new Option('--shuffle-order <order>', 'ShuffleNet: permutation').choices(['authors', 'paper']))
    .addOption(
      new Option('--shuffle-position <pos>', 'ShuffleNet: where').choices(['after-dw', 'before-dw']),
    );
}

interface ModelFlags {
  arch: string;
  inChannels?: number;
  classes?: number;
  smallInput?: boolean;
  shuffle: boolean;
  shuffleOrder?: 'authors' | 'paper';
  shufflePosition?: 'after-dw' | 'before-dw';
}

function toOptions(f: ModelFlags): ModelOptions {
  const o: ModelOptions = {};
  if (f.inChannels !== undefined) o.inputChannels = f.inChannels;
  if (f.classes !== undefined) o.numClasses = f.classes;
  if (f.smallInput) o.smallInput = true;
  if (!f.shuffle) o.shuffle = false;
  if (f.shuffleOrder) o.shuffleOrder = f.shuffleOrder;
  if (f.shufflePosition) o.shufflePosition = f.shufflePosition;
  return o;
}

function table(rows: string[][], rightAligned: number[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (rightAligned.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function cli(): Command {
  const program = new Command('shufflenet')
    .description("ShuffleNet v1 in TypeScript: define, run and count the paper's models")
    .showHelpAfterError()
    .exitOverride();

  program
    .command('models')
    .description(
      'list the model presets with their MFLOPs (conv + FC multiply-adds) and parameters at 224x224',
    )
    .option('--json', 'one JSON array on stdout')
    .action((o: { json?: boolean }) => {
      const rows = PRESET_NAMES.map((name) => {
        const c = complexity(buildPreset(name));
        return { name, mflops: c.macs / 1e6, params: c.params, description: presetDescription(name) };
      });
      if (o.json) return void console.log(JSON.stringify(rows));
      const lines = rows.map((r) => [
        r.name,
        r.mflops.toFixed(1),
        (r.params / 1e6).toFixed(2),
        r.description,
      ]);
      console.log(table([['model', 'MFLOPs', 'params (M)', ''], ...lines], [1, 2]));
    });

  modelOptions(program.command('flops'))
    .description('per-layer and total multiply-adds and parameters of a model')
    .option('--input <HxW>', 'input size, H or HxW', '224')
    .option('--json', 'one JSON object on stdout: macs, macsConvOnly, params, weights, layers')
    .action((o: ModelFlags & { input: string; json?: boolean }) => {
      const [h, w] = parseSize(o.input);
      const c = complexity(buildPreset(o.arch, toOptions(o)), h, w);
      if (o.json) return void console.log(JSON.stringify({ arch: o.arch, ...c }));
      const rows = c.layers
        .filter((l) => l.macs || l.params)
        .map((l) => [l.name, l.op, formatShape(l.output.slice(1)), num(l.macs), num(l.params)]);
      console.log(table([['layer', 'op', 'output', 'MACs', 'params'], ...rows], [3, 4]));
      console.log(
        `\n${o.arch} at ${c.input.join('x')}: ${num(c.macs)} MACs (${(c.macs / 1e6).toFixed(1)} MFLOPs), ` +
          `conv only ${num(c.macsConvOnly)}; ${num(c.params)} parameters (${num(c.weights)} conv + FC weights)`,
      );
    });
  addBenchCommand(program);
  addOnnxCommands(program);
  addTrainCommands(program);
  addEvalCommand(program);

  program
    .command('classify')
    .description(
      'classify images (the top-k classes with probabilities); without --weights or --model, with the embedded Fashion-MNIST model',
    )
    .argument('<images...>', 'PNG or JPEG files')
    .option(
      '--weights <file|name>',
      'a .safetensors / .pth / .pth.tar file, or a registered name (default: the embedded Fashion-MNIST model)',
    )
    .option('--model <file.onnx>', 'an ONNX model instead of --weights')
    .option('--arch <name>', 'model preset (default: from the registry, the file, or its tensor shapes)')
    .option('--topk <k>', 'classes to show', positiveInt('--topk'), 5)
    .option(
      '--resize <n>',
      "shorter side before the crop; 0 = no resize (default: the weights' own)",
      integer('--resize', 0),
    )
    .option('--crop <n>', "centre crop size (default: the weights' own)", positiveInt('--crop'))
    .option('--json', 'one JSON array on stdout: {file, top: [{index, label, prob}], logits?} per image')
    .option('--logits', 'with --json: include the raw logits')
    .addOption(backendOption())
    .addOption(precisionOption())
    .action(async (images: string[], o: ClassifyFlags) => {
      const { model, io } = await loadCliModel(o, false, true);
      const { labels, preprocess: pre } = io;
      if (o.resize !== undefined) pre.resize = o.resize;
      if (o.crop !== undefined) pre.crop = o.crop;
      const results: object[] = [];
      let failed = 0;
      const inference = await openInference(model, o.backend, o.precision);
      for (const file of images) {
        try {
          const logits = await inference.run(preprocess(await loadImage(file), pre));
          const top = topK(logits, o.topk, labels);
          results.push({ file, top, ...(o.logits ? { logits: Array.from(logits) } : {}) });
          if (!o.json) {
            console.log(file);
            for (const p of top)
              console.log(
                `  ${String(p.index).padStart(4)}  ${(p.prob * 100).toFixed(1).padStart(5)}%  ${p.label}`,
              );
          }
        } catch (e) {
          failed++;
          const message = (e as Error).message;
          console.error(`shufflenet: ${message.includes(file) ? message : `${file}: ${message}`}`);
          results.push({ file, error: message });
        }
      }
      inference.close();
      if (o.json) console.log(JSON.stringify(results));
      if (failed) throw new SomeFailed(`${failed} of ${images.length} images failed`);
    });
  return program;
}

interface ClassifyFlags {
  weights?: string;
  model?: string;
  arch?: string;
  topk: number;
  resize?: number;
  crop?: number;
  json?: boolean;
  logits?: boolean;
  backend: BackendChoice;
  precision: Precision;
}

/** Some inputs of a batch command failed (each was reported); exit 1. */
class SomeFailed extends Error {}

export async function main(argv: string[]): Promise<number> {
  try {
    await cli().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : USAGE;
    if (e instanceof ConfigError || e instanceof OpError) {
      console.error(`shufflenet: ${e.message}`);
      return USAGE;
    }
    if (e instanceof SomeFailed) return 1;
    console.error(`shufflenet: ${(e as Error).message}`);
    return 1;
  }
}
