// Acceptance: "encode output equals a float64 reference (exact top-k sets) for SAELens and
// sparsify directories of each supported architecture". Each directory is written by hand here
// (cfg.json text + writeSafetensors / writeNpz), not through saveSaeLens, so the readers are
// judged against files produced independently of them; the reference (test/helpers/reference.js)
// is computed from the weights AS STORED (float16/bfloat16 bits decoded here, independently of
// src/formats/float16.ts) and from the math the format specifies (../shared/FORMATS.md), never
// from what readSaeDir returns, except in the saveSaeLens round trip at the end.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadSae, type Sae, type SparseCodes } from '../src/index.js';
import { f32ToBf16Array, f32ToF16Array, readSaeDir, saveSaeLens, writeNpz, writeSafetensors, type SafetensorsTensorData } from '../src/formats/index.js';
import { Rng, syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { Architecture, Normalization, SaeWeights } from '../src/types.js';
import { f16BitsToNumber, tempDirs } from './helpers/formatsFixtures.js';
import { compareCodes, referenceDecode, referenceEncode, type ReferenceRow } from './helpers/reference.js';
import { freshSeed, usableDevices } from './helpers/testData.js';

const seed = freshSeed('sae-dirs.test');
const devices = usableDevices();
const dirs = tempDirs();
afterAll(dirs.cleanup);

// ---------------------------------------------------------------------------------------------
// Storage: what a file holds for a float32 array written at a given dtype, and the values a
// correct reader must widen it to (decoded here from the bits, by the IEEE definitions).

type StoredDtype = 'F32' | 'F16' | 'BF16';

const DTYPE_NAME: Record<StoredDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

interface Stored {
  /** What goes into the file. */
  tensor: SafetensorsTensorData;
  /** The values the file holds, as float32 (exact: every f16/bf16 value is a float32). */
  values: Float32Array;
}

function stored(a: Float32Array, shape: number[], dtype: StoredDtype): Stored {
  if (dtype === 'F32') return { tensor: { dtype, shape, data: a }, values: a };
  if (dtype === 'F16') {
    const bits = f32ToF16Array(a);
    return { tensor: { dtype, shape, data: bits }, values: Float32Array.from(bits, f16BitsToNumber) };
  }
  const bits = f32ToBf16Array(a);
  const wide = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) wide[i] = bits[i]! << 16;
  return { tensor: { dtype, shape, data: bits }, values: new Float32Array(wide.buffer) };
}

/** Writes a safetensors file of the given tensors at `dtype`; returns the values as stored. */
async function writeTensors(
  file: string,
  tensors: Record<string, { data: Float32Array; shape: number[] }>,
  dtype: StoredDtype,
): Promise<Record<string, Float32Array>> {
  const out: Record<string, SafetensorsTensorData> = {};
  const values: Record<string, Float32Array> = {};
  for (const [name, t] of Object.entries(tensors)) {
    const s = stored(t.data, t.shape, dtype);
    out[name] = s.tensor;
    values[name] = s.values;
  }
  await writeSafetensors(file, out);
  return values;
}

// ---------------------------------------------------------------------------------------------
// Random SAEs and activations.

function randomSae(o: { dIn: number; dSae: number; architecture: Architecture; k?: number; transposed?: boolean; s: number }): SaeWeights {
  const w = syntheticSae({
    dIn: o.dIn,
    dSae: o.dSae,
    architecture: o.architecture,
    ...(o.k !== undefined && { k: o.k }),
    encTransposed: o.transposed ?? false,
    seed: o.s,
  });
  // Spread the biases so some latents are positive without input (relu boundary exercised), and
  // make b_dec large enough that subtracting it, or not, changes the codes.
  const rng = new Rng(o.s + 7);
  for (let j = 0; j < o.dSae; j++) w.b_enc[j] = 0.2 * rng.normal();
  for (let i = 0; i < o.dIn; i++) w.b_dec[i] = 0.5 * rng.normal();
  return w;
}

function activations(w: SaeWeights, rows: number, s: number): Float32Array {
  return syntheticActivations(w, rows, { seed: s, active: 4, noise: 0.3 });
}

/** ||W_dec[j]|| for every latent, float64. */
function decoderNorms(w: SaeWeights): Float64Array {
  const { dIn, dSae } = w.config;
  const n = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += w.W_dec[j * dIn + i]! ** 2;
    n[j] = Math.sqrt(s);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// SAELens rescale_acts_by_decoder_norm, UNFOLDED (SAELens' own math, not saekit's fold):
//   hidden_pre = ((x' - b_dec) @ W_enc + b_enc) * ||W_dec[j]||, top-k, relu;
//   decode divides each kept activation by ||W_dec[j]|| before @ W_dec + b_dec.
// saekit folds the norms into the weights (W_enc * n, b_enc * n, W_dec / n) in float32, which
// rounds each folded weight once more (relative u): the tolerance grows from 2(d_in + 4)u to
// 2(d_in + 5)u, covered by the factor 1.1 below for every d_in here.

function rescaledReference(w: SaeWeights, x: Float32Array): ReferenceRow[] {
  const norms = decoderNorms(w);
  const k = w.config.k!;
  const plain = referenceEncode({ ...w, config: { ...w.config, architecture: 'standard' } }, x);
  return plain.map((R) => {
    const pre = R.pre.map((p, j) => p * norms[j]!);
    const tol = R.tol.map((t, j) => 1.1 * t * norms[j]!);
    const top = Array.from(pre.keys())
      .sort((a, b) => pre[b]! - pre[a]! || a - b)
      .slice(0, k);
    const last = top[top.length - 1]!;
    const indices = top.filter((j) => pre[j]! > 0).sort((a, b) => a - b);
    return { ...R, pre, tol, indices, values: indices.map((j) => pre[j]!), kth: pre[last]!, kthTol: tol[last]! };
  });
}

/** The codes SAELens would decode after dividing each activation by its decoder row's norm. */
function unfoldCodes(w: SaeWeights, codes: SparseCodes): SparseCodes {
  const norms = decoderNorms(w);
  return { ...codes, values: Float32Array.from(codes.values, (v, t) => v / norms[codes.indices[t]!]!) };
}

// ---------------------------------------------------------------------------------------------
// The check every directory goes through.

interface Expectation {
  /** The SAE as the format defines it: stored weight values, format-defined config. */
  ref: SaeWeights;
  /** SAELens rescale_acts_by_decoder_norm: compare with the unfolded math. */
  rescale?: boolean;
}

/**
 * Encodes fresh activations of 1 and 37 rows (and one mid-size batch that spans threads) and
 * compares with the float64 reference; decodes into a NaN-poisoned buffer and compares with the
 * reference decode. Returns the codes of the 37-row batch for extra checks.
 */
async function checkSae(sae: Sae, e: Expectation, s: number): Promise<{ x: Float32Array; codes: SparseCodes }> {
  const w = e.ref;
  expect([sae.dIn, sae.dSae]).toEqual([w.config.dIn, w.config.dSae]);
  let last: { x: Float32Array; codes: SparseCodes } | undefined;
  for (const rows of [1, 37, 130]) {
    const x = activations(w, rows, s + rows);
    const codes = await sae.encode(x);
    const ref = e.rescale ? rescaledReference(w, x) : referenceEncode(w, x);
    expect(compareCodes(w, ref, codes), `encode, ${rows} row(s)`).toEqual([]);
    if (w.config.architecture === 'topk' || rows > 1) expect(codes.indices.length).toBeGreaterThan(0);

    const out = new Float32Array(x.length).fill(Number.NaN); // poisoned: every element must be written
    const back = await sae.decode(codes, out);
    expect(back).toBe(out);
    const refDec = referenceDecode(w, e.rescale ? unfoldCodes(w, codes) : codes);
    const bad: string[] = [];
    for (let i = 0; i < out.length && bad.length < 10; i++) {
      if (!(Math.abs(out[i]! - refDec.x[i]!) <= refDec.tol[i]!)) bad.push(`x_hat[${i}] = ${out[i]} vs reference ${refDec.x[i]}`);
    }
    expect(bad, `decode, ${rows} row(s)`).toEqual([]);
    if (rows === 37) last = { x, codes };
  }
  return last!;
}

// ---------------------------------------------------------------------------------------------
// SAELens directories.

interface SaeLensCase {
  name: string;
  cfg: 'v6' | 'pre6';
  architecture: Architecture;
  dIn: number;
  dSae: number;
  k?: number;
  dtype: StoredDtype;
  /** v6: the string; pre-6: false -> 'none', true -> 'expected_average_only_in'. */
  norm: Normalization;
  applyBDec?: boolean;
  rescale?: boolean;
}

const saeLensCases: SaeLensCase[] = [
  { name: 'v6 standard float32', cfg: 'v6', architecture: 'standard', dIn: 33, dSae: 97, dtype: 'F32', norm: 'none' },
  { name: 'v6 standard bfloat16 layer_norm', cfg: 'v6', architecture: 'standard', dIn: 45, dSae: 130, dtype: 'BF16', norm: 'layer_norm' },
  { name: 'v6 standard float16 expected_average_only_in', cfg: 'v6', architecture: 'standard', dIn: 20, dSae: 64, dtype: 'F16', norm: 'expected_average_only_in' },
  { name: 'v6 topk float16 constant_norm_rescale', cfg: 'v6', architecture: 'topk', dIn: 33, dSae: 97, k: 7, dtype: 'F16', norm: 'constant_norm_rescale' },
  { name: 'v6 topk bfloat16 no b_dec subtraction', cfg: 'v6', architecture: 'topk', dIn: 17, dSae: 200, k: 16, dtype: 'BF16', norm: 'none', applyBDec: false },
  { name: 'v6 topk float32 rescale_acts_by_decoder_norm', cfg: 'v6', architecture: 'topk', dIn: 31, dSae: 150, k: 9, dtype: 'F32', norm: 'none', rescale: true },
  { name: 'v6 topk bfloat16 rescale_acts_by_decoder_norm layer_norm', cfg: 'v6', architecture: 'topk', dIn: 27, dSae: 90, k: 5, dtype: 'BF16', norm: 'layer_norm', rescale: true },
  { name: 'v6 jumprelu float32 constant_norm_rescale', cfg: 'v6', architecture: 'jumprelu', dIn: 48, dSae: 300, dtype: 'F32', norm: 'constant_norm_rescale' },
  { name: 'v6 jumprelu float16 no b_dec subtraction', cfg: 'v6', architecture: 'jumprelu', dIn: 17, dSae: 129, dtype: 'F16', norm: 'none', applyBDec: false },
  { name: 'v6 jumprelu bfloat16 layer_norm', cfg: 'v6', architecture: 'jumprelu', dIn: 39, dSae: 111, dtype: 'BF16', norm: 'layer_norm' },
  { name: 'pre-6.0 relu float32', cfg: 'pre6', architecture: 'standard', dIn: 33, dSae: 97, dtype: 'F32', norm: 'none' },
  { name: 'pre-6.0 relu bfloat16 normalize_activations true', cfg: 'pre6', architecture: 'standard', dIn: 25, dSae: 77, dtype: 'BF16', norm: 'expected_average_only_in' },
  { name: 'pre-6.0 topk float16 no b_dec subtraction', cfg: 'pre6', architecture: 'topk', dIn: 37, dSae: 101, k: 6, dtype: 'F16', norm: 'none', applyBDec: false },
];

function saeLensCfgJson(c: SaeLensCase): Record<string, unknown> {
  const applyBDec = c.applyBDec ?? true;
  if (c.cfg === 'v6') {
    return {
      architecture: c.architecture,
      d_in: c.dIn,
      d_sae: c.dSae,
      dtype: DTYPE_NAME[c.dtype],
      device: 'cpu',
      apply_b_dec_to_input: applyBDec,
      normalize_activations: c.norm,
      reshape_activations: 'none',
      ...(c.architecture === 'topk' && { k: c.k, rescale_acts_by_decoder_norm: c.rescale ?? false }),
      metadata: { model_name: 'gpt2', hook_name: 'blocks.8.hook_resid_pre', context_size: 128, prepend_bos: true, sae_lens_version: '6.5.1' },
    };
  }
  if (c.norm !== 'none' && c.norm !== 'expected_average_only_in') throw new Error('pre-6.0 normalization is a boolean');
  return {
    model_name: 'pythia-70m-deduped',
    hook_point: 'blocks.3.hook_resid_post',
    hook_point_layer: 3,
    hook_point_head_index: null,
    d_in: c.dIn,
    d_sae: c.dSae,
    dtype: DTYPE_NAME[c.dtype],
    device: 'cuda',
    b_dec_init_method: 'geometric_median',
    apply_b_dec_to_input: applyBDec,
    activation_fn_str: c.architecture === 'topk' ? 'topk' : 'relu',
    ...(c.architecture === 'topk' && { activation_fn_kwargs: { k: c.k } }),
    normalize_activations: c.norm === 'expected_average_only_in',
    finetuning_scaling_factor: false,
    context_size: 128,
    sae_lens_training_version: '3.13.0',
  };
}

async function writeSaeLensDir(c: SaeLensCase, w: SaeWeights): Promise<{ dir: string; ref: SaeWeights }> {
  const { dIn, dSae } = c;
  const dir = join(await dirs.make(), 'sae');
  await mkdir(dir);
  await writeFile(join(dir, 'cfg.json'), JSON.stringify(saeLensCfgJson(c), null, 2));
  const t: Record<string, { data: Float32Array; shape: number[] }> = {
    W_enc: { data: w.W_enc, shape: [dIn, dSae] },
    W_dec: { data: w.W_dec, shape: [dSae, dIn] },
    b_enc: { data: w.b_enc, shape: [dSae] },
    b_dec: { data: w.b_dec, shape: [dIn] },
  };
  if (c.architecture === 'jumprelu') t['threshold'] = { data: w.threshold!, shape: [dSae] };
  const v = await writeTensors(join(dir, 'sae_weights.safetensors'), t, c.dtype);
  // A sparsity file sits beside the weights in real SAELens directories; it must not matter.
  await writeSafetensors(join(dir, 'sparsity.safetensors'), { sparsity: { dtype: 'F32', shape: [dSae], data: new Float32Array(dSae).fill(-3) } });
  const ref: SaeWeights = {
    config: {
      architecture: c.architecture,
      dIn,
      dSae,
      ...(c.k !== undefined && { k: c.k }),
      applyBDecToInput: c.applyBDec ?? true,
      normalizeActivations: c.norm,
      dtype: DTYPE_NAME[c.dtype],
      format: 'saelens',
      metadata: {},
    },
    W_enc: v['W_enc']!,
    encTransposed: false,
    b_enc: v['b_enc']!,
    W_dec: v['W_dec']!,
    b_dec: v['b_dec']!,
    ...(v['threshold'] && { threshold: v['threshold'] }),
  };
  return { dir, ref };
}

describe.each(devices)('SAELens directories on %s', (device) => {
  saeLensCases.forEach((c, n) => {
    it(`${c.name}: d_in ${c.dIn}, d_sae ${c.dSae}${c.k ? `, k ${c.k}` : ''}`, async () => {
      const s = seed + 1000 * n;
      const w = randomSae({ dIn: c.dIn, dSae: c.dSae, architecture: c.architecture, ...(c.k !== undefined && { k: c.k }), s });
      if (c.rescale) {
        // Decoder rows far from unit norm, so the rescale changes which latents win.
        const rng = new Rng(s + 3);
        for (let j = 0; j < c.dSae; j++) {
          const f = 0.3 + 2.7 * rng.uniform();
          for (let i = 0; i < c.dIn; i++) w.W_dec[j * c.dIn + i]! *= f;
        }
      }
      const { dir, ref } = await writeSaeLensDir(c, w);
      const sae = await loadSae(dir, { device });
      try {
        expect(sae.device).toBe(device);
        expect(sae.config).toMatchObject({
          architecture: c.architecture,
          normalizeActivations: c.norm,
          applyBDecToInput: c.applyBDec ?? true,
          dtype: DTYPE_NAME[c.dtype],
          format: 'saelens',
        });
        expect(sae.config.k).toBe(c.k);
        const { x, codes } = await checkSae(sae, { ref, ...(c.rescale && { rescale: true }) }, s + 1);
        if (c.rescale) {
          // The test can see a reader that ignores the flag: plain top-k picks other latents.
          expect(compareCodes(ref, referenceEncode(ref, x), codes).length).toBeGreaterThan(0);
        }
        if (c.dtype !== 'F32' && c.architecture !== 'topk') {
          // The stored (rounded) weights are what counts: codes of the unrounded weights differ.
          const unrounded = { ...ref, W_enc: w.W_enc, b_enc: w.b_enc, b_dec: w.b_dec };
          const diff = compareCodes(unrounded, referenceEncode(unrounded, x), codes);
          expect(diff.some((p) => p.includes('value'))).toBe(true);
        }
      } finally {
        sae.dispose();
      }
    });
  });
});

// ---------------------------------------------------------------------------------------------
// sparsify directories: <run>/<hookpoint>/{cfg.json, sae.safetensors}, encoder.weight [d_sae, d_in].

describe.each(devices)('sparsify directories on %s', (device) => {
  async function writeSparsify(hook: string, cfg: Record<string, unknown>, w: SaeWeights, dtype: StoredDtype): Promise<SaeWeights> {
    const { dIn, dSae } = w.config;
    await mkdir(hook, { recursive: true });
    await writeFile(join(hook, 'cfg.json'), JSON.stringify(cfg));
    const v = await writeTensors(
      join(hook, 'sae.safetensors'),
      {
        'encoder.weight': { data: w.W_enc, shape: [dSae, dIn] },
        'encoder.bias': { data: w.b_enc, shape: [dSae] },
        W_dec: { data: w.W_dec, shape: [dSae, dIn] },
        b_dec: { data: w.b_dec, shape: [dIn] },
      },
      dtype,
    );
    return {
      config: {
        architecture: 'topk',
        dIn,
        dSae,
        k: cfg['k'] as number,
        applyBDecToInput: cfg['transcode'] !== true,
        normalizeActivations: 'none',
        dtype: DTYPE_NAME[dtype],
        format: 'sparsify',
        metadata: {},
      },
      W_enc: v['encoder.weight']!,
      encTransposed: true,
      b_enc: v['encoder.bias']!,
      W_dec: v['W_dec']!,
      b_dec: v['b_dec']!,
    };
  }

  it('topk float32, loaded from the hookpoint and from its run directory', async () => {
    const s = seed + 50_000;
    const w = randomSae({ dIn: 45, dSae: 257, architecture: 'topk', k: 8, transposed: true, s });
    const run = await dirs.make();
    const cfg = { activation: 'topk', expansion_factor: 32, normalize_decoder: true, num_latents: 257, k: 8, multi_topk: false, skip_connection: false, transcode: false, d_in: 45 };
    const ref = await writeSparsify(join(run, 'layers.10'), cfg, w, 'F32');
    for (const path of [join(run, 'layers.10'), run]) {
      const sae = await loadSae(path, { device });
      try {
        expect(sae.config).toMatchObject({ architecture: 'topk', k: 8, format: 'sparsify', hookName: 'layers.10', applyBDecToInput: true });
        const { x, codes } = await checkSae(sae, { ref }, s + 1);
        // Sensitivity: reading encoder.weight as SAELens' [d_in, d_sae] would pick other latents.
        const misread = { ...ref, encTransposed: false };
        expect(compareCodes(misread, referenceEncode(misread, x), codes).length).toBeGreaterThan(0);
      } finally {
        sae.dispose();
      }
    }
  });

  it('topk bfloat16 transcoder (no b_dec subtraction), num_latents from expansion_factor, no d_in in cfg', async () => {
    const s = seed + 60_000;
    const w = randomSae({ dIn: 21, dSae: 84, architecture: 'topk', k: 5, transposed: true, s });
    const hook = join(await dirs.make(), 'layers.3.mlp');
    const cfg = { activation: 'topk', expansion_factor: 4, normalize_decoder: true, num_latents: 0, k: 5, multi_topk: false, skip_connection: false, transcode: true };
    const ref = await writeSparsify(hook, cfg, w, 'BF16');
    const sae = await loadSae(hook, { device });
    try {
      expect(sae.config).toMatchObject({ dIn: 21, dSae: 84, k: 5, applyBDecToInput: false, dtype: 'bfloat16' });
      await checkSae(sae, { ref }, s + 1);
    } finally {
      sae.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Gemma Scope: params.npz, jumprelu, b_dec NOT subtracted from the input.

describe.each(devices)('Gemma Scope params.npz on %s', (device) => {
  it('jumprelu without b_dec subtraction, from the directory and from the .npz itself', async () => {
    const s = seed + 70_000;
    const dIn = 41;
    const dSae = 203;
    const w = randomSae({ dIn, dSae, architecture: 'jumprelu', s });
    const dir = await dirs.make();
    await writeNpz(join(dir, 'params.npz'), {
      W_enc: { shape: [dIn, dSae], data: w.W_enc },
      W_dec: { shape: [dSae, dIn], data: w.W_dec },
      b_enc: { shape: [dSae], data: w.b_enc },
      b_dec: { shape: [dIn], data: w.b_dec },
      threshold: { shape: [dSae], data: w.threshold! },
    });
    const ref: SaeWeights = {
      ...w,
      config: { architecture: 'jumprelu', dIn, dSae, applyBDecToInput: false, normalizeActivations: 'none', dtype: 'float32', format: 'gemmascope', metadata: {} },
    };
    for (const path of [dir, join(dir, 'params.npz')]) {
      const sae = await loadSae(path, { device });
      try {
        expect(sae.config).toMatchObject({ architecture: 'jumprelu', applyBDecToInput: false, format: 'gemmascope' });
        const { x, codes } = await checkSae(sae, { ref }, s + 1);
        // Sensitivity: subtracting b_dec (the SAELens default) would give other codes.
        const subtracting = { ...ref, config: { ...ref.config, applyBDecToInput: true } };
        expect(compareCodes(subtracting, referenceEncode(subtracting, x), codes).length).toBeGreaterThan(0);
      } finally {
        sae.dispose();
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// saveSaeLens -> loadSae: what saekit writes, saekit reads back and runs the same way.

describe.each(devices)('saveSaeLens round trip on %s', (device) => {
  it('a sparsify-layout topk layer_norm SAE saved as float16 encodes like the reference', async () => {
    const s = seed + 80_000;
    const w = randomSae({ dIn: 35, dSae: 140, architecture: 'topk', k: 11, transposed: true, s });
    w.config.normalizeActivations = 'layer_norm';
    const dir = join(await dirs.make(), 'nested', 'sae');
    await saveSaeLens(dir, w, { dtype: 'float16' });
    const read = await readSaeDir(dir);
    expect(read.config).toMatchObject({ architecture: 'topk', k: 11, normalizeActivations: 'layer_norm', dtype: 'float16', format: 'saelens' });
    expect(read.encTransposed).toBe(false);
    // W_enc was transposed on save: element [i, j] of the file is encoder.weight[j, i], rounded.
    const i = 7;
    const j = 123;
    expect(read.W_enc[i * 140 + j]).toBe(f16BitsToNumber(f32ToF16Array(Float32Array.of(w.W_enc[j * 35 + i]!))[0]!));
    const sae = await loadSae(dir, { device });
    try {
      await checkSae(sae, { ref: read }, s + 1);
    } finally {
      sae.dispose();
    }
  });
});
