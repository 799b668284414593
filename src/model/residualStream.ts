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
}

export interface ResidualStream {
  layers: number;
  /** Attention and MLP read the same stream (GPT-NeoX/Pythia): no resid_mid. */
  parallel: boolean;
  /** blocks.L.hook_<kind> -> tensor. */
  hooks: Map<string, HookTensor>;
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
  }
  return { layers, parallel, hooks };
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
