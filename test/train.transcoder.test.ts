// Training transcoders, skip transcoders and Matryoshka batch top-k SAEs: the native trainer's
// loss and gradients held to the float64 reference of test/helpers/transcoderReference.ts,
// which is itself checked against central finite differences first.
//
// Tolerances: as in train.native.test.ts, fp32 sums of a few hundred products: 2e-4 of each
// tensor's max |value|. Selections are computed in float64 here; random Gaussian data at these
// sizes leaves gaps between the k*B-th and the next value far above fp32 rounding, and the
// native main selection is compared with the reference's exactly (a mismatch would fail loudly).
import { afterAll, describe, expect, test } from 'vitest';
import { Rng } from '../src/synthetic.js';
import { cpuVariant, setCpuVariant, setThreads, threads } from '../src/system.js';
import { NonFiniteInputError, ValidationError } from '../src/errors.js';
import { SaeTrainer, defaultTrainerConfig, type TrainerConfig, type TrainParams } from '../src/train/trainer.js';
import { createSae } from '../src/sae.js';
import { genForward, genGradients, toGenParams, type GenOptions, type GenParams } from './helpers/transcoderReference.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.transcoder.test.ts');
const defaultThreads = threads();
afterAll(() => {
  setThreads(defaultThreads);
  setCpuVariant('auto');
});

interface Case {
  name: string;
  dIn: number;
  dOut: number;
  dSae: number;
  k: number;
  rows: number;
  selection: 'topk' | 'batchtopk';
  transcoder: boolean;
  skip: boolean;
  widths?: number[];
  dead?: number[];
}

const CASES: Case[] = [
  { name: 'topk transcoder, d_out < d_in', dIn: 19, dOut: 13, dSae: 40, k: 3, rows: 7, selection: 'topk', transcoder: true, skip: false },
  { name: 'batchtopk skip transcoder, d_out > d_in', dIn: 8, dOut: 21, dSae: 33, k: 2, rows: 9, selection: 'batchtopk', transcoder: true, skip: true },
  { name: 'matryoshka SAE', dIn: 11, dOut: 11, dSae: 40, k: 2, rows: 6, selection: 'batchtopk', transcoder: false, skip: false, widths: [6, 17, 40] },
  { name: 'matryoshka skip transcoder, wide output', dIn: 9, dOut: 150, dSae: 24, k: 3, rows: 5, selection: 'batchtopk', transcoder: true, skip: true, widths: [3, 10, 24] },
  { name: 'topk transcoder with AuxK on dead latents', dIn: 12, dOut: 7, dSae: 30, k: 2, rows: 8, selection: 'topk', transcoder: true, skip: true, dead: [1, 4, 5, 9, 20, 29] },
  { name: 'one row, k = d_sae', dIn: 5, dOut: 3, dSae: 6, k: 6, rows: 1, selection: 'topk', transcoder: true, skip: true },
];

function randomParams(rng: Rng, c: Case): TrainParams {
  const W_dec = rng.fillNormal(new Float32Array(c.dSae * c.dOut));
  for (let j = 0; j < c.dSae; j++) {
    let n = 0;
    for (let i = 0; i < c.dOut; i++) n += W_dec[j * c.dOut + i]! ** 2;
    for (let i = 0; i < c.dOut; i++) W_dec[j * c.dOut + i]! /= Math.sqrt(n);
  }
  return {
    W_enc: rng.fillNormal(new Float32Array(c.dIn * c.dSae), 1 / Math.sqrt(c.dIn)),
    b_enc: rng.fillNormal(new Float32Array(c.dSae), 0.1),
    W_dec,
    b_dec: rng.fillNormal(new Float32Array(c.dOut), 0.1),
    ...(c.skip && { W_skip: rng.fillNormal(new Float32Array(c.dOut * c.dIn), 0.2) }),
  };
}

function optionsOf(c: Case, s = 1, so = 1): GenOptions {
  return {
    dIn: c.dIn,
    dSae: c.dSae,
    dOut: c.dOut,
    k: c.k,
    selection: c.selection,
    ...(c.widths && { widths: c.widths }),
    transcoder: c.transcoder,
    inputScale: s,
    outputScale: so,
    ...(c.dead && { aux: { kAux: 3, coeff: 0.25, dead: Array.from({ length: c.dSae }, (_, j) => c.dead!.includes(j)) } }),
  };
}

function trainerConfig(c: Case, s = 1, so = 1): TrainerConfig {
  return {
    ...defaultTrainerConfig(c.dIn, c.dSae, c.k, c.selection),
    kAux: 3,
    auxCoeff: c.dead ? 0.25 : 0,
    deadTokens: c.dead ? 1 : 0,
    inputScale: s,
    ...(c.transcoder && { transcoder: true, dOut: c.dOut, outputScale: so }),
    ...(c.skip && { skip: true }),
    ...(c.widths && { matryoshkaWidths: c.widths }),
  };
}

const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

function expectClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, rel = 2e-4): void {
  expect(got.length, `${name} length`).toBe(want.length);
  const tol = rel * Math.max(maxAbs(want), 1e-12) + 1e-7;
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= tol)) throw new Error(`${name}[${i}]: native ${got[i]} vs reference ${want[i]} (tolerance ${tol})`);
  }
}

describe('the float64 reference agrees with finite differences', () => {
  for (const c of CASES) {
    test(c.name, () => {
      const rng = new Rng(seed ^ 0x51);
      const p = toGenParams(randomParams(rng, c));
      const x = Float64Array.from(rng.fillNormal(new Float32Array(c.rows * c.dIn)));
      const y = Float64Array.from(rng.fillNormal(new Float32Array(c.rows * c.dOut)));
      const o = optionsOf(c, 1.3, 0.7);
      const fwd = genForward(p, x, y, o);
      const fixed: GenOptions = { ...o, fixed: { levels: fwd.levels, aux: fwd.aux, auxResidual: fwd.auxResidual } };
      const g = genGradients(p, x, y, o, fwd);
      const h = 1e-6;
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec', 'W_skip'] as const) {
        const t = p[name];
        if (!t) continue;
        // A spread of elements of every tensor (all of the small ones).
        const picks = t.length <= 40 ? [...t.keys()] : Array.from({ length: 40 }, (_, i) => Math.floor((i * t.length) / 40));
        for (const i of picks) {
          const keep = t[i]!;
          t[i] = keep + h;
          const up = genForward(p, x, y, fixed).loss;
          t[i] = keep - h;
          const down = genForward(p, x, y, fixed).loss;
          t[i] = keep;
          const fd = (up - down) / (2 * h);
          expect(Math.abs(fd - g[name]![i]!), `${name}[${i}] fd ${fd} analytic ${g[name]![i]}`).toBeLessThan(1e-6 * Math.max(1, Math.abs(fd)));
        }
      }
    });
  }
});

// Every kernel variant this CPU runs (the gradient accumulation has an AVX-512 path and a
// portable one), at 1 and 2 threads on the best.
const RUNS = [
  { threadCount: 1, variant: 'auto' as const },
  { threadCount: 2, variant: 'auto' as const },
  ...cpuVariant()
    .supported.filter((v) => v !== cpuVariant().best)
    .map((variant) => ({ threadCount: 2, variant })),
];

describe('the native trainer matches the reference', () => {
  for (const { threadCount, variant } of RUNS) {
    for (const c of CASES) {
      test(`${c.name} (${threadCount} thread${threadCount > 1 ? 's' : ''}, ${variant} kernels)`, async () => {
        setThreads(threadCount);
        setCpuVariant(variant);
        const rng = new Rng(seed ^ 0xa7);
        const init = randomParams(rng, c);
        const x = rng.fillNormal(new Float32Array(c.rows * c.dIn));
        const y = rng.fillNormal(new Float32Array(c.rows * c.dOut));
        const s = 1.25, so = 0.8;
        const trainer = await SaeTrainer.create(trainerConfig(c, s, so), init);
        try {
          if (c.dead) {
            // Mark the chosen latents dead (since_fired >= deadTokens = 1).
            trainer.loadState({ ...trainer.state(), tensors: { ...trainer.state().tensors, since_fired: Float64Array.from({ length: c.dSae }, (_, j) => (c.dead!.includes(j) ? 10 : 0)) } });
          }
          const { metrics, grads } = await trainer.gradients(x, c.transcoder ? y : undefined);
          const p = toGenParams(init);
          const o = optionsOf(c, s, so);
          const fwd = genForward(p, x, c.transcoder ? y : undefined, o);
          const main = trainer.lastSelection();
          const nativeMain = Array.from({ length: c.rows }, (_, r) => [...main.indices.subarray(main.indptr[r]!, main.indptr[r + 1]!)].sort((a, b) => a - b));
          expect(nativeMain).toEqual(fwd.levels[fwd.levels.length - 1]);
          const want: GenParams = genGradients(p, x, c.transcoder ? y : undefined, o, fwd);
          expect(metrics.mse).toBeCloseTo(fwd.mse, 4);
          expect(metrics.innerMse).toBeCloseTo(fwd.innerMse, 4);
          if (c.dead) {
            expect(fwd.auxLoss).toBeGreaterThan(0);
            expect(metrics.auxLoss).toBeCloseTo(fwd.auxLoss, 4);
          }
          expectClose('W_enc', grads.W_enc, want.W_enc);
          expectClose('b_enc', grads.b_enc, want.b_enc);
          expectClose('W_dec', grads.W_dec, want.W_dec);
          expectClose('b_dec', grads.b_dec, want.b_dec);
          if (c.skip) expectClose('W_skip', grads.W_skip!, want.W_skip!);
          else expect(grads.W_skip).toBeUndefined();
        } finally {
          trainer.dispose();
        }
      });
    }
  }
});

describe('a step updates W_skip by Adam and the weights fold both scales', () => {
  test('first Adam step on W_skip is -lr g / (|g| + eps); weights() predicts in raw units', async () => {
    const c = CASES[1]!;
    const rng = new Rng(seed ^ 0x3c);
    const init = randomParams(rng, c);
    const x = rng.fillNormal(new Float32Array(c.rows * c.dIn));
    const y = rng.fillNormal(new Float32Array(c.rows * c.dOut));
    const s = 2, so = 0.5;
    const trainer = await SaeTrainer.create({ ...trainerConfig(c, s, so), eps: 1e-3 }, init);
    try {
      const { grads } = await trainer.gradients(x, y);
      const lr = 1e-3;
      await trainer.trainStep(x, lr, y);
      const after = trainer.params().W_skip!;
      for (let i = 0; i < after.length; i++) {
        const g = grads.W_skip![i]!;
        const want = init.W_skip![i]! - (lr * g) / (Math.abs(g) + 1e-3);
        expect(Math.abs(after[i]! - want)).toBeLessThan(1e-6 + 1e-4 * lr);
      }
      // The saved transcoder predicts s_out^-1 * (the trained model's prediction in training units).
      const w = trainer.weights({ hookName: 'blocks.0.ln2.hook_normalized', hookNameOut: 'blocks.0.hook_mlp_out' });
      expect(w.config.dOut).toBe(c.dOut);
      expect(w.config.applyBDecToInput).toBe(false);
      expect(w.config.architecture).toBe('jumprelu');
      const sae = await createSae(w);
      try {
        const out = new Float32Array(c.rows * c.dOut).fill(Number.NaN);
        await sae.forward(x, out);
        const p = toGenParams(trainer.params());
        const ref = genForward(p, x, y, { ...optionsOf(c, s, so), selection: 'batchtopk' });
        // Rebuild the prediction in training units with the jumprelu threshold the SAE uses.
        const theta = trainer.batchThreshold();
        for (let n = 0; n < c.rows; n++) {
          for (let o = 0; o < c.dOut; o++) {
            let v = p.b_dec[o]!;
            for (let i = 0; i < c.dIn; i++) v += s * x[n * c.dIn + i]! * p.W_skip![o * c.dIn + i]!;
            for (let j = 0; j < c.dSae; j++) {
              let pre = p.b_enc[j]!;
              for (let i = 0; i < c.dIn; i++) pre += s * x[n * c.dIn + i]! * p.W_enc[i * c.dSae + j]!;
              if (pre > theta) v += pre * p.W_dec[j * c.dOut + o]!;
            }
            expect(Math.abs(out[n * c.dOut + o]! - v / so)).toBeLessThan(1e-4 * (1 + Math.abs(v / so)));
          }
        }
        expect(ref.levels.length).toBe(1);
      } finally {
        sae.dispose();
      }
    } finally {
      trainer.dispose();
    }
  });
});

describe('bad input is refused with a clear error', () => {
  const c = CASES[0]!;
  test('a transcoder needs its target rows, of the right shape and finite', async () => {
    const rng = new Rng(seed ^ 0x77);
    const trainer = await SaeTrainer.create(trainerConfig(c), randomParams(rng, c));
    try {
      const x = rng.fillNormal(new Float32Array(c.rows * c.dIn));
      await expect(trainer.trainStep(x, 1e-3)).rejects.toThrow(/target rows \[7, 13\]/);
      await expect(trainer.trainStep(x, 1e-3, new Float32Array(c.rows * c.dOut - 1))).rejects.toThrow(/expected \[7, 13\]/);
      const y = new Float32Array(c.rows * c.dOut);
      y[3 * c.dOut + 5] = Number.POSITIVE_INFINITY;
      const e = await trainer.trainStep(x, 1e-3, y).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(NonFiniteInputError);
      expect((e as Error).message).toMatch(/training target.*row 3.*column 5/);
      expect(trainer.step).toBe(0);
    } finally {
      trainer.dispose();
    }
  });
  test('an SAE takes no target; widths and skip are checked', async () => {
    const sae = { ...CASES[2]!, widths: undefined };
    const rng = new Rng(seed ^ 0x78);
    const trainer = await SaeTrainer.create(trainerConfig(sae), randomParams(rng, sae));
    try {
      const x = rng.fillNormal(new Float32Array(sae.rows * sae.dIn));
      await expect(trainer.trainStep(x, 1e-3, x)).rejects.toThrow(/target rows were given to an SAE/);
    } finally {
      trainer.dispose();
    }
    const base = trainerConfig(CASES[2]!);
    const p = randomParams(rng, CASES[2]!);
    await expect(SaeTrainer.create({ ...base, matryoshkaWidths: [6, 6, 40] }, p)).rejects.toThrow(ValidationError);
    await expect(SaeTrainer.create({ ...base, matryoshkaWidths: [6, 17] }, p)).rejects.toThrow(/last matryoshka width \(17\) must be dSae \(40\)/);
    await expect(SaeTrainer.create({ ...base, matryoshkaWidths: [1, 40] }, p)).rejects.toThrow(/matryoshkaWidths\[0\]/);
    await expect(SaeTrainer.create({ ...base, architecture: 'topk' }, p)).rejects.toThrow(/need architecture 'batchtopk'/);
    await expect(SaeTrainer.create({ ...base, matryoshkaWidths: undefined, skip: true }, p)).rejects.toThrow(/skip needs transcoder/);
    await expect(SaeTrainer.create({ ...trainerConfig(CASES[0]!), transcoder: false }, randomParams(rng, CASES[0]!))).rejects.toThrow(/set transcoder/);
  });
});
