import type { Preprocess } from '../data/image.js';
import { MEGVII_PREPROCESS } from '../data/image.js';

/** A released set of weights: what it is, where it comes from, and how its inputs must be prepared. */
export interface WeightsEntry {
  /** The name users pass to --weights. */
  name: string;
  /** The model preset these weights fit. */
  arch: string;
  /** File name in the cache folder. */
  file: string;
  sha256: string;
  /** Digests of other faithful copies (e.g. the same tensors as .safetensors), recognised as this entry. */
  alsoSha256?: readonly string[];
  url: string;
  preprocess: Preprocess;
  labels: 'imagenet' | 'fashion-mnist';
  /** Published top-1 / top-5 error (%) on the ImageNet validation set. */
  error: { top1: number; top5: number };
  source: string;
}

const MEGVII_REHOST =
  'https://github.com/DavidBlavid/ShufflenetDemo/raw/08971610b2160944c6cbe7108962566fbad5a985/weights/ShuffleNetV1';
const MEGVII = 'Megvii (the paper authors), github.com/megvii-model/ShuffleNet-Series, MIT';

/** The authors' ImageNet checkpoints whose bytes are known (sha256 of the original .pth.tar). */
export const WEIGHTS: readonly WeightsEntry[] = [
  {
    name: 'shufflenet_v1_g3_0.5x',
    arch: 'shufflenet_v1_g3_0.5x',
    file: 'shufflenet_v1_g3_0.5x.pth.tar',
    sha256: 'da5df689f1d8f278fd1446e73f3a63aa7809206fadc6678bfd7580aad412abde',
    alsoSha256: ['fb3cbd141f7d27b4fbbce1e6bc4c5531fcce97b9a30e355188644c3fcef3d832'],
    url: `${MEGVII_REHOST}/Group3/models/0.5x.pth.tar`,
    preprocess: MEGVII_PREPROCESS,
    labels: 'imagenet',
    error: { top1: 42.7, top5: 20.0 },
    source: MEGVII,
  },
  {
    name: 'shufflenet_v1_g8_0.5x',
    arch: 'shufflenet_v1_g8_0.5x',
    file: 'shufflenet_v1_g8_0.5x.pth.tar',
    sha256: '324922040c0ee642ce7168f32259aca0c9e16baf6b2abade4122edff6ba58382',
    alsoSha256: ['02e29e8802bc4c2b72fd70cf78f49459c887dd7c70c1850fad6470dd51c8ec24'],
    url: `${MEGVII_REHOST}/Group8/models/0.5x.pth.tar`,
    preprocess: MEGVII_PREPROCESS,
    labels: 'imagenet',
    error: { top1: 41.2, top5: 19.0 },
    source: MEGVII,
  },
];

export function findWeights(
  name: string,
  registry: readonly WeightsEntry[] = WEIGHTS,
): WeightsEntry | undefined {
  return registry.find((w) => w.name === name);
}
