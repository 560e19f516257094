import { IMAGENET_SYNSETS } from './imagenet-labels.js';

/** ImageNet-1k class names: the first WordNet synonym of each class ("Egyptian cat", "bow tie"). */
export const IMAGENET_LABELS: readonly string[] = IMAGENET_SYNSETS.map((s) => s.split(', ')[0]!);

export { IMAGENET_SYNSETS };

/** Fashion-MNIST's ten classes, in label order. */
export const FASHION_MNIST_LABELS: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

export interface Prediction {
  index: number;
  label: string;
  prob: number;
}

/** Softmax of one row of logits and its k most probable classes. */
export function topK(logits: ArrayLike<number>, k: number, labels: readonly string[]): Prediction[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - max);
  const order = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!);
  return order.slice(0, k).map((index) => ({
    index,
    label: labels[index] ?? `class ${index}`,
    prob: Math.exp(logits[index]! - max) / z,
  }));
}
