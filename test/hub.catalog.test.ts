// SAELens's own release list as saekit's catalog (data/saelens-releases.json.gz, converted from
// sae_lens/pretrained_saes.yaml by scripts/convert-saelens-releases.mjs): the counts SAELens's
// file has (../shared/data/README.md states them independently), which releases saekit reads
// and why not the others, Gemma Scope 1 configs inferred as SAELens's loader does, `saekit
// list`, and a catalog release loaded through the loopback hub.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveSaeLens } from '../src/formats/index.js';
import { findSae, releases } from '../src/hub/registry.js';
import { catalogEntry, catalogReleases, saelensCatalog } from '../src/hub/saelensCatalog.js';
import { loadSae } from '../src/sae.js';
import { runCli } from './helpers/cli.js';
import { randomWeights, tempDirs } from './helpers/formatsFixtures.js';
import { startHubServer, type HubServer } from './helpers/hubServer.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('hub.catalog.test');
const dirs = tempDirs();
const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE, HF_HUB_CACHE: process.env.HF_HUB_CACHE, SAEKIT_RELEASES: process.env.SAEKIT_RELEASES };
let hub: HubServer;
let local: string;

beforeAll(async () => {
  hub = await startHubServer();
  process.env.HF_ENDPOINT = hub.url;
  process.env.HF_HUB_CACHE = await dirs.make();
  process.env.SAEKIT_RELEASES = join(await dirs.make(), 'none.json'); // no user file
  delete process.env.HF_HUB_OFFLINE;
  // SAELens's pythia-70m-deduped-res-sm keeps blocks.0.hook_resid_pre in the folder e-res-sm.
  const w = randomWeights('standard', 32, 64, seed, 4);
  w.config.hookName = 'blocks.0.hook_resid_pre';
  w.config.normalizeActivations = 'none';
  local = join(await dirs.make(), 'sae');
  await saveSaeLens(local, w);
  hub.addRepo('ctigges/pythia-70m-deduped__res-sm_processed', await Promise.all(['cfg.json', 'sae_weights.safetensors'].map(async (f) => ({ path: `e-res-sm/${f}`, data: new Uint8Array(await readFile(join(local, f))) }))));
});
afterAll(async () => {
  await hub.close();
  for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  await dirs.cleanup();
});

describe('the SAELens release catalog', () => {
  it("holds SAELens's file: 156 releases, 13,313 SAE ids, the conversion_func counts", () => {
    const c = saelensCatalog();
    expect(c.source).toContain('b18591515');
    expect(Object.keys(c.data)).toHaveLength(156);
    expect(Object.values(c.data).reduce((n, r) => n + r.saes.length, 0)).toBe(13313);
    const by = new Map<string, [number, number]>();
    for (const r of Object.values(c.data)) {
      const k = r.conversion_func ?? 'null';
      const [a, b] = by.get(k) ?? [0, 0];
      by.set(k, [a + 1, b + r.saes.length]);
    }
    expect(by.get('gemma_3')).toEqual([75, 8784]);
    expect(by.get('null')).toEqual([28, 292]);
    expect(by.get('gemma_2')).toEqual([16, 2833]);
    expect(by.get('dictionary_learning_1')).toEqual([16, 838]);
    expect(by.get('llama_scope')).toEqual([6, 192]);
    expect(by.get('mwhanna_transcoder')).toEqual([6, 208]);
  });

  it('every release is readable or has a specific reason; the readable ones are SAELens, Gemma Scope 1 and the transcoder layouts', () => {
    const { readable, unreadable } = catalogReleases();
    expect(readable.length + unreadable.length).toBe(156);
    expect(readable.length).toBe(28 + 16 + 6 + 1 + 1); // + mwhanna_transcoder, gemma_2_transcoder, mntss_clt_layer_transcoder
    for (const u of unreadable) expect(u.reason, u.release).not.toMatch(/no reader$/);
    expect(unreadable.find((u) => u.conversion_func === 'gemma_3')!.reason).toContain('Gemma Scope 2');
    expect(new Set(readable.map((e) => e.format))).toEqual(new Set(['saelens', 'gemma-scope', 'mwhanna-transcoder', 'gemma-scope-transcoder', 'mntss-clt-layer']));
  });

  it("Gemma Scope 1: hook, d_in and d_sae from the repository and path, as SAELens's loader infers them", () => {
    const c = saelensCatalog().data;
    const res = catalogEntry('gemma-scope-2b-pt-res', c['gemma-scope-2b-pt-res']!).entry!;
    expect(res.d_in).toBe(2304);
    expect(res.saes).toHaveLength(316 - 4); // the 4 embedding SAEs are left out
    expect(res.saes[0]).toMatchObject({ hook_name: 'blocks.0.hook_resid_post', d_sae: 16384 });
    const big = catalogEntry('gemma-scope-27b-pt-res', c['gemma-scope-27b-pt-res']!).entry!;
    expect(big.d_in).toBe(4608);
    expect(big.saes[0]).toMatchObject({ id: 'layer_10/width_131k/average_l0_106', hook_name: 'blocks.10.hook_resid_post', d_sae: 131072 });
    const att = catalogEntry('gemma-scope-9b-pt-att-canonical', c['gemma-scope-9b-pt-att-canonical']!).entry!;
    expect(att.d_in).toBe(4096);
    expect(att.saes[0]).toMatchObject({ id: 'layer_0/width_16k/canonical', path: 'layer_0/width_16k/average_l0_61', hook_name: 'blocks.0.attn.hook_z' });
    const mlp = catalogEntry('gemma-scope-2b-pt-mlp-canonical', c['gemma-scope-2b-pt-mlp-canonical']!).entry!;
    expect(mlp.saes[3]).toMatchObject({ hook_name: 'blocks.3.hook_mlp_out' });
  });

  it('releases() joins the catalog and the curated built-ins (which win); findSae finds catalog ids', () => {
    const all = releases();
    expect(all.get('gpt2-small-res-jb')!.context_size).toBe(128); // the built-in
    expect(all.get('gpt2-small-mlp-out-v5-32k')!.onnx_model?.repo).toBe('Xenova/gpt2');
    expect(findSae('pythia-70m-deduped-res-sm', 'blocks.0.hook_resid_pre').sae.path).toBe('e-res-sm');
    expect(all.has('gemma-scope-2-4b-pt-transcoders-all')).toBe(false);
  });

  it('a catalog release loads through the hub (its folder name is not its id), equal to the local files', async () => {
    const a = await loadSae('pythia-70m-deduped-res-sm', { id: 'blocks.0.hook_resid_pre' });
    const b = await loadSae(local);
    try {
      expect(a.dIn).toBe(32);
      expect(a.config.hookName).toBe('blocks.0.hook_resid_pre');
      const x = Float32Array.from({ length: 3 * 32 }, (_, i) => Math.sin(i));
      const ca = await a.encode(x);
      const cb = await b.encode(x);
      expect(Array.from(ca.indices)).toEqual(Array.from(cb.indices));
      expect(Array.from(ca.values)).toEqual(Array.from(cb.values));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('saekit list shows readable releases and groups the others by reason', async () => {
    const r = await runCli('list');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('gemma-scope-9b-pt-mlp-canonical');
    expect(r.out).toContain('53 releases in layouts saekit reads');
    expect(r.out).toContain('gemma_3: Gemma Scope 2 layout');
    expect(r.out).toContain('(75 releases, 8784 SAEs)');
    const all = await runCli('list', '--all');
    expect(all.out).toContain('- gemma-scope-2-4b-pt-transcoders-all');
    const j = JSON.parse((await runCli('list', '--json')).out) as { release: string; readable: boolean; reason?: string }[];
    expect(j.filter((r) => !r.readable)).toHaveLength(104);
    expect(j.filter((r) => r.readable)).toHaveLength(53);
    expect(j.find((r) => r.release === 'gemma-scope-2-4b-pt-transcoders-all')!.reason).toContain('Gemma Scope 2');
  });
});
