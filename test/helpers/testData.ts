// Small shared pieces of the API tests: a fresh seed per run (printed, overridable for a
// replay), the devices usable on this machine, and row selection on activations and codes so
// a float64 reference can be run on a few rows of a large encode.
import type { SparseCodes } from '../../src/codes.js';
import { backends } from '../../src/system.js';

/**
 * A new seed every run so the tests see fresh data, printed so a failure can be replayed with
 * SAEKIT_TEST_SEED=<seed>.
 */
export function freshSeed(file: string): number {
  const fixed = Number(process.env['SAEKIT_TEST_SEED']);
  const seed = Number.isInteger(fixed) && fixed > 0 ? fixed : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  console.log(`${file} seed ${seed} (replay with SAEKIT_TEST_SEED=${seed})`);
  return seed;
}

/** 'cpu', plus 'cuda' where a device and kernels are usable: every test runs on each. */
export function usableDevices(): Array<'cpu' | 'cuda'> {
  return backends()
    .filter((b) => b.available)
    .map((b) => b.name);
}

/** The given rows of a [rows, dIn] matrix, as a new [rows.length, dIn] matrix. */
export function pickRows(x: Float32Array, dIn: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * dIn);
  rows.forEach((r, t) => out.set(x.subarray(r * dIn, (r + 1) * dIn), t * dIn));
  return out;
}

/** The given rows of CSR codes, as codes of rows.length rows (rowScale/rowShift included). */
export function pickCodeRows(codes: SparseCodes, rows: readonly number[]): SparseCodes {
  const indptr = new Uint32Array(rows.length + 1);
  rows.forEach((r, t) => (indptr[t + 1] = indptr[t]! + codes.indptr[r + 1]! - codes.indptr[r]!));
  const indices = new Int32Array(indptr[rows.length]!);
  const values = new Float32Array(indptr[rows.length]!);
  rows.forEach((r, t) => {
    indices.set(codes.indices.subarray(codes.indptr[r], codes.indptr[r + 1]), indptr[t]);
    values.set(codes.values.subarray(codes.indptr[r], codes.indptr[r + 1]), indptr[t]);
  });
  const out: SparseCodes = { rows: rows.length, dSae: codes.dSae, indptr, indices, values };
  if (codes.rowScale) out.rowScale = Float32Array.from(rows, (r) => codes.rowScale![r]!);
  if (codes.rowShift) out.rowShift = Float32Array.from(rows, (r) => codes.rowShift![r]!);
  return out;
}
