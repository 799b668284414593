// Whole-process encode against peers users could run instead: `npm run bench:peers`.
//
// One GPT-2-small shape TopK SAE (d_in 768, d_sae 24576, k 32) saved as a SAELens directory,
// one activation dump (.npy, --rows rows, default 16384, rows built from the SAE's features),
// then each contender runs as its own process, from the files to top-k codes, and is timed
// from spawn to exit (median of --reps):
//   - saekit: `saekit encode --sae DIR --input acts.npy --output codes.safetensors` (the
//     default encode: the kernel measured for this SAE, cached in a fresh cache file so the
//     first rep pays the measurement and later reps read it; both figures are shown);
//   - onnxruntime-node (the runtime transformers.js ships): a Sub-MatMul-Add-Relu-TopK graph
//     with the SAE's weights, 4096-row chunks, all intra-op threads = saekit's thread count;
//   - PyTorch (bench/peers/torch_encode.py; only where `python3 -c "import torch"` works):
//     relu(addmm).topk in fp32 and in bf16 (inexact: bf16 products and sums).
// A few rows of each peer's top-k sets are checked against saekit's (overlap; fp32 peers sum in
// another order, so exact ties may differ). The same run measures the fp32 FMA probe, so the
// figures can be read against the machine's roofline.
//
// Flags: --rows N  --reps N  --threads N  --python PATH (default python3)  --keep (keep the temp dir)
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { createSae, encodeNpyHeader, saveSaeLens, syntheticActivations, syntheticSae, threads, cpuVariant } from '../dist/index.js';

const { values: flags } = parseArgs({
  options: {
    rows: { type: 'string', default: '16384' },
    reps: { type: 'string', default: '3' },
    threads: { type: 'string' },
    python: { type: 'string', default: 'python3' },
    keep: { type: 'boolean', default: false },
  },
});
const rows = Number(flags.rows);
const reps = Number(flags.reps);
const T = flags.threads ? Number(flags.threads) : threads();
const dIn = 768, dSae = 24576, k = 32;
const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..');
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

const dir = await mkdtemp(join(tmpdir(), 'saekit-peers-'));
const env = { ...process.env, SAEKIT_THREADS: String(T), SAEKIT_KERNEL_CACHE: join(dir, 'kernel-choice.tsv') };
delete env.SAEKIT_ENCODE_KERNEL;
delete env.SAEKIT_SCREEN;
try {
  const w = syntheticSae({ dIn, dSae, architecture: 'topk', k, seed: 41 });
  await saveSaeLens(join(dir, 'sae'), w);
  const x = syntheticActivations(w, rows, { seed: 42, active: 24, noise: 0.05 });
  const header = encodeNpyHeader([rows, dIn]);
  const npy = (a, shape) => Buffer.concat([encodeNpyHeader(shape), Buffer.from(a.buffer, a.byteOffset, a.byteLength)]);
  await writeFile(join(dir, 'acts.npy'), npy(x, [rows, dIn]));
  // The peers read the weights as plain .npy (numpy.load; a 10-line reader in ort_encode.mjs).
  await writeFile(join(dir, 'W_enc.npy'), npy(w.W_enc, [dIn, dSae]));
  await writeFile(join(dir, 'b_enc.npy'), npy(w.b_enc, [dSae]));
  await writeFile(join(dir, 'b_dec.npy'), npy(w.b_dec, [dIn]));

  const { addon } = await import('../dist/addon.js');
  const fma = await addon().probeFmaPeak(0.5);
  const roofline = (fma * 1e9) / (2 * dIn * dSae);
  console.log(`saekit peers: ${rows} rows of d_in ${dIn} -> d_sae ${dSae} top-${k}, ${T} threads; CPU ${cpuVariant().cpuModel}`);
  console.log(`fp32 FMA probe ${fma.toFixed(1)} GFLOP/s: fp32 roofline ${roofline.toFixed(0)} tokens/s`);

  const run = (label, cmd, args, opts = {}) => {
    const t0 = performance.now();
    const r = spawnSync(cmd, args, { encoding: 'utf8', env, ...opts });
    const s = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`${label} failed (${r.status}): ${r.stderr || r.error}`);
    return { s, out: r.stdout };
  };
  const results = [];
  // saekit
  {
    const times = [];
    for (let i = 0; i < reps; i++)
      times.push(run('saekit', process.execPath, [join(root, 'bin/saekit.js'), 'encode', '--sae', join(dir, 'sae'), '--input', join(dir, 'acts.npy'), '--output', join(dir, 'codes.safetensors'), '--threads', String(T)]).s);
    results.push({ name: 'saekit encode (first process: measures the kernel)', s: times[0] });
    results.push({ name: 'saekit encode (kernel choice cached)', s: median(times.slice(1).length ? times.slice(1) : times) });
  }
  // saekit's sets for the overlap check: the same encode in this process (bit-identical to the CLI's).
  const sae = await createSae(w, { device: 'cpu' });
  const codes = await sae.encode(x.subarray(0, 64 * dIn));
  sae.dispose();
  const sets = (r) => new Set(codes.indices.subarray(codes.indptr[r], codes.indptr[r + 1]));
  const check = (peerIdx) => {
    let same = 0, total = 0;
    for (let r = 0; r < peerIdx.length; r++) {
      const ours = sets(r);
      total += ours.size;
      for (const j of peerIdx[r]) if (ours.has(j)) same++;
    }
    return total ? same / total : 1;
  };
  // onnxruntime-node
  let ortOk = true;
  try {
    const times = [];
    let out = '';
    for (let i = 0; i < reps; i++) {
      const r = run('onnxruntime-node', process.execPath, [join(here, 'peers/ort_encode.mjs'), dir, join(dir, 'acts.npy'), String(k), String(T)], { cwd: root });
      times.push(r.s);
      out = r.out;
    }
    results.push({ name: 'onnxruntime-node MatMul-Add-Relu-TopK (fp32)', s: median(times), overlap: check(JSON.parse(out).firstRows) });
  } catch (e) {
    ortOk = false;
    console.log(`onnxruntime-node: ${e.message.split('\n')[0]}`);
  }
  // PyTorch
  const probe = spawnSync(flags.python, ['-c', 'import torch, numpy, safetensors; print(torch.__version__)'], { encoding: 'utf8' });
  if (probe.status === 0) {
    for (const dtype of ['float32', 'bfloat16']) {
      const times = [];
      let out = '';
      for (let i = 0; i < reps; i++) {
        const r = run(`torch ${dtype}`, flags.python, [join(here, 'peers/torch_encode.py'), dir, join(dir, 'acts.npy'), String(k), String(T), dtype]);
        times.push(r.s);
        out = r.out;
      }
      results.push({ name: `PyTorch ${probe.stdout.trim()} relu(addmm).topk (${dtype}${dtype === 'bfloat16' ? ', inexact' : ''})`, s: median(times), overlap: check(JSON.parse(out).firstRows) });
    }
  } else {
    console.log(`PyTorch: not run (${flags.python} cannot import torch, numpy and safetensors; see bench/peers/README.md)`);
  }
  // Training: steady-state tokens/s of whole optimizer steps (batch 4096, topk, no dead
  // latents), saekit's SaeTrainer in this process vs the sparsify-style torch trainer.
  const trainRows = [];
  {
    const { SaeTrainer, defaultTrainerConfig, initParams } = await import('../dist/index.js');
    const B = 4096;
    const params = initParams({ dIn, dSae, seed: 3, bDecInit: 'mean', sample: x.subarray(0, B * dIn) });
    const t = await SaeTrainer.create({ ...defaultTrainerConfig(dIn, dSae, k), deadTokens: 1e12 }, params);
    const xb = x.subarray(0, B * dIn);
    await t.trainStep(xb, 1e-4);
    await t.trainStep(xb, 1e-4);
    const t0 = performance.now();
    for (let i = 0; i < 4; i++) await t.trainStep(xb, 1e-4);
    trainRows.push({ name: 'saekit SaeTrainer (topk, CPU)', tokS: (4 * B) / ((performance.now() - t0) / 1000) });
    t.dispose();
    if (probe.status === 0) {
      const r = run('torch train', flags.python, [join(here, 'peers/torch_train.py'), String(dIn), String(dSae), String(k), String(B), String(T), '3']);
      trainRows.push({ name: `PyTorch ${probe.stdout.trim()} sparsify-style trainer (fp32, autograd, Adam)`, tokS: JSON.parse(r.out).tokens_per_second });
      // sparsify's own encoder path (FusedEncoder's sparse backward + embedding_bag decode): on
      // CPUs it runs about 2x the autograd version, so it is the peer the speed-up should name.
      const f = run('torch train fused', flags.python, [join(here, 'peers/torch_train.py'), String(dIn), String(dSae), String(k), String(B), String(T), '3', '--impl', 'fused']);
      trainRows.push({ name: `PyTorch ${probe.stdout.trim()} sparsify trainer, its fused encoder (fp32, sparse backward, Adam)`, tokS: JSON.parse(f.out).tokens_per_second });
    }
  }
  const ours = results[1].s;
  console.log('');
  console.log('| contender | whole process s | tokens/s | / fp32 roofline | saekit (cached) speed-up | top-k overlap with saekit (first 64 rows) |');
  console.log('|---|---|---|---|---|---|');
  for (const r of results)
    console.log(`| ${r.name} | ${r.s.toFixed(2)} | ${(rows / r.s).toFixed(0)} | ${(rows / r.s / roofline).toFixed(2)}x | ${(r.s / ours).toFixed(2)}x | ${r.overlap === undefined ? '-' : `${(100 * r.overlap).toFixed(2)}%`} |`);
  console.log('');
  console.log('| trainer (batch 4096, d_in 768, d_sae 24576, k 32) | tokens/s | saekit speed-up |');
  console.log('|---|---|---|');
  for (const r of trainRows) console.log(`| ${r.name} | ${r.tokS.toFixed(0)} | ${(trainRows[0].tokS / r.tokS).toFixed(2)}x |`);
  if (!ortOk) process.exitCode = 1;
} finally {
  if (!flags.keep) await rm(dir, { recursive: true, force: true });
  else console.log(`kept ${dir}`);
}
