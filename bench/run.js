// saekit kernel benchmark: `npm run bench` (after `npm install`).
//
// Measures, in one process: the fp32 FMA peak and the copy bandwidth of this machine (the
// rooflines), then fused encode (tokens/s, GFLOP/s, fraction of the FMA peak) and sparse
// decode (GB/s of W_dec rows gathered + output written, fraction of the copy bandwidth) at the
// GPT-2-small SAE shape and a larger one. Each kernel is validated against a float64 check on
// a few rows before it is timed; times are medians of repeated runs after a warm-up.
//
// This host's clock and memory bandwidth drift by 5-10% within a minute (other tenants), so
// each timed kernel run is bracketed by probe runs and the reported fraction is the median of
// the per-run ratios kernel / mean(probe before, probe after).
//
// Training (TopK, batch 4096 at the GPT-2-small shape): tokens/s of whole optimizer steps
// (fused-encode forward, sparse backward, Adam over every parameter), reported as a fraction of
// the fused encode's tokens/s on the same shape, each step bracketed by encode runs. A second
// row counts every latent that missed the previous batch as dead (deadTokens 1), so AuxK runs
// every step: its cost grows with the dead count.
//
// Flags: --threads N  --variant generic|avx2|avx512  --reps N  --quick (small shapes only)
//        --no-train (skip the training rows)  --no-screen (skip the screened-encode rows)
//        --screen-only (only the screened-encode table)
//
// Screened encode: the default topk encode on CPUs with a screen (bf16 where AVX512-BF16
// exists; int8 on AVX512-VNNI; int8-256 on AVX-VNNI; exact fp32 rescoring of the candidates).
// Every screen this CPU runs is timed at three shapes (plus a jumprelu one) on the same loaded
// SAE (SAEKIT_SCREEN per call), against the plain fp32 encode and the fp32 FMA roofline, with
// the bf16 and vpdpbusd probes, candidates per row and the fallback rate.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SaeTrainer, defaultTrainerConfig, initParams, createSae, cpuVariant, setCpuVariant, setThreads, syntheticActivations, syntheticSae, threads } from '../dist/index.js';

const { values: flags } = parseArgs({
  options: {
    threads: { type: 'string' },
    variant: { type: 'string' },
    reps: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
    'no-train': { type: 'boolean', default: false },
    'no-screen': { type: 'boolean', default: false },
    'screen-only': { type: 'boolean', default: false },
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

// Transparent huge pages backing this process (the weights ask for them; without them every
// random W_dec row in decode is a TLB miss, which shows as a slow, steady decode).
function hugePagesMiB() {
  try {
    const m = /AnonHugePages:\s+(\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}
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
const { addon } = await import('../dist/addon.js');
const fmaProbe = () => addon().probeFmaPeak(0.25);
const copyProbe = () => addon().probeCopyBandwidth(256 * 2 ** 20, 3);
console.log(`saekit bench: ${threads()} threads, CPU variant ${cpuVariant().current}, node ${process.version}`);

// Runs fn `reps` times, each bracketed by probe(); returns median seconds and median ratio.
async function bracketed(fn, probe, work, reps) {
  const secs = [];
  const ratios = [];
  const probes = [];
  // Short kernels (a decode is ~10 ms) repeat inside one sample so each lasts >= 0.2 s.
  const inner = Math.max(1, Math.ceil(0.2 / (await time(fn))));
  for (let i = 0; i < reps; i++) {
    const p1 = await probe();
    const t = (await time(async () => { for (let j = 0; j < inner; j++) await fn(); })) / inner;
    const p2 = await probe();
    secs.push(t);
    probes.push((p1 + p2) / 2);
    ratios.push(work / t / ((p1 + p2) / 2));
  }
  return { seconds: median(secs), ratio: median(ratios), probe: median(probes), spread: [Math.min(...ratios), Math.max(...ratios)] };
}

// The kernel table measures the plain fp32 kernel; the screened encode (bf16 screen + exact
// fp32 rescoring, the default where AVX512-BF16 exists) has its own section below.
process.env.SAEKIT_SCREEN = '0';
const rowsOut = [];
for (const s of flags['screen-only'] ? [] : shapes) {
  const w = syntheticSae({ dIn: s.dIn, dSae: s.dSae, architecture: 'topk', k: s.k, seed: 11 });
  const x = syntheticActivations(w, s.rows, { seed: 12, active: 24, noise: 0.05 });
  const sae = await createSae(w, { device: 'cpu' });
  const codes = await sae.encode(x); // warm-up
  s.hugeMiB = hugePagesMiB();
  validate(w, x, codes, [0, 1, s.rows - 1]);
  const flops = 2 * s.rows * s.dIn * s.dSae;
  const enc = await bracketed(() => sae.encode(x), fmaProbe, flops / 1e9, reps);
  const out = new Float32Array(s.rows * s.dIn);
  await sae.decode(codes, out);
  const decBytes = (codes.indices.length + s.rows) * s.dIn * 4 + codes.indices.length * 8;
  const dec = await bracketed(() => sae.decode(codes, out), copyProbe, decBytes / 1e9, reps);
  sae.dispose();
  rowsOut.push({ ...s, enc, dec, tokS: s.rows / enc.seconds, gflops: flops / enc.seconds / 1e9, gbps: decBytes / dec.seconds / 1e9 });
}
const pct = (r) => `${fmt(100 * r.ratio)}% (${fmt(100 * r.spread[0], 0)}-${fmt(100 * r.spread[1], 0)})`;
console.log('');
console.log('| shape | d_in | d_sae | k | N | encode tok/s | GFLOP/s | FMA probe | encode / FMA peak | decode GB/s | copy probe | decode / copy bw |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rowsOut) console.log(`${r.name}: ${fmt(r.hugeMiB, 0)} MiB of the process on huge pages`);
for (const r of flags['screen-only'] ? [] : rowsOut)
  console.log(
    `| ${r.name} | ${r.dIn} | ${r.dSae} | ${r.k} | ${r.rows} | ${fmt(r.tokS, 0)} | ${fmt(r.gflops)} | ${fmt(r.enc.probe)} | ${pct(r.enc)} | ${fmt(r.gbps)} | ${fmt(r.dec.probe)} | ${pct(r.dec)} |`,
  );

// ---- exact screened encode (bf16 / int8 screens, fp32 rescoring) ----
// Against the fp32 FMA roofline (tokens/s x 2 d_in d_sae FLOPs / FMA probe) and the screens'
// own peaks probed in the same run (bf16 dot, vpdpbusd on zmm and ymm).
if (!flags['no-screen']) {
  const { cpuVariant: cv } = await import('../dist/index.js');
  // Every kernel the measured choice picks among (never the AMX emulation: tests only).
  const screens = cv().kernels.filter((k) => k !== 'fp32');
  const amxPeak = await addon().probeAmxBf16Peak(0.25);
  const bf16Peak = await addon().probeBf16Peak(0.25);
  const vnniPeak = await addon().probeVnniPeak(0.25, true);
  const vnni256Peak = await addon().probeVnniPeak(0.25, false);
  const fmaPeak = await fmaProbe();
  const screenShapes = flags.quick
    ? [{ name: 'small', dIn: 256, dSae: 4096, k: 32, rows: 1024 }]
    : [
        { name: 'gpt2-small', dIn: 768, dSae: 24576, k: 32, rows: 4096 },
        { name: 'gemma-2-2b', dIn: 2304, dSae: 16384, k: 64, rows: 2048 },
        { name: 'd4096', dIn: 4096, dSae: 65536, k: 64, rows: 1024 },
        // Gemma Scope-like: jumprelu, thresholds giving ~60 active latents per row.
        { name: 'gemma-2-2b jumprelu', dIn: 2304, dSae: 16384, k: 0, rows: 2048, jumprelu: 0.5 },
        // Small batches (a live model's tokens): bound by streaming W_enc, not by arithmetic.
        { name: 'gpt2-small N=16', dIn: 768, dSae: 24576, k: 32, rows: 16 },
        { name: 'gpt2-small N=64', dIn: 768, dSae: 24576, k: 32, rows: 64 },
        { name: 'gpt2-small N=256', dIn: 768, dSae: 24576, k: 32, rows: 256 },
      ];
  const screenRows = [];
  const choiceRows = [];
  process.env.SAEKIT_KERNEL_CACHE = '0';
  if (screens.length > 0) {
    for (const s of screenShapes) {
      const w = s.jumprelu
        ? syntheticSae({ dIn: s.dIn, dSae: s.dSae, architecture: 'jumprelu', seed: 31 })
        : syntheticSae({ dIn: s.dIn, dSae: s.dSae, architecture: 'topk', k: s.k, seed: 31 });
      if (s.jumprelu) w.threshold.fill(s.jumprelu);
      const x = syntheticActivations(w, s.rows, { seed: 32, active: 24, noise: 0.05 });
      delete process.env.SAEKIT_SCREEN; // SAEKIT_SCREEN=0 at load would skip the screening copies
      const sae = await createSae(w, { device: 'cpu' });
      const flops = 2 * s.rows * s.dIn * s.dSae;
      const out = {};
      let plainCodes;
      // 'auto': the default encode, the kernel measured on this SAE at its first call (the
      // cache file off so this run measures; kernelChoice says what was picked and why).
      for (const mode of ['0', ...screens, 'auto']) {
        process.env.SAEKIT_SCREEN = mode;
        const codes = await sae.encode(x); // warm-up (builds the screen's copy on first use)
        if (mode === '0') plainCodes = codes;
        else if (codes.indices.length !== plainCodes.indices.length || codes.indices.some((v, i) => v !== plainCodes.indices[i]) || codes.values.some((v, i) => v !== plainCodes.values[i]))
          throw new Error(`validation failed: ${mode}-screened codes differ from the fp32 kernel's`);
        if (mode === '0' && !s.jumprelu) validate(w, x, codes, [0, 1, s.rows - 1]);
        const before = sae.screenStats;
        out[mode] = await bracketed(() => sae.encode(x), fmaProbe, flops / 1e9, reps);
        const after = sae.screenStats;
        out[mode].stats = { rows: after.rows - before.rows, candidates: after.candidates - before.candidates, fallbacks: after.fallbacks - before.fallbacks };
      }
      const choice = sae.kernelChoice.at(-1);
      sae.dispose();
      for (const mode of screens) screenRows.push({ s, screen: mode, fp32: out['0'], screened: out[mode] });
      choiceRows.push({ s, fp32: out['0'], auto: out.auto, choice, best: Math.max(...screens.map((m) => out[m].ratio)) });
    }
    process.env.SAEKIT_SCREEN = '0';
  }
  console.log('');
  console.log(
    `exact screened encode (screen + fp32 rescoring, outputs checked bit-identical to the fp32 kernel); probes: fp32 FMA ${fmt(fmaPeak)} GFLOP/s, ` +
      `AMX bf16 ${amxPeak > 0 ? `${fmt(amxPeak)} GFLOP/s (${fmt(amxPeak / fmaPeak, 2)}x)` : 'n/a'}, bf16 dot ${fmt(bf16Peak)} GFLOP/s (${fmt(bf16Peak / fmaPeak, 2)}x), vpdpbusd zmm ${fmt(vnniPeak)} GOP/s (${fmt(vnniPeak / fmaPeak, 2)}x), ymm ${fmt(vnni256Peak)} GOP/s (${fmt(vnni256Peak / fmaPeak, 2)}x):`,
  );
  if (screens.length === 0) console.log('(this CPU has no screen (AVX512-BF16, AVX512-VNNI or AVX-VNNI): the screened encode does not run)');
  console.log('| shape | d_in | d_sae | k | N | screen | fp32 tok/s | fp32 / FMA peak | screened tok/s | screened / fp32 roofline | speed-up | candidates/row | fallback rate |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of screenRows) {
    const st = r.screened.stats;
    const screenedRows = st.rows - st.fallbacks;
    console.log(
      `| ${r.s.name} | ${r.s.dIn} | ${r.s.dSae} | ${r.s.jumprelu ? '-' : r.s.k} | ${r.s.rows} | ${r.screen} | ${fmt(r.s.rows / r.fp32.seconds, 0)} | ${pct(r.fp32)} | ` +
        `${fmt(r.s.rows / r.screened.seconds, 0)} | ${fmt(r.screened.ratio, 2)}x (${fmt(r.screened.spread[0], 2)}-${fmt(r.screened.spread[1], 2)}) | ` +
        `${fmt(r.fp32.seconds / r.screened.seconds, 2)}x | ${st.rows === 0 ? 'screen off (most rows over the cap: the fp32 kernel ran)' : fmt(screenedRows > 0 ? st.candidates / screenedRows : 0)} | ${fmt(st.rows > 0 ? st.fallbacks / st.rows : 0, 4)} |`,
    );
  }
  // ---- the default encode: the measured kernel choice ----
  console.log('');
  console.log(`default encode (SAEKIT_ENCODE_KERNEL unset): the kernel each SAE measured at its first encode; CPU ${cv().cpuModel}; AMX: ${cv().amx}`);
  console.log('| shape | N | chosen | timings at the choice (us/row) | default tok/s | default / fp32 roofline | default / fp32 kernel (probe-normalized) | default / best screen timed (probe-normalized) | why |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of choiceRows) {
    const t = r.choice ? Object.entries(r.choice.usPerRow).map(([k, us]) => `${k} ${us < 0 ? 'n/a' : fmt(us, 2)}`).join(', ') : '-';
    console.log(
      `| ${r.s.name} | ${r.s.rows} | ${r.choice?.kernel ?? 'fp32 (no choice)'} | ${t} | ${fmt(r.s.rows / r.auto.seconds, 0)} | ${fmt(r.auto.ratio, 2)}x | ` +
        `${fmt(r.auto.ratio / r.fp32.ratio, 2)}x | ${fmt(r.auto.ratio / r.best, 2)}x | ${r.choice?.why ?? ''} |`,
    );
  }
}

// ---- training ----
if (!flags['no-train']) {
  const trainShapes = flags.quick
    ? [{ name: 'small', dIn: 256, dSae: 4096, k: 32, rows: 1024, cases: [['no dead latents', 1e12]] }]
    : [
        { name: 'gpt2-small', dIn: 768, dSae: 24576, k: 32, rows: 4096, cases: [['no dead latents', 1e12], ['AuxK every step', 1]] },
        { name: 'gemma-2-2b', dIn: 2304, dSae: 16384, k: 64, rows: 2048, cases: [['no dead latents', 1e12]] },
      ];
  const trainRows = [];
  for (const s of trainShapes) {
    const w = syntheticSae({ dIn: s.dIn, dSae: s.dSae, architecture: 'topk', k: s.k, seed: 21 });
    const x = syntheticActivations(w, s.rows, { seed: 22, active: 24, noise: 0.05 });
    const sae = await createSae(w, { device: 'cpu' });
    await sae.encode(x);
    const encodeTokS = async () => s.rows / (await time(() => sae.encode(x)));
    const params = initParams({ dIn: s.dIn, dSae: s.dSae, seed: 3, bDecInit: 'mean', sample: x });
    for (const [label, deadTokens] of s.cases) {
      const trainer = await SaeTrainer.create({ ...defaultTrainerConfig(s.dIn, s.dSae, s.k), deadTokens }, params);
      let dead = 0;
      const step = async () => {
        dead = (await trainer.trainStep(x, 1e-4)).deadFraction;
      };
      await step(); // warm-up (first touch of the optimizer state)
      const r = await bracketed(step, encodeTokS, s.rows, reps);
      trainRows.push({ shape: s, label, tokS: s.rows / r.seconds, r, dead });
      trainer.dispose();
    }
    sae.dispose();
  }
  console.log('');
  console.log('training (topk, CPU backend), each step bracketed by fused encodes of the same shape:');
  console.log('| shape | d_in | d_sae | k | batch | case | train tok/s | encode tok/s | train / encode | dead fraction |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const t of trainRows)
    console.log(
      `| ${t.shape.name} | ${t.shape.dIn} | ${t.shape.dSae} | ${t.shape.k} | ${t.shape.rows} | ${t.label} | ${fmt(t.tokS, 0)} | ${fmt(t.r.probe, 0)} | ${pct(t.r)} | ${fmt(100 * t.dead)}% |`,
    );
}
