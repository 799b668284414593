// Float64 GPT-2 forward pass written plainly from HF GPT2LMHeadModel's definition (eval mode),
// sharing nothing with the ONNX builder in src/model/tinyGpt2.ts but the weight arrays: scalar
// loops, no ONNX, no reshapes. Tests judge the generated ONNX graph (and whatever saekit
// reads out of it) against this.
import type { Gpt2Weights } from '../../src/model/tinyGpt2.js';

export interface Gpt2RefOutput {
  /** Per layer l, [B*T*d]: the residual stream entering block l (HF hidden_states[l]). */
  residPre: Float64Array[];
  /** Per layer, [B*T*d]: after the attention residual add. */
  residMid: Float64Array[];
  /** Per layer, [B*T*d]: the attention sublayer's output (after c_proj). */
  attnOut: Float64Array[];
  /** Per layer, [B*T*d]: the MLP sublayer's output (after c_proj; the replacement where one was given). */
  mlpOut: Float64Array[];
  /** Per layer, [B*T*d]: ln_2's output, the MLP's input (gain and bias applied). */
  mlpIn: Float64Array[];
  /** Per layer, [B*T*d]: ln_2's normalization before its gain and bias, (x - mean) / sqrt(var + eps). */
  ln2Normalized: Float64Array[];
  /** Per layer, [B*T*d]: the residual stream after block l. */
  residPost: Float64Array[];
  /** [B*T*V] */
  logits: Float64Array;
  /** Per layer, [B, H, past+T, hd]: past keys followed by this call's. */
  presentKey: Float64Array[];
  presentValue: Float64Array[];
}

/** torch.finfo(torch.float32).min, which HF adds to the scores of keys a query may not see. */
const FLOAT32_MIN = -3.4028234663852886e38;
const LN_EPS = 1e-5;

/**
 * Runs GPT-2 on INPUTIDS [B][T]. `attentionMask` is [B][past+T] (default all ones);
 * `positionIds` [B][T] defaults to what transformers.js computes: the running count of
 * unmasked positions before each one, 1 at masked positions, last T of them. With a past,
 * `pastKey`/`pastValue` hold per layer [B, H, past, hd] and `pastLength` says past.
 */
export function gpt2ForwardF64(
  w: Gpt2Weights,
  inputIds: number[][],
  opts: {
    attentionMask?: number[][];
    positionIds?: number[][];
    pastKey?: Float64Array[];
    pastValue?: Float64Array[];
    pastLength?: number;
    /** Splicing: layer LAYER's MLP output replaced by VALUES [B*T*d] (the MLP is not run there). */
    replaceMlpOut?: { layer: number; values: ArrayLike<number> };
    /** Splicing an SAE: the residual stream entering layer LAYER replaced by VALUES [B*T*d]. */
    replaceResidPre?: { layer: number; values: ArrayLike<number> };
  } = {},
): Gpt2RefOutput {
  const { layers: L, dModel: d, heads: H, vocabSize: V } = w.config;
  const hd = d / H;
  const B = inputIds.length;
  const T = (inputIds[0] as number[]).length;
  const past = opts.pastLength ?? 0;
  const S = past + T;
  if (past > 0 && (!opts.pastKey || !opts.pastValue)) throw new Error('pastLength > 0 needs pastKey and pastValue');
  const mask = opts.attentionMask ?? inputIds.map(() => new Array<number>(S).fill(1));
  for (const row of mask) if (row.length !== S) throw new Error(`attention mask rows must have past + T = ${S} entries`);

  const positions =
    opts.positionIds ??
    mask.map((row) => {
      let count = 0;
      const all = row.map((m) => {
        if (m === 0) return 1;
        return count++;
      });
      return all.slice(S - T);
    });

  // Embeddings.
  let h: Float64Array = new Float64Array(B * T * d);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const tok = (inputIds[b] as number[])[t] as number;
      const pos = (positions[b] as number[])[t] as number;
      for (let i = 0; i < d; i++) h[(b * T + t) * d + i] = (w.wte[tok * d + i] as number) + (w.wpe[pos * d + i] as number);
    }
  }

  const out: Gpt2RefOutput = {
    residPre: [], residMid: [], attnOut: [], mlpOut: [], mlpIn: [], ln2Normalized: [], residPost: [], logits: new Float64Array(B * T * V), presentKey: [], presentValue: [],
  };

  for (let l = 0; l < L; l++) {
    const lw = w.layers[l];
    if (opts.replaceResidPre?.layer === l) {
      if (opts.replaceResidPre.values.length !== h.length) throw new Error(`replaceResidPre needs ${h.length} values`);
      h = Float64Array.from(opts.replaceResidPre.values);
    }
    out.residPre.push(h.slice());

    // Attention.
    const x = layerNorm(h, B * T, d, lw.ln1G, lw.ln1B);
    const qkv = linear(x, B * T, d, 3 * d, lw.attnW, lw.attnB);
    const keys = new Float64Array(B * H * S * hd);
    const values = new Float64Array(B * H * S * hd);
    for (let b = 0; b < B; b++) {
      for (let hh = 0; hh < H; hh++) {
        for (let s = 0; s < S; s++) {
          for (let e = 0; e < hd; e++) {
            const dst = ((b * H + hh) * S + s) * hd + e;
            if (s < past) {
              const src = ((b * H + hh) * past + s) * hd + e;
              keys[dst] = opts.pastKey![l][src];
              values[dst] = opts.pastValue![l][src];
            } else {
              const row = (b * T + (s - past)) * 3 * d;
              keys[dst] = qkv[row + d + hh * hd + e];
              values[dst] = qkv[row + 2 * d + hh * hd + e];
            }
          }
        }
      }
    }
    out.presentKey.push(keys);
    out.presentValue.push(values);

    const merged = new Float64Array(B * T * d);
    const scores = new Float64Array(S);
    for (let b = 0; b < B; b++) {
      for (let hh = 0; hh < H; hh++) {
        for (let i = 0; i < T; i++) {
          const qRow = (b * T + i) * 3 * d + hh * hd;
          let max = -Infinity;
          for (let j = 0; j < S; j++) {
            let dot = 0;
            for (let e = 0; e < hd; e++) dot += qkv[qRow + e] * keys[((b * H + hh) * S + j) * hd + e];
            const allowed = (mask[b] as number[])[j] === 1 && j <= past + i;
            // In float64, score + FLOAT32_MIN absorbs the score exactly as float32 does, so a
            // row with no allowed key ends up uniform here too.
            scores[j] = dot / Math.sqrt(hd) + (allowed ? 0 : FLOAT32_MIN);
            if (scores[j] > max) max = scores[j];
          }
          let sum = 0;
          for (let j = 0; j < S; j++) {
            scores[j] = Math.exp(scores[j] - max);
            sum += scores[j];
          }
          for (let e = 0; e < hd; e++) {
            let acc = 0;
            for (let j = 0; j < S; j++) acc += (scores[j] / sum) * values[((b * H + hh) * S + j) * hd + e];
            merged[(b * T + i) * d + hh * hd + e] = acc;
          }
        }
      }
    }
    const attn = linear(merged, B * T, d, d, lw.attnProjW, lw.attnProjB);
    out.attnOut.push(attn);
    h = add(h, attn);
    out.residMid.push(h.slice());

    // MLP.
    const x2 = layerNorm(h, B * T, d, lw.ln2G, lw.ln2B);
    out.mlpIn.push(x2);
    out.ln2Normalized.push(layerNorm(h, B * T, d, new Float32Array(d).fill(1), new Float32Array(d)));
    let mlp: Float64Array;
    if (opts.replaceMlpOut?.layer === l) {
      mlp = Float64Array.from(opts.replaceMlpOut.values);
      if (mlp.length !== B * T * d) throw new Error(`replaceMlpOut needs ${B * T * d} values`);
    } else {
      const fc = linear(x2, B * T, d, 4 * d, lw.fcW, lw.fcB);
      for (let i = 0; i < fc.length; i++) {
        const v = fc[i];
        fc[i] = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
      }
      mlp = linear(fc, B * T, 4 * d, d, lw.fcProjW, lw.fcProjB);
    }
    out.mlpOut.push(mlp);
    h = add(h, mlp);
    out.residPost.push(h.slice());
  }

  const f = layerNorm(h, B * T, d, w.lnfG, w.lnfB);
  for (let r = 0; r < B * T; r++) {
    for (let v = 0; v < V; v++) {
      let acc = 0;
      for (let i = 0; i < d; i++) acc += f[r * d + i] * w.wte[v * d + i];
      out.logits[r * V + v] = acc;
    }
  }
  return out;
}

/** torch.nn.LayerNorm over rows of width n: biased variance, eps inside the square root. */
function layerNorm(x: Float64Array, rows: number, n: number, g: Float32Array, b: Float32Array): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x[r * n + i];
    mean /= n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (x[r * n + i] - mean) ** 2;
    variance /= n;
    const inv = 1 / Math.sqrt(variance + LN_EPS);
    for (let i = 0; i < n; i++) y[r * n + i] = (x[r * n + i] - mean) * inv * g[i] + b[i];
  }
  return y;
}

/** HF Conv1D: y = x @ W + bias with W [nIn, nOut] row-major. */
function linear(x: Float64Array, rows: number, nIn: number, nOut: number, W: Float32Array, bias: Float32Array): Float64Array {
  const y = new Float64Array(rows * nOut);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nOut; o++) {
      let acc = bias[o];
      for (let i = 0; i < nIn; i++) acc += x[r * nIn + i] * W[i * nOut + o];
      y[r * nOut + o] = acc;
    }
  }
  return y;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  const y = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
  return y;
}
