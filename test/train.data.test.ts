// The training data pipeline (src/train/data.ts): activation shards on disk or a live producer
// as one row space, window-shuffled batches whose only state is a row count. The properties
// checked are the ones training depends on: rows arrive exactly as stored (order, dtype
// widening, shard order, manifest), a shuffled epoch is a permutation, resuming from any row
// count replays the uninterrupted stream exactly, and reads stay bounded. Fresh data per run.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, ValidationError } from '../src/errors.js';
import { f16ToF32Array, f32ToF16Array, writeNpy, writeSafetensors } from '../src/formats/index.js';
import { Rng } from '../src/synthetic.js';
import {
  BatchStream,
  READ_CHUNK_BYTES,
  openRowSource,
  rowSourceFromIterable,
  rowsPerRead,
  type BatchStreamOptions,
  type RowSource,
} from '../src/train/data.js';
import { expectReject, expectThrow } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { freshSeed } from './helpers/testData.js';

const seed = freshSeed('train.data.test');
const dirs = tempDirs();
afterAll(() => dirs.cleanup());

let nextSeed = seed;
function randomRows(rows: number, dIn: number): Float32Array {
  return new Rng(++nextSeed).fillNormal(new Float32Array(rows * dIn));
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Row r of a [rows, dIn] matrix as a string key (random data: keys are unique). */
function rowKeys(x: Float32Array, dIn: number): string[] {
  const keys: string[] = [];
  for (let r = 0; r < x.length / dIn; r++) keys.push(Array.from(x.subarray(r * dIn, (r + 1) * dIn)).join(','));
  return keys;
}

const sorted = (a: readonly string[]) => [...a].sort();

/** All batches until the end (or `max` batches), each checked for shape. */
async function drain(s: BatchStream, dIn: number, batchSize: number, max = Infinity): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  while (out.length < max) {
    const b = await s.next();
    if (b === undefined) break;
    expect(b.length).toBe(batchSize * dIn);
    out.push(b);
  }
  return out;
}

/** An in-memory finite RowSource with seekable chunks of `chunkRows` rows. */
function memorySource(data: Float32Array, dIn: number, chunkRows = 3): RowSource {
  const rows = data.length / dIn;
  return {
    dIn,
    rows,
    async *chunks(from: number) {
      for (let r = from; r < rows; r += chunkRows) yield data.slice(r * dIn, Math.min(rows, r + chunkRows) * dIn);
    },
    close: async () => {},
  };
}

/** Wraps a source, recording each chunks() start row and each chunk's row count. */
function counting(inner: RowSource): RowSource & { froms: number[]; chunkRows: number[]; pulled: () => number } {
  const froms: number[] = [];
  const chunkRows: number[] = [];
  return {
    dIn: inner.dIn,
    rows: inner.rows,
    froms,
    chunkRows,
    pulled: () => chunkRows.reduce((a, b) => a + b, 0),
    async *chunks(from: number) {
      froms.push(from);
      for await (const c of inner.chunks(from)) {
        chunkRows.push(c.length / inner.dIn);
        yield c;
      }
    },
    close: () => inner.close(),
  };
}

describe('openRowSource', () => {
  const dIn = 5;
  // Natural order: shard_1, shard_2, shard_10, shard_11 (plain lexical order would put 10 first).
  async function shardDir(): Promise<{ dir: string; all: Float32Array; sizes: number[] }> {
    const dir = await dirs.make();
    const a = randomRows(7, dIn);
    const b = randomRows(1, dIn);
    const c = randomRows(13, dIn);
    const d = randomRows(9, dIn);
    await writeNpy(join(dir, 'shard_1.npy'), a, [7, dIn]);
    const bHalf = f32ToF16Array(b);
    await writeNpy(join(dir, 'shard_2.npy'), bHalf, [1, dIn], '<f2');
    await writeNpy(join(dir, 'shard_10.npy'), c, [13, dIn]);
    await writeSafetensors(join(dir, 'shard_11.safetensors'), { activations: { dtype: 'F32', shape: [9, dIn], data: d } });
    // Non-activation files and a sub-directory are ignored.
    await writeFile(join(dir, 'tokens.bin'), new Uint8Array(64));
    await writeFile(join(dir, 'meta.json'), JSON.stringify({ model: 'x' }));
    await mkdir(join(dir, 'sub.npy'));
    return { dir, all: concat([a, f16ToF32Array(bHalf), c, d]), sizes: [7, 1, 13, 9] };
  }

  it('concatenates a directory of shards in natural order; unshuffled batches equal the rows exactly', async () => {
    const { dir, all, sizes } = await shardDir();
    const src = await openRowSource(dir);
    try {
      expect(src.rows).toBe(30);
      expect(src.dIn).toBe(dIn);
      expect(src.files.map((f) => f.file)).toEqual(['shard_1.npy', 'shard_2.npy', 'shard_10.npy', 'shard_11.safetensors'].map((n) => join(dir, n)));
      expect(src.files.map((f) => f.rows)).toEqual(sizes);
      // chunks(from) from every start row: exactly the tail of the row space.
      for (let from = 0; from <= 30; from++) {
        const parts: Float32Array[] = [];
        for await (const c of src.chunks(from)) parts.push(c);
        expect(concat(parts)).toEqual(all.subarray(from * dIn));
      }
      for (const batchSize of [1, 4, 7, 30, 31]) {
        const batches = await drain(new BatchStream(src, { batchSize, shuffleWindow: 0, seed, loop: false }), dIn, batchSize);
        const n = Math.floor(30 / batchSize);
        expect(batches.length, `batchSize ${batchSize}`).toBe(n);
        expect(concat(batches)).toEqual(all.subarray(0, n * batchSize * dIn));
      }
      // shuffleWindow 1 is also "no shuffle".
      const one = await drain(new BatchStream(src, { batchSize: 6, shuffleWindow: 1, seed, loop: false }), dIn, 6);
      expect(concat(one)).toEqual(all);
    } finally {
      await src.close();
    }
    await src.close(); // idempotent
  });

  it('opens a single file and honours the tensor option', async () => {
    const dir = await dirs.make();
    const x = randomRows(11, dIn);
    const file = join(dir, 'two.safetensors');
    await writeSafetensors(file, {
      acts: { dtype: 'F32', shape: [11, dIn], data: x },
      other: { dtype: 'F32', shape: [2, dIn], data: randomRows(2, dIn) },
    });
    await expectReject(() => openRowSource(file), ValidationError, 'choose one');
    const src = await openRowSource(file, { tensor: 'acts' });
    expect(src.rows).toBe(11);
    const batches = await drain(new BatchStream(src, { batchSize: 11, shuffleWindow: 0, seed, loop: false }), dIn, 11);
    expect(batches).toEqual([x]);
    await src.close();
  });

  it('follows manifest.json: its files, its order, its tensor', async () => {
    const dir = await dirs.make();
    const a = randomRows(4, dIn);
    const b = randomRows(6, dIn);
    const tok = (n: number) => ({ dtype: 'I32' as const, shape: [n], data: new Int32Array(n) });
    await writeSafetensors(join(dir, 'a.safetensors'), { activations: { dtype: 'F32', shape: [4, dIn], data: a }, tokens: tok(4) });
    await writeSafetensors(join(dir, 'b.safetensors'), { activations: { dtype: 'F32', shape: [6, dIn], data: b }, tokens: tok(6) });
    await writeNpy(join(dir, 'c.npy'), randomRows(3, dIn), [3, dIn]); // not listed: not used
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ activations: ['b.safetensors', 'a.safetensors'], tensor: 'activations' }));
    const src = await openRowSource(dir);
    expect(src.files.map((f) => [f.file, f.tensor])).toEqual([
      [join(dir, 'b.safetensors'), 'activations'],
      [join(dir, 'a.safetensors'), 'activations'],
    ]);
    const batches = await drain(new BatchStream(src, { batchSize: 10, shuffleWindow: 0, seed, loop: false }), dIn, 10);
    expect(batches).toEqual([concat([b, a])]);
    await src.close();

    // Without the tensor name the two-tensor shards are ambiguous: the manifest's name mattered.
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ activations: ['b.safetensors'] }));
    await expectReject(() => openRowSource(dir), ValidationError, 'b.safetensors', 'choose one');
    await writeFile(join(dir, 'manifest.json'), '{"activations": ["b.safetensors",');
    await expectReject(() => openRowSource(dir), FormatError, 'manifest.json', 'invalid JSON');
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ activations: 'b.safetensors' }));
    await expectReject(() => openRowSource(dir), FormatError, 'manifest.json', '"activations"');
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ activations: ['missing.safetensors'] }));
    await expectReject(() => openRowSource(dir), FormatError, 'missing.safetensors', 'not found');
  });

  it('rejects mismatched widths, empty inputs and missing paths, naming the file', async () => {
    const dir = await dirs.make();
    await writeNpy(join(dir, 'x_1.npy'), randomRows(3, 4), [3, 4]);
    await writeNpy(join(dir, 'x_2.npy'), randomRows(2, 6), [2, 6]);
    await expectReject(() => openRowSource(dir), ValidationError, join(dir, 'x_2.npy'), 'd_in 6', 'd_in 4');

    const empty = await dirs.make();
    await expectReject(() => openRowSource(empty), ValidationError, `no activation rows in ${empty}`);
    await writeFile(join(empty, 'notes.json'), '{}');
    await writeNpy(join(empty, 'zero.npy'), new Float32Array(0), [0, 4]);
    await expectReject(() => openRowSource(empty), ValidationError, `no activation rows in ${empty}`);
    await expectReject(() => openRowSource(join(empty, 'zero.npy')), ValidationError, 'no activation rows in');

    await expectReject(() => openRowSource(join(empty, 'nope')), FormatError, join(empty, 'nope'), 'not found');
    await writeFile(join(empty, 'x.txt'), 'hi');
    await expectReject(() => openRowSource(join(empty, 'x.txt')), FormatError, 'unsupported activation file type');
  });

  it('reads large files in chunks of at most READ_CHUNK_BYTES, and a stream pulls no more than it needs', async () => {
    const d = 300;
    const rows = 8000; // ~9.6 MB: more than two read chunks
    const dir = await dirs.make();
    const x = randomRows(rows, d);
    await writeNpy(join(dir, 'big.npy'), x, [rows, d]);
    const src = await openRowSource(join(dir, 'big.npy'));
    const per = rowsPerRead(d);
    expect(per * d * 4).toBeLessThanOrEqual(READ_CHUNK_BYTES);
    const c = counting(src);
    const parts: Float32Array[] = [];
    for await (const chunk of c.chunks(17)) parts.push(chunk);
    const whole = concat(parts);
    // Byte comparison: a deep toEqual over 2.4M floats takes seconds.
    expect(whole.length).toBe((rows - 17) * d);
    expect(Buffer.from(whole.buffer).equals(Buffer.from(x.buffer, 17 * d * 4))).toBe(true);
    expect(Math.max(...c.chunkRows)).toBe(per);
    expect(c.chunkRows.length).toBeGreaterThan(2);

    // A stream resumed mid-file seeks to the window holding its position and reads on from there.
    const W = 1000;
    const c2 = counting(src);
    const s = new BatchStream(c2, { batchSize: 100, shuffleWindow: W, seed, position: 5432 });
    await s.next();
    expect(c2.froms).toEqual([5000]);
    expect(c2.chunkRows).toEqual([Math.min(per, rows - 5000)]); // one read covered the window
    expect(Math.max(...c2.chunkRows) * d * 4).toBeLessThanOrEqual(READ_CHUNK_BYTES);
    await s.close();
    await src.close();
  });
});

describe('BatchStream', () => {
  const dIn = 3;

  it('a shuffled epoch emits every row exactly once, and every window is a permutation of its rows', async () => {
    const W = 24;
    const rows = 5 * W; // a whole number of windows
    const x = randomRows(rows, dIn);
    const keys = rowKeys(x, dIn);
    for (const batchSize of [8, 7, 24]) {
      const src = memorySource(x, dIn, 5);
      const epoch = concat(await drain(new BatchStream(src, { batchSize, shuffleWindow: W, seed, loop: false }), dIn, batchSize));
      const n = Math.floor(rows / batchSize) * batchSize;
      const got = rowKeys(epoch, dIn);
      expect(got.length).toBe(n);
      if (n === rows) expect(sorted(got)).toEqual(sorted(keys));
      expect(new Set(got).size).toBe(n); // no row twice
      // Window by window (the last one may be cut by the dropped partial batch).
      for (let w = 0; w * W < n; w++) {
        const end = Math.min((w + 1) * W, n);
        const window = sorted(got.slice(w * W, end));
        if (end === (w + 1) * W) expect(window).toEqual(sorted(keys.slice(w * W, end)));
        else for (const k of window) expect(keys.slice(w * W, (w + 1) * W)).toContain(k);
      }
      expect(got).not.toEqual(keys.slice(0, n)); // it did shuffle
    }
  });

  it('loops over epochs: windows spanning the wrap hold rows g mod rows; rows not a multiple of W', async () => {
    const rows = 37;
    const W = 16;
    const batchSize = 5;
    const x = randomRows(rows, dIn);
    const keys = rowKeys(x, dIn);
    const s = new BatchStream(memorySource(x, dIn, 4), { batchSize, shuffleWindow: W, seed });
    const got = rowKeys(concat(await drain(s, dIn, batchSize, 40)), dIn);
    expect(s.position).toBe(200);
    for (let w = 0; (w + 1) * W <= got.length; w++) {
      const expected = Array.from({ length: W }, (_, i) => keys[(w * W + i) % rows]!);
      expect(sorted(got.slice(w * W, (w + 1) * W)), `window ${w}`).toEqual(sorted(expected));
    }
  });

  it('a source smaller than one batch wraps (loop) or yields nothing (no loop)', async () => {
    const x = randomRows(3, dIn);
    const keys = rowKeys(x, dIn);
    const plain = await drain(new BatchStream(memorySource(x, dIn), { batchSize: 8, shuffleWindow: 0, seed }), dIn, 8, 3);
    expect(rowKeys(concat(plain), dIn)).toEqual(Array.from({ length: 24 }, (_, i) => keys[i % 3]!));
    const shuffled = await drain(new BatchStream(memorySource(x, dIn), { batchSize: 8, shuffleWindow: 8, seed }), dIn, 8, 3);
    for (let w = 0; w < 3; w++) {
      expect(sorted(rowKeys(shuffled[w]!, dIn))).toEqual(sorted(Array.from({ length: 8 }, (_, i) => keys[(w * 8 + i) % 3]!)));
    }
    const s = new BatchStream(memorySource(x, dIn), { batchSize: 8, shuffleWindow: 8, seed, loop: false });
    expect(await s.next()).toBeUndefined();
    expect(await s.next()).toBeUndefined();
    expect(s.position).toBe(0);
  });

  it('resuming from any position replays the uninterrupted stream exactly', async () => {
    const rows = 41;
    const x = randomRows(rows, dIn);
    for (const [batchSize, W] of [
      [4, 12],
      [5, 5],
      [3, 0],
      [6, 17],
    ] as const) {
      const opts: BatchStreamOptions = { batchSize, shuffleWindow: W, seed };
      const full = new BatchStream(memorySource(x, dIn), opts);
      const emitted = concat(await drain(full, dIn, batchSize, 60)); // several epochs
      const Weff = W > 1 ? W : batchSize;
      // Start, mid-window, window boundaries, not a multiple of the batch, past one epoch.
      const positions = [0, 1, Math.floor(Weff / 2), Weff, 2 * Weff, 2 * Weff - 1, batchSize * 3, rows, rows + 2, 3 * rows + 1, 100];
      for (const p of positions) {
        const src = counting(memorySource(x, dIn));
        const resumed = new BatchStream(src, { ...opts, position: p });
        expect(resumed.position).toBe(p);
        const k = 8;
        const got = concat(await drain(resumed, dIn, batchSize, k));
        expect(got, `batchSize ${batchSize} W ${W} position ${p}`).toEqual(emitted.subarray(p * dIn, (p + k * batchSize) * dIn));
        expect(resumed.position).toBe(p + k * batchSize);
        // It sought straight to the window holding p.
        expect(src.froms[0]).toBe((Math.floor(p / Weff) * Weff) % rows);
      }
      // The checkpoint flow: save position after some batches, resume a new stream from it.
      const a = new BatchStream(memorySource(x, dIn), opts);
      await drain(a, dIn, batchSize, 7);
      const b = new BatchStream(memorySource(x, dIn), { ...opts, position: a.position });
      expect(await drain(b, dIn, batchSize, 9)).toEqual(await drain(a, dIn, batchSize, 9));
    }
  });

  it('resumes a no-loop stream near its end and ends at the same batch', async () => {
    const x = randomRows(50, dIn);
    const opts: BatchStreamOptions = { batchSize: 4, shuffleWindow: 16, seed, loop: false };
    const all = concat(await drain(new BatchStream(memorySource(x, dIn), opts), dIn, 4));
    expect(all.length).toBe(48 * dIn);
    for (const p of [40, 44, 47, 48, 50, 60]) {
      const rest = await drain(new BatchStream(memorySource(x, dIn), { ...opts, position: p }), dIn, 4);
      expect(concat(rest), `position ${p}`).toEqual(all.subarray(Math.min(p, 48) * dIn, (p + Math.floor((48 - Math.min(p, 48)) / 4) * 4) * dIn));
    }
  });

  it('each window and each epoch gets its own permutation, uniform over positions', async () => {
    // Rows hold their own index (dIn 1), so the emitted order IS the permutation.
    const W = 8;
    const windows = 400;
    const rows = W * windows;
    const x = Float32Array.from({ length: rows }, (_, i) => i);
    const s = new BatchStream(memorySource(x, 1, 50), { batchSize: W, shuffleWindow: W, seed });
    const perms = new Set<string>();
    const fixed = new Array<number>(W).fill(0);
    for (let w = 0; w < 2 * windows; w++) {
      const b = (await s.next())!;
      const rel = Array.from(b, (v) => v - (w % windows) * W);
      expect(sorted(rel.map(String))).toEqual(sorted(Array.from({ length: W }, (_, i) => String(i))));
      perms.add(rel.join(','));
      rel.forEach((r, i) => (fixed[i]! += r === i ? 1 : 0));
    }
    // 800 draws from 8! = 40320 permutations: nearly all distinct, epoch 2 included.
    expect(perms.size).toBeGreaterThan(700);
    // Each position keeps its row with probability 1/8 (mean 100 of 800; 7+ sd margins).
    for (const f of fixed) {
      expect(f).toBeGreaterThan(40);
      expect(f).toBeLessThan(170);
    }
  });

  it('same seed, same order; different seed, different order', async () => {
    const x = randomRows(64, dIn);
    const run = async (s: number) => concat(await drain(new BatchStream(memorySource(x, dIn), { batchSize: 8, shuffleWindow: 32, seed: s }), dIn, 8, 8));
    const a = await run(seed);
    expect(await run(seed)).toEqual(a);
    const b = await run(seed + 1);
    expect(b).not.toEqual(a);
    expect(sorted(rowKeys(b, dIn))).toEqual(sorted(rowKeys(a, dIn))); // same rows, other order
    expect(await run(-seed)).not.toEqual(a);
  });

  it('serializes concurrent next() calls and returns fresh arrays', async () => {
    const x = randomRows(40, dIn);
    const opts: BatchStreamOptions = { batchSize: 4, shuffleWindow: 8, seed };
    const serial = await drain(new BatchStream(memorySource(x, dIn), opts), dIn, 4, 10);
    const s = new BatchStream(memorySource(x, dIn), opts);
    const concurrent = await Promise.all(Array.from({ length: 10 }, () => s.next()));
    expect(concurrent).toEqual(serial);
    expect(new Set(concurrent.map((b) => b!.buffer)).size).toBe(10);
  });

  it('rejects bad options with messages that name them', () => {
    const src = memorySource(randomRows(10, dIn), dIn);
    const base: BatchStreamOptions = { batchSize: 4, shuffleWindow: 8, seed };
    expectThrow(() => new BatchStream(src, { ...base, batchSize: 0 }), ValidationError, 'batchSize', '0');
    expectThrow(() => new BatchStream(src, { ...base, batchSize: 2.5 }), ValidationError, 'batchSize', '2.5');
    expectThrow(() => new BatchStream(src, { ...base, shuffleWindow: 3 }), ValidationError, 'shuffleWindow (3 rows)', 'at least batchSize (4)');
    expectThrow(() => new BatchStream(src, { ...base, shuffleWindow: -1 }), ValidationError, 'shuffleWindow', '-1');
    expectThrow(() => new BatchStream(src, { ...base, position: -1 }), ValidationError, 'position', '-1');
    expectThrow(() => new BatchStream(src, { ...base, position: 0.5 }), ValidationError, 'position', '0.5');
    expectThrow(() => new BatchStream(src, { ...base, seed: Number.NaN }), ValidationError, 'seed', 'NaN');
    expectThrow(() => new BatchStream(src, { ...base, loop: 'yes' as unknown as boolean }), ValidationError, 'loop');
    expectThrow(() => new BatchStream({ ...src, rows: 0 }, base), ValidationError, 'row count');
    // 0 and 1 mean "no shuffle" whatever the batch size.
    new BatchStream(src, { ...base, shuffleWindow: 0 });
    new BatchStream(src, { ...base, shuffleWindow: 1 });
  });

  it('rejects a finite source that yields fewer or more rows than it declares', async () => {
    const x = randomRows(10, dIn);
    const short: RowSource = { ...memorySource(x, dIn), rows: 12 };
    await expectReject(() => drain(new BatchStream(short, { batchSize: 4, shuffleWindow: 0, seed }), dIn, 4), ValidationError, 'ended at row 10 of the 12');
    const long: RowSource = { ...memorySource(x, dIn), rows: 8 };
    await expectReject(() => drain(new BatchStream(long, { batchSize: 4, shuffleWindow: 0, seed }), dIn, 4), ValidationError, 'past its end');
  });
});

describe('rowSourceFromIterable', () => {
  const dIn = 4;
  const rows = 103;

  /** A live producer yielding x in chunks of awkward sizes (including empty ones); counts passes. */
  function producer(x: Float32Array, sizes = [1, 0, 17, 5, 2, 11, 0, 8]) {
    const stats = { passes: 0 };
    const make = async function* () {
      stats.passes++;
      let r = 0;
      for (let i = 0; r < rows; i++) {
        const n = Math.min(sizes[i % sizes.length]!, rows - r);
        await Promise.resolve();
        yield x.slice(r * dIn, (r + n) * dIn);
        r += n;
      }
    };
    return { make, stats };
  }

  it('reassembles chunks of odd sizes into batches; the stream ends with the iterable (partial batch dropped)', async () => {
    const x = randomRows(rows, dIn);
    const { make, stats } = producer(x);
    const src = rowSourceFromIterable(dIn, make);
    expect(src.rows).toBeUndefined();
    for (const batchSize of [1, 6, 103, 104]) {
      const batches = await drain(new BatchStream(src, { batchSize, shuffleWindow: 0, seed }), dIn, batchSize);
      const n = Math.floor(rows / batchSize);
      expect(batches.length).toBe(n);
      expect(concat(batches)).toEqual(x.subarray(0, n * batchSize * dIn));
    }
    expect(stats.passes).toBe(4); // loop does not restart a live source
    const shuffled = rowKeys(concat(await drain(new BatchStream(src, { batchSize: 10, shuffleWindow: 30, seed }), dIn, 10)), dIn);
    expect(shuffled.length).toBe(100);
    const keys = rowKeys(x, dIn);
    for (let w = 0; w < 3; w++) expect(sorted(shuffled.slice(w * 30, (w + 1) * 30))).toEqual(sorted(keys.slice(w * 30, (w + 1) * 30)));
    // The last window is short (13 rows): still a permutation of its rows, cut at 10.
    for (const k of shuffled.slice(90)) expect(keys.slice(90)).toContain(k);
  });

  it('resumes by skipping rows, and holds at most one window plus one chunk', async () => {
    const x = randomRows(rows, dIn);
    const opts: BatchStreamOptions = { batchSize: 6, shuffleWindow: 20, seed };
    const all = concat(await drain(new BatchStream(rowSourceFromIterable(dIn, producer(x).make), opts), dIn, 6));
    expect(all.length).toBe(102 * dIn);
    for (const p of [0, 7, 20, 33, 60, 96]) {
      const src = counting(rowSourceFromIterable(dIn, producer(x).make));
      const s = new BatchStream(src, { ...opts, position: p });
      const got: Float32Array[] = [];
      for (let b = await s.next(); b !== undefined; b = await s.next()) {
        got.push(b);
        // Bounded: it pulled no further than the end of the window holding the last row emitted
        // (rows before the resumed window were skipped by the source, not pulled).
        const maxChunk = 17;
        expect(src.pulled()).toBeLessThan(Math.ceil(s.position / 20) * 20 - Math.floor(p / 20) * 20 + maxChunk);
      }
      expect(src.froms).toEqual([Math.floor(p / 20) * 20]);
      // The resumed stream runs to the end of the 103 rows; where p is not a multiple of 6 that
      // is one batch further than the uninterrupted stream (which dropped row 102) went.
      expect(got.length).toBe(Math.floor((rows - p) / 6));
      const common = Math.min(got.length, Math.floor((102 - p) / 6));
      expect(concat(got.slice(0, common)), `position ${p}`).toEqual(all.subarray(p * dIn, (p + common * 6) * dIn));
    }
  });

  it('rejects chunks that are not whole rows, and bad arguments', async () => {
    const bad = rowSourceFromIterable(3, async function* () {
      yield new Float32Array(6);
      yield new Float32Array(7);
    });
    await expectReject(() => drain(new BatchStream(bad, { batchSize: 4, shuffleWindow: 0, seed }), 3, 4), ValidationError, '7 values', 'd_in 3');
    const wrongType = rowSourceFromIterable(3, async function* () {
      yield new Float64Array(6) as unknown as Float32Array;
    });
    await expectReject(() => drain(new BatchStream(wrongType, { batchSize: 1, shuffleWindow: 0, seed }), 3, 1), ValidationError, 'Float32Array', 'Float64Array(6)');
    expectThrow(() => rowSourceFromIterable(0, async function* () {}), ValidationError, 'dIn', '0');
    const empty = rowSourceFromIterable(3, async function* () {});
    expect(await new BatchStream(empty, { batchSize: 2, shuffleWindow: 4, seed }).next()).toBeUndefined();
  });
});
