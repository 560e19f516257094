import { ConfigError } from '../errors.js';
import { GraphBuilder, type Value } from '../graph/builder.js';
import type { Graph } from '../graph/graph.js';
import type { ShuffleOrder } from '../ops/index.js';

export const SHUFFLENET_GROUPS = [1, 2, 3, 4, 8] as const;
export const SHUFFLENET_SCALES = [0.25, 0.5, 1.0, 1.5, 2.0] as const;

/** Table 1 of the paper: output widths of stages 2, 3, 4 at 1x (stem 24). */
export const TABLE1_WIDTHS: Record<number, readonly [number, number, number]> = {
  1: [144, 288, 576],
  2: [200, 400, 800],
  3: [240, 480, 960],
  4: [272, 544, 1088],
  8: [384, 768, 1536],
};

/** The authors' released configurations (stem, stage 2, 3, 4), from ShuffleNet-Series/ShuffleNetV1/network.py. */
export const AUTHORS_WIDTHS: Record<string, readonly [number, number, number, number]> = {
  'g3_0.5': [12, 120, 240, 480],
  'g3_1.0': [24, 240, 480, 960],
  'g3_1.5': [24, 360, 720, 1440],
  'g3_2.0': [48, 480, 960, 1920],
  'g8_0.5': [16, 192, 384, 768],
  'g8_1.0': [24, 384, 768, 1536],
  'g8_1.5': [24, 576, 1152, 2304],
  'g8_2.0': [48, 768, 1536, 3072],
};

/**
 * The building block of stages 2-4. 'shufflenet' is the paper's unit; the others are Table 4's comparison
 * units at equal complexity (torchvision Bottleneck names conv1..3 / bn1..3):
 * vgg: two 3x3 convs with BN + ReLU; resnet: 1x1 -> 3x3 -> 1x1 bottleneck, ratio 1:4; resnext: the same with a
 * 3x3 conv of cardinality 16 and ratio 1:2; xception: the ShuffleNet unit with g = 1. Every unit with a shortcut
 * downsamples like ShuffleNet's (stride-2 3x3 average pool, concatenated), so only the unit differs.
 */
export type UnitKind = 'shufflenet' | 'vgg' | 'resnet' | 'resnext' | 'xception';

export interface ShuffleNetConfig {
  unit: UnitKind;
  groups: number;
  /** Stem width and the output widths of stages 2, 3 and 4. */
  stem: number;
  stages: readonly [number, number, number];
  repeats: readonly [number, number, number];
  /** Table 3: false removes every channel shuffle. */
  shuffle: boolean;
  /** 'authors' (Megvii's released code, needed for their weights) or 'paper' (the textbook reshape). */
  shuffleOrder: ShuffleOrder;
  /** Paper Fig. 2 shuffles right after the first 1x1 conv; the authors' code after the depthwise conv + BN. */
  shufflePosition: 'before-dw' | 'after-dw';
  inputChannels: number;
  inputSize: readonly [number, number];
  numClasses: number;
  /** For 28x28 or 32x32 images: a stride-1 stem and no max pool. */
  smallInput: boolean;
}

export type ShuffleNetOptions = Partial<
  Pick<
    ShuffleNetConfig,
    | 'shuffle'
    | 'shuffleOrder'
    | 'shufflePosition'
    | 'inputChannels'
    | 'inputSize'
    | 'numClasses'
    | 'smallInput'
  >
>;

const roundTo = (v: number, m: number) => Math.max(m, Math.round(v / m) * m);

/**
 * Widths for groups g and scale s. The authors' released (g, s) use their own table. Otherwise:
 * stage width = s x Table 1 width rounded to a multiple of 4g (so the bottleneck, width / 4, splits into g
 * groups, and every branch width is a multiple of g), and stem = 24s rounded up to a multiple of g. This rule
 * reproduces every authors' width except the 1.5x stem (they keep 24, the rule gives 36).
 */
export function shufflenetWidths(groups: number, scale: number): readonly [number, number, number, number] {
  const base = TABLE1_WIDTHS[groups];
  if (!base || !(SHUFFLENET_SCALES as readonly number[]).includes(scale)) {
    throw new ConfigError(
      `ShuffleNet v1: no configuration for g=${groups}, s=${scale}; ` +
        `groups must be one of ${SHUFFLENET_GROUPS.join(', ')} and scale one of ${SHUFFLENET_SCALES.join(', ')}`,
    );
  }
  const authors = AUTHORS_WIDTHS[`g${groups}_${scale.toFixed(1)}`];
  if (authors) return authors;
  const stem = Math.ceil(Math.max(24 * scale, 12) / groups) * groups;
  const [a, b, c] = base.map((w) => roundTo(w * scale, 4 * groups)) as [number, number, number];
  return [stem, a, b, c];
}

export function shufflenetConfig(
  groups: number,
  scale: number,
  options: ShuffleNetOptions = {},
): ShuffleNetConfig {
  const [stem, ...stages] = shufflenetWidths(groups, scale);
  return {
    unit: 'shufflenet',
    groups,
    stem,
    stages: stages as [number, number, number],
    repeats: [4, 8, 4],
    shuffle: true,
    shuffleOrder: 'authors',
    shufflePosition: 'after-dw',
    inputChannels: 3,
    inputSize: [224, 224],
    numClasses: 1000,
    smallInput: false,
    ...options,
  };
}

/** Reports every width that breaks group divisibility, so a custom config fails before it is built. */
export function validateShuffleNetConfig(c: ShuffleNetConfig): void {
  const problems: string[] = [];
  let inp = c.stem;
  c.stages.forEach((w, s) => {
    const mid = w / 4;
    if (!Number.isInteger(mid))
      problems.push(`stage ${s + 2} width ${w} is not a multiple of 4 (bottleneck = width / 4)`);
    else if (mid % c.groups)
      problems.push(`stage ${s + 2} bottleneck ${mid} is not divisible by g=${c.groups}`);
    if ((w - inp) % c.groups || w <= inp) {
      problems.push(
        `stage ${s + 2}: the stride-2 branch width ${w} - ${inp} = ${w - inp} must be positive and divisible by g=${c.groups}`,
      );
    }
    inp = w;
  });
  if (problems.length) throw new ConfigError(`ShuffleNet v1 config: ${problems.join('; ')}`);
}

type UnitBuilder = (
  b: GraphBuilder,
  c: ShuffleNetConfig,
  name: string,
  x: Value,
  out: number,
  stride: 1 | 2,
  firstUnit: boolean,
) => Value;

/** Stride 1: ReLU(x + branch); stride 2: concat(AvgPool3x3/2(x), ReLU(branch)), the pooled shortcut first. */
function merge(b: GraphBuilder, name: string, x: Value, y: Value, stride: 1 | 2): Value {
  if (stride === 1) return b.relu(`${name}.relu`, b.add(`${name}.add`, x, y));
  const proj = b.avgpool(`${name}.branch_proj`, x, 3, 2, 1, true);
  return b.concat(`${name}.concat`, [proj, b.relu(`${name}.relu`, y)]);
}

/** One ShuffleNet unit (paper Fig. 2 (b) for stride 1, (c) for stride 2), with the authors' module names. */
const shufflenetUnit: UnitBuilder = (b, c, name, x, out, stride, firstUnit) => {
  const g = c.groups;
  const mid = out / 4;
  const branchOut = stride === 2 ? out - x.channels : out;
  const shuffles = c.shuffle && g > 1;
  const m1 = `${name}.branch_main_1`;
  let y = b.conv(`${m1}.0`, x, mid, 1, { groups: firstUnit ? 1 : g });
  y = b.relu(`${m1}.2`, b.bn(`${m1}.1`, y));
  if (shuffles && c.shufflePosition === 'before-dw') y = b.shuffle(`${name}.shuffle`, y, g, c.shuffleOrder);
  y = b.bn(`${m1}.4`, b.conv(`${m1}.3`, y, mid, 3, { stride, padding: 1, groups: mid }));
  if (shuffles && c.shufflePosition === 'after-dw') y = b.shuffle(`${name}.shuffle`, y, g, c.shuffleOrder);
  const m2 = `${name}.branch_main_2`;
  y = b.bn(`${m2}.1`, b.conv(`${m2}.0`, y, branchOut, 1, { groups: g }));
  return merge(b, name, x, y, stride);
};

/** 1x1 -> 3x3 (cardinality `card`) -> 1x1 bottleneck with `ratio` = bottleneck / output width. */
const bottleneck =
  (ratio: number, card: number): UnitBuilder =>
  (b, _c, name, x, out, stride) => {
    const mid = out * ratio;
    const branchOut = stride === 2 ? out - x.channels : out;
    let y = b.relu(`${name}.relu1`, b.bn(`${name}.bn1`, b.conv(`${name}.conv1`, x, mid, 1)));
    y = b.conv(`${name}.conv2`, y, mid, 3, { stride, padding: 1, groups: card });
    y = b.relu(`${name}.relu2`, b.bn(`${name}.bn2`, y));
    y = b.bn(`${name}.bn3`, b.conv(`${name}.conv3`, y, branchOut, 1));
    return merge(b, name, x, y, stride);
  };

const vggUnit: UnitBuilder = (b, _c, name, x, out, stride) => {
  let y = b.conv(`${name}.conv1`, x, out, 3, { stride, padding: 1 });
  y = b.relu(`${name}.relu1`, b.bn(`${name}.bn1`, y));
  return b.relu(`${name}.relu2`, b.bn(`${name}.bn2`, b.conv(`${name}.conv2`, y, out, 3, { padding: 1 })));
};

const UNITS: Record<UnitKind, UnitBuilder> = {
  shufflenet: shufflenetUnit,
  xception: (b, c, ...rest) => shufflenetUnit(b, { ...c, groups: 1 }, ...rest),
  resnet: bottleneck(1 / 4, 1),
  resnext: bottleneck(1 / 2, 16),
  vgg: vggUnit,
};

export function buildShuffleNet(name: string, c: ShuffleNetConfig): Graph {
  if (c.unit === 'shufflenet') validateShuffleNetConfig(c);
  const unit = UNITS[c.unit];
  const b = new GraphBuilder(name, c.inputChannels, c.inputSize);
  let x = b.conv('first_conv.0', b.input(), c.stem, 3, { stride: c.smallInput ? 1 : 2, padding: 1 });
  x = b.relu('first_conv.2', b.bn('first_conv.1', x));
  if (!c.smallInput) x = b.maxpool('maxpool', x, 3, 2, 1);
  let index = 0;
  c.stages.forEach((width, s) => {
    for (let r = 0; r < c.repeats[s]!; r++) {
      x = unit(b, c, `features.${index++}`, x, width, r === 0 ? 2 : 1, s === 0 && r === 0);
    }
  });
  x = b.flatten('flatten', b.globalAvgPool('globalpool', x), x.channels);
  return b.build(b.linear('classifier.0', x, c.numClasses, false));
}
