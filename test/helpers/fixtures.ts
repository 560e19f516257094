import { readFileSync } from 'node:fs';
import { Tensor } from '../../src/index.js';

export interface Blob {
  shape: number[];
  data: string;
}

export function readFixture<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8')) as T;
}

/** Base64 little-endian float32 -> Tensor. */
export function decode(b: Blob): Tensor {
  const bytes = Buffer.from(b.data, 'base64');
  const data = new Float32Array(bytes.length / 4);
  for (let i = 0; i < data.length; i++) data[i] = bytes.readFloatLE(i * 4);
  return new Tensor(b.shape, data);
}

/** Largest absolute difference between two tensors of the same size. */
export function maxAbsDiff(a: Tensor, b: Tensor): number {
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(a.data[i]! - b.data[i]!));
  return Number.isNaN(m) ? Infinity : m;
}
