import { describe, it, expect, afterAll } from 'vitest';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { FormatError, ValidationError } from '../src/errors.js';
import { NpyReader, encodeNpy, f16ToF32Array, f32ToF16Array, parseNpy, readNpz, writeNpy, writeNpz } from '../src/formats/index.js';
import { bytesOf, toFloat32 } from '../src/formats/elements.js';
import { readSaeDir } from '../src/formats/saeDir.js';
import {
  NUMPY_ARRAYS,
  NUMPY_F16_BITS,
  NUMPY_F16_NPY_B64,
  NUMPY_SAVEZ_B64,
  NUMPY_SAVEZ_COMPRESSED_B64,
  NUMPY_SAVEZ_ZIP64_B64,
  fromBase64,
  leftovers,
  randomFloat32,
  rng,
  tempDirs,
} from './helpers/formatsFixtures.js';

const dirs = tempDirs();
afterAll(dirs.cleanup);

/** A .npy built by hand: any header text, any version, any data. */
function npyBytes(dict: string, data: Uint8Array, major = 1): Uint8Array {
  const prelude = major === 1 ? 10 : 12;
  const total = Math.ceil((prelude + dict.length + 1) / 64) * 64;
  const out = new Uint8Array(total + data.length).fill(0x20);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0], 0);
  const view = new DataView(out.buffer);
  if (major === 1) view.setUint16(8, total - prelude, true);
  else view.setUint32(8, total - prelude, true);
  out.set(new TextEncoder().encode(dict), prelude);
  out[total - 1] = 0x0a;
  out.set(data, total);
  return out;
}

async function fileWith(bytes: Uint8Array, name = 'a.npy'): Promise<string> {
  const file = join(await dirs.make(), name);
  await writeFile(file, bytes);
  return file;
}

async function expectFormatError(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  for (const part of parts) expect((err as Error).message).toContain(part);
}

describe('npy', () => {
  it('round-trips float32 and float16 at awkward shapes', async () => {
    const dir = await dirs.make();
    for (const shape of [[5, 7], [3], [2, 3, 4], [], [0, 4]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const f = randomFloat32(n, rng(n + 1), 10);
      const file = join(dir, `f4_${shape.join('x')}.npy`);
      await writeNpy(file, f, shape);
      const r = await NpyReader.open(file);
      expect([r.dtype, r.shape, r.dataOffset % 64]).toEqual(['<f4', shape, 0]);
      expect(await r.readAllFloat32()).toEqual(f);
      await r.close();

      const h = f32ToF16Array(f);
      const file16 = join(dir, `f2_${shape.join('x')}.npy`);
      await writeNpy(file16, h, shape, '<f2');
      const r16 = await NpyReader.open(file16);
      expect(r16.dtype).toBe('<f2');
      expect(await r16.readAllFloat32()).toEqual(f16ToF32Array(h));
      await r16.close();
    }
    expect(await leftovers(dir)).toEqual([]);
  });

  it('writes the same header bytes as numpy and reads numpy output', async () => {
    const numpy = fromBase64(NUMPY_F16_NPY_B64);
    const [header] = encodeNpy(new Uint16Array(6), [2, 3], '<f2');
    expect(Buffer.compare(Buffer.from(header!), Buffer.from(numpy.subarray(0, header!.length)))).toBe(0);
    const parsed = parseNpy(numpy, 'numpy.npy');
    expect(parsed.shape).toEqual([2, 3]);
    expect([...parsed.data]).toEqual(NUMPY_F16_BITS);
    const r = await NpyReader.open(await fileWith(numpy));
    expect([...(await r.readAllFloat32())]).toEqual([...f16ToF32Array(Uint16Array.from(NUMPY_F16_BITS))]);
    await r.close();
  });

  it('readRowsFloat32 streams a random slice', async () => {
    const rows = 41;
    const cols = 9;
    const f = randomFloat32(rows * cols, rng(3));
    const file = join(await dirs.make(), 'acts.npy');
    await writeNpy(file, f, [rows, cols]);
    const r = await NpyReader.open(file);
    try {
      expect([r.rows, r.rowSize]).toEqual([rows, cols]);
      const g = rng(4);
      for (let t = 0; t < 20; t++) {
        const start = Math.floor(g() * rows);
        const count = Math.floor(g() * (rows - start + 1));
        expect(await r.readRowsFloat32(start, count)).toEqual(f.subarray(start * cols, (start + count) * cols));
      }
      await expect(r.readRowsFloat32(40, 2)).rejects.toBeInstanceOf(ValidationError);
    } finally {
      await r.close();
    }
  });

  it('reads versions 2.0 and 3.0 and the integer and float64 dtypes', async () => {
    const cases: [string, ArrayBufferView, number[]][] = [
      ['<f8', Float64Array.of(1.25, -2, 1e-300), [1.25, -2, 0]],
      ['<i4', Int32Array.of(-7, 0, 123456), [-7, 0, 123456]],
      ['<i8', BigInt64Array.of(-7n, 0n, 2n ** 40n), [-7, 0, 2 ** 40]],
    ];
    for (const [major, [dtype, data, want]] of cases.map((c, i) => [i + 1, c] as const)) {
      const dict = `{'descr': '${dtype}', 'fortran_order': False, 'shape': (3,), }`;
      const bytes = npyBytes(dict, new Uint8Array(data.buffer), major);
      const r = await NpyReader.open(await fileWith(bytes));
      expect(r.dtype).toBe(dtype);
      expect([...(await r.readAllFloat32())]).toEqual(want);
      await r.close();
    }
  });

  it('rejects what it cannot read, naming the file and the dtype', async () => {
    const data = new Uint8Array(24);
    const bad: [string, Uint8Array, string[]][] = [
      ['bigendian-object.npy', npyBytes("{'descr': '>c8', 'fortran_order': False, 'shape': (2,), }", data), ["dtype '>c8' is not supported", 'either byte order']],
      ['object.npy', npyBytes("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", data), ["dtype '|O' is not supported"]],
      ['record.npy', npyBytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data), ['structured']],
      ['shape.npy', npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", data), ['malformed shape']],
      ['truncated.npy', npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", data), ['truncated', 'needs 160 bytes']],
      ['magic.npy', new TextEncoder().encode('PK not numpy at all'), ['not a .npy file']],
      ['version.npy', npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data, 9), ['version 9.0']],
      ['short.npy', npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data).subarray(0, 40), ['truncated inside the .npy header']],
    ];
    for (const [name, bytes, parts] of bad) {
      const file = await fileWith(bytes, name);
      await expectFormatError(NpyReader.open(file), file, ...parts);
      expect(() => parseNpy(bytes, name)).toThrow(FormatError);
    }
  });

  it('validates writeNpy arguments and writes nothing on failure', async () => {
    const dir = await dirs.make();
    await expect(writeNpy(join(dir, 'a.npy'), new Float32Array(5), [2, 3])).rejects.toBeInstanceOf(ValidationError);
    await expect(writeNpy(join(dir, 'a.npy'), new Float32Array(6), [2, 3], '<f2')).rejects.toThrow('Expected Uint16Array for <f2 data');
    await expect(writeNpy(join(dir, 'missing', 'a.npy'), new Float32Array(6), [2, 3])).rejects.toThrow(/ENOENT/);
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('npz', () => {
  const expectNumpyArrays = (got: Record<string, { shape: number[]; data: Float32Array }>) => {
    expect(Object.keys(got).sort()).toEqual(Object.keys(NUMPY_ARRAYS).sort());
    for (const [name, { shape, data }] of Object.entries(NUMPY_ARRAYS)) {
      expect(got[name]!.shape).toEqual(shape);
      expect([...got[name]!.data]).toEqual(data.map(Math.fround));
    }
  };

  it('reads np.savez, np.savez_compressed and zip64 archives written by numpy', async () => {
    for (const b64 of [NUMPY_SAVEZ_B64, NUMPY_SAVEZ_COMPRESSED_B64, NUMPY_SAVEZ_ZIP64_B64]) {
      expectNumpyArrays(await readNpz(await fileWith(fromBase64(b64), 'params.npz')));
    }
  });

  it('round-trips writeNpz, and reads deflated members and float16 arrays', async () => {
    const dir = await dirs.make();
    const arrays = { a: { shape: [3, 5], data: randomFloat32(15, rng(1)) }, b: { shape: [], data: Float32Array.of(2) } };
    await writeNpz(join(dir, 'x.npz'), arrays);
    expect(await leftovers(dir)).toEqual([]);
    const back = await readNpz(join(dir, 'x.npz'));
    expect(back['a']).toEqual({ ...arrays.a, dtype: '<f4' });
    expect(back['b']).toEqual({ ...arrays.b, dtype: '<f4' });

    const h = f32ToF16Array(randomFloat32(8, rng(2)));
    const [header, body] = encodeNpy(h, [2, 4], '<f2');
    const zip = zipSync({ 'h.npy': new Uint8Array([...header!, ...body!]), 'notes.txt': new Uint8Array(3) }, { level: 6 });
    const got = await readNpz(await fileWith(zip, 'deflated.npz'));
    expect(Object.keys(got)).toEqual(['h']);
    expect(got['h']).toEqual({ shape: [2, 4], dtype: '<f2', data: f16ToF32Array(h) });
  });

  it('rejects archives that are not zips, truncated ones and bad members', async () => {
    const notZip = await fileWith(new TextEncoder().encode('hello'), 'x.npz');
    await expectFormatError(readNpz(notZip), notZip, 'not a zip archive');
    const stored = fromBase64(NUMPY_SAVEZ_B64);
    const cut = await fileWith(stored.subarray(0, stored.length - 10), 'cut.npz');
    await expectFormatError(readNpz(cut), cut, 'not a zip archive');
    const complex = zipSync({ 'w.npy': npyBytes("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(8)) }, { level: 0 });
    const c8 = await fileWith(complex, 'c8.npz');
    await expectFormatError(readNpz(c8), c8, 'member w.npy', "dtype '<c8' is not supported");
    const missing = join(await dirs.make(), 'absent.npz');
    await expectFormatError(readNpz(missing), missing, 'file not found');
  });
});

// The layouts numpy writes besides little-endian C order (issue 17): files made by numpy itself
// (test/fixtures/numpy, values from numpy in expected.json), and the same layouts written here
// byte for byte from the .npy spec on fresh random data at awkward shapes.
describe('numpy layouts: Fortran order, big-endian, savez_compressed, 0-d and [1, n] vectors', () => {
  const FIX = join(import.meta.dirname, 'fixtures', 'numpy');

  it('every file numpy wrote loads to numpy\'s own C-order values', async () => {
    const expected = JSON.parse(await readFile(join(FIX, 'expected.json'), 'utf8')) as { files: Record<string, { shape: number[]; values: number[] }> };
    let checked = 0;
    for (const [name, want] of Object.entries(expected.files)) {
      if (name.includes('.npz/')) continue;
      const r = await NpyReader.open(join(FIX, name));
      try {
        expect(r.shape, name).toEqual(want.shape);
        const got = await r.readAllFloat32();
        expect(Array.from(got), name).toEqual(want.values.map(Math.fround));
        // Row blocks of a Fortran / big-endian file stream like any other: rows 1..3.
        if (want.shape.length >= 2 && want.shape[0]! >= 4) {
          const w = want.shape.slice(1).reduce((a, b) => a * b, 1);
          expect(Array.from(await r.readRowsFloat32(1, 3)), `${name} rows 1-3`).toEqual(want.values.slice(w, 4 * w).map(Math.fround));
        }
      } finally {
        await r.close();
      }
      const mem = parseNpy(new Uint8Array(await readFile(join(FIX, name))), name);
      const flat = new Float32Array(mem.data.length);
      toFloat32(mem.kind, bytesOf(mem.data), flat);
      expect(Array.from(flat), `${name} in memory`).toEqual(want.values.map(Math.fround));
      checked++;
    }
    expect(checked).toBe(7);
    for (const npz of ['params_transposed.npz', 'params_transposed_compressed.npz']) {
      const got = await readNpz(join(FIX, npz));
      for (const k of ['W_enc', 'W_dec', 'b_enc', 'b_dec', 'threshold']) {
        const want = expected.files[`${npz}/${k}`]!;
        expect(got[k]!.shape, `${npz} ${k}`).toEqual(want.shape);
        expect(Array.from(got[k]!.data), `${npz} ${k}`).toEqual(want.values.map(Math.fround));
      }
    }
  });

  it('a Gemma Scope params.npz with W_enc saved transposed, a 0-d threshold and a [1, d_sae] b_enc loads as numpy reads it', async () => {
    const expected = JSON.parse(await readFile(join(FIX, 'expected.json'), 'utf8')) as { files: Record<string, { shape: number[]; values: number[] }> };
    for (const npz of ['params_transposed.npz', 'params_transposed_compressed.npz']) {
      const dir = await dirs.make();
      await writeFile(join(dir, 'params.npz'), await readFile(join(FIX, npz)));
      const w = await readSaeDir(dir);
      expect(w.config.dIn).toBe(6);
      expect(w.config.dSae).toBe(10);
      expect(Array.from(w.W_enc)).toEqual(expected.files[`${npz}/W_enc`]!.values.map(Math.fround));
      expect(Array.from(w.b_enc)).toEqual(expected.files[`${npz}/b_enc`]!.values.map(Math.fround));
      expect(Array.from(w.b_dec)).toEqual(expected.files[`${npz}/b_dec`]!.values.map(Math.fround));
      expect(Array.from(w.threshold!)).toEqual(new Array(10).fill(0.125));
    }
  });

  it('Fortran order and big-endian written from the spec, fresh random data, N-d and awkward shapes', async () => {
    const r = rng(Date.now() % 100000);
    for (const shape of [[1, 1], [7, 3], [3, 7], [1, 5], [5, 1], [4, 3, 2], [2, 1, 3, 2]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const c = Float64Array.from({ length: n }, () => r() * 4 - 2); // C-order values
      // Fortran order: element (i0, i1, ...) at i0 + s0 * (i1 + s1 * (...)).
      const f = new Float64Array(n);
      const idx = new Array<number>(shape.length).fill(0);
      for (let ci = 0; ci < n; ci++) {
        let fi = 0;
        for (let a = shape.length - 1; a >= 0; a--) fi = fi * shape[a]! + idx[a]!;
        f[fi] = c[ci]!;
        for (let a = shape.length - 1; a >= 0; a--) {
          if (++idx[a]! < shape[a]!) break;
          idx[a] = 0;
        }
      }
      for (const [descr, make] of [
        ['<f4', (v: Float64Array) => new Uint8Array(Float32Array.from(v).buffer)],
        ['>f4', (v: Float64Array) => { const b = new Uint8Array(v.length * 4); const dv = new DataView(b.buffer); v.forEach((x, i) => dv.setFloat32(4 * i, x, false)); return b; }],
        ['>f8', (v: Float64Array) => { const b = new Uint8Array(v.length * 8); const dv = new DataView(b.buffer); v.forEach((x, i) => dv.setFloat64(8 * i, x, false)); return b; }],
      ] as const) {
        for (const fortran of [false, true]) {
          const dict = `{'descr': '${descr}', 'fortran_order': ${fortran ? 'True' : 'False'}, 'shape': (${shape.join(', ')}), }`;
          const bytes = npyBytes(dict, make(fortran ? f : c));
          const what = `${descr} ${fortran ? 'F' : 'C'} [${shape.join(', ')}]`;
          const file = await fileWith(bytes);
          const rd = await NpyReader.open(file);
          try {
            expect(Array.from(await rd.readAllFloat32()), what).toEqual(Array.from(c, Math.fround));
            if (shape[0]! > 2) {
              const w = n / shape[0]!;
              expect(Array.from(await rd.readRowsFloat32(1, shape[0]! - 2)), `${what} rows`).toEqual(Array.from(c.subarray(w, n - w), Math.fround));
            }
          } finally {
            await rd.close();
          }
          const mem = parseNpy(bytes, what);
          const flat = new Float32Array(n);
          toFloat32(mem.kind, bytesOf(mem.data), flat);
          expect(Array.from(flat), `${what} in memory`).toEqual(Array.from(c, Math.fround));
        }
      }
    }
  });
});
