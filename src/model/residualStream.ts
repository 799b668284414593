// The residual stream of a decoder graph, found by structure, not by node names.
//
// Every pre-norm decoder (GPT-2, GPT-NeoX/Pythia, Llama, Mistral, Qwen, Gemma) has the same
// skeleton: a chain of residual additions r[i+1] = r[i] + branch(norm(r[i])), where branch is
// attention or the MLP (both at once in parallel blocks: r + attn(ln1 r) + mlp(ln2 r)).
// Exporters spell the pieces differently: the TorchScript exporter scopes node names by module
// path, the dynamo exporter names them node_add_3, onnxruntime's optimizer fuses an addition
// and the next norm into one SkipLayerNormalization / SkipSimplifiedLayerNormalization whose
// residual sum is an (optional) extra output, fp16 exports wrap norms in Casts, quantized
// exports replace MatMul by MatMulInteger or MatMulNBits. None of that changes the skeleton:
//
// - r[0] is the input of the first normalization in the graph (after Casts): the embeddings,
//   with Gemma's sqrt(d_model) scale and GPT-2's position embeddings already applied.
// - r[i+1] is the one addition reading r[i] whose other operand depends on r[i] (that
//   operand is the branch output: it exists only because the branch read r[i]). A fused Skip*
//   norm counts as that addition; its sum output is r[i+1].
// - A branch is attention when the nodes between r[i] and it include a Softmax or a fused
//   attention op. Sequential blocks alternate attention, MLP; parallel blocks have one branch
//   per layer, an addition of an attention part and an MLP part.
//
// Where the chain does not have one of these shapes, the error says what was found.

import { FormatError } from '../errors.js';
import type onnxProto from 'onnx-proto';

type Graph = onnxProto.onnx.IGraphProto;
type Node = onnxProto.onnx.INodeProto;

const ins = (n: Node): string[] => n.input ?? [];
const outs = (n: Node): string[] => n.output ?? [];
const nodes = (g: Graph): Node[] => g.node ?? [];

/** A hook's tensor: the graph tensor, plus a bias a fused op adds to it (Skip*Norm's bias input). */
export interface HookTensor {
  tensor: string;
  bias?: string;
  /**
   * The hook is computed beside the graph from TENSOR: its normalization without the norm's
   * gain and bias, (x - mean) / sqrt(var + eps) (CENTER) or x / sqrt(mean(x^2) + eps). Used
   * where a fused norm op never materializes that tensor. A replacement v is fed to the graph
   * as the norm's OUTPUT v * gain (+ bias), the op's own scale and bias inputs.
   */
  normalize?: { center: boolean; epsilon: number; output: string; gain: string; bias?: string };
}

export interface ResidualStream {
  layers: number;
  /** Attention and MLP read the same stream (GPT-NeoX/Pythia): no resid_mid. */
  parallel: boolean;
  /** blocks.L.hook_<kind> (and blocks.L.ln2.hook_normalized, blocks.L.mlp.hook_in/out) -> tensor. */
  hooks: Map<string, HookTensor>;
  /** Hooks of the MLP side that could not be located, with why (hook name -> reason). */
  unresolved: Map<string, string>;
}

const FUSED_NORMS = new Set(['LayerNormalization', 'SimplifiedLayerNormalization', 'RMSNormalization']);
export const SKIP_NORMS = new Set(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);
const ATTENTION_OPS = new Set([
  'Softmax',
  'Attention', // com.microsoft, and ONNX opset 23
  'MultiHeadAttention',
  'GroupQueryAttention',
  'PackedAttention',
  'PackedMultiHeadAttention',
  'SparseAttention',
  'DecoderMaskedMultiHeadAttention',
]);

/** Skip*Norm inputs: input, skip, gamma, [beta,] bias. The bias index differs by op. */
export function skipBiasIndex(n: Node): number {
  return n.opType === 'SkipLayerNormalization' ? 4 : 3;
}

interface Use {
  node: Node;
  index: number;
}

export class GraphIndex {
  readonly producer = new Map<string, Use>();
  readonly consumers = new Map<string, Use[]>();

  constructor(readonly graph: Graph) {
    for (const n of nodes(graph)) {
      outs(n).forEach((t, index) => t !== '' && this.producer.set(t, { node: n, index }));
      ins(n).forEach((t, index) => {
        if (t === '') return;
        let list = this.consumers.get(t);
        if (!list) this.consumers.set(t, (list = []));
        list.push({ node: n, index });
      });
    }
  }

  usesOf(t: string): Use[] {
    return this.consumers.get(t) ?? [];
  }

  /** T with the Casts in front of it peeled off. */
  uncast(t: string): string {
    for (let p = this.producer.get(t); p?.node.opType === 'Cast'; p = this.producer.get(t)) t = ins(p.node)[0]!;
    return t;
  }

  /**
   * The tensors that depend on R, with one rule beyond the edges: the norm outputs of a Skip*
   * node depend on its sum output (they are the norm OF that sum).
   */
  descendants(r: string): Set<string> {
    const seen = new Set<string>([r]);
    const stack = [r];
    const push = (t: string) => t !== '' && !seen.has(t) && (seen.add(t), stack.push(t));
    const p = this.producer.get(r);
    if (p && SKIP_NORMS.has(p.node.opType ?? '') && p.index === 3) outs(p.node).slice(0, 3).forEach(push);
    while (stack.length > 0) {
      for (const u of this.usesOf(stack.pop()!)) outs(u.node).forEach(push);
    }
    return seen;
  }

  /** The nodes on some path from R (exclusive) to B, given R's descendants D. */
  between(b: string, d: Set<string>): Set<Node> {
    const found = new Set<Node>();
    const seen = new Set<string>();
    const stack = [b];
    while (stack.length > 0) {
      const t = stack.pop()!;
      if (seen.has(t) || !d.has(t)) continue;
      seen.add(t);
      const p = this.producer.get(t);
      if (!p) continue;
      if (found.has(p.node)) continue;
      found.add(p.node);
      for (const i of ins(p.node)) stack.push(i);
      // The virtual edge of descendants(): a Skip* norm output comes from its sum output.
      if (SKIP_NORMS.has(p.node.opType ?? '') && p.index !== 3 && outs(p.node)[3]) stack.push(outs(p.node)[3]!);
    }
    return found;
  }
}

/**
 * Gives every Skip*Norm node a name for its residual-sum output (output 3), which exporters
 * leave off where nothing reads it (the last block's sum, read only by the final norm).
 */
export function nameSkipSums(graph: Graph): void {
  let i = 0;
  for (const n of nodes(graph)) {
    if (!SKIP_NORMS.has(n.opType ?? '')) continue;
    const o = [...outs(n)];
    if (o[3]) continue;
    while (o.length < 3) o.push('');
    o[3] = `/saekit/skip_sum_${i++}`;
    n.output = o;
  }
}

/** The tensor a spelled-out LayerNorm / RMSNorm normalizes, for the ReduceMean that starts it. */
function spelledNormInput(ix: GraphIndex, mean: Node): string | undefined {
  const x = ins(mean)[0]!;
  const m = outs(mean)[0]!;
  // LayerNorm: x - mean(x)
  if (ix.usesOf(x).some((u) => u.node.opType === 'Sub' && ins(u.node)[0] === x && ins(u.node)[1] === m)) return x;
  // RMSNorm: mean(x^2) or mean(x * x)
  const p = ix.producer.get(x)?.node;
  if (p?.opType === 'Pow') return ins(p)[0];
  if (p?.opType === 'Mul' && ins(p)[0] === ins(p)[1]) return ins(p)[0];
  return undefined;
}

/** The first normalization's input in graph (topological) order: r[0]. */
function firstNormInput(ix: GraphIndex): string | undefined {
  for (const n of nodes(ix.graph)) {
    const op = n.opType ?? '';
    if (FUSED_NORMS.has(op) || SKIP_NORMS.has(op)) return ix.uncast(ins(n)[0]!);
    if (op === 'ReduceMean') {
      const x = spelledNormInput(ix, n);
      if (x !== undefined) return ix.uncast(x);
    }
  }
  return undefined;
}

interface Step {
  from: string;
  to: string;
  branch: HookTensor;
  attention: boolean;
  /** Parallel blocks: the attention part and the MLP part of the branch. */
  parts?: { attn: string; mlp: string };
}

/** The residual addition reading R, if any: exactly one, or an error. */
function nextStep(ix: GraphIndex, r: string, file: string): Step | undefined {
  // The addition may read R or a Cast of it (fp16 exports cast around blocked ops).
  const readers = [r, ...ix.usesOf(r).filter((u) => u.node.opType === 'Cast').map((u) => outs(u.node)[0]!)];
  const d = ix.descendants(r);
  const candidates: Step[] = [];
  for (const t of readers) {
    for (const u of ix.usesOf(t)) {
      const op = u.node.opType ?? '';
      if (op !== 'Add' && !SKIP_NORMS.has(op)) continue;
      if (u.index > 1) continue; // a Skip* norm's gamma/beta/bias
      const other = ins(u.node)[1 - u.index];
      if (!other || other === t || !d.has(other)) continue;
      const to = op === 'Add' ? outs(u.node)[0]! : outs(u.node)[3]!;
      const bias = SKIP_NORMS.has(op) ? ins(u.node)[skipBiasIndex(u.node)] : undefined;
      const branch: HookTensor = bias ? { tensor: other, bias } : { tensor: other };
      const inside = ix.between(other, d);
      const attention = [...inside].some((n) => ATTENTION_OPS.has(n.opType ?? ''));
      candidates.push({ from: r, to, branch, attention });
    }
  }
  if (candidates.length > 1) {
    throw new FormatError(
      file,
      `cannot trace the residual stream: tensor ${r} is read by ${candidates.length} additions whose other operand depends on it (${candidates.map((c) => c.to).join(', ')})`,
    );
  }
  const step = candidates[0];
  if (step && step.attention) {
    // A parallel block's branch is attn + mlp: an addition of a part with attention and one without.
    const p = ix.producer.get(step.branch.tensor)?.node;
    if (p?.opType === 'Add' && !step.branch.bias) {
      const [a, b] = ins(p) as [string, string];
      const has = (t: string) => d.has(t) && [...ix.between(t, d)].some((n) => ATTENTION_OPS.has(n.opType ?? ''));
      const ha = has(a);
      const hb = has(b);
      const mlpLike = (t: string) => d.has(t) && !has(t) && ix.between(t, d).size > 2;
      if (ha !== hb && mlpLike(ha ? b : a)) step.parts = { attn: ha ? a : b, mlp: ha ? b : a };
    }
  }
  return step;
}

// The MLP side of a block, for transcoders: what enters the MLP and what leaves it.
//
// The MLP branch runs from its stream tensor r (resid_mid; resid_pre in parallel blocks) to
// the tensor added back to the stream. Every path between them passes through a chain of
// tensors (the branch's dominators, found by cutting each tensor and asking whether the output
// is still reachable): the norm's output, the MLP's hidden product, its output. Of these:
// - blocks.L.mlp.hook_in is the last one before any matrix multiplication (stepping back over
//   Casts and Reshapes): the exact tensor the MLP's first matmuls read, the output of the
//   second norm WITH its gain and bias (circuit-tracer's ReplacementMLP.hook_in, the input of
//   the Hugging Face MLP module).
// - blocks.L.ln2.hook_normalized is TransformerLens's: the normalized stream BEFORE the gain
//   and bias. TransformerLens's RMSNorm and RMSNormPre apply hook_normalized before their
//   weight (transformer_lens/components/rms_norm.py: hook_normalized(x / scale), then * w), and
//   LayerNormPre, what its default from_pretrained (fold_ln=True) builds, has no weight at all
//   (the gain and bias are folded into W_in/b_in, so this IS the input of the folded MLP's
//   first matmul). The published transcoders at this hook were trained that way: Gemma
//   Scope's "fold the pre-MLP RMS norm gain parameters into the MLP input matrices ... then
//   train the transcoder on input activations just after the pre-MLP RMSNorm" (Gemma Scope
//   paper, quoted on google/gemma-scope-2b-pt-transcoders), which circuit-tracer reads as
//   ln2.hook_normalized. (Only TransformerLens's unfolded LayerNorm, fold_ln=False, applies
//   w and b before the hook; use blocks.L.mlp.hook_in for that tensor.) Spelled-out norms
//   hold it (the Div / Mul before the gain); fused norm ops (LayerNormalization,
//   Skip*LayerNormalization, SimplifiedLayerNormalization) never materialize it, so it is
//   computed beside the graph from r with the op's own epsilon (HookTensor.normalize).
// - blocks.L.mlp.hook_out is the MLP module's output: the input of the norm that ends the
//   branch where there is one (Gemma 2/3's post_feedforward_layernorm), else the branch itself
//   (= hook_mlp_out). hook_mlp_out stays what is ADDED to the stream (after Gemma's post-norm),
//   as TransformerLens's hook_mlp_out and the "MLP sublayer's output" Gemma Scope transcoders
//   predict (post_mlp_resid = post_att_resid + mlp_output).
// - blocks.L.hook_mlp_in is TransformerLens's TransformerBlock.hook_mlp_in: the norm's INPUT,
//   r itself (not normalized).

const MATMUL_OPS = new Set([
  'MatMul', 'Gemm', 'MatMulInteger', 'MatMulIntegerToFloat', 'DynamicQuantizeMatMul', 'QLinearMatMul', 'MatMulNBits',
  'MatMulBnb4', 'MatMulFpQ4', 'FusedMatMul', 'FusedGemm', 'GemmFastGelu', 'QGemm', 'QOrderedMatMul',
]);
/** Ops that move or retype values without computing: the MLP input is before them. */
const LAYOUT_OPS = new Set(['Cast', 'Reshape', 'Identity', 'Squeeze', 'Unsqueeze', 'Flatten']);
/** A norm's gain and bias (and fp16 Casts around them): elementwise with one operand on the stream. */
const GAIN_OPS = new Set(['Mul', 'Add', 'Sub', 'Div', 'Cast', 'Identity']);

interface MlpSide {
  normalized: HookTensor;
  mlpIn: HookTensor;
  mlpOut: HookTensor;
}

function attrFloat(n: Node, name: string): number | undefined {
  const a = (n.attribute ?? []).find((x) => x.name === name);
  return a?.f === undefined || a.f === null ? undefined : Number(a.f);
}

/** The MLP side of the branch from stream tensor R to OUT (see above); a string says why not. */
function mlpSide(ix: GraphIndex, r: string, out: HookTensor, order: Map<Node, number>): MlpSide | string {
  const d = ix.descendants(r);
  const inside = ix.between(out.tensor, d);
  // The tensors on some path R -> OUT (with Skip*'s virtual edge: its norm outputs come from its sum).
  const onPath = new Set<string>();
  for (const stack = [out.tensor]; stack.length > 0; ) {
    const t = stack.pop()!;
    if (onPath.has(t) || !d.has(t)) continue;
    onPath.add(t);
    const p = ix.producer.get(t);
    if (!p || t === r) continue;
    for (const i of ins(p.node)) stack.push(i);
    if (SKIP_NORMS.has(p.node.opType ?? '') && p.index !== 3 && outs(p.node)[3]) stack.push(outs(p.node)[3]!);
  }
  if (!onPath.has(r)) return `the MLP output ${out.tensor} does not depend on ${r}`;
  const next = (t: string): string[] => {
    const found: string[] = [];
    for (const u of ix.usesOf(t)) if (inside.has(u.node)) for (const o of outs(u.node)) if (onPath.has(o)) found.push(o);
    const p = ix.producer.get(t);
    if (p && p.index === 3 && SKIP_NORMS.has(p.node.opType ?? '') && inside.has(p.node)) for (const o of outs(p.node).slice(0, 3)) if (onPath.has(o)) found.push(o);
    return found;
  };
  const reachesOut = (avoid: string): boolean => {
    const seen = new Set<string>([r]);
    for (const stack = [r]; stack.length > 0; ) {
      for (const o of next(stack.pop()!)) {
        if (o === avoid || seen.has(o)) continue;
        if (o === out.tensor) return true;
        seen.add(o);
        stack.push(o);
      }
    }
    return false;
  };
  const position = (t: string) => (t === r ? -1 : (order.get(ix.producer.get(t)!.node) ?? -1));
  const chain = [...onPath].filter((t) => t !== r && !reachesOut(t)).sort((a, b) => position(a) - position(b));
  // Everything downstream of the MLP's matrix multiplications.
  const afterMatmul = new Set<string>();
  const stack = [...inside].filter((n) => MATMUL_OPS.has(n.opType ?? '')).flatMap((n) => outs(n).filter((o) => onPath.has(o)));
  if (stack.length === 0) return `no matrix multiplication between ${r} and ${out.tensor}`;
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (afterMatmul.has(t)) continue;
    afterMatmul.add(t);
    stack.push(...next(t));
  }
  let i = chain.findIndex((t) => afterMatmul.has(t)) - 1;
  if (i < -1) return `the MLP output ${out.tensor} is not downstream of a matrix multiplication`;
  while (i >= 0 && LAYOUT_OPS.has(ix.producer.get(chain[i]!)!.node.opType ?? '')) i--;
  if (i < 0) return `the MLP's matrix multiplications read ${r} with no normalization in between`;
  const mlpIn = chain[i]!;

  // The second norm: the one normalization on the branch that reads R.
  // (The node that produced R is in INSIDE too when it is a Skip* norm: its own normalized
  // output feeds the other branch, so only norms whose output leads to the MLP count.)
  const norms = [...inside].filter((n) => {
    const op = n.opType ?? '';
    if (!onPath.has(outs(n)[0] ?? '')) return false;
    if (FUSED_NORMS.has(op)) return ix.uncast(ins(n)[0]!) === r;
    if (SKIP_NORMS.has(op)) return outs(n)[3] === r;
    if (op !== 'ReduceMean') return false;
    const x = spelledNormInput(ix, n);
    return x !== undefined && ix.uncast(x) === r;
  });
  if (norms.length !== 1) return `expected one normalization of ${r} before the MLP, found ${norms.length}`;
  const norm = norms[0]!;
  let normalized: HookTensor;
  if (norm.opType !== 'ReduceMean') {
    const op = norm.opType ?? '';
    const center = op === 'LayerNormalization' || op === 'SkipLayerNormalization';
    // Inputs: LayerNormalization (x, scale, B), Simplified/RMSNormalization (x, scale),
    // SkipLayerNormalization (x, skip, gamma, beta, bias), SkipSimplified (x, skip, gamma, bias).
    const gain = ins(norm)[SKIP_NORMS.has(op) ? 2 : 1];
    const bias = op === 'LayerNormalization' ? ins(norm)[2] : op === 'SkipLayerNormalization' ? ins(norm)[3] : undefined;
    if (!gain) return `the norm of ${r} (${op}) has no scale input`;
    normalized = {
      tensor: r,
      normalize: { center, epsilon: attrFloat(norm, 'epsilon') ?? 1e-5, output: outs(norm)[0]!, gain, ...(bias ? { bias } : {}) },
    };
  } else {
    // Spelled out: back from the norm's output through its gain and bias to the division by
    // the RMS / standard deviation (a Div or Mul whose both operands come from the stream).
    let t = mlpIn;
    for (;;) {
      const p = ix.producer.get(t)?.node;
      if (!p || !GAIN_OPS.has(p.opType ?? '')) break;
      const onStream = ins(p).filter((x) => x !== '' && d.has(x));
      if (onStream.length !== 1) break;
      t = onStream[0]!;
    }
    const p = ix.producer.get(t)?.node;
    const divides = p !== undefined && (p.opType === 'Div' || p.opType === 'Mul') && ins(p).filter((x) => d.has(x)).length === 2;
    if (t === r || !divides || !chain.includes(t)) return `cannot find the normalized tensor (before the gain) of the norm of ${r}`;
    normalized = { tensor: t };
  }

  // A norm that ends the branch (Gemma's post_feedforward_layernorm): the MLP output is its input.
  const postInputs = new Set<string>();
  for (const n of inside) {
    if (n === norm) continue;
    const op = n.opType ?? '';
    const x = FUSED_NORMS.has(op) ? ins(n)[0] : op === 'ReduceMean' ? spelledNormInput(ix, n) : undefined;
    if (x !== undefined && afterMatmul.has(ix.uncast(x)) && chain.includes(ix.uncast(x))) postInputs.add(ix.uncast(x));
  }
  const post = chain.find((t) => postInputs.has(t));
  return { normalized, mlpIn: { tensor: mlpIn }, mlpOut: post !== undefined ? { tensor: post } : out };
}

/**
 * Traces the residual stream of GRAPH (Skip* sums named first: nameSkipSums) and names its
 * hook points. LAYERS, when the model config gives it, must agree with what the graph shows.
 */
export function traceResidualStream(graph: Graph, file: string, expectedLayers?: number): ResidualStream {
  const ix = new GraphIndex(graph);
  const r0 = firstNormInput(ix);
  if (r0 === undefined) {
    throw new FormatError(file, 'cannot find the residual stream: the graph has no normalization (LayerNormalization, RMSNorm, or ReduceMean-based norm)');
  }
  const steps: Step[] = [];
  for (let r = r0, step = nextStep(ix, r, file); step; r = step.to, step = nextStep(ix, r, file)) {
    steps.push(step);
    if (steps.length > 100000) throw new FormatError(file, 'the residual stream does not end');
  }
  const pattern = steps.map((s) => (s.parts ? 'P' : s.attention ? 'A' : 'M')).join('');
  const describe = () =>
    `found ${steps.length} residual additions after ${r0} (A = attention, M = MLP, P = parallel attention + MLP: ${pattern || 'none'})`;
  let parallel: boolean;
  let layers: number;
  if (steps.length > 0 && /^(AM)+$/.test(pattern)) {
    parallel = false;
    layers = steps.length / 2;
  } else if (steps.length > 0 && /^P+$/.test(pattern)) {
    parallel = true;
    layers = steps.length;
  } else {
    throw new FormatError(file, `cannot locate the transformer blocks: ${describe()}; expected attention and MLP alternating, or parallel blocks`);
  }
  if (expectedLayers !== undefined && expectedLayers !== layers) {
    throw new FormatError(file, `config.json says ${expectedLayers} layers but the graph shows ${layers}: ${describe()}`);
  }
  const hooks = new Map<string, HookTensor>();
  const unresolved = new Map<string, string>();
  const order = new Map(nodes(graph).map((n, i) => [n, i]));
  const per = parallel ? 1 : 2;
  for (let l = 0; l < layers; l++) {
    const first = steps[per * l]!;
    const last = steps[per * l + per - 1]!;
    hooks.set(`blocks.${l}.hook_resid_pre`, { tensor: first.from });
    if (parallel) {
      hooks.set(`blocks.${l}.hook_attn_out`, { tensor: first.parts!.attn });
      hooks.set(`blocks.${l}.hook_mlp_out`, { tensor: first.parts!.mlp });
    } else {
      hooks.set(`blocks.${l}.hook_attn_out`, first.branch);
      hooks.set(`blocks.${l}.hook_resid_mid`, { tensor: first.to });
      hooks.set(`blocks.${l}.hook_mlp_out`, last.branch);
    }
    hooks.set(`blocks.${l}.hook_resid_post`, { tensor: last.to });
    // The MLP side (transcoders). The MLP reads resid_mid (resid_pre in parallel blocks).
    const stream = parallel ? first.from : first.to;
    hooks.set(`blocks.${l}.hook_mlp_in`, { tensor: stream });
    const side = mlpSide(ix, stream, hooks.get(`blocks.${l}.hook_mlp_out`)!, order);
    for (const [kind, pick] of [['ln2.hook_normalized', 'normalized'], ['mlp.hook_in', 'mlpIn'], ['mlp.hook_out', 'mlpOut']] as const) {
      if (typeof side === 'string') unresolved.set(`blocks.${l}.${kind}`, side);
      else hooks.set(`blocks.${l}.${kind}`, side[pick]);
    }
  }
  return { layers, parallel, hooks, unresolved };
}

/**
 * The element type (onnx TensorProto.DataType) of tensor T, from value_info, initializers
 * and inputs, else by walking back through ops that keep their input's type; undefined when
 * nothing says. Used to cast hooks to float32 and overrides to the graph's type.
 */
export function elemTypeOf(graph: Graph, t: string): number | undefined {
  const known = new Map<string, number>();
  for (const v of [...(graph.valueInfo ?? []), ...(graph.input ?? []), ...(graph.output ?? [])]) {
    const e = v.type?.tensorType?.elemType;
    if (e) known.set(v.name as string, e);
  }
  for (const init of graph.initializer ?? []) if (init.dataType) known.set(init.name as string, init.dataType);
  const ix = new GraphIndex(graph);
  const seen = new Set<string>();
  const walk = (x: string): number | undefined => {
    if (known.has(x)) return known.get(x);
    if (seen.has(x)) return undefined;
    seen.add(x);
    const p = ix.producer.get(x);
    if (!p) return undefined;
    const n = p.node;
    const attr = (name: string) => (n.attribute ?? []).find((a) => a.name === name);
    switch (n.opType) {
      case 'Cast':
        return Number(attr('to')?.i ?? 0) || undefined;
      case 'Constant':
        return attr('value')?.t?.dataType ?? undefined;
      case 'DequantizeLinear':
        return walk(ins(n)[1]!);
      case 'Gather':
        return walk(ins(n)[0]!);
      default:
        for (const i of ins(n)) {
          if (i === '') continue;
          const e = walk(i);
          if (e === 1 || e === 10 || e === 16 || e === 11) return e; // float, float16, bfloat16, double
        }
        return undefined;
    }
  };
  return walk(t);
}
