// train(), the whole training job: ground-truth feature recovery through the SAVED directory,
// bit-exact resume (stopAfterSteps, AbortSignal, and a crash between a log line and the next
// checkpoint), refusal of a resume with changed settings, clear errors with nothing
// half-written, directory / live inputs (bit-identical to the equivalent single file), the
// learning-rate schedule and metrics.jsonl.
//
// Every test draws fresh data (freshSeed); sizes are small so the file runs in seconds.
import { cpSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, NonFiniteInputError, ValidationError } from '../src/errors.js';
import { readSaeDir } from '../src/formats/saeDir.js';
import { SafetensorsReader } from '../src/formats/safetensors.js';
import { writeNpy } from '../src/formats/npy.js';
import { loadSae } from '../src/sae.js';
import { Rng } from '../src/synthetic.js';
import { rowSourceFromIterable } from '../src/train/data.js';
import { GroundTruth, featureRecovery, writeGroundTruthNpy, type GroundTruthOptions } from '../src/train/groundTruth.js';
import { learningRate, type LrSchedule } from '../src/train/schedule.js';
import { train, type MetricsRecord, type TrainJobOptions } from '../src/train/train.js';
import { expectReject } from './helpers/expectError.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.job.test.ts');

const made: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'saekit-trainjob-'));
  made.push(dir);
  return dir;
}
afterAll(async () => {
  await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
});

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function readMetrics(output: string): Promise<MetricsRecord[]> {
  const text = await readFile(join(output, 'metrics.jsonl'), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as MetricsRecord);
}

/** A record without its timing fields, which legitimately differ between runs. */
function untimed(r: MetricsRecord): Omit<MetricsRecord, 'tokens_per_second' | 'elapsed_s'> {
  const { tokens_per_second: _t, elapsed_s: _e, ...rest } = r;
  return rest;
}

async function readSparsity(output: string): Promise<Float32Array> {
  const reader = await SafetensorsReader.open(join(output, 'sparsity.safetensors'));
  try {
    expect([...reader.tensors.keys()]).toEqual(['sparsity']);
    const s = await reader.readTensor('sparsity');
    expect(s).toBeInstanceOf(Float32Array);
    return s as Float32Array;
  } finally {
    await reader.close();
  }
}

/** The files of a saved SAE directory, byte for byte. */
async function savedBytes(output: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const name of ['cfg.json', 'sae_weights.safetensors', 'sparsity.safetensors']) out[name] = await readFile(join(output, name));
  return out;
}

async function expectSameSave(a: string, b: string): Promise<void> {
  const [x, y] = [await savedBytes(a), await savedBytes(b)];
  for (const name of Object.keys(x)) expect(y[name]!.equals(x[name]!), `${name} differs between ${a} and ${b}`).toBe(true);
}

/** Nothing of a saved SAE (cfg.json is written last, so its absence means no SAE). */
async function expectNoSae(output: string): Promise<void> {
  expect(await exists(join(output, 'cfg.json'))).toBe(false);
  expect(await exists(join(output, 'sae_weights.safetensors'))).toBe(false);
  expect(await exists(join(output, 'sparsity.safetensors'))).toBe(false);
}

/** Fraction of variance unexplained of x_hat for x ([rows, dIn]), about the column means. */
function fvu(x: Float32Array, xHat: Float32Array, dIn: number): number {
  const rows = x.length / dIn;
  const mean = new Float64Array(dIn);
  for (let r = 0; r < rows; r++) for (let i = 0; i < dIn; i++) mean[i]! += x[r * dIn + i]! / rows;
  let err = 0;
  let total = 0;
  for (let q = 0; q < x.length; q++) {
    err += (x[q]! - xHat[q]!) ** 2;
    total += (x[q]! - mean[q % dIn]!) ** 2;
  }
  return err / total;
}

describe('ground-truth recovery (the acceptance test)', () => {
  it('a TopK SAE trained from a .npy recovers >= 90% of the known features, read back from the saved directory', async () => {
    const dir = await tempDir();
    const gtOpts: GroundTruthOptions = { dIn: 64, nFeatures: 256, meanActive: 4, noise: 0.01, seed };
    const gt = new GroundTruth(gtOpts);
    const input = join(dir, 'gt.npy');
    await writeGroundTruthNpy(input, gt, 200_000);
    const output = join(dir, 'sae');
    const k = 8;
    const dSae = 512;
    const result = await train({ input, output, k, dSae, tokens: 400_000, batchSize: 512, lr: 4e-3, deadTokens: 20_000, seed });
    expect(result.stopped).toBe(false);
    expect(result.steps).toBe(Math.ceil(400_000 / 512));
    expect(result.tokens).toBe(result.steps * 512);

    // The saved directory, not the in-memory trainer, is what is judged.
    const cfg = JSON.parse(await readFile(join(output, 'cfg.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg['architecture']).toBe('topk');
    expect(cfg['k']).toBe(k);
    expect(cfg['d_sae']).toBe(dSae);
    expect(cfg['d_in']).toBe(64);
    expect(cfg['normalize_activations']).toBe('none'); // the input scale is folded into the weights
    expect((await readdir(output)).filter((n) => n.includes('.tmp-'))).toEqual([]);

    const sparsity = await readSparsity(output);
    expect(sparsity.length).toBe(dSae);
    let firingPerToken = 0;
    for (const s of sparsity) {
      expect(Number.isFinite(s)).toBe(true);
      expect(s).toBeLessThanOrEqual(0); // log10 of a frequency
      expect(s).toBeGreaterThanOrEqual(-10 - 1e-6); // log10(0 + 1e-10)
      firingPerToken += 10 ** s;
    }
    // Each token fires at most k latents (exactly k unless fewer are positive).
    expect(firingPerToken).toBeLessThanOrEqual(k * (1 + 1e-4) + dSae * 1e-10);
    expect(firingPerToken).toBeGreaterThan(0.5 * k);

    const weights = await readSaeDir(output);
    const rec = featureRecovery(gt.dictionary, gtOpts.nFeatures, weights.W_dec, dSae, gtOpts.dIn);
    console.log(`recovered ${rec.recovered}/${gtOpts.nFeatures} features; final fvu ${result.last?.fvu}`);
    expect(rec.recovered).toBeGreaterThanOrEqual(0.9 * gtOpts.nFeatures);

    // loadSae + encode on rows the SAE never saw (the generator continues past the file).
    const fresh = gt.sample(4000);
    const sae = await loadSae(output, { device: 'cpu' });
    try {
      const codes = await sae.encode(fresh);
      expect(codes.rows).toBe(4000);
      let full = 0;
      for (let r = 0; r < codes.rows; r++) {
        const n = codes.indptr[r + 1]! - codes.indptr[r]!;
        expect(n).toBeLessThanOrEqual(k);
        if (n === k) full++;
        for (let q = codes.indptr[r]!; q < codes.indptr[r + 1]!; q++) expect(codes.values[q]!).toBeGreaterThan(0);
      }
      expect(full).toBeGreaterThan(0.5 * codes.rows);
      const xHat = await sae.decode(codes);
      const f = fvu(fresh, xHat, gtOpts.dIn);
      console.log(`fresh-row fvu ${f}`);
      expect(f).toBeLessThan(0.2);
    } finally {
      sae.dispose();
    }
  });
});

// Shared by the resume tests: a small run that loops its data (3000 rows, 5120 tokens), shuffles
// in windows that straddle the wrap, and has dying latents so AuxK is active.
const R = { dIn: 32, rows: 3000, batch: 128, steps: 40 };
const gtSmall: GroundTruthOptions = { dIn: R.dIn, nFeatures: 48, meanActive: 3, noise: 0.01, seed: seed ^ 0x5a5a };

let smallInput: Promise<string> | undefined;
function smallData(): Promise<string> {
  smallInput ??= (async () => {
    const file = join(await tempDir(), 'small.npy');
    await writeGroundTruthNpy(file, new GroundTruth(gtSmall), R.rows, 700);
    return file;
  })();
  return smallInput;
}

async function resumeOptions(output: string): Promise<TrainJobOptions> {
  return {
    input: await smallData(),
    output,
    k: 4,
    dSae: 256,
    tokens: R.steps * R.batch,
    batchSize: R.batch,
    lr: 5e-3,
    checkpointEvery: 7,
    shuffleWindow: 512,
    deadTokens: 3 * R.batch, // dead after 3 steps without firing: AuxK has work to do
    logEvery: 1,
    seed,
  };
}

describe('exact resume', () => {
  let reference: string | undefined;
  async function uninterrupted(): Promise<string> {
    if (reference) return reference;
    const output = join(await tempDir(), 'A');
    const r = await train(await resumeOptions(output));
    expect(r.stopped).toBe(false);
    expect(r.steps).toBe(R.steps);
    const m = await readMetrics(output);
    // AuxK really ran: some latents were dead and the aux loss was non-zero.
    expect(Math.max(...m.map((x) => x.dead_fraction))).toBeGreaterThan(0);
    expect(Math.max(...m.map((x) => x.aux_loss))).toBeGreaterThan(0);
    reference = output;
    return output;
  }

  async function expectSameAsReference(output: string): Promise<void> {
    const a = await uninterrupted();
    await expectSameSave(a, output);
    const [ma, mb] = [await readMetrics(a), await readMetrics(output)];
    expect(mb.map((r) => r.step)).toEqual(Array.from({ length: R.steps }, (_, i) => i + 1)); // each step exactly once
    expect(mb.map(untimed)).toEqual(ma.map(untimed));
    expect(mb.at(-1)!.mse).toBe(ma.at(-1)!.mse);
  }

  it('stopAfterSteps, then resume: the saved SAE and metrics equal the uninterrupted run bit for bit', async () => {
    await uninterrupted();
    const output = join(await tempDir(), 'B');
    const o = await resumeOptions(output);
    const stopped = await train({ ...o, stopAfterSteps: 17 });
    expect(stopped.stopped).toBe(true);
    expect(stopped.steps).toBe(17);
    expect(stopped.tokens).toBe(17 * R.batch);
    await expectNoSae(output); // an interrupted run leaves a checkpoint, not an SAE
    expect((await readdir(join(output, 'checkpoint'))).sort()).toEqual(['checkpoint.json', 'state-17.safetensors']);
    expect((await readMetrics(output)).map((r) => r.step)).toEqual(Array.from({ length: 17 }, (_, i) => i + 1));

    const resumed = await train({ ...o, resume: true });
    expect(resumed.stopped).toBe(false);
    expect(resumed.steps).toBe(R.steps);
    expect(resumed.tokens).toBe(R.steps * R.batch);
    await expectSameAsReference(output);
  });

  it.each(['batchtopk', 'standard', 'jumprelu'] as const)('%s: stop and resume equals the uninterrupted run', async (architecture) => {
    const dir = await tempDir();
    const o = { ...(await resumeOptions(join(dir, 'A'))), architecture };
    await train(o);
    const b = { ...o, output: join(dir, 'B') };
    expect((await train({ ...b, stopAfterSteps: 11 })).stopped).toBe(true);
    await train({ ...b, resume: true });
    await expectSameSave(o.output, b.output);
  });

  it('an AbortSignal raised from onStep stops with a checkpoint; resuming matches the uninterrupted run', async () => {
    const output = join(await tempDir(), 'C');
    const o = await resumeOptions(output);
    const ac = new AbortController();
    const abortAt = 3 + new Rng(seed).int(R.steps - 6); // somewhere in the middle
    const seen: number[] = [];
    const stopped = await train({
      ...o,
      signal: ac.signal,
      onStep: (p) => {
        seen.push(p.step);
        expect(p.totalSteps).toBe(R.steps);
        if (p.step === abortAt) ac.abort();
      },
    });
    expect(stopped.stopped).toBe(true);
    expect(stopped.steps).toBe(abortAt);
    expect(seen).toEqual(Array.from({ length: abortAt }, (_, i) => i + 1));
    await expectNoSae(output);
    expect(await readdir(join(output, 'checkpoint'))).toContain(`state-${abortAt}.safetensors`);

    const resumed = await train({ ...o, resume: true });
    expect(resumed.steps).toBe(R.steps);
    await expectSameAsReference(output);
  });

  it('a crash after logging but before the next checkpoint: resume drops the later records and replays them exactly', async () => {
    const output = join(await tempDir(), 'D');
    const o = await resumeOptions(output);
    const backup = join(output, 'checkpoint-at-14');
    // onStep runs before that step's checkpoint, so at step 15 the checkpoint holds step 14.
    await train({
      ...o,
      stopAfterSteps: 20,
      onStep: (p) => {
        if (p.step === 15) cpSync(join(output, 'checkpoint'), backup, { recursive: true });
      },
    });
    await rm(join(output, 'checkpoint'), { recursive: true });
    cpSync(backup, join(output, 'checkpoint'), { recursive: true });
    await rm(backup, { recursive: true });
    // The process "died" at step 20: metrics.jsonl has 20 records, the checkpoint is at 14.
    expect((await readMetrics(output)).length).toBe(20);

    const resumed = await train({ ...o, resume: true });
    expect(resumed.steps).toBe(R.steps);
    await expectSameAsReference(output);
  });

  it('resuming a finished run is a no-op that re-saves the same SAE', async () => {
    const a = await uninterrupted();
    const output = join(await tempDir(), 'E');
    cpSync(a, output, { recursive: true });
    const again = await train({ ...(await resumeOptions(output)), resume: true });
    expect(again.steps).toBe(R.steps);
    expect(again.stopped).toBe(false);
    expect(again.last).toBeUndefined();
    await expectSameAsReference(output);
  });

  it('resume refuses a checkpoint made with other settings, naming the setting, and leaves it usable', async () => {
    const output = join(await tempDir(), 'F');
    const o = await resumeOptions(output);
    await train({ ...o, stopAfterSteps: 9 });
    const metricsBefore = await readFile(join(output, 'metrics.jsonl'), 'utf8');
    const changes: Array<[Partial<TrainJobOptions>, RegExp]> = [
      [{ batchSize: 64 }, /batchSize was 128 there but is 64 now/],
      [{ k: 5 }, /\bk was 4 there but is 5 now/],
      [{ seed: seed + 1 }, new RegExp(`\\bseed was ${seed} there but is ${seed + 1} now`)],
      [{ dSae: 320 }, /dSae was 256 there but is 320 now/],
      [{ shuffleWindow: 1024 }, /shuffleWindow was 512 there but is 1024 now/],
    ];
    for (const [change, message] of changes) {
      const err = await expectReject(() => train({ ...o, ...change, resume: true }), ValidationError, 'cannot resume from', 'checkpoint');
      expect(err.message).toMatch(message);
      await expectNoSae(output);
      expect(await readFile(join(output, 'metrics.jsonl'), 'utf8')).toBe(metricsBefore); // untouched
    }
    // The refused attempts changed nothing: the original settings still resume exactly.
    await train({ ...o, resume: true });
    await expectSameAsReference(output);
  });
});

describe('bad inputs: clear errors, nothing half-written', () => {
  const dIn = 16;
  let good: string | undefined;
  async function goodInput(): Promise<string> {
    good ??= await (async () => {
      const file = join(await tempDir(), 'good.npy');
      await writeNpy(file, new Rng(seed).fillNormal(new Float32Array(256 * dIn)), [256, dIn]);
      return file;
    })();
    return good;
  }
  const base = { k: 2, dSae: 32, tokens: 256, batchSize: 32 };

  it('k > d_sae', async () => {
    const output = join(await tempDir(), 'out');
    await expectReject(async () => train({ ...base, input: await goodInput(), output, k: 40 }), ValidationError, 'k (40)', 'd_sae (32)');
    await expectNoSae(output);
  });

  it('an empty .npy (0 rows) says there are no activation rows', async () => {
    const dir = await tempDir();
    const input = join(dir, 'empty.npy');
    await writeNpy(input, new Float32Array(0), [0, dIn]);
    const output = join(dir, 'out');
    await expectReject(() => train({ ...base, input, output }), ValidationError, 'no activation rows', 'empty.npy');
    await expectNoSae(output);
  });

  it('an empty directory / a directory without activation files says there are no activation rows', async () => {
    const dir = await tempDir();
    const output = join(dir, 'out');
    await expectReject(() => train({ ...base, input: join(dir), output }), ValidationError, 'no activation rows');
    await expectNoSae(output);
  });

  it('a missing input path', async () => {
    const dir = await tempDir();
    const output = join(dir, 'out');
    const input = join(dir, 'nowhere.npy');
    await expectReject(() => train({ ...base, input, output }), FormatError, input, 'not found');
    expect(await exists(output)).toBe(false);
  });

  it('a NaN in the data file names the step and the row within the batch', async () => {
    const dir = await tempDir();
    const rows = 640;
    const batchSize = 32;
    const x = new Rng(seed + 7).fillNormal(new Float32Array(rows * dIn));
    const rng = new Rng(seed + 8);
    const row = 128 + rng.int(rows - 128); // past the initialization sample (initRows 64)
    const col = rng.int(dIn);
    x[row * dIn + col] = rng.uniform() < 0.5 ? NaN : Infinity;
    const input = join(dir, 'nan.npy');
    await writeNpy(input, x, [rows, dIn]);
    const output = join(dir, 'out');
    const step = Math.floor(row / batchSize) + 1; // shuffleWindow 0: file order
    const err = await expectReject(
      () => train({ ...base, input, output, tokens: rows, batchSize, shuffleWindow: 0, initRows: 64 }),
      NonFiniteInputError,
      `step ${step} `,
      `row ${row % batchSize} `,
      `column ${col}`,
      'non-finite',
    );
    expect(err.message).toContain(`rows ${(step - 1) * batchSize}..${step * batchSize - 1} of the shuffled stream`);
    expect((err as NonFiniteInputError).row).toBe(row % batchSize);
    expect((err as NonFiniteInputError).col).toBe(col);
    await expectNoSae(output);
    expect((await readMetrics(output)).every((r) => r.step < step)).toBe(true);
  });

  it('tokens 0, a fractional batchSize, dSae and expansion both given, a bad decay', async () => {
    const input = await goodInput();
    const output = join(await tempDir(), 'out');
    await expectReject(() => train({ ...base, input, output, tokens: 0 }), ValidationError, 'tokens', 'received 0');
    await expectReject(() => train({ ...base, input, output, batchSize: 2.5 }), ValidationError, 'batchSize', '2.5');
    await expectReject(() => train({ ...base, input, output, dSae: 32, expansion: 2 }), ValidationError, 'dSae', 'expansion');
    await expectReject(() => train({ ...base, input, output, decay: 'exp' as never }), ValidationError, 'decay', 'exp');
    await expectNoSae(output);
  });
});

describe('inputs', () => {
  it('a directory of two .npy shards (natural order) trains exactly as their concatenation, and loads', async () => {
    const dir = await tempDir();
    const dIn = 24;
    const gt = new GroundTruth({ dIn, nFeatures: 40, meanActive: 3, noise: 0.01, seed: seed + 11 });
    const rows = 1500;
    const split = 200 + new Rng(seed + 12).int(1000);
    const x = gt.sample(rows);
    const shards = join(dir, 'shards');
    await mkdir(shards);
    // shard_10 sorts before shard_2 as text but after it naturally: it holds the second part.
    await writeNpy(join(shards, 'shard_2.npy'), x.slice(0, split * dIn), [split, dIn]);
    await writeNpy(join(shards, 'shard_10.npy'), x.slice(split * dIn), [rows - split, dIn]);
    const single = join(dir, 'all.npy');
    await writeNpy(single, x, [rows, dIn]);
    // 2400 tokens over 1500 rows: the stream crosses the shard boundary and wraps.
    const o = { k: 3, dSae: 96, tokens: 2400, batchSize: 64, shuffleWindow: 256, checkpointEvery: 0, seed };
    const fromDir = await train({ ...o, input: shards, output: join(dir, 'fromDir') });
    const fromFile = await train({ ...o, input: single, output: join(dir, 'fromFile') });
    expect(fromDir.steps).toBe(Math.ceil(2400 / 64));
    expect(fromDir.last!.mse).toBe(fromFile.last!.mse);
    const [a, b] = [await readFile(join(dir, 'fromDir', 'sae_weights.safetensors')), await readFile(join(dir, 'fromFile', 'sae_weights.safetensors'))];
    expect(a.equals(b)).toBe(true);

    const sae = await loadSae(join(dir, 'fromDir'), { device: 'cpu' });
    try {
      expect(sae.dIn).toBe(dIn);
      expect(sae.dSae).toBe(96);
      const codes = await sae.encode(x.subarray(0, 50 * dIn));
      for (let r = 0; r < 50; r++) expect(codes.indptr[r + 1]! - codes.indptr[r]!).toBeLessThanOrEqual(3);
    } finally {
      sae.dispose();
    }
  });

  it('a live source (rowSourceFromIterable over ground-truth chunks) trains exactly as the same rows from a file, and resumes', async () => {
    const dir = await tempDir();
    const gtOpts: GroundTruthOptions = { dIn: 32, nFeatures: 64, meanActive: 3, noise: 0.01, seed: seed + 21 };
    // initRows within the file's rows: a file's initialization sample stops at its end, a live
    // source's does not, so only then do both runs see the same sample.
    const o = { k: 4, dSae: 128, tokens: 3000, batchSize: 100, shuffleWindow: 300, seed, logEvery: 5, initRows: 1000 };
    const file = join(dir, 'gt.npy');
    await writeGroundTruthNpy(file, new GroundTruth(gtOpts), 3000);
    let passes = 0;
    const live = () =>
      rowSourceFromIterable(gtOpts.dIn, async function* () {
        passes++;
        const gt = new GroundTruth(gtOpts);
        const sizes = new Rng(seed + passes);
        for (;;) yield gt.sample(1 + sizes.int(250)); // endless, ragged chunks
      });
    const fromLive = await train({ ...o, input: live(), output: join(dir, 'live') });
    expect(fromLive.stopped).toBe(false);
    expect(fromLive.steps).toBe(30);
    expect(passes).toBeGreaterThanOrEqual(2); // the initialization sample, then the batches
    await train({ ...o, input: file, output: join(dir, 'file') });
    const weights = (d: string) => readFile(join(dir, d, 'sae_weights.safetensors'));
    expect((await weights('live')).equals(await weights('file'))).toBe(true);
    const cfg = JSON.parse(await readFile(join(dir, 'live', 'cfg.json'), 'utf8')) as { metadata: Record<string, unknown> };
    expect(cfg.metadata['dataset_path']).toBe('a live source');

    // Resume over a live source: the stream is skipped to the checkpoint's row.
    const out = join(dir, 'liveResumed');
    expect((await train({ ...o, input: live(), output: out, stopAfterSteps: 13 })).stopped).toBe(true);
    await train({ ...o, input: live(), output: out, resume: true });
    expect((await weights('liveResumed')).equals(await weights('live'))).toBe(true);
    expect((await readMetrics(out)).map(untimed)).toEqual((await readMetrics(join(dir, 'live'))).map(untimed));
  });

  it('a live source that ends too early is a clear error', async () => {
    const dir = await tempDir();
    const dIn = 8;
    const x = new Rng(seed + 31).fillNormal(new Float32Array(250 * dIn));
    const source = rowSourceFromIterable(dIn, async function* () {
      yield x.subarray(0, 120 * dIn);
      yield x.subarray(120 * dIn);
    });
    const output = join(dir, 'out');
    await expectReject(
      () => train({ input: source, output, k: 2, dSae: 16, tokens: 1000, batchSize: 50, shuffleWindow: 0 }),
      ValidationError,
      'a live source',
      'ran out of rows',
    );
    await expectNoSae(output);
  });
});

describe('learningRate', () => {
  const rng = new Rng(seed + 41);
  const total = 200 + rng.int(300);
  const lr = 1e-4 + rng.uniform() * 1e-2;

  it('warmup ramps linearly from lr / warmup up to lr', () => {
    const warmupSteps = 5 + rng.int(40);
    const s: LrSchedule = { lr, totalSteps: total, warmupSteps, decay: 'none', decaySteps: 0, lrEnd: 0 };
    expect(learningRate(s, 0)).toBeCloseTo(lr / warmupSteps, 15);
    for (let t = 0; t < warmupSteps; t++) expect(learningRate(s, t)).toBeCloseTo((lr * (t + 1)) / warmupSteps, 15);
    expect(learningRate(s, warmupSteps - 1)).toBe(lr);
    for (let t = warmupSteps; t < total; t++) expect(learningRate(s, t)).toBe(lr);
  });

  it("'none' keeps lr after warmup whatever decaySteps / lrEnd say", () => {
    const s: LrSchedule = { lr, totalSteps: total, warmupSteps: 0, decay: 'none', decaySteps: 50, lrEnd: lr / 10 };
    for (let t = 0; t < total; t++) expect(learningRate(s, t)).toBe(lr);
  });

  it('linear decay is linear over the decay phase and reaches lrEnd at the last step', () => {
    const decaySteps = 10 + rng.int(100);
    const lrEnd = lr * rng.uniform() * 0.5;
    const s: LrSchedule = { lr, totalSteps: total, warmupSteps: 7, decay: 'linear', decaySteps, lrEnd };
    const start = total - decaySteps;
    for (let t = 7; t < start; t++) expect(learningRate(s, t)).toBe(lr);
    for (let t = start; t < total; t++) {
      const p = (t - start + 1) / decaySteps;
      expect(learningRate(s, t)).toBeCloseTo(lrEnd + (lr - lrEnd) * (1 - p), 15);
    }
    expect(learningRate(s, total - 1)).toBeCloseTo(lrEnd, 15);
    expect(learningRate(s, start - 1)).toBe(lr);
    expect(learningRate(s, start)).toBeLessThan(lr);
  });

  it('cosine decay is monotone non-increasing in the decay phase, from below lr to lrEnd', () => {
    const decaySteps = 10 + rng.int(100);
    const lrEnd = lr * rng.uniform() * 0.5;
    const s: LrSchedule = { lr, totalSteps: total, warmupSteps: 0, decay: 'cosine', decaySteps, lrEnd };
    const start = total - decaySteps;
    let prev = learningRate(s, start - 1);
    expect(prev).toBe(lr);
    for (let t = start; t < total; t++) {
      const v = learningRate(s, t);
      expect(v).toBeLessThanOrEqual(prev);
      expect(v).toBeGreaterThanOrEqual(lrEnd - 1e-18);
      prev = v;
    }
    expect(learningRate(s, total - 1)).toBeCloseTo(lrEnd, 15);
  });

  it('warmup overlapping the decay takes the smaller of the two', () => {
    const s: LrSchedule = { lr, totalSteps: 10, warmupSteps: 8, decay: 'linear', decaySteps: 8, lrEnd: 0 };
    for (let t = 0; t < 10; t++) {
      const warm = t < 8 ? (lr * (t + 1)) / 8 : lr;
      const decay = t >= 2 ? lr * (1 - (t - 1) / 8) : lr;
      expect(learningRate(s, t)).toBeCloseTo(Math.min(warm, decay), 15);
    }
  });
});

describe('metrics.jsonl', () => {
  it('a record every logEvery steps plus the last, finite fields in range, the lr of the default schedule', async () => {
    const dir = await tempDir();
    const gtOpts: GroundTruthOptions = { dIn: 32, nFeatures: 64, meanActive: 3, noise: 0.01, seed: seed + 51 };
    const input = join(dir, 'gt.npy');
    await writeGroundTruthNpy(input, new GroundTruth(gtOpts), 4000);
    const output = join(dir, 'out');
    const logEvery = 3 + new Rng(seed + 52).int(6);
    const batchSize = 64;
    const steps = 61;
    const k = 4;
    const lr = 3e-3;
    const logged: MetricsRecord[] = [];
    const r = await train({ input, output, k, dSae: 128, tokens: steps * batchSize - 5, batchSize, lr, logEvery, seed, onLog: (m) => logged.push(m) });
    expect(r.steps).toBe(steps); // tokens rounded up to whole batches

    const records = await readMetrics(output);
    expect(records).toEqual(logged);
    const want = Array.from({ length: Math.floor(steps / logEvery) }, (_, i) => (i + 1) * logEvery);
    if (want.at(-1) !== steps) want.push(steps);
    expect(records.map((m) => m.step)).toEqual(want);

    // Defaults: warmup 5% of the steps, linear decay over the last 20% to 0.
    const schedule: LrSchedule = { lr, totalSteps: steps, warmupSteps: Math.floor(steps * 0.05), decay: 'linear', decaySteps: Math.floor(steps * 0.2), lrEnd: 0 };
    const fields: Array<keyof MetricsRecord> = [
      'step', 'tokens', 'lr', 'mse', 'fvu', 'explained_variance', 'l0', 'dead_fraction', 'aux_loss', 'sparsity_loss', 'grad_norm', 'tokens_per_second', 'elapsed_s',
    ];
    let lastElapsed = 0;
    for (const m of records) {
      expect(Object.keys(m).sort()).toEqual([...fields].sort());
      for (const f of fields) expect(Number.isFinite(m[f]), `${f} at step ${m.step}: ${m[f]}`).toBe(true);
      expect(m.tokens).toBe(m.step * batchSize);
      expect(m.lr).toBe(learningRate(schedule, m.step - 1));
      expect(m.fvu).toBeGreaterThan(0);
      expect(m.fvu).toBeLessThan(1.5);
      expect(m.explained_variance).toBeCloseTo(1 - m.fvu, 12);
      expect(m.mse).toBeGreaterThan(0);
      expect(m.l0).toBeGreaterThan(0);
      expect(m.l0).toBeLessThanOrEqual(k);
      expect(m.dead_fraction).toBeGreaterThanOrEqual(0);
      expect(m.dead_fraction).toBeLessThanOrEqual(1);
      expect(m.aux_loss).toBeGreaterThanOrEqual(0);
      expect(m.grad_norm).toBeGreaterThan(0);
      expect(m.tokens_per_second).toBeGreaterThan(0);
      expect(m.elapsed_s).toBeGreaterThanOrEqual(lastElapsed);
      lastElapsed = m.elapsed_s;
    }
    expect(records.at(-1)!.lr).toBe(0); // the linear decay ends at lrEnd 0
    expect(records.at(-1)!.fvu).toBeLessThan(records[0]!.fvu); // it learned something
    expect(records.at(-1)!.mse).toBe(r.last!.mse);
  });
});

describe('fixes found by review', () => {
  it('a NaN in the initialization sample names the input and its row; bad option values are refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'saekit-trainjob-'));
    try {
      const dIn = 16;
      const x = new Rng(seed + 31).fillNormal(new Float32Array(1000 * dIn));
      x[5 * dIn + 3] = Number.POSITIVE_INFINITY;
      const input = join(dir, 'bad.npy');
      await writeNpy(input, x, [1000, dIn]);
      const opts = { input, output: join(dir, 'out'), k: 2, dSae: 32, tokens: 100, batchSize: 10 };
      const err = await train(opts).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NonFiniteInputError);
      expect((err as NonFiniteInputError).message).toMatch(/bad\.npy.*row 5 .*column 3/);
      x[5 * dIn + 3] = 0;
      await writeNpy(input, x, [1000, dIn]);
      await expect(train({ ...opts, stopAfterSteps: 0 })).rejects.toThrow(/stopAfterSteps/);
      await expect(train({ ...opts, decayFraction: 1.5 })).rejects.toThrow(/decayFraction/);
      await expect(train({ ...opts, lr: 1e-3, lrEnd: 1e-2 })).rejects.toThrow(/lrEnd/);
      await writeFile(join(dir, 'afile'), 'x');
      await expect(train({ ...opts, output: join(dir, 'afile') })).rejects.toThrow(/is a file/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
