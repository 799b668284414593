// SAELens's own release list (sae_lens/pretrained_saes.yaml, converted by
// scripts/convert-saelens-releases.mjs into data/saelens-releases.json.gz: facts only), and
// which of its releases saekit can read. A release is readable when its files are a layout
// saekit has a reader for: a SAELens directory per SAE (conversion_func null: cfg.json says
// hook, architecture and shapes) or Gemma Scope 1's params.npz (gemma_2: the config follows
// from the repository and the path, as SAELens' loader infers it). The others are listed with
// the reason they cannot be read.

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
  mwhanna_transcoder: 'transcoders: not supported yet',
  gemma_2_transcoder: 'transcoders: not supported yet',
  mntss_clt_layer_transcoder: 'cross-layer transcoders: not supported yet',
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
  return { reason: UNREADABLE[r.conversion_func] ?? `conversion ${r.conversion_func}: no reader` };
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
