// Checkpoints: formats (platform-neutral, on bytes) and the name map onto model graphs.
export { CheckpointError, toFloat32, type DType, type RawData, type RawTensor } from './raw.js';
export { readSafetensors, writeSafetensors, type Safetensors } from './safetensors.js';
export { readPytorch } from './pytorch.js';
export { writePytorch, type PytorchWriteOptions } from './pytorch-write.js';
export {
  readCheckpoint,
  weightsFromStateDict,
  stateDictFromWeights,
  exportSafetensors,
  presetsFitting,
  type Checkpoint,
} from './checkpoint.js';
