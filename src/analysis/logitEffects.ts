// Logit effects: what each feature's decoder direction does to the next-token logits,
// W_dec[f] @ W_U, read straight off the model's unembedding (SAEDashboard's "logit lens" view,
// without the final LayerNorm, as SAEDashboard and Neuronpedia compute it).
//
// W_U comes from the ONNX graph: the initializer the `/lm_head/` MatMul (or Gemm) multiplies
// by, through a Transpose if there is one; for tied embeddings that is the token embedding.
// The top/bottom tokens for all d_sae features at once are a [d_sae, vocab] product, too big
// for JS at GPT-2 scale (~1.9 TFLOP), so it runs through saekit's own fused top-k encode: an
// "SAE" whose encoder is W_U (and -W_U for the bottom tokens) encodes the decoder rows and
// returns each row's top k without ever forming the dense matrix. A constant bias C keeps the
// kept values positive (the topk activation applies ReLU after selection; adding C to every
// logit does not change which are largest); the selected values are then recomputed exactly
// in float64. The histogram over the vocabulary uses at most HIST_VOCAB evenly spaced tokens, and only
// while that stays within HIST_BUDGET multiply-adds in JS (small SAEs).

import { readFile } from 'node:fs/promises';
import onnxProto from 'onnx-proto';
import { FormatError } from '../errors.js';
import { f16ToF32Array } from '../formats/float16.js';
import { createSae } from '../sae.js';
import { decodeOnnx } from '../model/onnxGraph.js';

const { onnx } = onnxProto;
const HIST_VOCAB = 8192;
const HIST_BINS = 40;
const HIST_BUDGET = 6e8;

/** The unembedding as [d_model, vocab] row-major float32. */
export interface Unembedding {
  W_U: Float32Array;
  dModel: number;
  vocab: number;
}

/** Reads W_U from an ONNX decoder (see the file comment). */
export async function readUnembedding(onnxPath: string): Promise<Unembedding> {
  const model = decodeOnnx(await readFile(onnxPath), onnxPath);
  const g = model.graph!;
  const nodes = g.node ?? [];
  const inits = new Map((g.initializer ?? []).map((t) => [t.name as string, t]));
  const producer = new Map<string, onnxProto.onnx.INodeProto>();
  for (const n of nodes) for (const o of n.output ?? []) producer.set(o, n);
  const head = nodes.find((n) => (n.name ?? '').startsWith('/lm_head/') && (n.opType === 'MatMul' || n.opType === 'Gemm'));
  if (!head) throw new FormatError(onnxPath, 'no /lm_head/ MatMul or Gemm node: cannot find the unembedding for logit effects');
  const b = (head.input ?? [])[1] ?? '';
  let transposed = head.opType === 'Gemm' && (head.attribute ?? []).some((a) => a.name === 'transB' && Number(a.i) === 1);
  let tensor = inits.get(b);
  if (!tensor) {
    const p = producer.get(b);
    if (p?.opType === 'Transpose' && inits.has((p.input ?? [])[0] ?? '')) {
      tensor = inits.get((p.input ?? [])[0]!)!;
      transposed = !transposed;
    }
  }
  if (!tensor) throw new FormatError(onnxPath, `the /lm_head/ weight ${b} is neither an initializer nor a transposed one`);
  const dims = (tensor.dims ?? []).map(Number);
  if (dims.length !== 2) throw new FormatError(onnxPath, `unembedding ${tensor.name} has shape [${dims.join(', ')}], expected 2-D`);
  const data = tensorFloats(tensor, onnxPath);
  // Stored as [d, V] unless transposed ([V, d]).
  const [rows, cols] = dims as [number, number];
  if (!transposed) return { W_U: data, dModel: rows, vocab: cols };
  const W_U = new Float32Array(rows * cols);
  for (let v = 0; v < rows; v++) for (let j = 0; j < cols; j++) W_U[j * rows + v] = data[v * cols + j]!;
  return { W_U, dModel: cols, vocab: rows };
}

function tensorFloats(t: onnxProto.onnx.ITensorProto, file: string): Float32Array {
  const n = (t.dims ?? []).map(Number).reduce((a, b) => a * b, 1);
  const type = t.dataType;
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  if (type === onnx.TensorProto.DataType.FLOAT) {
    if (raw) return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + n * 4));
    return Float32Array.from(t.floatData ?? []);
  }
  if (type === onnx.TensorProto.DataType.FLOAT16 && raw) {
    return f16ToF32Array(new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + n * 2)));
  }
  throw new FormatError(file, `unembedding ${t.name} has ONNX data type ${type}; float32 and float16 (raw) are supported`);
}

export interface LogitEffects {
  /** Per feature: top-k token ids and effects (descending), bottom-k (ascending). */
  posIds: Int32Array;
  posValues: Float32Array;
  negIds: Int32Array;
  negValues: Float32Array;
  k: number;
  /** Per feature histogram over (sampled) vocabulary: HIST_BINS heights and centers. */
  histHeights: Int32Array;
  histCenters: Float32Array;
  histBins: number;
}

/** Top/bottom K tokens of W_dec[f] @ W_U for every feature f (W_dec [dSae, d] row-major). */
export async function logitEffects(W_dec: Float32Array, dSae: number, u: Unembedding, k = 10): Promise<LogitEffects> {
  const { W_U, dModel: d, vocab: V } = u;
  if (W_dec.length !== dSae * d) throw new FormatError('W_dec', `has ${W_dec.length} values; expected [${dSae}, ${d}] to match the unembedding`);
  k = Math.min(k, V);
  // |W_dec[f] . W_U[:, v]| <= ||W_dec[f]|| * ||W_U[:, v]||: a shift that keeps every logit positive.
  let maxRow = 0;
  for (let f = 0; f < dSae; f++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += W_dec[f * d + j]! ** 2;
    maxRow = Math.max(maxRow, Math.sqrt(s));
  }
  const colNorm = new Float64Array(V);
  for (let j = 0; j < d; j++) for (let v = 0; v < V; v++) colNorm[v]! += W_U[j * V + v]! ** 2;
  let maxCol = 0;
  for (let v = 0; v < V; v++) maxCol = Math.max(maxCol, Math.sqrt(colNorm[v]!));
  const shift = 2 * maxRow * maxCol + 1;

  const select = async (sign: 1 | -1) => {
    const W_enc = sign === 1 ? W_U : W_U.map((x) => -x);
    const sae = await createSae(
      {
        config: { architecture: 'topk', k, dIn: d, dSae: V, applyBDecToInput: false, normalizeActivations: 'none', dtype: 'float32', format: 'generated', metadata: {} },
        W_enc,
        encTransposed: false,
        b_enc: new Float32Array(V).fill(shift),
        W_dec: new Float32Array(V * d),
        b_dec: new Float32Array(d),
      },
      { device: 'cpu' },
    );
    try {
      const codes = await sae.encode(W_dec);
      const ids = new Int32Array(dSae * k);
      const vals = new Float32Array(dSae * k);
      for (let f = 0; f < dSae; f++) {
        const picked: { v: number; id: number }[] = [];
        for (let i = codes.indptr[f]!; i < codes.indptr[f + 1]!; i++) {
          const id = codes.indices[i]!;
          let s = 0;
          for (let j = 0; j < d; j++) s += W_dec[f * d + j]! * W_U[j * V + id]!;
          picked.push({ v: s, id });
        }
        picked.sort((a, b) => (sign === 1 ? b.v - a.v : a.v - b.v) || a.id - b.id);
        picked.forEach((p, i) => {
          ids[f * k + i] = p.id;
          vals[f * k + i] = p.v;
        });
      }
      return { ids, vals };
    } finally {
      sae.dispose();
    }
  };
  const pos = await select(1);
  const neg = await select(-1);

  // Histogram over a fixed, evenly spaced sample of the vocabulary, computed in JS within a
  // budget of HIST_BUDGET multiply-adds; a large SAE gets none (it would need the dense product).
  const size = Math.min(V, HIST_VOCAB, Math.floor(HIST_BUDGET / (dSae * d)));
  const sample: number[] = [];
  if (size >= 256) for (let i = 0; i < size; i++) sample.push(Math.floor((i * V) / size));
  if (sample.length === 0) return { posIds: pos.ids, posValues: pos.vals, negIds: neg.ids, negValues: neg.vals, k, histHeights: new Int32Array(0), histCenters: new Float32Array(0), histBins: 0 };
  const histHeights = new Int32Array(dSae * HIST_BINS);
  const histCenters = new Float32Array(dSae * HIST_BINS);
  const logits = new Float64Array(sample.length);
  for (let f = 0; f < dSae; f++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let s = 0; s < sample.length; s++) {
      const v = sample[s]!;
      let acc = 0;
      for (let j = 0; j < d; j++) acc += W_dec[f * d + j]! * W_U[j * V + v]!;
      logits[s] = acc;
      if (acc < lo) lo = acc;
      if (acc > hi) hi = acc;
    }
    const width = (hi - lo) / HIST_BINS || 1;
    for (let s = 0; s < sample.length; s++) histHeights[f * HIST_BINS + Math.min(HIST_BINS - 1, Math.floor((logits[s]! - lo) / width))]!++;
    for (let b = 0; b < HIST_BINS; b++) histCenters[f * HIST_BINS + b] = lo + (b + 0.5) * width;
  }
  return { posIds: pos.ids, posValues: pos.vals, negIds: neg.ids, negValues: neg.vals, k, histHeights, histCenters, histBins: HIST_BINS };
}
