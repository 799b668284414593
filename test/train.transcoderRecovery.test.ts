// Acceptance tests of transcoder and Matryoshka training on data with a KNOWN answer
// (src/train/groundTruth.ts): judged through the SAVED SAELens directory, read back.
//   - a transcoder recovers >= 90% of the planted output directions (decoder rows);
//   - a skip transcoder recovers the planted linear skip map to cosine > 0.99, and the features;
//   - a Matryoshka SAE's smallest prefix alone reconstructs better than the same-size prefix of
//     a plain TopK SAE trained on the same tokens (and the figure against a TopK SAE trained
//     at that width is logged).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { encodeNpyHeader } from '../src/formats/npy.js';
import { readSaeDir } from '../src/formats/saeDir.js';
import { GroundTruth, TranscoderGroundTruth, featureRecovery } from '../src/train/groundTruth.js';
import { train } from '../src/train/train.js';
import type { SaeWeights } from '../src/types.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.transcoderRecovery.test.ts');
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'saekit-tcrec-'));
  dirs.push(d);
  return d;
}

async function writeNpy(file: string, data: Float32Array, rows: number, cols: number): Promise<void> {
  const header = encodeNpyHeader([rows, cols], '<f4');
  await writeFile(file, Buffer.concat([Buffer.from(header), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! ** 2;
    bb += b[i]! ** 2;
  }
  return ab / Math.sqrt(aa * bb);
}

describe('transcoders recover a planted sparse input -> output map', () => {
  for (const skip of [false, true]) {
    test(`${skip ? 'skip transcoder: the features and the linear skip (cosine > 0.99)' : 'transcoder: >= 90% of the planted output directions'}`, async () => {
      const dir = await tempDir();
      // The skip map is identifiable only through input that the dictionary cannot explain:
      // with x = codes D_in alone, any M moves between them (W_skip = S + M, decoder rows
      // D_out[f] - M D_in[f] fit equally well). So the skip case gives the input a dense
      // Gaussian part (std 0.2 per dimension) that reaches the output only through S.
      const dIn = 96, dOut = 80, nFeatures = 192;
      const gt = new TranscoderGroundTruth({ dIn, dOut, nFeatures, meanActive: 3, noise: skip ? 0.2 : 0.01, outputNoise: 0.01, seed, ...(skip && { skipScale: 1 }) });
      const rows = 120_000;
      const { x, y } = gt.samplePairs(rows);
      await writeNpy(join(dir, 'in.npy'), x, rows, dIn);
      await writeNpy(join(dir, 'out.npy'), y, rows, dOut);
      const output = join(dir, 'tc');
      const dSae = 384;
      const result = await train({
        input: join(dir, 'in.npy'),
        target: join(dir, 'out.npy'),
        kind: skip ? 'skip-transcoder' : 'transcoder',
        // batchtopk saves as SAELens's jumprelu_transcoder; topk as saekit's topk_skip_transcoder.
        architecture: skip ? 'topk' : 'batchtopk',
        output,
        k: 4,
        dSae,
        tokens: skip ? 1_200_000 : 720_000,
        batchSize: 512,
        lr: 4e-3,
        deadTokens: 20_000,
        seed,
        hookName: 'blocks.3.ln2.hook_normalized',
        hookNameOut: 'blocks.3.hook_mlp_out',
      });
      expect(result.stopped).toBe(false);
      const cfg = JSON.parse(await readFile(join(output, 'cfg.json'), 'utf8')) as Record<string, unknown>;
      expect(cfg['architecture']).toBe(skip ? 'topk_skip_transcoder' : 'jumprelu_transcoder');
      expect(cfg['d_out']).toBe(dOut);
      expect(cfg['apply_b_dec_to_input']).toBe(false);
      expect((cfg['metadata'] as Record<string, unknown>)['hook_name_out']).toBe('blocks.3.hook_mlp_out');
      const w: SaeWeights = await readSaeDir(output);
      expect(w.config.dOut).toBe(dOut);
      const rec = featureRecovery(gt.outputDictionary, nFeatures, w.W_dec, dSae, dOut);
      console.log(`${skip ? 'skip ' : ''}transcoder: recovered ${rec.recovered}/${nFeatures} output directions; final fvu ${result.last?.fvu}`);
      expect(rec.recovered).toBeGreaterThanOrEqual(0.9 * nFeatures);
      if (skip) {
        expect(w.W_skip).toBeDefined();
        const c = cosine(w.W_skip!, gt.skip!);
        console.log(`skip transcoder: cosine(W_skip, planted) = ${c.toFixed(5)}`);
        expect(c).toBeGreaterThan(0.99);
      } else {
        expect(w.W_skip).toBeUndefined();
      }
    });
  }
});

/** FVU of reconstructing X with only latents < width, by a batch top-k of k * rows over that prefix. */
function prefixFvu(w: SaeWeights, x: Float32Array, width: number, k: number): number {
  const { dIn, dSae } = w.config;
  const rows = x.length / dIn;
  const pre: { v: number; n: number; j: number }[] = [];
  const xp = new Float64Array(dIn);
  for (let n = 0; n < rows; n++) {
    for (let i = 0; i < dIn; i++) xp[i] = x[n * dIn + i]! - (w.config.applyBDecToInput ? w.b_dec[i]! : 0);
    for (let j = 0; j < width; j++) {
      let v = w.b_enc[j]!;
      for (let i = 0; i < dIn; i++) v += xp[i]! * (w.encTransposed ? w.W_enc[j * dIn + i]! : w.W_enc[i * dSae + j]!);
      if (v > 0) pre.push({ v, n, j });
    }
  }
  pre.sort((a, b) => b.v - a.v);
  const recon = new Float64Array(rows * dIn);
  for (let n = 0; n < rows; n++) for (let i = 0; i < dIn; i++) recon[n * dIn + i] = w.b_dec[i]!;
  for (const { v, n, j } of pre.slice(0, k * rows)) for (let i = 0; i < dIn; i++) recon[n * dIn + i]! += v * w.W_dec[j * dIn + i]!;
  const mean = new Float64Array(dIn);
  for (let n = 0; n < rows; n++) for (let i = 0; i < dIn; i++) mean[i]! += x[n * dIn + i]! / rows;
  let err = 0, dev = 0;
  for (let q = 0; q < rows * dIn; q++) {
    err += (recon[q]! - x[q]!) ** 2;
    dev += (x[q]! - mean[q % dIn]!) ** 2;
  }
  return err / dev;
}

describe('Matryoshka', () => {
  test("the smallest prefix alone reconstructs better than a plain TopK SAE's prefix of that size", async () => {
    const dir = await tempDir();
    const dIn = 48, nFeatures = 192;
    const gt = new GroundTruth({ dIn, nFeatures, meanActive: 4, noise: 0.01, seed: seed ^ 0x99 });
    const rows = 120_000;
    await writeNpy(join(dir, 'x.npy'), gt.sample(rows), rows, dIn);
    const fresh = gt.sample(3000);
    const k = 4, dSae = 256, widths = [32, 128, 256];
    const common = { input: join(dir, 'x.npy'), k, tokens: 300_000, batchSize: 512, lr: 4e-3, deadTokens: 20_000, seed };
    await train({ ...common, output: join(dir, 'm'), architecture: 'matryoshka', matryoshkaWidths: widths, dSae });
    await train({ ...common, output: join(dir, 'p'), architecture: 'topk', dSae });
    await train({ ...common, output: join(dir, 's'), architecture: 'topk', dSae: widths[0]! });
    const m = await readSaeDir(join(dir, 'm'));
    const cfg = JSON.parse(await readFile(join(dir, 'm', 'cfg.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg['architecture']).toBe('jumprelu');
    expect((cfg['metadata'] as Record<string, unknown>)['matryoshka_widths']).toEqual(widths);
    const p = await readSaeDir(join(dir, 'p'));
    const small = await readSaeDir(join(dir, 's'));
    const fm = prefixFvu(m, fresh, widths[0]!, k);
    const fp = prefixFvu(p, fresh, widths[0]!, k);
    const fs = prefixFvu(small, fresh, widths[0]!, k);
    const full = prefixFvu(m, fresh, dSae, k);
    console.log(
      `matryoshka prefix ${widths[0]}: fvu ${fm.toFixed(4)}; plain TopK (d_sae ${dSae}) prefix: ${fp.toFixed(4)}; TopK trained at d_sae ${widths[0]}: ${fs.toFixed(4)}; matryoshka full width: ${full.toFixed(4)}`,
    );
    expect(fm).toBeLessThan(fp);
    expect(full).toBeLessThan(fm);
  });
});
