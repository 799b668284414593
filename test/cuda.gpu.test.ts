// The CUDA backend on a real GPU, through the JS API: every architecture against the float64
// reference at awkward and realistic shapes (the tensor-core screen for topk k <= 64, the
// fp32 kernel above), per-row normalization, batches split into chunks in flight, decode
// into a poisoned buffer, and what `auto` resolves to. Skipped (and shown as skipped) where
// no CUDA device passes the backend's self-test; the kernels themselves are tested on every
// machine under CPU emulation (cuda.emu.test.ts).
import { describe, expect, it } from 'vitest';
import { createSae } from '../src/sae.js';
import { backends, resolveDevice } from '../src/system.js';
import { syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { Architecture, Normalization } from '../src/types.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';
import { freshSeed, pickCodeRows, pickRows } from './helpers/testData.js';

const cuda = backends().find((b) => b.name === 'cuda');
const seed = freshSeed('cuda.gpu.test');

describe.skipIf(!cuda?.available)('CUDA backend on a GPU', () => {
  it("'auto' resolves to cuda and the backend names the device and its self-test", () => {
    expect(resolveDevice('auto')).toBe('cuda');
    expect(cuda!.detail).toMatch(/compute capability/);
    expect(cuda!.detail).toMatch(/self-test passed/);
  });

  const cases: Array<{ architecture: Architecture; dIn: number; dSae: number; k?: number; rows: number; norm?: Normalization }> = [
    { architecture: 'topk', dIn: 768, dSae: 24576, k: 32, rows: 700 },
    { architecture: 'topk', dIn: 67, dSae: 333, k: 1, rows: 1 },
    { architecture: 'topk', dIn: 130, dSae: 200, k: 64, rows: 257 },
    { architecture: 'topk', dIn: 96, dSae: 45, k: 45, rows: 9 },
    { architecture: 'topk', dIn: 96, dSae: 2000, k: 100, rows: 50 },
    { architecture: 'topk', dIn: 128, dSae: 1024, k: 16, rows: 300, norm: 'layer_norm' },
    { architecture: 'standard', dIn: 33, dSae: 500, rows: 100 },
    { architecture: 'jumprelu', dIn: 64, dSae: 700, rows: 100, norm: 'constant_norm_rescale' },
  ];
  it.each(cases)('$architecture d_in $dIn d_sae $dSae k $k rows $rows $norm: encode and decode match float64', async (c) => {
    const w = syntheticSae({ ...c, ...(c.norm && { normalizeActivations: c.norm }), seed: seed + c.dSae });
    const x = syntheticActivations(w, c.rows, { seed: seed + 1 });
    const sae = await createSae(w, { device: 'cuda' });
    try {
      expect(sae.device).toBe('cuda');
      const codes = await sae.encode(x);
      // The reference on a sample of rows (float64 encode of 24576 latents is slow in JS).
      const rows = [...new Set([0, c.rows - 1, Math.floor(c.rows / 2), Math.floor(c.rows / 3)])];
      expect(compareCodes(w, referenceEncode(w, pickRows(x, c.dIn, rows)), pickCodeRows(codes, rows))).toEqual([]);
      const out = new Float32Array(c.rows * c.dIn).fill(Number.NaN);
      await sae.decode(codes, out);
      const sample = pickCodeRows(codes, rows);
      const ref = referenceDecode(w, sample);
      rows.forEach((r, t) => {
        for (let i = 0; i < c.dIn; i++) expect(Math.abs(out[r * c.dIn + i]! - ref.x[t * c.dIn + i]!)).toBeLessThanOrEqual(ref.tol[t * c.dIn + i]!);
      });
    } finally {
      sae.dispose();
    }
  });

  it('a batch split in two chunks in flight equals the same rows encoded alone', async () => {
    const w = syntheticSae({ architecture: 'topk', dIn: 64, dSae: 512, k: 8, seed });
    const x = syntheticActivations(w, 70000, { seed: seed + 2 });
    const sae = await createSae(w, { device: 'cuda' });
    try {
      const all = await sae.encode(x);
      const part = await sae.encode(x.subarray(40000 * 64, 40100 * 64));
      expect(Array.from(part.indices)).toEqual(Array.from(all.indices.subarray(all.indptr[40000], all.indptr[40100])));
      expect(Array.from(part.values)).toEqual(Array.from(all.values.subarray(all.indptr[40000], all.indptr[40100])));
    } finally {
      sae.dispose();
    }
  });
});

describe.skipIf(cuda?.available)('CUDA backend without a usable GPU', () => {
  it('is reported with the reason, and auto stays on the CPU', () => {
    expect(resolveDevice('auto')).toBe('cpu');
    if (cuda) expect(cuda.detail.length).toBeGreaterThan(10);
  });
});
