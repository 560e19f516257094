import { NoWebGpuAdapterError, requestWebGpuEngine, type WebGpuEngine } from '../backends/webgpu/engine.js';

/** The `webgpu` package (Dawn for Node) cannot load: not installed, or no binary for this platform. */
export class WebGpuUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebGpuUnavailableError';
  }
}

export interface NodeWebGpuOptions {
  /**
   * Dawn's backend: 'vulkan', 'metal', 'd3d12', 'opengles' (Mesa's llvmpipe on machines without a GPU), ...
   * Default: $SHUFFLENET_WEBGPU_BACKEND, else the platform's native one, then 'opengles'.
   */
  backend?: string;
  powerPreference?: 'low-power' | 'high-performance';
}

type WebGpuModule = { create(options: string[]): GPU };

async function loadDawn(): Promise<WebGpuModule> {
  try {
    // Optional dependency, loaded only when asked for: the CLI and the WASM engine work without it.
    return (await import('webgpu')) as WebGpuModule;
  } catch (e) {
    throw new WebGpuUnavailableError(
      `the 'webgpu' package (Dawn for Node) cannot load on ${process.platform}-${process.arch}: ` +
        `${(e as Error).message}`,
    );
  }
}

/**
 * A WebGPU engine in Node through Dawn: the native backend (Vulkan, Metal, D3D12) first, then Dawn's
 * OpenGL ES backend in compatibility mode, which runs on Mesa's llvmpipe (a CPU) where there is no GPU:
 * that one dlopens the unversioned libEGL.so (Debian: libegl-dev; llvmpipe is in libgl1-mesa-dri) and needs
 * EGL_PLATFORM=surfaceless (set here when unset). Throws NoWebGpuAdapterError naming what it tried, or
 * WebGpuUnavailableError when the package cannot load. Call engine.destroy() when done, or Node stays alive.
 */
export async function createNodeWebGpuEngine(o: NodeWebGpuOptions = {}): Promise<WebGpuEngine> {
  const dawn = await loadDawn();
  const chosen = o.backend ?? process.env.SHUFFLENET_WEBGPU_BACKEND;
  const backends = chosen ? [chosen] : ['', 'opengles'];
  const tried: string[] = [];
  for (const backend of backends) {
    const gl = backend === 'opengles' || backend === 'opengl';
    if (gl) process.env.EGL_PLATFORM ??= 'surfaceless';
    // Dawn rounds timestamps (to blunt timing attacks in browsers): profiles here want them exact.
    const flags = ['disable-dawn-features=timestamp_quantization'];
    let gpu: GPU | undefined = dawn.create(backend ? [`backend=${backend}`, ...flags] : flags);
    try {
      const engine = await requestWebGpuEngine(
        gpu,
        { featureLevel: gl ? 'compatibility' : 'core', powerPreference: o.powerPreference },
        // The GPU instance keeps Node alive while it is referenced: drop it with the device.
        () => (gpu = undefined),
      );
      return engine;
    } catch (e) {
      if (!(e instanceof NoWebGpuAdapterError)) throw e;
      // Dawn's message lists its backends when it does not know the one asked for.
      tried.push(`${backend || 'native (Vulkan/Metal/D3D12)'}: ${e.message}`);
    }
  }
  throw new NoWebGpuAdapterError(
    `no WebGPU adapter (${tried.join('; ')}). Without a GPU, Dawn's 'opengles' backend runs on ` +
      `Mesa's llvmpipe: it loads libEGL.so (Debian: libegl-dev and libgl1-mesa-dri); on a GPU, ` +
      `its driver and the Vulkan loader (libvulkan1)`,
  );
}
