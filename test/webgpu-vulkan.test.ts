import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

/**
 * The WebGPU tests again on Dawn's Vulkan backend, over SwiftShader (the software Vulkan driver in Debian's
 * chromium): Tint compiles the kernels to SPIR-V there, as on a GPU's Vulkan driver, where the OpenGL ES
 * backend of the other runs goes through GLSL. Every inference test, every gradient kernel and the whole
 * small ShuffleNets (the trainer's longer tests stay on OpenGL ES: SwiftShader is about 10x slower). Each file
 * in a process of its own: SwiftShader once crashed a process (../shared/ENGINEERING.md).
 */
const ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const root = fileURLToPath(new URL('..', import.meta.url));
const dawn = await import('webgpu').then(
  () => false as const,
  (e: Error) => `the webgpu package cannot load: ${e.message}`,
);
const skip = dawn || (!existsSync(ICD) && `no SwiftShader Vulkan driver at ${ICD} (Debian's chromium)`);

describe("WebGPU on Dawn's Vulkan backend (SwiftShader)", { skip }, () => {
  const run = (file: string, pattern?: string) => {
    const runtime = mkdtempSync(join(tmpdir(), 'swiftshader-'));
    try {
      const r = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          '--test',
          '--test-reporter=spec',
          ...(pattern ? [`--test-name-pattern=${pattern}`] : []),
          file,
        ],
        {
          cwd: root,
          encoding: 'utf8',
          timeout: 300_000,
          env: {
            ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT')),
            SHUFFLENET_WEBGPU_BACKEND: 'vulkan',
            VK_ICD_FILENAMES: ICD,
            XDG_RUNTIME_DIR: runtime,
          },
        },
      );
      const out = `${r.stdout}\n${r.stderr}`;
      assert.equal(r.status, 0, `${file} on Vulkan (SwiftShader) failed:\n${out.slice(-4000)}`);
      assert.match(out, /Dawn's vulkan backend/);
      assert.match(out, /ℹ pass [1-9]/);
      // Skipped only by the name pattern, not for want of an adapter or data (f16 needs shader-f16, which
      // SwiftShader lacks: its tests run on the GPU machine).
      const skipped = out
        .split('\n')
        .filter(
          (l) =>
            l.includes('﹣') && !l.includes('does not match pattern') && !l.includes('has no shader-f16'),
        );
      assert.deepEqual(skipped, []);
    } finally {
      rmSync(runtime, { recursive: true, force: true });
    }
  };

  it('inference: every lowered op kind, ShuffleNet presets, the authors weights', () =>
    run('test/webgpu.test.ts'));

  it('training: every gradient kernel, whole small ShuffleNets, an arena in 6 buffers, whole device steps', () =>
    run(
      'test/webgpu-train.test.ts',
      'every gradient kernel|g=3 0.25x, small-input|g=8 0.25x, the paper|sums split|whole steps on the device \\(',
    ));
});
