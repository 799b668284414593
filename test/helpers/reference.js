// Float64 scalar reference of the SAE math (../shared/FORMATS.md), written independently of the
// kernels: no tiling, no packing, no early rejection. Used to judge every backend/variant.
// Plain JavaScript (typed by JSDoc, checked by `npm run typecheck`) so that bench/soak.js can
// judge dist/ with it under plain node, as the tests judge src/.

/** @typedef {import('../../src/codes.js').SparseCodes} SparseCodes */
/** @typedef {import('../../src/types.js').SaeWeights} SaeWeights */

/**
 * @typedef {object} ReferenceRow
 * @property {Float64Array} pre float64 pre-activations of every latent.
 * @property {Float64Array} tol Per latent, a bound on |fp32 result - pre| (see tolerance note below).
 * @property {number[]} indices Reference selection, ascending index.
 * @property {number[]} values
 * @property {Float64Array} boundary Per latent admission boundary the selection compares against (0, or threshold).
 * @property {number} kth topk: the k-th largest pre (value the set is cut at), else -Infinity.
 * @property {number} kthTol Its tolerance, else 0.
 * @property {number} outScale
 * @property {number} outShift
 */

const U = 2 ** -24; // fp32 unit roundoff

/**
 * Tolerance. The kernels compute each pre-activation as a length-d_in fp32 dot product (FMA,
 * any summation order) after an fp32 normalization of x. The classic bound for a recursive
 * fp32 sum of n products is |err| <= gamma_n * sum|x_i w_i| with gamma_n ~ n u; the inputs'
 * own rounding (normalization, - b_dec) adds ~2u relative per term, and the bias add one more u.
 * We allow (d_in + 4) u * (sum|x'_i w_ij| + |b_j|) * 2: worst-case, hence loose for random data,
 * but a wrong index, a dropped row, or a missing bias is off by far more.
 * @param {SaeWeights} w
 * @param {Float32Array} x
 * @param {number} r
 * @returns {ReferenceRow}
 */
function rowReference(w, x, r) {
  const { dIn, dSae, architecture, normalizeActivations } = w.config;
  const xr = Array.from(x.subarray(r * dIn, (r + 1) * dIn));
  let shift = 0;
  let scale = 1;
  let outScale = 1;
  if (normalizeActivations === 'constant_norm_rescale') {
    const n = Math.sqrt(xr.reduce((s, v) => s + v * v, 0));
    const c = n > 0 ? Math.sqrt(dIn) / n : 1;
    scale = c;
    outScale = 1 / c;
  } else if (normalizeActivations === 'layer_norm') {
    const mean = xr.reduce((s, v) => s + v, 0) / dIn;
    const std = Math.sqrt(xr.reduce((s, v) => s + (v - mean) ** 2, 0) / (dIn - 1));
    shift = mean;
    scale = 1 / (std + 1e-5);
    outScale = std;
  }
  const xn = xr.map((v, i) => (v - shift) * scale - (w.config.applyBDecToInput ? w.b_dec[i] : 0));
  const pre = new Float64Array(dSae);
  const tol = new Float64Array(dSae);
  const boundary = new Float64Array(dSae);
  for (let j = 0; j < dSae; j++) {
    let s = 0;
    let a = 0;
    for (let i = 0; i < dIn; i++) {
      const wij = w.encTransposed ? w.W_enc[j * dIn + i] : w.W_enc[i * dSae + j];
      s += xn[i] * wij;
      a += Math.abs(xn[i] * wij);
    }
    pre[j] = s + w.b_enc[j];
    tol[j] = 2 * (dIn + 4) * U * (a + Math.abs(w.b_enc[j])) + 1e-30;
    boundary[j] = architecture === 'jumprelu' ? Math.max(/** @type {Float32Array} */ (w.threshold)[j], 0) : 0;
  }
  /** @type {number[]} */
  let selected;
  let kth = -Infinity;
  let kthTol = 0;
  if (architecture === 'topk') {
    const order = Array.from(pre.keys()).sort((a, b) => pre[b] - pre[a] || a - b);
    const top = order.slice(0, w.config.k);
    kth = pre[top[top.length - 1]];
    kthTol = tol[top[top.length - 1]];
    selected = top.filter((j) => pre[j] > 0);
  } else {
    selected = Array.from(pre.keys()).filter((j) => pre[j] > boundary[j]);
  }
  selected.sort((a, b) => a - b);
  return { pre, tol, indices: selected, values: selected.map((j) => pre[j]), boundary, kth, kthTol, outScale, outShift: shift };
}

/**
 * @param {SaeWeights} w
 * @param {Float32Array} x
 * @returns {ReferenceRow[]}
 */
export function referenceEncode(w, x) {
  const rows = x.length / w.config.dIn;
  return Array.from({ length: rows }, (_, r) => rowReference(w, x, r));
}

/**
 * Compares codes with the reference, row by row. The selected SETS must be equal except for
 * latents whose float64 value is within tolerance of the cut (the k-th value for topk, the
 * admission boundary for relu/jumprelu): there fp32 rounding may legitimately decide either
 * way. Each returned value must be within its latent's tolerance of the float64 value.
 * Returns a list of problems (empty = pass) so a test failure shows all of them.
 * @param {SaeWeights} w
 * @param {ReferenceRow[]} ref
 * @param {SparseCodes} codes
 * @returns {string[]}
 */
export function compareCodes(w, ref, codes) {
  /** @type {string[]} */
  const problems = [];
  if (codes.indptr.length !== ref.length + 1) return [`indptr has ${codes.indptr.length} entries, expected ${ref.length + 1}`];
  if (codes.indptr[0] !== 0) problems.push('indptr[0] != 0');
  for (let r = 0; r < ref.length && problems.length < 20; r++) {
    const R = ref[r];
    const b = codes.indptr[r];
    const e = codes.indptr[r + 1];
    const ours = Array.from(codes.indices.subarray(b, e));
    const vals = Array.from(codes.values.subarray(b, e));
    for (let t = 1; t < ours.length; t++) if (!(ours[t] > ours[t - 1])) problems.push(`row ${r}: indices not ascending`);
    for (let t = 0; t < vals.length; t++) if (!(vals[t] > 0)) problems.push(`row ${r}: value ${vals[t]} <= 0 emitted`);
    if (w.config.architecture === 'topk' && ours.length > /** @type {number} */ (w.config.k)) problems.push(`row ${r}: ${ours.length} > k entries`);
    // Near-ties may swap members, but not shrink the set: every reference member that is
    // clearly above the relu boundary needs a member (itself or a near-tie) in ours.
    const clear = R.indices.filter((j) => R.pre[j] - R.boundary[j] > R.tol[j]).length;
    if (ours.length < clear) problems.push(`row ${r}: ${ours.length} entries, the reference has ${clear} clearly nonzero`);
    const refSet = new Set(R.indices);
    const ourSet = new Set(ours);
    for (const j of new Set([...ours, ...R.indices])) {
      if (refSet.has(j) && ourSet.has(j)) continue;
      const cut = Math.max(R.boundary[j], R.kth);
      if (Math.abs(R.pre[j] - cut) > R.tol[j] + R.kthTol)
        problems.push(
          `row ${r}: latent ${j} (pre ${R.pre[j]}) ${ourSet.has(j) ? 'selected but not in' : 'missing from'} the reference set (cut ${cut})`,
        );
    }
    ours.forEach((j, t) => {
      if (Math.abs(vals[t] - R.pre[j]) > R.tol[j]) problems.push(`row ${r}: latent ${j} value ${vals[t]} vs reference ${R.pre[j]}`);
    });
    if (codes.rowScale && Math.abs(codes.rowScale[r] - R.outScale) > 1e-5 * Math.abs(R.outScale) + 1e-30)
      problems.push(`row ${r}: rowScale ${codes.rowScale[r]} vs ${R.outScale}`);
    if (codes.rowShift && Math.abs(codes.rowShift[r] - R.outShift) > 1e-5 * Math.abs(R.outShift) + 1e-6)
      problems.push(`row ${r}: rowShift ${codes.rowShift[r]} vs ${R.outShift}`);
  }
  return problems;
}

/**
 * Float64 decode of the given codes, and a per-element tolerance: the fp32 sum of nnz terms
 * value * W_dec (plus b_dec) is within (nnz + 2) u * sum|terms| of the exact sum, then scaled.
 * @param {SaeWeights} w
 * @param {SparseCodes} codes
 * @returns {{ x: Float64Array, tol: Float64Array }}
 */
export function referenceDecode(w, codes) {
  // Transcoders write d_out columns (W_dec [d_sae, d_out]); SAEs d_in.
  const dIn = w.config.dOut ?? w.config.dIn;
  const rows = codes.indptr.length - 1;
  const x = new Float64Array(rows * dIn);
  const tol = new Float64Array(rows * dIn);
  for (let r = 0; r < rows; r++) {
    const b = codes.indptr[r];
    const e = codes.indptr[r + 1];
    const scale = codes.rowScale ? codes.rowScale[r] : 1;
    const shift = codes.rowShift ? codes.rowShift[r] : 0;
    for (let i = 0; i < dIn; i++) {
      let s = w.b_dec[i];
      let a = Math.abs(s);
      for (let t = b; t < e; t++) {
        const term = codes.values[t] * w.W_dec[codes.indices[t] * dIn + i];
        s += term;
        a += Math.abs(term);
      }
      x[r * dIn + i] = s * scale + shift;
      tol[r * dIn + i] = 2 * (e - b + 3) * U * (a * Math.abs(scale) + Math.abs(shift)) + 1e-30;
    }
  }
  return { x, tol };
}
