// The native side's own checks (issue 17, item 3): the TS layer validates every argument, but
// a caller that reaches the addon directly (or a bug in the TS layer) must get an error, never
// an out-of-bounds read. These calls go to the addon itself, past src/sae.ts's validation; the
// sanitizer run (scripts/sanitize.sh) runs this file under AddressSanitizer, where a missed
// check is a report rather than a silent wrong read.
import { describe, expect, it } from 'vitest';
import { addon, type AddonSae } from '../src/addon.js';
import { randomWeights } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const dIn = 7;
const dSae = 33;

async function nativeSae(): Promise<AddonSae> {
  const w = randomWeights('topk', dIn, dSae, freshSeed('native.guards.test'), 3);
  const c = w.config;
  return addon().createSae(
    { dIn, dSae, k: 3, architecture: c.architecture, normalizeActivations: c.normalizeActivations, applyBDecToInput: c.applyBDecToInput },
    { W_enc: w.W_enc, encTransposed: w.encTransposed, b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec, threshold: w.threshold },
    'cpu',
  );
}

async function nativeError(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('the native call succeeded');
}

describe('the addon refuses what would read out of bounds', () => {
  it('decode: offsets and indices outside the codes, or outside [0, d_sae)', async () => {
    const sae = await nativeSae();
    const good = { indptr: Uint32Array.of(0, 2, 3), indices: Int32Array.of(0, 32, 5), values: Float32Array.of(1, 2, 3) };
    const out = new Float32Array(2 * dIn).fill(Number.NaN);
    await sae.decode(good, out);
    expect(out.every(Number.isFinite)).toBe(true);
    const bad: [string, object, string][] = [
      ['index = d_sae', { ...good, indices: Int32Array.of(0, 33, 5) }, 'codes.indices[1] = 33 is outside [0, d_sae = 33)'],
      ['negative index', { ...good, indices: Int32Array.of(0, 1, -1) }, 'codes.indices[2] = -1'],
      ['huge index', { ...good, indices: Int32Array.of(2 ** 31 - 1, 1, 2) }, 'codes.indices[0] = 2147483647'],
      ['offset past the codes', { ...good, indptr: Uint32Array.of(0, 2, 4) }, 'codes.indptr[2] = 4'],
      ['offsets going back', { ...good, indptr: Uint32Array.of(0, 3, 2) }, 'codes.indptr[2] = 2 is below'],
      ['first offset not 0', { ...good, indptr: Uint32Array.of(1, 2, 3) }, 'codes.indptr[0] is 1'],
      ['fewer values than indices', { ...good, values: Float32Array.of(1, 2) }, 'past the 2 stored codes'],
      ['empty indptr', { ...good, indptr: new Uint32Array(0) }, 'indptr is empty'],
      ['indices of the wrong type', { ...good, indices: Float64Array.of(0, 1, 2) }, 'codes.indices is not a typed array'],
      ['missing values', { indptr: good.indptr, indices: good.indices }, 'codes.values is not a typed array'],
      ['rowScale shorter than the rows', { ...good, rowScale: Float32Array.of(1), rowShift: Float32Array.of(0, 0) }, 'rowScale/rowShift'],
    ];
    for (const [what, codes, message] of bad) {
      expect(await nativeError(() => sae.decode(codes as never, new Float32Array(2 * dIn))), what).toContain(message);
    }
    expect(await nativeError(() => sae.decode(good, new Float32Array(2 * dIn - 1)))).toContain('fewer than rows * d_in = 14');
    sae.dispose();
  });

  it('encode: more rows than the input holds, negative rows, a wrong element type', async () => {
    const sae = await nativeSae();
    const x = new Float32Array(3 * dIn).fill(0.5);
    const codes = await sae.encode(x, 3);
    expect(codes.indptr).toEqual(Uint32Array.of(0, 3, 6, 9));
    expect(await nativeError(() => sae.encode(x, 4))).toContain('4 rows of d_in 7 need more than the 21 floats given');
    expect(await nativeError(() => sae.encode(x, -1))).toContain('-1 rows');
    expect(await nativeError(() => sae.encode(new Float64Array(21) as never, 3))).toContain('encode(x: Float32Array, rows: number)');
    sae.dispose();
    expect(await nativeError(() => sae.encode(x, 1))).toContain('disposed');
  });
});
