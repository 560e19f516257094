// Node.js adapters: files, image decoding, the weights cache, worker threads. Import from 'shufflenet/node'.
export { decodeImage, loadImage } from './image.js';
export {
  loadModel,
  defaultModelPath,
  resolveWeights,
  shufflenetHome,
  type LoadedModel,
  type ResolveOptions,
} from './weights.js';
export { createNodeEngine, type NodeEngineOptions } from './engine.js';
export { createNodeWebGpuEngine, WebGpuUnavailableError, type NodeWebGpuOptions } from './webgpu.js';
export { ThreadPool } from './threads.js';
export { enableRelaxedSimd } from './wasm.js';
export { writeFileAtomic, sha256 } from './files.js';
export {
  loadDataset,
  loadFashionMnist,
  loadCifar10Binary,
  loadImageFolder,
  FASHION_MNIST_DIR,
} from './datasets.js';
