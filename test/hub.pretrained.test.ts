// Pretrained SAEs by release and id against a loopback hub: a user registry file adds releases
// (SAELens and Gemma Scope layouts), loadSae(release, { id }) equals loading the same files
// from a folder, Gemma Scope's canonical id picks the L0 nearest 100 by listing the repository,
// `saekit pull` / `list` work, and the seed's one-line walk-through (`saekit features --release
// R --id ID "text"`) runs with the model fetched from the hub as well.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError, FormatError } from '../src/errors.js';
import { saveSaeLens, writeNpz } from '../src/formats/index.js';
import { findSae, releases } from '../src/hub/registry.js';
import { gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { writeTinyGpt2 } from '../src/model/tinyGpt2.js';
import { loadSae } from '../src/sae.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { randomWeights, rng, tempDirs } from './helpers/formatsFixtures.js';
import { startHubServer, type HubServer } from './helpers/hubServer.js';
import { freshSeed } from './helpers/testData.js';
import { runCli } from './helpers/cli.js';

const seed = freshSeed('hub.pretrained.test');
const dirs = tempDirs();
let hub: HubServer;
let registry: string;
let local: string; // the SAELens folder as written locally
const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE, HF_HUB_CACHE: process.env.HF_HUB_CACHE };

async function filesOf(dir: string, names: string[], prefix: string) {
  return Promise.all(names.map(async (n) => ({ path: `${prefix}/${n}`, data: new Uint8Array(await readFile(join(dir, n))) })));
}

const run = runCli;

beforeAll(async () => {
  const root = await dirs.make();
  hub = await startHubServer();
  process.env.HF_ENDPOINT = hub.url;
  delete process.env.HF_HUB_OFFLINE;
  process.env.HF_HUB_CACHE = join(root, 'hub-cache');

  // A SAELens release of two SAEs for a 32-wide model, and the model itself on the hub.
  const saeFiles = [];
  for (const l of [0, 1]) {
    const w = randomWeights('topk', 32, 64, seed + l, 4);
    w.config.normalizeActivations = 'none';
    w.config.hookName = `blocks.${l}.hook_resid_pre`;
    w.config.modelName = 'tiny-gpt2';
    w.config.metadata = { context_size: 64, prepend_bos: true };
    const dir = join(root, `sae-${l}`);
    await saveSaeLens(dir, w);
    if (l === 1) local = dir;
    saeFiles.push(...(await filesOf(dir, ['cfg.json', 'sae_weights.safetensors'], `blocks.${l}.hook_resid_pre`)));
  }
  hub.addRepo('test/tiny-saes', saeFiles);
  const modelDir = join(root, 'tiny-gpt2');
  await writeTinyGpt2(modelDir, { layers: 2, dModel: 32, heads: 4, seed, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
  hub.addRepo('test/tiny-gpt2-onnx', await filesOf(modelDir, ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'], '.').then((f) => f.map((x) => ({ ...x, path: x.path.slice(2) }))));

  // A Gemma Scope-style release: params.npz in average_l0_<n> folders.
  const r = rng(seed);
  const gemma = [];
  for (const l0 of [40, 95, 130]) {
    const dir = join(root, `gemma-${l0}`);
    await mkdir(dir);
    const f = (n: number, s = 0.1) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * s);
    await writeNpz(join(dir, 'params.npz'), {
      W_enc: { shape: [32, 48], data: f(32 * 48) },
      W_dec: { shape: [48, 32], data: f(48 * 32) },
      b_enc: { shape: [48], data: f(48) },
      b_dec: { shape: [32], data: f(32) },
      threshold: { shape: [48], data: f(48).map(Math.abs) },
    });
    gemma.push(...(await filesOf(dir, ['params.npz'], `layer_0/width_16k/average_l0_${l0}`)));
  }
  hub.addRepo('test/tiny-gemma-scope', gemma);

  registry = join(root, 'releases.json');
  await writeFile(
    registry,
    JSON.stringify({
      'tiny-res': {
        repo_id: 'test/tiny-saes',
        model: 'tiny-gpt2',
        onnx_model: { repo: 'test/tiny-gpt2-onnx' },
        format: 'saelens',
        architecture: 'topk',
        d_in: 32,
        saes: [0, 1].map((l) => ({ id: `blocks.${l}.hook_resid_pre`, path: `blocks.${l}.hook_resid_pre`, hook_name: `blocks.${l}.hook_resid_pre`, d_sae: 64 })),
      },
      'tiny-gemma-canonical': {
        repo_id: 'test/tiny-gemma-scope',
        model: 'tiny-gpt2',
        format: 'gemma-scope',
        architecture: 'jumprelu',
        d_in: 32,
        context_size: 1024,
        prepend_bos: true,
        saes: [{ id: 'layer_0/width_16k/canonical', path: 'layer_0/width_16k', hook_name: 'blocks.0.hook_resid_post', canonical_l0: 100 }],
      },
    }),
  );
}, 60_000);
afterAll(async () => {
  await hub?.close();
  for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  await dirs.cleanup();
});

describe('release registry', () => {
  it('has the built-in releases and the user file, with clear errors for unknown names', async () => {
    const all = releases(registry);
    for (const name of ['gpt2-small-res-jb', 'sae-llama-3-8b-32x', 'gemma-scope-2b-pt-res-canonical', 'tiny-res', 'tiny-gemma-canonical']) expect(all.has(name)).toBe(true);
    const jb = all.get('gpt2-small-res-jb')!;
    expect(jb.repo_id).toBe('jbloom/GPT2-Small-SAEs-Reformatted');
    expect(jb.saes.map((s) => s.id)).toContain('blocks.10.hook_resid_pre');
    expect(jb.saes.map((s) => s.id)).toContain('blocks.11.hook_resid_post');
    expectThrow(() => findSae('no-such-release', 'x', registry), ValidationError, 'no-such-release', 'gpt2-small-res-jb');
    expectThrow(() => findSae('gpt2-small-res-jb', 'blocks.99.hook_resid_pre', registry), ValidationError, 'blocks.99.hook_resid_pre', 'blocks.0.hook_resid_pre');
    expectThrow(() => findSae('gpt2-small-res-jb', undefined, registry), ValidationError, 'give an id');
    const bad = join(await dirs.make(), 'bad.json');
    await writeFile(bad, '{"x": {"repo_id": "nope"}}');
    expectThrow(() => releases(bad), FormatError, bad, 'repo_id');
  });
});

describe('loadSae by release', () => {
  it('pulls the files once and loads what a local folder load gives', async () => {
    const a = await loadSae('tiny-res', { id: 'blocks.1.hook_resid_pre', registry });
    const b = await loadSae(local);
    try {
      expect(a.config.hookName).toBe('blocks.1.hook_resid_pre');
      expect(a.config.metadata.release).toBe('tiny-res');
      const x = Float32Array.from({ length: 5 * 32 }, (_, i) => Math.sin(i * 0.37 + seed));
      const [ca, cb] = [await a.encode(x), await b.encode(x)];
      expect(Array.from(ca.indices)).toEqual(Array.from(cb.indices));
      expect(Array.from(ca.values)).toEqual(Array.from(cb.values));
    } finally {
      a.dispose();
      b.dispose();
    }
    const served = hub.bytesServed;
    const again = await loadSae('tiny-res', { id: 'blocks.1.hook_resid_pre', registry, offline: true });
    again.dispose();
    expect(hub.bytesServed).toBe(served);
    await expectReject(() => loadSae('tiny-res', { id: 'blocks.0.hook_resid_pre', registry, offline: true }), FormatError, 'offline');
  });

  it("Gemma Scope's canonical id picks the folder whose L0 is nearest 100, and gets hook and model from the registry", async () => {
    const sae = await loadSae('tiny-gemma-canonical', { id: 'layer_0/width_16k/canonical', registry });
    try {
      expect(sae.config.architecture).toBe('jumprelu');
      expect(sae.config.hookName).toBe('blocks.0.hook_resid_post');
      expect(sae.config.modelName).toBe('tiny-gpt2');
      expect(sae.config.metadata.context_size).toBe(1024);
    } finally {
      sae.dispose();
    }
    expect(hub.requests.some((r) => r.path.includes('/api/models/test/tiny-gemma-scope/tree/'))).toBe(true);
    const fetched = hub.requests.filter((r) => r.path.includes('/resolve/') && r.path.includes('average_l0_')).map((r) => r.path);
    expect(fetched.every((p) => p.includes('average_l0_95'))).toBe(true);
    expect(fetched.length).toBeGreaterThan(0);
  });
});

describe('CLI', () => {
  it('pull, list, and the one-line walk-through with the model from the hub too', async () => {
    const p = await run('pull', 'tiny-res', '--registry', registry);
    expect(p.code, p.err).toBe(0);
    expect(p.out.trim().split('\n')).toHaveLength(2);
    const l = await run('list', '--registry', registry, '--json');
    expect(l.code).toBe(0);
    const rows = JSON.parse(l.out) as { release: string; cached: number; saes: number }[];
    expect(rows.find((r) => r.release === 'tiny-res')).toMatchObject({ saes: 2, cached: 2 });
    const one = await run('list', 'tiny-res', '--registry', registry);
    expect(one.out).toContain('blocks.1.hook_resid_pre');
    const text = 'The king ruled the kingdom with a wise and just hand.';
    const f = await run('features', '--release', 'tiny-res', '--id', 'blocks.1.hook_resid_pre', '--registry', registry, '--json', text);
    expect(f.code, f.err).toBe(0);
    const doc = JSON.parse(f.out) as { sae: string; hook: string; tokens: { text: string; features: { id: number }[] }[] };
    expect(doc.sae).toBe('tiny-res/blocks.1.hook_resid_pre');
    expect(doc.hook).toBe('blocks.1.hook_resid_pre');
    expect(doc.tokens[0]!.text).toBe('<|endoftext|>');
    expect(doc.tokens.slice(1).map((t) => t.text).join('')).toBe(text);
    for (const t of doc.tokens) expect(t.features.length).toBeLessThanOrEqual(5);
    const bad = await run('features', '--release', 'tiny-res', '--id', 'nope', '--registry', registry, text);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('nope');
    expect((await run('pull', '--registry', registry)).code).toBe(2);
    const info = await run('info', 'tiny-res', '--id', 'blocks.0.hook_resid_pre', '--registry', registry);
    expect(info.code, info.err).toBe(0);
    expect(JSON.parse(info.out)).toMatchObject({ dIn: 32, dSae: 64, hookName: 'blocks.0.hook_resid_pre' });
  });
});
