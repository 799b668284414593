// The native trainer (fp32, multithreaded) held to the float64 reference of
// test/helpers/trainReference.ts, which is itself checked against finite differences in
// train.reference.test.ts.
//
// Tolerances, and why:
// - Selections: the native top-k must be a valid top-k of the float64 pre-activations: no
//   unselected value may beat a selected one by more than fp32 rounding of a d_in-term dot
//   product (1e-5 relative to the row's scale). The reference is then fed the native selection
//   so gradients are compared on the same piecewise-smooth branch.
// - Gradients: fp32 sums of at most B * (k + k_aux) products, each itself a d_in-term fp32
//   dot product: relative error ~1e-6 of the tensor's scale; we allow 2e-4 of its max |value|.
// - Adam: the update m / (sqrt(v) + eps) is a sign function where |g| >> eps, so a gradient
//   that is ~0 up to rounding could flip a whole lr-sized step. The test sets eps to 5% of the
//   gradients' RMS, which bounds d(update)/dg by lr / eps; the parameters must then agree to
//   1e-3 lr plus fp32 rounding.
import { afterAll, describe, expect, test } from 'vitest';
import { cpuVariant, setCpuVariant, setThreads, threads } from '../src/system.js';
import { Rng } from '../src/synthetic.js';
import { SaeTrainer, defaultTrainerConfig, type TrainerConfig, type TrainParams } from '../src/train/trainer.js';
import { NonFiniteInputError, ValidationError } from '../src/errors.js';
import { createSae } from '../src/sae.js';
import {
  referenceAdamInit,
  referenceAdamStep,
  referenceForward,
  gradientsFromForward,
  jumpReluThresholdGrad,
  type RefParams,
  type Selection,
} from './helpers/trainReference.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.native.test.ts');
const defaultThreads = threads();
afterAll(() => setThreads(defaultThreads));

function randomParams(rng: Rng, dIn: number, dSae: number): TrainParams {
  const W_dec = rng.fillNormal(new Float32Array(dSae * dIn));
  for (let j = 0; j < dSae; j++) {
    let n = 0;
    for (let i = 0; i < dIn; i++) n += W_dec[j * dIn + i]! ** 2;
    for (let i = 0; i < dIn; i++) W_dec[j * dIn + i]! /= Math.sqrt(n);
  }
  return {
    W_enc: rng.fillNormal(new Float32Array(dIn * dSae), 1 / Math.sqrt(dIn)),
    b_enc: rng.fillNormal(new Float32Array(dSae), 0.1),
    W_dec,
    b_dec: rng.fillNormal(new Float32Array(dIn), 0.1),
  };
}

function selectionOf(sel: { indptr: Uint32Array; indices: Int32Array }): number[][] {
  const out: number[][] = [];
  for (let r = 0; r + 1 < sel.indptr.length; r++) out.push([...sel.indices.subarray(sel.indptr[r]!, sel.indptr[r + 1]!)]);
  return out;
}

/** Every selected latent's float64 pre is >= every eligible unselected one (up to rounding). */
function expectValidTopK(pre: Float64Array, dSae: number, sel: Selection, k: number, eligible: (j: number) => boolean): void {
  sel.forEach((row, r) => {
    const p = pre.subarray(r * dSae, (r + 1) * dSae);
    const scale = Math.max(1e-30, ...[...p].map(Math.abs));
    const chosen = new Set(row);
    expect(row.length).toBeLessThanOrEqual(k);
    const minChosen = Math.min(...row.map((j) => p[j]!));
    let maxOther = -Infinity;
    let positiveOthers = 0;
    for (let j = 0; j < dSae; j++) {
      if (chosen.has(j) || !eligible(j)) continue;
      maxOther = Math.max(maxOther, p[j]!);
      if (p[j]! > 1e-5 * scale) positiveOthers++;
    }
    for (const j of row) expect(p[j]!).toBeGreaterThan(-1e-5 * scale);
    if (row.length > 0) expect(maxOther).toBeLessThanOrEqual(minChosen + 1e-5 * scale);
    if (row.length < k) expect(positiveOthers).toBe(0); // fewer than k only when no positive value is left
  });
}

function expectClose(name: string, got: Float32Array, want: Float64Array, rel: number): void {
  expect(got.length).toBe(want.length);
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  const tol = rel * Math.max(scale, 1e-12);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  expect(worst, `${name}: worst |diff| ${worst} at ${at} (got ${got[at]}, want ${want[at]}), tolerance ${tol}`).toBeLessThanOrEqual(tol);
}

interface Case {
  B: number;
  dIn: number;
  dSae: number;
  k: number;
  kAux: number;
  deadFraction: number;
  inputScale: number;
}

const cases: Case[] = [
  { B: 1, dIn: 7, dSae: 19, k: 1, kAux: 3, deadFraction: 0.3, inputScale: 1 },
  { B: 37, dIn: 33, dSae: 101, k: 5, kAux: 8, deadFraction: 0.25, inputScale: 2.5 },
  { B: 64, dIn: 48, dSae: 96, k: 96, kAux: 0, deadFraction: 0, inputScale: 0.7 }, // k = d_sae
  { B: 50, dIn: 65, dSae: 200, k: 8, kAux: 40, deadFraction: 0.1, inputScale: 1.3 }, // fewer dead than k_aux
  { B: 170, dIn: 16, dSae: 64, k: 4, kAux: 6, deadFraction: 0.5, inputScale: 1 }, // more rows than one encode block
];

function setup(c: Case, rng: Rng) {
  const params = randomParams(rng, c.dIn, c.dSae);
  const x = rng.fillNormal(new Float32Array(c.B * c.dIn));
  const deadTokens = 1000;
  const since = new Float64Array(c.dSae);
  const dead = new Uint8Array(c.dSae);
  for (let j = 0; j < c.dSae; j++)
    if (rng.uniform() < c.deadFraction) {
      since[j] = deadTokens + rng.int(50);
      dead[j] = 1;
    } else since[j] = rng.int(deadTokens);
  const config: TrainerConfig = {
    ...defaultTrainerConfig(c.dIn, c.dSae, c.k),
    kAux: c.kAux,
    auxCoeff: c.kAux > 0 ? 0.25 : 0,
    deadTokens,
    inputScale: c.inputScale,
  };
  return { params, x, since, dead, config };
}

// Every CPU kernel variant (encode and the AuxK matrix products have per-ISA code), both
// thread counts on the default variant.
const runs: Array<{ nThreads: number; variant: 'auto' | 'generic' | 'avx2' | 'avx512' }> = [
  { nThreads: 1, variant: 'auto' },
  { nThreads: 2, variant: 'auto' },
  ...cpuVariant()
    .supported.filter((v) => v !== cpuVariant().best)
    .map((variant) => ({ nThreads: 2, variant })),
];
afterAll(() => setCpuVariant('auto'));

describe.each(runs)('native trainer vs float64 reference ($nThreads threads, $variant kernels)', ({ nThreads, variant }) => {
  afterAll(() => setCpuVariant('auto'));
  test.each(variant === 'auto' ? cases : cases.filter((c) => c.kAux > 0))('gradients and two Adam steps: %o', async (c) => {
    setThreads(nThreads);
    setCpuVariant(variant);
    const rng = new Rng(seed + c.B * 7 + c.dSae);
    const { params, x, since, dead, config } = setup(c, rng);
    const trainer = await SaeTrainer.create(config, params);
    try {
      trainer.loadState({ ...trainer.state(), tensors: { ...trainer.state().tensors, since_fired: since } });
      const auxK = c.kAux > 0 ? { kAux: c.kAux, coeff: config.auxCoeff, dead } : undefined;

      // Gradients (nothing applied).
      const { metrics, grads } = await trainer.gradients(x);
      const sel = selectionOf(trainer.lastSelection(false));
      const auxSel = selectionOf(trainer.lastSelection(true));
      const free = referenceForward(params, x, { k: c.k, inputScale: c.inputScale, ...(auxK && { auxK }) });
      expectValidTopK(free.pre, c.dSae, sel, c.k, () => true);
      if (free.auxSelection) expectValidTopK(free.pre, c.dSae, auxSel, Math.min(c.kAux, dead.reduce((a, b) => a + b, 0)), (j) => dead[j] === 1);
      else expect(auxSel.every((r) => r.length === 0)).toBe(true);

      const fwd = referenceForward(params, x, {
        k: c.k,
        inputScale: c.inputScale,
        ...(auxK && { auxK, auxSelection: auxSel }),
        selection: sel,
      });
      const ref = gradientsFromForward(params, fwd);
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) expectClose(`grad ${name}`, grads[name], ref[name], 2e-4);
      expect(metrics.mse).toBeCloseTo(fwd.metrics.mse, 4);
      expect(Math.abs(metrics.mse - fwd.metrics.mse)).toBeLessThan(1e-5 * fwd.metrics.mse + 1e-9);
      if (c.B > 1) expect(Math.abs(metrics.fvu - fwd.metrics.fvu)).toBeLessThan(1e-5 * fwd.metrics.fvu + 1e-9);
      expect(metrics.l0).toBe(fwd.metrics.l0);
      expect(Math.abs(metrics.auxLoss - fwd.auxLoss)).toBeLessThan(1e-5 * fwd.auxLoss + 1e-9);
      expect(metrics.deadFraction).toBeCloseTo(dead.reduce((a, b) => a + b, 0) / c.dSae, 12);
      // The gradient call changed nothing.
      expect(trainer.params().W_dec).toEqual(params.W_dec);

      // Two optimizer steps, the second with clipping active.
      let refParams: RefParams | TrainParams = params;
      let state = referenceAdamInit(params);
      let since2 = since;
      for (let t = 1; t <= 2; t++) {
        const xt = t === 1 ? x : rng.fillNormal(new Float32Array(c.B * c.dIn));
        const deadNow = new Uint8Array(c.dSae).map((_, j) => (since2[j]! >= config.deadTokens ? 1 : 0));
        const auxNow = c.kAux > 0 ? { kAux: c.kAux, coeff: config.auxCoeff, dead: deadNow } : undefined;
        const probe = referenceForward(refParams, xt, { k: c.k, inputScale: c.inputScale, ...(auxNow && { auxK: auxNow }) });
        const g = gradientsFromForward(refParams, probe);
        let ss = 0;
        let count = 0;
        for (const a of Object.values(g)) for (const v of a as Float64Array) (ss += v * v), count++;
        const eps = 0.05 * Math.sqrt(ss / count);
        const rawNorm = Math.sqrt(ss);
        const clip = t === 2 ? 0.5 * rawNorm : 0; // the parallel removal lowers the norm a little: still clipped
        const lr = 1e-2;
        // eps and clip are read from the trainer's config at every step.
        trainer.config.eps = eps;
        trainer.config.clip = clip;
        const m = await trainer.trainStep(xt, lr);
        const selT = selectionOf(trainer.lastSelection(false));
        const auxT = selectionOf(trainer.lastSelection(true));
        expectValidTopK(probe.pre, c.dSae, selT, c.k, () => true);
        const f = referenceForward(refParams, xt, {
          k: c.k,
          inputScale: c.inputScale,
          selection: selT,
          ...(auxNow && { auxK: auxNow, auxSelection: auxT }),
        });
        const step = referenceAdamStep(refParams, gradientsFromForward(refParams, f), state, { lr, b1: 0.9, b2: 0.999, eps, clip, t });
        expect(Math.abs(m.gradNorm - step.gradNorm)).toBeLessThan(1e-4 * step.gradNorm);
        const now = trainer.params();
        for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) {
          const want = step.params[name];
          let worst = 0;
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(now[name][i]! - want[i]!) - 1e-6 * Math.abs(want[i]!));
          expect(worst, `step ${t} ${name}`).toBeLessThanOrEqual(1e-3 * lr);
        }
        refParams = toParams(now); // continue from the native state (keeps rounding from compounding)
        state = step.state;
        const fires = new Uint8Array(c.dSae);
        for (const row of selT) for (const j of row) fires[j] = 1;
        since2 = since2.map((s, j) => (fires[j] ? 0 : s + c.B));
        expect(trainer.state().tensors.since_fired).toEqual(since2);
      }
    } finally {
      trainer.dispose();
    }
  });
});

function toParams(p: TrainParams): TrainParams {
  return { W_enc: p.W_enc, b_enc: p.b_enc, W_dec: p.W_dec, b_dec: p.b_dec };
}

test('results do not depend on the thread count (bit-exact)', async () => {
  const rng = new Rng(seed ^ 0x55);
  const c: Case = { B: 300, dIn: 40, dSae: 160, k: 6, kAux: 10, deadFraction: 0, inputScale: 1.7 };
  const { params, config } = setup(c, rng);
  config.deadTokens = 600; // latents that stay silent for two steps become dead: AuxK runs
  const batches = Array.from({ length: 6 }, () => rng.fillNormal(new Float32Array(c.B * c.dIn)));
  const runs: TrainParams[] = [];
  for (const n of [1, 2]) {
    setThreads(n);
    const t = await SaeTrainer.create(config, params);
    for (const b of batches) await t.trainStep(b, 5e-3);
    runs.push(t.params());
    t.dispose();
  }
  for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) expect(runs[1]![name]).toEqual(runs[0]![name]);
});

// The topk forward runs the encode kernel the inference encode would (measured, or forced by
// SAEKIT_ENCODE_KERNEL); every screen gives the fp32 kernel's codes bit for bit, and its copy is
// rebuilt after each optimizer step, so training is the same bits whichever kernel runs.
test('the forward encode kernel does not change training (each screen vs fp32, bit-exact, AuxK on)', async () => {
  setThreads(2);
  const rng = new Rng(seed ^ 0x99);
  const c: Case = { B: 300, dIn: 72, dSae: 700, k: 9, kAux: 20, deadFraction: 0, inputScale: 1.3 };
  const { params, config } = setup(c, rng);
  config.deadTokens = 600;
  const batches = Array.from({ length: 5 }, () => rng.fillNormal(new Float32Array(c.B * c.dIn)));
  const kernels = ['fp32', ...cpuVariant().screens.filter((s) => s !== 'amx-bf16')];
  if (cpuVariant().screens.includes('amx-bf16')) kernels.push('amx-bf16');
  const saved = process.env.SAEKIT_ENCODE_KERNEL;
  const runs: TrainParams[] = [];
  try {
    for (const k of kernels) {
      process.env.SAEKIT_ENCODE_KERNEL = k;
      const t = await SaeTrainer.create(config, params);
      for (const b of batches) await t.trainStep(b, 5e-3);
      runs.push(t.params());
      t.dispose();
    }
  } finally {
    if (saved === undefined) delete process.env.SAEKIT_ENCODE_KERNEL;
    else process.env.SAEKIT_ENCODE_KERNEL = saved;
  }
  for (let r = 1; r < runs.length; r++)
    for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) expect(runs[r]![name], `${kernels[r]} ${name}`).toEqual(runs[0]![name]);
});

test('the saved SAE (input scale folded in) encodes raw inputs as the trainer selects scaled ones', async () => {
  const rng = new Rng(seed ^ 0x77);
  const c: Case = { B: 40, dIn: 24, dSae: 90, k: 7, kAux: 0, deadFraction: 0, inputScale: 3.25 };
  const { params, x, config } = setup(c, rng);
  const trainer = await SaeTrainer.create(config, params);
  for (let s = 0; s < 3; s++) await trainer.trainStep(rng.fillNormal(new Float32Array(c.B * c.dIn)), 1e-2);
  await trainer.gradients(x);
  const sel = selectionOf(trainer.lastSelection(false));
  const sae = await createSae(trainer.weights());
  const codes = await sae.encode(x);
  const p = trainer.params();
  const fwd = referenceForward(p, x, { k: c.k, inputScale: c.inputScale });
  expectValidTopK(fwd.pre, c.dSae, selectionOf({ indptr: codes.indptr, indices: codes.indices }), c.k, () => true);
  expectValidTopK(fwd.pre, c.dSae, sel, c.k, () => true);
  sae.dispose();
  trainer.dispose();
});

describe('bad input', () => {
  test('a NaN in a batch names its row and column and changes nothing', async () => {
    const rng = new Rng(seed ^ 0x99);
    const { params, config } = setup({ B: 10, dIn: 12, dSae: 30, k: 3, kAux: 0, deadFraction: 0, inputScale: 1 }, rng);
    const trainer = await SaeTrainer.create(config, params);
    const x = rng.fillNormal(new Float32Array(10 * 12));
    x[6 * 12 + 5] = Number.NaN;
    x[8 * 12 + 1] = Number.POSITIVE_INFINITY;
    const err = await trainer.trainStep(x, 1e-2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteInputError);
    expect((err as NonFiniteInputError).row).toBe(6);
    expect((err as NonFiniteInputError).col).toBe(5);
    expect(trainer.step).toBe(0);
    expect(trainer.params()).toEqual(params);
    trainer.dispose();
  });

  test('shapes, k > d_sae, disposed trainer, concurrent access', async () => {
    const rng = new Rng(seed ^ 0x11);
    const { params, config } = setup({ B: 4, dIn: 8, dSae: 16, k: 2, kAux: 0, deadFraction: 0, inputScale: 1 }, rng);
    await expect(SaeTrainer.create({ ...config, k: 17 }, params)).rejects.toThrow(/k but received 17/);
    await expect(SaeTrainer.create(config, { ...params, b_dec: new Float32Array(7) })).rejects.toThrow(ValidationError);
    const trainer = await SaeTrainer.create(config, params);
    await expect(trainer.trainStep(new Float32Array(9), 1e-3)).rejects.toThrow(/expected \[rows, 8\]/);
    await expect(trainer.trainStep(new Float32Array(0), 1e-3)).rejects.toThrow(/rows >= 1/);
    const pending = trainer.trainStep(new Float32Array(64 * 8).fill(0.5), 1e-3);
    expect(() => trainer.params()).toThrow(/in flight/);
    await pending;
    trainer.dispose();
    await expect(trainer.trainStep(new Float32Array(8), 1e-3)).rejects.toThrow(/disposed/);
  });
});

/** A valid batch top-k: the k*B largest positive values of the whole batch (up to rounding). */
function expectValidBatchTopK(pre: Float64Array, sel: Selection, want: number): void {
  const chosen: number[] = [];
  const others: number[] = [];
  let scale = 1e-30;
  sel.forEach((row, r) => {
    const s = new Set(row);
    const dSae = pre.length / sel.length;
    for (let j = 0; j < dSae; j++) {
      const v = pre[r * dSae + j]!;
      scale = Math.max(scale, Math.abs(v));
      (s.has(j) ? chosen : others).push(v);
    }
  });
  const positives = [...chosen, ...others].filter((v) => v > 0).length;
  expect(chosen.length).toBe(Math.min(want, positives));
  const minChosen = Math.min(...chosen);
  const maxOther = Math.max(...others);
  expect(minChosen).toBeGreaterThan(-1e-5 * scale);
  expect(maxOther).toBeLessThanOrEqual(minChosen + 1e-5 * scale);
}

describe.each(['batchtopk', 'standard'] as const)('%s: native vs float64 reference', (arch) => {
  const archCases: Case[] = [
    { B: 1, dIn: 9, dSae: 23, k: 3, kAux: 4, deadFraction: 0.3, inputScale: 1 },
    { B: 45, dIn: 31, dSae: 77, k: 4, kAux: 6, deadFraction: 0.2, inputScale: 1.6 },
  ];
  test.each(archCases)('gradients and an Adam step: %o', async (c) => {
    const rng = new Rng(seed + 13 * c.B + c.dSae + (arch === 'standard' ? 1 : 0));
    const { params, x, since, dead, config } = setup(c, rng);
    if (arch === 'standard') for (let q = 0; q < params.W_dec.length; q++) params.W_dec[q]! *= 0.3 + rng.uniform(); // free rows
    const cfg: TrainerConfig = { ...config, architecture: arch, l1Coeff: 0.8 };
    const trainer = await SaeTrainer.create(cfg, params);
    try {
      const st = trainer.state();
      trainer.loadState({ ...st, tensors: { ...st.tensors, since_fired: since } });
      const { metrics, grads } = await trainer.gradients(x);
      const sel = selectionOf(trainer.lastSelection(false));
      const auxSel = selectionOf(trainer.lastSelection(true));
      const auxK = arch === 'batchtopk' && c.kAux > 0 ? { kAux: c.kAux, coeff: cfg.auxCoeff, dead } : undefined;
      const free = referenceForward(params, x, { k: c.dSae, inputScale: c.inputScale });
      if (arch === 'batchtopk') expectValidBatchTopK(free.pre, sel, c.k * c.B);
      else expectValidTopK(free.pre, c.dSae, sel, c.dSae, () => true); // every positive value
      if (arch === 'standard') expect(auxSel.every((r) => r.length === 0)).toBe(true);
      const fwd = referenceForward(params, x, {
        k: c.dSae,
        inputScale: c.inputScale,
        selection: sel,
        ...(auxK && { auxK, auxSelection: auxSel }),
        ...(arch === 'standard' && { l1Coeff: cfg.l1Coeff }),
      });
      const ref = gradientsFromForward(params, fwd);
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) expectClose(`${arch} grad ${name}`, grads[name], ref[name], 2e-4);
      expect(Math.abs(metrics.sparsityLoss - fwd.l1Loss)).toBeLessThan(1e-5 * fwd.l1Loss + 1e-9);
      expect(Math.abs(metrics.auxLoss - fwd.auxLoss)).toBeLessThan(1e-5 * fwd.auxLoss + 1e-9);

      // One optimizer step (eps sized as in the topk test).
      let ss = 0;
      let count = 0;
      for (const a of Object.values(ref)) for (const v of a as Float64Array) (ss += v * v), count++;
      trainer.config.eps = 0.05 * Math.sqrt(ss / count);
      const lr = 1e-2;
      await trainer.trainStep(x, lr);
      const step = referenceAdamStep(params, ref, referenceAdamInit(params), {
        lr,
        b1: 0.9,
        b2: 0.999,
        eps: trainer.config.eps,
        clip: 0,
        t: 1,
        unitDecoder: arch !== 'standard',
      });
      const now = trainer.params();
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) {
        let worst = 0;
        for (let i = 0; i < now[name].length; i++) worst = Math.max(worst, Math.abs(now[name][i]! - step.params[name][i]!) - 1e-6 * Math.abs(step.params[name][i]!));
        expect(worst, `${arch} step ${name}`).toBeLessThanOrEqual(1e-3 * lr);
      }
      if (arch === 'batchtopk') {
        // The learned threshold starts at the batch's smallest selected value (EMA from there).
        const minSel = Math.min(...sel.flatMap((r, n) => r.map((j) => free.pre[n * c.dSae + j]!)));
        expect(Math.abs(trainer.batchThreshold() - minSel)).toBeLessThan(1e-4 * Math.abs(minSel) + 1e-6);
        const w = trainer.weights();
        expect(w.config.architecture).toBe('jumprelu');
        expect(w.threshold![0]).toBe(Math.fround(trainer.batchThreshold()));
      } else {
        expect(trainer.weights().config.architecture).toBe('standard');
      }
    } finally {
      trainer.dispose();
    }
  });
});

describe('jumprelu (straight-through estimators): native vs float64 reference', () => {
  const jrCases: Case[] = [
    { B: 3, dIn: 11, dSae: 29, k: 0, kAux: 0, deadFraction: 0, inputScale: 1 },
    { B: 60, dIn: 40, dSae: 90, k: 0, kAux: 0, deadFraction: 0, inputScale: 1.4 },
  ];
  test.each(jrCases)('selection, gradients (log_threshold included) and an Adam step: %o', async (c) => {
    const rng = new Rng(seed + 101 * c.B + c.dSae);
    const { params, x, config } = setup(c, rng);
    const logThreshold = new Float32Array(c.dSae).map(() => Math.log(0.3) + 0.5 * rng.normal());
    const bandwidth = 0.2;
    const l0Coeff = 0.3;
    const cfg: TrainerConfig = { ...config, architecture: 'jumprelu', l0Coeff, bandwidth };
    const trainer = await SaeTrainer.create(cfg, { ...params, log_threshold: logThreshold });
    try {
      const { metrics, grads } = await trainer.gradients(x);
      const sel = selectionOf(trainer.lastSelection(false));
      const jumprelu = { logThreshold, l0Coeff, bandwidth };
      const free = referenceForward(params, x, { k: c.dSae, inputScale: c.inputScale, jumprelu });
      // Active = pre > theta (and > 0), up to fp32 rounding of the pre-activations.
      sel.forEach((row, n) => {
        const chosen = new Set(row);
        for (let j = 0; j < c.dSae; j++) {
          const v = free.pre[n * c.dSae + j]!;
          const theta = Math.exp(logThreshold[j]!);
          if (chosen.has(j)) expect(v).toBeGreaterThan(Math.max(theta, 0) - 1e-5);
          else expect(v).toBeLessThanOrEqual(Math.max(theta, 0) + 1e-5);
        }
      });
      const fwd = referenceForward(params, x, { k: c.dSae, inputScale: c.inputScale, jumprelu, selection: sel });
      const ref = gradientsFromForward(params, fwd);
      const refTh = jumpReluThresholdGrad(params, fwd, jumprelu);
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) expectClose(`jumprelu grad ${name}`, grads[name], ref[name], 2e-4);
      expect(refTh.some((v) => v !== 0)).toBe(true);
      expectClose('jumprelu grad log_threshold', grads.log_threshold!, refTh, 2e-4);
      expect(Math.abs(metrics.sparsityLoss - fwd.l1Loss)).toBeLessThan(1e-9 + 1e-6 * fwd.l1Loss);
      expect(metrics.sparsityLoss).toBeCloseTo((l0Coeff * fwd.metrics.l0 * c.B) / c.B, 9);

      let ss = 0;
      let count = 0;
      for (const a of [...Object.values(ref), refTh]) for (const v of a as Float64Array) (ss += v * v), count++;
      trainer.config.eps = 0.05 * Math.sqrt(ss / count);
      const lr = 1e-2;
      await trainer.trainStep(x, lr);
      const step = referenceAdamStep(params, ref, referenceAdamInit(params), { lr, b1: 0.9, b2: 0.999, eps: trainer.config.eps, clip: 0, t: 1 });
      const now = trainer.params();
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) {
        let worst = 0;
        for (let i = 0; i < now[name].length; i++) worst = Math.max(worst, Math.abs(now[name][i]! - step.params[name][i]!) - 1e-6 * Math.abs(step.params[name][i]!));
        expect(worst, `jumprelu step ${name}`).toBeLessThanOrEqual(1e-3 * lr);
      }
      // Adam at t = 1: m_hat = g, v_hat = g^2, so the step is lr g / (|g| + eps).
      for (let j = 0; j < c.dSae; j++) {
        const g = refTh[j]!;
        const want = logThreshold[j]! - (lr * g) / (Math.abs(g) + trainer.config.eps);
        expect(Math.abs(now.log_threshold![j]! - want)).toBeLessThanOrEqual(1e-3 * lr + 1e-6 * Math.abs(want));
      }
      const w = trainer.weights();
      expect(w.config.architecture).toBe('jumprelu');
      for (let j = 0; j < c.dSae; j++) expect(w.threshold![j]).toBeCloseTo(Math.exp(now.log_threshold![j]!), 5);
    } finally {
      trainer.dispose();
    }
  });
});
