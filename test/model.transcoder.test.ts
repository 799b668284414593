// The model side of transcoders (issue 18, item 2): a transcoder reads the MLP's input
// (blocks.L.ln2.hook_normalized or blocks.L.mlp.hook_in) and predicts its output
// (blocks.L.hook_mlp_out). Checked here:
// - splicing (evaluateSpliced, intervene, generate) against an independent float64 GPT-2 whose
//   MLP output is replaced by the float64 prediction (test/helpers/gpt2Reference.ts +
//   test/helpers/reference.js), at awkward sizes (d_model 40, d_sae 53, 3 layers), with and
//   without a skip term;
// - paired dumps (saekit activations --hook-out): the manifest and shard contract the trainer
//   reads, values from the float64 forward, dtypes, rerun / interrupted-folder behaviour, and
//   single-hook dumps keeping their old layout;
// - features and the feature analysis for transcoder latents (d_out != d_in), library and CLI;
// - the same routing on the real-exporter fixtures (test/fixtures/hf: GPT-2, Pythia, Llama,
//   Gemma 2; TorchScript and onnxruntime-optimized), whose MLP-side hooks model.hf.test.ts
//   holds to PyTorch;
// - errors that name the hook, the file or the shape.
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { SafetensorsReader, saveSaeLens } from '../src/formats/index.js';
import { analyzeFeatures } from '../src/analysis/analyze.js';
import { dumpActivations } from '../src/model/activations.js';
import { padBatch, readCorpus, tokenWindows } from '../src/model/corpus.js';
import { gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { evaluateSpliced, generate, intervene } from '../src/model/splice.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { writeTinyGpt2, type Gpt2Weights } from '../src/model/tinyGpt2.js';
import { createSae, type Sae } from '../src/sae.js';
import type { SparseCodes } from '../src/codes.js';
import type { Architecture, SaeWeights } from '../src/types.js';
import { Rng } from '../src/index.js';
import { runCli } from './helpers/cli.js';
import { expectReject } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { gpt2ForwardF64, type Gpt2RefOutput } from './helpers/gpt2Reference.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('model.transcoder.test');
const dirs = tempDirs();
const D = 40;
const D_SAE = 53;
const CTX = 16;
const TOKENS = 64;
const open: Sae[] = [];
let corpus: string;
let model: { dir: string; w: Gpt2Weights };

beforeAll(async () => {
  corpus = join(await dirs.make(), 'corpus.txt');
  await writeFile(corpus, syntheticText(300, seed));
  const dir = join(await dirs.make(), 'tiny-gpt2');
  const w = await writeTinyGpt2(dir, { seed, layers: 3, dModel: D, heads: 4, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
  model = { dir, w };
});
afterAll(async () => {
  for (const s of open) s.dispose();
  await dirs.cleanup();
});

/** Random transcoder weights (SAELens layout); DOUT may differ from D_IN. */
function transcoderWeights(o: { architecture: Architecture; dIn: number; dSae: number; dOut: number; skip: boolean; hook: string; hookOut?: string; s: number }): SaeWeights {
  const rng = new Rng(o.s);
  const normal = (n: number, scale: number) => rng.fillNormal(new Float32Array(n)).map((v) => v * scale);
  const w: SaeWeights = {
    config: {
      architecture: o.architecture,
      dIn: o.dIn,
      dSae: o.dSae,
      dOut: o.dOut,
      applyBDecToInput: false,
      normalizeActivations: 'none',
      dtype: 'float32',
      format: 'generated',
      hookName: o.hook,
      ...(o.hookOut !== undefined && { hookNameOut: o.hookOut }),
      metadata: {},
    },
    W_enc: normal(o.dIn * o.dSae, 1 / Math.sqrt(o.dIn)),
    encTransposed: false,
    b_enc: normal(o.dSae, 0.3),
    W_dec: normal(o.dSae * o.dOut, 0.5 / Math.sqrt(o.dSae)),
    b_dec: normal(o.dOut, 0.2),
  };
  if (o.architecture === 'jumprelu') w.threshold = Float32Array.from({ length: o.dSae }, () => 0.3 * rng.uniform());
  if (o.skip) w.W_skip = normal(o.dOut * o.dIn, 0.3 / Math.sqrt(o.dIn));
  return w;
}

async function transcoder(o: Parameters<typeof transcoderWeights>[0]): Promise<{ sae: Sae; w: SaeWeights }> {
  const w = transcoderWeights(o);
  const sae = await createSae(w, { device: 'cpu' });
  open.push(sae);
  return { sae, w };
}

/** The windows evaluateSpliced / dumpActivations read from the corpus. */
async function corpusWindows(m: LanguageModel, tokens = TOKENS, ctx = CTX): Promise<number[][]> {
  const out: number[][] = [];
  for await (const win of tokenWindows(readCorpus(corpus), m.tokenizer, { contextSize: ctx, prependBos: true, maxTokens: tokens })) out.push(Array.from(win));
  return out;
}

/** Float64 codes (reference.js) of X, as SparseCodes with float64 values. */
function referenceCodes(w: SaeWeights, x: Float64Array): SparseCodes & { values: Float64Array } {
  const rows = referenceEncode(w, Float32Array.from(x));
  const indptr = new Uint32Array(rows.length + 1);
  const indices: number[] = [];
  const values: number[] = [];
  rows.forEach((r, i) => {
    indices.push(...r.indices);
    values.push(...r.values);
    indptr[i + 1] = indices.length;
  });
  return { rows: rows.length, dSae: w.config.dSae, indptr, indices: Int32Array.from(indices), values: Float64Array.from(values) } as never;
}

/** Float64 prediction: decode (reference.js) plus x @ W_skip^T. */
function referencePrediction(w: SaeWeights, x: Float64Array, codes: SparseCodes): Float64Array {
  const pred = referenceDecode(w, codes).x;
  const { dIn } = w.config;
  const dOut = w.config.dOut ?? dIn;
  if (w.W_skip) {
    for (let r = 0; r < x.length / dIn; r++) {
      for (let o = 0; o < dOut; o++) {
        let s = 0;
        for (let i = 0; i < dIn; i++) s += x[r * dIn + i]! * w.W_skip[o * dIn + i]!;
        pred[r * dOut + o]! += s;
      }
    }
  }
  return pred;
}

/** CE of the next token and KL(clean || other), float64, every position of every window. */
function ceKl(clean: Float64Array, others: Float64Array[], windows: number[][], V: number): { ce: number[]; kl: number[] } {
  const ce = new Array<number>(others.length + 1).fill(0);
  const kl = new Array<number>(others.length).fill(0);
  let nCe = 0;
  let nKl = 0;
  const lse = (L: Float64Array, off: number) => {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, L[off + v]!);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(L[off + v]! - max);
    return max + Math.log(s);
  };
  windows.forEach((win, b) => {
    for (let t = 0; t < win.length; t++) {
      const off = (b * win.length + t) * V;
      const lc = lse(clean, off);
      const all = [clean, ...others];
      const l = all.map((L) => lse(L, off));
      if (t + 1 < win.length) {
        all.forEach((L, k) => (ce[k]! += l[k]! - L[off + win[t + 1]!]!));
        nCe++;
      }
      others.forEach((L, k) => {
        let s = 0;
        for (let v = 0; v < V; v++) {
          const p = Math.exp(clean[off + v]! - lc);
          s += p * (clean[off + v]! - lc - (L[off + v]! - l[k + 1]!));
        }
        kl[k]! += s;
      });
      nKl++;
    }
  });
  return { ce: ce.map((c) => c / nCe), kl: kl.map((k) => k / nKl) };
}

function fvuOf(truth: Float64Array, pred: ArrayLike<number>, width: number): { mse: number; fvu: number } {
  const n = truth.length / width;
  let err = 0;
  let norm = 0;
  const mean = new Float64Array(width);
  for (let i = 0; i < truth.length; i++) {
    err += (truth[i]! - pred[i]!) ** 2;
    norm += truth[i]! ** 2;
    mean[i % width]! += truth[i]! / n;
  }
  let meanSq = 0;
  for (const m of mean) meanSq += m * m;
  return { mse: err / truth.length, fvu: err / (norm - n * meanSq) };
}

/** |got - want| <= tol * (1 + |want|). */
function expectNear(got: number, want: number, tol: number, what: string): void {
  expect(Math.abs(got - want), `${what}: got ${got}, float64 ${want}`).toBeLessThanOrEqual(tol * (1 + Math.abs(want)));
}

describe('splicing a transcoder against the float64 GPT-2', () => {
  for (const v of [
    { architecture: 'standard', skip: true, hook: 'blocks.1.ln2.hook_normalized', hookOut: 'blocks.1.hook_mlp_out', layer: 1, input: 'ln2Normalized' },
    { architecture: 'jumprelu', skip: false, hook: 'blocks.2.mlp.hook_in', hookOut: 'blocks.2.mlp.hook_out', layer: 2, input: 'mlpIn' },
  ] as const) {
    it(`${v.architecture}${v.skip ? ' skip' : ''} transcoder ${v.hook} -> ${v.hookOut}: CE, KL, FVU and L0 equal the float64 splice`, async () => {
      const m = await LanguageModel.load(model.dir);
      try {
        const { sae, w } = await transcoder({ architecture: v.architecture, dIn: D, dSae: D_SAE, dOut: D, skip: v.skip, hook: v.hook, hookOut: v.hookOut, s: seed + v.layer });
        const metrics = await evaluateSpliced(m, sae, { hook: v.hook, corpus, contextSize: CTX, tokens: TOKENS, batchSize: 3 });
        const windows = await corpusWindows(m);
        const ref = gpt2ForwardF64(model.w, windows);
        const x = ref[v.input][v.layer]!;
        const codes = referenceCodes(w, x);
        const pred = referencePrediction(w, x, codes);
        const spliced = gpt2ForwardF64(model.w, windows, { replaceMlpOut: { layer: v.layer, values: pred } });
        const zero = gpt2ForwardF64(model.w, windows, { replaceMlpOut: { layer: v.layer, values: new Float64Array(pred.length) } });
        const { ce, kl } = ceKl(ref.logits, [spliced.logits, zero.logits], windows, model.w.config.vocabSize);
        expect(metrics.hook_out).toBe(v.hookOut);
        expect(metrics.tokens).toBe(TOKENS);
        expectNear(metrics.ce_loss_clean, ce[0]!, 1e-5, 'CE clean');
        expectNear(metrics.ce_loss_with_sae, ce[1]!, 1e-5, 'CE with the transcoder');
        expectNear(metrics.ce_loss_with_ablation, ce[2]!, 1e-5, 'CE with the MLP zeroed');
        expectNear(metrics.ce_loss_score, (ce[2]! - ce[1]!) / (ce[2]! - ce[0]!), 1e-3, 'CE loss recovered');
        expectNear(metrics.kl_div_with_sae, kl[0]!, 1e-4, 'KL with the transcoder');
        expectNear(metrics.kl_div_with_ablation, kl[1]!, 1e-4, 'KL with the MLP zeroed');
        expect(metrics.kl_div_with_ablation).toBeGreaterThan(1e-4); // the MLP matters: the test can see a wrong hook
        const truth = ref.mlpOut[v.layer]!;
        const { mse, fvu } = fvuOf(truth, pred, D);
        expectNear(metrics.mse, mse, 1e-4, 'MSE against the true MLP output');
        expectNear(metrics.fvu, fvu, 1e-4, 'FVU');
        // L0: latents within rounding of the boundary may flip; none did at these sizes, allow one.
        expect(Math.abs(metrics.l0 * TOKENS - codes.indices.length)).toBeLessThanOrEqual(1);
      } finally {
        await m.dispose();
      }
    });
  }

  it('intervene keeps the error term at the output hook; generate splices it there', async () => {
    const m = await LanguageModel.load(model.dir);
    try {
      const hook = 'blocks.1.ln2.hook_normalized';
      const hookOut = 'blocks.1.hook_mlp_out';
      const { sae, w } = await transcoder({ architecture: 'standard', dIn: D, dSae: D_SAE, dOut: D, skip: true, hook, hookOut, s: seed + 7 });
      const prompt = 'The king ruled the kingdom';
      const ids = [50256, ...m.tokenizer.encode(prompt)];
      const { hooks } = await m.forward(padBatch([ids], 0), { hooks: [hook, hookOut] });
      const x = hooks.get(hook)!;
      const y = hooks.get(hookOut)!;
      const codes = await sae.encode(x);
      // The feature that fires most often here.
      const counts = new Map<number, number>();
      for (const f of codes.indices) counts.set(f, (counts.get(f) ?? 0) + 1);
      const f = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
      const ablated = await intervene(sae, x, [{ feature: f, kind: 'ablate' }], y);
      // Float64: y - value_f * W_dec[f] where f fires, y elsewhere (the skip term cancels).
      const want = Float64Array.from(y);
      for (let r = 0; r < codes.rows; r++) {
        for (let i = codes.indptr[r]!; i < codes.indptr[r + 1]!; i++) {
          if (codes.indices[i] !== f) continue;
          for (let j = 0; j < D; j++) want[r * D + j]! -= codes.values[i]! * w.W_dec[f * D + j]!;
        }
      }
      for (let i = 0; i < want.length; i++) expectNear(ablated[i]!, want[i]!, 1e-5, `ablated output ${i}`);
      expect(await intervene(sae, x, [], y)).toBe(y);
      // generate: one greedy step equals the float64 model with that output at layer 1.
      const out = await generate(m, prompt, { maxNewTokens: 1, sae, hook, interventions: [{ feature: f, kind: 'ablate' }] });
      const ref = gpt2ForwardF64(model.w, [ids], { replaceMlpOut: { layer: 1, values: want } });
      const V = model.w.config.vocabSize;
      let best = 0;
      for (let t = 1; t < V; t++) if (ref.logits[(ids.length - 1) * V + t]! > ref.logits[(ids.length - 1) * V + best]!) best = t;
      expect(out.ids.at(-1)).toBe(best);
    } finally {
      await m.dispose();
    }
  });

  it('refuses what cannot be spliced, naming the hooks and shapes', async () => {
    const m = await LanguageModel.load(model.dir);
    try {
      const base = { architecture: 'standard' as const, dIn: D, dSae: D_SAE, skip: false, s: seed + 11 };
      const noOut = (await transcoder({ ...base, dOut: D, hook: 'blocks.1.ln2.hook_normalized' })).sae;
      await expectReject(() => evaluateSpliced(m, noOut, { hook: 'blocks.1.ln2.hook_normalized', corpus, contextSize: CTX, tokens: TOKENS }), ValidationError, 'names no output hook', 'blocks.1.hook_mlp_out');
      const upstream = { hook: 'blocks.1.hook_resid_post', hookOut: 'blocks.1.hook_mlp_out' };
      const up = (await transcoder({ ...base, dOut: D, ...upstream })).sae;
      await expectReject(() => evaluateSpliced(m, up, { hook: upstream.hook, corpus, contextSize: CTX, tokens: TOKENS }), ValidationError, 'blocks.1.hook_mlp_out', 'is not downstream of', 'blocks.1.hook_resid_post');
      const narrow = (await transcoder({ ...base, dOut: 13, hook: 'blocks.1.mlp.hook_in', hookOut: 'blocks.1.hook_mlp_out' })).sae;
      await expectReject(() => evaluateSpliced(m, narrow, { hook: 'blocks.1.mlp.hook_in', corpus, contextSize: CTX, tokens: TOKENS }), ValidationError, "d_out 13", `width ${D}`, 'blocks.1.hook_mlp_out');
      await expectReject(
        () => evaluateSpliced(m, noOut, { hook: 'blocks.1.ln2.hook_normalized', hookOut: 'blocks.7.hook_mlp_out', corpus, contextSize: CTX, tokens: TOKENS }),
        ValidationError,
        'blocks.7.hook_mlp_out',
        '3 layers',
      );
      await expectReject(() => intervene(noOut, new Float32Array(D), [{ feature: 1, kind: 'ablate' }]), ValidationError, 'transcoder', 'blocks.1.ln2.hook_normalized', 'trueOut');
      await expectReject(() => intervene(noOut, new Float32Array(2 * D), [{ feature: 1, kind: 'ablate' }], new Float32Array(D)), ValidationError, 'trueOut has 40 values', '2 * 40');
    } finally {
      await m.dispose();
    }
  });
});

describe('paired dumps', () => {
  const HOOK = 'blocks.1.ln2.hook_normalized';
  const OUT = 'blocks.1.hook_mlp_out';
  const SINGLE_KEYS = ['format', 'version', 'activations', 'tensor', 'tokens_tensor', 'model', 'onnx_file', 'hook_name', 'd_in', 'context_size', 'prepend_bos', 'dtype', 'corpus', 'tokens_requested', 'shard_windows', 'rows', 'windows'];

  async function readShards(dir: string, files: string[]): Promise<{ names: string[][]; acts: number[]; out: number[]; tokens: number[]; dtypes: string[]; meta: Record<string, string>[] }> {
    const r = { names: [] as string[][], acts: [] as number[], out: [] as number[], tokens: [] as number[], dtypes: [] as string[], meta: [] as Record<string, string>[] };
    for (const f of files) {
      const st = await SafetensorsReader.open(join(dir, f));
      try {
        r.names.push([...st.tensors.keys()]);
        r.meta.push({ ...(st.metadata ?? {}) });
        r.acts.push(...(await st.readFloat32('activations')));
        if (st.tensors.has('activations_out')) {
          r.out.push(...(await st.readFloat32('activations_out')));
          r.dtypes.push(`${st.info('activations').dtype}/${st.info('activations_out').dtype} [${st.info('activations_out').shape.join(', ')}]`);
        }
        r.tokens.push(...((await st.readTensor('token_ids')) as Int32Array));
      } finally {
        await st.close();
      }
    }
    return r;
  }

  it('one pass writes activations and activations_out row-aligned, as the float64 forward computes them; the manifest names both', async () => {
    const m = await LanguageModel.load(model.dir);
    try {
      const output = join(await dirs.make(), 'acts');
      // 5 windows, 2 per shard: 3 shards, the last one short.
      const r = await dumpActivations(m, { hook: HOOK, hookOut: OUT, corpus, output, contextSize: CTX, tokens: 5 * CTX, batchSize: 2, shardWindows: 2 });
      const manifest = JSON.parse(await readFile(join(output, 'manifest.json'), 'utf8')) as Record<string, unknown>;
      expect(manifest).toEqual(r.manifest);
      expect(Object.keys(manifest).sort()).toEqual([...SINGLE_KEYS, 'hook_name_out', 'd_out', 'tensor_out'].sort());
      expect(manifest).toMatchObject({ hook_name: HOOK, d_in: D, hook_name_out: OUT, d_out: D, tensor: 'activations', tensor_out: 'activations_out', tokens_tensor: 'token_ids', rows: 5 * CTX, windows: 5 });
      expect(manifest.activations).toEqual(['activations-00000.safetensors', 'activations-00001.safetensors', 'activations-00002.safetensors']);
      const s = await readShards(output, manifest.activations as string[]);
      expect(s.names).toEqual(Array(3).fill(['activations', 'activations_out', 'token_ids']));
      expect(s.meta[0]).toMatchObject({ hook_name: HOOK, hook_name_out: OUT });
      expect(s.dtypes).toEqual(['F32/F32 [32, 40]', 'F32/F32 [32, 40]', 'F32/F32 [16, 40]']);
      const windows = await corpusWindows(m, 5 * CTX);
      expect(s.tokens).toEqual(windows.flat());
      const ref = gpt2ForwardF64(model.w, windows);
      for (let i = 0; i < s.acts.length; i++) expectNear(s.acts[i]!, ref.ln2Normalized[1]![i]!, 2e-4, `activations ${i}`);
      for (let i = 0; i < s.out.length; i++) expectNear(s.out[i]!, ref.mlpOut[1]![i]!, 2e-4, `activations_out ${i}`);
      // A rerun of the same command finds it finished.
      const again = await dumpActivations(m, { hook: HOOK, hookOut: OUT, corpus, output, contextSize: CTX, tokens: 5 * CTX, batchSize: 2, shardWindows: 2 });
      expect(again.alreadyComplete).toBe(true);
      // The same folder asked for a single-hook dump (or another output hook): refused, untouched.
      for (const other of [undefined, 'blocks.1.mlp.hook_out']) {
        await expectReject(
          () => dumpActivations(m, { hook: HOOK, ...(other !== undefined && { hookOut: other }), corpus, output, contextSize: CTX, tokens: 5 * CTX, batchSize: 2, shardWindows: 2 }),
          Error,
          'other settings',
          `hook_name_out "${OUT}", not ${other === undefined ? 'none' : JSON.stringify(other)}`,
        );
      }
      expect((await readdir(output)).sort()).toEqual([...(manifest.activations as string[]), 'manifest.json'].sort());
      // Killed mid-dump (shards, no manifest): a rerun redoes it, byte for byte.
      const before = await Promise.all((manifest.activations as string[]).map((f) => readFile(join(output, f))));
      await rm(join(output, 'manifest.json'));
      await rm(join(output, 'activations-00002.safetensors'));
      const redone = await dumpActivations(m, { hook: HOOK, hookOut: OUT, corpus, output, contextSize: CTX, tokens: 5 * CTX, batchSize: 2, shardWindows: 2 });
      expect(redone.alreadyComplete).toBeUndefined();
      const after = await Promise.all((manifest.activations as string[]).map((f) => readFile(join(output, f))));
      after.forEach((b, i) => expect(Buffer.compare(b, before[i]!), `shard ${i}`).toBe(0));
      expect(JSON.parse(await readFile(join(output, 'manifest.json'), 'utf8'))).toEqual(manifest);
    } finally {
      await m.dispose();
    }
  });

  it('float16 and bfloat16 pairs share the dtype; a single-hook dump keeps its old layout', async () => {
    const m = await LanguageModel.load(model.dir);
    try {
      for (const dtype of ['float16', 'bfloat16'] as const) {
        const output = join(await dirs.make(), dtype);
        const r = await dumpActivations(m, { hook: 'blocks.0.mlp.hook_in', hookOut: 'blocks.2.hook_mlp_out', corpus, output, contextSize: CTX, tokens: 2 * CTX, dtype });
        const s = await readShards(output, r.manifest.activations);
        const tag = dtype === 'float16' ? 'F16' : 'BF16';
        expect(s.dtypes).toEqual([`${tag}/${tag} [32, 40]`]);
        const ref = gpt2ForwardF64(model.w, await corpusWindows(m, 2 * CTX));
        const tol = dtype === 'float16' ? 2e-3 : 1.6e-2;
        for (let i = 0; i < s.out.length; i++) expectNear(s.out[i]!, ref.mlpOut[2]![i]!, tol, `${dtype} activations_out ${i}`);
        for (let i = 0; i < s.acts.length; i++) expectNear(s.acts[i]!, ref.mlpIn[0]![i]!, tol, `${dtype} activations ${i}`);
      }
      const single = join(await dirs.make(), 'single');
      const r = await dumpActivations(m, { hook: HOOK, corpus, output: single, contextSize: CTX, tokens: 2 * CTX });
      expect(Object.keys(JSON.parse(await readFile(join(single, 'manifest.json'), 'utf8')))).toEqual(SINGLE_KEYS);
      const s = await readShards(single, r.manifest.activations);
      expect(s.names).toEqual([['activations', 'token_ids']]);
      expect(Object.keys(s.meta[0]!)).toEqual(['hook_name', 'model']);
    } finally {
      await m.dispose();
    }
  });

  it('refuses a bad output hook before writing anything, naming it', async () => {
    const m = await LanguageModel.load(model.dir);
    try {
      const output = join(await dirs.make(), 'never');
      await expectReject(() => dumpActivations(m, { hook: HOOK, hookOut: HOOK, corpus, output, contextSize: CTX, tokens: CTX }), ValidationError, HOOK, 'is the input hook');
      await expectReject(() => dumpActivations(m, { hook: HOOK, hookOut: 'blocks.1.hook_mlp_output', corpus, output, contextSize: CTX, tokens: CTX }), ValidationError, 'blocks.1.hook_mlp_output', 'mlp.hook_out');
      await expectReject(() => dumpActivations(m, { hook: HOOK, hookOut: 'blocks.3.hook_mlp_out', corpus, output, contextSize: CTX, tokens: CTX }), ValidationError, 'blocks.3.hook_mlp_out', '3 layers (0-2)');
      expect(existsSync(output)).toBe(false);
      // Through the CLI: one line, exit 1.
      const r = await runCli('activations', '--model', model.dir, '--hook', HOOK, '--hook-out', 'blocks.9.hook_mlp_out', '--text', corpus, '--tokens', '16', '--output', output);
      expect(r.code, r.err).toBe(1);
      expect(r.err.trimEnd().split('\n')).toHaveLength(1);
      expect(r.err).toContain('blocks.9.hook_mlp_out');
    } finally {
      await m.dispose();
    }
  });

  it('saekit activations --hook-out writes the pair and says so', async () => {
    const output = join(await dirs.make(), 'cli');
    const r = await runCli('activations', '--model', model.dir, '--hook', HOOK, '--hook-out', OUT, '--text', corpus, '--tokens', '32', '--context-size', '16', '--output', output);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain(`of ${HOOK} [32, 40] + ${OUT} [32, 40] float32`);
    expect(JSON.parse(await readFile(join(output, 'manifest.json'), 'utf8'))).toMatchObject({ hook_name_out: OUT, d_out: D, tensor_out: 'activations_out' });
  });
});

describe('features and the analysis read a transcoder at its input hook', () => {
  const HOOK = 'blocks.2.ln2.hook_normalized';

  it('analyzeFeatures counts the float64 codes of ln2.hook_normalized (d_out 13 != d_in 40)', async () => {
    const m = await LanguageModel.load(model.dir);
    try {
      const { sae, w } = await transcoder({ architecture: 'jumprelu', dIn: D, dSae: D_SAE, dOut: 13, skip: true, hook: HOOK, hookOut: 'blocks.2.hook_mlp_out', s: seed + 21 });
      const r = await analyzeFeatures(sae, { kind: 'corpus', model: m, hook: HOOK, corpus, tokens: TOKENS, contextSize: CTX, prependBos: true, batchSize: 3 }, { stats: { dSae: D_SAE, topN: 5 } });
      const windows = await corpusWindows(m);
      const ref = gpt2ForwardF64(model.w, windows);
      const x = Float32Array.from(ref.ln2Normalized[2]!);
      const refRows = referenceEncode(w, x);
      // The codes saekit computes from the hook it reads equal the float64 ones.
      const { hooks } = await m.forward(padBatch(windows, 0), { hooks: [HOOK] });
      expect(compareCodes(w, refRows, await sae.encode(hooks.get(HOOK)!))).toEqual([]);
      const want = new Float64Array(D_SAE);
      for (const row of refRows) for (const f of row.indices) want[f]!++;
      expect(r.tokens).toBe(TOKENS);
      // Near-boundary latents may flip (compareCodes allows them); none at these sizes in practice.
      let off = 0;
      for (let f = 0; f < D_SAE; f++) off += Math.abs(r.stats.countOf(f) - want[f]!);
      expect(off).toBeLessThanOrEqual(2);
    } finally {
      await m.dispose();
    }
  });

  it('saekit features and saekit analyze on a SAELens transcoder directory', async () => {
    const root = await dirs.make();
    const narrow = join(root, 'tc13');
    const wide = join(root, 'tc40');
    await saveSaeLens(narrow, transcoderWeights({ architecture: 'standard', dIn: D, dSae: D_SAE, dOut: 13, skip: false, hook: HOOK, hookOut: 'blocks.2.hook_mlp_out', s: seed + 31 }));
    await saveSaeLens(wide, transcoderWeights({ architecture: 'standard', dIn: D, dSae: D_SAE, dOut: D, skip: true, hook: HOOK, hookOut: 'blocks.2.hook_mlp_out', s: seed + 32 }));
    const sentence = 'The king ruled the kingdom.';
    const f = await runCli('features', '--model', model.dir, '--sae', narrow, '--json', '--top', '3', sentence);
    expect(f.code, f.err).toBe(0);
    const got = JSON.parse(f.out) as { hook: string; tokens: { features: { id: number; value: number }[] }[] };
    expect(got.hook).toBe(HOOK);
    // Against the library: forward at the input hook, encode.
    const m = await LanguageModel.load(model.dir);
    try {
      const sae = await createSae(transcoderWeights({ architecture: 'standard', dIn: D, dSae: D_SAE, dOut: 13, skip: false, hook: HOOK, hookOut: 'blocks.2.hook_mlp_out', s: seed + 31 }), { device: 'cpu' });
      open.push(sae);
      const ids = [50256, ...m.tokenizer.encode(sentence)];
      const codes = await sae.encode((await m.forward(padBatch([ids], 0), { hooks: [HOOK] })).hooks.get(HOOK)!);
      expect(got.tokens).toHaveLength(ids.length);
      got.tokens.forEach((t, p) => {
        const row: { id: number; value: number }[] = [];
        for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) row.push({ id: codes.indices[i]!, value: codes.values[i]! });
        row.sort((a, b) => b.value - a.value || a.id - b.id);
        expect(t.features.map((x) => x.id)).toEqual(row.slice(0, 3).map((x) => x.id));
      });
    } finally {
      await m.dispose();
    }
    // The dashboard: d_out 13 cannot meet the unembedding (said, no logits); d_out 40 can.
    for (const [dir, logits] of [[narrow, false], [wide, true]] as const) {
      const out = join(root, `dash-${logits}`);
      const a = await runCli('analyze', '--model', model.dir, '--sae', dir, '--text', corpus, '--tokens', '64', '--context-size', '16', '--output', out);
      expect(a.code, a.err).toBe(0);
      expect(a.err.includes('no logit effects: '), a.err).toBe(!logits);
      const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { hook: string; d_sae: number };
      expect(index).toMatchObject({ hook: HOOK, d_sae: D_SAE });
      const page = JSON.parse(await readFile(join(out, 'features', '0.json'), 'utf8')) as { pos_str: string[] };
      expect(page.pos_str.length > 0).toBe(logits);
    }
  });
});

// The real-exporter fixtures: the hooks are PyTorch's (model.hf.test.ts); here the transcoder
// routing on them, fused (onnxruntime-optimized) and spelled-out norms alike.
const FIXTURES = join(import.meta.dirname, 'fixtures', 'hf');

async function fixtureFolder(family: string, file: string): Promise<string> {
  const dir = join(await dirs.make(), family);
  await mkdir(join(dir, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await cp(join(FIXTURES, family, f), join(dir, f));
  await cp(join(FIXTURES, family, 'onnx', `${file}.onnx`), join(dir, 'onnx', `${file}.onnx`));
  return dir;
}

describe.skipIf(!existsSync(FIXTURES))('transcoders on the real-exporter fixtures', () => {
  for (const family of ['gpt2', 'pythia', 'llama', 'gemma2']) {
    for (const file of ['model', 'model_optimized']) {
      it(`${family}/${file}: the spliced evaluation reads ln2.hook_normalized and replaces hook_mlp_out`, async () => {
        const m = await LanguageModel.load(await fixtureFolder(family, file), { onnxFile: file });
        try {
          const d = m.dModel;
          const hook = 'blocks.1.ln2.hook_normalized';
          const hookOut = 'blocks.1.hook_mlp_out';
          const { sae } = await transcoder({ architecture: 'standard', dIn: d, dSae: 37, dOut: d, skip: true, hook, hookOut, s: seed + 41 });
          const metrics = await evaluateSpliced(m, sae, { hook, corpus, contextSize: 16, tokens: 32, batchSize: 2 });
          // The same numbers from the parts: hooks read in one pass, the prediction fed at hookOut.
          const windows = await corpusWindows(m, 32);
          const batch = padBatch(windows, 0);
          const { hooks, logits } = await m.forward(batch, { hooks: [hook, hookOut], logits: true });
          const pred = await sae.forward(hooks.get(hook)!);
          const spliced = await m.forwardSpliced(batch, hookOut, pred);
          const zero = await m.forwardSpliced(batch, hookOut, new Float32Array(pred.length));
          const { ce, kl } = ceKl(Float64Array.from(logits!), [Float64Array.from(spliced), Float64Array.from(zero)], windows, m.vocabSize);
          expectNear(metrics.ce_loss_with_sae, ce[1]!, 1e-6, 'CE with the transcoder');
          expectNear(metrics.ce_loss_with_ablation, ce[2]!, 1e-6, 'CE zero-ablated');
          expectNear(metrics.kl_div_with_sae, kl[0]!, 1e-6, 'KL');
          expect(metrics.kl_div_with_ablation).toBeGreaterThan(1e-6);
          const { fvu } = fvuOf(Float64Array.from(hooks.get(hookOut)!), pred, d);
          expectNear(metrics.fvu, fvu, 1e-6, 'FVU against hook_mlp_out');
          // Feeding the true MLP output back changes nothing (the spliced graph really replaces it).
          const same = await m.forwardSpliced(batch, hookOut, hooks.get(hookOut)!);
          let worst = 0;
          for (let i = 0; i < same.length; i++) worst = Math.max(worst, Math.abs(same[i]! - logits![i]!));
          expect(worst).toBeLessThan(1e-4);
        } finally {
          await m.dispose();
        }
      });
    }
  }

  it('a hook the graph lacks is an error listing the hooks it has', async () => {
    const m = await LanguageModel.load(await fixtureFolder('pythia', 'model'), { onnxFile: 'model' });
    try {
      expect(() => m.checkHook('blocks.1.hook_resid_mid')).toThrow(ValidationError);
      expect(() => m.checkHook('blocks.1.hook_resid_mid')).toThrow(/cannot be located in model .*parallel attention \+ MLP blocks have no resid_mid.*available: .*blocks\.1\.ln2\.hook_normalized, blocks\.1\.mlp\.hook_in, blocks\.1\.mlp\.hook_out/);
      expect(() => m.checkHook('blocks.1.ln2.hook_scale')).toThrow(/Unknown hook "blocks\.1\.ln2\.hook_scale".*ln2\.hook_normalized, mlp\.hook_in, mlp\.hook_out/);
    } finally {
      await m.dispose();
    }
  });

  it('saekit eval prints both hooks for a transcoder', async () => {
    const dir = await fixtureFolder('llama', 'model_optimized');
    const tc = join(await dirs.make(), 'tc');
    await saveSaeLens(tc, transcoderWeights({ architecture: 'standard', dIn: 32, dSae: 37, dOut: 32, skip: true, hook: 'blocks.1.mlp.hook_in', hookOut: 'blocks.1.hook_mlp_out', s: seed + 51 }));
    const r = await runCli('eval', '--model', dir, '--onnx-file', 'model_optimized', '--sae', tc, '--text', corpus, '--tokens', '32', '--context-size', '16', '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as Record<string, unknown>;
    expect(j).toMatchObject({ hook: 'blocks.1.mlp.hook_in', hook_out: 'blocks.1.hook_mlp_out', tokens: 32 });
    for (const k of ['ce_loss_clean', 'ce_loss_with_sae', 'ce_loss_with_ablation', 'kl_div_with_sae', 'fvu', 'l0']) expect(Number.isFinite(j[k]), k).toBe(true);
  });
});

// Only for the type checker: the reference output fields this file reads.
export type _Used = Pick<Gpt2RefOutput, 'ln2Normalized' | 'mlpIn' | 'mlpOut'>;

describe('end to end', () => {
  it('paired dump -> saekit train --arch transcoder -> saekit eval: the trained transcoder is closer to the clean model than zero-ablation', async () => {
    const root = await dirs.make();
    const acts = join(root, 'acts');
    const tc = join(root, 'tc');
    const hook = 'blocks.1.ln2.hook_normalized';
    const d = await runCli('activations', '--model', model.dir, '--hook', hook, '--hook-out', 'blocks.1.hook_mlp_out', '--text', corpus, '--tokens', '4096', '--context-size', '32', '--output', acts);
    expect(d.code, d.err).toBe(0);
    const t = await runCli('train', '--input', acts, '--output', tc, '--arch', 'transcoder', '--k', '8', '--expansion', '4', '--tokens', '60000', '--batch-size', '512', '--seed', '3');
    expect(t.code, t.err).toBe(0);
    const cfg = JSON.parse(await readFile(join(tc, 'cfg.json'), 'utf8')) as Record<string, unknown>;
    expect(JSON.stringify(cfg)).toContain('blocks.1.hook_mlp_out');
    const e = await runCli('eval', '--model', model.dir, '--sae', tc, '--text', corpus, '--tokens', '512', '--context-size', '32', '--json');
    expect(e.code, e.err).toBe(0);
    const m = JSON.parse(e.out) as { hook: string; hook_out: string; kl_div_with_sae: number; kl_div_with_ablation: number; explained_variance: number };
    expect(m).toMatchObject({ hook, hook_out: 'blocks.1.hook_mlp_out' });
    // A random-weight model's CE barely moves (differences ~1e-3 of log V), so CE recovered is
    // noise here; KL is not: seen 0.00035 vs 0.0020 and 0.00059 vs 0.0031, explained variance 0.53-0.58.
    expect(m.explained_variance).toBeGreaterThan(0.3);
    expect(m.kl_div_with_sae).toBeLessThan(0.5 * m.kl_div_with_ablation);
  }, 120_000);
});
