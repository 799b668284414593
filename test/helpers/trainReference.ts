// Float64 scalar reference of one TopK-SAE training step (forward, AuxK, analytic gradients,
// decoder-parallel gradient removal, global-norm clipping, Adam, decoder renormalization).
//
// WHY: the native trainer is fp32, multithreaded and fused, so its only trustworthy judge is an
// independent, obviously-correct implementation of the same math. This file is that judge:
// plain loops over Float64Array, no tiling, no shortcuts, clarity over speed (sizes used:
// d_in <= 64, d_sae <= 256, batch <= 64). Its own correctness is checked by
// test/train.reference.test.ts (finite differences, hand computations).
//
// ---------------------------------------------------------------------------------------------
// The math (exactly what this file implements)
//
// Parameters, SAELens layout, row-major:
//   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in].
// Batch x [B, d_in], input scale s, TopK k, AuxK config {kAux, coeff, dead[d_sae]}.
//
// Forward, per row n:
//   xs_n  = s * x_n
//   x'_n  = xs_n - b_dec
//   pre_n = x'_n W_enc + b_enc                                         (pre_nj = sum_i x'_ni W_enc[i,j] + b_enc[j])
//   S_n   = top k of pre_n by value, ties to the LOWER latent index, then only entries with pre > 0
//           (|S_n| <= k). An externally given selection replaces this (used as given).
//   f_nj  = pre_nj for j in S_n (0 elsewhere)
//   x_hat_n = sum_{j in S_n} f_nj W_dec[j] + b_dec
//   e_n   = x_hat_n - xs_n
//   L_mse = (1/B) sum_n ||e_n||^2
// AuxK, only when deadCount = #dead > 0, coeff > 0 and kAux > 0:
//   kEff  = min(kAux, deadCount), scale = min(deadCount / kAux, 1)
//   A_n   = top kEff of pre_n among dead latents (ties to the lower index), then only pre > 0
//           (an externally given aux selection replaces this)
//   a_nj  = pre_nj for j in A_n
//   r_n   = xs_n - x_hat_n, a CONSTANT (stop-gradient: no gradient flows through it)
//   ehat_n = sum_{j in A_n} a_nj W_dec[j]                              (no bias)
//   L_aux = coeff * scale * (1/B) sum_n ||ehat_n - r_n||^2
// L = L_mse + L_aux.
//
// Gradients, selections held fixed:
//   g_n = 2 e_n / B                                  (dL/dx_hat_n)
//   h_n = 2 coeff scale (ehat_n - r_n) / B           (dL/dehat_n)
//   dW_dec[j] += f_nj g_n  (j in S_n)  and  += a_nj h_n  (j in A_n)
//   dpre_nj    = g_n . W_dec[j] (j in S_n)  +  h_n . W_dec[j] (j in A_n)    (relu is the identity
//                on the kept positive entries; a latent in both sets gets both terms)
//   db_enc[j]  += dpre_nj
//   dW_enc[i,j] += dpre_nj x'_ni
//   db_dec      = sum_n g_n - sum_{n,j} dpre_nj W_enc[:, j]   (b_dec enters x_hat and x')
//
// Optimizer step, in this order:
//   (1) per W_dec row j with w_j != 0: g_j -= (g_j . w_j) / (w_j . w_j) w_j
//   (2) G = global L2 norm of all four gradients after (1); if clip > 0 and G > clip, multiply
//       every gradient by clip / G
//   (3) Adam at step t (1-based): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//       p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//   (4) renormalize each nonzero W_dec row to unit L2 norm
//
// Metrics: mse = L_mse; fvu = sum_n ||e_n||^2 / sum_n ||xs_n - mean_B(xs)||^2 (NaN when that
// denominator is 0, e.g. B = 1); l0 = mean_n |S_n|; auxLoss = L_aux; gradNorm = G (before
// clipping); fires[j] = number of rows n with j in S_n.
// ---------------------------------------------------------------------------------------------

type Floats = Float64Array | Float32Array;

/** SAE parameters in float64 (SAELens layout). */
export interface RefParams {
  /** [d_in, d_sae] */
  W_enc: Float64Array;
  /** [d_sae] */
  b_enc: Float64Array;
  /** [d_sae, d_in] */
  W_dec: Float64Array;
  /** [d_in] */
  b_dec: Float64Array;
}

/** Gradients have the parameters' shapes. */
export type RefGrads = RefParams;

/** Parameters as given by a caller: float32 inputs are copied to float64. */
export interface ParamsInput {
  W_enc: Floats;
  b_enc: Floats;
  W_dec: Floats;
  b_dec: Floats;
}

/** Per row, the selected latent indices. */
export type Selection = ReadonlyArray<ReadonlyArray<number>>;

export interface AuxKConfig {
  kAux: number;
  coeff: number;
  /** dead[j] truthy: latent j counts as dead for AuxK (booleans or a 0/1 mask). Length d_sae. */
  dead: ArrayLike<boolean | number>;
}

export interface ForwardOptions {
  k: number;
  /** s in xs = s * x; default 1. */
  inputScale?: number;
  auxK?: AuxKConfig;
  /** Use this TopK selection (per row) instead of computing one. */
  selection?: Selection;
  /** Use this AuxK selection (per row) instead of computing one. */
  auxSelection?: Selection;
  /**
   * standard SAEs: L += l1Coeff * (1/B) sum_n sum_{j in S_n} f_nj ||W_dec[j]||. (Pass
   * k = d_sae so the selection is every positive pre-activation.)
   */
  l1Coeff?: number;
  /**
   * jumprelu SAEs: S_n = {j : pre_nj > theta_j = exp(logThreshold_j), pre_nj > 0} (unless a
   * selection is given), L += l0Coeff (1/B) sum_n |S_n|, and the straight-through estimators'
   * pseudo-gradient for logThreshold (see jumpReluThresholdGrad).
   */
  jumprelu?: { logThreshold: Floats; l0Coeff: number; bandwidth: number };
}

export interface LossOptions extends ForwardOptions {
  /**
   * The AuxK target r_n = xs_n - x_hat_n [B, d_in], held constant. Finite differences must hold
   * it fixed (it is a stop-gradient); by default it is computed from the given parameters.
   */
  auxResidual?: Float64Array;
}

export interface ForwardMetrics {
  mse: number;
  fvu: number;
  l0: number;
  auxLoss: number;
}

export interface ReferenceForward {
  rows: number;
  dIn: number;
  dSae: number;
  /** xs = s * x, [B, d_in] */
  xs: Float64Array;
  /** x' = xs - b_dec, [B, d_in] */
  xPrime: Float64Array;
  /** [B, d_sae] */
  pre: Float64Array;
  /** TopK selection per row, ascending latent index. */
  selection: number[][];
  /** AuxK selection per row, ascending latent index; null when AuxK is inactive. */
  auxSelection: number[][] | null;
  /** [B, d_in] */
  xHat: Float64Array;
  /** e = x_hat - xs, [B, d_in] */
  err: Float64Array;
  /** AuxK target r = xs - x_hat (or the given constant), [B, d_in]; null when AuxK is inactive. */
  auxResidual: Float64Array | null;
  /** ehat = sum_{A_n} a W_dec, [B, d_in]; null when AuxK is inactive. */
  auxRecon: Float64Array | null;
  /** coeff * scale, 0 when AuxK is inactive. */
  auxWeight: number;
  mseLoss: number;
  auxLoss: number;
  /** The L1 penalty (0 unless l1Coeff). */
  l1Loss: number;
  l1Coeff: number;
  loss: number;
  metrics: ForwardMetrics;
  /** fires[j] = number of rows with j in S_n. */
  fires: Uint32Array;
}

export interface AdamState {
  m: RefParams;
  v: RefParams;
}

export interface AdamOptions {
  lr: number;
  b1: number;
  b2: number;
  eps: number;
  /** Global gradient-norm clip; 0 (or negative) disables clipping. */
  clip: number;
  /** 1-based step number, for bias correction. */
  t: number;
  /** false (standard SAEs): skip steps (1) and (4), decoder rows stay free. Default true. */
  unitDecoder?: boolean;
}

export interface AdamStepResult {
  params: RefParams;
  state: AdamState;
  /** The gradients Adam consumed: after parallel removal (1) and clipping (2). */
  grads: RefGrads;
  /** G, the global norm after (1) and before clipping. */
  gradNorm: number;
}

const NAMES = ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const;

/** Float64 copies of the parameters (always copies, so callers' arrays are never aliased). */
export function toRefParams(p: ParamsInput): RefParams {
  return {
    W_enc: Float64Array.from(p.W_enc),
    b_enc: Float64Array.from(p.b_enc),
    W_dec: Float64Array.from(p.W_dec),
    b_dec: Float64Array.from(p.b_dec),
  };
}

/** Zero-filled tensors shaped like the parameters (gradients, Adam moments). */
export function zerosLike(p: ParamsInput): RefParams {
  return {
    W_enc: new Float64Array(p.W_enc.length),
    b_enc: new Float64Array(p.b_enc.length),
    W_dec: new Float64Array(p.W_dec.length),
    b_dec: new Float64Array(p.b_dec.length),
  };
}

/** Fresh Adam state (m = v = 0). */
export function referenceAdamInit(p: ParamsInput): AdamState {
  return { m: zerosLike(p), v: zerosLike(p) };
}

function shapeOf(p: ParamsInput, x: Floats): { dIn: number; dSae: number; rows: number } {
  const dIn = p.b_dec.length;
  const dSae = p.b_enc.length;
  if (dIn < 1 || dSae < 1) throw new Error(`empty SAE: d_in ${dIn}, d_sae ${dSae}`);
  if (p.W_enc.length !== dIn * dSae) throw new Error(`W_enc has ${p.W_enc.length} elements, expected ${dIn}*${dSae}`);
  if (p.W_dec.length !== dSae * dIn) throw new Error(`W_dec has ${p.W_dec.length} elements, expected ${dSae}*${dIn}`);
  if (x.length % dIn !== 0) throw new Error(`x has ${x.length} elements, not a multiple of d_in ${dIn}`);
  return { dIn, dSae, rows: x.length / dIn };
}

/**
 * Top `count` of pre[0..dSae) restricted to `eligible` latents, by value with ties to the
 * lower index, then only pre > 0. Returned in ascending index order.
 */
export function topKPositive(pre: ArrayLike<number>, count: number, eligible?: (j: number) => boolean): number[] {
  const candidates: number[] = [];
  for (let j = 0; j < pre.length; j++) if (!eligible || eligible(j)) candidates.push(j);
  candidates.sort((a, b) => pre[b]! - pre[a]! || a - b);
  return candidates
    .slice(0, Math.max(0, count))
    .filter((j) => pre[j]! > 0)
    .sort((a, b) => a - b);
}

function checkedSelection(given: Selection, rows: number, dSae: number, what: string): number[][] {
  if (given.length !== rows) throw new Error(`${what} has ${given.length} rows, expected ${rows}`);
  return given.map((row, n) => {
    const seen = new Set<number>();
    for (const j of row) {
      if (!Number.isInteger(j) || j < 0 || j >= dSae) throw new Error(`${what} row ${n}: latent ${j} out of [0, ${dSae})`);
      if (seen.has(j)) throw new Error(`${what} row ${n}: latent ${j} repeated`);
      seen.add(j);
    }
    return [...row].sort((a, b) => a - b);
  });
}

/** coeff * scale and kEff for AuxK, or null when AuxK is inactive. */
function auxSetup(aux: AuxKConfig | undefined, dSae: number): { weight: number; kEff: number } | null {
  if (!aux) return null;
  if (aux.dead.length !== dSae) throw new Error(`auxK.dead has ${aux.dead.length} entries, expected d_sae ${dSae}`);
  let deadCount = 0;
  for (let j = 0; j < dSae; j++) if (aux.dead[j]) deadCount++;
  if (deadCount === 0 || !(aux.coeff > 0) || !(aux.kAux > 0)) return null;
  const kEff = Math.min(aux.kAux, deadCount);
  const scale = Math.min(deadCount / aux.kAux, 1);
  return { weight: aux.coeff * scale, kEff };
}

/** The forward pass, losses and metrics (see the math at the top of this file). */
export function referenceForward(params: ParamsInput, x: Floats, opts: LossOptions): ReferenceForward {
  const { dIn, dSae, rows: B } = shapeOf(params, x);
  const p = toRefParams(params);
  const s = opts.inputScale ?? 1;
  const k = opts.k;

  const xs = new Float64Array(B * dIn);
  const xPrime = new Float64Array(B * dIn);
  for (let n = 0; n < B; n++)
    for (let i = 0; i < dIn; i++) {
      xs[n * dIn + i] = s * x[n * dIn + i]!;
      xPrime[n * dIn + i] = xs[n * dIn + i]! - p.b_dec[i]!;
    }

  const pre = new Float64Array(B * dSae);
  for (let n = 0; n < B; n++)
    for (let j = 0; j < dSae; j++) {
      let acc = p.b_enc[j]!;
      for (let i = 0; i < dIn; i++) acc += xPrime[n * dIn + i]! * p.W_enc[i * dSae + j]!;
      pre[n * dSae + j] = acc;
    }
  const preRow = (n: number) => pre.subarray(n * dSae, (n + 1) * dSae);

  const jr = opts.jumprelu;
  const theta = jr ? Float64Array.from(jr.logThreshold, Math.exp) : undefined;
  const selection = opts.selection
    ? checkedSelection(opts.selection, B, dSae, 'selection')
    : theta
      ? Array.from({ length: B }, (_, n) => [...preRow(n)].flatMap((v, j) => (v > theta[j]! && v > 0 ? [j] : [])))
      : Array.from({ length: B }, (_, n) => topKPositive(preRow(n), k));

  // x_hat and e.
  const xHat = new Float64Array(B * dIn);
  const err = new Float64Array(B * dIn);
  let sse = 0;
  for (let n = 0; n < B; n++) {
    for (let i = 0; i < dIn; i++) xHat[n * dIn + i] = p.b_dec[i]!;
    for (const j of selection[n]!) {
      const f = pre[n * dSae + j]!;
      for (let i = 0; i < dIn; i++) xHat[n * dIn + i]! += f * p.W_dec[j * dIn + i]!;
    }
    for (let i = 0; i < dIn; i++) {
      const e = xHat[n * dIn + i]! - xs[n * dIn + i]!;
      err[n * dIn + i] = e;
      sse += e * e;
    }
  }
  const mseLoss = sse / B;

  // AuxK.
  const aux = auxSetup(opts.auxK, dSae);
  let auxSelection: number[][] | null = null;
  let auxResidual: Float64Array | null = null;
  let auxRecon: Float64Array | null = null;
  let auxLoss = 0;
  if (aux) {
    const dead = opts.auxK!.dead;
    auxSelection = opts.auxSelection
      ? checkedSelection(opts.auxSelection, B, dSae, 'auxSelection')
      : Array.from({ length: B }, (_, n) => topKPositive(preRow(n), aux.kEff, (j) => Boolean(dead[j])));
    if (opts.auxResidual) {
      if (opts.auxResidual.length !== B * dIn) throw new Error(`auxResidual has ${opts.auxResidual.length} elements, expected ${B}*${dIn}`);
      auxResidual = Float64Array.from(opts.auxResidual);
    } else {
      auxResidual = new Float64Array(B * dIn);
      for (let q = 0; q < B * dIn; q++) auxResidual[q] = xs[q]! - xHat[q]!;
    }
    auxRecon = new Float64Array(B * dIn);
    let auxSse = 0;
    for (let n = 0; n < B; n++) {
      for (const j of auxSelection[n]!) {
        const a = pre[n * dSae + j]!;
        for (let i = 0; i < dIn; i++) auxRecon[n * dIn + i]! += a * p.W_dec[j * dIn + i]!;
      }
      for (let i = 0; i < dIn; i++) {
        const d = auxRecon[n * dIn + i]! - auxResidual[n * dIn + i]!;
        auxSse += d * d;
      }
    }
    auxLoss = (aux.weight * auxSse) / B;
  }

  // L0 penalty (jumprelu), reported in l1Loss (the sparsity penalty's slot).
  let l1LossFromL0 = 0;
  if (jr) {
    let active = 0;
    for (const row of selection) active += row.length;
    l1LossFromL0 = (jr.l0Coeff * active) / B;
  }

  // L1 penalty scaled by decoder-row norms (standard SAEs).
  const l1Coeff = opts.l1Coeff ?? 0;
  let l1Loss = l1LossFromL0;
  if (l1Coeff > 0) {
    for (let n = 0; n < B; n++)
      for (const j of selection[n]!) {
        let ww = 0;
        for (let i = 0; i < dIn; i++) ww += p.W_dec[j * dIn + i]! ** 2;
        l1Loss += pre[n * dSae + j]! * Math.sqrt(ww);
      }
    l1Loss = (l1Coeff * l1Loss) / B;
  }

  // Metrics.
  const mean = new Float64Array(dIn);
  for (let n = 0; n < B; n++) for (let i = 0; i < dIn; i++) mean[i]! += xs[n * dIn + i]! / B;
  let variance = 0;
  for (let n = 0; n < B; n++)
    for (let i = 0; i < dIn; i++) {
      const d = xs[n * dIn + i]! - mean[i]!;
      variance += d * d;
    }
  const fires = new Uint32Array(dSae);
  let active = 0;
  for (const row of selection) {
    active += row.length;
    for (const j of row) fires[j]!++;
  }

  return {
    rows: B,
    dIn,
    dSae,
    xs,
    xPrime,
    pre,
    selection,
    auxSelection,
    xHat,
    err,
    auxResidual,
    auxRecon,
    auxWeight: aux ? aux.weight : 0,
    mseLoss,
    auxLoss,
    l1Loss,
    l1Coeff,
    loss: mseLoss + auxLoss + l1Loss,
    metrics: { mse: mseLoss, fvu: variance > 0 ? sse / variance : NaN, l0: active / B, auxLoss },
    fires,
  };
}

/**
 * L = L_mse + L_aux as a plain function of the parameters: pass `selection` / `auxSelection`
 * (and `auxResidual`) from a forward pass to hold them fixed for finite differences.
 */
export function referenceLoss(params: ParamsInput, x: Floats, opts: LossOptions): number {
  return referenceForward(params, x, opts).loss;
}

/** Analytic gradients of L for a forward pass (raw: before parallel removal and clipping). */
export function gradientsFromForward(params: ParamsInput, fwd: ReferenceForward): RefGrads {
  const { rows: B, dIn, dSae } = fwd;
  const p = toRefParams(params);
  const grads = zerosLike(p);

  const addLatentTerms = (n: number, latents: readonly number[], upstream: Float64Array) => {
    // upstream: dL/d(output of these latents' decoder sum) for row n, [d_in].
    for (const j of latents) {
      const act = fwd.pre[n * dSae + j]!;
      let dpre = 0;
      for (let i = 0; i < dIn; i++) {
        grads.W_dec[j * dIn + i]! += act * upstream[i]!;
        dpre += upstream[i]! * p.W_dec[j * dIn + i]!;
      }
      grads.b_enc[j]! += dpre;
      for (let i = 0; i < dIn; i++) {
        grads.W_enc[i * dSae + j]! += dpre * fwd.xPrime[n * dIn + i]!;
        grads.b_dec[i]! -= dpre * p.W_enc[i * dSae + j]!;
      }
    }
  };

  const g = new Float64Array(dIn);
  const h = new Float64Array(dIn);
  for (let n = 0; n < B; n++) {
    for (let i = 0; i < dIn; i++) {
      g[i] = (2 * fwd.err[n * dIn + i]!) / B;
      grads.b_dec[i]! += g[i]!;
    }
    addLatentTerms(n, fwd.selection[n]!, g);
    if (fwd.l1Coeff > 0) {
      // d/dpre of c/B f ||w_j|| is c/B ||w_j|| (flows on to b_enc, W_enc, b_dec like any dpre);
      // d/dW_dec[j] is c/B f w_j / ||w_j||.
      for (const j of fwd.selection[n]!) {
        let ww = 0;
        for (let i = 0; i < dIn; i++) ww += p.W_dec[j * dIn + i]! ** 2;
        const norm = Math.sqrt(ww);
        const dpre = (fwd.l1Coeff * norm) / B;
        const f = fwd.pre[n * dSae + j]!;
        grads.b_enc[j]! += dpre;
        for (let i = 0; i < dIn; i++) {
          grads.W_enc[i * dSae + j]! += dpre * fwd.xPrime[n * dIn + i]!;
          grads.b_dec[i]! -= dpre * p.W_enc[i * dSae + j]!;
          if (norm > 0) grads.W_dec[j * dIn + i]! += (fwd.l1Coeff * f * p.W_dec[j * dIn + i]!) / (B * norm);
        }
      }
    }
    if (fwd.auxSelection) {
      for (let i = 0; i < dIn; i++) h[i] = (2 * fwd.auxWeight * (fwd.auxRecon![n * dIn + i]! - fwd.auxResidual![n * dIn + i]!)) / B;
      addLatentTerms(n, fwd.auxSelection[n]!, h);
    }
  }
  return grads;
}

/** Analytic gradients of L (raw, before the optimizer's parallel removal and clipping). */
export function referenceGradients(params: ParamsInput, x: Floats, opts: LossOptions): RefGrads {
  return gradientsFromForward(params, referenceForward(params, x, opts));
}

/** Step (1), in place: removes from each W_dec-row gradient its component along the row. */
export function removeParallelDecoderGrad(W_dec: Floats, gradW_dec: Float64Array, dIn: number): void {
  const dSae = W_dec.length / dIn;
  for (let j = 0; j < dSae; j++) {
    let gw = 0;
    let ww = 0;
    for (let i = 0; i < dIn; i++) {
      gw += gradW_dec[j * dIn + i]! * W_dec[j * dIn + i]!;
      ww += W_dec[j * dIn + i]! ** 2;
    }
    if (ww === 0) continue;
    const c = gw / ww;
    for (let i = 0; i < dIn; i++) gradW_dec[j * dIn + i]! -= c * W_dec[j * dIn + i]!;
  }
}

/** Global L2 norm over all four tensors. */
export function globalNorm(t: RefParams): number {
  let s = 0;
  for (const name of NAMES) for (const v of t[name]) s += v * v;
  return Math.sqrt(s);
}

/** Step (2), in place: returns G (before clipping); scales by clip/G when clip > 0 and G > clip. */
export function clipGradients(grads: RefGrads, clip: number): number {
  const G = globalNorm(grads);
  if (clip > 0 && G > clip) {
    const c = clip / G;
    for (const name of NAMES) {
      const t = grads[name];
      for (let q = 0; q < t.length; q++) t[q]! *= c;
    }
  }
  return G;
}

/** Step (4), in place: unit L2 norm for each nonzero W_dec row. */
export function normalizeDecoderRows(W_dec: Float64Array, dIn: number): void {
  const dSae = W_dec.length / dIn;
  for (let j = 0; j < dSae; j++) {
    let ww = 0;
    for (let i = 0; i < dIn; i++) ww += W_dec[j * dIn + i]! ** 2;
    if (ww === 0) continue;
    const inv = 1 / Math.sqrt(ww);
    for (let i = 0; i < dIn; i++) W_dec[j * dIn + i]! *= inv;
  }
}

/**
 * Steps (1)-(4) on copies: parallel removal, clipping, Adam with bias correction, decoder
 * renormalization. Inputs are not modified.
 */
export function referenceAdamStep(params: ParamsInput, grads: ParamsInput, state: AdamState, o: AdamOptions): AdamStepResult {
  if (!Number.isInteger(o.t) || o.t < 1) throw new Error(`Adam step t must be an integer >= 1, got ${o.t}`);
  const dIn = params.b_dec.length;
  const p = toRefParams(params);
  const g = toRefParams(grads);
  const m = toRefParams(state.m);
  const v = toRefParams(state.v);

  const unit = o.unitDecoder ?? true;
  if (unit) removeParallelDecoderGrad(p.W_dec, g.W_dec, dIn);
  const gradNorm = clipGradients(g, o.clip);

  const bc1 = 1 - o.b1 ** o.t;
  const bc2 = 1 - o.b2 ** o.t;
  for (const name of NAMES) {
    const pt = p[name];
    const gt = g[name];
    const mt = m[name];
    const vt = v[name];
    for (let q = 0; q < pt.length; q++) {
      mt[q] = o.b1 * mt[q]! + (1 - o.b1) * gt[q]!;
      vt[q] = o.b2 * vt[q]! + (1 - o.b2) * gt[q]! * gt[q]!;
      pt[q]! -= (o.lr * (mt[q]! / bc1)) / (Math.sqrt(vt[q]! / bc2) + o.eps);
    }
  }

  if (unit) normalizeDecoderRows(p.W_dec, dIn);
  return { params: p, state: { m, v }, grads: g, gradNorm };
}

export interface ReferenceTrainStep {
  forward: ReferenceForward;
  /** Raw gradients (before steps (1)-(2)). */
  rawGrads: RefGrads;
  step: AdamStepResult;
  /** mse, fvu, l0, auxLoss of the forward pass, plus gradNorm of the step. */
  metrics: ForwardMetrics & { gradNorm: number };
  fires: Uint32Array;
}

/** One full training step: forward, gradients, and the optimizer step. */
export function referenceTrainStep(
  params: ParamsInput,
  x: Floats,
  opts: ForwardOptions,
  state: AdamState,
  adam: AdamOptions,
): ReferenceTrainStep {
  const forward = referenceForward(params, x, opts);
  const rawGrads = gradientsFromForward(params, forward);
  const step = referenceAdamStep(params, rawGrads, state, adam);
  return { forward, rawGrads, step, metrics: { ...forward.metrics, gradNorm: step.gradNorm }, fires: forward.fires };
}

/**
 * jumprelu: dL/dlogThreshold by the straight-through estimators of Rajamanoharan et al. 2024,
 * rectangle kernel K(u) = [|u| < 1/2] of bandwidth eps, theta = exp(logThreshold):
 *   dL/dtheta_j = sum_n K((pre_nj - theta_j) / eps) * (-theta_j / eps * (g_n . W_dec[j]) - l0Coeff / (B eps))
 * over entries with pre_nj > 0 (only positive values are ever admitted), g_n = 2 e_n / B;
 * dL/dlogThreshold_j = theta_j dL/dtheta_j. A pseudo-gradient: no finite difference checks it.
 */
export function jumpReluThresholdGrad(params: ParamsInput, fwd: ReferenceForward, jr: NonNullable<ForwardOptions['jumprelu']>): Float64Array {
  const { rows: B, dIn, dSae } = fwd;
  const p = toRefParams(params);
  const out = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    const theta = Math.exp(jr.logThreshold[j]!);
    let g = 0;
    for (let n = 0; n < B; n++) {
      const v = fwd.pre[n * dSae + j]!;
      if (!(v > 0) || !(Math.abs(v - theta) < jr.bandwidth / 2)) continue;
      let df = 0;
      for (let i = 0; i < dIn; i++) df += ((2 * fwd.err[n * dIn + i]!) / B) * p.W_dec[j * dIn + i]!;
      g += (-theta / jr.bandwidth) * df - jr.l0Coeff / (B * jr.bandwidth);
    }
    out[j] = theta * g;
  }
  return out;
}
