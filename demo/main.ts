// The browser demo: the package's engines (WASM SIMD, or WebGPU where the browser has an adapter),
// preprocessing and loaders on images and checkpoints opened here.
import fashionModelUrl from '../assets/fashion-mnist/model.safetensors?url';
import {
  createBrowserEngine,
  decodeImageFile,
  imageFromSource,
  UnsupportedBrowserError,
  type BrowserEngine,
} from '../src/browser/index.js';
import {
  complexity,
  loadModelBytes,
  preprocess,
  requestWebGpuEngine,
  topK,
  type LoadedFile,
  type Prediction,
  type RgbImage,
  type WebGpuEngine,
} from '../src/index.js';

const samples = import.meta.glob<string>('../assets/fashion-mnist/samples/*.png', {
  query: '?url',
  import: 'default',
  eager: true,
});

/** Where the model runs: the WASM SIMD kernels or WebGPU. */
export type Backend = 'wasm' | 'webgpu';

/** What the page did last, on `window.demo` for tests and the curious. */
export interface DemoState {
  /** The backend that runs the model now (WebGPU only once its device is up). */
  backend: Backend;
  /** Whether this browser gives a WebGPU adapter (its name), or why not (also after WebGPU failed). */
  webgpu?: { available: boolean; adapter?: string; reason?: string };
  /** The WASM engine. */
  engine?: {
    backend: string;
    relaxed: boolean;
    threads: number;
    crossOriginIsolated: boolean;
    notes: string[];
  };
  model?: { name: string; file: string; format: string; mflops: number; params: number; input: number[] };
  result?: {
    image: string;
    model: string;
    /** The backend that computed these logits; `adapter`: the WebGPU adapter's name. */
    backend: Backend;
    adapter?: string;
    top: Prediction[];
    logits: number[];
    /** The preprocessed input the plan ran on. */
    input: Float32Array;
    inputShape: number[];
    ms: number;
    /** Steps that ran on several threads in one inference. */
    forks: number;
  };
  error?: string;
  /** Operations finished (successfully or not), so a test can wait for the next one. */
  done: number;
}

declare global {
  interface Window {
    demo: DemoState;
  }
}

const state: DemoState = { backend: 'wasm', done: 0 };
window.demo = state;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const errorBox = $<HTMLDivElement>('error');
const preview = $<HTMLCanvasElement>('preview');
const video = $<HTMLVideoElement>('video');
const webcamButton = $<HTMLButtonElement>('webcam');
const backendSelect = $<HTMLSelectElement>('backend-select');
const webgpuOption = backendSelect.querySelector<HTMLOptionElement>('option[value=webgpu]')!;
const webgpuStatus = $('webgpu-status');

/** A compiled model on either backend: WASM runs return a view of its arena, WebGPU runs a promise. */
interface AnyPlan {
  readonly inputShape: readonly number[];
  run(input: Float32Array): Float32Array | Promise<Float32Array>;
  dispose(): void;
}

let engine: BrowserEngine | undefined;
/** The WebGPU engine, once WebGPU was chosen and its device came up. */
let gpu: WebGpuEngine | undefined;
/** The model, and its plan for the last input size on the backend that compiled it. */
interface PageModel {
  file: LoadedFile;
  name: string;
  plan?: AnyPlan;
  planBackend?: Backend;
}
let model: PageModel | undefined;
let image: { name: string; rgb: RgbImage } | undefined;

/** One operation at a time: model loads, classifications and webcam frames queue up. */
let queue: Promise<void> = Promise.resolve();
function enqueue(task: () => Promise<void> | void): Promise<void> {
  queue = queue.then(async () => {
    try {
      await task();
      showError(undefined);
    } catch (e) {
      showError(e instanceof Error ? e.message : String(e));
    } finally {
      state.done++;
    }
  });
  return queue;
}

function showError(message: string | undefined): void {
  state.error = message;
  errorBox.hidden = !message;
  errorBox.textContent = message ?? '';
}

const el = (tag: string, text?: string, cls?: string): HTMLElement => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};

async function start(): Promise<void> {
  const threads = new URLSearchParams(location.search).get('threads');
  try {
    engine = await createBrowserEngine(threads ? { threads: Number(threads) } : {});
  } catch (e) {
    const message = (e as Error).message;
    $('backend').textContent = 'No engine';
    for (const b of Array.from(
      document.querySelectorAll<HTMLButtonElement | HTMLInputElement | HTMLSelectElement>(
        'button, input, select',
      ),
    ))
      b.disabled = true;
    throw new Error(
      e instanceof UnsupportedBrowserError
        ? `This browser cannot run the demo: ${message}.`
        : `The engine did not start: ${message}`,
    );
  }
  const { engine: en, relaxed, threads: used, crossOriginIsolated, notes } = engine;
  state.engine = { backend: en.backend, relaxed, threads: used, crossOriginIsolated, notes };
  showBackend();
  await probeWebGpu();
  backendSelect.disabled = false;
  // ?backend=webgpu starts on WebGPU where there is an adapter.
  if (new URLSearchParams(location.search).get('backend') === 'webgpu' && state.webgpu?.available)
    await useBackend('webgpu');
  await useModel(await fetchBytes(fashionModelUrl), 'model.safetensors', 'Fashion-MNIST (built in)');
}

/** The line under the title: which engine runs the model, and how. */
function showBackend(): void {
  const line = $('backend');
  if (state.backend === 'webgpu' && gpu) {
    line.textContent = `WebGPU on ${gpu.adapter}`;
    return;
  }
  const { relaxed, threads, crossOriginIsolated, notes } = state.engine!;
  line.textContent =
    `WebAssembly ${relaxed ? 'relaxed SIMD' : 'SIMD'}, ${threads} thread${threads > 1 ? 's' : ''}` +
    (crossOriginIsolated ? ' (cross-origin isolated)' : '');
  for (const n of notes) line.append(el('span', n, 'note'));
}

/** The adapter's name, as the engine gives it ("vendor, architecture, device, description"). */
function adapterName(adapter: GPUAdapter): string {
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const parts = info ? [info.vendor, info.architecture, info.device, info.description] : [];
  return parts.filter((s) => s).join(', ') || 'unknown adapter';
}

/** Asks the browser for a WebGPU adapter (not yet a device) and offers WebGPU, or says why it cannot. */
async function probeWebGpu(): Promise<void> {
  const api = (navigator as { gpu?: GPU }).gpu;
  if (!api) {
    return webgpuUnavailable(
      isSecureContext
        ? 'this browser has no WebGPU (navigator.gpu)'
        : 'WebGPU needs a secure context (https or localhost)',
    );
  }
  try {
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('no answer in 10 s')), 10_000),
    );
    const adapter = await Promise.race([
      api.requestAdapter({ powerPreference: 'high-performance' }),
      timeout,
    ]);
    if (!adapter)
      return webgpuUnavailable('the browser gives no WebGPU adapter (no usable GPU, or WebGPU is off)');
    const name = adapterName(adapter);
    state.webgpu = { available: true, adapter: name };
    webgpuOption.disabled = false;
    webgpuOption.textContent = `WebGPU (${name})`;
    webgpuStatus.textContent = '';
  } catch (e) {
    webgpuUnavailable(`requesting a WebGPU adapter failed: ${(e as Error).message}`);
  }
}

function webgpuUnavailable(reason: string): void {
  state.webgpu = { available: false, reason };
  webgpuOption.disabled = true;
  webgpuOption.textContent = 'WebGPU (unavailable)';
  webgpuStatus.textContent = `WebGPU unavailable: ${reason}.`;
}

/**
 * Runs the model on `backend` from now on (WebGPU: its device is requested the first time), and
 * classifies the image on the page again. Where WebGPU gives no device, it stays on WASM and says why.
 */
async function useBackend(backend: Backend): Promise<void> {
  if (backend === 'webgpu' && !gpu) {
    try {
      gpu = await requestWebGpuEngine((navigator as { gpu?: GPU }).gpu!);
    } catch (e) {
      return fallBackToWasm(`no WebGPU device: ${(e as Error).message}`);
    }
  }
  state.backend = backend;
  backendSelect.value = backend;
  showBackend();
  if (model && image) await classify(image.rgb, image.name);
}

/** After WebGPU failed: back on WASM (the image classified there again), WebGPU off, with the reason shown. */
async function fallBackToWasm(why: string): Promise<void> {
  if (model?.planBackend === 'webgpu') {
    model.plan?.dispose();
    model.plan = undefined;
  }
  gpu?.destroy();
  gpu = undefined;
  webgpuUnavailable(`${why}; running on WebAssembly`);
  state.backend = 'wasm';
  backendSelect.value = 'wasm';
  showBackend();
  if (model && image) await classify(image.rgb, image.name);
}

async function fetchBytes(url: string): Promise<Uint8Array<ArrayBuffer>> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Reads a checkpoint or ONNX file with the package's loaders; the arch, labels and preprocessing come from it. */
async function useModel(bytes: Uint8Array<ArrayBuffer>, file: string, name: string): Promise<void> {
  const loaded = await loadModelBytes(bytes, file, { archHint: 'this demo runs the presets only' });
  model?.plan?.dispose();
  model = { file: loaded, name };
  const { graph } = loaded.model;
  const p = loaded.preprocess;
  const [h, w] = p.crop > 0 ? [p.crop, p.crop] : graph.inputSize;
  const cost = complexity(graph, h, w);
  state.model = {
    name: graph.name,
    file,
    format: loaded.format,
    mflops: cost.macs / 1e6,
    params: cost.params,
    input: [graph.inputChannels, h, w],
  };
  const info = $('model-info');
  info.replaceChildren();
  const { dataset, epoch } = loaded.metadata;
  const rows: [string, string][] = [
    ['source', name],
    ['file', `${file} (${loaded.format}${loaded.entry ? `, the registered ${loaded.entry.name}` : ''})`],
    ...(dataset ? [['trained', `on ${dataset}${epoch ? `, epoch ${epoch}` : ''}`] as [string, string]] : []),
    ['architecture', graph.name],
    ['cost', `${(cost.macs / 1e6).toFixed(1)} MFLOPs, ${(cost.params / 1e6).toFixed(2)} M parameters`],
    ['input', `${graph.inputChannels === 1 ? 'grey' : 'RGB'} ${h}x${w}`],
    ['classes', `${loaded.labels.length || cost.layers.at(-1)?.output.at(1) || '?'}`],
  ];
  for (const [k, v] of rows) info.append(el('dt', k), el('dd', v));
  if (image) await classify(image.rgb, image.name);
}

/** Preprocesses as the CLI does, runs the fused plan on the chosen backend and shows the top 5. */
async function classify(rgb: RgbImage, name: string): Promise<void> {
  if (!engine || !model) throw new Error('the engine or the model is not ready yet');
  image = { name, rgb };
  drawPreview(rgb);
  if (state.backend === 'webgpu' && gpu) {
    try {
      return await infer(model, rgb, name, gpu);
    } catch (e) {
      // A lost device, a kernel the adapter rejects, ...: the same image on WASM.
      return fallBackToWasm(`WebGPU failed: ${(e as Error).message}`);
    }
  }
  await infer(model, rgb, name, engine);
}

/** Runs `m` on the WebGPU engine or the WASM one, and shows the result. */
async function infer(
  m: PageModel,
  rgb: RgbImage,
  name: string,
  on: WebGpuEngine | BrowserEngine,
): Promise<void> {
  const { file } = m;
  const webgpu = 'adapter' in on;
  const backend: Backend = webgpu ? 'webgpu' : 'wasm';
  const input = preprocess(rgb, file.preprocess);
  const [, , h, w] = input.shape as [number, number, number, number];
  let plan = m.plan;
  if (!plan || m.planBackend !== backend || plan.inputShape[2] !== h || plan.inputShape[3] !== w) {
    plan?.dispose();
    m.plan = undefined;
    if (webgpu) {
      plan = on.compile(file.model, { height: h, width: w });
      // The first runs compile the WGSL pipelines and upload the weights.
      for (let i = 0; i < 2; i++) await plan.run(input.data);
    } else {
      plan = on.engine.compile(file.model, { height: h, width: w });
      // Warm up: the first run touches fresh memory, and V8 starts the kernels in its baseline compiler
      // (Liftoff) and tiers them up to optimized code only after they have run a while.
      for (let i = 0; i < 20; i++) void plan.run(input.data);
    }
    m.plan = plan;
    m.planBackend = backend;
  }
  const pool = webgpu ? undefined : (on.engine.parallel as { forks?: number } | undefined);
  const forks0 = pool?.forks ?? 0;
  // The median of a few runs of a still image: one run's time is noisy (each takes milliseconds).
  const runs = name === 'webcam' ? 1 : 5;
  const times: number[] = [];
  let out: Float32Array = new Float32Array(0);
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    out = await plan.run(input.data);
    times.push(performance.now() - t0);
  }
  const ms = times.sort((a, b) => a - b)[runs >> 1]!;
  const logits = Array.from(out);
  const top = topK(logits, 5, file.labels);
  state.result = {
    image: name,
    model: file.model.name,
    backend,
    ...(webgpu ? { adapter: on.adapter } : {}),
    top,
    logits,
    input: input.data,
    inputShape: [...input.shape],
    ms,
    forks: ((pool?.forks ?? 0) - forks0) / runs,
  };
  $('result-title').textContent = `${name}: ${top[0]?.label ?? '?'}`;
  $('top5').replaceChildren(
    ...top.map((p) => {
      const li = el('li', `${p.label} (${p.index}): ${(p.prob * 100).toFixed(1)}%`);
      const bar = el('div', undefined, 'bar');
      bar.style.width = `${Math.max(p.prob * 100, 0.5)}%`;
      li.append(bar);
      return li;
    }),
  );
  $('timing').textContent =
    `${ms.toFixed(1)} ms an inference (batch 1, ${h}x${w}${runs > 1 ? `, median of ${runs}` : ''}) on ` +
    (webgpu ? `WebGPU (${on.adapter})` : `${on.threads} thread${on.threads > 1 ? 's' : ''}`) +
    `, ${state.model!.mflops.toFixed(1)} MFLOPs`;
}

function drawPreview(rgb: RgbImage): void {
  const scale = Math.min(1, 224 / Math.max(rgb.width, rgb.height));
  const rgba = new ImageData(rgb.width, rgb.height);
  for (let i = 0; i < rgb.width * rgb.height; i++) {
    rgba.data.set(rgb.data.subarray(i * 3, i * 3 + 3), i * 4);
    rgba.data[i * 4 + 3] = 255;
  }
  const small = rgb.width < 112 && rgb.height < 112; // the 28x28 samples: show them big, pixelated
  const factor = small ? Math.floor(224 / Math.max(rgb.width, rgb.height)) : scale;
  preview.width = Math.round(rgb.width * factor);
  preview.height = Math.round(rgb.height * factor);
  const ctx = preview.getContext('2d')!;
  ctx.imageSmoothingEnabled = !small;
  const full = Object.assign(document.createElement('canvas'), { width: rgb.width, height: rgb.height });
  full.getContext('2d')!.putImageData(rgba, 0, 0);
  ctx.drawImage(full, 0, 0, preview.width, preview.height);
}

const isCheckpoint = (name: string) => /\.(onnx|safetensors|pth|pt|tar)$/i.test(name);

async function openFile(file: File): Promise<void> {
  if (isCheckpoint(file.name)) {
    await useModel(new Uint8Array(await file.arrayBuffer()), file.name, 'a file opened here');
  } else {
    await classify(await decodeImageFile(file, file.name), file.name);
  }
}

function setUpSamples(): void {
  const box = $('samples');
  for (const [path, url] of Object.entries(samples).sort()) {
    const file = path.split('/').at(-1)!;
    const label = file.replace(/\.png$/, '');
    const button = el('button') as HTMLButtonElement;
    button.type = 'button';
    button.dataset.sample = label;
    button.title = `Fashion-MNIST test image: ${label}`;
    const img = el('img') as HTMLImageElement;
    img.src = url;
    img.alt = label;
    button.append(img, el('span', label));
    button.addEventListener('click', () =>
      enqueue(async () => {
        const res = await fetch(url);
        await classify(await decodeImageFile(await res.blob(), file), file);
      }),
    );
    box.append(button);
  }
}

/** Classifies webcam frames one after another while it is on. */
let stream: MediaStream | undefined;
async function toggleWebcam(): Promise<void> {
  if (stream) {
    for (const t of stream.getTracks()) t.stop();
    stream = undefined;
    video.hidden = true;
    webcamButton.textContent = 'Webcam';
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (e) {
    throw new Error(`no webcam: ${(e as Error).message}`);
  }
  video.srcObject = stream;
  video.hidden = false;
  webcamButton.textContent = 'Stop webcam';
  await video.play();
  const frame = (): void => {
    if (!stream) return;
    const { videoWidth: w, videoHeight: h } = video;
    // The next frame after the page had its turn: chaining classifications straight from the promise would
    // keep the event loop from ever running anything else (the Stop button included).
    if (w && h)
      void enqueue(() => classify(imageFromSource(video, w, h), 'webcam')).then(() =>
        requestAnimationFrame(frame),
      );
    else requestAnimationFrame(frame);
  };
  frame();
}

function setUpInputs(): void {
  const imageInput = $<HTMLInputElement>('image-file');
  imageInput.addEventListener('change', () => {
    const f = imageInput.files?.[0];
    if (f) void enqueue(() => openFile(f));
    imageInput.value = '';
  });
  const modelInput = $<HTMLInputElement>('model-file');
  modelInput.addEventListener('change', () => {
    const f = modelInput.files?.[0];
    if (f) void enqueue(() => openFile(f));
    modelInput.value = '';
  });
  backendSelect.addEventListener('change', () => {
    const choice = backendSelect.value as Backend;
    void enqueue(() => useBackend(choice));
  });
  $('use-fashion').addEventListener('click', () =>
    enqueue(async () =>
      useModel(await fetchBytes(fashionModelUrl), 'model.safetensors', 'Fashion-MNIST (built in)'),
    ),
  );
  document.addEventListener('dragover', (e) => e.preventDefault());
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    for (const f of Array.from(e.dataTransfer?.files ?? [])) void enqueue(() => openFile(f));
  });
  // Absent on insecure origins and in some browsers.
  if (typeof navigator.mediaDevices?.getUserMedia === 'function') {
    webcamButton.hidden = false;
    webcamButton.addEventListener('click', () => enqueue(toggleWebcam));
  }
}

setUpSamples();
setUpInputs();
void enqueue(start);
