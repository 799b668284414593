// The feature-analysis pass: model -> hook -> SAE encode -> FeatureStats, over a corpus, or
// over a saved activation dump (`saekit activations`) with its token ids; then per-feature
// documents (statistics, examples, logit effects) for the dashboard.
//
// Memory is bounded by the statistics (fixed per feature), one batch of windows and one
// chunk of a dump, whatever the corpus size.

import { join } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { SafetensorsReader } from '../formats/safetensors.js';
import { readActivationsManifest } from '../model/activations.js';
import { batches, padBatch, readCorpus, tokenWindows } from '../model/corpus.js';
import type { LanguageModel } from '../model/languageModel.js';
import type { Sae } from '../sae.js';
import { FeatureStats, type FeatureStatsOptions, type StoredExample } from './featureStats.js';
import type { LogitEffects } from './logitEffects.js';
import type { DashboardIndex, FeatureActivation, FeatureDoc, FeatureSummary } from './types.js';

export type AnalysisSource =
  | { kind: 'corpus'; model: LanguageModel; hook: string; corpus: string; textField?: string; tokens: number; contextSize: number; prependBos: boolean; batchSize?: number }
  | { kind: 'dump'; dir: string; tokens?: number; chunkWindows?: number };

export interface AnalysisProgress {
  rowsDone: number;
  rows: number;
  seconds: number;
}

export interface AnalysisResult {
  stats: FeatureStats;
  tokens: number;
  seconds: number;
  /** Seconds inside sae.encode (the rest: model forward, reading, statistics). */
  encodeSeconds: number;
  /** Seconds inside the model's forward (0 for a dump). */
  forwardSeconds: number;
  contextSize: number;
}

/** Runs SOURCE through SAE into feature statistics (added to OPTS.resume's state when given). */
export async function analyzeFeatures(
  sae: Sae,
  source: AnalysisSource,
  opts: {
    stats?: FeatureStatsOptions;
    resume?: FeatureStats;
    /** Token ids left out of the statistics (default: none; the CLI leaves out BOS). */
    ignoreTokens?: ReadonlySet<number>;
    onProgress?: (p: AnalysisProgress) => void;
  } = {},
): Promise<AnalysisResult> {
  const stats = opts.resume ?? new FeatureStats({ ...opts.stats, dSae: sae.dSae });
  if (stats.dSae !== sae.dSae) throw new ValidationError(`The saved statistics have d_sae ${stats.dSae}, the SAE ${sae.dSae}`);
  const started = performance.now();
  let encodeSeconds = 0;
  let forwardSeconds = 0;
  let done = 0;
  const firstRow = stats.rowsSeen;
  const encode = async (x: Float32Array) => {
    const t = performance.now();
    const codes = await sae.encode(x);
    encodeSeconds += (performance.now() - t) / 1000;
    return codes;
  };

  if (source.kind === 'corpus') {
    const { model, hook, contextSize: ctx } = source;
    model.checkHook(hook);
    if (model.dModel !== sae.dIn) throw new ValidationError(`The SAE's d_in ${sae.dIn} does not match ${hook}'s width ${model.dModel}`);
    const rows = Math.ceil(source.tokens / ctx) * ctx;
    const windows = tokenWindows(readCorpus(source.corpus, { textField: source.textField }), model.tokenizer, { contextSize: ctx, prependBos: source.prependBos, maxTokens: rows });
    for await (const group of batches(windows, source.batchSize ?? 8)) {
      const batch = padBatch(group, 0);
      const t = performance.now();
      const { hooks } = await model.forward(batch, { hooks: [hook] });
      forwardSeconds += (performance.now() - t) / 1000;
      const codes = await encode(hooks.get(hook)!);
      const ids = new Int32Array(group.length * ctx);
      group.forEach((w, i) => ids.set(w, i * ctx));
      stats.add(codes, ids, ctx, firstRow + done, opts.ignoreTokens);
      done += ids.length;
      opts.onProgress?.({ rowsDone: done, rows, seconds: (performance.now() - started) / 1000 });
    }
    if (done === 0) throw new FormatError(source.corpus, `holds fewer than ${ctx} tokens: not one context window`);
    return { stats, tokens: done, seconds: (performance.now() - started) / 1000, encodeSeconds, forwardSeconds, contextSize: ctx };
  }

  const manifest = await readActivationsManifest(source.dir);
  if (!manifest) throw new FormatError(join(source.dir, 'manifest.json'), 'not an activation dump from saekit activations (no manifest with token ids)');
  if (manifest.d_in !== sae.dIn) throw new ValidationError(`The dump ${source.dir} has width ${manifest.d_in}, the SAE's d_in is ${sae.dIn}`);
  const ctx = manifest.context_size;
  const rows = Math.min(manifest.rows, source.tokens !== undefined ? Math.ceil(source.tokens / ctx) * ctx : Infinity);
  const chunkRows = (source.chunkWindows ?? 64) * ctx;
  for (const file of manifest.activations) {
    if (done >= rows) break;
    const path = join(source.dir, file);
    const st = await SafetensorsReader.open(path);
    try {
      const info = st.tensors.get(manifest.tensor);
      const tokenInfo = st.tensors.get(manifest.tokens_tensor);
      if (!info || !tokenInfo) throw new FormatError(path, `lacks the ${manifest.tensor} or ${manifest.tokens_tensor} tensor`);
      const n = info.shape[0]!;
      if (n % ctx !== 0 || tokenInfo.shape[0] !== n) throw new FormatError(path, `holds ${n} rows and ${tokenInfo.shape[0]} token ids: not whole windows of ${ctx}`);
      const ids = (await st.readTensor(manifest.tokens_tensor)) as Int32Array;
      for (let start = 0; start < n && done < rows; start += chunkRows) {
        const count = Math.min(chunkRows, n - start, rows - done);
        const codes = await encode(await st.readRowsFloat32(manifest.tensor, start, count));
        stats.add(codes, ids.subarray(start, start + count), ctx, firstRow + done, opts.ignoreTokens);
        done += count;
        opts.onProgress?.({ rowsDone: done, rows, seconds: (performance.now() - started) / 1000 });
      }
    } finally {
      await st.close();
    }
  }
  return { stats, tokens: done, seconds: (performance.now() - started) / 1000, encodeSeconds, forwardSeconds, contextSize: ctx };
}

export interface DocOptions {
  modelId: string;
  hook: string;
  /** Token id -> display string. */
  tokenText: (id: number) => string;
  logits?: LogitEffects;
  quantileBins?: number;
  perBin?: number;
}

/** The dashboard document of feature F. */
export function featureDoc(stats: FeatureStats, f: number, o: DocOptions): FeatureDoc {
  const count = stats.countOf(f);
  const seen = Math.max(1, stats.tokensSeen);
  const toActivation = (e: StoredExample, bin: string): FeatureActivation => ({
    tokens: e.tokenIds.map(o.tokenText),
    tokenIds: e.tokenIds,
    values: e.values,
    maxValue: e.value,
    maxValueTokenIndex: e.at,
    bin,
    row: e.row,
  });
  const activations = stats.top(f).map((e) => toActivation(e, 'top'));
  for (const q of stats.quantileSamples(f, o.quantileBins ?? 5, o.perBin ?? 5)) for (const e of q.examples) activations.push(toActivation(e, q.label));
  // The histogram between its first and last nonempty bins.
  const nb = stats.nBins;
  const h = stats.hist.subarray(f * nb, (f + 1) * nb);
  let lo = 0;
  let hi = nb - 1;
  while (lo < nb && h[lo] === 0) lo++;
  while (hi >= lo && h[hi] === 0) hi--;
  const heights: number[] = [];
  const centers: number[] = [];
  for (let b = lo; b <= hi; b++) {
    heights.push(h[b]!);
    centers.push(Math.sqrt(stats.edges[b]! * stats.edges[b + 1]!));
  }
  const L = o.logits;
  const k = L?.k ?? 0;
  const hb = L?.histBins ?? 0;
  return {
    modelId: o.modelId,
    layer: o.hook,
    index: f,
    frac_nonzero: count / seen,
    log10_density: Math.log10(count / seen + 1e-10),
    count,
    tokens_seen: stats.tokensSeen,
    max_act: stats.maxOf(f),
    mean_act: count > 0 ? stats.sumOf(f) / count : 0,
    freq_hist_data_bar_heights: heights,
    freq_hist_data_bar_values: centers,
    logits_hist_data_bar_heights: L && hb > 0 ? Array.from(L.histHeights.subarray(f * hb, (f + 1) * hb)) : [],
    logits_hist_data_bar_values: L && hb > 0 ? Array.from(L.histCenters.subarray(f * hb, (f + 1) * hb)) : [],
    pos_str: L ? Array.from(L.posIds.subarray(f * k, (f + 1) * k), o.tokenText) : [],
    pos_values: L ? Array.from(L.posValues.subarray(f * k, (f + 1) * k)) : [],
    neg_str: L ? Array.from(L.negIds.subarray(f * k, (f + 1) * k), o.tokenText) : [],
    neg_values: L ? Array.from(L.negValues.subarray(f * k, (f + 1) * k)) : [],
    activations,
  };
}

/** The index row of a feature document. */
export function featureSummary(doc: FeatureDoc): FeatureSummary {
  const top = doc.activations.find((a) => a.bin === 'top');
  return {
    id: doc.index,
    frac_nonzero: doc.frac_nonzero,
    max_act: doc.max_act,
    mean_act: doc.mean_act,
    top_token: top ? top.tokens[top.maxValueTokenIndex]! : '',
    pos_str: doc.pos_str.slice(0, 3),
  };
}

/** The dashboard index for all features (documents are built once more per feature when written). */
export function dashboardIndex(stats: FeatureStats, o: DocOptions & { sae: string }): DashboardIndex {
  const features: FeatureSummary[] = [];
  for (let f = 0; f < stats.dSae; f++) {
    const top = stats.top(f)[0];
    const k = o.logits?.k ?? 0;
    features.push({
      id: f,
      frac_nonzero: stats.countOf(f) / Math.max(1, stats.tokensSeen),
      max_act: stats.maxOf(f),
      mean_act: stats.countOf(f) > 0 ? stats.sumOf(f) / stats.countOf(f) : 0,
      top_token: top ? o.tokenText(top.tokenIds[top.at]!) : '',
      pos_str: o.logits ? Array.from(o.logits.posIds.subarray(f * k, f * k + Math.min(3, k)), o.tokenText) : [],
    });
  }
  return { model: o.modelId, hook: o.hook, sae: o.sae, d_sae: stats.dSae, tokens_seen: stats.tokensSeen, created: new Date().toISOString(), features };
}
