// Positional file reads and writes, and atomic replacement of a file.
//
// SAE weights and activation dumps run to many GiB, so readers never load a whole file: they
// read ranges at offsets through a FileHandle. A single read() call is capped (and may return
// short), hence the loops. Writers go through a temporary file in the same directory and a
// rename, so a crash or an error never leaves a half-written file under the final name.

import { randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { FormatError } from '../errors.js';
import { ELEMENT_SIZE, toFloat32, type ElementKind } from './elements.js';

/** Largest single read/write request; Node rejects lengths above 2 GiB - 1. */
const MAX_IO = 1 << 30;

/** Bytes converted per step when widening f16/bf16: bounds the scratch memory. */
const CONVERT_CHUNK_BYTES = 8 << 20;

/** Opens a file for reading; a missing or unreadable file is a FormatError naming it. */
export async function openForRead(file: string): Promise<FileHandle> {
  try {
    return await open(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FormatError(file, code === 'ENOENT' ? 'file not found' : `cannot open: ${(err as Error).message}`);
  }
}

/**
 * Fills `out` with the bytes at `position`. Running out of file means it is truncated (or was
 * cut while open): a FormatError that says what was being read.
 */
export async function readAt(fh: FileHandle, file: string, position: number, out: Uint8Array, what: string): Promise<void> {
  let done = 0;
  while (done < out.length) {
    const want = Math.min(out.length - done, MAX_IO);
    const { bytesRead } = await fh.read(out, done, want, position + done);
    if (bytesRead === 0) {
      throw new FormatError(
        file,
        `file is truncated: ${what} needs bytes ${position}..${position + out.length} but the file ends at ${position + done}`,
      );
    }
    done += bytesRead;
  }
}

/**
 * Reads `count` elements of `kind` at `position` as float32. float32 data lands directly in
 * the result; other kinds go through a bounded scratch buffer, so memory stays ~the output.
 */
export async function readFloat32At(
  fh: FileHandle,
  file: string,
  position: number,
  kind: ElementKind,
  count: number,
  what: string,
): Promise<Float32Array> {
  const out = new Float32Array(count);
  if (kind === 'f32') {
    await readAt(fh, file, position, new Uint8Array(out.buffer), what);
    return out;
  }
  const size = ELEMENT_SIZE[kind];
  const perChunk = Math.max(1, Math.floor(CONVERT_CHUNK_BYTES / size));
  // A fresh ArrayBuffer is aligned for every element size (a pooled Buffer may not be).
  const scratch = new Uint8Array(Math.min(count, perChunk) * size);
  for (let done = 0; done < count; done += perChunk) {
    const n = Math.min(perChunk, count - done);
    const bytes = scratch.subarray(0, n * size);
    await readAt(fh, file, position + done * size, bytes, what);
    toFloat32(kind, bytes, out, done);
  }
  return out;
}

export async function writeAt(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(bytes.length - done, MAX_IO), position + done);
    done += bytesWritten;
  }
}

/**
 * A sibling path no other writer will pick: same directory, so rename() stays atomic. First,
 * temporaries of PATH left by a process that no longer runs (one killed mid-write) are
 * removed: a rerun after a SIGKILL leaves no debris.
 */
export function tempPathFor(path: string): string {
  sweepStaleTemps(path);
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/** Removes PATH.tmp-<pid>-<hex> siblings whose writer process is gone. Best effort. */
function sweepStaleTemps(path: string): void {
  const prefix = `${basename(path)}.tmp-`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    // <pid>-<hex>, and the side files writers keep beside it (<pid>-<hex>.values, ...).
    const m = /^(\d+)-[0-9a-f]{8}(\.[\w-]+)?$/.exec(name.slice(prefix.length));
    if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    try {
      rmSync(join(dirname(path), name), { recursive: true, force: true });
    } catch {
      // another process may be sweeping too
    }
  }
}

/**
 * Writes `path` through a temporary sibling: `write` fills the open handle, the data is
 * flushed to disk, then renamed over `path`. On any error the temporary file is removed and
 * the error rethrown; `path` is untouched.
 */
export async function writeFileAtomic(path: string, write: (fh: FileHandle) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx');
  try {
    await write(fh);
    await fh.datasync();
    await fh.close();
    await rename(tmp, path);
  } catch (err) {
    await fh.close().catch(() => undefined); // already closed when rename failed
    await rm(tmp, { force: true });
    throw err;
  }
}
