// The main job on an embedded default (no GPU, no network), in three parts:
// 1. training: activations built from KNOWN sparse features (a random dictionary of unit
//    directions, sparse non-negative codes, noise) are written to .npy, a TopK SAE is trained on
//    them by the real job runner, and the report says how many true features it recovered
//    (a decoder row with cosine similarity > 0.9);
// 2. the seed workflow on a language model: a small random GPT-2 (ONNX, GPT-2's tokenizer)
//    is generated, a synthetic corpus run through it to dump activations, an SAE trained on
//    them, the features of a sentence read off, a feature dashboard built, and the SAE
//    spliced into the model
//    (skipped, with a note, when the optional @huggingface/transformers is not installed);
// 3. inference at GPT-2-small shape: a generated SAE and a dump built from its own features are
//    saved in the formats users have (SAELens directory, .npy) and run through the real
//    pipeline: load, stream-encode to a codes file, stream-decode, throughput and error.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../errors.js';
import { NpyReader, writeNpy } from '../../formats/npy.js';
import { saveSaeLens } from '../../formats/saveSaeLens.js';
import { loadSae } from '../../sae.js';
import { decodeFile } from '../../stream/decodeFile.js';
import { encodeFile } from '../../stream/encodeFile.js';
import { syntheticActivations, syntheticSae } from '../../synthetic.js';
import { cpuVariant, threads } from '../../system.js';
import { featureRecovery, GroundTruth, writeGroundTruthNpy } from '../../train/groundTruth.js';
import { train } from '../../train/train.js';
import { readSaeDir } from '../../formats/saeDir.js';
import { applyThreads, commonFlags, deviceFlag, parse } from '../args.js';
import { dumpActivations } from '../../model/activations.js';
import { padBatch } from '../../model/corpus.js';
import { gpt2TokenizerFiles } from '../../model/gpt2Tokenizer.js';
import { LanguageModel, loadTransformers } from '../../model/languageModel.js';
import { evaluateSpliced } from '../../model/splice.js';
import { syntheticText } from '../../model/syntheticText.js';
import { writeTinyGpt2 } from '../../model/tinyGpt2.js';
import { analyzeFeatures, dashboardIndex, featureDoc } from '../../analysis/analyze.js';
import { writeDashboard } from '../../analysis/dashboard.js';
import { logitEffects, readUnembedding } from '../../analysis/logitEffects.js';

export const demoUsage = 'saekit demo [--train-tokens N (0 skips training)] [--no-model] [--rows N] [--d-in N] [--d-sae N] [--k N] [--dir DIR (keep the files)] [--device D] [--threads N]';

function intFlag(values: Record<string, unknown>, flag: string, fallback: number): number {
  const v = values[flag];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag} must be a positive integer but got '${v}'`);
  return n;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...commonFlags,
    rows: { type: 'string' },
    'd-in': { type: 'string' },
    'd-sae': { type: 'string' },
    k: { type: 'string' },
    dir: { type: 'string' },
    'train-tokens': { type: 'string' },
    'no-model': { type: 'boolean' },
  });
  const trainTokens = values['train-tokens'] === '0' ? 0 : intFlag(values, 'train-tokens', 400_000);
  const rows = intFlag(values, 'rows', 8192);
  const dIn = intFlag(values, 'd-in', 768);
  const dSae = intFlag(values, 'd-sae', 24576);
  const k = intFlag(values, 'k', 32);
  if (k > dSae) throw new UsageError(`--k (${k}) must not exceed --d-sae (${dSae})`);
  applyThreads(values);
  const keep = values.dir as string | undefined;
  const dir = keep ?? (await mkdtemp(join(tmpdir(), 'saekit-demo-')));
  if (keep) await mkdir(dir, { recursive: true });
  const say = (s: string) => process.stdout.write(`${s}\n`);
  try {
    if (trainTokens > 0) await trainingDemo(dir, trainTokens, say);
    if (values['no-model'] !== true) await modelDemo(dir, say, keep ? '' : ' (kept with --dir DIR)');
    say(`saekit demo: topk SAE d_in ${dIn}, d_sae ${dSae}, k ${k}; ${rows} activation rows (${threads()} threads, ${cpuVariant().current} kernels)`);
    let t = performance.now();
    const weights = syntheticSae({ dIn, dSae, architecture: 'topk', k, seed: 1 });
    weights.config.hookName = 'blocks.8.hook_resid_pre';
    weights.config.modelName = 'synthetic';
    const saeDir = join(dir, 'sae');
    await saveSaeLens(saeDir, weights);
    const x = syntheticActivations(weights, rows, { seed: 2, active: 12, noise: 0.02 });
    const actPath = join(dir, 'activations.npy');
    await writeNpy(actPath, x, [rows, dIn]);
    say(`  generated SAELens directory ${saeDir} and ${actPath} in ${((performance.now() - t) / 1e3).toFixed(1)} s`);

    t = performance.now();
    const sae = await loadSae(saeDir, { device: deviceFlag(values) });
    say(`  loaded on ${sae.device} in ${((performance.now() - t) / 1e3).toFixed(2)} s`);
    try {
      const codesPath = join(dir, 'codes.safetensors');
      const enc = await encodeFile(sae, actPath, codesPath);
      say(`  encode  ${enc.rows} rows -> ${codesPath}: ${Math.round(enc.rows / enc.seconds)} tokens/s (file to file), L0 ${(enc.nnz / enc.rows).toFixed(2)}`);
      const reconPath = join(dir, 'reconstruction.npy');
      const dec = await decodeFile(sae, codesPath, reconPath);
      say(`  decode  ${dec.rows} rows -> ${reconPath}: ${Math.round(dec.rows / dec.seconds)} tokens/s (file to file)`);

      const recon = await NpyReader.open(reconPath);
      const xHat = await recon.readAllFloat32().finally(() => recon.close());
      const m = reconstructionMetrics(x, xHat, dIn);
      say(`  reconstruction: MSE ${m.mse.toExponential(3)}, FVU ${m.fvu.toFixed(4)} (explained variance ${(100 * (1 - m.fvu)).toFixed(2)}%; a random, untrained SAE)`);
    } finally {
      sae.dispose();
    }
    if (keep) say(`  files kept in ${dir}`);
    return 0;
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}

/** MSE per element and FVU = ||x - x_hat||^2 / ||x - mean(x)||^2 (about the mean). */
export function reconstructionMetrics(x: Float32Array, xHat: Float32Array, dIn: number): { mse: number; fvu: number } {
  const rows = x.length / dIn;
  const mean = new Float64Array(dIn);
  for (let r = 0; r < rows; r++) for (let i = 0; i < dIn; i++) mean[i]! += x[r * dIn + i]! / rows;
  let err = 0;
  let total = 0;
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < dIn; i++) {
      const v = x[r * dIn + i]!;
      err += (v - xHat[r * dIn + i]!) ** 2;
      total += (v - mean[i]!) ** 2;
    }
  return { mse: err / x.length, fvu: err / total };
}

/** Part 1: train on data with known features and count the features recovered. */
async function trainingDemo(dir: string, tokens: number, say: (s: string) => void): Promise<void> {
  const dIn = 64;
  const nFeatures = 256;
  const dSae = 512;
  const k = 8;
  say(`saekit demo: training a topk SAE (d_in ${dIn}, d_sae ${dSae}, k ${k}) on ${tokens} tokens with ${nFeatures} known features`);
  const gt = new GroundTruth({ dIn, nFeatures, meanActive: 4, noise: 0.01, seed: 7 });
  const data = join(dir, 'ground_truth.npy');
  await writeGroundTruthNpy(data, gt, Math.min(tokens, 200_000));
  const out = join(dir, 'trained_sae');
  const r = await train({ input: data, output: out, k, dSae, tokens, batchSize: 512, lr: 4e-3, deadTokens: 20_000, logEvery: 1_000_000 });
  const saved = await readSaeDir(out);
  const rec = featureRecovery(gt.dictionary, nFeatures, saved.W_dec, dSae, dIn);
  const last = r.last!;
  say(
    `  trained in ${r.seconds.toFixed(1)} s (${Math.round(r.tokensPerSecond)} tokens/s): explained variance ${(100 * last.explainedVariance).toFixed(2)}%, ` +
      `L0 ${last.l0.toFixed(1)}, dead ${(100 * last.deadFraction).toFixed(1)}%`,
  );
  say(`  recovered ${rec.recovered} of ${nFeatures} true features (${(100 * rec.fraction).toFixed(1)}%: a decoder row with cosine > 0.9)`);
}

/** Part 2: model -> activations -> SAE -> features -> spliced evaluation, all generated here. */
async function modelDemo(dir: string, say: (s: string) => void, keepHint: string): Promise<void> {
  try {
    await loadTransformers();
    await gpt2TokenizerFiles();
  } catch (e) {
    say(`saekit demo: model part skipped: ${(e as Error).message.split('\n')[0]}`);
    return;
  }
  const t0 = performance.now();
  const modelDir = join(dir, 'tiny-gpt2');
  await writeTinyGpt2(modelDir, { layers: 2, dModel: 64, heads: 4, seed: 3, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
  const corpus = join(dir, 'corpus.txt');
  await writeFile(corpus, syntheticText(2000, 5));
  say(`saekit demo: a GPT-2-architecture model (2 layers, d_model 64, GPT-2 tokenizer, random weights) and a synthetic corpus`);
  const hook = 'blocks.1.hook_resid_pre';
  const model = await LanguageModel.load(modelDir);
  try {
    const acts = join(dir, 'acts');
    const dump = await dumpActivations(model, { hook, corpus, output: acts, contextSize: 64, tokens: 64_000, batchSize: 16 });
    say(`  activations: ${dump.manifest.rows} tokens of ${hook} -> ${acts} in ${dump.seconds.toFixed(1)} s (${Math.round(dump.manifest.rows / dump.seconds)} tokens/s)`);
    const saeDir = join(dir, 'model_sae');
    const r = await train({ input: acts, output: saeDir, k: 8, dSae: 512, tokens: 256_000, batchSize: 512, logEvery: 1_000_000 });
    say(`  trained an SAE (d_sae 512, k 8) on them in ${r.seconds.toFixed(1)} s: explained variance ${(100 * r.last!.explainedVariance).toFixed(1)}%`);
    const sae = await loadSae(saeDir, { device: 'cpu' });
    try {
      const text = 'The king ruled the kingdom with a wise and just hand.';
      const ids = [model.tokenizer.bosId!, ...model.tokenizer.encode(text)];
      const { hooks } = await model.forward(padBatch([ids], 0), { hooks: [hook] });
      const codes = await sae.encode(hooks.get(hook)!);
      say(`  features of "${text}" (top 3 per token):`);
      for (let p = 1; p < ids.length; p++) {
        const f: string[] = [];
        const order = [...Array(codes.indptr[p + 1]! - codes.indptr[p]!).keys()].map((i) => codes.indptr[p]! + i).sort((a, b) => codes.values[b]! - codes.values[a]!);
        for (const i of order.slice(0, 3)) f.push(`${codes.indices[i]}:${codes.values[i]!.toFixed(2)}`);
        say(`    ${JSON.stringify(model.tokenText(ids[p]!)).padEnd(11)} ${f.join('  ')}`);
      }
      const m = await evaluateSpliced(model, sae, { hook, corpus, contextSize: 64, tokens: 512 });
      say(
        `  spliced at ${hook}: CE clean ${m.ce_loss_clean.toFixed(3)}, with SAE ${m.ce_loss_with_sae.toFixed(3)}, zero-ablated ${m.ce_loss_with_ablation.toFixed(3)}, ` +
          `KL ${m.kl_div_with_sae.toExponential(2)} (random weights: the model predicts little, so these only show the pipeline)`,
      );
      // Step 4 of the workflow: what the features mean, as a dashboard.
      const stats = await analyzeFeatures(sae, { kind: 'dump', dir: acts, tokens: 32_000 }, { ignoreTokens: new Set([model.tokenizer.bosId!]) });
      const logits = await logitEffects((await readSaeDir(saeDir)).W_dec, sae.dSae, await readUnembedding(join(modelDir, 'onnx', 'model.onnx')));
      const docOpts = { modelId: 'tiny-gpt2', hook, tokenText: (id: number) => model.tokenText(id), logits };
      const dash = join(dir, 'dashboard');
      await writeDashboard(dash, dashboardIndex(stats.stats, { ...docOpts, sae: saeDir }), (function* () {
        for (let f = 0; f < sae.dSae; f++) yield featureDoc(stats.stats, f, docOpts);
      })());
      say(`  dashboard of all ${sae.dSae} features (statistics over ${stats.tokens} tokens, logit effects) -> ${join(dash, 'index.html')}${keepHint}`);
    } finally {
      sae.dispose();
    }
  } finally {
    await model.dispose();
  }
  say(`  model part done in ${((performance.now() - t0) / 1e3).toFixed(1)} s (the same steps as saekit gen-model/activations/train/features/eval)`);
}
