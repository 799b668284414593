// The real-exporter fixtures (test/fixtures/hf) as users meet them: laid out as hub repos on
// the loopback hub server, through `saekit activations` and `saekit features`, with the
// variant picked by --model-dtype, external data fetched beside the graph, windows clipped to
// the model's positions, and onnxruntime failures reported in one line.
import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SaekitError, ValidationError, FormatError } from '../src/errors.js';
import { SafetensorsReader, saveSaeLens } from '../src/formats/index.js';
import { padBatch } from '../src/model/corpus.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { chooseOnnxFile } from '../src/model/modelSource.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { loadSae } from '../src/sae.js';
import { runCli } from './helpers/cli.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { randomWeights, tempDirs } from './helpers/formatsFixtures.js';
import { startHubServer, type HubServer } from './helpers/hubServer.js';
import { freshSeed } from './helpers/testData.js';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'hf');
const FAMILIES = ['gemma2', 'gemma3', 'gpt2', 'llama', 'mistral', 'pythia', 'qwen2', 'qwen3'];
const seed = freshSeed('model.hf.cli.test');
const dirs = tempDirs();
const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE, HF_HUB_CACHE: process.env.HF_HUB_CACHE };
let hub: HubServer;
let corpus: string;

async function filesOf(dir: string): Promise<{ path: string; data: Uint8Array }[]> {
  const out: { path: string; data: Uint8Array }[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!e.name.startsWith('reference.')) out.push({ path: relative(dir, p), data: new Uint8Array(await readFile(p)) });
    }
  };
  await walk(dir);
  return out;
}

beforeAll(async () => {
  hub = await startHubServer();
  for (const family of FAMILIES) hub.addRepo(`tiny/${family}`, await filesOf(join(FIXTURES, family)));
  process.env.HF_ENDPOINT = hub.url;
  process.env.HF_HUB_CACHE = await dirs.make();
  delete process.env.HF_HUB_OFFLINE;
  corpus = join(await dirs.make(), 'corpus.txt');
  await writeFile(corpus, syntheticText(400, seed));
});
afterAll(async () => {
  await hub.close();
  for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  await dirs.cleanup();
});

describe.skipIf(!existsSync(FIXTURES))('real-exporter models through the CLI and the hub', () => {
  it('the variant: --onnx-file, else --model-dtype, else fp32 where present, else the first variant present', async () => {
    const dir = join(FIXTURES, 'llama');
    expect(chooseOnnxFile({}, dir)).toBe('model');
    expect(chooseOnnxFile({ dtype: 'fp16' }, dir)).toBe('model_fp16');
    expect(chooseOnnxFile({ dtype: 'q8' }, dir)).toBe('model_quantized');
    expect(chooseOnnxFile({ dtype: 'q4' }, dir)).toBe('model_q4');
    expect(chooseOnnxFile({ dtype: 'q4', onnxFile: 'model_dynamo' }, dir)).toBe('model_dynamo');
    expectThrow(() => chooseOnnxFile({ dtype: 'fp8' as never }, dir), ValidationError, '--dtype', 'fp8', 'q4f16');
    const only4 = join(await dirs.make(), 'm');
    await mkdir(join(only4, 'onnx'), { recursive: true });
    await writeFile(join(only4, 'onnx', 'model_q4.onnx'), '');
    expect(chooseOnnxFile({}, only4)).toBe('model_q4');
  });

  it('activations from a hub id: --model-dtype fp16, a context clipped to the 64 positions with one line, float32 rows equal to a direct forward', async () => {
    const out = join(await dirs.make(), 'acts');
    const r = await runCli('activations', '--model', 'tiny/llama', '--model-dtype', 'fp16', '--hook', 'blocks.1.hook_resid_mid', '--text', corpus, '--tokens', '128', '--context-size', '100', '--output', out);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('using onnx/model_fp16.onnx');
    expect(r.err).toContain('--context-size 100 exceeds the 64 positions');
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest).toMatchObject({ context_size: 64, onnx_file: 'model_fp16', d_in: 32, rows: 128, hook_name: 'blocks.1.hook_resid_mid' });
    const shard = await SafetensorsReader.open(join(out, (manifest.activations as string[])[0]!));
    try {
      const acts = await shard.readFloat32('activations');
      const ids = Array.from((await shard.readTensor('token_ids')) as Int32Array).slice(0, 64);
      const m = await LanguageModel.load('tiny/llama', { dtype: 'fp16', offline: true });
      try {
        const direct = (await m.forward(padBatch([ids], 0), { hooks: ['blocks.1.hook_resid_mid'] })).hooks.get('blocks.1.hook_resid_mid')!;
        expect(Array.from(acts.subarray(0, 64 * 32))).toEqual(Array.from(direct));
      } finally {
        await m.dispose();
      }
    } finally {
      await shard.close();
    }
  });

  it('activations from every family as a hub repo: rows equal a direct forward of the dumped token ids', async () => {
    for (const family of FAMILIES) {
      const out = join(await dirs.make(), 'acts');
      const hook = 'blocks.0.hook_resid_post';
      const r = await runCli('activations', '--model', `tiny/${family}`, '--hook', hook, '--text', corpus, '--tokens', '48', '--context-size', '24', '--output', out);
      expect(r.code, `${family}: ${r.err}`).toBe(0);
      const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as { activations: string[]; onnx_file: string };
      expect(manifest.onnx_file).toBe('model');
      const shard = await SafetensorsReader.open(join(out, manifest.activations[0]!));
      const m = await LanguageModel.load(`tiny/${family}`, { offline: true });
      try {
        const acts = await shard.readFloat32('activations');
        const ids = Array.from((await shard.readTensor('token_ids')) as Int32Array);
        const windows = [ids.slice(0, 24), ids.slice(24, 48)];
        const direct = (await m.forward(padBatch(windows, 0), { hooks: [hook] })).hooks.get(hook)!;
        expect(Array.from(acts), family).toEqual(Array.from(direct));
      } finally {
        await shard.close();
        await m.dispose();
      }
    }
  });

  it('external data: fetched from the hub beside the graph; missing in a local folder, an error naming the file', async () => {
    const m = await LanguageModel.load('tiny/llama', { onnxFile: 'model_external' });
    try {
      expect(existsSync(join(m.dir, 'onnx', 'model_external.onnx_data'))).toBe(true);
      const ref = await LanguageModel.load('tiny/llama');
      const b = padBatch([[1, 5, 9, 200, 17]], 0);
      const a = (await m.forward(b, { hooks: ['blocks.0.hook_mlp_out'] })).hooks.get('blocks.0.hook_mlp_out')!;
      const c = (await ref.forward(b, { hooks: ['blocks.0.hook_mlp_out'] })).hooks.get('blocks.0.hook_mlp_out')!;
      expect(Array.from(a)).toEqual(Array.from(c));
      await ref.dispose();
    } finally {
      await m.dispose();
    }
    const local = join(await dirs.make(), 'llama');
    await cp(join(FIXTURES, 'llama'), local, { recursive: true });
    await rm(join(local, 'onnx', 'model_external.onnx_data'));
    await expectReject(() => LanguageModel.load(local, { onnxFile: 'model_external' }), FormatError, 'model_external.onnx', 'model_external.onnx_data', 'missing');
  });

  it('features on every family from the hub equal a direct forward + encode', async () => {
    for (const [repo, hook] of FAMILIES.map((f, i) => [`tiny/${f}`, i % 2 === 0 ? 'blocks.1.hook_resid_post' : 'blocks.0.hook_mlp_out'] as const)) {
      const saeDir = join(await dirs.make(), 'sae');
      const w = randomWeights('topk', 32, 96, seed, 4);
      w.config.hookName = hook;
      await saveSaeLens(saeDir, w);
      const r = await runCli('features', '--model', repo, '--sae', saeDir, '--json', 'the cat sat on the mat');
      expect(r.code, r.err).toBe(0);
      const j = JSON.parse(r.out) as { hook: string; tokens: { token: number; features: { id: number; value: number }[] }[] };
      expect(j.hook).toBe(hook);
      const m = await LanguageModel.load(repo, { offline: true });
      const sae = await loadSae(saeDir, { device: 'cpu' });
      try {
        const ids = j.tokens.map((t) => t.token);
        const acts = (await m.forward(padBatch([ids], 0), { hooks: [hook] })).hooks.get(hook)!;
        const codes = await sae.encode(acts);
        for (let p = 0; p < ids.length; p++) {
          const want: { id: number; value: number }[] = [];
          for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) want.push({ id: codes.indices[i]!, value: codes.values[i]! });
          want.sort((a, b) => b.value - a.value || a.id - b.id);
          expect(j.tokens[p]!.features.map((f) => f.id), `${repo} position ${p}`).toEqual(want.slice(0, 5).map((f) => f.id));
        }
      } finally {
        sae.dispose();
        await m.dispose();
      }
    }
  });

  it('a text past the positions: features reads the first 64 tokens, generate slides its window; both say so in one line', async () => {
    const saeDir = join(await dirs.make(), 'sae');
    const w = randomWeights('topk', 32, 96, seed + 1, 4);
    w.config.hookName = 'blocks.0.hook_resid_pre';
    await saveSaeLens(saeDir, w);
    const long = Array.from({ length: 80 }, (_, i) => ['the', 'cat', 'sat', 'on', 'mat', 'and', 'dog', 'ran'][i % 8]).join(' ');
    const f = await runCli('features', '--model', 'tiny/llama', '--sae', saeDir, '--json', long);
    expect(f.code, f.err).toBe(0);
    expect(f.err).toMatch(/exceed the 64 positions of model tiny\/llama: reading the first 64/);
    expect((JSON.parse(f.out) as { tokens: unknown[] }).tokens).toHaveLength(64);
    const g = await runCli('generate', '--model', 'tiny/llama', '--max-new-tokens', '70', 'the cat');
    expect(g.code, g.err).toBe(0);
    expect(g.err.trim().split('\n')).toHaveLength(1);
    expect(g.err).toContain('each step reads the last 64');
  });

  it('windows past the positions are a clear error; an onnxruntime failure is one line naming the file', async () => {
    const m = await LanguageModel.load(await copyOf('gemma2'));
    try {
      const long = padBatch([Array.from({ length: 65 }, (_, i) => i % 300)], 0);
      await expectReject(() => m.forward(long, { hooks: ['blocks.0.hook_resid_pre'] }), ValidationError, '65 tokens', '64 positions');
      // A token id past the vocabulary: the embedding Gather fails inside onnxruntime.
      const bad = padBatch([[1, 2, 100000]], 0);
      const err = await expectReject(() => m.forward(bad, { hooks: ['blocks.1.hook_resid_post'] }), SaekitError, 'ONNX runtime failed', 'model.onnx', 'Gather');
      expect(err.message.split('\n')).toHaveLength(1);
      expect(err.message.length).toBeLessThan(600);
    } finally {
      await m.dispose();
    }
  });
});

async function copyOf(family: string): Promise<string> {
  const dir = join(await dirs.make(), family);
  await mkdir(join(dir, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx']) await cp(join(FIXTURES, family, f), join(dir, f));
  return dir;
}
