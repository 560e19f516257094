import { Option, type Command } from 'commander';
import { ConfigError } from '../errors.js';
import { parseSize, positiveInt } from './args.js';
import type { Precision } from '../backends/webgpu/kernels.js';
import { backendOption, checkPrecision, openWebGpu, precisionOption } from './backend.js';
import { execute } from '../graph/execute.js';
import { createNodeEngine } from '../node/engine.js';
import { ThreadPool } from '../node/threads.js';
import { loadCliModel } from './load.js';
import { summarize } from '../runtime/stats.js';
import { seededRandom, Tensor } from '../tensor/tensor.js';

interface BenchFlags {
  arch?: string;
  model?: string;
  weights?: string;
  batch: number;
  threads: number;
  input?: [number, number];
  iterations: number;
  warmup: number;
  backend: 'wasm' | 'webgpu' | 'auto' | 'reference';
  precision: Precision;
  relaxed: 'auto' | 'on' | 'off';
  json?: boolean;
}

/** `shufflenet bench`: latency of one model on this engine (the peers side by side: `npm run bench`). */
export function addBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('time inference of one model: median, min, max and p90 milliseconds per batch')
    .option('--arch <name>', 'model preset (random weights unless --weights)')
    .option('--weights <file|name>', 'weights to load (the arch comes with them)')
    .option('--model <file.onnx>', 'an ONNX model')
    .option('--batch <n>', 'images per run', positiveInt('--batch'), 1)
    .option('--threads <n>', 'threads (worker_threads on one shared memory)', positiveInt('--threads'), 1)
    .option('--input <HxW>', 'input size, H or HxW (default: the model design size)', parseSize)
    .option('--iterations <n>', 'timed runs', positiveInt('--iterations'), 50)
    .option('--warmup <n>', 'untimed runs first', positiveInt('--warmup'), 5)
    .addOption(backendOption(['reference']))
    .addOption(precisionOption())
    .addOption(new Option('--relaxed <mode>', 'relaxed SIMD').choices(['auto', 'on', 'off']).default('auto'))
    .option('--json', 'one JSON object: median_ms, min_ms, max_ms, p90_ms, backend, threads, batch, ...')
    .action(async (o: BenchFlags) => {
      const { model } = await loadCliModel(o, true);
      const [h, w] = o.input ?? model.graph.inputSize;
      const x = Tensor.random([o.batch, model.graph.inputChannels, h, w], seededRandom(1));
      let run: () => void | Promise<void>;
      let backend = 'reference';
      let close = async () => {};
      let memory: { arena?: number; weights?: number } = {};
      const gpu = await openWebGpu(o.backend);
      checkPrecision(o.precision, gpu);
      if (gpu) {
        const plan = gpu.compile(model, { batch: o.batch, height: h, width: w, precision: o.precision });
        const out = new Float32Array(plan.outputShape.reduce((a, b) => a * b, 1));
        run = async () => void (await plan.run(x.data, out));
        backend = `webgpu (${gpu.adapter}${o.precision === 'f32' ? '' : `, ${o.precision} activations`})`;
        memory = { arena: plan.bytes.arena, weights: plan.bytes.weights };
        close = async () => gpu.destroy();
      } else if (o.backend !== 'reference') {
        const relaxed = o.relaxed === 'auto' ? 'auto' : o.relaxed === 'on';
        const engine = await createNodeEngine({ threads: o.threads, relaxed });
        const plan = engine.compile(model, { batch: o.batch, height: h, width: w });
        const out = new Float32Array(plan.outputShape.reduce((a, b) => a * b, 1));
        run = () => void plan.run(x.data, out);
        backend = engine.backend;
        memory = { arena: plan.bytes.arena, weights: plan.bytes.weights };
        close = async () => {
          if (engine.parallel instanceof ThreadPool) await engine.parallel.close();
        };
      } else {
        if (o.threads !== 1) throw new ConfigError('--backend reference runs on one thread');
        run = () => void execute(model.graph, model.weights, x);
      }
      for (let i = 0; i < o.warmup; i++) await run();
      const ms: number[] = [];
      for (let i = 0; i < o.iterations; i++) {
        const t = performance.now();
        await run();
        ms.push(performance.now() - t);
      }
      await close();
      const t = summarize(ms);
      const result = {
        arch: model.name,
        input: [o.batch, model.graph.inputChannels, h, w],
        backend,
        threads: o.threads,
        batch: o.batch,
        ...t,
        images_per_s: (o.batch * 1000) / t.median_ms,
        arena_bytes: memory.arena,
        weight_bytes: memory.weights,
      };
      if (o.json) return void console.log(JSON.stringify(result));
      console.log(
        `${model.name} ${result.input.join('x')} on ${backend}, ${o.threads} thread(s): median ${t.median_ms.toFixed(2)} ms ` +
          `(min ${t.min_ms.toFixed(2)}, p90 ${t.p90_ms.toFixed(2)}, max ${t.max_ms.toFixed(2)}; ${t.runs} runs), ` +
          `${result.images_per_s.toFixed(1)} images/s`,
      );
    });
}
