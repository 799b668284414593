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
//
// Cross-layer transcoders (a `clt` folder; SAELens's gemma_3 loader keeps each layer in
// `{parent}/{name}.safetensors`, so a path to that file is read too): w_dec is
// [d_sae, n_layers, d_out], slot t = the decoder to layer t (Google's JumpReLUMultiLayerSAE
// stacks these per-layer files into [layers, d_sae, layers, d_out]; circuit-tracer's
// load_gemma_scope_2_clt keeps slots L.. of layer L). SAELens sums the slots (for feature
// activations only); `cltTarget: T` takes layer T's decoder instead, see cltDecoder.ts. b_dec
// and the affine skip belong to layer L's output: a target T != L drops both (noted in metadata).

import { basename, dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { cltDecoder, type CltSlice, type CltTarget } from './cltDecoder.js';
import { SafetensorsReader } from './safetensors.js';
import { floatDtypeName, optionalString, readJsonObject, readWeight, type Json } from './saeTensors.js';

export const GEMMA_SCOPE2_PARAMS = 'params.safetensors';

/** TransformerLens names for the site folders whose hook is certain. */
const SITE_HOOKS: Readonly<Record<string, string>> = { resid_post: 'hook_resid_post', mlp_out: 'hook_mlp_out' };

/** A path of a cross-layer transcoder: a `clt...` folder among its last three parts (SAELens: "clt" in the folder name). */
function isCltPath(path: string): boolean {
  return path.split(/[\\/]/).slice(-3).some((p) => p.startsWith('clt'));
}

/** PATH: the SAE's folder (holding params.safetensors), or a CLT layer's own .safetensors file. */
export async function readGemmaScope2(path: string, cltTarget: CltTarget = 'sum'): Promise<SaeWeights> {
  const isFile = path.endsWith('.safetensors');
  const dir = isFile ? path.slice(0, -'.safetensors'.length) : path;
  const file = isFile ? path : join(dir, GEMMA_SCOPE2_PARAMS);
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
    const clt = dec.length === 3 && isCltPath(path);
    if (enc.length !== 2 || dec.length !== (clt ? 3 : 2) || dec[0] !== enc[1]) {
      throw new FormatError(file, `w_enc [${enc.join(', ')}] and w_dec [${dec.join(', ')}] are not [d_in, d_sae] and [d_sae, d_out]${dec.length === 3 ? ' (a cross-layer transcoder: saekit reads those from a clt folder, as SAELens)' : ''}`);
    }
    const [dIn, dSae] = enc as [number, number];
    const dOut = dec[dec.length - 1]!;
    let affine = reader.tensors.has('affine_skip_connection');
    const because = `w_enc is [d_in ${dIn}, d_sae ${dSae}], w_dec [d_sae, ${clt ? `${dec[1]} target layers, ` : ''}d_out ${dOut}]`;
    // The folder names the site (resid_post, mlp_out, transcoder, ...) and the layer.
    const site = clt ? 'clt' : basename(dirname(dir));
    const layer = (clt ? /layer_(\d+)/ : /^layer_(\d+)_/).exec(basename(dir))?.[1];
    const transcoder = clt || affine || dOut !== dIn || site === 'transcoder' || site.startsWith('transcoder');
    const hook = layer !== undefined && Object.hasOwn(SITE_HOOKS, site) && !transcoder ? `blocks.${layer}.${SITE_HOOKS[site]}` : undefined;
    const metadata: Json = { ...cfg, site };
    delete metadata['architecture'];
    let slice: CltSlice | undefined;
    let otherTarget = false; // a CLT slice to a later layer: layer L's own b_dec and skip do not apply
    if (clt) {
      if (layer === undefined) throw new FormatError(file, `a cross-layer transcoder file, but its name ${basename(dir)} has no layer_<n> to say which layer it is`);
      const L = Number(layer);
      if (L >= dec[1]!) throw new FormatError(file, `w_dec [${dec.join(', ')}] has decoders to ${dec[1]} layers, but the file is layer ${L}'s`);
      slice = cltDecoder(file, 'w_dec', await readWeight(reader, 'w_dec', dec, because), dec, L, 0, cltTarget);
      Object.assign(metadata, { clt_layer: L, clt_target: slice.targetLayer ?? 'sum', clt_target_layers: [0, dec[1]! - 1], clt_decoder: slice.note });
      if (slice.targetLayer !== undefined && slice.targetLayer !== L) {
        otherTarget = true;
        metadata['b_dec_note'] = `zeros: b_dec is layer ${L}'s output bias (this is layer ${L}'s contribution to layer ${slice.targetLayer})`;
        if (affine) metadata['affine_skip_note'] = `dropped: affine_skip_connection writes layer ${L}'s output only`;
        affine = false;
      }
    }
    const outLayer = slice?.targetLayer ?? (layer !== undefined ? Number(layer) : undefined);
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
        ...(transcoder && outLayer !== undefined && { hookNameOut: `blocks.${outLayer}.hook_mlp_out` }),
        ...(modelName !== undefined && { modelName }),
        metadata,
      },
      W_enc: await readWeight(reader, 'w_enc', [dIn, dSae], because),
      encTransposed: false,
      b_enc: await readWeight(reader, 'b_enc', [dSae], because),
      W_dec: slice?.W_dec ?? (await readWeight(reader, 'w_dec', [dSae, dOut], because)),
      b_dec: otherTarget ? new Float32Array(dOut) : await readWeight(reader, 'b_dec', [dOut], because),
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
