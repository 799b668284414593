// `npm run bench:sweep`: several SAEs from one activation stream (trainSweep / `saekit train
// --sweep k=16,32,64`) against one run and against the same runs trained one after another,
// in the two regimes a sweep meets:
//   - a dump on disk (read, converted and shuffled once per sweep instead of once per run);
//   - a live model (the activations made by a GPT-2-small-sized model's forward passes, once
//     per sweep instead of once per run) -- the case where one read of the data matters most.
// Wall times of whole jobs on this machine, same process, same data; ratios are what to read.
//   flags: --tokens N (rows per run, default 16384)  --batch N (2048)  --d-sae N (6144)
//          --hook H (blocks.6.hook_resid_pre)  --no-live
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  LanguageModel,
  batches,
  dumpActivations,
  gpt2TokenizerFiles,
  padBatch,
  readCorpus,
  rowSourceFromIterable,
  syntheticText,
  threads,
  tokenWindows,
  train,
  trainSweep,
  writeTinyGpt2,
} from '../dist/index.js';

const { values: flags } = parseArgs({
  options: {
    tokens: { type: 'string', default: '16384' },
    batch: { type: 'string', default: '2048' },
    'd-sae': { type: 'string', default: '6144' },
    hook: { type: 'string', default: 'blocks.6.hook_resid_pre' },
    'no-live': { type: 'boolean', default: false },
  },
});
const tokens = Number(flags.tokens);
const batchSize = Number(flags.batch);
const dSae = Number(flags['d-sae']);
const hook = flags.hook;
const ctx = 128;
const ks = [16, 32, 64];

const work = await mkdtemp(join(tmpdir(), 'saekit-bench-sweep-'));
const seconds = async (fn) => {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
};
try {
  const modelDir = join(work, 'gpt2-small-random');
  await writeTinyGpt2(modelDir, { layers: 12, dModel: 768, heads: 12, nPositions: 1024, withPast: true, seed: 1, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
  const corpus = join(work, 'corpus.txt');
  await writeFile(corpus, syntheticText(Math.ceil(tokens / 30), 11));
  const model = await LanguageModel.load(modelDir);
  const dump = join(work, 'dump');
  const dumped = await dumpActivations(model, { hook, corpus, output: dump, contextSize: ctx, tokens, batchSize: 8 });
  const rows = dumped.manifest.rows;
  const job = (source, k, name) => ({ input: source, output: join(work, name), k, dSae, tokens: rows, batchSize, seed: 1, checkpointEvery: 0, logEvery: 1000 });

  const results = [];
  // Warm-up (not timed): the first encode of a shape measures the kernel choice, once per process.
  await trainSweep(ks.map((k) => ({ ...job(dump, k, `warm-k${k}`), tokens: batchSize })));
  // A dump on disk.
  // Three alternating repetitions (medians): on 2 shared cores single timings drift by ~10%.
  const median = (a) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
  const ones = [], sweeps = [], separates = [];
  for (let rep = 0; rep < 3; rep++) {
    ones.push(await seconds(() => train(job(dump, 32, `file-one-${rep}`))));
    sweeps.push(await seconds(() => trainSweep(ks.map((k) => job(dump, k, `file-sweep-${rep}-k${k}`)))));
    let separate = 0;
    for (const k of ks) separate += await seconds(() => train(job(dump, k, `file-sep-${rep}-k${k}`)));
    separates.push(separate);
  }
  results.push({ regime: 'dump on disk (median of 3)', one: median(ones), sweep: median(sweeps), separate: median(separates) });
  console.log(`dump on disk, each repetition: one ${ones.map((v) => v.toFixed(2)).join(', ')} s; sweep ${sweeps.map((v) => v.toFixed(2)).join(', ')} s; separate ${separates.map((v) => v.toFixed(2)).join(', ')} s`);

  if (!flags['no-live']) {
    // A live model: every pass of the stream runs the model's forward over the corpus.
    const live = () =>
      rowSourceFromIterable(768, async function* () {
        const windows = tokenWindows(readCorpus(corpus), model.tokenizer, { contextSize: ctx, prependBos: true, maxTokens: rows });
        for await (const group of batches(windows, 8)) {
          const { hooks } = await model.forward(padBatch(group, 0), { hooks: [hook] });
          yield hooks.get(hook);
        }
      });
    const forwardOnly = await seconds(async () => {
      for await (const _ of live().chunks(0));
    });
    const lone = await seconds(() => train(job(live(), 32, 'live-one')));
    const shared = live(); // one source object: the runs of a sweep must read the same stream
    const lsweep = await seconds(() => trainSweep(ks.map((k) => job(shared, k, `live-sweep-k${k}`))));
    let lsep = 0;
    for (const k of ks) lsep += await seconds(() => train(job(live(), k, `live-sep-k${k}`)));
    results.push({ regime: `live GPT-2-small-sized model (forward alone ${forwardOnly.toFixed(1)} s)`, one: lone, sweep: lsweep, separate: lsep });
  }
  await model.dispose();

  console.log(`\ntrainSweep of 3 topk SAEs (k = ${ks.join(', ')}), d_in 768, d_sae ${dSae}, batch ${batchSize}, ${rows} tokens each, ${threads()} threads, ${cpus()[0]?.model ?? 'cpu'}`);
  console.log('| data | one run (k 32) s | sweep of 3 s | 3 runs one after another s | sweep / one | sweep / 3 separate |');
  console.log('|---|---|---|---|---|---|');
  for (const r of results)
    console.log(`| ${r.regime} | ${r.one.toFixed(1)} | ${r.sweep.toFixed(1)} | ${r.separate.toFixed(1)} | ${(r.sweep / r.one).toFixed(2)} | ${(r.sweep / r.separate).toFixed(2)} |`);
} finally {
  await rm(work, { recursive: true, force: true });
}
