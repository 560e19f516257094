/**
 * ShuffleNet.ts: the public API. The data flow is image -> preprocess -> tensor -> model (graph of ops)
 * -> kernels -> logits -> labels; each group below is one step of it. Nothing else is exported.
 */

// Tensors: float32, NCHW.
export { Tensor, shapeSize, formatShape, seededRandom, type Shape } from './tensor/tensor.js';
export { OpError, ConfigError } from './errors.js';

// Ops: one table entry per op (shape rule, cost, reference kernel).
export { OPS, OP_NAMES, shufflePermutation, shuffleSource } from './ops/index.js';
export type { OpName, OpAttrs, OpSpec, ShuffleOrder, Conv2dAttrs } from './ops/index.js';
export { referenceBackend, type Backend } from './backends/backend.js';

// Graphs: models as op graphs with PyTorch state_dict names; running and counting them.
export { GraphBuilder, type Value } from './graph/builder.js';
export { graphParams, inferShapes, INPUT, type Graph, type Node, type ParamInfo } from './graph/graph.js';
export { execute, checkWeights, type ExecuteOptions } from './graph/execute.js';
export { complexity, type Complexity, type LayerCost } from './graph/complexity.js';
export { initWeights } from './nn/init.js';

// Preprocessing and labels: image -> tensor, logits -> classes.
export {
  preprocess,
  resize,
  resizeShorter,
  centerCrop,
  toTensor,
  toRgb,
  MEGVII_PREPROCESS,
  type RgbImage,
  type Preprocess,
} from './data/image.js';
export { IMAGENET_LABELS, FASHION_MNIST_LABELS, topK, type Prediction } from './data/labels.js';

// Models: the config tables, builders and presets.
export { Model, createModel } from './models/model.js';
export {
  buildPreset,
  PRESET_NAMES,
  presetFamily,
  presetDescription,
  type ModelOptions,
} from './models/registry.js';
export {
  buildShuffleNet,
  shufflenetConfig,
  shufflenetWidths,
  validateShuffleNetConfig,
  TABLE1_WIDTHS,
  AUTHORS_WIDTHS,
  SHUFFLENET_GROUPS,
  SHUFFLENET_SCALES,
  type ShuffleNetConfig,
  type ShuffleNetOptions,
  type UnitKind,
} from './models/shufflenet.js';
export { buildMobileNetV1 } from './models/mobilenet.js';
export { buildAlexNet } from './models/alexnet.js';
export { WEIGHTS, findWeights, type WeightsEntry } from './models/weights.js';
export {
  loadModelBytes,
  modelFromCheckpoint,
  modelIO,
  recogniseWeights,
  type ArchOptions,
  type CheckpointModel,
  type LoadedFile,
  type ModelIO,
} from './models/load.js';

// Checkpoints and ONNX (on bytes; file access is in 'shufflenet/node').
export {
  CheckpointError,
  readCheckpoint,
  readSafetensors,
  writeSafetensors,
  readPytorch,
  writePytorch,
  weightsFromStateDict,
  stateDictFromWeights,
  exportSafetensors,
  presetsFitting,
  type Checkpoint,
  type RawTensor,
} from './io/index.js';
export { exportOnnx, importOnnx, OnnxError, type OnnxExportOptions } from './io/onnx/index.js';

// Fast inference: fused plans on the WASM SIMD kernels.
export { Engine, createEngine } from './runtime/engine.js';
export { Plan, type PlanOptions } from './runtime/plan.js';
export { relaxedSimdSupported } from './backends/wasm/module.js';

// WebGPU inference (the same lowered plans on WGSL kernels) and training, on a GPUDevice
// (browsers: navigator.gpu).
export {
  WebGpuEngine,
  WebGpuPlan,
  WebGpuTrainPlan,
  webgpuTraining,
  requestWebGpuEngine,
  NoWebGpuAdapterError,
  type WebGpuEngineOptions,
  type WebGpuPlanOptions,
  type PixelInput,
  type Precision,
} from './backends/webgpu/index.js';

// Training: reverse-mode autograd over the op table (reference), compiled training plans on the WASM kernels.
export { forwardWithTape, backward } from './autograd/tape.js';
export { softmaxCrossEntropy } from './train/loss.js';
export { sgd, adamw, lrSchedule } from './train/optim.js';
export { TrainPlan } from './runtime/train-plan.js';
export {
  train,
  evaluate,
  evaluateAsync,
  recalibrateBatchNorm,
  engineTraining,
  referenceTraining,
  type TrainBackend,
  type TrainConfig,
  type TrainResult,
} from './train/trainer.js';
export { fashionMnist, cifar10Binary, parseIdx, DatasetError, type ImageSet } from './data/datasets.js';
