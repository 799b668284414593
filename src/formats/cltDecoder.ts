// One layer of a cross-layer transcoder (CLT) as a transcoder saekit runs. A CLT's layer-L
// features are read by one encoder (at layer L) and written by one decoder per target layer
// (L and every later layer): the file holds them as one 3-d tensor [d_sae, targets, d_out].
// A single-decoder transcoder needs one [d_sae, d_out] matrix, so the caller picks:
//   'sum'  (default): the decoders summed over the target layers, as SAELens loads a CLT layer
//          (mntss_clt_layer_huggingface_loader and the Gemma Scope 2 CLT branch of its gemma_3
//          loader both do W_dec.sum(dim=1), warning that the result is for finding feature
//          activations, not for reconstruction: no single hook carries that sum);
//   T      (a layer number): the decoder to layer T alone, i.e. layer L's contribution to layer
//          T's output; the output hook becomes layer T's.
// The sum is taken in float64 and rounded once to float32.

import { FormatError, ValidationError, describe } from '../errors.js';
import { formatShape } from './elements.js';

/** Which decoder of a cross-layer transcoder layer to load: one target layer, or SAELens's sum over all of them. */
export type CltTarget = number | 'sum';

/** Options of the readers of SAE files that depend on the caller (today: cross-layer transcoders only). */
export interface ReadOptions {
  /** Cross-layer transcoders: the target layer whose decoder to load, or 'sum' (default, as SAELens). */
  cltTarget?: CltTarget;
}

export function checkCltTarget(target: unknown): CltTarget {
  if (target === undefined || target === 'sum') return 'sum';
  if (typeof target === 'number' && Number.isSafeInteger(target) && target >= 0) return target;
  throw new ValidationError(`Expected a layer number (an integer >= 0) or 'sum' for cltTarget but received ${describe(target)}`);
}

export interface CltSlice {
  /** [d_sae, d_out] */
  W_dec: Float32Array;
  /** The target layer chosen, or undefined for the sum. */
  targetLayer: number | undefined;
  /** For metadata: what W_dec is. */
  note: string;
}

/**
 * W_dec for TARGET from the CLT decoder DATA of shape [d_sae, n, d_out] (flat, row-major),
 * whose slot t is the decoder to layer FIRST + t. SOURCE is the encoder's layer: a single
 * target must be SOURCE or later. FILE and TENSOR name the tensor in errors.
 */
export function cltDecoder(file: string, tensor: string, data: Float32Array, shape: readonly number[], source: number, first: number, target: CltTarget): CltSlice {
  if (shape.length !== 3) throw new FormatError(file, `tensor '${tensor}' has shape ${formatShape(shape)}, expected [d_sae, target layers, d_out]`);
  const [dSae, n, dOut] = shape as [number, number, number];
  const last = first + n - 1;
  const what = `the decoders of layer ${source}'s features to layers ${first}..${last}`;
  const W_dec = new Float32Array(dSae * dOut);
  if (target === 'sum') {
    const acc = new Float64Array(dOut);
    for (let j = 0; j < dSae; j++) {
      acc.fill(0);
      const row = j * n * dOut;
      for (let t = 0; t < n; t++) for (let o = 0; o < dOut; o++) acc[o]! += data[row + t * dOut + o]!;
      for (let o = 0; o < dOut; o++) W_dec[j * dOut + o] = acc[o]!;
    }
    return { W_dec, targetLayer: undefined, note: `sum over target layers ${first}..${last} of ${tensor} ${formatShape(shape)} (as SAELens loads it: for feature activations, not reconstruction)` };
  }
  // Features write to their own layer and later ones: a slot before SOURCE (Gemma Scope 2 keeps
  // one per layer of the model, zero by causality) is not a target.
  const lo = Math.max(first, source);
  if (target < lo || target > last) {
    throw new ValidationError(`cltTarget ${target} is out of range for ${file}: tensor '${tensor}' has shape ${formatShape(shape)}, ${what}; give a layer in ${lo}..${last} or 'sum'`);
  }
  const t = target - first;
  for (let j = 0; j < dSae; j++) W_dec.set(data.subarray(j * n * dOut + t * dOut, j * n * dOut + (t + 1) * dOut), j * dOut);
  return { W_dec, targetLayer: target, note: `the decoder to layer ${target}: ${tensor}[:, ${t}, :] of ${formatShape(shape)}` };
}
