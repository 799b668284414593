// `saekit eval --output FILE.json` (the SAEBench-shaped core eval) against a float64 reference
// that shares nothing with saekit's evaluation but the corpus windows: the float64 GPT-2 of
// test/helpers/gpt2Reference.ts gives the clean, spliced and zero-ablated logits, reference.js
// encodes and decodes the SAE in float64, and every metric is computed here the plain two-pass
// way (means first, then sums about them). Every metric must agree to 1e-5.
//
// The two historical bugs the README names are tests: explained variance taken about zero
// instead of the mean (the reference's about-zero value differs, so a regression would show),
// and an MSE that changes with the batch size (batch sizes 1 and 3 give the same figures).
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveSaeLens } from '../src/formats/index.js';
import { readCorpus, tokenWindows } from '../src/model/corpus.js';
import { densityHistogram } from '../src/model/coreEval.js';
import { gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { writeTinyGpt2, type Gpt2Weights } from '../src/model/tinyGpt2.js';
import { Rng } from '../src/synthetic.js';
import type { Architecture, SaeWeights } from '../src/types.js';
import { runCli } from './helpers/cli.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { gpt2ForwardF64 } from './helpers/gpt2Reference.js';
import { referenceDecode, referenceEncode } from './helpers/reference.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('eval.core.test');
const dirs = tempDirs();
const D = 32;
const D_SAE = 67; // odd: no latent block divides it
const CTX = 16;
const TOKENS = 128;
const LAYER = 1;
const HOOK = `blocks.${LAYER}.hook_resid_pre`;
let corpus: string;
let model: { dir: string; w: Gpt2Weights };
let windows: number[][];

beforeAll(async () => {
  corpus = join(await dirs.make(), 'corpus.txt');
  await writeFile(corpus, syntheticText(400, seed));
  const dir = join(await dirs.make(), 'tiny-gpt2');
  const w = await writeTinyGpt2(dir, { seed, layers: 2, dModel: D, heads: 4, vocabSize: 50257, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
  model = { dir, w };
  const m = await LanguageModel.load(dir);
  try {
    windows = [];
    for await (const win of tokenWindows(readCorpus(corpus), m.tokenizer, { contextSize: CTX, prependBos: true, maxTokens: TOKENS })) windows.push(Array.from(win));
  } finally {
    await m.dispose();
  }
});
afterAll(() => dirs.cleanup());

function saeWeights(architecture: Architecture, s: number, k: number): SaeWeights {
  const rng = new Rng(s);
  const normal = (n: number, scale: number) => rng.fillNormal(new Float32Array(n)).map((v) => v * scale);
  return {
    config: {
      architecture,
      dIn: D,
      dSae: D_SAE,
      ...(architecture === 'topk' && { k }),
      applyBDecToInput: true,
      normalizeActivations: 'none',
      dtype: 'float32',
      format: 'generated',
      hookName: HOOK,
      metadata: { context_size: CTX, prepend_bos: true },
    },
    // Wide encoder rows and a negative bias: some latents never fire (frac_alive < 1).
    W_enc: normal(D * D_SAE, 1 / Math.sqrt(D)),
    encTransposed: false,
    b_enc: Float32Array.from(normal(D_SAE, 0.5), (v, j) => (j % 5 === 0 ? v - 6 : v)),
    W_dec: normal(D_SAE * D, 0.6 / Math.sqrt(k)),
    b_dec: normal(D, 0.2),
  };
}

interface Reference {
  ce: { clean: number; sae: number; zero: number };
  kl: { sae: number; zero: number };
  mse: number;
  evMean: number;
  evZero: number;
  cossim: number;
  l2In: number;
  l2Out: number;
  l2Ratio: number;
  rrb: number;
  l0: number;
  l1: number;
  density: number[];
  cah: number[];
}

/** Every metric of the core eval, float64, plainly. */
function reference(w: SaeWeights): Reference {
  const V = model.w.config.vocabSize;
  const clean = gpt2ForwardF64(model.w, windows);
  const x = clean.residPre[LAYER]!;
  const rows = referenceEncode(w, Float32Array.from(x)) as { indices: number[]; values: number[] }[];
  const indptr = new Uint32Array(rows.length + 1);
  const flatIdx: number[] = [];
  const flatVal: number[] = [];
  rows.forEach((r, i) => {
    flatIdx.push(...r.indices);
    flatVal.push(...r.values);
    indptr[i + 1] = flatIdx.length;
  });
  const codes = { rows: rows.length, dSae: D_SAE, indptr, indices: Int32Array.from(flatIdx), values: Float64Array.from(flatVal) };
  const xHat = referenceDecode(w, codes as never).x as Float64Array;
  const spliced = gpt2ForwardF64(model.w, windows, { replaceResidPre: { layer: LAYER, values: xHat } });
  const zero = gpt2ForwardF64(model.w, windows, { replaceResidPre: { layer: LAYER, values: new Float64Array(xHat.length) } });

  const logSoftmax = (L: Float64Array, off: number): Float64Array => {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, L[off + v]!);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(L[off + v]! - max);
    const lse = max + Math.log(s);
    return Float64Array.from(L.subarray(off, off + V), (l) => l - lse);
  };
  const ce = { clean: 0, sae: 0, zero: 0 };
  const kl = { sae: 0, zero: 0 };
  let nCe = 0;
  const n = windows.length * CTX;
  for (let b = 0; b < windows.length; b++) {
    for (let t = 0; t < CTX; t++) {
      const off = (b * CTX + t) * V;
      const lc = logSoftmax(clean.logits, off);
      const ls = logSoftmax(spliced.logits, off);
      const lz = logSoftmax(zero.logits, off);
      if (t + 1 < CTX) {
        const next = windows[b]![t + 1]!;
        ce.clean -= lc[next]!;
        ce.sae -= ls[next]!;
        ce.zero -= lz[next]!;
        nCe++;
      }
      for (let v = 0; v < V; v++) {
        const p = Math.exp(lc[v]!);
        kl.sae += p * (lc[v]! - ls[v]!);
        kl.zero += p * (lc[v]! - lz[v]!);
      }
    }
  }
  const mean = new Float64Array(D);
  for (let i = 0; i < n * D; i++) mean[i % D]! += x[i]! / n;
  let err = 0;
  let varMean = 0;
  let varZero = 0;
  let cos = 0;
  let l2In = 0;
  let l2Out = 0;
  let l2Ratio = 0;
  let hatSq = 0;
  let dot = 0;
  for (let r = 0; r < n; r++) {
    let xx = 0;
    let hh = 0;
    let xh = 0;
    for (let j = 0; j < D; j++) {
      const a = x[r * D + j]!;
      const h = xHat[r * D + j]!;
      err += (a - h) ** 2;
      varMean += (a - mean[j]!) ** 2;
      varZero += a * a;
      xx += a * a;
      hh += h * h;
      xh += a * h;
    }
    cos += xh / Math.sqrt(xx * hh);
    l2In += Math.sqrt(xx);
    l2Out += Math.sqrt(hh);
    l2Ratio += Math.sqrt(hh) / Math.sqrt(xx);
    hatSq += hh;
    dot += xh;
  }
  const fired = new Array<number>(D_SAE).fill(0);
  const inWindow = new Array<number>(D_SAE).fill(0);
  let l0 = 0;
  let l1 = 0;
  for (let b = 0; b < windows.length; b++) {
    const seen = new Set<number>();
    for (let t = 0; t < CTX; t++) {
      const r = rows[b * CTX + t]!;
      r.indices.forEach((f, i) => {
        if (!(r.values[i]! > 0)) return;
        l0++;
        l1 += r.values[i]!;
        fired[f]!++;
        seen.add(f);
      });
    }
    for (const f of seen) inWindow[f]!++;
  }
  return {
    ce: { clean: ce.clean / nCe, sae: ce.sae / nCe, zero: ce.zero / nCe },
    kl: { sae: kl.sae / n, zero: kl.zero / n },
    mse: err / (n * D),
    evMean: 1 - err / varMean,
    evZero: 1 - err / varZero,
    cossim: cos / n,
    l2In: l2In / n,
    l2Out: l2Out / n,
    l2Ratio: l2Ratio / n,
    rrb: hatSq / n / (dot / n),
    l0: l0 / n,
    l1: l1 / n,
    density: fired.map((c) => c / n),
    cah: fired.map((c, f) => (inWindow[f]! > 0 ? c / inWindow[f]! : 0)),
  };
}

/** |got - want| <= tol * max(1, |want|). */
function expectNear(got: unknown, want: number, what: string, tol = 1e-5): void {
  expect(typeof got, what).toBe('number');
  expect(Math.abs((got as number) - want), `${what}: got ${got}, float64 ${want}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(want)));
}

type Metrics = Record<string, Record<string, number | Record<string, unknown>>>;

async function evalToFile(saeDir: string, batchSize: number): Promise<{ doc: Record<string, unknown>; metrics: Metrics; stdout: Record<string, number> }> {
  const out = join(await dirs.make(), 'core_eval.json');
  const r = await runCli('eval', '--model', model.dir, '--sae', saeDir, '--text', corpus, '--tokens', String(TOKENS), '--batch-size', String(batchSize), '--output', out, '--json');
  expect(r.code, r.err).toBe(0);
  const doc = JSON.parse(await readFile(out, 'utf8')) as Record<string, unknown>;
  return { doc, metrics: doc.eval_result_metrics as Metrics, stdout: JSON.parse(r.out) as Record<string, number> };
}

describe('saekit eval --output: the core metrics against a float64 reference', () => {
  for (const c of [
    { architecture: 'topk' as const, k: 5 },
    { architecture: 'standard' as const, k: 8 },
  ]) {
    it(`${c.architecture}: every metric equals the float64 reference to 1e-5, in SAEBench's shape`, async () => {
      const w = saeWeights(c.architecture, seed + (c.architecture === 'topk' ? 1 : 2), c.k);
      const saeDir = join(await dirs.make(), 'sae');
      await saveSaeLens(saeDir, w);
      const ref = reference(w);
      const { doc, metrics: m } = await evalToFile(saeDir, 3);

      expect(doc.eval_type_id).toBe('core');
      expect(typeof doc.eval_id).toBe('string');
      expect(Number.isSafeInteger(doc.datetime_epoch_millis)).toBe(true);
      const cfg = doc.eval_config as Record<string, unknown>;
      expect(cfg).toMatchObject({ hook_name: HOOK, context_size: CTX, n_tokens_requested: TOKENS, batch_size_prompts: 3, prepend_bos: true, dataset: corpus, seed: null });
      expect(cfg.model_name).toBeTypeOf('string');
      expect(cfg.saekit_version).toMatch(/^\d+\.\d+\.\d+/);
      expect((doc.sae_cfg_dict as Record<string, unknown>).architecture).toBe(c.architecture);

      const mb = m.model_behavior_preservation!;
      const mp = m.model_performance_preservation!;
      const rq = m.reconstruction_quality!;
      const sh = m.shrinkage!;
      const sp = m.sparsity!;
      expectNear(mp.ce_loss_without_sae, ref.ce.clean, 'ce_loss_without_sae');
      expectNear(mp.ce_loss_with_sae, ref.ce.sae, 'ce_loss_with_sae');
      expectNear(mp.ce_loss_with_ablation, ref.ce.zero, 'ce_loss_with_ablation');
      expectNear(mp.ce_loss_score, (ref.ce.zero - ref.ce.sae) / (ref.ce.zero - ref.ce.clean), 'ce_loss_score');
      expectNear(mb.kl_div_with_sae, ref.kl.sae, 'kl_div_with_sae');
      expectNear(mb.kl_div_with_ablation, ref.kl.zero, 'kl_div_with_ablation');
      expectNear(mb.kl_div_score, (ref.kl.zero - ref.kl.sae) / ref.kl.zero, 'kl_div_score');
      expectNear(rq.explained_variance, ref.evMean, 'explained_variance (about the mean)');
      expectNear(rq.fvu, 1 - ref.evMean, 'fvu');
      expectNear(rq.mse, ref.mse, 'mse');
      expectNear(rq.cossim, ref.cossim, 'cossim');
      expectNear(sh.l2_norm_in, ref.l2In, 'l2_norm_in');
      expectNear(sh.l2_norm_out, ref.l2Out, 'l2_norm_out');
      expectNear(sh.l2_ratio, ref.l2Ratio, 'l2_ratio');
      expectNear(sh.relative_reconstruction_bias, ref.rrb, 'relative_reconstruction_bias');
      // Latents within rounding of the boundary may flip between float32 and float64: none
      // should at these sizes; one flip would move L0 by 1/128, far above 1e-5, so it shows.
      expectNear(sp.l0, ref.l0, 'l0');
      expectNear(sp.l1, ref.l1, 'l1');
      if (c.architecture === 'topk') expect(sp.l0).toBeLessThanOrEqual(c.k);

      const alive = ref.density.filter((p) => p > 0).length;
      expect(alive, 'the SAE has dead latents and live ones: frac_alive is tested').toBeLessThan(D_SAE);
      expect(alive).toBeGreaterThan(0);
      expectNear(sp.frac_alive, alive / D_SAE, 'frac_alive');
      expectNear(sp.dead_fraction, 1 - alive / D_SAE, 'dead_fraction');
      expectNear(sp.freq_over_1_percent, ref.density.filter((p) => p > 0.01).length / D_SAE, 'freq_over_1_percent');
      const details = doc.eval_result_details as { index: number; feature_density: number; consistent_activation_heuristic: number }[];
      expect(details.map((d) => d.index)).toEqual(Array.from({ length: D_SAE }, (_, i) => i));
      details.forEach((d, f) => {
        expectNear(d.feature_density, ref.density[f]!, `feature_density[${f}]`);
        expectNear(d.consistent_activation_heuristic, ref.cah[f]!, `consistent_activation_heuristic[${f}]`);
      });
      // The histogram, recounted from the reference densities by hand (bins of 0.5 in log10).
      const hist = m.feature_density as unknown as { log10_bin_edges: number[]; counts: number[]; dead: number };
      expect(hist.dead).toBe(D_SAE - alive);
      const want = new Array<number>(20).fill(0);
      for (const p of ref.density) if (p > 0) want[Math.min(19, Math.floor((Math.log10(p) + 10) * 2))]!++;
      expect(hist.counts).toEqual(want);
      expect(hist.counts.reduce((a, b) => a + b, 0)).toBe(alive);
      expect(m.token_stats).toMatchObject({ total_tokens_eval_reconstruction: TOKENS, total_tokens_eval_sparsity_variance: TOKENS });

      // Explained variance about zero would be a different number on these activations: a
      // regression to it could not pass the comparison above.
      expect(Math.abs(ref.evZero - ref.evMean), `about zero ${ref.evZero} vs about the mean ${ref.evMean}`).toBeGreaterThan(1e-3);
    });
  }

  it('the figures do not depend on the batch size (MSE included), and --json shows the same numbers', async () => {
    const w = saeWeights('topk', seed + 3, 4);
    const saeDir = join(await dirs.make(), 'sae');
    await saveSaeLens(saeDir, w);
    const one = await evalToFile(saeDir, 1);
    const three = await evalToFile(saeDir, 3);
    for (const group of ['model_behavior_preservation', 'model_performance_preservation', 'reconstruction_quality', 'shrinkage', 'sparsity'] as const) {
      for (const [key, v] of Object.entries(one.metrics[group]!)) {
        expectNear(three.metrics[group]![key], v as number, `${group}.${key} at batch size 3 vs 1`, 1e-9);
      }
    }
    expect(one.stdout.mse).toBe(one.metrics.reconstruction_quality!.mse);
    expect(one.stdout.cossim).toBe(one.metrics.reconstruction_quality!.cossim);
    expect(one.stdout.kl_div_score).toBe(one.metrics.model_behavior_preservation!.kl_div_score);
    expect(one.stdout).not.toHaveProperty('featureFired');
  });

  it('densityHistogram bins log10 density in [e, e + 0.5), the last bin closed at 0, dead apart', () => {
    const h = densityHistogram([0, 1, 0.5, 1e-12, 0.1, 0.0999, 0]);
    expect(h.dead).toBe(2);
    expect(h.log10_bin_edges).toHaveLength(21);
    expect(h.counts[19]).toBe(2); // 1 (the closed end) and 0.5 (log10 -0.30)
    expect(h.counts[18]).toBe(1); // 0.1: log10 exactly -1 opens [-1, -0.5)
    expect(h.counts[17]).toBe(1); // 0.0999
    expect(h.counts[0]).toBe(1); // 1e-12 clamps into the first bin
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(5);
  });

  it('--output errors name the flag and leave nothing behind', async () => {
    const w = saeWeights('topk', seed + 4, 4);
    const saeDir = join(await dirs.make(), 'sae');
    await saveSaeLens(saeDir, w);
    const missing = join(await dirs.make(), 'no-such-folder', 'out.json');
    const r = await runCli('eval', '--model', model.dir, '--sae', saeDir, '--text', corpus, '--tokens', '16', '--output', missing);
    expect(r.code).toBe(1);
    expect(r.err).toContain('--output');
    expect(r.err).toContain('no-such-folder');
    expect(existsSync(missing)).toBe(false);
    const folder = await dirs.make();
    const r2 = await runCli('eval', '--model', model.dir, '--sae', saeDir, '--text', corpus, '--tokens', '16', '--output', folder);
    expect(r2.code).toBe(1);
    expect(r2.err).toContain('is a folder');
    expect(await readdir(folder)).toEqual([]);
  });
});
