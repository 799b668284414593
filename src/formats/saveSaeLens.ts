// Writing an SAE as a SAELens v6 directory (cfg.json + sae_weights.safetensors, optionally
// sparsity.safetensors), loadable by SAELens' SAE.load_from_disk and by readSaeDir.
//
// The directory appears whole or not at all: files are first written into a staging
// directory next to the target, then that directory is renamed into place (target absent) or
// its files are renamed over the target's (target present). Either way no reader ever sees a
// cfg.json whose weights are half-written.

import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isTranscoder, type SaeWeights } from '../types.js';
import { ValidationError, describe, expected } from '../errors.js';
import { f32ToBf16Array, f32ToF16Array } from './float16.js';
import { tempPathFor, writeAt, writeFileAtomic } from './fileIo.js';
import { SAELENS_CFG, SAELENS_SPARSITY, SAELENS_WEIGHTS } from './saeLens.js';
import type { SafetensorsDtype } from './safetensors.js';
import { writeSafetensors, type SafetensorsTensorData } from './safetensorsWriter.js';

export type SaveDtype = 'float32' | 'float16' | 'bfloat16';

export interface SaveSaeLensOptions {
  /** On-disk dtype of the weights (default float32). Narrowing rounds to nearest even. */
  dtype?: SaveDtype;
  /** [d_sae] log10 firing frequencies, written as sparsity.safetensors. */
  sparsity?: Float32Array;
}

/** The format generation written: SAELens reads cfg.json as v6 only when this is >= 6. */
const SAELENS_FORMAT_VERSION = '6.0.0';

const DTYPES: Record<SaveDtype, SafetensorsDtype> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

function checkLength(name: string, data: unknown, length: number): void {
  if (!(data instanceof Float32Array) || data.length !== length) throw expected(`Float32Array(${length})`, name, data);
}

function checkWeights(w: SaeWeights): void {
  const { architecture, dIn, dSae, k } = w.config;
  if (!['standard', 'topk', 'jumprelu'].includes(architecture)) throw expected('standard, topk or jumprelu', 'config.architecture', architecture);
  if (!Number.isSafeInteger(dIn) || dIn <= 0) throw expected('a positive integer', 'config.dIn', dIn);
  if (!Number.isSafeInteger(dSae) || dSae <= 0) throw expected('a positive integer', 'config.dSae', dSae);
  if (architecture === 'topk' && (!Number.isSafeInteger(k) || k! <= 0 || k! > dSae)) {
    throw expected(`an integer in [1, ${dSae}]`, 'config.k', k);
  }
  const dOut = w.config.dOut ?? dIn;
  if (!Number.isSafeInteger(dOut) || dOut <= 0) throw expected('a positive integer', 'config.dOut', dOut);
  checkLength('W_enc', w.W_enc, dIn * dSae);
  checkLength('W_dec', w.W_dec, dSae * dOut);
  checkLength('b_enc', w.b_enc, dSae);
  checkLength('b_dec', w.b_dec, dOut);
  if (architecture === 'jumprelu') checkLength('threshold', w.threshold, dSae);
  if (w.W_skip !== undefined) checkLength('W_skip', w.W_skip, dOut * dIn);
}

/** [rows, cols] -> [cols, rows], in tiles so both sides stay in cache. */
function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T) {
    for (let c0 = 0; c0 < cols; c0 += T) {
      const r1 = Math.min(r0 + T, rows);
      const c1 = Math.min(c0 + T, cols);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[r * cols + c]!;
      }
    }
  }
  return out;
}

function tensor(data: Float32Array, shape: number[], dtype: SaveDtype): SafetensorsTensorData {
  const st = DTYPES[dtype];
  if (dtype === 'float16') return { dtype: st, shape, data: f32ToF16Array(data) };
  if (dtype === 'bfloat16') return { dtype: st, shape, data: f32ToBf16Array(data) };
  return { dtype: st, shape, data };
}

function cfgJson(w: SaeWeights, dtype: SaveDtype): Record<string, unknown> {
  const c = w.config;
  const { reshape_activations: reshape, ...rest } = c.metadata;
  // Transcoders under SAELens's names (sae_lens/saes/transcoder.py), with d_out and hook_name_out.
  const skip = w.W_skip !== undefined;
  const transcoder = isTranscoder(c, skip);
  const architecture = !transcoder
    ? c.architecture
    : `${c.architecture === 'standard' ? '' : `${c.architecture}_`}${skip ? 'skip_' : ''}transcoder`; // topk_*: saekit's names (see saeLens.ts)
  const cfg: Record<string, unknown> = {
    architecture,
    d_in: c.dIn,
    ...(transcoder && { d_out: c.dOut ?? c.dIn }),
    d_sae: c.dSae,
    dtype,
    device: 'cpu',
    apply_b_dec_to_input: c.applyBDecToInput,
    normalize_activations: c.normalizeActivations,
    // hook_z SAEs (attention heads flattened) keep their reshape; everything else is plain.
    reshape_activations: reshape === 'hook_z' ? 'hook_z' : 'none',
  };
  if (c.architecture === 'topk') {
    cfg['k'] = c.k;
    cfg['rescale_acts_by_decoder_norm'] = false; // any rescale was folded in at load
  }
  cfg['metadata'] = {
    ...rest,
    ...(c.modelName !== undefined && { model_name: c.modelName }),
    ...(c.hookName !== undefined && { hook_name: c.hookName }),
    ...(c.hookNameOut !== undefined && { hook_name_out: c.hookNameOut }),
    sae_lens_version: SAELENS_FORMAT_VERSION,
  };
  return cfg;
}

async function pathKind(path: string): Promise<'directory' | 'other' | 'absent'> {
  try {
    return (await stat(path)).isDirectory() ? 'directory' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
}

/** Writes `weights` as a SAELens v6 directory at `dir` (created with its parents if needed). */
export async function saveSaeLens(dir: string, weights: SaeWeights, opts: SaveSaeLensOptions = {}): Promise<void> {
  checkWeights(weights);
  const dtype = opts.dtype ?? 'float32';
  if (!Object.hasOwn(DTYPES, dtype)) throw expected('float32, float16 or bfloat16', 'dtype', dtype);
  const { dIn, dSae } = weights.config;
  const dOut = weights.config.dOut ?? dIn;
  if (opts.sparsity !== undefined) checkLength('sparsity', opts.sparsity, dSae);
  if ((await pathKind(dir)) === 'other') {
    throw new ValidationError(`Expected a directory or a new path for the SAE output but received ${describe(dir)}, which is a file`);
  }

  const W_enc = weights.encTransposed ? transpose(weights.W_enc, dSae, dIn) : weights.W_enc;
  const tensors: Record<string, SafetensorsTensorData> = {
    W_enc: tensor(W_enc, [dIn, dSae], dtype),
    b_enc: tensor(weights.b_enc, [dSae], dtype),
    W_dec: tensor(weights.W_dec, [dSae, dOut], dtype),
    b_dec: tensor(weights.b_dec, [dOut], dtype),
  };
  if (weights.W_skip !== undefined) tensors['W_skip'] = tensor(weights.W_skip, [dOut, dIn], dtype);
  if (weights.config.architecture === 'jumprelu') tensors['threshold'] = tensor(weights.threshold!, [dSae], dtype);

  await mkdir(dirname(dir), { recursive: true });
  const staging = tempPathFor(dir);
  await mkdir(staging);
  try {
    await writeSafetensors(join(staging, SAELENS_WEIGHTS), tensors);
    if (opts.sparsity) await writeSafetensors(join(staging, SAELENS_SPARSITY), { sparsity: tensor(opts.sparsity, [dSae], 'float32') });
    const json = new TextEncoder().encode(`${JSON.stringify(cfgJson(weights, dtype), null, 2)}\n`);
    await writeFileAtomic(join(staging, SAELENS_CFG), (fh) => writeAt(fh, json, 0));
    if ((await pathKind(dir)) === 'absent') {
      await rename(staging, dir);
      return;
    }
    // Existing directory: weights first, cfg.json last; a stale sparsity file would lie.
    if (!opts.sparsity) await rm(join(dir, SAELENS_SPARSITY), { force: true });
    for (const name of await readdir(staging)) {
      if (name !== SAELENS_CFG) await rename(join(staging, name), join(dir, name));
    }
    await rename(join(staging, SAELENS_CFG), join(dir, SAELENS_CFG));
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

