// A local stand-in for huggingface.co: a real HTTP server on 127.0.0.1 in the hub's URL layout,
// for the hub client tests (no network). It mimics what huggingface_hub's client sees:
//   HEAD/GET /{repo}/resolve/{revision}/{path}
//     LFS file     -> 302 to /cdn/<sha256>?<signature>, X-Repo-Commit, X-Linked-Etag "<sha256>",
//                     X-Linked-Size, and an ETag / Content-Length of the redirect itself (so a
//                     client that reads ETag / Content-Length instead of the X-Linked-* headers
//                     gets the wrong answer, as it would on the real hub)
//     regular file -> 200 with the bytes, ETag "<git blob sha1>", X-Repo-Commit
//   GET /cdn/<sha256>                 -> the bytes, Accept-Ranges, Range bytes=a- / a-b (206, 416)
//   GET /api/models/{repo}/tree/{revision}/{dir}  -> JSON listing of dir's direct children
//                                        (paged with Link: <...?cursor=N>; rel="next" when
//                                        treePageSize is set)
//   unknown repo / file / revision    -> 404 with X-Error-Code RepoNotFound / EntryNotFound /
//                                        RevisionNotFound
//   renamed repo (renameRepo)         -> 307 with a relative Location under the new name
// Bodies are streamed in 16 KiB chunks so faults (a cut connection, a flipped byte) and latency
// can be injected per file.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface HubRepoFile {
  path: string;
  data: Uint8Array;
  /** Stored with Git LFS (served through the CDN redirect); default: true when > 1 KiB. */
  lfs?: boolean;
}

export interface HubRequest {
  method: string;
  /** URL path with its query string, as received. */
  path: string;
  /** The Range header, if any. */
  range?: string;
  /** The Authorization header, if any. */
  authorization?: string;
  /** performance.now() when the request arrived and when its response finished (or was cut). */
  at: number;
  end?: number;
}

export interface HubServer {
  url: string; // http://127.0.0.1:PORT
  commit: string; // 40-hex commit of every repo
  addRepo(repo: string, files: HubRepoFile[]): void;
  requests: HubRequest[];
  /** Body bytes sent for file content (GET of a file or of its CDN blob). */
  bytesServed: number;
  /** Redirect LFS files with a relative Location (/cdn/...) instead of an absolute URL. */
  relativeRedirects: boolean;
  /** Answer Range requests with 200 and the whole file (as a server without range support). */
  ignoreRanges: boolean;
  /** Revision names (branches, tags, refs/pr/N) that resolve to `commit`; the commit itself always does. */
  revisions: Set<string>;
  /** Headers set on (string) or removed from (null) every resolve response, to mimic a broken or hostile hub. */
  resolveHeaders: Record<string, string | null>;
  /** Entries per page of the tree API; further pages are linked with Link: <...?cursor=N>; rel="next" (as the hub). */
  treePageSize: number;
  /** A renamed repository: resolve URLs under OLD answer 307 with a relative Location under NEW (as the hub). */
  renameRepo(oldName: string, newName: string): void;
  /** Fault injection for the next GET of a file's content: cut the connection after N bytes. */
  cutNext(path: string, afterBytes: number): void;
  /** Fault injection for the next GET of a file's content: flip one byte. */
  corruptNext(path: string): void;
  /** Latency per content chunk (ms), to make concurrent downloads overlap. */
  slow(ms: number): void;
  /** Holds every file-content body (headers go out) until the returned function is called. */
  hold(): () => void;
  close(): Promise<void>;
}

interface StoredFile {
  path: string;
  data: Uint8Array;
  lfs: boolean;
  sha256: string;
  gitOid: string; // git blob sha1: sha1("blob <len>\0" + data)
}

type Fault = { kind: 'cut'; afterBytes: number } | { kind: 'corrupt' };

const CHUNK = 16 * 1024;

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function gitBlobOid(data: Uint8Array): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

function splitPath(p: string): string[] {
  return p.split('/').filter((s) => s !== '');
}

function decodeSegments(segs: string[]): string[] | undefined {
  try {
    return segs.map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

function parentDir(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function startHubServer(): Promise<HubServer> {
  const commit = randomBytes(20).toString('hex');
  const repos = new Map<string, Map<string, StoredFile>>();
  const faults = new Map<string, Fault[]>(); // by file path
  const sockets = new Set<Socket>();
  const renamed = new Map<string, string>();
  let latency = 0;
  let gate: Promise<void> = Promise.resolve();

  const hub: HubServer = {
    url: '',
    commit,
    requests: [],
    bytesServed: 0,
    relativeRedirects: false,
    ignoreRanges: false,
    revisions: new Set(['main']),
    resolveHeaders: {},
    treePageSize: Infinity,
    renameRepo(oldName, newName) {
      renamed.set(oldName, newName);
    },
    addRepo(repo, files) {
      const m = repos.get(repo) ?? new Map<string, StoredFile>();
      for (const f of files) {
        const data = f.data;
        m.set(f.path, {
          path: f.path,
          data,
          lfs: f.lfs ?? data.length > 1024,
          sha256: sha256Hex(data),
          gitOid: gitBlobOid(data),
        });
      }
      repos.set(repo, m);
    },
    cutNext(path, afterBytes) {
      pushFault(path, { kind: 'cut', afterBytes });
    },
    corruptNext(path) {
      pushFault(path, { kind: 'corrupt' });
    },
    slow(ms) {
      latency = ms;
    },
    hold() {
      let release!: () => void;
      gate = new Promise<void>((r) => (release = r));
      return () => {
        gate = Promise.resolve();
        release();
      };
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const s of sockets) s.destroy();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };

  function pushFault(path: string, f: Fault): void {
    const list = faults.get(path) ?? [];
    list.push(f);
    faults.set(path, list);
  }

  function takeFault(paths: string[]): Fault | undefined {
    for (const p of paths) {
      const list = faults.get(p);
      if (list && list.length > 0) {
        const f = list.shift();
        if (list.length === 0) faults.delete(p);
        return f;
      }
    }
    return undefined;
  }

  function notFound(res: ServerResponse, code: string, message: string): void {
    const body = JSON.stringify({ error: message });
    res.writeHead(404, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'X-Error-Code': code,
      'X-Error-Message': message,
    });
    res.end(body);
  }

  /** Splits "<repo>/<marker>/<rest>" where repo is a known repo (owner/name or a bare name). */
  function findRepo(segs: string[], marker: string): { repo: string; rest: string[] } | undefined {
    for (const n of [2, 1]) {
      if (segs.length > n && segs[n] === marker) return { repo: segs.slice(0, n).join('/'), rest: segs.slice(n + 1) };
    }
    return undefined;
  }

  function withOverrides(headers: Record<string, string | number>): Record<string, string | number> {
    const out = { ...headers };
    for (const [k, v] of Object.entries(hub.resolveHeaders)) {
      for (const key of Object.keys(out)) if (key.toLowerCase() === k.toLowerCase()) delete out[key];
      if (v !== null) out[k] = v;
    }
    return out;
  }

  function revisionOk(rev: string): boolean {
    return rev === commit || hub.revisions.has(rev);
  }

  /** Streams data[start, end) (or answers HEAD), applying latency and any fault for `paths`. */
  async function sendContent(
    req: IncomingMessage,
    res: ServerResponse,
    file: StoredFile,
    headers: Record<string, string | number>,
  ): Promise<void> {
    const size = file.data.length;
    let start = 0;
    let end = size; // exclusive
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined && !hub.ignoreRanges) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
      if (m) {
        const a = Number(m[1]);
        const b = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
        if (a >= size || b < a) {
          res.writeHead(416, { 'Content-Range': `bytes */${size}`, 'Content-Length': 0 });
          res.end();
          return;
        }
        start = a;
        end = b + 1;
        status = 206;
        headers['Content-Range'] = `bytes ${a}-${b}/${size}`;
      }
    }
    res.writeHead(status, {
      ...headers,
      'Accept-Ranges': 'bytes',
      'Content-Type': 'application/octet-stream',
      'Content-Length': end - start,
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const fault = takeFault([file.path]);
    let body = file.data.subarray(start, end);
    if (fault?.kind === 'corrupt' && body.length > 0) {
      body = Uint8Array.from(body);
      const i = body.length >> 1;
      body[i] = body[i]! ^ 0xff;
    }
    const limit = fault?.kind === 'cut' ? Math.min(fault.afterBytes, body.length) : body.length;
    await gate;
    let sent = 0;
    while (sent < limit) {
      if (latency > 0) await sleep(latency);
      if (res.destroyed) return;
      const chunk = body.subarray(sent, Math.min(sent + CHUNK, limit));
      await new Promise<void>((resolve) => {
        const ok = res.write(chunk, () => resolve());
        void ok;
      });
      sent += chunk.length;
      hub.bytesServed += chunk.length;
    }
    if (fault?.kind === 'cut') {
      // Let the bytes reach the client, then drop the connection mid-body.
      await sleep(20);
      res.socket?.destroy();
      return;
    }
    res.end();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawUrl = req.url ?? '/';
    const entry: HubRequest = { method: req.method ?? 'GET', path: rawUrl, at: performance.now() };
    res.on('close', () => (entry.end = performance.now()));
    if (req.headers.range !== undefined) entry.range = req.headers.range;
    if (req.headers.authorization !== undefined) entry.authorization = req.headers.authorization;
    hub.requests.push(entry);

    const q = rawUrl.indexOf('?');
    const pathname = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const segs = decodeSegments(splitPath(pathname));
    if (!segs) return notFound(res, 'EntryNotFound', 'bad URL encoding');
    const method = req.method ?? 'GET';

    // CDN: /cdn/<sha256>
    if (segs[0] === 'cdn' && segs.length === 2) {
      if (method !== 'GET' && method !== 'HEAD') return notFound(res, 'EntryNotFound', 'method');
      for (const files of repos.values()) {
        for (const f of files.values()) {
          if (f.lfs && f.sha256 === segs[1]) {
            return sendContent(req, res, f, { ETag: `"${f.sha256}"` });
          }
        }
      }
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end('AccessDenied');
      return;
    }

    // Tree API: /api/models/{repo}/tree/{revision}/{dir...}
    if (segs[0] === 'api' && segs[1] === 'models') {
      const found = findRepo(segs.slice(2), 'tree');
      const files = found && repos.get(found.repo);
      if (!found || !files) return notFound(res, 'RepoNotFound', `Repository not found`);
      const [rev, ...dirSegs] = found.rest;
      if (rev === undefined || !revisionOk(rev)) return notFound(res, 'RevisionNotFound', `Invalid rev id: ${rev}`);
      const dir = dirSegs.join('/');
      const out: unknown[] = [];
      const dirs = new Set<string>();
      let exists = dir === '';
      for (const f of files.values()) {
        if (dir !== '' && !f.path.startsWith(dir + '/')) continue;
        exists = true;
        const rest = dir === '' ? f.path : f.path.slice(dir.length + 1);
        const slash = rest.indexOf('/');
        if (slash >= 0) {
          const sub = (dir === '' ? '' : dir + '/') + rest.slice(0, slash);
          if (!dirs.has(sub)) {
            dirs.add(sub);
            out.push({ type: 'directory', oid: gitBlobOid(Buffer.from(sub)), size: 0, path: sub });
          }
        } else {
          const e: Record<string, unknown> = { type: 'file', oid: f.gitOid, size: f.data.length, path: f.path };
          if (f.lfs) e.lfs = { oid: f.sha256, size: f.data.length, pointerSize: 134 };
          out.push(e);
        }
      }
      if (!exists) return notFound(res, 'EntryNotFound', `${dir} does not exist on "${rev}"`);
      const cursor = Number(new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1)).get('cursor') ?? 0);
      const page = out.slice(cursor, cursor + hub.treePageSize);
      const body = JSON.stringify(page);
      const headers: Record<string, string | number> = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
      if (cursor + page.length < out.length) headers.Link = `<${hub.url}${pathname}?cursor=${cursor + page.length}>; rel="next"`;
      res.writeHead(200, headers);
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }

    // Resolve: /{repo}/resolve/{revision}/{path...}
    const found = findRepo(segs, 'resolve');
    if (!found) return notFound(res, 'RepoNotFound', 'Repository not found');
    const newName = renamed.get(found.repo);
    if (newName !== undefined) {
      const loc = '/' + newName + pathname.slice(1 + found.repo.length);
      res.writeHead(307, { Location: loc, 'Content-Type': 'text/plain', 'Content-Length': 0 });
      res.end();
      return;
    }
    const files = repos.get(found.repo);
    if (!files) return notFound(res, 'RepoNotFound', 'Repository not found');
    const [rev, ...pathSegs] = found.rest;
    if (rev === undefined || !revisionOk(rev)) return notFound(res, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    const file = files.get(pathSegs.join('/'));
    if (!file) return notFound(res, 'EntryNotFound', 'Entry not found');
    if (method !== 'GET' && method !== 'HEAD') return notFound(res, 'EntryNotFound', 'method');

    if (file.lfs) {
      const sig = `X-Amz-Signature=${randomBytes(8).toString('hex')}&response-content-disposition=attachment`;
      const loc = `${hub.relativeRedirects ? '' : hub.url}/cdn/${file.sha256}?${sig}`;
      const body = `Found. Redirecting to ${loc}`;
      res.writeHead(302, withOverrides({
        Location: loc,
        'X-Repo-Commit': commit,
        'X-Linked-Etag': `"${file.sha256}"`,
        'X-Linked-Size': String(file.data.length),
        ETag: `W/"${gitBlobOid(Buffer.from(body)).slice(0, 24)}"`,
        'Content-Type': 'text/plain; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      }));
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    return sendContent(req, res, file, withOverrides({ ETag: `"${file.gitOid}"`, 'X-Repo-Commit': commit }));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(String(err));
      } else {
        res.destroy();
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return hub;
}
