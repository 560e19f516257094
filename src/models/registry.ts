import { ConfigError } from '../errors.js';
import type { Graph } from '../graph/graph.js';
import { buildAlexNet } from './alexnet.js';
import { buildMobileNetV1 } from './mobilenet.js';
import {
  buildShuffleNet,
  SHUFFLENET_GROUPS,
  SHUFFLENET_SCALES,
  shufflenetConfig,
  type ShuffleNetOptions,
  type UnitKind,
} from './shufflenet.js';

export type ModelOptions = ShuffleNetOptions;
export type Family = 'shufflenet_v1' | 'mobilenet_v1' | 'alexnet' | 'table4';

interface Preset {
  family: Family;
  description: string;
  build(name: string, options: ModelOptions): Graph;
}

const SHUFFLE_ONLY: ReadonlyArray<keyof ModelOptions> = ['shuffle', 'shuffleOrder', 'shufflePosition'];
/** The families with a small-input stem (ShuffleNet, Table 4's nets and MobileNet; not AlexNet). */
const SMALL_INPUT: ReadonlySet<Family> = new Set(['shufflenet_v1', 'table4', 'mobilenet_v1']);
export const hasSmallInputStem = (family: Family) => SMALL_INPUT.has(family);

const scaleName = (s: number) => s.toFixed(s === 0.25 ? 2 : 1);

/**
 * Table 4 of the paper: stages 2-4 built from other units, widths chosen so the convolutions cost about the
 * same as ShuffleNet's 140 / 38 / 13 MFLOPs (stem 24 at 140, 12 below), with widths that grow from stage to
 * stage. ResNeXt's 3x3 needs bottlenecks in multiples of 16, so its smaller models land at 33 and 17.6 MFLOPs.
 * Xception-like is ShuffleNet with g = 1.
 */
const TABLE4: ReadonlyArray<[UnitKind, number, number, readonly [number, number, number]]> = [
  ['vgg', 140, 24, [24, 48, 104]],
  ['resnet', 140, 24, [100, 196, 392]],
  ['resnet', 38, 12, [52, 100, 200]],
  ['resnet', 13, 12, [24, 52, 100]],
  ['xception', 140, 24, [144, 288, 576]],
  ['xception', 38, 12, [72, 144, 288]],
  ['xception', 13, 12, [36, 72, 144]],
  ['resnext', 140, 24, [96, 192, 352]],
  ['resnext', 38, 12, [32, 96, 192]],
  ['resnext', 13, 12, [32, 64, 96]],
];

function table(): Map<string, Preset> {
  const presets = new Map<string, Preset>();
  for (const g of SHUFFLENET_GROUPS) {
    for (const s of SHUFFLENET_SCALES) {
      presets.set(`shufflenet_v1_g${g}_${scaleName(s)}x`, {
        family: 'shufflenet_v1',
        description: `ShuffleNet v1 ${scaleName(s)}x, g=${g}`,
        build: (name, o) => buildShuffleNet(name, shufflenetConfig(g, s, o)),
      });
    }
  }
  for (const a of [0.25, 0.5, 0.75, 1.0]) {
    presets.set(`mobilenet_v1_${a === 1 ? '1.0' : a}`, {
      family: 'mobilenet_v1',
      description: `MobileNet v1 ${a} (Table 5)`,
      build: (name, o) => buildMobileNetV1(name, a, o),
    });
  }
  presets.set('alexnet', {
    family: 'alexnet',
    description: 'AlexNet, torchvision layout (Tables 5, 8)',
    build: (name, o) => buildAlexNet(name, o),
  });
  for (const [unit, mflops, stem, stages] of TABLE4) {
    presets.set(`table4_${unit}_${mflops}m`, {
      family: 'table4',
      description: `Table 4: ${unit} units at ~${mflops} MFLOPs`,
      build: (name, o) => buildShuffleNet(name, { ...shufflenetConfig(1, 1, o), unit, stem, stages }),
    });
  }
  return presets;
}

const PRESETS = table();

export const PRESET_NAMES: readonly string[] = [...PRESETS.keys()];

export function presetFamily(name: string): Family {
  return lookup(name).family;
}

export function presetDescription(name: string): string {
  return lookup(name).description;
}

function lookup(name: string): Preset {
  const preset = PRESETS.get(name);
  if (preset) return preset;
  const m = /^shufflenet_v1_g(\d+)_([\d.]+)x$/.exec(name);
  const hint = m
    ? `ShuffleNet v1 has g in {${SHUFFLENET_GROUPS.join(', ')}} and s in {${SHUFFLENET_SCALES.map(scaleName).join(', ')}}, ` +
      `written shufflenet_v1_g{g}_{s}x`
    : `valid presets: ${PRESET_NAMES.join(', ')}`;
  throw new ConfigError(`unknown model '${name}'; ${hint}`);
}

/** The graph of a preset; options change input, classes, the shuffle (ShuffleNet) and the stem (not AlexNet). */
export function buildPreset(name: string, options: ModelOptions = {}): Graph {
  const preset = lookup(name);
  if (preset.family !== 'shufflenet_v1' && preset.family !== 'table4') {
    const bad = SHUFFLE_ONLY.filter((k) => options[k] !== undefined);
    if (bad.length)
      throw new ConfigError(`${name}: option ${bad.join(', ')} applies to ShuffleNet models only`);
  }
  if (options.smallInput !== undefined && !hasSmallInputStem(preset.family))
    throw new ConfigError(`${name}: option smallInput applies to ShuffleNet and MobileNet models only`);
  return preset.build(name, options);
}
