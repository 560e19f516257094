// The browser demo: the package's engine, preprocessing and loaders on images and checkpoints opened here.
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
  topK,
  type LoadedFile,
  type Plan,
  type Prediction,
  type RgbImage,
} from '../src/index.js';

const samples = import.meta.glob<string>('../assets/fashion-mnist/samples/*.png', {
  query: '?url',
  import: 'default',
  eager: true,
});

/** What the page did last, on `window.demo` for tests and the curious. */
export interface DemoState {
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

const state: DemoState = { done: 0 };
window.demo = state;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const errorBox = $<HTMLDivElement>('error');
const preview = $<HTMLCanvasElement>('preview');
const video = $<HTMLVideoElement>('video');
const webcamButton = $<HTMLButtonElement>('webcam');

let engine: BrowserEngine | undefined;
let model: { file: LoadedFile; name: string; plan?: Plan } | undefined;
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
      document.querySelectorAll<HTMLButtonElement | HTMLInputElement>('button, input'),
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
  const backend = $('backend');
  backend.textContent =
    `WebAssembly ${relaxed ? 'relaxed SIMD' : 'SIMD'}, ${used} thread${used > 1 ? 's' : ''}` +
    (crossOriginIsolated ? ' (cross-origin isolated)' : '');
  for (const n of notes) backend.append(el('span', n, 'note'));
  await useModel(await fetchBytes(fashionModelUrl), 'model.safetensors', 'Fashion-MNIST (built in)');
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

/** Preprocesses as the CLI does, runs the fused plan and shows the top 5. */
async function classify(rgb: RgbImage, name: string): Promise<void> {
  if (!engine || !model) throw new Error('the engine or the model is not ready yet');
  image = { name, rgb };
  drawPreview(rgb);
  const { file } = model;
  const input = preprocess(rgb, file.preprocess);
  const [, , h, w] = input.shape as [number, number, number, number];
  let plan = model.plan;
  if (!plan || plan.inputShape[2] !== h || plan.inputShape[3] !== w) {
    plan?.dispose();
    plan = model.plan = engine.engine.compile(file.model, { height: h, width: w });
    // Warm up: the first run touches fresh memory, and V8 starts the kernels in its baseline compiler
    // (Liftoff) and tiers them up to optimized code only after they have run a while.
    for (let i = 0; i < 20; i++) plan.run(input.data);
  }
  const pool = engine.engine.parallel as { forks?: number } | undefined;
  const forks0 = pool?.forks ?? 0;
  // The median of a few runs of a still image: one run's time is noisy (each takes milliseconds).
  const runs = name === 'webcam' ? 1 : 5;
  const times: number[] = [];
  let out: Float32Array = new Float32Array(0);
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    out = plan.run(input.data);
    times.push(performance.now() - t0);
  }
  const ms = times.sort((a, b) => a - b)[runs >> 1]!;
  const logits = Array.from(out);
  const top = topK(logits, 5, file.labels);
  state.result = {
    image: name,
    model: file.model.name,
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
  const threads = engine.threads;
  $('timing').textContent =
    `${ms.toFixed(1)} ms an inference (batch 1, ${h}x${w}${runs > 1 ? `, median of ${runs}` : ''}) on ` +
    `${threads} thread${threads > 1 ? 's' : ''}` +
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
    if (w && h) void enqueue(() => classify(imageFromSource(video, w, h), 'webcam')).then(frame);
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
