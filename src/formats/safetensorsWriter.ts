// safetensors writing: a one-shot writer for tensors held in memory and a streaming writer
// for outputs too big for that whose sizes are known up front (the header comes first in the
// file, so every shape must be known before the first byte of data).
//
// Both are atomic: data goes to a temporary sibling that is renamed over the target only once
// complete. Tensors are laid out sorted by name (any order is valid; sorting makes files
// reproducible), the header is padded with spaces to a multiple of 8 so the data area starts
// 8-byte aligned, as the reference writer does.

import { rename, rm, open, type FileHandle } from 'node:fs/promises';
import { ValidationError, describe } from '../errors.js';
import { arrayClassName, bytesOf, ELEMENT_SIZE, isArrayOfKind, shapeSize, type ElementArray } from './elements.js';
import { tempPathFor, writeAt, writeFileAtomic } from './fileIo.js';
import { isSafetensorsDtype, SAFETENSORS_KIND, type SafetensorsDtype } from './safetensors.js';

export interface SafetensorsTensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

export interface SafetensorsTensorData {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /** Float32Array (F32), Float64Array (F64), Uint16Array of raw bits (F16, BF16), Int32Array (I32), BigInt64Array (I64). */
  data: ElementArray;
}

interface Layout {
  /** u64 length + padded JSON. */
  header: Uint8Array;
  /** Absolute byte position of each tensor's data. */
  offsets: Map<string, number>;
  totalBytes: number;
}

function checkSpec(spec: SafetensorsTensorSpec): void {
  const { name, dtype, shape } = spec;
  if (typeof name !== 'string' || name === '' || name === '__metadata__') {
    throw new ValidationError(`Expected a non-empty tensor name other than __metadata__ but received ${describe(name)}`);
  }
  if (!isSafetensorsDtype(dtype)) {
    throw new ValidationError(`Expected one of ${Object.keys(SAFETENSORS_KIND).join(', ')} for dtype of tensor '${name}' but received ${describe(dtype)}`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ValidationError(`Expected a list of non-negative integers for shape of tensor '${name}' but received ${describe(shape)}`);
  }
}

function checkData(name: string, dtype: SafetensorsDtype, data: unknown, length: number): asserts data is ElementArray {
  const kind = SAFETENSORS_KIND[dtype];
  if (!isArrayOfKind(kind, data)) {
    throw new ValidationError(`Expected ${arrayClassName(kind)} for data of ${dtype} tensor '${name}' but received ${describe(data)}`);
  }
  if (data.length !== length) {
    throw new ValidationError(`Expected ${length} elements for data of tensor '${name}' but received ${describe(data)}`);
  }
}

function checkMetadata(metadata: Record<string, string>): void {
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new ValidationError(`Expected a string for metadata '${k}' but received ${describe(v)}`);
  }
}

/** Header bytes and data offsets for tensors laid out in name order. */
function layout(specs: readonly SafetensorsTensorSpec[], metadata: Record<string, string> | undefined): Layout {
  const sorted = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) json['__metadata__'] = metadata;
  const relative = new Map<string, number>();
  let pos = 0;
  for (const s of sorted) {
    if (relative.has(s.name)) throw new ValidationError(`Expected unique tensor names but received '${s.name}' twice`);
    const bytes = shapeSize(s.shape) * ELEMENT_SIZE[SAFETENSORS_KIND[s.dtype]];
    json[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [pos, pos + bytes] };
    relative.set(s.name, pos);
    pos += bytes;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(text.length / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20); // spaces
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(text, 8);
  const offsets = new Map([...relative].map(([name, rel]) => [name, header.length + rel] as const));
  return { header, offsets, totalBytes: header.length + pos };
}

/** Writes tensors held in memory to `path` atomically. F16/BF16 data is raw bits (see float16.ts). */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, SafetensorsTensorData>,
  metadata?: Record<string, string>,
): Promise<void> {
  const specs = Object.entries(tensors).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  for (const s of specs) {
    checkSpec(s);
    checkData(s.name, s.dtype, tensors[s.name]!.data, shapeSize(s.shape));
  }
  if (metadata) checkMetadata(metadata);
  const { header, offsets } = layout(specs, metadata);
  await writeFileAtomic(path, async (fh) => {
    await writeAt(fh, header, 0);
    for (const [name, pos] of offsets) await writeAt(fh, bytesOf(tensors[name]!.data), pos);
  });
}

interface StreamTensor {
  spec: SafetensorsTensorSpec;
  numel: number;
  position: number;
  /** Next element append() writes. */
  cursor: number;
  /** Written element ranges [start, end), sorted and merged. */
  written: [number, number][];
}

/** Adds [s, e) to a sorted list of disjoint ranges, merging neighbours. */
function addRange(ranges: [number, number][], s: number, e: number): void {
  let i = 0;
  while (i < ranges.length && ranges[i]![1] < s) i++;
  let j = i;
  while (j < ranges.length && ranges[j]![0] <= e) {
    s = Math.min(s, ranges[j]![0]);
    e = Math.max(e, ranges[j]![1]);
    j++;
  }
  ranges.splice(i, j - i, [s, e]);
}

/**
 * Writes a safetensors file whose tensor shapes are known at open, data arriving in pieces:
 * append() fills a tensor front to back, writeAt() places a piece anywhere in it. finish()
 * checks every element was written and renames the file into place; abort() removes it. If
 * anything fails, call abort(): until finish() succeeds only the temporary file exists.
 */
export class SafetensorsStreamWriter {
  private state: 'open' | 'finished' | 'aborted' = 'open';

  private constructor(
    readonly path: string,
    private readonly tmp: string,
    private readonly fh: FileHandle,
    private readonly tensors: Map<string, StreamTensor>,
  ) {}

  static async open(
    path: string,
    specs: readonly SafetensorsTensorSpec[],
    metadata?: Record<string, string>,
  ): Promise<SafetensorsStreamWriter> {
    specs.forEach(checkSpec);
    if (metadata) checkMetadata(metadata);
    const { header, offsets, totalBytes } = layout(specs, metadata);
    const tensors = new Map<string, StreamTensor>();
    for (const spec of specs) {
      tensors.set(spec.name, { spec, numel: shapeSize(spec.shape), position: offsets.get(spec.name)!, cursor: 0, written: [] });
    }
    const tmp = tempPathFor(path);
    const fh = await open(tmp, 'wx');
    try {
      await writeAt(fh, header, 0);
      await fh.truncate(totalBytes); // full size now, so writeAt() may fill in any order
    } catch (err) {
      await fh.close();
      await rm(tmp, { force: true });
      throw err;
    }
    return new SafetensorsStreamWriter(path, tmp, fh, tensors);
  }

  /** Writes `data` right after what the previous append() to this tensor wrote. */
  async append(name: string, data: ElementArray): Promise<void> {
    const t = this.tensor(name);
    const at = t.cursor;
    this.check(t, at, data);
    t.cursor += data.length; // claimed before awaiting so unawaited appends stay in order
    await this.put(t, at, data);
  }

  /** Writes `data` at element `elementOffset` of the tensor (flat, row-major). */
  async writeAt(name: string, elementOffset: number, data: ElementArray): Promise<void> {
    const t = this.tensor(name);
    this.check(t, elementOffset, data);
    await this.put(t, elementOffset, data);
  }

  async finish(): Promise<void> {
    this.checkOpen();
    const missing = [...this.tensors.values()]
      .map((t) => ({ t, done: t.written.reduce((n, [s, e]) => n + e - s, 0) }))
      .filter(({ t, done }) => done < t.numel)
      .map(({ t, done }) => `'${t.spec.name}' (${done} of ${t.numel} elements)`);
    if (missing.length > 0) {
      throw new ValidationError(`Cannot finish ${this.path}: not fully written: ${missing.join(', ')}`);
    }
    await this.fh.datasync();
    await this.fh.close();
    this.state = 'finished';
    await rename(this.tmp, this.path);
  }

  /** Discards the file. Safe to call more than once and after a failed finish(). */
  async abort(): Promise<void> {
    if (this.state === 'open') await this.fh.close().catch(() => undefined);
    if (this.state !== 'aborted') await rm(this.tmp, { force: true });
    this.state = 'aborted';
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new ValidationError(`Cannot write ${this.path}: the writer is already ${this.state}`);
  }

  private tensor(name: string): StreamTensor {
    this.checkOpen();
    const t = this.tensors.get(name);
    if (!t) throw new ValidationError(`Expected one of the tensors given at open for ${this.path} but received ${describe(name)}`);
    return t;
  }

  private check(t: StreamTensor, at: number, data: ElementArray): void {
    const { name, dtype } = t.spec;
    const kind = SAFETENSORS_KIND[dtype];
    if (!isArrayOfKind(kind, data)) {
      throw new ValidationError(`Expected ${arrayClassName(kind)} for data of ${dtype} tensor '${name}' but received ${describe(data)}`);
    }
    if (!Number.isSafeInteger(at) || at < 0 || at + data.length > t.numel) {
      throw new ValidationError(
        `Expected a piece within the ${t.numel} elements of tensor '${name}' but received ${data.length} elements at offset ${at}`,
      );
    }
  }

  private async put(t: StreamTensor, at: number, data: ElementArray): Promise<void> {
    await writeAt(this.fh, bytesOf(data), t.position + at * ELEMENT_SIZE[SAFETENSORS_KIND[t.spec.dtype]]);
    addRange(t.written, at, at + data.length);
  }
}
