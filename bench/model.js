// Model-side benchmark: `npm run bench:model` (after `npm install`).
//
// Generates a GPT-2-small-sized model (12 layers, d_model 768, 12 heads, GPT-2's vocabulary,
// random weights, ~500 MB ONNX) and a synthetic corpus, then measures at context 128:
//   ort:        ONNX runtime alone (onnxruntime-node InferenceSession.run, inputs prebuilt) on
//               the same edited graph `saekit activations` uses for the hook: the floor;
//   pipeline:   `dumpActivations` end to end: corpus reading, tokenization, windows, the
//               forward through transformers.js, copying, safetensors shards on disk;
//   full model: ONNX runtime on the unedited graph (logits + present.*), for scale.
// The overhead of hooks + dumping is pipeline time / ort time - 1 (issue target < 10%).
// Runs alternate ort / pipeline several times and report medians, since this host drifts.
//
// Flags: --tokens N (default 8192)  --hook H (default blocks.6.hook_resid_pre)  --batch N (8)
//        --reps N (3)  --threads N (ONNX runtime intra-op threads; default: its own choice)
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LanguageModel, dumpActivations, gpt2TokenizerFiles, padBatch, readCorpus, syntheticText, tokenWindows, writeTinyGpt2, batches } from '../dist/index.js';

const { values: flags } = parseArgs({
  options: {
    tokens: { type: 'string', default: '8192' },
    hook: { type: 'string', default: 'blocks.6.hook_resid_pre' },
    batch: { type: 'string', default: '8' },
    reps: { type: 'string', default: '3' },
    threads: { type: 'string' },
  },
});
const tokens = Number(flags.tokens);
const batchSize = Number(flags.batch);
const reps = Number(flags.reps);
const ctx = 128;
const hook = flags.hook;
const ort = createRequire(import.meta.url)('onnxruntime-node');
const sessionOptions = flags.threads ? { intraOpNumThreads: Number(flags.threads), interOpNumThreads: 1 } : {};

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const work = await mkdtemp(join(tmpdir(), 'saekit-bench-model-'));
try {
  let t = performance.now();
  const modelDir = join(work, 'gpt2-small-random');
  await writeTinyGpt2(modelDir, { layers: 12, dModel: 768, heads: 12, nPositions: 1024, withPast: true, seed: 1, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
  console.log(`generated a GPT-2-small-sized model in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const corpus = join(work, 'corpus.txt');
  await writeFile(corpus, syntheticText(Math.ceil(tokens / 40), 7));

  const model = await LanguageModel.load(modelDir, flags.threads ? { threads: Number(flags.threads) } : {});
  // The windows both paths run, tokenized once for the ort path.
  const windows = [];
  for await (const w of tokenWindows(readCorpus(corpus), model.tokenizer, { contextSize: ctx, prependBos: true, maxTokens: tokens })) windows.push(w);
  const groups = [];
  for await (const g of batches(windows, batchSize)) groups.push(padBatch(g, 0));
  const nTokens = windows.length * ctx;

  // First pipeline run builds (and caches) the edited graph; not timed.
  await dumpActivations(model, { hook, corpus, output: join(work, 'warm'), contextSize: ctx, tokens: batchSize * ctx, batchSize });
  const edited = (await readdir(join(modelDir, 'onnx'))).filter((f) => f.includes('.saekit-') && f.endsWith('.onnx'));
  if (edited.length !== 1) throw new Error(`expected one edited graph, found ${edited.join(', ')}`);
  const hookSession = await ort.InferenceSession.create(join(modelDir, 'onnx', edited[0]), sessionOptions);
  const fullSession = await ort.InferenceSession.create(join(modelDir, 'onnx', 'model.onnx'), sessionOptions);

  const feeds = (session, g) => {
    const f = {
      input_ids: new ort.Tensor('int64', g.ids, [g.batch, g.length]),
      attention_mask: new ort.Tensor('int64', g.mask, [g.batch, g.length]),
    };
    if (session.inputNames.includes('position_ids')) {
      const pos = new BigInt64Array(g.batch * g.length);
      for (let i = 0; i < pos.length; i++) pos[i] = BigInt(i % g.length);
      f.position_ids = new ort.Tensor('int64', pos, [g.batch, g.length]);
    }
    for (const name of session.inputNames) {
      if (name.startsWith('past_key_values.')) f[name] = new ort.Tensor('float32', new Float32Array(0), [g.batch, 12, 0, 64]);
    }
    return f;
  };
  const timeOrt = async (session) => {
    const prepared = groups.map((g) => feeds(session, g));
    const t0 = performance.now();
    for (const f of prepared) await session.run(f);
    return (performance.now() - t0) / 1000;
  };

  const ortTimes = [];
  const pipeTimes = [];
  const forwardShare = [];
  for (let r = 0; r < reps; r++) {
    ortTimes.push(await timeOrt(hookSession));
    const out = join(work, `acts-${r}`);
    const res = await dumpActivations(model, { hook, corpus, output: out, contextSize: ctx, tokens: nTokens, batchSize });
    pipeTimes.push(res.seconds);
    forwardShare.push(res.forwardSeconds / res.seconds);
    await rm(out, { recursive: true, force: true });
  }
  const fullTime = await timeOrt(fullSession);
  await hookSession.release();
  await fullSession.release();
  await model.dispose();

  const ortS = median(ortTimes);
  const pipeS = median(pipeTimes);
  console.log(`\nGPT-2-small-sized generated model, context ${ctx}, batch ${batchSize} windows, ${nTokens} tokens, hook ${hook}, ${reps} reps (medians)`);
  console.log('| path | tokens/s | seconds |');
  console.log('|---|---|---|');
  console.log(`| ONNX runtime alone, hook graph (blocks before the hook) | ${Math.round(nTokens / ortS)} | ${ortS.toFixed(2)} |`);
  console.log(`| saekit activations pipeline (tokenize, forward, write shards) | ${Math.round(nTokens / pipeS)} | ${pipeS.toFixed(2)} |`);
  console.log(`| ONNX runtime alone, full model (12 layers + logits + present) | ${Math.round(nTokens / fullTime)} | ${fullTime.toFixed(2)} |`);
  console.log(`\noverhead of hooks + dumping over ONNX runtime alone: ${(100 * (pipeS / ortS - 1)).toFixed(1)}% (runs: ort ${ortTimes.map((x) => x.toFixed(2)).join(', ')} s; pipeline ${pipeTimes.map((x) => x.toFixed(2)).join(', ')} s; forward share of pipeline ${forwardShare.map((x) => (100 * x).toFixed(0)).join(', ')}%)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
