// Sparse codes on disk: a safetensors file with
//   indptr  I64 [N + 1]   row r's entries are [indptr[r], indptr[r+1])
//   indices I32 [nnz]     latent ids, ascending within a row
//   values  F32 [nnz]
//   row_scale, row_shift F32 [N]   only for per-row normalizations (decode needs them)
// and metadata {format: "saekit-csr", d_sae, d_in, architecture}.
//
// The writer streams: nnz is unknown until the end (relu/jumprelu), so each tensor goes to its
// own temporary part file as chunks arrive; finish() writes the header and concatenates the
// parts into a temporary file that is renamed into place. Memory stays bounded by a chunk; an
// error or abort() leaves no output behind.
import { createReadStream } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { FormatError, ValidationError } from '../errors.js';
import { readAt, tempPathFor, writeAt } from '../formats/fileIo.js';
import { SafetensorsReader } from '../formats/safetensors.js';
import type { SparseCodes } from '../codes.js';

export const CODES_FORMAT = 'saekit-csr';

interface Part {
  name: string;
  dtype: 'I64' | 'I32' | 'F32';
  path: string;
  fh: FileHandle;
  bytes: number;
}

export interface CodesFileInfo {
  dSae: number;
  dIn: number;
  architecture: string;
  perRow: boolean;
}

export class CodesFileWriter {
  #parts: Part[];
  #rows = 0;
  #nnz = 0;
  #done = false;

  private constructor(
    readonly path: string,
    readonly info: CodesFileInfo,
    parts: Part[],
  ) {
    this.#parts = parts;
  }

  static async open(path: string, info: CodesFileInfo): Promise<CodesFileWriter> {
    const names: Array<[string, Part['dtype']]> = [
      ['indptr', 'I64'],
      ['indices', 'I32'],
      ['values', 'F32'],
    ];
    if (info.perRow) names.push(['row_scale', 'F32'], ['row_shift', 'F32']);
    const parts: Part[] = [];
    try {
      for (const [name, dtype] of names) {
        const p = `${tempPathFor(path)}.${name}`;
        parts.push({ name, dtype, path: p, fh: await open(p, 'wx'), bytes: 0 });
      }
    } catch (e) {
      await Promise.all(parts.map(async (p) => { await p.fh.close(); await rm(p.path, { force: true }); }));
      throw e;
    }
    const w = new CodesFileWriter(path, info, parts);
    await w.#append('indptr', int64Bytes([0]));
    return w;
  }

  get rows(): number {
    return this.#rows;
  }

  get nnz(): number {
    return this.#nnz;
  }

  /** Appends the codes of the next rows (chunks arrive in row order). */
  async append(codes: SparseCodes): Promise<void> {
    const rows = codes.indptr.length - 1;
    const offsets = new Array<number>(rows);
    for (let r = 0; r < rows; r++) offsets[r] = this.#nnz + codes.indptr[r + 1]!;
    this.#nnz += codes.indptr[rows]!;
    this.#rows += rows;
    const writes = [
      this.#append('indptr', int64Bytes(offsets)),
      this.#append('indices', bytes(codes.indices)),
      this.#append('values', bytes(codes.values)),
    ];
    if (this.info.perRow) {
      if (!codes.rowScale || !codes.rowShift) throw new ValidationError('codes lack rowScale/rowShift for a per-row normalization');
      writes.push(this.#append('row_scale', bytes(codes.rowScale)), this.#append('row_shift', bytes(codes.rowShift)));
    }
    await Promise.all(writes);
  }

  /** Writes header + parts to a temporary file, renames it to `path`, removes the parts. */
  async finish(): Promise<void> {
    if (this.#done) throw new ValidationError(`${this.path}: codes writer already finished or aborted`);
    this.#done = true;
    const tmp = tempPathFor(this.path);
    try {
      for (const p of this.#parts) await p.fh.close();
      const header = this.#header();
      const out = await open(tmp, 'wx');
      try {
        await writeAt(out, header, 0);
        let pos = header.length;
        for (const p of this.#parts) {
          for await (const chunk of createReadStream(p.path, { highWaterMark: 1 << 22 })) {
            await writeAt(out, chunk as Buffer, pos);
            pos += (chunk as Buffer).length;
          }
        }
        await out.datasync();
      } finally {
        await out.close();
      }
      await rename(tmp, this.path);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    } finally {
      await Promise.all(this.#parts.map((p) => rm(p.path, { force: true })));
    }
  }

  /** Discards everything written so far. Safe to call at any time, more than once. */
  async abort(): Promise<void> {
    if (!this.#done) await Promise.all(this.#parts.map((p) => p.fh.close().catch(() => undefined)));
    this.#done = true;
    await Promise.all(this.#parts.map((p) => rm(p.path, { force: true })));
  }

  async #append(name: string, data: Uint8Array): Promise<void> {
    const p = this.#parts.find((q) => q.name === name)!;
    const at = p.bytes;
    p.bytes += data.length; // claimed before awaiting, so concurrent appends stay ordered
    await writeAt(p.fh, data, at);
  }

  #header(): Uint8Array {
    const json: Record<string, unknown> = {
      __metadata__: {
        format: CODES_FORMAT,
        d_sae: String(this.info.dSae),
        d_in: String(this.info.dIn),
        architecture: this.info.architecture,
      },
    };
    let offset = 0;
    for (const p of this.#parts) {
      const size = p.dtype === 'I64' ? 8 : 4;
      json[p.name] = { dtype: p.dtype, shape: [p.bytes / size], data_offsets: [offset, offset + p.bytes] };
      offset += p.bytes;
    }
    const text = new TextEncoder().encode(JSON.stringify(json));
    const padded = Math.ceil(text.length / 8) * 8;
    const header = new Uint8Array(8 + padded).fill(0x20);
    new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
    header.set(text, 8);
    return header;
  }
}

function bytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// Little-endian int64 from non-negative safe integers, without a BigInt per element.
function int64Bytes(values: readonly number[]): Uint8Array {
  const words = new Uint32Array(values.length * 2);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    words[2 * i] = v % 4294967296;
    words[2 * i + 1] = Math.floor(v / 4294967296);
  }
  return bytes(words);
}

/** Reads a codes file in row chunks; validates the layout against the SAE it is decoded with. */
export class CodesFileReader {
  private constructor(
    readonly file: string,
    private readonly st: SafetensorsReader,
    private readonly fh: FileHandle,
    readonly rows: number,
    readonly nnz: number,
    readonly perRow: boolean,
    readonly dSae: number | undefined,
  ) {}

  static async open(file: string): Promise<CodesFileReader> {
    const st = await SafetensorsReader.open(file);
    try {
      const need: Array<[string, string]> = [
        ['indptr', 'I64'],
        ['indices', 'I32'],
        ['values', 'F32'],
      ];
      for (const [name, dtype] of need) {
        if (!st.tensors.has(name)) throw new FormatError(file, `missing tensor '${name}': not a saekit codes file (expected indptr, indices, values)`);
        const info = st.info(name);
        if (info.dtype !== dtype || info.shape.length !== 1)
          throw new FormatError(file, `tensor '${name}' is ${info.dtype} [${info.shape.join(', ')}], expected ${dtype} of rank 1`);
      }
      const rows = st.info('indptr').shape[0]! - 1;
      const nnz = st.info('indices').shape[0]!;
      if (rows < 0) throw new FormatError(file, "tensor 'indptr' is empty: it needs rows + 1 entries");
      if (st.info('values').shape[0] !== nnz)
        throw new FormatError(file, `tensors 'indices' (${nnz}) and 'values' (${st.info('values').shape[0]}) differ in length`);
      const perRow = st.tensors.has('row_scale');
      if (perRow) {
        for (const name of ['row_scale', 'row_shift']) {
          const info = st.tensors.get(name);
          if (!info || info.dtype !== 'F32' || info.shape.length !== 1 || info.shape[0] !== rows)
            throw new FormatError(file, `tensor '${name}' must be F32 [${rows}] (one per row)`);
        }
      }
      const dSae = st.metadata.d_sae !== undefined ? Number(st.metadata.d_sae) : undefined;
      const fh = await open(file, 'r');
      return new CodesFileReader(file, st, fh, rows, nnz, perRow, dSae);
    } catch (e) {
      await st.close();
      throw e;
    }
  }

  /** indptr[start .. start + count] (count + 1 entries) as numbers. */
  async indptr(start: number, count: number): Promise<number[]> {
    const info = this.st.info('indptr');
    const raw = new Uint8Array((count + 1) * 8);
    await readAt(this.fh, this.file, info.byteOffset + start * 8, raw, "tensor 'indptr'");
    const words = new Uint32Array(raw.buffer);
    const out = new Array<number>(count + 1);
    for (let i = 0; i <= count; i++) {
      const hi = words[2 * i + 1]!;
      if (hi >= 0x200000) throw new FormatError(this.file, `tensor 'indptr' entry ${start + i} is negative or too large`);
      out[i] = hi * 4294967296 + words[2 * i]!;
    }
    return out;
  }

  /** Codes of rows [start, start + count), re-based so the chunk's indptr starts at 0. */
  async read(start: number, count: number): Promise<SparseCodes> {
    const ptr = await this.indptr(start, count);
    const first = ptr[0]!;
    const last = ptr[count]!;
    if (last < first || last > this.nnz)
      throw new FormatError(this.file, `tensor 'indptr' is inconsistent at rows ${start}..${start + count} (entries ${first}..${last}, nnz ${this.nnz})`);
    const n = last - first;
    const indptr = new Uint32Array(count + 1);
    for (let i = 0; i <= count; i++) indptr[i] = ptr[i]! - first;
    const indices = new Int32Array(n);
    const values = new Float32Array(n);
    await readAt(this.fh, this.file, this.st.info('indices').byteOffset + first * 4, bytes(indices), "tensor 'indices'");
    await readAt(this.fh, this.file, this.st.info('values').byteOffset + first * 4, bytes(values), "tensor 'values'");
    const codes: SparseCodes = { rows: count, dSae: this.dSae ?? 0, indptr, indices, values };
    if (this.perRow) {
      codes.rowScale = new Float32Array(count);
      codes.rowShift = new Float32Array(count);
      await readAt(this.fh, this.file, this.st.info('row_scale').byteOffset + start * 4, bytes(codes.rowScale), "tensor 'row_scale'");
      await readAt(this.fh, this.file, this.st.info('row_shift').byteOffset + start * 4, bytes(codes.rowShift), "tensor 'row_shift'");
    }
    return codes;
  }

  async close(): Promise<void> {
    await this.fh.close();
    await this.st.close();
  }
}
