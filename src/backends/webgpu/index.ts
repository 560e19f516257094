// WebGPU inference and training: WGSL kernels, plans on one arena buffer. Platform-neutral: give it a GPU
// (navigator.gpu) or a GPUDevice; Node creates one with 'shufflenet/node' createNodeWebGpuEngine.
export {
  WebGpuEngine,
  requestWebGpuEngine,
  NoWebGpuAdapterError,
  type WebGpuEngineOptions,
} from './engine.js';
export { WebGpuPlan, type PixelInput, type WebGpuPlanOptions } from './plan.js';
export { type Precision } from './kernels.js';
export { WebGpuTrainPlan, webgpuTraining } from './train-plan.js';
