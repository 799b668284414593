// mwhanna's per-layer transcoders (SAELens conversion_func mwhanna_transcoder: the Qwen3
// transcoders circuit-tracer publishes): one `layer_N.safetensors` per layer, already in SAELens
// tensor names but with W_enc stored [d_sae, d_in] (SAELens transposes it on load; saekit keeps
// it as is with encTransposed), and at the repository root `wandb-config.yaml` (or the typo
// `wanb-config.yaml`), a Weights & Biases export with d_model, d_feature and batch_size, plus
// `config.yaml` with model_name (absent from the 14b repositories: the model follows from the
// repository name then).
//
// FORMATS.md says nothing about this layout; what follows is what SAELens's
// get_mwhanna_transcoder_config_from_hf / mwhanna_transcoder_huggingface_loader do:
//   - architecture "transcoder": ReLU, no skip term, no threshold; b_dec is not subtracted from
//     the input; d_in = d_out = d_model, d_sae = d_feature;
//   - hook blocks.N.mlp.hook_in -> blocks.N.hook_mlp_out, N = the number after the file name's
//     last "_";
//   - context_size = batch_size (SAELens copies the W&B batch_size there; kept as it does);
//   - model_from_pretrained_kwargs {fold_ln: false}, dataset monology/pile-uncopyrighted.
// SAELens loads the file's state dict strictly, so a file holding other tensors (a W_skip, a
// threshold) does not load there; saekit refuses it too, by name, rather than guessing what
// such a tensor means (circuit-tracer's own W_skip is x @ W_skip, SAELens's x @ W_skip^T: for a
// square matrix the wrong guess is silent).

import { basename } from 'node:path';
import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { SafetensorsReader } from './safetensors.js';
import { floatDtypeName, optionalString, readWeight, type Json } from './saeTensors.js';
import { readYamlObject, wandbCount } from './yamlConfig.js';

export interface MwhannaFiles {
  /** The layer's safetensors file (its name gives the layer). */
  weights: string;
  /** wandb-config.yaml (or wanb-config.yaml). */
  wandbConfig: string;
  /** config.yaml, where the repository has one. */
  baseConfig?: string;
  /** The hub repository: the model's name when config.yaml is absent. */
  repoId: string;
}

const TENSORS = ['W_enc', 'b_enc', 'W_dec', 'b_dec'];

/** The layer of `layer_N.safetensors`: the integer after the last "_" (as SAELens parses it). */
export function mwhannaLayer(file: string): number {
  const tail = basename(file).replace(/\.safetensors$/, '').split('_').pop()!;
  if (!/^\d+$/.test(tail)) throw new FormatError(file, `cannot tell the layer from the file name (expected layer_N.safetensors)`);
  return Number(tail);
}

/** The model when config.yaml is absent: Qwen/Qwen3-<size>B from a repository named ...qwen3-<size>b... (as SAELens). */
function modelFromRepo(repoId: string, wandbFile: string): string {
  const m = /qwen3-(\d+(?:\.\d+)?)b/i.exec(repoId);
  if (!m) throw new FormatError(wandbFile, `the repository ${repoId} has no config.yaml and its name does not say the Qwen3 size (qwen3-<n>b) to name the model`);
  return `Qwen/Qwen3-${m[1]}B`;
}

export async function readMwhannaTranscoder(f: MwhannaFiles): Promise<SaeWeights> {
  const layer = mwhannaLayer(f.weights);
  const wandb = await readYamlObject(f.wandbConfig);
  const dModel = wandbCount(f.wandbConfig, wandb, 'd_model', true)!;
  const dSae = wandbCount(f.wandbConfig, wandb, 'd_feature', true)!;
  const contextSize = wandbCount(f.wandbConfig, wandb, 'batch_size', false);
  let modelName: string;
  if (f.baseConfig !== undefined) {
    const base = await readYamlObject(f.baseConfig);
    const m = optionalString(base, 'model_name');
    if (m === undefined) throw new FormatError(f.baseConfig, "missing 'model_name'");
    modelName = m;
  } else {
    modelName = modelFromRepo(f.repoId, f.wandbConfig);
  }
  const reader = await SafetensorsReader.open(f.weights);
  try {
    const extra = [...reader.tensors.keys()].filter((k) => !TENSORS.includes(k));
    if (extra.length > 0) {
      throw new FormatError(f.weights, `holds tensors ${extra.map((k) => `'${k}'`).join(', ')} besides ${TENSORS.join(', ')}: SAELens's mwhanna_transcoder loader reads a plain ReLU transcoder (and its strict load refuses the rest), so saekit does not guess what they mean`);
    }
    const because = `${basename(f.wandbConfig)} says d_model ${dModel}, d_feature ${dSae}`;
    const metadata: Json = {
      conversion_func: 'mwhanna_transcoder',
      layer,
      dataset_path: 'monology/pile-uncopyrighted',
      ...(contextSize !== undefined && { context_size: contextSize, context_size_from: 'batch_size in the W&B config (as SAELens reads it)' }),
      model_from_pretrained_kwargs: { fold_ln: false },
    };
    return {
      config: {
        architecture: 'standard',
        dIn: dModel,
        dSae,
        dOut: dModel,
        applyBDecToInput: false,
        normalizeActivations: 'none',
        dtype: floatDtypeName(reader, 'W_dec'),
        format: 'circuit-tracer',
        hookName: `blocks.${layer}.mlp.hook_in`,
        hookNameOut: `blocks.${layer}.hook_mlp_out`,
        modelName,
        metadata,
      },
      // Stored [d_sae, d_in]: SAELens's W_enc.T, which encTransposed reads without a copy.
      W_enc: await readWeight(reader, 'W_enc', [dSae, dModel], `${because} (W_enc is stored [d_sae, d_in])`),
      encTransposed: true,
      b_enc: await readWeight(reader, 'b_enc', [dSae], because),
      W_dec: await readWeight(reader, 'W_dec', [dSae, dModel], because),
      b_dec: await readWeight(reader, 'b_dec', [dModel], because),
    };
  } finally {
    await reader.close();
  }
}
