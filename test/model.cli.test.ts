// The seed workflow end to end through the CLI, in process (main() returns the exit code), on a
// generated GPT-2-architecture model with GPT-2's real tokenizer: gen-model -> activations ->
// train -> features / eval / generate. The features output is checked against an independent
// forward + encode through the library; errors exit 1 with one stderr line naming the thing at
// fault and leave no output behind; missing required flags exit 2.
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { SafetensorsReader, saveSaeLens } from '../src/formats/index.js';
import { padBatch } from '../src/model/corpus.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { loadSae } from '../src/sae.js';
import { randomWeights, tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';
import { runCli } from './helpers/cli.js';

const seed = freshSeed('model.cli.test');
const dirs = tempDirs();
const HOOK = 'blocks.1.hook_resid_pre';
const CTX = 32;
const DUMP_TOKENS = 3000;
const D_MODEL = 32;
const K = 4;
const D_SAE = D_MODEL * 4;
const SENTENCE = 'The king ruled the kingdom with a wise and just hand.';

let root: string;
let M: string; // model folder
let corpusTxt: string;
let corpusJsonl: string;
let corpusCustom: string;
let ACTS: string;
let SAE: string;

const run = runCli;

/** Exit 1 with exactly one stderr line holding every part. */
function expectError(r: { code: number; err: string }, ...parts: string[]): void {
  expect(r.code, r.err).toBe(1);
  const lines = r.err.trimEnd().split('\n');
  expect(lines, r.err).toHaveLength(1);
  for (const p of parts) expect(lines[0]).toContain(p);
}

async function shardInfo(dir: string): Promise<{ manifest: Record<string, unknown>; tokens: number[]; dtypes: string[] }> {
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  const tokens: number[] = [];
  const dtypes: string[] = [];
  for (const f of manifest.activations as string[]) {
    const st = await SafetensorsReader.open(join(dir, f));
    try {
      tokens.push(...((await st.readTensor('token_ids')) as Int32Array));
      dtypes.push(st.info('activations').dtype);
    } finally {
      await st.close();
    }
  }
  return { manifest, tokens, dtypes };
}

async function readActs(dir: string): Promise<Float32Array> {
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { activations: string[] };
  const parts: Float32Array[] = [];
  for (const f of manifest.activations) {
    const st = await SafetensorsReader.open(join(dir, f));
    try {
      parts.push(await st.readFloat32('activations'));
    } finally {
      await st.close();
    }
  }
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

beforeAll(async () => {
  root = await dirs.make();
  M = join(root, 'model');
  const text = syntheticText(400, seed);
  corpusTxt = join(root, 'corpus.txt');
  await writeFile(corpusTxt, text);
  const paragraphs = text.split('\n\n').map((p) => p.trim()).filter((p) => p !== '');
  corpusJsonl = join(root, 'corpus.jsonl');
  await writeFile(corpusJsonl, paragraphs.map((p) => JSON.stringify({ text: p })).join('\n') + '\n');
  corpusCustom = join(root, 'custom.jsonl');
  await writeFile(corpusCustom, paragraphs.map((p, i) => JSON.stringify({ id: i, body: p })).join('\n') + '\n');
  ACTS = join(root, 'acts');
  SAE = join(root, 'sae');
});
afterAll(() => dirs.cleanup());

describe('the seed workflow through the CLI', () => {
  it('gen-model writes a GPT-2-architecture model with the full GPT-2 tokenizer', async () => {
    const r = await run('gen-model', '--output', M, '--layers', '2', '--d-model', String(D_MODEL), '--heads', '4', '--seed', String(seed % 100000));
    expect(r.code, r.err).toBe(0);
    for (const f of ['config.json', 'tokenizer.json', join('onnx', 'model.onnx')]) expect(existsSync(join(M, f)), f).toBe(true);
    const config = JSON.parse(await readFile(join(M, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.vocab_size).toBe(50257);
    expect(config.n_embd).toBe(D_MODEL);
    expect(config.n_layer).toBe(2);
    expect(r.err).toContain('vocab 50257');
  });

  it('activations dumps whole windows into shards, from .txt and .jsonl alike, in float32 and bfloat16', async () => {
    const r = await run('activations', '--model', M, '--hook', HOOK, '--text', corpusTxt, '--tokens', String(DUMP_TOKENS), '--context-size', String(CTX), '--output', ACTS, '--shard-windows', '20');
    expect(r.code, r.err).toBe(0);
    const windows = Math.ceil(DUMP_TOKENS / CTX);
    const { manifest, tokens, dtypes } = await shardInfo(ACTS);
    expect(manifest).toMatchObject({ format: 'saekit-activations', hook_name: HOOK, model: M, d_in: D_MODEL, context_size: CTX, prepend_bos: true, rows: windows * CTX, windows, dtype: 'float32' });
    expect(manifest.activations).toHaveLength(Math.ceil(windows / 20));
    expect([...(manifest.activations as string[])].sort()).toEqual((await readdir(ACTS)).filter((f) => f.endsWith('.safetensors')).sort());
    expect(tokens).toHaveLength(windows * CTX);
    expect(dtypes.every((d) => d === 'F32')).toBe(true);
    // Every window begins with BOS (<|endoftext|>).
    for (let w = 0; w < windows; w++) expect(tokens[w * CTX]).toBe(50256);
    expect(r.err).toContain(`dumped ${windows * CTX} tokens`);

    // bfloat16: the same rows, stored as BF16, equal to the float32 dump rounded.
    const bf = join(root, 'acts-bf16');
    expect((await run('activations', '--model', M, '--hook', HOOK, '--text', corpusTxt, '--tokens', '640', '--context-size', String(CTX), '--output', bf, '--shard-windows', '8', '--dtype', 'bfloat16')).code).toBe(0);
    const b = await shardInfo(bf);
    expect(b.manifest).toMatchObject({ dtype: 'bfloat16', rows: 640, windows: 20 });
    expect(b.manifest.activations).toHaveLength(3);
    expect(b.dtypes).toEqual(['BF16', 'BF16', 'BF16']);
    expect(b.tokens).toEqual(tokens.slice(0, 640));
    const f32 = (await readActs(ACTS)).subarray(0, 640 * D_MODEL);
    const b16 = await readActs(bf);
    expect(b16.length).toBe(f32.length);
    let worst = 0;
    for (let i = 0; i < f32.length; i++) worst = Math.max(worst, Math.abs(b16[i]! - f32[i]!) / (Math.abs(f32[i]!) + 1e-6));
    expect(worst).toBeLessThanOrEqual(2 ** -8 + 1e-6);

    // .jsonl with the default field and with --text-field: the same documents, the same windows.
    const j1 = join(root, 'acts-jsonl');
    expect((await run('activations', '--model', M, '--hook', HOOK, '--text', corpusJsonl, '--tokens', '640', '--context-size', String(CTX), '--output', j1)).code).toBe(0);
    expect((await shardInfo(j1)).tokens).toEqual(tokens.slice(0, 640));
    const j2 = join(root, 'acts-custom');
    expect((await run('activations', '--model', M, '--hook', HOOK, '--text', corpusCustom, '--text-field', 'body', '--tokens', '640', '--context-size', String(CTX), '--output', j2)).code).toBe(0);
    expect((await shardInfo(j2)).tokens).toEqual(tokens.slice(0, 640));
    expect(await readActs(j2)).toEqual(f32);
  });

  it('train reads the dump and records hook, model, context size and BOS in cfg.json', async () => {
    const r = await run('train', '--input', ACTS, '--output', SAE, '--k', String(K), '--expansion', '4', '--tokens', '20000', '--batch-size', '256', '--seed', String(seed % 100000));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`d_in ${D_MODEL} d_sae ${D_SAE} k ${K}`);
    const cfg = JSON.parse(await readFile(join(SAE, 'cfg.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg.d_in).toBe(D_MODEL);
    expect(cfg.d_sae).toBe(D_SAE);
    expect(cfg.metadata).toMatchObject({ hook_name: HOOK, model_name: M, context_size: CTX, prepend_bos: true });
  });

  it('features lists the top features per token, equal to an independent forward + encode', async () => {
    const r = await run('features', '--model', M, '--sae', SAE, '--json', SENTENCE);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { model: string; sae: string; hook: string; tokens: { position: number; token: number; text: string; features: { id: number; value: number }[] }[] };
    expect(j.hook).toBe(HOOK);
    expect(j.model).toBe(M);

    const model = await LanguageModel.load(M);
    const sae = await loadSae(SAE, { device: 'cpu' });
    try {
      const ids = [50256, ...model.tokenizer.encode(SENTENCE)];
      expect(j.tokens.map((t) => t.token)).toEqual(ids);
      expect(j.tokens.map((t) => t.position)).toEqual(ids.map((_, i) => i));
      expect(j.tokens[0]!.text).toBe('<|endoftext|>');
      expect(j.tokens.map((t) => t.text).join('')).toBe(`<|endoftext|>${SENTENCE}`);
      const acts = (await model.forward(padBatch([ids], 0), { hooks: [HOOK] })).hooks.get(HOOK)!;
      const codes = await sae.encode(acts);
      expect(codes.rows).toBe(ids.length);
      for (let p = 0; p < ids.length; p++) {
        const feats = j.tokens[p]!.features;
        expect(feats.length).toBeLessThanOrEqual(5);
        for (let i = 1; i < feats.length; i++) expect(feats[i - 1]!.value).toBeGreaterThanOrEqual(feats[i]!.value);
        for (const f of feats) {
          expect(Number.isInteger(f.id) && f.id >= 0 && f.id < D_SAE).toBe(true);
          expect(f.value).toBeGreaterThan(0);
        }
        const want: { id: number; value: number }[] = [];
        for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) want.push({ id: codes.indices[i]!, value: codes.values[i]! });
        want.sort((a, b) => b.value - a.value || a.id - b.id);
        const top = want.slice(0, 5);
        expect(feats.map((f) => f.id), `position ${p}`).toEqual(top.map((f) => f.id));
        for (let i = 0; i < top.length; i++) expect(Math.abs(feats[i]!.value - top[i]!.value), `position ${p} feature ${top[i]!.id}`).toBeLessThanOrEqual(1e-5);
      }
    } finally {
      sae.dispose();
      await model.dispose();
    }

    const plain = await run('features', '--model', M, '--sae', SAE, SENTENCE);
    expect(plain.code, plain.err).toBe(0);
    const lines = plain.out.trimEnd().split('\n');
    expect(lines[0]).toContain(HOOK);
    expect(lines[0]).toContain(`d_sae ${D_SAE}`);
    expect(lines.slice(1)).toHaveLength(j.tokens.length);
    lines.slice(1).forEach((l, p) => expect(l).toMatch(new RegExp(`^\\s*${p} `)));
    expect(lines[1]).toContain('"<|endoftext|>"');

    const top2 = await run('features', '--model', M, '--sae', SAE, '--json', '--top', '2', SENTENCE);
    expect(top2.code, top2.err).toBe(0);
    const j2 = JSON.parse(top2.out) as typeof j;
    j2.tokens.forEach((t, p) => {
      expect(t.features.length).toBeLessThanOrEqual(2);
      expect(t.features).toEqual(j.tokens[p]!.features.slice(0, 2));
    });
  });

  it('eval splices the SAE in and reports finite CE losses, KL and L0 = k', async () => {
    const r = await run('eval', '--model', M, '--sae', SAE, '--text', corpusTxt, '--tokens', '256', '--json');
    expect(r.code, r.err).toBe(0);
    const m = JSON.parse(r.out) as Record<string, number | string>;
    expect(m.hook).toBe(HOOK);
    for (const key of ['ce_loss_clean', 'ce_loss_with_sae', 'ce_loss_with_ablation', 'ce_loss_score', 'kl_div_with_sae', 'kl_div_with_ablation']) {
      expect(Number.isFinite(m[key]), `${key} = ${m[key]}`).toBe(true);
    }
    expect(m.kl_div_with_sae as number).toBeGreaterThanOrEqual(0);
    expect(m.kl_div_with_ablation as number).toBeGreaterThanOrEqual(0);
    expect(Math.abs((m.l0 as number) - K)).toBeLessThanOrEqual(1e-9);
    expect(m.tokens).toBe(256);
    expect(m.windows).toBe(256 / CTX); // context size from the SAE's metadata

    const text = await run('eval', '--model', M, '--sae', SAE, '--text', corpusTxt, '--tokens', '64');
    expect(text.code, text.err).toBe(0);
    expect(text.out).toContain('CE loss recovered');
    expect(text.out).toContain('64 tokens (2 windows)');
  });

  it('generate continues a prompt, with and without SAE interventions; bad interventions are errors', async () => {
    const plain = await run('generate', '--model', M, 'The king', '--max-new-tokens', '3');
    expect(plain.code, plain.err).toBe(0);
    expect(plain.out.startsWith('The king')).toBe(true);
    expect(plain.out.endsWith('\n')).toBe(true);

    const edited = await run('generate', '--model', M, '--sae', SAE, '--intervene', 'ablate:0', '--intervene', 'steer:1=50', '--max-new-tokens', '3', 'The king');
    expect(edited.code, edited.err).toBe(0);
    expect(edited.out.startsWith('The king')).toBe(true);

    expectError(await run('generate', '--model', M, '--sae', SAE, '--intervene', 'clamp:1=abc', 'The king'), 'clamp:1=abc');
    expectError(await run('generate', '--model', M, '--sae', SAE, '--intervene', `ablate:${D_SAE}`, 'The king'), `ablate:${D_SAE}`, `d_sae ${D_SAE}`);
    expectError(await run('generate', '--model', M, '--intervene', 'ablate:0', 'The king'), '--intervene', '--sae');
  });
});

describe('CLI errors on the model side', () => {
  const actsArgs = (model: string, output: string, extra: string[] = []) => [
    'activations', '--model', model, '--hook', HOOK, '--text', corpusTxt, '--tokens', '64', '--context-size', String(CTX), '--output', output, ...extra,
  ];

  it('a missing model folder, an incomplete folder, or a hub id not cached offline', async () => {
    const out = join(root, 'err-out-1');
    const missing = join(root, 'no-such-model');
    expectError(await run(...actsArgs(missing, out)), missing);
    expect(existsSync(out)).toBe(false);

    const partial = join(root, 'partial-model');
    await mkdir(partial);
    await copyFile(join(M, 'config.json'), join(partial, 'config.json'));
    expectError(await run(...actsArgs(partial, out)), partial, 'onnx/model.onnx');
    expect(existsSync(out)).toBe(false);

    const cache = await dirs.make();
    const saved = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = cache;
    try {
      expectError(await run(...actsArgs('nobody/no-model', out, ['--offline'])), 'nobody/no-model', 'offline');
      expect(await readdir(cache)).toEqual([]);
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
    expect(existsSync(out)).toBe(false);
  });

  it('hooks the model lacks', async () => {
    const out = join(root, 'err-out-2');
    expectError(await run(...actsArgs(M, out).map((a) => (a === HOOK ? 'blocks.9.hook_resid_pre' : a))), 'blocks.9.hook_resid_pre', '2 layers');
    expect(existsSync(out)).toBe(false);
    expectError(await run(...actsArgs(M, out).map((a) => (a === HOOK ? 'nonsense' : a))), 'nonsense');
    expect(existsSync(out)).toBe(false);
  });

  it('a missing corpus, a .jsonl with a bad line, a used output folder', async () => {
    // A failed dump leaves nothing: not the folder it created, not the shards it wrote.
    const noDump = async (out: string) => {
      expect(existsSync(out), existsSync(out) ? `${out} left behind: [${(await readdir(out)).join(', ')}]` : '').toBe(false);
    };
    const gone = join(root, 'gone.txt');
    const out1 = join(root, 'err-out-3a');
    expectError(await run(...actsArgs(M, out1).map((a) => (a === corpusTxt ? gone : a))), gone, 'not found');
    await noDump(out1);

    // A bad line after 30 good ones, with a shard per window: shards are written before the error.
    const bad = join(root, 'bad.jsonl');
    const good = (await readFile(corpusJsonl, 'utf8')).split('\n').filter((l) => l !== '');
    await writeFile(bad, [...good.slice(0, 30), '{"text": "broken', ...good.slice(30)].join('\n') + '\n');
    const out2 = join(root, 'err-out-3b');
    const r = await run(...actsArgs(M, out2, ['--shard-windows', '1', '--batch-size', '1']).map((a) => (a === corpusTxt ? bad : a === '64' ? '100000' : a)));
    expectError(r, bad, 'line 31', 'invalid JSON');
    await noDump(out2);

    // The custom-field corpus without --text-field names the line and the field.
    const out3 = join(root, 'err-out-3c');
    expectError(await run(...actsArgs(M, out3).map((a) => (a === corpusTxt ? corpusCustom : a))), corpusCustom, 'line 1', '"text"');
    await noDump(out3);

    const used = join(root, 'used');
    await mkdir(used);
    await writeFile(join(used, 'keep.txt'), 'mine');
    expectError(await run(...actsArgs(M, used)), used, 'not empty');
    expect(await readdir(used)).toEqual(['keep.txt']);
    expect(await readFile(join(used, 'keep.txt'), 'utf8')).toBe('mine');
  });

  it("an SAE whose d_in is not the model's width", async () => {
    const narrow = join(root, 'sae-d16');
    await saveSaeLens(narrow, randomWeights('topk', 16, 64, seed, 4));
    expectError(await run('features', '--model', M, '--sae', narrow, SENTENCE), narrow, 'd_in 16', String(D_MODEL));
    expectError(await run('eval', '--model', M, '--sae', narrow, '--text', corpusTxt, '--tokens', '64'), narrow, 'd_in 16', String(D_MODEL));
  });

  it('missing required flags exit 2 and write nothing', async () => {
    const out = join(root, 'err-out-4');
    const cases: [string[], string][] = [
      [['gen-model', '--layers', '1'], '--output'],
      [['activations', '--model', M, '--text', corpusTxt, '--tokens', '64', '--output', out], '--hook'],
      [['activations', '--model', M, '--hook', HOOK, '--tokens', '64', '--output', out], '--text'],
      [['activations', '--model', M, '--hook', HOOK, '--text', corpusTxt, '--output', out], '--tokens'],
      [['activations', '--hook', HOOK, '--text', corpusTxt, '--tokens', '64', '--output', out], '--model'],
      [['activations', '--model', M, '--hook', HOOK, '--text', corpusTxt, '--tokens', '64'], '--output'],
      [['train', '--input', ACTS, '--output', out, '--expansion', '4', '--tokens', '1000'], '--k'],
      [['train', '--input', ACTS, '--output', out, '--k', '4', '--expansion', '4'], '--tokens'],
      [['features', '--model', M, SENTENCE], '--sae'],
      [['features', '--sae', SAE, SENTENCE], '--model'],
      [['eval', '--model', M, '--sae', SAE], '--text'],
      [['eval', '--model', M, '--text', corpusTxt], '--sae'],
    ];
    for (const [argv, flag] of cases) {
      const r = await run(...argv);
      expect(r.code, `${argv.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err).toContain(`missing required flag ${flag}`);
      expect(r.err).toContain('usage:');
    }
    expect(existsSync(out)).toBe(false);
  });
});
