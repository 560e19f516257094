// ONNX: export to and import from every other runtime (platform-neutral, on bytes).
export { exportOnnx, ONNX_OUTPUT, type OnnxExportOptions } from './export.js';
export { importOnnx, type OnnxModel } from './import.js';
export { OnnxError } from './proto.js';
