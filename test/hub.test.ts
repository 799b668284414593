// Hub downloads against a local stand-in for huggingface.co (test/helpers/hubServer.ts): cache
// layout as huggingface_hub (blobs / snapshots symlinks / refs), resume with Range after a cut,
// integrity checks, 404s, offline mode, redirects, one download for concurrent callers (in this
// process and across processes), the tree listing and the environment variables.
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { FormatError, ValidationError } from '../src/errors.js';
import { hubCacheDir, hubFile, hubListFiles, type HubOptions } from '../src/hub/hub.js';
import { expectReject } from './helpers/expectError.js';
import { startHubServer, type HubServer } from './helpers/hubServer.js';

const REPO = 'acme/tiny-sae';
const ENV_KEYS = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_TOKEN'] as const;

function randomBytesSeeded(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (t ^ (t >>> 14)) & 0xff;
  }
  return out;
}

const sha256 = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');
const gitOid = (d: Uint8Array) => createHash('sha1').update(`blob ${d.length}\0`).update(d).digest('hex');

const CFG = new TextEncoder().encode(JSON.stringify({ d_in: 768, d_sae: 24576, architecture: 'standard', hook_name: 'blocks.8.hook_resid_pre' }));
const WEIGHTS = randomBytesSeeded(300 * 1024, 1); // LFS
const NESTED_CFG = new TextEncoder().encode(JSON.stringify({ d_in: 768, d_sae: 16384, layer: 8 }));
const NESTED_WEIGHTS = randomBytesSeeded(40 * 1024 + 7, 2); // LFS
const OTHER_CFG = new TextEncoder().encode(JSON.stringify({ d_in: 768, layer: 9 }));
const BIG = randomBytesSeeded(320 * 1024 + 11, 3); // LFS, for the concurrency tests

let server: HubServer;
const savedEnv: Partial<Record<(typeof ENV_KEYS)[number], string>> = {};
const tempRoots: string[] = [];
let cache: string;

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  tempRoots.push(d);
  return d;
}

const opts = (extra: HubOptions = {}): HubOptions => ({ endpoint: server.url, cacheDir: cache, ...extra });
const root = () => join(cache, 'models--acme--tiny-sae');
const resolveUrl = (path: string, repo = REPO, rev = 'main') => `${server.url}/${repo}/resolve/${rev}/${path}`;

/** PATH holds exactly DATA (compared with Buffer.equals: a deep toEqual on 300 KiB is slow). */
async function expectBytes(path: string, data: Uint8Array): Promise<void> {
  const got = await readFile(path);
  expect(got.length).toBe(data.length);
  expect(got.equals(data), `${path} differs from the hub's bytes`).toBe(true);
}

/** Names under dir (recursively) that a finished download must not leave behind. */
async function leftovers(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true })) {
    const name = String(e);
    if (/\.incomplete$|\.lock$|\.tmp-/.test(name)) out.push(name);
  }
  return out;
}

/** Checks PATH is snapshots/<commit>/<file>, a relative symlink into blobs/<etag>, holding DATA. */
async function expectCached(path: string, file: string, data: Uint8Array, etag: string): Promise<void> {
  expect(path).toBe(join(root(), 'snapshots', server.commit, file));
  const st = await lstat(path);
  expect(st.isSymbolicLink()).toBe(true);
  const depth = file.split('/').length; // snapshots/<commit>/<dirs...>/<file>
  expect(await readlink(path)).toBe('../'.repeat(depth + 1) + `blobs/${etag}`);
  expect(await realpath(path)).toBe(await realpath(join(root(), 'blobs', etag)));
  await expectBytes(path, data);
  expect((await readFile(join(root(), 'refs', 'main'), 'utf8')).trim()).toBe(server.commit);
  expect(await leftovers(root())).toEqual([]);
}

const contentGets = (from = 0) =>
  server.requests.slice(from).filter((r) => r.method === 'GET' && (r.path.startsWith('/cdn/') || r.path.includes('/resolve/')));

function runNode(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  for (const k of ENV_KEYS) savedEnv[k] = process.env[k];
  server = await startHubServer();
  server.addRepo(REPO, [
    { path: 'cfg.json', data: CFG },
    { path: 'weights.bin', data: WEIGHTS },
    { path: 'big.bin', data: BIG },
    { path: 'blocks.8.hook_resid_pre/cfg.json', data: NESTED_CFG },
    { path: 'blocks.8.hook_resid_pre/sae_weights.safetensors', data: NESTED_WEIGHTS },
    { path: 'blocks.9.hook_resid_pre/cfg.json', data: OTHER_CFG },
  ]);
});

afterAll(async () => {
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  await server?.close();
  await Promise.all(tempRoots.map((d) => rm(d, { recursive: true, force: true })));
});

beforeEach(async () => {
  // The environment of the machine running the tests must not leak in (HF_HUB_OFFLINE=1, HF_TOKEN...).
  for (const k of ENV_KEYS) delete process.env[k];
  server.requests.length = 0;
  server.bytesServed = 0;
  server.slow(0);
  server.relativeRedirects = false;
  server.ignoreRanges = false;
  server.resolveHeaders = {};
  server.treePageSize = Infinity;
  cache = await tempDir('saekit-hub-');
});

describe('hubFile: download and cache layout', () => {
  it('downloads a small JSON file (not LFS) and an LFS binary into blobs/snapshots/refs', async () => {
    const cfg = await hubFile(REPO, 'cfg.json', opts());
    await expectCached(cfg, 'cfg.json', CFG, gitOid(CFG)); // a regular file's blob is its git oid (ETag)
    const w = await hubFile(REPO, 'weights.bin', opts());
    await expectCached(w, 'weights.bin', WEIGHTS, sha256(WEIGHTS)); // an LFS file's blob is its sha256
    expect((await readdir(join(root(), 'blobs'))).sort()).toEqual([gitOid(CFG), sha256(WEIGHTS)].sort());
    expect(await readdir(join(root(), 'refs'))).toEqual(['main']);
    expect(server.bytesServed).toBe(CFG.length + WEIGHTS.length);
  });

  it('a second call is a cache hit: one HEAD to check the revision, no content GET', async () => {
    const first = await hubFile(REPO, 'weights.bin', opts());
    const blobStat = await stat(join(root(), 'blobs', sha256(WEIGHTS)));
    const mark = server.requests.length;
    const served = server.bytesServed;
    const second = await hubFile(REPO, 'weights.bin', opts());
    expect(second).toBe(first);
    const after = server.requests.slice(mark);
    expect(after.map((r) => r.method)).toEqual(['HEAD']);
    expect(after[0]!.path).toBe(`/${REPO}/resolve/main/weights.bin`);
    expect(server.bytesServed).toBe(served);
    expect((await stat(join(root(), 'blobs', sha256(WEIGHTS)))).mtimeMs).toBe(blobStat.mtimeMs);
    await expectCached(second, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });

  it('nested paths: snapshots/<commit>/blocks.8.hook_resid_pre/cfg.json links ../../../blobs/<etag>', async () => {
    const cfg = await hubFile(REPO, 'blocks.8.hook_resid_pre/cfg.json', opts());
    await expectCached(cfg, 'blocks.8.hook_resid_pre/cfg.json', NESTED_CFG, gitOid(NESTED_CFG));
    const w = await hubFile(REPO, 'blocks.8.hook_resid_pre/sae_weights.safetensors', opts());
    await expectCached(w, 'blocks.8.hook_resid_pre/sae_weights.safetensors', NESTED_WEIGHTS, sha256(NESTED_WEIGHTS));
    expect(dirname(cfg)).toBe(dirname(w));
  });

  it('two files with the same bytes share one blob', async () => {
    const data = randomBytesSeeded(5000, 9);
    server.addRepo('acme/dup', [
      { path: 'a.bin', data },
      { path: 'sub/b.bin', data },
    ]);
    const a = await hubFile('acme/dup', 'a.bin', opts());
    const mark = server.bytesServed;
    const b = await hubFile('acme/dup', 'sub/b.bin', opts());
    expect(server.bytesServed).toBe(mark); // blob already there
    expect(await realpath(a)).toBe(await realpath(b));
    expect(await readdir(join(cache, 'models--acme--dup', 'blobs'))).toEqual([sha256(data)]);
  });

  it('a commit hash as revision resolves to snapshots/<commit> and writes no ref for it', async () => {
    const p = await hubFile(REPO, 'cfg.json', opts({ revision: server.commit }));
    expect(p).toBe(join(root(), 'snapshots', server.commit, 'cfg.json'));
    expect(server.requests[0]!.path).toBe(`/${REPO}/resolve/${server.commit}/cfg.json`);
    expect(existsSync(join(root(), 'refs', server.commit))).toBe(false);
    // and offline it resolves without refs/
    const mark = server.requests.length;
    expect(await hubFile(REPO, 'cfg.json', opts({ revision: server.commit, offline: true }))).toBe(p);
    expect(server.requests.length).toBe(mark);
  });

  it('a branch name other than main gets its own ref', async () => {
    server.revisions.add('v1');
    const p = await hubFile(REPO, 'cfg.json', opts({ revision: 'v1' }));
    expect(p).toBe(join(root(), 'snapshots', server.commit, 'cfg.json'));
    expect((await readFile(join(root(), 'refs', 'v1'), 'utf8')).trim()).toBe(server.commit);
  });

  it('reports progress up to the full size', async () => {
    const seen: { file: string; bytes: number; total: number }[] = [];
    await hubFile(REPO, 'weights.bin', opts({ onProgress: (p) => seen.push({ ...p }) }));
    expect(seen.length).toBeGreaterThan(1);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.bytes).toBeGreaterThanOrEqual(seen[i - 1]!.bytes);
    expect(seen.at(-1)).toEqual({ file: 'weights.bin', bytes: WEIGHTS.length, total: WEIGHTS.length });
  });

  it('rejects malformed repository ids and paths before any request', async () => {
    await expectReject(() => hubFile('no-owner', 'cfg.json', opts()), ValidationError, 'no-owner');
    await expectReject(() => hubFile(REPO, '../escape.json', opts()), ValidationError, '../escape.json');
    await expectReject(() => hubFile(REPO, '/abs.json', opts()), ValidationError, '/abs.json');
    expect(server.requests).toEqual([]);
  });
});

describe('hubFile: redirects and tokens', () => {
  it('an LFS file is fetched through the 302 to the CDN (absolute Location), never GET on resolve', async () => {
    const p = await hubFile(REPO, 'weights.bin', opts());
    await expectBytes(p, WEIGHTS);
    expect(server.requests.map((r) => `${r.method} ${r.path.split('?')[0]}`)).toEqual([
      `HEAD /${REPO}/resolve/main/weights.bin`,
      `GET /cdn/${sha256(WEIGHTS)}`,
    ]);
    expect(server.requests[1]!.path).toContain('X-Amz-Signature='); // the signed URL as given
  });

  it('a relative Location works too', async () => {
    server.relativeRedirects = true;
    const p = await hubFile(REPO, 'weights.bin', opts());
    await expectBytes(p, WEIGHTS);
    expect(contentGets().map((r) => r.path.split('?')[0])).toEqual([`/cdn/${sha256(WEIGHTS)}`]);
  });

  it('sends the token (option or HF_TOKEN) to the hub but not to the CDN', async () => {
    await hubFile(REPO, 'weights.bin', opts({ token: 'hf_option' }));
    await hubFile(REPO, 'cfg.json', opts({ token: 'hf_option' }));
    const head = server.requests.find((r) => r.method === 'HEAD' && r.path.endsWith('/weights.bin'))!;
    expect(head.authorization).toBe('Bearer hf_option');
    const cdn = server.requests.find((r) => r.path.startsWith('/cdn/'))!;
    expect(cdn.authorization).toBeUndefined();
    const cfgGet = server.requests.find((r) => r.method === 'GET' && r.path.endsWith('/cfg.json'))!;
    expect(cfgGet.authorization).toBe('Bearer hf_option');

    process.env.HF_TOKEN = 'hf_env';
    server.requests.length = 0;
    await hubFile(REPO, 'blocks.9.hook_resid_pre/cfg.json', opts());
    expect(server.requests.map((r) => r.authorization)).toEqual(['Bearer hf_env', 'Bearer hf_env']);
    await hubListFiles(REPO, '', opts());
    expect(server.requests.at(-1)!.authorization).toBe('Bearer hf_env');
  });
});

describe('hubFile: resume and integrity', () => {
  it('a cut download leaves blobs/<sha>.incomplete, and the next call resumes it with a Range request', async () => {
    const cutAt = 100 * 1024 + 123;
    server.cutNext('weights.bin', cutAt);
    const err = await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'weights.bin', 'resume');
    expect(err.message).toMatch(/cut/);
    const partial = join(root(), 'blobs', `${sha256(WEIGHTS)}.incomplete`);
    const have = (await stat(partial)).size;
    expect(have).toBeGreaterThanOrEqual(100 * 1024);
    expect(have).toBeLessThanOrEqual(cutAt);
    expect(existsSync(join(root(), 'blobs', sha256(WEIGHTS)))).toBe(false);
    expect(existsSync(join(root(), 'blobs', `${sha256(WEIGHTS)}.lock`))).toBe(false); // lock released
    expect(existsSync(join(root(), 'snapshots', server.commit, 'weights.bin'))).toBe(false);
    expect(contentGets().length).toBe(1); // no internal retry: the error is the caller's to see

    const mark = server.requests.length;
    const servedBefore = server.bytesServed;
    const p = await hubFile(REPO, 'weights.bin', opts());
    const gets = contentGets(mark);
    expect(gets.length).toBe(1);
    expect(gets[0]!.range).toBe(`bytes=${have}-`);
    expect(server.bytesServed - servedBefore).toBe(WEIGHTS.length - have);
    await expectCached(p, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });

  it('a server that ignores Range (200) makes the download start over', async () => {
    server.cutNext('weights.bin', 64 * 1024);
    await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'weights.bin');
    server.ignoreRanges = true;
    const mark = server.requests.length;
    const p = await hubFile(REPO, 'weights.bin', opts());
    expect(contentGets(mark)[0]!.range).toMatch(/^bytes=\d+-$/);
    await expectCached(p, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });

  it('a partial file longer than the blob is discarded, not resumed', async () => {
    await mkdir(join(root(), 'blobs'), { recursive: true });
    await writeFile(join(root(), 'blobs', `${sha256(WEIGHTS)}.incomplete`), new Uint8Array(WEIGHTS.length + 10));
    const p = await hubFile(REPO, 'weights.bin', opts());
    expect(contentGets()[0]!.range).toBeUndefined();
    await expectCached(p, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });

  it('a corrupt download (sha256 mismatch) is rejected and discarded; the next call succeeds', async () => {
    server.corruptNext('weights.bin');
    const err = await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'corrupt', 'sha256', 'weights.bin');
    expect(err.message).toContain(`/cdn/${sha256(WEIGHTS)}`); // names the URL it came from
    expect(await readdir(join(root(), 'blobs'))).toEqual([]); // no blob, no .incomplete, no .lock
    expect(existsSync(join(root(), 'snapshots', server.commit, 'weights.bin'))).toBe(false);

    const p = await hubFile(REPO, 'weights.bin', opts());
    await expectCached(p, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });

  it('a corrupt resumed tail is caught too', async () => {
    server.cutNext('weights.bin', 50 * 1024);
    await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'weights.bin');
    server.corruptNext('weights.bin');
    await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'corrupt');
    expect(await readdir(join(root(), 'blobs'))).toEqual([]);
    const p = await hubFile(REPO, 'weights.bin', opts());
    await expectCached(p, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });
});

describe('hubFile: errors', () => {
  it('404 for a missing file and for a missing repository: FormatError naming the URL', async () => {
    await expectReject(() => hubFile(REPO, 'nope.json', opts()), FormatError, resolveUrl('nope.json'), '404', 'EntryNotFound');
    await expectReject(
      () => hubFile('acme/missing', 'cfg.json', opts()),
      FormatError,
      resolveUrl('cfg.json', 'acme/missing'),
      '404',
      'RepoNotFound',
    );
    await expectReject(() => hubFile(REPO, 'cfg.json', opts({ revision: 'no-such-branch' })), FormatError, '404');
    expect(existsSync(join(cache, 'models--acme--missing'))).toBe(false);
    expect(await leftovers(cache)).toEqual([]);
  });

  it('an unreachable hub: a cached file is still served, an uncached one is an error', async () => {
    const p = await hubFile(REPO, 'cfg.json', opts());
    const down = 'http://127.0.0.1:1';
    expect(await hubFile(REPO, 'cfg.json', opts({ endpoint: down }))).toBe(p);
    await expectReject(() => hubFile(REPO, 'weights.bin', opts({ endpoint: down })), FormatError, down, 'reach');
  });
});

describe('hubFile: offline', () => {
  it('offline option: a cached file resolves through refs/snapshots without any request', async () => {
    const p = await hubFile(REPO, 'blocks.8.hook_resid_pre/cfg.json', opts());
    const mark = server.requests.length;
    expect(await hubFile(REPO, 'blocks.8.hook_resid_pre/cfg.json', opts({ offline: true }))).toBe(p);
    expect(server.requests.length).toBe(mark);
    await expectReject(() => hubFile(REPO, 'weights.bin', opts({ offline: true })), FormatError, 'offline', 'weights.bin');
    expect(server.requests.length).toBe(mark);
  });

  it('HF_HUB_OFFLINE=1 does the same', async () => {
    const p = await hubFile(REPO, 'cfg.json', opts());
    const mark = server.requests.length;
    process.env.HF_HUB_OFFLINE = '1';
    expect(await hubFile(REPO, 'cfg.json', opts())).toBe(p);
    await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'offline');
    await expectReject(() => hubListFiles(REPO, '', opts()), FormatError, 'offline');
    expect(server.requests.length).toBe(mark);
    process.env.HF_HUB_OFFLINE = '0'; // "0" means online
    await hubFile(REPO, 'weights.bin', opts());
    expect(server.requests.length).toBeGreaterThan(mark);
  });
});

describe('hubFile: concurrent downloaders', () => {
  it('two concurrent calls in one process download the blob once', async () => {
    server.slow(2);
    const [a, b] = await Promise.all([hubFile(REPO, 'big.bin', opts()), hubFile(REPO, 'big.bin', opts())]);
    expect(a).toBe(b);
    await expectCached(a, 'big.bin', BIG, sha256(BIG));
    const heads = server.requests.filter((r) => r.method === 'HEAD');
    const gets = contentGets();
    expect(heads.length).toBe(2);
    expect(gets.length).toBe(1);
    // they did overlap: both asked before the one download finished
    for (const h of heads) expect(h.at).toBeLessThan(gets[0]!.end!);
    expect(server.bytesServed).toBeLessThanOrEqual(1.2 * BIG.length);
  });

  it('a waiter takes over after the first downloader fails', async () => {
    server.slow(2);
    server.cutNext('big.bin', 100 * 1024);
    const results = await Promise.allSettled([hubFile(REPO, 'big.bin', opts()), hubFile(REPO, 'big.bin', opts())]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok.length).toBe(1);
    expect(failed.length).toBe(1);
    expect(failed[0]!.reason).toBeInstanceOf(FormatError);
    await expectCached((ok[0] as PromiseFulfilledResult<string>).value, 'big.bin', BIG, sha256(BIG));
    const gets = contentGets();
    expect(gets.length).toBe(2);
    expect(gets[1]!.range).toMatch(/^bytes=\d+-$/); // the waiter resumed the partial file
    expect(server.bytesServed).toBeLessThanOrEqual(1.2 * BIG.length);
  });

  it('a stale lock (holder gone, no progress) is taken over after lockStaleMs', async () => {
    await mkdir(join(root(), 'blobs'), { recursive: true });
    await writeFile(join(root(), 'blobs', `${sha256(WEIGHTS)}.lock`), '999999');
    const t0 = performance.now();
    const p = await hubFile(REPO, 'weights.bin', opts({ lockStaleMs: 300 }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    await expectCached(p, 'weights.bin', WEIGHTS, sha256(WEIGHTS));
  });

  it('two processes pulling the same file into the same cache download it once', async () => {
    // The child imports a plain-JS build of src/hub/hub.ts (and errors.ts) made here with
    // transpileModule, so it runs the current source whatever state dist/ is in.
    const here = dirname(fileURLToPath(import.meta.url));
    const build = await tempDir('saekit-hub-build-');
    for (const rel of ['hub/hub.ts', 'errors.ts']) {
      const src = await readFile(join(here, '..', 'src', rel), 'utf8');
      const out = ts.transpileModule(src, {
        compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
        fileName: rel,
      }).outputText;
      await mkdir(join(build, dirname(rel)), { recursive: true });
      await writeFile(join(build, rel.replace(/\.ts$/, '.js')), out);
    }
    await writeFile(join(build, 'package.json'), '{"type":"module"}');
    const script = join(build, 'pull.mjs');
    await writeFile(
      script,
      [
        "import { hubFile } from './hub/hub.js';",
        'const [endpoint, cacheDir, repo, path] = process.argv.slice(2);',
        'const p = await hubFile(repo, path, { endpoint, cacheDir });',
        'process.stdout.write(p);',
      ].join('\n'),
    );
    const env = { ...process.env };
    for (const k of ENV_KEYS) delete env[k];

    // Hold the body until both processes have asked (so they surely overlap), then send it slowly.
    const release = server.hold();
    server.slow(2);
    const args = [script, server.url, cache, REPO, 'big.bin'];
    const both = Promise.all([runNode(args, env), runNode(args, env)]);
    const t0 = performance.now();
    while (server.requests.filter((r) => r.method === 'HEAD').length < 2 && performance.now() - t0 < 15_000) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 100)); // let the second reach the lock
    release();
    const [a, b] = await both;
    expect(a.stderr).toBe('');
    expect(b.stderr).toBe('');
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    await expectCached(a.stdout, 'big.bin', BIG, sha256(BIG));
    const heads = server.requests.filter((r) => r.method === 'HEAD');
    const gets = contentGets();
    expect(heads.length).toBe(2);
    expect(gets.length).toBe(1);
    for (const h of heads) expect(h.at).toBeLessThan(gets[0]!.end!); // they overlapped
    expect(server.bytesServed).toBeLessThanOrEqual(1.2 * BIG.length);
    expect(relative(root(), a.stdout)).toBe(join('snapshots', server.commit, 'big.bin'));
  });
});

describe('hubListFiles', () => {
  const sortByPath = <T extends { path: string }>(l: T[]) => [...l].sort((x, y) => x.path.localeCompare(y.path));

  it('lists the direct children of the root and of a folder', async () => {
    expect(sortByPath(await hubListFiles(REPO, '', opts()))).toEqual(
      sortByPath([
        { type: 'file', path: 'cfg.json', size: CFG.length },
        { type: 'file', path: 'weights.bin', size: WEIGHTS.length },
        { type: 'file', path: 'big.bin', size: BIG.length },
        { type: 'directory', path: 'blocks.8.hook_resid_pre', size: 0 },
        { type: 'directory', path: 'blocks.9.hook_resid_pre', size: 0 },
      ]),
    );
    expect(sortByPath(await hubListFiles(REPO, 'blocks.8.hook_resid_pre', opts()))).toEqual([
      { type: 'file', path: 'blocks.8.hook_resid_pre/cfg.json', size: NESTED_CFG.length },
      { type: 'file', path: 'blocks.8.hook_resid_pre/sae_weights.safetensors', size: NESTED_WEIGHTS.length },
    ]);
    expect(server.requests.at(-1)!.path).toBe(`/api/models/${REPO}/tree/main/blocks.8.hook_resid_pre`);
  });

  it('a missing folder or repository is a FormatError with the URL and 404', async () => {
    await expectReject(() => hubListFiles(REPO, 'blocks.10.hook_resid_pre', opts()), FormatError, `${server.url}/api/models/${REPO}/tree/main/blocks.10.hook_resid_pre`, '404');
    await expectReject(() => hubListFiles('acme/missing', '', opts()), FormatError, '404');
  });
});

describe('environment', () => {
  it('HF_ENDPOINT is used when no endpoint option is given', async () => {
    process.env.HF_ENDPOINT = server.url + '/'; // a trailing slash is tolerated
    const p = await hubFile(REPO, 'cfg.json', { cacheDir: cache });
    await expectBytes(p, CFG);
    expect(server.requests[0]!.path).toBe(`/${REPO}/resolve/main/cfg.json`);
    expect((await hubListFiles(REPO, '', { cacheDir: cache })).length).toBe(5);
    // the option wins over the variable
    process.env.HF_ENDPOINT = 'http://127.0.0.1:1';
    expect(await hubFile(REPO, 'weights.bin', opts())).toBe(join(root(), 'snapshots', server.commit, 'weights.bin'));
  });

  it('hubCacheDir: option, then HF_HUB_CACHE, then HF_HOME/hub', () => {
    process.env.HF_HOME = '/tmp/hf-home';
    expect(hubCacheDir()).toBe(join('/tmp/hf-home', 'hub'));
    process.env.HF_HUB_CACHE = '/tmp/hf-cache';
    expect(hubCacheDir()).toBe('/tmp/hf-cache');
    expect(hubCacheDir({ cacheDir: '/tmp/mine' })).toBe('/tmp/mine');
    delete process.env.HF_HOME;
    delete process.env.HF_HUB_CACHE;
    expect(hubCacheDir().endsWith(join('huggingface', 'hub'))).toBe(true);
  });

  it('HF_HUB_CACHE is the default cache directory', async () => {
    process.env.HF_HUB_CACHE = cache;
    const p = await hubFile(REPO, 'cfg.json', { endpoint: server.url });
    expect(p).toBe(join(root(), 'snapshots', server.commit, 'cfg.json'));
  });
});

describe('the hub stand-in itself', () => {
  it('serves byte ranges, 416 past the end, and 404s with X-Error-Code', async () => {
    const cdn = `${server.url}/cdn/${sha256(WEIGHTS)}`;
    const r = await fetch(cdn, { headers: { range: 'bytes=10-19' } });
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe(`bytes 10-19/${WEIGHTS.length}`);
    expect(Buffer.from(await r.arrayBuffer()).equals(WEIGHTS.subarray(10, 20))).toBe(true);
    const tail = await fetch(cdn, { headers: { range: `bytes=${WEIGHTS.length - 5}-` } });
    expect(tail.status).toBe(206);
    expect((await tail.arrayBuffer()).byteLength).toBe(5);
    const past = await fetch(cdn, { headers: { range: `bytes=${WEIGHTS.length}-` } });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${WEIGHTS.length}`);
    await past.arrayBuffer();
    const missing = await fetch(resolveUrl('x', 'acme/missing'), { method: 'HEAD' });
    expect([missing.status, missing.headers.get('x-error-code')]).toEqual([404, 'RepoNotFound']);
    const entry = await fetch(resolveUrl('x'), { method: 'HEAD' });
    expect([entry.status, entry.headers.get('x-error-code')]).toEqual([404, 'EntryNotFound']);
    const lfs = await fetch(resolveUrl('weights.bin'), { method: 'HEAD', redirect: 'manual' });
    expect(lfs.status).toBe(302);
    expect(lfs.headers.get('x-linked-etag')).toBe(`"${sha256(WEIGHTS)}"`);
    expect(lfs.headers.get('x-linked-size')).toBe(String(WEIGHTS.length));
    expect(lfs.headers.get('x-repo-commit')).toBe(server.commit);
  });
});

describe('hubFile: headers from a broken hub', () => {
  it('a response without X-Repo-Commit is a FormatError', async () => {
    server.resolveHeaders = { 'X-Repo-Commit': null };
    await expectReject(() => hubFile(REPO, 'cfg.json', opts()), FormatError, resolveUrl('cfg.json'), 'X-Repo-Commit');
  });

  it('a size that does not match the bytes is rejected and discarded', async () => {
    server.resolveHeaders = { 'X-Linked-Size': String(WEIGHTS.length - 1) };
    await expectReject(() => hubFile(REPO, 'weights.bin', opts()), FormatError, 'weights.bin', 'bytes');
    expect(await readdir(join(root(), 'blobs'))).toEqual([]);
    expect(existsSync(join(root(), 'snapshots'))).toBe(false);
  });
});

// Behaviours huggingface_hub has that a first version of src/hub/hub.ts lacked: nested
// revisions, server-supplied names kept inside the cache, renamed repositories, paged listings.
describe('hubFile: behaviours huggingface_hub has', () => {
  it('a revision with slashes (refs/pr/1) gets refs/refs/pr/1', async () => {
    server.revisions.add('refs/pr/1');
    const p = await hubFile(REPO, 'cfg.json', opts({ revision: 'refs/pr/1' }));
    expect(p).toBe(join(root(), 'snapshots', server.commit, 'cfg.json'));
    expect((await readFile(join(root(), 'refs', 'refs', 'pr', '1'), 'utf8')).trim()).toBe(server.commit);
  });

  it('X-Repo-Commit / ETag from the server cannot put files outside the cache', async () => {
    server.resolveHeaders = { 'X-Repo-Commit': '../../../escaped-commit', ETag: '"../../../escaped-blob"' };
    const outer = dirname(cache);
    const before = new Set(await readdir(outer));
    const nested = join(cache, 'deep', 'er'); // keep any escape inside our temp dir
    let err: unknown;
    try {
      await hubFile(REPO, 'cfg.json', opts({ cacheDir: nested }));
    } catch (e) {
      err = e;
    }
    // Refused before anything is written: nothing beside the (possibly absent) nested cache.
    expect((await readdir(cache)).filter((n) => n !== 'deep')).toEqual([]);
    if (existsSync(join(cache, 'deep'))) expect(await readdir(join(cache, 'deep'))).toEqual(['er']);
    expect(err).toBeInstanceOf(FormatError);
    expect((err as Error).message).toMatch(/malformed/);
    expect([...(await readdir(outer))].filter((n) => !before.has(n))).toEqual([]);
  });

  it('a renamed repository (307 with a relative Location on HEAD) is followed', async () => {
    server.renameRepo('acme/old-name', REPO);
    const p = await hubFile('acme/old-name', 'cfg.json', opts());
    await expectBytes(p, CFG);
  });

  it('hubListFiles follows the Link header of a paged tree listing', async () => {
    server.treePageSize = 2;
    expect((await hubListFiles(REPO, '', opts())).length).toBe(5);
  });
});
