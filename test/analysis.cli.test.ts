// `saekit analyze` end to end on a generated GPT-2 and an SAE trained on it: the dashboard it
// writes is checked against an independent forward + encode, then driven in a real headless
// browser (index lists and filters, a feature page shades tokens by value, the screenshot is
// not blank); `saekit feature` prints the same top examples; bad input gives clear errors.
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DashboardIndex, FeatureDoc } from '../src/analysis/types.js';
import { padBatch, readCorpus, tokenWindows } from '../src/model/corpus.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { loadSae } from '../src/sae.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';
import { runCli } from './helpers/cli.js';

const seed = freshSeed('analysis.cli.test');
const dirs = tempDirs();
let root: string;
let M: string;
let SAE: string;
let corpus: string;
const HOOK = 'blocks.1.hook_resid_pre';
const D_SAE = 128;

const run = runCli;

beforeAll(async () => {
  root = await dirs.make();
  M = join(root, 'tiny');
  corpus = join(root, 'corpus.txt');
  await writeFile(corpus, syntheticText(500, seed));
  expect((await run('gen-model', '--output', M, '--layers', '2', '--d-model', '32', '--heads', '4', '--seed', String(seed % 1000))).code).toBe(0);
  const acts = join(root, 'acts');
  expect((await run('activations', '--model', M, '--hook', HOOK, '--text', corpus, '--tokens', '8192', '--context-size', '32', '--output', acts)).code).toBe(0);
  SAE = join(root, 'sae');
  const r = await run('train', '--input', acts, '--output', SAE, '--k', '4', '--d-sae', String(D_SAE), '--tokens', '60000', '--batch-size', '256');
  expect(r.code, r.err).toBe(0);
}, 120_000);
afterAll(() => dirs.cleanup());

describe('saekit analyze', () => {
  let dash: string;
  let index: DashboardIndex;

  it('writes a dashboard whose examples equal an independent forward + encode', async () => {
    dash = join(root, 'dash');
    const r = await run('analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '4096', '--output', dash, '--top-n', '8');
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/analysed 4096 tokens/);
    index = JSON.parse(await readFile(join(dash, 'index.json'), 'utf8')) as DashboardIndex;
    expect(index.features).toHaveLength(D_SAE);
    expect(index.hook).toBe(HOOK);
    expect((await readdir(join(dash, 'features'))).length).toBe(D_SAE);
    // The most frequent feature's top example, recomputed from its window.
    const best = [...index.features].sort((a, b) => b.frac_nonzero - a.frac_nonzero)[0]!;
    const doc = JSON.parse(await readFile(join(dash, 'features', `${best.id}.json`), 'utf8')) as FeatureDoc;
    const top = doc.activations.filter((a) => a.bin === 'top');
    expect(top.length).toBe(8);
    expect(top[0]!.maxValue).toBeCloseTo(doc.max_act, 6);
    expect(top.map((a) => a.maxValue)).toEqual([...top.map((a) => a.maxValue)].sort((a, b) => b - a));
    expect(doc.pos_str).toHaveLength(10);
    const model = await LanguageModel.load(M);
    const sae = await loadSae(SAE);
    try {
      const windows: Int32Array[] = [];
      for await (const w of tokenWindows(readCorpus(corpus), model.tokenizer, { contextSize: 32, prependBos: true, maxTokens: 4096 })) windows.push(w);
      for (const ex of top.slice(0, 3)) {
        const win = windows[Math.floor(ex.row / 32)]!;
        const pos = ex.row % 32;
        const { hooks } = await model.forward(padBatch([win], 0), { hooks: [HOOK] });
        const codes = await sae.encode(hooks.get(HOOK)!);
        const valueAt = (p: number) => {
          for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) if (codes.indices[i] === best.id) return codes.values[i]!;
          return 0;
        };
        expect(valueAt(pos)).toBeCloseTo(ex.maxValue, 4);
        const from = pos - ex.maxValueTokenIndex;
        ex.values.forEach((v, j) => expect(v).toBeCloseTo(valueAt(from + j), 4));
        expect(ex.tokenIds).toEqual(Array.from(win.subarray(from, from + ex.tokenIds.length)));
        expect(ex.tokens).toEqual(ex.tokenIds.map((t) => model.tokenText(t)));
        expect(ex.tokenIds[ex.maxValueTokenIndex]).not.toBe(model.tokenizer.bosId); // BOS is left out
      }
    } finally {
      sae.dispose();
      await model.dispose();
    }
  });

  it('also runs over a dump, and `saekit feature` prints the top examples', async () => {
    const dash2 = join(root, 'dash-dump');
    const r = await run('analyze', '--activations', join(root, 'acts'), '--sae', SAE, '--output', dash2, '--tokens', '2048', '--no-logits');
    expect(r.code, r.err).toBe(0);
    const idx = JSON.parse(await readFile(join(dash2, 'index.json'), 'utf8')) as DashboardIndex;
    expect(idx.features).toHaveLength(D_SAE);
    expect(idx.features.every((f) => f.pos_str.length === 0)).toBe(true);
    const best = [...idx.features].sort((a, b) => b.frac_nonzero - a.frac_nonzero)[0]!;
    const f = await run('feature', '--model', M, '--sae', SAE, '--text', corpus, '--id', String(best.id), '--tokens', '2048', '--top', '3');
    expect(f.code, f.err).toBe(0);
    const lines = f.out.trim().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^feature ${best.id} of .* fired on \\d+ of \\d+ tokens`));
    expect(lines.slice(1)).toHaveLength(3);
    for (const line of lines.slice(1)) expect(line).toMatch(/^ +\d\. +\d+\.\d{3}  .*\[\[.+\]\]/);
  });

  it('saved states from separate parts merge into one dashboard', async () => {
    const s1 = join(root, 's1.safetensors');
    const s2 = join(root, 's2.safetensors');
    const r1 = await run('analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '1024', '--output', join(root, 'd1'), '--save-state', s1, '--no-logits');
    expect(r1.code, r1.err).toBe(0);
    const r2 = await run('analyze', '--activations', join(root, 'acts'), '--model', M, '--sae', SAE, '--tokens', '2048', '--output', join(root, 'd2'), '--save-state', s2, '--no-logits');
    expect(r2.code, r2.err).toBe(0);
    const merged = join(root, 'd-merged');
    const r = await run('analyze', '--model', M, '--sae', SAE, '--resume', s1, '--resume', s2, '--output', merged, '--no-logits');
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('merged 2 saved states');
    const [i1, i2, im] = await Promise.all(['d1', 'd2', 'd-merged'].map(async (d) => JSON.parse(await readFile(join(root, d, 'index.json'), 'utf8')) as DashboardIndex));
    expect(im.tokens_seen).toBe(i1!.tokens_seen + i2!.tokens_seen);
    for (let f = 0; f < D_SAE; f++) {
      const count = (i: DashboardIndex) => Math.round(i.features[f]!.frac_nonzero * i.tokens_seen);
      expect(count(im!)).toBe(count(i1!) + count(i2!));
      expect(im!.features[f]!.max_act).toBe(Math.max(i1!.features[f]!.max_act, i2!.features[f]!.max_act));
    }
  });

  it('bad input: usage errors exit 2, file errors exit 1 naming the file, nothing half-written', async () => {
    expect((await run('analyze', '--sae', SAE, '--output', join(root, 'x'))).code).toBe(2);
    expect((await run('analyze', '--sae', SAE, '--text', corpus, '--tokens', '10', '--output', join(root, 'x'))).code).toBe(2);
    const used = join(root, 'used');
    await mkdir(used);
    await writeFile(join(used, 'mine.txt'), 'keep');
    const u = await run('analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '256', '--output', used);
    expect(u.code).toBe(1);
    expect(u.err).toContain(used);
    expect(u.err).not.toContain('analysed'); // refused before the analysis ran
    expect(await readdir(used)).toEqual(['mine.txt']);
    // The first test's command again (a rerun after a kill once the dashboard had landed): a
    // no-op that leaves the dashboard as it is. Other flags into that folder: refused.
    const before = await readFile(join(dash, 'index.json'), 'utf8');
    const again = await run('analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '4096', '--output', dash, '--top-n', '8');
    expect(again.code, again.err).toBe(0);
    expect(again.err).toContain('already holds this dashboard, finished');
    expect(await readFile(join(dash, 'index.json'), 'utf8')).toBe(before);
    const other = await run('analyze', '--model', M, '--sae', SAE, '--text', corpus, '--tokens', '4096', '--output', dash, '--top-n', '9');
    expect(other.code).toBe(1);
    expect(other.err).toContain('made by other flags');
    expect(await readFile(join(dash, 'index.json'), 'utf8')).toBe(before);
    const notDump = await run('analyze', '--activations', root, '--sae', SAE, '--output', join(root, 'y'));
    expect(notDump.code).toBe(2);
    expect(notDump.err).toContain('manifest');
    expect(existsSync(join(root, 'y'))).toBe(false);
    // A corrupt saved state and a dump missing a shard name the file at fault.
    const junk = join(root, 'junk.safetensors');
    await writeFile(junk, 'not a safetensors file');
    const j = await run('analyze', '--model', M, '--sae', SAE, '--resume', junk, '--output', join(root, 'z1'));
    expect(j.code).toBe(1);
    expect(j.err).toContain(junk);
    const broken = join(root, 'acts-broken');
    await mkdir(broken);
    const man = JSON.parse(await readFile(join(root, 'acts', 'manifest.json'), 'utf8'));
    await writeFile(join(broken, 'manifest.json'), JSON.stringify(man));
    const b = await run('analyze', '--activations', broken, '--model', M, '--sae', SAE, '--output', join(root, 'z2'));
    expect(b.code).toBe(1);
    expect(b.err).toContain(join(broken, man.activations[0]));
    expect(existsSync(join(root, 'z1')) || existsSync(join(root, 'z2'))).toBe(false);
    const badId = await run('feature', '--model', M, '--sae', SAE, '--text', corpus, '--id', String(D_SAE));
    expect(badId.code).toBe(1);
    expect(badId.err).toContain(`d_sae ${D_SAE}`);
  });

  const chromiumPath = [process.env.CHROMIUM_PATH, '/usr/bin/chromium'].find((p) => p && existsSync(p));
  if (!chromiumPath && process.env.SAEKIT_REQUIRE_BROWSER === '1') {
    it('the dashboard browser test needs chromium', () => {
      throw new Error('SAEKIT_REQUIRE_BROWSER=1 but no chromium: apt-get install chromium, or set CHROMIUM_PATH');
    });
  }
  describe.skipIf(!chromiumPath)('the analyze dashboard in a browser', () => {
    let browser: Browser;
    let page: Page;
    beforeAll(async () => {
      browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
      page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    });
    afterAll(async () => {
      await browser?.close();
    });

    it('index lists and filters the features; a feature page shades tokens by value; the screenshot is not blank', async () => {
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(pathToFileURL(join(dash, 'index.html')).href);
      await page.waitForSelector('body[data-state="ready"]');
      expect(await page.$$eval('table#features tbody tr', (r) => r.length)).toBe(D_SAE);
      // Search by a top token: exactly the features whose top token or promoted tokens contain it.
      const probe = index.features.find((f) => f.top_token.trim().length >= 3)!.top_token.trim().toLowerCase();
      await page.fill('#search', probe);
      const shown = await page.$$eval('table#features tbody tr', (r) => r.map((tr) => Number(tr.getAttribute('data-id'))));
      const want = index.features.filter((f) => f.top_token.toLowerCase().includes(probe) || f.pos_str.some((p) => p.toLowerCase().includes(probe))).map((f) => f.id);
      expect([...shown].sort((a, b) => a - b)).toEqual(want);
      await page.fill('#search', `#${want[0]}`);
      expect(await page.$$eval('table#features tbody tr', (r) => r.map((tr) => Number(tr.getAttribute('data-id'))))).toEqual([want[0]]);

      const best = [...index.features].sort((a, b) => b.frac_nonzero - a.frac_nonzero)[0]!;
      const doc = JSON.parse(await readFile(join(dash, 'features', `${best.id}.json`), 'utf8')) as FeatureDoc;
      await page.goto(pathToFileURL(join(dash, 'feature.html')).href + `?id=${best.id}`);
      await page.waitForSelector('body[data-state="ready"]');
      expect(await page.textContent('#feature-id')).toBe(String(best.id));
      const toks = await page.$$eval('.example span.tok', (spans) =>
        spans.map((s) => ({ v: Number(s.getAttribute('data-value')), bg: (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(s).backgroundColor })),
      );
      const shown0 = doc.activations[0]!.values;
      expect(toks.slice(0, shown0.length).map((t) => t.v)).toEqual(shown0.map((v) => Number(v)));
      const alpha = (bg: string) => (bg === 'rgba(0, 0, 0, 0)' ? 0 : bg.startsWith('rgba') ? Number(bg.split(',')[3]!.replace(')', '')) : 1);
      // Shading follows the values: sorted by value, the alphas never decrease; zeros are clear.
      const byValue = [...toks].sort((a, b) => a.v - b.v);
      for (let i = 1; i < byValue.length; i++) if (byValue[i]!.v > byValue[i - 1]!.v) expect(alpha(byValue[i]!.bg)).toBeGreaterThanOrEqual(alpha(byValue[i - 1]!.bg) - 1e-6);
      for (const t of toks) if (t.v === 0) expect(alpha(t.bg)).toBe(0);
      expect(toks.some((t) => t.v > 0 && alpha(t.bg) > 0.5)).toBe(true);
      const png = PNG.sync.read(await page.screenshot());
      let nonWhite = 0;
      for (let i = 0; i < png.data.length; i += 4) if (png.data[i]! < 240 || png.data[i + 1]! < 240 || png.data[i + 2]! < 240) nonWhite++;
      expect(nonWhite / (png.width * png.height)).toBeGreaterThan(0.03);
      expect(errors).toEqual([]);
    });
  });
});
