// `saekit pull RELEASE [--id ID]`: fetches a pretrained SAE (every SAE of the release without
// --id) into the Hugging Face hub cache; `saekit list [RELEASE]`: what is known and cached.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../errors.js';
import { hubCacheDir } from '../../hub/hub.js';
import { pullSae } from '../../hub/pretrained.js';
import { findSae, releaseFiles, releases, userRegistryPath, type ReleaseEntry, type ReleaseSae } from '../../hub/registry.js';
import { catalogReleases, saelensCatalog } from '../../hub/saelensCatalog.js';
import { parse } from '../args.js';
import { downloadProgress } from '../progress.js';

export const pullUsage = 'saekit pull RELEASE [--id ID] [--registry FILE] [--offline]';
export const listUsage = 'saekit list [RELEASE] [--all] [--registry FILE] [--json]';

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

/** Whether SAE's files are in the cache (any snapshot): its folder, or, for layouts of files at the repository root, each required file. */
function cached(entry: ReleaseEntry, sae: ReleaseSae): boolean {
  const snapshots = join(hubCacheDir(), `models--${entry.repo_id.replace('/', '--')}`, 'snapshots');
  if (!existsSync(snapshots)) return false;
  const folder = entry.format !== 'mwhanna-transcoder' && entry.format !== 'mntss-clt-layer';
  const { required } = releaseFiles(entry.format, sae.path);
  return readdirSync(snapshots).some((c) =>
    folder ? existsSync(join(snapshots, c, sae.path)) : required.every((names) => names.some((f) => existsSync(join(snapshots, c, f)))),
  );
}

export async function listCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { registry: { type: 'string' }, json: { type: 'boolean' }, all: { type: 'boolean' } }, true);
  const all = releases(values.registry as string | undefined);
  const say = (s: string) => process.stdout.write(`${s}\n`);
  if (positionals.length > 1) throw new UsageError('give at most one release name');
  if (positionals.length === 1) {
    const { entry } = findSae(positionals[0]!, entry0(all, positionals[0]!), values.registry as string | undefined);
    const rows = entry.saes.map((s) => ({ id: s.id, hook_name: s.hook_name, ...(s.hook_name_out !== undefined && { hook_name_out: s.hook_name_out }), path: s.path, d_sae: s.d_sae ?? entry.d_sae, cached: cached(entry, s) }));
    if (values.json) say(JSON.stringify({ ...entry, saes: rows }, null, 2));
    else {
      say(`${entry.release}: ${entry.repo_id} (${entry.format}), model ${entry.model}${entry.onnx_model ? ` (ONNX ${entry.onnx_model.repo})` : ''}, ${entry.architecture}, d_in ${entry.d_in}`);
      // A transcoder shows the hook it reads -> the hook it predicts; '(in its files)' where only they say (a CLT's config.yaml).
      for (const r of rows) say(`  ${r.cached ? '*' : ' '} ${r.id.padEnd(34)} ${(r.hook_name === '' ? '(in its files)' : r.hook_name + (r.hook_name_out ? ` -> ${r.hook_name_out}` : '')).padEnd(28)} d_sae ${r.d_sae ?? '?'}`);
      say(`  (* = in the cache ${hubCacheDir()})`);
    }
    return 0;
  }
  const rows = [...all.values()].map((e) => ({
    release: e.release,
    repo_id: e.repo_id,
    model: e.model,
    format: e.format,
    architecture: e.architecture,
    saes: e.saes.length,
    cached: e.saes.filter((s) => cached(e, s)).length,
    ...(e.onnx_model && { onnx_model: e.onnx_model.repo }),
  }));
  // SAELens releases whose files saekit has no reader for, with the reason.
  const unreadable = catalogReleases().unreadable.filter((u) => !all.has(u.release));
  const catalog = saelensCatalog();
  // JSON: one row per release; those saekit cannot read carry readable: false and the reason.
  if (values.json) say(JSON.stringify([...rows.map((r) => ({ ...r, readable: true })), ...unreadable.map((u) => ({ ...u, readable: false }))], null, 2));
  else {
    for (const r of rows) {
      say(`${r.release.padEnd(40)} ${r.model.padEnd(36)} ${r.format.padEnd(11)} ${String(r.saes).padStart(4)} SAEs, ${r.cached} cached  (${r.repo_id}${r.onnx_model ? `; model ONNX ${r.onnx_model}` : ''})`);
    }
    const byReason = new Map<string, { releases: number; saes: number }>();
    for (const u of unreadable) {
      const k = `${u.conversion_func ?? 'null'}: ${u.reason}`;
      const c = byReason.get(k) ?? { releases: 0, saes: 0 };
      byReason.set(k, { releases: c.releases + 1, saes: c.saes + u.saes });
    }
    say(`${rows.length} releases in layouts saekit reads (SAEs and transcoders; each SAE's own files decide the rest); ${unreadable.length} SAELens releases it cannot read (catalog: ${catalog.source}):`);
    for (const [k, c] of [...byReason.entries()].sort((a, b) => b[1].saes - a[1].saes)) say(`  ${k} (${c.releases} releases, ${c.saes} SAEs)`);
    if (values.all) for (const u of unreadable) say(`  - ${u.release} (${u.model}, ${u.saes} SAEs): ${u.reason}`);
    else say('  (--all lists them)');
    say(`a model's ONNX export is known for ${[...new Set(rows.filter((r) => r.onnx_model).map((r) => r.model))].join(', ') || 'none'}; others take --model, or "onnx_model": { "repo": ... } in ${userRegistryPath()}`);
    say(`add releases in ${userRegistryPath()} (JSON: { "<release>": { repo_id, model, format, architecture, d_in, saes: [{ id, path, hook_name }] } })`);
  }
  return 0;
}

/** Any id of the release, so findSae validates the release name alone. */
function entry0(all: Map<string, ReleaseEntry>, release: string): string | undefined {
  return all.get(release)?.saes[0]?.id;
}
