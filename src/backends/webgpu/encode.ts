/** A dispatch as the plans record it: its pipeline, bind group and grid. */
export interface Recorded {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  grid: [number, number, number];
}

/** Records one dispatch into a compute pass (inference runs, training steps and profiles all do so). */
export function dispatch(pass: GPUComputePassEncoder, s: Recorded): void {
  pass.setPipeline(s.pipeline);
  pass.setBindGroup(0, s.bindGroup);
  pass.dispatchWorkgroups(...s.grid);
}
