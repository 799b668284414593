// Every CPU kernel variant against the float64 reference (test/helpers/reference.js), on fresh
// random data at awkward sizes, for every architecture and normalization, with 1 and 2 threads
// (2 threads on a few rows also exercises the latent-split merge path).
import { afterAll, describe, expect, it } from 'vitest';
import { createSae, cpuVariant, setCpuVariant, setThreads, type SparseCodes } from '../src/index.js';
import { Rng, syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { Architecture, Normalization, SaeWeights } from '../src/types.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';

const variants = cpuVariant().supported;
const seed = (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0; // fresh data each run
console.log(`encode.test seed ${seed}, variants ${variants.join(', ')}`);

afterAll(() => {
  setCpuVariant('auto');
  setThreads(0);
});

interface Case {
  dIn: number;
  dSae: number;
  rows: number;
  architecture: Architecture;
  k?: number;
  norm?: Normalization;
  applyBDec?: boolean;
  transposed?: boolean;
}

const cases: Case[] = [
  { dIn: 16, dSae: 32, rows: 1, architecture: 'topk', k: 1 },
  { dIn: 33, dSae: 97, rows: 37, architecture: 'topk', k: 7 },
  { dIn: 33, dSae: 97, rows: 5, architecture: 'topk', k: 97 }, // k = d_sae
  { dIn: 64, dSae: 1000, rows: 200, architecture: 'topk', k: 32, transposed: true },
  { dIn: 45, dSae: 333, rows: 171, architecture: 'topk', k: 16, norm: 'constant_norm_rescale' },
  { dIn: 45, dSae: 333, rows: 29, architecture: 'topk', k: 16, norm: 'layer_norm', applyBDec: false },
  { dIn: 31, dSae: 70, rows: 50, architecture: 'standard' },
  { dIn: 64, dSae: 515, rows: 180, architecture: 'standard', norm: 'layer_norm' },
  { dIn: 17, dSae: 129, rows: 3, architecture: 'jumprelu', applyBDec: false },
  { dIn: 48, dSae: 300, rows: 90, architecture: 'jumprelu', norm: 'constant_norm_rescale' },
  // d_in past the decode's 256-column register blocks, with and without a tail.
  { dIn: 300, dSae: 160, rows: 23, architecture: 'topk', k: 12, norm: 'layer_norm' },
  { dIn: 512, dSae: 96, rows: 17, architecture: 'standard', norm: 'constant_norm_rescale' },
];

function makeSae(c: Case, s: number): SaeWeights {
  const w = syntheticSae({
    dIn: c.dIn,
    dSae: c.dSae,
    architecture: c.architecture,
    ...(c.k !== undefined ? { k: c.k } : {}),
    normalizeActivations: c.norm ?? 'none',
    applyBDecToInput: c.applyBDec ?? true,
    encTransposed: c.transposed ?? false,
    seed: s,
  });
  // Spread the biases so some latents are positive without input (relu boundary exercised).
  const rng = new Rng(s + 7);
  for (let j = 0; j < c.dSae; j++) w.b_enc[j] = 0.2 * rng.normal();
  return w;
}

async function checkEncodeDecode(w: SaeWeights, x: Float32Array): Promise<SparseCodes> {
  const sae = await createSae(w, { device: 'cpu' });
  try {
    const codes = await sae.encode(x);
    const problems = compareCodes(w, referenceEncode(w, x), codes);
    expect(problems).toEqual([]);
    const out = new Float32Array(x.length).fill(Number.NaN); // poisoned
    await sae.decode(codes, out);
    const ref = referenceDecode(w, codes);
    let bad = 0;
    for (let i = 0; i < out.length; i++) if (!(Math.abs(out[i]! - ref.x[i]!) <= ref.tol[i]!)) bad++;
    expect(bad).toBe(0);
    return codes;
  } finally {
    sae.dispose();
  }
}

describe.each(variants)('CPU variant %s', (variant) => {
  for (const threads of [1, 2]) {
    describe(`${threads} thread(s)`, () => {
      cases.forEach((c, n) => {
        const name = `${c.architecture} d_in ${c.dIn} d_sae ${c.dSae} rows ${c.rows} k ${c.k ?? '-'} ${c.norm ?? 'none'}${c.transposed ? ' transposed' : ''}`;
        it(name, async () => {
          setCpuVariant(variant);
          setThreads(threads);
          const w = makeSae(c, seed + n);
          const x = syntheticActivations(w, c.rows, { seed: seed + 100 + n, active: 4, noise: 0.3 });
          const codes = await checkEncodeDecode(w, x);
          if (c.architecture === 'topk') expect(codes.indices.length).toBeGreaterThan(0);
        });
      });
    });
  }

  it('exact ties go to the lower latent index', async () => {
    setCpuVariant(variant);
    setThreads(2);
    // Every W_enc column and bias identical: all pre-activations are bit-identical.
    const dIn = 24;
    const dSae = 200;
    const w = syntheticSae({ dIn, dSae, architecture: 'topk', k: 5, seed: seed + 1 });
    const col = new Rng(seed).fillNormal(new Float32Array(dIn));
    for (let i = 0; i < dIn; i++) for (let j = 0; j < dSae; j++) w.W_enc[i * dSae + j] = col[i]!;
    w.b_enc.fill(1000); // far above any |x . col|, so relu keeps them all
    const sae = await createSae(w);
    const x = syntheticActivations(w, 3, { seed });
    const codes = await sae.encode(x);
    sae.dispose();
    for (let r = 0; r < 3; r++) expect(Array.from(codes.indices.subarray(codes.indptr[r], codes.indptr[r + 1]))).toEqual([0, 1, 2, 3, 4]);
  });

  it('near-ties at the k-th value and duplicate columns', async () => {
    setCpuVariant(variant);
    setThreads(2);
    const dIn = 40;
    const dSae = 300;
    const w = syntheticSae({ dIn, dSae, architecture: 'topk', k: 9, seed: seed + 2 });
    // Latents in pairs (j, j + 150) with identical columns, biases a few ulps apart.
    for (let i = 0; i < dIn; i++) for (let j = 0; j < 150; j++) w.W_enc[i * dSae + j + 150] = w.W_enc[i * dSae + j]!;
    for (let j = 0; j < 150; j++) w.b_enc[j + 150] = w.b_enc[j]! * (1 + 2 ** -22);
    const x = syntheticActivations(w, 64, { seed: seed + 3, active: 3 });
    await checkEncodeDecode(w, x);
  });
});

// The top-k starts each row at a threshold hint learned from earlier rows and re-encodes the
// rows where fewer than k values beat it. SAEKIT_HINT_SCALE inflates the hints so that some
// or all rows defeat them; results must stay exact.
describe.each(variants)('top-k threshold hints (%s)', (variant) => {
  it.each(['1.5', '1e6'])('hints scaled by %s: defeated rows are re-encoded, results exact', async (scale) => {
    setCpuVariant(variant);
    setThreads(1); // blocks run in order, so block 1 teaches the hint block 2 uses
    const dIn = 64;
    const w = syntheticSae({ dIn, dSae: 700, architecture: 'topk', k: 6, seed: seed + 5 });
    w.b_enc.fill(0.01);
    const sae = await createSae(w);
    process.env.SAEKIT_SCREEN = '0'; // the hints belong to the plain fp32 path
    try {
      const x = syntheticActivations(w, 400, { seed: seed + 6, active: 8, noise: 0.2 });
      await sae.encode(x); // learn a hint
      process.env.SAEKIT_HINT_SCALE = scale;
      const codes = await sae.encode(x);
      expect(compareCodes(w, referenceEncode(w, x), codes)).toEqual([]);
      expect(sae.hintMisses).toBeGreaterThan(0);
      if (scale === '1e6') expect(sae.hintMisses).toBeGreaterThanOrEqual(400); // every row of call 2
    } finally {
      delete process.env.SAEKIT_HINT_SCALE;
      delete process.env.SAEKIT_SCREEN;
      sae.dispose();
    }
  });
});
