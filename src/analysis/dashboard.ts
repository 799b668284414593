// The feature dashboard: a folder of static files that opens straight from disk (file://) in a
// browser, plus a small localhost server for browsing it over http.
//
// Why it looks like this:
// - file:// pages cannot fetch() or XHR other local files (Chrome blocks it) and cannot load ES
//   modules (their origin is "null"), so every data file is a classic script that assigns a
//   global (`window.SAEKIT_INDEX = ...`), loaded through a <script> tag, and app.js is a plain
//   (non-module) script. The same data also goes out as plain JSON for other tools.
// - Token strings are arbitrary text (`<script>`, `&`, quotes, newlines); the page builds its
//   DOM with textContent and setAttribute only, never innerHTML from data, and the data files
//   escape `<`, U+2028 and U+2029 so a token can never close the <script> that carries it.
// - A 100k-latent SAE yields 100k documents: they stream in through an (async) iterable and are
//   written as they come, a bounded number at a time, so memory stays a few documents.
// - Nothing is left half-written: the dashboard is built in a temporary sibling folder and
//   renamed into place at the end; on any error the temporary folder is removed.

import { createReadStream } from 'node:fs';
import { mkdir, readdir, realpath, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { FormatError, ValidationError, expected } from '../errors.js';
import { tempPathFor } from '../formats/fileIo.js';
import type { DashboardIndex, FeatureDoc } from './types.js';

/** Feature files written at once: enough to hide the file system's latency, few enough to bound memory. */
const WRITE_CONCURRENCY = 16;

/**
 * JSON that is safe inside an HTML <script> element: `<` is written as \u003c so no string can
 * form `</script>` or `<!--`; U+2028/U+2029 are escaped for older JavaScript parsers.
 */
export function scriptSafeJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * Writes the dashboard into `dir` (created; it must be absent or empty). Files:
 *  index.html, feature.html, assets/app.js, assets/style.css,
 *  assets/api.js          `window.SAEKIT_API = null;` (serveDashboard's `api` option answers
 *                         it with a `saekit serve` URL: feature pages then fetch from there)
 *  data/index.js          `window.SAEKIT_INDEX = <index JSON>;`
 *  data/features/<id>.js  `window.SAEKIT_FEATURE = <feature JSON>;` (one per feature)
 *  features/<id>.json     the FeatureDoc as plain JSON (Neuronpedia-like export)
 *  index.json             the DashboardIndex as plain JSON
 * Features arrive as an (async) iterable and are written as they come. On any error (a bad
 * document, a throwing iterable, a full disk) `dir` is left as it was and no temporary folder
 * remains. Returns the number of feature pages written.
 */
export async function writeDashboard(
  dir: string,
  index: DashboardIndex,
  features: AsyncIterable<FeatureDoc> | Iterable<FeatureDoc>,
): Promise<number> {
  if (typeof dir !== 'string' || dir === '') throw expected('a directory path', 'dir', dir);
  checkIndex(index);
  if (features == null || (typeof (features as AsyncIterable<FeatureDoc>)[Symbol.asyncIterator] !== 'function' &&
      typeof (features as Iterable<FeatureDoc>)[Symbol.iterator] !== 'function')) {
    throw expected('an iterable or async iterable of FeatureDoc', 'features', features);
  }
  const target = resolve(dir);
  const existedEmpty = await checkTarget(dir, target);
  await mkdir(dirname(target), { recursive: true });

  const tmp = tempPathFor(target);
  await mkdir(tmp);
  const pool = new WritePool(WRITE_CONCURRENCY);
  try {
    await mkdir(join(tmp, 'assets'));
    await mkdir(join(tmp, 'data', 'features'), { recursive: true });
    await mkdir(join(tmp, 'features'));
    await Promise.all([
      writeFile(join(tmp, 'index.html'), INDEX_HTML),
      writeFile(join(tmp, 'feature.html'), featureHtml(index.d_sae)),
      writeFile(join(tmp, 'assets', 'app.js'), APP_JS),
      writeFile(join(tmp, 'assets', 'style.css'), STYLE_CSS),
      writeFile(join(tmp, 'assets', 'api.js'), apiJs(null)),
      writeFile(join(tmp, 'data', 'index.js'), `window.SAEKIT_INDEX = ${scriptSafeJson(index)};\n`),
      writeFile(join(tmp, 'index.json'), JSON.stringify(index)),
    ]);

    const seen = new Set<number>();
    let written = 0;
    for await (const doc of features) {
      const id = checkDoc(doc, written);
      if (seen.has(id)) throw new ValidationError(`FeatureDoc.index ${id} appears twice in the features given to writeDashboard`);
      seen.add(id);
      // Serialise now (the caller may reuse the object); write in the background.
      const js = `window.SAEKIT_FEATURE = ${scriptSafeJson(doc)};\n`;
      const json = JSON.stringify(doc);
      await pool.add(() =>
        Promise.all([
          writeFile(join(tmp, 'data', 'features', `${id}.js`), js),
          writeFile(join(tmp, 'features', `${id}.json`), json),
        ]).then(() => undefined),
      );
      written++;
    }
    await pool.drain();

    if (existedEmpty) {
      // rmdir fails (ENOTEMPTY) if something appeared in it meanwhile: we never overwrite files.
      try {
        await rmdir(target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') throw notEmpty(dir);
        if (code !== 'ENOENT') throw err;
      }
    }
    try {
      await rename(tmp, target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw notEmpty(dir);
      throw err;
    }
    return written;
  } catch (err) {
    await pool.settle();
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

function notEmpty(dir: string): ValidationError {
  return new ValidationError(`${dir}: the dashboard directory is not empty (writeDashboard needs an absent or empty directory)`);
}

/** Throws unless `target` is absent or an empty directory; returns whether it exists. */
async function checkTarget(dir: string, target: string): Promise<boolean> {
  let isDir: boolean;
  try {
    isDir = (await stat(target)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new ValidationError(`${dir}: cannot use as the dashboard directory: ${(err as Error).message}`);
  }
  if (!isDir) throw new ValidationError(`${dir}: exists and is not a directory (writeDashboard needs an absent or empty directory)`);
  if ((await readdir(target)).length > 0) throw notEmpty(dir);
  return true;
}

function checkIndex(index: DashboardIndex): void {
  if (index === null || typeof index !== 'object') throw expected('a DashboardIndex object', 'index', index);
  if (!Array.isArray(index.features)) throw expected('an array', 'index.features', index.features);
  index.features.forEach((f, i) => {
    if (f === null || typeof f !== 'object' || !isId(f.id)) {
      throw expected('a FeatureSummary with a non-negative integer id', `index.features[${i}]`, f === null || typeof f !== 'object' ? f : f.id);
    }
  });
}

/** The document's latent index, which names its files: it must be a non-negative integer. */
function checkDoc(doc: FeatureDoc, position: number): number {
  if (doc === null || typeof doc !== 'object') throw expected('a FeatureDoc object', `features[${position}]`, doc);
  if (!isId(doc.index)) throw expected('a non-negative integer', `features[${position}].index`, doc.index);
  if (!Array.isArray(doc.activations)) throw expected('an array', `features[${position}].activations (feature ${doc.index})`, doc.activations);
  return doc.index;
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Runs at most `limit` writes at once; the first failure is rethrown by add() or drain(). */
class WritePool {
  private readonly pending = new Set<Promise<void>>();
  private failed = false;
  private failure: unknown;

  constructor(private readonly limit: number) {}

  async add(task: () => Promise<void>): Promise<void> {
    while (this.pending.size >= this.limit && !this.failed) await Promise.race(this.pending);
    if (this.failed) throw this.failure;
    const p: Promise<void> = task().then(
      () => {
        this.pending.delete(p);
      },
      (err: unknown) => {
        this.pending.delete(p);
        if (!this.failed) {
          this.failed = true;
          this.failure = err;
        }
      },
    );
    this.pending.add(p);
  }

  /** Waits for every write and rethrows the first failure. */
  async drain(): Promise<void> {
    await this.settle();
    if (this.failed) throw this.failure;
  }

  /** Waits for every write, whatever its outcome (before removing the folder they write in). */
  async settle(): Promise<void> {
    await Promise.all([...this.pending]);
  }
}

// ---------------------------------------------------------------------------------------------
// Server

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Serves `dir` over http://HOST:PORT (defaults 127.0.0.1 and port 0 = any free port). Only
 * regular files under `dir` are served (GET and HEAD): a path with a `..` segment, a NUL or a
 * backslash, or one that resolves (through a symlink) outside `dir`, is a 404. Resolves once
 * listening, with the base URL (ending in '/') and close().
 *
 * `api`: the base URL of a `saekit serve` (with --dashboard) whose GET /features/:id the feature
 * pages read instead of the folder's data/features/<id>.js; /assets/api.js is answered with it.
 */
export async function serveDashboard(
  dir: string,
  opts: { port?: number; host?: string; api?: string } = {},
): Promise<{ url: string; close(): Promise<void> }> {
  if (typeof dir !== 'string' || dir === '') throw expected('a directory path', 'dir', dir);
  const port = opts.port ?? 0;
  const host = opts.host ?? '127.0.0.1';
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw expected('an integer port in 0..65535', 'opts.port', port);
  if (typeof host !== 'string' || host === '') throw expected('a host name or address', 'opts.host', host);
  let api: string | undefined;
  if (opts.api !== undefined) {
    let u: URL | undefined;
    try {
      u = new URL(opts.api);
    } catch {
      u = undefined;
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) throw expected('an http(s) URL', 'opts.api', opts.api);
    api = u.href.endsWith('/') ? u.href : `${u.href}/`;
  }
  let root: string;
  try {
    root = await realpath(resolve(dir));
    if (!(await stat(root)).isDirectory()) throw new FormatError(dir, 'is not a directory');
  } catch (err) {
    if (err instanceof FormatError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new FormatError(dir, code === 'ENOENT' ? 'dashboard directory not found' : `cannot serve: ${(err as Error).message}`);
  }

  const server = createServer((req, res) => {
    handle(root, req, res, api).catch(() => {
      if (!res.headersSent) send(res, 500, 'internal error');
      else res.destroy();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      ok();
    });
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shownHost}:${addr.port}/`,
    close: () =>
      new Promise<void>((ok, fail) => {
        server.close((err) => (err ? fail(err) : ok()));
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.end(`${text}\n`);
}

async function handle(root: string, req: IncomingMessage, res: ServerResponse, api: string | undefined): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return send(res, 405, 'method not allowed');
  }
  if (api !== undefined && (req.url ?? '').split(/[?#]/, 1)[0] === '/assets/api.js') {
    const body = apiJs(api);
    res.writeHead(200, { 'Content-Type': CONTENT_TYPES['.js']!, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  const file = await resolveRequest(root, req.url ?? '/');
  if (file === undefined) return send(res, 404, 'not found');
  const info = await stat(file);
  res.writeHead(200, {
    'Content-Type': CONTENT_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'Content-Length': info.size,
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  await new Promise<void>((ok, fail) => {
    const stream = createReadStream(file);
    stream.on('error', fail);
    res.on('close', () => {
      stream.destroy();
      ok();
    });
    stream.pipe(res);
  });
}

/** The regular file a request path names under root, or undefined (-> 404). */
async function resolveRequest(root: string, rawUrl: string): Promise<string | undefined> {
  let pathname: string;
  try {
    pathname = decodeURIComponent((rawUrl.split(/[?#]/, 1)[0] ?? '/'));
  } catch {
    return undefined; // malformed %-escape
  }
  if (!pathname.startsWith('/') || pathname.includes('\0') || pathname.includes('\\')) return undefined;
  const parts = pathname.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return undefined;
  let file = join(root, ...parts);
  try {
    if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
    const real = await realpath(file);
    if (real !== root && !real.startsWith(root.endsWith(sep) ? root : root + sep)) return undefined;
    return (await stat(real)).isFile() ? real : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The pages. Static text: everything data-dependent is built in the browser by app.js.

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>saekit dashboard</title>
<link rel="stylesheet" href="assets/style.css">
</head>
<body data-page="index" data-state="loading">
<header class="top">
  <h1 id="title">saekit dashboard</h1>
  <p id="meta" class="meta"></p>
</header>
<main>
  <div id="error" class="error" hidden></div>
  <div class="controls">
    <input id="search" type="search" autocomplete="off" spellcheck="false"
      placeholder="Search: a number filters by id (prefix; #12 = exactly 12), text filters top / promoted tokens"
      aria-label="Search features">
    <span id="count" class="count"></span>
  </div>
  <table id="features">
    <thead>
      <tr>
        <th data-sort="id" class="num"><button type="button">id</button></th>
        <th data-sort="frac_nonzero" class="num"><button type="button">density</button></th>
        <th class="num">log10 density</th>
        <th data-sort="max_act" class="num"><button type="button">max act</button></th>
        <th data-sort="mean_act" class="num"><button type="button">mean act</button></th>
        <th>top token</th>
        <th>promoted tokens</th>
      </tr>
    </thead>
    <tbody></tbody>
  </table>
  <p class="more"><button id="show-more" type="button" hidden>Show more</button></p>
</main>
<script src="data/index.js"></script>
<script src="assets/app.js"></script>
</body>
</html>
`;

function featureHtml(dSae: unknown): string {
  const n = isId(dSae) ? String(dSae) : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>saekit feature</title>
<link rel="stylesheet" href="assets/style.css">
</head>
<body data-page="feature" data-state="loading" data-d-sae="${n}">
<nav class="top nav">
  <a id="back" href="index.html">&larr; all features</a>
  <a id="prev" class="step" hidden>&lsaquo; previous</a>
  <a id="next" class="step" hidden>next &rsaquo;</a>
</nav>
<main>
  <div id="error" class="error" hidden></div>
  <article id="feature" hidden>
    <h1 id="feature-title">Feature <span id="feature-id"></span></h1>
    <p id="feature-model" class="meta"></p>
    <dl id="stats" class="stats"></dl>
    <section class="panel">
      <h2>Activation histogram <small>(nonzero activations)</small></h2>
      <svg id="act-hist" class="hist" role="img" aria-label="Histogram of nonzero activations"></svg>
      <p id="act-hist-empty" class="note" hidden>This feature never fired on the analysed tokens.</p>
    </section>
    <section class="panel logits">
      <h2>Logit effects</h2>
      <div class="logit-lists">
        <div><h3>Promoted (positive)</h3><ol id="pos-logits" class="logit-list"></ol></div>
        <div><h3>Suppressed (negative)</h3><ol id="neg-logits" class="logit-list"></ol></div>
      </div>
      <svg id="logit-hist" class="hist" role="img" aria-label="Histogram of logit effects" hidden></svg>
      <p id="logits-empty" class="note" hidden>No logit effects (the analysis ran without a model).</p>
    </section>
    <section class="panel">
      <h2>Examples</h2>
      <div id="examples"></div>
    </section>
  </article>
</main>
<script src="assets/api.js"></script>
<script src="assets/app.js"></script>
</body>
</html>
`;
}

/** assets/api.js: where feature pages read documents from (null: the folder's own data/features/<id>.js). */
function apiJs(api: string | null): string {
  return `window.SAEKIT_API = ${scriptSafeJson(api)};\n`;
}

const STYLE_CSS = `:root {
  --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa;
  --accent: #0969da; --hot: 255, 120, 0; --cold: 0, 110, 255;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { padding: 16px 24px 48px; max-width: 1200px; }
.top { padding: 14px 24px; border-bottom: 1px solid var(--line); background: var(--panel); }
.top h1 { margin: 0; font-size: 20px; }
.nav { display: flex; gap: 18px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.meta { color: var(--muted); margin: 4px 0 0; }
.error { padding: 12px 16px; border: 1px solid #cf222e; background: #ffebe9; color: #82071e;
  border-radius: 6px; margin-bottom: 16px; font-weight: 600; }
.controls { display: flex; gap: 12px; align-items: center; margin-bottom: 12px; }
#search { flex: 1; max-width: 640px; padding: 7px 10px; font-size: 14px; border: 1px solid var(--line);
  border-radius: 6px; }
.count { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--panel); position: sticky; top: 0; font-weight: 600; white-space: nowrap; }
th button { font: inherit; border: 0; background: none; padding: 0; cursor: pointer; color: var(--accent); }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #f3f7fc; }
tr.dead td { color: #9aa1a9; }
tr.dead a { color: #9aa1a9; }
.tok-inline, .logit-tok { font-family: var(--mono); white-space: pre; background: #eef1f4;
  border-radius: 3px; padding: 0 3px; margin-right: 4px; }
.more { text-align: center; }
#show-more { padding: 6px 18px; border: 1px solid var(--line); border-radius: 6px; background: var(--panel);
  cursor: pointer; }
.stats { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 12px 0 8px; }
.stats dt { color: var(--muted); }
.stats dd { margin: 0; font-variant-numeric: tabular-nums; }
.panel { margin-top: 22px; }
.panel h2 { font-size: 16px; margin: 0 0 8px; }
.panel h2 small { color: var(--muted); font-weight: normal; }
.panel h3 { font-size: 14px; margin: 0 0 6px; }
.hist { width: 100%; max-width: 680px; height: auto; display: block; background: var(--panel);
  border: 1px solid var(--line); border-radius: 6px; }
.hist .axis { stroke: #8c959f; stroke-width: 1; }
.hist text { font: 11px var(--mono); fill: var(--muted); }
.note { color: var(--muted); font-style: italic; }
.logit-lists { display: flex; gap: 40px; flex-wrap: wrap; margin-bottom: 12px; }
.logit-list { margin: 0; padding-left: 24px; font-size: 13px; }
.logit-list li { margin: 2px 0; }
.logit-val { font-variant-numeric: tabular-nums; }
#pos-logits .logit-val { color: #b35900; }
#neg-logits .logit-val { color: #0550ae; }
.bin { margin-bottom: 18px; }
.bin h3 { font-size: 14px; margin: 14px 0 6px; color: var(--muted); }
.example-wrap { display: flex; gap: 10px; align-items: baseline; padding: 4px 0; border-bottom: 1px dashed #e4e8ec; }
.ex-meta { flex: none; width: 150px; color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.example { display: flex; flex-wrap: wrap; row-gap: 3px; font: 13px/1.6 var(--mono); }
.tok { white-space: pre; border-radius: 2px; padding: 0 1px; min-width: 0.5ch; cursor: default;
  box-shadow: inset 0 0 0 0.5px rgba(0, 0, 0, 0.08); }
.tok.ws { color: #8c959f; }
.tok.max { outline: 2px solid rgb(var(--hot)); outline-offset: 0; font-weight: 700; }
`;

// Plain (non-module) JavaScript: ES modules do not load from file://. Written with String.raw
// so its backslashes survive; it must not contain a backtick or a dollar-brace.
const APP_JS = String.raw`// saekit dashboard. Builds every data-dependent node with textContent / setAttribute only.
(function () {
  'use strict';
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var PAGE_ROWS = 200;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function isNum(v) { return typeof v === 'number' && isFinite(v); }
  /** Four significant digits, no trailing zeros; '-' for a missing value. */
  function fmt(v) {
    if (typeof v !== 'number') return '\u2013';
    if (!isFinite(v) || v === 0) return String(v);
    return String(Number(v.toPrecision(4)));
  }
  function log10Density(frac) { return isNum(frac) ? Math.log10(frac + 1e-10) : NaN; }
  /** Token text as shown: newlines and tabs visible, spaces kept (CSS white-space: pre). */
  function showToken(s) {
    return String(s === undefined || s === null ? '' : s)
      .replace(/\r\n/g, '\u21B5').replace(/\n/g, '\u21B5').replace(/\r/g, '\u240D').replace(/\t/g, '\u21E5');
  }
  function fail(message) {
    var box = document.getElementById('error');
    box.textContent = message;
    box.hidden = false;
    document.body.setAttribute('data-state', 'error');
  }

  // ------------------------------------------------------------------ index page
  function initIndex() {
    var data = window.SAEKIT_INDEX;
    if (!data || !Array.isArray(data.features)) {
      fail('The feature index (data/index.js) did not load.');
      return;
    }
    var params = new URLSearchParams(location.search);
    var pageRows = Number(params.get('rows')) > 0 ? Math.floor(Number(params.get('rows'))) : PAGE_ROWS;
    var feats = data.features;
    var dead = 0;
    var rows = feats.map(function (f) {
      if (f.frac_nonzero === 0) dead++;
      var pos = Array.isArray(f.pos_str) ? f.pos_str : [];
      return { f: f, idStr: String(f.id), key: (String(f.top_token || '') + '\u0000' + pos.join('\u0000')).toLowerCase() };
    });
    var name = [data.sae, data.model, data.hook].filter(Boolean).join(' \u00B7 ');
    document.title = 'saekit: ' + (name || 'dashboard');
    document.getElementById('title').textContent = (data.sae || 'SAE') + ' \u2014 ' + (data.model || '?') + ' / ' + (data.hook || '?');
    var meta = [];
    if (isNum(data.d_sae)) meta.push('d_sae ' + data.d_sae.toLocaleString('en-US'));
    meta.push(feats.length.toLocaleString('en-US') + ' features analysed (' + dead.toLocaleString('en-US') + ' dead)');
    if (isNum(data.tokens_seen)) meta.push(data.tokens_seen.toLocaleString('en-US') + ' tokens seen');
    if (data.created) meta.push('created ' + data.created);
    document.getElementById('meta').textContent = meta.join(' \u00B7 ');

    var search = document.getElementById('search');
    var tbody = document.querySelector('table#features tbody');
    var countEl = document.getElementById('count');
    var moreBtn = document.getElementById('show-more');
    var heads = document.querySelectorAll('th[data-sort]');
    var sortKey = 'id';
    var sortDir = 1;
    var view = rows;
    var shown = 0;

    function matcher(raw) {
      var t = raw.trim();
      if (t === '') return null;
      var m = /^#(\d+)$/.exec(t);
      if (m) { var want = String(Number(m[1])); return function (r) { return r.idStr === want; }; }
      if (/^\d+$/.test(t)) return function (r) { return r.idStr.lastIndexOf(t, 0) === 0; };
      var q = raw.toLowerCase();
      return function (r) { return r.key.indexOf(q) !== -1; };
    }
    function value(r) { var v = r.f[sortKey]; return isNum(v) ? v : -Infinity; }
    function compare(a, b) {
      var d = sortKey === 'id' ? a.f.id - b.f.id : value(a) - value(b);
      if (d === 0) return a.f.id - b.f.id;
      return d * sortDir;
    }
    function renderRow(f) {
      var tr = el('tr', f.frac_nonzero === 0 ? 'dead' : '');
      tr.setAttribute('data-id', String(f.id));
      var idCell = el('td', 'num');
      var a = el('a', '', String(f.id));
      a.href = 'feature.html?id=' + encodeURIComponent(String(f.id));
      idCell.appendChild(a);
      tr.appendChild(idCell);
      var dens = el('td', 'num', fmt(f.frac_nonzero));
      dens.title = String(f.frac_nonzero);
      tr.appendChild(dens);
      var ld = log10Density(f.frac_nonzero);
      tr.appendChild(el('td', 'num', isNum(ld) ? ld.toFixed(2) : '\u2013'));
      tr.appendChild(el('td', 'num', fmt(f.max_act)));
      tr.appendChild(el('td', 'num', fmt(f.mean_act)));
      var top = el('td', 'top-tok');
      if (f.top_token !== undefined && f.top_token !== null && f.frac_nonzero !== 0) top.appendChild(el('span', 'tok-inline', showToken(f.top_token)));
      tr.appendChild(top);
      var pos = el('td', 'pos');
      (Array.isArray(f.pos_str) ? f.pos_str : []).slice(0, 6).forEach(function (s) { pos.appendChild(el('span', 'tok-inline', showToken(s))); });
      tr.appendChild(pos);
      return tr;
    }
    function showMore() {
      var end = Math.min(view.length, shown + pageRows);
      var frag = document.createDocumentFragment();
      for (var i = shown; i < end; i++) frag.appendChild(renderRow(view[i].f));
      tbody.appendChild(frag);
      shown = end;
      countEl.textContent = 'showing ' + shown.toLocaleString('en-US') + ' of ' + view.length.toLocaleString('en-US') +
        (view.length !== rows.length ? ' matching (' + rows.length.toLocaleString('en-US') + ' in all)' : '');
      moreBtn.hidden = shown >= view.length;
      if (!moreBtn.hidden) moreBtn.textContent = 'Show ' + Math.min(pageRows, view.length - shown) + ' more';
    }
    function apply() {
      var m = matcher(search.value);
      view = m ? rows.filter(m) : rows.slice();
      view.sort(compare);
      shown = 0;
      tbody.textContent = '';
      showMore();
      heads.forEach(function (th) {
        if (th.getAttribute('data-sort') === sortKey) th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
        else th.removeAttribute('aria-sort');
      });
    }
    heads.forEach(function (th) {
      th.addEventListener('click', function () {
        var key = th.getAttribute('data-sort');
        if (key === sortKey) sortDir = -sortDir;
        else { sortKey = key; sortDir = key === 'id' ? 1 : -1; }
        apply();
      });
    });
    search.addEventListener('input', apply);
    moreBtn.addEventListener('click', showMore);
    apply();
    document.body.setAttribute('data-state', 'ready');
  }

  // ------------------------------------------------------------------ feature page
  /** Bars of heights[i] at centers[i]; bar height is proportional to the count. */
  function histogram(svg, heights, centers, signed) {
    var W = 640, H = 170, L = 44, R = 10, T = 10, B = 26;
    var n = heights.length, pw = W - L - R, ph = H - T - B, bw = pw / n;
    var maxC = 0;
    for (var i = 0; i < n; i++) if (isNum(heights[i]) && heights[i] > maxC) maxC = heights[i];
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.textContent = '';
    for (i = 0; i < n; i++) {
      var c = isNum(heights[i]) && heights[i] > 0 ? heights[i] : 0;
      var h = maxC > 0 ? (c / maxC) * ph : 0;
      var x = centers[i];
      var fill = signed && isNum(x) && x < 0 ? 'rgb(0, 110, 255)' : 'rgb(255, 120, 0)';
      var bar = svgEl('rect', { 'class': 'bar', x: L + i * bw, y: T + ph - h, width: Math.max(bw * 0.9, 0.5), height: h, fill: fill, 'data-count': c, 'data-value': String(x) });
      var tip = svgEl('title', {});
      tip.textContent = fmt(x) + ': ' + c;
      bar.appendChild(tip);
      svg.appendChild(bar);
    }
    svg.appendChild(svgEl('line', { 'class': 'axis', x1: L, y1: T + ph, x2: W - R, y2: T + ph }));
    svg.appendChild(svgEl('line', { 'class': 'axis', x1: L, y1: T, x2: L, y2: T + ph }));
    function label(text, x, y, anchor) {
      var t = svgEl('text', { x: x, y: y, 'text-anchor': anchor });
      t.textContent = text;
      svg.appendChild(t);
    }
    label(String(maxC), L - 4, T + 9, 'end');
    label('0', L - 4, T + ph, 'end');
    if (n > 0) {
      label(fmt(centers[0]), L, H - 8, 'start');
      label(fmt(centers[n - 1]), W - R, H - 8, 'end');
    }
  }

  function shade(span, v, scale) {
    if (!isNum(v) || v === 0 || !(scale > 0)) return;
    var a = Math.min(1, Math.max(0.05, Math.abs(v) / scale));
    span.style.backgroundColor = (v > 0 ? 'rgba(255, 120, 0, ' : 'rgba(0, 110, 255, ') + a.toFixed(3) + ')';
  }

  function renderExample(ex, scale) {
    var wrap = el('div', 'example-wrap');
    var meta = el('span', 'ex-meta', 'max ' + fmt(ex.maxValue) + (isNum(ex.row) ? ' \u00B7 row ' + ex.row : ''));
    wrap.appendChild(meta);
    var row = el('div', 'example');
    if (isNum(ex.row)) row.setAttribute('data-row', String(ex.row));
    var toks = Array.isArray(ex.tokens) ? ex.tokens : [];
    var vals = Array.isArray(ex.values) ? ex.values : [];
    for (var i = 0; i < toks.length; i++) {
      var v = vals[i];
      var text = showToken(toks[i]);
      var span = el('span', 'tok', text);
      if (/^\s*$/.test(String(toks[i]))) span.classList.add('ws');
      if (i === ex.maxValueTokenIndex) span.classList.add('max');
      span.title = String(v);
      span.setAttribute('data-value', String(v));
      shade(span, v, scale);
      row.appendChild(span);
    }
    wrap.appendChild(row);
    return wrap;
  }

  function logitList(ol, strs, vals) {
    ol.textContent = '';
    (Array.isArray(strs) ? strs : []).forEach(function (s, i) {
      var li = el('li');
      li.appendChild(el('span', 'logit-tok', showToken(s)));
      var v = Array.isArray(vals) ? vals[i] : undefined;
      var val = el('span', 'logit-val', fmt(v));
      val.title = String(v);
      li.appendChild(val);
      ol.appendChild(li);
    });
  }

  function renderFeature(doc) {
    var id = doc.index;
    document.title = 'Feature ' + id + ' \u00B7 ' + doc.modelId + ' ' + doc.layer;
    document.getElementById('feature-id').textContent = String(id);
    document.getElementById('feature-model').textContent = doc.modelId + ' \u00B7 ' + doc.layer;
    var stats = document.getElementById('stats');
    function stat(name, text, exact) {
      stats.appendChild(el('dt', '', name));
      var dd = el('dd', '', text);
      if (exact !== undefined) dd.title = String(exact);
      stats.appendChild(dd);
    }
    var ld = isNum(doc.log10_density) ? doc.log10_density : log10Density(doc.frac_nonzero);
    stat('density', fmt(doc.frac_nonzero) + '  (log10 ' + (isNum(ld) ? ld.toFixed(2) : '\u2013') + ')', doc.frac_nonzero);
    stat('fired on', fmt(doc.count) + ' of ' + fmt(doc.tokens_seen) + ' tokens');
    stat('max activation', fmt(doc.max_act), doc.max_act);
    stat('mean activation (when firing)', fmt(doc.mean_act), doc.mean_act);

    var hist = document.getElementById('act-hist');
    var heights = doc.freq_hist_data_bar_heights || [];
    if (heights.length > 0) histogram(hist, heights, doc.freq_hist_data_bar_values || [], false);
    else { hist.setAttribute('hidden', ''); document.getElementById('act-hist-empty').hidden = false; }

    logitList(document.getElementById('pos-logits'), doc.pos_str, doc.pos_values);
    logitList(document.getElementById('neg-logits'), doc.neg_str, doc.neg_values);
    var lh = doc.logits_hist_data_bar_heights || [];
    if (lh.length > 0) {
      var lsvg = document.getElementById('logit-hist');
      lsvg.removeAttribute('hidden');
      histogram(lsvg, lh, doc.logits_hist_data_bar_values || [], true);
    }
    if (lh.length === 0 && !(doc.pos_str && doc.pos_str.length) && !(doc.neg_str && doc.neg_str.length)) {
      document.getElementById('logits-empty').hidden = false;
    }

    // Shading scale: the feature's max activation (falls back to the examples' largest value).
    var scale = isNum(doc.max_act) && doc.max_act > 0 ? doc.max_act : 0;
    var acts = Array.isArray(doc.activations) ? doc.activations : [];
    if (!(scale > 0)) acts.forEach(function (ex) { (ex.values || []).forEach(function (v) { if (isNum(v) && Math.abs(v) > scale) scale = Math.abs(v); }); });
    var groups = [], byBin = {};
    acts.forEach(function (ex) {
      var bin = String(ex.bin);
      if (!Object.prototype.hasOwnProperty.call(byBin, bin)) { byBin[bin] = []; groups.push(bin); }
      byBin[bin].push(ex);
    });
    groups.sort(function (a, b) { return (a === 'top' ? 0 : 1) - (b === 'top' ? 0 : 1); });
    var box = document.getElementById('examples');
    box.textContent = '';
    if (groups.length === 0) box.appendChild(el('p', 'note', 'No examples: this feature never fired.'));
    groups.forEach(function (bin) {
      var sec = el('section', 'bin');
      sec.setAttribute('data-bin', bin);
      sec.appendChild(el('h3', '', (bin === 'top' ? 'Top activations' : bin) + ' (' + byBin[bin].length + ')'));
      byBin[bin].forEach(function (ex) { sec.appendChild(renderExample(ex, scale)); });
      box.appendChild(sec);
    });
    document.getElementById('feature').hidden = false;
    document.body.setAttribute('data-state', 'ready');
  }

  function initFeature() {
    var raw = new URLSearchParams(location.search).get('id');
    if (raw === null || !/^\d+$/.test(raw)) {
      fail('No such feature: ' + (raw === null ? 'no id given (use feature.html?id=N)' : JSON.stringify(raw)) + '.');
      return;
    }
    var id = Number(raw);
    var dSae = Number(document.body.getAttribute('data-d-sae') || NaN);
    var prev = document.getElementById('prev'), next = document.getElementById('next');
    if (id > 0) { prev.href = 'feature.html?id=' + (id - 1); prev.hidden = false; }
    if (!(id + 1 >= dSae)) { next.href = 'feature.html?id=' + (id + 1); next.hidden = false; }
    if (typeof window.SAEKIT_API === 'string') { fetchFeature(window.SAEKIT_API, id); return; }
    var src = 'data/features/' + id + '.js';
    var s = document.createElement('script');
    s.src = src;
    s.onload = function () {
      var doc = window.SAEKIT_FEATURE;
      if (!doc || doc.index !== id) fail('No such feature: ' + id + ' (' + src + ' holds no feature ' + id + ').');
      else renderFeature(doc);
    };
    s.onerror = function () { fail('No such feature: ' + id + ' (' + src + ' is missing).'); };
    document.head.appendChild(s);
  }

  // saekit dashboard --serve URL: the document comes from saekit serve's GET /features/:id.
  function fetchFeature(api, id) {
    var url = api + 'features/' + id;
    fetch(url).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) fail('No such feature: ' + id + ' (' + url + ' answered ' + r.status + ': ' + ((body && body.error && body.error.message) || '') + ').');
        else if (!body || body.index !== id) fail('No such feature: ' + id + ' (' + url + ' holds no feature ' + id + ').');
        else renderFeature(body);
      });
    }).catch(function (e) { fail('Cannot read feature ' + id + ' from ' + url + ': ' + e); });
  }

  var page = document.body.getAttribute('data-page');
  if (page === 'index') initIndex();
  else if (page === 'feature') initFeature();
})();
`;
