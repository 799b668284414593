// Published transcoders from SAELens's release list (issue 18): the conversion functions
// mwhanna_transcoder, gemma_2_transcoder and mntss_clt_layer_transcoder become readable catalog
// releases, fetched through the hub client from a loopback hub serving files numpy wrote
// (test/fixtures/transcoders, with the script that made them), and a Gemma Scope 2 CLT layer file
// reads from disk. Each load is checked against numpy's float64 encode/decode of the stored
// weights (expected.json: independent of saekit's readers and writer) and against
// test/helpers/reference.js (independent of the kernels), at awkward sizes: d_out != d_in,
// odd widths, F16/BF16 tensors. A cross-layer transcoder loads as SAELens loads it (decoders
// summed) or as one target layer's decoder (cltTarget). Bad files and targets are refused with
// errors naming the file, tensor and shape.
//
// Tolerance: every value is an fp32 dot product of at most 23 terms of O(1) (weights of scale
// 1/sqrt(n), inputs N(0, 1)), within ~1e-6 of float64; 1e-4 catches a wrong weight, slot,
// transposition or bias (off by O(0.1)). The fixture's inputs keep every pre-activation 2e-3
// away from its activation's boundary, so the active sets are exact.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FormatError, ValidationError } from '../src/errors.js';
import { readSaeDir } from '../src/formats/saeDir.js';
import { pullSae, readPretrainedWeights } from '../src/hub/pretrained.js';
import { findSae } from '../src/hub/registry.js';
import { catalogReleases } from '../src/hub/saelensCatalog.js';
import { createSae, loadSae, type Sae } from '../src/sae.js';
import type { SaeWeights } from '../src/types.js';
import { runCli } from './helpers/cli.js';
import { expectReject } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { startHubServer, type HubRepoFile, type HubServer } from './helpers/hubServer.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';

const FIX = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'transcoders');
type Case = { x: number[]; rows: number; pre: number[]; acts: number[]; out: number[] };
const EXPECTED = JSON.parse(readFileSync(join(FIX, 'expected.json'), 'utf8')) as Record<string, Case>;
const TOL = 1e-4;

const dirs = tempDirs();
const open: Sae[] = [];
const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE, HF_HUB_CACHE: process.env.HF_HUB_CACHE, SAEKIT_RELEASES: process.env.SAEKIT_RELEASES };
let hub: HubServer;

/** Every file under a fixture folder, with its path relative to it (a hub repository's files). */
function repoFiles(folder: string): HubRepoFile[] {
  const root = join(FIX, folder);
  const out: HubRepoFile[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push({ path: relative(root, p).split('\\').join('/'), data: new Uint8Array(readFileSync(p)) });
    }
  };
  walk(root);
  return out;
}

beforeAll(async () => {
  hub = await startHubServer();
  process.env.HF_ENDPOINT = hub.url;
  process.env.HF_HUB_CACHE = await dirs.make();
  process.env.SAEKIT_RELEASES = join(await dirs.make(), 'none.json'); // no user file: the catalog's own entries
  delete process.env.HF_HUB_OFFLINE;
  // The real repository ids of SAELens's releases, served from the fixtures.
  hub.addRepo('mwhanna/qwen3-4b-transcoders', repoFiles('repo_mwhanna_qwen3_4b'));
  hub.addRepo('mwhanna/qwen3-14b-transcoders', repoFiles('repo_mwhanna_qwen3_14b'));
  hub.addRepo('google/gemma-scope-2b-pt-transcoders', repoFiles('repo_gemma_scope_2b_pt_transcoders'));
  hub.addRepo('mntss/clt-gemma-2-2b-2.5M', repoFiles('repo_mntss_clt'));
  const layer3 = repoFiles('repo_mwhanna_qwen3_4b').find((f) => f.path === 'layer_3.safetensors')!.data;
  hub.addRepo('mwhanna/qwen3-8b-transcoders', [{ path: 'layer_0.safetensors', data: layer3 }]); // neither W&B file
  hub.addRepo('mwhanna/qwen3-1.7b-transcoders-lowl0', [
    { path: 'wandb-config.yaml', data: new TextEncoder().encode('d_model:\n  value: [13\nd_feature: 37\n') },
    { path: 'layer_0.safetensors', data: layer3 },
  ]);
});
afterAll(async () => {
  for (const s of open) s.dispose();
  await hub?.close();
  for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  await dirs.cleanup();
});

async function load(release: string, id: string, cltTarget?: number | 'sum'): Promise<{ w: SaeWeights; sae: Sae }> {
  const pulled = await pullSae(release, id);
  const w = await readPretrainedWeights(pulled, cltTarget !== undefined ? { cltTarget } : {});
  const sae = await createSae(w, { device: 'cpu' });
  open.push(sae);
  return { w, sae };
}

/** Encode and the prediction (decode, plus the skip term where there is one) against numpy's float64 and reference.js. */
async function expectMatches(w: SaeWeights, sae: Sae, name: string): Promise<void> {
  const e = EXPECTED[name]!;
  expect(e, name).toBeDefined();
  const { dIn, dSae } = w.config;
  const dOut = w.config.dOut ?? dIn;
  const x = Float32Array.from(e.x);
  expect(x.length).toBe(e.rows * dIn);
  const codes = await sae.encode(x);
  for (let r = 0; r < e.rows; r++) {
    const want = [...Array(dSae).keys()].filter((j) => e.acts[r * dSae + j]! !== 0);
    const got = Array.from(codes.indices.subarray(codes.indptr[r], codes.indptr[r + 1]));
    expect(got, `${name} row ${r} active latents`).toEqual(want);
    got.forEach((j, t) => expect(Math.abs(codes.values[codes.indptr[r]! + t]! - e.acts[r * dSae + j]!), `${name} row ${r} latent ${j}`).toBeLessThanOrEqual(TOL));
  }
  const out = w.W_skip ? await sae.forward(x) : await sae.decode(codes);
  expect(out.length).toBe(e.rows * dOut);
  for (let i = 0; i < out.length; i++) expect(Math.abs(out[i]! - e.out[i]!), `${name} output ${i}`).toBeLessThanOrEqual(TOL);
  // and the kernels against the plain float64 reference on the loaded weights
  expect(compareCodes(w, referenceEncode(w, x), codes)).toEqual([]);
  const ref = referenceDecode(w, codes);
  const dec = await sae.decode(codes);
  for (let i = 0; i < dec.length; i++) expect(Math.abs(dec[i]! - ref.x[i]!)).toBeLessThanOrEqual(ref.tol[i]!);
}

describe('the catalog reads the transcoder conversion functions', () => {
  it('lists every mwhanna_transcoder, gemma_2_transcoder and mntss_clt_layer_transcoder release as readable, with hooks as SAELens names them', () => {
    const { readable, unreadable } = catalogReleases();
    const byFunc = (f: string) => readable.filter((e) => e.format === f);
    expect(byFunc('mwhanna-transcoder').map((e) => e.saes.length).reduce((a, b) => a + b, 0)).toBe(208);
    expect(byFunc('mwhanna-transcoder')).toHaveLength(6);
    expect(byFunc('gemma-scope-transcoder').map((e) => e.saes.length)).toEqual([26]);
    expect(byFunc('mntss-clt-layer').map((e) => e.saes.length)).toEqual([26]);
    expect(unreadable.filter((u) => /transcoder/.test(u.conversion_func ?? ''))).toEqual([]);
    expect(findSae('mwhanna-qwen3-4b-transcoders', 'layer_10').sae).toMatchObject({ path: 'layer_10.safetensors', hook_name: 'blocks.10.mlp.hook_in', hook_name_out: 'blocks.10.hook_mlp_out' });
    const g = findSae('gemma-scope-2b-pt-transcoders', 'layer_3/width_16k/average_l0_54');
    expect(g.entry).toMatchObject({ d_in: 2304, architecture: 'jumprelu_transcoder', context_size: 1024, prepend_bos: true });
    expect(g.sae).toMatchObject({ hook_name: 'blocks.3.ln2.hook_normalized', hook_name_out: 'blocks.3.hook_mlp_out', d_sae: 16384 });
    expect(findSae('mntss-gemma-2-2b-2.5m-clt-as-per-layer', 'layer_25').sae).toMatchObject({ path: '25', hook_name: '' });
  });
});

describe('mwhanna_transcoder', () => {
  it('layer_N.safetensors + wandb-config.yaml + config.yaml: a ReLU transcoder, W_enc stored [d_sae, d_in], an F16 decoder', async () => {
    const { w, sae } = await load('mwhanna-qwen3-4b-transcoders', 'layer_3');
    expect(w.config).toMatchObject({
      architecture: 'standard', dIn: 13, dSae: 37, dOut: 13, applyBDecToInput: false, dtype: 'float16', format: 'circuit-tracer',
      hookName: 'blocks.3.mlp.hook_in', hookNameOut: 'blocks.3.hook_mlp_out', modelName: 'Qwen/Qwen3-4B',
    });
    expect(w.config.metadata).toMatchObject({ conversion_func: 'mwhanna_transcoder', context_size: 8192, release: 'mwhanna-qwen3-4b-transcoders', sae_id: 'layer_3', model_from_pretrained_kwargs: { fold_ln: false } });
    expect([w.encTransposed, w.W_skip, w.threshold]).toEqual([true, undefined, undefined]);
    await expectMatches(w, sae, 'mwhanna_layer_3');
  });

  it('the 14b layout: no config.yaml (model from the repository name), the typo wanb-config.yaml, a BF16 encoder', async () => {
    const { w, sae } = await load('mwhanna-qwen3-14b-transcoders', 'layer_0');
    expect(w.config).toMatchObject({ dIn: 8, dSae: 11, dOut: 8, modelName: 'Qwen/Qwen3-14B', hookName: 'blocks.0.mlp.hook_in' });
    expect(w.config.metadata.context_size).toBe(4096);
    await expectMatches(w, sae, 'mwhanna14b_layer_0');
    const asked = hub.requests.filter((r) => r.path.includes('/mwhanna/qwen3-14b-transcoders/resolve/')).map((r) => r.path.split('/').pop());
    expect(asked).toContain('wandb-config.yaml'); // tried first, as SAELens does
    expect(asked).toContain('wanb-config.yaml');
  });

  it('offline, the cache answers: the typo name and the absent config.yaml are found or skipped without the hub', async () => {
    const served = hub.requests.length;
    const sae = await loadSae('mwhanna-qwen3-14b-transcoders', { id: 'layer_0', offline: true, device: 'cpu' });
    open.push(sae);
    expect(sae.config.modelName).toBe('Qwen/Qwen3-14B');
    expect(hub.requests.length).toBe(served);
    await expectReject(() => loadSae('mwhanna-qwen3-14b-transcoders', { id: 'layer_1', offline: true }), FormatError, 'layer_1.safetensors', 'offline');
  });

  it('loadSae(release, { id }) and `saekit info` give the same transcoder', async () => {
    const sae = await loadSae('mwhanna-qwen3-4b-transcoders', { id: 'layer_3', device: 'cpu' });
    open.push(sae);
    expect([sae.dIn, sae.dSae, sae.dOut]).toEqual([13, 37, 13]);
    const info = await runCli('info', 'mwhanna-qwen3-4b-transcoders', '--id', 'layer_3');
    expect(info.code, info.err).toBe(0);
    expect(JSON.parse(info.out)).toMatchObject({ kind: 'transcoder', dIn: 13, dOut: 13, hookNameOut: 'blocks.3.hook_mlp_out' });
  });

  it('refuses extra tensors, a wrong shape, a missing tensor, missing or malformed YAML, naming the file and tensor', async () => {
    await expectReject(() => load('mwhanna-qwen3-4b-transcoders', 'layer_7'), FormatError, 'layer_7.safetensors', "'W_skip'", 'mwhanna_transcoder');
    await expectReject(() => load('mwhanna-qwen3-4b-transcoders', 'layer_8'), FormatError, 'layer_8.safetensors', "tensor 'W_dec' has shape [37, 14]", 'expected [37, 13]');
    await expectReject(() => load('mwhanna-qwen3-4b-transcoders', 'layer_9'), FormatError, 'layer_9.safetensors', "no tensor 'b_dec'");
    await expectReject(() => pullSae('mwhanna-qwen3-8b-transcoders', 'layer_0'), FormatError, 'wandb-config.yaml', 'wanb-config.yaml', '404');
    await expectReject(() => load('mwhanna-qwen3-1.7b-transcoders-lowl0', 'layer_0'), FormatError, 'wandb-config.yaml', 'not valid YAML');
    await expectReject(() => load('mwhanna-qwen3-4b-transcoders', 'layer_3', 4), ValidationError, 'cltTarget', 'not one');
  });
});

describe('gemma_2_transcoder', () => {
  it("Gemma Scope's params.npz under SAELens's other array names: jumprelu, ln2.hook_normalized -> hook_mlp_out", async () => {
    const { w, sae } = await load('gemma-scope-2b-pt-transcoders', 'layer_3/width_16k/average_l0_54');
    expect(w.config).toMatchObject({
      architecture: 'jumprelu', dIn: 11, dSae: 19, dOut: 11, applyBDecToInput: false, format: 'gemmascope',
      hookName: 'blocks.3.ln2.hook_normalized', hookNameOut: 'blocks.3.hook_mlp_out', modelName: 'gemma-2-2b',
    });
    expect(w.config.metadata).toMatchObject({ conversion_func: 'gemma_2_transcoder', context_size: 1024, prepend_bos: true });
    await expectMatches(w, sae, 'gemma_transcoder_layer_3');
  });

  it('refuses two arrays that mean the same tensor', async () => {
    await expectReject(() => load('gemma-scope-2b-pt-transcoders', 'layer_4/width_16k/average_l0_88'), FormatError, 'params.npz', "'w_enc'", "'W_E'", 'W_enc');
  });
});

describe('mntss_clt_layer_transcoder: one layer of a cross-layer transcoder', () => {
  it("loads as SAELens does by default: the decoders to layers L.. summed, hooks from config.yaml; threshold_L makes it JumpReLU", async () => {
    const { w, sae } = await load('mntss-gemma-2-2b-2.5m-clt-as-per-layer', 'layer_1');
    expect(w.config).toMatchObject({
      architecture: 'jumprelu', dIn: 9, dSae: 23, dOut: 7, applyBDecToInput: false, format: 'circuit-tracer', modelName: 'google/gemma-2-2b',
      hookName: 'blocks.1.hook_resid_mid', hookNameOut: 'blocks.1.hook_mlp_out',
    });
    expect(w.config.metadata).toMatchObject({ conversion_func: 'mntss_clt_layer_transcoder', clt_layer: 1, clt_target: 'sum', clt_target_layers: [1, 4] });
    expect(String(w.config.metadata.clt_decoder)).toContain('sum over target layers 1..4');
    await expectMatches(w, sae, 'clt_layer_1_sum');
    const relu = await load('mntss-gemma-2-2b-2.5m-clt-as-per-layer', 'layer_3');
    expect(relu.w.config).toMatchObject({ architecture: 'standard', dtype: 'float32', hookNameOut: 'blocks.3.hook_mlp_out' });
    await expectMatches(relu.w, relu.sae, 'clt_layer_3_sum');
  });

  it.each([1, 2, 3, 4])('cltTarget %i: layer 1\'s decoder to that layer, its output hook, b_dec only for layer 1 itself', async (target) => {
    const { w, sae } = await load('mntss-gemma-2-2b-2.5m-clt-as-per-layer', 'layer_1', target);
    expect(w.config.hookNameOut).toBe(`blocks.${target}.hook_mlp_out`);
    expect(w.config.metadata.clt_target).toBe(target);
    expect(w.config.metadata.b_dec_note !== undefined).toBe(target !== 1);
    await expectMatches(w, sae, `clt_layer_1_target_${target}`);
  });

  it('loadSae passes cltTarget; the CLI takes --clt-target', async () => {
    const sae = await loadSae('mntss-gemma-2-2b-2.5m-clt-as-per-layer', { id: 'layer_3', cltTarget: 4, device: 'cpu' });
    open.push(sae);
    expect(sae.config.hookNameOut).toBe('blocks.4.hook_mlp_out');
    const info = await runCli('info', 'mntss-gemma-2-2b-2.5m-clt-as-per-layer', '--id', 'layer_3', '--clt-target', '3');
    expect(info.code, info.err).toBe(0);
    expect(JSON.parse(info.out)).toMatchObject({ kind: 'transcoder', dIn: 9, dOut: 7, hookNameOut: 'blocks.3.hook_mlp_out', metadata: { clt_target: 3 } });
    const bad = await runCli('info', 'mntss-gemma-2-2b-2.5m-clt-as-per-layer', '--id', 'layer_3', '--clt-target', 'all');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--clt-target');
    const notClt = await runCli('info', 'mwhanna-qwen3-4b-transcoders', '--id', 'layer_3', '--clt-target', '3');
    expect(notClt.code).toBe(1); // the release reader's ValidationError
    expect(notClt.err).toContain('cross-layer');
  });

  it('refuses a target out of range (naming the file and shape), a bad target, and a decoder that disagrees with its encoder', async () => {
    for (const t of [0, 5]) {
      await expectReject(() => load('mntss-gemma-2-2b-2.5m-clt-as-per-layer', 'layer_1', t), ValidationError, `cltTarget ${t}`, 'W_dec_1.safetensors', "'W_dec_1' has shape [23, 4, 7]", 'layers 1..4');
    }
    for (const t of [-1, 1.5, 'all']) {
      await expectReject(() => loadSae('mntss-gemma-2-2b-2.5m-clt-as-per-layer', { id: 'layer_1', cltTarget: t as never }), ValidationError, 'cltTarget');
    }
    await expectReject(() => load('mntss-gemma-2-2b-2.5m-clt-as-per-layer', 'layer_4'), FormatError, 'W_dec_4.safetensors', '[22, 1, 7]', 'd_sae 23');
  });

  it('saekit list and pull show the layout: hooks in the files, files at the repository root', async () => {
    const l = await runCli('list', 'mntss-gemma-2-2b-2.5m-clt-as-per-layer');
    expect(l.code, l.err).toBe(0);
    expect(l.out).toContain('(mntss-clt-layer)');
    expect(l.out).toMatch(/\* layer_1 +\(in its files\)/); // pulled above: cached
    const m = await runCli('list', 'mwhanna-qwen3-4b-transcoders');
    expect(m.out).toContain('blocks.3.mlp.hook_in -> blocks.3.hook_mlp_out');
    const p = await runCli('pull', 'mntss-gemma-2-2b-2.5m-clt-as-per-layer', '--id', 'layer_3');
    expect(p.code, p.err).toBe(0);
    expect(p.out).toContain('mntss-gemma-2-2b-2.5m-clt-as-per-layer layer_3 -> ');
  });
});

describe('Gemma Scope 2 CLT layer file (clt/<name>/layer_L.safetensors, w_dec [d_sae, layers, d_out])', () => {
  const file = join(FIX, 'gemma_scope_2_clt', 'clt', 'width_16k_l0_medium_affine', 'layer_2.safetensors');

  it.each([
    ['sum', 'gs2_clt_sum', 2, true],
    [2, 'gs2_clt_target_2', 2, true],
    [3, 'gs2_clt_target_3', 3, false], // layer 2's bias and same-layer skip do not apply to layer 3
  ] as const)('cltTarget %s', async (target, name, outLayer, skip) => {
    const w = await readSaeDir(file, { cltTarget: target });
    expect(w.config).toMatchObject({ architecture: 'jumprelu', dIn: 10, dSae: 17, dOut: 10, hookNameOut: `blocks.${outLayer}.hook_mlp_out` });
    expect(w.config.metadata).toMatchObject({ clt_layer: 2, clt_target: target, clt_target_layers: [0, 3] });
    expect(w.W_skip !== undefined).toBe(skip);
    const sae = await createSae(w, { device: 'cpu' });
    open.push(sae);
    await expectMatches(w, sae, name);
  });

  it('refuses targets before its layer or past the last, naming the file and shape; loadSae takes the file', async () => {
    await expectReject(() => readSaeDir(file, { cltTarget: 1 }), ValidationError, 'cltTarget 1', 'layer_2.safetensors', "'w_dec' has shape [17, 4, 10]", '2..3');
    await expectReject(() => readSaeDir(file, { cltTarget: 4 }), ValidationError, 'cltTarget 4', '2..3');
    const sae = await loadSae(file, { cltTarget: 3, device: 'cpu' });
    open.push(sae);
    expect(sae.config.hookNameOut).toBe('blocks.3.hook_mlp_out');
  });
});
