// safetensors reading: header parsing with the checks the reference (Rust) implementation
// makes, and a reader that fetches one tensor, or a range of rows of one, through a file
// handle so that multi-GiB checkpoints never have to fit in memory twice.
//
// Layout: u64 LE header length N | N bytes of JSON | data. The JSON maps tensor names to
// {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data area) plus an
// optional "__metadata__": {string: string}.

import type { FileHandle } from 'node:fs/promises';
import { FormatError, ValidationError } from '../errors.js';
import { ELEMENT_SIZE, formatShape, shapeSize, viewAs, type ElementArray, type ElementKind } from './elements.js';
import { openForRead, readAt, readFloat32At } from './fileIo.js';

/** dtypes saekit reads and writes. */
export type SafetensorsDtype = 'F32' | 'F64' | 'F16' | 'BF16' | 'I32' | 'I64';

export const SAFETENSORS_KIND: Readonly<Record<SafetensorsDtype, ElementKind>> = {
  F32: 'f32',
  F64: 'f64',
  F16: 'f16',
  BF16: 'bf16',
  I32: 'i32',
  I64: 'i64',
};

/** Other dtypes of the format: accepted in a header (their sizes validate offsets), not readable. */
const OTHER_DTYPE_SIZES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  U32: 4,
  U64: 8,
};

/** Same cap as the Rust reader: a bigger header is corruption, not a real file. */
const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsTensorInfo {
  /** As written in the header; readable when it is a SafetensorsDtype. */
  dtype: string;
  shape: number[];
  /** Absolute position of the first byte in the file. */
  byteOffset: number;
  byteLength: number;
}

export function isSafetensorsDtype(dtype: string): dtype is SafetensorsDtype {
  return Object.hasOwn(SAFETENSORS_KIND, dtype);
}

function dtypeSize(dtype: string): number | undefined {
  if (isSafetensorsDtype(dtype)) return ELEMENT_SIZE[SAFETENSORS_KIND[dtype]];
  return Object.hasOwn(OTHER_DTYPE_SIZES, dtype) ? OTHER_DTYPE_SIZES[dtype] : undefined;
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

interface ParsedHeader {
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata: Record<string, string>;
}

/**
 * Validates the header JSON against the file: every tensor has a known dtype, a shape whose
 * size matches its byte range, and the ranges tile the data area exactly (no overlap, no gap,
 * nothing after the last one), as the Rust reader requires.
 */
function parseSafetensorsHeader(file: string, json: string, dataStart: number, fileSize: number): ParsedHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new FormatError(file, `safetensors header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new FormatError(file, 'safetensors header is not a JSON object');
  }
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsTensorInfo>();
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(raw)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw new FormatError(file, '__metadata__ is not an object of strings');
      }
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw new FormatError(file, `__metadata__ value for '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    const where = `tensor '${name}'`;
    if (typeof e !== 'object' || e === null) throw new FormatError(file, `${where}: header entry is not an object`);
    if (typeof e.dtype !== 'string') throw new FormatError(file, `${where}: missing dtype`);
    const size = dtypeSize(e.dtype);
    if (size === undefined) throw new FormatError(file, `${where}: unknown dtype '${e.dtype}'`);
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) {
      throw new FormatError(file, `${where}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !isCount(offs[0]) || !isCount(offs[1]) || offs[0] > offs[1]) {
      throw new FormatError(file, `${where}: data_offsets ${JSON.stringify(offs)} is not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offs as [number, number];
    const shape = e.shape as number[];
    if (shapeSize(shape) * size !== end - begin) {
      throw new FormatError(
        file,
        `${where}: shape ${formatShape(shape)} of ${e.dtype} needs ${shapeSize(shape) * size} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    if (end > dataSize) {
      throw new FormatError(
        file,
        `file is truncated: ${where} data_offsets [${begin}, ${end}] run past the end of the data area (${dataSize} bytes)`,
      );
    }
    tensors.set(name, { dtype: e.dtype, shape, byteOffset: dataStart + begin, byteLength: end - begin });
    ranges.push({ name, begin, end });
  }
  checkTiling(file, ranges, dataSize);
  return { tensors, metadata };
}

function checkTiling(file: string, ranges: { name: string; begin: number; end: number }[], dataSize: number): void {
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = '';
  for (const r of ranges) {
    if (r.begin < pos) {
      throw new FormatError(file, `tensor '${r.name}' data_offsets [${r.begin}, ${r.end}] overlap tensor '${prev}' (ends at ${pos})`);
    }
    if (r.begin > pos) {
      throw new FormatError(file, `${r.begin - pos} unused bytes before tensor '${r.name}' (data_offsets [${r.begin}, ${r.end}])`);
    }
    pos = r.end;
    prev = r.name;
  }
  if (pos !== dataSize) throw new FormatError(file, `${dataSize - pos} unexpected bytes after the last tensor's data`);
}

/**
 * An open safetensors file. Reads are positional, so several may run at once; call close()
 * when done (the handle is not closed by garbage collection in a timely way).
 */
export class SafetensorsReader {
  private constructor(
    readonly file: string,
    private readonly fh: FileHandle,
    /** Tensors in header order. */
    readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  static async open(file: string): Promise<SafetensorsReader> {
    const fh = await openForRead(file);
    try {
      const fileSize = (await fh.stat()).size;
      if (fileSize < 8) throw new FormatError(file, `file is ${fileSize} bytes, too short for a safetensors header`);
      const lenBytes = new Uint8Array(8);
      await readAt(fh, file, 0, lenBytes, 'the header length');
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new FormatError(file, `header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file`);
      }
      if (n > BigInt(fileSize - 8)) {
        throw new FormatError(file, `file is truncated: header length ${n} but only ${fileSize - 8} bytes follow`);
      }
      const headerBytes = new Uint8Array(Number(n));
      await readAt(fh, file, 8, headerBytes, 'the header');
      let json: string;
      try {
        json = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
      } catch {
        throw new FormatError(file, 'safetensors header is not valid UTF-8');
      }
      const { tensors, metadata } = parseSafetensorsHeader(file, json, 8 + headerBytes.length, fileSize);
      return new SafetensorsReader(file, fh, tensors, metadata);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Header entry of `name`; a FormatError naming the file and the tensors it has otherwise. */
  info(name: string): SafetensorsTensorInfo {
    const info = this.tensors.get(name);
    if (info) return info;
    const names = [...this.tensors.keys()];
    const list = names.length > 12 ? `${names.slice(0, 12).join(', ')}, ... (${names.length} in all)` : names.join(', ');
    throw new FormatError(this.file, `no tensor '${name}' (tensors: ${list || 'none'})`);
  }

  /** Element kind of a tensor saekit can read; a FormatError for other dtypes. */
  private kindOf(name: string, info: SafetensorsTensorInfo): ElementKind {
    if (!isSafetensorsDtype(info.dtype)) {
      throw new FormatError(
        this.file,
        `tensor '${name}' has dtype ${info.dtype}, which saekit cannot read (supported: ${Object.keys(SAFETENSORS_KIND).join(', ')})`,
      );
    }
    return SAFETENSORS_KIND[info.dtype];
  }

  /** The tensor in its stored type: Float32Array, Float64Array, Int32Array, BigInt64Array, or raw bits (Uint16Array) for F16/BF16. */
  async readTensor(name: string): Promise<ElementArray> {
    const info = this.info(name);
    const kind = this.kindOf(name, info);
    const bytes = new Uint8Array(info.byteLength); // own buffer: aligned for any element size
    await readAt(this.fh, this.file, info.byteOffset, bytes, `tensor '${name}'`);
    return viewAs(kind, bytes);
  }

  /** The whole tensor as float32 (F16/BF16 widened exactly, F64/ints rounded), flat row-major. */
  async readFloat32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    return this.readElements(name, info, 0, info.byteLength / ELEMENT_SIZE[this.kindOf(name, info)]);
  }

  /**
   * Rows [rowStart, rowStart + rowCount) of a tensor of rank >= 1 (a row is everything after
   * the first dimension) as float32. Only those bytes are read.
   */
  async readRowsFloat32(name: string, rowStart: number, rowCount: number): Promise<Float32Array> {
    const info = this.info(name);
    if (info.shape.length === 0) throw new ValidationError(`tensor '${name}' in ${this.file} is a scalar: it has no rows`);
    const rows = info.shape[0]!;
    if (!isCount(rowStart) || !isCount(rowCount) || rowStart + rowCount > rows) {
      throw new ValidationError(
        `Expected rows within [0, ${rows}) for tensor '${name}' but received rowStart ${rowStart}, rowCount ${rowCount}`,
      );
    }
    const rowSize = shapeSize(info.shape.slice(1));
    return this.readElements(name, info, rowStart * rowSize, rowCount * rowSize);
  }

  private readElements(name: string, info: SafetensorsTensorInfo, start: number, count: number): Promise<Float32Array> {
    const kind = this.kindOf(name, info);
    return readFloat32At(this.fh, this.file, info.byteOffset + start * ELEMENT_SIZE[kind], kind, count, `tensor '${name}'`);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
