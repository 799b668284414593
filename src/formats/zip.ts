// Just enough of the zip format to read .npz archives: the central directory (with zip64, which
// numpy uses for members over 4 GiB such as wide Gemma Scope encoders) and each member's raw
// bytes, read at its offset rather than by loading the whole archive.

import type { FileHandle } from 'node:fs/promises';
import { FormatError } from '../errors.js';
import { readAt } from './fileIo.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;

async function readView(fh: FileHandle, file: string, position: number, length: number, what: string): Promise<DataView> {
  const bytes = new Uint8Array(length);
  await readAt(fh, file, position, bytes, what);
  return new DataView(bytes.buffer);
}

function u64(view: DataView, at: number, file: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(file, `zip field value ${v} is too large`);
  return Number(v);
}

/** Locates the central directory: the end record is within the last 64 KiB + 22 bytes. */
async function centralDirectory(fh: FileHandle, file: string, fileSize: number): Promise<{ offset: number; size: number }> {
  const tailLength = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT);
  const tailStart = fileSize - tailLength;
  const tail = await readView(fh, file, tailStart, tailLength, 'the zip end record');
  let at = tailLength - EOCD_SIZE;
  while (at >= 0 && tail.getUint32(at, true) !== EOCD_SIG) at--;
  if (at < 0) throw new FormatError(file, 'not a zip archive, or truncated (no end-of-central-directory record)');
  // zip64 archives put a locator right before the end record, pointing at the zip64 end
  // record whose 64-bit fields replace the (then saturated or stale) 32-bit ones.
  const locAt = tailStart + at - 20;
  if (locAt >= 0) {
    const loc = await readView(fh, file, locAt, 20, 'the zip64 locator');
    if (loc.getUint32(0, true) === ZIP64_LOCATOR_SIG) {
      const rec = await readView(fh, file, u64(loc, 8, file), 56, 'the zip64 end record');
      if (rec.getUint32(0, true) !== ZIP64_EOCD_SIG) throw new FormatError(file, 'zip64 end-of-central-directory record is corrupt');
      return { size: u64(rec, 40, file), offset: u64(rec, 48, file) };
    }
  }
  const size = tail.getUint32(at + 12, true);
  const offset = tail.getUint32(at + 16, true);
  if (size === 0xffffffff || offset === 0xffffffff) throw new FormatError(file, 'zip64 end-of-central-directory locator is missing');
  return { offset, size };
}

/** Values that did not fit 32 bits are 0xffffffff in the entry and follow in the zip64 extra field. */
function applyZip64Extra(file: string, entry: ZipEntry, extra: DataView): void {
  let at = 0;
  while (at + 4 <= extra.byteLength) {
    const id = extra.getUint16(at, true);
    const len = extra.getUint16(at + 2, true);
    if (id === 0x0001) {
      let p = at + 4;
      const next = (): number => {
        if (p + 8 > at + 4 + len) throw new FormatError(file, `zip64 extra field of '${entry.name}' is too short`);
        const v = u64(extra, p, file);
        p += 8;
        return v;
      };
      if (entry.size === 0xffffffff) entry.size = next();
      if (entry.compressedSize === 0xffffffff) entry.compressedSize = next();
      if (entry.localHeaderOffset === 0xffffffff) entry.localHeaderOffset = next();
      return;
    }
    at += 4 + len;
  }
}

/** Entries of the archive from its central directory. */
export async function readZipEntries(fh: FileHandle, file: string, fileSize: number): Promise<ZipEntry[]> {
  const cd = await centralDirectory(fh, file, fileSize);
  if (cd.offset + cd.size > fileSize) throw new FormatError(file, 'file is truncated: the zip central directory runs past its end');
  const view = await readView(fh, file, cd.offset, cd.size, 'the zip central directory');
  const decoder = new TextDecoder();
  const entries: ZipEntry[] = [];
  let at = 0;
  while (at + 46 <= view.byteLength && view.getUint32(at, true) === CENTRAL_SIG) {
    const flags = view.getUint16(at + 8, true);
    const nameLen = view.getUint16(at + 28, true);
    const extraLen = view.getUint16(at + 30, true);
    const commentLen = view.getUint16(at + 32, true);
    if (at + 46 + nameLen + extraLen > view.byteLength) break;
    const name = decoder.decode(new Uint8Array(view.buffer, at + 46, nameLen));
    if (flags & 1) throw new FormatError(file, `zip entry '${name}' is encrypted`);
    const entry: ZipEntry = {
      name,
      method: view.getUint16(at + 10, true),
      compressedSize: view.getUint32(at + 20, true),
      size: view.getUint32(at + 24, true),
      localHeaderOffset: view.getUint32(at + 42, true),
    };
    applyZip64Extra(file, entry, new DataView(view.buffer, at + 46 + nameLen, extraLen));
    entries.push(entry);
    at += 46 + nameLen + extraLen + commentLen;
  }
  if (at !== view.byteLength) throw new FormatError(file, 'zip central directory is corrupt');
  return entries;
}

/** The member's bytes as stored (still compressed if method is 8), in a fresh aligned buffer. */
export async function readZipEntryData(fh: FileHandle, file: string, entry: ZipEntry): Promise<Uint8Array> {
  const local = await readView(fh, file, entry.localHeaderOffset, 30, `the local header of '${entry.name}'`);
  if (local.getUint32(0, true) !== LOCAL_SIG) throw new FormatError(file, `zip local header of '${entry.name}' is corrupt`);
  const dataAt = entry.localHeaderOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
  const bytes = new Uint8Array(entry.compressedSize);
  await readAt(fh, file, dataAt, bytes, `zip entry '${entry.name}'`);
  return bytes;
}
