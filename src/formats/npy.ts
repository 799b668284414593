// NumPy .npy files: activation dumps ([N, d] float32 or float16) and the entries of Gemma
// Scope's params.npz.
//
// Layout: "\x93NUMPY", version (major, minor), header length (u16 for 1.0, u32 for 2.0/3.0),
// a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (N, d), } padded
// with spaces and '\n' so the data starts on a 64-byte boundary, then the raw elements.
// saekit reads every layout numpy writes for numeric arrays: little- or big-endian ('<f4',
// '>f4', '=f4'), C order or Fortran order (what np.save writes for a transposed array:
// fortran_order True, the first index fastest). Arrays are handed out C-ordered and
// little-endian: in-memory members are converted once, and NpyReader reads a block of rows
// of a Fortran-order file as one contiguous run per column.

import type { FileHandle } from 'node:fs/promises';
import { FormatError, ValidationError, describe } from '../errors.js';
import { bytesOf, ELEMENT_SIZE, formatShape, shapeSize, toFloat32, viewAs, type ElementArray, type ElementKind } from './elements.js';
import { openForRead, readAt, readFloat32At, writeAt, writeFileAtomic } from './fileIo.js';

const NPY_KIND = { '<f4': 'f32', '<f8': 'f64', '<f2': 'f16', '<i4': 'i32', '<i8': 'i64' } as const;

/** dtypes saekit reads ('descr' values); writeNpy writes the first and the third. */
export type NpyDtype = keyof typeof NPY_KIND;

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
/** Bytes before the header text: magic, version, and a u32 length (2.0/3.0; 1.0 uses 10). */
const PRELUDE_MAX = 12;

export interface NpyHeader {
  /** The element type, written little-endian ('<f4') whatever the file's byte order. */
  dtype: NpyDtype;
  kind: ElementKind;
  shape: number[];
  /** Byte position of the first element (end of the header). */
  dataOffset: number;
  /** The file's elements are big-endian ('>f4'). */
  bigEndian: boolean;
  /** The file's elements are in Fortran order (column-major: the first index fastest). */
  fortranOrder: boolean;
}

/** Where the header text lies, from the first PRELUDE_MAX bytes (or fewer for tiny files). */
function prelude(file: string, b: Uint8Array): { textStart: number; textLength: number; utf8: boolean } {
  if (b.length < MAGIC.length || !MAGIC.every((m, i) => b[i] === m)) {
    throw new FormatError(file, 'not a .npy file (no \\x93NUMPY magic)');
  }
  if (b.length < 10) throw new FormatError(file, 'file is truncated inside the .npy header');
  const major = b[6]!;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (major === 1) return { textStart: 10, textLength: view.getUint16(8, true), utf8: false };
  if (major === 2 || major === 3) {
    if (b.length < 12) throw new FormatError(file, 'file is truncated inside the .npy header');
    return { textStart: 12, textLength: view.getUint32(8, true), utf8: major === 3 };
  }
  throw new FormatError(file, `unsupported .npy format version ${major}.${b[7]}`);
}

/** Parses the dict literal; checks dtype, order and shape. */
function parseHeaderText(file: string, text: string, dataOffset: number): NpyHeader {
  const descr = /['"]descr['"]\s*:\s*(?:['"]([^'"]*)['"]|(\[))/.exec(text);
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text);
  const shapeMatch = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr || !fortran || !shapeMatch) throw new FormatError(file, `malformed .npy header: ${JSON.stringify(text.trim())}`);
  if (descr[2]) throw new FormatError(file, 'structured (record) dtype is not supported: save a plain numeric array');
  const descrText = descr[1]!;
  // '<' little-endian, '>' big-endian, '=' native (little on every platform saekit builds for).
  const order = descrText[0];
  const dtype = order === '>' || order === '=' ? `<${descrText.slice(1)}` : descrText;
  if (!Object.hasOwn(NPY_KIND, dtype)) {
    throw new FormatError(file, `dtype '${descrText}' is not supported (supported: ${Object.keys(NPY_KIND).join(', ')}, in either byte order)`);
  }
  const bigEndian = order === '>';
  const fortranOrder = fortran[1] === 'True';
  const dims = shapeMatch[1]!
    .split(',')
    .map((s) => s.trim().replace(/L$/, '')) // Python 2 wrote longs as 3L
    .filter((s) => s !== '');
  if (!dims.every((s) => /^\d+$/.test(s))) throw new FormatError(file, `malformed shape (${shapeMatch[1]}) in .npy header`);
  const kind = NPY_KIND[dtype as NpyDtype];
  const shape = dims.map(Number);
  // Every dimension and the byte count must be exact doubles; a zero elsewhere in the shape does
  // not make a dimension of 2^60 harmless (row sizes and Fortran maps are built from it).
  if (!shape.every(Number.isSafeInteger) || !Number.isSafeInteger(shape.reduce((a, d) => a * Math.max(d, 1), ELEMENT_SIZE[kind]))) {
    throw new FormatError(file, `shape (${shapeMatch[1]}) in .npy header is too large`);
  }
  return { dtype: dtype as NpyDtype, kind, shape, dataOffset, bigEndian, fortranOrder };
}

/** Parses the header at the start of `bytes`, which must hold at least all of it. */
function parseNpyHeader(file: string, bytes: Uint8Array): NpyHeader {
  const { textStart, textLength, utf8 } = prelude(file, bytes.subarray(0, PRELUDE_MAX));
  const end = textStart + textLength;
  if (bytes.length < end) throw new FormatError(file, `file is truncated inside the .npy header (${end} bytes expected)`);
  const text = new TextDecoder(utf8 ? 'utf-8' : 'latin1').decode(bytes.subarray(textStart, end));
  return parseHeaderText(file, text, end);
}

function dataBytes(h: NpyHeader): number {
  return shapeSize(h.shape) * ELEMENT_SIZE[h.kind];
}

/** A .npy held in memory (e.g. an npz entry): header plus the elements in their stored type. */
export function parseNpy(bytes: Uint8Array, nameForErrors: string): NpyHeader & { data: ElementArray } {
  const header = parseNpyHeader(nameForErrors, bytes);
  const n = dataBytes(header);
  const end = header.dataOffset + n;
  if (bytes.length < end) {
    throw new FormatError(nameForErrors, `file is truncated: shape ${formatShape(header.shape)} of ${header.dtype} needs ${end} bytes, found ${bytes.length}`);
  }
  let data = bytes.subarray(header.dataOffset, end);
  // Typed arrays need element-aligned offsets; numpy aligns to 64 but other writers may not.
  // A big-endian or Fortran-order array is rewritten, so it gets its own copy too.
  if (data.byteOffset % ELEMENT_SIZE[header.kind] !== 0 || header.bigEndian || header.fortranOrder) data = data.slice();
  if (header.bigEndian) swapBytes(data, ELEMENT_SIZE[header.kind]);
  if (header.fortranOrder && header.shape.length > 1) data = fortranToC(data, header.shape, ELEMENT_SIZE[header.kind]);
  return { ...header, bigEndian: false, fortranOrder: false, data: viewAs(header.kind, data) };
}

/** Reverses the bytes of every SIZE-byte element of B in place. */
function swapBytes(b: Uint8Array, size: number): void {
  for (let i = 0; i < b.length; i += size) {
    for (let lo = i, hi = i + size - 1; lo < hi; lo++, hi--) {
      const t = b[lo]!;
      b[lo] = b[hi]!;
      b[hi] = t;
    }
  }
}

/**
 * For each C-order position of the trailing dims (shape[1:]), its Fortran-order index: in
 * Fortran order shape[1] varies fastest among them, in C order the last one does.
 */
function trailingFortranIndex(shape: readonly number[]): Uint32Array {
  const dims = shape.slice(1);
  const n = shapeSize(dims);
  const map = new Uint32Array(n);
  const idx = new Array<number>(dims.length).fill(0);
  for (let c = 0; c < n; c++) {
    let f = 0;
    for (let a = dims.length - 1; a >= 0; a--) f = f * dims[a]! + idx[a]!;
    map[c] = f;
    for (let a = dims.length - 1; a >= 0; a--) {
      if (++idx[a]! < dims[a]!) break;
      idx[a] = 0;
    }
  }
  return map;
}

/** B (element-aligned) as unsigned integers of SIZE bytes, to move elements bit for bit. */
function elementView(b: Uint8Array, size: number): Uint8Array | Uint16Array | Uint32Array | BigUint64Array {
  if (size === 2) return new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
  if (size === 4) return new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
  if (size === 8) return new BigUint64Array(b.buffer, b.byteOffset, b.length / 8);
  return b;
}

/** A whole Fortran-order array, element SIZE bytes, rewritten in C order. */
function fortranToC(b: Uint8Array, shape: readonly number[], size: number): Uint8Array {
  if (b.length === 0) return b; // no elements: the trailing dims alone may be huge
  const rows = shape[0]!;
  const map = trailingFortranIndex(shape);
  const out = new Uint8Array(b.length);
  const src = elementView(b, size);
  const dst = elementView(out, size);
  for (let i = 0; i < rows; i++) {
    for (let c = 0; c < map.length; c++) dst[i * map.length + c] = src[map[c]! * rows + i]!;
  }
  return out;
}

/**
 * An open .npy file: rows of an [N, ...] array are read on demand, so an activation dump
 * larger than memory can be streamed in batches.
 */
export class NpyReader implements NpyHeader {
  readonly dtype: NpyDtype;
  readonly kind: ElementKind;
  readonly shape: number[];
  readonly dataOffset: number;
  readonly bigEndian: boolean;
  readonly fortranOrder: boolean;
  private fortranMap: Uint32Array | undefined;

  private constructor(
    readonly file: string,
    private readonly fh: FileHandle,
    header: NpyHeader,
  ) {
    this.dtype = header.dtype;
    this.kind = header.kind;
    this.shape = header.shape;
    this.dataOffset = header.dataOffset;
    this.bigEndian = header.bigEndian;
    this.fortranOrder = header.fortranOrder && header.shape.length > 1;
  }

  static async open(file: string): Promise<NpyReader> {
    const fh = await openForRead(file);
    try {
      const size = (await fh.stat()).size;
      const first = new Uint8Array(Math.min(size, PRELUDE_MAX));
      await readAt(fh, file, 0, first, 'the .npy header');
      const { textStart, textLength } = prelude(file, first);
      const all = new Uint8Array(Math.min(size, textStart + textLength));
      await readAt(fh, file, 0, all, 'the .npy header');
      const header = parseNpyHeader(file, all);
      const end = header.dataOffset + dataBytes(header);
      if (size < end) {
        throw new FormatError(file, `file is truncated: shape ${formatShape(header.shape)} of ${header.dtype} needs ${end} bytes, the file has ${size}`);
      }
      return new NpyReader(file, fh, header);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Number of rows (first dimension); a 0-d array counts as one row. */
  get rows(): number {
    return this.shape.length === 0 ? 1 : this.shape[0]!;
  }

  /** Elements per row (product of the dimensions after the first). */
  get rowSize(): number {
    return shapeSize(this.shape.slice(1));
  }

  /** Rows [rowStart, rowStart + rowCount) as float32, flat row-major. Only those bytes are read. */
  async readRowsFloat32(rowStart: number, rowCount: number): Promise<Float32Array> {
    const ok = (v: number) => Number.isSafeInteger(v) && v >= 0;
    if (!ok(rowStart) || !ok(rowCount) || rowStart + rowCount > this.rows) {
      throw new ValidationError(
        `Expected rows within [0, ${this.rows}) of ${this.file} but received rowStart ${rowStart}, rowCount ${rowCount}`,
      );
    }
    const size = ELEMENT_SIZE[this.kind];
    if (!this.bigEndian && !this.fortranOrder) {
      const pos = this.dataOffset + rowStart * this.rowSize * size;
      return readFloat32At(this.fh, this.file, pos, this.kind, rowCount * this.rowSize, 'array data');
    }
    // Big-endian or Fortran order: the raw bytes of the rows, swapped and reordered, then
    // converted. In Fortran order the rows [rowStart, rowStart + rowCount) of one trailing
    // position are contiguous: one read per trailing position (per column of an [N, d] array).
    const n = rowCount * this.rowSize;
    if (n === 0) return new Float32Array(0);
    const raw = new Uint8Array(n * size);
    if (!this.fortranOrder) {
      await readAt(this.fh, this.file, this.dataOffset + rowStart * this.rowSize * size, raw, 'array data');
    } else {
      this.fortranMap ??= trailingFortranIndex(this.shape);
      const column = new Uint8Array(rowCount * size);
      const src = elementView(column, size);
      const dst = elementView(raw, size);
      for (let c = 0; c < this.rowSize; c++) {
        await readAt(this.fh, this.file, this.dataOffset + (this.fortranMap[c]! * this.rows + rowStart) * size, column, 'array data');
        for (let i = 0; i < rowCount; i++) dst[i * this.rowSize + c] = src[i]!;
      }
    }
    if (this.bigEndian) swapBytes(raw, size);
    const out = new Float32Array(n);
    toFloat32(this.kind, raw, out);
    return out;
  }

  async readAllFloat32(): Promise<Float32Array> {
    return this.readRowsFloat32(0, this.rows);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Dtypes writeNpy accepts, with the typed array each needs. */
export type NpyWriteDtype = '<f4' | '<f2';

/** Header + data of a .npy, as numpy itself would write it (version 1.0 unless the header is huge). */
export function encodeNpy(data: Float32Array | Uint16Array, shape: readonly number[], dtype: NpyWriteDtype = '<f4'): Uint8Array[] {
  if (dtype !== '<f4' && dtype !== '<f2') throw new ValidationError(`Expected '<f4' or '<f2' for npy dtype but received ${describe(dtype)}`);
  const expectedClass = dtype === '<f4' ? Float32Array : Uint16Array;
  if (!(data instanceof expectedClass)) {
    throw new ValidationError(`Expected ${expectedClass.name} for ${dtype} data but received ${describe(data)}`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0) || shapeSize(shape) !== data.length) {
    throw new ValidationError(`Expected a shape with ${data.length} elements (the data length) but received ${JSON.stringify(shape)}`);
  }
  return [encodeNpyHeader(shape, dtype), bytesOf(data)];
}

/** The header alone, for writers that stream the data after it. */
export function encodeNpyHeader(shape: readonly number[], dtype: NpyWriteDtype = '<f4'): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad with spaces + '\n' so prelude + text is a multiple of 64 (numpy's alignment).
  let textStart = 10;
  let total = Math.ceil((textStart + dict.length + 1) / 64) * 64;
  if (total - textStart > 0xffff) {
    textStart = 12;
    total = Math.ceil((textStart + dict.length + 1) / 64) * 64;
  }
  const header = new Uint8Array(total).fill(0x20);
  header.set(MAGIC, 0);
  header[6] = textStart === 10 ? 1 : 2;
  header[7] = 0;
  const view = new DataView(header.buffer);
  if (textStart === 10) view.setUint16(8, total - textStart, true);
  else view.setUint32(8, total - textStart, true);
  header.set(new TextEncoder().encode(dict), textStart);
  header[total - 1] = 0x0a;
  return header;
}

/** Writes a C-ordered .npy atomically: Float32Array for '<f4', Uint16Array of f16 bits for '<f2'. */
export async function writeNpy(
  path: string,
  data: Float32Array | Uint16Array,
  shape: readonly number[],
  dtype: NpyWriteDtype = '<f4',
): Promise<void> {
  const [header, body] = encodeNpy(data, shape, dtype);
  await writeFileAtomic(path, async (fh) => {
    await writeAt(fh, header!, 0);
    await writeAt(fh, body!, header!.length);
  });
}
