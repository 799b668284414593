// The feature dashboard in a real (headless) browser: the pages must work opened straight from
// disk (file://, where fetch() of local files is blocked) and over the localhost server, show
// token text literally (no HTML injection), shade tokens by value, and draw histograms whose
// bars follow the counts. Writing must be all-or-nothing. The browser is the system's chromium
// driven by playwright-core; without one the browser tests are skipped (or fail when
// SAEKIT_REQUIRE_BROWSER=1), while the file and server checks always run.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Script, runInNewContext } from 'node:vm';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveDashboard, writeDashboard } from '../src/analysis/dashboard.js';
import type { DashboardIndex, FeatureActivation, FeatureDoc } from '../src/analysis/types.js';
import { ValidationError } from '../src/errors.js';
import { expectReject } from './helpers/expectError.js';

// ------------------------------------------------------------------------- synthetic data

const N_FEATURES = 30;
const DEAD = 7;
/** Strings a page must show literally; the first two would set window.__pwned if injected. */
const EVIL = '<script>window.__pwned=1</script>';
const EVIL_IMG = '<img src=x onerror="window.__pwned=2">';
const TOKENS = [EVIL, ' &amp; &', '"quoted"', "'single'", '😀', '\n', '  two spaces', ' the', 'Hello', EVIL_IMG, '\u2028sep', '</script><b>'];
const TOP_TOKENS = [' the', 'Hello', EVIL, '😀', ' &amp; &', '"quoted"', '\n', '  two spaces'];

/** Distinct max_act per live feature (13 is coprime with 30), so the max_act order is known. */
function maxAct(f: number): number {
  return f === DEAD ? 0 : 1 + ((f * 13) % N_FEATURES) * 0.37;
}
function fracNonzero(f: number): number {
  return f === DEAD ? 0 : (1 + (f % 3)) * 10 ** -(1 + (f % 5));
}
function posStr(f: number): string[] {
  return [TOKENS[f % TOKENS.length]!, ` pos${f}`, TOKENS[(f + 5) % TOKENS.length]!];
}
/** The value pattern of every example (times its max): zeros, a low, a high and the max. */
const PATTERN = [0, 0.1, 0, 0.5, 1, 0.25, 0, 0.05];
const HIST = [5, 20, 10, 0, 3, 1];

function example(f: number, k: number, bin: string): FeatureActivation {
  const scale = maxAct(f) * (bin === 'top' ? 1 - 0.1 * k : 0.3 - 0.1 * k);
  const values = PATTERN.map((p) => Math.fround(p * scale));
  const tokens = PATTERN.map((_, i) => TOKENS[(f + k + i) % TOKENS.length]!);
  return { tokens, values, tokenIds: tokens.map((_, i) => 100 * f + i), maxValue: values[4]!, maxValueTokenIndex: 4, bin, row: 1000 * f + 10 * k };
}

function makeDoc(f: number): FeatureDoc {
  const dead = f === DEAD;
  const max = maxAct(f);
  return {
    modelId: 'gpt2-test',
    layer: 'blocks.3.hook_resid_pre',
    index: f,
    frac_nonzero: fracNonzero(f),
    log10_density: Math.log10(fracNonzero(f) + 1e-10),
    count: dead ? 0 : Math.round(fracNonzero(f) * 1e6),
    tokens_seen: 1_000_000,
    max_act: max,
    mean_act: max / 3,
    freq_hist_data_bar_heights: dead ? [] : HIST,
    freq_hist_data_bar_values: dead ? [] : HIST.map((_, i) => ((i + 0.5) * max) / HIST.length),
    logits_hist_data_bar_heights: [2, 8, 30, 9, 1],
    logits_hist_data_bar_values: [-1, -0.5, 0, 0.5, 1],
    pos_str: posStr(f),
    pos_values: [0.9, 0.7, 0.5],
    neg_str: [' neg' + f, '<i>no</i>'],
    neg_values: [-0.8, -0.6],
    activations: dead ? [] : [example(f, 0, 'top'), example(f, 1, 'top'), example(f, 0, 'quantile 1 of 2'), example(f, 1, 'quantile 2 of 2')],
  };
}

function makeIndex(): DashboardIndex {
  const features = Array.from({ length: N_FEATURES }, (_, f) => ({
    id: f,
    frac_nonzero: fracNonzero(f),
    max_act: maxAct(f),
    mean_act: maxAct(f) / 3,
    top_token: f === DEAD ? '' : TOP_TOKENS[f % TOP_TOKENS.length]!,
    pos_str: posStr(f),
  }));
  return { model: 'gpt2-test', hook: 'blocks.3.hook_resid_pre', sae: 'test-sae-32', d_sae: N_FEATURES, tokens_seen: 1_000_000, created: '2025-01-01T00:00:00Z', features };
}

async function* docsAsync(): AsyncGenerator<FeatureDoc> {
  for (let f = 0; f < N_FEATURES; f++) yield makeDoc(f);
}

// ------------------------------------------------------------------------- setup

let root: string; // temp parent of every dashboard
let dash: string; // the dashboard built once for the read-only tests
const index = makeIndex();

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'saekit-dashboard-'));
  dash = join(root, 'dash');
  expect(await writeDashboard(dash, index, docsAsync())).toBe(N_FEATURES);
  await writeFile(join(root, 'secret.txt'), 'outside the dashboard');
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** Names in dir that look like a staging folder left behind. */
async function tempLeftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.includes('.tmp-'));
}

// ------------------------------------------------------------------------- files (no browser)

describe('writeDashboard files', () => {
  it('writes the pages, assets, script-safe data and plain JSON for every feature', async () => {
    const names = (await readdir(dash)).sort();
    expect(names).toEqual(['assets', 'data', 'feature.html', 'features', 'index.html', 'index.json']);
    expect((await readdir(join(dash, 'data', 'features'))).length).toBe(N_FEATURES);
    expect((await readdir(join(dash, 'features'))).length).toBe(N_FEATURES);
    expect(JSON.parse(await readFile(join(dash, 'index.json'), 'utf8'))).toEqual(index);
    // assets/app.js is a classic script (file:// cannot load modules): it must parse as one.
    const app = await readFile(join(dash, 'assets', 'app.js'), 'utf8');
    expect(() => new Script(app)).not.toThrow();
    await readFile(join(dash, 'assets', 'style.css'));

    const js = await readFile(join(dash, 'data', 'features', '0.js'), 'utf8');
    expect(js.startsWith('window.SAEKIT_FEATURE = ')).toBe(true);
    expect(js).not.toContain('<'); // no </script>, no <!--
    expect(js).not.toContain('\u2028');
    const sandbox = { window: {} as Record<string, unknown> };
    runInNewContext(js, sandbox);
    const plain = JSON.parse(await readFile(join(dash, 'features', '0.json'), 'utf8')) as FeatureDoc;
    expect(sandbox.window.SAEKIT_FEATURE).toEqual(plain);
    expect(plain).toEqual(makeDoc(0));

    const idx = await readFile(join(dash, 'data', 'index.js'), 'utf8');
    const box = { window: {} as Record<string, unknown> };
    runInNewContext(idx, box);
    expect(box.window.SAEKIT_INDEX).toEqual(index);
    expect(await tempLeftovers(root)).toEqual([]);
  });

  it('accepts a plain iterable and an existing empty directory', async () => {
    const dir = join(root, 'empty-existing');
    await mkdir(dir);
    expect(await writeDashboard(dir, index, [makeDoc(1), makeDoc(2)])).toBe(2);
    expect((await readdir(join(dir, 'features'))).sort()).toEqual(['1.json', '2.json']);
  });

  it('refuses a non-empty directory, naming it, and leaves it untouched', async () => {
    const dir = join(root, 'not-empty');
    await mkdir(dir);
    await writeFile(join(dir, 'keep.txt'), 'mine');
    await expectReject(() => writeDashboard(dir, index, docsAsync()), ValidationError, dir, 'not empty');
    expect(await readdir(dir)).toEqual(['keep.txt']);
    expect(await readFile(join(dir, 'keep.txt'), 'utf8')).toBe('mine');
    expect(await tempLeftovers(root)).toEqual([]);
  });

  it('leaves neither the output nor a temporary folder when the features fail mid-way', async () => {
    const parent = await mkdtemp(join(root, 'fail-'));
    const dir = join(parent, 'out');
    async function* throwsAfter3(): AsyncGenerator<FeatureDoc> {
      for (let f = 0; f < 3; f++) yield makeDoc(f);
      throw new Error('analysis crashed after 3 docs');
    }
    await expect(writeDashboard(dir, index, throwsAfter3())).rejects.toThrow('analysis crashed after 3 docs');
    expect(await readdir(parent)).toEqual([]);

    // A bad document (id that cannot name a file) and a duplicate id fail the same clean way.
    const bad = { ...makeDoc(1), index: -1 };
    await expectReject(() => writeDashboard(dir, index, [makeDoc(0), bad]), ValidationError, 'features[1].index');
    await expectReject(() => writeDashboard(dir, index, [makeDoc(0), makeDoc(0)]), ValidationError, 'index 0 appears twice');
    expect(await readdir(parent)).toEqual([]);
  });
});

// ------------------------------------------------------------------------- server (no browser)

/** A raw GET that sends the path exactly as given (fetch() would normalise `..` away). */
function rawGet(url: string, path: string): Promise<{ status: number; type: string; body: string }> {
  const u = new URL(url);
  return new Promise((ok, fail) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('serveDashboard', () => {
  it('serves the pages and data with their content types, and nothing outside the folder', async () => {
    const server = await serveDashboard(dash, { port: 0 });
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const home = await rawGet(server.url, '/');
      expect(home.status).toBe(200);
      expect(home.type).toMatch(/^text\/html/);
      expect(home.body).toContain('<table id="features">');
      const json = await rawGet(server.url, '/features/3.json');
      expect(json.status).toBe(200);
      expect(json.type).toMatch(/^application\/json/);
      expect((JSON.parse(json.body) as FeatureDoc).index).toBe(3);
      expect((await rawGet(server.url, '/data/features/3.js?x=1')).type).toMatch(/^text\/javascript/);
      expect((await rawGet(server.url, '/assets/style.css')).type).toMatch(/^text\/css/);
      expect((await rawGet(server.url, '/nope.html')).status).toBe(404);
      for (const path of ['/../package.json', '/%2e%2e/package.json', '/../secret.txt', '/%2e%2e/secret.txt', '/data/%2E%2E/%2e%2e/secret.txt', '/..%2fsecret.txt', '/%2e%2e%5csecret.txt', '/%zz']) {
        const res = await rawGet(server.url, path);
        expect([400, 404], path).toContain(res.status);
        expect(res.body).not.toContain('outside the dashboard');
      }
    } finally {
      await server.close();
    }
  });
});

// ------------------------------------------------------------------------- browser

/** The one browser global used inside page callbacks (the project's tsconfig has no DOM lib). */
declare const getComputedStyle: (e: unknown) => { backgroundColor: string; whiteSpace: string };

function findChromium(): string | undefined {
  for (const p of [process.env.CHROMIUM_PATH, '/usr/bin/chromium']) if (p && existsSync(p)) return p;
  return undefined;
}
const chromiumPath = findChromium();

if (!chromiumPath) {
  const why = 'no chromium found at $CHROMIUM_PATH or /usr/bin/chromium: install Debian\'s chromium (apt-get install chromium) or set CHROMIUM_PATH';
  if (process.env.SAEKIT_REQUIRE_BROWSER === '1') {
    it('dashboard browser tests need chromium', () => {
      throw new Error(`SAEKIT_REQUIRE_BROWSER=1 but ${why}`);
    });
  } else {
    console.warn(`[analysis.dashboard] skipping the browser tests: ${why}`);
    it.skip(`dashboard in a browser (${why})`, () => undefined);
  }
}

describe.skipIf(!chromiumPath)('dashboard in a browser', () => {
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    // --no-sandbox: the tests run as root, where chromium's sandbox refuses to start.
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
  });
  afterAll(async () => {
    await browser?.close();
  });

  const fileUrl = (name: string, query = ''): string => pathToFileURL(join(dash, name)).href + query;
  async function open(url: string, state = 'ready'): Promise<void> {
    await page.goto(url);
    await page.waitForSelector(`body[data-state="${state}"]`, { timeout: 5000 });
  }
  const rowIds = (): Promise<number[]> => page.$$eval('table#features tbody tr', (trs) => trs.map((tr) => Number(tr.getAttribute('data-id'))));
  const idsWhere = (pred: (f: DashboardIndex['features'][number]) => boolean): number[] => index.features.filter(pred).map((f) => f.id);

  it('index over file:// lists, filters, sorts and pages the features', async () => {
    await open(fileUrl('index.html'));
    expect(await page.textContent('#title')).toContain('test-sae-32');
    expect(await page.textContent('#title')).toContain('blocks.3.hook_resid_pre');
    expect(await page.textContent('#meta')).toContain('1,000,000 tokens seen');
    expect(await rowIds()).toEqual(idsWhere(() => true));
    expect(await page.getAttribute(`tr[data-id="${DEAD}"]`, 'class')).toContain('dead');
    expect(await page.textContent(`tr[data-id="2"] td.top-tok`)).toBe(EVIL);
    expect(await page.getAttribute(`tr[data-id="4"] a`, 'href')).toBe('feature.html?id=4');

    // A number filters by id prefix; '#N' is that id exactly.
    await page.fill('#search', '12');
    expect(await rowIds()).toEqual([12]);
    await page.fill('#search', '1');
    expect(await rowIds()).toEqual([1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    await page.fill('#search', '#1');
    expect(await rowIds()).toEqual([1]);
    // Text: case-insensitive substring of top_token or a promoted token.
    for (const q of ['SCRIPT', ' the', 'hello', 'pos2']) {
      await page.fill('#search', q);
      const want = idsWhere((f) => [f.top_token, ...f.pos_str].some((s) => s.toLowerCase().includes(q.toLowerCase())));
      expect(want.length, q).toBeGreaterThan(0);
      expect(await rowIds(), q).toEqual(want);
    }
    await page.fill('#search', 'no token has this');
    expect(await rowIds()).toEqual([]);
    await page.fill('#search', '');

    const byMax = [...index.features].sort((a, b) => b.max_act - a.max_act).map((f) => f.id);
    await page.click('th[data-sort="max_act"]');
    expect(await rowIds()).toEqual(byMax);
    await page.click('th[data-sort="max_act"]');
    expect((await rowIds()).slice(0, 3)).toEqual([...byMax].reverse().slice(0, 3));
    await page.click('th[data-sort="frac_nonzero"]');
    const ids = await rowIds();
    const fr = ids.map((id) => index.features[id]!.frac_nonzero);
    expect(fr).toEqual([...fr].sort((a, b) => b - a));
    expect(ids[ids.length - 1]).toBe(DEAD);
    await page.click('th[data-sort="id"]');
    expect(await rowIds()).toEqual(idsWhere(() => true));

    // Paging: ?rows=N shows N at a time with a "show more" button.
    await open(fileUrl('index.html', '?rows=12'));
    expect((await rowIds()).length).toBe(12);
    await page.click('#show-more');
    expect((await rowIds()).length).toBe(24);
    await page.click('#show-more');
    expect((await rowIds()).length).toBe(N_FEATURES);
    expect(await page.isHidden('#show-more')).toBe(true);
    expect(pageErrors).toEqual([]);
  });

  it('feature page over file:// shows stats, histograms, logits and shaded examples, all literally', async () => {
    const f = 4; // its examples hold both injection strings, the emoji, a newline and spaces
    const doc = makeDoc(f);
    await open(fileUrl('feature.html', `?id=${f}`));
    expect(await page.textContent('#feature-id')).toBe(String(f));
    expect(await page.title()).toContain(`Feature ${f}`);
    expect(await page.getAttribute('#prev', 'href')).toBe(`feature.html?id=${f - 1}`);
    expect(await page.getAttribute('#next', 'href')).toBe(`feature.html?id=${f + 1}`);

    // Examples: one span.tok per token, title/data-value = the exact value, shading by value.
    const ex = await page.$$eval('.example', (rows) =>
      rows.map((r) =>
        [...r.querySelectorAll('span.tok')].map((s) => ({
          text: s.textContent,
          title: s.getAttribute('title'),
          value: s.getAttribute('data-value'),
          bg: getComputedStyle(s).backgroundColor,
          ws: getComputedStyle(s).whiteSpace,
          max: s.classList.contains('max'),
        })),
      ),
    );
    expect(ex.length).toBe(doc.activations.length);
    const first = ex[0]!;
    const act = doc.activations[0]!;
    expect(first.map((t) => t.title)).toEqual(act.values.map(String));
    expect(first.map((t) => t.value)).toEqual(act.values.map(String));
    expect(first.map((t) => t.text)).toEqual(act.tokens.map((s) => s.replace(/\n/g, '\u21B5')));
    expect(first.map((t) => t.max)).toEqual(act.values.map((_, i) => i === act.maxValueTokenIndex));
    const alpha = (bg: string): number => {
      const m = /^rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)$/.exec(bg);
      if (!m) throw new Error(`unexpected color ${bg}`);
      return m[4] === undefined ? 1 : Number(m[4]);
    };
    expect(first[0]!.bg).toBe('rgba(0, 0, 0, 0)'); // value 0: transparent
    const a = first.map((t) => alpha(t.bg));
    // PATTERN = [0, 0.1, 0, 0.5, 1, 0.25, 0, 0.05]: alpha follows value.
    expect(a[1]!).toBeGreaterThan(0);
    expect(a[5]!).toBeGreaterThan(a[1]!);
    expect(a[3]!).toBeGreaterThan(a[5]!);
    expect(a[4]!).toBeGreaterThan(a[3]!);
    expect(a[4]!).toBeCloseTo(1, 2);
    expect(first.every((t) => t.ws === 'pre')).toBe(true);
    const all = ex.flat();
    expect(all.some((t) => t.text === EVIL)).toBe(true);
    expect(all.some((t) => t.text === EVIL_IMG)).toBe(true);
    expect(all.some((t) => t.text === '  two spaces')).toBe(true);
    expect(all.some((t) => t.text === '\u21B5')).toBe(true);
    expect(all.some((t) => t.text === '😀')).toBe(true);
    // Groups: top first, then the quantile bins by label.
    expect(await page.$$eval('#examples section.bin', (s) => s.map((e) => e.getAttribute('data-bin')))).toEqual(['top', 'quantile 1 of 2', 'quantile 2 of 2']);

    // Histogram: one rect per bin, height proportional to the count.
    const bars = await page.$$eval('#act-hist rect.bar', (rs) => rs.map((r) => ({ h: Number(r.getAttribute('height')), c: Number(r.getAttribute('data-count')) })));
    expect(bars.map((b) => b.c)).toEqual(HIST);
    const unit = bars[1]!.h / bars[1]!.c;
    expect(unit).toBeGreaterThan(0);
    for (const b of bars) expect(b.h).toBeCloseTo(b.c * unit, 6);
    expect(await page.$$eval('#logit-hist rect.bar', (rs) => rs.length)).toBe(doc.logits_hist_data_bar_heights.length);

    // Logit lists show the strings (and values) literally.
    const pos = await page.$$eval('#pos-logits li .logit-tok', (s) => s.map((e) => e.textContent));
    expect(pos).toEqual(doc.pos_str.map((s) => s.replace(/\n/g, '\u21B5')));
    const neg = await page.$$eval('#neg-logits li', (s) => s.map((e) => e.textContent));
    expect(neg[1]).toContain('<i>no</i>');
    expect(neg[0]).toContain('-0.8');

    // No injection anywhere: the strings were text, never markup.
    expect(await page.evaluate(() => (globalThis as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.$$('.example img, .example script, .example b, #neg-logits i')).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('feature page for a dead feature and a missing one', async () => {
    await open(fileUrl('feature.html', `?id=${DEAD}`));
    expect(await page.isVisible('#act-hist-empty')).toBe(true);
    expect(await page.$$('.example')).toEqual([]);
    await open(fileUrl('feature.html', '?id=999'), 'error');
    expect(await page.isVisible('#error')).toBe(true);
    expect(await page.textContent('#error')).toContain('No such feature: 999');
    await open(fileUrl('feature.html', '?id=abc'), 'error');
    expect(await page.textContent('#error')).toContain('No such feature');
    await open(fileUrl('feature.html', `?id=${N_FEATURES - 1}`));
    expect(await page.isHidden('#next')).toBe(true);
  });

  it('a screenshot of the feature page is not blank and shows the token shading', async () => {
    await open(fileUrl('feature.html', '?id=5'));
    const png = PNG.sync.read(await page.screenshot());
    let nonWhite = 0;
    let orange = 0;
    for (let i = 0; i < png.data.length; i += 4) {
      const r = png.data[i]!, g = png.data[i + 1]!, b = png.data[i + 2]!;
      if (r < 240 || g < 240 || b < 240) nonWhite++;
      if (r > 230 && g > 90 && g < 170 && b < 60) orange++; // near-max rgba(255,120,0,a) and histogram bars
    }
    const total = png.width * png.height;
    expect(nonWhite / total).toBeGreaterThan(0.05);
    expect(orange).toBeGreaterThan(200);
  });

  it('works over the localhost server too', async () => {
    const server = await serveDashboard(dash);
    try {
      await open(`${server.url}index.html`);
      expect((await rowIds()).length).toBe(N_FEATURES);
      await open(`${server.url}feature.html?id=3`);
      expect(await page.textContent('#feature-id')).toBe('3');
      expect(await page.$$eval('.example span.tok', (s) => s.length)).toBeGreaterThan(0);
      await page.click('#next');
      await page.waitForSelector('body[data-state="ready"]');
      expect(await page.textContent('#feature-id')).toBe('4');
    } finally {
      await server.close();
    }
  });
});
