// Hugging Face hub downloads with huggingface_hub's cache layout, so files fetched by Python
// tools are reused here and the other way round:
//   <cache>/models--<owner>--<name>/blobs/<etag>               the bytes, written once
//   <cache>/models--<owner>--<name>/snapshots/<commit>/<path>   symlink to the blob
//   <cache>/models--<owner>--<name>/refs/<revision>             the commit the revision names
// A download goes to blobs/<etag>.incomplete and is resumed with an HTTP Range request after a
// cut; blobs/<etag>.lock (created exclusively) makes a second downloader, in this process or
// another, wait for the first instead of writing the same blob. Bytes are checked against the
// hub's size and, for LFS files, sha256 (X-Linked-Etag) before the blob gets its final name.
//
// Protocol as huggingface_hub: HEAD .../resolve/<revision>/<path> without following redirects
// gives the commit, the blob id and size, and for LFS files a redirect to the storage URL;
// GET fetches the bytes. Offline (HF_HUB_OFFLINE=1 or the option), refs + snapshots answer
// alone and a missing file is an error at once.

import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, readlink, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';

export interface HubOptions {
  /** Default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Never touch the network (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Default $HF_TOKEN. */
  token?: string;
  onProgress?: (p: { file: string; bytes: number; total: number }) => void;
  /** How long to wait for another downloader's lock before taking it over (default 10 min without progress). */
  lockStaleMs?: number;
}

export function hubCacheDir(o: HubOptions = {}): string {
  if (o.cacheDir) return o.cacheDir;
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  if (process.env.HF_HOME) return join(process.env.HF_HOME, 'hub');
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface', 'hub');
}

export function hubEndpoint(o: HubOptions = {}): string {
  return (o.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
}

export function hubOffline(o: HubOptions = {}): boolean {
  const on = (v: string | undefined) => v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
  return o.offline === true || on(process.env.HF_HUB_OFFLINE) || on(process.env.TRANSFORMERS_OFFLINE);
}

function checkRepo(repo: string): void {
  if (!/^[\w.-]+\/[\w.-]+$/.test(repo) || repo.includes('..')) throw new ValidationError(`Expected a hub repository id owner/name but received ${JSON.stringify(repo)}`);
}

function checkPath(path: string): void {
  if (path === '' || path.startsWith('/') || path.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new ValidationError(`Expected a relative file path inside the repository but received ${JSON.stringify(path)}`);
  }
}

function repoDir(repo: string, o: HubOptions): string {
  return join(hubCacheDir(o), `models--${repo.replace('/', '--')}`);
}

const encodePath = (p: string) => p.split('/').map(encodeURIComponent).join('/');

/** Local path of REPO's file PATH at the revision, downloading and verifying it once. */
export async function hubFile(repo: string, path: string, o: HubOptions = {}): Promise<string> {
  checkRepo(repo);
  checkPath(path);
  const revision = o.revision ?? 'main';
  const root = repoDir(repo, o);
  const cached = await cachedPath(root, revision, path);
  if (hubOffline(o)) {
    if (cached) return cached;
    throw new FormatError(join(root, 'snapshots'), `${repo}/${path} (revision ${revision}) is not in the cache and offline mode is on`);
  }
  const url = `${hubEndpoint(o)}/${repo}/resolve/${encodeURIComponent(revision)}/${encodePath(path)}`;
  const headers: Record<string, string> = o.token ?? process.env.HF_TOKEN ? { authorization: `Bearer ${o.token ?? process.env.HF_TOKEN}` } : {};
  // HEAD without following redirects: an LFS file answers 302 to its storage URL with the
  // blob's id and size; a renamed repository answers 307 to its new name (no blob headers),
  // which is followed.
  let head: Response;
  let at = url;
  for (let hops = 0; ; hops++) {
    try {
      head = await fetch(at, { method: 'HEAD', redirect: 'manual', headers });
    } catch (e) {
      // Unreachable hub: a cached copy still serves (as huggingface_hub does).
      if (cached) return cached;
      throw new FormatError(at, `cannot reach the hub (${causeOf(e)}); set HF_HUB_OFFLINE=1 to use the cache only`);
    }
    const moved = head.status >= 300 && head.status < 400 && !head.headers.get('x-linked-etag') && !head.headers.get('x-repo-commit');
    if (!moved) break;
    if (hops >= 5 || !head.headers.get('location')) throw new FormatError(at, `HTTP ${head.status}: too many redirects`);
    at = resolveUrl(head.headers.get('location')!, at, 'Location');
  }
  if (head.status === 404 || head.status === 401 || head.status === 403) {
    const code = head.headers.get('x-error-code');
    throw new FormatError(url, `HTTP ${head.status}${code ? ` (${code})` : ''}: no such repository or file${head.status !== 404 ? ', or it needs a token (HF_TOKEN)' : ''}`);
  }
  if (head.status >= 400) throw new FormatError(url, `HTTP ${head.status}`);
  const commit = head.headers.get('x-repo-commit') ?? (/^[0-9a-f]{40}$/.test(revision) ? revision : undefined);
  const linkedEtag = unquote(head.headers.get('x-linked-etag'));
  const etag = linkedEtag ?? unquote(head.headers.get('etag'));
  if (!commit || !etag) throw new FormatError(url, 'the hub answered without X-Repo-Commit / ETag headers');
  // Both become file names in the cache: only a hex commit and a plain blob id are accepted.
  if (!/^[0-9a-f]{40}$/.test(commit)) throw new FormatError(url, `the hub answered with a malformed X-Repo-Commit ${JSON.stringify(commit)}`);
  if (!/^[\w.-]+$/.test(etag) || etag.startsWith('.')) throw new FormatError(url, `the hub answered with a malformed blob id (ETag) ${JSON.stringify(etag)}`);
  const size = Number(head.headers.get('x-linked-size') ?? head.headers.get('content-length') ?? NaN);
  const location = head.status >= 300 && head.status < 400 ? head.headers.get('location') : null;
  const source = location ? resolveUrl(location, at, 'Location') : at;
  const sha256 = linkedEtag && /^[0-9a-f]{64}$/.test(linkedEtag) ? linkedEtag : undefined;

  const blob = join(root, 'blobs', etag);
  if (!existsSync(blob)) await downloadBlob(source, blob, { size, sha256, headers: location ? {} : headers, file: path, o });
  const link = join(root, 'snapshots', commit, path);
  await mkdir(dirname(link), { recursive: true });
  await linkTo(link, blob);
  if (revision !== commit) {
    // Revisions such as refs/pr/1 nest, as in huggingface_hub's layout.
    await mkdir(dirname(join(root, 'refs', revision)), { recursive: true });
    await writeAtomic(join(root, 'refs', revision), commit);
  }
  return link;
}

const MAX_TREE_PAGES = 1000;

/** The entries directly under DIR in REPO, from the hub's tree API. */
export async function hubListFiles(repo: string, dir: string, o: HubOptions = {}): Promise<{ type: 'file' | 'directory'; path: string; size: number }[]> {
  checkRepo(repo);
  if (dir !== '') checkPath(dir);
  if (hubOffline(o)) throw new FormatError(`${repo}/${dir}`, 'listing a hub folder needs the network, and offline mode is on');
  let url: string | undefined = `${hubEndpoint(o)}/api/models/${repo}/tree/${encodeURIComponent(o.revision ?? 'main')}/${encodePath(dir)}`;
  const out: { type: 'file' | 'directory'; path: string; size: number }[] = [];
  // Long listings come in pages linked by `Link: <...>; rel="next"` (1000 entries a page on
  // the hub: 1000 pages is a million files). A page seen before, or past the cap, is refused
  // rather than followed forever or cut short silently.
  const visited = new Set<string>();
  const first = url;
  for (let page = 0; url !== undefined; page++) {
    if (visited.has(url)) throw new FormatError(url, `the tree listing's pages link back to one already read (page ${page + 1})`);
    if (page >= MAX_TREE_PAGES) throw new FormatError(first, `the tree listing goes on past ${MAX_TREE_PAGES} pages`);
    visited.add(url);
    let res: Response;
    try {
      res = await fetch(url, { headers: o.token ?? process.env.HF_TOKEN ? { authorization: `Bearer ${o.token ?? process.env.HF_TOKEN}` } : {} });
    } catch (e) {
      throw new FormatError(url, `cannot reach the hub (${causeOf(e)})`);
    }
    if (!res.ok) throw new FormatError(url, `HTTP ${res.status}`);
    let list: unknown;
    try {
      list = await res.json();
    } catch (e) {
      throw new FormatError(url, `the tree listing is not JSON (${causeOf(e)})`);
    }
    if (!Array.isArray(list)) throw new FormatError(url, 'the tree listing is not a JSON array');
    for (const e of list as { type?: unknown; path?: unknown; size?: unknown }[]) {
      const size = e?.size ?? 0;
      if (typeof e?.path !== 'string' || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
        throw new FormatError(url, `the tree listing has a malformed entry ${JSON.stringify(e)?.slice(0, 200)} (expected {type, path, size})`);
      }
      out.push({ type: e.type === 'directory' ? 'directory' : 'file', path: e.path, size });
    }
    const next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
    url = next ? resolveUrl(next[1]!, url, 'Link') : undefined;
  }
  return out;
}

/** snapshots/<refs[revision]>/<path> when present. */
async function cachedPath(root: string, revision: string, path: string): Promise<string | undefined> {
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    try {
      commit = (await readFile(join(root, 'refs', revision), 'utf8')).trim();
    } catch {
      return undefined;
    }
  }
  const p = join(root, 'snapshots', commit, path);
  return existsSync(p) ? p : undefined;
}

interface BlobJob {
  size: number;
  sha256: string | undefined;
  headers: Record<string, string>;
  file: string;
  o: HubOptions;
}

/** Downloads SOURCE into BLOB under the blob's lock, resuming a partial file. */
async function downloadBlob(source: string, blob: string, job: BlobJob): Promise<void> {
  await mkdir(dirname(blob), { recursive: true });
  const release = await takeLock(`${blob}.lock`, `${blob}.incomplete`, job.o.lockStaleMs ?? 600_000);
  try {
    if (existsSync(blob)) return; // another downloader finished while we waited
    const partial = `${blob}.incomplete`;
    let started = existsSync(partial);
    let have = started ? (await stat(partial)).size : 0;
    if (Number.isFinite(job.size) && have > job.size) {
      await rm(partial, { force: true });
      have = 0;
      started = false;
    }
    // (A file the hub says is empty still gets its GET: no partial file exists to rename yet.)
    if (!(started && Number.isFinite(job.size) && have === job.size)) {
      const res = await fetchBody(source, have, job.headers);
      if (res.status === 200) have = 0; // the server ignored the range: start over
      else if (res.status !== 206) throw new FormatError(source, `HTTP ${res.status}`);
      const fh = await open(partial, have === 0 ? 'w' : 'a');
      try {
        const total = Number.isFinite(job.size) ? job.size : have + Number(res.headers.get('content-length') ?? 0);
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          try {
            await fh.write(chunk);
          } catch (e) {
            throw new FormatError(partial, `cannot write the download of ${job.file} (${(e as Error).message})`);
          }
          have += chunk.length;
          job.o.onProgress?.({ file: job.file, bytes: have, total });
        }
      } catch (e) {
        if (e instanceof FormatError) throw e;
        // The partial file stays for the next call to resume.
        throw new FormatError(source, `download of ${job.file} was cut at ${have} bytes (${causeOf(e)}); run again to resume`);
      } finally {
        await fh.close();
      }
    }
    const got = (await stat(partial)).size;
    if (Number.isFinite(job.size) && got !== job.size) {
      if (got > job.size) await rm(partial, { force: true });
      throw new FormatError(source, `download of ${job.file} has ${got} bytes, the hub says ${job.size}${got < job.size ? ' (cut short; run again to resume)' : ' (size mismatch: discarded)'}`);
    }
    if (job.sha256) {
      const digest = await sha256File(partial);
      if (digest !== job.sha256) {
        await rm(partial, { force: true });
        throw new FormatError(source, `download of ${job.file} is corrupt: sha256 ${digest} but the hub says ${job.sha256} (discarded; run again)`);
      }
    }
    await rename(partial, blob);
  } finally {
    await release();
  }
}

async function fetchBody(url: string, from: number, headers: Record<string, string>): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { headers: from > 0 ? { ...headers, range: `bytes=${from}-` } : headers, redirect: 'follow' });
  } catch (e) {
    throw new FormatError(url, `cannot download (${causeOf(e)})`);
  }
  if (res.status === 416) throw new FormatError(url, `HTTP 416: the partial download is larger than the file`);
  if (!res.ok) throw new FormatError(url, `HTTP ${res.status}`);
  return res;
}

/**
 * An exclusive lock file. A waiter polls; a lock whose holder makes no progress (the partial
 * file unchanged) for STALEMS is taken over, so a killed downloader cannot block forever.
 */
async function takeLock(lock: string, partial: string, staleMs: number): Promise<() => Promise<void>> {
  const token = `${process.pid}-${Math.random().toString(16).slice(2)}`;
  let lastSize = -1;
  let lastChange = Date.now();
  for (;;) {
    try {
      const fh = await open(lock, 'wx');
      await fh.writeFile(token);
      await fh.close();
      // Released only while it is still ours: a waiter may have taken over a lock it judged stale.
      return async () => {
        const owner = await readFile(lock, 'utf8').catch(() => '');
        if (owner === token) await unlink(lock).catch(() => undefined);
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const size = existsSync(partial) ? (await stat(partial).catch(() => ({ size: -1 }))).size : -1;
    if (size !== lastSize) {
      lastSize = size;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > staleMs) {
      // Take over a stale lock by renaming it away: of several waiters only one rename succeeds.
      const away = `${lock}.stale-${token}`;
      if (await rename(lock, away).then(() => true, () => false)) await unlink(away).catch(() => undefined);
      lastChange = Date.now();
      continue;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Points LINK at TARGET with a relative symlink (as huggingface_hub); a copy where symlinks fail. */
async function linkTo(link: string, target: string): Promise<void> {
  const rel = relative(dirname(link), target);
  try {
    if ((await readlink(link)) === rel) return;
    await unlink(link);
  } catch {
    // absent, or not a link
  }
  const tmp = `${link}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  try {
    await symlink(rel, tmp);
  } catch {
    await writeFile(tmp, await readFile(target));
  }
  await rename(tmp, link);
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

function unquote(v: string | null): string | undefined {
  if (!v) return undefined;
  return v.replace(/^W\//, '').replace(/^"|"$/g, '');
}

/** REF (a header's URL) against BASE; a malformed one is the answer's fault, named with it. */
function resolveUrl(ref: string, base: string, header: string): string {
  let url: URL | undefined;
  try {
    url = new URL(ref, base);
  } catch {
    // below
  }
  if (url?.protocol !== 'http:' && url?.protocol !== 'https:') {
    throw new FormatError(base, `the hub answered with a malformed ${header} header ${JSON.stringify(ref.slice(0, 200))} (expected an http(s) URL)`);
  }
  return url.href;
}

function causeOf(e: unknown): string {
  const c = (e as { cause?: { code?: string; message?: string } }).cause;
  return c?.code ?? c?.message ?? (e as Error).message;
}
