// SAELens directories: cfg.json + sae_weights.safetensors (+ sparsity.safetensors).
//
// Two generations of cfg.json exist and both are read here without sniffing versions, by
// accepting either spelling of each field:
//   v6:     architecture, k, normalize_activations (string), metadata {hook_name, model_name, ...}
//   pre-6:  activation_fn_str + activation_fn_kwargs {k}, hook_point, model_name at top level,
//           normalize_activations as a boolean, no architecture ("standard" implied).
// Inference-time rescalings SAELens applies around the activation are folded into the weights
// (see foldDecoderNorms), so every consumer of SaeWeights runs plain encode/decode math.

import type { SaeConfig, SaeWeights, Architecture, Normalization } from '../types.js';
import { FormatError } from '../errors.js';
import { SafetensorsReader } from './safetensors.js';
import {
  floatDtypeName,
  optionalBool,
  optionalCount,
  optionalString,
  readJsonObject,
  readWeight,
  requiredCount,
  without,
  type Json,
} from './saeTensors.js';
import { join } from 'node:path';

export const SAELENS_CFG = 'cfg.json';
export const SAELENS_WEIGHTS = 'sae_weights.safetensors';
export const SAELENS_SPARSITY = 'sparsity.safetensors';

const NORMALIZATIONS: readonly Normalization[] = ['none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'];

/** cfg.json keys turned into SaeConfig fields; every other key is passed through as metadata. */
const CONSUMED = [
  'architecture', 'd_in', 'd_sae', 'dtype', 'device', 'k', 'apply_b_dec_to_input', 'normalize_activations',
  'rescale_acts_by_decoder_norm', 'finetuning_scaling_factor', 'activation_fn_str', 'activation_fn',
  'activation_fn_kwargs', 'hook_point', 'hook_name', 'model_name', 'metadata', 'd_out', 'hook_name_out',
];

/**
 * A transcoder's output hook: cfg or metadata `hook_name_out` where present; else (SAELens 6.18
 * had the field commented out) the MLP output of the input hook's layer, noted in metadata.
 */
function hookNameOutOf(cfg: Json, nested: Json, hookName: string | undefined, metadata: Json): string | undefined {
  const given = optionalString(cfg, 'hook_name_out') ?? optionalString(nested, 'hook_name_out');
  if (given !== undefined) return given;
  const layer = hookName === undefined ? undefined : /^blocks\.(\d+)\./.exec(hookName)?.[1];
  if (layer === undefined) return undefined;
  metadata['hook_name_out_inferred'] = `blocks.${layer}.hook_mlp_out (the MLP output of the input hook's layer: the cfg has no hook_name_out)`;
  return `blocks.${layer}.hook_mlp_out`;
}

/**
 * SAELens's transcoder architectures (sae_lens/saes/transcoder.py) and the activation each
 * runs: a transcoder reads one hook and predicts another (d_out wide); the skip variant adds
 * x @ W_skip^T. b_dec is never subtracted from their input.
 */
const TRANSCODERS: Readonly<Record<string, { architecture: Architecture; skip: boolean }>> = {
  transcoder: { architecture: 'standard', skip: false },
  skip_transcoder: { architecture: 'standard', skip: true },
  jumprelu_transcoder: { architecture: 'jumprelu', skip: false },
  jumprelu_skip_transcoder: { architecture: 'jumprelu', skip: true },
  // saekit's own names for TopK transcoders (cfg k): SAELens 6.x has no TopK transcoder class,
  // and a TopK selection cannot be written as a threshold, so saekit trains and saves these
  // under these names (sparsify's TopK transcoders load as sparsify folders instead).
  topk_transcoder: { architecture: 'topk', skip: false },
  topk_skip_transcoder: { architecture: 'topk', skip: true },
};

function architectureOf(file: string, cfg: Json): Architecture {
  const arch = cfg['architecture'] ?? 'standard';
  if (typeof arch === 'string' && Object.hasOwn(TRANSCODERS, arch)) return TRANSCODERS[arch]!.architecture;
  if (arch === 'gated') return 'jumprelu'; // folded at load: see foldGated
  // pre-6 spelled the activation separately; v6 "standard" has none (relu).
  const act = cfg['activation_fn_str'] ?? cfg['activation_fn'] ?? 'relu';
  if (arch === 'topk' || arch === 'jumprelu') return arch;
  if (arch !== 'standard') {
    throw new FormatError(file, `unsupported architecture '${String(arch)}' (saekit runs standard, topk, jumprelu and gated SAEs and ${Object.keys(TRANSCODERS).join(', ')})`);
  }
  if (act === 'relu') return 'standard';
  if (act === 'topk') return 'topk';
  throw new FormatError(file, `unsupported activation function '${String(act)}' (saekit runs relu and topk)`);
}

function normalizationOf(file: string, cfg: Json): Normalization {
  const v = cfg['normalize_activations'];
  if (v === undefined || v === null || v === false) return 'none';
  if (v === true) return 'expected_average_only_in'; // pre-6 boolean, as SAELens maps it
  if (typeof v === 'string' && (NORMALIZATIONS as readonly string[]).includes(v)) return v as Normalization;
  throw new FormatError(file, `unsupported normalize_activations '${String(v)}' (expected one of ${NORMALIZATIONS.join(', ')})`);
}

function kOf(file: string, cfg: Json, dSae: number): number {
  const kwargs = cfg['activation_fn_kwargs'];
  const fromKwargs = typeof kwargs === 'object' && kwargs !== null ? (kwargs as Json) : {};
  const k = optionalCount(file, cfg, 'k') ?? optionalCount(file, fromKwargs, 'k');
  if (k === undefined) throw new FormatError(file, "topk architecture but no 'k' (nor activation_fn_kwargs.k)");
  if (k > dSae) throw new FormatError(file, `k ${k} is larger than d_sae ${dSae}`);
  return k;
}

/**
 * TopK with rescale_acts_by_decoder_norm: SAELens multiplies hidden_pre[j] by n_j = ||W_dec[j]||
 * before top-k and divides the kept activations by n_j before decoding. Scaling encoder column
 * j and b_enc[j] by n_j and decoder row j by 1/n_j gives the same codes and the same
 * reconstruction with unit-norm decoder rows (SAELens' own fold_W_dec_norm does the same).
 * A zero decoder row keeps its latent's pre-activation at 0, as in SAELens, and decodes to
 * nothing (where SAELens would compute 0/0).
 */
export function foldDecoderNorms(W_enc: Float32Array, b_enc: Float32Array, W_dec: Float32Array, dIn: number, dSae: number): void {
  const norms = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let sq = 0;
    for (let c = 0; c < dIn; c++) sq += W_dec[j * dIn + c]! ** 2;
    const n = Math.sqrt(sq);
    norms[j] = n;
    if (n > 0) for (let c = 0; c < dIn; c++) W_dec[j * dIn + c]! /= n;
    b_enc[j]! *= n;
  }
  // Row by row: W_enc is [d_in, d_sae], so this walks memory in order.
  for (let r = 0; r < dIn; r++) {
    for (let j = 0; j < dSae; j++) W_enc[r * dSae + j]! *= norms[j]!;
  }
}

/**
 * SAELens's gated SAE, f_j = [x' W_enc_j + b_gate_j > 0] * relu(e_j (x' W_enc_j) + b_mag_j)
 * with e_j = exp(r_mag_j), is a JumpReLU SAE: with encoder column j scaled by e_j and bias
 * b_mag_j its pre-activation IS the magnitude path, and (e_j > 0) the gate holds exactly when
 * that pre-activation exceeds b_mag_j - e_j b_gate_j. So W_enc_j *= e_j, b_enc = b_mag,
 * threshold = b_mag - e * b_gate: the same latents and values up to fp32 rounding at the gate's
 * boundary (the gate is evaluated on the magnitude's scale). Returns the threshold.
 */
function foldGated(W_enc: Float32Array, b_gate: Float32Array, r_mag: Float32Array, b_mag: Float32Array, dIn: number, dSae: number): { b_enc: Float32Array; threshold: Float32Array } {
  const e = Float64Array.from(r_mag, (r) => Math.exp(r));
  for (let i = 0; i < dIn; i++) for (let j = 0; j < dSae; j++) W_enc[i * dSae + j]! *= e[j]!;
  const threshold = Float32Array.from(b_mag, (b, j) => b - e[j]! * b_gate[j]!);
  return { b_enc: b_mag.slice(), threshold };
}

/** Pre-6 finetuning_scaling_factor multiplies the activations before decoding: fold into W_dec rows. */
function foldScalingFactor(W_dec: Float32Array, scale: Float32Array, dIn: number): void {
  for (let j = 0; j < scale.length; j++) {
    for (let c = 0; c < dIn; c++) W_dec[j * dIn + c]! *= scale[j]!;
  }
}

export async function readSaeLens(dir: string): Promise<SaeWeights> {
  const cfgFile = join(dir, SAELENS_CFG);
  const cfg = await readJsonObject(cfgFile);
  const nested = typeof cfg['metadata'] === 'object' && cfg['metadata'] !== null ? (cfg['metadata'] as Json) : {};
  const dIn = requiredCount(cfgFile, cfg, 'd_in');
  const dSae = requiredCount(cfgFile, cfg, 'd_sae');
  const architecture = architectureOf(cfgFile, cfg);
  const transcoder = typeof cfg['architecture'] === 'string' ? TRANSCODERS[cfg['architecture']] : undefined;
  const dOut = transcoder ? requiredCount(cfgFile, cfg, 'd_out') : dIn;
  const k = architecture === 'topk' ? kOf(cfgFile, cfg, dSae) : undefined;
  const rescale = optionalBool(cfgFile, cfg, 'rescale_acts_by_decoder_norm', false);
  if (rescale && architecture !== 'topk') {
    // SAELens saves such SAEs with the norms already folded; a set flag here is unexplained.
    throw new FormatError(cfgFile, `rescale_acts_by_decoder_norm is true for a ${architecture} SAE (supported for topk only)`);
  }
  const scaled = optionalBool(cfgFile, cfg, 'finetuning_scaling_factor', false);
  const applyBDecToInput = optionalBool(cfgFile, cfg, 'apply_b_dec_to_input', !transcoder);
  if (transcoder && applyBDecToInput) {
    throw new FormatError(cfgFile, `apply_b_dec_to_input is true for a ${String(cfg['architecture'])} (a transcoder never subtracts b_dec from its input; SAELens refuses it too)`);
  }
  const normalizeActivations = normalizationOf(cfgFile, cfg);
  if (transcoder && normalizeActivations !== 'none' && normalizeActivations !== 'expected_average_only_in') {
    throw new FormatError(cfgFile, `normalize_activations '${normalizeActivations}' is not supported for transcoders (its output would be rescaled with its input's statistics)`);
  }
  const metadata: Json = { ...without(cfg, CONSUMED), ...without(nested, ['hook_name', 'model_name']) };
  const hookName = optionalString(nested, 'hook_name') ?? optionalString(cfg, 'hook_name') ?? optionalString(cfg, 'hook_point');
  const modelName = optionalString(nested, 'model_name') ?? optionalString(cfg, 'model_name');
  const hookNameOut = transcoder ? hookNameOutOf(cfg, nested, hookName, metadata) : undefined;

  const reader = await SafetensorsReader.open(join(dir, SAELENS_WEIGHTS));
  try {
    const config: SaeConfig = {
      architecture,
      dIn,
      dSae,
      ...(k !== undefined && { k }),
      applyBDecToInput,
      normalizeActivations,
      dtype: floatDtypeName(reader, 'W_dec'),
      format: 'saelens',
      ...(hookName !== undefined && { hookName }),
      ...(modelName !== undefined && { modelName }),
      ...(transcoder && { dOut }),
      ...(hookNameOut !== undefined && { hookNameOut }),
      metadata,
    };
    const because = `${SAELENS_CFG} says d_in ${dIn}, d_sae ${dSae}${transcoder ? `, d_out ${dOut}` : ''}`;
    const W_enc = await readWeight(reader, 'W_enc', [dIn, dSae], because);
    const gated = cfg['architecture'] === 'gated';
    let b_enc: Float32Array;
    let gatedThreshold: Float32Array | undefined;
    if (gated) {
      const folded = foldGated(
        W_enc,
        await readWeight(reader, 'b_gate', [dSae], because),
        await readWeight(reader, 'r_mag', [dSae], because),
        await readWeight(reader, 'b_mag', [dSae], because),
        dIn,
        dSae,
      );
      b_enc = folded.b_enc;
      gatedThreshold = folded.threshold;
      metadata['gated_folded'] = 'loaded as jumprelu: W_enc * exp(r_mag), b_enc = b_mag, threshold = b_mag - exp(r_mag) * b_gate';
    } else {
      b_enc = await readWeight(reader, 'b_enc', [dSae], because);
    }
    const W_dec = await readWeight(reader, 'W_dec', [dSae, dOut], because);
    const b_dec = await readWeight(reader, 'b_dec', [dOut], because);
    const weights: SaeWeights = { config, W_enc, encTransposed: false, b_enc, W_dec, b_dec };
    if (transcoder?.skip) weights.W_skip = await readWeight(reader, 'W_skip', [dOut, dIn], because);
    if (architecture === 'jumprelu') weights.threshold = gatedThreshold ?? (await readWeight(reader, 'threshold', [dSae], because));
    if (scaled) {
      const name = reader.tensors.has('finetuning_scaling_factor') ? 'finetuning_scaling_factor' : 'scaling_factor';
      foldScalingFactor(W_dec, await readWeight(reader, name, [dSae], because), dOut);
      metadata['finetuning_scaling_factor_folded'] = true;
    }
    if (rescale) {
      foldDecoderNorms(W_enc, b_enc, W_dec, dIn, dSae);
      metadata['rescale_acts_by_decoder_norm_folded'] = true;
    }
    return weights;
  } finally {
    await reader.close();
  }
}
