// saekit convert: any SAE folder saekit can load (sparsify hookpoints, Gemma Scope params.npz,
// Gemma Scope 2 params.safetensors, SAELens directories) written as a SAELens v6 directory,
// checked against the schema of what SAELens reads (saeLensCfgSchema.ts) once written.
//
// What the sources do not say is inferred the way SAELens's own loaders infer it
// (sae_lens/loading/pretrained_sae_loaders.py, 6.18.0), and every inference is recorded in
// the output's metadata (saekit_convert_notes) so nobody mistakes it for a recorded fact:
// - sparsify names a folder after the module it hooked. SAELens's get_sparsify_config_from_disk
//   maps layers.N (or layers_N) to blocks.N.hook_resid_post (the output of block N) and
//   embed_tokens to hook_embed; the model, dataset and context come from the run folder's
//   config.json (model, dataset, ctx_len). saekit does the same. A transcoder's layers.N.mlp is
//   taken as blocks.N.ln2.hook_normalized -> blocks.N.hook_mlp_out (the MLP's input and output).
//   Whether blocks.N.hook_resid_post is the right TransformerLens name depends on the model's
//   wrapping (sparsify hooks Hugging Face modules, not TransformerLens hook points): unverified.
// - Gemma Scope's params.npz records neither model nor hook. As get_gemma_2_config_from_hf, they
//   come from the repository name in the path (gemma-scope-2b-pt-res etc.: model and site) and
//   layer_N in the folder; context 1024, BOS, monology/pile-uncopyrighted. A -transcoders
//   repository is read as a jumprelu_transcoder (gemma_2_transcoder). No repository name in the
//   path: no hook is written (give --hook-name).
// sparsify TopK -> SAELens topk (apply_b_dec_to_input true); Gemma Scope -> jumprelu
// (apply_b_dec_to_input false); TopK transcoders keep saekit's topk_transcoder names, which
// SAELens cannot load (the result says so).

import { readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { SaeFormat, SaeWeights } from '../types.js';
import { FormatError, SaekitError, ValidationError, describe } from '../errors.js';
import { tempPathFor } from './fileIo.js';
import { readSaeDir } from './saeDir.js';
import { readGemmaScopeTranscoder } from './gemmaScopeTranscoder.js';
import { SAELENS_CFG, SAELENS_SPARSITY } from './saeLens.js';
import { checkSaeLensDir } from './saeLensCfgSchema.js';
import { SafetensorsReader } from './safetensors.js';
import { saveSaeLens, type SaveDtype } from './saveSaeLens.js';
import { optionalCount, optionalString, readJsonObject } from './saeTensors.js';
import { SPARSIFY_WEIGHTS } from './sparsify.js';

export interface ConvertOptions {
  /** On-disk dtype (default: the source's when float32/float16/bfloat16, else float32: lossless). */
  dtype?: SaveDtype;
  /** Override or supply metadata.hook_name. */
  hookName?: string;
  /** Override or supply metadata.hook_name_out (transcoders). */
  hookNameOut?: string;
  /** Override or supply metadata.model_name. */
  modelName?: string;
}

export interface ConvertResult {
  output: string;
  /** The source's format as saekit read it. */
  from: SaeFormat;
  /** cfg.json architecture written. */
  architecture: string;
  dtype: SaveDtype;
  /** False for saekit's topk_transcoder names (SAELens has no TopK transcoder). */
  loadable: boolean;
  /** What was inferred rather than read, and any caveat. */
  notes: string[];
}

const SAVE_DTYPES: readonly string[] = ['float32', 'float16', 'bfloat16'];

async function pathKind(path: string): Promise<'absent' | 'empty' | 'nonempty' | 'file'> {
  try {
    const s = await stat(path);
    if (!s.isDirectory()) return 'file';
    return (await readdir(path)).length === 0 ? 'empty' : 'nonempty';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  return (await pathKind(path)) !== 'absent';
}

/** sparsify's hookpoint folder name -> TransformerLens hook names, as SAELens's sparsify loader maps them. */
function sparsifyHooks(hookpoint: string, transcoder: boolean): { hookName: string; hookNameOut?: string } | undefined {
  if (hookpoint === 'embed_tokens') return { hookName: 'hook_embed' };
  const mlp = /^layers[._](\d+)\.mlp$/.exec(hookpoint);
  if (mlp && transcoder) return { hookName: `blocks.${mlp[1]}.ln2.hook_normalized`, hookNameOut: `blocks.${mlp[1]}.hook_mlp_out` };
  const layer = /^layers[._](\d+)$/.exec(hookpoint);
  if (layer) return { hookName: `blocks.${layer[1]}.hook_resid_post` };
  return undefined;
}

async function sparsifyMetadata(src: string, w: SaeWeights, notes: string[]): Promise<void> {
  const c = w.config;
  const hookpoint = c.hookName ?? '';
  const hookDir = (await exists(join(src, SPARSIFY_WEIGHTS))) ? src : join(src, hookpoint);
  c.metadata['sparsify_hookpoint'] = hookpoint;
  delete c.hookName;
  const hooks = sparsifyHooks(hookpoint, c.dOut !== undefined);
  if (hooks) {
    c.hookName = hooks.hookName;
    if (hooks.hookNameOut !== undefined) c.hookNameOut = hooks.hookNameOut;
    notes.push(`hook_name ${hooks.hookName}${hooks.hookNameOut ? ` -> ${hooks.hookNameOut}` : ''} inferred from the sparsify hookpoint '${hookpoint}' (SAELens's sparsify loader maps layers.N to blocks.N.hook_resid_post; unverified for this model)`);
  } else {
    notes.push(`no hook_name: the sparsify hookpoint '${hookpoint}' has no known TransformerLens name (give --hook-name)`);
  }
  // The run folder's config.json (sparsify's TrainConfig): model, dataset, ctx_len.
  const runCfg = join(dirname(hookDir), 'config.json');
  if (await exists(runCfg)) {
    const cfg = await readJsonObject(runCfg);
    const model = optionalString(cfg, 'model');
    const dataset = optionalString(cfg, 'dataset');
    const ctx = optionalCount(runCfg, cfg, 'ctx_len');
    if (model !== undefined) c.modelName = model;
    if (dataset !== undefined) c.metadata['dataset_path'] = dataset;
    if (ctx !== undefined) c.metadata['context_size'] = ctx;
  }
}

const GEMMA_SCOPE_REPO = /gemma[-_]scope[-_](2b|9b|27b)[-_](pt|it)[-_](res|mlp|att|transcoders)/i;

/** Gemma Scope 1 (params.npz): model and hook from the repository name and layer_N in the path. */
function gemmaScopeMetadata(src: string, w: SaeWeights, notes: string[]): void {
  const full = resolve(src);
  const repo = GEMMA_SCOPE_REPO.exec(full);
  if (!repo) {
    notes.push('no hook_name or model_name: params.npz records neither, and the path names no Gemma Scope repository (gemma-scope-2b-pt-res etc.; give --hook-name, --model-name)');
    return;
  }
  const c = w.config;
  c.modelName = gemmaModel(repo);
  const site = repo[3]!.toLowerCase();
  const layerMatch = /layer_(\d+)/.exec(full);
  const embedding = /embedding/.test(full);
  if (layerMatch === null && !embedding) {
    notes.push(`model ${c.modelName} from the path; no hook_name: no layer_N in the path (give --hook-name)`);
    return;
  }
  const L = layerMatch?.[1] ?? '0';
  if (site === 'res') c.hookName = embedding ? 'hook_embed' : `blocks.${L}.hook_resid_post`;
  else if (site === 'mlp') c.hookName = `blocks.${L}.hook_mlp_out`;
  else {
    c.hookName = `blocks.${L}.attn.hook_z`;
    c.metadata['reshape_activations'] = 'hook_z';
  }
  Object.assign(c.metadata, { context_size: 1024, prepend_bos: true, dataset_path: 'monology/pile-uncopyrighted' });
  notes.push(`model ${c.modelName} and hook ${c.hookName} inferred from the path (repository ${repo[0]}, layer ${L}), with Gemma Scope's context 1024, BOS and dataset, as SAELens's get_gemma_2_config_from_hf`);
}

function gemmaModel(repo: RegExpExecArray): string {
  return `gemma-2-${repo[1]!.toLowerCase()}${repo[2]!.toLowerCase() === 'it' ? '-it' : ''}`;
}

/**
 * A Gemma Scope transcoder (a -transcoders repository in the path, params.npz in the folder):
 * read as SAELens's gemma_2_transcoder reads it, array name aliases included. Else undefined.
 */
export async function readGemmaScopeTranscoderAt(src: string, notes: string[] = []): Promise<SaeWeights | undefined> {
  const full = resolve(src);
  const repo = GEMMA_SCOPE_REPO.exec(full);
  if (!repo || repo[3]!.toLowerCase() !== 'transcoders') return undefined;
  const npz = full.endsWith('.npz') ? full : join(full, 'params.npz');
  if (!(await exists(npz))) return undefined;
  const t = await readGemmaScopeTranscoder(npz, { path: full, modelName: gemmaModel(repo) });
  notes.push(`read as a Gemma Scope transcoder (${t.config.hookName} -> ${t.config.hookNameOut}) from the repository name in the path, as SAELens's gemma_2_transcoder`);
  return t;
}

async function readSparsity(src: string, dSae: number): Promise<Float32Array | undefined> {
  const file = join(src, SAELENS_SPARSITY);
  if (!(await exists(file))) return undefined;
  const reader = await SafetensorsReader.open(file);
  try {
    const info = reader.tensors.get('sparsity');
    if (!info || info.shape.length !== 1 || info.shape[0] !== dSae) throw new FormatError(file, `expected a tensor 'sparsity' [${dSae}]`);
    return await reader.readFloat32('sparsity');
  } finally {
    await reader.close();
  }
}

/**
 * Converts the SAE at `src` (any folder readSaeDir loads) into a SAELens v6 directory at `out`.
 * `out` must not exist or be an empty directory; the directory appears whole or not at all
 * (written beside it, then renamed). The written directory is checked against
 * saeLensCfgSchema before this returns.
 */
export async function convertToSaeLens(src: string, out: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  if (opts.dtype !== undefined && !SAVE_DTYPES.includes(opts.dtype)) throw new ValidationError(`Expected float32, float16 or bfloat16 for dtype but received ${describe(opts.dtype)}`);
  const kind = await pathKind(out);
  if (kind === 'file') throw new ValidationError(`Expected a new directory for the output but received ${describe(out)}, which is a file`);
  if (kind === 'nonempty') throw new ValidationError(`Expected a new or empty directory for the output but received ${describe(out)}, which is not empty (refusing to overwrite)`);
  if (resolve(src) === resolve(out)) throw new ValidationError(`Expected an output other than the source but received ${describe(out)}`);

  const notes: string[] = [];
  const w = (await readGemmaScopeTranscoderAt(src, notes)) ?? (await readSaeDir(src));
  const from = w.config.format;
  if (from === 'sparsify') await sparsifyMetadata(src, w, notes);
  else if (from === 'gemmascope' && w.config.dOut === undefined) gemmaScopeMetadata(src, w, notes);
  if (w.config.metadata['gated_folded'] !== undefined) notes.push('a gated SAE, written as the equivalent jumprelu (saekit folds gated at load)');
  const c = w.config;
  if (opts.hookName !== undefined) c.hookName = opts.hookName;
  if (opts.hookNameOut !== undefined) c.hookNameOut = opts.hookNameOut;
  if (opts.modelName !== undefined) c.modelName = opts.modelName;
  c.metadata['saekit_converted_from'] = `${from}: ${resolve(src)}`;
  if (notes.length > 0) c.metadata['saekit_convert_notes'] = [...notes];

  const dtype: SaveDtype = opts.dtype ?? (SAVE_DTYPES.includes(c.dtype) ? (c.dtype as SaveDtype) : 'float32');
  const srcDir = (await pathKind(src)) === 'file' ? dirname(src) : src;
  const sparsity = from === 'saelens' && (await exists(join(srcDir, SAELENS_CFG))) ? await readSparsity(srcDir, c.dSae) : undefined;

  // Written and schema-checked in a staging folder beside OUT, then renamed into place: a
  // directory that fails the check (e.g. a source's mistyped metadata) never appears at OUT.
  const staging = tempPathFor(out);
  let report: Awaited<ReturnType<typeof checkSaeLensDir>>;
  try {
    await saveSaeLens(staging, w, { dtype, ...(sparsity && { sparsity }) });
    report = await checkSaeLensDir(staging, { allowSaekitOnly: true });
    if (kind === 'empty') await rmdir(out);
    await rename(staging, out);
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    if (e instanceof SaekitError && e.message.includes(staging)) throw new ValidationError(e.message.split(staging).join(out));
    throw e;
  }
  if (!report.loadable) notes.push(`${report.architecture} is not SAELens-loadable: ${report.note}`);
  return { output: out, from, architecture: report.architecture, dtype, loadable: report.loadable, notes };
}

