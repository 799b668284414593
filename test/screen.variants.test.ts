// Every screen of the exact screened encode this CPU runs (bf16, int8, int8-256; forced with
// SAEKIT_SCREEN at load) must give the plain fp32 encode's codes (SAEKIT_SCREEN=0) BIT FOR BIT:
// same rows, same indices, same float bits. The rescoring sums in the fp32 kernel's order
// (native/cpu/rescore.cpp), so there is no tolerance to write down: any difference is a bug.
// The float64 reference (test/helpers/reference.js) also judges the random cases, so the plain
// encode is not the only judge. Screens this CPU cannot run show as skipped.
//
// The approximate mode (SAEKIT_SCREEN_APPROX=1, opt-in) is held to the screen's error bound.
import { afterAll, describe, expect, it } from 'vitest';
import { createSae, cpuVariant, setCpuVariant, setThreads, type SparseCodes } from '../src/index.js';
import { Rng, syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { Normalization, SaeWeights } from '../src/types.js';
import { column, copyLatent, encodeCounting, gaussianRows, getW, scaleColumn, setW, topkSae, withEnv } from './helpers/adversarial.js';
import { compareCodes, referenceEncode } from './helpers/reference.js';
import { freshSeed } from './helpers/testData.js';

const FILE = 'screen.variants.test';
const seed = freshSeed(FILE);

const ENV_KEYS = ['SAEKIT_SCREEN', 'SAEKIT_ENCODE_KERNEL', 'SAEKIT_SCREEN_CAP', 'SAEKIT_SCREEN_APPROX', 'SAEKIT_HINT_SCALE'] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((key) => [key, process.env[key]]));
for (const key of ENV_KEYS) delete process.env[key];

const info = cpuVariant();
// amx-bf16-emu: the AMX kernel's source on the scalar tile emulation (native/cpu/amx_tiles.h),
// so the AMX kernel is tested on every CPU; amx-bf16 runs the same tests on real tiles.
const SCREENS = ['bf16', 'int8', 'int8-256', 'amx-bf16', 'amx-bf16-emu'] as const;
type Screen = (typeof SCREENS)[number];
for (const s of SCREENS) if (!info.screens.includes(s)) console.log(`${FILE}: this CPU cannot run the ${s} screen: its tests are skipped`);

const summary: string[] = [];
afterAll(() => {
  for (const key of ENV_KEYS) {
    if (savedEnv[key] === undefined) delete process.env[key];
    else process.env[key] = savedEnv[key];
  }
  setCpuVariant('auto');
  setThreads(0);
  console.log(`${FILE} (seed ${seed}):\n  ${summary.join('\n  ')}`);
});

/** Problems of b against a as bit-exact codes (at most 10). */
function bitDiffs(a: SparseCodes, b: SparseCodes): string[] {
  const out: string[] = [];
  if (a.indptr.join() !== b.indptr.join()) out.push('indptr differs');
  const n = Math.max(a.indices.length, b.indices.length);
  const av = new Uint32Array(a.values.buffer, a.values.byteOffset, a.values.length);
  const bv = new Uint32Array(b.values.buffer, b.values.byteOffset, b.values.length);
  for (let e = 0; e < n && out.length < 10; e++) {
    if (a.indices[e] !== b.indices[e]) out.push(`entry ${e}: latent ${a.indices[e]} vs ${b.indices[e]}`);
    else if (av[e] !== bv[e]) out.push(`entry ${e} (latent ${a.indices[e]}): value ${a.values[e]} vs ${b.values[e]}`);
  }
  return out;
}

interface ExactOptions {
  env?: Record<string, string | undefined>;
  /** Also judge against the float64 reference. */
  reference?: boolean;
  /** Rows need not all be screened (e.g. a forced fallback still counts rows as screened). */
  anyRows?: boolean;
}

/**
 * Loads w with SAEKIT_SCREEN=screen, encodes x screened and with SAEKIT_SCREEN=0 (same SAE),
 * and demands bit-identical codes; returns the screen's counters.
 */
async function exact(label: string, screen: Screen, w: SaeWeights, x: Float32Array, o: ExactOptions = {}) {
  const rows = x.length / w.config.dIn;
  const where = `${screen}: ${label} (seed ${seed})`;
  const sae = await withEnv({ SAEKIT_SCREEN: screen }, () => createSae(w, { device: 'cpu' }));
  try {
    const { codes, delta } = await withEnv({ SAEKIT_SCREEN: screen, ...o.env }, () => encodeCounting(sae, x));
    const plain = await withEnv({ SAEKIT_SCREEN: '0' }, () => encodeCounting(sae, x));
    expect(plain.delta.rows, `${where}: SAEKIT_SCREEN=0 still screened`).toBe(0);
    if (!o.anyRows) expect(delta.rows, `${where}: rows screened`).toBe(rows);
    if (delta.rows > 0) expect(sae.screenStats.screen, where).toBe(screen);
    expect(bitDiffs(codes, plain.codes), `${where}: screened vs SAEKIT_SCREEN=0`).toEqual([]);
    if (o.reference) expect(compareCodes(w, referenceEncode(w, x), codes), `${where}: vs float64`).toEqual([]);
    const screened = delta.rows - delta.fallbacks;
    summary.push(`${screen} ${label}: ${rows} rows, candidates/screened row ${screened > 0 ? (delta.candidates / screened).toFixed(1) : '-'}, fallbacks ${delta.fallbacks}`);
    return delta;
  } finally {
    sae.dispose();
  }
}

/** Half SAE-like rows (sparse sums of decoder rows + noise), half isotropic noise. */
function mixedRows(w: SaeWeights, rows: number, s: number): Float32Array {
  const x = syntheticActivations(w, rows, { seed: s, active: 4, noise: 0.3 });
  const g = gaussianRows(rows, w.config.dIn, new Rng(s + 1), 0.3);
  for (let r = 1; r < rows; r += 2) x.set(g.subarray(r * w.config.dIn, (r + 1) * w.config.dIn), r * w.config.dIn);
  return x;
}

for (const screen of SCREENS) {
  const runs = info.screens.includes(screen);
  describe.skipIf(!runs)(`${screen} screen: bit-identical to SAEKIT_SCREEN=0`, () => {
    const setup = (threads = 2) => {
      setCpuVariant('avx512');
      setThreads(threads);
    };

    describe('random data at awkward shapes', () => {
      const shapes = [
        { dIn: 67, dSae: 500, k: 7, rows: 200 }, // d_in not a multiple of 4
        { dIn: 130, dSae: 1000, k: 16, rows: 150, transposed: true }, // not a multiple of 4 or 64
        { dIn: 768, dSae: 3000, k: 32, rows: 100 },
        { dIn: 64, dSae: 300, k: 1, rows: 200 }, // k = 1
        { dIn: 67, dSae: 300, k: 300, rows: 64 }, // k = d_sae
        { dIn: 3, dSae: 50, k: 5, rows: 64 },
        { dIn: 1, dSae: 40, k: 40, rows: 64 },
        { dIn: 1100, dSae: 400, k: 16, rows: 64 }, // several int8 quad slices
      ];
      shapes.forEach((c, n) => {
        const name = `d_in ${c.dIn} d_sae ${c.dSae} k ${c.k} rows ${c.rows}${c.transposed ? ' transposed' : ''}`;
        it(name, async () => {
          setup();
          const w = topkSae({ ...c, seed: seed + n });
          await exact(name, screen, w, mixedRows(w, c.rows, seed + 100 + n), { reference: true });
        });
      });

      // Few rows on two threads: the latent panels are split between the threads and each part
      // screens its own range (cpu_model.h, encode_screened); k = 1 and k = d_sae included.
      for (const c of [
        { dIn: 130, dSae: 900, k: 12, rows: 1 },
        { dIn: 67, dSae: 500, k: 1, rows: 7 },
        { dIn: 96, dSae: 333, k: 333, rows: 3 },
        { dIn: 768, dSae: 2000, k: 32, rows: 13 },
      ]) {
        it(`latent split: ${c.rows} rows on 2 threads, d_in ${c.dIn} d_sae ${c.dSae} k ${c.k}`, async () => {
          setup(2);
          const w = topkSae({ ...c, seed: seed + 30 + c.rows });
          await exact(`split ${c.rows} rows k ${c.k}`, screen, w, mixedRows(w, c.rows, seed + 31 + c.rows), { reference: true });
        });
      }

      it('one row (one thread: no latent split)', async () => {
        setup(1);
        const w = topkSae({ dIn: 130, dSae: 900, k: 12, seed: seed + 20 });
        await exact('1 row', screen, w, mixedRows(w, 1, seed + 21), { reference: true });
        setup();
      });
    });

    describe('adversarial data', () => {
      it('near-ties at the k-th value (near-duplicate columns, relative perturbations 1e-7..1e-3)', async () => {
        setup();
        const dIn = 131;
        const dSae = 640;
        const k = 11;
        const rng = new Rng(seed + 200);
        const w = topkSae({ dIn, dSae, k, seed: seed + 200, biasScale: 0.01 });
        const perm = Array.from({ length: dSae }, (_, j) => j).sort(() => rng.uniform() - 0.5);
        const rels = [1e-7, 2e-7, 5e-7, 1e-6, 1e-5, 1e-4, 1e-3];
        const bases: number[] = [];
        for (let g = 0; g < dSae / 8; g++) {
          bases.push(perm[g * 8]!);
          rels.forEach((rel, c) => copyLatent(w, perm[g * 8]!, perm[g * 8 + 1 + c]!, rel, rng));
        }
        const rows = 128;
        const x = new Float32Array(rows * dIn);
        for (let r = 0; r < rows; r++) {
          const A = column(w, bases[rng.int(bases.length)]!);
          const B = column(w, bases[rng.int(bases.length)]!);
          const c1 = 1.6 + 0.4 * rng.uniform();
          const c2 = 1 + 0.2 * rng.uniform();
          for (let i = 0; i < dIn; i++) x[r * dIn + i] = c1 * A[i]! + c2 * B[i]! + w.b_dec[i]! + 1e-3 * rng.normal();
        }
        await exact('near-ties', screen, w, x);
      });

      it('many identical values (groups of 20 identical latents; zero rows: bias ties)', async () => {
        setup();
        const dIn = 24;
        const dSae = 500;
        const k = 10;
        const rng = new Rng(seed + 300);
        const w = topkSae({ dIn, dSae, k, seed: seed + 300 });
        const perm = Array.from({ length: dSae }, (_, j) => j).sort(() => rng.uniform() - 0.5);
        for (let g = 0; g < 25; g++) for (let t = 1; t < 20; t++) copyLatent(w, perm[g * 20]!, perm[g * 20 + t]!, 0, rng);
        const x = gaussianRows(128, dIn, rng);
        for (let r = 0; r < 128; r += 4) x.fill(0, r * dIn, (r + 1) * dIn);
        await exact('identical latents', screen, w, x, { reference: true });
      });

      it('huge and tiny row norms (1e-36 .. 1e30)', async () => {
        setup();
        const dIn = 96;
        const rng = new Rng(seed + 400);
        const w = topkSae({ dIn, dSae: 1000, k: 16, seed: seed + 400, applyBDec: false, biasScale: 0.1 });
        const scales = [2 ** -100, 1e-36, 1e-30, 1e-20, 1e-3, 1, 1e3, 2 ** 50, 1e15, 1e30];
        const base = mixedRows(w, 12, seed + 401);
        const x = new Float32Array(base.length * scales.length);
        scales.forEach((s, t) => {
          for (let i = 0; i < base.length; i++) x[t * base.length + i] = base[i]! * s;
        });
        await exact('row norms', screen, w, x);
      });

      it('a latent with a huge positive bias and one with a huge negative bias', async () => {
        setup();
        const dIn = 41;
        const dSae = 400;
        const rng = new Rng(seed + 500);
        const w = topkSae({ dIn, dSae, k: 8, seed: seed + 500 });
        w.b_enc[rng.int(dSae)] = 1e6;
        w.b_enc[rng.int(dSae)] = -1e6;
        await exact('huge biases', screen, w, mixedRows(w, 128, seed + 501), { reference: true });
      });

      it('columns with one huge element (coarse int8 scales) and rows with outliers', async () => {
        setup();
        const dIn = 77;
        const dSae = 800;
        const rng = new Rng(seed + 600);
        const w = topkSae({ dIn, dSae, k: 12, seed: seed + 600 });
        for (let j = 0; j < dSae; j += 3) setW(w, rng.int(dIn), j, 200 * (rng.uniform() < 0.5 ? -1 : 1));
        const x = mixedRows(w, 128, seed + 601);
        for (let r = 0; r < 128; r += 2) x[r * dIn + rng.int(dIn)] = 300 * rng.normal();
        await exact('coarse scales + outliers', screen, w, x, { reference: true, anyRows: true });
      });
    });

    describe('fp32 fallback', () => {
      it('SAEKIT_SCREEN_CAP = k forces the fallback; still bit-identical', async () => {
        setup();
        const w = topkSae({ dIn: 66, dSae: 1000, k: 8, seed: seed + 1000 });
        const x = mixedRows(w, 128, seed + 1001);
        const d = await exact('SAEKIT_SCREEN_CAP=8', screen, w, x, { env: { SAEKIT_SCREEN_CAP: '8' } });
        expect(d.fallbacks).toBeGreaterThan(64);
      });
    });

    it('jumprelu on a latent split (6 rows, 2 threads): bit-identical', async () => {
      setup();
      const w = syntheticSae({ dIn: 130, dSae: 2000, architecture: 'jumprelu', seed: seed + 1510 });
      const rng = new Rng(seed + 1511);
      w.threshold = new Float32Array(2000).map(() => 0.6 * (0.5 + rng.uniform()));
      await exact('jumprelu split', screen, w, syntheticActivations(w, 6, { seed: seed + 1512, active: 12, noise: 0.1 }), { anyRows: true });
    });

    it('jumprelu: bit-identical', async () => {
      setup();
      const w = syntheticSae({ dIn: 130, dSae: 2000, architecture: 'jumprelu', seed: seed + 1500 });
      const rng = new Rng(seed + 1501);
      w.threshold = new Float32Array(2000).map(() => 0.6 * (0.5 + rng.uniform()));
      await exact('jumprelu', screen, w, syntheticActivations(w, 150, { seed: seed + 1502, active: 12, noise: 0.1 }), { anyRows: true });
    });

    it('counterexample hunt: 120 random small problems built to make the screen miss a winner', async () => {
      setup();
      const failures: string[] = [];
      const norms: Normalization[] = ['none', 'none', 'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'];
      for (let p = 0; p < 120 && failures.length < 5; p++) {
        const ps = seed + 10_000 + p;
        const rng = new Rng(ps);
        const dIn = 2 + rng.int(70);
        const dSae = 2 + rng.int(300);
        const k = rng.uniform() < 0.5 ? 1 + rng.int(Math.min(dSae, 16)) : 1 + rng.int(dSae);
        const rows = 64 + rng.int(65);
        const norm = norms[rng.int(norms.length)]!;
        const w = topkSae({ dIn, dSae, k, seed: ps, norm, applyBDec: rng.uniform() < 0.5, transposed: rng.uniform() < 0.3, biasScale: 10 ** (-3 + 4 * rng.uniform()) });
        const spikes = rng.uniform() < 0.5;
        for (let j = 0; j < dSae; j++) {
          for (let i = 0; i < dIn; i++) setW(w, i, j, rng.normal());
          // One huge element: the latent's int8 scale is coarse, its other weights round to few levels.
          if (spikes && rng.uniform() < 0.5) setW(w, rng.int(dIn), j, (rng.uniform() < 0.5 ? -1 : 1) * 10 ** (1 + 2 * rng.uniform()));
          if (rng.uniform() < 0.2) scaleColumn(w, j, 10 ** (-3 + 6 * rng.uniform()));
        }
        for (let t = 0; t < dSae >> 3; t++) copyLatent(w, rng.int(dSae), rng.int(dSae), [0, 1e-7, 1e-5, 1e-3][rng.int(4)]!, rng);
        const x = new Float32Array(rows * dIn);
        for (let r = 0; r < rows; r++) {
          const kind = rng.uniform();
          if (kind < 0.05) continue;
          if (kind < 0.4) for (let i = 0; i < dIn; i++) x[r * dIn + i] = rng.normal();
          else {
            // Along a few latents (near their decision boundary), with outliers in some rows.
            for (let a = 1 + rng.int(4); a > 0; a--) {
              const j = rng.int(dSae);
              const c = rng.uniform() * 2;
              for (let i = 0; i < dIn; i++) x[r * dIn + i]! += c * getW(w, i, j);
            }
            if (rng.uniform() < 0.5) x[r * dIn + rng.int(dIn)]! += 50 * rng.normal();
          }
          const s = 10 ** (-3 + 6 * rng.uniform());
          for (let i = 0; i < dIn; i++) x[r * dIn + i]! *= s;
        }
        const sae = await withEnv({ SAEKIT_SCREEN: screen }, () => createSae(w, { device: 'cpu' }));
        try {
          const got = await withEnv({ SAEKIT_SCREEN: screen }, () => encodeCounting(sae, x));
          const plain = await withEnv({ SAEKIT_SCREEN: '0' }, () => sae.encode(x));
          const problems = bitDiffs(got.codes, plain);
          if (got.delta.rows !== rows) problems.push(`screened ${got.delta.rows} of ${rows} rows`);
          if (problems.length > 0) failures.push(`problem ${p} (d_in ${dIn} d_sae ${dSae} k ${k} ${norm}, spikes ${spikes}): ${problems.slice(0, 3).join('; ')}`);
        } finally {
          sae.dispose();
        }
      }
      expect(failures, `seed ${seed}`).toEqual([]);
      summary.push(`${screen} counterexample hunt: 120 problems, none found`);
    });
  });
}

describe.skipIf(!info.screens.includes('int8-256') || !cpuVariant().supported.includes('avx2'))('int8-256 screen under the avx2 CPU variant', () => {
  it('bit-identical to the avx2 fp32 kernel (rescoring by scalar fma chains)', async () => {
    setCpuVariant('avx2');
    setThreads(2);
    const w = topkSae({ dIn: 130, dSae: 1200, k: 16, seed: seed + 2000 });
    await exact('avx2 variant', 'int8-256', w, mixedRows(w, 150, seed + 2001), { reference: true });
    setCpuVariant('avx512');
  });
});

describe('SAEKIT_SCREEN values', () => {
  it('an unknown value is an error naming SAEKIT_SCREEN and the value, at load and at encode', async () => {
    setCpuVariant('auto');
    const w = topkSae({ dIn: 16, dSae: 64, k: 4, seed: seed + 3000 });
    await expect(withEnv({ SAEKIT_SCREEN: 'fp8' }, () => createSae(w, { device: 'cpu' }))).rejects.toThrow(/SAEKIT_SCREEN=fp8: unknown encode kernel/);
    await expect(withEnv({ SAEKIT_ENCODE_KERNEL: 'fp8' }, () => createSae(w, { device: 'cpu' }))).rejects.toThrow(/SAEKIT_ENCODE_KERNEL=fp8: unknown encode kernel/);
    expect(cpuVariant().encodeKernelError ?? '').toBe('');
    const sae = await createSae(w, { device: 'cpu' });
    try {
      await expect(withEnv({ SAEKIT_SCREEN: 'fp8' }, () => sae.encode(gaussianRows(64, 16, new Rng(1))))).rejects.toThrow(/SAEKIT_SCREEN=fp8/);
      await sae.encode(gaussianRows(64, 16, new Rng(1))); // still usable
    } finally {
      sae.dispose();
    }
  });

  const missing = SCREENS.filter((s) => !info.screens.includes(s));
  it.skipIf(missing.length === 0)(`a screen this CPU cannot run is an error (${missing.join(', ') || 'none here'})`, async () => {
    const w = topkSae({ dIn: 16, dSae: 64, k: 4, seed: seed + 3001 });
    for (const s of missing)
      await expect(withEnv({ SAEKIT_SCREEN: s }, () => createSae(w, { device: 'cpu' }))).rejects.toThrow(`SAEKIT_SCREEN=${s}: this CPU cannot run`);
  });

  it('unset and auto are the measured choice, 0 / off / fp32 the plain kernel, a name that kernel; SAEKIT_ENCODE_KERNEL wins', () => {
    expect(withEnvSync({ SAEKIT_SCREEN: undefined }, () => cpuVariant().encodeKernel)).toBe('auto');
    expect(withEnvSync({ SAEKIT_SCREEN: 'auto' }, () => cpuVariant().encodeKernel)).toBe('auto');
    expect(withEnvSync({ SAEKIT_SCREEN: '0' }, () => cpuVariant().encodeKernel)).toBe('fp32');
    expect(withEnvSync({ SAEKIT_SCREEN: 'off' }, () => cpuVariant().encodeKernel)).toBe('fp32');
    expect(withEnvSync({ SAEKIT_ENCODE_KERNEL: 'fp32', SAEKIT_SCREEN: 'auto' }, () => cpuVariant().encodeKernel)).toBe('fp32');
    expect(withEnvSync({ SAEKIT_ENCODE_KERNEL: 'amx-bf16-emu' }, () => cpuVariant().encodeKernelSource)).toBe('SAEKIT_ENCODE_KERNEL=amx-bf16-emu');
    // The candidates of the measured choice: fp32 first, the screens this CPU runs, never the emulation.
    expect(info.kernels[0]).toBe('fp32');
    expect(info.kernels).not.toContain('amx-bf16-emu');
    for (const s of info.screens) if (s !== 'amx-bf16-emu') expect(info.kernels).toContain(s);
  });
});

function withEnvSync<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved: Record<string, string | undefined> = {};
  for (const [key, v] of Object.entries(vars)) {
    saved[key] = process.env[key];
    if (v === undefined) delete process.env[key];
    else process.env[key] = v;
  }
  try {
    return fn();
  } finally {
    for (const [key, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[key];
      else process.env[key] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Approximate mode: the top k of the screened values, unrescored. Upper bounds of the screens'
// margins computed here from the data (the native margin uses the actual rounding errors, which
// these bound): bf16 rounds each element to 2^-9 relative; int8 steps are max|.| / 127, so each
// element is off by at most half a step.
function marginUpperBound(screen: Screen, w: SaeWeights): (xr: Float64Array) => number {
  const { dIn, dSae } = w.config;
  let wn = 0;
  let wErr = 0;
  for (let j = 0; j < dSae; j++) {
    const col = column(w, j);
    const n = Math.hypot(...col);
    const amax = Math.max(...col.map(Math.abs));
    const err = screen === 'bf16' ? 2 ** -9 * n : (Math.sqrt(dIn) * amax) / 254;
    wn = Math.max(wn, n + err);
    wErr = Math.max(wErr, err);
  }
  const bMax = Math.max(...w.b_enc.map(Math.abs));
  return (xr) => {
    const xn = Math.hypot(...xr);
    const xErr = screen === 'bf16' ? 2 ** -9 * xn : (Math.sqrt(dIn) * Math.max(...xr.map(Math.abs))) / 254;
    return xn * wErr + xErr * wn + 1e-5 * ((xn + xErr) * wn + bMax) + 1e-30;
  };
}

for (const screen of SCREENS) {
  describe.skipIf(!info.screens.includes(screen))(`${screen} screen: approximate mode (SAEKIT_SCREEN_APPROX=1)`, () => {
    it('close to exact: top-k overlap, values within the screen error bound; off by default', async () => {
      setCpuVariant('avx512');
      setThreads(2);
      const dIn = 200;
      const dSae = 3000;
      const k = 24;
      const w = topkSae({ dIn, dSae, k, seed: seed + 4000, applyBDec: false });
      const rows = 128;
      const x = mixedRows(w, rows, seed + 4001);
      const sae = await withEnv({ SAEKIT_SCREEN: screen }, () => createSae(w, { device: 'cpu' }));
      try {
        const byDefault = await withEnv({ SAEKIT_SCREEN: screen }, () => sae.encode(x));
        const exactCodes = await withEnv({ SAEKIT_SCREEN: '0' }, () => sae.encode(x));
        expect(bitDiffs(byDefault, exactCodes), 'without SAEKIT_SCREEN_APPROX the encode is exact').toEqual([]);
        const approx = await withEnv({ SAEKIT_SCREEN: screen, SAEKIT_SCREEN_APPROX: '1' }, () => encodeCounting(sae, x));
        expect(approx.delta.rows).toBe(rows);
        const ref = referenceEncode(w, x);
        const bound = marginUpperBound(screen, w);
        let shared = 0;
        let total = 0;
        let differing = 0;
        for (let r = 0; r < rows; r++) {
          const xr = Float64Array.from(x.subarray(r * dIn, (r + 1) * dIn));
          const m = bound(xr);
          const ex = new Set(exactCodes.indices.subarray(exactCodes.indptr[r]!, exactCodes.indptr[r + 1]!));
          const b = approx.codes.indptr[r]!;
          const e = approx.codes.indptr[r + 1]!;
          expect(e - b, `row ${r}: k entries`).toBe(ex.size);
          const pre = ref[r]!.pre;
          const kth = Array.from(pre).sort((p, q) => q - p)[k - 1]!;
          for (let t = b; t < e; t++) {
            const j = approx.codes.indices[t]!;
            const v = approx.codes.values[t]!;
            expect(Math.abs(v - pre[j]!), `row ${r} latent ${j}: |screened - exact| <= bound ${m}`).toBeLessThanOrEqual(m);
            expect(pre[j]!, `row ${r} latent ${j}: within 2 bounds of the k-th`).toBeGreaterThanOrEqual(kth - 2 * m);
            if (ex.has(j)) shared++;
            if (v !== pre[j]) differing++;
          }
          total += ex.size;
        }
        summary.push(`${screen} approximate: top-k overlap ${((100 * shared) / total).toFixed(1)}%, ${differing} values not the exact ones`);
        expect(shared / total).toBeGreaterThan(0.8);
        expect(differing, 'the approximate values are the screened ones').toBeGreaterThan(0);
      } finally {
        sae.dispose();
      }
    });
  });
}
