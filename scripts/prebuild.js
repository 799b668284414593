#!/usr/bin/env node
// Builds the packages a user installs without a compiler (issue 21):
//   node scripts/prebuild.js [--out DIR] [--cuda] [--no-build] [--no-main | --main-only]
// - the platform package for this machine (@saekit/linux-x64 here): the addon built with
//   SAEKIT_PREBUILT=1 (libstdc++/libgcc linked in; baseline x86-64, every faster ISA chosen at
//   run time), CPU only; with --cuda instead @saekit/linux-x64-cuda (nvcc, cudart static);
// - the main package, with optionalDependencies naming every CPU platform package at this
//   version. They are added here, at pack time, as napi-rs's `prepublish` does: the repo's own
//   package.json cannot name packages that are not yet on the registry (npm ci would fail).
// Each is packed with `npm pack` into DIR (default: prebuilds/). Other platforms are built by
// the CI matrix in .github/workflows/prebuild.yml.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const outIndex = args.indexOf('--out');
const out = resolve(outIndex >= 0 ? args[outIndex + 1] : join(root, 'prebuilds'));
const known = new Set(['--out', '--cuda', '--no-build', '--no-main', '--main-only']);
for (const [i, a] of args.entries()) {
  if (!known.has(a) && !(i > 0 && args[i - 1] === '--out')) {
    console.error(`prebuild: unknown flag '${a}' (known: ${[...known].join(', ')})`);
    process.exit(2);
  }
}

const { PLATFORM_PACKAGES } = await import(join(root, 'dist', 'prebuilt.js'));
const main = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
mkdirSync(out, { recursive: true });

function run(cmd, argv, env = {}, cwd = root) {
  return execFileSync(cmd, argv, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
}

/** npm pack of a staged folder; returns the tarball's path. */
function pack(dir) {
  const res = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], {}, dir));
  return join(out, res[0].filename);
}

function platformPackage(cuda) {
  const pkg = PLATFORM_PACKAGES.find((p) => p.os === process.platform && p.cpu === process.arch && p.cuda === cuda);
  if (!pkg) throw new Error(`prebuild: no platform package is defined for ${process.platform}-${process.arch}${cuda ? ' (cuda)' : ''}`);
  // Under the output folder, so two runs with different --out never share a build.
  const buildDir = join(out, 'build', cuda ? 'cuda' : 'cpu');
  const addon = join(buildDir, 'Release', 'saekit.node');
  if (!flag('--no-build')) {
    const env = { SAEKIT_PREBUILT: '1', ...(cuda ? { SAEKIT_CPU_ONLY: '0' } : { SAEKIT_CPU_ONLY: '1' }) };
    console.error(`prebuild: building ${pkg.name} in ${buildDir}`);
    run(process.execPath, [join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js'), 'rebuild', '--out', buildDir], env);
  }
  if (!existsSync(addon)) throw new Error(`prebuild: ${addon} is missing (build it, or drop --no-build)`);
  const backends = run(process.execPath, ['-e', `console.log(JSON.stringify(require(${JSON.stringify(addon)}).backends()))`]);
  if (cuda && !backends.includes('cuda')) throw new Error(`prebuild: ${pkg.name} was built without the CUDA backend (is nvcc on PATH?)`);

  const stage = join(out, 'stage', pkg.name.replace('/', '+'));
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  cpSync(addon, join(stage, 'saekit.node'));
  if (process.platform !== 'darwin' && process.platform !== 'win32') {
    try {
      run('strip', ['--strip-unneeded', join(stage, 'saekit.node')]);
    } catch {
      console.error('prebuild: no strip on PATH, the addon keeps its symbols');
    }
  }
  const manifest = {
    name: pkg.name,
    version: main.version,
    description: `saekit's native addon for ${pkg.os}-${pkg.cpu}${cuda ? ' with the CUDA backend' : ''} (N-API 8: Node >= 20)`,
    license: main.license,
    os: [pkg.os],
    cpu: [pkg.cpu],
    ...(pkg.libc ? { libc: [pkg.libc] } : {}),
    engines: main.engines,
    files: ['saekit.node'],
  };
  writeFileSync(join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
  writeFileSync(
    join(stage, 'README.md'),
    `# ${pkg.name}\n\nThe prebuilt native addon of [saekit](https://www.npmjs.com/package/saekit) for ${pkg.os}-${pkg.cpu}` +
      `${cuda ? ', with the CUDA backend (install it next to saekit: `npm install saekit ' + pkg.name + '`)' : ''}. ` +
      'saekit loads it by itself; do not depend on it directly.\n',
  );
  return pack(stage);
}

function mainPackage() {
  const stage = join(out, 'stage', 'saekit');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  for (const entry of main.files.filter((f) => !f.startsWith("!"))) cpSync(join(root, entry), join(stage, entry), { recursive: true });
  const manifest = { ...main };
  // A user's install runs only `install` (prebuilt or from source); the rest is for the repo.
  manifest.scripts = { install: main.scripts.install };
  delete manifest.devDependencies;
  manifest.optionalDependencies = Object.fromEntries(PLATFORM_PACKAGES.filter((p) => !p.cuda).map((p) => [p.name, main.version]));
  writeFileSync(join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
  return pack(stage);
}

const made = [];
if (!flag('--main-only')) made.push(platformPackage(flag('--cuda')));
if (!flag('--no-main')) made.push(mainPackage());
rmSync(join(out, 'stage'), { recursive: true, force: true });
for (const m of made) console.log(m);
