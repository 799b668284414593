// EleutherAI sparsify directories: <run>/<hookpoint>/{cfg.json, sae.safetensors}.
//
// sparsify SAEs are TopK: encode is relu(x @ encoder.weight^T + encoder.bias) after
// subtracting b_dec (not for transcoders), keep the top k; decode adds b_dec. encoder.weight
// is [d_sae, d_in], transposed relative to SAELens' W_enc, and is kept that way
// (encTransposed) rather than copied. W_dec is already [d_sae, d_in]; it must not be
// transposed (SAELens' converter does, wrongly).

import { basename, join } from 'node:path';
import type { SaeConfig, SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { SafetensorsReader } from './safetensors.js';
import { floatDtypeName, optionalBool, optionalCount, readJsonObject, readWeight, requiredCount, without } from './saeTensors.js';

export const SPARSIFY_CFG = 'cfg.json';
export const SPARSIFY_WEIGHTS = 'sae.safetensors';

const CONSUMED = ['activation', 'k', 'd_in', 'num_latents', 'skip_connection'];

export async function readSparsify(dir: string): Promise<SaeWeights> {
  const cfgFile = join(dir, SPARSIFY_CFG);
  const cfg = await readJsonObject(cfgFile);
  const activation = cfg['activation'] ?? 'topk';
  if (activation !== 'topk') {
    throw new FormatError(cfgFile, `unsupported activation '${String(activation)}' (saekit runs sparsify's topk SAEs)`);
  }
  // skip_connection: a W_skip [d_in, d_in] whose x @ W_skip^T joins the output (sparsify's
  // forward), which Sae.forward adds.
  const skip = optionalBool(cfgFile, cfg, 'skip_connection', false);
  const k = requiredCount(cfgFile, cfg, 'k');
  const transcode = optionalBool(cfgFile, cfg, 'transcode', false);

  const reader = await SafetensorsReader.open(join(dir, SPARSIFY_WEIGHTS));
  try {
    if (reader.tensors.has('W_skip') && !skip) throw new FormatError(reader.file, `has a 'W_skip' tensor but ${SPARSIFY_CFG} says skip_connection false`);
    // d_in may be absent from older cfg.json files; the encoder's shape then tells it.
    const encShape = reader.info('encoder.weight').shape;
    const dIn = optionalCount(cfgFile, cfg, 'd_in') ?? encShape[1];
    const expansion = optionalCount(cfgFile, cfg, 'expansion_factor');
    const numLatents = cfg['num_latents'] === 0 ? undefined : optionalCount(cfgFile, cfg, 'num_latents');
    const dSae = numLatents ?? (dIn !== undefined && expansion !== undefined ? dIn * expansion : encShape[0]);
    if (dIn === undefined || dSae === undefined) {
      throw new FormatError(reader.file, `tensor 'encoder.weight' has shape [${encShape.join(', ')}], expected [d_sae, d_in]`);
    }
    if (k > dSae) throw new FormatError(cfgFile, `k ${k} is larger than the number of latents ${dSae}`);
    const because = `${SPARSIFY_CFG} gives d_in ${dIn}, num_latents ${dSae}`;
    const config: SaeConfig = {
      architecture: 'topk',
      dIn,
      dSae,
      k,
      applyBDecToInput: !transcode,
      normalizeActivations: 'none',
      dtype: floatDtypeName(reader, 'W_dec'),
      format: 'sparsify',
      // sparsify names the directory after the hookpoint (a module path such as layers.10).
      hookName: basename(dir),
      // A sparsify transcoder predicts its module's output (d_out = d_in).
      ...(transcode && { dOut: dIn }),
      metadata: without(cfg, CONSUMED),
    };
    const weights: SaeWeights = {
      config,
      W_enc: await readWeight(reader, 'encoder.weight', [dSae, dIn], because),
      encTransposed: true,
      b_enc: await readWeight(reader, 'encoder.bias', [dSae], because),
      W_dec: await readWeight(reader, 'W_dec', [dSae, dIn], because),
      b_dec: await readWeight(reader, 'b_dec', [dIn], because),
    };
    if (skip) weights.W_skip = await readWeight(reader, 'W_skip', [dIn, dIn], because);
    return weights;
  } finally {
    await reader.close();
  }
}
