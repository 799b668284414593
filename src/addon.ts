// The native addon's whole surface, typed in one place (mirrors native/napi/addon.cpp), and
// the one function that loads it. Nothing else in src/ touches the .node file.
import { createRequire } from 'node:module';
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
}

/** The weight arrays as the addon reads them (float32, layouts as in SaeWeights). */
export type NativeWeights = Omit<SaeWeights, 'config'>;

export interface AddonSae {
  /** x: [rows, dIn] float32, validated by the caller. Must not be transferred while pending. */
  encode(x: Float32Array, rows: number): Promise<NativeCodes>;
  /** Writes [rows, dIn] float32 into out and resolves with it. */
  decode(codes: NativeCodes, out: Float32Array): Promise<Float32Array>;
  dispose(): void;
  /** Bytes the backend holds for this SAE (packed weights). */
  bytes(): number;
  /** Rows re-encoded because a top-k threshold hint was too high (exactness kept; speed lost). */
  hintMisses(): number;
  /** Exact bf16 screening since load: rows screened, candidates rescored, rows sent to fp32. */
  screenStats(): ScreenStats;
}

export interface NativeTrainSpec {
  dIn: number;
  dSae: number;
  k: number;
  /** AuxK latents per row; 0 disables AuxK. */
  kAux: number;
  architecture: 'topk' | 'batchtopk' | 'standard' | 'jumprelu';
}

export interface NativeTrainParams {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** jumprelu: [d_sae]. */
  log_threshold?: Float32Array;
}

export interface NativeStepOptions {
  inputScale: number;
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
}

/** Names accepted by AddonTrainer.getState/setState (grad.* are read-only). */
type TrainedTensor = 'W_enc' | 'b_enc' | 'W_dec' | 'b_dec' | 'log_threshold';
export type TrainerStateName =
  | TrainedTensor
  | `adam_m.${TrainedTensor}`
  | `adam_v.${TrainedTensor}`
  | `grad.${TrainedTensor}`
  | 'fires' | 'since_fired' | 'batch_threshold';

export interface AddonTrainer {
  /** x: [rows, dIn] float32, validated by the caller. Must not be transferred while pending. */
  step(x: Float32Array, rows: number, opts: NativeStepOptions): Promise<NativeStepStats>;
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
export type ScreenName = 'bf16' | 'int8' | 'int8-256';

export interface CpuVariantInfo {
  current: CpuVariantName;
  best: CpuVariantName;
  supported: CpuVariantName[];
  /** The CPU can run the bf16 screen (AVX512-BF16). */
  bf16Screening: boolean;
  /** The screens this CPU can run: bf16 (AVX512-BF16), int8 (AVX512-VNNI), int8-256 (AVX-VNNI). */
  screens: ScreenName[];
  /** The default screen ('auto'): the best this CPU runs. */
  bestScreen: ScreenName | 'off';
  /** The screen SAEKIT_SCREEN selects now for SAEs loaded from here on ('off' with an error below). */
  screen: ScreenName | 'off';
  /** Why SAEKIT_SCREEN's value cannot be used (unknown name, or a screen this CPU cannot run). */
  screenError?: string;
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
}

/** Error shape of rejected native Promises. */
export interface NativeFailure extends Error {
  code?: 'SAEKIT_INPUT' | 'SAEKIT_OUT_OF_MEMORY' | 'SAEKIT_NATIVE';
  row?: number;
  col?: number;
}

let cached: Addon | undefined;

/** Loads the addon once; a missing or broken build is a clear error, not a crash. */
export function addon(): Addon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  try {
    const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => Addon;
    const root = new URL('..', import.meta.url).pathname;
    cached = bindings({ bindings: 'saekit.node', module_root: root });
  } catch (e) {
    throw new NativeError(
      `saekit's native addon could not be loaded (${(e as Error).message.split('\n')[0]}). ` +
        'Build it with `npm install` (or `npm run build`) in the saekit package folder.',
    );
  }
  return cached;
}
