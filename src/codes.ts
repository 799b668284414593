// Sparse codes: the CSR form encode() returns and decode() takes.
import { ValidationError, expected } from './errors.js';

/**
 * Sparse SAE codes of `rows` activation rows, in CSR form: row r's nonzero latents are
 * indices[indptr[r] .. indptr[r+1]) in ascending order with their values; zeros are omitted.
 * Per-row normalizations (constant_norm_rescale, layer_norm) carry what decode needs to undo
 * them: x = x_hat_normalized * rowScale[r] + rowShift[r].
 */
export interface SparseCodes {
  rows: number;
  dSae: number;
  indptr: Uint32Array;
  indices: Int32Array;
  values: Float32Array;
  rowScale?: Float32Array;
  rowShift?: Float32Array;
}

/** Checks a CSR object in full (O(nnz)): decode() trusts nothing it did not produce itself. */
export function validateCodes(codes: SparseCodes, dSae: number, name = 'codes'): void {
  if (codes === null || typeof codes !== 'object') throw expected('a SparseCodes object', name, codes);
  const { indptr, indices, values, rowScale, rowShift } = codes;
  if (!(indptr instanceof Uint32Array)) throw expected('Uint32Array', `${name}.indptr`, indptr);
  if (!(indices instanceof Int32Array)) throw expected('Int32Array', `${name}.indices`, indices);
  if (!(values instanceof Float32Array)) throw expected('Float32Array', `${name}.values`, values);
  const rows = indptr.length - 1;
  if (rows < 0) throw new ValidationError(`${name}.indptr is empty: it needs rows + 1 entries`);
  if (codes.rows !== undefined && codes.rows !== rows)
    throw new ValidationError(`${name}.rows is ${codes.rows} but ${name}.indptr has ${indptr.length} entries (rows + 1)`);
  if (codes.dSae !== undefined && codes.dSae !== dSae)
    throw new ValidationError(`${name}.dSae is ${codes.dSae} but this SAE has d_sae ${dSae}`);
  if (indptr[0] !== 0) throw new ValidationError(`${name}.indptr[0] must be 0 but is ${indptr[0]}`);
  for (let r = 0; r < rows; r++) {
    if (indptr[r + 1]! < indptr[r]!)
      throw new ValidationError(`${name}.indptr must be non-decreasing but indptr[${r + 1}] < indptr[${r}]`);
  }
  const nnz = indptr[rows]!;
  if (indices.length !== nnz || values.length !== nnz)
    throw new ValidationError(
      `${name}.indptr ends at ${nnz} but indices has ${indices.length} and values ${values.length} entries`,
    );
  for (let e = 0; e < nnz; e++) {
    const j = indices[e]!;
    if (j < 0 || j >= dSae) throw new ValidationError(`${name}.indices[${e}] = ${j} is outside [0, ${dSae})`);
  }
  for (const [key, arr] of [
    ['rowScale', rowScale],
    ['rowShift', rowShift],
  ] as const) {
    if (arr === undefined) continue;
    if (!(arr instanceof Float32Array)) throw expected('Float32Array', `${name}.${key}`, arr);
    if (arr.length !== rows) throw new ValidationError(`${name}.${key} has ${arr.length} entries, expected ${rows} (one per row)`);
  }
}

/** Row r as [latent, value] pairs, for printing and tests. */
export function codesRow(codes: SparseCodes, r: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let e = codes.indptr[r]!; e < codes.indptr[r + 1]!; e++) out.push([codes.indices[e]!, codes.values[e]!]);
  return out;
}
