// SAELens's own release list (sae_lens/pretrained_saes.yaml, converted by
// scripts/convert-saelens-releases.mjs into data/saelens-releases.json.gz: facts only), and
// which of its releases saekit can read. A release is readable when its files are a layout
// saekit has a reader for: a SAELens directory per SAE (conversion_func null: cfg.json says
// hook, architecture and shapes) or Gemma Scope 1's params.npz (gemma_2: the config follows
// from the repository and the path, as SAELens' loader infers it), and the transcoders
// (gemma_2_transcoder, mwhanna_transcoder, mntss_clt_layer_transcoder: see registry.ts's
// ReleaseFormat). The others are listed with the reason they cannot be read.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { FormatError } from '../errors.js';
import type { ReleaseEntry, ReleaseSae } from './registry.js';

export interface CatalogSae {
  id: string;
  path: string;
  l0?: number | string;
  neuronpedia?: string;
}

export interface CatalogRelease {
  repo_id: string;
  model: string;
  conversion_func: string | null;
  saes: CatalogSae[];
}

interface CatalogFile {
  source: string;
  releases: number;
  saes: number;
  data: Record<string, CatalogRelease>;
}

const CATALOG = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'data', 'saelens-releases.json.gz');

let cached: CatalogFile | undefined;

/** The catalog (read once). */
export function saelensCatalog(): CatalogFile {
  if (cached) return cached;
  if (!existsSync(CATALOG)) throw new FormatError(CATALOG, 'the SAELens release catalog is missing from this install');
  try {
    cached = JSON.parse(gunzipSync(readFileSync(CATALOG)).toString('utf8')) as CatalogFile;
  } catch (e) {
    throw new FormatError(CATALOG, `cannot read the SAELens release catalog (${(e as Error).message})`);
  }
  return cached;
}

/** Why saekit cannot read a conversion_func's files (undefined: it can). */
const UNREADABLE: Record<string, string> = {
  gemma_3: 'Gemma Scope 2 layout (params.safetensors, transcoders, CLTs): no reader yet',
  dictionary_learning_1: "dictionary_learning's ae.pt is a torch pickle: saekit reads safetensors and .npz",
  llama_scope: 'Llama Scope layout (hyperparams.json + checkpoints/final.safetensors): no reader yet',
  llama_scope_r1_distill: 'Llama Scope R1 layout (log_jumprelu_threshold): no reader yet',
  connor_rob_hook_z: 'a torch .pt pickle: saekit reads safetensors and .npz',
  goodfire: 'a torch .pt pickle: saekit reads safetensors and .npz',
  deepseek_r1: 'a torch .pt pickle: saekit reads safetensors and .npz',
  temporal: 'temporal SAEs (attention inside the SAE): not an architecture saekit runs',
};

/** Gemma 2 widths, from the model name: d_model and attention z width (heads x head_dim). */
const GEMMA2: Record<string, { d: number; z: number }> = { '2b': { d: 2304, z: 2048 }, '9b': { d: 3584, z: 4096 }, '27b': { d: 4608, z: 4096 } };

/**
 * The registry entry for a catalog release, or why it cannot be read. Gemma Scope 1:
 * res -> blocks.L.hook_resid_post, mlp -> blocks.L.hook_mlp_out, att -> blocks.L.attn.hook_z;
 * width_16k -> d_sae 16384, width_131k -> 131072; embedding SAEs are left out (SAELens rescales them by sqrt(d_in),
 * which saekit does not).
 */
export function catalogEntry(release: string, r: CatalogRelease): { entry?: ReleaseEntry; reason?: string } {
  if (r.conversion_func === null) {
    const saes: ReleaseSae[] = r.saes.map((s) => ({ id: s.id, path: s.path, hook_name: /^blocks\.\d+\.hook_[a-z_]+$/.test(s.id) ? s.id : '' }));
    return { entry: { release, repo_id: r.repo_id, model: r.model, format: 'saelens', architecture: 'cfg.json', d_in: 0, saes } };
  }
  if (r.conversion_func === 'gemma_2') {
    const m = /gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att)$/.exec(r.repo_id);
    if (!m) return { reason: `Gemma Scope repository ${r.repo_id} of an unknown kind` };
    const size = GEMMA2[m[1]!]!;
    const kind = m[3]!;
    const saes: ReleaseSae[] = [];
    for (const s of r.saes) {
      const p = /^layer_(\d+)\/width_(\d+)(k|m)\//.exec(s.path);
      if (!p) continue; // embedding/...: rescaled by SAELens, not read here
      const layer = Number(p[1]);
      const hook = kind === 'res' ? `blocks.${layer}.hook_resid_post` : kind === 'mlp' ? `blocks.${layer}.hook_mlp_out` : `blocks.${layer}.attn.hook_z`;
      // width_16k is 16384, width_131k 131072, width_1m 2^20: the nearest power of two.
      const dSae = 2 ** Math.round(Math.log2(Number(p[2]) * (p[3] === 'k' ? 1e3 : 1e6)));
      saes.push({ id: s.id, path: s.path, hook_name: hook, d_sae: dSae });
    }
    if (saes.length === 0) return { reason: 'only embedding SAEs (SAELens rescales them by sqrt(d_in)): not read' };
    return {
      entry: { release, repo_id: r.repo_id, model: r.model, format: 'gemma-scope', architecture: 'jumprelu', d_in: kind === 'att' ? size.z : size.d, context_size: 1024, prepend_bos: true, saes },
    };
  }
  if (r.conversion_func === 'gemma_2_transcoder') return gemmaScopeTranscoders(release, r);
  if (r.conversion_func === 'mwhanna_transcoder') {
    // layer_N.safetensors: N after the last "_" (SAELens's parse); d_in comes from wandb-config.yaml.
    const saes: ReleaseSae[] = [];
    for (const s of r.saes) {
      const n = /_(\d+)\.safetensors$/.exec(s.path)?.[1];
      if (n !== undefined) saes.push({ id: s.id, path: s.path, hook_name: `blocks.${n}.mlp.hook_in`, hook_name_out: `blocks.${n}.hook_mlp_out` });
    }
    if (saes.length === 0) return { reason: 'no layer_N.safetensors paths' };
    return { entry: { release, repo_id: r.repo_id, model: r.model, format: 'mwhanna-transcoder', architecture: 'transcoder', d_in: 0, saes } };
  }
  if (r.conversion_func === 'mntss_clt_layer_transcoder') {
    // path is the layer; the hooks are in the repository's config.yaml (feature_input_hook/feature_output_hook).
    const saes: ReleaseSae[] = r.saes.filter((s) => /^\d+$/.test(String(s.path))).map((s) => ({ id: s.id, path: String(s.path), hook_name: '' }));
    if (saes.length === 0) return { reason: 'no layer numbers as paths' };
    return { entry: { release, repo_id: r.repo_id, model: r.model, format: 'mntss-clt-layer', architecture: 'transcoder (one layer of a cross-layer transcoder)', d_in: 0, saes } };
  }
  return { reason: UNREADABLE[r.conversion_func] ?? `conversion ${r.conversion_func}: no reader` };
}

/** SAELens's Gemma Scope transcoder widths (get_gemma_2_transcoder_config_from_hf), else width_<n>k = n * 1024 as it falls back. */
const TRANSCODER_WIDTHS: Readonly<Record<string, number>> = { '4k': 4096, '16k': 16384, '65k': 65536, '262k': 262144, '524k': 524288, '1m': 1048576 };

/** Gemma Scope transcoders: blocks.L.ln2.hook_normalized -> blocks.L.hook_mlp_out; d_in from the model in the repository name. */
function gemmaScopeTranscoders(release: string, r: CatalogRelease): { entry?: ReleaseEntry; reason?: string } {
  const m = /(2b|9b|27b)/.exec(r.repo_id);
  if (!m) return { reason: `Gemma Scope transcoder repository ${r.repo_id} of an unknown model` };
  const saes: ReleaseSae[] = [];
  for (const s of r.saes) {
    const layer = /layer_(\d+)/.exec(s.path)?.[1];
    const width = /width_(\d+[km])/.exec(s.path)?.[1];
    if (layer === undefined) continue;
    const dSae = width === undefined ? undefined : (TRANSCODER_WIDTHS[width] ?? (width.endsWith('k') ? Number(width.slice(0, -1)) * 1024 : undefined));
    saes.push({ id: s.id, path: s.path, hook_name: `blocks.${layer}.ln2.hook_normalized`, hook_name_out: `blocks.${layer}.hook_mlp_out`, ...(dSae !== undefined && { d_sae: dSae }) });
  }
  if (saes.length === 0) return { reason: 'no layer_N folders' };
  return {
    entry: { release, repo_id: r.repo_id, model: r.model, format: 'gemma-scope-transcoder', architecture: 'jumprelu_transcoder', d_in: GEMMA2[m[1]!]!.d, context_size: 1024, prepend_bos: true, saes },
  };
}

let split: ReturnType<typeof catalogReleases> | undefined;

/** Every catalog release: readable ones as registry entries, the rest with their reason (computed once). */
export function catalogReleases(): { readable: ReleaseEntry[]; unreadable: { release: string; model: string; conversion_func: string | null; saes: number; reason: string }[] } {
  if (split) return split;
  const readable: ReleaseEntry[] = [];
  const unreadable: { release: string; model: string; conversion_func: string | null; saes: number; reason: string }[] = [];
  for (const [name, r] of Object.entries(saelensCatalog().data)) {
    const { entry, reason } = catalogEntry(name, r);
    if (entry) readable.push(entry);
    else unreadable.push({ release: name, model: r.model, conversion_func: r.conversion_func, saes: r.saes.length, reason: reason! });
  }
  split = { readable, unreadable };
  return split;
}
