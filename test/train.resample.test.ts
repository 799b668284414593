// Dead-latent resampling (src/train/resample.ts): what it writes, checked against a float64
// recomputation of the SAE's prediction; that nothing else moves (bit for bit); that the draw
// follows the loss; and in whole jobs that it revives dead latents and resumes exactly.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { Rng } from '../src/synthetic.js';
import { readSaeDir } from '../src/formats/saeDir.js';
import { SaeTrainer, defaultTrainerConfig, type TrainerConfig, type TrainParams } from '../src/train/trainer.js';
import { resampleDeadLatents } from '../src/train/resample.js';
import { GroundTruth, writeGroundTruthNpy } from '../src/train/groundTruth.js';
import { train, type MetricsRecord } from '../src/train/train.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.resample.test.ts');
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function params(rng: Rng, dIn: number, dOut: number, dSae: number, skip: boolean): TrainParams {
  const W_dec = rng.fillNormal(new Float32Array(dSae * dOut));
  for (let j = 0; j < dSae; j++) {
    let n = 0;
    for (let i = 0; i < dOut; i++) n += W_dec[j * dOut + i]! ** 2;
    for (let i = 0; i < dOut; i++) W_dec[j * dOut + i]! /= Math.sqrt(n);
  }
  return {
    W_enc: rng.fillNormal(new Float32Array(dIn * dSae), 1 / Math.sqrt(dIn)),
    b_enc: rng.fillNormal(new Float32Array(dSae), 0.1),
    W_dec,
    b_dec: rng.fillNormal(new Float32Array(dOut), 0.1),
    ...(skip && { W_skip: rng.fillNormal(new Float32Array(dOut * dIn), 0.1) }),
  };
}

/** The trainer's prediction of row n in training units, float64 (topk, from its state). */
function predict(t: Record<string, Float32Array | Float64Array>, c: TrainerConfig, x: Float32Array, n: number): { xp: Float64Array; pred: Float64Array } {
  const { dIn, dSae, k } = c;
  const dOut = c.dOut ?? dIn;
  const s = c.inputScale;
  const xp = new Float64Array(dIn);
  for (let i = 0; i < dIn; i++) xp[i] = s * x[n * dIn + i]! - (c.transcoder ? 0 : t.b_dec![i]!);
  const pre = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let v = t.b_enc![j]!;
    for (let i = 0; i < dIn; i++) v += xp[i]! * t.W_enc![i * dSae + j]!;
    pre[j] = v;
  }
  const order = [...pre.keys()].sort((a, b) => pre[b]! - pre[a]! || a - b).slice(0, k).filter((j) => pre[j]! > 0);
  const pred = Float64Array.from(t.b_dec!);
  for (let o = 0; o < dOut; o++) if (t.W_skip) for (let i = 0; i < dIn; i++) pred[o]! += s * x[n * dIn + i]! * t.W_skip[o * dIn + i]!;
  for (const j of order) for (let o = 0; o < dOut; o++) pred[o]! += pre[j]! * t.W_dec![j * dOut + o]!;
  return { xp, pred };
}

describe('resampleDeadLatents', () => {
  for (const kind of ['sae', 'skip transcoder'] as const) {
    test(`${kind}: dead latents point at high-loss rows, their optimizer state restarts, nothing else moves`, async () => {
      const rng = new Rng(seed ^ (kind === 'sae' ? 1 : 2));
      const transcoder = kind !== 'sae';
      const dIn = 12, dOut = transcoder ? 9 : 12, dSae = 40, rows = 33;
      const config: TrainerConfig = {
        ...defaultTrainerConfig(dIn, dSae, 3, 'topk'),
        deadTokens: 50,
        inputScale: 1.7,
        ...(transcoder && { transcoder: true, dOut, skip: true, outputScale: 0.6 }),
      };
      const trainer = await SaeTrainer.create(config, params(rng, dIn, dOut, dSae, transcoder));
      try {
        const x = rng.fillNormal(new Float32Array(rows * dIn));
        const y = transcoder ? rng.fillNormal(new Float32Array(rows * dOut)) : undefined;
        await trainer.trainStep(x, 1e-3, y); // Adam moments become nonzero
        const dead = [2, 7, 30];
        const st = trainer.state();
        const since = new Float64Array(dSae);
        for (const j of dead) since[j] = 100;
        trainer.loadState({ ...st, tensors: { ...st.tensors, since_fired: since } });
        const before = trainer.state().tensors;
        const res = await resampleDeadLatents(trainer, x, y, { seed: 5 });
        expect(res.latents).toEqual(dead);
        expect(new Set(res.rows).size).toBe(dead.length);
        const after = trainer.state().tensors;
        const encNorms: number[] = [];
        for (let j = 0; j < dSae; j++) {
          if (dead.includes(j)) continue;
          let q = 0;
          for (let i = 0; i < dIn; i++) q += before.W_enc![i * dSae + j]! ** 2;
          encNorms.push(Math.sqrt(q));
        }
        const encNorm = (1 * encNorms.reduce((a, b) => a + b, 0)) / encNorms.length;
        dead.forEach((j, q) => {
          const n = res.rows[q]!;
          const { xp, pred } = predict(before, config, x, n);
          const truth = Float64Array.from({ length: dOut }, (_, o) => (transcoder ? 0.6 * y![n * dOut + o]! : 1.7 * x[n * dIn + o]!));
          const r = truth.map((v, o) => v - pred[o]!);
          const rn = Math.hypot(...r), xn = Math.hypot(...xp);
          for (let o = 0; o < dOut; o++) expect(after.W_dec![j * dOut + o]!).toBeCloseTo(r[o]! / rn, 4);
          for (let i = 0; i < dIn; i++) expect(after.W_enc![i * dSae + j]!).toBeCloseTo((xp[i]! / xn) * encNorm, 4);
          expect(after.b_enc![j]).toBe(0);
          expect(after.since_fired![j]).toBe(0);
          for (const m of ['adam_m', 'adam_v'] as const) {
            expect(after[`${m}.b_enc`]![j]).toBe(0);
            for (let i = 0; i < dIn; i++) expect(after[`${m}.W_enc`]![i * dSae + j]).toBe(0);
            for (let o = 0; o < dOut; o++) expect(after[`${m}.W_dec`]![j * dOut + o]).toBe(0);
          }
        });
        // Every other element of every tensor is untouched.
        for (const [name, a] of Object.entries(before)) {
          const b = after[name as keyof typeof after]!;
          const perLatent = name.endsWith('W_enc') ? (i: number) => i % dSae : name.endsWith('W_dec') ? (i: number) => Math.floor(i / dOut) : name.endsWith('b_enc') || name === 'since_fired' ? (i: number) => i : undefined;
          for (let i = 0; i < a.length; i++) {
            if (perLatent && dead.includes(perLatent(i))) continue;
            if (a[i] !== b[i]) throw new Error(`${name}[${i}] changed: ${a[i]} -> ${b[i]}`);
          }
        }
        // Nothing dead: nothing changes.
        expect((await resampleDeadLatents(trainer, x, y)).latents).toEqual([]);
      } finally {
        trainer.dispose();
      }
    });
  }

  test('the draw follows the loss: a row with a huge error is picked first', async () => {
    const rng = new Rng(seed ^ 3);
    const dIn = 10, dSae = 30, rows = 50;
    const trainer = await SaeTrainer.create({ ...defaultTrainerConfig(dIn, dSae, 2, 'topk'), deadTokens: 10 }, params(rng, dIn, dIn, dSae, false));
    try {
      const x = rng.fillNormal(new Float32Array(rows * dIn), 0.1);
      for (let i = 0; i < dIn; i++) x[17 * dIn + i] = 40 * (i % 2 ? 1 : -1);
      const st = trainer.state();
      trainer.loadState({ ...st, tensors: { ...st.tensors, since_fired: new Float64Array(dSae).fill(0).map((_, j) => (j === 4 ? 99 : 0)) } });
      for (const s of [1, 2, 3]) {
        const t2 = await SaeTrainer.create({ ...trainer.config }, trainer.params());
        try {
          t2.loadState(trainer.state());
          expect((await resampleDeadLatents(t2, x, undefined, { seed: s })).rows).toEqual([17]);
        } finally {
          t2.dispose();
        }
      }
      await expect(resampleDeadLatents(trainer, new Float32Array(7))).rejects.toThrow(/sample rows \[rows, 10\]/);
    } finally {
      trainer.dispose();
    }
  });
});

describe('train({ resampleEvery })', () => {
  test('revives dead latents (AuxK off) and a stopped, resumed run equals the uninterrupted one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'saekit-resample-'));
    dirs.push(dir);
    const input = join(dir, 'x.npy');
    const gt = new GroundTruth({ dIn: 32, nFeatures: 96, meanActive: 3, noise: 0.01, seed });
    await writeGroundTruthNpy(input, gt, 40_000);
    // 4x overcomplete for 96 features: without AuxK a good share of latents die. Resampling
    // every 50 steps (25,600 tokens, > deadTokens) gives restarted latents time to catch on.
    const base = { input, k: 3, dSae: 384, tokens: 120_000, batchSize: 512, lr: 4e-3, auxCoeff: 0, deadTokens: 4096, seed, logEvery: 1, checkpointEvery: 0 };
    const plain = await train({ ...base, output: join(dir, 'plain') });
    const res = await train({ ...base, output: join(dir, 'resampled'), resampleEvery: 50 });
    const records = (await readFile(join(dir, 'resampled', 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as MetricsRecord);
    const resampled = records[records.length - 1]!.resampled!;
    console.log(`dead fraction without resampling ${plain.last!.deadFraction.toFixed(3)}, with ${res.last!.deadFraction.toFixed(3)} (${resampled} resampled); fvu ${plain.last!.fvu.toFixed(4)} vs ${res.last!.fvu.toFixed(4)}`);
    expect(resampled).toBeGreaterThan(0);
    // Mechanism: each resample (after steps 50, 100, ...) revives its dead latents: the dead
    // fraction going into the next step is lower. The end-of-run comparison with the plain run
    // is logged, not asserted: it is lower on most seeds (0.21 -> 0.14) but not all.
    let revived = 0;
    for (const r of records) {
      if (r.step % 50 !== 0 || r.step >= records.length) continue;
      const next = records[r.step]!; // records[i] is step i + 1
      if (r.dead_fraction > 0) {
        expect(next.dead_fraction, `step ${r.step + 1}`).toBeLessThan(r.dead_fraction);
        revived++;
      }
    }
    expect(revived).toBeGreaterThan(0);
    expect(res.last!.fvu).toBeLessThan(plain.last!.fvu * 1.15); // restarted latents cost a little FVU in short runs

    const stopped = await train({ ...base, output: join(dir, 'resumed'), resampleEvery: 50, checkpointEvery: 30, stopAfterSteps: 125 });
    expect(stopped.stopped).toBe(true);
    await train({ ...base, output: join(dir, 'resumed'), resampleEvery: 50, checkpointEvery: 30, resume: true });
    const [a, b] = [await readSaeDir(join(dir, 'resampled')), await readSaeDir(join(dir, 'resumed'))];
    expect(b.W_dec).toEqual(a.W_dec);
    expect(b.W_enc).toEqual(a.W_enc);
    expect(b.b_enc).toEqual(a.b_enc);
  });
});
