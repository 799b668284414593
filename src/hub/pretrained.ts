// Pulling a pretrained SAE by release and id into the hub cache, and loading it with the
// release's hook, model and tokenization settings filled in where its own files lack them
// (Gemma Scope's params.npz carries no metadata at all).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FormatError } from '../errors.js';
import { readSaeDir } from '../formats/saeDir.js';
import { createSae, type LoadOptions, type Sae } from '../sae.js';
import { hubCacheDir, hubFile, hubListFiles, hubOffline, type HubOptions } from './hub.js';
import { findSae, releaseFiles, type ReleaseEntry, type ReleaseSae } from './registry.js';

export interface PullOptions extends HubOptions {
  /** A release registry JSON file to use instead of the user's default. */
  registry?: string;
}

export interface PulledSae {
  entry: ReleaseEntry;
  sae: ReleaseSae;
  /** The local SAE folder (a snapshot folder in the hub cache). */
  dir: string;
  /** The repository folder the files came from (differs from sae.path for Gemma Scope canonical ids). */
  path: string;
}

/** Downloads (or finds in the cache) the files of RELEASE's SAE ID; returns its local folder. */
export async function pullSae(release: string, id: string | undefined, o: PullOptions = {}): Promise<PulledSae> {
  const { entry, sae } = findSae(release, id, o.registry);
  const path = sae.canonical_l0 !== undefined ? await canonicalPath(entry, sae, o) : sae.path;
  const { required, optional } = releaseFiles(entry.format);
  let dir = '';
  for (const f of required) dir = dirname(await hubFile(entry.repo_id, `${path}/${f}`, o));
  for (const f of optional) {
    try {
      await hubFile(entry.repo_id, `${path}/${f}`, o);
    } catch (e) {
      // Optional files (sparsity) may not exist in every folder; anything but a miss is an error.
      if (!/404|not in the cache/.test((e as Error).message)) throw e;
    }
  }
  return { entry, sae, dir, path };
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
export async function loadPretrainedSae(release: string, id: string | undefined, o: PullOptions & LoadOptions = {}): Promise<{ sae: Sae; pulled: PulledSae }> {
  const pulled = await pullSae(release, id, o);
  const weights = await readSaeDir(pulled.dir);
  const c = weights.config;
  if (pulled.sae.hook_name !== '') c.hookName ??= pulled.sae.hook_name;
  c.modelName ??= pulled.entry.model;
  c.metadata = {
    ...c.metadata,
    release: pulled.entry.release,
    sae_id: pulled.sae.id,
    ...(c.metadata.prepend_bos === undefined && pulled.entry.prepend_bos !== undefined && { prepend_bos: pulled.entry.prepend_bos }),
    ...(c.metadata.context_size === undefined && pulled.entry.context_size !== undefined && { context_size: pulled.entry.context_size }),
  };
  const sae = await createSae(weights, o.device !== undefined ? { device: o.device } : {});
  return { sae, pulled };
}
