// saekit kernel benchmark: `npm run bench` (after `npm install`).
//
// Measures, in one process: the fp32 FMA peak and the copy bandwidth of this machine (the
// rooflines), then fused encode (tokens/s, GFLOP/s, fraction of the FMA peak) and sparse
// decode (GB/s of W_dec rows gathered + output written, fraction of the copy bandwidth) at the
// GPT-2-small SAE shape and a larger one. Each kernel is validated against a float64 check on
// a few rows before it is timed; times are medians of repeated runs after a warm-up.
//
// Flags: --threads N  --variant generic|avx2|avx512  --reps N  --quick (small shapes only)
import { parseArgs } from 'node:util';
import { createSae, cpuVariant, setCpuVariant, setThreads, syntheticActivations, syntheticSae, threads } from '../dist/index.js';

const { values: flags } = parseArgs({
  options: {
    threads: { type: 'string' },
    variant: { type: 'string' },
    reps: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
  },
});
if (flags.threads) setThreads(Number(flags.threads));
if (flags.variant) setCpuVariant(flags.variant);
const reps = Number(flags.reps);

const shapes = flags.quick
  ? [{ name: 'small', dIn: 256, dSae: 4096, k: 32, rows: 1024 }]
  : [
      { name: 'gpt2-small', dIn: 768, dSae: 24576, k: 32, rows: 4096 },
      { name: 'gemma-2-2b', dIn: 2304, dSae: 16384, k: 64, rows: 2048 },
    ];

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
async function time(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

// float64 top-k of a few rows: the timed kernel must be exact before its speed matters.
function validate(w, x, codes, rowsToCheck) {
  const { dIn, dSae, k } = w.config;
  for (const r of rowsToCheck) {
    const pre = new Float64Array(dSae);
    const xr = x.subarray(r * dIn, (r + 1) * dIn);
    for (let i = 0; i < dIn; i++) {
      const xi = xr[i] - w.b_dec[i];
      const row = i * dSae;
      for (let j = 0; j < dSae; j++) pre[j] += xi * w.W_enc[row + j];
    }
    for (let j = 0; j < dSae; j++) pre[j] += w.b_enc[j];
    const order = Array.from(pre.keys()).sort((a, b) => pre[b] - pre[a] || a - b).slice(0, k).filter((j) => pre[j] > 0);
    const kth = pre[order[order.length - 1]];
    const ours = new Set(codes.indices.subarray(codes.indptr[r], codes.indptr[r + 1]));
    for (const j of order) {
      if (!ours.has(j) && Math.abs(pre[j] - kth) > 1e-4 * Math.abs(kth)) throw new Error(`validation failed: row ${r} misses latent ${j}`);
    }
    if (ours.size !== order.length) throw new Error(`validation failed: row ${r} has ${ours.size} entries, reference ${order.length}`);
  }
}

const fmt = (v, d = 1) => v.toFixed(d);
console.log(`saekit bench: ${threads()} threads, CPU variant ${cpuVariant().current}, node ${process.version}`);
let fma = 0;
for (let i = 0; i < 3; i++) fma = Math.max(fma, await (await import('../dist/addon.js')).addon().probeFmaPeak(0.4));
let copy = 0;
for (let i = 0; i < 2; i++) copy = Math.max(copy, await (await import('../dist/addon.js')).addon().probeCopyBandwidth(256 * 2 ** 20, 5));
console.log(`probe  fp32 FMA peak ${fmt(fma)} GFLOP/s   copy bandwidth ${fmt(copy)} GB/s (read + write)`);

const rowsOut = [];
for (const s of shapes) {
  const w = syntheticSae({ dIn: s.dIn, dSae: s.dSae, architecture: 'topk', k: s.k, seed: 11 });
  const x = syntheticActivations(w, s.rows, { seed: 12, active: 24, noise: 0.05 });
  const sae = await createSae(w, { device: 'cpu' });
  const codes = await sae.encode(x); // warm-up
  validate(w, x, codes, [0, 1, s.rows - 1]);
  const tEnc = [];
  for (let i = 0; i < reps; i++) tEnc.push(await time(() => sae.encode(x)));
  const out = new Float32Array(s.rows * s.dIn);
  await sae.decode(codes, out);
  const tDec = [];
  for (let i = 0; i < reps; i++) tDec.push(await time(() => sae.decode(codes, out)));
  sae.dispose();

  const te = median(tEnc);
  const td = median(tDec);
  const gflops = (2 * s.rows * s.dIn * s.dSae) / te / 1e9;
  const decBytes = (codes.indices.length + s.rows) * s.dIn * 4 + codes.indices.length * 8;
  const gbps = decBytes / td / 1e9;
  rowsOut.push({ ...s, tokS: s.rows / te, gflops, encFrac: gflops / fma, gbps, decFrac: gbps / copy, nnz: codes.indices.length });
}
console.log('');
console.log('| shape | d_in | d_sae | k | N | encode tok/s | GFLOP/s | % FMA peak | decode GB/s | % copy bw |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rowsOut)
  console.log(
    `| ${r.name} | ${r.dIn} | ${r.dSae} | ${r.k} | ${r.rows} | ${fmt(r.tokS, 0)} | ${fmt(r.gflops)} | ${fmt(100 * r.encFrac)}% | ${fmt(r.gbps)} | ${fmt(100 * r.decFrac)}% |`,
  );
