// Transcoders (issue 18, item 1, first part): a dictionary that reads one hook (d_in) and
// predicts another (d_out), SAELens's `transcoder`, `skip_transcoder`, `jumprelu_transcoder`
// (and the jumprelu skip variant). Encode, decode (d_out wide), forward (with the skip term
// x @ W_skip^T) are checked against float64 references at awkward sizes (d_out below and above
// d_in, odd widths, 1 row); SAELens directories written by hand as SAELens 6.18 lays them out
// load, the writer's round trip keeps every tensor, and bad files are refused by name.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, NpyReader, Rng, ValidationError, createSae, decodeFile, encodeFile, readSaeDir, saveSaeLens, writeNpy, writeSafetensors, type Sae } from '../src/index.js';
import type { Architecture, SaeWeights } from '../src/types.js';
import { runCli } from './helpers/cli.js';
import { expectReject } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('transcoder.test');
const dirs = tempDirs();
const open: Sae[] = [];
afterAll(async () => {
  for (const s of open) s.dispose();
  await dirs.cleanup();
});

const U = 2 ** -24;

/** Random transcoder weights; jumprelu thresholds near the pre-activations' scale. */
function transcoderWeights(architecture: Architecture, dIn: number, dSae: number, dOut: number, skip: boolean, s: number): SaeWeights {
  const rng = new Rng(s);
  const normal = (n: number, scale: number) => rng.fillNormal(new Float32Array(n)).map((v) => v * scale);
  const w: SaeWeights = {
    config: {
      architecture,
      dIn,
      dSae,
      dOut,
      applyBDecToInput: false,
      normalizeActivations: 'none',
      dtype: 'float32',
      format: 'generated',
      hookName: 'blocks.3.ln2.hook_normalized',
      hookNameOut: 'blocks.3.hook_mlp_out',
      metadata: {},
    },
    W_enc: normal(dIn * dSae, 1 / Math.sqrt(dIn)),
    encTransposed: false,
    b_enc: normal(dSae, 0.3),
    W_dec: normal(dSae * dOut, 1 / Math.sqrt(dSae)),
    b_dec: normal(dOut, 0.5),
  };
  if (architecture === 'jumprelu') w.threshold = Float32Array.from({ length: dSae }, () => 0.4 * rng.uniform());
  if (skip) w.W_skip = normal(dOut * dIn, 1 / Math.sqrt(dIn));
  return w;
}

/** Float64 prediction: decode of the given codes plus x @ W_skip^T, with a per-element tolerance. */
function referenceForward(w: SaeWeights, x: Float32Array, codes: Parameters<typeof referenceDecode>[1]): { x: Float64Array; tol: Float64Array } {
  const ref = referenceDecode(w, codes);
  if (!w.W_skip) return ref;
  const { dIn } = w.config;
  const dOut = w.config.dOut!;
  const rows = x.length / dIn;
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < dOut; o++) {
      let s = 0;
      let a = 0;
      for (let i = 0; i < dIn; i++) {
        const t = x[r * dIn + i]! * w.W_skip[o * dIn + i]!;
        s += t;
        a += Math.abs(t);
      }
      ref.x[r * dOut + o]! += s;
      // the fp32 sum of d_in products, then one more add onto the decode
      ref.tol[r * dOut + o]! += 2 * (dIn + 2) * U * (a + Math.abs(ref.x[r * dOut + o]!));
    }
  }
  return ref;
}

function expectClose(got: Float32Array, ref: { x: Float64Array; tol: Float64Array }, what: string): void {
  expect(got.length, what).toBe(ref.x.length);
  const bad: string[] = [];
  for (let i = 0; i < got.length && bad.length < 5; i++) if (!(Math.abs(got[i]! - ref.x[i]!) <= ref.tol[i]!)) bad.push(`${i}: ${got[i]} vs ${ref.x[i]} (tol ${ref.tol[i]})`);
  expect(bad, what).toEqual([]);
}

const CASES: [Architecture, number, number, number, boolean][] = [
  ['standard', 37, 129, 23, false],
  ['standard', 37, 129, 70, true],
  ['jumprelu', 64, 200, 48, false],
  ['jumprelu', 19, 65, 31, true],
  ['standard', 16, 40, 16, true], // d_out = d_in: a skip transcoder of the same width
];

describe('transcoders against float64', () => {
  it.each(CASES)('%s d_in %i d_sae %i d_out %i skip %s: encode, decode, forward', async (arch, dIn, dSae, dOut, skip) => {
    const w = transcoderWeights(arch, dIn, dSae, dOut, skip, seed + dIn + dOut);
    const sae = await createSae(w, { device: 'auto' });
    open.push(sae);
    if (skip) expect(sae.device).toBe('cpu'); // the dense skip term runs on the CPU backend only
    expect([sae.dIn, sae.dOut, sae.hasSkip]).toEqual([dIn, dOut, skip]);
    for (const rows of [1, 50]) {
      const x = new Rng(seed + rows).fillNormal(new Float32Array(rows * dIn));
      const codes = await sae.encode(x);
      expect(compareCodes(w, referenceEncode(w, x), codes)).toEqual([]);
      const out = new Float32Array(rows * dOut).fill(Number.NaN);
      expectClose(await sae.decode(codes, out), referenceDecode(w, codes), `decode, ${rows} rows`);
      const y = new Float32Array(rows * dOut).fill(Number.NaN);
      expectClose(await sae.forward(x, y), referenceForward(w, x, codes), `forward, ${rows} rows`);
    }
    const one = await sae.encode(new Float32Array(dIn));
    await expectReject(() => sae.decode(one, new Float32Array(dIn === dOut ? dIn + 1 : dIn)), ValidationError, dIn === dOut ? 'd_in' : 'd_out', String(dOut));
  });

  it('the skip term is the only difference between forward and decode, and it is not zero', async () => {
    const w = transcoderWeights('standard', 24, 60, 12, true, seed + 99);
    const sae = await createSae(w, { device: 'cpu' });
    open.push(sae);
    const x = new Rng(seed + 100).fillNormal(new Float32Array(3 * 24));
    const d = await sae.decode(await sae.encode(x));
    const f = await sae.forward(x);
    let moved = 0;
    for (let i = 0; i < d.length; i++) moved = Math.max(moved, Math.abs(f[i]! - d[i]!));
    expect(moved).toBeGreaterThan(0.1);
  });

  it('refuses weights that do not fit the transcoder shape, naming the tensor', async () => {
    const w = transcoderWeights('standard', 10, 20, 7, true, seed + 5);
    await expectReject(() => createSae({ ...w, W_skip: new Float32Array(70 - 1) }), ValidationError, 'W_skip', '70');
    await expectReject(() => createSae({ ...w, b_dec: new Float32Array(10) }), ValidationError, 'b_dec', 'd_out 7');
    await expectReject(() => createSae({ ...w, config: { ...w.config, applyBDecToInput: true } }), ValidationError, 'applyBDecToInput');
  });
});

describe('SAELens transcoder directories', () => {
  /** A directory as SAELens 6.18 writes a transcoder (no hook_name_out in its cfg). */
  async function writeByHand(dir: string, arch: string, w: SaeWeights, cfgExtra: Record<string, unknown> = {}): Promise<void> {
    await mkdir(dir, { recursive: true });
    const { dIn, dSae } = w.config;
    const dOut = w.config.dOut!;
    const tensors: Parameters<typeof writeSafetensors>[1] = {
      W_enc: { dtype: 'F32', shape: [dIn, dSae], data: w.W_enc },
      b_enc: { dtype: 'F32', shape: [dSae], data: w.b_enc },
      W_dec: { dtype: 'F32', shape: [dSae, dOut], data: w.W_dec },
      b_dec: { dtype: 'F32', shape: [dOut], data: w.b_dec },
    };
    if (w.threshold) tensors['threshold'] = { dtype: 'F32', shape: [dSae], data: w.threshold };
    if (w.W_skip) tensors['W_skip'] = { dtype: 'F32', shape: [dOut, dIn], data: w.W_skip };
    await writeSafetensors(join(dir, 'sae_weights.safetensors'), tensors);
    const cfg = {
      architecture: arch,
      d_in: dIn,
      d_sae: dSae,
      d_out: dOut,
      dtype: 'float32',
      device: 'cpu',
      apply_b_dec_to_input: false,
      normalize_activations: 'none',
      reshape_activations: 'none',
      metadata: { model_name: 'gemma-2-2b', hook_name: 'blocks.5.ln2.hook_normalized', context_size: 1024, sae_lens_version: '6.18.0' },
      ...cfgExtra,
    };
    await writeFile(join(dir, 'cfg.json'), JSON.stringify(cfg));
  }

  it.each([
    ['transcoder', 'standard', false],
    ['skip_transcoder', 'standard', true],
    ['jumprelu_transcoder', 'jumprelu', false],
  ] as const)('%s: loads, infers the output hook, and round-trips through saveSaeLens', async (name, arch, skip) => {
    const w = transcoderWeights(arch, 21, 45, 13, skip, seed + name.length);
    const dir = join(await dirs.make(), name);
    await writeByHand(dir, name, w);
    const got = await readSaeDir(dir);
    expect(got.config).toMatchObject({ architecture: arch, dIn: 21, dSae: 45, dOut: 13, applyBDecToInput: false, hookName: 'blocks.5.ln2.hook_normalized', hookNameOut: 'blocks.5.hook_mlp_out' });
    expect(String(got.config.metadata['hook_name_out_inferred'])).toContain('no hook_name_out');
    expect(got.W_dec).toEqual(w.W_dec);
    expect(got.W_skip).toEqual(w.W_skip);
    const info = JSON.parse((await runCli('info', dir)).out) as Record<string, unknown>;
    expect([info['kind'], info['dOut'], info['hookNameOut']]).toEqual([skip ? 'skip transcoder' : 'transcoder', 13, 'blocks.5.hook_mlp_out']);
    // saekit's writer: SAELens's architecture name, d_out and the output hook.
    const again = join(dir, '..', `${name}-saved`);
    await saveSaeLens(again, got);
    const cfg = JSON.parse(await readFile(join(again, 'cfg.json'), 'utf8')) as Record<string, unknown>;
    expect([cfg['architecture'], cfg['d_out'], (cfg['metadata'] as Record<string, unknown>)['hook_name_out']]).toEqual([name, 13, 'blocks.5.hook_mlp_out']);
    const back = await readSaeDir(again);
    expect([back.W_enc, back.b_enc, back.W_dec, back.b_dec, back.threshold, back.W_skip]).toEqual([got.W_enc, got.b_enc, got.W_dec, got.b_dec, got.threshold, got.W_skip]);
    // And it runs: the file pipeline writes [rows, d_out].
    const sae = await createSae(back, { device: 'cpu' });
    open.push(sae);
    const acts = join(dir, '..', `${name}-acts.npy`);
    const x = new Rng(seed + 7).fillNormal(new Float32Array(9 * 21));
    await writeNpy(acts, x, [9, 21]);
    const codes = join(dir, '..', `${name}-codes.safetensors`);
    await encodeFile(sae, acts, codes);
    const recon = join(dir, '..', `${name}-recon.npy`);
    await decodeFile(sae, codes, recon, { chunkRows: 4 });
    const r = await NpyReader.open(recon);
    try {
      expect(r.shape).toEqual([9, 13]);
      expectClose(await r.readAllFloat32(), referenceDecode(w, await sae.encode(x)), 'decodeFile');
    } finally {
      await r.close();
    }
  });

  it('an explicit hook_name_out wins; bad transcoder files are refused naming the file and field', async () => {
    const w = transcoderWeights('standard', 8, 16, 5, false, seed + 3);
    const base = await dirs.make();
    const named = join(base, 'named');
    await writeByHand(named, 'transcoder', w, { hook_name_out: 'blocks.5.hook_resid_mid' });
    expect((await readSaeDir(named)).config.hookNameOut).toBe('blocks.5.hook_resid_mid');

    const applyBDec = join(base, 'apply');
    await writeByHand(applyBDec, 'transcoder', w, { apply_b_dec_to_input: true });
    await expectReject(() => readSaeDir(applyBDec), FormatError, 'cfg.json', 'apply_b_dec_to_input');
    const noDOut = join(base, 'nodout');
    await writeByHand(noDOut, 'transcoder', w, { d_out: undefined });
    await expectReject(() => readSaeDir(noDOut), FormatError, 'cfg.json', 'd_out');
    const normed = join(base, 'normed');
    await writeByHand(normed, 'skip_transcoder', { ...w, W_skip: new Float32Array(40) }, { normalize_activations: 'layer_norm' });
    await expectReject(() => readSaeDir(normed), FormatError, 'layer_norm', 'transcoders');
    const noSkip = join(base, 'noskip');
    await writeByHand(noSkip, 'skip_transcoder', w);
    await expectReject(() => readSaeDir(noSkip), FormatError, 'sae_weights.safetensors', 'W_skip');
    const wrongDOut = join(base, 'wrongdout');
    await writeByHand(wrongDOut, 'transcoder', w, { d_out: 6 });
    await expectReject(() => readSaeDir(wrongDOut), FormatError, 'W_dec', 'd_out 6');
  });
});

describe('gated SAEs (SAELens `gated`), loaded as the JumpReLU SAE they equal', () => {
  it('codes match the gated formula in float64, away from the gate boundary', async () => {
    const dIn = 29;
    const dSae = 77;
    const rng = new Rng(seed + 500);
    const normal = (n: number, scale: number) => rng.fillNormal(new Float32Array(n)).map((v) => v * scale);
    const W_enc = normal(dIn * dSae, 1 / Math.sqrt(dIn));
    const b_gate = normal(dSae, 0.3);
    const r_mag = normal(dSae, 0.5);
    const b_mag = normal(dSae, 0.3);
    const W_dec = normal(dSae * dIn, 1 / Math.sqrt(dSae));
    const b_dec = normal(dIn, 0.2);
    const dir = join(await dirs.make(), 'gated');
    await mkdir(dir, { recursive: true });
    await writeSafetensors(join(dir, 'sae_weights.safetensors'), {
      W_enc: { dtype: 'F32', shape: [dIn, dSae], data: W_enc },
      b_gate: { dtype: 'F32', shape: [dSae], data: b_gate },
      r_mag: { dtype: 'F32', shape: [dSae], data: r_mag },
      b_mag: { dtype: 'F32', shape: [dSae], data: b_mag },
      W_dec: { dtype: 'F32', shape: [dSae, dIn], data: W_dec },
      b_dec: { dtype: 'F32', shape: [dIn], data: b_dec },
    });
    await writeFile(join(dir, 'cfg.json'), JSON.stringify({ architecture: 'gated', d_in: dIn, d_sae: dSae, dtype: 'float32', apply_b_dec_to_input: true, normalize_activations: 'none', metadata: { hook_name: 'blocks.2.hook_resid_pre' } }));
    const w = await readSaeDir(dir);
    expect(w.config.architecture).toBe('jumprelu');
    expect(String(w.config.metadata['gated_folded'])).toContain('threshold');
    const sae = await createSae(w, { device: 'cpu' });
    open.push(sae);
    const rows = 40;
    const x = new Rng(seed + 501).fillNormal(new Float32Array(rows * dIn));
    const codes = await sae.encode(x);
    let checked = 0;
    for (let r = 0; r < rows; r++) {
      const got = new Map<number, number>();
      for (let e = codes.indptr[r]!; e < codes.indptr[r + 1]!; e++) got.set(codes.indices[e]!, codes.values[e]!);
      for (let j = 0; j < dSae; j++) {
        let s = 0;
        let a = 0;
        for (let i = 0; i < dIn; i++) {
          const t = (x[r * dIn + i]! - b_dec[i]!) * W_enc[i * dSae + j]!;
          s += t;
          a += Math.abs(t);
        }
        const e = Math.exp(r_mag[j]!);
        const gate = s + b_gate[j]!;
        const mag = e * s + b_mag[j]!;
        const want = gate > 0 ? Math.max(mag, 0) : 0;
        const tol = 8 * (dIn + 4) * U * (e * a + Math.abs(b_mag[j]!) + e * Math.abs(b_gate[j]!)) + 1e-6;
        // Near the gate (or at relu's 0) fp32 rounding may decide either way: skip those.
        if (Math.abs(gate) * e <= tol || Math.abs(mag) <= tol) continue;
        checked++;
        expect(Math.abs((got.get(j) ?? 0) - want), `row ${r} latent ${j}`).toBeLessThanOrEqual(tol);
      }
    }
    expect(checked).toBeGreaterThan(rows * dSae * 0.9);
    // A gated SAE with a bad tensor is refused by name.
    await writeSafetensors(join(dir, 'sae_weights.safetensors'), { W_enc: { dtype: 'F32', shape: [dIn, dSae], data: W_enc }, W_dec: { dtype: 'F32', shape: [dSae, dIn], data: W_dec }, b_dec: { dtype: 'F32', shape: [dIn], data: b_dec } });
    await expectReject(() => readSaeDir(dir), FormatError, 'b_gate');
  });
});

describe('Gemma Scope 2 params.safetensors', () => {
  /** Google's published forward: pre = x @ w_enc + b_enc; f = pre * (pre > threshold); f @ w_dec + b_dec + x @ affine. */
  function googleForward(p: Record<string, Float32Array>, x: Float32Array, dIn: number, dSae: number, dOut: number) {
    const rows = x.length / dIn;
    const out = new Float64Array(rows * dOut);
    const tol = new Float64Array(rows * dOut);
    const near: boolean[] = [];
    for (let r = 0; r < rows; r++) {
      const f = new Float64Array(dSae);
      for (let j = 0; j < dSae; j++) {
        let s = p['b_enc']![j]!;
        let a = Math.abs(s);
        for (let i = 0; i < dIn; i++) {
          const t = x[r * dIn + i]! * p['w_enc']![i * dSae + j]!;
          s += t;
          a += Math.abs(t);
        }
        if (Math.abs(s - p['threshold']![j]!) <= 4 * (dIn + 2) * U * a) near[r] = true; // fp32 may decide either way
        f[j] = s > p['threshold']![j]! ? s : 0;
      }
      for (let o = 0; o < dOut; o++) {
        let s = p['b_dec']![o]!;
        let a = Math.abs(s);
        for (let j = 0; j < dSae; j++) {
          const t = f[j]! * p['w_dec']![j * dOut + o]!;
          s += t;
          a += Math.abs(t);
        }
        if (p['affine_skip_connection']) {
          for (let i = 0; i < dIn; i++) {
            const t = x[r * dIn + i]! * p['affine_skip_connection']![i * dOut + o]!;
            s += t;
            a += Math.abs(t);
          }
        }
        out[r * dOut + o] = s;
        tol[r * dOut + o] = 4 * (dIn + dSae + 4) * U * a + 1e-6;
      }
    }
    return { x: out, tol, near };
  }

  it.each([
    ['resid_post', 'layer_7_width_16k_l0_small', 24, 24, false],
    ['transcoder', 'layer_3_width_16k_l0_big', 24, 24, true], // an affine transcoder: square skip, orientation matters
    ['transcoder', 'layer_3_width_16k_l0_big', 20, 28, true],
  ] as const)('%s/%s (d_in %i, d_out %i, affine %s) matches the published forward', async (site, name, dIn, dOut, affine) => {
    const dSae = 90;
    const rng = new Rng(seed + dIn * 3 + dOut);
    const normal = (n: number, scale: number) => rng.fillNormal(new Float32Array(n)).map((v) => v * scale);
    const p: Record<string, Float32Array> = {
      w_enc: normal(dIn * dSae, 1 / Math.sqrt(dIn)),
      w_dec: normal(dSae * dOut, 1 / Math.sqrt(dSae)),
      b_enc: normal(dSae, 0.2),
      b_dec: normal(dOut, 0.3),
      threshold: Float32Array.from({ length: dSae }, () => 0.05 + 0.3 * rng.uniform()),
    };
    if (affine) p['affine_skip_connection'] = normal(dIn * dOut, 1 / Math.sqrt(dIn));
    const shapes: Record<string, number[]> = { w_enc: [dIn, dSae], w_dec: [dSae, dOut], b_enc: [dSae], b_dec: [dOut], threshold: [dSae], affine_skip_connection: [dIn, dOut] };
    const dir = join(await dirs.make(), site, name);
    await mkdir(dir, { recursive: true });
    await writeSafetensors(join(dir, 'params.safetensors'), Object.fromEntries(Object.entries(p).map(([k, v]) => [k, { dtype: 'F32' as const, shape: shapes[k]!, data: v }])));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ architecture: 'jump_relu', model_name: 'gemma-3-1b-it', affine_connection: affine }));
    const w = await readSaeDir(dir);
    expect(w.config).toMatchObject({ architecture: 'jumprelu', dIn, dSae, applyBDecToInput: false, format: 'gemmascope', modelName: 'gemma-3-1b-it' });
    if (site === 'resid_post') expect([w.config.hookName, w.config.dOut, w.W_skip]).toEqual(['blocks.7.hook_resid_post', undefined, undefined]);
    else expect([w.config.dOut, w.config.hookNameOut]).toEqual([dOut, 'blocks.3.hook_mlp_out']);
    const sae = await createSae(w, { device: 'auto' });
    open.push(sae);
    const rows = 12;
    const x = new Rng(seed + 77).fillNormal(new Float32Array(rows * dIn));
    const got = await sae.forward(x);
    const ref = googleForward(p, x, dIn, dSae, dOut);
    for (let r = 0; r < rows; r++) {
      if (ref.near[r]) continue;
      for (let o = 0; o < dOut; o++) expect(Math.abs(got[r * dOut + o]! - ref.x[r * dOut + o]!), `row ${r} col ${o}`).toBeLessThanOrEqual(ref.tol[r * dOut + o]!);
    }
    expect(ref.near.filter(Boolean).length).toBeLessThan(rows / 2);
  });

  it('refuses a file without its tensors, or a cross-layer decoder, naming the file', async () => {
    const dir = join(await dirs.make(), 'resid_post', 'layer_1_width_16k_l0_small');
    await mkdir(dir, { recursive: true });
    await writeSafetensors(join(dir, 'params.safetensors'), { w_enc: { dtype: 'F32', shape: [4, 6], data: new Float32Array(24) } });
    await expectReject(() => readSaeDir(dir), FormatError, 'params.safetensors', "'w_dec'");
    const f = (n: number) => new Float32Array(n);
    await writeSafetensors(join(dir, 'params.safetensors'), {
      w_enc: { dtype: 'F32', shape: [4, 6], data: f(24) },
      w_dec: { dtype: 'F32', shape: [6, 2, 4], data: f(48) },
      b_enc: { dtype: 'F32', shape: [6], data: f(6) },
      b_dec: { dtype: 'F32', shape: [4], data: f(4) },
      threshold: { dtype: 'F32', shape: [6], data: f(6) },
    });
    await expectReject(() => readSaeDir(dir), FormatError, 'params.safetensors', 'cross-layer');
  });
});

describe('the model side routes transcoders to their output hook', () => {
  it('intervene needs the output hook\'s activations, named in the error; with them it edits them', async () => {
    const { intervene } = await import('../src/model/splice.js');
    const w = transcoderWeights('standard', 8, 16, 8, true, seed + 900);
    const sae = await createSae(w, { device: 'cpu' });
    open.push(sae);
    await expectReject(() => intervene(sae, new Float32Array(8), [{ kind: 'ablate', feature: 1 } as never]), ValidationError, 'transcoder', 'blocks.3.hook_mlp_out', 'trueOut');
    const y = Float32Array.from({ length: 8 }, (_, i) => i);
    expect(await intervene(sae, new Float32Array(8), [], y)).toBe(y);
  });
});
