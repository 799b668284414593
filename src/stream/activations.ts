// A row source over an activation dump on disk: .npy, or one tensor of a .safetensors file.
// Rows are read on demand (float16/bfloat16 widened to float32), so dumps larger than memory
// stream in bounded chunks. Arrays of rank > 2 ([batch, ctx, d_in]) are read as [rows, d_in].
import { extname } from 'node:path';
import { FormatError, ValidationError } from '../errors.js';
import { NpyReader } from '../formats/npy.js';
import { SafetensorsReader } from '../formats/safetensors.js';

export interface ActivationSource {
  readonly file: string;
  /** safetensors tensor name, if any. */
  readonly tensor: string | undefined;
  readonly rows: number;
  readonly dIn: number;
  readonly dtype: string;
  /** Rows [start, start + count) as float32, row-major. */
  read(start: number, count: number): Promise<Float32Array>;
  close(): Promise<void>;
}

const FLOAT_DTYPES = new Set(['<f4', '<f2', 'F32', 'F16', 'BF16']);

function rowsAndWidth(file: string, what: string, shape: readonly number[], dtype: string): { rows: number; dIn: number } {
  if (!FLOAT_DTYPES.has(dtype))
    throw new FormatError(file, `${what} has dtype ${dtype}; activations must be float32 or float16 (or bfloat16)`);
  if (shape.length < 2)
    throw new FormatError(file, `${what} has shape [${shape.join(', ')}]; activations must be [N, d_in] (or [..., d_in])`);
  const dIn = shape[shape.length - 1]!;
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return { rows, dIn };
}

/** Opens FILE (.npy or .safetensors). For safetensors, `tensor` picks the tensor; it may be
 * omitted when the file holds exactly one. */
export async function openActivations(file: string, tensor?: string): Promise<ActivationSource> {
  const ext = extname(file).toLowerCase();
  if (ext === '.npy') {
    if (tensor !== undefined) throw new ValidationError(`--tensor applies to .safetensors inputs, but ${file} is a .npy file`);
    const npy = await NpyReader.open(file);
    try {
      const { rows, dIn } = rowsAndWidth(file, 'the array', npy.shape, npy.dtype);
      return {
        file,
        tensor: undefined,
        rows,
        dIn,
        dtype: npy.dtype === '<f2' ? 'float16' : 'float32',
        // NpyReader counts rows along the first dimension; flattened leading dims mean
        // element offsets, which readRowsFloat32 computes the same way for rank 2.
        read: (start, count) =>
          npy.shape.length === 2 ? npy.readRowsFloat32(start, count) : readFlatNpy(npy, start * dIn, count * dIn),
        close: () => npy.close(),
      };
    } catch (e) {
      await npy.close();
      throw e;
    }
  }
  if (ext === '.safetensors') {
    const st = await SafetensorsReader.open(file);
    try {
      const names = [...st.tensors.keys()];
      let name = tensor;
      if (name === undefined) {
        if (names.length !== 1)
          throw new ValidationError(`${file} holds ${names.length} tensors (${names.join(', ')}): choose one with --tensor`);
        name = names[0]!;
      }
      const info = st.info(name);
      const { rows, dIn } = rowsAndWidth(file, `tensor '${name}'`, info.shape, info.dtype);
      const chosen = name;
      const twoD = info.shape.length === 2;
      return {
        file,
        tensor: chosen,
        rows,
        dIn,
        dtype: info.dtype === 'F32' ? 'float32' : info.dtype === 'F16' ? 'float16' : 'bfloat16',
        read: (start, count) => (twoD ? st.readRowsFloat32(chosen, start, count) : readFlatSafetensors(st, chosen, info.shape, start, count, dIn)),
        close: () => st.close(),
      };
    } catch (e) {
      await st.close();
      throw e;
    }
  }
  throw new FormatError(file, `unsupported activation file type '${ext || '(none)'}': expected .npy or .safetensors`);
}

// Rank > 2: read whole leading-index slabs covering the rows and cut out the range.
async function readFlatNpy(npy: NpyReader, elemStart: number, elemCount: number): Promise<Float32Array> {
  const slab = npy.rowSize;
  const first = Math.floor(elemStart / slab);
  const last = Math.ceil((elemStart + elemCount) / slab);
  const data = await npy.readRowsFloat32(first, last - first);
  const off = elemStart - first * slab;
  return data.subarray(off, off + elemCount);
}

async function readFlatSafetensors(
  st: SafetensorsReader,
  name: string,
  shape: readonly number[],
  start: number,
  count: number,
  dIn: number,
): Promise<Float32Array> {
  const slab = shape.slice(1).reduce((a, b) => a * b, 1);
  const elemStart = start * dIn;
  const elemCount = count * dIn;
  const first = Math.floor(elemStart / slab);
  const last = Math.ceil((elemStart + elemCount) / slab);
  const data = await st.readRowsFloat32(name, first, last - first);
  const off = elemStart - first * slab;
  return data.subarray(off, off + elemCount);
}
