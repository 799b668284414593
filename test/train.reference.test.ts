// Self-consistency of the float64 training reference (test/helpers/trainReference.ts): it will
// judge the native trainer, so its analytic gradients are checked against finite differences of
// its own loss, and its optimizer step against hand computations.
import { describe, it, expect } from 'vitest';
import { Rng } from '../src/synthetic.js';
import { freshSeed } from './helpers/testData.js';
import {
  clipGradients,
  globalNorm,
  referenceAdamInit,
  referenceAdamStep,
  referenceForward,
  referenceGradients,
  referenceLoss,
  referenceTrainStep,
  removeParallelDecoderGrad,
  topKPositive,
  zerosLike,
  type AuxKConfig,
  type LossOptions,
  type RefParams,
} from './helpers/trainReference.js';

const seed = freshSeed('train.reference.test');

function randomParams(rng: Rng, dIn: number, dSae: number): RefParams {
  const normal = (n: number, scale: number) => Float64Array.from({ length: n }, () => rng.normal() * scale);
  return {
    W_enc: normal(dIn * dSae, 1 / Math.sqrt(dIn)),
    b_enc: normal(dSae, 0.2),
    W_dec: normal(dSae * dIn, 1 / Math.sqrt(dIn)),
    b_dec: normal(dIn, 0.3),
  };
}

interface Case {
  name: string;
  B: number;
  dIn: number;
  dSae: number;
  k: number;
  /** Fraction of latents marked dead; undefined: no AuxK. */
  deadFraction?: number;
  kAux?: number;
  /** standard SAE: L1 penalty coefficient (k should be d_sae: every positive pre is selected). */
  l1Coeff?: number;
}

const CASES: Case[] = [
  { name: 'B=1, d_in=7, k=1', B: 1, dIn: 7, dSae: 16, k: 1 },
  { name: 'B=1, d_in=7, k=1, AuxK', B: 1, dIn: 7, dSae: 16, k: 1, deadFraction: 0.5, kAux: 4 },
  { name: 'B=5, d_in=7, k=d_sae', B: 5, dIn: 7, dSae: 12, k: 12 },
  { name: 'B=5, d_in=7, k=d_sae, AuxK kAux > dead', B: 5, dIn: 7, dSae: 12, k: 12, deadFraction: 0.3, kAux: 64 },
  { name: 'B=9, d_in=13, k=3, AuxK kAux < dead', B: 9, dIn: 13, dSae: 40, k: 3, deadFraction: 0.6, kAux: 5 },
  { name: 'B=4, d_in=1, k=2, AuxK', B: 4, dIn: 1, dSae: 6, k: 2, deadFraction: 0.5, kAux: 2 },
  { name: 'standard (L1 by decoder norm), B=6, d_in=9', B: 6, dIn: 9, dSae: 20, k: 20, l1Coeff: 0.6 },
  { name: 'standard (L1 by decoder norm), B=1, d_in=3', B: 1, dIn: 3, dSae: 8, k: 8, l1Coeff: 2 },
];

/** Up to `count` distinct entries of [0, n), half from `preferred` (entries with signal). */
function sampleEntries(rng: Rng, n: number, count: number, preferred: number[]): number[] {
  const out = new Set<number>();
  if (n <= count) return Array.from({ length: n }, (_, q) => q);
  for (let tries = 0; out.size < count / 2 && preferred.length > 0 && tries < 4 * count; tries++) {
    out.add(preferred[rng.int(preferred.length)]!);
  }
  while (out.size < count) out.add(rng.int(n));
  return [...out];
}

describe('reference gradients match central finite differences of the reference loss', () => {
  CASES.forEach((c, caseIndex) => {
    it(c.name, () => {
      const rng = new Rng(seed + 7919 * caseIndex);
      // Tiny cases (d_in 1, 6 latents) can draw data where no dead latent has a positive
      // pre-activation, and AuxK then has nothing to select: such draws test nothing and are
      // redrawn (a few tries at most: each dead latent is positive on a row about half the time).
      let p: ReturnType<typeof randomParams>;
      let x: Float64Array;
      let auxK: AuxKConfig | undefined;
      let opts: LossOptions;
      let fwd: ReturnType<typeof referenceForward>;
      for (let draw = 0; ; draw++) {
        p = randomParams(rng, c.dIn, c.dSae);
        x = Float64Array.from({ length: c.B * c.dIn }, () => rng.normal());
        auxK = undefined;
        if (c.deadFraction !== undefined) {
          const dead = Array.from({ length: c.dSae }, () => rng.uniform() < c.deadFraction!);
          dead[0] = true; // at least one dead latent, so AuxK is active
          auxK = { kAux: c.kAux!, coeff: 0.7, dead };
        }
        opts = { k: c.k, inputScale: 0.8, ...(auxK ? { auxK } : {}), ...(c.l1Coeff ? { l1Coeff: c.l1Coeff } : {}) };
        fwd = referenceForward(p, x, opts);
        if (!auxK || draw >= 20 || fwd.auxSelection?.some((r) => r.length > 0)) break;
      }
      if (auxK) {
        expect(fwd.auxSelection).not.toBeNull();
        expect(fwd.auxSelection!.some((r) => r.length > 0)).toBe(true);
      }
      expect(fwd.selection.some((r) => r.length > 0)).toBe(true);
      if (c.l1Coeff) expect(fwd.l1Loss).toBeGreaterThan(0);
      // Hold the selections and the AuxK residual (a stop-gradient) fixed.
      const fixed: LossOptions = {
        ...opts,
        selection: fwd.selection,
        ...(fwd.auxSelection ? { auxSelection: fwd.auxSelection, auxResidual: fwd.auxResidual! } : {}),
      };
      const grads = referenceGradients(p, x, opts);
      const L0 = fwd.loss;

      const used = new Set<number>();
      fwd.selection.forEach((r) => r.forEach((j) => used.add(j)));
      fwd.auxSelection?.forEach((r) => r.forEach((j) => used.add(j)));
      const latents = [...used];
      const preferred: Record<keyof RefParams, number[]> = {
        W_enc: latents.flatMap((j) => Array.from({ length: c.dIn }, (_, i) => i * c.dSae + j)),
        b_enc: latents,
        W_dec: latents.flatMap((j) => Array.from({ length: c.dIn }, (_, i) => j * c.dIn + i)),
        b_dec: [],
      };

      let checked = 0;
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) {
        const n = p[name].length;
        const entries = name === 'b_dec' ? Array.from({ length: n }, (_, q) => q) : sampleEntries(rng, n, 20, preferred[name]);
        for (const q of entries) {
          const h = 1e-6 * Math.max(1, Math.abs(p[name][q]!));
          const plus = { ...p, [name]: Float64Array.from(p[name]) };
          const minus = { ...p, [name]: Float64Array.from(p[name]) };
          plus[name][q]! += h;
          minus[name][q]! -= h;
          const fd = (referenceLoss(plus, x, fixed) - referenceLoss(minus, x, fixed)) / (2 * h);
          const an = grads[name][q]!;
          // Relative 1e-6, plus an absolute floor for the loss's own rounding (~1e-16 L / h).
          const tol = 1e-6 * Math.max(Math.abs(an), Math.abs(fd)) + 1e-9 * Math.max(1, L0);
          if (Math.abs(an - fd) > tol) throw new Error(`${name}[${q}]: analytic ${an}, finite difference ${fd} (seed ${seed})`);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(0);
    });
  });
});

describe('reference forward', () => {
  it('selection: top k by value, ties to the lower index, only pre > 0', () => {
    expect(topKPositive([1, 2, 2, 2, 0.5, -1], 2)).toEqual([1, 2]);
    expect(topKPositive([3, 3, 3, 3], 3)).toEqual([0, 1, 2]);
    expect(topKPositive([0.1, 0, -1, 0.2], 4)).toEqual([0, 3]); // 0 is not > 0
    expect(topKPositive([5, 1, 1, 1], 2, (j) => j !== 0)).toEqual([1, 2]);
    expect(topKPositive([1, 2], 0)).toEqual([]);

    // Through the forward pass: W_enc = 0 makes pre = b_enc.
    const dIn = 3;
    const b_enc = Float64Array.from([0.5, 2, 1, 2, 2, -1, 1, 0]);
    const dSae = b_enc.length;
    const p: RefParams = { W_enc: new Float64Array(dIn * dSae), b_enc, W_dec: new Float64Array(dSae * dIn), b_dec: new Float64Array(dIn) };
    const dead = [true, false, false, true, true, true, true, true];
    const fwd = referenceForward(p, new Float64Array(2 * dIn), { k: 2, auxK: { kAux: 2, coeff: 1, dead } });
    expect(fwd.selection).toEqual([
      [1, 3],
      [1, 3],
    ]);
    expect(fwd.auxSelection).toEqual([
      [3, 4],
      [3, 4],
    ]);
    const wide = referenceForward(p, new Float64Array(dIn), { k: dSae, auxK: { kAux: 8, coeff: 1, dead } });
    expect(wide.selection).toEqual([[0, 1, 2, 3, 4, 6]]);
    expect(wide.auxSelection).toEqual([[0, 3, 4, 6]]); // kEff = 6 dead, then pre > 0
  });

  it('an external selection is used as given', () => {
    const rng = new Rng(seed + 2);
    const p = randomParams(rng, 4, 10);
    const x = Float64Array.from({ length: 2 * 4 }, () => rng.normal());
    const own = referenceForward(p, x, { k: 3 });
    const forced = [[9, 0], [5]];
    const fwd = referenceForward(p, x, { k: 3, selection: forced });
    expect(fwd.selection).toEqual([[0, 9], [5]]);
    expect(fwd.metrics.l0).toBe(1.5);
    expect(fwd.fires[0]).toBe(1);
    expect(fwd.fires[5]).toBe(1);
    expect(referenceLoss(p, x, { k: 3, selection: own.selection })).toBe(own.loss);
    expect(() => referenceForward(p, x, { k: 3, selection: [[10], []] })).toThrow(/out of/);
    expect(() => referenceForward(p, x, { k: 3, selection: [[1, 1], []] })).toThrow(/repeated/);
  });

  it('identity SAE on positive inputs: exact reconstruction with k = d_in, the largest k entries otherwise', () => {
    const dIn = 5;
    const eye = new Float64Array(dIn * dIn);
    for (let i = 0; i < dIn; i++) eye[i * dIn + i] = 1;
    const p: RefParams = { W_enc: eye, b_enc: new Float64Array(dIn), W_dec: eye, b_dec: new Float64Array(dIn) };
    const x = Float64Array.from([1, 5, 3, 2, 4, 2, 2, 1, 1, 3]);
    const full = referenceForward(p, x, { k: dIn, inputScale: 2 });
    expect(full.mseLoss).toBe(0);
    expect(full.metrics.fvu).toBe(0);
    expect(full.metrics.l0).toBe(5);
    const two = referenceForward(p, x, { k: 2, inputScale: 2 });
    expect(two.selection).toEqual([
      [1, 4],
      [0, 4],
    ]);
    // Errors: row 0 misses 2*(1, 3, 2), row 1 misses 2*(2, 1, 1) (ties to the lower index kept 0).
    expect(two.mseLoss).toBeCloseTo((4 * (1 + 9 + 4) + 4 * (4 + 1 + 1)) / 2, 12);
    const xs = Array.from(x, (v) => 2 * v);
    const mean = Array.from({ length: dIn }, (_, i) => (xs[i]! + xs[dIn + i]!) / 2);
    const variance = xs.reduce((s, v, q) => s + (v - mean[q % dIn]!) ** 2, 0);
    expect(two.metrics.fvu).toBeCloseTo((4 * (14 + 6)) / variance, 12);
    expect(Array.from(two.fires)).toEqual([1, 1, 0, 0, 2]);
  });

  it('AuxK weight: coeff * min(dead / kAux, 1); inactive without dead latents or with coeff 0', () => {
    const rng = new Rng(seed + 3);
    const p = randomParams(rng, 6, 10);
    const x = Float64Array.from({ length: 4 * 6 }, () => rng.normal());
    const dead = Array.from({ length: 10 }, (_, j) => j < 4);
    expect(referenceForward(p, x, { k: 2, auxK: { kAux: 8, coeff: 0.5, dead } }).auxWeight).toBeCloseTo(0.25, 15);
    expect(referenceForward(p, x, { k: 2, auxK: { kAux: 2, coeff: 0.5, dead } }).auxWeight).toBe(0.5);
    const none = referenceForward(p, x, { k: 2, auxK: { kAux: 2, coeff: 0.5, dead: dead.map(() => false) } });
    expect(none.auxSelection).toBeNull();
    expect(none.auxLoss).toBe(0);
    expect(referenceForward(p, x, { k: 2, auxK: { kAux: 2, coeff: 0, dead } }).auxSelection).toBeNull();
  });
});

describe('reference optimizer step', () => {
  it('parallel removal makes each decoder-row gradient orthogonal to its row (zero rows skipped)', () => {
    const rng = new Rng(seed + 4);
    const dIn = 7;
    const dSae = 9;
    const W_dec = Float64Array.from({ length: dSae * dIn }, () => rng.normal());
    W_dec.fill(0, 2 * dIn, 3 * dIn); // row 2 is zero
    const g = Float64Array.from({ length: dSae * dIn }, () => rng.normal());
    const before = Float64Array.from(g);
    removeParallelDecoderGrad(W_dec, g, dIn);
    for (let j = 0; j < dSae; j++) {
      let dot = 0;
      let gg = 0;
      for (let i = 0; i < dIn; i++) {
        dot += g[j * dIn + i]! * W_dec[j * dIn + i]!;
        gg += g[j * dIn + i]! ** 2;
      }
      expect(Math.abs(dot)).toBeLessThan(1e-12 * Math.sqrt(gg) + 1e-14);
    }
    expect(Array.from(g.subarray(2 * dIn, 3 * dIn))).toEqual(Array.from(before.subarray(2 * dIn, 3 * dIn)));
  });

  it('clipping scales the global norm to clip; not below clip; clip 0 disables', () => {
    const rng = new Rng(seed + 5);
    const make = () => {
      const g = zerosLike({ W_enc: new Float64Array(12), b_enc: new Float64Array(4), W_dec: new Float64Array(12), b_dec: new Float64Array(3) });
      for (const t of Object.values(g)) for (let q = 0; q < t.length; q++) t[q] = rng.normal();
      return g;
    };
    const g = make();
    const G = globalNorm(g);
    const copy = { W_enc: Float64Array.from(g.W_enc), b_enc: Float64Array.from(g.b_enc), W_dec: Float64Array.from(g.W_dec), b_dec: Float64Array.from(g.b_dec) };
    expect(clipGradients(g, G / 3)).toBe(G);
    expect(globalNorm(g)).toBeCloseTo(G / 3, 12);
    expect(g.b_dec[1]).toBeCloseTo(copy.b_dec[1]! / 3, 14);
    const h = make();
    const H = globalNorm(h);
    const hb = Float64Array.from(h.W_enc);
    expect(clipGradients(h, 2 * H)).toBe(H);
    expect(h.W_enc).toEqual(hb);
    expect(clipGradients(h, 0)).toBe(H);
    expect(h.W_enc).toEqual(hb);
  });

  // dIn = 2, dSae = 2; every number below is worked out by hand.
  const params = (): RefParams => ({
    W_enc: Float64Array.from([0.1, -0.2, 0.3, 0.4]),
    b_enc: Float64Array.from([0.05, -0.05]),
    W_dec: Float64Array.from([3, 4, 0, 2]), // row 0 norm 5, row 1 norm 2
    b_dec: Float64Array.from([1, -1]),
  });
  const hp = { lr: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8 };

  it('Adam t = 1 against a hand computation (parallel removal, no clip, renormalization)', () => {
    const p = params();
    const grads: RefParams = {
      W_enc: Float64Array.from([0.5, -2, 0, 1e-3]),
      b_enc: Float64Array.from([4, -0.25]),
      W_dec: Float64Array.from([1, 0, 3, 0]),
      b_dec: Float64Array.from([0, -1]),
    };
    const r = referenceAdamStep(p, grads, referenceAdamInit(p), { ...hp, clip: 0, t: 1 });
    // W_dec row 0: g = (1,0) - (3/25)(3,4) = (16/25, -12/25). Row 1: g = (3,0) - 0 = (3,0).
    expect(r.grads.W_dec[0]).toBeCloseTo(16 / 25, 15);
    expect(r.grads.W_dec[1]).toBeCloseTo(-12 / 25, 15);
    expect(Array.from(r.grads.W_dec.subarray(2))).toEqual([3, 0]);
    const G = Math.sqrt(0.25 + 4 + 1e-6 + 16 + 0.0625 + (16 / 25) ** 2 + (12 / 25) ** 2 + 9 + 1);
    expect(r.gradNorm).toBeCloseTo(G, 13);
    // At t = 1, m_hat = g and v_hat = g^2: the update is lr * g / (|g| + eps).
    const upd = (g: number) => (hp.lr * g) / (Math.abs(g) + hp.eps);
    expect(r.params.W_enc[0]).toBeCloseTo(0.1 - upd(0.5), 15);
    expect(r.params.W_enc[1]).toBeCloseTo(-0.2 - upd(-2), 15);
    expect(r.params.W_enc[2]).toBe(0.3);
    expect(r.params.W_enc[3]).toBeCloseTo(0.4 - upd(1e-3), 15);
    expect(r.params.b_enc[0]).toBeCloseTo(0.05 - upd(4), 15);
    expect(r.params.b_enc[1]).toBeCloseTo(-0.05 - upd(-0.25), 15);
    expect(r.params.b_dec[0]).toBe(1);
    expect(r.params.b_dec[1]).toBeCloseTo(-1 - upd(-1), 15);
    const w0 = [3 - upd(16 / 25), 4 - upd(-12 / 25)];
    const n0 = Math.hypot(w0[0]!, w0[1]!);
    expect(r.params.W_dec[0]).toBeCloseTo(w0[0]! / n0, 15);
    expect(r.params.W_dec[1]).toBeCloseTo(w0[1]! / n0, 15);
    const w1 = [0 - upd(3), 2];
    const n1 = Math.hypot(w1[0]!, w1[1]!);
    expect(r.params.W_dec[2]).toBeCloseTo(w1[0]! / n1, 15);
    expect(r.params.W_dec[3]).toBeCloseTo(w1[1]! / n1, 15);
    // State: m = 0.1 g, v = 0.001 g^2.
    expect(r.state.m.b_enc[0]).toBeCloseTo(0.4, 15);
    expect(r.state.v.b_enc[0]).toBeCloseTo(0.016, 15);
    // Inputs are untouched.
    expect(Array.from(p.W_dec)).toEqual([3, 4, 0, 2]);
    expect(grads.W_dec[0]).toBe(1);
  });

  it('Adam t = 1 with clipping: gradients scaled by clip / G before the moments', () => {
    const p = params();
    const grads: RefParams = {
      W_enc: Float64Array.from([3, 0, 0, 0]),
      b_enc: Float64Array.from([0, 0]),
      W_dec: Float64Array.from([3, 4, 0, 0]), // parallel to row 0: removed entirely
      b_dec: Float64Array.from([0, 4]),
    };
    const r = referenceAdamStep(p, grads, referenceAdamInit(p), { ...hp, clip: 1, t: 1 });
    expect(r.gradNorm).toBeCloseTo(5, 14); // sqrt(9 + 16), the W_dec part removed first
    expect(r.grads.W_enc[0]).toBeCloseTo(0.6, 15);
    expect(r.grads.b_dec[1]).toBeCloseTo(0.8, 15);
    expect(globalNorm(r.grads)).toBeCloseTo(1, 14);
    expect(r.state.m.W_enc[0]).toBeCloseTo(0.06, 15);
    expect(r.state.v.b_dec[1]).toBeCloseTo(0.001 * 0.64, 15);
    expect(r.params.W_dec[0]).toBeCloseTo(0.6, 15); // row 0 unchanged, normalized
    expect(r.params.W_dec[1]).toBeCloseTo(0.8, 15);
  });

  it('Adam t = 3 against the closed-form moments', () => {
    const p0 = params();
    for (let j = 0; j < 2; j++) {
      const n = Math.hypot(p0.W_dec[2 * j]!, p0.W_dec[2 * j + 1]!);
      p0.W_dec[2 * j]! /= n;
      p0.W_dec[2 * j + 1]! /= n;
    }
    const seq = [
      { W_enc: [0.5, -1, 2, 0], b_enc: [1, 0.1], b_dec: [-0.3, 0.7] },
      { W_enc: [-0.5, -2, 1, 0.2], b_enc: [3, -0.1], b_dec: [0.3, 0.7] },
      { W_enc: [0.25, 1, -4, 0], b_enc: [-2, 0.2], b_dec: [0, -0.7] },
    ];
    let p = p0;
    let state = referenceAdamInit(p0);
    seq.forEach((s, step) => {
      const grads: RefParams = {
        W_enc: Float64Array.from(s.W_enc),
        b_enc: Float64Array.from(s.b_enc),
        W_dec: new Float64Array(4),
        b_dec: Float64Array.from(s.b_dec),
      };
      const r = referenceAdamStep(p, grads, state, { ...hp, clip: 0, t: step + 1 });
      p = r.params;
      state = r.state;
    });
    // m_t = (1-b1) sum_s b1^(t-s) g_s, v_t likewise; each step's update uses m_t, v_t of that step.
    for (const name of ['W_enc', 'b_enc', 'b_dec'] as const) {
      for (let q = 0; q < p0[name].length; q++) {
        let expected = p0[name][q]!;
        let m = 0;
        let v = 0;
        for (let t = 1; t <= 3; t++) {
          m = 0;
          v = 0;
          for (let s = 1; s <= t; s++) {
            const g = seq[s - 1]![name][q]!;
            m += (1 - hp.b1) * hp.b1 ** (t - s) * g;
            v += (1 - hp.b2) * hp.b2 ** (t - s) * g * g;
          }
          expected -= (hp.lr * (m / (1 - hp.b1 ** t))) / (Math.sqrt(v / (1 - hp.b2 ** t)) + hp.eps);
        }
        expect(p[name][q]).toBeCloseTo(expected, 14);
        expect(state.m[name][q]).toBeCloseTo(m, 15);
        expect(state.v[name][q]).toBeCloseTo(v, 15);
      }
    }
    // Zero decoder gradients: the unit rows stay put.
    for (let q = 0; q < 4; q++) expect(p.W_dec[q]).toBeCloseTo(p0.W_dec[q]!, 15);
  });

  it('a full step: metrics and gradNorm are consistent, decoder rows come out unit-norm', () => {
    const rng = new Rng(seed + 6);
    const dIn = 7;
    const dSae = 20;
    const p = randomParams(rng, dIn, dSae);
    const x = Float32Array.from({ length: 6 * dIn }, () => rng.normal());
    const dead = Array.from({ length: dSae }, (_, j) => j % 3 === 0);
    const r = referenceTrainStep(p, x, { k: 4, auxK: { kAux: 3, coeff: 1 / 32, dead } }, referenceAdamInit(p), { ...hp, clip: 0.5, t: 1 });
    expect(r.metrics.mse).toBe(r.forward.mseLoss);
    expect(r.metrics.auxLoss).toBeGreaterThan(0);
    expect(r.metrics.l0).toBe(r.forward.selection.reduce((s, row) => s + row.length, 0) / 6);
    expect(Array.from(r.fires).reduce((a, b) => a + b, 0)).toBe(r.metrics.l0 * 6);
    expect(r.metrics.gradNorm).toBeGreaterThan(0.5);
    expect(globalNorm(r.step.grads)).toBeCloseTo(0.5, 12);
    for (let j = 0; j < dSae; j++) {
      let ww = 0;
      for (let i = 0; i < dIn; i++) ww += r.step.params.W_dec[j * dIn + i]! ** 2;
      expect(ww).toBeCloseTo(1, 12);
    }
  });
});
