// The generated tiny GPT-2 (src/model/tinyGpt2.ts) is what every model-path test stands on in
// place of real GPT-2 weights, so it is checked twice here: its graph against the naming
// contract the hook finder relies on, and its numbers, loaded and run by transformers.js as a
// real export would be, against an independent float64 forward pass.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, env, Tensor } from '@huggingface/transformers';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gpt2HfConfig, gpt2OnnxBytes, makeGpt2Weights, writeTinyGpt2, type Gpt2Weights, type TinyGpt2Options } from '../src/model/tinyGpt2.js';
import { gpt2ForwardF64, type Gpt2RefOutput } from './helpers/gpt2Reference.js';

const { onnx } = onnxProto;

// ---------------------------------------------------------------------------------------------
// Graph contract

type Node = InstanceType<typeof onnx.NodeProto>;
type ValueInfo = InstanceType<typeof onnx.ValueInfoProto>;

/** The decoded graph with protobufjs' optional fields narrowed to what decode() fills in. */
interface Graph {
  node: Node[];
  input: ValueInfo[];
  output: ValueInfo[];
  initializer: Set<string>;
}

function decodeGraph(bytes: Uint8Array): { model: InstanceType<typeof onnx.ModelProto>; graph: Graph } {
  const model = onnx.ModelProto.decode(bytes);
  const g = model.graph as InstanceType<typeof onnx.GraphProto>;
  return {
    model,
    graph: {
      node: g.node as Node[],
      input: g.input as ValueInfo[],
      output: g.output as ValueInfo[],
      initializer: new Set(g.initializer.map((t) => t.name as string)),
    },
  };
}

/** Non-constant tensors produced outside SCOPE (or graph inputs) and read inside it. */
function flowInto(g: Graph, scope: string): string[] {
  const producer = new Map<string, string>();
  for (const n of g.node) for (const o of n.output) producer.set(o, n.name);
  const constants = new Set(g.node.filter((n) => n.opType === 'Constant').flatMap((n) => n.output));
  const found = new Set<string>();
  for (const n of g.node) {
    if (!n.name.startsWith(scope)) continue;
    for (const i of n.input) {
      if (i === '' || g.initializer.has(i) || constants.has(i)) continue;
      if ((producer.get(i) ?? '').startsWith(scope)) continue;
      found.add(i);
    }
  }
  return [...found];
}

/** Tensors produced inside SCOPE and read by nodes outside it (graph outputs aside). */
function flowOutOf(g: Graph, scope: string): string[] {
  const inside = new Set(g.node.filter((n) => n.name.startsWith(scope)).flatMap((n) => n.output));
  const graphOutputs = new Set(g.output.map((o) => o.name));
  const found = new Set<string>();
  for (const n of g.node) {
    if (n.name.startsWith(scope)) continue;
    for (const i of n.input) if (inside.has(i) && !graphOutputs.has(i)) found.add(i);
  }
  return [...found];
}

function dimsOf(v: ValueInfo | undefined): Array<number | string> {
  return (v?.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)));
}

describe('tiny GPT-2 graph: torch exporter naming', () => {
  const variants: TinyGpt2Options[] = [
    { withPast: true, layerNormOp: 'LayerNormalization' },
    { withPast: false, layerNormOp: 'LayerNormalization' },
    { withPast: true, layerNormOp: 'primitives' },
    { withPast: false, layerNormOp: 'primitives' },
  ];
  for (const v of variants) {
    it(`names every node by module scope (withPast ${v.withPast}, ${v.layerNormOp})`, () => {
      const L = 3;
      const w = makeGpt2Weights({ layers: L, vocabSize: 100, ...v });
      const { model, graph } = decodeGraph(gpt2OnnxBytes(w, v));
      expect(Number(model.irVersion)).toBe(8);
      expect(model.producerName).toBe('saekit-tiny-gpt2');
      expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', 17]]);

      const names = graph.node.map((n) => n.name);
      expect(names.every((n) => n.length > 0)).toBe(true);
      expect(new Set(names).size).toBe(names.length);
      const graphOutputs = new Set(graph.output.map((o) => o.name));
      for (const n of graph.node) {
        n.output.forEach((o, i) => {
          if (!graphOutputs.has(o)) expect(o).toBe(`${n.name}_output_${i}`);
        });
      }
      const has = (name: string) => expect(names, name).toContain(name);
      for (const n of ['/transformer/wte/Gather', '/transformer/wpe/Gather', '/transformer/Add', '/lm_head/MatMul']) has(n);
      const ln = v.layerNormOp === 'primitives' ? ['ReduceMean', 'Sub', 'Pow', 'ReduceMean_1', 'Add', 'Sqrt', 'Div', 'Mul', 'Add_1'] : ['LayerNormalization'];
      for (const op of ln) has(`/transformer/ln_f/${op}`);
      expect(names.some((n) => n.endsWith('/LayerNormalization'))).toBe(v.layerNormOp !== 'primitives');

      for (let l = 0; l < L; l++) {
        const blk = `/transformer/h.${l}/`;
        for (const op of ln) {
          has(`${blk}ln_1/${op}`);
          has(`${blk}ln_2/${op}`);
        }
        for (const n of ['attn/c_attn/MatMul', 'attn/c_attn/Add', 'attn/Softmax', 'attn/c_proj/MatMul', 'attn/c_proj/Add', 'Add']) has(blk + n);
        for (const n of ['mlp/c_fc/MatMul', 'mlp/c_fc/Add', 'mlp/act/Mul', 'mlp/act/Pow', 'mlp/act/Tanh', 'mlp/c_proj/MatMul', 'mlp/c_proj/Add', 'Add_1']) has(blk + n);
        // The nodes directly under the block scope are the two residual adds, nothing else.
        expect(names.filter((n) => n.startsWith(blk) && !n.slice(blk.length).includes('/')).sort()).toEqual([`${blk}Add`, `${blk}Add_1`]);

        // What the hook finder reads: one stream into each LayerNorm, one tensor out of each sublayer.
        const pre = l === 0 ? '/transformer/Add_output_0' : `/transformer/h.${l - 1}/Add_1_output_0`;
        expect(flowInto(graph, `${blk}ln_1/`)).toEqual([pre]);
        expect(flowInto(graph, `${blk}ln_2/`)).toEqual([`${blk}Add_output_0`]);
        expect(flowOutOf(graph, `${blk}attn/`)).toEqual([`${blk}attn/c_proj/Add_output_0`]);
        expect(flowOutOf(graph, `${blk}mlp/`)).toEqual([`${blk}mlp/c_proj/Add_output_0`]);
        const first = graph.node.find((n) => n.name === `${blk}ln_1/${ln[0]}`);
        expect(first?.input[0]).toBe(pre);
      }
      expect(flowInto(graph, '/transformer/ln_f/')).toEqual([`/transformer/h.${L - 1}/Add_1_output_0`]);

      for (const n of ['transformer.wte.weight', 'transformer.wpe.weight', 'transformer.ln_f.weight', 'transformer.h.0.ln_1.weight', 'transformer.h.2.attn.c_attn.weight', 'transformer.h.1.mlp.c_proj.bias']) {
        expect(graph.initializer.has(n), n).toBe(true);
      }

      // transformers.js builds the first call's empty past from this metadata.
      const ins = new Map(graph.input.map((i) => [i.name, i]));
      expect(dimsOf(ins.get('input_ids'))).toEqual(['batch_size', 'sequence_length']);
      expect(dimsOf(ins.get('position_ids'))).toEqual(['batch_size', 'sequence_length']);
      expect(dimsOf(ins.get('attention_mask'))[0]).toBe('batch_size');
      expect(typeof dimsOf(ins.get('attention_mask'))[1]).toBe('string');
      const pastNames = graph.input.map((i) => i.name).filter((n) => n.startsWith('past_key_values.'));
      const presentNames = graph.output.map((o) => o.name).filter((n) => n.startsWith('present.'));
      if (v.withPast) {
        expect(pastNames).toHaveLength(2 * L);
        expect(presentNames).toHaveLength(2 * L);
        for (let l = 0; l < L; l++) {
          for (const kv of ['key', 'value']) {
            expect(dimsOf(ins.get(`past_key_values.${l}.${kv}`))).toEqual(['batch_size', 4, 'past_sequence_length', 16]);
          }
        }
      } else {
        expect(pastNames).toEqual([]);
        expect(presentNames).toEqual([]);
      }
      expect(graph.output[0]?.name).toBe('logits');
      expect(dimsOf(graph.output[0])).toEqual(['batch_size', 'sequence_length', 100]);
    });
  }

  it('is deterministic in the seed and rejects bad shapes', () => {
    const a = makeGpt2Weights({ vocabSize: 50, seed: 7 });
    expect(makeGpt2Weights({ vocabSize: 50, seed: 7 }).layers[1]!.fcW).toEqual(a.layers[1]!.fcW);
    expect(makeGpt2Weights({ vocabSize: 50, seed: 8 }).wte).not.toEqual(a.wte);
    expect(() => makeGpt2Weights({ dModel: 30, heads: 4 })).toThrow(/multiple of heads/);
    expect(() => makeGpt2Weights({ layers: 0 })).toThrow(/layers/);
    const cfg = gpt2HfConfig(makeGpt2Weights({ vocabSize: 100 }));
    expect(cfg).toMatchObject({ model_type: 'gpt2', n_layer: 2, n_head: 4, n_embd: 64, vocab_size: 100, eos_token_id: 99, activation_function: 'gelu_new' });
  });
});

// ---------------------------------------------------------------------------------------------
// Numbers, through transformers.js

type CausalLM = Awaited<ReturnType<typeof AutoModelForCausalLM.from_pretrained>>;
type Outputs = Record<string, Tensor>;

let root = '';
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'saekit-tiny-gpt2-'));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root;
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

async function load(name: string, opts: TinyGpt2Options): Promise<{ weights: Gpt2Weights; model: CausalLM }> {
  const weights = await writeTinyGpt2(join(root, name), opts);
  const model = await AutoModelForCausalLM.from_pretrained(name, { dtype: 'fp32', device: 'cpu' });
  return { weights, model };
}

function int64(rows: number[][]): Tensor {
  return new Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0]!.length]);
}

/** Deterministic token ids in [0, vocab). */
function tokens(B: number, T: number, vocab: number, salt = 0): number[][] {
  return Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 7919 + t * 104729 + salt * 15485863 + 13) % vocab));
}

const ATOL = 1e-4;
const RTOL = 1e-4;

/**
 * Compares [B, T, width] float32 rows with the float64 reference at the positions where
 * KEEP(b, t) holds; reports the worst element so a failure says where.
 */
function expectRowsClose(actual: Tensor, expected: Float64Array, B: number, T: number, width: number, keep: (b: number, t: number) => boolean, what: string): void {
  expect(actual.dims, what).toEqual([B, T, width]);
  const a = actual.data as Float32Array;
  let worst = { excess: 0, at: '' };
  let compared = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      if (!keep(b, t)) continue;
      for (let i = 0; i < width; i++) {
        const k = (b * T + t) * width + i;
        const err = Math.abs(a[k]! - expected[k]!);
        const excess = err - (ATOL + RTOL * Math.abs(expected[k]!));
        compared++;
        if (!(excess <= worst.excess)) worst = { excess, at: `[${b},${t},${i}] got ${a[k]} want ${expected[k]}` };
      }
    }
  }
  expect(compared, what).toBeGreaterThan(0);
  expect(worst.at, `${what}: worst element off tolerance`).toBe('');
}

/** present.{l}.key/value [B, H, S, hd] against the reference, at unmasked positions. */
function expectPresentsClose(out: Outputs, ref: Gpt2RefOutput, w: Gpt2Weights, mask: number[][]): void {
  const { layers, heads: H, dModel } = w.config;
  const B = mask.length;
  const S = mask[0]!.length;
  for (let l = 0; l < layers; l++) {
    for (const [kv, want] of [['key', ref.presentKey[l]!], ['value', ref.presentValue[l]!]] as const) {
      const t = out[`present.${l}.${kv}`]!;
      expect(t.dims).toEqual([B, H, S, dModel / H]);
      // Viewed as [B*H, S, hd]: position s of batch row b is kept where mask[b][s] is 1.
      expectRowsClose(reshaped(t, [B * H, S, dModel / H]), want, B * H, S, dModel / H, (bh, s) => mask[Math.floor(bh / H)]![s] === 1, `present.${l}.${kv}`);
    }
  }
}

function reshaped(t: Tensor, dims: number[]): Tensor {
  return new Tensor('float32', t.data as Float32Array, dims);
}

function pastFrom(out: Outputs, layers: number): Record<string, Tensor> {
  const past: Record<string, Tensor> = {};
  for (let l = 0; l < layers; l++) {
    for (const kv of ['key', 'value']) past[`past_key_values.${l}.${kv}`] = out[`present.${l}.${kv}`]!;
  }
  return past;
}

/** Greedy continuation by the reference, recomputing the whole sequence each step. */
function referenceGreedy(w: Gpt2Weights, ids: number[][], mask: number[][], steps: number): number[][] {
  const V = w.config.vocabSize;
  const seqs = ids.map((r) => [...r]);
  const m = mask.map((r) => [...r]);
  for (let s = 0; s < steps; s++) {
    const T = seqs[0]!.length;
    const { logits } = gpt2ForwardF64(w, seqs, { attentionMask: m });
    seqs.forEach((seq, b) => {
      const row = logits.subarray((b * T + T - 1) * V, (b * T + T) * V);
      const order = [...row.keys()].sort((x, y) => row[y]! - row[x]!);
      // A near-tie could flip between float32 and float64: then the test data is at fault.
      expect(row[order[0]!]! - row[order[1]!]!, 'greedy margin').toBeGreaterThan(1e-3);
      expect(order[0], 'reference reached eos: generate() would stop early').not.toBe(V - 1);
      seq.push(order[0]!);
      m[b]!.push(1);
    });
  }
  return seqs;
}

describe('tiny GPT-2 through transformers.js vs float64 reference', () => {
  const V = 1000;

  describe('withPast, LayerNormalization', () => {
    let weights: Gpt2Weights;
    let model: CausalLM;
    beforeAll(async () => ({ weights, model } = await load('past-ln', { vocabSize: V, withPast: true })));
    afterAll(async () => model?.dispose());

    it('writes the model folder', async () => {
      const cfg = JSON.parse(await readFile(join(root, 'past-ln', 'config.json'), 'utf8'));
      expect(cfg).toMatchObject({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: V, n_layer: 2 });
      const gen = JSON.parse(await readFile(join(root, 'past-ln', 'generation_config.json'), 'utf8'));
      expect(gen.eos_token_id).toBe(V - 1);
      const bytes = await readFile(join(root, 'past-ln', 'onnx', 'model.onnx'));
      expect(Buffer.from(gpt2OnnxBytes(weights, { withPast: true })).equals(bytes)).toBe(true);
    });

    it('batch 1, odd length: logits and presents', async () => {
      const ids = tokens(1, 7, V);
      const mask = [Array(7).fill(1)];
      const out = (await model({ input_ids: int64(ids), attention_mask: int64(mask) })) as Outputs;
      const ref = gpt2ForwardF64(weights, ids);
      expectRowsClose(out.logits!, ref.logits, 1, 7, V, () => true, 'logits');
      expectPresentsClose(out, ref, weights, mask);
    });

    it('batch 2 with right padding: unpadded positions match', async () => {
      const ids = tokens(2, 7, V, 1);
      const mask = [Array(7).fill(1), [1, 1, 1, 1, 0, 0, 0]];
      const out = (await model({ input_ids: int64(ids), attention_mask: int64(mask) })) as Outputs;
      const ref = gpt2ForwardF64(weights, ids, { attentionMask: mask });
      expectRowsClose(out.logits!, ref.logits, 2, 7, V, (b, t) => mask[b]![t] === 1, 'logits');
      expectPresentsClose(out, ref, weights, mask);
      // The padded row's real tokens see exactly what they would alone.
      const alone = gpt2ForwardF64(weights, [ids[1]!.slice(0, 4)]);
      expectRowsClose(out.logits!, spread(alone.logits, 1, 2, 4, 7, V), 2, 7, V, (b, t) => b === 1 && t < 4, 'padded row vs alone');
    });

    it('batch 2 with left padding: fully masked rows stay finite', async () => {
      const ids = tokens(2, 6, V, 2);
      const mask = [[0, 0, 1, 1, 1, 1], Array(6).fill(1)];
      const out = (await model({ input_ids: int64(ids), attention_mask: int64(mask) })) as Outputs;
      expect((out.logits!.data as Float32Array).every(Number.isFinite)).toBe(true);
      const ref = gpt2ForwardF64(weights, ids, { attentionMask: mask });
      expectRowsClose(out.logits!, ref.logits, 2, 6, V, (b, t) => mask[b]![t] === 1, 'logits');
      expectPresentsClose(out, ref, weights, mask);
    });

    it('a second call with past_key_values continues the first', async () => {
      const ids = tokens(2, 5, V, 3);
      const more = tokens(2, 3, V, 4);
      const mask1 = [Array(5).fill(1), [1, 1, 1, 0, 0]];
      const mask2 = mask1.map((r) => [...r, 1, 1, 1]);
      const first = (await model({ input_ids: int64(ids), attention_mask: int64(mask1) })) as Outputs;
      const second = (await model({ input_ids: int64(more), attention_mask: int64(mask2), past_key_values: pastFrom(first, 2) })) as Outputs;

      const ref1 = gpt2ForwardF64(weights, ids, { attentionMask: mask1 });
      const ref2 = gpt2ForwardF64(weights, more, { attentionMask: mask2, pastKey: ref1.presentKey, pastValue: ref1.presentValue, pastLength: 5 });
      expectRowsClose(second.logits!, ref2.logits, 2, 3, V, () => true, 'logits with past');
      expectPresentsClose(second, ref2, weights, mask2);

      // The reference's own past path agrees with one pass over the whole sequence.
      const whole = gpt2ForwardF64(weights, [[...ids[0]!, ...more[0]!]]);
      for (let i = 0; i < 3 * V; i++) expect(ref2.logits[i]).toBeCloseTo(whole.logits[5 * V + i]!, 10);
    });

    it('generate() gives the reference greedy continuation', async () => {
      const ids = tokens(1, 5, V, 5);
      const got = (await model.generate({ input_ids: int64(ids), max_new_tokens: 4, do_sample: false })) as Tensor;
      expect(got.tolist().map((r: bigint[]) => r.map(Number))).toEqual(referenceGreedy(weights, ids, [Array(5).fill(1)], 4));
    });

    it('generate() with a left-padded batch', async () => {
      const ids = tokens(2, 6, V, 6);
      const mask = [[0, 0, 0, 1, 1, 1], Array(6).fill(1)];
      const got = (await model.generate({ input_ids: int64(ids), attention_mask: int64(mask), max_new_tokens: 4, do_sample: false })) as Tensor;
      expect(got.tolist().map((r: bigint[]) => r.map(Number))).toEqual(referenceGreedy(weights, ids, mask, 4));
    });
  });

  describe('without past', () => {
    let weights: Gpt2Weights;
    let model: CausalLM;
    beforeAll(async () => ({ weights, model } = await load('nopast-ln', { vocabSize: V, withPast: false, seed: 2 })));
    afterAll(async () => model?.dispose());

    it('logits only, batch 1 and padded batch 2', async () => {
      const one = tokens(1, 7, V, 7);
      const out1 = (await model({ input_ids: int64(one), attention_mask: int64([Array(7).fill(1)]) })) as Outputs;
      expect(Object.keys(out1)).toEqual(['logits']);
      expectRowsClose(out1.logits!, gpt2ForwardF64(weights, one).logits, 1, 7, V, () => true, 'logits');

      const two = tokens(2, 4, V, 8);
      const mask = [Array(4).fill(1), [1, 1, 0, 0]];
      const out2 = (await model({ input_ids: int64(two), attention_mask: int64(mask) })) as Outputs;
      expectRowsClose(out2.logits!, gpt2ForwardF64(weights, two, { attentionMask: mask }).logits, 2, 4, V, (b, t) => mask[b]![t] === 1, 'logits');
    });
  });

  describe('LayerNorm as primitives', () => {
    let weights: Gpt2Weights;
    let model: CausalLM;
    beforeAll(async () => ({ weights, model } = await load('past-prim', { vocabSize: V, layerNormOp: 'primitives', layers: 3, seed: 3 })));
    afterAll(async () => model?.dispose());

    it('padded batch, then a call with past', async () => {
      const ids = tokens(2, 7, V, 9);
      const mask = [Array(7).fill(1), [1, 1, 1, 1, 1, 0, 0]];
      const first = (await model({ input_ids: int64(ids), attention_mask: int64(mask) })) as Outputs;
      const ref1 = gpt2ForwardF64(weights, ids, { attentionMask: mask });
      expectRowsClose(first.logits!, ref1.logits, 2, 7, V, (b, t) => mask[b]![t] === 1, 'logits');
      expectPresentsClose(first, ref1, weights, mask);

      const more = tokens(2, 1, V, 10);
      const mask2 = mask.map((r) => [...r, 1]);
      const second = (await model({ input_ids: int64(more), attention_mask: int64(mask2), past_key_values: pastFrom(first, 3) })) as Outputs;
      const ref2 = gpt2ForwardF64(weights, more, { attentionMask: mask2, pastKey: ref1.presentKey, pastValue: ref1.presentValue, pastLength: 7 });
      expectRowsClose(second.logits!, ref2.logits, 2, 1, V, () => true, 'logits with past');
      expectPresentsClose(second, ref2, weights, mask2);
    });
  });

  describe("GPT-2's full vocabulary", () => {
    let weights: Gpt2Weights;
    let model: CausalLM;
    beforeAll(async () => ({ weights, model } = await load('full-vocab', {})));
    afterAll(async () => model?.dispose());

    it('batch 1 logits over 50257 tokens', async () => {
      expect(weights.config.vocabSize).toBe(50257);
      const ids = [[15496, 995, 50256, 0, 31337]]; // "Hello world", <|endoftext|>, edge ids
      const out = (await model({ input_ids: int64(ids), attention_mask: int64([Array(5).fill(1)]) })) as Outputs;
      expectRowsClose(out.logits!, gpt2ForwardF64(weights, ids).logits, 1, 5, 50257, () => true, 'logits');
    });
  });
});

/** Places a [1, t, width] result as row B_AT of a zeroed [B, T, width] array. */
function spread(src: Float64Array, bAt: number, B: number, t: number, T: number, width: number): Float64Array {
  const out = new Float64Array(B * T * width);
  out.set(src.subarray(0, t * width), bAt * T * width);
  return out;
}
