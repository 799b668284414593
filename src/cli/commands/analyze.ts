// `saekit analyze`: feature statistics over a corpus (model -> hook -> SAE) or a saved dump,
// the logit effects, and a static dashboard (index + a page per feature, offline from file://).
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { analyzeFeatures, dashboardIndex, featureDoc, type AnalysisSource, type DocOptions } from '../../analysis/analyze.js';
import { writeDashboard } from '../../analysis/dashboard.js';
import { checkNeuronpediaId, defaultNeuronpediaModelId, defaultNeuronpediaSource, NeuronpediaExportWriter, type NeuronpediaManifest } from '../../analysis/neuronpedia.js';
import { FeatureStats } from '../../analysis/featureStats.js';
import type { DashboardIndex } from '../../analysis/types.js';
import { logitEffects, readUnembedding } from '../../analysis/logitEffects.js';
import { UsageError, ValidationError } from '../../errors.js';
import { readActivationsManifest } from '../../model/activations.js';
import type { LanguageModel } from '../../model/languageModel.js';
import { loadSaeFromFlags, saeSourceFlags } from '../saeFlags.js';
import { applyThreads, commonFlags, deviceFlag, num, parse, required } from '../args.js';
import { loadModelFromFlags, modelFlags, saeContextSize, saeHook, saePrependBos } from '../modelFlags.js';
import { progressBar } from '../progress.js';

export const analyzeUsage =
  'saekit analyze (--sae DIR | --release R --id ID) (--model M --text CORPUS --tokens N | --activations DUMPDIR [--model M]) --output DASHDIR [--hook H] [--context-size N] [--no-bos] ' +
  '[--text-field F] [--batch-size 8] [--top-n 20] [--save-state FILE] [--resume STATE ...] [--no-logits] [--include-bos] [--onnx-file NAME] [--offline] [--device D] [--threads N] ' +
  '[--neuronpedia DIR [--neuronpedia-model ID] [--neuronpedia-source ID]]';

export async function analyzeCommand(argv: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values } = parse(argv, {
    ...commonFlags,
    ...modelFlags,
    ...saeSourceFlags,
    text: str,
    'text-field': str,
    activations: str,
    tokens: str,
    output: str,
    hook: str,
    'context-size': str,
    'no-bos': { type: 'boolean' },
    'batch-size': str,
    'top-n': str,
    'save-state': str,
    resume: { type: 'string', multiple: true },
    'no-logits': { type: 'boolean' },
    'include-bos': { type: 'boolean' },
    neuronpedia: str,
    'neuronpedia-model': str,
    'neuronpedia-source': str,
  });
  const output = required(values, 'output');
  const states = (values.resume as string[] | undefined) ?? [];
  if (values.text !== undefined && values.activations !== undefined) throw new UsageError('give --text CORPUS or --activations DUMPDIR, not both');
  if (values.text === undefined && values.activations === undefined && states.length === 0) {
    throw new UsageError('give --text CORPUS (with --model), --activations DUMPDIR, or saved states to merge with --resume');
  }
  if (values.text === undefined && values.activations === undefined && values.model === undefined) throw new UsageError('merging saved states needs --model (token text, unembedding)');
  if (values.text !== undefined && values.model === undefined) throw new UsageError('--text needs --model');
  const tokens = num(values, 'tokens', 'int', 1);
  if (values.text !== undefined && tokens === undefined) throw new UsageError('missing required flag --tokens');
  const npDir = values.neuronpedia as string | undefined;
  if (npDir === undefined && (values['neuronpedia-model'] !== undefined || values['neuronpedia-source'] !== undefined)) {
    throw new UsageError('--neuronpedia-model and --neuronpedia-source need --neuronpedia DIR');
  }
  if (npDir !== undefined && resolve(npDir) === resolve(output)) throw new UsageError('--neuronpedia DIR must be another directory than --output');
  for (const flag of ['neuronpedia-model', 'neuronpedia-source']) {
    if (values[flag] !== undefined) {
      try {
        checkNeuronpediaId(values[flag], `--${flag}`);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    }
  }
  applyThreads(values);
  // The flags that decide the dashboard (not threads, device, verbosity, nor the Neuronpedia
  // export): recorded in the index, so that a rerun after a kill that came once the dashboard
  // had landed does nothing. The export records them with its own flags in its manifest: each
  // output is made only when it is not there already, finished, from the same request.
  const request = Object.fromEntries(
    Object.entries(values)
      .filter(([key]) => !['output', 'threads', 'device', 'verbose', 'offline', 'help', 'neuronpedia', 'neuronpedia-model', 'neuronpedia-source'].includes(key))
      .sort(([a], [b]) => a.localeCompare(b)),
  );
  const npRequest = Object.fromEntries(
    Object.entries({ ...request, 'neuronpedia-model': values['neuronpedia-model'], 'neuronpedia-source': values['neuronpedia-source'] })
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => a.localeCompare(b)),
  );
  const finished = await finishedDashboard(output, request);
  const npFinished = npDir !== undefined ? await finishedExport(npDir, npRequest) : undefined;
  if (finished && (npDir === undefined || npFinished)) {
    process.stderr.write(`${output} already holds this dashboard, finished (${finished.d_sae} features, ${finished.tokens_seen} tokens): nothing to do\n`);
    if (npFinished) process.stderr.write(`${npDir} already holds this Neuronpedia export, finished (${npFinished.count} features): nothing to do\n`);
    return 0;
  }
  if (finished) process.stderr.write(`${output} already holds this dashboard, finished: writing only the Neuronpedia export\n`);
  if (npFinished) process.stderr.write(`${npDir} already holds this Neuronpedia export, finished: writing only the dashboard\n`);
  const { sae, label: saeDir, entry, readWeights } = await loadSaeFromFlags(values);
  const bar = progressBar('analyze', 'batch');
  let model: LanguageModel | undefined;
  try {
    const dump = values.activations !== undefined ? await readActivationsManifest(values.activations as string) : undefined;
    if (values.activations !== undefined && !dump) throw new UsageError(`${values.activations} is not a dump from saekit activations (no manifest.json)`);
    // The model gives token strings and the unembedding; a dump names the model it came from,
    // a release the ONNX export of its model.
    model = await loadModelFromFlags(values.model === undefined && dump ? { ...values, model: dump.model } : values, entry).catch((e: unknown) => {
      throw dump && values.model === undefined ? new UsageError(`the dump's model ${dump.model} cannot be loaded (${(e as Error).message}); give --model`) : e;
    });
    const hook = dump ? dump.hook_name : saeHook(values, sae, saeDir);
    const source: AnalysisSource | undefined = dump
      ? { kind: 'dump', dir: values.activations as string, ...(tokens !== undefined && { tokens }) }
      : values.text !== undefined
        ? {
            kind: 'corpus',
            model,
            hook,
            corpus: values.text as string,
            ...(values['text-field'] !== undefined && { textField: values['text-field'] as string }),
            tokens: tokens!,
            contextSize: saeContextSize(values, sae, 128, model),
            prependBos: saePrependBos(values, sae),
            ...(values['batch-size'] !== undefined && { batchSize: num(values, 'batch-size', 'int', 1) }),
          }
        : undefined;
    // Saved states (shards analysed separately, or an earlier run) are merged, then the new data added.
    let resume: FeatureStats | undefined;
    for (const path of states) {
      const st = await FeatureStats.load(path);
      if (resume) resume.merge(st);
      else resume = st;
    }
    const started = performance.now();
    const r = source
      ? await analyzeFeatures(sae, source, {
          stats: { dSae: sae.dSae, topN: num(values, 'top-n', 'int', 1) ?? 20 },
          ...(resume && { resume }),
          // BOS opens every window with the same residual stream: it would top every feature that fires on it.
          ...(values['include-bos'] !== true && model.tokenizer.bosId !== undefined && { ignoreTokens: new Set([model.tokenizer.bosId]) }),
          onProgress: (p) => bar.update(p),
        })
      : { stats: resume!, tokens: 0, seconds: (performance.now() - started) / 1000, encodeSeconds: 0, forwardSeconds: 0 };
    if (r.stats.dSae !== sae.dSae) throw new UsageError(`the saved states have d_sae ${r.stats.dSae}, ${saeDir} has ${sae.dSae}`);
    bar.stop();
    if (values['save-state'] !== undefined) await r.stats.save(values['save-state'] as string);
    if (states.length > 0) process.stderr.write(`merged ${states.length} saved state${states.length === 1 ? '' : 's'}: ${r.stats.tokensSeen} tokens in all\n`);
    if (source) process.stderr.write(
      `analysed ${r.tokens} tokens in ${r.seconds.toFixed(2)} s (${Math.round(r.tokens / r.seconds)} tokens/s; encode ${r.encodeSeconds.toFixed(2)} s, ` +
        `model ${r.forwardSeconds.toFixed(2)} s)\n`,
    );
    let logits;
    if (values['no-logits'] !== true) {
      const t = performance.now();
      const u = await readUnembedding(join(model.dir, 'onnx', `${model.onnxFile}.onnx`));
      // W_dec rows are d_out wide (a transcoder writes its output hook): they meet W_U only
      // where that is the unembedding's width.
      if (sae.dOut !== u.dModel) {
        process.stderr.write(`no logit effects: ${saeDir} decodes to width ${sae.dOut}, the unembedding reads ${u.dModel}\n`);
      } else {
        const weights = await readWeights(); // as loaded: a transcoder release's own reader, the same --clt-target
        logits = await logitEffects(weights.W_dec, sae.dSae, u);
        process.stderr.write(`logit effects (W_dec @ W_U, ${u.vocab} tokens) in ${((performance.now() - t) / 1000).toFixed(2)} s\n`);
      }
    }
    const cache = new Map<number, string>();
    const m = model;
    const docOpts: DocOptions = {
      modelId: m.name,
      hook,
      tokenText: (id) => {
        let s = cache.get(id);
        if (s === undefined) cache.set(id, (s = m.tokenText(id)));
        return s;
      },
      ...(logits && { logits }),
    };
    const index = { ...dashboardIndex(r.stats, { ...docOpts, sae: saeDir }), request };
    // The same documents feed the dashboard and the Neuronpedia export, one at a time.
    const np = npDir !== undefined && !npFinished
      ? await NeuronpediaExportWriter.open(npDir, {
          modelId: (values['neuronpedia-model'] as string | undefined) ?? defaultNeuronpediaModelId(m.name),
          source: (values['neuronpedia-source'] as string | undefined) ?? defaultNeuronpediaSource(hook),
          request: npRequest,
        })
      : undefined;
    let manifest: NeuronpediaManifest | undefined;
    try {
      const docs = (async function* () {
        for (let f = 0; f < sae.dSae; f++) {
          const doc = featureDoc(r.stats, f, docOpts);
          await np?.add(doc);
          yield doc;
        }
      })();
      if (!finished) {
        const pages = await writeDashboard(output, index, docs);
        const alive = index.features.filter((f) => f.frac_nonzero > 0).length;
        process.stderr.write(`dashboard: ${pages} feature pages (${alive} fired) -> ${join(output, 'index.html')} (open it, or: saekit dashboard ${output})\n`);
      } else {
        for await (const _ of docs);
      }
      manifest = await np?.finish();
    } catch (e) {
      await np?.abort();
      throw e;
    }
    if (manifest) {
      process.stderr.write(
        `neuronpedia: ${manifest.count} features (${manifest.skipped} dead, skipped) as ${manifest.modelId}/${manifest.source} in ${manifest.files.length} ` +
          `upload-batch file${manifest.files.length === 1 ? '' : 's'} -> ${npDir} (README "Neuronpedia export": how to upload)\n`,
      );
    }
    return 0;
  } finally {
    bar.stop();
    sae.dispose();
    await model?.dispose();
  }
}

/**
 * The dashboard already at OUTPUT when it was made by this same request; undefined when OUTPUT
 * is absent or empty. Any other content is refused now, before the analysis runs, and stays as
 * it is.
 */
async function finishedDashboard(output: string, request: Record<string, unknown>): Promise<DashboardIndex | undefined> {
  let entries: string[];
  try {
    entries = await readdir(output);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ValidationError(`${output}: cannot use as the dashboard directory: ${(e as Error).message}`);
  }
  if (entries.length === 0) return undefined;
  const notEmpty = (why: string) => new ValidationError(`${output}: the dashboard directory is not empty${why} (remove it or pick another --output)`);
  let index: DashboardIndex;
  try {
    index = JSON.parse(await readFile(join(output, 'index.json'), 'utf8')) as DashboardIndex;
  } catch {
    throw notEmpty('');
  }
  if (JSON.stringify(index.request) !== JSON.stringify(request)) throw notEmpty(': it holds a dashboard made by other flags');
  return index;
}

/**
 * The Neuronpedia export already at DIR when it was made by this same request; undefined when
 * DIR is absent or empty. Any other content is refused now, before the analysis runs.
 */
async function finishedExport(dir: string, request: Record<string, unknown>): Promise<NeuronpediaManifest | undefined> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ValidationError(`${dir}: cannot use as the Neuronpedia export directory: ${(e as Error).message}`);
  }
  if (entries.length === 0) return undefined;
  const notEmpty = (why: string) => new ValidationError(`${dir}: the Neuronpedia export directory is not empty${why} (remove it or pick another --neuronpedia)`);
  let manifest: NeuronpediaManifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as NeuronpediaManifest;
  } catch {
    throw notEmpty('');
  }
  if (JSON.stringify(manifest.request) !== JSON.stringify(request)) throw notEmpty(': it holds an export made by other flags');
  return manifest;
}
