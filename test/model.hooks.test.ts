// The model side against an independent float64 GPT-2 forward pass (test/helpers/gpt2Reference):
// every hook point read through the edited ONNX graph, pruned variants, the on-disk cache of
// edited graphs, splicing (identity SAE -> CE recovered 1, KL 0), interventions, greedy
// generation, activation dumps, and the hub download path against a loopback server.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import onnxProto from 'onnx-proto';
import { FormatError, ValidationError } from '../src/errors.js';
import { SafetensorsReader } from '../src/formats/index.js';
import { dumpActivations } from '../src/model/activations.js';
import { padBatch, readCorpus, tokenWindows } from '../src/model/corpus.js';
import { gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { resolveModelDir } from '../src/model/modelSource.js';
import { decodeOnnx, editGraph, findHooks, hookSuffix } from '../src/model/onnxGraph.js';
import { editCodes, evaluateSpliced, generate, intervene } from '../src/model/splice.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { writeTinyGpt2, type Gpt2Weights } from '../src/model/tinyGpt2.js';
import { createSae } from '../src/sae.js';
import { openRowSource } from '../src/train/data.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { randomWeights, rng, tempDirs } from './helpers/formatsFixtures.js';
import { gpt2ForwardF64 } from './helpers/gpt2Reference.js';
import { freshSeed } from './helpers/testData.js';
import { identitySae } from './helpers/identitySae.js';
import { startHubServer, type HubServer } from './helpers/hubServer.js';

const { onnx } = onnxProto;
const seed = freshSeed('model.hooks.test');
const dirs = tempDirs();
let tokenizerFiles: Record<string, unknown>;
let corpus: string;

beforeAll(async () => {
  tokenizerFiles = { ...(await gpt2TokenizerFiles()) };
  corpus = join(await dirs.make(), 'corpus.txt');
  await writeFile(corpus, syntheticText(300, seed));
});
afterAll(() => dirs.cleanup());

async function makeModel(opts: Parameters<typeof writeTinyGpt2>[1] = {}): Promise<{ dir: string; w: Gpt2Weights }> {
  const dir = join(await dirs.make(), 'tiny-gpt2');
  const w = await writeTinyGpt2(dir, { seed, tokenizerFiles, ...opts });
  return { dir, w };
}

// Every kind, the MLP side (transcoders) included: hook_mlp_in is ln_2's input (= resid_mid),
// ln2.hook_normalized ln_2 before its gain and bias, mlp.hook_in / mlp.hook_out the MLP module's
// input and output (GPT-2 has no post-MLP norm: mlp.hook_out = hook_mlp_out).
const KINDS = ['resid_pre', 'resid_mid', 'resid_post', 'attn_out', 'mlp_out', 'mlp_in', 'ln2.hook_normalized', 'mlp.hook_in', 'mlp.hook_out'] as const;
const refKey = {
  resid_pre: 'residPre',
  resid_mid: 'residMid',
  resid_post: 'residPost',
  attn_out: 'attnOut',
  mlp_out: 'mlpOut',
  mlp_in: 'residMid',
  'ln2.hook_normalized': 'ln2Normalized',
  'mlp.hook_in': 'mlpIn',
  'mlp.hook_out': 'mlpOut',
} as const;
const hookName = (l: number, k: (typeof KINDS)[number]) => `blocks.${l}.${hookSuffix(k)}`;

/** |a - b| <= tol * (1 + |b|) on the positions whose mask is 1. */
function expectClose(got: Float32Array, want: Float64Array, mask: BigInt64Array, width: number, what: string, tol = 2e-4): void {
  expect(got.length, what).toBe(want.length);
  let worst = 0;
  let at = -1;
  for (let p = 0; p < mask.length; p++) {
    if (mask[p] === 0n) continue;
    for (let j = 0; j < width; j++) {
      const i = p * width + j;
      const e = Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!));
      if (!(e <= worst)) {
        worst = e;
        at = i;
      }
    }
  }
  expect(worst, `${what}: worst relative error at flat index ${at}: got ${got[at]} want ${want[at]}`).toBeLessThanOrEqual(tol);
}

function randomIds(r: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

describe('hook points', () => {
  for (const variant of [
    { layerNormOp: 'LayerNormalization', withPast: true },
    { layerNormOp: 'primitives', withPast: false },
  ] as const) {
    it(`every hook and the logits equal the float64 forward (LayerNorm as ${variant.layerNormOp}, past ${variant.withPast})`, async () => {
      const { dir, w } = await makeModel({ layers: 3, dModel: 48, heads: 4, vocabSize: 997, ...variant });
      const m = await LanguageModel.load(dir);
      try {
        const hooks = [0, 1, 2].flatMap((l) => KINDS.map((k) => hookName(l, k)));
        expect([...m.hookNames].sort()).toEqual([...hooks].sort());
        expect(m.layers).toBe(3);
        const r = rng(seed ^ 0x51);
        // Two rows of different lengths (right padding), odd lengths.
        const seqs = [randomIds(r, 11, 997), randomIds(r, 6, 997)];
        const batch = padBatch(seqs, 0);
        const ids = [0, 1].map((b) => Array.from(batch.ids.subarray(b * batch.length, (b + 1) * batch.length), Number));
        const attentionMask = [0, 1].map((b) => Array.from(batch.mask.subarray(b * batch.length, (b + 1) * batch.length), Number));
        const ref = gpt2ForwardF64(w, ids, { attentionMask });
        const got = await m.forward(batch, { hooks, logits: true });
        for (let l = 0; l < 3; l++) {
          for (const k of KINDS) expectClose(got.hooks.get(hookName(l, k))!, ref[refKey[k]][l]!, batch.mask, 48, hookName(l, k));
        }
        expectClose(got.logits!, ref.logits, batch.mask, 997, 'logits');
        // A single hook, no logits: the pruned graph gives the same values.
        const one = await m.forward(batch, { hooks: ['blocks.1.hook_mlp_out'] });
        expect(one.logits).toBeUndefined();
        expectClose(one.hooks.get('blocks.1.hook_mlp_out')!, ref.mlpOut[1]!, batch.mask, 48, 'pruned blocks.1.hook_mlp_out');
        // One row, one token.
        const single = padBatch([[seqs[0]![0]!]], 0);
        const ref1 = gpt2ForwardF64(w, [[seqs[0]![0]!]]);
        expectClose((await m.forward(single, { hooks: ['blocks.2.hook_resid_post'] })).hooks.get('blocks.2.hook_resid_post')!, ref1.residPost[2]!, single.mask, 48, '1 token');
      } finally {
        await m.dispose();
      }
    });
  }

  it('a merged decoder (one If on use_cache_branch, as optimum exports) is inlined: hooks still equal the float64 forward', async () => {
    const { dir, w } = await makeModel({ layers: 2, dModel: 32, heads: 4, vocabSize: 600, withPast: true });
    const file = join(dir, 'onnx', 'model.onnx');
    const plain = decodeOnnx(await readFile(file), file);
    const g = plain.graph!;
    // The with-past graph becomes the then-branch (outputs renamed inside it), the else-branch
    // a copy; initializers stay in the outer scope; a bool input picks the branch.
    const branch = (tag: string) =>
      onnx.GraphProto.create({
        name: `${tag}_branch`,
        node: [
          ...(g.node ?? []),
          ...(g.output ?? []).map((o, i) => onnx.NodeProto.create({ name: `/${tag}/out_${i}`, opType: 'Identity', input: [o.name as string], output: [`${tag}::${o.name}`] })),
        ],
        output: (g.output ?? []).map((o) => onnx.ValueInfoProto.create({ ...o, name: `${tag}::${o.name}` })),
      });
    const merged = onnx.ModelProto.create({
      ...plain,
      graph: onnx.GraphProto.create({
        name: 'merged',
        input: [
          ...(g.input ?? []),
          onnx.ValueInfoProto.create({ name: 'use_cache_branch', type: onnx.TypeProto.create({ tensorType: onnx.TypeProto.Tensor.create({ elemType: onnx.TensorProto.DataType.BOOL, shape: onnx.TensorShapeProto.create({ dim: [] }) }) }) }),
        ],
        output: g.output,
        initializer: g.initializer,
        node: [
          onnx.NodeProto.create({
            name: 'optimum::if',
            opType: 'If',
            input: ['use_cache_branch'],
            output: (g.output ?? []).map((o) => o.name as string),
            attribute: [
              onnx.AttributeProto.create({ name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('then') }),
              onnx.AttributeProto.create({ name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('else') }),
            ],
          }),
        ],
      }),
    });
    await writeFile(file, onnx.ModelProto.encode(merged).finish());
    const m = await LanguageModel.load(dir);
    try {
      expect(m.layers).toBe(2);
      const ids = [[3, 1, 4, 1, 5, 9, 2]];
      const batch = padBatch(ids, 0);
      const ref = gpt2ForwardF64(w, ids);
      expect([...m.hookNames].sort()).toEqual([0, 1].flatMap((l) => KINDS.map((k) => hookName(l, k))).sort());
      const got = await m.forward(batch, { hooks: ['blocks.1.hook_resid_pre', 'blocks.0.hook_mlp_out', 'blocks.1.hook_attn_out'], logits: true });
      expectClose(got.hooks.get('blocks.1.hook_attn_out')!, ref.attnOut[1]!, batch.mask, 32, 'merged: blocks.1.hook_attn_out');
      expectClose(got.hooks.get('blocks.1.hook_resid_pre')!, ref.residPre[1]!, batch.mask, 32, 'merged: blocks.1.hook_resid_pre');
      expectClose(got.hooks.get('blocks.0.hook_mlp_out')!, ref.mlpOut[0]!, batch.mask, 32, 'merged: blocks.0.hook_mlp_out');
      expectClose(got.logits!, ref.logits, batch.mask, 600, 'merged: logits');
    } finally {
      await m.dispose();
    }
  });

  it('edited graphs compute only what their outputs need', async () => {
    const { dir } = await makeModel({ layers: 3, dModel: 32, heads: 2, vocabSize: 500 });
    const file = join(dir, 'onnx', 'model.onnx');
    const bytes = await readFile(file);
    const names = (e: Parameters<typeof editGraph>[2]) => (editGraph(decodeOnnx(bytes, file), file, e).graph!.node ?? []).map((n) => n.name as string);
    const early = names({ expose: ['blocks.0.hook_resid_pre'], keepLogits: false });
    expect(early.some((n) => n.startsWith('/transformer/h.1/') || n.startsWith('/lm_head'))).toBe(false);
    const spliced = names({ expose: [], keepLogits: true, override: 'blocks.2.hook_resid_pre' });
    expect(spliced.some((n) => n.startsWith('/transformer/h.0/mlp/') || n.startsWith('/transformer/h.1/ln_2/'))).toBe(false);
    expect(spliced.some((n) => n.startsWith('/transformer/h.2/mlp/'))).toBe(true);
    expect(spliced.some((n) => n.startsWith('/lm_head'))).toBe(true);
  });

  it('rejects merged decoders, unknown naming and unknown hooks with clear errors', async () => {
    const graph = (nodes: { name: string; opType: string }[]) =>
      decodeOnnx(
        onnx.ModelProto.encode(
          onnx.ModelProto.create({
            irVersion: 8,
            graph: onnx.GraphProto.create({ name: 'g', node: nodes.map((n, i) => onnx.NodeProto.create({ ...n, input: [`t${i}`], output: [`t${i + 1}`] })) }),
          }),
        ).finish(),
        'm.onnx',
      );
    expectThrow(() => findHooks(graph([{ name: '/transformer/h.0/ln_1/LayerNormalization', opType: 'LayerNormalization' }, { name: 'optimum::if', opType: 'If' }]), 'merged.onnx'), FormatError, 'merged.onnx', 'merged decoder');
    expectThrow(() => findHooks(graph([{ name: 'MatMul_1', opType: 'MatMul' }]), 'anon.onnx'), FormatError, 'anon.onnx', 'no normalization');
    expectThrow(() => decodeOnnx(new Uint8Array([1, 2, 3, 4, 5]), 'junk.onnx'), FormatError, 'junk.onnx');
    const { dir } = await makeModel({ layers: 2, dModel: 32, heads: 2, vocabSize: 500 });
    const m = await LanguageModel.load(dir);
    try {
      const b = padBatch([[1, 2, 3]], 0);
      await expectReject(() => m.forward(b, { hooks: ['blocks.2.hook_resid_pre'] }), ValidationError, 'blocks.2.hook_resid_pre', '2 layers');
      await expectReject(() => m.forward(b, { hooks: ['blocks.0.resid'] }), ValidationError, 'blocks.0.resid', 'hook_resid_pre');
      await expectReject(() => m.forwardSpliced(b, 'blocks.1.hook_resid_pre', new Float32Array(5)), ValidationError, 'blocks.1.hook_resid_pre', '96');
    } finally {
      await m.dispose();
    }
    await expectReject(() => LanguageModel.load(join(dir, 'onnx')), FormatError, 'config.json');
  });

  it('caches edited graphs beside the original, keyed by its hash', async () => {
    const { dir } = await makeModel({ layers: 2, dModel: 32, heads: 2, vocabSize: 500 });
    const original = join(dir, 'onnx', 'model.onnx');
    const fullHash = createHash('sha256').update(await readFile(original)).digest('hex');
    const hash = fullHash.slice(0, 16);
    const b = padBatch([[5, 6, 7]], 0);
    const first = await LanguageModel.load(dir);
    const a1 = (await first.forward(b, { hooks: ['blocks.1.hook_resid_pre'] })).hooks.get('blocks.1.hook_resid_pre')!;
    await first.dispose();
    const edited = (await readdir(join(dir, 'onnx'))).filter((f) => f.endsWith('.onnx') && f !== 'model.onnx');
    expect(edited).toHaveLength(1);
    expect(edited[0]).toMatch(new RegExp(`^model\\.saekit-${hash}-[0-9a-f]{12}\\.onnx$`));
    // The original's digest is noted beside it (size, mtime, inode) so later loads skip hashing.
    const notePath = `${original}.saekit-sha256.json`;
    expect(JSON.parse(await readFile(notePath, 'utf8'))).toMatchObject({ sha256: fullHash, size: (await stat(original)).size });
    const mtime = (await stat(join(dir, 'onnx', edited[0]!))).mtimeMs;
    const second = await LanguageModel.load(dir);
    const a2 = (await second.forward(b, { hooks: ['blocks.1.hook_resid_pre'] })).hooks.get('blocks.1.hook_resid_pre')!;
    await second.dispose();
    expect(a2).toEqual(a1);
    expect((await stat(join(dir, 'onnx', edited[0]!))).mtimeMs).toBe(mtime);
    // A different original (other weights) gets its own edited copy, not the stale one.
    await writeTinyGpt2(dir, { seed: seed + 1, layers: 2, dModel: 32, heads: 2, vocabSize: 500, tokenizerFiles });
    const third = await LanguageModel.load(dir);
    const a3 = (await third.forward(b, { hooks: ['blocks.1.hook_resid_pre'] })).hooks.get('blocks.1.hook_resid_pre')!;
    await third.dispose();
    expect(a3).not.toEqual(a1);
    const newHash = createHash('sha256').update(await readFile(original)).digest('hex');
    expect(newHash).not.toBe(fullHash);
    expect(JSON.parse(await readFile(notePath, 'utf8')).sha256).toBe(newHash);
    // A note that lies about the digest is believed only while size, mtime and inode match:
    // rewriting the file (new mtime) makes the next load hash it again.
    await writeFile(notePath, JSON.stringify({ ...JSON.parse(await readFile(notePath, 'utf8')), sha256: '0'.repeat(64) }));
    await writeTinyGpt2(dir, { seed: seed + 2, layers: 2, dModel: 32, heads: 2, vocabSize: 500, tokenizerFiles });
    await (await LanguageModel.load(dir)).dispose();
    expect(JSON.parse(await readFile(notePath, 'utf8')).sha256).toBe(createHash('sha256').update(await readFile(original)).digest('hex'));
    expect((await readdir(join(dir, 'onnx'))).filter((f) => f.endsWith('.onnx') && f !== 'model.onnx')).toHaveLength(2);
  });
});


describe('splicing', () => {
  it('an identity SAE recovers all of the CE loss with KL 0; clean CE equals the float64 forward', async () => {
    const { dir, w } = await makeModel({ layers: 2, dModel: 32, heads: 4 });
    const m = await LanguageModel.load(dir);
    const hook = 'blocks.1.hook_resid_pre';
    const sae = await identitySae(32, hook);
    try {
      const metrics = await evaluateSpliced(m, sae, { hook, corpus, contextSize: 16, tokens: 64, batchSize: 3 });
      expect(metrics.tokens).toBe(64);
      expect(metrics.ce_loss_score).toBeCloseTo(1, 6);
      expect(metrics.ce_loss_with_sae).toBeCloseTo(metrics.ce_loss_clean, 6);
      expect(Math.abs(metrics.kl_div_with_sae)).toBeLessThan(1e-9);
      expect(metrics.kl_div_with_ablation).toBeGreaterThan(1e-4);
      expect(metrics.explained_variance).toBeCloseTo(1, 9);
      // The clean CE from the float64 reference on the same windows.
      const windows: Int32Array[] = [];
      for await (const win of tokenWindows(readCorpus(corpus), m.tokenizer, { contextSize: 16, prependBos: true, maxTokens: 64 })) windows.push(win);
      const ref = gpt2ForwardF64(w, windows.map((x) => Array.from(x)));
      const V = w.config.vocabSize;
      let ce = 0;
      let n = 0;
      for (let b = 0; b < windows.length; b++) {
        for (let t = 0; t + 1 < 16; t++) {
          const off = (b * 16 + t) * V;
          let max = -Infinity;
          for (let v = 0; v < V; v++) max = Math.max(max, ref.logits[off + v]!);
          let s = 0;
          for (let v = 0; v < V; v++) s += Math.exp(ref.logits[off + v]! - max);
          ce += max + Math.log(s) - ref.logits[off + windows[b]![t + 1]!]!;
          n++;
        }
      }
      expect(metrics.ce_loss_clean).toBeCloseTo(ce / n, 4);
    } finally {
      sae.dispose();
      await m.dispose();
    }
  });

  it('interventions change exactly the edited feature contributions', async () => {
    const d = 24;
    const weights = randomWeights('topk', d, 40, seed, 4);
    weights.config.normalizeActivations = 'none';
    const sae = await createSae(weights, { device: 'cpu' });
    try {
      const r = rng(seed ^ 0x77);
      const x = Float32Array.from({ length: 5 * d }, () => r() * 2 - 1);
      const codes = await sae.encode(x);
      const f = codes.indices[0]!;
      const ablated = await intervene(sae, x, [{ feature: f, kind: 'ablate' }]);
      const steered = await intervene(sae, x, [{ feature: 7, kind: 'steer', scale: 2.5 }]);
      for (let row = 0; row < 5; row++) {
        let v = 0;
        for (let i = codes.indptr[row]!; i < codes.indptr[row + 1]!; i++) if (codes.indices[i] === f) v = codes.values[i]!;
        for (let j = 0; j < d; j++) {
          expect(ablated[row * d + j]).toBeCloseTo(x[row * d + j]! - v * weights.W_dec[f * d + j]!, 4);
          expect(steered[row * d + j]).toBeCloseTo(x[row * d + j]! + 2.5 * weights.W_dec[7 * d + j]!, 4);
        }
      }
      const clamped = editCodes(codes, [{ feature: 3, kind: 'clamp', value: 9 }]);
      for (let row = 0; row < 5; row++) {
        const idx = Array.from(clamped.indices.subarray(clamped.indptr[row], clamped.indptr[row + 1]));
        expect(idx).toEqual([...idx].sort((a, b) => a - b));
        expect(clamped.values[clamped.indptr[row]! + idx.indexOf(3)]).toBe(9);
      }
    } finally {
      sae.dispose();
    }
  });

  it('greedy generation follows the float64 argmax', async () => {
    const { dir, w } = await makeModel({ layers: 2, dModel: 32, heads: 4 });
    const m = await LanguageModel.load(dir);
    try {
      const prompt = 'The king';
      const out = await generate(m, prompt, { maxNewTokens: 4 });
      const seq = [50256, ...m.tokenizer.encode(prompt)];
      expect(out.ids.slice(0, seq.length)).toEqual(seq);
      const V = w.config.vocabSize;
      for (let step = 0; step < 4; step++) {
        const ref = gpt2ForwardF64(w, [seq]);
        const off = (seq.length - 1) * V;
        let best = 0;
        for (let v = 1; v < V; v++) if (ref.logits[off + v]! > ref.logits[off + best]!) best = v;
        seq.push(best);
      }
      expect(out.ids).toEqual(seq);
      expect(out.text).toBe(m.decode(seq.slice(3)));
    } finally {
      await m.dispose();
    }
  });
});

describe('activation dumps', () => {
  it('writes whole windows in shards with token ids, readable by the trainer, equal to the float64 forward', async () => {
    const { dir, w } = await makeModel({ layers: 2, dModel: 32, heads: 4 });
    const m = await LanguageModel.load(dir);
    const out = join(await dirs.make(), 'acts');
    try {
      const r = await dumpActivations(m, { hook: 'blocks.1.hook_resid_mid', corpus, output: out, contextSize: 8, tokens: 100, batchSize: 5, shardWindows: 3 });
      const man = r.manifest;
      expect(man.windows).toBe(13);
      expect(man.rows).toBe(104);
      expect(man.activations).toHaveLength(5);
      expect(JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'))).toEqual(man);
      const windows: Int32Array[] = [];
      for await (const win of tokenWindows(readCorpus(corpus), m.tokenizer, { contextSize: 8, prependBos: true, maxTokens: 104 })) windows.push(win);
      const tokens: number[] = [];
      const acts: number[] = [];
      for (const f of man.activations) {
        const st = await SafetensorsReader.open(join(out, f));
        tokens.push(...((await st.readTensor('token_ids')) as Int32Array));
        acts.push(...((await st.readTensor('activations')) as Float32Array));
        await st.close();
      }
      expect(tokens).toEqual(windows.flatMap((x) => Array.from(x)));
      const ref = gpt2ForwardF64(w, windows.map((x) => Array.from(x)));
      const all = new BigInt64Array(104).fill(1n);
      expectClose(Float32Array.from(acts), ref.residMid[1]!, all, 32, 'dumped blocks.1.hook_resid_mid');
      const src = await openRowSource(out);
      expect(src.rows).toBe(104);
      expect(src.dIn).toBe(32);
      await src.close();
      // The same dump again (a rerun after a kill that came once the manifest had landed):
      // recognized as finished, nothing rewritten. Other settings, or a stranger file: refused.
      const manifestBytes = await readFile(join(out, 'manifest.json'));
      const mtimes = (await readdir(out)).sort().map((f) => [f, statSync(join(out, f)).mtimeMs]);
      await writeFile(join(out, 'activations-00001.safetensors.tmp-999999999-0badc0de'), 'partial');
      const again = await dumpActivations(m, { hook: 'blocks.1.hook_resid_mid', corpus, output: out, contextSize: 8, tokens: 100, batchSize: 2, shardWindows: 3 });
      expect(again.alreadyComplete).toBe(true);
      expect(again.manifest).toEqual(man);
      expect((await readdir(out)).sort().map((f) => [f, statSync(join(out, f)).mtimeMs])).toEqual(mtimes);
      expect(await readFile(join(out, 'manifest.json'))).toEqual(manifestBytes);
      await expectReject(() => dumpActivations(m, { hook: 'blocks.1.hook_resid_mid', corpus, output: out, contextSize: 8, tokens: 100, shardWindows: 4 }), FormatError, out, 'not empty', 'shard_windows 3, not 4');
      await expectReject(() => dumpActivations(m, { hook: 'blocks.1.hook_resid_mid', corpus, output: out, contextSize: 8, tokens: 8 }), FormatError, out, 'not empty', 'tokens_requested 100, not 8');
      await writeFile(join(out, 'notes.txt'), 'mine');
      await expectReject(() => dumpActivations(m, { hook: 'blocks.1.hook_resid_mid', corpus, output: out, contextSize: 8, tokens: 100, shardWindows: 3 }), FormatError, out, 'not empty');
      expect(await readFile(join(out, 'notes.txt'), 'utf8')).toBe('mine');
      expect(await readFile(join(out, 'manifest.json'))).toEqual(manifestBytes);
      // A corpus shorter than one window is an error.
      const tiny = join(await dirs.make(), 'tiny.txt');
      await writeFile(tiny, 'Too short.\n');
      const out2 = join(await dirs.make(), 'acts2');
      await expectReject(() => dumpActivations(m, { hook: 'blocks.1.hook_resid_mid', corpus: tiny, output: out2, contextSize: 64, tokens: 64 }), FormatError, tiny, 'fewer than 64 tokens');
      expect(existsSync(join(out2, 'manifest.json'))).toBe(false);
    } finally {
      await m.dispose();
    }
  });
});

describe('models from the hub', () => {
  let hub: HubServer;
  let modelDir: string;
  const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };

  beforeAll(async () => {
    ({ dir: modelDir } = await makeModel({ layers: 1, dModel: 16, heads: 2, vocabSize: 300 }));
    hub = await startHubServer();
    const files = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'];
    hub.addRepo('org/tiny', await Promise.all(files.map(async (path) => ({ path, data: new Uint8Array(await readFile(join(modelDir, path))) }))));
    process.env.HF_ENDPOINT = hub.url;
    delete process.env.HF_HUB_OFFLINE;
  });
  afterAll(async () => {
    await hub.close();
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  });

  it('a hub id is fetched once into the hub cache, then works offline; 404 and offline misses are clear errors', async () => {
    const cacheDir = await dirs.make();
    const dir = await resolveModelDir('org/tiny', { cacheDir });
    expect(dir).toBe(join(cacheDir, 'models--org--tiny', 'snapshots', hub.commit));
    expect(await readFile(join(dir, 'onnx', 'model.onnx'))).toEqual(await readFile(join(modelDir, 'onnx', 'model.onnx')));
    const served = hub.bytesServed;
    expect(await resolveModelDir('org/tiny', { cacheDir, offline: true })).toBe(dir);
    expect(await resolveModelDir('org/tiny', { cacheDir })).toBe(dir);
    expect(hub.bytesServed).toBe(served); // nothing downloaded twice
    const m = await LanguageModel.load('org/tiny', { cacheDir, offline: true });
    expect(m.dModel).toBe(16);
    // The hooked copy sits beside the original in the snapshot folder; a second load reuses it.
    await m.forward(padBatch([[1, 2, 3]], 0), { hooks: ['blocks.0.hook_resid_post'] });
    await m.dispose();
    expect((await readdir(join(dir, 'onnx'))).filter((f) => f.includes('.saekit-') && f.endsWith('.onnx'))).toHaveLength(1);
    await expectReject(() => resolveModelDir('org/missing', { cacheDir }), FormatError, 'org/missing', '404');
    await expectReject(() => resolveModelDir('org/other', { cacheDir, offline: true }), FormatError, 'org/other', 'offline');
  });
});
