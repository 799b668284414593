// Hook points on ONNX decoder graphs: find the tensors TransformerLens names
// (blocks.L.hook_resid_pre, ...) and edit the graph so a session returns them, or takes a
// replacement for one of them.
//
// Exported decoders only have `logits` and `present.*` outputs, but ONNX runtime returns
// whatever the graph lists as outputs, so exposing an internal tensor is a protobuf edit:
// one Cast-to-float32 node and one more graph output. The hooks are found by the graph's
// structure (residualStream.ts: the chain of residual additions), so they are the same
// tensors whichever exporter wrote the graph and however it named or fused the nodes.

import onnxProto from 'onnx-proto';
import { FormatError, ValidationError } from '../errors.js';
import { elemTypeOf, nameSkipSums, skipBiasIndex, SKIP_NORMS, traceResidualStream, type HookTensor } from './residualStream.js';

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

/** The external-data files the model's initializers point at (location entries), deduplicated. */
export function externalDataFiles(model: OnnxModel): string[] {
  const files = new Set<string>();
  const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataLocation !== EXTERNAL) continue;
    const loc = (t.externalData ?? []).find((e) => e.key === 'location')?.value;
    if (loc) files.add(loc);
  }
  return [...files];
}

export function encodeOnnx(model: OnnxModel): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

/**
 * The hook table of a decoder graph: every available hook name -> the tensor it reads.
 * Inlines a merged decoder (an `If` choosing between with-past and without-past branches)
 * and names the Skip* norms' residual sums first (both edit MODEL). LAYERS, from config.json,
 * is checked against the graph. Throws a FormatError naming the file and what was found
 * when the residual stream cannot be traced unambiguously.
 */
export function findHooks(
  model: OnnxModel,
  file: string,
  opts: { layers?: number; family?: string } = {},
): { family: string; layers: number; parallel: boolean; hooks: Map<string, HookTensor> } {
  inlineMergedDecoder(model, file);
  const graph = model.graph as Graph;
  nameSkipSums(graph);
  const stream = traceResidualStream(graph, file, opts.layers);
  return { family: opts.family ?? 'unknown', layers: stream.layers, parallel: stream.parallel, hooks: stream.hooks };
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
export function editGraph(model: OnnxModel, file: string, edit: GraphEdit, opts: { layers?: number } = {}): OnnxModel {
  const { hooks, layers } = findHooks(model, file, opts); // inlines a merged decoder first
  const graph = model.graph as Graph;
  const tensorOf = (name: string): HookTensor => {
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
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const originalOutputs = edit.keepLogits ? (graph.output ?? []).filter((o) => o.name === 'logits') : [];
  if (edit.keepLogits && originalOutputs.length === 0) throw new FormatError(file, 'has no output named logits');
  const outputs = [...originalOutputs];
  const added: onnxProto.onnx.INodeProto[] = [];
  const node = (opType: string, name: string, input: string[], output: string[], attribute: onnxProto.onnx.IAttributeProto[] = []) =>
    added.push(onnx.NodeProto.create({ name: `/saekit/${name}/${opType}`, opType, input, output, attribute }));
  const castTo = (to: number) => [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: to })];

  // Hooks leave the graph as float32 whatever the model computes in (fp16 exports).
  for (const name of new Set(edit.expose)) {
    const h = tensorOf(name);
    let t = h.tensor;
    if (h.bias) node('Add', `${name}/bias`, [t, h.bias], [(t = `/saekit/${name}/with_bias`)]);
    node('Cast', name, [t], [name], castTo(FLOAT));
    outputs.push(valueInfo(name, FLOAT));
  }

  if (edit.override !== undefined) overrideHook(graph, tensorOf(edit.override), node, castTo);
  if (outputs.length === 0) throw new ValidationError('A graph edit must keep the logits or expose at least one hook');
  graph.node = [...nodes(graph), ...added];
  graph.output = outputs;
  prune(graph);
  return model;
}

/**
 * Makes the graph read the input `saekit.override` where it read hook H: every consumer of
 * the tensor reads the override instead (in a residual stream that is both the next norm and
 * the skip connection, as TransformerLens' hook replacement does). Fused ops need more:
 * - a Skip* norm whose residual sum is H also normalizes that sum: it becomes a plain norm of
 *   the override (the sum itself is then unused and pruned);
 * - a branch that a Skip* norm adds with its bias input (H = skip + bias): the override
 *   replaces skip and the bias input is dropped.
 */
function overrideHook(
  graph: Graph,
  h: HookTensor,
  node: (opType: string, name: string, input: string[], output: string[], attribute?: onnxProto.onnx.IAttributeProto[]) => void,
  castTo: (to: number) => onnxProto.onnx.IAttributeProto[],
): void {
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const type = elemTypeOf(graph, h.tensor) ?? FLOAT;
  let source = OVERRIDE_INPUT;
  if (type !== FLOAT) node('Cast', 'override', [OVERRIDE_INPUT], [(source = '/saekit/override/cast')], castTo(type));
  (graph.input ??= []).push(valueInfo(OVERRIDE_INPUT, FLOAT));
  const all = nodes(graph);
  for (const [i, n] of all.entries()) {
    if (!SKIP_NORMS.has(n.opType ?? '')) continue;
    if (outs(n)[3] === h.tensor) {
      // Skip*Norm(input, skip, gamma[, beta]) -> norm(override, gamma[, beta]), same attributes.
      const plain = n.opType === 'SkipLayerNormalization' ? 'LayerNormalization' : 'SimplifiedLayerNormalization';
      const params = n.opType === 'SkipLayerNormalization' ? ins(n).slice(2, 4) : ins(n).slice(2, 3);
      const eps = (n.attribute ?? []).filter((a) => a.name === 'epsilon');
      all[i] = onnx.NodeProto.create({
        name: `/saekit/unfused/${n.name}`,
        opType: plain,
        domain: '', // both plain norms are in the default domain (SimplifiedLayerNormalization as onnxruntime registers it)
        input: [source, ...params.filter((p) => p !== '')],
        output: [outs(n)[0]!],
        attribute: [...eps, onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: -1 })],
      });
    } else if (h.bias && ins(n)[skipBiasIndex(n)] === h.bias && (ins(n)[0] === h.tensor || ins(n)[1] === h.tensor)) {
      n.input = ins(n).map((t, k) => (t === h.tensor ? source : k === skipBiasIndex(n) ? '' : t));
      while (n.input.length > 0 && n.input[n.input.length - 1] === '') n.input.pop();
      return;
    }
  }
  graph.node = all;
  for (const n of all) {
    if ((n.name as string).startsWith('/saekit/')) continue;
    n.input = ins(n).map((t) => (t === h.tensor ? source : t));
  }
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
