// Building blocks for the bf16-screen tests (test/screen.test.ts): W_enc column access in either
// layout, duplicated / perturbed columns, env overrides, and a comparison of two encodes of the
// same rows (screened vs plain fp32, or a scaled copy vs the original) that demands equal sets
// wherever the float64 reference says the top-k is decided by more than rounding.
import type { SparseCodes } from '../../src/codes.js';
import type { Sae } from '../../src/sae.js';
import { Rng, syntheticSae } from '../../src/synthetic.js';
import type { Normalization, SaeWeights } from '../../src/types.js';
import type { ReferenceRow } from './reference.js';

/** W_enc[i, j] (input dim i, latent j) whatever the stored layout. */
export function getW(w: SaeWeights, i: number, j: number): number {
  const { dIn, dSae } = w.config;
  return w.encTransposed ? w.W_enc[j * dIn + i]! : w.W_enc[i * dSae + j]!;
}

export function setW(w: SaeWeights, i: number, j: number, v: number): void {
  const { dIn, dSae } = w.config;
  if (w.encTransposed) w.W_enc[j * dIn + i] = v;
  else w.W_enc[i * dSae + j] = v;
}

export function column(w: SaeWeights, j: number): Float64Array {
  return Float64Array.from({ length: w.config.dIn }, (_, i) => getW(w, i, j));
}

/** Multiplies latent j's encoder column by s. */
export function scaleColumn(w: SaeWeights, j: number, s: number): void {
  for (let i = 0; i < w.config.dIn; i++) setW(w, i, j, getW(w, i, j) * s);
}

/**
 * Makes latent `to` a copy of latent `from` (column and bias), each element perturbed by
 * rel * ||column|| / sqrt(d_in) * N(0, 1): rel 0 is an exact duplicate.
 */
export function copyLatent(w: SaeWeights, from: number, to: number, rel: number, rng: Rng): void {
  const col = column(w, from);
  const norm = Math.sqrt(col.reduce((s, v) => s + v * v, 0));
  const step = (rel * norm) / Math.sqrt(w.config.dIn);
  for (let i = 0; i < w.config.dIn; i++) setW(w, i, to, col[i]! + (rel > 0 ? step * rng.normal() : 0));
  w.b_enc[to] = w.b_enc[from]!;
}

export interface TopkOptions {
  dIn: number;
  dSae: number;
  k: number;
  seed: number;
  norm?: Normalization;
  applyBDec?: boolean;
  transposed?: boolean;
  /** b_enc ~ biasScale * N(0, 1) (default 0.2, so some latents are positive without input). */
  biasScale?: number;
}

/** A synthetic topk SAE with spread encoder biases. */
export function topkSae(o: TopkOptions): SaeWeights {
  const w = syntheticSae({
    dIn: o.dIn,
    dSae: o.dSae,
    architecture: 'topk',
    k: o.k,
    normalizeActivations: o.norm ?? 'none',
    applyBDecToInput: o.applyBDec ?? true,
    encTransposed: o.transposed ?? false,
    seed: o.seed,
  });
  const rng = new Rng(o.seed + 7);
  const bs = o.biasScale ?? 0.2;
  for (let j = 0; j < o.dSae; j++) w.b_enc[j] = bs * rng.normal();
  return w;
}

/** Rows of i.i.d. N(0, scale^2) entries. */
export function gaussianRows(rows: number, dIn: number, rng: Rng, scale = 1): Float32Array {
  return rng.fillNormal(new Float32Array(rows * dIn), scale);
}

/** Runs fn with the given environment variables set (undefined: unset), restoring them after. */
export async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const [key, v] of Object.entries(vars)) {
    saved[key] = process.env[key];
    if (v === undefined) delete process.env[key];
    else process.env[key] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [key, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[key];
      else process.env[key] = v;
    }
  }
}

export interface StatsDelta {
  rows: number;
  candidates: number;
  fallbacks: number;
}

/** Encodes x and returns the codes with the growth of sae.screenStats during the call. */
export async function encodeCounting(sae: Sae, x: Float32Array): Promise<{ codes: SparseCodes; delta: StatsDelta }> {
  const before = sae.screenStats;
  const codes = await sae.encode(x);
  const after = sae.screenStats;
  return {
    codes,
    delta: {
      rows: after.rows - before.rows,
      candidates: after.candidates - before.candidates,
      fallbacks: after.fallbacks - before.fallbacks,
    },
  };
}

/** Row r of codes as parallel index / value arrays. */
export function codesRowOf(codes: SparseCodes, r: number): { indices: number[]; values: number[] } {
  const b = codes.indptr[r]!;
  const e = codes.indptr[r + 1]!;
  return { indices: Array.from(codes.indices.subarray(b, e)), values: Array.from(codes.values.subarray(b, e)) };
}

/**
 * Whether the reference row's selection is decided by more than rounding: the k-th and
 * (k+1)-th values are more than `rel` (relative) apart, and no top-k member is within `rel` of
 * the relu boundary 0 relative to its own magnitude (sum |x'_i w_ij| + |b_j|, which the
 * reference's tolerance is proportional to), each beyond the fp32 tolerance too. Rows where
 * it is not are where two exact encodes may pick different sets.
 */
export function decidedRow(R: ReferenceRow, k: number, dIn: number, rel = 1e-4): boolean {
  const pre = R.pre;
  const order = Array.from(pre.keys()).sort((a, b) => pre[b]! - pre[a]! || a - b);
  const top = order.slice(0, k);
  const kth = pre[top[top.length - 1]!]!;
  const perMagnitude = 2 * (dIn + 4) * 2 ** -24; // tol_j = perMagnitude * magnitude_j + 1e-30
  for (const j of top) if (Math.abs(pre[j]!) <= (rel / perMagnitude + 2) * R.tol[j]!) return false;
  if (k < pre.length && kth > 0) {
    const nj = order[k]!;
    const next = pre[nj]!;
    if (kth - next <= rel * Math.max(Math.abs(kth), Math.abs(next)) + R.tol[nj]! + R.kthTol) return false;
  }
  return true;
}

/**
 * Compares codes `b` with codes `a` row by row (b's values divided by scale[r] first, for a
 * scaled copy of the rows): on rows the reference `ref` (of a's rows) decides, equal index
 * sets; on every row, values of common indices within 1e-5 relative (plus the fp32 tolerance).
 * Returns problems (empty = pass), at most 20.
 */
export function compareEncodes(
  ref: ReferenceRow[],
  k: number,
  dIn: number,
  a: SparseCodes,
  b: SparseCodes,
  scale?: (r: number) => number,
): { problems: string[]; decided: number } {
  const problems: string[] = [];
  let decided = 0;
  for (let r = 0; r < ref.length && problems.length < 20; r++) {
    const R = ref[r]!;
    const A = codesRowOf(a, r);
    const B = codesRowOf(b, r);
    const s = scale ? scale(r) : 1;
    if (decidedRow(R, k, dIn)) {
      decided++;
      if (A.indices.join() !== B.indices.join()) problems.push(`row ${r}: index sets differ: [${A.indices}] vs [${B.indices}]`);
    }
    const bv = new Map(B.indices.map((j, t) => [j, B.values[t]! / s]));
    A.indices.forEach((j, t) => {
      const other = bv.get(j);
      if (other === undefined) return;
      const v = A.values[t]!;
      if (!(Math.abs(v - other) <= 1e-5 * Math.abs(R.pre[j]!) + R.tol[j]!))
        problems.push(`row ${r}: latent ${j} value ${v} vs ${other} (reference ${R.pre[j]})`);
    });
  }
  return { problems, decided };
}

/**
 * The rows as the CPU kernels see them (x' = normalized x minus b_dec, computed the way
 * pack_row does: (x - mean) * scale in double rounded once to fp32, then - b_dec in fp32), with
 * an SAE that takes x' as is (no normalization, no b_dec). Tests of the SELECTION judge
 * layer_norm rows against the float64 reference of this x' (pack_row used to subtract the mean
 * in fp32, an error ~u |mean| / std that the reference's tolerance could not absorb; it now
 * normalizes in double, and this keeps the judgement strict).
 */
export function kernelInput(w: SaeWeights, x: Float32Array): { w: SaeWeights; x: Float32Array } {
  const { dIn, normalizeActivations: norm, applyBDecToInput } = w.config;
  const f = Math.fround;
  const rows = x.length / dIn;
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    const xr = x.subarray(r * dIn, (r + 1) * dIn);
    let sum = 0;
    let sumsq = 0;
    for (let i = 0; i < dIn; i++) {
      sum += xr[i]!;
      sumsq += xr[i]! * xr[i]!;
    }
    let shift = 0;
    let scale = 1;
    if (norm === 'constant_norm_rescale') {
      const n = Math.sqrt(sumsq);
      scale = n > 0 ? Math.sqrt(dIn) / n : 1;
    } else if (norm === 'layer_norm') {
      const mean = sum / dIn;
      let ss = 0;
      for (let i = 0; i < dIn; i++) ss += (xr[i]! - mean) ** 2;
      const std = dIn > 1 ? Math.sqrt(ss / (dIn - 1)) : 0;
      shift = mean;
      scale = 1 / (std + 1e-5);
    }
    for (let i = 0; i < dIn; i++) {
      let v = norm === 'none' || norm === 'expected_average_only_in' ? xr[i]! : f((xr[i]! - shift) * scale);
      if (applyBDecToInput) v = f(v - w.b_dec[i]!);
      out[r * dIn + i] = v;
    }
  }
  const config = { ...w.config, normalizeActivations: 'none' as const, applyBDecToInput: false };
  return { w: { ...w, config }, x: out };
}

/** codes without rowScale / rowShift (to judge them against kernelInput's reference). */
export function withoutRowStats(codes: SparseCodes): SparseCodes {
  const { rowScale: _s, rowShift: _t, ...rest } = codes;
  return rest;
}
