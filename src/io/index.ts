/** Checkpoint readers and writers. Platform-neutral: they take and return Uint8Array, never touch files. */
export { CheckpointError, toFloat32, type DType, type RawData, type RawTensor } from './raw.js';
export { readSafetensors, writeSafetensors, type Safetensors } from './safetensors.js';
export { readPytorch } from './pytorch.js';
