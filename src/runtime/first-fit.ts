/** A buffer to place: its size and the first and last step that use it. */
export interface Lifetime {
  size: number;
  first: number;
  last: number;
}

/**
 * Greedy first-fit by size, largest first: each buffer goes to the lowest offset where it overlaps no placed
 * buffer whose lifetime overlaps its own. Used by the inference arena and both training plans' gradients.
 * Sizes are used as given (callers align them).
 */
export function firstFit(items: readonly Lifetime[]): { at: number[]; total: number } {
  const order = items.map((_, i) => i).sort((a, b) => items[b]!.size - items[a]!.size);
  const at: number[] = new Array<number>(items.length).fill(0);
  const placed: number[] = [];
  let total = 0;
  for (const i of order) {
    const it = items[i]!;
    const clashes = placed
      .filter((j) => items[j]!.first <= it.last && it.first <= items[j]!.last)
      .sort((a, b) => at[a]! - at[b]!);
    let offset = 0;
    for (const j of clashes) {
      if (offset + it.size <= at[j]!) break;
      offset = Math.max(offset, at[j]! + items[j]!.size);
    }
    at[i] = offset;
    placed.push(i);
    total = Math.max(total, offset + it.size);
  }
  return { at, total };
}
