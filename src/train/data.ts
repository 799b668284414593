// The streaming data pipeline for SAE training: rows of activations from files on disk (.npy,
// .safetensors, or a directory of shards) or from a live producer, cut into batches.
//
// Why a WINDOW shuffle: a full shuffle of an activation dump needs either the whole dump in
// memory or a random read per row, and a shuffle buffer (reservoir style) makes resuming a
// checkpoint exact only if the buffer itself is saved. Instead the (looping) row stream is cut
// into fixed windows of W rows and each window is emitted in the order of a permutation that
// depends only on (seed, window index). The state of the stream is therefore ONE number, the
// count of rows emitted: a run resumed from a checkpoint's row count seeks to the window holding
// it, re-reads and re-permutes that window, and yields exactly the batches the uninterrupted
// run would have. Memory is bounded by one window (W * dIn floats) plus one batch, and files
// are read in chunks of at most READ_CHUNK_BYTES, whatever the size of the input.

import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, isAbsolute, join } from 'node:path';
import { FormatError, ValidationError, describe } from '../errors.js';
import { openActivations, type ActivationSource } from '../stream/activations.js';
import { Rng } from '../synthetic.js';

/** Rows of activations addressable by global row index (files) or only sequentially (live). */
export interface RowSource {
  readonly dIn: number;
  /** Total rows when known (files); undefined for live sources. */
  readonly rows: number | undefined;
  /**
   * Yields consecutive chunks of whole rows (Float32Array, length multiple of dIn) starting at
   * row `from`. Sources that cannot seek skip by reading and discarding.
   */
  chunks(from: number): AsyncIterable<Float32Array>;
  close(): Promise<void>;
}

/** One activation file of a FileRowSource, in row order. */
export interface RowSourceFile {
  readonly file: string;
  readonly tensor: string | undefined;
  readonly dtype: string;
  /** First global row of this file. */
  readonly start: number;
  readonly rows: number;
}

/** A RowSource over activation files: rows are known and reads seek. */
export interface FileRowSource extends RowSource {
  readonly rows: number;
  readonly files: readonly RowSourceFile[];
}

/** Largest single read of a file source (float32 bytes returned): bounds memory per read. */
export const READ_CHUNK_BYTES = 4 << 20;

const ACTIVATION_EXTS = new Set(['.npy', '.safetensors']);

/** Rows per read for a given width: at most READ_CHUNK_BYTES of float32, at least one row. */
export function rowsPerRead(dIn: number): number {
  return Math.max(1, Math.floor(READ_CHUNK_BYTES / (dIn * 4)));
}

/**
 * Opens activation rows at PATH: a .npy or .safetensors file, or a directory of them. A
 * directory's *.npy / *.safetensors files (not recursive; other files ignored) are concatenated
 * in natural name order (shard_2 before shard_10) as one row space, unless it holds a
 * manifest.json with `"activations": [files...]` (and optionally `"tensor": name`): then
 * exactly those files, in that order, with that tensor. An explicit `opts.tensor` wins over the
 * manifest's. All files must share d_in. Files stay open until close().
 */
export async function openRowSource(path: string, opts: { tensor?: string } = {}): Promise<FileRowSource> {
  if (typeof path !== 'string' || path === '') throw new ValidationError(`Expected a file or directory path but received ${describe(path)}`);
  if (opts.tensor !== undefined && (typeof opts.tensor !== 'string' || opts.tensor === '')) {
    throw new ValidationError(`Expected a non-empty tensor name but received ${describe(opts.tensor)}`);
  }
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FormatError(path, code === 'ENOENT' ? 'file or directory not found' : `cannot open: ${(err as Error).message}`);
  }
  if (!isDir) return fileRowSource(path, [{ file: path, tensor: opts.tensor }]);

  const manifest = await readManifest(path);
  if (manifest) {
    const tensor = opts.tensor ?? manifest.tensor;
    return fileRowSource(
      path,
      manifest.activations.map((name) => ({ file: isAbsolute(name) ? name : join(path, name), tensor: tensorFor(name, tensor) })),
    );
  }
  const names: string[] = [];
  for (const name of await readdir(path)) {
    if (!ACTIVATION_EXTS.has(extname(name).toLowerCase())) continue;
    const st = await stat(join(path, name)).catch(() => undefined);
    if (st?.isFile()) names.push(name);
  }
  names.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }) || (a < b ? -1 : a > b ? 1 : 0));
  return fileRowSource(
    path,
    names.map((name) => ({ file: join(path, name), tensor: tensorFor(name, opts.tensor) })),
  );
}

/** A tensor name only applies to safetensors shards (openActivations rejects it for .npy). */
function tensorFor(name: string, tensor: string | undefined): string | undefined {
  return extname(name).toLowerCase() === '.npy' ? undefined : tensor;
}

async function readManifest(dir: string): Promise<{ activations: string[]; tensor: string | undefined } | undefined> {
  const file = join(dir, 'manifest.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FormatError(file, `cannot read: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new FormatError(file, `invalid JSON: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json) || !('activations' in json)) return undefined;
  const m = json as { activations: unknown; tensor?: unknown };
  if (!Array.isArray(m.activations) || !m.activations.every((f) => typeof f === 'string' && f !== '')) {
    throw new FormatError(file, `"activations" must be a list of file names, but it is ${describe(m.activations)}`);
  }
  if (m.tensor !== undefined && (typeof m.tensor !== 'string' || m.tensor === '')) {
    throw new FormatError(file, `"tensor" must be a tensor name, but it is ${describe(m.tensor)}`);
  }
  return { activations: m.activations as string[], tensor: m.tensor as string | undefined };
}

async function fileRowSource(path: string, specs: ReadonlyArray<{ file: string; tensor: string | undefined }>): Promise<FileRowSource> {
  const opened: ActivationSource[] = [];
  try {
    for (const s of specs) {
      const a = await openActivations(s.file, s.tensor);
      opened.push(a);
      const first = opened[0]!;
      if (a.dIn !== first.dIn) {
        throw new ValidationError(
          `${a.file} has d_in ${a.dIn} but ${first.file} has d_in ${first.dIn}: all activation files in ${path} must share d_in`,
        );
      }
    }
  } catch (err) {
    await Promise.allSettled(opened.map((a) => a.close()));
    throw err;
  }
  const files: RowSourceFile[] = [];
  let total = 0;
  for (const a of opened) {
    files.push({ file: a.file, tensor: a.tensor, dtype: a.dtype, start: total, rows: a.rows });
    total += a.rows;
  }
  if (total === 0) {
    await Promise.allSettled(opened.map((a) => a.close()));
    throw new ValidationError(`no activation rows in ${path}`);
  }
  const dIn = opened[0]!.dIn;
  const perRead = rowsPerRead(dIn);
  let closed = false;

  async function* chunks(from: number): AsyncGenerator<Float32Array> {
    if (!Number.isSafeInteger(from) || from < 0 || from > total) {
      throw new ValidationError(`Expected a start row within [0, ${total}] of ${path} but received ${describe(from)}`);
    }
    // Last file starting at or before `from` (binary search over the start rows).
    let lo = 0;
    let hi = files.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (files[mid]!.start <= from) lo = mid;
      else hi = mid - 1;
    }
    let row = from;
    for (let i = lo; i < files.length; i++) {
      const f = files[i]!;
      for (let r = Math.max(0, row - f.start); r < f.rows; ) {
        if (closed) throw new ValidationError(`the row source ${path} is closed`);
        const n = Math.min(perRead, f.rows - r);
        yield await opened[i]!.read(r, n);
        r += n;
        row = f.start + r;
      }
    }
  }

  return {
    dIn,
    rows: total,
    files,
    chunks,
    close: async () => {
      if (closed) return;
      closed = true;
      const results = await Promise.allSettled(opened.map((a) => a.close()));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
}

/**
 * A RowSource over a live producer (a language model): `make()` starts a fresh pass and yields
 * Float32Array chunks of whole rows of width dIn, any number of rows each. Rows are unknown
 * (undefined) and a start row is reached by reading and discarding. Each chunk is consumed
 * fully before the next is requested, so a producer may reuse its buffer once it resumes.
 */
export function rowSourceFromIterable(dIn: number, make: () => AsyncIterable<Float32Array>): RowSource {
  if (!Number.isSafeInteger(dIn) || dIn < 1) throw new ValidationError(`Expected a positive integer for dIn but received ${describe(dIn)}`);
  if (typeof make !== 'function') throw new ValidationError(`Expected a function returning an async iterable for make but received ${describe(make)}`);
  async function* chunks(from: number): AsyncGenerator<Float32Array> {
    if (!Number.isSafeInteger(from) || from < 0) throw new ValidationError(`Expected a non-negative integer start row but received ${describe(from)}`);
    let skip = from;
    for await (const chunk of make()) {
      checkChunk(chunk, dIn);
      const rows = chunk.length / dIn;
      if (skip >= rows) {
        skip -= rows;
        continue;
      }
      const out = skip > 0 ? chunk.subarray(skip * dIn) : chunk;
      skip = 0;
      if (out.length > 0) yield out;
    }
  }
  return { dIn, rows: undefined, chunks, close: async () => {} };
}

function checkChunk(chunk: unknown, dIn: number): asserts chunk is Float32Array {
  if (!(chunk instanceof Float32Array)) throw new ValidationError(`Expected a Float32Array activation chunk but received ${describe(chunk)}`);
  if (chunk.length % dIn !== 0) {
    throw new ValidationError(`activation chunk has ${chunk.length} values, which is not a whole number of rows of d_in ${dIn}`);
  }
}

export interface BatchStreamOptions {
  batchSize: number;
  /** Rows per shuffle window, >= batchSize; 0 or 1 = no shuffle. */
  shuffleWindow: number;
  seed: number;
  /** Rows already consumed, from a checkpoint (default 0). */
  position?: number;
  /** Default true: wrap around at the end of a finite source (next epoch). */
  loop?: boolean;
}

/** murmur3's 32-bit finalizer. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Seed of window w's permutation: a hash of (seed, w), both safe integers. */
export function windowSeed(seed: number, w: number): number {
  let h = 0x5ae5eed;
  for (const v of [seed >>> 0, Math.floor(seed / 4294967296) >>> 0, w >>> 0, Math.floor(w / 4294967296) >>> 0]) {
    h = fmix32((h ^ v) + 0x9e3779b9);
  }
  return h;
}

/**
 * Batches of batchSize rows ([batchSize, dIn] row-major float32) from a RowSource, window
 * shuffled (see the comment at the top of this file).
 *
 * The looped row stream (global row g is source row g mod rows) is cut into windows of W =
 * shuffleWindow rows; window w is emitted in the order of a Fisher-Yates permutation seeded by
 * windowSeed(seed, w); batches are consecutive runs of that order and may span two windows.
 * `position` is the number of rows emitted; a stream constructed with position p yields
 * exactly what an uninterrupted one yields after p rows.
 *
 * Memory: one window (W * dIn floats, or batchSize rows without shuffle), its permutation
 * (W u32), the batch being built, and the unread rest of the last chunk pulled (at most one
 * read chunk, READ_CHUNK_BYTES for files). Reads are not overlapped with training (no prefetch).
 *
 * End of stream: a live source ends when its iterable ends, and a finite source with
 * loop = false after one pass; in both cases the last window may be short (it is permuted as
 * it is) and a final partial batch is DROPPED: next() returns undefined instead.
 */
export class BatchStream {
  readonly #source: RowSource;
  readonly #dIn: number;
  readonly #rows: number | undefined;
  readonly #batch: number;
  /** Window length in rows (batchSize when not shuffling: the identity order in batch-sized pieces). */
  readonly #window: number;
  readonly #shuffle: boolean;
  readonly #seed: number;
  readonly #loop: boolean;
  #position: number;

  #buf: Float32Array | undefined;
  #perm: Uint32Array | undefined;
  /** Index of the loaded window, -1 when none. */
  #winIndex = -1;
  /** Rows held by the loaded window (< window only at the end of the stream). */
  #winLen = 0;

  #iter: AsyncIterator<Float32Array> | undefined;
  /** Global stream row the iterator yields next. */
  #iterRow = 0;
  /** Source row the iterator yields next (finite sources). */
  #srcRow = 0;
  /** Rows of the last chunk not yet copied into a window. */
  #pending: Float32Array = new Float32Array(0);
  #exhausted = false;
  #ended = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(source: RowSource, opts: BatchStreamOptions) {
    if (source === null || typeof source !== 'object' || typeof source.chunks !== 'function') {
      throw new ValidationError(`Expected a RowSource for source but received ${describe(source)}`);
    }
    if (!Number.isSafeInteger(source.dIn) || source.dIn < 1) throw new ValidationError(`Expected a positive integer dIn for the row source but received ${describe(source.dIn)}`);
    if (source.rows !== undefined && (!Number.isSafeInteger(source.rows) || source.rows < 1)) {
      throw new ValidationError(`Expected a positive integer row count (or undefined for a live source) but the row source has ${describe(source.rows)} rows`);
    }
    if (opts === null || typeof opts !== 'object') throw new ValidationError(`Expected an options object but received ${describe(opts)}`);
    const { batchSize, shuffleWindow, seed, position = 0, loop = true } = opts;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      throw new ValidationError(`Expected a positive integer for batchSize but received ${describe(batchSize)}`);
    }
    if (!Number.isSafeInteger(shuffleWindow) || shuffleWindow < 0) {
      throw new ValidationError(`Expected a non-negative integer for shuffleWindow but received ${describe(shuffleWindow)}`);
    }
    if (shuffleWindow > 1 && shuffleWindow < batchSize) {
      throw new ValidationError(
        `shuffleWindow (${shuffleWindow} rows) must be 0 or 1 (no shuffle) or at least batchSize (${batchSize})`,
      );
    }
    if (!Number.isSafeInteger(seed)) throw new ValidationError(`Expected an integer for seed but received ${describe(seed)}`);
    if (!Number.isSafeInteger(position) || position < 0) {
      throw new ValidationError(`Expected a non-negative integer for position but received ${describe(position)}`);
    }
    if (typeof loop !== 'boolean') throw new ValidationError(`Expected a boolean for loop but received ${describe(loop)}`);
    this.#source = source;
    this.#dIn = source.dIn;
    this.#rows = source.rows;
    this.#batch = batchSize;
    this.#shuffle = shuffleWindow > 1;
    this.#window = this.#shuffle ? shuffleWindow : batchSize;
    this.#seed = seed;
    this.#loop = loop;
    this.#position = position;
  }

  /** Rows emitted so far (including the starting position): save it in a checkpoint. */
  get position(): number {
    return this.#position;
  }

  /**
   * The next batch: a fresh Float32Array of batchSize * dIn (the caller may keep it), or
   * undefined at the end of the stream. Calls are serialized.
   */
  next(): Promise<Float32Array | undefined> {
    const run = this.#queue.then(() => this.#next());
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Stops the underlying read (returns the source's iterator); the source stays open. */
  async close(): Promise<void> {
    await this.#queue;
    this.#ended = true;
    this.#buf = undefined;
    this.#perm = undefined;
    this.#pending = new Float32Array(0);
    const it = this.#iter;
    this.#iter = undefined;
    await it?.return?.();
  }

  async #next(): Promise<Float32Array | undefined> {
    if (this.#ended) return undefined;
    const d = this.#dIn;
    const B = this.#batch;
    const W = this.#window;
    const out = new Float32Array(B * d);
    let cursor = this.#position;
    for (let k = 0; k < B; ) {
      const w = Math.floor(cursor / W);
      if (w !== this.#winIndex) await this.#load(w);
      const off = cursor - w * W;
      if (off >= this.#winLen) {
        this.#ended = true; // short last window ran out: drop the partial batch
        return undefined;
      }
      const n = Math.min(B - k, this.#winLen - off);
      const buf = this.#buf!;
      if (this.#shuffle) {
        const perm = this.#perm!;
        for (let i = 0; i < n; i++) {
          const r = perm[off + i]!;
          out.set(buf.subarray(r * d, (r + 1) * d), (k + i) * d);
        }
      } else {
        out.set(buf.subarray(off * d, (off + n) * d), k * d);
      }
      k += n;
      cursor += n;
    }
    this.#position = cursor;
    return out;
  }

  /** Reads window w (the rows of the looped stream [w*W, (w+1)*W)) and draws its permutation. */
  async #load(w: number): Promise<void> {
    const d = this.#dIn;
    const W = this.#window;
    const rows = this.#rows;
    const start = w * W;
    let end = start + W;
    if (rows !== undefined && !this.#loop) end = Math.min(end, rows);
    this.#buf ??= new Float32Array(W * d);
    const buf = this.#buf;
    let filled = 0;
    const need = Math.max(0, end - start);
    if (need > 0) {
      if (this.#iter === undefined || this.#iterRow !== start) this.#open(start);
      while (filled < need) {
        if (this.#pending.length === 0) {
          const chunk = await this.#pull();
          if (chunk === undefined) break;
          this.#pending = chunk;
        }
        const n = Math.min(this.#pending.length / d, need - filled);
        buf.set(this.#pending.subarray(0, n * d), filled * d);
        this.#pending = this.#pending.subarray(n * d);
        filled += n;
        this.#iterRow += n;
      }
    }
    this.#winIndex = w;
    this.#winLen = filled;
    if (this.#shuffle && filled > 1) {
      this.#perm ??= new Uint32Array(W);
      const perm = this.#perm;
      for (let i = 0; i < filled; i++) perm[i] = i;
      const rng = new Rng(windowSeed(this.#seed, w));
      for (let i = filled - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = perm[i]!;
        perm[i] = perm[j]!;
        perm[j] = t;
      }
    } else if (this.#shuffle) {
      this.#perm ??= new Uint32Array(W);
      this.#perm[0] = 0;
    }
  }

  /** (Re)starts reading at global stream row `start`: seeks a finite source, skips a live one. */
  #open(start: number): void {
    this.#iter?.return?.()?.catch(() => {});
    const rows = this.#rows;
    const from = rows === undefined ? start : start % rows;
    this.#iter = this.#source.chunks(from)[Symbol.asyncIterator]();
    this.#iterRow = start;
    this.#srcRow = from;
    this.#pending = new Float32Array(0);
    this.#exhausted = false;
  }

  /** The next non-empty chunk, wrapping a finite looping source; undefined at the end. */
  async #pull(): Promise<Float32Array | undefined> {
    const rows = this.#rows;
    const d = this.#dIn;
    if (this.#exhausted) return undefined;
    for (;;) {
      const r = await this.#iter!.next();
      if (!r.done) {
        const chunk = r.value;
        checkChunk(chunk, d);
        if (chunk.length === 0) continue;
        const n = chunk.length / d;
        if (rows !== undefined) {
          if (this.#srcRow + n > rows) {
            throw new ValidationError(`the row source yielded rows past its end (${this.#srcRow + n} of ${rows} rows)`);
          }
          this.#srcRow += n;
        }
        return chunk;
      }
      if (rows === undefined) {
        this.#exhausted = true;
        return undefined;
      }
      if (this.#srcRow !== rows) {
        throw new ValidationError(`the row source ended at row ${this.#srcRow} of the ${rows} rows it declares`);
      }
      if (!this.#loop) {
        this.#exhausted = true;
        return undefined;
      }
      // Next epoch: wrap to source row 0.
      this.#iter = this.#source.chunks(0)[Symbol.asyncIterator]();
      this.#srcRow = 0;
    }
  }
}

/**
 * Two row sources side by side: row r is [a's row r | b's row r] (width a.dIn + b.dIn), so a
 * transcoder's (input, target) pairs go through one BatchStream and stay aligned through the
 * shuffle. Both must hold the same number of rows where both are known; a live source ending
 * early ends the pair there.
 */
export function zipRowSources(a: RowSource, b: RowSource, names: { a: string; b: string } = { a: 'the input', b: 'the target' }): RowSource {
  if (a.rows !== undefined && b.rows !== undefined && a.rows !== b.rows) {
    throw new ValidationError(`${names.a} has ${a.rows} rows but ${names.b} has ${b.rows}: a transcoder's input and target rows must pair up one to one`);
  }
  const dIn = a.dIn + b.dIn;
  const rows = a.rows ?? b.rows;
  async function* chunks(from: number): AsyncGenerator<Float32Array> {
    const ia = a.chunks(from)[Symbol.asyncIterator]();
    const ib = b.chunks(from)[Symbol.asyncIterator]();
    let ca: Float32Array = new Float32Array(0);
    let cb: Float32Array = new Float32Array(0);
    try {
      for (;;) {
        if (ca.length === 0) {
          const r = await ia.next();
          if (r.done) return;
          ca = r.value;
        }
        if (cb.length === 0) {
          const r = await ib.next();
          if (r.done) return;
          cb = r.value;
        }
        const n = Math.min(ca.length / a.dIn, cb.length / b.dIn);
        const out = new Float32Array(n * dIn);
        for (let r = 0; r < n; r++) {
          out.set(ca.subarray(r * a.dIn, (r + 1) * a.dIn), r * dIn);
          out.set(cb.subarray(r * b.dIn, (r + 1) * b.dIn), r * dIn + a.dIn);
        }
        ca = ca.subarray(n * a.dIn);
        cb = cb.subarray(n * b.dIn);
        yield out;
      }
    } finally {
      await ia.return?.();
      await ib.return?.();
    }
  }
  return { dIn, rows, chunks, close: async () => {} };
}

/** Splits paired rows [rows, dIn + dOut] into their input [rows, dIn] and target [rows, dOut] halves. */
export function splitPairs(pairs: Float32Array, dIn: number, dOut: number, x?: Float32Array, y?: Float32Array): { x: Float32Array; y: Float32Array } {
  const rows = pairs.length / (dIn + dOut);
  const xs = x && x.length === rows * dIn ? x : new Float32Array(rows * dIn);
  const ys = y && y.length === rows * dOut ? y : new Float32Array(rows * dOut);
  for (let r = 0; r < rows; r++) {
    const row = pairs.subarray(r * (dIn + dOut), (r + 1) * (dIn + dOut));
    xs.set(row.subarray(0, dIn), r * dIn);
    ys.set(row.subarray(dIn), r * dOut);
  }
  return { x: xs, y: ys };
}
