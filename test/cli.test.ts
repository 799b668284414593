// The CLI end to end, in process (main() returns the exit code): streaming encode/decode of
// .npy and .safetensors dumps through small chunks (so chunk boundaries are crossed), compared
// with the float64 reference; exit codes; bad inputs name the file/flag and leave no output.
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { NpyReader, SafetensorsReader, saveSaeLens, writeNpy, writeSafetensors, f32ToF16Array } from '../src/formats/index.js';
import { Rng, syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { SaeWeights } from '../src/types.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';
import type { SparseCodes } from '../src/codes.js';
import { runCli } from './helpers/cli.js';

let dir: string;
const seed = (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'saekit-cli-'));
  console.log(`cli.test seed ${seed} in ${dir}`);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const run = runCli;

async function readCodes(path: string): Promise<SparseCodes> {
  const st = await SafetensorsReader.open(path);
  try {
    const indptr64 = (await st.readTensor('indptr')) as BigInt64Array;
    const codes: SparseCodes = {
      rows: indptr64.length - 1,
      dSae: Number(st.metadata.d_sae),
      indptr: Uint32Array.from(indptr64, (v) => Number(v)),
      indices: (await st.readTensor('indices')) as Int32Array,
      values: (await st.readTensor('values')) as Float32Array,
    };
    if (st.tensors.has('row_scale')) {
      codes.rowScale = (await st.readTensor('row_scale')) as Float32Array;
      codes.rowShift = (await st.readTensor('row_shift')) as Float32Array;
    }
    return codes;
  } finally {
    await st.close();
  }
}

async function saeDir(name: string, w: SaeWeights): Promise<string> {
  const d = join(dir, name);
  await saveSaeLens(d, w);
  return d;
}

describe.each([
  ['topk', { architecture: 'topk' as const, k: 8 }],
  ['standard + layer_norm', { architecture: 'standard' as const, normalizeActivations: 'layer_norm' as const }],
  ['jumprelu', { architecture: 'jumprelu' as const }],
])('saekit encode/decode: %s', (name, arch) => {
  it('streams .npy through small chunks and matches the float64 reference', async () => {
    const w = syntheticSae({ dIn: 37, dSae: 211, seed, ...arch });
    const sae = await saeDir(`sae-${name}`, w);
    const rows = 301;
    const x = syntheticActivations(w, rows, { seed: seed + 1, active: 5, noise: 0.2 });
    const input = join(dir, `x-${name}.npy`);
    await writeNpy(input, x, [rows, 37]);
    const codesPath = join(dir, `codes-${name}.safetensors`);
    const r = await run('encode', '--sae', sae, '--input', input, '--output', codesPath, '--chunk-rows', '64');
    expect(r.err).toContain('encoded 301 rows');
    expect(r.code).toBe(0);
    const codes = await readCodes(codesPath);
    expect(compareCodes(w, referenceEncode(w, x), codes)).toEqual([]);

    const recon = join(dir, `recon-${name}.npy`);
    expect((await run('decode', '--sae', sae, '--codes', codesPath, '--output', recon, '--chunk-rows', '50')).code).toBe(0);
    const npy = await NpyReader.open(recon);
    const xHat = await npy.readAllFloat32();
    await npy.close();
    expect(npy.shape).toEqual([rows, 37]);
    const ref = referenceDecode(w, codes);
    let bad = 0;
    for (let i = 0; i < xHat.length; i++) if (!(Math.abs(xHat[i]! - ref.x[i]!) <= ref.tol[i]!)) bad++;
    expect(bad).toBe(0);
  });
});

describe('saekit encode inputs', () => {
  it('reads a float16 safetensors tensor of rank 3 chosen with --tensor', async () => {
    const w = syntheticSae({ dIn: 24, dSae: 100, architecture: 'topk', k: 4, seed: seed + 2 });
    const sae = await saeDir('sae-f16', w);
    const x = syntheticActivations(w, 3 * 7, { seed: seed + 3 });
    const h = f32ToF16Array(x);
    const input = join(dir, 'x.safetensors');
    await writeSafetensors(input, {
      acts: { dtype: 'F16', shape: [3, 7, 24], data: h },
      other: { dtype: 'F32', shape: [2], data: new Float32Array(2) },
    });
    const out = join(dir, 'codes-f16.safetensors');
    const missing = await run('encode', '--sae', sae, '--input', input, '--output', out);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/holds 2 tensors .*--tensor/);
    expect((await run('encode', '--sae', sae, '--input', input, '--tensor', 'acts', '--output', out, '--chunk-rows', '5')).code).toBe(0);
    // The reference sees the same float16-rounded inputs.
    const { f16ToF32Array } = await import('../src/formats/index.js');
    const xr = f16ToF32Array(h);
    expect(compareCodes(w, referenceEncode(w, xr), await readCodes(out))).toEqual([]);
  });

  it('bad inputs: exit 1, one line naming the file, no output left behind', async () => {
    const w = syntheticSae({ dIn: 16, dSae: 64, architecture: 'topk', k: 4, seed: seed + 4 });
    const sae = await saeDir('sae-bad', w);
    const out = join(dir, 'bad-out', 'codes.safetensors');
    await rm(join(dir, 'bad-out'), { recursive: true, force: true });
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'bad-out'));

    const wrongWidth = join(dir, 'wide.npy');
    await writeNpy(wrongWidth, new Float32Array(3 * 17), [3, 17]);
    let r = await run('encode', '--sae', sae, '--input', wrongWidth, '--output', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/wide\.npy.*width 17.*d_in 16/);
    expect(r.err.trim().split('\n')).toHaveLength(1);

    const nan = syntheticActivations(w, 200, { seed });
    nan[150 * 16 + 3] = Number.NaN;
    const nanPath = join(dir, 'nan.npy');
    await writeNpy(nanPath, nan, [200, 16]);
    r = await run('encode', '--sae', sae, '--input', nanPath, '--output', out, '--chunk-rows', '64');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/nan\.npy: row 150 has a non-finite value .* column 3/);

    const truncated = join(dir, 'trunc.npy');
    await writeNpy(truncated, new Float32Array(10 * 16), [10, 16]);
    const { truncate } = await import('node:fs/promises');
    await truncate(truncated, 200);
    r = await run('encode', '--sae', sae, '--input', truncated, '--output', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/trunc\.npy.*truncated/);

    r = await run('encode', '--sae', join(dir, 'no-such-sae'), '--input', nanPath, '--output', out);
    expect(r.code).toBe(1);
    expect(r.err).toContain('no-such-sae');

    const notCodes = join(dir, 'notcodes.safetensors');
    await writeSafetensors(notCodes, { w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } });
    r = await run('decode', '--sae', sae, '--codes', notCodes, '--output', join(dir, 'bad-out', 'x.npy'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/notcodes\.safetensors: missing tensor 'indptr'/);

    await writeFile(join(dir, 'junk.txt'), 'hello');
    r = await run('encode', '--sae', sae, '--input', join(dir, 'junk.txt'), '--output', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/junk\.txt: unsupported activation file type/);

    expect(await readdir(join(dir, 'bad-out'))).toEqual([]); // nothing half-written
  });

  it('bad usage exits 2', async () => {
    expect((await run('encode', '--input', 'x.npy', '--output', 'y')).code).toBe(2);
    const r = await run('encode', '--bogus', '1');
    expect(r.code).toBe(2);
    expect(r.err).toContain("'--bogus'");
    expect((await run('frobnicate')).code).toBe(2);
    expect((await run('encode', '--sae', 'a', '--input', 'b', '--output', 'c', '--device', 'tpu')).code).toBe(2);
    expect((await run('demo', '--rows', '-3')).code).toBe(2);
  });
});

describe('saekit info, doctor, demo', () => {
  it('info prints the config as JSON', async () => {
    const w = syntheticSae({ dIn: 8, dSae: 32, architecture: 'jumprelu', seed });
    const r = await run('info', await saeDir('sae-info', w));
    expect(r.code).toBe(0);
    const cfg = JSON.parse(r.out);
    expect(cfg).toMatchObject({ architecture: 'jumprelu', dIn: 8, dSae: 32, format: 'saelens' });
  });

  it('doctor names the backends and the CPU variant', async () => {
    const r = await run('doctor');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/backend cpu: available/);
    expect(r.out).toMatch(/CPU kernels: (avx512|avx2|generic)/);
    expect(r.out).toMatch(/backend cuda:/);
  });

  it('demo runs the whole pipeline on a small shape', async () => {
    const keep = join(dir, 'demo');
    const r = await run('demo', '--rows', '300', '--d-in', '256', '--d-sae', '1024', '--k', '16', '--dir', keep);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/encode +300 rows .*L0 (1[0-6]|[0-9])\.\d\d/);
    // A random SAE reconstructs its own features' mixtures only partly, but well above zero.
    const fvu = Number(/FVU ([0-9.]+)/.exec(r.out)![1]);
    expect(fvu).toBeGreaterThan(0);
    expect(fvu).toBeLessThan(0.9);
    expect((await readdir(keep)).sort()).toEqual([
      'activations.npy', 'acts', 'codes.safetensors', 'corpus.txt', 'dashboard', 'ground_truth.npy', 'model_sae', 'reconstruction.npy', 'sae', 'tiny-gpt2', 'trained_sae',
    ]);
    // The model part: a dump, features per token of the seed sentence, spliced metrics.
    expect(r.out).toMatch(/activations: 64000 tokens of blocks\.1\.hook_resid_pre/);
    expect(r.out).toMatch(/" kingdom" +\d+:\d+\.\d\d/);
    const ce = /CE clean ([0-9.]+), with SAE ([0-9.]+), zero-ablated ([0-9.]+)/.exec(r.out)!;
    for (const v of ce.slice(1)) expect(Number.isFinite(Number(v))).toBe(true);
    expect(r.out).toMatch(/dashboard of all 512 features/);
    expect((await readdir(join(keep, 'dashboard', 'features'))).length).toBe(512);
    // The training part: known features recovered by the trained decoder.
    const recovered = Number(/recovered (\d+) of 256 true features/.exec(r.out)![1]);
    expect(recovered).toBeGreaterThanOrEqual(230);
  });

  it('train makes a SAELens directory that encode loads; bad flags exit 2', async () => {
    const x = new Rng(seed).fillNormal(new Float32Array(3000 * 12));
    const input = join(dir, 'train-acts.npy');
    await writeNpy(input, x, [3000, 12]);
    const out = join(dir, 'trained');
    for (const arch of ['topk', 'batchtopk', 'standard', 'jumprelu']) {
      const r = await run('train', '--input', input, '--output', `${out}-${arch}`, '--arch', arch, '--k', '3', '--d-sae', '40', '--tokens', '2000', '--batch-size', '100', '--log-every', '5');
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(new RegExp(`trained a ${arch} SAE d_in 12 d_sae 40`));
      expect(r.out).toMatch(/^step 5 tokens 500 /m);
      const info = JSON.parse((await run('info', `${out}-${arch}`)).out);
      expect(info.architecture).toBe(arch === 'batchtopk' ? 'jumprelu' : arch);
      const enc = await run('encode', '--sae', `${out}-${arch}`, '--input', input, '--output', join(dir, `train-codes-${arch}.safetensors`));
      expect(enc.code, enc.err).toBe(0);
    }
    expect((await run('train', '--input', input, '--output', out, '--d-sae', '40', '--tokens', '10')).code).toBe(2); // no --k
    expect((await run('train', '--input', input, '--output', out, '--k', '3', '--d-sae', '40', '--tokens', '10', '--arch', 'gated')).code).toBe(2);
    const bad = await run('train', '--input', input, '--output', out, '--k', '50', '--d-sae', '40', '--tokens', '10');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/k \(50\) must be <= d_sae \(40\)/);
  });
});
