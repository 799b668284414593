// Feature-analysis benchmark: `npm run bench:analyze` (after `npm install`).
//
// At the GPT-2-small SAE shape (d_in 768, d_sae 24576, k 32), on an activation dump written
// here (synthetic activations built from the SAE's own features, random token ids, context
// 128), measures in one process:
//   encode:   sae.encode over the dump's rows, read chunk by chunk as the analysis reads them;
//   analysis: the whole analysis pass (read + encode + feature statistics: counts, histogram,
//             top-20 contexts, reservoir samples), i.e. what `saekit analyze --activations` runs
//             before writing the dashboard.
// Then runs the analysis in child processes at two dump sizes and reports each one's peak RSS:
// bounded memory means the two peaks stay close although one dump is 4x the other.
//
// Flags: --tokens N (default 131072)  --reps N (2)
//
// The statistics' fixed state (per feature: top-20 and 25 reservoir contexts of 17 tokens)
// is ~150 MB at d_sae 24576 and is first touched while it fills, a one-time cost that small
// runs (a few tokens per feature) pay in full; hence the default of 131072 tokens.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { analyzeFeatures, createSae, saveSaeLens, syntheticActivations, syntheticSae, writeSafetensors, SafetensorsReader } from '../dist/index.js';

const { values: flags } = parseArgs({
  options: {
    tokens: { type: 'string', default: '131072' },
    reps: { type: 'string', default: '2' },
    child: { type: 'string' },
    sae: { type: 'string' },
  },
});
const ctx = 128;
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

async function writeDump(dir, weights, tokens, seed) {
  const rows = Math.ceil(tokens / ctx) * ctx;
  const shardRows = 64 * ctx;
  const files = [];
  for (let start = 0, s = 0; start < rows; start += shardRows, s++) {
    const n = Math.min(shardRows, rows - start);
    const x = syntheticActivations(weights, n, { seed: seed + s, active: 12, noise: 0.02 });
    const ids = Int32Array.from({ length: n }, (_, i) => (i * 7919 + s * 104729) % 50257);
    const name = `activations-${String(s).padStart(5, '0')}.safetensors`;
    await writeSafetensors(join(dir, name), { activations: { dtype: 'F32', shape: [n, 768], data: x }, token_ids: { dtype: 'I32', shape: [n], data: ids } });
    files.push(name);
  }
  const manifest = { format: 'saekit-activations', version: 1, activations: files, tensor: 'activations', tokens_tensor: 'token_ids', model: 'synthetic', hook_name: 'blocks.8.hook_resid_pre', d_in: 768, context_size: ctx, prepend_bos: true, rows, windows: rows / ctx, dtype: 'float32', corpus: 'synthetic' };
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return rows;
}

if (flags.child) {
  // Child: one analysis pass over the dump in flags.child; prints its peak RSS.
  const { loadSae } = await import('../dist/index.js');
  const sae = await loadSae(flags.sae);
  const r = await analyzeFeatures(sae, { kind: 'dump', dir: flags.child });
  console.log(JSON.stringify({ tokens: r.tokens, maxRssMiB: process.resourceUsage().maxRSS / 1024, seconds: r.seconds }));
  sae.dispose();
  process.exit(0);
}

const work = await mkdtemp(join(tmpdir(), 'saekit-bench-analyze-'));
try {
  const weights = syntheticSae({ dIn: 768, dSae: 24576, architecture: 'topk', k: 32, seed: 1 });
  const saeDir = join(work, 'sae');
  await saveSaeLens(saeDir, weights);
  const sae = await createSae(weights, { device: 'cpu' });
  const tokens = Number(flags.tokens);
  const dump = join(work, 'dump');
  await (await import('node:fs/promises')).mkdir(dump);
  const rows = await writeDump(dump, weights, tokens, 10);

  const encodeOnly = async () => {
    const t0 = performance.now();
    const files = JSON.parse(await (await import('node:fs/promises')).readFile(join(dump, 'manifest.json'), 'utf8')).activations;
    for (const f of files) {
      const st = await SafetensorsReader.open(join(dump, f));
      const n = st.tensors.get('activations').shape[0];
      for (let s = 0; s < n; s += 64 * ctx) await sae.encode(await st.readRowsFloat32('activations', s, Math.min(64 * ctx, n - s)));
      await st.close();
    }
    return (performance.now() - t0) / 1000;
  };
  await encodeOnly(); // warm-up (hints, page cache)
  const enc = [];
  const ana = [];
  const encInside = [];
  for (let r = 0; r < Number(flags.reps); r++) {
    enc.push(await encodeOnly());
    const res = await analyzeFeatures(sae, { kind: 'dump', dir: dump });
    ana.push(res.seconds);
    encInside.push(res.encodeSeconds);
  }
  // The statistics alone, pass after pass over the same codes: the cost per firing token falls
  // as each feature's top-N heap and reservoir fill (fewer contexts to cut, pages touched).
  const { FeatureStats } = await import('../dist/index.js');
  const chunks = [];
  {
    const files = JSON.parse(await (await import('node:fs/promises')).readFile(join(dump, 'manifest.json'), 'utf8')).activations;
    const st = await SafetensorsReader.open(join(dump, files[0]));
    const n = Math.min(st.tensors.get('activations').shape[0], 64 * ctx);
    chunks.push({ codes: await sae.encode(await st.readRowsFloat32('activations', 0, n)), ids: (await st.readTensor('token_ids')).subarray(0, n) });
    await st.close();
  }
  const stats = new FeatureStats({ dSae: 24576 });
  const perPass = [];
  for (let pass = 0; pass < 24; pass++) {
    const t0 = performance.now();
    for (const c of chunks) stats.add(c.codes, c.ids, ctx, stats.rowsSeen);
    const events = chunks.reduce((a, c) => a + c.codes.indices.length, 0);
    perPass.push({ tokens: stats.tokensSeen, ns: ((performance.now() - t0) * 1e6) / events });
  }
  sae.dispose();
  console.log(`\nfeature analysis at d_in 768, d_sae 24576, k 32, ${rows} tokens (context ${ctx}), ${flags.reps} alternating reps (medians)`);
  console.log('| pass | tokens/s | seconds |');
  console.log('|---|---|---|');
  console.log(`| encode only (read + sae.encode) | ${Math.round(rows / median(enc))} | ${median(enc).toFixed(2)} |`);
  console.log(`| analysis (read + encode + statistics) | ${Math.round(rows / median(ana))} | ${median(ana).toFixed(2)} |`);
  console.log(`analysis / encode tokens/s: ${(median(enc) / median(ana)).toFixed(3)}; encode share inside the analysis: ${encInside.map((e, i) => ((100 * e) / ana[i]).toFixed(0)).join(', ')}%`);

  console.log(`\nstatistics alone, ns per firing token, by tokens seen so far: ${perPass.filter((_, i) => [0, 1, 3, 7, 15, 23].includes(i)).map((p) => `${p.tokens}: ${p.ns.toFixed(0)}`).join(', ')}`);
  const encodeUsPerRow = (1e6 * median(enc)) / rows;
  const steady = perPass[perPass.length - 1].ns;
  console.log(`projected analysis / encode once the statistics are warm (${steady.toFixed(0)} ns x 32 firing tokens per row vs ${encodeUsPerRow.toFixed(1)} us encode per row): ${(encodeUsPerRow / (encodeUsPerRow + (32 * steady) / 1000)).toFixed(2)}`);

  // Peak RSS at two dump sizes, each in a fresh process.
  const sizes = [rows, 4 * rows];
  const dump2 = join(work, 'dump4x');
  await (await import('node:fs/promises')).mkdir(dump2);
  await writeDump(dump2, weights, sizes[1], 20);
  const self = fileURLToPath(import.meta.url);
  console.log('\n| dump tokens | peak RSS (MiB) | seconds |');
  console.log('|---|---|---|');
  for (const [n, dir] of [[sizes[0], dump], [sizes[1], dump2]]) {
    const out = spawnSync(process.execPath, [self, '--child', dir, '--sae', saeDir], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(out.stderr);
    const r = JSON.parse(out.stdout.trim().split('\n').pop());
    console.log(`| ${n} | ${r.maxRssMiB.toFixed(0)} | ${r.seconds.toFixed(2)} |`);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
