// Initialization as in Gao et al. 2024 / SAELens' TopK training: random unit decoder rows
// (norm 0.1 for standard SAEs, whose decoder rows are free),
// W_enc = W_dec^T, b_enc = 0, b_dec at the data's center (mean or geometric median of a first
// sample), and the expected_average_only_in input scale sqrt(d_in) / mean ||x||.
import { ValidationError } from '../errors.js';
import { Rng } from '../synthetic.js';
import type { TrainParams } from './trainer.js';

export type BDecInit = 'geometric_median' | 'mean' | 'zeros';

/** sqrt(d_in) / mean ||x|| over the rows of a sample (1 when every row is zero). */
export function expectedAverageScale(sample: Float32Array, dIn: number): number {
  const rows = sample.length / dIn;
  let sum = 0;
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += sample[r * dIn + i]! ** 2;
    sum += Math.sqrt(s);
  }
  const mean = rows > 0 ? sum / rows : 0;
  return mean > 0 ? Math.sqrt(dIn) / mean : 1;
}

/** Column means of [rows, dIn]. */
export function columnMean(sample: Float32Array, dIn: number): Float64Array {
  const rows = sample.length / dIn;
  const m = new Float64Array(dIn);
  for (let r = 0; r < rows; r++) for (let i = 0; i < dIn; i++) m[i]! += sample[r * dIn + i]!;
  for (let i = 0; i < dIn; i++) m[i]! /= Math.max(1, rows);
  return m;
}

/**
 * Geometric median (the point minimizing the sum of Euclidean distances) by Weiszfeld's
 * iteration from the mean, with the usual guard for an iterate landing on a data point.
 * Robust to the outlier rows residual streams have (e.g. the BOS position).
 */
export function geometricMedian(sample: Float32Array, dIn: number, maxIter = 100, tol = 1e-7): Float64Array {
  const rows = sample.length / dIn;
  let y = columnMean(sample, dIn);
  for (let it = 0; it < maxIter; it++) {
    const next = new Float64Array(dIn);
    let wsum = 0;
    for (let r = 0; r < rows; r++) {
      let d2 = 0;
      for (let i = 0; i < dIn; i++) d2 += (sample[r * dIn + i]! - y[i]!) ** 2;
      const w = 1 / Math.max(Math.sqrt(d2), 1e-12);
      wsum += w;
      for (let i = 0; i < dIn; i++) next[i]! += w * sample[r * dIn + i]!;
    }
    let move = 0;
    let norm = 0;
    for (let i = 0; i < dIn; i++) {
      next[i]! /= wsum;
      move += (next[i]! - y[i]!) ** 2;
      norm += next[i]! ** 2;
    }
    y = next;
    if (Math.sqrt(move) <= tol * Math.max(1, Math.sqrt(norm))) break;
  }
  return y;
}

export interface InitOptions {
  dIn: number;
  dSae: number;
  seed: number;
  bDecInit: BDecInit;
  /** Rows for b_dec's initialization, already multiplied by the input scale. */
  sample?: Float32Array;
  /** Norm of the initial decoder rows (1; SAELens starts standard SAEs at 0.1). */
  decoderNorm?: number;
  /** jumprelu: every latent's initial threshold (log_threshold = log of it). */
  initThreshold?: number;
  /**
   * Transcoders: the output width. The decoder is [dSae, dOut] and cannot be tied to the
   * encoder, so the encoder gets its own random unit columns; b_dec starts at the center of
   * targetSample (the target rows, already scaled), and a skip term at zero (as SAELens).
   */
  dOut?: number;
  targetSample?: Float32Array;
  skip?: boolean;
}

/** [rows, width] rows of random directions with norm `norm` (never a zero row). */
function randomRows(rng: Rng, rows: number, width: number, norm: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let j = 0; j < rows; j++) {
    let sq = 0;
    do {
      sq = 0;
      for (let i = 0; i < width; i++) {
        const v = rng.normal();
        out[j * width + i] = v;
        sq += v * v;
      }
    } while (sq === 0);
    const inv = norm / Math.sqrt(sq);
    for (let i = 0; i < width; i++) out[j * width + i]! *= inv;
  }
  return out;
}

export function initParams(o: InitOptions): TrainParams {
  const { dIn, dSae } = o;
  const dOut = o.dOut ?? dIn;
  const transcoder = o.dOut !== undefined;
  const rng = new Rng(o.seed);
  const W_dec = randomRows(rng, dSae, dOut, o.decoderNorm ?? 1);
  // SAEs tie W_enc = W_dec^T; a transcoder's encoder gets its own unit directions.
  const encRows = transcoder ? randomRows(rng, dSae, dIn, 1) : W_dec;
  const W_enc = new Float32Array(dIn * dSae);
  for (let j = 0; j < dSae; j++) for (let i = 0; i < dIn; i++) W_enc[i * dSae + j] = encRows[j * dIn + i]!;
  const b_dec = new Float32Array(dOut);
  if (o.bDecInit !== 'zeros') {
    const center = transcoder ? o.targetSample : o.sample;
    if (!center || center.length < dOut) throw new ValidationError(`b_dec init '${o.bDecInit}' needs a ${transcoder ? 'target ' : ''}sample of at least one row`);
    b_dec.set(o.bDecInit === 'mean' ? columnMean(center, dOut) : geometricMedian(center, dOut));
  }
  const p: TrainParams = { W_enc, b_enc: new Float32Array(dSae), W_dec, b_dec };
  if (o.initThreshold !== undefined) p.log_threshold = new Float32Array(dSae).fill(Math.log(o.initThreshold));
  if (o.skip) p.W_skip = new Float32Array(dOut * dIn);
  return p;
}
