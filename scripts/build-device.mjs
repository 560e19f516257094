// Bundles what the GPU machine runs into dist/device/ (scripts/device-gpu.sh; README.md, "GPU machine"): that
// machine has Node (carried in .device) but no tsx and no node_modules, so each entry point becomes one ES
// module with its dependencies inside (commander, fflate, jpeg-js, pngjs, protobufjs, the WASM binaries), built
// with esbuild (already installed here: tsx's own bundler). Only the optional `webgpu` package stays outside:
// .device/on-device.sh unpacks it into node_modules/webgpu there.
//   node scripts/build-device.mjs        (npm run build:device)
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'device');

// Output name (dist/device/NAME.js) -> source. The names keep the paths that the code derives from its own
// file: src/node/threads.ts starts ./thread-worker.js beside it, src/node/weights.ts finds the embedded model
// at ../../assets from dist/device/.
const entries = {
  cli: 'src/cli/main.ts',
  'thread-worker': 'src/node/thread-worker.ts',
  'bench-gpu': 'bench/gpu.ts',
  'profile-webgpu': 'bench/profile-webgpu.ts',
  'tune-webgpu': 'bench/tune-webgpu.ts',
  ablations: 'tools/ablations.ts',
  'webgpu.test': 'test/webgpu.test.ts',
  'webgpu-train.test': 'test/webgpu-train.test.ts',
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  absWorkingDir: root,
  entryPoints: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, join(root, v)])),
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['webgpu'],
  // CommonJS dependencies (pngjs, jpeg-js, ...) call require() for Node's built-ins; ES modules have none.
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  logLevel: 'warning',
  legalComments: 'none',
});
let total = 0;
for (const name of Object.keys(entries)) {
  const bytes = statSync(join(out, `${name}.js`)).size;
  total += bytes;
  console.log(`dist/device/${name}.js  ${(bytes / 2 ** 20).toFixed(2)} MiB`);
}
console.log(`dist/device: ${(total / 2 ** 20).toFixed(2)} MiB`);
