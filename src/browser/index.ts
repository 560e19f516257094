// Browser adapters: the engine with Web Worker threads, image decoding. Import from 'shufflenet/browser'.
export {
  createBrowserEngine,
  simdSupported,
  UnsupportedBrowserError,
  type BrowserEngine,
  type BrowserEngineOptions,
} from './engine.js';
export { BrowserThreadPool } from './threads.js';
export { decodeImageFile, imageFromSource } from './image.js';
