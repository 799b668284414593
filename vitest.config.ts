import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

// The encode kernel choice cache (native/cpu/kernel_choice.h) of this test run: a fresh
// folder, so no test reads a decision another run (or the user) stored, and none writes to
// ~/.cache. test/kernelChoice.test.ts points its own cases at files of its own.
const kernelCacheDir = mkdtempSync(join(tmpdir(), 'saekit-test-kernel-cache-'));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    env: { SAEKIT_CACHE_DIR: kernelCacheDir },
  },
});
