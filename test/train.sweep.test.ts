// Several SAEs from one activation stream (trainSweep, `saekit train --sweep`): every run of a
// sweep must equal the same run trained alone, bit for bit (the stream is a pure function of
// the shared settings, and the native step does not depend on what else runs); a sweep
// interrupted and resumed equals the uninterrupted one; the shared settings are enforced.
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { readSaeDir } from '../src/formats/saeDir.js';
import { GroundTruth, writeGroundTruthNpy } from '../src/train/groundTruth.js';
import { train, trainSweep, type TrainJobOptions } from '../src/train/train.js';
import { sweepRuns } from '../src/cli/commands/train.js';
import { runCli } from './helpers/cli.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.sweep.test.ts');
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'saekit-sweep-'));
  dirs.push(d);
  return d;
}

async function dataset(dir: string): Promise<string> {
  const file = join(dir, 'x.npy');
  await writeGroundTruthNpy(file, new GroundTruth({ dIn: 24, nFeatures: 64, meanActive: 3, noise: 0.01, seed }), 6000);
  return file;
}

async function expectSameSae(a: string, b: string): Promise<void> {
  const [wa, wb] = [await readSaeDir(a), await readSaeDir(b)];
  expect(wa.config.architecture).toBe(wb.config.architecture);
  for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec', 'threshold'] as const) expect(wa[name], name).toEqual(wb[name]);
  const metrics = async (d: string) => (await readFile(join(d, 'metrics.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => {
    const { tokens_per_second: _t, elapsed_s: _e, ...rest } = JSON.parse(l) as Record<string, number>;
    return rest;
  });
  expect(await metrics(a)).toEqual(await metrics(b));
}

describe('trainSweep', () => {
  test('each run of a sweep equals that run trained alone (topk k=2, k=5; matryoshka; batchtopk at another lr)', async () => {
    const dir = await tempDir();
    const input = await dataset(dir);
    const base: TrainJobOptions = { input, output: '', tokens: 4000, batchSize: 256, dSae: 64, seed, logEvery: 3, deadTokens: 1000 };
    const variants: TrainJobOptions[] = [
      { ...base, output: join(dir, 'sweep', 'a'), k: 2 },
      { ...base, output: join(dir, 'sweep', 'b'), k: 5 },
      { ...base, output: join(dir, 'sweep', 'c'), k: 3, architecture: 'matryoshka', matryoshkaWidths: [8, 32, 64] },
      { ...base, output: join(dir, 'sweep', 'd'), k: 3, architecture: 'batchtopk', lr: 1e-3 },
    ];
    const results = await trainSweep(variants);
    expect(results.map((r) => r.output)).toEqual(variants.map((v) => v.output));
    for (const v of variants) {
      const alone = join(dir, 'alone', v.output.split('/').pop()!);
      await train({ ...v, output: alone });
      await expectSameSae(v.output, alone);
    }
  });

  test('a sweep stopped and resumed equals the uninterrupted sweep', async () => {
    const dir = await tempDir();
    const input = await dataset(dir);
    const base: TrainJobOptions = { input, output: '', tokens: 5000, batchSize: 256, dSae: 48, seed, logEvery: 2, checkpointEvery: 4 };
    const runs = (root: string, extra: Partial<TrainJobOptions> = {}) => [
      { ...base, ...extra, output: join(root, 'k2'), k: 2 },
      { ...base, ...extra, output: join(root, 'k4'), k: 4 },
    ];
    await trainSweep(runs(join(dir, 'full')));
    const first = await trainSweep(runs(join(dir, 'part'), { stopAfterSteps: 7 }));
    expect(first.every((r) => r.stopped && r.steps === 7)).toBe(true);
    const second = await trainSweep(runs(join(dir, 'part'), { resume: true }));
    expect(second.every((r) => !r.stopped && r.steps === Math.ceil(5000 / 256))).toBe(true);
    await expectSameSae(join(dir, 'part', 'k2'), join(dir, 'full', 'k2'));
    await expectSameSae(join(dir, 'part', 'k4'), join(dir, 'full', 'k4'));
  });

  test('runs must share the stream settings and have distinct outputs', async () => {
    const dir = await tempDir();
    const input = await dataset(dir);
    const a: TrainJobOptions = { input, output: join(dir, 'a'), tokens: 1000, k: 2, dSae: 32 };
    await expect(trainSweep([a, { ...a, output: join(dir, 'b'), batchSize: 128 }])).rejects.toThrow(/run 1 of the sweep sets batchSize to 128 but run 0 to undefined/);
    await expect(trainSweep([a, { ...a, output: join(dir, 'b'), seed: 7 }])).rejects.toThrow(/sets seed/);
    await expect(trainSweep([a, { ...a }])).rejects.toThrow(/distinct output directories/);
    await expect(trainSweep([])).rejects.toThrow(/non-empty array/);
  });
});

describe('saekit train --sweep', () => {
  test('the cross product of --sweep flags, one directory per run, each a SAELens SAE', async () => {
    const dir = await tempDir();
    const input = await dataset(dir);
    const out = join(dir, 'sw');
    const r = await runCli('train', '--input', input, '--output', out, '--d-sae', '32', '--tokens', '1024', '--batch-size', '256', '--sweep', 'k=2,4', '--sweep', 'lr=0.001,0.002', '--log-every', '2');
    expect(r.code, r.err).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['k-2_lr-0.001', 'k-2_lr-0.002', 'k-4_lr-0.001', 'k-4_lr-0.002']);
    for (const name of await readdir(out)) {
      const cfg = JSON.parse(await readFile(join(out, name, 'cfg.json'), 'utf8')) as Record<string, unknown>;
      expect(cfg['k']).toBe(Number(name.split('_')[0]!.slice(2)));
    }
    expect(r.out.match(/saved SAELens directory/g)?.length).toBe(4);
  });

  test('bad --sweep specs are usage errors', () => {
    const base: TrainJobOptions = { input: 'x', output: 'o', tokens: 1 };
    expect(() => sweepRuns(base, ['q=1,2'])).toThrow(/KEY one of k, d-sae/);
    expect(() => sweepRuns(base, ['k=1,x'])).toThrow(/'x' is not a non-negative integer/);
    expect(() => sweepRuns(base, ['k=1,1'])).toThrow(/repeats a value/);
    expect(() => sweepRuns(base, ['k=1', 'k=2'])).toThrow(/given twice/);
    expect(() => sweepRuns(base, ['arch=gated'])).toThrow(/not topk, batchtopk/);
    expect(sweepRuns(base, []).map((r) => r.output)).toEqual(['o']);
    expect(sweepRuns(base, ['arch=topk,matryoshka']).map((r) => [r.output, r.architecture])).toEqual([
      [join('o', 'arch-topk'), 'topk'],
      [join('o', 'arch-matryoshka'), 'matryoshka'],
    ]);
  });
});
