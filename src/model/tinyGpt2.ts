// A tiny GPT-2, generated from seeded random weights and written as an ONNX decoder the way
// torch's exporter writes HF GPT2LMHeadModel (optimum / transformers.js exports).
//
// Real GPT-2 weights cannot be downloaded where saekit is built and tested, yet the model
// path (transformers.js loading, hook finding by node name, graph edits, generate()) must be
// exercised end to end. This file produces a model that is architecturally GPT-2 (same ops,
// same tensor layouts, same input/output names and dims, same torch-style node scoping) at a
// size that runs in about a millisecond, plus the weights in plain arrays so a test can check
// every tensor against an independent float64 forward pass.
//
// The graph is built node by node with onnx-proto (protobufjs): no Python, no torch.

import { mkdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { ValidationError } from '../errors.js';
import { Rng } from '../synthetic.js';
import { writeAt, writeFileAtomic } from '../formats/fileIo.js';

const { onnx } = onnxProto;

export interface TinyGpt2Options {
  /** Transformer blocks (default 2). */
  layers?: number;
  /** Residual stream width (default 64); must be a multiple of `heads`. */
  dModel?: number;
  /** Attention heads (default 4). */
  heads?: number;
  /** Vocabulary (default 50257, GPT-2's, so GPT-2 token ids are valid). Small values make tests fast. */
  vocabSize?: number;
  /** Learned positions (default 256): the longest past + sequence the model accepts. */
  nPositions?: number;
  /**
   * Default true: `past_key_values.{l}.key/value` inputs and `present.{l}.key/value` outputs,
   * which transformers.js' generate() needs. False gives the logits-only graph.
   */
  withPast?: boolean;
  /** Default 1: the weights are a pure function of the options, so files and tests are reproducible. */
  seed?: number;
  /**
   * Default 'LayerNormalization' (one op, opset 17, as current exports). 'primitives' spells it
   * ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add like exports made at opset < 17, which the
   * hook finder must handle too.
   */
  layerNormOp?: 'LayerNormalization' | 'primitives';
}

/** One block's weights, in HF GPT-2's own layouts (Conv1D: y = x @ W + b, W is [in, out] row-major). */
export interface Gpt2LayerWeights {
  ln1G: Float32Array;
  ln1B: Float32Array;
  /** [d, 3d]: columns 0..d-1 give q, d..2d-1 k, 2d..3d-1 v; head h owns columns h*hd..(h+1)*hd-1 of each. */
  attnW: Float32Array;
  /** [3d] */
  attnB: Float32Array;
  /** [d, d] */
  attnProjW: Float32Array;
  attnProjB: Float32Array;
  ln2G: Float32Array;
  ln2B: Float32Array;
  /** [d, 4d] */
  fcW: Float32Array;
  fcB: Float32Array;
  /** [4d, d] */
  fcProjW: Float32Array;
  fcProjB: Float32Array;
}

export interface Gpt2Weights {
  config: { layers: number; dModel: number; heads: number; vocabSize: number; nPositions: number };
  /** [V, d]; also the (tied) unembedding: logits = ln_f(h) @ wte^T. */
  wte: Float32Array;
  /** [P, d] */
  wpe: Float32Array;
  layers: Gpt2LayerWeights[];
  lnfG: Float32Array;
  lnfB: Float32Array;
}

const DEFAULTS = {
  layers: 2,
  dModel: 64,
  heads: 4,
  vocabSize: 50257,
  nPositions: 256,
  withPast: true,
  seed: 1,
  layerNormOp: 'LayerNormalization',
} as const;

/** GPT-2's LayerNorm epsilon (config.layer_norm_epsilon). */
const LN_EPS = 1e-5;
/** torch.finfo(torch.float32).min: what HF adds to masked attention scores. */
const FLOAT32_MIN = -3.4028234663852886e38;
/** The ONNX opset the graph is written for: the first with LayerNormalization. */
const OPSET = 17;
/** IR version 8 is what torch writes for opset 17 and what every current ORT reads. */
const IR_VERSION = 8;

// ---------------------------------------------------------------------------------------------
// Weights

function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new ValidationError(`Expected a positive integer for ${name} but received ${String(v)}`);
  }
  return v;
}

function resolveOptions(opts: TinyGpt2Options | undefined) {
  const o = { ...DEFAULTS, ...stripUndefined(opts ?? {}) };
  positiveInt(o.layers, 'layers');
  positiveInt(o.dModel, 'dModel');
  positiveInt(o.heads, 'heads');
  positiveInt(o.vocabSize, 'vocabSize');
  positiveInt(o.nPositions, 'nPositions');
  if (o.dModel % o.heads !== 0) {
    throw new ValidationError(`dModel (${o.dModel}) must be a multiple of heads (${o.heads})`);
  }
  if (o.layerNormOp !== 'LayerNormalization' && o.layerNormOp !== 'primitives') {
    throw new ValidationError(`Expected 'LayerNormalization' or 'primitives' for layerNormOp but received ${String(o.layerNormOp)}`);
  }
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Deterministic GPT-2 weights. Embeddings and biases follow GPT-2's init (N(0, 0.02)), but the
 * matrices are N(0, 1/fan_in) instead of N(0, 0.02²): at d_model 64 GPT-2's init would give
 * near-uniform attention and a near-linear GELU, and a wrong mask or a wrong activation would
 * then hardly change the outputs. LayerNorm gains are 1 + N(0, 0.1) so that a swapped or
 * dropped gain shows.
 */
export function makeGpt2Weights(opts?: TinyGpt2Options): Gpt2Weights {
  const o = resolveOptions(opts);
  const { layers, dModel: d, vocabSize: V, nPositions: P } = o;
  const rng = new Rng(o.seed);
  const g = () => rng.normal();
  const normal = (n: number, std: number, mean = 0): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = mean + std * g();
    return a;
  };
  const wte = normal(V * d, 0.02);
  const wpe = normal(P * d, 0.02);
  const blocks: Gpt2LayerWeights[] = [];
  for (let l = 0; l < layers; l++) {
    blocks.push({
      ln1G: normal(d, 0.1, 1),
      ln1B: normal(d, 0.02),
      attnW: normal(d * 3 * d, 1 / Math.sqrt(d)),
      attnB: normal(3 * d, 0.02),
      attnProjW: normal(d * d, 1 / Math.sqrt(d)),
      attnProjB: normal(d, 0.02),
      ln2G: normal(d, 0.1, 1),
      ln2B: normal(d, 0.02),
      fcW: normal(d * 4 * d, 1 / Math.sqrt(d)),
      fcB: normal(4 * d, 0.02),
      fcProjW: normal(4 * d * d, 1 / Math.sqrt(4 * d)),
      fcProjB: normal(d, 0.02),
    });
  }
  return {
    config: { layers, dModel: d, heads: o.heads, vocabSize: V, nPositions: P },
    wte,
    wpe,
    layers: blocks,
    lnfG: normal(d, 0.1, 1),
    lnfB: normal(d, 0.02),
  };
}

// ---------------------------------------------------------------------------------------------
// ONNX building blocks

type NodeProto = OnnxTypes.INodeProto;
type TensorProto = OnnxTypes.ITensorProto;
type AttributeProto = OnnxTypes.IAttributeProto;
type ValueInfoProto = OnnxTypes.IValueInfoProto;

const DT = onnx.TensorProto.DataType;
const AT = onnx.AttributeProto.AttributeType;

// Tensor payloads go in raw_data, which ONNX defines as little-endian: true of every platform
// Node's prebuilt onnxruntime ships for, so the typed arrays' bytes are written as they are.
function bytesOf(a: Float32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function floatTensor(name: string, dims: number[], data: Float32Array): TensorProto {
  return { name, dims, dataType: DT.FLOAT, rawData: bytesOf(data) };
}

function int64Tensor(dims: number[], values: number[]): TensorProto {
  return { dims, dataType: DT.INT64, rawData: bytesOf(BigInt64Array.from(values.map(BigInt))) };
}

const attr = {
  int: (name: string, i: number): AttributeProto => ({ name, type: AT.INT, i }),
  ints: (name: string, ints: number[]): AttributeProto => ({ name, type: AT.INTS, ints }),
  float: (name: string, f: number): AttributeProto => ({ name, type: AT.FLOAT, f }),
  tensor: (name: string, t: TensorProto): AttributeProto => ({ name, type: AT.TENSOR, t }),
};

type Dim = number | string;

function valueInfo(name: string, elemType: number, dims: Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/**
 * Appends nodes named as torch's exporter names them: `<module scope>/<OpType>` for the first
 * op of a type in a scope, then `<OpType>_1`, `_2`, ...; outputs `<node name>_output_<i>`.
 * saekit's hook finder reads module boundaries from these names, so they are the contract.
 */
class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private readonly counts = new Map<string, number>();

  /** Adds a node in SCOPE (which ends with '/'); returns its output tensor names. */
  op(scope: string, opType: string, inputs: string[], attributes: AttributeProto[] = [], opts: { outputs?: number; names?: string[] } = {}): string[] {
    const key = scope + opType;
    const n = this.counts.get(key) ?? 0;
    this.counts.set(key, n + 1);
    const name = n === 0 ? key : `${key}_${n}`;
    const output = opts.names ?? Array.from({ length: opts.outputs ?? 1 }, (_, i) => `${name}_output_${i}`);
    this.nodes.push({ name, opType, domain: '', input: inputs, output, attribute: attributes });
    return output;
  }

  /** One-output shorthand. */
  op1(scope: string, opType: string, inputs: string[], attributes: AttributeProto[] = [], outName?: string): string {
    return this.op(scope, opType, inputs, attributes, outName ? { names: [outName] } : {})[0] as string;
  }

  /** A Constant node in SCOPE, as torch emits for literals used by that module. */
  constInt64(scope: string, dims: number[], values: number[]): string {
    return this.op1(scope, 'Constant', [], [attr.tensor('value', int64Tensor(dims, values))]);
  }

  constFloat(scope: string, value: number): string {
    return this.op1(scope, 'Constant', [], [attr.tensor('value', floatTensor('', [], Float32Array.of(value)))]);
  }

  initializer(name: string, dims: number[], data: Float32Array): string {
    this.initializers.push(floatTensor(name, dims, data));
    return name;
  }
}

/** LayerNorm over the last axis with torch's biased variance, in SCOPE; returns its output. */
function layerNorm(b: GraphBuilder, scope: string, x: string, gain: string, bias: string, spelling: 'LayerNormalization' | 'primitives'): string {
  if (spelling === 'LayerNormalization') {
    return b.op1(scope, 'LayerNormalization', [x, gain, bias], [attr.int('axis', -1), attr.float('epsilon', LN_EPS)]);
  }
  // The sequence torch emits for nn.LayerNorm below opset 17 (ReduceMean takes axes as an
  // attribute up to opset 17).
  const mean = b.op1(scope, 'ReduceMean', [x], [attr.ints('axes', [-1]), attr.int('keepdims', 1)]);
  const centred = b.op1(scope, 'Sub', [x, mean]);
  const sq = b.op1(scope, 'Pow', [centred, b.constFloat(scope, 2)]);
  const variance = b.op1(scope, 'ReduceMean', [sq], [attr.ints('axes', [-1]), attr.int('keepdims', 1)]);
  const padded = b.op1(scope, 'Add', [variance, b.constFloat(scope, LN_EPS)]);
  const std = b.op1(scope, 'Sqrt', [padded]);
  const normed = b.op1(scope, 'Div', [centred, std]);
  const scaled = b.op1(scope, 'Mul', [normed, gain]);
  return b.op1(scope, 'Add', [scaled, bias]);
}

/** Conv1D (x @ W + b) as MatMul + Add in SCOPE. */
function conv1d(b: GraphBuilder, scope: string, x: string, w: string, bias: string): string {
  return b.op1(scope, 'Add', [b.op1(scope, 'MatMul', [x, w]), bias]);
}

/**
 * The ONNX graph of HF GPT2LMHeadModel (eval mode) for WEIGHTS. Every attention op lives
 * under `/transformer/h.{l}/attn/`, every MLP op under `/transformer/h.{l}/mlp/`, and each of
 * those scopes hands exactly one tensor back to the residual stream (`.../c_proj/Add`), so a
 * scope-based hook finder can locate resid_pre/mid/post, attn_out and mlp_out.
 */
function buildGraph(w: Gpt2Weights, o: ReturnType<typeof resolveOptions>): OnnxTypes.IGraphProto {
  const { layers: L, dModel: d, heads: H, vocabSize: V, nPositions: P } = w.config;
  const hd = d / H;
  const b = new GraphBuilder();
  const T = '/transformer/';

  // Dims transformers.js reads: it builds the first call's empty past tensors from the past
  // inputs' metadata, mapping 'batch_size' to the batch and every other symbol to 0, so the
  // past dims must be exactly [batch_size, H, past_sequence_length, hd].
  const pastDims: Dim[] = ['batch_size', H, 'past_sequence_length', hd];
  const presentDims: Dim[] = ['batch_size', H, 'past_sequence_length + sequence_length', hd];
  const inputs: ValueInfoProto[] = [
    valueInfo('input_ids', DT.INT64, ['batch_size', 'sequence_length']),
    valueInfo('attention_mask', DT.INT64, ['batch_size', 'past_sequence_length + sequence_length']),
    valueInfo('position_ids', DT.INT64, ['batch_size', 'sequence_length']),
  ];
  const outputs: ValueInfoProto[] = [valueInfo('logits', DT.FLOAT, ['batch_size', 'sequence_length', V])];
  if (o.withPast) {
    for (let l = 0; l < L; l++) {
      inputs.push(valueInfo(`past_key_values.${l}.key`, DT.FLOAT, pastDims), valueInfo(`past_key_values.${l}.value`, DT.FLOAT, pastDims));
      outputs.push(valueInfo(`present.${l}.key`, DT.FLOAT, presentDims), valueInfo(`present.${l}.value`, DT.FLOAT, presentDims));
    }
  }

  // Embeddings.
  const wte = b.initializer('transformer.wte.weight', [V, d], w.wte);
  const wpe = b.initializer('transformer.wpe.weight', [P, d], w.wpe);
  const tokEmb = b.op1(`${T}wte/`, 'Gather', [wte, 'input_ids']);
  const posEmb = b.op1(`${T}wpe/`, 'Gather', [wpe, 'position_ids']);
  let resid = b.op1(T, 'Add', [tokEmb, posEmb]); // `/transformer/Add`: the only Add in this scope

  // Additive attention bias [B, 1, T, S], shared by all layers: 0 where key j may be attended
  // from query i (attention_mask[b, j] == 1 and j <= past + i), float32 min elsewhere. Adding
  // (not replacing with) the minimum is HF's choice: a row with no allowed key (a left pad)
  // then softmaxes to uniform instead of NaN. No Add here, so `/transformer/Add` stays unique.
  const seqLen = b.op1(T, 'Shape', ['input_ids'], [attr.int('start', 1), attr.int('end', 2)]); // [1]: T
  const totalLen = b.op1(T, 'Shape', ['attention_mask'], [attr.int('start', 1), attr.int('end', 2)]); // [1]: S
  const pastLen = b.op1(T, 'Sub', [totalLen, seqLen]);
  const pastScalar = b.op1(T, 'Squeeze', [pastLen, b.constInt64(T, [1], [0])]);
  const totalScalar = b.op1(T, 'Squeeze', [totalLen, b.constInt64(T, [1], [0])]);
  const one = b.constInt64(T, [], [1]);
  const queryPos = b.op1(T, 'Range', [pastScalar, totalScalar, one]); // [T]: past..S-1
  const keyPos = b.op1(T, 'Range', [b.constInt64(T, [], [0]), totalScalar, one]); // [S]
  const causal = b.op1(T, 'LessOrEqual', [
    b.op1(T, 'Unsqueeze', [keyPos, b.constInt64(T, [1], [0])]), // [1, S]
    b.op1(T, 'Unsqueeze', [queryPos, b.constInt64(T, [1], [1])]), // [T, 1]
  ]); // [T, S]
  const notPadding = b.op1(T, 'Equal', ['attention_mask', one]); // [B, S]
  const allowed = b.op1(T, 'And', [causal, b.op1(T, 'Unsqueeze', [notPadding, b.constInt64(T, [2], [1, 2])])]); // [B, 1, T, S]
  const f32 = (v: number) => b.op1(T, 'Constant', [], [attr.tensor('value', floatTensor('', [], Float32Array.of(v)))]);
  const attnBias = b.op1(T, 'Where', [allowed, f32(0), f32(FLOAT32_MIN)]);

  for (let l = 0; l < L; l++) {
    const lw = w.layers[l] as Gpt2LayerWeights;
    const blk = `${T}h.${l}/`;
    const pfx = `transformer.h.${l}.`;
    const init = (name: string, dims: number[], data: Float32Array) => b.initializer(pfx + name, dims, data);

    // Attention.
    const x1 = layerNorm(b, `${blk}ln_1/`, resid, init('ln_1.weight', [d], lw.ln1G), init('ln_1.bias', [d], lw.ln1B), o.layerNormOp);
    const A = `${blk}attn/`;
    const qkv = conv1d(b, `${A}c_attn/`, x1, init('attn.c_attn.weight', [d, 3 * d], lw.attnW), init('attn.c_attn.bias', [3 * d], lw.attnB));
    const [q, k, v] = b.op(A, 'Split', [qkv, b.constInt64(A, [3], [d, d, d])], [attr.int('axis', -1)], { outputs: 3 }) as [string, string, string];
    // [B, T, d] -> [B, H, T, hd]; Reshape's 0 copies the input's dim, so batch and T stay dynamic.
    const headShape = b.constInt64(A, [4], [0, 0, H, hd]);
    const heads = (t: string) => b.op1(A, 'Transpose', [b.op1(A, 'Reshape', [t, headShape])], [attr.ints('perm', [0, 2, 1, 3])]);
    const qh = heads(q);
    let kh = heads(k);
    let vh = heads(v);
    if (o.withPast) {
      kh = b.op1(A, 'Concat', [`past_key_values.${l}.key`, kh], [attr.int('axis', 2)], `present.${l}.key`);
      vh = b.op1(A, 'Concat', [`past_key_values.${l}.value`, vh], [attr.int('axis', 2)], `present.${l}.value`);
    }
    const kT = b.op1(A, 'Transpose', [kh], [attr.ints('perm', [0, 1, 3, 2])]);
    const scores = b.op1(A, 'Div', [b.op1(A, 'MatMul', [qh, kT]), b.constFloat(A, Math.sqrt(hd))]); // [B, H, T, S]
    const probs = b.op1(A, 'Softmax', [b.op1(A, 'Add', [scores, attnBias])], [attr.int('axis', -1)]);
    const ctx = b.op1(A, 'Transpose', [b.op1(A, 'MatMul', [probs, vh])], [attr.ints('perm', [0, 2, 1, 3])]); // [B, T, H, hd]
    const merged = b.op1(A, 'Reshape', [ctx, b.constInt64(A, [3], [0, 0, d])]);
    const attnOut = conv1d(b, `${A}c_proj/`, merged, init('attn.c_proj.weight', [d, d], lw.attnProjW), init('attn.c_proj.bias', [d], lw.attnProjB));
    resid = b.op1(blk, 'Add', [resid, attnOut]); // `/transformer/h.{l}/Add`: resid_mid

    // MLP.
    const x2 = layerNorm(b, `${blk}ln_2/`, resid, init('ln_2.weight', [d], lw.ln2G), init('ln_2.bias', [d], lw.ln2B), o.layerNormOp);
    const M = `${blk}mlp/`;
    const pre = conv1d(b, `${M}c_fc/`, x2, init('mlp.c_fc.weight', [d, 4 * d], lw.fcW), init('mlp.c_fc.bias', [4 * d], lw.fcB));
    const act = geluNew(b, `${M}act/`, pre);
    const mlpOut = conv1d(b, `${M}c_proj/`, act, init('mlp.c_proj.weight', [4 * d, d], lw.fcProjW), init('mlp.c_proj.bias', [d], lw.fcProjB));
    resid = b.op1(blk, 'Add', [resid, mlpOut]); // `/transformer/h.{l}/Add_1`: resid_post
  }

  const final = layerNorm(b, `${T}ln_f/`, resid, b.initializer('transformer.ln_f.weight', [d], w.lnfG), b.initializer('transformer.ln_f.bias', [d], w.lnfB), o.layerNormOp);
  // The unembedding is tied to wte: one stored copy, transposed by a node (ORT folds it at load).
  const unembed = b.op1('/lm_head/', 'Transpose', [wte], [attr.ints('perm', [1, 0])]);
  b.op1('/lm_head/', 'MatMul', [final, unembed], [], 'logits');

  return { name: 'main_graph', node: b.nodes, initializer: b.initializers, input: inputs, output: outputs };
}

/**
 * HF's NewGELUActivation, op for op as torch exports it:
 * 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))).
 */
function geluNew(b: GraphBuilder, scope: string, x: string): string {
  const half = b.op1(scope, 'Mul', [x, b.constFloat(scope, 0.5)]);
  const cube = b.op1(scope, 'Pow', [x, b.constFloat(scope, 3)]);
  const inner = b.op1(scope, 'Add', [x, b.op1(scope, 'Mul', [cube, b.constFloat(scope, 0.044715)])]);
  const th = b.op1(scope, 'Tanh', [b.op1(scope, 'Mul', [inner, b.constFloat(scope, Math.sqrt(2 / Math.PI))])]);
  return b.op1(scope, 'Mul', [half, b.op1(scope, 'Add', [th, b.constFloat(scope, 1)])]);
}

/** The serialized onnx.ModelProto of WEIGHTS (opset 17, IR 8). */
export function gpt2OnnxBytes(weights: Gpt2Weights, opts?: TinyGpt2Options): Uint8Array {
  // The weights' own shape wins over shape options: only the graph options matter here.
  const o = resolveOptions({ ...opts, ...weights.config });
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'saekit-tiny-gpt2',
    producerVersion: '1',
    opsetImport: [{ domain: '', version: OPSET }],
    graph: buildGraph(weights, o),
  });
  return onnx.ModelProto.encode(model).finish();
}

/**
 * A config.json as HF writes it for GPT-2 (the values of `gpt2` apart from the sizes), so
 * loaders that read it (transformers.js, saekit's model code) see what a real export has.
 * <|endoftext|> is GPT-2's last token (50256); a smaller vocabulary keeps that role on its
 * last id so the ids stay in range.
 */
export function gpt2HfConfig(weights: Gpt2Weights): Record<string, unknown> {
  const { layers, dModel, heads, vocabSize, nPositions } = weights.config;
  const eos = vocabSize - 1;
  return {
    _name_or_path: 'saekit-tiny-gpt2',
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1,
    bos_token_id: eos,
    embd_pdrop: 0.1,
    eos_token_id: eos,
    initializer_range: 0.02,
    layer_norm_epsilon: LN_EPS,
    model_type: 'gpt2',
    n_ctx: nPositions,
    n_embd: dModel,
    n_head: heads,
    n_inner: null,
    n_layer: layers,
    n_positions: nPositions,
    reorder_and_upcast_attn: false,
    resid_pdrop: 0.1,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    summary_activation: null,
    summary_first_dropout: 0.1,
    summary_proj_to_labels: true,
    summary_type: 'cls_index',
    summary_use_proj: true,
    task_specific_params: { 'text-generation': { do_sample: true, max_length: 50 } },
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    transformers_version: '4.44.2',
    use_cache: true,
    vocab_size: vocabSize,
  };
}

/**
 * Writes a transformers.js-loadable model folder: DIR/config.json, DIR/generation_config.json,
 * DIR/onnx/model.onnx and every `tokenizerFiles` entry as DIR/<name> (JSON). Each file goes
 * through a temporary sibling and a rename, so a reader never sees a half-written model.
 * Returns the weights, for reference computations.
 */
export async function writeTinyGpt2(dir: string, opts?: TinyGpt2Options & { tokenizerFiles?: Record<string, unknown> }): Promise<Gpt2Weights> {
  const tokenizerFiles = opts?.tokenizerFiles ?? {};
  for (const name of Object.keys(tokenizerFiles)) {
    // Names are joined to DIR: anything but a plain file name could write elsewhere.
    if (name === '' || name === '.' || name === '..' || basename(name) !== name || name.includes('\\')) {
      throw new ValidationError(`tokenizerFiles name ${JSON.stringify(name)} must be a plain file name`);
    }
  }
  const weights = makeGpt2Weights(opts);
  const onnxBytes = gpt2OnnxBytes(weights, opts);
  const config = gpt2HfConfig(weights);
  await mkdir(join(dir, 'onnx'), { recursive: true });
  const put = (path: string, bytes: Uint8Array) => writeFileAtomic(path, (fh) => writeAt(fh, bytes, 0));
  const json = (v: unknown) => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);
  await put(join(dir, 'config.json'), json(config));
  await put(
    join(dir, 'generation_config.json'),
    json({ _from_model_config: true, bos_token_id: config.bos_token_id, eos_token_id: config.eos_token_id, transformers_version: config.transformers_version }),
  );
  for (const [name, value] of Object.entries(tokenizerFiles)) await put(join(dir, name), json(value));
  await put(join(dir, 'onnx', 'model.onnx'), onnxBytes);
  return weights;
}
