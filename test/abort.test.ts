// Aborting long calls (issue 17, item 5): encode, decode, encodeFile and decodeFile take an
// AbortSignal. The native work polls a cancel word between blocks of rows, so an abort stops
// the computation itself (not just the wait for it); the call rejects with signal.reason, the
// SAE stays usable and its next results are exact, and a file job leaves no output and no
// temporary file. An abort that comes after the work finished changes nothing.
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSae, decodeFile, encodeFile, writeNpy, ValidationError, type Sae } from '../src/index.js';
import { syntheticActivations, syntheticSae } from '../src/synthetic.js';
import type { SaeWeights } from '../src/types.js';
import { expectReject } from './helpers/expectError.js';
import { tempDirs } from './helpers/formatsFixtures.js';
import { compareCodes, referenceDecode, referenceEncode } from './helpers/reference.js';
import { freshSeed, usableDevices } from './helpers/testData.js';

const seed = freshSeed('abort.test');
const dirs = tempDirs();
const open: Sae[] = [];
afterAll(async () => {
  for (const s of open) s.dispose();
  await dirs.cleanup();
});

async function make(w: SaeWeights, device: 'cpu' | 'cuda'): Promise<Sae> {
  const sae = await createSae(w, { device });
  open.push(sae);
  return sae;
}

const isAbortError = (e: unknown) => e instanceof DOMException && e.name === 'AbortError';

/** The call's promise, settled as a value: the codes, or the error. */
const settle = <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e }));

describe.each(usableDevices())('abort on %s', (device) => {
  // Big enough that the call runs for a good fraction of a second on any machine: an abort
  // issued right after the call starts always lands while it runs.
  const big = syntheticSae({ dIn: 512, dSae: 8192, architecture: 'topk', k: 32, seed: seed + 1 });
  const bigX = syntheticActivations(big, 6144, { seed: seed + 2 });

  it('an encode aborted while it runs rejects with AbortError, stops early, and the SAE stays exact', async () => {
    const sae = await make(big, device);
    // A full call first: it makes the kernel choice for this batch size (timed on samples) and
    // gives the time an aborted call is compared with.
    const t1 = performance.now();
    const full = await sae.encode(bigX);
    const fullMs = performance.now() - t1;
    const before = sae.screenStats.rows;
    const ac = new AbortController();
    const t0 = performance.now();
    const p = settle(sae.encode(bigX, { signal: ac.signal }));
    ac.abort();
    const r = await p;
    const abortedMs = performance.now() - t0;
    expect(r.ok).toBe(false);
    expect(isAbortError(!r.ok && r.e), String(!r.ok && r.e)).toBe(true);
    // The work stopped: where the screen counts rows, fewer than the batch were screened;
    // otherwise the aborted call took well under a full one (a ratio in the same run).
    const screened = sae.screenStats.rows - before;
    if (before > 0) expect(screened, 'rows screened by the aborted call').toBeLessThan(6144);
    else expect(abortedMs).toBeLessThan(0.5 * fullMs);
    // Later calls are exact (a few rows against float64).
    const rows = [0, 1, 2047, 6143];
    const pick = new Float32Array(rows.length * 512);
    rows.forEach((r, i) => pick.set(bigX.subarray(r * 512, (r + 1) * 512), i * 512));
    expect(compareCodes(big, referenceEncode(big, pick), await sae.encode(pick))).toEqual([]);
    expect(full.indptr[6144]).toBe(6144 * 32);
  });

  it('rejects with the reason given to abort(), and before any work when already aborted', async () => {
    const sae = await make(big, device);
    const reason = new Error('user pressed stop');
    const ac = new AbortController();
    const p = settle(sae.encode(bigX, { signal: ac.signal }));
    ac.abort(reason);
    const r = await p;
    expect(!r.ok && r.e).toBe(reason);
    const done = new AbortController();
    done.abort();
    const before = sae.screenStats.rows;
    await expect(sae.encode(bigX, { signal: done.signal })).rejects.toSatisfy(isAbortError);
    expect(sae.screenStats.rows).toBe(before);
    const small = syntheticSae({ dIn: 16, dSae: 40, architecture: 'topk', k: 3, seed: seed + 3 });
    const s2 = await make(small, device);
    await expect(s2.decode({ rows: 1, dSae: 40, indptr: Uint32Array.of(0, 0), indices: new Int32Array(0), values: new Float32Array(0) }, undefined, { signal: done.signal })).rejects.toSatisfy(isAbortError);
  });

  it('a decode aborted while it runs rejects; one that finished first is whole and exact', async () => {
    const w = syntheticSae({ dIn: 768, dSae: 4096, architecture: 'topk', k: 64, seed: seed + 4 });
    const sae = await make(w, device);
    const x = syntheticActivations(w, 20_000, { seed: seed + 5 });
    const codes = await sae.encode(x);
    const ac = new AbortController();
    const out = new Float32Array(20_000 * 768).fill(Number.NaN);
    const p = settle(sae.decode(codes, out, { signal: ac.signal }));
    ac.abort();
    const r = await p;
    expect(!r.ok && isAbortError(r.e), String(!r.ok && r.e)).toBe(true);
    // After the call settled, an abort is a no-op: the signal is already spent and a new call's
    // result is complete.
    const again = await sae.decode(codes, undefined, { signal: ac.signal }).catch((e: unknown) => e);
    expect(isAbortError(again)).toBe(true);
    const fresh = new AbortController();
    const y = await sae.decode(codes, undefined, { signal: fresh.signal });
    fresh.abort();
    const ref = referenceDecode(w, { ...codes, indptr: codes.indptr.subarray(0, 4) });
    for (let i = 0; i < 3 * 768; i++) expect(Math.abs(y[i]! - ref.x[i]!)).toBeLessThanOrEqual(ref.tol[i]!);
    expect(y.every(Number.isFinite)).toBe(true);
  });

  it('many concurrent calls, half of them aborted: the others are all exact', async () => {
    const w = syntheticSae({ dIn: 64, dSae: 1024, architecture: 'jumprelu', seed: seed + 6 });
    const sae = await make(w, device);
    const x = syntheticActivations(w, 3000, { seed: seed + 7 });
    const ref = referenceEncode(w, x.subarray(0, 64 * 8));
    const calls = Array.from({ length: 24 }, (_, i) => {
      const ac = new AbortController();
      const p = settle(sae.encode(x, { signal: ac.signal }));
      if (i % 2 === 1) setTimeout(() => ac.abort(), i);
      return p;
    });
    let aborted = 0;
    for (const r of await Promise.all(calls)) {
      if (!r.ok) {
        expect(isAbortError(r.e), String(r.e)).toBe(true);
        aborted++;
        continue;
      }
      const head = { ...r.v, rows: 8, indptr: r.v.indptr.subarray(0, 9) };
      expect(compareCodes(w, ref, head)).toEqual([]);
    }
    expect(aborted).toBeLessThanOrEqual(12);
  });
});

describe('abort of the file jobs', () => {
  it('encodeFile and decodeFile aborted mid-run leave no output and no temporary file', async () => {
    const dir = await dirs.make();
    const w = syntheticSae({ dIn: 128, dSae: 2048, architecture: 'topk', k: 16, seed: seed + 8 });
    const sae = await make(w, 'cpu');
    const acts = join(dir, 'acts.npy');
    await writeNpy(acts, syntheticActivations(w, 40_000, { seed: seed + 9 }), [40_000, 128]);
    const ac = new AbortController();
    const codes = join(dir, 'codes.safetensors');
    const r = await settle(encodeFile(sae, acts, codes, { chunkRows: 1000, signal: ac.signal, onProgress: (p) => p.rowsDone >= 3000 && ac.abort() }));
    expect(!r.ok && isAbortError(r.e), String(!r.ok && r.e)).toBe(true);
    expect(existsSync(codes)).toBe(false);
    expect((await readdir(dir)).sort()).toEqual(['acts.npy']);

    await encodeFile(sae, acts, codes, { chunkRows: 1000 });
    const out = join(dir, 'recon.npy');
    const ac2 = new AbortController();
    const r2 = await settle(decodeFile(sae, codes, out, { chunkRows: 1000, signal: ac2.signal, onProgress: (p) => p.rowsDone >= 2000 && ac2.abort() }));
    expect(!r2.ok && isAbortError(r2.e), String(!r2.ok && r2.e)).toBe(true);
    expect((await readdir(dir)).sort()).toEqual(['acts.npy', 'codes.safetensors']);
  });

  it('a signal that is not an AbortSignal is a ValidationError naming the option', async () => {
    const sae = await make(syntheticSae({ dIn: 8, dSae: 16, architecture: 'topk', k: 2, seed: seed + 10 }), 'cpu');
    await expectReject(() => sae.encode(new Float32Array(8), { signal: {} as AbortSignal }), ValidationError, 'options.signal', 'AbortSignal');
  });
});
