// .npz archives (a zip of .npy members), the format of Gemma Scope's params.npz. np.savez
// stores members uncompressed and np.savez_compressed deflates them; both are read here,
// stored members straight from their offset in the file.

import { inflateSync, zipSync } from 'fflate';
import { FormatError, ValidationError, describe } from '../errors.js';
import { bytesOf, toFloat32 } from './elements.js';
import { openForRead, writeAt, writeFileAtomic } from './fileIo.js';
import { encodeNpy, parseNpy, type NpyDtype } from './npy.js';
import { readZipEntries, readZipEntryData, type ZipEntry } from './zip.js';

export interface NpzArray {
  shape: number[];
  data: Float32Array;
}

/** An array read from an .npz: float32 data plus the dtype it was stored in. */
export interface NpzArrayRead extends NpzArray {
  dtype: NpyDtype;
}

/** fflate writes no zip64, so one archive must stay under 4 GiB. */
const MAX_NPZ_BYTES = 0xffffffff - (1 << 20);

function memberBytes(file: string, raw: Uint8Array, entry: ZipEntry): Uint8Array {
  if (entry.method === 0) return raw;
  if (entry.method !== 8) {
    throw new FormatError(file, `zip entry '${entry.name}' uses compression method ${entry.method} (only stored and deflate are supported)`);
  }
  let out: Uint8Array;
  try {
    out = inflateSync(raw, { out: new Uint8Array(entry.size) });
  } catch (err) {
    throw new FormatError(file, `zip entry '${entry.name}' does not inflate: ${(err as Error).message}`);
  }
  if (out.length !== entry.size) {
    throw new FormatError(file, `zip entry '${entry.name}' inflates to ${out.length} bytes, the directory says ${entry.size}`);
  }
  return out;
}

/**
 * Every .npy member of an .npz, keyed by name without ".npy", as float32 (float16 widened,
 * float64 and integers rounded). Members that are not .npy files are skipped.
 */
export async function readNpz(path: string): Promise<Record<string, NpzArrayRead>> {
  const fh = await openForRead(path);
  try {
    const entries = await readZipEntries(fh, path, (await fh.stat()).size);
    const arrays: [string, NpzArrayRead][] = [];
    for (const entry of entries.filter((e) => e.name.endsWith('.npy'))) {
      const raw = await readZipEntryData(fh, path, entry);
      const npy = parseNpy(memberBytes(path, raw, entry), `${path} (member ${entry.name})`);
      let data: Float32Array;
      if (npy.data instanceof Float32Array) {
        data = npy.data;
      } else {
        data = new Float32Array(npy.data.length);
        toFloat32(npy.kind, bytesOf(npy.data), data);
      }
      arrays.push([entry.name.slice(0, -'.npy'.length), { shape: npy.shape, dtype: npy.dtype, data }]);
    }
    return Object.fromEntries(arrays); // own properties even for odd names like __proto__
  } finally {
    await fh.close();
  }
}

/** Writes float32 arrays as an uncompressed .npz (what np.savez writes), atomically. */
export async function writeNpz(path: string, arrays: Record<string, NpzArray>): Promise<void> {
  const members: Record<string, Uint8Array> = {};
  let total = 0;
  for (const [name, { shape, data }] of Object.entries(arrays)) {
    if (name === '') throw new ValidationError(`Expected non-empty array names for ${path} but received ${describe(name)}`);
    const [header, body] = encodeNpy(data, shape, '<f4');
    const member = new Uint8Array(header!.length + body!.length);
    member.set(header!, 0);
    member.set(body!, header!.length);
    members[`${name}.npy`] = member;
    total += member.length;
  }
  if (total > MAX_NPZ_BYTES) throw new ValidationError(`Expected under 4 GiB of arrays for ${path} but received ${total} bytes`);
  const zip = zipSync(members, { level: 0 });
  await writeFileAtomic(path, (fh) => writeAt(fh, zip, 0));
}
