// Issue 19, item 3: every SAE saekit writes (trained, saved from weights, converted) is a
// SAELens directory whose cfg.json passes a strict schema of what SAELens's loader reads
// (src/formats/saeLensCfgSchema.ts, read off SAELens 6.18.0's source), whose tensors are exactly
// the architecture's module parameters, and whose weights read back bit for bit. The weights
// are checked against the raw bytes of sae_weights.safetensors through a tiny header parser
// written here (not saekit's reader), and float16/bfloat16 against an independent rounding
// check. `saekit convert` is held to encoding and decoding exactly as the source SAE does.
// SAELens itself is not run (no sae_lens package here).
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, ValidationError } from '../src/errors.js';
import {
  checkSaeLensCfg,
  checkSaeLensDir,
  convertToSaeLens,
  readSaeDir,
  saeLensCfgErrors,
  saeLensTensorErrors,
  saveSaeLens,
  writeNpz,
  writeSafetensors,
  writeNpy,
  type SaveDtype,
} from '../src/formats/index.js';
import { readGemmaScopeTranscoderAt } from '../src/formats/convert.js';
import { createSae, loadSae } from '../src/sae.js';
import { train, type TrainJobOptions } from '../src/train/train.js';
import type { SaeWeights } from '../src/types.js';
import { runCli } from './helpers/cli.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { f16BitsToNumber, leftovers, randomFloat32, randomWeights, rng, tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('formats.saelensRoundtrip.test');
const dirs = tempDirs();
afterAll(dirs.cleanup);
const FIXTURES = join(import.meta.dirname, 'fixtures');

// ---------------------------------------------------------------------------------------------
// An independent reading of a safetensors file: 8-byte little-endian header length, JSON
// header {name: {dtype, shape, data_offsets}}, then the data.

interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

async function rawTensors(file: string): Promise<Record<string, RawTensor>> {
  const buf = new Uint8Array(await readFile(file));
  const n = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out[name] = { dtype: t.dtype, shape: t.shape, bytes: buf.slice(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]) };
  }
  return out;
}

const bytesOf = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** float32 -> bfloat16 bits, round to nearest even (the bf16 definition, written here). */
function bf16Bits(a: Float32Array): Uint16Array {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  return Uint16Array.from(u, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
}

/** Every float16 in BITS is the nearest float16 to the float32 it came from (ties: even mantissa). */
function expectNearestF16(src: Float32Array, bits: Uint16Array, what: string): void {
  expect(bits.length, what).toBe(src.length);
  for (let i = 0; i < src.length; i++) {
    const x = src[i]!;
    const h = bits[i]!;
    const v = f16BitsToNumber(h);
    // The neighbours one step either way in magnitude are no closer.
    for (const nb of [h + 1, h - 1]) {
      if ((nb & 0x7fff) > 0x7bff || (nb & 0x8000) !== (h & 0x8000) || nb < 0) continue;
      const w = f16BitsToNumber(nb);
      const d = Math.abs(x - v);
      const dn = Math.abs(x - w);
      if (dn < d || (dn === d && (h & 1) === 1)) throw new Error(`${what}[${i}]: ${x} stored as ${v}, but ${w} is nearer`);
    }
  }
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** The float32 tensors SAELens should find, in its layouts, from saekit weights. */
function expectedTensors(w: SaeWeights): Record<string, Float32Array> {
  const { dIn, dSae } = w.config;
  const t: Record<string, Float32Array> = {
    W_enc: w.encTransposed ? transpose(w.W_enc, dSae, dIn) : w.W_enc,
    b_enc: w.b_enc,
    W_dec: w.W_dec,
    b_dec: w.b_dec,
  };
  if (w.threshold) t['threshold'] = w.threshold;
  if (w.W_skip) t['W_skip'] = w.W_skip;
  return t;
}

/** The file holds exactly these tensors, bit for bit at dtype (f16: correctly rounded). */
async function expectWeightsBitExact(dir: string, w: SaeWeights, dtype: SaveDtype): Promise<void> {
  const raw = await rawTensors(join(dir, 'sae_weights.safetensors'));
  const want = expectedTensors(w);
  expect(Object.keys(raw).sort()).toEqual(Object.keys(want).sort());
  for (const [name, a] of Object.entries(want)) {
    const r = raw[name]!;
    expect(r.dtype, name).toBe({ float32: 'F32', float16: 'F16', bfloat16: 'BF16' }[dtype]);
    if (dtype === 'float32') expect(Buffer.from(r.bytes).equals(Buffer.from(bytesOf(a))), name).toBe(true);
    else if (dtype === 'bfloat16') expect(Buffer.from(r.bytes).equals(Buffer.from(new Uint8Array(bf16Bits(a).buffer))), name).toBe(true);
    else expectNearestF16(a, new Uint16Array(r.bytes.buffer, r.bytes.byteOffset, r.bytes.length / 2), name);
  }
  // saekit's reader widens exactly what the file holds.
  const read = await readSaeDir(dir);
  const back = expectedTensors(read);
  for (const [name, r] of Object.entries(raw)) {
    const widened =
      r.dtype === 'F32'
        ? new Float32Array(r.bytes.slice().buffer)
        : r.dtype === 'BF16'
          ? new Float32Array(Uint32Array.from(new Uint16Array(r.bytes.slice().buffer), (b) => b << 16).buffer)
          : Float32Array.from(new Uint16Array(r.bytes.slice().buffer), f16BitsToNumber);
    expect(Buffer.from(bytesOf(back[name]!)).equals(Buffer.from(bytesOf(widened))), `${name} read back`).toBe(true);
  }
}

async function cfgOf(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(dir, 'cfg.json'), 'utf8')) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// The schema itself: a cfg as SAELens 6.18's SAEConfig.to_dict writes it passes; broken ones fail.

const GOOD_TOPK = {
  d_in: 768, d_sae: 24576, dtype: 'float32', device: 'cpu', apply_b_dec_to_input: true, normalize_activations: 'none',
  reshape_activations: 'none', k: 32, rescale_acts_by_decoder_norm: false, architecture: 'topk',
  metadata: { sae_lens_version: '6.18.0', sae_lens_training_version: '6.18.0', model_name: 'gpt2', hook_name: 'blocks.8.hook_resid_pre', hook_head_index: null, context_size: 128, prepend_bos: true, dataset_path: 'x', model_class_name: 'HookedTransformer', model_from_pretrained_kwargs: {}, exclude_special_tokens: false, seqpos_slice: [null], neuronpedia_id: null },
};

describe('the SAELens cfg.json schema', () => {
  it('accepts a cfg as SAELens writes it, extras included, and the transcoder architectures', () => {
    expect(saeLensCfgErrors(GOOD_TOPK)).toEqual([]);
    expect(saeLensCfgErrors({ ...GOOD_TOPK, some_training_setting: 3 })).toEqual([]); // from_dict filters unknown keys
    const tc = { ...GOOD_TOPK, architecture: 'jumprelu_transcoder', d_out: 512, apply_b_dec_to_input: false };
    delete (tc as Record<string, unknown>)['k'];
    expect(checkSaeLensCfg(tc, 'cfg.json')).toEqual({ architecture: 'jumprelu_transcoder', loadable: true });
  });

  it.each([
    ['missing d_sae', (c: Record<string, unknown>) => delete c['d_sae'], "missing field 'd_sae'"],
    ['k as a string', (c: Record<string, unknown>) => (c['k'] = '32'), `field 'k' must be a positive integer but is the string "32"`],
    ['k missing for topk', (c: Record<string, unknown>) => delete c['k'], "missing field 'k'"],
    ['k a float', (c: Record<string, unknown>) => (c['k'] = 3.5), "field 'k' must be a positive integer but is the number 3.5"],
    ['k above d_sae', (c: Record<string, unknown>) => (c['k'] = 30000), 'larger than d_sae'],
    ['a bad normalize_activations', (c: Record<string, unknown>) => (c['normalize_activations'] = 'l2'), `field 'normalize_activations' is "l2", expected one of none, expected_average_only_in`],
    ['normalize_activations as pre-6 boolean', (c: Record<string, unknown>) => (c['normalize_activations'] = false), "field 'normalize_activations' must be a string but is the boolean false"],
    ['a bad dtype', (c: Record<string, unknown>) => (c['dtype'] = 'fp32'), `field 'dtype' is "fp32"`],
    ['a missing dtype', (c: Record<string, unknown>) => delete c['dtype'], "missing field 'dtype'"],
    ['apply_b_dec_to_input as a string', (c: Record<string, unknown>) => (c['apply_b_dec_to_input'] = 'true'), "field 'apply_b_dec_to_input' must be a boolean"],
    ['an unknown architecture', (c: Record<string, unknown>) => (c['architecture'] = 'batchtopk'), `field 'architecture' is the string "batchtopk"`],
    ['no sae_lens_version', (c: Record<string, unknown>) => delete (c['metadata'] as Record<string, unknown>)['sae_lens_version'], "missing field 'metadata.sae_lens_version'"],
    ['a pre-6 sae_lens_version', (c: Record<string, unknown>) => ((c['metadata'] as Record<string, unknown>)['sae_lens_version'] = '5.9.1'), 'as a pre-6.0 config'],
    ['hook_name a number', (c: Record<string, unknown>) => ((c['metadata'] as Record<string, unknown>)['hook_name'] = 8), "field 'metadata.hook_name' must be a string but is the integer 8"],
    ['no metadata', (c: Record<string, unknown>) => delete c['metadata'], "missing field 'metadata'"],
    ['a bad reshape_activations', (c: Record<string, unknown>) => (c['reshape_activations'] = 'hook_q'), "field 'reshape_activations'"],
  ])('rejects %s, naming the file and the field', (_what, edit, message) => {
    const cfg = structuredClone(GOOD_TOPK) as Record<string, unknown>;
    edit(cfg);
    expect(saeLensCfgErrors(cfg).join('\n')).toContain(message);
    expectThrow(() => checkSaeLensCfg(cfg, '/x/cfg.json'), FormatError, '/x/cfg.json: not a SAELens cfg.json', message);
  });

  it('rejects a transcoder without d_out or with apply_b_dec_to_input, and flags saekit-only names', () => {
    const tc: Record<string, unknown> = { ...structuredClone(GOOD_TOPK), architecture: 'transcoder', apply_b_dec_to_input: true };
    expect(saeLensCfgErrors(tc)).toEqual(
      expect.arrayContaining([expect.stringContaining("missing field 'd_out'"), expect.stringContaining('apply_b_dec_to_input is not supported for transcoders')]),
    );
    const saekitOnly = { ...structuredClone(GOOD_TOPK), architecture: 'topk_transcoder', d_out: 768, apply_b_dec_to_input: false };
    expectThrow(() => checkSaeLensCfg(saekitOnly, 'cfg.json'), FormatError, "architecture 'topk_transcoder' is not SAELens-loadable");
    expect(checkSaeLensCfg(saekitOnly, 'cfg.json', { allowSaekitOnly: true }).loadable).toBe(false);
    // ... and still checks its fields.
    expect(saeLensCfgErrors({ ...saekitOnly, k: '4' }).join()).toContain("field 'k' must be a positive integer");
  });

  it('tensors: exactly the module parameters, in their shapes (load_state_dict is strict)', () => {
    const cfg = { ...GOOD_TOPK, architecture: 'jumprelu', d_in: 3, d_sae: 4 };
    const t = (shape: number[]) => ({ dtype: 'F32', shape });
    const ok = { W_enc: t([3, 4]), b_enc: t([4]), W_dec: t([4, 3]), b_dec: t([3]), threshold: t([4]) };
    expect(saeLensTensorErrors(cfg, ok)).toEqual([]);
    const { threshold: _, ...noThreshold } = ok;
    expect(saeLensTensorErrors(cfg, noThreshold)).toEqual([expect.stringContaining("missing tensor 'threshold'")]);
    expect(saeLensTensorErrors(cfg, { ...ok, W_skip: t([3, 3]) })).toEqual([expect.stringContaining("unexpected tensor 'W_skip'")]);
    expect(saeLensTensorErrors(cfg, { ...ok, W_enc: t([4, 3]) })).toEqual([expect.stringContaining("tensor 'W_enc' has shape [4, 3], expected [3, 4]")]);
    expect(saeLensTensorErrors(cfg, { ...ok, b_dec: { dtype: 'I32', shape: [3] } })).toEqual([expect.stringContaining('dtype I32')]);
  });
});

// ---------------------------------------------------------------------------------------------
// saveSaeLens, every architecture it writes, every dtype.

type Kind = 'standard' | 'topk' | 'jumprelu' | 'transcoder' | 'skip_transcoder' | 'jumprelu_transcoder' | 'jumprelu_skip_transcoder' | 'topk_transcoder' | 'topk_skip_transcoder';

function weightsFor(kind: Kind, s: number): SaeWeights {
  const base = kind.startsWith('topk') ? 'topk' : kind.startsWith('jumprelu') ? 'jumprelu' : 'standard';
  const dIn = 13;
  const dSae = 37;
  const w = randomWeights(base, dIn, dSae, s, 5);
  if (kind === 'topk') w.encTransposed = true; // a sparsify-layout encoder is transposed on save
  if (kind.includes('transcoder')) {
    const r = rng(s + 1);
    const dOut = 11;
    w.config.dOut = dOut;
    w.config.applyBDecToInput = false;
    w.config.hookNameOut = 'blocks.1.hook_mlp_out';
    w.W_dec = randomFloat32(dSae * dOut, r);
    w.b_dec = randomFloat32(dOut, r, 0.1);
    if (kind.includes('skip')) w.W_skip = randomFloat32(dOut * dIn, r, 0.1);
  }
  return w;
}

const KINDS: Kind[] = ['standard', 'topk', 'jumprelu', 'transcoder', 'skip_transcoder', 'jumprelu_transcoder', 'jumprelu_skip_transcoder', 'topk_transcoder', 'topk_skip_transcoder'];
const DTYPES: SaveDtype[] = ['float32', 'float16', 'bfloat16'];

describe('saveSaeLens writes what SAELens reads', () => {
  it.each(KINDS.flatMap((k) => DTYPES.map((d) => [k, d] as const)))('%s at %s', async (kind, dtype) => {
    const w = weightsFor(kind, seed + KINDS.indexOf(kind) * 10 + DTYPES.indexOf(dtype));
    const dir = join(await dirs.make(), 'sae');
    const sparsity = randomFloat32(w.config.dSae, rng(seed), 5);
    await saveSaeLens(dir, w, { dtype, sparsity });
    const report = await checkSaeLensDir(dir, { allowSaekitOnly: true });
    expect(report.architecture).toBe(kind);
    expect(report.loadable).toBe(!kind.startsWith('topk_'));
    const cfg = await cfgOf(dir);
    expect(cfg).toMatchObject({ dtype, d_in: 13, d_sae: 37, apply_b_dec_to_input: !kind.includes('transcoder') });
    expect(cfg['metadata']).toMatchObject({ hook_name: 'blocks.1.hook_resid_pre', model_name: 'tiny-model', context_size: 128, prepend_bos: true });
    if (kind.includes('transcoder')) expect(cfg).toMatchObject({ d_out: 11, metadata: { hook_name_out: 'blocks.1.hook_mlp_out' } });
    await expectWeightsBitExact(dir, w, dtype);
    const sp = (await rawTensors(join(dir, 'sparsity.safetensors')))['sparsity']!;
    expect(Buffer.from(sp.bytes).equals(Buffer.from(bytesOf(sparsity)))).toBe(true);
  });

  it('the independent checks can fail: a flipped bit and a stray tensor are caught', async () => {
    const w = weightsFor('jumprelu', seed + 999);
    const dir = join(await dirs.make(), 'sae');
    await saveSaeLens(dir, w);
    const moved = { ...w, b_enc: w.b_enc.slice() };
    moved.b_enc[3] = Math.fround(moved.b_enc[3]! + 2 ** -20);
    await expect(expectWeightsBitExact(dir, moved, 'float32')).rejects.toThrow();
    await writeSafetensors(join(dir, 'sae_weights.safetensors'), {
      ...Object.fromEntries(Object.entries(expectedTensors(w)).map(([n, a]) => [n, { dtype: 'F32' as const, shape: n.startsWith('W') ? (n === 'W_enc' ? [13, 37] : [37, 13]) : [a.length], data: a }])),
      log_threshold: { dtype: 'F32', shape: [37], data: w.threshold! },
    });
    await expectReject(() => checkSaeLensDir(dir), FormatError, "unexpected tensor 'log_threshold'");
  });
});

// ---------------------------------------------------------------------------------------------
// Trained by saekit's trainer: every architecture and kind it saves.

async function trainingData(rows: number, dIn: number, dOut: number, s: number): Promise<{ input: string; target: string }> {
  const dir = await dirs.make();
  const r = rng(s);
  const x = randomFloat32(rows * dIn, r);
  const mix = randomFloat32(dIn * dOut, r, 0.5);
  const y = new Float32Array(rows * dOut);
  for (let i = 0; i < rows; i++) for (let o = 0; o < dOut; o++) {
    let acc = 0;
    for (let j = 0; j < dIn; j++) acc += Math.max(0, x[i * dIn + j]!) * mix[j * dOut + o]!;
    y[i * dOut + o] = acc;
  }
  await writeNpy(join(dir, 'x.npy'), x, [rows, dIn]);
  await writeNpy(join(dir, 'y.npy'), y, [rows, dOut]);
  return { input: join(dir, 'x.npy'), target: join(dir, 'y.npy') };
}

describe('trained SAEs and transcoders are SAELens directories', () => {
  const cases: Array<[string, Partial<TrainJobOptions>, string, SaveDtype]> = [
    ['topk', { architecture: 'topk' }, 'topk', 'float32'],
    ['batchtopk', { architecture: 'batchtopk' }, 'jumprelu', 'bfloat16'],
    ['standard', { architecture: 'standard' }, 'standard', 'float16'],
    ['jumprelu', { architecture: 'jumprelu' }, 'jumprelu', 'float32'],
    ['topk transcoder', { kind: 'transcoder' }, 'topk_transcoder', 'float32'],
    ['jumprelu transcoder', { kind: 'transcoder', architecture: 'jumprelu' }, 'jumprelu_transcoder', 'float32'],
    ['standard skip transcoder', { kind: 'skip-transcoder', architecture: 'standard' }, 'skip_transcoder', 'bfloat16'],
  ];
  it.each(cases)('%s', async (_name, o, architecture, saveDtype) => {
    const transcoder = o.kind !== undefined;
    const data = await trainingData(1024, 12, transcoder ? 10 : 12, seed + 7);
    const output = join(await dirs.make(), 'trained');
    await train({
      input: data.input,
      ...(transcoder && { target: data.target, hookNameOut: 'blocks.2.hook_mlp_out' }),
      output,
      k: 4,
      dSae: 48,
      tokens: 2048,
      batchSize: 256,
      seed,
      saveDtype,
      hookName: transcoder ? 'blocks.2.ln2.hook_normalized' : 'blocks.2.hook_resid_pre',
      modelName: 'tiny',
      ...o,
    });
    const report = await checkSaeLensDir(output, { allowSaekitOnly: true });
    expect(report.architecture).toBe(architecture);
    expect(report.loadable).toBe(architecture !== 'topk_transcoder');
    const cfg = await cfgOf(output);
    expect(cfg).toMatchObject({ dtype: saveDtype, d_in: 12, d_sae: 48, metadata: { model_name: 'tiny' } });
    if (transcoder) expect(cfg).toMatchObject({ d_out: 10, apply_b_dec_to_input: false, metadata: { hook_name_out: 'blocks.2.hook_mlp_out' } });
    // What saekit reads back is what the file holds, bit for bit.
    const w = await readSaeDir(output);
    const raw = await rawTensors(join(output, 'sae_weights.safetensors'));
    expect(Object.keys(raw).sort()).toEqual(Object.keys(expectedTensors(w)).sort());
    await expectWeightsBitExact(output, w, saveDtype);
  });
});

// ---------------------------------------------------------------------------------------------
// saekit convert: sparsify, Gemma Scope and SAELens folders -> SAELens, the same SAE.

function rows(n: number, dIn: number, s: number): Float32Array {
  return randomFloat32(n * dIn, rng(s), 2);
}

/** The source and the converted SAE give identical codes and reconstructions, bit for bit. */
async function expectSameSae(src: string | SaeWeights, out: string, s: number): Promise<void> {
  const a = typeof src === 'string' ? await loadSae(src, { device: 'cpu' }) : await createSae(src, { device: 'cpu' });
  const b = await loadSae(out, { device: 'cpu' });
  try {
    expect(b.dIn).toBe(a.dIn);
    expect(b.dSae).toBe(a.dSae);
    expect(b.dOut).toBe(a.dOut);
    const x = rows(96, a.dIn, s);
    const ca = await a.encode(x);
    const cb = await b.encode(x);
    expect(cb.indptr).toEqual(ca.indptr);
    expect(cb.indices).toEqual(ca.indices);
    expect(Buffer.from(bytesOf(cb.values)).equals(Buffer.from(bytesOf(ca.values)))).toBe(true);
    expect(ca.values.length).toBeGreaterThan(0);
    const da = a.hasSkip ? await a.forward(x) : await a.decode(ca);
    const db = b.hasSkip ? await b.forward(x) : await b.decode(cb);
    expect(Buffer.from(bytesOf(db)).equals(Buffer.from(bytesOf(da)))).toBe(true);
  } finally {
    a.dispose();
    b.dispose();
  }
}

async function writeSparsifyRun(run: string, hookpoint: string, dIn: number, dSae: number, k: number, s: number, opts: { transcode?: boolean; dtype?: 'F32' | 'BF16' } = {}): Promise<string> {
  const hook = join(run, hookpoint);
  await mkdir(hook, { recursive: true });
  await writeFile(join(run, 'config.json'), JSON.stringify({ model: 'EleutherAI/pythia-70m', dataset: 'EleutherAI/fineweb-edu-dedup-10b', ctx_len: 2048, batch_size: 32 }));
  await writeFile(
    join(hook, 'cfg.json'),
    JSON.stringify({ activation: 'topk', expansion_factor: 4, normalize_decoder: true, num_latents: dSae, k, multi_topk: false, skip_connection: false, transcode: opts.transcode ?? false, d_in: dIn }),
  );
  const r = rng(s);
  const t = (shape: number[], scale = 1) => {
    const data = randomFloat32(shape.reduce((p, q) => p * q, 1), r, scale);
    return opts.dtype === 'BF16' ? { dtype: 'BF16' as const, shape, data: bf16Bits(data) } : { dtype: 'F32' as const, shape, data };
  };
  await writeSafetensors(join(hook, 'sae.safetensors'), { 'encoder.weight': t([dSae, dIn]), 'encoder.bias': t([dSae], 0.1), W_dec: t([dSae, dIn]), b_dec: t([dIn], 0.1) });
  return hook;
}

describe('saekit convert', () => {
  it('sparsify TopK (odd d_in, from the run folder) -> SAELens topk, hook and model carried', async () => {
    const run = join(await dirs.make(), 'pythia-run');
    await writeSparsifyRun(run, 'layers.3', 45, 180, 7, seed + 100);
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(run, out);
    expect(r).toMatchObject({ from: 'sparsify', architecture: 'topk', loadable: true, dtype: 'float32' });
    await checkSaeLensDir(out);
    const cfg = await cfgOf(out);
    expect(cfg).toMatchObject({
      architecture: 'topk', d_in: 45, d_sae: 180, k: 7, apply_b_dec_to_input: true, rescale_acts_by_decoder_norm: false,
      metadata: { hook_name: 'blocks.3.hook_resid_post', sparsify_hookpoint: 'layers.3', model_name: 'EleutherAI/pythia-70m', dataset_path: 'EleutherAI/fineweb-edu-dedup-10b', context_size: 2048 },
    });
    expect((cfg['metadata'] as Record<string, unknown>)['saekit_convert_notes']).toEqual([expect.stringContaining('inferred from the sparsify hookpoint')]);
    await expectSameSae(run, out, seed + 101);
    await expectWeightsBitExact(out, await readSaeDir(run), 'float32');
    expect(await leftovers(join(out, '..'))).toEqual([]);
  });

  it('sparsify bfloat16 transcoder -> saekit topk_transcoder (flagged: SAELens cannot load it), kept in bfloat16', async () => {
    const hook = await writeSparsifyRun(join(await dirs.make(), 'run'), 'layers.2.mlp', 21, 84, 5, seed + 110, { transcode: true, dtype: 'BF16' });
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(hook, out);
    expect(r).toMatchObject({ architecture: 'topk_transcoder', loadable: false, dtype: 'bfloat16' });
    expect(r.notes.join()).toContain('not SAELens-loadable');
    expect(await cfgOf(out)).toMatchObject({ d_out: 21, apply_b_dec_to_input: false, metadata: { hook_name: 'blocks.2.ln2.hook_normalized', hook_name_out: 'blocks.2.hook_mlp_out' } });
    await expectSameSae(hook, out, seed + 111);
  });

  it('Gemma Scope params.npz (odd d_in, in a gemma-scope repository path) -> jumprelu, no b_dec subtraction', async () => {
    const dIn = 41;
    const dSae = 203;
    const w = randomWeights('jumprelu', dIn, dSae, seed + 120);
    const dir = join(await dirs.make(), 'models--google--gemma-scope-2b-pt-res', 'snapshots', 'abc', 'layer_12', 'width_16k', 'average_l0_82');
    await mkdir(dir, { recursive: true });
    await writeNpz(join(dir, 'params.npz'), {
      W_enc: { shape: [dIn, dSae], data: w.W_enc }, W_dec: { shape: [dSae, dIn], data: w.W_dec },
      b_enc: { shape: [dSae], data: w.b_enc }, b_dec: { shape: [dIn], data: w.b_dec }, threshold: { shape: [dSae], data: w.threshold! },
    });
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(dir, out);
    expect(r).toMatchObject({ from: 'gemmascope', architecture: 'jumprelu', loadable: true });
    expect(await cfgOf(out)).toMatchObject({
      architecture: 'jumprelu', d_in: 41, apply_b_dec_to_input: false,
      metadata: { model_name: 'gemma-2-2b', hook_name: 'blocks.12.hook_resid_post', context_size: 1024, prepend_bos: true },
    });
    await expectSameSae(dir, out, seed + 121);
    await expectWeightsBitExact(out, { ...w, config: { ...w.config, applyBDecToInput: false } }, 'float32');
  });

  it("numpy's own Gemma Scope fixture (transposed W_enc, 0-d threshold, [1, n] b_enc); no repository in the path: no hook", async () => {
    const dir = await dirs.make();
    await copyFile(join(FIXTURES, 'numpy', 'params_transposed_compressed.npz'), join(dir, 'params.npz'));
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(dir, out);
    expect(r.notes.join()).toContain('no hook_name or model_name');
    expect((await cfgOf(out))['metadata']).not.toHaveProperty('hook_name');
    await checkSaeLensDir(out);
    await expectSameSae(dir, out, seed + 130);
  });

  it('a Gemma Scope transcoder fixture (numpy-made) -> jumprelu_transcoder with its hooks', async () => {
    const src = join(FIXTURES, 'transcoders', 'repo_gemma_scope_2b_pt_transcoders', 'layer_3', 'width_16k', 'average_l0_54');
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(src, out);
    expect(r).toMatchObject({ architecture: 'jumprelu_transcoder', loadable: true });
    const cfg = await cfgOf(out);
    expect(cfg).toMatchObject({ apply_b_dec_to_input: false, metadata: { hook_name: 'blocks.3.ln2.hook_normalized', hook_name_out: 'blocks.3.hook_mlp_out', model_name: 'gemma-2-2b' } });
    expect(cfg['d_out']).toBe(cfg['d_in']);
    await expectSameSae((await readGemmaScopeTranscoderAt(src))!, out, seed + 140);
  });

  it('Gemma Scope 2 params.safetensors (resid_post, odd d_in, with config.json) -> jumprelu, hook from the folder', async () => {
    const dIn = 23;
    const dSae = 96;
    const w = randomWeights('jumprelu', dIn, dSae, seed + 170);
    const dir = join(await dirs.make(), 'resid_post', 'layer_7_width_16k_l0_small');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), JSON.stringify({ architecture: 'jump_relu', model_name: 'google/gemma-3-270m' }));
    const f = (shape: number[], data: Float32Array) => ({ dtype: 'F32' as const, shape, data });
    await writeSafetensors(join(dir, 'params.safetensors'), {
      w_enc: f([dIn, dSae], w.W_enc), w_dec: f([dSae, dIn], w.W_dec), b_enc: f([dSae], w.b_enc), b_dec: f([dIn], w.b_dec), threshold: f([dSae], w.threshold!),
    });
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(dir, out);
    expect(r).toMatchObject({ from: 'gemmascope', architecture: 'jumprelu', loadable: true });
    expect(await cfgOf(out)).toMatchObject({ apply_b_dec_to_input: false, d_in: 23, metadata: { hook_name: 'blocks.7.hook_resid_post', model_name: 'google/gemma-3-270m' } });
    await expectSameSae(dir, out, seed + 171);
    await expectWeightsBitExact(out, w, 'float32');
  });

  it('a Gemma Scope 2 cross-layer transcoder layer (numpy-made fixture file) -> jumprelu_skip_transcoder', async () => {
    const src = join(FIXTURES, 'transcoders', 'gemma_scope_2_clt', 'clt', 'width_16k_l0_medium_affine', 'layer_2.safetensors');
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(src, out);
    // It has an affine_skip_connection [10, 10]: a skip transcoder (SAELens after 6.18 names it).
    expect(r).toMatchObject({ architecture: 'jumprelu_skip_transcoder', loadable: true });
    await checkSaeLensDir(out);
    await expectSameSae(src, out, seed + 180);
  });

  it('a SAELens directory (float16, with sparsity) -> the same directory contents, sparsity kept', async () => {
    const w = weightsFor('jumprelu_skip_transcoder', seed + 150);
    const src = join(await dirs.make(), 'src');
    const sparsity = randomFloat32(w.config.dSae, rng(seed + 151), 4);
    await saveSaeLens(src, w, { dtype: 'float16', sparsity });
    const out = join(await dirs.make(), 'converted');
    const r = await convertToSaeLens(src, out);
    expect(r).toMatchObject({ from: 'saelens', architecture: 'jumprelu_skip_transcoder', dtype: 'float16' });
    const a = await rawTensors(join(src, 'sae_weights.safetensors'));
    const b = await rawTensors(join(out, 'sae_weights.safetensors'));
    for (const name of Object.keys(a)) expect(Buffer.from(b[name]!.bytes).equals(Buffer.from(a[name]!.bytes)), name).toBe(true);
    expect(Buffer.from((await rawTensors(join(out, 'sparsity.safetensors')))['sparsity']!.bytes).equals(Buffer.from(bytesOf(sparsity)))).toBe(true);
    await expectSameSae(src, out, seed + 152);
  });

  it('a source whose cfg fails the schema (a string context_size) leaves no output behind, the error names it', async () => {
    const w = randomWeights('topk', 12, 40, seed + 170, 3);
    const src = join(await dirs.make(), 'src');
    await saveSaeLens(src, w);
    const cfg = JSON.parse(await readFile(join(src, 'cfg.json'), 'utf8')) as { metadata: Record<string, unknown> };
    cfg.metadata.context_size = '128';
    await writeFile(join(src, 'cfg.json'), JSON.stringify(cfg));
    const parent = await dirs.make();
    const out = join(parent, 'converted');
    await expectReject(() => convertToSaeLens(src, out), Error, 'context_size');
    expect(await readdir(parent), 'no output and no staging folder').toEqual([]);
    // An existing empty target stays as it was.
    const empty = await dirs.make();
    await expectReject(() => convertToSaeLens(src, empty), Error, 'context_size');
    expect(await readdir(empty)).toEqual([]);
  });

  it('the CLI: converts, prints the result, refuses a non-empty or file target and leaves it untouched', async () => {
    const run = join(await dirs.make(), 'run');
    await writeSparsifyRun(run, 'layers.0', 9, 32, 3, seed + 160);
    const out = join(await dirs.make(), 'out');
    const ok = await runCli('convert', run, '--output', out, '--dtype', 'bfloat16', '--model-name', 'my-model');
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({ architecture: 'topk', dtype: 'bfloat16', loadable: true });
    expect(await cfgOf(out)).toMatchObject({ dtype: 'bfloat16', metadata: { model_name: 'my-model' } });
    const before = await readdir(out);
    const again = await runCli('convert', run, '--output', out);
    expect(again.code).toBe(1);
    expect(again.err).toContain('which is not empty (refusing to overwrite)');
    expect(await readdir(out)).toEqual(before);
    await expectReject(() => convertToSaeLens(run, join(out, 'cfg.json')), ValidationError, 'which is a file');
    const bad = await runCli('convert', run, '--output', join(await dirs.make(), 'x'), '--dtype', 'int8');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--dtype must be one of float32, float16, bfloat16');
    const noOut = await runCli('convert', run);
    expect(noOut.code).toBe(2);
    expect(noOut.err).toContain('missing required flag --output');
    // An empty directory is a fine target.
    const empty = await dirs.make();
    expect((await runCli('convert', run, '--output', empty)).code).toBe(0);
    await checkSaeLensDir(empty);
  });
});
