import { batchnorm } from './batchnorm.js';
import { conv2d } from './conv2d.js';
import { add, concat, flatten, relu } from './elementwise.js';
import { linear, softmax } from './linear.js';
import { adaptiveavgpool2d, avgpool2d, globalavgpool, maxpool2d } from './pool.js';
import { channelshuffle } from './shuffle.js';
import type { OpAttrs, OpName, OpSpec } from './types.js';

/** The op table. Typed as complete: an op in OpAttrs without an entry here is a compile error. */
export const OPS: { readonly [K in OpName]: OpSpec<OpAttrs[K]> } = {
  conv2d,
  batchnorm,
  relu,
  maxpool2d,
  avgpool2d,
  globalavgpool,
  adaptiveavgpool2d,
  linear,
  add,
  concat,
  channelshuffle,
  softmax,
  flatten,
};

export const OP_NAMES = Object.keys(OPS) as OpName[];

export * from './types.js';
export { shufflePermutation, shuffleSource } from './shuffle.js';
export { channelStats } from './batchnorm.js';
