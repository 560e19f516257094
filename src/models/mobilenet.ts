import { GraphBuilder } from '../graph/builder.js';
import type { Graph } from '../graph/graph.js';

/** MobileNet v1 (Howard et al. 2017, Table 1): (output channels, stride) of each depthwise-separable block. */
// prettier-ignore
const BLOCKS: ReadonlyArray<readonly [number, 1 | 2]> = [
  [64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2],
  [512, 1], [512, 1], [512, 1], [512, 1], [512, 1], [1024, 2], [1024, 1],
];

export interface MobileNetOptions {
  inputChannels?: number;
  inputSize?: readonly [number, number];
  numClasses?: number;
  /**
   * For small images (CIFAR-10's 32x32), as ShuffleNet's small-input stem: the stem conv and the first
   * stride-2 block at stride 1, so the network downsamples 8x instead of 32x (4x4 at the end, not 1x1).
   */
  smallInput?: boolean;
}

/**
 * MobileNet v1 with width multiplier alpha, the paper's comparison network (Table 5). Names follow a plain
 * nn.Sequential: features.0 = stem conv (.0) + BN (.1); features.i = depthwise conv (.0) + BN (.1) + ReLU,
 * pointwise conv (.3) + BN (.4) + ReLU; classifier = Linear with bias.
 */
export function buildMobileNetV1(name: string, alpha: number, o: MobileNetOptions = {}): Graph {
  const b = new GraphBuilder(name, o.inputChannels ?? 3, o.inputSize ?? [224, 224]);
  const width = (c: number) => Math.floor(c * alpha);
  const small = o.smallInput ?? false;
  let x = b.conv('features.0.0', b.input(), width(32), 3, { stride: small ? 1 : 2, padding: 1 });
  x = b.relu('features.0.2', b.bn('features.0.1', x));
  BLOCKS.forEach(([out, blockStride], i) => {
    const p = `features.${i + 1}`;
    const stride = small && i === 1 ? 1 : blockStride;
    x = b.conv(`${p}.0`, x, x.channels, 3, { stride, padding: 1, groups: x.channels });
    x = b.relu(`${p}.2`, b.bn(`${p}.1`, x));
    x = b.relu(`${p}.5`, b.bn(`${p}.4`, b.conv(`${p}.3`, x, width(out), 1)));
  });
  x = b.flatten('flatten', b.globalAvgPool('pool', x), x.channels);
  return b.build(b.linear('classifier', x, o.numClasses ?? 1000));
}
