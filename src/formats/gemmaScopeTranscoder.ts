// Gemma Scope transcoders (google/gemma-scope-2b-pt-transcoders; SAELens conversion_func
// gemma_2_transcoder): Gemma Scope 1's params.npz (read by gemmaScope.ts), as a transcoder from
// the normalized MLP input to the MLP output of the same layer. As SAELens's
// get_gemma_2_transcoder_config_from_hf / gemma_2_transcoder_huggingface_loader:
// jumprelu_transcoder, d_out = d_in, hook blocks.L.ln2.hook_normalized -> blocks.L.hook_mlp_out
// (L from `layer_L` in the folder), b_dec not subtracted from the input, context 1024 with BOS,
// and the array names it accepts (case-insensitive): w_enc/wenc/w_e, w_dec/wdec/w_d,
// b_enc/benc/b_e, b_dec/bdec/b_d, threshold. Sizes come from the arrays (SAELens takes d_sae
// from the folder's width_* and d_in from the repository, then loads the arrays into them).

import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { readGemmaScope } from './gemmaScope.js';

const ALIASES: Readonly<Record<string, string>> = {
  w_enc: 'W_enc', wenc: 'W_enc', w_e: 'W_enc',
  w_dec: 'W_dec', wdec: 'W_dec', w_d: 'W_dec',
  b_enc: 'b_enc', benc: 'b_enc', b_e: 'b_enc',
  b_dec: 'b_dec', bdec: 'b_dec', b_d: 'b_dec',
  threshold: 'threshold',
};

export interface GemmaScopeTranscoderOptions {
  /** The folder in the repository, e.g. layer_3/width_16k/average_l0_54 (gives the layer). */
  path: string;
  modelName?: string;
}

export async function readGemmaScopeTranscoder(npzFile: string, o: GemmaScopeTranscoderOptions): Promise<SaeWeights> {
  const layer = /layer_(\d+)/.exec(o.path)?.[1];
  if (layer === undefined) throw new FormatError(npzFile, `cannot tell the layer: its folder ${o.path} has no layer_<n>`);
  const w = await readGemmaScope(npzFile, ALIASES);
  const c = w.config;
  c.dOut = c.dIn;
  c.hookName = `blocks.${layer}.ln2.hook_normalized`;
  c.hookNameOut = `blocks.${layer}.hook_mlp_out`;
  if (o.modelName !== undefined) c.modelName = o.modelName;
  c.metadata = { ...c.metadata, conversion_func: 'gemma_2_transcoder', dataset_path: 'monology/pile-uncopyrighted', context_size: 1024, prepend_bos: true };
  return w;
}
