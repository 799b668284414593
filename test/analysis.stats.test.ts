// Feature statistics against brute force on small random codes: exact counts, sums, maxima,
// histogram counts and top-N sets (with their contexts); merging shards; saving and resuming;
// the analysis pass over a corpus equals the pass over the same dump; logit effects against a
// float64 W_dec @ W_U.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyzeFeatures, featureDoc, dashboardIndex } from '../src/analysis/analyze.js';
import { FeatureStats } from '../src/analysis/featureStats.js';
import { logitEffects, readUnembedding } from '../src/analysis/logitEffects.js';
import type { SparseCodes } from '../src/codes.js';
import { ValidationError } from '../src/errors.js';
import { dumpActivations, readActivationsManifest } from '../src/model/activations.js';
import { SafetensorsReader } from '../src/formats/index.js';
import { gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { writeTinyGpt2 } from '../src/model/tinyGpt2.js';
import { createSae } from '../src/sae.js';
import { expectThrow } from './helpers/expectError.js';
import { randomWeights, rng, tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('analysis.stats.test');
const dirs = tempDirs();
afterAll(() => dirs.cleanup());

/** Random codes: each row fires a few random features with values spread over decades, many ties. */
function randomCodes(r: () => number, rows: number, dSae: number): SparseCodes {
  const indptr = new Uint32Array(rows + 1);
  const indices: number[] = [];
  const values: number[] = [];
  for (let row = 0; row < rows; row++) {
    const n = Math.floor(r() * 5);
    const picked = [...new Set(Array.from({ length: n }, () => Math.floor(r() * dSae)))].sort((a, b) => a - b);
    for (const f of picked) {
      indices.push(f);
      // Coarse values (many exact ties) over 1e-5 .. 1e5, some beyond the histogram's range.
      values.push(r() < 0.3 ? Math.round(r() * 4) / 2 + 0.5 : Math.fround(10 ** (r() * 10 - 5)));
    }
    indptr[row + 1] = indices.length;
  }
  return { rows, dSae, indptr, indices: Int32Array.from(indices), values: Float32Array.from(values) };
}

interface Brute {
  count: number[];
  sum: number[];
  max: number[];
  hist: number[][];
  top: { row: number; value: number; tokens: number[]; values: number[]; at: number }[][];
}

/** Straightforward statistics: every firing token listed, sorted, cut. */
function brute(codes: SparseCodes, tokens: Int32Array, ctx: number, s: FeatureStats, left: number, right: number, topN: number, ignore = new Set<number>()): Brute {
  const d = codes.dSae;
  const dense = (row: number, f: number) => {
    for (let i = codes.indptr[row]!; i < codes.indptr[row + 1]!; i++) if (codes.indices[i] === f) return codes.values[i]!;
    return 0;
  };
  const out: Brute = { count: Array(d).fill(0), sum: Array(d).fill(0), max: Array(d).fill(0), hist: Array.from({ length: d }, () => Array(s.nBins).fill(0)), top: [] };
  const all: { row: number; value: number }[][] = Array.from({ length: d }, () => []);
  for (let row = 0; row < codes.rows; row++) {
    if (ignore.has(tokens[row]!)) continue;
    for (let i = codes.indptr[row]!; i < codes.indptr[row + 1]!; i++) {
      const f = codes.indices[i]!;
      const v = codes.values[i]!;
      out.count[f]++;
      out.sum[f] += v;
      out.max[f] = Math.max(out.max[f]!, v);
      let b = 0;
      for (let e = 1; e < s.nBins; e++) if (s.edges[e]! <= v) b = e;
      out.hist[f]![b]++;
      all[f]!.push({ row, value: v });
    }
  }
  for (let f = 0; f < d; f++) {
    const sorted = all[f]!.sort((a, b) => b.value - a.value || a.row - b.row).slice(0, topN);
    out.top.push(
      sorted.map(({ row, value }) => {
        const w0 = row - (row % ctx);
        const from = Math.max(w0, row - left);
        const to = Math.min(w0 + ctx - 1, row + right);
        const ts: number[] = [];
        const vs: number[] = [];
        for (let q = from; q <= to; q++) {
          ts.push(tokens[q]!);
          vs.push(dense(q, f));
        }
        return { row, value, tokens: ts, values: vs, at: row - from };
      }),
    );
  }
  return out;
}

function expectMatches(s: FeatureStats, b: Brute): void {
  for (let f = 0; f < s.dSae; f++) {
    expect(s.count[f], `count ${f}`).toBe(b.count[f]);
    expect(s.sum[f]! / Math.max(1, b.sum[f]!)).toBeCloseTo(b.sum[f]! / Math.max(1, b.sum[f]!), 12);
    expect(s.max[f], `max ${f}`).toBe(b.max[f]);
    expect(Array.from(s.hist.subarray(f * s.nBins, (f + 1) * s.nBins)), `hist ${f}`).toEqual(b.hist[f]);
    expect(
      s.top(f).map((e) => ({ row: e.row, value: e.value, tokens: e.tokenIds, values: e.values, at: e.at })),
      `top ${f}`,
    ).toEqual(b.top[f]);
  }
}

describe('feature statistics', () => {
  const dSae = 37;
  const ctx = 9;
  const opts = { dSae, topN: 5, contextLeft: 3, contextRight: 2, reservoir: 6, seed };
  let codes: SparseCodes;
  let tokens: Int32Array;

  beforeAll(() => {
    const r = rng(seed);
    codes = randomCodes(r, 60 * ctx, dSae);
    tokens = Int32Array.from({ length: codes.rows }, () => Math.floor(r() * 50));
  });

  it('counts, sums, maxima, histograms and top-N sets equal brute force', () => {
    const s = new FeatureStats(opts);
    // Fed in uneven groups of whole windows.
    let row = 0;
    for (const windows of [1, 7, 2, 50]) {
      const n = windows * ctx;
      s.add(sliceCodes(codes, row, n), tokens.subarray(row, row + n), ctx, row);
      row += n;
    }
    expect(s.tokensSeen).toBe(codes.rows);
    expectMatches(s, brute(codes, tokens, ctx, s, 3, 2, 5));
    // Reservoirs: min(R, count) real firing tokens of the feature, quantile bins ascending.
    for (let f = 0; f < dSae; f++) {
      const smp = s.samples(f);
      expect(smp.length).toBe(Math.min(6, s.count[f]!));
      for (const e of smp) expect(e.value).toBe(valueAt(codes, e.row, f));
      const q = s.quantileSamples(f, 3, 2);
      const flat = q.flatMap((b) => b.examples.map((e) => e.value));
      expect(flat).toEqual([...flat].sort((a, b) => b - a));
    }
  });

  it('ignored tokens are not counted or chosen but stay in contexts', () => {
    const s = new FeatureStats(opts);
    const ignore = new Set([0, 1, 2, 3, 4]);
    s.add(codes, tokens, ctx, 0, ignore);
    expect(s.tokensSeen).toBe(Array.from(tokens).filter((t) => !ignore.has(t)).length);
    expect(s.rowsSeen).toBe(codes.rows);
    expectMatches(s, brute(codes, tokens, ctx, s, 3, 2, 5, ignore));
  });

  it('two shards merged equal one pass; a saved state resumes exactly', async () => {
    const one = new FeatureStats(opts);
    one.add(codes, tokens, ctx, 0);
    const half = 30 * ctx;
    const a = new FeatureStats(opts);
    const b = new FeatureStats({ ...opts, seed: seed + 1 });
    a.add(sliceCodes(codes, 0, half), tokens.subarray(0, half), ctx, 0);
    b.add(sliceCodes(codes, half, codes.rows - half), tokens.subarray(half), ctx, half);
    a.merge(b);
    expectMatches(a, brute(codes, tokens, ctx, a, 3, 2, 5));
    for (let f = 0; f < dSae; f++) expect(a.samples(f).length).toBe(Math.min(6, a.count[f]!));

    const path = join(await dirs.make(), 'state.safetensors');
    const first = new FeatureStats(opts);
    first.add(sliceCodes(codes, 0, half), tokens.subarray(0, half), ctx, 0);
    await first.save(path);
    const resumed = await FeatureStats.load(path);
    resumed.add(sliceCodes(codes, half, codes.rows - half), tokens.subarray(half), ctx, half);
    expectMatches(resumed, brute(codes, tokens, ctx, resumed, 3, 2, 5));
    // Same seed and RNG state: the reservoirs are those of the uninterrupted pass too.
    for (let f = 0; f < dSae; f++) expect(resumed.samples(f)).toEqual(one.samples(f));
    expectThrow(() => a.merge(new FeatureStats({ ...opts, topN: 4 })), ValidationError, 'different options');
  });

  it('the reservoir is a uniform sample of the firing tokens (Algorithm L, checked over many seeds)', () => {
    // One feature firing on all 400 rows; R = 10. Over 400 seeds every row should be kept
    // with probability R/n = 1/40: count inclusions per block of 40 rows (expected 400 each).
    const rows = 400;
    const c: SparseCodes = { rows, dSae: 1, indptr: Uint32Array.from({ length: rows + 1 }, (_, i) => i), indices: new Int32Array(rows), values: Float32Array.from({ length: rows }, (_, i) => 1 + (i % 7)) };
    const ids = new Int32Array(rows);
    const blocks = new Array(10).fill(0);
    for (let t = 0; t < 400; t++) {
      const st = new FeatureStats({ dSae: 1, topN: 2, reservoir: 10, contextLeft: 0, contextRight: 0, seed: seed + t * 7919 });
      st.add(c, ids, 8, 0);
      const kept = st.samples(0).map((e) => e.row);
      expect(new Set(kept).size).toBe(10);
      for (const r of kept) blocks[Math.floor(r / 40)]++;
    }
    // Chi-square with 9 degrees of freedom: > 27.9 happens with probability 0.001 under uniformity.
    const chi = blocks.reduce((acc, b) => acc + (b - 400) ** 2 / 400, 0);
    expect(chi, `inclusions per block ${blocks}`).toBeLessThan(27.9);
  });

  it('rejects bad input with clear errors', () => {
    const s = new FeatureStats(opts);
    expectThrow(() => s.add(sliceCodes(codes, 0, 10), tokens.subarray(0, 10), ctx, 0), ValidationError, 'whole windows of 9');
    expectThrow(() => s.add(sliceCodes(codes, 0, 9), tokens.subarray(0, 8), ctx, 0), ValidationError, '8 token ids');
    expectThrow(() => new FeatureStats({ dSae: 0 }), ValidationError, 'dSae');
    expectThrow(() => new FeatureStats({ dSae: 3, histMin: 1, histMax: 0.5 }), ValidationError, 'histMax');
  });
});

function sliceCodes(c: SparseCodes, start: number, n: number): SparseCodes {
  const a = c.indptr[start]!;
  const b = c.indptr[start + n]!;
  return { rows: n, dSae: c.dSae, indptr: c.indptr.slice(start, start + n + 1).map((x) => x - a), indices: c.indices.slice(a, b), values: c.values.slice(a, b) };
}

function valueAt(c: SparseCodes, row: number, f: number): number {
  for (let i = c.indptr[row]!; i < c.indptr[row + 1]!; i++) if (c.indices[i] === f) return c.values[i]!;
  return 0;
}

describe('analysis pass and logit effects on a generated model', () => {
  it('a corpus pass equals a pass over the dump of the same windows; logit effects equal float64 W_dec @ W_U', async () => {
    const root = await dirs.make();
    const modelDir = join(root, 'tiny');
    const w = await writeTinyGpt2(modelDir, { layers: 2, dModel: 32, heads: 4, seed, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
    const corpus = join(root, 'corpus.txt');
    await writeFile(corpus, syntheticText(200, seed));
    const model = await LanguageModel.load(modelDir);
    const weights = randomWeights('topk', 32, 48, seed, 4);
    weights.config.normalizeActivations = 'none';
    const sae = await createSae(weights, { device: 'cpu' });
    try {
      const hook = 'blocks.1.hook_resid_pre';
      const opts = { stats: { dSae: 48, topN: 4, reservoir: 5, seed } };
      const ignoreTokens = new Set([model.tokenizer.bosId!]);
      const fromCorpus = await analyzeFeatures(sae, { kind: 'corpus', model, hook, corpus, tokens: 640, contextSize: 32, prependBos: true, batchSize: 3 }, { ...opts, ignoreTokens });
      const dump = join(root, 'acts');
      await dumpActivations(model, { hook, corpus, output: dump, contextSize: 32, tokens: 640, shardWindows: 4 });
      const fromDump = await analyzeFeatures(sae, { kind: 'dump', dir: dump, chunkWindows: 3 }, { ...opts, ignoreTokens });
      expect(fromCorpus.tokens).toBe(640);
      expect(fromDump.tokens).toBe(640);
      const a = fromCorpus.stats;
      const b = fromDump.stats;
      // BOS (opening each window and separating documents) is left out of the counts.
      const ids: number[] = [];
      for (const f of (await readActivationsManifest(dump))!.activations) {
        const st = await SafetensorsReader.open(join(dump, f));
        ids.push(...((await st.readTensor('token_ids')) as Int32Array));
        await st.close();
      }
      expect(ids.filter((t) => t === model.tokenizer.bosId).length).toBeGreaterThan(20);
      expect(a.tokensSeen).toBe(ids.filter((t) => t !== model.tokenizer.bosId).length);
      expect(b.tokensSeen).toBe(a.tokensSeen);
      expect(Array.from(b.count)).toEqual(Array.from(a.count));
      expect(Array.from(b.hist)).toEqual(Array.from(a.hist));
      for (let f = 0; f < 48; f++) {
        expect(b.top(f).map((e) => [e.row, e.tokenIds])).toEqual(a.top(f).map((e) => [e.row, e.tokenIds]));
        for (const [i, e] of b.top(f).entries()) expect(e.value).toBeCloseTo(a.top(f)[i]!.value, 5);
      }

      // The unembedding is the tied token embedding, transposed.
      const u = await readUnembedding(join(modelDir, 'onnx', 'model.onnx'));
      expect([u.dModel, u.vocab]).toEqual([32, 50257]);
      for (const [j, v] of [[0, 0], [5, 123], [31, 50256]] as const) expect(u.W_U[j * 50257 + v]).toBe(w.wte[v * 32 + j]);
      const L = await logitEffects(weights.W_dec, 48, u, 5);
      for (const f of [0, 17, 47]) {
        const exact = Array.from({ length: 50257 }, (_, v) => {
          let s = 0;
          for (let j = 0; j < 32; j++) s += weights.W_dec[f * 32 + j]! * w.wte[v * 32 + j]!;
          return { v, s };
        });
        const desc = [...exact].sort((x, y) => y.s - x.s);
        expect(Array.from(L.posIds.subarray(f * 5, f * 5 + 5))).toEqual(desc.slice(0, 5).map((e) => e.v));
        expect(Array.from(L.negIds.subarray(f * 5, f * 5 + 5))).toEqual(desc.slice(-5).reverse().map((e) => e.v));
        for (let i = 0; i < 5; i++) expect(L.posValues[f * 5 + i]).toBeCloseTo(desc[i]!.s, 5);
        expect(L.histHeights.subarray(f * L.histBins, (f + 1) * L.histBins).reduce((x, y) => x + y, 0)).toBeGreaterThan(1000);
      }

      // Documents: fields agree with the statistics.
      const doc = featureDoc(a, 3, { modelId: 'tiny', hook, tokenText: (id) => model.tokenText(id), logits: L });
      expect(doc.frac_nonzero).toBeCloseTo(a.count[3]! / a.tokensSeen, 12);
      expect(doc.freq_hist_data_bar_heights.reduce((x, y) => x + y, 0)).toBe(a.count[3]);
      expect(doc.activations.filter((x) => x.bin === 'top').length).toBe(Math.min(4, a.count[3]!));
      expect(doc.pos_str).toHaveLength(5);
      const index = dashboardIndex(a, { modelId: 'tiny', hook, tokenText: (id) => model.tokenText(id), logits: L, sae: 'sae' });
      expect(index.features).toHaveLength(48);
      expect(index.features[3]!.top_token).toBe(doc.activations[0] ? doc.activations[0].tokens[doc.activations[0].maxValueTokenIndex] : '');
    } finally {
      sae.dispose();
      await model.dispose();
    }
  });
});
