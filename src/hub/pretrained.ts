// Pulling a pretrained SAE by release and id into the hub cache, and loading it with the
// release's hook, model and tokenization settings filled in where its own files lack them
// (Gemma Scope's params.npz carries no metadata at all). Transcoder releases whose files are
// not one folder per SAE (mwhanna's layer files, a CLT layer's encoder/decoder pair, both with
// YAML at the repository root) are read by their own readers (readPretrainedWeights).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { checkCltTarget, type ReadOptions } from '../formats/cltDecoder.js';
import { readCltLayer } from '../formats/cltLayer.js';
import { readGemmaScopeTranscoder } from '../formats/gemmaScopeTranscoder.js';
import { readMwhannaTranscoder } from '../formats/mwhannaTranscoder.js';
import { readSaeDir } from '../formats/saeDir.js';
import { createSae, type LoadOptions, type Sae } from '../sae.js';
import type { SaeWeights } from '../types.js';
import { hubCacheDir, hubFile, hubListFiles, hubOffline, type HubOptions } from './hub.js';
import { findSae, releaseFiles, type ReleaseEntry, type ReleaseSae } from './registry.js';

export interface PullOptions extends HubOptions {
  /** A release registry JSON file to use instead of the user's default. */
  registry?: string;
}

export interface PulledSae {
  entry: ReleaseEntry;
  sae: ReleaseSae;
  /** The local SAE folder (a snapshot folder in the hub cache; for layouts of files at the repository root, that root). */
  dir: string;
  /** The repository folder the files came from (differs from sae.path for Gemma Scope canonical ids). */
  path: string;
  /** Local path of every file fetched, by its path in the repository (the alternative that existed, for required ones). */
  files: Record<string, string>;
}

/** A miss (the hub's 404, or offline and not cached), as opposed to a failure worth reporting. */
const isMiss = (e: unknown) => /404|not in the cache/.test((e as Error).message);

/** Downloads (or finds in the cache) the files of RELEASE's SAE ID; returns its local folder. */
export async function pullSae(release: string, id: string | undefined, o: PullOptions = {}): Promise<PulledSae> {
  const { entry, sae } = findSae(release, id, o.registry);
  const path = sae.canonical_l0 !== undefined ? await canonicalPath(entry, sae, o) : sae.path;
  const { required, optional } = releaseFiles(entry.format, path);
  const files: Record<string, string> = {};
  let dir = '';
  for (const names of required) {
    // Alternatives are tried in order (mwhanna's wandb-config.yaml, then its typo wanb-config.yaml).
    for (const [i, f] of names.entries()) {
      try {
        files[f] = await hubFile(entry.repo_id, f, o);
        break;
      } catch (e) {
        if (i === names.length - 1 || !isMiss(e)) {
          if (names.length > 1 && isMiss(e)) throw new FormatError(`${entry.repo_id}/${names.join(' | ')}`, `none of ${names.join(', ')} exists (${(e as Error).message})`);
          throw e;
        }
      }
    }
    if (dir === '') dir = dirname(files[names.find((f) => files[f] !== undefined)!]!);
  }
  for (const f of optional) {
    try {
      files[f] = await hubFile(entry.repo_id, f, o);
    } catch (e) {
      // Optional files (sparsity, mwhanna's config.yaml) may not exist; anything but a miss is an error.
      if (!isMiss(e)) throw e;
    }
  }
  return { entry, sae, dir, path, files };
}

/**
 * The weights of a pulled SAE, read by its release's format, with hook, model and context from
 * the registry where the files lack them. options.cltTarget picks a cross-layer transcoder's
 * decoder (default 'sum', as SAELens); it is refused for anything else.
 */
export async function readPretrainedWeights(pulled: PulledSae, options: ReadOptions = {}): Promise<SaeWeights> {
  const cltTarget = checkCltTarget(options.cltTarget);
  const { entry, path, files } = pulled;
  const file = (...names: string[]) => files[names.find((n) => files[n] !== undefined) ?? names[0]!];
  let weights: SaeWeights;
  if (entry.format === 'gemma-scope-transcoder') {
    weights = await readGemmaScopeTranscoder(file(`${path}/params.npz`)!, { path, modelName: entry.model });
  } else if (entry.format === 'mwhanna-transcoder') {
    const base = file('config.yaml');
    weights = await readMwhannaTranscoder({ weights: file(path)!, wandbConfig: file('wandb-config.yaml', 'wanb-config.yaml')!, ...(base !== undefined && { baseConfig: base }), repoId: entry.repo_id });
  } else if (entry.format === 'mntss-clt-layer') {
    if (!/^\d+$/.test(path)) throw new FormatError(`${entry.repo_id}/${path}`, 'a cross-layer transcoder layer is named by its layer number');
    weights = await readCltLayer({ config: file('config.yaml')!, encoder: file(`W_enc_${path}.safetensors`)!, decoder: file(`W_dec_${path}.safetensors`)!, layer: Number(path) }, cltTarget);
  } else {
    weights = await readSaeDir(pulled.dir, { cltTarget });
  }
  if (options.cltTarget !== undefined && weights.config.metadata['clt_target'] === undefined) {
    throw new ValidationError(`cltTarget ${JSON.stringify(options.cltTarget)} is for cross-layer transcoders, and ${entry.release} ${pulled.sae.id} is not one`);
  }
  const c = weights.config;
  if (pulled.sae.hook_name !== '') c.hookName ??= pulled.sae.hook_name;
  if (pulled.sae.hook_name_out !== undefined && c.dOut !== undefined) c.hookNameOut ??= pulled.sae.hook_name_out;
  c.modelName ??= entry.model;
  c.metadata = {
    ...c.metadata,
    release: entry.release,
    sae_id: pulled.sae.id,
    ...(c.metadata.prepend_bos === undefined && entry.prepend_bos !== undefined && { prepend_bos: entry.prepend_bos }),
    ...(c.metadata.context_size === undefined && entry.context_size !== undefined && { context_size: entry.context_size }),
  };
  return weights;
}

/**
 * Gemma Scope's canonical SAE of a layer: the average_l0_<n> folder with n nearest the
 * target. Online it lists the folder on the hub; offline it looks at what the cache holds.
 */
async function canonicalPath(entry: ReleaseEntry, sae: ReleaseSae, o: PullOptions): Promise<string> {
  let names: string[];
  if (hubOffline(o)) {
    const snapshots = join(hubCacheDir(o), `models--${entry.repo_id.replace('/', '--')}`, 'snapshots');
    const { readdirSync } = await import('node:fs');
    names = [];
    if (existsSync(snapshots)) {
      for (const c of readdirSync(snapshots)) {
        const d = join(snapshots, c, sae.path);
        if (existsSync(d)) names.push(...readdirSync(d));
      }
    }
    if (names.length === 0) throw new FormatError(snapshots, `${entry.release} ${sae.id} is not in the cache and offline mode is on`);
  } else {
    names = (await hubListFiles(entry.repo_id, sae.path, o)).filter((e) => e.type === 'directory').map((e) => e.path.split('/').pop()!);
  }
  let best: { name: string; d: number } | undefined;
  for (const name of names) {
    const m = /^average_l0_(\d+)$/.exec(name);
    if (!m) continue;
    const d = Math.abs(Number(m[1]) - sae.canonical_l0!);
    if (!best || d < best.d || (d === best.d && name < best.name)) best = { name, d };
  }
  if (!best) throw new FormatError(`${entry.repo_id}/${sae.path}`, 'holds no average_l0_<n> folders to pick the canonical SAE from');
  return `${sae.path}/${best.name}`;
}

/** Loads RELEASE's SAE ID, pulling it first when needed; hook, model and context come from the registry when the files lack them. */
export async function loadPretrainedSae(release: string, id: string | undefined, o: PullOptions & LoadOptions & ReadOptions = {}): Promise<{ sae: Sae; pulled: PulledSae }> {
  checkCltTarget(o.cltTarget); // before any download
  const pulled = await pullSae(release, id, o);
  const weights = await readPretrainedWeights(pulled, o.cltTarget !== undefined ? { cltTarget: o.cltTarget } : {});
  const sae = await createSae(weights, o.device !== undefined ? { device: o.device } : {});
  return { sae, pulled };
}
