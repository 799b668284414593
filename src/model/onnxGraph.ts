// Hook points on ONNX decoder graphs: find the tensors TransformerLens names
// (blocks.L.hook_resid_pre, ...) and edit the graph so a session returns them, or takes a
// replacement for one of them.
//
// Exported decoders only have `logits` and `present.*` outputs, but ONNX runtime returns
// whatever the graph lists as outputs, so exposing an internal tensor is a protobuf edit:
// one Identity node and one more graph output. The hooks are found from node names, which
// the torch exporter scopes by module path (`/transformer/h.3/ln_1/LayerNormalization`):
// the residual stream entering block L is the one non-constant tensor that flows INTO the
// scope of block L's first LayerNorm; an attention or MLP output is the one tensor that flows
// OUT of that sublayer's scope. This works whether LayerNorm is one op (opset >= 17) or
// spelled out as ReduceMean/Sub/Pow/... (older exports), and whatever the exporter did
// inside the scopes.

import onnxProto from 'onnx-proto';
import { FormatError, ValidationError } from '../errors.js';

const { onnx } = onnxProto;
export type OnnxModel = InstanceType<typeof onnx.ModelProto>;
type Graph = onnxProto.onnx.IGraphProto;
type Node = onnxProto.onnx.INodeProto;

// protobufjs types every repeated field as optional; decoded messages always have them.
const ins = (n: Node): string[] => n.input ?? [];
const outs = (n: Node): string[] => n.output ?? [];
const nodes = (g: Graph): Node[] => g.node ?? [];

/** The hook kinds saekit can expose, in TransformerLens / SAELens vocabulary. */
export const HOOK_KINDS = ['resid_pre', 'resid_mid', 'resid_post', 'attn_out', 'mlp_out'] as const;
export type HookKind = (typeof HOOK_KINDS)[number];

/** The input that replaces a hooked tensor in a spliced graph. */
export const OVERRIDE_INPUT = 'saekit.override';

/** How one model family's exporter scopes its modules (only GPT-2 is tested). */
interface Family {
  name: string;
  block: (layer: number) => string;
  ln1: string;
  ln2: string;
  attn: string;
  mlp: string;
  finalNorm: string;
}

const FAMILIES: Family[] = [
  { name: 'gpt2', block: (l) => `/transformer/h.${l}/`, ln1: 'ln_1/', ln2: 'ln_2/', attn: 'attn/', mlp: 'mlp/', finalNorm: '/transformer/ln_f/' },
  // Llama, Mistral, Qwen2 as exported by torch (optimum). Untested: no such model is generated here.
  { name: 'llama', block: (l) => `/model/layers.${l}/`, ln1: 'input_layernorm/', ln2: 'post_attention_layernorm/', attn: 'self_attn/', mlp: 'mlp/', finalNorm: '/model/norm/' },
];

/** A parsed hook name: `blocks.6.hook_resid_pre` -> { layer 6, kind resid_pre }. */
export interface HookPoint {
  name: string;
  layer: number;
  kind: HookKind;
}

export function parseHookName(name: string): HookPoint {
  const m = /^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)$/.exec(name);
  if (!m) {
    throw new ValidationError(
      `Unknown hook ${JSON.stringify(name)}: expected blocks.<layer>.hook_<kind> with kind one of ${HOOK_KINDS.join(', ')} (e.g. blocks.6.hook_resid_pre)`,
    );
  }
  return { name, layer: Number(m[1]), kind: m[2] as HookKind };
}

/** Reads an ONNX model; anything protobuf cannot parse is a FormatError naming the file. */
export function decodeOnnx(bytes: Uint8Array, file: string): OnnxModel {
  let model: OnnxModel;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new FormatError(file, `not an ONNX model (${(e as Error).message})`);
  }
  if (!model.graph || nodes(model.graph).length === 0) throw new FormatError(file, 'ONNX model has no graph nodes');
  return model;
}

export function encodeOnnx(model: OnnxModel): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

/**
 * The hook table of a decoder graph: every available hook name -> the tensor it reads.
 * Throws a FormatError when the graph is a merged decoder (an `If` node choosing between
 * with-past and without-past branches) or when no supported naming is found.
 */
export function findHooks(model: OnnxModel, file: string): { family: string; layers: number; hooks: Map<string, string> } {
  inlineMergedDecoder(model, file);
  const graph = model.graph as Graph;
  const producers = producerMap(graph);
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name as string));
  const constant = (tensor: string): boolean => {
    if (initializers.has(tensor)) return true;
    const p = producers.get(tensor);
    return p !== undefined && (p.opType === 'Constant' || p.opType === 'ConstantOfShape');
  };

  for (const family of FAMILIES) {
    let layers = 0;
    while (nodes(graph).some((n) => (n.name as string).startsWith(family.block(layers)))) layers++;
    if (layers === 0) continue;
    const hooks = new Map<string, string>();
    for (let l = 0; l < layers; l++) {
      const block = family.block(l);
      const pre = flowInto(graph, block + family.ln1, producers, constant);
      if (pre) hooks.set(`blocks.${l}.hook_resid_pre`, pre);
      const mid = flowInto(graph, block + family.ln2, producers, constant);
      if (mid) hooks.set(`blocks.${l}.hook_resid_mid`, mid);
      const attn = flowOutOf(graph, block + family.attn);
      if (attn) hooks.set(`blocks.${l}.hook_attn_out`, attn);
      const mlp = flowOutOf(graph, block + family.mlp);
      if (mlp) hooks.set(`blocks.${l}.hook_mlp_out`, mlp);
    }
    for (let l = 0; l < layers; l++) {
      const next = l + 1 < layers ? hooks.get(`blocks.${l + 1}.hook_resid_pre`) : flowInto(graph, family.finalNorm, producers, constant);
      if (next) hooks.set(`blocks.${l}.hook_resid_post`, next);
    }
    if (!hooks.has('blocks.0.hook_resid_pre')) {
      throw new FormatError(file, `found ${family.name}-style blocks but not the residual stream entering block 0 (no single input to ${family.block(0)}${family.ln1})`);
    }
    return { family: family.name, layers, hooks };
  }
  throw new FormatError(
    file,
    'cannot find transformer blocks by node name: hook points need the torch exporter\'s scoped node names ' +
      `(${FAMILIES.map((f) => `${f.block(0)}...`).join(' or ')})`,
  );
}

/**
 * Merged decoders (optimum's `decoder_model_merged`) wrap the whole model in one `If` on a
 * `use_cache_branch` input: the then-branch runs with past key/values, the else-branch
 * without. saekit always runs whole windows, and the with-past branch does that with empty
 * past tensors, so the then-branch is inlined as the main graph (its outputs renamed to the
 * If's through Identity nodes, its initializers joined to the outer ones). Anything else with
 * an If at the top is refused clearly.
 */
export function inlineMergedDecoder(model: OnnxModel, file: string): void {
  const graph = model.graph as Graph;
  const ifs = nodes(graph).filter((n) => n.opType === 'If');
  if (ifs.length === 0) return;
  const node = ifs[0]!;
  const outputs = new Set((graph.output ?? []).map((o) => o.name as string));
  const branch = (node.attribute ?? []).find((a) => a.name === 'then_branch')?.g as Graph | undefined;
  if (ifs.length > 1 || !branch || !outs(node).every((o) => outputs.has(o))) {
    throw new FormatError(
      file,
      'has If nodes that are not a merged decoder (one If producing the outputs): not supported; ' +
        'use a non-merged export (e.g. --onnx-file decoder_model)',
    );
  }
  // Branch tensors may reuse the If's output names (a scope of their own inside the If):
  // inlined, they are renamed so each name keeps one producer.
  const taken = new Set(outs(node));
  const rename = (t: string) => (taken.has(t) ? `saekit.branch.${t}` : t);
  for (const n of nodes(branch)) {
    n.input = ins(n).map(rename);
    n.output = outs(n).map(rename);
  }
  const renamed = outs(node).map((o, i) =>
    onnx.NodeProto.create({ name: `/saekit/unmerge/Identity_${i}`, opType: 'Identity', input: [rename((branch.output ?? [])[i]!.name as string)], output: [o] }),
  );
  graph.node = [...nodes(graph).filter((n) => n !== node), ...nodes(branch), ...renamed];
  graph.initializer = [...(graph.initializer ?? []), ...(branch.initializer ?? [])];
  const cond = ins(node)[0];
  const stillUsed = nodes(graph).some((n) => ins(n).includes(cond ?? ''));
  if (!stillUsed) graph.input = (graph.input ?? []).filter((i) => i.name !== cond);
}

/** The single non-constant tensor produced outside SCOPE and consumed inside it, if exactly one. */
function flowInto(graph: Graph, scope: string, producers: Map<string, Node>, constant: (t: string) => boolean): string | undefined {
  const found = new Set<string>();
  for (const n of nodes(graph)) {
    if (!(n.name as string).startsWith(scope)) continue;
    for (const input of ins(n)) {
      if (input === '' || constant(input)) continue;
      const p = producers.get(input);
      if (p && (p.name as string).startsWith(scope)) continue;
      found.add(input);
    }
  }
  return found.size === 1 ? [...found][0] : undefined;
}

/** The single tensor produced inside SCOPE and consumed outside it (not a graph output), if exactly one. */
function flowOutOf(graph: Graph, scope: string): string | undefined {
  const inside = new Set<string>();
  for (const n of nodes(graph)) if ((n.name as string).startsWith(scope)) for (const o of outs(n)) inside.add(o);
  // Graph outputs and whatever reaches them only through Identity renames (present.* of a
  // merged decoder's inlined branch) are outputs, not the sublayer's result.
  const graphOutputs = new Set((graph.output ?? []).map((o) => o.name as string));
  const producers = producerMap(graph);
  for (const pending = [...graphOutputs]; pending.length > 0; ) {
    const p = producers.get(pending.pop() as string);
    if (p?.opType === 'Identity' && !graphOutputs.has(ins(p)[0]!)) {
      graphOutputs.add(ins(p)[0]!);
      pending.push(ins(p)[0]!);
    }
  }
  const found = new Set<string>();
  for (const n of nodes(graph)) {
    if ((n.name as string).startsWith(scope)) continue;
    for (const input of ins(n)) if (inside.has(input) && !graphOutputs.has(input)) found.add(input);
  }
  return found.size === 1 ? [...found][0] : undefined;
}

function producerMap(graph: Graph): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const n of nodes(graph)) for (const o of outs(n)) m.set(o, n);
  return m;
}

/** What an edited graph computes. */
export interface GraphEdit {
  /** Hooks added as graph outputs, named by the hook (e.g. `blocks.6.hook_resid_pre`). */
  expose: string[];
  /**
   * Keep the `logits` output? Without it ORT computes only up to the hooks. The `present.*`
   * key/value outputs are always dropped: saekit runs whole windows without a cache, and
   * keeping them would pin every layer before a splice point into the graph.
   */
  keepLogits: boolean;
  /** Replace this hook's tensor with the graph input `saekit.override` (for splicing). */
  override?: string;
}

/**
 * Applies EDIT to a copy-free decoded model (mutates it) and prunes every node no output
 * needs, so a graph that only exposes blocks.3.hook_resid_pre runs blocks 0-2 and nothing
 * else, and a spliced graph does not recompute what the override replaces.
 */
export function editGraph(model: OnnxModel, file: string, edit: GraphEdit): OnnxModel {
  const { hooks, layers } = findHooks(model, file); // inlines a merged decoder first
  const graph = model.graph as Graph;
  const tensorOf = (name: string): string => {
    const hp = parseHookName(name);
    const t = hooks.get(name);
    if (t === undefined) {
      throw new ValidationError(
        hp.layer >= layers
          ? `Hook ${name} does not exist: ${file} has ${layers} layers (0-${layers - 1})`
          : `Hook ${name} cannot be located in ${file} (available: ${[...hooks.keys()].filter((h) => h.startsWith(`blocks.${hp.layer}.`)).join(', ')})`,
      );
    }
    return t;
  };
  const floatType = activationElemType(graph);
  const originalOutputs = edit.keepLogits ? (graph.output ?? []).filter((o) => o.name === 'logits') : [];
  if (edit.keepLogits && originalOutputs.length === 0) throw new FormatError(file, 'has no output named logits');
  const outputs = [...originalOutputs];

  for (const name of new Set(edit.expose)) {
    const tensor = tensorOf(name);
    (graph.node ??= []).push(onnx.NodeProto.create({ name: `/saekit/${name}/Identity`, opType: 'Identity', input: [tensor], output: [name] }));
    outputs.push(valueInfo(name, floatType));
  }

  if (edit.override !== undefined) {
    const tensor = tensorOf(edit.override);
    // Every consumer reads the override instead: in a residual stream that is both the
    // LayerNorm and the skip connection, as TransformerLens' hook replacement does.
    for (const n of nodes(graph)) {
      if ((n.name as string).startsWith('/saekit/')) continue;
      n.input = ins(n).map((i) => (i === tensor ? OVERRIDE_INPUT : i));
    }
    (graph.input ??= []).push(valueInfo(OVERRIDE_INPUT, floatType));
  }
  if (outputs.length === 0) throw new ValidationError('A graph edit must keep the logits or expose at least one hook');
  graph.output = outputs;
  prune(graph);
  return model;
}

/** The float type of the graph's activations: that of `logits` (float32 for fp32 exports). */
function activationElemType(graph: Graph): number {
  const logits = (graph.output ?? []).find((o) => o.name === 'logits') ?? graph.output?.[0];
  return logits?.type?.tensorType?.elemType ?? onnx.TensorProto.DataType.FLOAT;
}

/** [batch_size, sequence_length, d] with symbolic dims: ORT needs only the element type. */
function valueInfo(name: string, elemType: number) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType,
        shape: onnx.TensorShapeProto.create({
          dim: ['batch_size', 'sequence_length', 'hidden_size'].map((dimParam) => onnx.TensorShapeProto.Dimension.create({ dimParam })),
        }),
      }),
    }),
  });
}

/** Drops nodes, initializers and graph inputs that no graph output depends on. */
function prune(graph: Graph): void {
  const producers = producerMap(graph);
  const needed = new Set<string>();
  const keep = new Set<Node>();
  const stack = (graph.output ?? []).map((o) => o.name as string);
  while (stack.length > 0) {
    const t = stack.pop() as string;
    if (needed.has(t)) continue;
    needed.add(t);
    const p = producers.get(t);
    if (!p || keep.has(p)) continue;
    keep.add(p);
    for (const i of ins(p)) if (i !== '') stack.push(i);
    for (const i of subgraphInputs(p)) stack.push(i);
  }
  graph.node = nodes(graph).filter((n) => keep.has(n));
  graph.initializer = (graph.initializer ?? []).filter((t) => needed.has(t.name as string));
  // input_ids / attention_mask stay: transformers.js builds its feeds from them.
  graph.input = (graph.input ?? []).filter((i) => needed.has(i.name as string) || i.name === 'input_ids' || i.name === 'attention_mask');
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => needed.has(v.name as string));
}

/** Outer-scope tensors a Loop/Scan body reads implicitly (If is rejected earlier). */
function subgraphInputs(node: Node): string[] {
  const names: string[] = [];
  const visit = (g: Graph | null | undefined) => {
    if (!g) return;
    for (const n of nodes(g)) {
      for (const i of ins(n)) if (i !== '') names.push(i);
      for (const a of n.attribute ?? []) {
        visit(a.g as Graph | null);
        for (const sg of a.graphs ?? []) visit(sg as Graph);
      }
    }
  };
  for (const a of node.attribute ?? []) {
    visit(a.g as Graph | null);
    for (const sg of a.graphs ?? []) visit(sg as Graph);
  }
  return names;
}
