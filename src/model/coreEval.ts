// `saekit eval --output FILE.json`: the spliced-model metrics as a file in SAEBench's "core"
// eval output shape (sae_bench/evals/core/eval_output.py: eval_type_id, eval_config, eval_id,
// datetime_epoch_millis, eval_result_metrics grouped by category, eval_result_details per
// feature), with SAELens/SAEBench metric names, so the numbers sit beside theirs in one table.
//
// Two definitions deliberately differ from what those tools computed at times (both are the
// README's "historical bugs"): explained_variance is taken about the MEAN of the evaluated rows
// (never about zero), and mse is the mean over positions and dimensions (SAELens's evals divide
// each row's squared error by the batch's token count, so its mse shrinks as the batch grows).
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { writeFileAtomic } from '../formats/fileIo.js';
import type { SplicedMetrics } from './splice.js';

export interface CoreEvalSettings {
  model: string;
  hook: string;
  sae: string;
  contextSize: number;
  /** Tokens asked for (the evaluated count, whole windows, is in token_stats). */
  tokensRequested: number;
  batchSizePrompts: number;
  prependBos: boolean;
  corpus: string;
  textField?: string;
  device: string;
  threads: number;
  saekitVersion: string;
  /** The SAE's config as saekit read it (architecture, d_in, d_sae, k, ...). */
  saeConfig: Record<string, unknown>;
  release?: string;
  saeId?: string;
}

/** Bin edges of the feature density histogram: log10(density) from -10 to 0 in steps of 0.5. */
export const DENSITY_LOG10_EDGES: readonly number[] = Array.from({ length: 21 }, (_, i) => -10 + i * 0.5);

/**
 * Histogram of log10(feature density) over the latents that fired at least once (bins
 * [e_i, e_i+1), the last one closed at 0; below -10 goes to the first); dead latents (density
 * 0, log10 = -inf) are counted apart.
 */
export function densityHistogram(density: ArrayLike<number>): { log10_bin_edges: number[]; counts: number[]; dead: number } {
  const edges = DENSITY_LOG10_EDGES;
  const counts = new Array<number>(edges.length - 1).fill(0);
  let dead = 0;
  for (let f = 0; f < density.length; f++) {
    const p = density[f]!;
    if (!(p > 0)) {
      dead++;
      continue;
    }
    const b = Math.floor((Math.log10(p) - edges[0]!) / 0.5);
    counts[Math.min(counts.length - 1, Math.max(0, b))]!++;
  }
  return { log10_bin_edges: [...edges], counts, dead };
}

/** The SAEBench-shaped core eval document for one run. */
export function coreEvalOutput(m: SplicedMetrics, s: CoreEvalSettings): Record<string, unknown> {
  const dSae = m.featureFired.length;
  const density = Array.from(m.featureFired, (c) => c / m.tokens);
  let alive = 0;
  let over1 = 0;
  let over10 = 0;
  for (const p of density) {
    if (p > 0) alive++;
    if (p > 0.01) over1++;
    if (p > 0.1) over10++;
  }
  return {
    eval_type_id: 'core',
    eval_config: {
      model_name: s.model,
      hook_name: s.hook,
      ...(m.hook_out !== undefined && { hook_name_out: m.hook_out }),
      sae: s.sae,
      dataset: s.corpus,
      ...(s.textField !== undefined && { text_field: s.textField }),
      context_size: s.contextSize,
      n_tokens_requested: s.tokensRequested,
      batch_size_prompts: s.batchSizePrompts,
      prepend_bos: s.prependBos,
      // No sampling: the corpus is read in order and cut into windows; the same flags give
      // the same tokens, so there is no seed to record.
      seed: null,
      sampling: 'in order: the first whole context windows of the corpus',
      exclude_special_tokens_from_reconstruction: false,
      device: s.device,
      threads: s.threads,
      saekit_version: s.saekitVersion,
    },
    eval_id: randomUUID(),
    datetime_epoch_millis: Date.now(),
    eval_result_metrics: {
      model_behavior_preservation: {
        kl_div_score: m.kl_div_score,
        kl_div_with_ablation: m.kl_div_with_ablation,
        kl_div_with_sae: m.kl_div_with_sae,
      },
      model_performance_preservation: {
        ce_loss_score: m.ce_loss_score,
        ce_loss_with_ablation: m.ce_loss_with_ablation,
        ce_loss_with_sae: m.ce_loss_with_sae,
        ce_loss_without_sae: m.ce_loss_clean,
      },
      reconstruction_quality: {
        explained_variance: m.explained_variance,
        mse: m.mse,
        cossim: m.cossim,
        fvu: m.fvu,
      },
      shrinkage: {
        l2_norm_in: m.l2_norm_in,
        l2_norm_out: m.l2_norm_out,
        l2_ratio: m.l2_ratio,
        relative_reconstruction_bias: m.relative_reconstruction_bias,
      },
      sparsity: {
        l0: m.l0,
        l1: m.l1,
        frac_alive: alive / dSae,
        dead_fraction: (dSae - alive) / dSae,
        alive,
        dead: dSae - alive,
        freq_over_1_percent: over1 / dSae,
        freq_over_10_percent: over10 / dSae,
      },
      token_stats: {
        total_tokens_eval_reconstruction: m.tokens,
        total_tokens_eval_sparsity_variance: m.tokens,
        windows: m.windows,
      },
      feature_density: densityHistogram(density),
    },
    eval_result_details: density.map((p, index) => ({
      index,
      feature_density: p,
      // SAEBench: firing tokens per prompt (window) that fired at all; 0 for a dead latent.
      consistent_activation_heuristic: m.featureWindows[index]! > 0 ? m.featureFired[index]! / m.featureWindows[index]! : 0,
    })),
    eval_result_unstructured: null,
    sae_lens_release_id: s.release ?? null,
    sae_lens_id: s.saeId ?? null,
    sae_cfg_dict: s.saeConfig,
  };
}

/** Writes DOC as pretty JSON to PATH: a temporary sibling renamed over it when complete. */
export async function writeJsonFile(path: string, doc: unknown): Promise<void> {
  const text = `${JSON.stringify(doc, null, 2)}\n`;
  await writeFileAtomic(path, async (fh) => {
    await writeFile(fh, text);
  });
}
