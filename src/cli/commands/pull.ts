// `saekit pull RELEASE [--id ID]`: fetches a pretrained SAE (every SAE of the release without
// --id) into the Hugging Face hub cache; `saekit list [RELEASE]`: what is known and cached.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../errors.js';
import { hubCacheDir } from '../../hub/hub.js';
import { pullSae } from '../../hub/pretrained.js';
import { findSae, releases, userRegistryPath, type ReleaseEntry, type ReleaseSae } from '../../hub/registry.js';
import { parse } from '../args.js';
import { downloadProgress } from '../progress.js';

export const pullUsage = 'saekit pull RELEASE [--id ID] [--registry FILE] [--offline]';
export const listUsage = 'saekit list [RELEASE] [--registry FILE] [--json]';

export async function pullCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { id: { type: 'string' }, registry: { type: 'string' }, offline: { type: 'boolean' } }, true);
  if (positionals.length !== 1) throw new UsageError('give one release name (saekit list shows them)');
  const release = positionals[0]!;
  const registry = values.registry as string | undefined;
  const ids = values.id !== undefined ? [values.id as string] : [...(releases(registry).get(release)?.saes.map((s) => s.id) ?? [])];
  if (ids.length === 0) findSae(release, undefined, registry); // throws the unknown-release error
  const bar = downloadProgress();
  try {
    for (const id of ids) {
      const p = await pullSae(release, id, { ...(registry !== undefined && { registry }), ...(values.offline === true && { offline: true }), onProgress: bar.update });
      bar.stop();
      process.stdout.write(`${release} ${id} -> ${p.dir}\n`);
    }
  } finally {
    bar.stop();
  }
  return 0;
}

/** Whether SAE's files are in the cache (any snapshot). */
function cached(entry: ReleaseEntry, sae: ReleaseSae): boolean {
  const snapshots = join(hubCacheDir(), `models--${entry.repo_id.replace('/', '--')}`, 'snapshots');
  if (!existsSync(snapshots)) return false;
  return readdirSync(snapshots).some((c) => existsSync(join(snapshots, c, sae.path)));
}

export async function listCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { registry: { type: 'string' }, json: { type: 'boolean' } }, true);
  const all = releases(values.registry as string | undefined);
  const say = (s: string) => process.stdout.write(`${s}\n`);
  if (positionals.length > 1) throw new UsageError('give at most one release name');
  if (positionals.length === 1) {
    const { entry } = findSae(positionals[0]!, entry0(all, positionals[0]!), values.registry as string | undefined);
    const rows = entry.saes.map((s) => ({ id: s.id, hook_name: s.hook_name, path: s.path, d_sae: s.d_sae ?? entry.d_sae, cached: cached(entry, s) }));
    if (values.json) say(JSON.stringify({ ...entry, saes: rows }, null, 2));
    else {
      say(`${entry.release}: ${entry.repo_id} (${entry.format}), model ${entry.model}${entry.onnx_model ? ` (ONNX ${entry.onnx_model.repo})` : ''}, ${entry.architecture}, d_in ${entry.d_in}`);
      for (const r of rows) say(`  ${r.cached ? '*' : ' '} ${r.id.padEnd(34)} ${r.hook_name.padEnd(28)} d_sae ${r.d_sae ?? '?'}`);
      say(`  (* = in the cache ${hubCacheDir()})`);
    }
    return 0;
  }
  const rows = [...all.values()].map((e) => ({ release: e.release, repo_id: e.repo_id, model: e.model, architecture: e.architecture, saes: e.saes.length, cached: e.saes.filter((s) => cached(e, s)).length }));
  if (values.json) say(JSON.stringify(rows, null, 2));
  else {
    for (const r of rows) say(`${r.release.padEnd(34)} ${r.model.padEnd(28)} ${r.architecture.padEnd(9)} ${String(r.saes).padStart(3)} SAEs, ${r.cached} cached  (${r.repo_id})`);
    say(`add releases in ${userRegistryPath()} (JSON: { "<release>": { repo_id, model, format, architecture, d_in, saes: [{ id, path, hook_name }] } })`);
  }
  return 0;
}

/** Any id of the release, so findSae validates the release name alone. */
function entry0(all: Map<string, ReleaseEntry>, release: string): string | undefined {
  return all.get(release)?.saes[0]?.id;
}
