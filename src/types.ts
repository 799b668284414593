// Plain data types shared by the formats layer, the typed API and the CLI.
// Kept free of imports so every module can depend on it without cycles.

/** Activation functions saekit can run at inference. */
export type Architecture = 'standard' | 'topk' | 'jumprelu';

/**
 * Input normalization, SAELens vocabulary.
 * - none
 * - expected_average_only_in: the dataset-wide scale is folded into the weights when SAELens
 *   saves, so at inference it is the identity.
 * - constant_norm_rescale: each row scaled by sqrt(d_in)/||x||, undone on decode.
 * - layer_norm: each row standardized ((x - mean) / (unbiased std + 1e-5)), undone on decode.
 */
export type Normalization = 'none' | 'expected_average_only_in' | 'constant_norm_rescale' | 'layer_norm';

/** Which on-disk family a directory came from ('circuit-tracer': mwhanna's transcoders, mntss's cross-layer transcoders). */
export type SaeFormat = 'saelens' | 'sparsify' | 'gemmascope' | 'circuit-tracer' | 'generated';

/** Normalized SAE configuration, whatever the source format. */
export interface SaeConfig {
  architecture: Architecture;
  dIn: number;
  dSae: number;
  /** topk only: number of latents kept per row. */
  k?: number;
  /** Subtract b_dec from the (normalized) input before the encoder matmul. */
  applyBDecToInput: boolean;
  normalizeActivations: Normalization;
  /** dtype of the weights as stored on disk ('float32' | 'float16' | 'bfloat16'). */
  dtype: string;
  format: SaeFormat;
  /** e.g. "blocks.8.hook_resid_pre" (SAELens metadata.hook_name / pre-6 hook_point). */
  hookName?: string;
  /**
   * Transcoders: the width they predict (the MLP output; W_dec [d_sae, d_out], b_dec
   * [d_out]). Absent for SAEs, which reconstruct their input (d_out = d_in).
   */
  dOut?: number;
  /** Transcoders: the hook whose activation they predict, e.g. "blocks.8.hook_mlp_out". */
  hookNameOut?: string;
  modelName?: string;
  /** Everything else from the source config (metadata, training settings), passed through. */
  metadata: Record<string, unknown>;
}

/**
 * A transcoder predicts another hook than it reads: a config with dOut (even = dIn, as
 * sparsify's), or a skip term. SKIP: the weights carry W_skip.
 */
export function isTranscoder(config: SaeConfig, skip: boolean): boolean {
  return config.dOut !== undefined || skip;
}

/**
 * SAE weights in memory, always float32 (float16/bfloat16 are widened at load).
 * Layouts follow SAELens: W_enc is [d_in, d_sae] row-major unless `encTransposed`
 * says it is [d_sae, d_in] (sparsify's encoder.weight); W_dec is always [d_sae, d_out] (d_out =
 * d_in except for transcoders).
 * Scalings such as SAELens' rescale_acts_by_decoder_norm are already folded in.
 */
export interface SaeWeights {
  config: SaeConfig;
  W_enc: Float32Array;
  encTransposed: boolean;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** jumprelu only: [d_sae]. */
  threshold?: Float32Array;
  /** Skip transcoders: [d_out, d_in] (SAELens layout); the prediction adds x @ W_skip^T. */
  W_skip?: Float32Array;
}
