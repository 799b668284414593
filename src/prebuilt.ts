// Where a prebuilt native addon comes from (issue 21). The platform packages are named in one
// place: this table feeds the loader (src/addon.ts), the install script (scripts/install.js)
// and the packager (scripts/prebuild.js); a test keeps package.json's optionalDependencies equal.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface PlatformPackage {
  /** npm package name, e.g. @saekit/linux-x64. */
  name: string;
  os: NodeJS.Platform;
  cpu: string;
  /** linux only: the C library the binary links (npm's `libc` field). */
  libc?: 'glibc';
  /** A CUDA build (opt-in: installed by name, never pulled in by optionalDependencies). */
  cuda: boolean;
}

const CPU_TARGETS: Array<Omit<PlatformPackage, 'name' | 'cuda'>> = [
  { os: 'linux', cpu: 'x64', libc: 'glibc' },
  { os: 'linux', cpu: 'arm64', libc: 'glibc' },
  { os: 'darwin', cpu: 'arm64' },
  { os: 'darwin', cpu: 'x64' },
  { os: 'win32', cpu: 'x64' },
];
/** CUDA builds exist where NVIDIA ships a CUDA toolkit for the platform. */
const CUDA_TARGETS = new Set(['linux-x64', 'win32-x64']);

export const PLATFORM_PACKAGES: PlatformPackage[] = CPU_TARGETS.flatMap((t) => {
  const base = `@saekit/${t.os}-${t.cpu}`;
  const cpuBuild = { ...t, name: base, cuda: false };
  return CUDA_TARGETS.has(`${t.os}-${t.cpu}`) ? [cpuBuild, { ...t, name: `${base}-cuda`, cuda: true }] : [cpuBuild];
});

function isMusl(): boolean {
  if (process.platform !== 'linux') return false;
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return !report?.header?.glibcVersionRuntime;
}

/** The packages that could serve this process, CUDA build first (it carries the CPU backend too). */
export function candidatePackages(): PlatformPackage[] {
  const musl = isMusl();
  return PLATFORM_PACKAGES.filter((p) => p.os === process.platform && p.cpu === process.arch && !(musl && p.libc === 'glibc')).sort(
    (a, b) => Number(b.cuda) - Number(a.cuda),
  );
}

export interface AddonLocation {
  path: string;
  /** The platform package's name. */
  from: string;
}

/** Why no prebuilt addon could serve this process (install script and loader say the same). */
export function noPrebuiltReason(): string {
  const names = candidatePackages().filter((p) => !p.cuda).map((p) => p.name);
  return `no prebuilt addon for ${process.platform}-${process.arch}` + (names.length ? ` (${names.join(', ')} is not installed)` : '');
}

/** The installed platform packages' addons, in the order to try them (after a build from source). */
export function prebuiltAddons(packageRoot: string): AddonLocation[] {
  const out: AddonLocation[] = [];
  const require = createRequire(join(packageRoot, 'package.json'));
  for (const pkg of candidatePackages()) {
    try {
      const dir = dirname(require.resolve(`${pkg.name}/package.json`));
      const p = join(dir, 'saekit.node');
      if (existsSync(p)) out.push({ path: p, from: pkg.name });
    } catch {
      // not installed: npm skipped it (other platform) or the user did not ask for it (CUDA)
    }
  }
  return out;
}
