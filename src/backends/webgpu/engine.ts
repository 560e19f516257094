import type { Graph } from '../../graph/graph.js';
import type { Shape, Tensor } from '../../tensor/tensor.js';
import { KERNELS, type Kernel } from './kernels.js';
import { WebGpuPlan, type GpuContext, type WebGpuPlanOptions } from './plan.js';
import { WebGpuTrainPlan, type TrainPlanOptions } from './train-plan.js';
import { TRAIN_KERNELS } from './train-kernels.js';

/** No WebGPU adapter here (no GPU, no driver, or a browser without WebGPU). */
export class NoWebGpuAdapterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoWebGpuAdapterError';
  }
}

/**
 * The inference engine on a WebGPU device: the same shape as the WASM engine (`compile(model, options)`
 * gives a plan), but plans run asynchronously. Platform-neutral: it takes a GPUDevice from the browser's
 * `navigator.gpu` or from the Node adapter (shufflenet/node: createNodeWebGpuEngine).
 */
export class WebGpuEngine implements GpuContext {
  readonly backend = 'webgpu';
  readonly layout: GPUBindGroupLayout;
  private readonly layouts = new Map<number, GPUBindGroupLayout>();
  private readonly pipelines = new Map<
    string,
    { pipeline: GPUComputePipeline; error: Promise<string | undefined> }
  >();
  private lostReason: string | undefined;

  /**
   * @param adapter the adapter's description, for messages (e.g. "llvmpipe, OpenGL ES 3.2 Mesa 22.3.6")
   * @param onDestroy called by destroy(): releases what created the device (Node's GPU instance).
   */
  constructor(
    readonly device: GPUDevice,
    readonly adapter = 'unknown adapter',
    private readonly onDestroy?: () => void,
  ) {
    void device.lost.then((info) => {
      this.lostReason = `${info.reason ?? 'unknown'}${info.message ? `: ${info.message}` : ''}`;
    });
    this.layout = this.layoutFor(1);
  }

  /**
   * The bind group layout of kernels over `segments` arena buffers: the arena (its first segment), the
   * weights (read-write for the optimizer), the uniforms, then the other segments.
   */
  layoutFor(segments: number, writesWeights = false): GPUBindGroupLayout {
    const key = segments * 2 + +writesWeights;
    let layout = this.layouts.get(key);
    if (!layout) {
      const entry = (binding: number, type: GPUBufferBindingType): GPUBindGroupLayoutEntry => ({
        binding,
        visibility: 0x4, // GPUShaderStage.COMPUTE
        buffer: { type },
      });
      const more = Array.from({ length: segments - 1 }, (_, s) => entry(s + 3, 'storage'));
      layout = this.device.createBindGroupLayout({
        label: `shufflenet op (${segments} arena buffers)`,
        entries: [
          entry(0, 'storage'),
          entry(1, writesWeights ? 'storage' : 'read-only-storage'),
          entry(2, 'uniform'),
          ...more,
        ],
      });
      this.layouts.set(key, layout);
    }
    return layout;
  }

  get lost(): string | undefined {
    return this.lostReason;
  }

  /** The pipeline of one kernel, compiled on first use. */
  pipeline(k: Kernel): GPUComputePipeline {
    return this.compiled(k).pipeline;
  }

  /** Resolves to a message naming the kernel if its WGSL or pipeline is invalid. */
  pipelineError(k: Kernel): Promise<string | undefined> {
    return this.compiled(k).error;
  }

  private compiled(k: Kernel) {
    let p = this.pipelines.get(k.name);
    if (!p) {
      const { device } = this;
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ label: k.name, code: k.code });
      const pipeline = device.createComputePipeline({
        label: k.name,
        layout: device.createPipelineLayout({
          bindGroupLayouts: [this.layoutFor(k.segments ?? 1, k.writesWeights)],
        }),
        compute: { module, entryPoint: 'main' },
      });
      const error = device.popErrorScope().then(
        (e) => (e ? `WGSL kernel '${k.name}': ${e.message}` : undefined),
        (e: Error) => `WGSL kernel '${k.name}': ${e.message}`,
      );
      this.pipelines.set(k.name, (p = { pipeline, error }));
    }
    return p;
  }

  /** Compiles every kernel now; rejects naming the kernels that fail. */
  async warmUp(): Promise<void> {
    const errors = await Promise.all(
      [...KERNELS, ...TRAIN_KERNELS.map((k) => k.at(1))].map((k) => this.pipelineError(k)),
    );
    const failed = errors.filter((e) => e);
    if (failed.length) throw new Error(failed.join('\n'));
  }

  /** Whether plans can store activations in f16 (the adapter's shader-f16 feature, enabled on the device). */
  get hasF16(): boolean {
    return this.device.features.has('shader-f16');
  }

  compile(
    model: { graph: Graph; weights: ReadonlyMap<string, Tensor> },
    options: WebGpuPlanOptions = {},
  ): WebGpuPlan {
    if (this.lostReason) throw new Error(`the WebGPU device was lost: ${this.lostReason}`);
    return new WebGpuPlan(this, model.graph, model.weights, options);
  }

  /**
   * A training step for `graph` on inputs of `inputShape` (see WebGpuTrainPlan). `inputGradient` also
   * returns dL/d(input) from backward, under the key 'input' (tests).
   */
  compileTraining(graph: Graph, inputShape: Shape, o: TrainPlanOptions = {}): WebGpuTrainPlan {
    if (this.lostReason) throw new Error(`the WebGPU device was lost: ${this.lostReason}`);
    return new WebGpuTrainPlan(this, graph, inputShape, o);
  }

  /** Destroys the device (every plan's buffers with it). */
  destroy(): void {
    this.device.destroy();
    this.onDestroy?.();
  }
}

export interface WebGpuEngineOptions {
  /** 'compatibility' finds adapters such as Dawn's OpenGL ES backend; the default is core WebGPU. */
  featureLevel?: 'core' | 'compatibility';
  powerPreference?: GPUPowerPreference;
}

/**
 * An engine on the adapter that `gpu` (navigator.gpu in browsers) gives, with the device limits raised to
 * the adapter's for large buffers. Throws NoWebGpuAdapterError when there is no adapter.
 */
export async function requestWebGpuEngine(
  gpu: GPU,
  o: WebGpuEngineOptions = {},
  onDestroy?: () => void,
): Promise<WebGpuEngine> {
  const options: GPURequestAdapterOptions & { featureLevel?: string } = {
    powerPreference: o.powerPreference ?? 'high-performance',
  };
  if (o.featureLevel) options.featureLevel = o.featureLevel;
  const adapter = await gpu.requestAdapter(options).catch((e: Error) => {
    throw new NoWebGpuAdapterError(e.message);
  });
  if (!adapter) throw new NoWebGpuAdapterError(`no adapter at feature level ${o.featureLevel ?? 'core'}`);
  const { maxStorageBufferBindingSize, maxBufferSize, maxStorageBuffersPerShaderStage } = adapter.limits;
  const device = await adapter.requestDevice({
    label: 'shufflenet',
    // f16 activations where the adapter has them (WebGpuPlanOptions.precision); GPU clocks for profiles.
    requiredFeatures: (['shader-f16', 'timestamp-query'] as const).filter((f) => adapter.features.has(f)),
    // Large buffers, and up to 8 arena segments plus the weights for training plans.
    requiredLimits: { maxStorageBufferBindingSize, maxBufferSize, maxStorageBuffersPerShaderStage },
  });
  // GPUAdapter.info is recent (older browsers and type packages lack it).
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const name = info
    ? [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(', ')
    : '';
  return new WebGpuEngine(device, name || 'unknown adapter', onDestroy);
}
