import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  {
    ignores: [
      'dist/',
      'node_modules/',
      'test/fixtures/',
      '.scratch/',
      '.device/',
      'src/backends/wasm/binaries.ts',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  { files: ['scripts/**', '**/*.mjs'], languageOptions: { globals: globals.node } },
  {
    // The core is platform-neutral: Node built-ins belong in src/node and src/cli only. The demo runs in browsers.
    files: ['src/**/*.ts', 'demo/**/*.ts'],
    ignores: ['src/node/**', 'src/cli/**', 'demo/vite.config.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['node:*', 'fs', 'path', 'os', 'worker_threads'] }],
      'no-restricted-globals': ['error', 'process', 'Buffer', '__dirname', 'require'],
    },
  },
);
