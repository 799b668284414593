// Process-wide settings of the native side: kernel threads, CPU kernel variant, backends.
import { addon, type BackendInfo, type CpuVariantInfo, type CpuVariantName, type KernelDecision, type ScreenName } from './addon.js';
import { createRequire } from 'node:module';
import { ValidationError, expected } from './errors.js';

export type { BackendInfo, CpuVariantInfo, CpuVariantName, ScreenName };
export type Device = 'auto' | 'cpu' | 'cuda';

/** Compute backends in this build; cuda is listed when compiled, with why it is unavailable. */
export function backends(): BackendInfo[] {
  return addon().backends();
}

/**
 * The backends as places to train: cuda is available only when its backend is usable and the
 * CUDA trainer's self-test against the CPU trainer passed (run once, on first call; the detail
 * says which). This is what device 'auto' consults for training.
 */
export function trainingBackends(): BackendInfo[] {
  return addon().trainingBackends();
}

/** Threads of the process-wide kernel pool (all cores by default, or SAEKIT_THREADS). */
export function threads(): number {
  return addon().threads();
}

/** Resizes the kernel pool; 0 restores the default. Waits for a running kernel to finish. */
export function setThreads(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > 1024) throw expected('an integer in [0, 1024]', 'threads', n);
  return addon().setThreads(n);
}

/**
 * The CPU kernel variant in use, the best this CPU supports, and all it supports; and the
 * screens of the exact screened encode this CPU runs, with the one SAEKIT_SCREEN selects.
 */
export function cpuVariant(): CpuVariantInfo {
  try {
    return addon().cpuVariant();
  } catch (e) {
    throw new ValidationError((e as Error).message);  // e.g. a bad SAEKIT_ISA value
  }
}

/**
 * The encode kernel decisions stored in the kernel choice cache file (cpuVariant().kernelCache)
 * by earlier processes on this machine: one per shape class measured.
 */
export function cachedKernelDecisions(): KernelDecision[] {
  return JSON.parse(addon().cachedKernelDecisions()) as KernelDecision[];
}

/** Forces a CPU kernel variant ('auto' restores the best). Tests use it to run every variant. */
export function setCpuVariant(name: CpuVariantName | 'auto'): void {
  if (!['auto', 'generic', 'avx2', 'avx512'].includes(name))
    throw expected("'auto', 'generic', 'avx2' or 'avx512'", 'CPU variant', name);
  try {
    addon().setCpuVariant(name);
  } catch (e) {
    throw new ValidationError((e as Error).message);
  }
}

/** Resolves 'auto' to the best available backend; a requested unavailable one is an error. */
export function resolveDevice(device: Device = 'auto'): 'cpu' | 'cuda' {
  if (!['auto', 'cpu', 'cuda'].includes(device)) throw expected("'auto', 'cpu' or 'cuda'", 'device', device);
  if (device === 'cpu') return 'cpu';
  const cuda = backends().find((b) => b.name === 'cuda');
  if (device === 'cuda') {
    if (!cuda) throw new ValidationError("device 'cuda' requested but this build has no CUDA backend (built without nvcc)");
    if (!cuda.available) throw new ValidationError(`device 'cuda' requested but unavailable: ${cuda.detail}`);
    return 'cuda';
  }
  return cuda?.available ? 'cuda' : 'cpu';
}

/**
 * The device a training run uses. Explicit devices resolve as resolveDevice does; 'auto' picks
 * CUDA only where trainingBackends() says it may train and the run is one the CUDA trainer
 * has kernels for (SAEs of every architecture; not transcoders or matryoshka), else the CPU.
 */
export function resolveTrainingDevice(device: Device = 'auto', run: { transcoder?: boolean; matryoshka?: boolean } = {}): 'cpu' | 'cuda' {
  if (device !== 'auto') return resolveDevice(device);
  if (run.transcoder || run.matryoshka) return 'cpu';
  return trainingBackends().find((b) => b.name === 'cuda')?.available ? 'cuda' : 'cpu';
}

/** saekit's version, from its package.json (src/ and dist/ both sit one level below it). */
export function saekitVersion(): string {
  return (createRequire(import.meta.url)('../package.json') as { version: string }).version;
}
