// The kernels of the WASM backend. Contracts: src/backends/wasm/module.ts. Built by scripts/build-wasm.mjs.
export { pointwise, conv2d, conv2dScratchBytes, linear } from './gemm';
export { depthwise3x3, maxpool2d, avgpool2d } from './spatial';
export { globalAvgPool, channelAffine, relu, add } from './elementwise';
export {
  pointwiseBackwardInput,
  pointwiseBackwardWeight,
  pointwiseBackwardWeightScratchBytes,
  batchnormStats,
  batchnormBackward,
  reluBackward,
  maxpool2dBackward,
  avgpool2dBackward,
  globalAvgPoolBackward,
  linearBackward,
  conv2dBackwardInput,
  conv2dBackwardWeight,
} from './backward';
export { depthwise3x3BackwardInput, conv3x3BackwardWeight, conv3x3ScratchBytes } from './conv3x3-backward';

/** Lowest byte offset callers may use (1024: the modules have no static data; address 0 stays free for "none"). */
export function heapBase(): usize {
  return __heap_base;
}
