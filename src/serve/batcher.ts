// Dynamic batching for `saekit serve`: rows from concurrent requests are queued and encoded in
// one native call, then split back per request.
//
// Why: one encode of 16 rows pays the call's fixed costs (a worker hop, the kernel's weight
// streaming: W_enc is read once per block of rows whatever their number) for 16 rows; the same
// call on 1600 rows pays them once for all. Under concurrent load, merging requests is how the
// server's throughput approaches the in-process batch encode's.
//
// Rules:
// - One encode in flight at a time: the native kernel already uses every thread of the pool, so
//   two calls at once would only compete for the same cores.
// - When a request arrives with nothing in flight, the batch is taken batchWindowMs later (0:
//   on the next turn of the event loop, so requests that arrived together go together). When an
//   encode finishes and requests are waiting, the next batch is taken at once: they have
//   already waited for a whole encode.
// - A batch takes whole requests, in arrival order, up to maxBatchRows rows (a request larger
//   than that is encoded alone; the server keeps requests below it).
// - Codes rows are independent (each row's top-k reads only that row), so a request's slice of
//   a batch's codes is bit-identical to encoding the request alone (test/serve.test.ts checks).
// - A request's rows must already be checked (width, finite values): one bad row would reject
//   the whole batch, and with it every other client's request.
import type { SparseCodes } from '../codes.js';
import { expected } from '../errors.js';
import type { Sae } from '../sae.js';

export interface BatcherOptions {
  /** Most rows one encode call takes (default 4096). */
  maxBatchRows?: number;
  /** How long the first request of an idle batcher waits for company, in ms (default 1; 0 = the next event loop turn). */
  batchWindowMs?: number;
}

export interface BatcherStats {
  /** Encode calls made. */
  calls: number;
  /** Requests encoded. */
  requests: number;
  /** Rows encoded. */
  rows: number;
  /** The most requests one call merged. */
  largestBatch: number;
}

interface Pending {
  x: Float32Array;
  rows: number;
  resolve: (c: SparseCodes) => void;
  reject: (e: unknown) => void;
}

export class EncodeBatcher {
  readonly maxBatchRows: number;
  readonly batchWindowMs: number;
  readonly #sae: Sae;
  readonly #queue: Pending[] = [];
  #queuedRows = 0;
  #inFlight = false;
  #timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  readonly #stats: BatcherStats = { calls: 0, requests: 0, rows: 0, largestBatch: 0 };

  constructor(sae: Sae, opts: BatcherOptions = {}) {
    this.#sae = sae;
    this.maxBatchRows = opts.maxBatchRows ?? 4096;
    this.batchWindowMs = opts.batchWindowMs ?? 1;
    if (!Number.isSafeInteger(this.maxBatchRows) || this.maxBatchRows < 1) throw expected('a positive integer', 'maxBatchRows', opts.maxBatchRows);
    if (!Number.isFinite(this.batchWindowMs) || this.batchWindowMs < 0) throw expected('a number >= 0', 'batchWindowMs', opts.batchWindowMs);
  }

  /** A copy of the counters so far. */
  get stats(): BatcherStats {
    return { ...this.#stats };
  }

  /** Rows waiting for an encode (not counting the one in flight). */
  get queuedRows(): number {
    return this.#queuedRows;
  }

  /** Encodes X ([rows, d_in], already validated) as part of the next batch. */
  encode(x: Float32Array): Promise<SparseCodes> {
    const rows = x.length / this.#sae.dIn;
    if (!Number.isInteger(rows)) return Promise.reject(expected(`a multiple of d_in ${this.#sae.dIn} values`, 'x', x));
    return new Promise<SparseCodes>((resolve, reject) => {
      this.#queue.push({ x, rows, resolve, reject });
      this.#queuedRows += rows;
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#inFlight || this.#timer !== undefined || this.#queue.length === 0) return;
    if (this.#queuedRows >= this.maxBatchRows) {
      void this.#run();
      return;
    }
    const fire = () => {
      this.#timer = undefined;
      void this.#run();
    };
    this.#timer = this.batchWindowMs === 0 ? setImmediate(fire) : setTimeout(fire, this.batchWindowMs);
  }

  async #run(): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer as NodeJS.Timeout);
      clearImmediate(this.#timer as NodeJS.Immediate);
      this.#timer = undefined;
    }
    if (this.#inFlight || this.#queue.length === 0) return;
    // Whole requests in arrival order; the first always goes, even when larger than the cap.
    const batch: Pending[] = [this.#queue.shift()!];
    let rows = batch[0]!.rows;
    while (this.#queue.length > 0 && rows + this.#queue[0]!.rows <= this.maxBatchRows) {
      const p = this.#queue.shift()!;
      batch.push(p);
      rows += p.rows;
    }
    this.#queuedRows -= rows;
    this.#inFlight = true;
    try {
      let x = batch[0]!.x;
      if (batch.length > 1) {
        x = new Float32Array(rows * this.#sae.dIn);
        let off = 0;
        for (const p of batch) {
          x.set(p.x, off);
          off += p.x.length;
        }
      }
      this.#stats.calls++;
      this.#stats.requests += batch.length;
      this.#stats.rows += rows;
      this.#stats.largestBatch = Math.max(this.#stats.largestBatch, batch.length);
      const codes = await this.#sae.encode(x);
      if (batch.length === 1) batch[0]!.resolve(codes);
      else {
        let r0 = 0;
        for (const p of batch) {
          p.resolve(sliceRows(codes, r0, p.rows));
          r0 += p.rows;
        }
      }
    } catch (e) {
      for (const p of batch) p.reject(e);
    } finally {
      this.#inFlight = false;
      // Waiting requests have sat through a whole encode: take them now, no window.
      if (this.#queue.length > 0) void this.#run();
    }
  }
}

/** Rows [r0, r0 + n) of CODES as their own SparseCodes (indptr rebased to 0; arrays copied). */
export function sliceRows(codes: SparseCodes, r0: number, n: number): SparseCodes {
  const a = codes.indptr[r0]!;
  const b = codes.indptr[r0 + n]!;
  const indptr = new Uint32Array(n + 1);
  for (let i = 0; i <= n; i++) indptr[i] = codes.indptr[r0 + i]! - a;
  const out: SparseCodes = { rows: n, dSae: codes.dSae, indptr, indices: codes.indices.slice(a, b), values: codes.values.slice(a, b) };
  if (codes.rowScale) out.rowScale = codes.rowScale.slice(r0, r0 + n);
  if (codes.rowShift) out.rowShift = codes.rowShift.slice(r0, r0 + n);
  return out;
}
