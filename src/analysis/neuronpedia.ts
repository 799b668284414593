// Neuronpedia export: the dashboard's feature documents as the JSON bodies Neuronpedia's public
// `POST api/feature/upload-batch` takes ({modelId, source, features}, <= 128 features a call),
// one file per batch, so a user can upload them with curl (README, "Neuronpedia export").
//
// Why it looks like this:
// - Every batch is validated against the JSON Schema (neuronpediaSchema.ts, compiled once with
//   Ajv) plus the checks JSON Schema cannot state, before it is written, and read back the
//   same way: a file saekit wrote is one Neuronpedia's schema accepts.
// - Nothing is left half-written: batches go into a temporary sibling folder that is renamed
//   into place at the end (as the dashboard is); on any error it is removed.
// - Documents stream through (NeuronpediaExportWriter.add): memory is one batch.
//
// Mapping from a FeatureDoc: index = latent, density = frac_nonzero, topLogits / bottomLogits =
// pos_str/pos_values and neg_str/neg_values (first 20), explanations = [], activations = the
// top examples, then the quantile-bin samples, each with its bin's bounds and share:
// - top examples: quantileMax = max_act (the largest activation seen), quantileMin = the
//   smallest top example's value, quantileFraction = top examples / firing tokens (the top-N
//   are N distinct firing tokens);
// - 'quantile i of n (lo to hi)': the reservoir split into n equal-count groups, so
//   quantileFraction = 1/n; quantileMin = its smallest example (each bin's samples include
//   its lowest), quantileMax = the label's upper bound (3 significant digits) or its largest
//   example, whichever is larger.
// A dead feature (no activations) cannot meet Neuronpedia's "at least one activation": it is
// skipped and counted in the manifest. Contexts over 1024 tokens keep a 1024-token window
// centred on the activating token. Numbers are written as the shortest decimal that reads back
// as the same float32 (the statistics are float32), density as computed.

import { mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { FormatError, ValidationError, expected } from '../errors.js';
import { tempPathFor } from '../formats/fileIo.js';
import { NEURONPEDIA_ID_PATTERN, NEURONPEDIA_UPLOAD_BATCH_SCHEMA } from './neuronpediaSchema.js';
import type { FeatureActivation, FeatureDoc } from './types.js';

/** Neuronpedia's limits per upload call. */
export const NEURONPEDIA_MAX_FEATURES = 128;
export const NEURONPEDIA_MAX_LOGITS = 20;
export const NEURONPEDIA_MAX_TOKENS = 1024;

export interface NeuronpediaLogit {
  token: string;
  value: number;
}

export interface NeuronpediaExplanation {
  text: string;
  methodName: string;
  modelName: string;
}

export interface NeuronpediaActivation {
  tokens: string[];
  values: number[];
  quantileMax: number;
  quantileMin: number;
  quantileFraction: number;
}

export interface NeuronpediaFeature {
  index: number;
  density?: number;
  topLogits: NeuronpediaLogit[];
  bottomLogits: NeuronpediaLogit[];
  explanations: NeuronpediaExplanation[];
  activations: NeuronpediaActivation[];
}

/** One upload call's body. */
export interface NeuronpediaBatch {
  modelId: string;
  source: string;
  features: NeuronpediaFeature[];
}

/** manifest.json of an export folder. */
export interface NeuronpediaManifest {
  format: 'saekit-neuronpedia-upload-batch';
  modelId: string;
  source: string;
  /** Features written (in all batch files). */
  count: number;
  /** Dead features (no activations) left out. */
  skipped: number;
  /** The batch files, in order. */
  files: string[];
  /** What made it (`saekit analyze` records its flags, so a rerun can tell it is done). */
  request?: Record<string, unknown>;
}

export interface NeuronpediaFeatureOptions {
  /** Logits kept per side (default and at most 20). */
  maxLogits?: number;
  /** Tokens kept per context (default and at most 1024). */
  maxTokens?: number;
}

export interface NeuronpediaExportOptions extends NeuronpediaFeatureOptions {
  modelId: string;
  source: string;
  /** Features per batch file (default and at most 128). */
  batchSize?: number;
  /** Recorded in manifest.json. */
  request?: Record<string, unknown>;
}

let compiled: ValidateFunction<NeuronpediaBatch> | undefined;

/** The schema's validator, compiled once (strict mode: NaN and Infinity are not numbers). */
function validator(): ValidateFunction<NeuronpediaBatch> {
  compiled ??= new Ajv({ allErrors: false, strict: true, strictNumbers: true }).compile<NeuronpediaBatch>(NEURONPEDIA_UPLOAD_BATCH_SCHEMA);
  return compiled;
}

/**
 * Throws a ValidationError unless BATCH is an upload batch Neuronpedia accepts: the JSON Schema
 * (Ajv) and what it cannot express (values as long as tokens, quantileMin <= quantileMax,
 * feature indices unique). WHERE names the batch in the message (a file name).
 */
export function validateNeuronpediaBatch(batch: unknown, where = 'the batch'): asserts batch is NeuronpediaBatch {
  const validate = validator();
  if (!validate(batch)) {
    const err = validate.errors![0]!;
    throw new ValidationError(`${where}: ${featureAt(batch, err.instancePath)}fails the Neuronpedia upload-batch schema at ${err.instancePath || '/'}: ${describeError(err)}`);
  }
  const seen = new Set<number>();
  batch.features.forEach((f, i) => {
    if (seen.has(f.index)) throw new ValidationError(`${where}: feature ${f.index} appears twice (/features/${i})`);
    seen.add(f.index);
    f.activations.forEach((a, j) => {
      const path = `/features/${i}/activations/${j}`;
      if (a.values.length !== a.tokens.length) {
        throw new ValidationError(`${where}: feature ${f.index} at ${path}: ${a.values.length} values for ${a.tokens.length} tokens (must be equal)`);
      }
      if (!(a.quantileMin <= a.quantileMax)) throw new ValidationError(`${where}: feature ${f.index} at ${path}: quantileMin ${a.quantileMin} exceeds quantileMax ${a.quantileMax}`);
    });
  });
}

function featureAt(batch: unknown, path: string): string {
  const m = /^\/features\/(\d+)/.exec(path);
  if (!m) return '';
  const f = (batch as { features?: unknown[] }).features?.[Number(m[1])] as { index?: unknown } | undefined;
  return `feature ${typeof f?.index === 'number' ? f.index : `#${m[1]}`} `;
}

function describeError(e: ErrorObject): string {
  if (e.keyword === 'additionalProperties') return `unknown field ${JSON.stringify((e.params as { additionalProperty: string }).additionalProperty)}`;
  return e.message ?? e.keyword;
}

/** The shortest decimal that reads back as the same float32 (the statistics are float32). */
function f32(x: number): number {
  if (x === 0 || Number.isInteger(x) || !Number.isFinite(x)) return x;
  const target = Math.fround(x);
  for (let p = 1; p < 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === target) return y;
  }
  return Number(x.toPrecision(9));
}

const QUANTILE_LABEL = /^quantile (\d+) of (\d+) \((\S+) to (\S+)\)$/;

function checkLimit(v: number | undefined, max: number, name: string): number {
  if (v === undefined) return max;
  if (!Number.isInteger(v) || v < 1 || v > max) throw expected(`an integer from 1 to ${max}`, name, v);
  return v;
}

/**
 * The upload-batch feature of one dashboard document, or undefined for a dead feature (no
 * activations: Neuronpedia needs at least one). See the file comment for the mapping.
 */
export function neuronpediaFeature(doc: FeatureDoc, opts: NeuronpediaFeatureOptions = {}): NeuronpediaFeature | undefined {
  if (doc === null || typeof doc !== 'object') throw expected('a FeatureDoc object', 'doc', doc);
  const id = doc.index;
  if (!Number.isSafeInteger(id) || id < 0) throw expected('a non-negative integer', 'FeatureDoc.index', id);
  const maxLogits = checkLimit(opts.maxLogits, NEURONPEDIA_MAX_LOGITS, 'maxLogits');
  const maxTokens = checkLimit(opts.maxTokens, NEURONPEDIA_MAX_TOKENS, 'maxTokens');
  for (const k of ['pos_str', 'pos_values', 'neg_str', 'neg_values', 'activations'] as const) {
    if (!Array.isArray(doc[k])) throw expected('an array', `FeatureDoc.${k} (feature ${id})`, doc[k]);
  }
  if (doc.activations.length === 0) return undefined;
  const logits = (str: string[], values: number[], side: string): NeuronpediaLogit[] => {
    if (str.length !== values.length) throw new ValidationError(`feature ${id}: ${side}_str has ${str.length} tokens but ${side}_values ${values.length} values`);
    return str.slice(0, maxLogits).map((token, i) => ({ token, value: f32(values[i]!) }));
  };
  const top = doc.activations.filter((a) => a.bin === 'top');
  const topMin = Math.min(...top.map((a) => a.maxValue));
  const byBin = new Map<string, FeatureActivation[]>();
  for (const a of doc.activations) {
    const list = byBin.get(a.bin);
    if (list) list.push(a);
    else byBin.set(a.bin, [a]);
  }
  const bounds = (a: FeatureActivation, j: number): { quantileMax: number; quantileMin: number; quantileFraction: number } => {
    if (a.bin === 'top') {
      return { quantileMax: f32(Math.max(doc.max_act, a.maxValue)), quantileMin: f32(topMin), quantileFraction: doc.count > 0 ? Math.min(1, top.length / doc.count) : 0 };
    }
    const m = QUANTILE_LABEL.exec(String(a.bin));
    const n = m ? Number(m[2]) : NaN;
    const hi = m ? Number(m[4]) : NaN;
    if (!m || !(n >= 1) || !Number.isFinite(hi)) {
      throw new ValidationError(`feature ${id}: activations[${j}].bin is ${JSON.stringify(a.bin)}, expected 'top' or 'quantile i of n (lo to hi)'`);
    }
    const group = byBin.get(a.bin)!.map((e) => e.maxValue);
    return { quantileMax: f32(Math.max(hi, ...group)), quantileMin: f32(Math.min(...group)), quantileFraction: 1 / n };
  };
  const activations = doc.activations.map((a, j): NeuronpediaActivation => {
    if (!Array.isArray(a.tokens) || !Array.isArray(a.values)) throw expected('tokens and values arrays', `feature ${id} activations[${j}]`, a.tokens);
    if (a.tokens.length !== a.values.length) throw new ValidationError(`feature ${id}: activations[${j}] has ${a.tokens.length} tokens but ${a.values.length} values`);
    let { tokens, values } = a;
    if (tokens.length > maxTokens) {
      // A window of maxTokens around the activating token.
      const at = Number.isInteger(a.maxValueTokenIndex) ? a.maxValueTokenIndex : 0;
      const from = Math.max(0, Math.min(at - Math.floor(maxTokens / 2), tokens.length - maxTokens));
      tokens = tokens.slice(from, from + maxTokens);
      values = values.slice(from, from + maxTokens);
    }
    return { tokens: [...tokens], values: values.map(f32), ...bounds(a, j) };
  });
  return {
    index: id,
    density: doc.frac_nonzero,
    topLogits: logits(doc.pos_str, doc.pos_values, 'pos'),
    bottomLogits: logits(doc.neg_str, doc.neg_values, 'neg'),
    explanations: [],
    activations,
  };
}

/** Checks a modelId / source against Neuronpedia's id form; WHAT names it in the message. */
export function checkNeuronpediaId(id: unknown, what: string): string {
  if (typeof id !== 'string' || !new RegExp(NEURONPEDIA_ID_PATTERN).test(id) || id.length > 128) {
    throw expected(`a Neuronpedia id (letters, digits, '.', '_', '-'; e.g. gpt2-small, 6-res-jb)`, what, id);
  }
  return id;
}

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '').replace(/-+$/, '').slice(0, 128);
}

/** Default modelId: the model folder's (or hub id's) last name, lowercased, other characters as '-'. */
export function defaultNeuronpediaModelId(model: string): string {
  return slug(basename(model.replace(/[/\\]+$/, ''))) || 'model';
}

/** Default source, Neuronpedia's `<layer>-<set>`: `<L>-saekit` for a `blocks.L.` hook, else the hook's name then `-saekit`. */
export function defaultNeuronpediaSource(hook: string): string {
  const m = /(?:^|\.)blocks\.(\d+)\./.exec(hook);
  return `${m ? m[1] : slug(hook) || 'hook'}-saekit`;
}

function batchFileName(i: number): string {
  return `batch-${String(i).padStart(4, '0')}.json`;
}

function notEmpty(dir: string): ValidationError {
  return new ValidationError(`${dir}: the Neuronpedia export directory is not empty (it must be absent or empty; remove it or pick another directory)`);
}

/**
 * Writes an export folder as documents stream in: open(), add() each document, then finish()
 * (or abort() on an error elsewhere). Until finish() renames it into place, everything lives
 * in a temporary sibling folder.
 */
export class NeuronpediaExportWriter {
  private pending: NeuronpediaFeature[] = [];
  private readonly files: string[] = [];
  private readonly seen = new Set<number>();
  private count = 0;
  private skipped = 0;
  private done = false;

  private constructor(
    private readonly dir: string,
    private readonly target: string,
    private readonly tmp: string,
    private readonly existedEmpty: boolean,
    private readonly opts: Required<Omit<NeuronpediaExportOptions, 'request'>> & { request?: Record<string, unknown> },
  ) {}

  /** Checks the options and that DIR is absent or empty, and starts the temporary folder. */
  static async open(dir: string, opts: NeuronpediaExportOptions): Promise<NeuronpediaExportWriter> {
    if (typeof dir !== 'string' || dir === '') throw expected('a directory path', 'dir', dir);
    if (opts === null || typeof opts !== 'object') throw expected('options with modelId and source', 'opts', opts);
    const full = {
      modelId: checkNeuronpediaId(opts.modelId, 'modelId'),
      source: checkNeuronpediaId(opts.source, 'source'),
      batchSize: checkLimit(opts.batchSize, NEURONPEDIA_MAX_FEATURES, 'batchSize'),
      maxLogits: checkLimit(opts.maxLogits, NEURONPEDIA_MAX_LOGITS, 'maxLogits'),
      maxTokens: checkLimit(opts.maxTokens, NEURONPEDIA_MAX_TOKENS, 'maxTokens'),
      ...(opts.request !== undefined && { request: opts.request }),
    };
    const target = resolve(dir);
    let existedEmpty = false;
    try {
      const st = await stat(target);
      if (!st.isDirectory()) throw new ValidationError(`${dir}: exists and is not a directory (the Neuronpedia export needs an absent or empty directory)`);
      if ((await readdir(target)).length > 0) throw notEmpty(dir);
      existedEmpty = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        if (err instanceof ValidationError) throw err;
        throw new ValidationError(`${dir}: cannot use as the Neuronpedia export directory: ${(err as Error).message}`);
      }
    }
    await mkdir(dirname(target), { recursive: true });
    const tmp = tempPathFor(target);
    await mkdir(tmp);
    return new NeuronpediaExportWriter(dir, target, tmp, existedEmpty, full);
  }

  /** Adds one document (a dead feature is counted and skipped); writes a batch file when one fills. */
  async add(doc: FeatureDoc): Promise<void> {
    if (this.done) throw new ValidationError('NeuronpediaExportWriter: add() after finish() or abort()');
    const f = neuronpediaFeature(doc, this.opts);
    if (this.seen.has(doc.index)) throw new ValidationError(`feature ${doc.index} appears twice in the documents given to the Neuronpedia export`);
    this.seen.add(doc.index);
    if (!f) {
      this.skipped++;
      return;
    }
    this.pending.push(f);
    if (this.pending.length === this.opts.batchSize) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const name = batchFileName(this.files.length);
    const batch: NeuronpediaBatch = { modelId: this.opts.modelId, source: this.opts.source, features: this.pending };
    validateNeuronpediaBatch(batch, `Neuronpedia export ${name}`);
    this.pending = [];
    await writeFile(join(this.tmp, name), JSON.stringify(batch));
    this.files.push(name);
    this.count += batch.features.length;
  }

  /** Writes the last batch and manifest.json, renames the folder into place; returns the manifest. */
  async finish(): Promise<NeuronpediaManifest> {
    if (this.done) throw new ValidationError('NeuronpediaExportWriter: finish() after finish() or abort()');
    try {
      await this.flush();
      const manifest: NeuronpediaManifest = {
        format: 'saekit-neuronpedia-upload-batch',
        modelId: this.opts.modelId,
        source: this.opts.source,
        count: this.count,
        skipped: this.skipped,
        files: [...this.files],
        ...(this.opts.request !== undefined && { request: this.opts.request }),
      };
      await writeFile(join(this.tmp, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      if (this.existedEmpty) {
        try {
          await rmdir(this.target); // fails if something appeared in it meanwhile: nothing is overwritten
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOTEMPTY' || code === 'EEXIST') throw notEmpty(this.dir);
          if (code !== 'ENOENT') throw err;
        }
      }
      try {
        await rename(this.tmp, this.target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') throw notEmpty(this.dir);
        throw err;
      }
      this.done = true;
      return manifest;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Removes the temporary folder; the target is left as it was. */
  async abort(): Promise<void> {
    this.done = true;
    await rm(this.tmp, { recursive: true, force: true });
  }
}

/**
 * Writes DOCS (dashboard documents, streamed) into DIR (created; absent or empty) as
 * upload-batch files batch-0000.json, ... of at most opts.batchSize (128) features, plus
 * manifest.json. Every batch is validated before it is written; on any error DIR is left as it
 * was. Returns the manifest.
 */
export async function writeNeuronpediaExport(
  dir: string,
  docs: Iterable<FeatureDoc> | AsyncIterable<FeatureDoc>,
  opts: NeuronpediaExportOptions,
): Promise<NeuronpediaManifest> {
  if (docs == null || (typeof (docs as AsyncIterable<FeatureDoc>)[Symbol.asyncIterator] !== 'function' && typeof (docs as Iterable<FeatureDoc>)[Symbol.iterator] !== 'function')) {
    throw expected('an iterable or async iterable of FeatureDoc', 'docs', docs);
  }
  const w = await NeuronpediaExportWriter.open(dir, opts);
  try {
    for await (const doc of docs) await w.add(doc);
  } catch (err) {
    await w.abort();
    throw err;
  }
  return w.finish();
}

/** Reads an export folder back, validating every batch file; features in file order. */
export async function readNeuronpediaExport(dir: string): Promise<{ manifest: NeuronpediaManifest; batches: NeuronpediaBatch[]; features: NeuronpediaFeature[] }> {
  const manifestPath = join(dir, 'manifest.json');
  const manifest = await readJson(manifestPath) as NeuronpediaManifest;
  if (
    manifest === null || typeof manifest !== 'object' || manifest.format !== 'saekit-neuronpedia-upload-batch' || !Array.isArray(manifest.files) ||
    !manifest.files.every((f) => typeof f === 'string' && /^[\w.-]+\.json$/.test(f)) || !Number.isInteger(manifest.count) || !Number.isInteger(manifest.skipped)
  ) {
    throw new FormatError(manifestPath, 'is not the manifest of a saekit Neuronpedia export (format, files, count, skipped)');
  }
  const batches: NeuronpediaBatch[] = [];
  const features: NeuronpediaFeature[] = [];
  const seen = new Set<number>();
  for (const file of manifest.files) {
    const path = join(dir, file);
    const batch = await readJson(path);
    validateNeuronpediaBatch(batch, path);
    if (batch.modelId !== manifest.modelId || batch.source !== manifest.source) {
      throw new FormatError(path, `is for ${batch.modelId}/${batch.source}, the manifest says ${manifest.modelId}/${manifest.source}`);
    }
    for (const f of batch.features) {
      if (seen.has(f.index)) throw new FormatError(path, `feature ${f.index} is also in an earlier batch file`);
      seen.add(f.index);
      features.push(f);
    }
    batches.push(batch);
  }
  if (features.length !== manifest.count) throw new FormatError(manifestPath, `says ${manifest.count} features, the batch files hold ${features.length}`);
  return { manifest, batches, features };
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new FormatError(path, `cannot read: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new FormatError(path, `is not JSON: ${(err as Error).message}`);
  }
}
