// Streaming encode of an activation dump: read chunk i+1 while chunk i is encoded and chunk
// i-1 is written. At most two input chunks and two code chunks exist at once, so memory is
// bounded by the chunk size (default 8 MiB of float32 input per chunk) whatever the file size.
import { NonFiniteInputError, ValidationError } from '../errors.js';
import type { Sae } from '../sae.js';
import { openActivations } from './activations.js';
import { CodesFileWriter } from './codesFile.js';

export interface StreamProgress {
  rowsDone: number;
  rows: number;
  seconds: number;
}

export interface EncodeFileOptions {
  /** safetensors tensor holding the activations (optional when the file has one tensor). */
  tensor?: string;
  /** Rows per chunk; default: ~8 MiB of float32 input. */
  chunkRows?: number;
  onProgress?: (p: StreamProgress) => void;
  /** Stops the run (within a chunk): the output is not created, and the Promise rejects with signal.reason. */
  signal?: AbortSignal;
}

export interface StreamResult {
  rows: number;
  nnz: number;
  seconds: number;
}

export function defaultChunkRows(dIn: number): number {
  return Math.max(64, Math.floor((8 << 20) / (4 * dIn)));
}

/** Encodes the activations in `input` with `sae` into a codes file at `output` (atomic). */
export async function encodeFile(sae: Sae, input: string, output: string, options: EncodeFileOptions = {}): Promise<StreamResult> {
  const t0 = performance.now();
  const src = await openActivations(input, options.tensor);
  try {
    if (src.dIn !== sae.dIn)
      throw new ValidationError(
        `${input}${src.tensor ? ` tensor '${src.tensor}'` : ''} has rows of width ${src.dIn} but the SAE has d_in ${sae.dIn}`,
      );
    const chunk = options.chunkRows ?? defaultChunkRows(src.dIn);
    if (!Number.isInteger(chunk) || chunk < 1) throw new ValidationError(`chunkRows must be a positive integer but got ${chunk}`);
    const writer = await CodesFileWriter.open(output, {
      dSae: sae.dSae,
      dIn: sae.dIn,
      architecture: sae.config.architecture,
      perRow: sae.config.normalizeActivations === 'constant_norm_rescale' || sae.config.normalizeActivations === 'layer_norm',
    });
    let pendingWrite: Promise<void> = Promise.resolve();
    try {
      const readChunk = (start: number) => src.read(start, Math.min(chunk, src.rows - start));
      let next = src.rows > 0 ? readChunk(0) : undefined;
      for (let start = 0; start < src.rows; start += chunk) {
        const x = await next!;
        next = start + chunk < src.rows ? readChunk(start + chunk) : undefined;
        next?.catch(() => undefined); // surfaced when awaited; avoid an unhandled rejection meanwhile
        let codes;
        try {
          codes = await sae.encode(x, { signal: options.signal });
        } catch (e) {
          throw withFileContext(e, input, src.tensor, start);
        }
        await pendingWrite;
        pendingWrite = writer.append(codes);
        pendingWrite.catch(() => undefined);
        options.onProgress?.({ rowsDone: start + x.length / src.dIn, rows: src.rows, seconds: (performance.now() - t0) / 1e3 });
      }
      await pendingWrite;
      await writer.finish();
    } catch (e) {
      await pendingWrite.catch(() => undefined);
      await writer.abort();
      throw e;
    }
    return { rows: writer.rows, nnz: writer.nnz, seconds: (performance.now() - t0) / 1e3 };
  } finally {
    await src.close();
  }
}

// A bad row of a chunk -> name the file and the row within the whole file.
function withFileContext(e: unknown, file: string, tensor: string | undefined, rowOffset: number): unknown {
  if (!(e instanceof NonFiniteInputError)) return e;
  return new ValidationError(
    `${file}${tensor ? ` tensor '${tensor}'` : ''}: row ${rowOffset + e.row} has a non-finite value (NaN or Infinity) at column ${e.col}`,
  );
}
