// Deterministic synthetic SAEs and activations: the embedded default for `saekit demo`, the
// benchmark and the tests (no network, no model). Activations are sparse non-negative
// combinations of the SAE's own decoder directions plus noise, so a good encode/decode
// round trip has a small, meaningful reconstruction error.
import type { Architecture, Normalization, SaeWeights } from './types.js';

/** xoshiro128** seeded by splitmix32: fast, reproducible across platforms. */
export class Rng {
  #s = new Uint32Array(4);

  constructor(seed = 1) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.#s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** Uniform 32-bit integer. */
  u32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.u32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }

  fillNormal(a: Float32Array, scale = 1): Float32Array {
    for (let i = 0; i < a.length; i++) a[i] = this.normal() * scale;
    return a;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export interface SyntheticSaeOptions {
  dIn: number;
  dSae: number;
  architecture?: Architecture;
  k?: number;
  normalizeActivations?: Normalization;
  applyBDecToInput?: boolean;
  /** Store W_enc as [d_sae, d_in] (sparsify layout). */
  encTransposed?: boolean;
  seed?: number;
}

/**
 * A random SAE shaped like a trained one: unit-norm decoder rows, W_enc = W_dec^T, a small
 * negative encoder bias, a small b_dec, and (jumprelu) positive thresholds.
 */
export function syntheticSae(o: SyntheticSaeOptions): SaeWeights {
  const { dIn, dSae } = o;
  const rng = new Rng(o.seed ?? 1);
  const architecture = o.architecture ?? 'topk';
  const W_dec = rng.fillNormal(new Float32Array(dSae * dIn));
  for (let j = 0; j < dSae; j++) {
    let n = 0;
    for (let i = 0; i < dIn; i++) n += W_dec[j * dIn + i]! ** 2;
    const inv = 1 / Math.sqrt(n);
    for (let i = 0; i < dIn; i++) W_dec[j * dIn + i]! *= inv;
  }
  const W_enc = new Float32Array(dIn * dSae);
  for (let j = 0; j < dSae; j++)
    for (let i = 0; i < dIn; i++) {
      const v = W_dec[j * dIn + i]!;
      if (o.encTransposed) W_enc[j * dIn + i] = v;
      else W_enc[i * dSae + j] = v;
    }
  const b_enc = new Float32Array(dSae).map(() => -0.05 - 0.05 * rng.uniform());
  const b_dec = rng.fillNormal(new Float32Array(dIn), 0.05);
  const weights: SaeWeights = {
    config: {
      architecture,
      dIn,
      dSae,
      applyBDecToInput: o.applyBDecToInput ?? true,
      normalizeActivations: o.normalizeActivations ?? 'none',
      dtype: 'float32',
      format: 'generated',
      metadata: { generator: 'saekit synthetic', seed: o.seed ?? 1 },
    },
    W_enc,
    encTransposed: o.encTransposed ?? false,
    b_enc,
    W_dec,
    b_dec,
  };
  if (architecture === 'topk') weights.config.k = o.k ?? Math.min(32, dSae);
  if (architecture === 'jumprelu') weights.threshold = new Float32Array(dSae).map(() => 0.1 * rng.uniform());
  return weights;
}

/**
 * rows x dIn activations: each row b_dec + sum of `active` random decoder rows with
 * exponential-ish positive weights, plus Gaussian noise of relative size `noise`.
 */
export function syntheticActivations(
  sae: SaeWeights,
  rows: number,
  options: { active?: number; noise?: number; seed?: number } = {},
): Float32Array {
  const { dIn, dSae } = sae.config;
  const rng = new Rng(options.seed ?? 2);
  const active = options.active ?? Math.min(16, dSae);
  const noise = options.noise ?? 0.02;
  const x = new Float32Array(rows * dIn);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * dIn, (r + 1) * dIn);
    row.set(sae.b_dec);
    for (let a = 0; a < active; a++) {
      const j = rng.int(dSae);
      const w = 0.5 - Math.log(1 - rng.uniform());
      for (let i = 0; i < dIn; i++) row[i]! += w * sae.W_dec[j * dIn + i]!;
    }
    for (let i = 0; i < dIn; i++) row[i]! += noise * rng.normal();
  }
  return x;
}
