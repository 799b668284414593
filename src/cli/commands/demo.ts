// The main job on an embedded default (no GPU, no network): generate an SAE of GPT-2-small
// shape and an activation dump built from its own features, save both in the formats users
// have (SAELens directory, .npy), then run the real pipeline: load, stream-encode to a codes
// file, stream-decode, and report throughput and reconstruction quality.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../errors.js';
import { NpyReader, writeNpy } from '../../formats/npy.js';
import { saveSaeLens } from '../../formats/saveSaeLens.js';
import { loadSae } from '../../sae.js';
import { decodeFile } from '../../stream/decodeFile.js';
import { encodeFile } from '../../stream/encodeFile.js';
import { syntheticActivations, syntheticSae } from '../../synthetic.js';
import { cpuVariant, threads } from '../../system.js';
import { applyThreads, commonFlags, deviceFlag, parse } from '../args.js';

export const demoUsage = 'saekit demo [--rows N] [--d-in N] [--d-sae N] [--k N] [--dir DIR (keep the files)] [--device D] [--threads N]';

function intFlag(values: Record<string, unknown>, flag: string, fallback: number): number {
  const v = values[flag];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag} must be a positive integer but got '${v}'`);
  return n;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...commonFlags,
    rows: { type: 'string' },
    'd-in': { type: 'string' },
    'd-sae': { type: 'string' },
    k: { type: 'string' },
    dir: { type: 'string' },
  });
  const rows = intFlag(values, 'rows', 8192);
  const dIn = intFlag(values, 'd-in', 768);
  const dSae = intFlag(values, 'd-sae', 24576);
  const k = intFlag(values, 'k', 32);
  if (k > dSae) throw new UsageError(`--k (${k}) must not exceed --d-sae (${dSae})`);
  applyThreads(values);
  const keep = values.dir as string | undefined;
  const dir = keep ?? (await mkdtemp(join(tmpdir(), 'saekit-demo-')));
  if (keep) await mkdir(dir, { recursive: true });
  const say = (s: string) => process.stdout.write(`${s}\n`);
  try {
    say(`saekit demo: topk SAE d_in ${dIn}, d_sae ${dSae}, k ${k}; ${rows} activation rows (${threads()} threads, ${cpuVariant().current} kernels)`);
    let t = performance.now();
    const weights = syntheticSae({ dIn, dSae, architecture: 'topk', k, seed: 1 });
    weights.config.hookName = 'blocks.8.hook_resid_pre';
    weights.config.modelName = 'synthetic';
    const saeDir = join(dir, 'sae');
    await saveSaeLens(saeDir, weights);
    const x = syntheticActivations(weights, rows, { seed: 2, active: 12, noise: 0.02 });
    const actPath = join(dir, 'activations.npy');
    await writeNpy(actPath, x, [rows, dIn]);
    say(`  generated SAELens directory ${saeDir} and ${actPath} in ${((performance.now() - t) / 1e3).toFixed(1)} s`);

    t = performance.now();
    const sae = await loadSae(saeDir, { device: deviceFlag(values) });
    say(`  loaded on ${sae.device} in ${((performance.now() - t) / 1e3).toFixed(2)} s`);
    try {
      const codesPath = join(dir, 'codes.safetensors');
      const enc = await encodeFile(sae, actPath, codesPath);
      say(`  encode  ${enc.rows} rows -> ${codesPath}: ${Math.round(enc.rows / enc.seconds)} tokens/s (file to file), L0 ${(enc.nnz / enc.rows).toFixed(2)}`);
      const reconPath = join(dir, 'reconstruction.npy');
      const dec = await decodeFile(sae, codesPath, reconPath);
      say(`  decode  ${dec.rows} rows -> ${reconPath}: ${Math.round(dec.rows / dec.seconds)} tokens/s (file to file)`);

      const recon = await NpyReader.open(reconPath);
      const xHat = await recon.readAllFloat32().finally(() => recon.close());
      const m = reconstructionMetrics(x, xHat, dIn);
      say(`  reconstruction: MSE ${m.mse.toExponential(3)}, FVU ${m.fvu.toFixed(4)} (explained variance ${(100 * (1 - m.fvu)).toFixed(2)}%; a random, untrained SAE)`);
    } finally {
      sae.dispose();
    }
    if (keep) say(`  files kept in ${dir}`);
    return 0;
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}

/** MSE per element and FVU = ||x - x_hat||^2 / ||x - mean(x)||^2 (about the mean). */
export function reconstructionMetrics(x: Float32Array, xHat: Float32Array, dIn: number): { mse: number; fvu: number } {
  const rows = x.length / dIn;
  const mean = new Float64Array(dIn);
  for (let r = 0; r < rows; r++) for (let i = 0; i < dIn; i++) mean[i]! += x[r * dIn + i]! / rows;
  let err = 0;
  let total = 0;
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < dIn; i++) {
      const v = x[r * dIn + i]!;
      err += (v - xHat[r * dIn + i]!) ** 2;
      total += (v - mean[i]!) ** 2;
    }
  return { mse: err / x.length, fvu: err / total };
}
