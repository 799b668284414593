// Float64 scalar reference of the generalized training loss and its gradients: transcoders
// (input x, target y of another width, no b_dec centering), skip transcoders (+ x W_skip^T),
// and Matryoshka batch top-k (every prefix of the dictionary reconstructs from its own batch
// top-k; the losses add), with AuxK on given dead latents.
//
// WHY a second reference beside trainReference.ts: that one is the SAE's (d_out = d_in, target
// = input) and is pinned by its own tests; this one is written from the math of
// native/cpu/cpu_trainer.cpp's header comment alone, in plain loops, and is itself checked
// against central finite differences (test/train.transcoder.test.ts).
//
// The math:
//   xs = s_in x;  t = s_out y (transcoder) or xs (SAE);  x' = xs (transcoder) or xs - b_dec
//   pre = x' W_enc + b_enc
//   levels: widths w_1 < ... < w_M = d_sae (one level, d_sae, without matryoshka)
//   S^m = topk: per row the k largest of pre_n[0..w_m) (ties to the lower index), positive only;
//         batchtopk: the k*B largest positive values of pre[:, 0..w_m) (ties: lower row, then
//         lower latent)
//   x_hat^m_n = sum_{j in S^m_n} pre_nj W_dec[j] + b_dec + xs_n W_skip^T
//   L = sum_m (1/B) sum_n ||x_hat^m_n - t_n||^2 + L_aux
//   AuxK (dead latents D, kEff = min(kAux, |D|), scale = min(|D| / kAux, 1)): per row the top
//   kEff positive pre among D; ehat_n = sum a_nj W_dec[j]; r_n = t_n - x_hat^M_n held constant;
//   L_aux = coeff scale (1/B) sum_n ||ehat_n - r_n||^2.

export interface GenParams {
  /** [d_in, d_sae] */
  W_enc: Float64Array;
  /** [d_sae] */
  b_enc: Float64Array;
  /** [d_sae, d_out] */
  W_dec: Float64Array;
  /** [d_out] */
  b_dec: Float64Array;
  /** [d_out, d_in], skip transcoders only */
  W_skip?: Float64Array;
}

export interface GenOptions {
  dIn: number;
  dSae: number;
  dOut: number;
  k: number;
  selection: 'topk' | 'batchtopk';
  /** Prefix widths (last = dSae); default [dSae]. */
  widths?: number[];
  transcoder: boolean;
  inputScale?: number;
  outputScale?: number;
  aux?: { kAux: number; coeff: number; dead: ArrayLike<boolean> };
  /** Hold these selections (per level, per row) instead of computing them. */
  fixed?: { levels: number[][][]; aux: number[][] | null; auxResidual: Float64Array | null };
}

export interface GenForward {
  loss: number;
  /** The full width's MSE. */
  mse: number;
  /** The inner levels' MSE, summed. */
  innerMse: number;
  auxLoss: number;
  levels: number[][][];
  aux: number[][] | null;
  auxResidual: Float64Array | null;
}

type Floats = ArrayLike<number>;

export function toGenParams(p: { W_enc: Floats; b_enc: Floats; W_dec: Floats; b_dec: Floats; W_skip?: Floats | undefined }): GenParams {
  const out: GenParams = {
    W_enc: Float64Array.from(p.W_enc),
    b_enc: Float64Array.from(p.b_enc),
    W_dec: Float64Array.from(p.W_dec),
    b_dec: Float64Array.from(p.b_dec),
  };
  if (p.W_skip) out.W_skip = Float64Array.from(p.W_skip);
  return out;
}

interface Pass {
  B: number;
  xs: Float64Array;
  xp: Float64Array;
  t: Float64Array;
  pre: Float64Array;
  base: Float64Array; // b_dec + skip, [B, d_out]
}

function pass(p: GenParams, x: Floats, y: Floats | undefined, o: GenOptions): Pass {
  const { dIn, dSae, dOut } = o;
  const B = x.length / dIn;
  const s = o.inputScale ?? 1;
  const so = o.outputScale ?? 1;
  const xs = new Float64Array(B * dIn);
  const xp = new Float64Array(B * dIn);
  const t = new Float64Array(B * dOut);
  for (let q = 0; q < B * dIn; q++) {
    xs[q] = s * x[q]!;
    xp[q] = o.transcoder ? xs[q]! : xs[q]! - p.b_dec[q % dIn]!;
  }
  for (let q = 0; q < B * dOut; q++) t[q] = o.transcoder ? so * y![q]! : xs[q]!;
  const pre = new Float64Array(B * dSae);
  for (let n = 0; n < B; n++)
    for (let j = 0; j < dSae; j++) {
      let acc = p.b_enc[j]!;
      for (let i = 0; i < dIn; i++) acc += xp[n * dIn + i]! * p.W_enc[i * dSae + j]!;
      pre[n * dSae + j] = acc;
    }
  const base = new Float64Array(B * dOut);
  for (let n = 0; n < B; n++)
    for (let c = 0; c < dOut; c++) {
      let v = p.b_dec[c]!;
      if (p.W_skip) for (let i = 0; i < dIn; i++) v += xs[n * dIn + i]! * p.W_skip[c * dIn + i]!;
      base[n * dOut + c] = v;
    }
  return { B, xs, xp, t, pre, base };
}

function select(pre: Float64Array, B: number, dSae: number, width: number, k: number, kind: 'topk' | 'batchtopk'): number[][] {
  const rows: number[][] = Array.from({ length: B }, () => []);
  if (kind === 'topk') {
    for (let n = 0; n < B; n++) {
      const c = Array.from({ length: width }, (_, j) => j).sort((a, b) => pre[n * dSae + b]! - pre[n * dSae + a]! || a - b);
      rows[n] = c.slice(0, k).filter((j) => pre[n * dSae + j]! > 0).sort((a, b) => a - b);
    }
    return rows;
  }
  const all: [number, number][] = [];
  for (let n = 0; n < B; n++) for (let j = 0; j < width; j++) if (pre[n * dSae + j]! > 0) all.push([n, j]);
  all.sort((a, b) => pre[b[0] * dSae + b[1]]! - pre[a[0] * dSae + a[1]]! || a[0] - b[0] || a[1] - b[1]);
  for (const [n, j] of all.slice(0, k * B)) rows[n]!.push(j);
  for (const r of rows) r.sort((a, b) => a - b);
  return rows;
}

function reconstruct(p: GenParams, P: Pass, sel: number[][], o: GenOptions): Float64Array {
  const { dSae, dOut } = o;
  const out = Float64Array.from(P.base);
  for (let n = 0; n < P.B; n++)
    for (const j of sel[n]!) {
      const f = P.pre[n * dSae + j]!;
      for (let c = 0; c < dOut; c++) out[n * dOut + c]! += f * p.W_dec[j * dOut + c]!;
    }
  return out;
}

function auxSetup(o: GenOptions): { kEff: number; weight: number } | null {
  if (!o.aux) return null;
  let D = 0;
  for (let j = 0; j < o.dSae; j++) if (o.aux.dead[j]) D++;
  if (D === 0 || !(o.aux.coeff > 0) || !(o.aux.kAux > 0)) return null;
  return { kEff: Math.min(o.aux.kAux, D), weight: o.aux.coeff * Math.min(D / o.aux.kAux, 1) };
}

export function genForward(p: GenParams, x: Floats, y: Floats | undefined, o: GenOptions): GenForward {
  const P = pass(p, x, y, o);
  const widths = o.widths ?? [o.dSae];
  const levels = o.fixed?.levels ?? widths.map((w) => select(P.pre, P.B, o.dSae, w, o.k, o.selection));
  let mse = 0;
  let innerMse = 0;
  let full: Float64Array | undefined;
  levels.forEach((sel, m) => {
    const xh = reconstruct(p, P, sel, o);
    let sse = 0;
    for (let q = 0; q < xh.length; q++) sse += (xh[q]! - P.t[q]!) ** 2;
    if (m === levels.length - 1) {
      mse = sse / P.B;
      full = xh;
    } else innerMse += sse / P.B;
  });
  const a = auxSetup(o);
  let aux: number[][] | null = null;
  let auxResidual: Float64Array | null = null;
  let auxLoss = 0;
  if (a) {
    const dead = o.aux!.dead;
    aux =
      o.fixed?.aux ??
      Array.from({ length: P.B }, (_, n) => {
        const c = [...Array(o.dSae).keys()].filter((j) => dead[j]).sort((i, j) => P.pre[n * o.dSae + j]! - P.pre[n * o.dSae + i]! || i - j);
        return c.slice(0, a.kEff).filter((j) => P.pre[n * o.dSae + j]! > 0).sort((i, j) => i - j);
      });
    auxResidual = o.fixed?.auxResidual ?? Float64Array.from(P.t, (v, q) => v - full![q]!);
    let sse = 0;
    for (let n = 0; n < P.B; n++) {
      const eh = new Float64Array(o.dOut);
      for (const j of aux[n]!) for (let c = 0; c < o.dOut; c++) eh[c]! += P.pre[n * o.dSae + j]! * p.W_dec[j * o.dOut + c]!;
      for (let c = 0; c < o.dOut; c++) sse += (eh[c]! - auxResidual[n * o.dOut + c]!) ** 2;
    }
    auxLoss = (a.weight * sse) / P.B;
  }
  return { loss: mse + innerMse + auxLoss, mse, innerMse, auxLoss, levels, aux, auxResidual };
}

/** Analytic gradients with the forward's selections (and AuxK residual) held fixed. */
export function genGradients(p: GenParams, x: Floats, y: Floats | undefined, o: GenOptions, fwd: GenForward): GenParams {
  const { dIn, dSae, dOut } = o;
  const P = pass(p, x, y, o);
  const B = P.B;
  const g: GenParams = {
    W_enc: new Float64Array(dIn * dSae),
    b_enc: new Float64Array(dSae),
    W_dec: new Float64Array(dSae * dOut),
    b_dec: new Float64Array(dOut),
    ...(p.W_skip && { W_skip: new Float64Array(dOut * dIn) }),
  };
  const dpre = new Float64Array(B * dSae); // summed over every term an entry appears in
  const upstream = (sel: number[][], gRows: Float64Array, weight: number, withBase: boolean) => {
    for (let n = 0; n < B; n++) {
      const gn = gRows.subarray(n * dOut, (n + 1) * dOut);
      for (const j of sel[n]!) {
        const f = P.pre[n * dSae + j]!;
        let dp = 0;
        for (let c = 0; c < dOut; c++) {
          g.W_dec[j * dOut + c]! += f * gn[c]! * weight;
          dp += gn[c]! * p.W_dec[j * dOut + c]!;
        }
        dpre[n * dSae + j]! += dp * weight;
      }
      if (!withBase) continue;
      for (let c = 0; c < dOut; c++) {
        g.b_dec[c]! += gn[c]! * weight;
        if (g.W_skip) for (let i = 0; i < dIn; i++) g.W_skip[c * dIn + i]! += gn[c]! * P.xs[n * dIn + i]! * weight;
      }
    }
  };
  for (const sel of fwd.levels) {
    const xh = reconstruct(p, P, sel, o);
    const gr = Float64Array.from(xh, (v, q) => (2 * (v - P.t[q]!)) / B);
    upstream(sel, gr, 1, true);
  }
  const a = auxSetup(o);
  if (a && fwd.aux) {
    const h = new Float64Array(B * dOut);
    for (let n = 0; n < B; n++) {
      for (const j of fwd.aux[n]!) for (let c = 0; c < dOut; c++) h[n * dOut + c]! += P.pre[n * dSae + j]! * p.W_dec[j * dOut + c]!;
      for (let c = 0; c < dOut; c++) h[n * dOut + c] = (2 * (h[n * dOut + c]! - fwd.auxResidual![n * dOut + c]!)) / B;
    }
    upstream(fwd.aux, h, a.weight, false);
  }
  for (let n = 0; n < B; n++)
    for (let j = 0; j < dSae; j++) {
      const d = dpre[n * dSae + j]!;
      if (d === 0) continue;
      g.b_enc[j]! += d;
      for (let i = 0; i < dIn; i++) {
        g.W_enc[i * dSae + j]! += d * P.xp[n * dIn + i]!;
        if (!o.transcoder) g.b_dec[i]! -= d * p.W_enc[i * dSae + j]!; // b_dec centers the input
      }
    }
  return g;
}
