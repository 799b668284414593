// Streaming decode of a codes file into a float32 .npy [N, d_in]: the .npy header is known up
// front, so rows are written in place into a temporary file renamed at the end. Chunks are
// bounded by rows and by nonzeros, so memory stays bounded whatever the file size.
import { open, rename, rm } from 'node:fs/promises';
import { FormatError } from '../errors.js';
import { tempPathFor, writeAt } from '../formats/fileIo.js';
import { encodeNpyHeader } from '../formats/npy.js';
import type { Sae } from '../sae.js';
import { CodesFileReader } from './codesFile.js';
import { defaultChunkRows, type StreamProgress, type StreamResult } from './encodeFile.js';

export interface DecodeFileOptions {
  chunkRows?: number;
  onProgress?: (p: StreamProgress) => void;
  /** Stops the run (within a chunk): the output is not created, and the Promise rejects with signal.reason. */
  signal?: AbortSignal;
}

const MAX_CHUNK_NNZ = 1 << 22;

export async function decodeFile(sae: Sae, codesPath: string, output: string, options: DecodeFileOptions = {}): Promise<StreamResult> {
  const t0 = performance.now();
  const codes = await CodesFileReader.open(codesPath);
  const tmp = tempPathFor(output);
  try {
    if (codes.dSae !== undefined && codes.dSae !== sae.dSae)
      throw new FormatError(codesPath, `codes were made for d_sae ${codes.dSae} but the SAE has d_sae ${sae.dSae}`);
    const header = encodeNpyHeader([codes.rows, sae.dOut]);
    const fh = await open(tmp, 'wx');
    try {
      await writeAt(fh, header, 0);
      const rowBytes = sae.dOut * 4;
      const maxRows = options.chunkRows ?? defaultChunkRows(sae.dOut);
      let pendingWrite: Promise<void> = Promise.resolve();
      for (let start = 0; start < codes.rows; ) {
        let count = Math.min(maxRows, codes.rows - start);
        const ptr = await codes.indptr(start, count);
        while (count > 1 && ptr[count]! - ptr[0]! > MAX_CHUNK_NNZ) count = Math.ceil(count / 2);
        const chunk = await codes.read(start, count);
        chunk.dSae = sae.dSae;
        let x: Float32Array;
        try {
          x = await sae.decode(chunk, undefined, { signal: options.signal });
        } catch (e) {
          if (options.signal?.aborted && e === options.signal.reason) throw e;
          throw new FormatError(codesPath, `rows ${start}..${start + count}: ${(e as Error).message}`);
        }
        await pendingWrite;
        pendingWrite = writeAt(fh, new Uint8Array(x.buffer, x.byteOffset, x.byteLength), header.length + start * rowBytes);
        pendingWrite.catch(() => undefined);
        start += count;
        options.onProgress?.({ rowsDone: start, rows: codes.rows, seconds: (performance.now() - t0) / 1e3 });
      }
      await pendingWrite;
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, output);
    return { rows: codes.rows, nnz: codes.nnz, seconds: (performance.now() - t0) / 1e3 };
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await codes.close();
  }
}
