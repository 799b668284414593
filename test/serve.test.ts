// `saekit serve` over real HTTP on loopback (fetch = undici, and autocannon). What must hold:
// - /encode answers are bit-identical to the in-process sae.encode of the same rows, for every
//   body encoding, 1 row or many, at an odd d_in; batched answers too (the batcher merges
//   requests into one call and splits the codes back: rows are independent);
// - 100 concurrent clients all get their own correct codes, none lost, no errors, and fewer
//   encode calls than requests (the batching happened);
// - every bad request gets its 4xx with a JSON {error: {code, message}}; the concurrency cap
//   answers 503 with Retry-After and the server keeps working;
// - /activations equals an independent forward + encode + per-token top-k on a generated GPT-2;
// - /features/:id serves the dashboard's documents (strict ids, CORS on GET), and a dashboard
//   page served with --serve renders a feature from the API (chromium when present);
// - the CLI starts, answers, and stops cleanly on SIGINT.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveDashboard, writeDashboard } from '../src/analysis/dashboard.js';
import type { DashboardIndex, FeatureDoc } from '../src/analysis/types.js';
import type { SparseCodes } from '../src/codes.js';
import { saveSaeLens } from '../src/formats/index.js';
import { padBatch } from '../src/model/corpus.js';
import { gpt2TokenizerFiles } from '../src/model/gpt2Tokenizer.js';
import { LanguageModel } from '../src/model/languageModel.js';
import { writeTinyGpt2 } from '../src/model/tinyGpt2.js';
import { createSae, type Sae } from '../src/sae.js';
import { EncodeBatcher, sliceRows } from '../src/serve/batcher.js';
import { createSaeServer, type SaeServer } from '../src/serve/server.js';
import { Rng, syntheticSae } from '../src/synthetic.js';
import { ensureDist } from './helpers/dist.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('serve.test');
const dirs = tempDirs();
const D_IN = 37; // odd: no row lands on a vector-width boundary
const D_SAE = 96;
const K = 5;
const MAX_ROWS = 64;
const MAX_BODY = 256 * 1024;

let sae: Sae;
let server: SaeServer;
let root: string;
const rng = new Rng(seed);

function randomRows(n: number, dIn = D_IN): Float32Array {
  return rng.fillNormal(new Float32Array(n * dIn));
}

function toArrays(x: Float32Array, dIn = D_IN): number[][] {
  return Array.from({ length: x.length / dIn }, (_, r) => Array.from(x.subarray(r * dIn, (r + 1) * dIn)));
}

interface CodesJson {
  rows: number;
  d_sae: number;
  indptr: number[];
  indices: number[];
  values: number[];
}

/** The answer equals the in-process codes bit for bit (values compared as float32 bit patterns). */
function expectSameCodes(got: CodesJson, want: SparseCodes): void {
  expect(got.rows).toBe(want.rows);
  expect(got.d_sae).toBe(want.dSae);
  expect(got.indptr).toEqual(Array.from(want.indptr));
  expect(got.indices).toEqual(Array.from(want.indices));
  expect(Array.from(new Uint32Array(Float32Array.from(got.values).buffer))).toEqual(Array.from(new Uint32Array(want.values.slice().buffer)));
}

const url = (path: string, s: SaeServer = server) => new URL(path, s.url);

function postJson(path: string, body: unknown, s: SaeServer = server): Promise<Response> {
  return fetch(url(path, s), { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

function postBinary(x: Float32Array, rows: number | string | undefined, s: SaeServer = server): Promise<Response> {
  const q = rows === undefined ? '' : `?rows=${rows}`;
  return fetch(url(`encode${q}`, s), { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(x.buffer, x.byteOffset, x.byteLength) });
}

/** A 4xx/5xx answer with the JSON error shape; returns the error. */
async function expectError(r: Response, status: number, code: string, ...parts: string[]): Promise<{ code: string; message: string }> {
  const text = await r.text();
  expect(r.status, text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  expect(body.error.code, text).toBe(code);
  expect(typeof body.error.message).toBe('string');
  for (const p of parts) expect(body.error.message).toContain(p);
  return body.error;
}

beforeAll(async () => {
  root = await dirs.make();
  sae = await createSae(syntheticSae({ dIn: D_IN, dSae: D_SAE, k: K, seed }), { device: 'cpu' });
  server = await createSaeServer({ sae, maxRowsPerRequest: MAX_ROWS, maxBodyBytes: MAX_BODY, maxBatchRows: 2048 });
});
afterAll(async () => {
  await server?.close();
  sae?.dispose();
  await dirs.cleanup();
});

describe('saekit serve: health, info, binding', () => {
  it('binds to 127.0.0.1 by default and answers /health and /info', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const h = await fetch(url('health'));
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: 'ok' });
    const info = (await (await fetch(url('info'))).json()) as Record<string, any>;
    expect(info.sae).toMatchObject({ architecture: 'topk', d_in: D_IN, d_sae: D_SAE, k: K, device: 'cpu' });
    expect(info.model).toBeNull();
    expect(info.saekit).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.limits).toMatchObject({ max_rows_per_request: MAX_ROWS, max_body_bytes: MAX_BODY, max_batch_rows: 2048 });
    expect(info.batching).toMatchObject({ batch_window_ms: 1, max_batch_rows: 2048 });
  });
});

describe('POST /encode equals the in-process encode bit for bit', () => {
  it.each([1, 7, MAX_ROWS])('%i rows, as {rows}, as {data, rows, d_in} and as raw float32', async (n) => {
    const x = randomRows(n);
    const want = await sae.encode(x);
    const a = await postJson('encode', { rows: toArrays(x) });
    expect(a.status).toBe(200);
    expectSameCodes((await a.json()) as CodesJson, want);
    const b = await postJson('encode', { data: Array.from(x), rows: n, d_in: D_IN });
    expect(b.status).toBe(200);
    expectSameCodes((await b.json()) as CodesJson, want);
    const c = await postBinary(x, n);
    expect(c.status).toBe(200);
    expectSameCodes((await c.json()) as CodesJson, want);
  });

  it('zero rows give empty codes', async () => {
    const r = await postJson('encode', { rows: [] });
    expect(await r.json()).toEqual({ rows: 0, d_sae: D_SAE, indptr: [0], indices: [], values: [] });
  });

  it('the batcher: requests merged into one call get exactly their own rows codes', async () => {
    const calls: number[] = [];
    const counting = { dIn: D_IN, encode: (x: Float32Array) => (calls.push(x.length / D_IN), sae.encode(x)) } as unknown as Sae;
    const batcher = new EncodeBatcher(counting, { maxBatchRows: 1000, batchWindowMs: 5 });
    const parts = [1, 3, 10, 1, 25].map((n) => randomRows(n));
    const got = await Promise.all(parts.map((x) => batcher.encode(x)));
    expect(calls).toEqual([40]); // one call took all five
    for (let i = 0; i < parts.length; i++) {
      const alone = await sae.encode(parts[i]!);
      expect(Array.from(got[i]!.indptr)).toEqual(Array.from(alone.indptr));
      expect(Array.from(got[i]!.indices)).toEqual(Array.from(alone.indices));
      expect(Array.from(new Uint32Array(got[i]!.values.buffer))).toEqual(Array.from(new Uint32Array(alone.values.buffer)));
    }
    // maxBatchRows splits the queue into calls of whole requests, in order.
    calls.length = 0;
    const small = new EncodeBatcher(counting, { maxBatchRows: 12, batchWindowMs: 5 });
    await Promise.all([5, 5, 5, 20, 2].map((n) => small.encode(randomRows(n))));
    expect(calls).toEqual([10, 5, 20, 2]);
    expect(small.stats).toMatchObject({ calls: 4, requests: 5, rows: 37 });
    // sliceRows of the whole is the whole.
    const whole = await sae.encode(randomRows(4));
    expect(sliceRows(whole, 0, 4)).toEqual(whole);
  });

  it('100 concurrent clients: every answer is its own rows codes, none lost, fewer encode calls than requests', async () => {
    const s = await createSaeServer({ sae, maxRowsPerRequest: MAX_ROWS, maxBodyBytes: MAX_BODY });
    try {
      const clients = Array.from({ length: 100 }, (_, i) => randomRows(1 + (i % 17)));
      const wants = await Promise.all(clients.map((x) => sae.encode(x)));
      const answers = await Promise.all(
        clients.map(async (x, i) => {
          const r = i % 2 === 0 ? await postJson('encode', { rows: toArrays(x) }, s) : await postBinary(x, x.length / D_IN, s);
          return { status: r.status, body: (await r.json()) as CodesJson };
        }),
      );
      for (let i = 0; i < 100; i++) {
        expect(answers[i]!.status, JSON.stringify(answers[i]!.body)).toBe(200);
        expectSameCodes(answers[i]!.body, wants[i]!);
      }
      const stats = s.stats();
      expect(stats.requests).toBe(100);
      expect(stats.rows).toBe(clients.reduce((n, x) => n + x.length / D_IN, 0));
      expect(stats.calls).toBeLessThan(100);
      expect(stats.largestBatch).toBeGreaterThan(1);
      console.log(`serve.test: 100 concurrent clients -> ${stats.calls} encode calls (largest merged ${stats.largestBatch})`);
    } finally {
      await s.close();
    }
  });

  it('autocannon, 100 connections: every request 2xx, no errors or timeouts', async () => {
    const x = randomRows(16);
    const before = server.stats();
    const result = await autocannon({
      url: url('encode?rows=16').href,
      connections: 100,
      amount: 1000,
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from(x.buffer),
    });
    expect(result.errors).toBe(0);
    expect(result.timeouts).toBe(0);
    expect(result.non2xx).toBe(0);
    expect(result['2xx']).toBe(1000);
    const after = server.stats();
    expect(after.requests - before.requests).toBe(1000);
    expect(after.calls - before.calls).toBeLessThan(1000);
  }, 60_000);
});

describe('bad requests get a 4xx and a JSON error', () => {
  it('body too large: 413', async () => {
    const x = randomRows(MAX_ROWS);
    const big = JSON.stringify({ rows: Array.from({ length: 8 }, () => toArrays(x)).flat() });
    expect(big.length).toBeGreaterThan(MAX_BODY);
    await expectError(await postJson('encode', big), 413, 'body_too_large', `${MAX_BODY} bytes`);
  });

  it('too many rows: 413 naming the limit', async () => {
    await expectError(await postJson('encode', { rows: toArrays(randomRows(MAX_ROWS + 1)) }), 413, 'too_many_rows', `${MAX_ROWS + 1} rows`, `at most ${MAX_ROWS}`);
    await expectError(await postBinary(randomRows(MAX_ROWS + 1), MAX_ROWS + 1), 413, 'too_many_rows');
  });

  it('wrong width: 400 naming d_in', async () => {
    await expectError(await postJson('encode', { rows: [Array(D_IN - 1).fill(0)] }), 400, 'bad_width', `d_in ${D_IN}`, 'rows[0] has 36 values');
    await expectError(await postJson('encode', { data: Array(D_IN).fill(0), rows: 1, d_in: D_IN + 1 }), 400, 'bad_width', `d_in ${D_IN}`);
    await expectError(await postJson('encode', { data: Array(D_IN).fill(0), rows: 2, d_in: D_IN }), 400, 'bad_width', `2 * ${D_IN}`);
    await expectError(await postBinary(randomRows(2), 3), 400, 'bad_width', `d_in * 4 = 3 * ${D_IN} * 4`);
  });

  it('NaN, Infinity and values beyond float32: 400 naming row and column', async () => {
    const x = randomRows(3);
    x[1 * D_IN + 4] = NaN;
    await expectError(await postBinary(x, 3), 400, 'non_finite', 'row 1 column 4 is NaN');
    await expectError(await postJson('encode', '{"rows":[[' + Array(D_IN - 1).fill(0).join(',') + ',1e999]]}'), 400, 'non_finite', `column ${D_IN - 1} is Infinity`);
    const rows = toArrays(randomRows(2));
    rows[1]![2] = 1e39;
    await expectError(await postJson('encode', { rows }), 400, 'non_finite', 'row 1 column 2 is 1e+39 (beyond float32');
  });

  it('malformed bodies: 400; other media types: 415', async () => {
    await expectError(await postJson('encode', '{"rows": [[1,'), 400, 'bad_json');
    await expectError(await postJson('encode', ''), 400, 'bad_json');
    await expectError(await postJson('encode', { rows: [[...Array(D_IN - 1).fill(0), null]] }), 400, 'bad_request', `rows[0][${D_IN - 1}] is null`);
    await expectError(await postJson('encode', { rows: [Array(D_IN).fill('1')] }), 400, 'bad_request', 'rows[0][0] is string');
    await expectError(await postJson('encode', { rows: [[]], extra: 1 }), 400, 'bad_request', 'additional properties');
    await expectError(await postJson('encode', { data: [] }), 400, 'bad_request');
    await expectError(await postJson('encode', [1, 2]), 400, 'bad_request');
    await expectError(await postBinary(randomRows(1), undefined), 400, 'bad_request', '?rows=N');
    await expectError(await postBinary(randomRows(1), '01'), 400, 'bad_request');
    await expectError(await fetch(url('encode'), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }), 415, 'unsupported_media_type');
  });

  it('unknown routes 404, wrong methods 405 with Allow', async () => {
    await expectError(await fetch(url('nope')), 404, 'not_found', 'GET /nope');
    await expectError(await postJson('encodes', { rows: [] }), 404, 'not_found');
    const r = await fetch(url('encode'));
    expect(r.headers.get('allow')).toBe('POST');
    await expectError(r, 405, 'method_not_allowed');
    await expectError(await fetch(url('health'), { method: 'DELETE' }), 405, 'method_not_allowed');
    // A cross-origin page cannot preflight its way to POST /encode.
    const o = await fetch(url('encode'), { method: 'OPTIONS', headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' } });
    expect(o.status).toBe(405);
    expect(o.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('/activations without a model: 501', async () => {
    await expectError(await postJson('activations', { text: 'hello' }), 501, 'no_model', '--model');
  });

  it('the concurrency cap answers 503 with Retry-After, and the server keeps working', async () => {
    // A long batch window holds requests in flight, so 40 at once pass the cap of 4.
    const s = await createSaeServer({ sae, maxConcurrent: 4, batchWindowMs: 200 });
    try {
      const xs = Array.from({ length: 40 }, () => randomRows(2));
      const answers = await Promise.all(xs.map(async (x) => {
        const r = await postBinary(x, 2, s);
        return { status: r.status, retry: r.headers.get('retry-after'), body: (await r.json()) as CodesJson & { error?: { code: string } } };
      }));
      const ok = answers.filter((a) => a.status === 200);
      const refused = answers.filter((a) => a.status === 503);
      expect(ok.length + refused.length).toBe(40);
      expect(ok.length).toBeGreaterThanOrEqual(4);
      expect(refused.length).toBeGreaterThan(0);
      for (const a of refused) {
        expect(a.retry).toBe('1');
        expect(a.body.error?.code).toBe('overloaded');
      }
      for (let i = 0; i < 40; i++) if (answers[i]!.status === 200) expectSameCodes(answers[i]!.body, await sae.encode(xs[i]!));
      expect((await fetch(url('health', s))).status).toBe(200);
      expect((await postBinary(xs[0]!, 2, s)).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('options are checked', async () => {
    await expect(createSaeServer({ sae, maxRowsPerRequest: 100, maxBatchRows: 10 })).rejects.toThrow('maxBatchRows (10) must be at least maxRowsPerRequest (100)');
    await expect(createSaeServer({ sae, port: -1 })).rejects.toThrow('Expected an integer port');
  });
});

// ------------------------------------------------------------------------- dashboard data

const DASH_FEATURES = [0, 3, 5];
function makeDoc(f: number): FeatureDoc {
  return {
    modelId: 'serve-test', layer: 'blocks.0.hook_resid_pre', index: f, frac_nonzero: 0.01 * (f + 1), log10_density: Math.log10(0.01 * (f + 1) + 1e-10),
    count: 10 * (f + 1), tokens_seen: 1000, max_act: 2 + f, mean_act: 1 + f / 2,
    freq_hist_data_bar_heights: [3, 1], freq_hist_data_bar_values: [0.5, 1.5], logits_hist_data_bar_heights: [], logits_hist_data_bar_values: [],
    pos_str: [' <b>hi</b>'], pos_values: [0.5], neg_str: [], neg_values: [],
    activations: [{ tokens: ['A', ' cat', ` f${f}`], values: [0, 1, 2 + f], tokenIds: [1, 2, 3], maxValue: 2 + f, maxValueTokenIndex: 2, bin: 'top', row: f }],
  };
}
function makeIndex(): DashboardIndex {
  return {
    model: 'serve-test', hook: 'blocks.0.hook_resid_pre', sae: 'synthetic', d_sae: D_SAE, tokens_seen: 1000, created: '2025-01-01T00:00:00Z',
    features: DASH_FEATURES.map((f) => ({ id: f, frac_nonzero: 0.01 * (f + 1), max_act: 2 + f, mean_act: 1 + f / 2, top_token: ' cat', pos_str: [' <b>hi</b>'] })),
  };
}

describe('GET /features/:id and saekit dashboard --serve', () => {
  let dash: string;
  let s: SaeServer;
  beforeAll(async () => {
    dash = join(root, 'dash');
    await writeDashboard(dash, makeIndex(), DASH_FEATURES.map(makeDoc));
    // Only the API can supply feature 3 now: the page must not be reading the static file.
    await rm(join(dash, 'data', 'features', '3.js'));
    s = await createSaeServer({ sae, dashboardDir: dash });
  });
  afterAll(async () => {
    await s?.close();
  });

  it('serves the dashboard documents with CORS on GET; ids are strict', async () => {
    const r = await fetch(url('features/3', s));
    expect(r.status).toBe(200);
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    expect(await r.json()).toEqual(makeDoc(3));
    await expectError(await fetch(url(`features/${D_SAE}`, s)), 404, 'no_such_feature', `d_sae ${D_SAE}`);
    await expectError(await fetch(url('features/4', s)), 404, 'no_such_feature', 'no document for feature 4');
    for (const bad of ['01', '-1', 'abc', '1e3', '3.0', '..%2F..%2Fsecret', '%20']) await expectError(await fetch(url(`features/${bad}`, s)), 400, 'bad_feature_id');
    await expectError(await fetch(url('features/3')), 404, 'no_dashboard', '--dashboard');
    // corsOrigin: a set origin is sent as is; null sends none.
    const only = await createSaeServer({ sae, dashboardDir: dash, corsOrigin: 'http://127.0.0.1:9999' });
    const none = await createSaeServer({ sae, dashboardDir: dash, corsOrigin: null });
    try {
      expect((await fetch(url('features/0', only))).headers.get('access-control-allow-origin')).toBe('http://127.0.0.1:9999');
      expect((await fetch(url('features/0', none))).headers.get('access-control-allow-origin')).toBeNull();
      expect((await postJson('encode', { rows: [] }, only)).headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await only.close();
      await none.close();
    }
  });

  it('a dashboard folder for another d_sae is refused', async () => {
    const other = await createSae(syntheticSae({ dIn: D_IN, dSae: 50, k: K, seed }), { device: 'cpu' });
    try {
      await expect(createSaeServer({ sae: other, dashboardDir: dash })).rejects.toThrow('is for d_sae 96 but the SAE served has d_sae 50');
    } finally {
      other.dispose();
    }
  });

  it('the dashboard served with api: assets/api.js names the API (null when served plain)', async () => {
    const plain = await serveDashboard(dash);
    const withApi = await serveDashboard(dash, { api: s.url });
    try {
      expect(await (await fetch(new URL('assets/api.js', plain.url))).text()).toBe('window.SAEKIT_API = null;\n');
      expect(await (await fetch(new URL('assets/api.js', withApi.url))).text()).toBe(`window.SAEKIT_API = ${JSON.stringify(s.url)};\n`);
    } finally {
      await plain.close();
      await withApi.close();
    }
    await expect(serveDashboard(dash, { api: 'ftp://x' })).rejects.toThrow('Expected an http(s) URL');
  });

  const chromiumPath = [process.env.CHROMIUM_PATH, '/usr/bin/chromium'].find((p) => p && existsSync(p));
  const needBrowser = process.env.SAEKIT_REQUIRE_BROWSER === '1';
  it.skipIf(!chromiumPath && !needBrowser)('in chromium, a feature page renders the document from the API', async () => {
    if (!chromiumPath) throw new Error('SAEKIT_REQUIRE_BROWSER=1 but no chromium at $CHROMIUM_PATH or /usr/bin/chromium');
    const d = await serveDashboard(dash, { api: s.url });
    const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(new URL('feature.html?id=3', d.url).href);
      await page.waitForSelector('body[data-state="ready"], body[data-state="error"]');
      expect(await page.getAttribute('body', 'data-state'), await page.textContent('#error') ?? '').toBe('ready');
      expect(await page.textContent('#feature-id')).toBe('3');
      expect(await page.textContent('#examples')).toContain(' f3');
      // A feature the dashboard lacks: the API's 404 message is shown.
      await page.goto(new URL('feature.html?id=4', d.url).href);
      await page.waitForSelector('body[data-state="error"]');
      expect(await page.textContent('#error')).toContain('no document for feature 4');
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await d.close();
    }
  }, 60_000);
});

// ------------------------------------------------------------------------- /activations

describe('POST /activations on a generated GPT-2', () => {
  const HOOK = 'blocks.1.hook_resid_pre';
  const D_MODEL = 32;
  let model: LanguageModel;
  let msae: Sae;
  let s: SaeServer;
  beforeAll(async () => {
    const dir = join(root, 'tiny');
    await writeTinyGpt2(dir, { layers: 2, dModel: D_MODEL, heads: 4, seed: seed % 100000, tokenizerFiles: { ...(await gpt2TokenizerFiles()) } });
    model = await LanguageModel.load(dir);
    msae = await createSae(syntheticSae({ dIn: D_MODEL, dSae: 128, k: 6, seed }), { device: 'cpu' });
    s = await createSaeServer({ sae: msae, model, hook: HOOK, maxTextChars: 500 });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    msae?.dispose();
    await model?.dispose();
  });

  /** What saekit features computes, written out independently: forward, encode, top per token. */
  async function expected(text: string, top: number) {
    const ids = [model.tokenizer.bosId!, ...model.tokenizer.encode(text)];
    const { hooks } = await model.forward(padBatch([ids], 0), { hooks: [HOOK] });
    const codes = await msae.encode(hooks.get(HOOK)!);
    return ids.map((token, p) => {
      const feats = [];
      for (let i = codes.indptr[p]!; i < codes.indptr[p + 1]!; i++) feats.push({ id: codes.indices[i]!, value: codes.values[i]! });
      feats.sort((a, b) => b.value - a.value || a.id - b.id);
      return { position: p, token, text: model.tokenText(token), features: feats.slice(0, top) };
    });
  }

  it('returns each token with its top features, equal to forward + encode in process; concurrent texts each get their own', async () => {
    const texts = ['The king ruled the kingdom.', 'Hello <b>world</b> & "friends"', 'a', 'Numbers 1 2 3 go here', 'The cat sat on the mat, then it slept.'];
    const answers = await Promise.all(texts.map((text, i) => postJson('activations', { text, top: 1 + i }, s)));
    for (let i = 0; i < texts.length; i++) {
      expect(answers[i]!.status).toBe(200);
      const body = (await answers[i]!.json()) as { model: string; hook: string; tokens: unknown[] };
      expect(body.hook).toBe(HOOK);
      expect(body.model).toBe(model.name);
      expect(body.tokens).toEqual(await expected(texts[i]!, 1 + i));
    }
    const info = (await (await fetch(url('info', s))).json()) as { model: { name: string; d_model: number }; hook: string };
    expect(info.model).toEqual({ name: model.name, d_model: D_MODEL });
    expect(info.hook).toBe(HOOK);
  });

  it('bad /activations bodies: 400', async () => {
    await expectError(await postJson('activations', { text: '' }, s), 400, 'bad_request');
    await expectError(await postJson('activations', { text: 5 }, s), 400, 'bad_request', 'must be string');
    await expectError(await postJson('activations', { text: 'x'.repeat(501) }, s), 400, 'bad_request', '500');
    await expectError(await postJson('activations', { text: 'hi', top: 0 }, s), 400, 'bad_request');
    await expectError(await postJson('activations', { text: 'hi', top: '3' }, s), 400, 'bad_request');
    await expectError(await postJson('activations', { text: 'hi', hook: 'x' }, s), 400, 'bad_request', 'additional properties');
  });
});

// ------------------------------------------------------------------------- the CLI

describe('saekit serve as a process', () => {
  it('prints its URL, answers /info and /encode, and stops on SIGINT with exit 0', async () => {
    ensureDist();
    const dir = join(root, 'sae-dir');
    const weights = syntheticSae({ dIn: D_IN, dSae: D_SAE, k: K, seed });
    await saveSaeLens(dir, weights);
    const bin = join(import.meta.dirname, '..', 'bin', 'saekit.js');
    const child = spawn(process.execPath, [bin, 'serve', '--sae', dir, '--port', '0', '--max-rows', '8'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const base = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += String(d);
          const m = /listening at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
          if (m) resolve(m[1]!);
        });
        void exited.then((code) => reject(new Error(`saekit serve exited ${code}: ${err}`)));
      });
      const cli = { url: base } as SaeServer;
      const info = (await (await fetch(url('info', cli))).json()) as { sae: { d_in: number; label: string }; limits: { max_rows_per_request: number } };
      expect(info.sae.d_in).toBe(D_IN);
      expect(info.sae.label).toBe(dir);
      expect(info.limits.max_rows_per_request).toBe(8);
      const x = randomRows(3);
      const r = await postBinary(x, 3, cli);
      expectSameCodes((await r.json()) as CodesJson, await sae.encode(x));
      await expectError(await postBinary(randomRows(9), 9, cli), 413, 'too_many_rows');
      child.kill('SIGINT');
      expect(await exited, err).toBe(0);
      expect(err).toContain('stopped after 1 encode requests (3 rows) in 1 encode calls'); // the 413 never reached the batcher
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 120_000);
});
