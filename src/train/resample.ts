// Dead-latent resampling (Anthropic, "Towards Monosemanticity", 2023; SAELens's long-open
// request), an option beside AuxK: every N steps each dead latent is re-initialized toward an
// input the SAE reconstructs badly, and its optimizer state starts over.
//
// For each dead latent j (since_fired >= deadTokens), in training units:
//   - a row n of the sample is drawn with probability proportional to its squared loss
//     ||t_n - x_hat_n||^2 squared (i.e. loss^2, as Anthropic), without replacement while rows last;
//   - W_dec[j] = the unit direction of that row's residual t_n - x_hat_n: what the latent should
//     add (for an SAE this is Anthropic's choice up to the part the SAE already explains; for a
//     transcoder the input direction would be in the wrong space);
//   - W_enc[:, j] = the unit direction of the row's encoder input x'_n (x_s - b_dec for an SAE,
//     x_s for a transcoder) times the mean norm of the alive latents' encoder columns, times
//     0.2 for a standard (relu) SAE as Anthropic, 1 under a top-k or threshold (see below);
//   - b_enc[j] = 0; the Adam moments of those entries = 0; since_fired[j] = 0 (a fresh start).
// Everything else is untouched, bit for bit. The draw is a pure function of (seed, step) and
// the sample, so a resumed run resamples exactly as the uninterrupted one.
import { ValidationError } from '../errors.js';
import { Rng } from '../synthetic.js';
import { createSae } from '../sae.js';
import type { SaeTrainer } from './trainer.js';

export interface ResampleOptions {
  /** Latents this many tokens without firing are dead (default: the trainer's deadTokens). */
  deadTokens?: number;
  /** Seeds the draw (mixed with the trainer's step). */
  seed?: number;
  /** Encoder columns restart at this fraction of the alive columns' mean norm (0.2 standard, else 1). */
  encoderScale?: number;
}

export interface ResampleResult {
  /** The latents re-initialized, ascending. */
  latents: number[];
  /** The sample row each one was pointed at. */
  rows: number[];
}

/**
 * Re-initializes the trainer's dead latents from SAMPLE (raw input rows [rows, dIn]) and, for a
 * transcoder, TARGET ([rows, dOut]). Returns what was resampled (nothing when no latent is dead).
 */
export async function resampleDeadLatents(trainer: SaeTrainer, sample: Float32Array, target?: Float32Array, o: ResampleOptions = {}): Promise<ResampleResult> {
  const c = trainer.config;
  const dIn = c.dIn, dSae = c.dSae, dOut = c.dOut ?? c.dIn;
  if (!(sample instanceof Float32Array) || sample.length === 0 || sample.length % dIn !== 0)
    throw new ValidationError(`resampling needs sample rows [rows, ${dIn}] (got ${sample?.length} values)`);
  const rows = sample.length / dIn;
  if (c.transcoder && (!(target instanceof Float32Array) || target.length !== rows * dOut))
    throw new ValidationError(`resampling a transcoder needs its target rows [${rows}, ${dOut}]`);
  const deadTokens = o.deadTokens ?? c.deadTokens;
  const state = trainer.state();
  const t = state.tensors;
  const since = t.since_fired as Float64Array;
  const dead: number[] = [];
  for (let j = 0; j < dSae; j++) if (deadTokens > 0 && since[j]! >= deadTokens) dead.push(j);
  if (dead.length === 0) return { latents: [], rows: [] };

  // Predictions of the current SAE in training units, in float64 (a few thousand rows).
  const W_enc = t.W_enc as Float32Array, b_enc = t.b_enc as Float32Array, W_dec = t.W_dec as Float32Array, b_dec = t.b_dec as Float32Array;
  const s = c.inputScale, sOut = c.transcoder ? (c.outputScale ?? 1) : s;
  // The SAE's own inference (raw units; batch top-k as its learned threshold), times the
  // output scale: the prediction in training units.
  const preview = new Float32Array(rows * dOut);
  const sae = await createSae(trainer.weights());
  try {
    await sae.forward(sample, preview);
  } finally {
    sae.dispose();
  }
  for (let q = 0; q < preview.length; q++) preview[q]! *= sOut;
  const xPrime = new Float64Array(rows * dIn);
  const residual = new Float64Array(rows * dOut);
  const weight = new Float64Array(rows);
  for (let n = 0; n < rows; n++) {
    for (let i = 0; i < dIn; i++) xPrime[n * dIn + i] = s * sample[n * dIn + i]! - (c.transcoder ? 0 : b_dec[i]!);
    let sq = 0;
    for (let i = 0; i < dOut; i++) {
      const truth = c.transcoder ? sOut * target![n * dOut + i]! : s * sample[n * dIn + i]!;
      const r = truth - preview[n * dOut + i]!;
      residual[n * dOut + i] = r;
      sq += r * r;
    }
    weight[n] = sq * sq; // probability proportional to loss^2
  }

  // Mean encoder-column norm of the alive latents (1 when none is alive).
  const isDead = new Uint8Array(dSae);
  for (const j of dead) isDead[j] = 1;
  let alive = 0, normSum = 0;
  for (let j = 0; j < dSae; j++) {
    if (isDead[j]) continue;
    let q = 0;
    for (let i = 0; i < dIn; i++) q += W_enc[i * dSae + j]! ** 2;
    normSum += Math.sqrt(q);
    alive++;
  }
  // Anthropic's 0.2 suits a relu SAE (any positive pre-activation fires); under a top-k (or a
  // threshold) a restarted latent must beat the alive ones on its row, or it never fires again
  // (measured: at 0.2 resampling RAISED the dead fraction of TopK runs; bench/NOTES.md).
  const encNorm = (o.encoderScale ?? (c.architecture === 'standard' ? 0.2 : 1)) * (alive > 0 ? normSum / alive : 1);

  const rng = new Rng(((o.seed ?? 0) * 0x9e3779b1 + trainer.step * 0x85ebca6b + 0x5eed) >>> 0);
  const remaining = Float64Array.from(weight);
  let total = remaining.reduce((a, b) => a + b, 0);
  const chosen: number[] = [];
  for (const j of dead) {
    let n: number;
    if (total > 0) {
      let u = rng.uniform() * total;
      n = 0;
      while (n < rows - 1 && (u >= remaining[n]! || remaining[n] === 0)) u -= remaining[n++]!;
      if (remaining[n] === 0) n = remaining.findIndex((v) => v > 0);
    } else {
      n = rng.int(rows); // every row reconstructed exactly: any direction of the data
    }
    chosen.push(n);
    total -= remaining[n]!;
    remaining[n] = 0;
    if (total <= 0) {
      // Rows exhausted: draw again from all of them.
      remaining.set(weight);
      total = remaining.reduce((a, b) => a + b, 0);
    }
    const dir = (v: Float64Array, off: number, len: number) => {
      let q = 0;
      for (let i = 0; i < len; i++) q += v[off + i]! ** 2;
      return q > 0 ? 1 / Math.sqrt(q) : 0;
    };
    const dn = dir(residual, n * dOut, dOut);
    const en = dir(xPrime, n * dIn, dIn);
    for (let i = 0; i < dOut; i++) W_dec[j * dOut + i] = dn > 0 ? residual[n * dOut + i]! * dn : W_dec[j * dOut + i]!;
    for (let i = 0; i < dIn; i++) W_enc[i * dSae + j] = en > 0 ? xPrime[n * dIn + i]! * en * encNorm : 0;
    b_enc[j] = 0;
    since[j] = 0;
    for (const m of ['adam_m', 'adam_v'] as const) {
      const me = t[`${m}.W_enc`] as Float32Array, md = t[`${m}.W_dec`] as Float32Array, mb = t[`${m}.b_enc`] as Float32Array;
      for (let i = 0; i < dIn; i++) me[i * dSae + j] = 0;
      for (let i = 0; i < dOut; i++) md[j * dOut + i] = 0;
      mb[j] = 0;
    }
  }
  trainer.loadState(state);
  return { latents: dead, rows: chosen };
}
