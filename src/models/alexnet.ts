import { GraphBuilder } from '../graph/builder.js';
import type { Graph } from '../graph/graph.js';

export interface AlexNetOptions {
  inputChannels?: number;
  inputSize?: readonly [number, number];
  numClasses?: number;
}

/**
 * AlexNet as torchvision defines it (one-tower, 64/192/384/256/256), with torchvision's state_dict names, the
 * paper's comparison network (~720 MFLOPs). Dropout is omitted: it is the identity at inference.
 */
export function buildAlexNet(name: string, o: AlexNetOptions = {}): Graph {
  const b = new GraphBuilder(name, o.inputChannels ?? 3, o.inputSize ?? [224, 224]);
  let x = b.relu(
    'features.1',
    b.conv('features.0', b.input(), 64, 11, { stride: 4, padding: 2, bias: true }),
  );
  x = b.maxpool('features.2', x, 3, 2);
  x = b.relu('features.4', b.conv('features.3', x, 192, 5, { padding: 2, bias: true }));
  x = b.maxpool('features.5', x, 3, 2);
  x = b.relu('features.7', b.conv('features.6', x, 384, 3, { padding: 1, bias: true }));
  x = b.relu('features.9', b.conv('features.8', x, 256, 3, { padding: 1, bias: true }));
  x = b.relu('features.11', b.conv('features.10', x, 256, 3, { padding: 1, bias: true }));
  x = b.maxpool('features.12', x, 3, 2);
  x = b.flatten('flatten', b.adaptiveAvgPool('avgpool', x, 6), 256 * 6 * 6);
  x = b.relu('classifier.2', b.linear('classifier.1', x, 4096));
  x = b.relu('classifier.5', b.linear('classifier.4', x, 4096));
  return b.build(b.linear('classifier.6', x, o.numClasses ?? 1000));
}
