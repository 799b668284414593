import { describe, it, expect, afterAll } from 'vitest';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, ValidationError } from '../src/errors.js';
import {
  SafetensorsReader,
  bf16ToF32Array,
  f16ToF32Array,
  f32ToBf16Array,
  f32ToF16Array,
  readSaeDir,
  saveSaeLens,
  writeNpz,
  writeSafetensors,
  type SafetensorsDtype,
  type SafetensorsTensorData,
} from '../src/formats/index.js';
import type { SaeWeights } from '../src/types.js';
import {
  NUMPY_ARRAYS,
  NUMPY_SAVEZ_B64,
  decodeRef,
  encodeRef,
  fromBase64,
  leftovers,
  randomFloat32,
  randomWeights,
  rng,
  rowNorm,
  tempDirs,
} from './helpers/formatsFixtures.js';

const dirs = tempDirs();
afterAll(dirs.cleanup);

type Tensors = Record<string, Float32Array>;

function encode(data: Float32Array, dtype: SafetensorsDtype): SafetensorsTensorData['data'] {
  if (dtype === 'F16') return f32ToF16Array(data);
  if (dtype === 'BF16') return f32ToBf16Array(data);
  return data;
}

/** Writes cfg.json + a safetensors file with the given tensors (shapes from `shapes`). */
async function writeSaeFiles(
  dir: string,
  cfg: unknown,
  weightsFile: string,
  tensors: Tensors,
  shapes: Record<string, number[]>,
  dtype: SafetensorsDtype = 'F32',
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'cfg.json'), JSON.stringify(cfg));
  const out: Record<string, SafetensorsTensorData> = {};
  for (const [name, data] of Object.entries(tensors)) out[name] = { dtype, shape: shapes[name]!, data: encode(data, dtype) };
  await writeSafetensors(join(dir, weightsFile), out);
}

function saeLensShapes(dIn: number, dSae: number): Record<string, number[]> {
  return { W_enc: [dIn, dSae], W_dec: [dSae, dIn], b_enc: [dSae], b_dec: [dIn], threshold: [dSae], finetuning_scaling_factor: [dSae] };
}

function saeLensTensors(w: SaeWeights): Tensors {
  const t: Tensors = { W_enc: w.W_enc, W_dec: w.W_dec, b_enc: w.b_enc, b_dec: w.b_dec };
  if (w.threshold) t['threshold'] = w.threshold;
  return t;
}

function v6Cfg(w: SaeWeights, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architecture: w.config.architecture,
    d_in: w.config.dIn,
    d_sae: w.config.dSae,
    dtype: 'float32',
    device: 'cpu',
    apply_b_dec_to_input: true,
    normalize_activations: 'none',
    reshape_activations: 'none',
    ...(w.config.architecture === 'topk' && { k: w.config.k, rescale_acts_by_decoder_norm: false }),
    metadata: { model_name: 'gpt2', hook_name: 'blocks.8.hook_resid_pre', context_size: 128, sae_lens_version: '6.5.1' },
    ...extra,
  };
}

async function saeLensDir(w: SaeWeights, cfg: unknown = v6Cfg(w), dtype: SafetensorsDtype = 'F32', tensors = saeLensTensors(w)): Promise<string> {
  const dir = join(await dirs.make(), 'sae');
  await writeSaeFiles(dir, cfg, 'sae_weights.safetensors', tensors, saeLensShapes(w.config.dIn, w.config.dSae), dtype);
  return dir;
}

async function expectFormatError(p: Promise<unknown>, ...parts: string[]): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  for (const part of parts) expect((err as Error).message).toContain(part);
  return (err as Error).message;
}

/** max |a - b| over reconstructions of a few random rows. */
function maxReconstructionGap(a: SaeWeights, aRescaled: boolean, b: SaeWeights, rows = 16): number {
  const r = rng(99);
  let gap = 0;
  for (let t = 0; t < rows; t++) {
    const x = randomFloat32(a.config.dIn, r, 2);
    const ya = decodeRef(a, encodeRef(a, x, aRescaled), aRescaled);
    const yb = decodeRef(b, encodeRef(b, x));
    for (let i = 0; i < ya.length; i++) gap = Math.max(gap, Math.abs(ya[i]! - yb[i]!));
  }
  return gap;
}

describe('readSaeDir: SAELens', () => {
  for (const arch of ['standard', 'topk', 'jumprelu'] as const) {
    it(`reads a v6 ${arch} directory`, async () => {
      const w = randomWeights(arch, 6, 10, 1);
      const got = await readSaeDir(await saeLensDir(w));
      expect(got.config).toEqual({
        architecture: arch,
        dIn: 6,
        dSae: 10,
        ...(arch === 'topk' && { k: 3 }),
        applyBDecToInput: true,
        normalizeActivations: 'none',
        dtype: 'float32',
        format: 'saelens',
        hookName: 'blocks.8.hook_resid_pre',
        modelName: 'gpt2',
        metadata: { reshape_activations: 'none', context_size: 128, sae_lens_version: '6.5.1' },
      });
      expect(got.encTransposed).toBe(false);
      expect([got.W_enc, got.W_dec, got.b_enc, got.b_dec]).toEqual([w.W_enc, w.W_dec, w.b_enc, w.b_dec]);
      expect(got.threshold).toEqual(w.threshold);
    });
  }

  it('reads pre-6.0 configs (activation_fn_str, hook_point, boolean normalization)', async () => {
    const w = randomWeights('topk', 5, 8, 2, 4);
    const pre6 = {
      d_in: 5,
      d_sae: 8,
      dtype: 'float32',
      activation_fn_str: 'topk',
      activation_fn_kwargs: { k: 4 },
      hook_point: 'blocks.3.hook_resid_post',
      hook_point_head_index: null,
      model_name: 'pythia-70m',
      normalize_activations: false,
      apply_b_dec_to_input: false,
      finetuning_scaling_factor: false,
      context_size: 256,
    };
    const got = await readSaeDir(await saeLensDir(w, pre6));
    expect(got.config).toMatchObject({
      architecture: 'topk',
      k: 4,
      applyBDecToInput: false,
      normalizeActivations: 'none',
      hookName: 'blocks.3.hook_resid_post',
      modelName: 'pythia-70m',
      metadata: { hook_point_head_index: null, context_size: 256 },
    });
    const relu = await readSaeDir(await saeLensDir(randomWeights('standard', 5, 8, 3), { ...pre6, activation_fn_str: 'relu', normalize_activations: true }));
    expect(relu.config).toMatchObject({ architecture: 'standard', normalizeActivations: 'expected_average_only_in' });
    expect(relu.config.k).toBeUndefined();
  });

  it('widens float16 and bfloat16 weights and reports the stored dtype', async () => {
    const w = randomWeights('jumprelu', 7, 9, 4);
    for (const [dtype, widen, name] of [
      ['F16', (a: Float32Array) => f16ToF32Array(f32ToF16Array(a)), 'float16'],
      ['BF16', (a: Float32Array) => bf16ToF32Array(f32ToBf16Array(a)), 'bfloat16'],
    ] as const) {
      const got = await readSaeDir(await saeLensDir(w, v6Cfg(w, { dtype: name }), dtype));
      expect(got.config.dtype).toBe(name);
      expect(got.W_enc).toEqual(widen(w.W_enc));
      expect(got.threshold).toEqual(widen(w.threshold!));
    }
  });

  it('folds rescale_acts_by_decoder_norm: same top-k codes and reconstruction, unit decoder rows', async () => {
    const w = randomWeights('topk', 8, 24, 5, 5);
    for (let j = 0; j < 24; j++) for (let c = 0; c < 8; c++) w.W_dec[j * 8 + c]! *= 0.2 + j / 6; // norms far from 1
    const got = await readSaeDir(await saeLensDir(w, v6Cfg(w, { rescale_acts_by_decoder_norm: true })));
    expect(got.config.metadata['rescale_acts_by_decoder_norm_folded']).toBe(true);
    for (let j = 0; j < 24; j++) expect(rowNorm(got.W_dec, j, 8)).toBeCloseTo(1, 5);
    const r = rng(7);
    for (let t = 0; t < 16; t++) {
      const x = randomFloat32(8, r, 2);
      const codesSaeLens = encodeRef(w, x, true);
      const codesFolded = encodeRef(got, x);
      // The folded SAE's codes are SAELens' codes (hidden_pre * ||W_dec[j]||), up to float32 rounding.
      for (let j = 0; j < 24; j++) expect(codesFolded[j]).toBeCloseTo(codesSaeLens[j]!, 4);
    }
    // Weights are float32 after folding; 1e-5 covers their rounding at these magnitudes.
    expect(maxReconstructionGap(w, true, got)).toBeLessThan(1e-5);
    // Without the fold the result would differ: the test can see a missing fold.
    const unfolded = await readSaeDir(await saeLensDir(w));
    expect(maxReconstructionGap(w, true, unfolded)).toBeGreaterThan(1e-2);
  });

  it('folds a pre-6 finetuning_scaling_factor into the decoder', async () => {
    const w = randomWeights('standard', 4, 6, 8);
    const scale = Float32Array.of(1, 2, 0.5, 1, 3, 1);
    const cfg = { d_in: 4, d_sae: 6, activation_fn_str: 'relu', finetuning_scaling_factor: true, hook_point: 'h' };
    const got = await readSaeDir(await saeLensDir(w, cfg, 'F32', { ...saeLensTensors(w), finetuning_scaling_factor: scale }));
    expect(got.config.metadata['finetuning_scaling_factor_folded']).toBe(true);
    expect(got.W_dec).toEqual(w.W_dec.map((v, i) => Math.fround(v * scale[Math.floor(i / 4)]!)));
  });

  it('rejects unsupported architectures and normalizations, naming cfg.json', async () => {
    const w = randomWeights('standard', 4, 6, 9);
    const unknownDir = await saeLensDir(w, v6Cfg(w, { architecture: 'temporal' }));
    await expectFormatError(readSaeDir(unknownDir), join(unknownDir, 'cfg.json'), "unsupported architecture 'temporal'");
    const normDir = await saeLensDir(w, v6Cfg(w, { normalize_activations: 'rms' }));
    await expectFormatError(readSaeDir(normDir), join(normDir, 'cfg.json'), "normalize_activations 'rms'");
    const tanh = await saeLensDir(w, { d_in: 4, d_sae: 6, activation_fn_str: 'tanh-relu' });
    await expectFormatError(readSaeDir(tanh), "activation function 'tanh-relu'");
    const jumpRescale = await saeLensDir(w, v6Cfg(w, { architecture: 'jumprelu', rescale_acts_by_decoder_norm: true }));
    await expectFormatError(readSaeDir(jumpRescale), 'rescale_acts_by_decoder_norm is true for a jumprelu SAE');
    const noK = await saeLensDir(w, v6Cfg(w, { architecture: 'topk' }));
    await expectFormatError(readSaeDir(noK), "no 'k'");
    const noDIn = await saeLensDir(w, { architecture: 'standard', d_sae: 6 });
    await expectFormatError(readSaeDir(noDIn), "missing 'd_in'");
    const badJson = await saeLensDir(w);
    await writeFile(join(badJson, 'cfg.json'), '{"d_in": 4,');
    await expectFormatError(readSaeDir(badJson), join(badJson, 'cfg.json'), 'not valid JSON');
  });

  it('rejects missing tensors, wrong shapes and non-finite weights with precise messages', async () => {
    const w = randomWeights('jumprelu', 4, 6, 10);
    const noThreshold = await saeLensDir(w, v6Cfg(w), 'F32', { W_enc: w.W_enc, W_dec: w.W_dec, b_enc: w.b_enc, b_dec: w.b_dec });
    await expectFormatError(readSaeDir(noThreshold), join(noThreshold, 'sae_weights.safetensors'), "no tensor 'threshold'");

    const wrongShape = join(await dirs.make(), 'sae');
    await writeSaeFiles(wrongShape, v6Cfg(w), 'sae_weights.safetensors', saeLensTensors(w), { ...saeLensShapes(4, 6), W_enc: [6, 4] });
    const msg = await expectFormatError(readSaeDir(wrongShape));
    expect(msg).toBe(
      `${join(wrongShape, 'sae_weights.safetensors')}: tensor 'W_enc' has shape [6, 4] but cfg.json says d_in 4, d_sae 6 => expected [4, 6]`,
    );

    const bad: Tensors = { ...saeLensTensors(w), W_dec: w.W_dec.slice() };
    bad['W_dec']![13] = NaN;
    const nanDir = await saeLensDir(w, v6Cfg(w), 'F32', bad);
    await expectFormatError(readSaeDir(nanDir), "tensor 'W_dec' has a non-finite value (NaN) at index 13 (row 3, column 1)");
    bad['W_dec']![13] = 1;
    bad['b_enc'] = w.b_enc.slice();
    bad['b_enc'][2] = -Infinity;
    const infDir = await saeLensDir(w, v6Cfg(w), 'BF16', bad);
    await expectFormatError(readSaeDir(infDir), "tensor 'b_enc' has a non-finite value (-Infinity) at index 2");
  });
});

describe('readSaeDir: sparsify', () => {
  const shapes = (dIn: number, dSae: number) => ({ 'encoder.weight': [dSae, dIn], 'encoder.bias': [dSae], W_dec: [dSae, dIn], b_dec: [dIn], W_skip: [dIn, dIn] });
  const sparsifyTensors = (w: SaeWeights): Tensors => ({ 'encoder.weight': w.W_enc, 'encoder.bias': w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec });
  const sparsifyCfg = { activation: 'topk', expansion_factor: 2, normalize_decoder: true, num_latents: 0, k: 3, multi_topk: false, skip_connection: false, transcode: false, d_in: 5 };

  it('reads a hookpoint directory and a run directory with one hookpoint', async () => {
    const w = randomWeights('topk', 5, 10, 11); // W_enc here stands for encoder.weight [d_sae, d_in]
    const run = await dirs.make();
    const hook = join(run, 'layers.6');
    await writeSaeFiles(hook, sparsifyCfg, 'sae.safetensors', sparsifyTensors(w), shapes(5, 10), 'BF16');
    for (const path of [hook, run]) {
      const got = await readSaeDir(path);
      expect(got.config).toEqual({
        architecture: 'topk',
        dIn: 5,
        dSae: 10,
        k: 3,
        applyBDecToInput: true,
        normalizeActivations: 'none',
        dtype: 'bfloat16',
        format: 'sparsify',
        hookName: 'layers.6',
        metadata: { expansion_factor: 2, normalize_decoder: true, multi_topk: false, transcode: false },
      });
      expect(got.encTransposed).toBe(true);
      expect(got.W_enc).toEqual(bf16ToF32Array(f32ToBf16Array(w.W_enc)));
      expect(got.W_dec).toEqual(bf16ToF32Array(f32ToBf16Array(w.W_dec)));
    }
    await writeSaeFiles(join(run, 'layers.7'), sparsifyCfg, 'sae.safetensors', sparsifyTensors(w), shapes(5, 10));
    await expectFormatError(readSaeDir(run), run, '2 sparsify hookpoints (layers.6, layers.7)');
  });

  it('infers d_in from the tensors, honours num_latents and transcode', async () => {
    const w = randomWeights('topk', 4, 7, 12);
    const dir = join(await dirs.make(), 'layers.0');
    const { d_in: _omit, ...noDIn } = sparsifyCfg;
    await writeSaeFiles(dir, { ...noDIn, num_latents: 7, transcode: true }, 'sae.safetensors', sparsifyTensors(w), shapes(4, 7));
    const got = await readSaeDir(dir);
    expect([got.config.dIn, got.config.dSae, got.config.applyBDecToInput]).toEqual([4, 7, false]);
  });

  it('reads a skip connection: W_skip [d_in, d_in], added by forward (sparsify: out += x @ W_skip^T)', async () => {
    const w = randomWeights('topk', 5, 10, 14);
    const dir = join(await dirs.make(), 'layers.2.mlp');
    const W_skip = Float32Array.from({ length: 25 }, (_, i) => ((i * 7) % 11) / 10 - 0.5);
    await writeSaeFiles(dir, { ...sparsifyCfg, skip_connection: true, transcode: true }, 'sae.safetensors', { ...sparsifyTensors(w), W_skip }, shapes(5, 10));
    const got = await readSaeDir(dir);
    expect(got.W_skip).toEqual(W_skip);
    expect([got.config.dOut, got.config.applyBDecToInput]).toEqual([5, false]);
  });

  it('rejects groupmax, skip connections without W_skip, W_skip without one, and mismatched shapes', async () => {
    const w = randomWeights('topk', 5, 10, 13);
    const root = await dirs.make();
    await writeSaeFiles(join(root, 'g'), { ...sparsifyCfg, activation: 'groupmax' }, 'sae.safetensors', sparsifyTensors(w), shapes(5, 10));
    await expectFormatError(readSaeDir(join(root, 'g')), "unsupported activation 'groupmax'");
    await writeSaeFiles(join(root, 's'), { ...sparsifyCfg, skip_connection: true }, 'sae.safetensors', sparsifyTensors(w), shapes(5, 10));
    await expectFormatError(readSaeDir(join(root, 's')), "'W_skip'");
    await writeSaeFiles(join(root, 'w'), sparsifyCfg, 'sae.safetensors', { ...sparsifyTensors(w), W_skip: new Float32Array(25) }, shapes(5, 10));
    await expectFormatError(readSaeDir(join(root, 'w')), "'W_skip'", 'skip_connection false');
    await writeSaeFiles(join(root, 'e'), { ...sparsifyCfg, expansion_factor: 4 }, 'sae.safetensors', sparsifyTensors(w), shapes(5, 10));
    await expectFormatError(readSaeDir(join(root, 'e')), "tensor 'encoder.weight' has shape [10, 5] but cfg.json gives d_in 5, num_latents 20 => expected [20, 5]");
  });
});

describe('readSaeDir: Gemma Scope and detection', () => {
  it('reads params.npz written by numpy, from its directory or directly', async () => {
    const dir = await dirs.make();
    await writeFile(join(dir, 'params.npz'), fromBase64(NUMPY_SAVEZ_B64));
    for (const path of [dir, join(dir, 'params.npz')]) {
      const got = await readSaeDir(path);
      expect(got.config).toEqual({
        architecture: 'jumprelu',
        dIn: 3,
        dSae: 4,
        applyBDecToInput: false,
        normalizeActivations: 'none',
        dtype: 'float32',
        format: 'gemmascope',
        metadata: {},
      });
      expect([...got.W_enc]).toEqual(NUMPY_ARRAYS['W_enc']!.data);
      expect([...got.threshold!]).toEqual(NUMPY_ARRAYS['threshold']!.data.map(Math.fround));
    }
  });

  it('reports a missing array or a wrong shape', async () => {
    const dir = await dirs.make();
    const arr = (shape: number[]) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
    await writeNpz(join(dir, 'params.npz'), { W_enc: arr([3, 4]), W_dec: arr([4, 3]), b_enc: arr([4]), b_dec: arr([3]) });
    await expectFormatError(readSaeDir(dir), "no array 'threshold'");
    await writeNpz(join(dir, 'params.npz'), { W_enc: arr([3, 4]), W_dec: arr([3, 4]), b_enc: arr([4]), b_dec: arr([3]), threshold: arr([4]) });
    await expectFormatError(readSaeDir(dir), "tensor 'W_dec' has shape [3, 4] but W_enc is [d_model 3, d_sae 4] => expected [4, 3]");
  });

  it('explains what it expected when nothing matches', async () => {
    const missing = join(await dirs.make(), 'nope');
    await expectFormatError(readSaeDir(missing), missing, 'no such file or directory');
    const dir = await dirs.make();
    await writeFile(join(dir, 'cfg.json'), '{}');
    const msg = await expectFormatError(readSaeDir(dir), dir, 'no SAE found', 'sae_weights.safetensors', 'params.npz', 'found cfg.json');
    expect(msg).toContain('sae.safetensors (sparsify)');
    await expectFormatError(readSaeDir(join(dir, 'cfg.json')), 'not an SAE');
    const noCfg = await dirs.make();
    await writeSafetensors(join(noCfg, 'sae_weights.safetensors'), {});
    await expectFormatError(readSaeDir(noCfg), noCfg, 'cfg.json + sae_weights.safetensors (SAELens)', 'found sae_weights.safetensors');
  });
});

describe('saveSaeLens', () => {
  it('round-trips through readSaeDir in float32, float16 and bfloat16', async () => {
    for (const arch of ['standard', 'topk', 'jumprelu'] as const) {
      const w = randomWeights(arch, 6, 11, 20);
      for (const [dtype, round] of [
        ['float32', (a: Float32Array) => a],
        ['float16', (a: Float32Array) => f16ToF32Array(f32ToF16Array(a))],
        ['bfloat16', (a: Float32Array) => bf16ToF32Array(f32ToBf16Array(a))],
      ] as const) {
        const root = await dirs.make();
        const dir = join(root, 'out', 'sae');
        await saveSaeLens(dir, w, { dtype });
        const got = await readSaeDir(dir);
        expect(got.config).toEqual({ ...w.config, dtype, format: 'saelens', metadata: { ...w.config.metadata, reshape_activations: 'none', sae_lens_version: '6.0.0' } });
        expect([got.W_enc, got.W_dec, got.b_enc, got.b_dec]).toEqual([w.W_enc, w.W_dec, w.b_enc, w.b_dec].map(round));
        if (arch === 'jumprelu') expect(got.threshold).toEqual(round(w.threshold!));
        expect(await leftovers(join(root, 'out'))).toEqual([]);
      }
    }
  });

  it('writes a SAELens v6 cfg.json and transposes a sparsify encoder', async () => {
    const w = randomWeights('topk', 3, 5, 21, 2);
    const transposed = new Float32Array(15);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) transposed[j * 3 + i] = w.W_enc[i * 5 + j]!;
    const sparsifyLike: SaeWeights = { ...w, W_enc: transposed, encTransposed: true };
    const dir = join(await dirs.make(), 'sae');
    const sparsity = Float32Array.of(-1, -2, -3, -4, -10);
    await saveSaeLens(dir, sparsifyLike, { sparsity });
    expect(JSON.parse(await readFile(join(dir, 'cfg.json'), 'utf8'))).toEqual({
      architecture: 'topk',
      d_in: 3,
      d_sae: 5,
      dtype: 'float32',
      device: 'cpu',
      apply_b_dec_to_input: true,
      normalize_activations: 'none',
      reshape_activations: 'none',
      k: 2,
      rescale_acts_by_decoder_norm: false,
      metadata: { context_size: 128, prepend_bos: true, model_name: 'tiny-model', hook_name: 'blocks.1.hook_resid_pre', sae_lens_version: '6.0.0' },
    });
    const got = await readSaeDir(dir);
    expect(got.encTransposed).toBe(false);
    expect(got.W_enc).toEqual(w.W_enc);
    const sp = await SafetensorsReader.open(join(dir, 'sparsity.safetensors'));
    expect(await sp.readFloat32('sparsity')).toEqual(sparsity);
    await sp.close();
  });

  it('replaces an existing directory, dropping a stale sparsity file', async () => {
    const dir = join(await dirs.make(), 'sae');
    await saveSaeLens(dir, randomWeights('standard', 3, 4, 22), { sparsity: new Float32Array(4) });
    await writeFile(join(dir, 'README.md'), 'kept');
    const w2 = randomWeights('jumprelu', 3, 4, 23);
    await saveSaeLens(dir, w2);
    expect((await readdir(dir)).sort()).toEqual(['README.md', 'cfg.json', 'sae_weights.safetensors']);
    expect((await readSaeDir(dir)).threshold).toEqual(w2.threshold);
    expect(await leftovers(join(dir, '..'))).toEqual([]);
  });

  it('validates its input and leaves nothing behind on failure', async () => {
    const root = await dirs.make();
    const w = randomWeights('jumprelu', 3, 4, 24);
    await expect(saveSaeLens(join(root, 'a'), { ...w, W_dec: new Float32Array(5) })).rejects.toThrow(
      'Expected Float32Array(12) for W_dec but received Float32Array(5)',
    );
    const { threshold: _t, ...noThreshold } = w;
    await expect(saveSaeLens(join(root, 'b'), noThreshold)).rejects.toBeInstanceOf(ValidationError);
    await expect(saveSaeLens(join(root, 'c'), w, { sparsity: new Float32Array(3) })).rejects.toBeInstanceOf(ValidationError);
    await expect(saveSaeLens(join(root, 'd'), { ...w, config: { ...w.config, architecture: 'topk' } })).rejects.toThrow('config.k');
    await writeFile(join(root, 'file'), 'x');
    await expect(saveSaeLens(join(root, 'file'), w)).rejects.toThrow('which is a file');
    expect(await readdir(root)).toEqual(['file']);
  });
});
