// Gemma Scope 2: one folder per SAE or transcoder, e.g. resid_post/layer_22_width_16k_l0_medium/
// or transcoder/layer_9_width_65k_l0_big/, holding params.safetensors (w_enc [d_in, d_sae],
// w_dec [d_sae, d_out], b_enc, b_dec [d_out], threshold, and for "affine" transcoders
// affine_skip_connection) and, optionally, config.json (architecture "jump_relu", model_name,
// hf_hook_point_in / hf_hook_point_out, affine_connection).
//
// JumpReLU, b_dec not subtracted from the input (as Gemma Scope 1). The skip term: Google's own
// loading code computes `x @ affine_skip_connection`, so the tensor is [d_in, d_out] and
// saekit's W_skip ([d_out, d_in], SAELens's x @ W_skip^T) is its transpose. (SAELens's generic
// skip path multiplies by the transposed tensor; for these square matrices that silently gives
// another answer, so the orientation here follows the publisher.)

import { basename, dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { SafetensorsReader } from './safetensors.js';
import { floatDtypeName, optionalString, readJsonObject, readWeight, type Json } from './saeTensors.js';

export const GEMMA_SCOPE2_PARAMS = 'params.safetensors';

/** TransformerLens names for the site folders whose hook is certain. */
const SITE_HOOKS: Readonly<Record<string, string>> = { resid_post: 'hook_resid_post', mlp_out: 'hook_mlp_out' };

export async function readGemmaScope2(dir: string): Promise<SaeWeights> {
  const file = join(dir, GEMMA_SCOPE2_PARAMS);
  const cfgFile = join(dir, 'config.json');
  const cfg: Json = existsSync(cfgFile) ? await readJsonObject(cfgFile) : {};
  const arch = cfg['architecture'] ?? 'jump_relu';
  if (arch !== 'jump_relu') throw new FormatError(cfgFile, `architecture '${String(arch)}': Gemma Scope 2 releases are jump_relu`);
  const reader = await SafetensorsReader.open(file);
  try {
    for (const name of ['w_enc', 'w_dec', 'b_enc', 'b_dec', 'threshold']) {
      if (!reader.tensors.has(name)) throw new FormatError(file, `no tensor '${name}' (tensors: ${[...reader.tensors.keys()].join(', ') || 'none'})`);
    }
    const enc = reader.info('w_enc').shape;
    const dec = reader.info('w_dec').shape;
    if (enc.length !== 2 || dec.length !== 2 || dec[0] !== enc[1]) {
      throw new FormatError(file, `w_enc [${enc.join(', ')}] and w_dec [${dec.join(', ')}] are not [d_in, d_sae] and [d_sae, d_out]${dec.length === 3 ? ' (a cross-layer transcoder: not supported yet)' : ''}`);
    }
    const [dIn, dSae] = enc as [number, number];
    const dOut = dec[1]!;
    const affine = reader.tensors.has('affine_skip_connection');
    const because = `w_enc is [d_in ${dIn}, d_sae ${dSae}], w_dec [d_sae, d_out ${dOut}]`;
    // The folder names the site (resid_post, mlp_out, transcoder, ...) and the layer.
    const site = basename(dirname(dir));
    const layer = /^layer_(\d+)_/.exec(basename(dir))?.[1];
    const transcoder = affine || dOut !== dIn || site === 'transcoder' || site.startsWith('transcoder');
    const hook = layer !== undefined && Object.hasOwn(SITE_HOOKS, site) && !transcoder ? `blocks.${layer}.${SITE_HOOKS[site]}` : undefined;
    const metadata: Json = { ...cfg, site };
    delete metadata['architecture'];
    const modelName = optionalString(cfg, 'model_name');
    const weights: SaeWeights = {
      config: {
        architecture: 'jumprelu',
        dIn,
        dSae,
        ...(transcoder && { dOut }),
        applyBDecToInput: false,
        normalizeActivations: 'none',
        dtype: floatDtypeName(reader, 'w_dec'),
        format: 'gemmascope',
        ...(hook !== undefined && { hookName: hook }),
        ...(transcoder && layer !== undefined && { hookNameOut: `blocks.${layer}.hook_mlp_out` }),
        ...(modelName !== undefined && { modelName }),
        metadata,
      },
      W_enc: await readWeight(reader, 'w_enc', [dIn, dSae], because),
      encTransposed: false,
      b_enc: await readWeight(reader, 'b_enc', [dSae], because),
      W_dec: await readWeight(reader, 'w_dec', [dSae, dOut], because),
      b_dec: await readWeight(reader, 'b_dec', [dOut], because),
      threshold: await readWeight(reader, 'threshold', [dSae], because),
    };
    if (affine) {
      const a = await readWeight(reader, 'affine_skip_connection', [dIn, dOut], because);
      const t = new Float32Array(dOut * dIn);
      for (let i = 0; i < dIn; i++) for (let o = 0; o < dOut; o++) t[o * dIn + i] = a[i * dOut + o]!;
      weights.W_skip = t;
      metadata['affine_skip_connection'] = 'x @ affine_skip_connection ([d_in, d_out], as Google computes it), stored transposed as W_skip';
    }
    return weights;
  } finally {
    await reader.close();
  }
}
