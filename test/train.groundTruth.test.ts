// The ground-truth activation generator and the feature-recovery score: the training demo and
// the recovery test lean on both, so their statistics and determinism are pinned here.
import { afterAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readdir } from 'node:fs/promises';
import { NpyReader } from '../src/formats/npy.js';
import { Rng } from '../src/synthetic.js';
import { GroundTruth, featureRecovery, writeGroundTruthNpy, type GroundTruthOptions } from '../src/train/groundTruth.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.groundTruth.test');
const dirs = tempDirs();
afterAll(dirs.cleanup);

const base: GroundTruthOptions = { dIn: 64, nFeatures: 256, meanActive: 4, noise: 0.01, seed };

describe('GroundTruth', () => {
  it('dictionary rows are unit norm; the same seed gives the same dictionary and rows', () => {
    const gt = new GroundTruth(base);
    expect(gt.dictionary.length).toBe(256 * 64);
    for (let f = 0; f < 256; f++) {
      let n = 0;
      for (let i = 0; i < 64; i++) n += gt.dictionary[f * 64 + i]! ** 2;
      expect(Math.abs(Math.sqrt(n) - 1)).toBeLessThan(1e-6);
    }
    const again = new GroundTruth(base);
    expect(again.dictionary).toEqual(gt.dictionary);
    expect(again.sample(50)).toEqual(gt.sample(50));
    const other = new GroundTruth({ ...base, seed: seed + 1 });
    expect(other.dictionary).not.toEqual(gt.dictionary);
  });

  it('sample() continues the stream and is chunk-invariant', () => {
    const a = new GroundTruth(base);
    const first = a.sample(100);
    const second = a.sample(37);
    expect(second).not.toEqual(first.subarray(0, 37 * 64));
    expect(a.rowsSampled).toBe(137);
    const b = new GroundTruth(base);
    const whole = b.sample(137);
    expect(whole.subarray(0, 100 * 64)).toEqual(first);
    expect(whole.subarray(100 * 64)).toEqual(second);
    expect(b.sample(0).length).toBe(0);
  });

  it('frequencies sum to meanActive, mildly skewed, and the mean active count per row matches', () => {
    const gt = new GroundTruth(base);
    expect(gt.frequencies.reduce((s, p) => s + p, 0)).toBeCloseTo(4, 12);
    const pMin = Math.min(...gt.frequencies);
    expect(gt.frequencies[0]! / pMin).toBeLessThan(10);
    expect(pMin * 100_000).toBeGreaterThan(300); // every feature seen hundreds of times in 100k rows

    const rows = 100_000;
    const { x, codes } = gt.sampleWithCodes(rows);
    expect(x.length).toBe(rows * 64);
    const meanActive = codes.indptr[rows]! / rows;
    // The count per row has variance <= meanActive; 5 standard errors of the mean.
    expect(Math.abs(meanActive - 4)).toBeLessThan(5 * Math.sqrt(4 / rows));
    const counts = new Uint32Array(256);
    for (const f of codes.indices) counts[f]!++;
    const worst = Math.max(...Array.from(counts, (n, f) => Math.abs(n - gt.frequencies[f]! * rows) / Math.sqrt(gt.frequencies[f]! * rows)));
    expect(worst).toBeLessThan(6); // per-feature counts within 6 binomial standard deviations
    let lo = Infinity;
    let hi = -Infinity;
    let sum = 0;
    for (const v of codes.values) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
      sum += v;
    }
    expect(lo).toBeGreaterThanOrEqual(0.5);
    expect(hi).toBeLessThanOrEqual(1.5);
    expect(sum / codes.values.length).toBeCloseTo(1, 2); // uniform [0.5, 1.5]
  });

  it('sampleWithCodes: rows are the codes decoded through the dictionary plus noise of the given std', () => {
    const gt = new GroundTruth({ ...base, noise: 0.05 });
    const rows = 2000;
    const { x, codes } = gt.sampleWithCodes(rows);
    let sumSq = 0;
    for (let r = 0; r < rows; r++) {
      const row = Float64Array.from(x.subarray(r * 64, (r + 1) * 64));
      let previous = -1;
      for (let q = codes.indptr[r]!; q < codes.indptr[r + 1]!; q++) {
        const f = codes.indices[q]!;
        expect(f).toBeGreaterThan(previous);
        previous = f;
        for (let i = 0; i < 64; i++) row[i]! -= codes.values[q]! * gt.dictionary[f * 64 + i]!;
      }
      for (const v of row) sumSq += v * v;
    }
    expect(Math.sqrt(sumSq / (rows * 64))).toBeCloseTo(0.05, 2);
    // Same seed, noise-free: exactly the decoded codes (up to float32 rounding).
    const clean = new GroundTruth({ ...base, noise: 0 }).sampleWithCodes(10);
    for (let r = 0; r < 10; r++)
      for (let i = 0; i < 64; i++) {
        let v = 0;
        for (let q = clean.codes.indptr[r]!; q < clean.codes.indptr[r + 1]!; q++)
          v += clean.codes.values[q]! * gt.dictionary[clean.codes.indices[q]! * 64 + i]!;
        expect(Math.abs(clean.x[r * 64 + i]! - v)).toBeLessThan(1e-5);
      }
  });

  it('makes 200k rows of d_in 64 quickly', () => {
    const gt = new GroundTruth(base);
    const t0 = performance.now();
    const x = gt.sample(200_000);
    const ms = performance.now() - t0;
    expect(x.length).toBe(200_000 * 64);
    expect(ms).toBeLessThan(2000);
  });

  it('rejects bad options', () => {
    expect(() => new GroundTruth({ ...base, dIn: 0 })).toThrow(/dIn/);
    expect(() => new GroundTruth({ ...base, nFeatures: 1.5 })).toThrow(/nFeatures/);
    expect(() => new GroundTruth({ ...base, meanActive: 0 })).toThrow(/meanActive/);
    expect(() => new GroundTruth({ ...base, nFeatures: 8, meanActive: 8 })).toThrow(/meanActive/);
    expect(() => new GroundTruth({ ...base, noise: -1 })).toThrow(/noise/);
    expect(() => new GroundTruth(base).sample(-1)).toThrow(/rows/);
  });
});

describe('featureRecovery', () => {
  const dIn = 32;
  const nFeatures = 40;
  const gt = new GroundTruth({ dIn, nFeatures, meanActive: 3, noise: 0, seed });
  const rng = new Rng(seed ^ 0x5bd1e995);

  it('recovers every feature from permuted, scaled dictionary rows among extra random rows', () => {
    const dSae = 100;
    const W_dec = rng.fillNormal(new Float32Array(dSae * dIn));
    const slots = Array.from({ length: dSae }, (_, j) => j);
    for (let j = dSae - 1; j > 0; j--) {
      const t = rng.int(j + 1);
      [slots[j], slots[t]] = [slots[t]!, slots[j]!];
    }
    const slotOf = slots.slice(0, nFeatures);
    slotOf.forEach((j, f) => {
      const scale = 0.1 + 5 * rng.uniform();
      for (let i = 0; i < dIn; i++) W_dec[j * dIn + i] = scale * gt.dictionary[f * dIn + i]!;
    });
    const r = featureRecovery(gt.dictionary, nFeatures, W_dec, dSae, dIn);
    expect(r.recovered).toBe(nFeatures);
    expect(r.fraction).toBe(1);
    for (const c of r.maxCos) expect(c).toBeGreaterThan(0.99999);

    // Negated rows point the wrong way: not recovered. No cosine exceeds a threshold above 1.
    const negated = W_dec.map((v, q) => (slotOf.includes(Math.floor(q / dIn)) ? -v : v));
    expect(featureRecovery(gt.dictionary, nFeatures, negated, dSae, dIn).recovered).toBe(0);
    const strict = featureRecovery(gt.dictionary, nFeatures, W_dec, dSae, dIn, 1.5);
    expect(strict.recovered).toBe(0);
  });

  it('finds ~nothing in a random decoder, and nothing in a zero decoder', () => {
    const dSae = 200;
    const W_dec = rng.fillNormal(new Float32Array(dSae * dIn));
    const r = featureRecovery(gt.dictionary, nFeatures, W_dec, dSae, dIn);
    expect(r.recovered).toBe(0);
    for (const c of r.maxCos) expect(c).toBeLessThan(0.9);
    const zero = featureRecovery(gt.dictionary, nFeatures, new Float32Array(dSae * dIn), dSae, dIn);
    expect(zero.recovered).toBe(0);
    expect(Array.from(zero.maxCos).every((c) => c === 0)).toBe(true);
  });

  it('checks shapes', () => {
    expect(() => featureRecovery(gt.dictionary, nFeatures, new Float32Array(10), 3, dIn)).toThrow(/W_dec/);
    expect(() => featureRecovery(gt.dictionary, nFeatures + 1, new Float32Array(dIn), 1, dIn)).toThrow(/dictionary/);
  });
});

describe('writeGroundTruthNpy', () => {
  it('writes [rows, dIn] float32 in chunks, atomically, equal to the same-seed samples', async () => {
    const dir = await dirs.make();
    const file = join(dir, 'acts.npy');
    const opts: GroundTruthOptions = { dIn: 24, nFeatures: 50, meanActive: 3, noise: 0.02, seed };
    const gt = new GroundTruth(opts);
    await writeGroundTruthNpy(file, gt, 1001, 128);
    expect(gt.rowsSampled).toBe(1001);
    const expected = new GroundTruth(opts).sample(1001);
    const reader = await NpyReader.open(file);
    try {
      expect(reader.dtype).toBe('<f4');
      expect(reader.shape).toEqual([1001, 24]);
      expect(await reader.readAllFloat32()).toEqual(expected);
    } finally {
      await reader.close();
    }
    expect(await readdir(dir)).toEqual(['acts.npy']); // no temporary left behind

    // Default chunking, and a zero-row file.
    const file2 = join(dir, 'acts2.npy');
    await writeGroundTruthNpy(file2, new GroundTruth(opts), 1001);
    const r2 = await NpyReader.open(file2);
    try {
      expect(await r2.readAllFloat32()).toEqual(expected);
    } finally {
      await r2.close();
    }
    const empty = join(dir, 'empty.npy');
    await writeGroundTruthNpy(empty, new GroundTruth(opts), 0);
    const r3 = await NpyReader.open(empty);
    try {
      expect(r3.shape).toEqual([0, 24]);
    } finally {
      await r3.close();
    }
    await expect(writeGroundTruthNpy(join(dir, 'bad.npy'), new GroundTruth(opts), 10, 0)).rejects.toThrow(/chunkRows/);
  });
});
