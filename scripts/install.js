#!/usr/bin/env node
// `npm install` of saekit: use the prebuilt platform package when one is installed and loads
// (the usual case for users: npm picked it from optionalDependencies by os/cpu/libc), else build
// from source with cmake-js, saying so. SAEKIT_BUILD_FROM_SOURCE=1 always builds.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const fromSource = process.env.SAEKIT_BUILD_FROM_SOURCE === '1' || process.env.SAEKIT_BUILD_FROM_SOURCE === 'true';

// dist/ exists in the published package; a fresh checkout has none yet (its `prepare` compiles
// the TypeScript after this script), and a checkout always builds from source.
const prebuiltModule = join(root, 'dist', 'prebuilt.js');
if (!fromSource && existsSync(prebuiltModule)) {
  const { prebuiltAddons, noPrebuiltReason } = await import(pathToFileURL(prebuiltModule).href);
  const tried = [];
  for (const t of prebuiltAddons(root)) {
    try {
      require(t.path);
      console.log(`saekit: using the prebuilt addon ${t.from}`);
      process.exit(0);
    } catch (e) {
      tried.push(`${t.from} does not load here (${String(e.message).split('\n')[0]})`);
    }
  }
  console.log(
    `saekit: ${tried.length ? tried.join('; ') : noPrebuiltReason()}; ` +
      'building from source (needs cmake >= 3.18 and a C++17 compiler; nvcc adds the CUDA backend)',
  );
}
try {
  execFileSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--out', 'build'], { cwd: root, stdio: 'inherit' });
} catch (e) {
  console.error(
    'saekit: the build from source failed. Install cmake (>= 3.18) and a C++17 compiler (g++, clang++ or MSVC), ' +
      'or use a platform with a prebuilt package (linux-x64, linux-arm64, darwin-arm64, darwin-x64, win32-x64).',
  );
  process.exit(1);
}
