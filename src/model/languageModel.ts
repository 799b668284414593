// A decoder language model run through @huggingface/transformers (ONNX runtime), with
// TransformerLens hook points.
//
// Each distinct use gets its own edited copy of the ONNX graph ("variant"): the hooks it reads
// become graph outputs, outputs nobody asked for are dropped (so dumping blocks.6 runs blocks
// 0-5 and skips the 50257-wide unembedding), and for splicing one hook's tensor is replaced
// by an input. Edited graphs are cached on disk beside the original as
// onnx/<file>.saekit-<sha256 of the original, 16 hex>-<edit digest>.onnx, so a second run
// loads them directly; a changed original gets new names.
//
// transformers.js is an optional peer dependency (~470 MB with ONNX runtime): it is imported
// on first use, with an error that names the package when it is missing.

import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { link, lstat, readFile, realpath, writeFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { FormatError, SaekitError, ValidationError } from '../errors.js';
import { tempPathFor } from '../formats/fileIo.js';
import { bf16ToF32Array, f16ToF32Array } from '../formats/float16.js';
import { wrapTokenizer, type TextTokenizer } from './corpus.js';
import { chooseOnnxFile, hubOptions, resolveModelDir, type ModelSourceOptions } from './modelSource.js';
import { hubFile } from '../hub/hub.js';
import { decodeOnnx, editGraph, encodeOnnx, externalDataFiles, findHooks, missingHook, OVERRIDE_INPUT, parseHookName, type GraphEdit } from './onnxGraph.js';

type Transformers = typeof import('@huggingface/transformers');
/** What a transformers.js model call returns: output name -> tensor. */
type ModelOutputs = Record<string, { data: ArrayLike<number>; dims: number[]; type: string }>;
type CallableModel = ((inputs: Record<string, unknown>) => Promise<ModelOutputs>) & { dispose(): Promise<unknown> };

/** Bumped whenever editGraph's output or the hook table changes, so stale cached edits are not reused. */
const EDIT_VERSION = 3;

let transformersPromise: Promise<Transformers> | undefined;

/** Imports @huggingface/transformers once; a missing package is an error that says how to install it. */
export async function loadTransformers(): Promise<Transformers> {
  transformersPromise ??= import('@huggingface/transformers').catch((e: unknown) => {
    transformersPromise = undefined;
    throw new SaekitError(
      `The model side needs the optional package @huggingface/transformers: ` +
        `ONNXRUNTIME_NODE_INSTALL=skip npm install @huggingface/transformers@~4.3 (${(e as Error).message.split('\n')[0]})`,
    );
  });
  return transformersPromise;
}

export interface LanguageModelOptions extends ModelSourceOptions {
  /** ONNX runtime intra-op threads (default: ONNX runtime's choice, the physical cores). */
  threads?: number;
}

/** Token ids and attention mask, [batch, length] row-major int64 (see corpus.padBatch). */
export interface TokenBatch {
  ids: BigInt64Array;
  mask: BigInt64Array;
  batch: number;
  length: number;
}

export interface ForwardResult {
  /** Hook name -> activations [batch, length, d_model] float32. */
  hooks: Map<string, Float32Array>;
  /** [batch, length, vocab] float32, when asked for. */
  logits?: Float32Array;
}

interface HooksIndex {
  family: string;
  layers: number;
  hooks: string[];
  parallel?: boolean;
  /** MLP-side hooks the finder could not place, with why. */
  unresolved?: Record<string, string>;
  /** Files the graph keeps its weights in (external data), relative to its folder. */
  externalData?: string[];
}

export class LanguageModel {
  private readonly variants = new Map<string, Promise<CallableModel>>();

  private constructor(
    /** What the user named: a folder or a hub id. */
    readonly name: string,
    /** The local folder (HF layout). */
    readonly dir: string,
    readonly onnxFile: string,
    /** The model's config.json. */
    readonly config: Record<string, unknown>,
    readonly tokenizer: TextTokenizer,
    /** The transformers.js tokenizer, for decoding ids to text. */
    private readonly rawTokenizer: { decode(ids: number[], opts?: object): string },
    private readonly index: HooksIndex,
    private readonly originalHash: string,
    private readonly tf: Transformers,
    private readonly threads: number | undefined,
  ) {}

  /** Loads the tokenizer and config and indexes the hook points; sessions start on first use. */
  static async load(model: string, opts: LanguageModelOptions = {}): Promise<LanguageModel> {
    const onnxFile = chooseOnnxFile(opts, existsSync(model) ? resolve(model) : undefined);
    if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) {
      throw new ValidationError(`Expected an integer >= 1 for threads but received ${opts.threads}`);
    }
    const dir = await resolveModelDir(model, { ...opts, onnxFile });
    const tf = await loadTransformers();
    const configPath = join(dir, 'config.json');
    let config: Record<string, unknown>;
    try {
      config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new FormatError(configPath, `not valid JSON (${(e as Error).message})`);
    }
    const onnxPath = join(dir, 'onnx', `${onnxFile}.onnx`);
    const originalHash = await originalSha256(onnxPath);
    const index = await hooksIndex(onnxPath, originalHash, configHints(config));
    await ensureExternalData(model, dir, onnxPath, index.externalData ?? [], { ...opts, onnxFile });
    pointTransformersAt(tf, dir);
    let raw: unknown;
    try {
      raw = await tf.AutoTokenizer.from_pretrained(basename(dir));
    } catch (e) {
      throw new FormatError(join(dir, 'tokenizer.json'), `cannot load the tokenizer: ${(e as Error).message}`);
    }
    return new LanguageModel(model, dir, onnxFile, config, wrapTokenizer(raw), raw as { decode(ids: number[]): string }, index, originalHash, tf, opts.threads);
  }

  get layers(): number {
    return this.index.layers;
  }

  /** Attention and MLP read the same stream (GPT-NeoX/Pythia): no resid_mid hooks. */
  get parallelBlocks(): boolean {
    return this.index.parallel === true;
  }

  /** Width of the residual stream. */
  get dModel(): number {
    const d = this.config.n_embd ?? this.config.hidden_size ?? this.config.d_model;
    if (typeof d !== 'number') throw new FormatError(join(this.dir, 'config.json'), 'has no n_embd / hidden_size');
    return d;
  }

  /** The longest window the model accepts (config.json max_position_embeddings / n_positions), if it says. */
  get maxPositions(): number | undefined {
    const n = this.config.max_position_embeddings ?? this.config.n_positions ?? this.config.n_ctx;
    return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : undefined;
  }

  get vocabSize(): number {
    return this.config.vocab_size as number;
  }

  /** Every hook name this graph exposes, e.g. blocks.0.hook_resid_pre. */
  get hookNames(): string[] {
    return [...this.index.hooks];
  }

  /**
   * Throws a ValidationError naming the hook when HOOK cannot be read: past the model's
   * layers, or not located (with the layer's hooks, and why when the finder knows).
   */
  checkHook(hook: string): void {
    parseHookName(hook);
    if (!this.index.hooks.includes(hook)) throw missingHook(hook, `model ${this.name}`, this.index);
  }

  /** The text of one token id (for display). */
  tokenText(id: number): string {
    return this.rawTokenizer.decode([id]);
  }

  decode(ids: ArrayLike<number>): string {
    return this.rawTokenizer.decode(Array.from(ids));
  }

  /** Runs BATCH and returns the HOOKS' activations (and logits when asked). */
  async forward(batch: TokenBatch, opts: { hooks: readonly string[]; logits?: boolean }): Promise<ForwardResult> {
    for (const h of opts.hooks) this.checkHook(h);
    const model = await this.variant({ expose: [...opts.hooks].sort(), keepLogits: opts.logits === true });
    const out = await this.run(model, this.feeds(batch), opts.hooks.length > 0 ? opts.hooks.join(', ') : 'logits');
    const hooks = new Map<string, Float32Array>();
    for (const h of opts.hooks) hooks.set(h, this.floats(out, h, batch, this.dModel));
    return { hooks, logits: opts.logits ? this.floats(out, 'logits', batch, this.vocabSize) : undefined };
  }

  /** Runs BATCH with HOOK's tensor replaced by REPLACEMENT [batch, length, d_model]; returns the logits. */
  async forwardSpliced(batch: TokenBatch, hook: string, replacement: Float32Array): Promise<Float32Array> {
    this.checkHook(hook);
    const expected = batch.batch * batch.length * this.dModel;
    if (replacement.length !== expected) {
      throw new ValidationError(`Expected ${expected} values ([${batch.batch}, ${batch.length}, ${this.dModel}]) for the replacement of ${hook} but received ${replacement.length}`);
    }
    const model = await this.variant({ expose: [], keepLogits: true, override: hook });
    const feeds = this.feeds(batch);
    feeds[OVERRIDE_INPUT] = new this.tf.Tensor('float32', replacement, [batch.batch, batch.length, this.dModel]);
    return this.floats(await this.run(model, feeds, `logits spliced at ${hook}`), 'logits', batch, this.vocabSize);
  }

  /**
   * One forward; an ONNX runtime failure becomes one line naming the model file and the node
   * (its messages can carry whole tensors, and transformers.js may print the feeds).
   */
  private async run(model: CallableModel, feeds: Record<string, unknown>, what: string): Promise<ModelOutputs> {
    try {
      return await model(feeds);
    } catch (e) {
      const first = ((e as Error).message ?? String(e)).split('\n')[0]!;
      const short = first.length > 300 ? `${first.slice(0, 300)}...` : first;
      throw new SaekitError(`ONNX runtime failed running ${join(this.dir, 'onnx', `${this.onnxFile}.onnx`)} for ${what}: ${short}`);
    }
  }

  /** Releases every ONNX runtime session. */
  async dispose(): Promise<void> {
    const all = [...this.variants.values()];
    this.variants.clear();
    for (const p of all) await (await p.catch(() => undefined))?.dispose();
  }

  private feeds(batch: TokenBatch): Record<string, unknown> {
    const { ids, mask, batch: b, length } = batch;
    const limit = this.maxPositions;
    if (limit !== undefined && length > limit) {
      throw new ValidationError(`Windows of ${length} tokens exceed the ${limit} positions of model ${this.name} (config.json): use a context size <= ${limit}`);
    }
    if (ids.length !== b * length || mask.length !== b * length) {
      throw new ValidationError(`Expected token ids and mask of ${b}x${length} but received ${ids.length} and ${mask.length} values`);
    }
    return {
      input_ids: new this.tf.Tensor('int64', ids, [b, length]),
      attention_mask: new this.tf.Tensor('int64', mask, [b, length]),
    };
  }

  /** Output NAME as float32, its size checked against [batch, length, width]. */
  private floats(out: ModelOutputs, name: string, batch: TokenBatch, width: number): Float32Array {
    const t = out[name];
    if (!t) throw new SaekitError(`The ONNX session returned no output ${name}`);
    const n = batch.batch * batch.length * width;
    let data: Float32Array;
    if (t.data instanceof Float32Array) data = t.data;
    else if (t.type === 'float16') data = f16ToF32Array(new Uint16Array((t.data as Uint16Array).buffer, (t.data as Uint16Array).byteOffset, n));
    else if (t.type === 'bfloat16') data = bf16ToF32Array(t.data as Uint16Array);
    else throw new SaekitError(`Output ${name} has unsupported type ${t.type}`);
    if (data.length !== n) throw new SaekitError(`Output ${name} has ${data.length} values, expected [${batch.batch}, ${batch.length}, ${width}]`);
    return data;
  }

  /** The session for EDIT, building and caching the edited graph on first use. */
  private variant(edit: GraphEdit): Promise<CallableModel> {
    const key = JSON.stringify(edit);
    let p = this.variants.get(key);
    if (!p) {
      p = this.openVariant(edit, key);
      p.catch(() => this.variants.delete(key));
      this.variants.set(key, p);
    }
    return p;
  }

  private async openVariant(edit: GraphEdit, key: string): Promise<CallableModel> {
    const digest = createHash('sha256').update(`${EDIT_VERSION}:${key}`).digest('hex').slice(0, 12);
    const fileName = `${this.onnxFile}.saekit-${this.originalHash.slice(0, 16)}-${digest}`;
    const path = join(this.dir, 'onnx', `${fileName}.onnx`);
    if (!existsSync(path)) {
      const original = join(this.dir, 'onnx', `${this.onnxFile}.onnx`);
      const edited = editGraph(decodeOnnx(await readFile(original), original), original, edit, configHints(this.config));
      await writeAtomically(path, encodeOnnx(edited));
    }
    pointTransformersAt(this.tf, this.dir);
    try {
      return (await this.tf.AutoModelForCausalLM.from_pretrained(basename(this.dir), {
        model_file_name: fileName,
        dtype: 'fp32',
        device: 'cpu',
        session_options: this.threads ? { intraOpNumThreads: this.threads, interOpNumThreads: 1 } : undefined,
      })) as unknown as CallableModel;
    } catch (e) {
      throw new FormatError(path, `ONNX runtime cannot load the edited model: ${(e as Error).message.split('\n')[0]}`);
    }
  }
}

/** transformers.js resolves ids against env.localModelPath; saekit always hands it a local folder. */
function pointTransformersAt(tf: Transformers, dir: string): void {
  // transformers.js logs a failed run with every input tensor printed in full; saekit reports
  // failures itself in one line (LanguageModel.run). SAEKIT_TRANSFORMERS_LOG=1 keeps its logs.
  if (process.env.SAEKIT_TRANSFORMERS_LOG !== '1') (tf.env as { logLevel?: number }).logLevel = 50;
  tf.env.allowLocalModels = true;
  tf.env.allowRemoteModels = false;
  tf.env.localModelPath = dirname(dir);
}

/**
 * Models over 2 GB keep their weights beside the graph (onnx/model.onnx_data): the edited
 * copies reference the same file, and ONNX runtime reads it from disk, so the weights never
 * pass through JS. Each data file must be there; from the hub it is fetched into the same
 * snapshot folder.
 */
async function ensureExternalData(model: string, dir: string, onnxPath: string, files: string[], opts: ModelSourceOptions): Promise<void> {
  for (const f of files) {
    if (f.includes('..') || f.startsWith('/')) throw new FormatError(onnxPath, `external data location ${JSON.stringify(f)} leaves the model folder`);
    const local = join(dirname(onnxPath), f);
    if (existsSync(local)) continue;
    if (existsSync(model)) throw new FormatError(onnxPath, `keeps its weights in ${f}, which is missing (expected ${local})`);
    await hubFile(model, `onnx/${f}`, hubOptions(opts));
    if (!existsSync(local)) throw new FormatError(onnxPath, `keeps its weights in ${f}, which the hub download did not place at ${local}`);
  }
  // The hub cache keeps snapshot files as symlinks into blobs/, and ONNX runtime refuses
  // external data whose resolved path leaves the model's folder: the data files become hard
  // links to their blobs (same file system: no copy, no extra space).
  for (const f of files) {
    const local = join(dirname(onnxPath), f);
    if (!(await lstat(local)).isSymbolicLink()) continue;
    const tmp = tempPathFor(local);
    try {
      await link(await realpath(local), tmp);
      await rename(tmp, local);
    } catch (e) {
      await rm(tmp, { force: true });
      throw new FormatError(local, `cannot hard-link the external data beside the graph (ONNX runtime refuses symlinks out of the model folder): ${(e as Error).message}`);
    }
  }
}

/** What config.json says that the hook finder checks the graph against. */
function configHints(config: Record<string, unknown>): { layers?: number; family?: string } {
  const layers = config.num_hidden_layers ?? config.n_layer ?? config.num_layers;
  return {
    ...(typeof layers === 'number' && { layers }),
    ...(typeof config.model_type === 'string' && { family: config.model_type }),
  };
}

/** The hook table, cached beside the original keyed by its hash (decoding a GiB graph takes seconds). */
async function hooksIndex(onnxPath: string, hash: string, hints: { layers?: number; family?: string }): Promise<HooksIndex> {
  const cache = onnxPath.replace(/\.onnx$/, `.saekit-${hash.slice(0, 16)}.hooks-v${EDIT_VERSION}.json`);
  if (existsSync(cache)) {
    try {
      return JSON.parse(await readFile(cache, 'utf8')) as HooksIndex;
    } catch {
      // A damaged cache entry is rebuilt below.
    }
  }
  const decoded = decodeOnnx(await readFile(onnxPath), onnxPath);
  const externalData = externalDataFiles(decoded);
  const found = findHooks(decoded, onnxPath, hints);
  const index: HooksIndex = {
    family: found.family,
    layers: found.layers,
    hooks: [...found.hooks.keys()],
    parallel: found.parallel,
    ...(found.unresolved.size > 0 && { unresolved: Object.fromEntries(found.unresolved) }),
    externalData,
  };
  await writeAtomically(cache, new TextEncoder().encode(`${JSON.stringify(index)}\n`)).catch(() => undefined); // a read-only folder only loses the cache
  return index;
}

async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    await writeFile(tmp, bytes, { flag: 'wx' });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new FormatError(path, `cannot write the edited model beside the original: ${(e as Error).message}`);
  }
}

/**
 * The sha256 of the original ONNX file, which names its edited copies. Hashing GPT-2 small
 * (~500 MB) takes ~1 s, so the digest is kept beside it in <file>.saekit-sha256.json with the
 * file's size, mtime and inode, and reused while those match; a file replaced in place gets a
 * new mtime and is hashed again. The note is an optimization: failing to write it is ignored.
 */
async function originalSha256(path: string): Promise<string> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw new FormatError(path, `cannot read: ${(e as Error).message}`);
  }
  const notePath = `${path}.saekit-sha256.json`;
  const key = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
  try {
    const note = JSON.parse(await readFile(notePath, 'utf8')) as Record<string, unknown>;
    if (note.size === key.size && note.mtimeMs === key.mtimeMs && note.ino === key.ino && typeof note.sha256 === 'string' && /^[0-9a-f]{64}$/.test(note.sha256)) {
      return note.sha256;
    }
  } catch {
    // no note yet, or an unreadable one: hash the file
  }
  const sha256 = await sha256File(path);
  await writeAtomically(notePath, new TextEncoder().encode(`${JSON.stringify({ ...key, sha256 })}\n`)).catch(() => undefined);
  return sha256;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  } catch (e) {
    throw new FormatError(path, `cannot read: ${(e as Error).message}`);
  }
  return hash.digest('hex');
}
