import { setFlagsFromString } from 'node:v8';
import { relaxedSimdSupported } from '../backends/wasm/module.js';

/**
 * Lets Node 20 compile relaxed SIMD (Chromium needs no flag). Call it before compiling the relaxed kernels;
 * it also applies to workers started later. Returns whether the engine now accepts relaxed SIMD.
 */
export function enableRelaxedSimd(): boolean {
  setFlagsFromString('--experimental-wasm-relaxed-simd');
  return relaxedSimdSupported();
}
