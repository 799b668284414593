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

/**
 * The hook kinds saekit can expose, in TransformerLens / SAELens vocabulary: blocks.L.hook_<kind>
 * for the plain ones, blocks.L.<kind> for those with a dot (a submodule's hook). The MLP side
 * (transcoders): mlp_in (TransformerLens's hook_mlp_in: the second norm's input, = resid_mid),
 * ln2.hook_normalized (the normalized stream before the norm's gain and bias), mlp.hook_in (the
 * MLP's input: the norm's output) and mlp.hook_out (the MLP module's output: before Gemma's
 * post-feedforward norm, else = mlp_out). See residualStream.ts for the evidence behind each.
 */
export const HOOK_KINDS = ['resid_pre', 'resid_mid', 'resid_post', 'attn_out', 'mlp_out', 'mlp_in', 'ln2.hook_normalized', 'mlp.hook_in', 'mlp.hook_out'] as const;
export type HookKind = (typeof HOOK_KINDS)[number];

/** The input that replaces a hooked tensor in a spliced graph. */
export const OVERRIDE_INPUT = 'saekit.override';

/** A parsed hook name: `blocks.6.hook_resid_pre` -> { layer 6, kind resid_pre }. */
export interface HookPoint {
  name: string;
  layer: number;
  kind: HookKind;
}

/** blocks.L.<what kind reads as>: hook_resid_pre, ln2.hook_normalized. */
export const hookSuffix = (kind: HookKind): string => (kind.includes('.') ? kind : `hook_${kind}`);

export function parseHookName(name: string): HookPoint {
  const m = /^blocks\.(\d+)\.(?:hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out|mlp_in)|(ln2\.hook_normalized|mlp\.hook_in|mlp\.hook_out))$/.exec(name);
  if (!m) {
    throw new ValidationError(
      `Unknown hook ${JSON.stringify(name)}: expected blocks.<layer>.<hook> with hook one of ${HOOK_KINDS.map(hookSuffix).join(', ')} (e.g. blocks.6.hook_resid_pre)`,
    );
  }
  return { name, layer: Number(m[1]), kind: (m[2] ?? m[3]) as HookKind };
}

/**
 * Where a hook sits in its block, upstream first: a splice that replaces one hook leaves every
 * hook before it unchanged. Parallel blocks (no resid_mid) read the MLP side off resid_pre.
 */
export function hookOrder(kind: HookKind): number {
  return { resid_pre: 0, attn_out: 1, resid_mid: 2, mlp_in: 2, 'ln2.hook_normalized': 3, 'mlp.hook_in': 3, 'mlp.hook_out': 4, mlp_out: 5, resid_post: 6 }[kind];
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
): { family: string; layers: number; parallel: boolean; hooks: Map<string, HookTensor>; unresolved: Map<string, string> } {
  inlineMergedDecoder(model, file);
  const graph = model.graph as Graph;
  nameSkipSums(graph);
  const stream = traceResidualStream(graph, file, opts.layers);
  return { family: opts.family ?? 'unknown', layers: stream.layers, parallel: stream.parallel, hooks: stream.hooks, unresolved: stream.unresolved };
}

/**
 * The error for a hook the table lacks: past the last layer, or not located (with the hooks
 * the layer has, and why the finder could not place it when it knows). WHERE names the file
 * or model.
 */
export function missingHook(name: string, where: string, index: { layers: number; hooks: Iterable<string>; unresolved?: Record<string, string> | Map<string, string> }): ValidationError {
  const hp = parseHookName(name);
  if (hp.layer >= index.layers) return new ValidationError(`Hook ${name} does not exist: ${where} has ${index.layers} layers (0-${index.layers - 1})`);
  const why = index.unresolved instanceof Map ? index.unresolved.get(name) : index.unresolved?.[name];
  const available = [...index.hooks].filter((h) => h.startsWith(`blocks.${hp.layer}.`));
  const parallel = hp.kind === 'resid_mid' ? '; parallel attention + MLP blocks have no resid_mid' : '';
  return new ValidationError(`Hook ${name} cannot be located in ${where}${why ? ` (${why})` : parallel} (available: ${available.join(', ')})`);
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
  const { hooks, layers, unresolved } = findHooks(model, file, opts); // inlines a merged decoder first
  const graph = model.graph as Graph;
  const tensorOf = (name: string): HookTensor => {
    parseHookName(name);
    const t = hooks.get(name);
    if (t === undefined) throw missingHook(name, file, { layers, hooks: hooks.keys(), unresolved });
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
    if (h.normalize) t = normalizeBeside(model, name, t, h.normalize, node, castTo(FLOAT));
    node('Cast', name, [t], [name], castTo(FLOAT));
    outputs.push(valueInfo(name, FLOAT));
  }

  if (edit.override !== undefined) {
    const h = tensorOf(edit.override);
    if (h.normalize) overrideNormalized(graph, h.normalize, node, castTo);
    else overrideHook(graph, h, node, castTo);
  }
  if (outputs.length === 0) throw new ValidationError('A graph edit must keep the logits or expose at least one hook');
  graph.node = [...nodes(graph), ...added];
  graph.output = outputs;
  prune(graph);
  return model;
}

/**
 * Appends float32 nodes computing the normalization of X without gain or bias (see
 * HookTensor.normalize): (x - mean) / sqrt(mean((x - mean)^2) + eps), or x / sqrt(mean(x^2) +
 * eps), over the last axis, as torch's layer_norm / HF's RMSNorms compute it before their
 * weight. ReduceMean takes its axes as an attribute before opset 18 and as an input from 18 on.
 * Returns the result tensor's name.
 */
function normalizeBeside(
  model: OnnxModel,
  name: string,
  x: string,
  o: { center: boolean; epsilon: number },
  node: (opType: string, name: string, input: string[], output: string[], attribute?: onnxProto.onnx.IAttributeProto[]) => void,
  toFloat: onnxProto.onnx.IAttributeProto[],
): string {
  const graph = model.graph as Graph;
  const opset = Number((model.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 17);
  const p = `/saekit/${name}/normalized`;
  const init = (n: string, dataType: number, dims: number[], data: { floatData?: number[]; int64Data?: number[] }) => {
    if (!(graph.initializer ?? []).some((t) => t.name === n)) (graph.initializer ??= []).push(onnx.TensorProto.create({ name: n, dataType, dims, ...data }));
    return n;
  };
  const INT = onnx.AttributeProto.AttributeType.INTS;
  const mean = (input: string, output: string) =>
    opset >= 18
      ? node('ReduceMean', `${name}/${output}`, [input, init('/saekit/last_axis', onnx.TensorProto.DataType.INT64, [1], { int64Data: [-1] })], [`${p}/${output}`])
      : node('ReduceMean', `${name}/${output}`, [input], [`${p}/${output}`], [onnx.AttributeProto.create({ name: 'axes', type: INT, ints: [-1] })]);
  node('Cast', `${name}/float`, [x], [`${p}/x`], toFloat);
  let c = `${p}/x`;
  if (o.center) {
    mean(c, 'mean');
    node('Sub', `${name}/centered`, [c, `${p}/mean`], [(c = `${p}/centered`)]);
  }
  node('Mul', `${name}/square`, [c, c], [`${p}/square`]);
  mean(`${p}/square`, 'variance');
  const eps = init(`${p}/epsilon`, onnx.TensorProto.DataType.FLOAT, [], { floatData: [o.epsilon] });
  node('Add', `${name}/plus_eps`, [`${p}/variance`, eps], [`${p}/plus_eps`]);
  node('Sqrt', `${name}/scale`, [`${p}/plus_eps`], [`${p}/scale`]);
  node('Div', `${name}/divided`, [c, `${p}/scale`], [`${p}/out`]);
  return `${p}/out`;
}

/**
 * A replacement of a normalized tensor that a fused norm never materializes
 * (ln2.hook_normalized of LayerNormalization / Skip* / SimplifiedLayerNormalization): the
 * override v becomes the norm's output, v * gain (+ bias) with the op's own inputs, in the
 * graph's type, so the MLP reads what it would read had the norm produced v before its gain
 * (TransformerLens's replacement at hook_normalized, whose folded W_in holds the gain).
 */
function overrideNormalized(
  graph: Graph,
  n: NonNullable<HookTensor['normalize']>,
  node: (opType: string, name: string, input: string[], output: string[], attribute?: onnxProto.onnx.IAttributeProto[]) => void,
  castTo: (to: number) => onnxProto.onnx.IAttributeProto[],
): void {
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const type = elemTypeOf(graph, n.output) ?? FLOAT;
  let source = OVERRIDE_INPUT;
  if (type !== FLOAT) node('Cast', 'override', [OVERRIDE_INPUT], [(source = '/saekit/override/cast')], castTo(type));
  (graph.input ??= []).push(valueInfo(OVERRIDE_INPUT, FLOAT));
  node('Mul', 'override/gain', [source, n.gain], [(source = '/saekit/override/gained')]);
  if (n.bias) node('Add', 'override/bias', [source, n.bias], [(source = '/saekit/override/biased')]);
  for (const x of nodes(graph)) {
    if ((x.name as string).startsWith('/saekit/')) continue;
    x.input = ins(x).map((t) => (t === n.output ? source : t));
  }
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
