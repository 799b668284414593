// The SAE spliced into the model: the hook's activations replaced by the SAE's reconstruction
// (or zeros, or an edited reconstruction), and what that does to the next-token predictions.
//
// Metrics follow SAELens' evals: cross-entropy of the next token with the clean model, with
// the SAE spliced in, and with the hook zero-ablated; CE loss recovered =
// (CE_zero - CE_spliced) / (CE_zero - CE_clean); KL(clean || spliced) per position. Every
// position predicts the next (padded targets excluded), BOS included, as SAELens' loss does.
// Sums run in float64.
//
// Interventions keep the SAE's error term: x' = x + decode(edited codes) - decode(codes), so
// ablating a feature removes exactly its contribution and nothing else changes.
//
// Transcoders read one hook (the MLP's input, e.g. blocks.L.ln2.hook_normalized) and predict
// another (its output, blocks.L.hook_mlp_out): the clean pass reads both, and the prediction
// replaces the OUTPUT hook (the MLP itself is pruned from the spliced graph). Zero-ablation
// zeroes the MLP's output; the reconstruction metrics compare the prediction with the true
// output. Interventions keep the transcoder's error term the same way:
// out' = out + decode(edited codes) - decode(codes) (a skip term cancels in the difference).

import { isTranscoder } from '../types.js';
import { ValidationError } from '../errors.js';
import { hookOrder, parseHookName } from './onnxGraph.js';
import type { Sae } from '../sae.js';
import type { SparseCodes } from '../codes.js';
import { batches, padBatch, readCorpus, tokenWindows } from './corpus.js';
import type { LanguageModel, TokenBatch } from './languageModel.js';

export interface SplicedEvalOptions {
  /** The hook the SAE (or transcoder) reads. */
  hook: string;
  /** Transcoders: the hook the prediction replaces (default: the config's hookNameOut). */
  hookOut?: string;
  corpus: string;
  textField?: string;
  contextSize: number;
  /** Tokens to evaluate (whole windows). */
  tokens: number;
  prependBos?: boolean;
  batchSize?: number;
  onProgress?: (p: { rowsDone: number; rows: number; seconds: number }) => void;
}

export interface SplicedMetrics {
  /** Transcoders: the hook the prediction replaced (reconstruction metrics are against it). */
  hook_out?: string;
  tokens: number;
  windows: number;
  /** CE of the next token, clean (SAELens/SAEBench: ce_loss_without_sae). */
  ce_loss_clean: number;
  ce_loss_with_sae: number;
  ce_loss_with_ablation: number;
  /** (CE_ablated - CE_sae) / (CE_ablated - CE_clean). */
  ce_loss_score: number;
  kl_div_with_sae: number;
  kl_div_with_ablation: number;
  /** (KL_ablated - KL_sae) / KL_ablated. */
  kl_div_score: number;
  /** Mean over positions AND dimensions of (x - x_hat)^2: independent of the batch size. */
  mse: number;
  /** sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, the mean over every evaluated position. */
  fvu: number;
  explained_variance: number;
  /** Mean over positions of cos(x, x_hat); a zero vector counts as cosine 0. */
  cossim: number;
  /** Mean ||x|| and ||x_hat|| over positions. */
  l2_norm_in: number;
  l2_norm_out: number;
  /** Mean over positions of ||x_hat|| / ||x|| (||x|| below 1e-4 divides by 1, as SAELens). */
  l2_ratio: number;
  /** mean ||x_hat||^2 / mean <x, x_hat> (Rajamanoharan et al. 2024, eq. 10): 1 is unbiased. */
  relative_reconstruction_bias: number;
  /** Mean number of latents > 0 per position, and mean sum of their values. */
  l0: number;
  l1: number;
  /** Per latent: positions where it fired (> 0), and windows (prompts) where it fired at least once. */
  featureFired: Float64Array;
  featureWindows: Float64Array;
}

/**
 * The hook a transcoder's prediction replaces, checked: a transcoder needs one (OUT, else its
 * config's hookNameOut), the model must have it, and it must lie downstream of the input hook
 * (replacing it must leave the input the transcoder read unchanged). Undefined for an SAE.
 */
export function transcoderOutputHook(model: LanguageModel, sae: Sae, hook: string, out?: string): string | undefined {
  if (!isTranscoder(sae.config, sae.hasSkip)) return undefined;
  const hookOut = out ?? sae.config.hookNameOut;
  if (hookOut === undefined) {
    throw new ValidationError(`The transcoder reading ${hook} names no output hook (cfg hook_name_out): give the hook its prediction replaces, e.g. ${hook.replace(/\.(ln2\.hook_normalized|mlp\.hook_in|hook_\w+)$/, '.hook_mlp_out')}`);
  }
  model.checkHook(hookOut);
  const a = parseHookName(hook);
  const b = parseHookName(hookOut);
  if (b.layer < a.layer || (b.layer === a.layer && hookOrder(b.kind) <= hookOrder(a.kind))) {
    throw new ValidationError(`The transcoder's output hook ${hookOut} is not downstream of its input hook ${hook}: replacing it would change the input it reads`);
  }
  if (sae.dOut !== model.dModel) throw new ValidationError(`The transcoder's d_out ${sae.dOut} does not match the model's width ${model.dModel} at ${hookOut}`);
  return hookOut;
}

/**
 * Runs the corpus with the SAE spliced in at OPTS.hook (a transcoder: reading OPTS.hook,
 * replacing its output hook); see the file comment for the metrics.
 */
export async function evaluateSpliced(model: LanguageModel, sae: Sae, o: SplicedEvalOptions): Promise<SplicedMetrics> {
  model.checkHook(o.hook);
  if (sae.dIn !== model.dModel) throw new ValidationError(`The SAE's d_in ${sae.dIn} does not match the model's width ${model.dModel} at ${o.hook}`);
  const hookOut = transcoderOutputHook(model, sae, o.hook, o.hookOut);
  const target = hookOut ?? o.hook;
  const ctx = o.contextSize;
  const rows = Math.ceil(o.tokens / ctx) * ctx;
  const V = model.vocabSize;
  const d = hookOut !== undefined ? sae.dOut : model.dModel;
  const ce = { clean: 0, sae: 0, zero: 0, n: 0 };
  const kl = { sae: 0, zero: 0, n: 0 };
  // Sums over evaluated positions, in float64. The variance about the mean is taken from sums
  // of x - shift (shift: the first position's row), which keeps sum (x-s)^2 - n mean(x-s)^2
  // from cancelling catastrophically when the rows share a large offset.
  let sqErr = 0;
  let nnz = 0;
  let l1 = 0;
  let n = 0;
  let windows = 0;
  let normIn = 0;
  let normOut = 0;
  let l2Ratio = 0;
  let cosSum = 0;
  let hatSq = 0;
  let dotSum = 0;
  let shift: Float64Array | undefined;
  const colSum = new Float64Array(d);
  const colSq = new Float64Array(d);
  const featureFired = new Float64Array(sae.dSae);
  const featureWindows = new Float64Array(sae.dSae);
  const lastWindow = new Float64Array(sae.dSae).fill(-1);
  const started = performance.now();
  const docs = readCorpus(o.corpus, { textField: o.textField });
  for await (const group of batches(tokenWindows(docs, model.tokenizer, { contextSize: ctx, prependBos: o.prependBos ?? true, maxTokens: rows }), o.batchSize ?? 4)) {
    const batch = padBatch(group, 0);
    // One clean pass reads the input hook and, for a transcoder, the output it predicts.
    const { hooks, logits } = await model.forward(batch, { hooks: hookOut !== undefined ? [o.hook, hookOut] : [o.hook], logits: true });
    const input = hooks.get(o.hook) as Float32Array;
    const x = hooks.get(target) as Float32Array;
    const codes = await sae.encode(input);
    const xHat = sae.hasSkip ? await sae.forward(input) : await sae.decode(codes);
    const spliced = await model.forwardSpliced(batch, target, xHat);
    const zero = await model.forwardSpliced(batch, target, new Float32Array(x.length));
    const clean = logits as Float32Array;
    const pClean = new Float64Array(V);
    for (let p = 0; p < batch.batch * batch.length; p++) {
      if (batch.mask[p] === 0n) continue;
      // Clean distribution once: p = softmax(clean) and sum p log p. For each other run only
      // its log-sum-exp and sum p * logit are needed: KL(p || q) = sum p log p - sum p L_q + lse_q.
      const off = p * V;
      const lseClean = logSumExp(clean, off, V);
      let plogp = 0;
      for (let v = 0; v < V; v++) {
        const lp = clean[off + v]! - lseClean;
        const pv = Math.exp(lp);
        pClean[v] = pv;
        plogp += pv * lp;
      }
      const t = p % batch.length;
      const target = t + 1 < batch.length && batch.mask[p + 1] !== 0n ? Number(batch.ids[p + 1]) : -1;
      if (target >= 0) {
        ce.clean += lseClean - clean[off + target]!;
        ce.n++;
      }
      for (const [which, L] of [['sae', spliced], ['zero', zero]] as const) {
        let max = -Infinity;
        for (let v = 0; v < V; v++) if (L[off + v]! > max) max = L[off + v]!;
        let sum = 0;
        let pL = 0;
        for (let v = 0; v < V; v++) {
          const l = L[off + v]!;
          sum += Math.exp(l - max);
          pL += pClean[v]! * l;
        }
        const lse = max + Math.log(sum);
        if (target >= 0) ce[which] += lse - L[off + target]!;
        kl[which] += plogp - pL + lse;
      }
      kl.n++;
      if (shift === undefined) shift = Float64Array.from(x.subarray(p * d, (p + 1) * d));
      let xx = 0;
      let hh = 0;
      let xh = 0;
      for (let j = 0; j < d; j++) {
        const v = x[p * d + j]!;
        const h = xHat[p * d + j]!;
        const e = v - h;
        sqErr += e * e;
        xx += v * v;
        hh += h * h;
        xh += v * h;
        const c = v - shift[j]!;
        colSum[j]! += c;
        colSq[j]! += c * c;
      }
      const nIn = Math.sqrt(xx);
      const nOut = Math.sqrt(hh);
      normIn += nIn;
      normOut += nOut;
      l2Ratio += nOut / (nIn < 1e-4 ? 1 : nIn);
      cosSum += nIn > 0 && nOut > 0 ? xh / (nIn * nOut) : 0;
      hatSq += hh;
      dotSum += xh;
      const windowId = windows + Math.floor(p / batch.length);
      for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) {
        const v = codes.values[i]!;
        if (!(v > 0)) continue;
        const f = codes.indices[i]!;
        nnz++;
        l1 += v;
        featureFired[f]!++;
        if (lastWindow[f] !== windowId) {
          lastWindow[f] = windowId;
          featureWindows[f]!++;
        }
      }
      n++;
    }
    windows += group.length;
    o.onProgress?.({ rowsDone: windows * ctx, rows, seconds: (performance.now() - started) / 1000 });
  }
  if (n === 0) throw new ValidationError(`${o.corpus} holds fewer than ${ctx} tokens: not one context window`);
  let variance = 0;
  for (let j = 0; j < d; j++) variance += colSq[j]! - (colSum[j]! * colSum[j]!) / n;
  const fvu = variance > 0 ? sqErr / variance : Number.NaN;
  const cleanCe = ce.clean / ce.n;
  const saeCe = ce.sae / ce.n;
  const zeroCe = ce.zero / ce.n;
  const klSae = kl.sae / kl.n;
  const klZero = kl.zero / kl.n;
  return {
    ...(hookOut !== undefined && { hook_out: hookOut }),
    tokens: n,
    windows,
    ce_loss_clean: cleanCe,
    ce_loss_with_sae: saeCe,
    ce_loss_with_ablation: zeroCe,
    ce_loss_score: (zeroCe - saeCe) / (zeroCe - cleanCe),
    kl_div_with_sae: klSae,
    kl_div_with_ablation: klZero,
    kl_div_score: (klZero - klSae) / klZero,
    mse: sqErr / (n * d),
    fvu,
    explained_variance: 1 - fvu,
    cossim: cosSum / n,
    l2_norm_in: normIn / n,
    l2_norm_out: normOut / n,
    l2_ratio: l2Ratio / n,
    relative_reconstruction_bias: hatSq / dotSum,
    l0: nnz / n,
    l1: l1 / n,
    featureFired,
    featureWindows,
  };
}


/** log(sum(exp(L[off .. off+V)))), in float64 with the max subtracted. */
export function logSumExp(L: Float32Array, off: number, V: number): number {
  let max = -Infinity;
  for (let v = 0; v < V; v++) if (L[off + v]! > max) max = L[off + v]!;
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(L[off + v]! - max);
  return max + Math.log(sum);
}

/** An edit of one feature's value at every position the hook sees. */
export type Intervention =
  | { feature: number; kind: 'ablate' }
  | { feature: number; kind: 'clamp'; value: number }
  | { feature: number; kind: 'steer'; scale: number };

/** Parses CLI-style interventions: "ablate:123", "clamp:123=5.0", "steer:123=-2". */
export function parseIntervention(spec: string, dSae: number): Intervention {
  const m = /^(ablate|clamp|steer):(\d+)(?:=(-?[\d.]+(?:e-?\d+)?))?$/i.exec(spec.trim());
  if (!m) throw new ValidationError(`Cannot parse intervention ${JSON.stringify(spec)}: expected ablate:F, clamp:F=VALUE or steer:F=SCALE`);
  const feature = Number(m[2]);
  if (feature >= dSae) throw new ValidationError(`Intervention ${spec}: feature ${feature} is out of range (d_sae ${dSae})`);
  const kind = m[1]!.toLowerCase();
  if (kind === 'ablate') {
    if (m[3] !== undefined) throw new ValidationError(`Intervention ${spec}: ablate takes no value`);
    return { feature, kind: 'ablate' };
  }
  if (m[3] === undefined) throw new ValidationError(`Intervention ${spec}: ${kind} needs =VALUE`);
  return kind === 'clamp' ? { feature, kind: 'clamp', value: Number(m[3]) } : { feature, kind: 'steer', scale: Number(m[3]) };
}

/**
 * X ([rows, d_in]) with INTERVENTIONS applied through SAE, keeping the SAE's error term:
 * x + decode(edited codes) - decode(codes). For a transcoder the result replaces its OUTPUT
 * hook: TRUEOUT ([rows, d_out], that hook's clean activations) + decode(edited codes) -
 * decode(codes); the skip term is the same in both predictions and cancels.
 */
export async function intervene(sae: Sae, x: Float32Array, interventions: readonly Intervention[], trueOut?: Float32Array): Promise<Float32Array> {
  const transcoder = isTranscoder(sae.config, sae.hasSkip);
  if (transcoder && trueOut === undefined) {
    throw new ValidationError(
      `An intervention with a transcoder (${sae.config.hookName ?? 'its input hook'} -> ${sae.config.hookNameOut ?? 'its output hook'}) edits its output hook: pass that hook's clean activations as trueOut`,
    );
  }
  const base = transcoder ? trueOut! : x;
  const rows = x.length / sae.dIn;
  if (transcoder && base.length !== rows * sae.dOut) {
    throw new ValidationError(`trueOut has ${base.length} values, expected rows * d_out = ${rows} * ${sae.dOut}`);
  }
  if (interventions.length === 0) return base;
  const codes = await sae.encode(x);
  const edited = editCodes(codes, interventions);
  const [before, after] = [await sae.decode(codes), await sae.decode(edited)];
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) out[i] = base[i]! + (after[i]! - before[i]!);
  return out;
}

/** Codes with each row's intervened features set (ablate: removed; clamp: = value; steer: + scale). */
export function editCodes(codes: SparseCodes, interventions: readonly Intervention[]): SparseCodes {
  const indptr = new Uint32Array(codes.rows + 1);
  const indices: number[] = [];
  const values: number[] = [];
  for (let r = 0; r < codes.rows; r++) {
    const row = new Map<number, number>();
    for (let i = codes.indptr[r]!; i < codes.indptr[r + 1]!; i++) row.set(codes.indices[i]!, codes.values[i]!);
    for (const iv of interventions) {
      if (iv.kind === 'ablate') row.delete(iv.feature);
      else if (iv.kind === 'clamp') row.set(iv.feature, iv.value);
      else row.set(iv.feature, (row.get(iv.feature) ?? 0) + iv.scale);
    }
    for (const [f, v] of [...row].sort((a, b) => a[0] - b[0])) {
      indices.push(f);
      values.push(v);
    }
    indptr[r + 1] = indices.length;
  }
  return { ...codes, indptr, indices: Int32Array.from(indices), values: Float32Array.from(values) };
}

export interface GenerateOptions {
  maxNewTokens?: number;
  prependBos?: boolean;
  /** Splice SAE (with INTERVENTIONS) at HOOK while generating. */
  sae?: Sae;
  hook?: string;
  /** A transcoder's output hook, where its edited prediction goes (default: its hookNameOut). */
  hookOut?: string;
  interventions?: readonly Intervention[];
}

/**
 * Greedy generation. With an SAE and interventions the whole sequence is re-run each step
 * (hook read, edited, spliced back): no key/value cache, fine for short continuations. A
 * sequence longer than the model's positions is read through its last maxPositions tokens.
 */
export async function generate(model: LanguageModel, prompt: string, o: GenerateOptions = {}): Promise<{ ids: number[]; text: string }> {
  const ids = [...((o.prependBos ?? true) && model.tokenizer.bosId !== undefined ? [model.tokenizer.bosId] : []), ...model.tokenizer.encode(prompt)];
  if (ids.length === 0) throw new ValidationError('The prompt is empty');
  const start = ids.length;
  const spliced = o.sae !== undefined && o.hook !== undefined && (o.interventions?.length ?? 0) > 0;
  const hookOut = spliced ? transcoderOutputHook(model, o.sae!, o.hook!, o.hookOut) : undefined;
  // Past the model's positions the window slides: the last maxPositions tokens are read.
  const limit = model.maxPositions ?? Number.POSITIVE_INFINITY;
  for (let step = 0; step < (o.maxNewTokens ?? 20); step++) {
    const window = ids.length > limit ? ids.slice(ids.length - limit) : ids;
    const batch: TokenBatch = padBatch([window], 0);
    let logits: Float32Array;
    if (spliced) {
      const { hooks } = await model.forward(batch, { hooks: hookOut !== undefined ? [o.hook!, hookOut] : [o.hook!] });
      const edited = await intervene(o.sae!, hooks.get(o.hook!)!, o.interventions!, hookOut !== undefined ? hooks.get(hookOut) : undefined);
      logits = await model.forwardSpliced(batch, hookOut ?? o.hook!, edited);
    } else {
      logits = (await model.forward(batch, { hooks: [], logits: true })).logits!;
    }
    const V = model.vocabSize;
    const off = (window.length - 1) * V;
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[off + v]! > logits[off + best]!) best = v;
    ids.push(best);
  }
  return { ids, text: model.decode(ids.slice(start)) };
}
