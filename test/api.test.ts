// The typed API's contract (src/sae.ts, src/codes.ts, src/system.ts): every misuse is a
// named error class whose message names the thing at fault, bad input never crashes the
// process, lifetime (dispose) is explicit and safe, and the edge cases the semantics define
// (0 rows, k = 1, k = d_sae, concurrent calls) behave as defined. Results are judged by the
// float64 reference (test/helpers/reference.js) on fresh random data.
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  FormatError,
  SaekitError,
  ValidationError,
  backends,
  cpuVariant,
  createSae,
  loadSae,
  resolveTrainingDevice,
  saveSaeLens,
  setCpuVariant,
  setThreads,
  threads,
  trainingBackends,
  validateCodes,
  type Sae,
  type SparseCodes,
} from '../src/index.js';
import { Rng, syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { Architecture, Normalization, SaeWeights } from '../src/types.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';
import { freshSeed, pickCodeRows, pickRows, usableDevices } from './helpers/testData.js';

const seed = freshSeed('api.test');
const dirs = tempDirs();
afterAll(async () => {
  setThreads(0);
  setCpuVariant('auto');
  await dirs.cleanup();
});

let nextSeed = seed;
function weights(o: { dIn?: number; dSae?: number; architecture?: Architecture; k?: number; norm?: Normalization } = {}): SaeWeights {
  const w = syntheticSae({
    dIn: o.dIn ?? 33,
    dSae: o.dSae ?? 97,
    architecture: o.architecture ?? 'topk',
    ...(o.k !== undefined && { k: o.k }),
    normalizeActivations: o.norm ?? 'none',
    seed: ++nextSeed,
  });
  // Spread biases: some latents positive without input, some never (relu boundary exercised).
  const rng = new Rng(nextSeed);
  for (let j = 0; j < w.config.dSae; j++) w.b_enc[j] = 0.2 * rng.normal();
  return w;
}

function inputs(w: SaeWeights, rows: number): Float32Array {
  return syntheticActivations(w, rows, { seed: ++nextSeed, active: 4, noise: 0.3 });
}

/** Runs fn with a CPU SAE of w, disposing it afterwards. */
async function withSae<T>(w: SaeWeights, fn: (sae: Sae) => Promise<T>): Promise<T> {
  const sae = await createSae(w, { device: 'cpu' });
  try {
    return await fn(sae);
  } finally {
    sae.dispose();
  }
}

function expectMatchesReference(w: SaeWeights, x: Float32Array, codes: SparseCodes): void {
  expect(compareCodes(w, referenceEncode(w, x), codes)).toEqual([]);
}

describe('encode input validation', () => {
  it('rejects x that is not a Float32Array, naming x and what it got', async () => {
    const w = weights();
    await withSae(w, async (sae) => {
      await expectReject(() => sae.encode(new Float64Array(33) as unknown as Float32Array), ValidationError, 'Float32Array', 'for x', 'Float64Array(33)');
      await expectReject(() => sae.encode(Array(33).fill(0) as unknown as Float32Array), ValidationError, 'for x', 'array(33)');
      await expectReject(() => sae.encode(undefined as unknown as Float32Array), ValidationError, 'for x', 'undefined');
    });
  });

  it('rejects x whose length is not a multiple of d_in, naming both', async () => {
    const w = weights();
    await withSae(w, async (sae) => {
      await expectReject(() => sae.encode(new Float32Array(33 * 4 + 5)), ValidationError, 'x has 137 elements', 'd_in 33');
      await expectReject(() => sae.encode(new Float32Array(32)), ValidationError, 'x has 32 elements', 'd_in 33');
    });
  });

  it('rejects NaN and +-Infinity at a known row and column, then keeps working', async () => {
    const w = weights({ norm: 'layer_norm' });
    const rng = new Rng(seed);
    await withSae(w, async (sae) => {
      const rows = 37;
      for (const bad of [Number.NaN, Infinity, -Infinity]) {
        const x = inputs(w, rows);
        const r = rng.int(rows);
        const c = rng.int(33);
        x[r * 33 + c] = bad;
        const err = await expectReject(() => sae.encode(x), ValidationError);
        expect(err.message).toBe(`x row ${r} has a non-finite value (NaN or Infinity) at column ${c}`);
      }
      // First and last element: the row/column arithmetic at both ends.
      const x = inputs(w, rows);
      x[0] = Number.NaN;
      expect((await expectReject(() => sae.encode(x), ValidationError)).message).toMatch(/^x row 0 .* column 0$/);
      x[0] = 0;
      x[x.length - 1] = Infinity;
      expect((await expectReject(() => sae.encode(x), ValidationError)).message).toMatch(new RegExp(`^x row ${rows - 1} .* column 32$`));
      // Several bad values across a batch big enough to be split between threads: the first
      // in row-major order is the one reported, every time.
      const big = inputs(w, 3000);
      const bad = [2999 * 33 + 1, 1400 * 33 + 20, 1400 * 33 + 9, 2200 * 33];
      for (const i of bad) big[i] = Number.NaN;
      for (let t = 0; t < 3; t++) {
        expect((await expectReject(() => sae.encode(big), ValidationError)).message).toMatch(/^x row 1400 .* column 9$/);
      }
      // The same Sae still encodes correctly afterwards.
      const good = inputs(w, rows);
      expectMatchesReference(w, good, await sae.encode(good));
    });
  });
});

describe('createSae validation', () => {
  it('rejects k = 0, k > d_sae and a non-integer k, naming k and d_sae', async () => {
    for (const k of [0, 98, 2.5, -1]) {
      const w = weights({ k: 5 });
      w.config.k = k;
      await expectReject(() => createSae(w), ValidationError, 'k must be an integer in [1, d_sae = 97]', `got ${k}`);
    }
    const noK = weights();
    delete noK.config.k;
    await expectReject(() => createSae(noK), ValidationError, 'k must be', 'got undefined');
  });

  it("rejects an unknown architecture ('gated'), naming it", async () => {
    const w = weights();
    (w.config as { architecture: string }).architecture = 'gated';
    await expectReject(() => createSae(w), ValidationError, "architecture 'gated'");
  });

  it('rejects an unknown normalization and non-positive sizes, naming them', async () => {
    const w = weights();
    (w.config as { normalizeActivations: string }).normalizeActivations = 'rms';
    await expectReject(() => createSae(w), ValidationError, "normalize_activations 'rms'");
    const z = weights();
    z.config.dIn = 0;
    await expectReject(() => createSae(z), ValidationError, 'config.dIn', 'received 0');
  });

  it('rejects weight arrays of the wrong length or type, naming the tensor and the expected size', async () => {
    const cases: Array<[keyof SaeWeights, (w: SaeWeights) => unknown, string[]]> = [
      ['W_enc', (w) => w.W_enc.subarray(1), ['W_enc has 3200 elements', 'expected 3201', 'd_in 33, d_sae 97']],
      ['b_enc', () => new Float32Array(98), ['b_enc has 98 elements', 'expected 97']],
      ['W_dec', (w) => new Float32Array(w.W_dec.length * 2), ['W_dec has 6402 elements', 'expected 3201']],
      ['b_dec', (w) => Float64Array.from(w.b_dec), ['Expected Float32Array for b_dec', 'Float64Array(33)']],
    ];
    for (const [key, make, parts] of cases) {
      const w = weights();
      (w as unknown as Record<string, unknown>)[key] = make(w);
      await expectReject(() => createSae(w), ValidationError, ...parts);
    }
    const j = weights({ architecture: 'jumprelu' });
    delete j.threshold;
    await expectReject(() => createSae(j), ValidationError, 'for threshold', 'undefined');
    const j2 = weights({ architecture: 'jumprelu' });
    j2.threshold = new Float32Array(96);
    await expectReject(() => createSae(j2), ValidationError, 'threshold has 96 elements', 'expected 97');
  });

  it("device 'cuda' without a usable GPU is a ValidationError naming cuda; an unknown device names device", async () => {
    const w = weights();
    const cuda = backends().find((b) => b.name === 'cuda');
    if (cuda?.available) {
      const sae = await createSae(w, { device: 'cuda' });
      expect(sae.device).toBe('cuda');
      sae.dispose();
    } else {
      await expectReject(() => createSae(w, { device: 'cuda' }), ValidationError, "device 'cuda'");
      await expectReject(() => loadSae('/nonexistent/sae', { device: 'cuda' }), ValidationError, "device 'cuda'"); // fails before reading
      const auto = await createSae(w);
      expect(auto.device).toBe('cpu');
      auto.dispose();
    }
    await expectReject(() => createSae(w, { device: 'tpu' as 'cpu' }), ValidationError, 'for device', '"tpu"');
  });

  it("training's device 'auto' is CUDA only where the CUDA trainer's self-test passed, and never for transcoders or matryoshka", () => {
    const listed = backends(), training = trainingBackends();
    expect(training.map((b) => b.name)).toEqual(listed.map((b) => b.name));
    expect(training[0]).toEqual(listed[0]); // the CPU trains wherever it runs
    const cuda = listed.find((b) => b.name === 'cuda'), tc = training.find((b) => b.name === 'cuda');
    if (cuda?.available) {
      // The self-test ran (native/cuda/cuda_trainer.h trainer_self_test) and says how it went.
      expect(tc!.detail).toMatch(/^trainer self-test (passed|failed, training stays on the CPU: .+)/);
      expect(resolveTrainingDevice('auto')).toBe(tc!.available ? 'cuda' : 'cpu');
    } else {
      // No usable device: not a place to train either, for the same reason.
      if (cuda) expect(tc).toEqual(cuda);
      expect(resolveTrainingDevice('auto')).toBe('cpu');
      expect(resolveTrainingDevice()).toBe('cpu');
    }
    expect(resolveTrainingDevice('auto', { transcoder: true })).toBe('cpu');
    expect(resolveTrainingDevice('auto', { matryoshka: true })).toBe('cpu');
    expect(resolveTrainingDevice('cpu')).toBe('cpu');
    expectThrow(() => resolveTrainingDevice('tpu' as 'cpu'), ValidationError, 'for device', '"tpu"');
    if (!cuda?.available) expectThrow(() => resolveTrainingDevice('cuda'), ValidationError, "device 'cuda'");
  });
});

describe('decode validation', () => {
  /** Valid codes of 3 rows from a real encode (at least 3 entries), to be broken by the tests. */
  async function codesFor(sae: Sae, w: SaeWeights): Promise<SparseCodes> {
    const codes = await sae.encode(inputs(w, 3));
    expect(codes.indptr[3]).toBeGreaterThan(2);
    return codes;
  }
  const copy = (c: SparseCodes): SparseCodes => ({
    ...c,
    indptr: c.indptr.slice(),
    indices: c.indices.slice(),
    values: c.values.slice(),
    ...(c.rowScale && { rowScale: c.rowScale.slice() }),
    ...(c.rowShift && { rowShift: c.rowShift.slice() }),
  });

  it('rejects indices out of range, naming the entry and the range', async () => {
    const w = weights();
    await withSae(w, async (sae) => {
      const good = await codesFor(sae, w);
      for (const j of [97, -1, 1 << 30]) {
        const c = copy(good);
        c.indices[2] = j;
        await expectReject(() => sae.decode(c), ValidationError, `codes.indices[2] = ${j} is outside [0, 97)`);
      }
    });
  });

  it('rejects a non-monotone indptr, a bad indptr[0], and mismatched lengths', async () => {
    const w = weights();
    await withSae(w, async (sae) => {
      const good = await codesFor(sae, w);
      const dec = copy(good);
      dec.indptr[1] = dec.indptr[2]! + 1;
      await expectReject(() => sae.decode(dec), ValidationError, 'codes.indptr must be non-decreasing', 'indptr[2] < indptr[1]');
      const start = copy(good);
      start.indptr[0] = 1;
      await expectReject(() => sae.decode(start), ValidationError, 'codes.indptr[0] must be 0 but is 1');
      const short = { ...copy(good), indices: good.indices.subarray(1) };
      await expectReject(() => sae.decode(short), ValidationError, `codes.indptr ends at ${good.indptr[3]}`, `indices has ${good.indices.length - 1}`);
      const values = { ...copy(good), values: new Float32Array(good.values.length + 1) };
      await expectReject(() => sae.decode(values), ValidationError, `values ${good.values.length + 1}`);
      await expectReject(() => sae.decode({ ...copy(good), rows: 4 }), ValidationError, 'codes.rows is 4', 'indptr has 4 entries');
      await expectReject(() => sae.decode({ ...copy(good), dSae: 96 }), ValidationError, 'codes.dSae is 96', 'd_sae 97');
      await expectReject(() => sae.decode({ ...copy(good), indptr: Int32Array.from(good.indptr) as unknown as Uint32Array }), ValidationError, 'Uint32Array', 'codes.indptr');
      await expectReject(() => sae.decode({ ...copy(good), indptr: new Uint32Array(0) }), ValidationError, 'codes.indptr is empty');
      await expectReject(() => sae.decode(null as unknown as SparseCodes), ValidationError, 'SparseCodes', 'for codes');
    });
  });

  it('rejects codes without rowScale/rowShift for a layer_norm SAE, and rowScale of the wrong length', async () => {
    const w = weights({ norm: 'layer_norm' });
    await withSae(w, async (sae) => {
      const good = await codesFor(sae, w);
      expect(good.rowScale?.length).toBe(3);
      const { rowScale: _s, ...noScale } = copy(good);
      await expectReject(() => sae.decode(noScale), ValidationError, 'rowScale', "'layer_norm'");
      const { rowShift: _t, ...noShift } = copy(good);
      await expectReject(() => sae.decode(noShift), ValidationError, 'rowShift', "'layer_norm'");
      await expectReject(() => sae.decode({ ...copy(good), rowScale: new Float32Array(2) }), ValidationError, 'codes.rowScale has 2 entries, expected 3');
    });
  });

  it('rejects out of the wrong length or type, naming out and rows * d_in', async () => {
    const w = weights();
    await withSae(w, async (sae) => {
      const good = await codesFor(sae, w);
      await expectReject(() => sae.decode(good, new Float32Array(3 * 33 - 1)), ValidationError, 'out has 98 elements', 'rows * d_in = 3 * 33');
      await expectReject(() => sae.decode(good, new Float64Array(99) as unknown as Float32Array), ValidationError, 'for out', 'Float64Array(99)');
      // validateCodes is public too: same rules, with the caller's name for the object.
      expectThrow(() => validateCodes({ ...good, indices: Int32Array.of(0) }, 97, 'myCodes'), ValidationError, 'myCodes.indptr ends at');
    });
  });
});

describe('lifetime', () => {
  it('encode, decode after dispose() are ValidationErrors; dispose twice is harmless; bytes drops to 0', async () => {
    const w = weights();
    const sae = await createSae(w, { device: 'cpu' });
    expect(sae.bytes).toBeGreaterThan(0);
    const codes = await sae.encode(inputs(w, 2));
    sae.dispose();
    expect(sae.bytes).toBe(0);
    expect(() => sae.dispose()).not.toThrow();
    await expectReject(() => sae.encode(inputs(w, 2)), ValidationError, 'disposed');
    await expectReject(() => sae.decode(codes), ValidationError, 'disposed');
    expect(sae.dIn).toBe(33); // the config stays readable
  });

  it('an encode and a decode already running when dispose() is called still resolve correctly', async () => {
    const w = weights({ dIn: 128, dSae: 2048, k: 16 });
    const x = inputs(w, 1024);
    const sae = await createSae(w, { device: 'cpu' });
    const codes0 = await sae.encode(x.subarray(0, 128 * 4));
    const pending = sae.encode(x);
    const out = new Float32Array(4 * 128).fill(Number.NaN);
    const pendingDecode = sae.decode(codes0, out);
    sae.dispose(); // the native side keeps the model alive until both finish
    const [codes, decoded] = await Promise.all([pending, pendingDecode]);
    expect(decoded).toBe(out);
    expect(out.every(Number.isFinite)).toBe(true);
    const rows = [0, 1, 511, 1023];
    expectMatchesReference(w, pickRows(x, 128, rows), pickCodeRows(codes, rows));
    await expectReject(() => sae.encode(x), ValidationError, 'disposed');
  });
});

describe('process-wide settings', () => {
  it('setThreads rejects negative, fractional and huge counts, naming threads; valid counts apply', () => {
    const before = threads();
    for (const n of [-1, 1.5, 2000, Number.NaN]) expectThrow(() => setThreads(n), ValidationError, 'for threads', String(n));
    expect(threads()).toBe(before);
    expect(setThreads(1)).toBe(1);
    expect(threads()).toBe(1);
    setThreads(0);
    expect(threads()).toBe(before);
  });

  it("setCpuVariant('bogus') is a ValidationError naming the variant; an unsupported variant is rejected", () => {
    expectThrow(() => setCpuVariant('bogus' as 'auto'), ValidationError, 'CPU variant', '"bogus"');
    const { supported, best } = cpuVariant();
    for (const v of ['generic', 'avx2', 'avx512'] as const) {
      if (supported.includes(v)) {
        setCpuVariant(v);
        expect(cpuVariant().current).toBe(v);
      } else {
        expectThrow(() => setCpuVariant(v), ValidationError, v);
      }
    }
    setCpuVariant('auto');
    expect(cpuVariant().current).toBe(best);
  });
  it('changing threads and CPU variant while encodes are in flight neither deadlocks nor breaks results', async () => {
    const w = weights({ dIn: 96, dSae: 1500, k: 20 });
    const x = inputs(w, 300);
    const rows = [0, 1 + new Rng(seed + 9).int(298), 299];
    const ref = referenceEncode(w, pickRows(x, 96, rows));
    const { supported } = cpuVariant();
    await withSae(w, async (sae) => {
      for (let round = 0; round < 4; round++) {
        const pending = [sae.encode(x), sae.encode(x), sae.encode(x)];
        setThreads(1 + (round % 2)); // waits for a running kernel, by design
        setCpuVariant(supported[round % supported.length]!);
        for (const codes of await Promise.all(pending)) {
          expect(codes.indptr.length).toBe(301);
          expect(compareCodes(w, ref, pickCodeRows(codes, rows))).toEqual([]);
        }
      }
    });
    setThreads(0);
    setCpuVariant('auto');
  });
});

describe('edge cases the semantics define', () => {
  it('0 rows: empty codes with indptr [0], and decode of them is empty', async () => {
    for (const norm of ['none', 'layer_norm'] as const) {
      const w = weights({ norm });
      await withSae(w, async (sae) => {
        const codes = await sae.encode(new Float32Array(0));
        expect(codes.rows).toBe(0);
        expect(codes.dSae).toBe(97);
        expect(Array.from(codes.indptr)).toEqual([0]);
        expect(codes.indices.length).toBe(0);
        expect(codes.values.length).toBe(0);
        expect((await sae.decode(codes)).length).toBe(0);
      });
    }
  });

  it('1 row with k = 1: the arg-max latent when it is positive', async () => {
    const w = weights({ k: 1 });
    await withSae(w, async (sae) => {
      for (let t = 0; t < 8; t++) {
        const x = inputs(w, 1);
        const codes = await sae.encode(x);
        expectMatchesReference(w, x, codes);
        expect(codes.indices.length).toBeLessThanOrEqual(1);
      }
    });
  });

  it('k = d_sae returns every positive pre-activation (same as standard relu)', async () => {
    const w = weights({ k: 97 });
    const x = inputs(w, 37);
    const std = { ...w, config: { ...w.config, architecture: 'standard' as const } };
    delete std.config.k;
    const [topk, relu] = await Promise.all([withSae(w, (sae) => sae.encode(x)), withSae(std, (sae) => sae.encode(x))]);
    expectMatchesReference(w, x, topk);
    expectMatchesReference(std, x, topk); // the reference of relu: every pre > 0
    expect(Array.from(topk.indptr)).toEqual(Array.from(relu.indptr));
    expect(Array.from(topk.indices)).toEqual(Array.from(relu.indices));
    expect(topk.indptr[37]).toBeGreaterThan(37 * 5); // many per row: not truncated anywhere
  });

  it('degenerate rows (all zero, constant, ~1e-30) encode like the reference under every normalization', async () => {
    for (const norm of ['none', 'constant_norm_rescale', 'layer_norm'] as const) {
      for (const architecture of ['standard', 'topk', 'jumprelu'] as const) {
        const w = weights({ dIn: 20, dSae: 50, architecture, ...(architecture === 'topk' && { k: 5 }), norm });
        const x = new Float32Array(3 * 20);
        x.fill(2.5, 20, 40);
        for (let i = 40; i < 60; i++) x[i] = i % 2 ? 1e-30 : -1e-30;
        await withSae(w, async (sae) => {
          const codes = await sae.encode(x);
          expect(compareCodes(w, referenceEncode(w, x), codes), `${architecture} ${norm}`).toEqual([]);
          const out = new Float32Array(x.length).fill(Number.NaN);
          await sae.decode(codes, out);
          const ref = referenceDecode(w, codes);
          expect(Array.from(out.keys()).filter((i) => !(Math.abs(out[i]! - ref.x[i]!) <= ref.tol[i]!))).toEqual([]);
        });
      }
    }
  });

  it('8 concurrent encodes on one Sae equal the sequential results, bit for bit', async () => {
    const w = weights({ dIn: 64, dSae: 1000, k: 24, norm: 'constant_norm_rescale' });
    await withSae(w, async (sae) => {
      const xs = Array.from({ length: 8 }, (_, i) => inputs(w, 20 + 17 * i));
      const sequential: SparseCodes[] = [];
      for (const x of xs) sequential.push(await sae.encode(x));
      const concurrent = await Promise.all(xs.map((x) => sae.encode(x)));
      concurrent.forEach((c, i) => expect(c).toEqual(sequential[i]));
      expectMatchesReference(w, xs[7]!, concurrent[7]!);
    });
  });
});

describe('array views and hand-made codes', () => {
  it('encode reads a subarray view (also at an unaligned byte offset) and a SharedArrayBuffer like a copy', async () => {
    const w = weights({ dIn: 37, dSae: 203, k: 12 });
    await withSae(w, async (sae) => {
      const x = inputs(w, 40);
      const expected = await sae.encode(x.slice(5 * 37, 29 * 37));
      expectMatchesReference(w, x.slice(5 * 37, 29 * 37), expected);
      expect(await sae.encode(x.subarray(5 * 37, 29 * 37))).toEqual(expected);
      const unaligned = new Float32Array(new ArrayBuffer(4 + 24 * 37 * 4), 4, 24 * 37);
      unaligned.set(x.subarray(5 * 37, 29 * 37));
      expect(await sae.encode(unaligned)).toEqual(expected);
      const shared = new Float32Array(new SharedArrayBuffer(24 * 37 * 4));
      shared.set(x.subarray(5 * 37, 29 * 37));
      expect(await sae.encode(shared)).toEqual(expected);
    });
  });

  it('decode writes exactly its slice of an out view, and reads codes given as views', async () => {
    const w = weights({ dIn: 37, dSae: 203, k: 12 });
    await withSae(w, async (sae) => {
      const codes = await sae.encode(inputs(w, 6));
      const big = new Float32Array(3 + 6 * 37 + 3).fill(Number.NaN);
      const out = big.subarray(3, 3 + 6 * 37);
      await sae.decode(codes, out);
      expect(out.every(Number.isFinite)).toBe(true);
      expect([...big.subarray(0, 3), ...big.subarray(3 + 6 * 37)].every(Number.isNaN)).toBe(true);
      // The same codes in views that start mid-buffer decode to the same rows.
      const pad = (a: Float32Array | Int32Array | Uint32Array) => {
        const b = new (a.constructor as new (n: number) => typeof a)(a.length + 2);
        b.set(a, 2);
        return b.subarray(2);
      };
      const viewed: SparseCodes = {
        rows: 6,
        dSae: 203,
        indptr: pad(codes.indptr) as Uint32Array,
        indices: pad(codes.indices) as Int32Array,
        values: pad(codes.values) as Float32Array,
      };
      expect(await sae.decode(viewed)).toEqual(out);
    });
  });

  it('decode of hand-made codes (empty rows, unsorted and repeated latents, negative values, no rows/dSae) matches the reference', async () => {
    const w = weights({ dIn: 19, dSae: 50, k: 4 });
    const rng = new Rng(seed + 5);
    const rows = 9;
    const indptr = new Uint32Array(rows + 1);
    const indices: number[] = [];
    const values: number[] = [];
    for (let r = 0; r < rows; r++) {
      const n = r % 3 === 0 ? 0 : 1 + rng.int(8); // every third row empty
      for (let t = 0; t < n; t++) {
        indices.push(t > 0 && rng.uniform() < 0.2 ? indices[indices.length - 1]! : rng.int(50));
        values.push(rng.normal() * 2);
      }
      indptr[r + 1] = indices.length;
    }
    const codes = { indptr, indices: Int32Array.from(indices), values: Float32Array.from(values) } as SparseCodes;
    await withSae(w, async (sae) => {
      const out = new Float32Array(rows * 19).fill(Number.NaN);
      await sae.decode(codes, out);
      const ref = referenceDecode(w, codes);
      const bad = Array.from(out.keys()).filter((i) => !(Math.abs(out[i]! - ref.x[i]!) <= ref.tol[i]!));
      expect(bad).toEqual([]);
      // An empty row decodes to b_dec.
      expect(Array.from(out.subarray(0, 19))).toEqual(Array.from(w.b_dec));
    });
  });
});

describe('loading errors', () => {
  it('loadSae of a missing directory is a FormatError naming the path', async () => {
    const missing = join(await dirs.make(), 'no-such-sae');
    const err = await expectReject(() => loadSae(missing, { device: 'cpu' }), FormatError, missing, 'no such file or directory');
    expect((err as FormatError).file).toBe(missing);
    await expectReject(() => loadSae('' as string), ValidationError, 'directory path', 'for dir');
  });

  it('a truncated sae_weights.safetensors is a FormatError naming the file', async () => {
    const dir = join(await dirs.make(), 'sae');
    await saveSaeLens(dir, weights(), { dtype: 'float16' });
    const file = join(dir, 'sae_weights.safetensors');
    const size = (await stat(file)).size;
    for (const keep of [Math.floor(size / 2), size - 1, 5]) {
      const fh = await open(file, 'r+');
      await fh.truncate(keep);
      await fh.close();
      const err = await expectReject(() => loadSae(dir, { device: 'cpu' }), FormatError, file);
      expect(err).toBeInstanceOf(SaekitError);
    }
  });

  it("a SAELens cfg.json with architecture 'temporal' is a FormatError naming cfg.json and temporal", async () => {
    const dir = join(await dirs.make(), 'sae');
    const w = weights({ architecture: 'standard' });
    await saveSaeLens(dir, w);
    const cfgPath = join(dir, 'cfg.json');
    const fh = await open(cfgPath, 'r+');
    const cfg = JSON.parse(await fh.readFile('utf8')) as Record<string, unknown>;
    await fh.truncate(0);
    await fh.write(JSON.stringify({ ...cfg, architecture: 'temporal' }), 0);
    await fh.close();
    await expectReject(() => loadSae(dir, { device: 'cpu' }), FormatError, cfgPath, "'temporal'");
  });
});

describe.each(usableDevices())('on %s', (device) => {
  it('a round of encode on every architecture matches the reference', async () => {
    for (const architecture of ['standard', 'topk', 'jumprelu'] as const) {
      const w = weights({ dIn: 29, dSae: 131, architecture, ...(architecture === 'topk' && { k: 9 }) });
      const sae = await createSae(w, { device });
      try {
        expect(sae.device).toBe(device);
        const x = inputs(w, 11);
        expectMatchesReference(w, x, await sae.encode(x));
      } finally {
        sae.dispose();
      }
    }
  });
});

describe('weights validation in createSae', () => {
  it('rejects non-finite weights, naming the tensor and index', async () => {
    const w = syntheticSae({ dIn: 16, dSae: 40, architecture: 'topk', k: 5, seed: 3 });
    w.W_enc[3] = Number.NaN;
    await expectReject(() => createSae(w), ValidationError, 'W_enc[3] is NaN');
    w.W_enc[3] = 0;
    w.b_dec[15] = Number.NEGATIVE_INFINITY;
    await expectReject(() => createSae(w), ValidationError, 'b_dec[15] is -Infinity');
  });

  it('requires applyBDecToInput to be a boolean (SAELens defaults it to true; no silent false)', async () => {
    const w = syntheticSae({ dIn: 8, dSae: 16, architecture: 'standard', seed: 4 });
    delete (w.config as Partial<typeof w.config>).applyBDecToInput;
    await expectReject(() => createSae(w), ValidationError, 'config.applyBDecToInput', 'undefined');
  });
});
