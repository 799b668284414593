// Activation dumps: a corpus run through the model, one hook's activations written as
// sharded safetensors with the token ids beside them, plus a manifest.json that the trainer
// (train/data.ts openRowSource) and the encoder read directly.
//
// Layout of DIR:
//   manifest.json                  { format: "saekit-activations", activations: [...], tensor,
//                                    tokens_tensor, model, hook_name, d_in, context_size,
//                                    prepend_bos, rows, windows, dtype, corpus }
//   activations-00000.safetensors  activations [n, d_in] (float32/float16/bfloat16),
//                                  token_ids [n] int32
//
// Paired dumps (transcoders: --hook-out): the same forward pass also reads a second hook (the
// MLP output the transcoder predicts). Each shard then also holds `activations_out` [n, d_out]
// in the same dtype, row-aligned with `activations`, and the manifest adds hook_name_out,
// d_out and tensor_out: "activations_out". Without one nothing changes: a single-hook dump is
// byte for byte what it was.
// Shards hold whole context windows: row r of the dump is position r % context_size of
// window floor(r / context_size), so the analysis side can rebuild every context.
//
// Memory is bounded by one shard buffer plus one batch, whatever the corpus size.

import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { tempPathFor } from '../formats/fileIo.js';
import { f32ToBf16Array, f32ToF16Array } from '../formats/float16.js';
import { writeSafetensors, type SafetensorsTensorData } from '../formats/safetensorsWriter.js';
import { batches, padBatch, readCorpus, tokenWindows } from './corpus.js';
import type { LanguageModel } from './languageModel.js';

export const ACTIVATIONS_FORMAT = 'saekit-activations';

export interface ActivationsManifest {
  format: typeof ACTIVATIONS_FORMAT;
  version: 1;
  activations: string[];
  tensor: 'activations';
  tokens_tensor: 'token_ids';
  model: string;
  /** The ONNX file under the model's onnx/ that ran (e.g. model, model_fp16). */
  onnx_file?: string;
  hook_name: string;
  d_in: number;
  /** Paired dumps: the second hook, its width, and the shards' tensor holding it. */
  hook_name_out?: string;
  d_out?: number;
  tensor_out?: 'activations_out';
  context_size: number;
  prepend_bos: boolean;
  rows: number;
  windows: number;
  dtype: DumpDtype;
  corpus: string;
  /** What was asked for (rows can be fewer when the corpus ran out); a rerun compares these. */
  tokens_requested?: number;
  shard_windows?: number;
}

export type DumpDtype = 'float32' | 'float16' | 'bfloat16';

export interface DumpActivationsOptions {
  hook: string;
  /** A second hook read in the same pass, dumped row-aligned as `activations_out` (transcoders). */
  hookOut?: string;
  /** A .txt or .jsonl corpus (see corpus.readCorpus). */
  corpus: string;
  textField?: string;
  output: string;
  contextSize: number;
  /** Tokens to dump (rounded up to whole windows). */
  tokens: number;
  prependBos?: boolean;
  /** Context windows per forward pass (default 8). */
  batchSize?: number;
  /** Windows per shard (default: about 256 MiB of activations). */
  shardWindows?: number;
  dtype?: DumpDtype;
  onProgress?: (p: { rowsDone: number; rows: number; seconds: number }) => void;
  /** Called when a shard file has landed under its final name (SHARD counts from 1). */
  onShard?: (p: { shard: number; file: string; rowsDone: number; rows: number }) => void;
}

export interface DumpResult {
  manifest: ActivationsManifest;
  seconds: number;
  /** Seconds inside the model's forward calls (the rest is tokenizing, converting, writing). */
  forwardSeconds: number;
  /** True when OUTPUT already held this very dump, finished (a rerun after a kill): nothing was redone. */
  alreadyComplete?: boolean;
}

/** Runs the corpus through MODEL and writes OPTS.hook's activations to OPTS.output. */
export async function dumpActivations(model: LanguageModel, o: DumpActivationsOptions): Promise<DumpResult> {
  model.checkHook(o.hook);
  if (o.hookOut !== undefined) {
    model.checkHook(o.hookOut);
    if (o.hookOut === o.hook) throw new ValidationError(`The output hook ${o.hookOut} is the input hook: a paired dump reads two different hooks`);
  }
  const ctx = o.contextSize;
  const prependBos = o.prependBos ?? true;
  if (!Number.isSafeInteger(o.tokens) || o.tokens < 1) throw new ValidationError(`Expected a positive integer for tokens but received ${o.tokens}`);
  const batchSize = o.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValidationError(`Expected a positive integer for batch size but received ${batchSize}`);
  const dtype = o.dtype ?? 'float32';
  if (!['float32', 'float16', 'bfloat16'].includes(dtype)) throw new ValidationError(`Expected float32, float16 or bfloat16 for dtype but received ${JSON.stringify(dtype)}`);
  const d = model.dModel;
  // Every hook saekit reads is as wide as the residual stream.
  const dOut = o.hookOut !== undefined ? model.dModel : 0;
  const bytesPerRow = (d + dOut) * (dtype === 'float32' ? 4 : 2);
  const shardWindows = o.shardWindows ?? Math.max(1, Math.floor((256 << 20) / (bytesPerRow * ctx)));
  if (!Number.isInteger(shardWindows) || shardWindows < 1) throw new ValidationError(`Expected a positive integer for shard windows but received ${shardWindows}`);
  if (!existsSync(o.corpus)) throw new FormatError(o.corpus, 'corpus file not found');
  // What shapes the dump's bytes: written into its manifest, compared by a rerun.
  const settings: DumpSettings = {
    model: model.name,
    onnx_file: model.onnxFile,
    hook_name: o.hook,
    d_in: d,
    ...(o.hookOut !== undefined && { hook_name_out: o.hookOut, d_out: dOut }),
    context_size: ctx,
    prepend_bos: prependBos,
    dtype,
    corpus: o.corpus,
    tokens_requested: o.tokens,
    shard_windows: shardWindows,
  };
  const prepared = await prepareOutput(o.output, settings);
  if (prepared.finished) return { manifest: prepared.finished, seconds: 0, forwardSeconds: 0, alreadyComplete: true };
  const created = prepared.created;
  const files: string[] = [];
  try {
    return await dump(model, o, { ctx, prependBos, batchSize, dtype, d, dOut, shardWindows, settings }, files);
  } catch (e) {
    // Nothing half-written stays: the shards this run wrote go, and the folder if it made it.
    await Promise.all(files.map((f) => rm(join(o.output, f), { force: true })));
    if (created) await rm(o.output, { recursive: true, force: true });
    throw e;
  }
}

interface DumpPlan {
  settings: DumpSettings;
  ctx: number;
  prependBos: boolean;
  batchSize: number;
  dtype: DumpDtype;
  d: number;
  /** Width of the output hook; 0 for a single-hook dump. */
  dOut: number;
  shardWindows: number;
}

async function dump(model: LanguageModel, o: DumpActivationsOptions, plan: DumpPlan, files: string[]): Promise<DumpResult> {
  const { ctx, prependBos, batchSize, dtype, d, dOut, shardWindows } = plan;
  const hookOut = o.hookOut;

  const totalWindows = Math.ceil(o.tokens / ctx);
  const rows = totalWindows * ctx;
  let shardActs = new Float32Array(shardWindows * ctx * d);
  let shardOut = new Float32Array(shardWindows * ctx * dOut);
  let shardTokens = new Int32Array(shardWindows * ctx);
  let inShard = 0;
  let windowsDone = 0;
  let forwardSeconds = 0;
  const started = performance.now();

  const flush = async () => {
    if (inShard === 0) return;
    const n = inShard * ctx;
    const tensor = (acts: Float32Array, width: number): SafetensorsTensorData =>
      dtype === 'float32'
        ? { dtype: 'F32', shape: [n, width], data: acts }
        : { dtype: dtype === 'float16' ? 'F16' : 'BF16', shape: [n, width], data: dtype === 'float16' ? f32ToF16Array(acts) : f32ToBf16Array(acts) };
    const name = `activations-${String(files.length).padStart(5, '0')}.safetensors`;
    const tensors: Record<string, SafetensorsTensorData> = { activations: tensor(shardActs.subarray(0, n * d), d) };
    if (hookOut !== undefined) tensors.activations_out = tensor(shardOut.subarray(0, n * dOut), dOut);
    tensors.token_ids = { dtype: 'I32', shape: [n], data: shardTokens.subarray(0, n) };
    await writeSafetensors(join(o.output, name), tensors, {
      hook_name: o.hook,
      ...(hookOut !== undefined && { hook_name_out: hookOut }),
      model: model.name,
    });
    files.push(name);
    inShard = 0;
    o.onShard?.({ shard: files.length, file: name, rowsDone: windowsDone * ctx, rows });
  };

  const windows = tokenWindows(readCorpus(o.corpus, { textField: o.textField }), model.tokenizer, { contextSize: ctx, prependBos, maxTokens: rows });
  for await (const group of batches(windows, batchSize)) {
    const batch = padBatch(group, 0);
    const t0 = performance.now();
    // Both hooks of a paired dump come from this one pass.
    const { hooks } = await model.forward(batch, { hooks: hookOut !== undefined ? [o.hook, hookOut] : [o.hook] });
    forwardSeconds += (performance.now() - t0) / 1000;
    const acts = hooks.get(o.hook) as Float32Array;
    const actsOut = hookOut !== undefined ? (hooks.get(hookOut) as Float32Array) : undefined;
    for (let w = 0; w < group.length; w++) {
      shardActs.set(acts.subarray(w * ctx * d, (w + 1) * ctx * d), inShard * ctx * d);
      if (actsOut) shardOut.set(actsOut.subarray(w * ctx * dOut, (w + 1) * ctx * dOut), inShard * ctx * dOut);
      shardTokens.set(group[w]!, inShard * ctx);
      inShard++;
      windowsDone++;
      if (inShard === shardWindows) await flush();
    }
    o.onProgress?.({ rowsDone: windowsDone * ctx, rows, seconds: (performance.now() - started) / 1000 });
  }
  await flush();
  shardActs = new Float32Array(0);
  shardOut = new Float32Array(0);
  shardTokens = new Int32Array(0);
  if (windowsDone === 0) {
    throw new FormatError(o.corpus, `holds fewer than ${ctx} tokens: not one context window of ${ctx}`);
  }
  const manifest: ActivationsManifest = {
    format: ACTIVATIONS_FORMAT,
    version: 1,
    activations: files,
    tensor: 'activations',
    ...(hookOut !== undefined && { tensor_out: 'activations_out' as const }),
    tokens_tensor: 'token_ids',
    ...plan.settings,
    rows: windowsDone * ctx,
    windows: windowsDone,
  };
  // The manifest comes last: a folder without one is an interrupted dump.
  const path = join(o.output, 'manifest.json');
  const tmp = tempPathFor(path);
  await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(tmp, path);
  return { manifest, seconds: (performance.now() - started) / 1000, forwardSeconds };
}

/** What an interrupted dump leaves: shards and their temporaries, no manifest. */
const DUMP_FILE = /^(activations-\d{5}\.safetensors|activations-\d{5}\.safetensors\.tmp-\d+-[0-9a-f]{8}|manifest\.json\.tmp-\d+-[0-9a-f]{8})$/;

type DumpSettings = Pick<
  ActivationsManifest,
  'model' | 'onnx_file' | 'hook_name' | 'd_in' | 'hook_name_out' | 'd_out' | 'context_size' | 'prepend_bos' | 'dtype' | 'corpus' | 'tokens_requested' | 'shard_windows'
>;

/** What a rerun compares, the paired dump's keys included (absent on both sides for single dumps). */
const SETTINGS_KEYS: readonly (keyof DumpSettings)[] = [
  'model', 'onnx_file', 'hook_name', 'd_in', 'hook_name_out', 'd_out', 'context_size', 'prepend_bos', 'dtype', 'corpus', 'tokens_requested', 'shard_windows',
];

/**
 * The output folder must be new or empty: a dump never mixes with older shards. Two states a
 * killed run leaves are recognized, so that a plain rerun of the same command finishes:
 * - only shards and temporaries, no manifest.json (killed mid-dump): cleared, and the dump
 *   starts over; it is deterministic, so the rerun writes the bytes an uninterrupted run would;
 * - a finished dump (manifest.json and exactly its shards) made with the same settings (killed
 *   after the manifest landed): kept as it is, nothing redone.
 * Anything else in the folder is an error that leaves it untouched.
 */
async function prepareOutput(dir: string, wanted: DumpSettings): Promise<{ created: boolean; finished?: ActivationsManifest }> {
  if (!existsSync(dir)) {
    await mkdir(dir, { recursive: true });
    return { created: true };
  }
  const entries = await readdir(dir).catch(() => {
    throw new FormatError(dir, 'exists and is not a folder');
  });
  if (entries.length === 0) return { created: false };
  if (entries.every((e) => DUMP_FILE.test(e))) {
    await Promise.all(entries.map((e) => rm(join(dir, e), { force: true })));
    return { created: false };
  }
  const notEmpty = (why: string) => new FormatError(dir, `output folder is not empty${why} (remove it or pick another --output)`);
  if (!entries.includes('manifest.json')) throw notEmpty('');
  let m: ActivationsManifest | undefined;
  try {
    m = await readActivationsManifest(dir);
  } catch {
    throw notEmpty('');
  }
  if (!m || !Array.isArray(m.activations)) throw notEmpty('');
  const shards = new Set(m.activations);
  const temporaries = entries.filter((e) => DUMP_FILE.test(e) && e.includes('.tmp-'));
  const extra = entries.filter((e) => e !== 'manifest.json' && !shards.has(e) && !temporaries.includes(e));
  if (extra.length > 0 || m.activations.some((f) => !entries.includes(f))) throw notEmpty('');
  const differs = SETTINGS_KEYS.filter((key) => m[key] !== wanted[key]);
  if (differs.length > 0) {
    const show = (v: unknown) => (v === undefined ? 'none' : JSON.stringify(v));
    const shown = differs.map((key) => `${key} ${show(m[key])}, not ${show(wanted[key])}`).join('; ');
    throw notEmpty(`: it holds a finished dump made with other settings (${shown})`);
  }
  // The manifest landed last, so any temporary here is a leftover of a run that is gone.
  await Promise.all(temporaries.map((e) => rm(join(dir, e), { force: true })));
  return { created: false, finished: m };
}

/** Reads the manifest of an activation dump, or undefined when DIR has none of this format. */
export async function readActivationsManifest(dir: string): Promise<ActivationsManifest | undefined> {
  const path = join(dir, 'manifest.json');
  if (!existsSync(path)) return undefined;
  let m: unknown;
  try {
    m = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new FormatError(path, `not valid JSON (${(e as Error).message})`);
  }
  return (m as { format?: unknown }).format === ACTIVATIONS_FORMAT ? (m as ActivationsManifest) : undefined;
}
