// The Node path on a GPU machine (run by bench/gpu/run.sh with the carried Node binary): the
// built JS API (dist/) against the addon built there. Backends and what `--device auto`
// resolves to, CPU vs CUDA parity through createSae/encode/decode on fresh random SAEs of every
// architecture (one with per-row normalization), and host-to-host encode/decode timings at
// the GPT-2-small shape through Node, CPU and CUDA in the same run; then training through the
// JS API on both devices (train_check.mjs). Appends to argv[2].
//
//   node bench/gpu/node_check.mjs bench/RESULTS.md
//
// Exit status: 0 passed, 1 a mismatch, 2 CUDA unavailable (the report says why).
import { appendFileSync } from 'node:fs';

const { createSae } = await import('../../dist/sae.js');
const { syntheticSae, syntheticActivations } = await import('../../dist/synthetic.js');
const { backends, resolveDevice } = await import('../../dist/system.js');

const reportPath = process.argv[2];
const lines = [];
const out = (s) => {
  console.log(s);
  lines.push(s);
};
const finish = (code) => {
  if (reportPath) appendFileSync(reportPath, lines.join('\n') + '\n');
  process.exit(code);
};

out('');
out(`## Node path (node ${process.version}, dist/ and the addon built on this machine)`);
out('');
for (const b of backends()) out(`- backend ${b.name}: ${b.available ? 'available' : 'unavailable'}: ${b.detail}`);
out(`- \`--device auto\` resolves to ${resolveDevice('auto')}`);
if (!backends().find((b) => b.name === 'cuda')?.available) {
  out('- CUDA unavailable: Node parity and timings skipped');
  finish(2);
}

/** Per row, the same latents and values, except between values within TOL of the row's cut (parity.h's rule). */
function sameCodes(a, b, tol) {
  for (let r = 0; r < a.rows; r++) {
    const ra = new Map(), rb = new Map();
    for (let e = a.indptr[r]; e < a.indptr[r + 1]; e++) ra.set(a.indices[e], a.values[e]);
    for (let e = b.indptr[r]; e < b.indptr[r + 1]; e++) rb.set(b.indices[e], b.values[e]);
    let cut = Infinity;
    for (const v of [...ra.values(), ...rb.values()]) cut = Math.min(cut, v);
    for (const [j, v] of ra) {
      if (rb.has(j)) {
        if (Math.abs(v - rb.get(j)) > tol) return `row ${r} latent ${j}: values ${v} vs ${rb.get(j)}`;
      } else if (v > cut + tol && v > tol) return `row ${r} latent ${j} only on the CPU`;
    }
    for (const [j, v] of rb) if (!ra.has(j) && v > cut + tol && v > tol) return `row ${r} latent ${j} only on CUDA`;
  }
  return '';
}

let failures = 0;
const cases = [
  { name: 'topk (tensor-core screen)', dIn: 768, dSae: 4096, architecture: 'topk', k: 32, rows: 2000 },
  { name: 'topk k=1, odd widths', dIn: 67, dSae: 333, architecture: 'topk', k: 1, rows: 129 },
  { name: 'topk k=100 (fp32 kernel)', dIn: 96, dSae: 2000, architecture: 'topk', k: 100, rows: 300 },
  { name: 'topk layer_norm rows', dIn: 128, dSae: 1024, architecture: 'topk', k: 16, rows: 300, normalizeActivations: 'layer_norm' },
  { name: 'standard', dIn: 64, dSae: 512, architecture: 'standard', rows: 300 },
  { name: 'jumprelu', dIn: 64, dSae: 512, architecture: 'jumprelu', rows: 300 },
];
out('');
out('### parity, CPU vs CUDA through the JS API');
for (const c of cases) {
  const seed = 1 + Math.floor(Math.random() * 1e9);
  const w = syntheticSae({ ...c, seed });
  const x = syntheticActivations(w, c.rows, { seed: seed + 1 });
  const cpu = await createSae(w, { device: 'cpu' });
  const gpu = await createSae(w, { device: 'cuda' });
  const a = await cpu.encode(x), b = await gpu.encode(x);
  let why = sameCodes(a, b, 1e-4);
  if (!why) {
    const ya = await cpu.decode(a), yb = await gpu.decode(a);
    for (let i = 0; i < ya.length && !why; i++) if (!(Math.abs(ya[i] - yb[i]) <= 1e-4 * (1 + Math.abs(ya[i])))) why = `decode differs at element ${i}`;
  }
  if (why) failures++;
  out(`- ${why ? 'FAIL' : 'ok  '} ${c.name} (rows ${c.rows}, d_in ${c.dIn}, d_sae ${c.dSae}${c.k ? `, k ${c.k}` : ''}, seed ${seed})${why ? `: ${why}` : ''}`);
  cpu.dispose();
  gpu.dispose();
}

// Timings through Node (host Float32Array in, CSR out), the same data on both devices.
out('');
out('### host-to-host through Node, d_in 768 / d_sae 24576 / k 32');
out('');
out('| device | encode | decode |');
out('|---|---|---|');
const w = syntheticSae({ dIn: 768, dSae: 24576, architecture: 'topk', k: 32, seed: 7 });
const rows = 16384;
const x = syntheticActivations(w, rows, { seed: 8 });
for (const device of ['cpu', 'cuda']) {
  const sae = await createSae(w, { device });
  const n = device === 'cpu' ? 2048 : rows;
  const xs = x.subarray(0, n * 768);
  const codes = await sae.encode(xs);  // warm-up
  let t0 = performance.now();
  await sae.encode(xs);
  const enc = (performance.now() - t0) / 1e3;
  await sae.decode(codes);
  t0 = performance.now();
  await sae.decode(codes);
  const dec = (performance.now() - t0) / 1e3;
  out(`| ${device} | ${Math.round(n / enc)} tok/s (${n} rows) | ${Math.round(n / dec)} tok/s |`);
  sae.dispose();
}
// Training through the JS API (issue 20): where device 'auto' trains, then SaeTrainer on CPU vs
// CUDA for every architecture with state() resumes both ways (bench/gpu/train_check.mjs).
const { trainingBackends, resolveTrainingDevice } = await import('../../dist/system.js');
const { trainChecks } = await import('./train_check.mjs');
out('');
out('### training through the JS API, CPU vs CUDA');
out('');
for (const b of trainingBackends()) out(`- training on ${b.name}: ${b.available ? 'yes' : 'no'}: ${b.detail}`);
out(`- training's \`--device auto\` resolves to ${resolveTrainingDevice('auto')}`);
const [trainLines, trainFailures] = await trainChecks('cpu', 'cuda');
for (const l of trainLines) out(l);
failures += trainFailures;
out('');
out(failures === 0 ? 'Node path: all parity checks passed' : `Node path: ${failures} FAILED`);
finish(failures === 0 ? 0 : 1);
