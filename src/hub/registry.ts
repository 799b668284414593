// Pretrained SAEs by SAELens release name and SAE id: where each lives on the hub, its hook,
// the model it reads, and what its files are. Built-in entries cover the common releases;
// users add or override entries with a JSON file ($SAEKIT_RELEASES, or
// ~/.config/saekit/releases.json, or the `registry` option) holding { "<release>": entry }.

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { catalogReleases } from './saelensCatalog.js';

/**
 * How a release's SAE files are laid out (which files to fetch, which reader). The transcoder
 * layouts are SAELens's conversion functions of the same names: gemma_2_transcoder (Gemma Scope
 * params.npz read as a transcoder), mwhanna_transcoder (a layer_N.safetensors file per SAE and
 * W&B/config YAML at the repository root), mntss_clt_layer_transcoder (layer `path` of a
 * cross-layer transcoder: config.yaml, W_enc_<path>.safetensors, W_dec_<path>.safetensors).
 */
export type ReleaseFormat = 'saelens' | 'sparsify' | 'gemma-scope' | 'gemma-scope-transcoder' | 'mwhanna-transcoder' | 'mntss-clt-layer';

export const RELEASE_FORMATS: readonly ReleaseFormat[] = ['saelens', 'sparsify', 'gemma-scope', 'gemma-scope-transcoder', 'mwhanna-transcoder', 'mntss-clt-layer'];

export interface ReleaseSae {
  /** The SAELens sae_id, e.g. "blocks.8.hook_resid_pre" or "layer_12/width_16k/canonical". */
  id: string;
  /** Folder in the repository. */
  path: string;
  /** TransformerLens hook the SAE reads ('' where only its files say, e.g. a CLT's config.yaml). */
  hook_name: string;
  /** Transcoders: the hook it predicts. */
  hook_name_out?: string;
  d_sae?: number;
  /** Gemma Scope "canonical": the average_l0_<n> subfolder of PATH whose n is nearest this. */
  canonical_l0?: number;
}

export interface ReleaseEntry {
  release: string;
  repo_id: string;
  /** TransformerLens / SAELens model name. */
  model: string;
  /** An ONNX export of that model on the hub, for the model side (transformers.js layout). */
  onnx_model?: { repo: string; onnx_file?: string };
  format: ReleaseFormat;
  architecture: string;
  d_in: number;
  d_sae?: number;
  context_size?: number;
  prepend_bos?: boolean;
  saes: ReleaseSae[];
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

const BUILTIN: ReleaseEntry[] = [
  {
    release: 'gpt2-small-res-jb',
    repo_id: 'jbloom/GPT2-Small-SAEs-Reformatted',
    model: 'gpt2-small',
    onnx_model: { repo: 'Xenova/gpt2', onnx_file: 'decoder_model' },
    format: 'saelens',
    architecture: 'standard',
    d_in: 768,
    d_sae: 24576,
    context_size: 128,
    prepend_bos: true,
    saes: [
      ...range(12).map((l) => ({ id: `blocks.${l}.hook_resid_pre`, path: `blocks.${l}.hook_resid_pre`, hook_name: `blocks.${l}.hook_resid_pre`, d_sae: 24576 })),
      { id: 'blocks.11.hook_resid_post', path: 'blocks.11.hook_resid_post', hook_name: 'blocks.11.hook_resid_post', d_sae: 24576 },
    ],
  },
  {
    // EleutherAI's TopK SAEs in sparsify's layout (layers.N = the output of block N).
    release: 'sae-llama-3-8b-32x',
    repo_id: 'EleutherAI/sae-llama-3-8b-32x',
    model: 'meta-llama/Meta-Llama-3-8B',
    format: 'sparsify',
    architecture: 'topk',
    d_in: 4096,
    d_sae: 131072,
    saes: range(32).map((l) => ({ id: `layers.${l}`, path: `layers.${l}`, hook_name: `blocks.${l}.hook_resid_post`, d_sae: 131072 })),
  },
  {
    // Gemma Scope residual SAEs, 16k wide; "canonical" is the L0 nearest 100 per layer.
    release: 'gemma-scope-2b-pt-res-canonical',
    repo_id: 'google/gemma-scope-2b-pt-res',
    model: 'gemma-2-2b',
    format: 'gemma-scope',
    architecture: 'jumprelu',
    d_in: 2304,
    d_sae: 16384,
    context_size: 1024,
    prepend_bos: true,
    saes: range(26).map((l) => ({ id: `layer_${l}/width_16k/canonical`, path: `layer_${l}/width_16k`, hook_name: `blocks.${l}.hook_resid_post`, d_sae: 16384, canonical_l0: 100 })),
  },
];

/**
 * The repository files of the SAE at PATH, by format: each required entry lists alternative
 * names (the first that exists is used, e.g. mwhanna's wandb-config.yaml or its typo
 * wanb-config.yaml, as SAELens tries them); optional files are fetched when present.
 */
export function releaseFiles(format: ReleaseFormat, path: string): { required: string[][]; optional: string[] } {
  const inFolder = (...names: string[]) => names.map((n) => [`${path}/${n}`]);
  if (format === 'saelens') return { required: inFolder('cfg.json', 'sae_weights.safetensors'), optional: [`${path}/sparsity.safetensors`] };
  if (format === 'sparsify') return { required: inFolder('cfg.json', 'sae.safetensors'), optional: [] };
  if (format === 'mwhanna-transcoder') return { required: [['wandb-config.yaml', 'wanb-config.yaml'], [path]], optional: ['config.yaml'] };
  if (format === 'mntss-clt-layer') return { required: [['config.yaml'], [`W_enc_${path}.safetensors`], [`W_dec_${path}.safetensors`]], optional: [] };
  return { required: inFolder('params.npz'), optional: [] };
}

export function userRegistryPath(): string {
  return process.env.SAEKIT_RELEASES ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'saekit', 'releases.json');
}

/** Known ONNX exports (transformers.js layout) of the models SAE releases name. */
const ONNX_MODELS: Record<string, { repo: string; onnx_file?: string }> = {
  'gpt2-small': { repo: 'Xenova/gpt2', onnx_file: 'decoder_model' },
};

/**
 * Every known release: SAELens's catalog releases saekit can read (saelensCatalog.ts), then the
 * built-ins (curated: context size, BOS, widths), then the user's file; a later source
 * overrides an earlier one of the same name.
 */
export function releases(registryFile?: string): Map<string, ReleaseEntry> {
  const all = new Map<string, ReleaseEntry>();
  for (const e of catalogReleases().readable) all.set(e.release, ONNX_MODELS[e.model] ? { ...e, onnx_model: ONNX_MODELS[e.model] } : e);
  for (const e of BUILTIN) all.set(e.release, e);
  const file = registryFile ?? userRegistryPath();
  if (existsSync(file)) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new FormatError(file, `not valid JSON (${(e as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(file, 'must be an object { "<release>": { repo_id, model, format, architecture, d_in, saes: [...] } }');
    for (const [name, raw] of Object.entries(json as Record<string, unknown>)) all.set(name, checkEntry(file, name, raw));
  } else if (registryFile !== undefined) {
    throw new FormatError(registryFile, 'release registry file not found');
  }
  return all;
}

function checkEntry(file: string, name: string, raw: unknown): ReleaseEntry {
  const e = raw as Partial<ReleaseEntry>;
  const bad = (what: string) => new FormatError(file, `release ${JSON.stringify(name)}: ${what}`);
  if (typeof e !== 'object' || e === null) throw bad('must be an object');
  if (typeof e.repo_id !== 'string' || !/^[\w.-]+\/[\w.-]+$/.test(e.repo_id)) throw bad('"repo_id" must be a hub id owner/name');
  if (typeof e.model !== 'string') throw bad('"model" must be a string');
  if (!RELEASE_FORMATS.includes(e.format as ReleaseFormat)) throw bad(`"format" must be one of ${RELEASE_FORMATS.join(', ')}`);
  if (typeof e.architecture !== 'string') throw bad('"architecture" must be a string');
  if (!Number.isInteger(e.d_in)) throw bad('"d_in" must be an integer');
  if (!Array.isArray(e.saes) || e.saes.length === 0) throw bad('"saes" must be a non-empty list');
  for (const [i, s] of e.saes.entries()) {
    if (typeof s?.id !== 'string' || typeof s.path !== 'string' || typeof s.hook_name !== 'string') throw bad(`saes[${i}] needs string id, path and hook_name`);
  }
  return { ...(e as ReleaseEntry), release: name };
}

/** The release entry and SAE for RELEASE / ID, with errors that list what exists. */
export function findSae(release: string, id: string | undefined, registryFile?: string): { entry: ReleaseEntry; sae: ReleaseSae } {
  const all = releases(registryFile);
  const entry = all.get(release);
  if (!entry) throw new ValidationError(`Unknown release ${JSON.stringify(release)}: known releases are ${[...all.keys()].join(', ')} (add your own in ${userRegistryPath()})`);
  if (id === undefined) {
    if (entry.saes.length === 1) return { entry, sae: entry.saes[0]! };
    throw new ValidationError(`Release ${release} has ${entry.saes.length} SAEs: give an id, e.g. ${entry.saes[0]!.id} (saekit list ${release} shows them all)`);
  }
  const sae = entry.saes.find((s) => s.id === id);
  if (!sae) {
    const ids = entry.saes.map((s) => s.id);
    throw new ValidationError(`Release ${release} has no SAE ${JSON.stringify(id)}: its ids are ${ids.length > 8 ? `${ids.slice(0, 8).join(', ')}, ... (${ids.length} in all)` : ids.join(', ')}`);
  }
  return { entry, sae };
}

/** True when NAME is a known release (so a CLI argument can be a folder or a release). */
export function isRelease(name: string, registryFile?: string): boolean {
  try {
    return releases(registryFile).has(name);
  } catch {
    return false;
  }
}
