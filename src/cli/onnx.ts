import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { integer, parseSize } from './args.js';
import type { Graph } from '../graph/graph.js';
import { readCheckpoint, stateDictFromWeights } from '../io/checkpoint.js';
import { exportOnnx, type OnnxExportOptions } from '../io/onnx/export.js';
import { importOnnxFile } from '../node/onnx.js';
import { writePytorch } from '../io/pytorch-write.js';
import { writeSafetensors } from '../io/safetensors.js';
import { createModel, Model } from '../models/model.js';
import { buildPreset, PRESET_NAMES } from '../models/registry.js';
import { writeFileAtomic } from '../node/files.js';
import { loadModel } from '../node/weights.js';

type Format = 'onnx' | 'safetensors' | 'pytorch';

function formatOf(path: string): Format {
  if (/\.onnx$/i.test(path)) return 'onnx';
  if (/\.safetensors$/i.test(path)) return 'safetensors';
  if (/\.(pth|pt|pth\.tar)$/i.test(path)) return 'pytorch';
  throw new ConfigError(`'${path}': unknown format; use .onnx, .safetensors, or .pth / .pth.tar / .pt`);
}

/** A model read from an ONNX file (for `classify --model`). */
export function loadOnnxModel(path: string): { model: Model } {
  const { graph, weights } = importOnnxFile(path);
  return { model: new Model(graph, weights) };
}

/** The preset whose default graph this is, so a converted checkpoint says its arch; none for other graphs. */
function presetOf(graph: Graph): string | undefined {
  if (!PRESET_NAMES.includes(graph.name)) return undefined;
  return JSON.stringify(buildPreset(graph.name).nodes) === JSON.stringify(graph.nodes)
    ? graph.name
    : undefined;
}

interface ExportFlags {
  arch: string;
  weights?: string;
  seed: number;
  foldBn?: boolean;
  input?: string;
  opset: number;
  onnx: string;
}

interface ConvertFlags {
  arch?: string;
  foldBn?: boolean;
  input?: string;
  opset: number;
}

const onnxOptions = (o: { foldBn?: boolean; input?: string; opset: number }): OnnxExportOptions => ({
  foldBn: !!o.foldBn,
  opset: o.opset,
  ...(o.input ? { inputSize: parseSize(o.input) } : {}),
});

const mb = (bytes: Uint8Array) => `${(bytes.length / 1e6).toFixed(1)} MB`;

/** `shufflenet export` and `shufflenet convert`. */
export function addOnnxCommands(program: Command): Command {
  program
    .command('export')
    .description('write a model as ONNX: input `input` [N, C, H, W] (dynamic N), output `logits`')
    .requiredOption('--arch <name>', 'model preset (see `shufflenet models`)')
    .option(
      '--weights <file|name>',
      'a .safetensors / .pth / .pth.tar file or registered name (default: seeded random)',
    )
    .option('--seed <n>', 'seed of the random weights without --weights', integer('--seed', 0), 0)
    .option('--fold-bn', 'fold each BatchNorm into the convolution before it')
    .option(
      '--input <HxW>',
      "input size, H or HxW (default: the model's design size); the file runs at this size",
    )
    .option('--opset <n>', 'ONNX opset, 13 to 21', integer('--opset', 0), 13)
    .requiredOption('--onnx <file>', 'the .onnx file to write')
    .action(async (o: ExportFlags) => {
      if (formatOf(o.onnx) !== 'onnx')
        throw new ConfigError(`--onnx '${o.onnx}': the file name must end in .onnx`);
      const options = onnxOptions(o);
      const model = o.weights
        ? (await loadModel(o.weights, { arch: o.arch, log: (m) => console.error(m) })).model
        : createModel(o.arch, { seed: o.seed });
      const bytes = exportOnnx(model.graph, model.weights, options);
      writeFileAtomic(o.onnx, bytes);
      console.log(
        `wrote ${o.onnx} (${mb(bytes)}): ${model.name}${o.weights ? '' : ` with random weights (seed ${o.seed})`}`,
      );
    });

  program
    .command('convert')
    .description(
      'convert weights between .pth / .pth.tar / .pt, .safetensors and .onnx (chosen by extension); ' +
        '.pth / .pt is written as torch.save does (torch.load(f, weights_only=True) opens it)',
    )
    .argument('<in>', 'the file to read')
    .argument('<out>', 'the file to write')
    .option('--arch <name>', 'model preset, for checkpoints whose architecture the file does not tell')
    .option('--fold-bn', 'to .onnx: fold each BatchNorm into the convolution before it')
    .option('--input <HxW>', "to .onnx: input size, H or HxW (default: the model's design size)")
    .option('--opset <n>', 'to .onnx: ONNX opset, 13 to 21', integer('--opset', 0), 13)
    .action(async (input: string, output: string, o: ConvertFlags) => {
      const [from, to] = [formatOf(input), formatOf(output)];
      const options = onnxOptions(o);
      let bytes: Uint8Array;
      if (from !== 'onnx' && to !== 'onnx') {
        // A format change only: every tensor as stored, whatever model it belongs to. A .pth keeps the
        // state_dict alone (safetensors metadata such as the arch has no place in it).
        const checkpoint = readCheckpoint(new Uint8Array(readFileSync(input)), input);
        bytes =
          to === 'pytorch'
            ? writePytorch(checkpoint.tensors)
            : writeSafetensors(checkpoint.tensors, checkpoint.metadata);
      } else {
        const { graph, weights } =
          from === 'onnx' ? importOnnxFile(input) : (await loadModel(input, { arch: o.arch })).model;
        if (to === 'onnx') bytes = exportOnnx(graph, weights, options);
        else if (to === 'pytorch') bytes = writePytorch(stateDictFromWeights(graph, weights));
        else {
          const arch = presetOf(graph);
          bytes = writeSafetensors(stateDictFromWeights(graph, weights), arch ? { arch } : {});
        }
      }
      writeFileAtomic(output, bytes);
      console.log(`wrote ${output} (${mb(bytes)})`);
    });
  return program;
}
