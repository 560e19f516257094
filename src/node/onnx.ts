import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { importOnnx, type ExternalDataReader, type OnnxModel } from '../io/onnx/import.js';
import { OnnxError } from '../io/onnx/proto.js';

/**
 * An ONNX model from its file, with any tensors stored in external files beside it (ONNX's external data:
 * paths relative to the model's folder; one that leaves the folder is refused).
 */
export function importOnnxFile(path: string): OnnxModel {
  return importOnnx(new Uint8Array(readFileSync(path)), path, { external: externalDataReader(path) });
}

/** Reads external data files relative to `modelPath`'s folder, each file once. */
export function externalDataReader(modelPath: string): ExternalDataReader {
  const dir = dirname(resolve(modelPath));
  const files = new Map<string, Uint8Array>();
  return (location, offset, length) => {
    if (isAbsolute(location) || location.split(/[\\/]/).includes('..'))
      throw new OnnxError(`external data '${location}': not a path inside the model's folder ${dir}`);
    let data = files.get(location);
    if (!data) {
      const file = join(dir, location);
      let isFile = false;
      try {
        isFile = statSync(file).isFile();
      } catch {
        // missing: said below
      }
      if (!isFile) throw new OnnxError(`external data file '${file}' is missing`);
      data = new Uint8Array(readFileSync(file));
      files.set(location, data);
    }
    const end = length === undefined ? data.length : offset + length;
    if (offset > data.length || end > data.length)
      throw new OnnxError(
        `external data '${location}': bytes ${offset}..${end} are past its end (${data.length} bytes)`,
      );
    return data.subarray(offset, end);
  };
}
