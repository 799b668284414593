// The native addon's whole surface, typed in one place (mirrors native/napi/addon.cpp), and
// the one function that loads it. Nothing else in src/ touches the .node file.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { noPrebuiltReason, prebuiltAddons } from './prebuilt.js';
import { NativeError } from './errors.js';
import type { SaeWeights } from './types.js';

/** CSR codes as the addon produces and consumes them. */
export interface NativeCodes {
  indptr: Uint32Array;
  indices: Int32Array;
  values: Float32Array;
  rowScale?: Float32Array;
  rowShift?: Float32Array;
}

export interface NativeSpec {
  dIn: number;
  dSae: number;
  k?: number;
  architecture: 'standard' | 'topk' | 'jumprelu';
  normalizeActivations: string;
  applyBDecToInput: boolean;
  /** Decode width (transcoders); d_in when absent. */
  dOut?: number;
  /** Skip transcoder: weights carry W_skip. */
  skip?: boolean;
}

/** The weight arrays as the addon reads them (float32, layouts as in SaeWeights). */
export type NativeWeights = Omit<SaeWeights, 'config'>;

export interface AddonSae {
  /** x: [rows, dIn] float32, validated by the caller. Must not be transferred while pending. */
  /** cancel: set cancel[0] non-zero (Atomics.store) to stop the call; it rejects with code SAEKIT_ABORTED. */
  encode(x: Float32Array, rows: number, cancel?: Int32Array): Promise<NativeCodes>;
  /** Writes [rows, dIn] float32 into out and resolves with it. */
  /** out [rows, dOut] += x @ W_skip^T (skip transcoders); resolves with out. */
  addSkip(x: Float32Array, rows: number, out: Float32Array, cancel?: Int32Array): Promise<Float32Array>;
  decode(codes: NativeCodes, out: Float32Array, cancel?: Int32Array): Promise<Float32Array>;
  dispose(): void;
  /** Bytes the backend holds for this SAE (packed weights). */
  bytes(): number;
  /** Rows re-encoded because a top-k threshold hint was too high (exactness kept; speed lost). */
  hintMisses(): number;
  /** Exact bf16 screening since load: rows screened, candidates rescored, rows sent to fp32. */
  screenStats(): ScreenStats;
  /** JSON text: KernelDecision[] (the measured encode kernel choices of this SAE). */
  kernelReport(): string;
}

export interface NativeTrainSpec {
  dIn: number;
  dSae: number;
  k: number;
  /** AuxK latents per row; 0 disables AuxK. */
  kAux: number;
  architecture: 'topk' | 'batchtopk' | 'standard' | 'jumprelu';
  /** Transcoders: the decoder's width (0 or absent: dIn). */
  dOut?: number;
  /** The target is a second tensor and the input is not centered by b_dec. */
  transcoder?: boolean;
  /** A dense W_skip is trained beside the dictionary (transcoders). */
  skip?: boolean;
  /** batchtopk: matryoshka prefix widths, strictly increasing, the last dSae. */
  matryoshkaWidths?: number[];
}

export interface NativeTrainParams {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** jumprelu: [d_sae]. */
  log_threshold?: Float32Array;
  /** skip transcoders: [d_out, d_in] (SAELens layout); absent = zeros. */
  W_skip?: Float32Array;
}

export interface NativeStepOptions {
  inputScale: number;
  /** Transcoders: the target rows are multiplied by this. */
  outputScale: number;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  clip: number;
  /** Adam step number, 1-based. */
  t: number;
  auxCoeff: number;
  deadTokens: number;
  /** standard: the L1 coefficient lambda. */
  l1Coeff: number;
  /** jumprelu: the L0 coefficient and the estimators' bandwidth. */
  l0Coeff: number;
  bandwidth: number;
  /** false: loss and gradients only, nothing updated. */
  apply: boolean;
}

export interface NativeStepStats {
  mse: number;
  fvu: number;
  l0: number;
  auxLoss: number;
  /** standard: the L1 penalty; jumprelu: the L0 penalty. */
  sparsityLoss: number;
  gradNorm: number;
  dead: number;
  /** matryoshka: the inner prefixes' MSE, summed (0 otherwise). */
  innerMse: number;
}

/** Names accepted by AddonTrainer.getState/setState (grad.* are read-only). */
type TrainedTensor = 'W_enc' | 'b_enc' | 'W_dec' | 'b_dec' | 'log_threshold' | 'W_skip';
export type TrainerStateName =
  | TrainedTensor
  | `adam_m.${TrainedTensor}`
  | `adam_v.${TrainedTensor}`
  | `grad.${TrainedTensor}`
  | 'fires' | 'since_fired' | 'batch_threshold';

export interface AddonTrainer {
  /**
   * x: [rows, dIn] float32; y: a transcoder's target rows [rows, dOut] (null for an SAE), both
   * validated by the caller. Must not be transferred while pending.
   */
  step(x: Float32Array, y: Float32Array | null, rows: number, opts: NativeStepOptions): Promise<NativeStepStats>;
  /** A copy; fires and since_fired are Float64Array. Throws while a step is in flight. */
  getState(name: TrainerStateName): Float32Array | Float64Array;
  setState(name: TrainerStateName, data: Float32Array | Float64Array): void;
  lastSelection(aux: boolean): { indptr: Uint32Array; indices: Int32Array };
  bytes(): number;
  dispose(): void;
}

export interface ScreenStats {
  rows: number;
  candidates: number;
  fallbacks: number;
  /** The screen the most recent screened block used ('off' if none ran yet). */
  screen: ScreenName | 'off';
}

/** The low-precision screens of the exact screened encode (README, "Why the screened encode is exact"). */
export type ScreenName = 'bf16' | 'int8' | 'int8-256' | 'amx-bf16' | 'amx-bf16-emu';

/** The encode kernels: the plain fp32 kernel and the screens. */
export type EncodeKernelName = 'fp32' | ScreenName;

/**
 * How an SAE's encode kernel was chosen for one shape class (native/cpu/kernel_choice.h): the
 * kernels this CPU runs timed on the SAE's own weights at its first encode of that batch size
 * class, or the decision a previous process stored in the kernel cache file.
 */
export interface KernelDecision {
  kernel: EncodeKernelName;
  /** 'measured', or 'cached (<file>)'. */
  how: string;
  /** One sentence with the figures behind the choice. */
  why: string;
  /** The shape class: saekit version, CPU, threads, d_in, d_sae, selection, batch class, weight dtype. */
  key: string;
  /** Rows each kernel was timed on. */
  sampleRows: number;
  /** Microseconds per row of each kernel timed (best run); -1: it cannot hold this SAE. */
  usPerRow: Record<string, number>;
}

export interface CpuVariantInfo {
  current: CpuVariantName;
  best: CpuVariantName;
  supported: CpuVariantName[];
  /** The CPU can run the bf16 screen (AVX512-BF16). */
  bf16Screening: boolean;
  /** The screens this CPU can run: bf16 (AVX512-BF16), int8 (AVX512-VNNI), int8-256 (AVX-VNNI), amx-bf16 (AMX), amx-bf16-emu (the AMX kernel emulated; tests). */
  screens: ScreenName[];
  /** The kernels the measured choice picks among on this CPU, fp32 first. */
  kernels: EncodeKernelName[];
  /** Whether AMX runs here, and why or why not. */
  amx: string;
  /** The CPU as the kernel choice keys it (brand string, family, model, stepping). */
  cpuModel: string;
  /** The kernel choice cache file ('' when SAEKIT_KERNEL_CACHE=0 or no home directory). */
  kernelCache: string;
  /** 'auto' (measured per SAE), or the kernel SAEKIT_ENCODE_KERNEL / SAEKIT_SCREEN forces. */
  encodeKernel: EncodeKernelName | 'auto';
  /** E.g. 'SAEKIT_ENCODE_KERNEL=bf16' when a kernel is forced. */
  encodeKernelSource?: string;
  /** Why the variable's value cannot be used (unknown name, or a kernel this CPU cannot run). */
  encodeKernelError?: string;
}

export interface BackendInfo {
  name: 'cpu' | 'cuda';
  available: boolean;
  detail: string;
}

export type CpuVariantName = 'generic' | 'avx2' | 'avx512';

export interface Addon {
  createSae(spec: NativeSpec, weights: NativeWeights, device: 'cpu' | 'cuda'): Promise<AddonSae>;
  createTrainer(spec: NativeTrainSpec, params: NativeTrainParams, device: 'cpu' | 'cuda'): Promise<AddonTrainer>;
  backends(): BackendInfo[];
  /** The same list, each saying whether device 'auto' may train on it (CUDA: the trainer's self-test, run once). */
  trainingBackends(): BackendInfo[];
  threads(): number;
  setThreads(n: number): number;
  /** bf16Screening: the CPU can run the exact bf16-screened topk encode (AVX512-BF16). */
  cpuVariant(): CpuVariantInfo;
  setCpuVariant(name: CpuVariantName | 'auto'): void;
  probeFmaPeak(seconds: number): Promise<number>;
  /** bf16 dot-product peak (GFLOP/s); 0 without AVX512-BF16. */
  probeBf16Peak(seconds: number): Promise<number>;
  /** u8 x s8 dot-product peak (vpdpbusd, GOP/s, 2 ops per multiply-add): zmm when wide, else ymm (AVX-VNNI); 0 without. */
  probeVnniPeak(seconds: number, wide: boolean): Promise<number>;
  probeCopyBandwidth(bytes: number, reps: number): Promise<number>;
  /** AMX TDPBF16PS peak (GFLOP/s, 4 independent tiles per thread); 0 where AMX cannot run. */
  probeAmxBf16Peak(seconds: number): Promise<number>;
  /** JSON text: KernelDecision[] stored in the kernel choice cache file. */
  cachedKernelDecisions(): string;
}

/** Error shape of rejected native Promises. */
export interface NativeFailure extends Error {
  code?: 'SAEKIT_INPUT' | 'SAEKIT_OUT_OF_MEMORY' | 'SAEKIT_NATIVE' | 'SAEKIT_ABORTED';
  row?: number;
  col?: number;
}

let cached: Addon | undefined;
let cachedFrom = '';

/** Where the loaded addon came from: 'source' (built in the package folder), a platform package's name, or SAEKIT_ADDON. */
export function addonSource(): string {
  addon();
  return cachedFrom;
}

/** Loads the addon once; a missing or broken build is a clear error, not a crash. */
export function addon(): Addon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  // SAEKIT_ADDON names another build of the addon (scripts/sanitize.sh loads its sanitized one).
  const other = process.env.SAEKIT_ADDON;
  const root = fileURLToPath(new URL('..', import.meta.url));
  const failures: string[] = [];
  const attempt = (from: string, load: () => Addon): boolean => {
    try {
      cached = load();
      cachedFrom = from;
      return true;
    } catch (e) {
      failures.push(`${from}: ${(e as Error).message.split('\n')[0]}`);
      return false;
    }
  };
  if (other) {
    attempt('SAEKIT_ADDON', () => require(other) as Addon);
  } else {
    // A build in the package folder wins (a contributor's checkout, or the compile at install
    // when no prebuilt package matched); `bindings` finds it under build/Release or build/Debug.
    const hasBuild = ['build/Release', 'build/Debug'].some((d) => existsSync(join(root, d, 'saekit.node')));
    const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => Addon;
    if (!(hasBuild && attempt('source', () => bindings({ bindings: 'saekit.node', module_root: root })))) {
      for (const t of prebuiltAddons(root)) if (attempt(t.from, () => require(t.path) as Addon)) break;
    }
  }
  if (cached) return cached;
  throw new NativeError(
    "saekit's native addon could not be loaded" +
      (failures.length
        ? ` (${failures.join('; ')}). `
        : `: no build in the package folder and ${noPrebuiltReason()}. `) +
      'Reinstall saekit (npm installs the prebuilt package for your platform, or builds from source with cmake and a C++17 compiler), ' +
      'or run `npm run build` in the saekit package folder.',
  );
}
