import { describe, it, expect, afterAll } from 'vitest';
import { readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, ValidationError } from '../src/errors.js';
import {
  SafetensorsReader,
  SafetensorsStreamWriter,
  bf16ToF32Array,
  f16ToF32Array,
  f32ToBf16Array,
  f32ToF16Array,
  writeSafetensors,
  type ElementArray,
  type SafetensorsDtype,
} from '../src/formats/index.js';
import { leftovers, randomFloat32, rng, tempDirs } from './helpers/formatsFixtures.js';

const dirs = tempDirs();
afterAll(dirs.cleanup);

/** A safetensors file built by hand from a header object and raw data bytes. */
function handBuilt(header: unknown, data: Uint8Array, pad = true): Uint8Array {
  let json = JSON.stringify(header);
  if (pad) json = json.padEnd(Math.ceil(json.length / 8) * 8, ' ');
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

async function expectFormatError(p: Promise<unknown>, ...parts: string[]): Promise<FormatError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  for (const part of parts) expect((err as Error).message).toContain(part);
  return err as FormatError;
}

async function openBytes(bytes: Uint8Array, name = 'x.safetensors'): Promise<{ file: string; open: () => Promise<SafetensorsReader> }> {
  const file = join(await dirs.make(), name);
  await writeFile(file, bytes);
  return { file, open: () => SafetensorsReader.open(file) };
}

function randomData(dtype: SafetensorsDtype, n: number, seed: number): { data: ElementArray; asFloat: Float32Array } {
  const r = rng(seed);
  const f = randomFloat32(n, r, 100);
  switch (dtype) {
    case 'F32':
      return { data: f, asFloat: f };
    case 'F64': {
      const d = Float64Array.from(f, (v) => v + r() * 1e-9);
      return { data: d, asFloat: Float32Array.from(d) };
    }
    case 'F16': {
      const h = f32ToF16Array(f);
      return { data: h, asFloat: f16ToF32Array(h) };
    }
    case 'BF16': {
      const b = f32ToBf16Array(f);
      return { data: b, asFloat: bf16ToF32Array(b) };
    }
    case 'I32': {
      const i = Int32Array.from(f, (v) => Math.round(v * 1e6));
      return { data: i, asFloat: Float32Array.from(i) };
    }
    case 'I64': {
      const i = BigInt64Array.from(f, (v) => BigInt(Math.round(v * 1e6)) * 1000003n);
      return { data: i, asFloat: Float32Array.from(i, Number) };
    }
  }
}

const DTYPES: SafetensorsDtype[] = ['F32', 'F64', 'F16', 'BF16', 'I32', 'I64'];
const SHAPES = [[7, 13], [1], [0, 5], [], [3, 1, 5]];

describe('writeSafetensors + SafetensorsReader', () => {
  it('round-trips every dtype at awkward shapes, with metadata', async () => {
    const file = join(await dirs.make(), 'all.safetensors');
    const tensors: Record<string, { dtype: SafetensorsDtype; shape: number[]; data: ElementArray }> = {};
    const floats: Record<string, Float32Array> = {};
    let seed = 1;
    for (const dtype of DTYPES) {
      for (const shape of SHAPES) {
        const name = `t_${dtype}_${shape.join('x') || 'scalar'}`;
        const { data, asFloat } = randomData(dtype, shape.reduce((a, b) => a * b, 1), seed++);
        tensors[name] = { dtype, shape, data };
        floats[name] = asFloat;
      }
    }
    await writeSafetensors(file, tensors, { format: 'pt', note: 'ünïcode' });
    const reader = await SafetensorsReader.open(file);
    try {
      expect(reader.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
      expect([...reader.tensors.keys()].sort()).toEqual(Object.keys(tensors).sort());
      const dataStart = Math.min(...[...reader.tensors.values()].map((t) => t.byteOffset));
      expect(dataStart % 8).toBe(0); // header padded with spaces: the data area is 8-aligned
      for (const [name, t] of Object.entries(tensors)) {
        const info = reader.info(name);
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual(t.shape);
        const raw = await reader.readTensor(name);
        expect(raw.constructor).toBe(t.data.constructor);
        expect(raw).toEqual(t.data);
        expect(await reader.readFloat32(name)).toEqual(floats[name]);
      }
    } finally {
      await reader.close();
    }
    expect(await leftovers(join(file, '..'))).toEqual([]);
  });

  it('writes exactly the bytes of a hand-built file (header sorted by name, space padded)', async () => {
    const file = join(await dirs.make(), 'exact.safetensors');
    await writeSafetensors(file, { b: { dtype: 'F32', shape: [2], data: Float32Array.of(1.5, -2) }, a: { dtype: 'I32', shape: [1], data: Int32Array.of(7) } }, { format: 'pt' });
    const json =
      '{"__metadata__":{"format":"pt"},"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}';
    const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
    const expected = Buffer.concat([
      Buffer.from(new BigUint64Array([BigInt(padded.length)]).buffer),
      Buffer.from(padded, 'ascii'),
      Buffer.from(Int32Array.of(7).buffer),
      Buffer.from(Float32Array.of(1.5, -2).buffer),
    ]);
    expect(Buffer.compare(await readFile(file), expected)).toBe(0);
  });

  it('reads a hand-built file, including tensors of dtypes it cannot convert', async () => {
    const data = new Uint8Array([...new Uint8Array(Float32Array.of(3, 4).buffer), 9, 8]);
    const { open } = await openBytes(
      handBuilt({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, mask: { dtype: 'U8', shape: [2], data_offsets: [8, 10] } }, data, false),
    );
    const reader = await open();
    try {
      expect([...(await reader.readFloat32('w'))]).toEqual([3, 4]);
      expect(reader.info('mask')).toMatchObject({ dtype: 'U8', shape: [2], byteLength: 2 });
      await expectFormatError(reader.readTensor('mask'), "tensor 'mask'", 'dtype U8');
      await expectFormatError(reader.readFloat32('nope'), "no tensor 'nope'", 'tensors: w, mask');
    } finally {
      await reader.close();
    }
  });

  it('readRowsFloat32 reads exactly the requested rows', async () => {
    const file = join(await dirs.make(), 'rows.safetensors');
    const rows = 37;
    const cols = 11;
    const f = randomFloat32(rows * cols, rng(5));
    const bf = f32ToBf16Array(f);
    await writeSafetensors(file, { f: { dtype: 'F32', shape: [rows, cols], data: f }, b: { dtype: 'BF16', shape: [rows, cols], data: bf } });
    const reader = await SafetensorsReader.open(file);
    try {
      const r = rng(6);
      for (let trial = 0; trial < 20; trial++) {
        const start = Math.floor(r() * rows);
        const count = Math.floor(r() * (rows - start + 1));
        expect(await reader.readRowsFloat32('f', start, count)).toEqual(f.subarray(start * cols, (start + count) * cols));
        expect(await reader.readRowsFloat32('b', start, count)).toEqual(bf16ToF32Array(bf.subarray(start * cols, (start + count) * cols)));
      }
      await expect(reader.readRowsFloat32('f', 30, 8)).rejects.toBeInstanceOf(ValidationError);
      await expect(reader.readRowsFloat32('f', -1, 2)).rejects.toThrow(/rowStart -1/);
    } finally {
      await reader.close();
    }
  });

  it('widens a float16 tensor larger than one conversion chunk', async () => {
    const file = join(await dirs.make(), 'big.safetensors');
    const n = 4_500_000; // > 8 MiB of f16: several chunks
    const h = new Uint16Array(n);
    for (let i = 0; i < n; i++) h[i] = (i * 7919) & 0x7bff;
    await writeSafetensors(file, { h: { dtype: 'F16', shape: [n], data: h } });
    const reader = await SafetensorsReader.open(file);
    try {
      // Compare bytes: toEqual over millions of elements takes tens of seconds.
      const got = await reader.readFloat32('h');
      expect(Buffer.compare(Buffer.from(got.buffer), Buffer.from(f16ToF32Array(h).buffer))).toBe(0);
    } finally {
      await reader.close();
    }
  });
});

describe('SafetensorsReader rejects broken files', () => {
  const good = () => handBuilt({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } }, new Uint8Array(16));

  it('file shorter than 8 bytes', async () => {
    const { file, open } = await openBytes(new Uint8Array(5));
    await expectFormatError(open(), file, 'too short');
  });

  it('absurd header length', async () => {
    const bytes = good();
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
    const { file, open } = await openBytes(bytes);
    await expectFormatError(open(), file, 'over the 100000000-byte limit');
  });

  it('header length past the end of the file', async () => {
    const bytes = good();
    new DataView(bytes.buffer).setBigUint64(0, 1000n, true);
    const { file, open } = await openBytes(bytes);
    await expectFormatError(open(), file, 'truncated');
  });

  it('corrupt header JSON', async () => {
    const bytes = good();
    bytes[8 + 3] = '#'.charCodeAt(0);
    const { file, open } = await openBytes(bytes);
    await expectFormatError(open(), file, 'not valid JSON');
  });

  it('header that is not UTF-8', async () => {
    const bytes = good();
    bytes[8 + 2] = 0xff;
    const { file, open } = await openBytes(bytes);
    await expectFormatError(open(), file, 'not valid UTF-8');
  });

  it('unknown dtype', async () => {
    const { file, open } = await openBytes(handBuilt({ w: { dtype: 'F12', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)));
    await expectFormatError(open(), file, "tensor 'w'", "unknown dtype 'F12'");
  });

  it('shape that does not match the byte range', async () => {
    const { file, open } = await openBytes(handBuilt({ w: { dtype: 'F32', shape: [3, 2], data_offsets: [0, 16] } }, new Uint8Array(16)));
    const err = await expectFormatError(open(), file);
    expect(err.message).toBe(`${file}: tensor 'w': shape [3, 2] of F32 needs 24 bytes but data_offsets [0, 16] hold 16`);
  });

  it('overlapping, gapped and short-covering offsets', async () => {
    const overlap = await openBytes(
      handBuilt({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
    );
    await expectFormatError(overlap.open(), overlap.file, "tensor 'b'", "overlap tensor 'a'");
    const gap = await openBytes(
      handBuilt({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12)),
    );
    await expectFormatError(gap.open(), gap.file, "before tensor 'b'");
    const trailing = await openBytes(handBuilt({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(12)));
    await expectFormatError(trailing.open(), trailing.file, '8 unexpected bytes after');
    const bad = await openBytes(handBuilt({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, new Uint8Array(4)));
    await expectFormatError(bad.open(), bad.file, "tensor 'a'", 'data_offsets [4,0]');
  });

  it('truncated data', async () => {
    const { file } = await openBytes(good());
    await truncate(file, (await stat(file)).size - 3);
    await expectFormatError(SafetensorsReader.open(file), file, 'truncated', "tensor 'w'");
  });

  it('non-string metadata and a non-object header', async () => {
    const meta = await openBytes(handBuilt({ __metadata__: { n: 3 } }, new Uint8Array(0)));
    await expectFormatError(meta.open(), meta.file, "__metadata__ value for 'n'");
    const arr = await openBytes(handBuilt([1, 2], new Uint8Array(0)));
    await expectFormatError(arr.open(), arr.file, 'not a JSON object');
  });

  it('missing file', async () => {
    const file = join(await dirs.make(), 'absent.safetensors');
    await expectFormatError(SafetensorsReader.open(file), file, 'file not found');
  });
});

describe('atomic writes', () => {
  it('leaves no file when the directory does not exist', async () => {
    const dir = await dirs.make();
    await expect(writeSafetensors(join(dir, 'no', 'such', 'x.safetensors'), { a: { dtype: 'F32', shape: [1], data: Float32Array.of(1) } })).rejects.toThrow(/ENOENT/);
    expect(await readdir(dir)).toEqual([]);
  });

  it('rejects data that does not match its shape or dtype, writing nothing', async () => {
    const dir = await dirs.make();
    const file = join(dir, 'x.safetensors');
    await expect(writeSafetensors(file, { a: { dtype: 'F32', shape: [2, 3], data: new Float32Array(5) } })).rejects.toThrow(
      "Expected 6 elements for data of tensor 'a' but received Float32Array(5)",
    );
    await expect(writeSafetensors(file, { a: { dtype: 'BF16', shape: [2], data: new Float32Array(2) } })).rejects.toThrow(
      "Expected Uint16Array for data of BF16 tensor 'a' but received Float32Array(2)",
    );
    await expect(writeSafetensors(file, { a: { dtype: 'F32', shape: [-1], data: new Float32Array(0) } })).rejects.toBeInstanceOf(ValidationError);
    expect(await readdir(dir)).toEqual([]);
  });

  it('replaces an existing file only when complete', async () => {
    const file = join(await dirs.make(), 'x.safetensors');
    await writeSafetensors(file, { a: { dtype: 'F32', shape: [1], data: Float32Array.of(1) } });
    const before = await readFile(file);
    await expect(writeSafetensors(file, { a: { dtype: 'F32', shape: [1], data: new Float32Array(3) } })).rejects.toBeInstanceOf(ValidationError);
    expect(Buffer.compare(await readFile(file), before)).toBe(0);
  });
});

describe('SafetensorsStreamWriter', () => {
  it('writes appended and positioned pieces that read back whole', async () => {
    const dir = await dirs.make();
    const file = join(dir, 'stream.safetensors');
    const a = randomFloat32(10 * 6, rng(9));
    const b = f32ToF16Array(randomFloat32(7, rng(10)));
    const w = await SafetensorsStreamWriter.open(file, [
      { name: 'acts', dtype: 'F32', shape: [10, 6] },
      { name: 'half', dtype: 'F16', shape: [7] },
    ], { rows: '10' });
    expect(await readdir(dir)).toHaveLength(1); // only the temporary file so far
    await Promise.all([w.append('acts', a.subarray(0, 18)), w.append('acts', a.subarray(18, 42)), w.append('acts', a.subarray(42))]);
    await w.writeAt('half', 4, b.subarray(4));
    await w.writeAt('half', 0, b.subarray(0, 4));
    await w.finish();
    expect(await leftovers(dir)).toEqual([]);
    const reader = await SafetensorsReader.open(file);
    try {
      expect(reader.metadata).toEqual({ rows: '10' });
      expect(await reader.readFloat32('acts')).toEqual(a);
      expect(await reader.readTensor('half')).toEqual(b);
    } finally {
      await reader.close();
    }
  });

  it('refuses to finish an incomplete file; abort removes it', async () => {
    const dir = await dirs.make();
    const file = join(dir, 'partial.safetensors');
    const w = await SafetensorsStreamWriter.open(file, [{ name: 'x', dtype: 'F32', shape: [4] }]);
    await w.writeAt('x', 0, new Float32Array(2));
    await w.writeAt('x', 1, new Float32Array(2)); // overlapping pieces count once
    await expect(w.finish()).rejects.toThrow("not fully written: 'x' (3 of 4 elements)");
    await expect(w.append('x', new Float64Array(1))).rejects.toThrow('Expected Float32Array');
    await expect(w.writeAt('x', 3, new Float32Array(2))).rejects.toThrow('2 elements at offset 3');
    await expect(w.append('y', new Float32Array(1))).rejects.toBeInstanceOf(ValidationError);
    await w.abort();
    await w.abort();
    expect(await readdir(dir)).toEqual([]);
    await expect(w.append('x', new Float32Array(1))).rejects.toThrow('already aborted');
  });
});
