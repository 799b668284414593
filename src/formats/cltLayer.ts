// One layer of a circuit-tracer cross-layer transcoder (mntss's CLTs; SAELens conversion_func
// mntss_clt_layer_transcoder), read as a single-layer transcoder. The repository root holds,
// per layer L:
//   W_enc_L.safetensors: W_enc_L [d_sae, d_in] (stored transposed: encTransposed here, SAELens
//                        transposes), b_enc_L [d_sae], b_dec_L [d_out] (the output bias of
//                        layer L), and threshold_L [d_sae] when the CLT is JumpReLU;
//   W_dec_L.safetensors: W_dec_L [d_sae, n_layers - L, d_out], slot t = the decoder to layer L + t;
// and config.yaml: model_name, feature_input_hook, feature_output_hook (e.g. hook_resid_mid ->
// hook_mlp_out).
//
// As SAELens (get_mntss_clt_layer_config_from_hf / mntss_clt_layer_huggingface_loader): a
// "transcoder" (b_dec not subtracted from the input), hook blocks.L.<feature_input_hook> ->
// blocks.L.<feature_output_hook>, W_dec summed over the target layers by default (see
// cltDecoder.ts; `cltTarget: T` takes layer T's decoder instead and the output hook becomes
// blocks.T.<feature_output_hook>). Two choices where SAELens is silent or loses information:
//   - threshold_L: SAELens builds its state dict from the four tensors above and drops it,
//     running ReLU; circuit-tracer, which wrote these files, runs JumpReLU whenever it is
//     there. saekit follows the files' own library: jumprelu with that threshold (noted in
//     metadata).
//   - a single target T > L: b_dec_L belongs to layer L's output, and layer T's bias lives in
//     W_enc_T.safetensors (a whole encoder to fetch for one vector), so the slice is layer L's
//     contribution to layer T with b_dec = 0 (noted in metadata). T = L keeps b_dec_L.
// d_in comes from W_enc_L and d_out from W_dec_L (SAELens takes both from b_dec_L: equal for
// these CLTs, whose hooks are both d_model wide).

import { basename } from 'node:path';
import type { SaeWeights } from '../types.js';
import { FormatError } from '../errors.js';
import { cltDecoder, type CltTarget } from './cltDecoder.js';
import { formatShape } from './elements.js';
import { SafetensorsReader } from './safetensors.js';
import { floatDtypeName, optionalString, readWeight, type Json } from './saeTensors.js';
import { readYamlObject } from './yamlConfig.js';

export interface CltLayerFiles {
  /** config.yaml at the repository root. */
  config: string;
  /** W_enc_L.safetensors */
  encoder: string;
  /** W_dec_L.safetensors */
  decoder: string;
  layer: number;
}

/** A hook of config.yaml at LAYER: "hook_resid_mid" -> blocks.L.hook_resid_mid; a "{layer}" template is filled in. */
function hookAt(hook: string, layer: number): string {
  return hook.includes('{layer}') ? hook.replaceAll('{layer}', String(layer)) : `blocks.${layer}.${hook}`;
}

export async function readCltLayer(f: CltLayerFiles, target: CltTarget = 'sum'): Promise<SaeWeights> {
  const L = f.layer;
  const cfg = await readYamlObject(f.config);
  const need = (key: string): string => {
    const v = optionalString(cfg, key);
    if (v === undefined) throw new FormatError(f.config, `missing '${key}' (a string)`);
    return v;
  };
  const modelName = need('model_name');
  const inputHook = need('feature_input_hook');
  const outputHook = need('feature_output_hook');

  const enc = await SafetensorsReader.open(f.encoder);
  const dec = await SafetensorsReader.open(f.decoder).catch(async (e: unknown) => {
    await enc.close();
    throw e;
  });
  try {
    const [wEnc, bEnc, bDec, thr, wDec] = [`W_enc_${L}`, `b_enc_${L}`, `b_dec_${L}`, `threshold_${L}`, `W_dec_${L}`];
    const known = [wEnc, bEnc, bDec, thr];
    const extra = [...enc.tensors.keys()].filter((k) => !known.includes(k));
    if (extra.length > 0) throw new FormatError(f.encoder, `holds tensors ${extra.map((k) => `'${k}'`).join(', ')} besides ${known.join(', ')}: not a circuit-tracer CLT layer-${L} encoder file`);
    const encShape = enc.info(wEnc).shape;
    if (encShape.length !== 2) throw new FormatError(f.encoder, `tensor '${wEnc}' has shape ${formatShape(encShape)}, expected [d_sae, d_in]`);
    const [dSae, dIn] = encShape as [number, number];
    const decShape = dec.info(wDec).shape;
    if (decShape.length !== 3 || decShape[0] !== dSae) {
      throw new FormatError(f.decoder, `tensor '${wDec}' has shape ${formatShape(decShape)} but ${basename(f.encoder)} has d_sae ${dSae} => expected [${dSae}, target layers, d_out]`);
    }
    const dOut = decShape[2]!;
    const because = `${wEnc} is [d_sae ${dSae}, d_in ${dIn}], ${wDec} [d_sae, ${decShape[1]} target layers, d_out ${dOut}]`;
    const slice = cltDecoder(f.decoder, wDec, await readWeight(dec, wDec, decShape, because), decShape, L, L, target);
    const out = slice.targetLayer ?? L;
    const jump = enc.tensors.has(thr);
    const metadata: Json = {
      conversion_func: 'mntss_clt_layer_transcoder',
      clt_layer: L,
      clt_target: slice.targetLayer ?? 'sum',
      clt_target_layers: [L, L + decShape[1]! - 1],
      clt_decoder: slice.note,
      model_from_pretrained_kwargs: { fold_ln: false },
    };
    if (jump) metadata['threshold_note'] = `jumprelu with ${thr} (circuit-tracer, which wrote the file, runs JumpReLU when it is present; SAELens's loader drops it and runs ReLU)`;
    let b_dec = await readWeight(enc, bDec, [dOut], because);
    if (out !== L) {
      b_dec = new Float32Array(dOut);
      metadata['b_dec_note'] = `zeros: ${bDec} is layer ${L}'s output bias; layer ${out}'s is in W_enc_${out}.safetensors (this is layer ${L}'s contribution to layer ${out})`;
    }
    const weights: SaeWeights = {
      config: {
        architecture: jump ? 'jumprelu' : 'standard',
        dIn,
        dSae,
        dOut,
        applyBDecToInput: false,
        normalizeActivations: 'none',
        dtype: floatDtypeName(enc, wEnc),
        format: 'circuit-tracer',
        hookName: hookAt(inputHook, L),
        hookNameOut: hookAt(outputHook, out),
        modelName,
        metadata,
      },
      W_enc: await readWeight(enc, wEnc, [dSae, dIn], because),
      encTransposed: true,
      b_enc: await readWeight(enc, bEnc, [dSae], because),
      W_dec: slice.W_dec,
      b_dec,
    };
    if (jump) weights.threshold = await readWeight(enc, thr, [dSae], because);
    return weights;
  } finally {
    await enc.close();
    await dec.close();
  }
}
