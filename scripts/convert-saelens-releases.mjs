#!/usr/bin/env node
// Converts SAELens's release list (sae_lens/pretrained_saes.yaml) into saekit's catalog,
// data/saelens-releases.json.gz: the facts only (release, repo, model, conversion_func, and per
// SAE its id, path, l0 and neuronpedia id). Run by hand when SAELens adds releases:
//   node scripts/convert-saelens-releases.mjs ../shared/data/pretrained_saes.yaml "SAELens b18591515 (2026-02-26)"
// Which of these saekit can read, and why not the others, is decided at run time
// (src/hub/saelensCatalog.ts), so the file stays a plain copy of the facts.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { parse } from 'yaml';

const [input, source] = process.argv.slice(2);
if (!input || !source) {
  console.error('usage: node scripts/convert-saelens-releases.mjs pretrained_saes.yaml "SAELens <commit> (<date>)"');
  process.exit(2);
}
const doc = parse(readFileSync(input, 'utf8'), { maxAliasCount: -1 });
const releases = {};
let saes = 0;
for (const [name, r] of Object.entries(doc)) {
  if (!r || typeof r !== 'object' || !Array.isArray(r.saes)) throw new Error(`${input}: release ${name} has no saes list`);
  releases[name] = {
    repo_id: r.repo_id,
    model: r.model,
    conversion_func: r.conversion_func ?? null,
    ...(r.config_overrides && { config_overrides: r.config_overrides }),
    saes: r.saes.map((s) => ({
      id: String(s.id),
      path: String(s.path),
      ...(s.l0 !== undefined && { l0: s.l0 }),
      ...(s.neuronpedia !== undefined && s.neuronpedia !== null && { neuronpedia: s.neuronpedia }),
    })),
  };
  saes += r.saes.length;
}
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'data', 'saelens-releases.json.gz');
const body = JSON.stringify({ source, releases: Object.keys(releases).length, saes, data: releases });
writeFileSync(`${out}.tmp`, gzipSync(body, { level: 9 }));
renameSync(`${out}.tmp`, out);
console.log(`${out}: ${Object.keys(releases).length} releases, ${saes} SAE ids (${(body.length / 1e6).toFixed(1)} MB of JSON)`);
