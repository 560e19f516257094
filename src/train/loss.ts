import { formatShape, Tensor } from '../tensor/tensor.js';

/**
 * Mean cross entropy of softmax(logits) [N, K] against integer labels, with PyTorch's label_smoothing: the target
 * is (1 - s) * onehot + s / K (the authors train with s = 0.1). Returns the loss, dLoss/dLogits and the number of
 * rows whose largest logit is the label (first on ties).
 */
export function softmaxCrossEntropy(
  logits: Tensor,
  labels: Int32Array | readonly number[],
  smoothing = 0,
): { loss: number; grad: Tensor; correct: number } {
  if (logits.shape.length !== 2)
    throw new RangeError(`logits must be [N, K], got ${formatShape(logits.shape)}`);
  const [n, k] = logits.shape as [number, number];
  if (labels.length !== n) throw new RangeError(`${labels.length} labels for ${n} rows of logits`);
  if (!(smoothing >= 0 && smoothing <= 1))
    throw new RangeError(`label smoothing ${smoothing} is not in [0, 1]`);
  const grad = new Tensor([n, k]);
  const x = logits.data;
  let loss = 0;
  let correct = 0;
  for (let b = 0; b < n; b++) {
    const label = labels[b]!;
    if (!Number.isInteger(label) || label < 0 || label >= k) {
      throw new RangeError(`label ${label} of row ${b} is not a class in [0, ${k})`);
    }
    const row = b * k;
    let argmax = 0;
    for (let i = 1; i < k; i++) if (x[row + i]! > x[row + argmax]!) argmax = i;
    if (argmax === label) correct++;
    const m = x[row + argmax]!;
    let z = 0;
    for (let i = 0; i < k; i++) z += Math.exp(x[row + i]! - m);
    const logZ = m + Math.log(z);
    for (let i = 0; i < k; i++) {
      const target = (i === label ? 1 - smoothing : 0) + smoothing / k;
      loss -= target * (x[row + i]! - logZ);
      grad.data[row + i] = (Math.exp(x[row + i]! - logZ) - target) / n;
    }
  }
  return { loss: loss / n, grad, correct };
}
