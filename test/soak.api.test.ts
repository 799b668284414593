// A soak of the embedded API (issue 17, item 5): one process runs thousands of encode/decode
// calls on several SAEs at once, with bad arguments mixed in, SAEs disposed while their calls
// are in flight, and worker threads that load the addon and are terminated mid-call. Every
// result is checked against a float64 reference; RSS and open file descriptors must stay flat.
// SAEKIT_SOAK_CALLS sets the number of calls (default 10,000).
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { createSae, type Sae } from '../src/sae.js';
import type { SparseCodes } from '../src/codes.js';
import type { SaeWeights } from '../src/types.js';
import { randomFloat32, randomWeights, rng } from './helpers/formatsFixtures.js';
import { compareCodes, referenceDecode, referenceEncode, type ReferenceRow } from './helpers/reference.js';
import { freshSeed } from './helpers/testData.js';

const CALLS = Number(process.env['SAEKIT_SOAK_CALLS'] ?? 10_000);
const addonPath = process.env['SAEKIT_ADDON'] ?? fileURLToPath(new URL('../build/Release/saekit.node', import.meta.url));
// Linux (CI) counts open descriptors in /proc; elsewhere the descriptor check reads 0.
const openFds = () => (existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : 0);

interface Case {
  w: SaeWeights;
  sae: Sae;
  x: Float32Array;
  ref: ReferenceRow[];
  codes: SparseCodes;
  decoded: { x: Float64Array; tol: Float64Array };
}

function checkDecode(c: Case, out: Float32Array): void {
  for (let i = 0; i < out.length; i++) {
    if (!(Math.abs(out[i]! - c.decoded.x[i]!) <= c.decoded.tol[i]!)) throw new Error(`decode element ${i}: ${out[i]} vs ${c.decoded.x[i]}`);
  }
}

/** A worker thread that loads the addon and encodes in a loop until terminated. */
function encodingWorker(): Worker {
  return new Worker(
    `const a = require(${JSON.stringify(addonPath)});
     const dIn = 40, dSae = 700;
     const W_enc = new Float32Array(dIn * dSae).map((_, i) => Math.sin(i)), W_dec = new Float32Array(dSae * dIn).map((_, i) => Math.cos(i));
     const spec = { dIn, dSae, k: 9, architecture: 'topk', normalizeActivations: 'none', applyBDecToInput: false };
     a.createSae(spec, { W_enc, encTransposed: false, b_enc: new Float32Array(dSae), W_dec, b_dec: new Float32Array(dIn) }, 'cpu').then(async (sae) => {
       const x = new Float32Array(64 * dIn).map((_, i) => Math.sin(3 * i));
       for (;;) { await Promise.all([sae.encode(x, 64), sae.encode(x, 64)]); require('node:worker_threads').parentPort.postMessage('tick'); }
     });`,
    { eval: true },
  );
}

describe('soak of the embedded API', () => {
  it(`${CALLS} mixed calls on 3 SAEs, disposals in flight, worker threads, bad arguments: every result right, RSS and fds flat`, { timeout: 600_000 }, async () => {
    const seed = freshSeed('soak.api.test');
    const r = rng(seed);
    const cases: Case[] = [];
    for (const [arch, dIn, dSae, k] of [['topk', 48, 300, 5], ['jumprelu', 33, 129, 0], ['standard', 64, 256, 0]] as const) {
      const w = randomWeights(arch, dIn, dSae, seed + dIn, k || 3);
      const sae = await createSae(w, { device: 'cpu' });
      const x = randomFloat32(17 * dIn, r, 2);
      const ref = referenceEncode(w, x);
      const codes = await sae.encode(x);
      expect(compareCodes(w, ref, codes), `${arch} first encode`).toEqual([]);
      cases.push({ w, sae, x, ref, codes, decoded: referenceDecode(w, codes) });
    }

    const workers: Worker[] = [];
    const firstTicks = new Map<Worker, Promise<void>>();
    let ticks = 0;
    const counts = { encode: 0, decode: 0, bad: 0, disposedInFlight: 0, workersTerminated: 0 };
    const samples: { calls: number; rssMiB: number; fds: number }[] = [];
    const wave = 24;
    let done = 0;
    let baseline: { rss: number; fds: number } | undefined;
    while (done < CALLS) {
      const calls: Promise<void>[] = [];
      for (let i = 0; i < wave; i++) {
        const c = cases[Math.floor(r() * cases.length)]!;
        const pick = r();
        if (pick < 0.45) {
          counts.encode++;
          calls.push(c.sae.encode(c.x).then((codes) => {
            const p = compareCodes(c.w, c.ref, codes);
            if (p.length) throw new Error(`encode: ${p[0]}`);
          }));
        } else if (pick < 0.85) {
          counts.decode++;
          const out = new Float32Array(c.x.length).fill(Number.NaN);
          calls.push(c.sae.decode(c.codes, out).then((o) => checkDecode(c, o)));
        } else {
          counts.bad++;
          const bad = [
            () => c.sae.encode(new Float32Array(c.w.config.dIn + 1)),
            () => c.sae.encode(new Float64Array(4) as never),
            () => c.sae.decode({ ...c.codes, indices: Int32Array.from(c.codes.indices, (j: number) => j + c.w.config.dSae) }),
            () => c.sae.decode(c.codes, new Float32Array(3)),
          ][Math.floor(r() * 4)]!;
          calls.push(bad().then(
            () => { throw new Error('a bad call succeeded'); },
            (e: unknown) => { if (!(e instanceof ValidationError)) throw e; },
          ));
        }
      }
      // Every tenth wave: an SAE created, given calls, and disposed before they finish (the
      // calls still complete correctly: the native model lives until its last call ends).
      if ((done / wave) % 10 === 0) {
        const c = cases[0]!;
        const tmp = await createSae(c.w, { device: 'cpu' });
        const inFlight = [tmp.encode(c.x), tmp.encode(c.x)];
        tmp.dispose();
        counts.disposedInFlight++;
        for (const p of inFlight) calls.push(p.then((codes) => { const e = compareCodes(c.w, c.ref, codes); if (e.length) throw new Error(`after dispose: ${e[0]}`); }));
        calls.push(tmp.encode(c.x).then(() => { throw new Error('encode after dispose succeeded'); }, (e: unknown) => { expect(String(e)).toContain('disposed'); }));
      }
      // Every 25th wave: a worker thread started, or the oldest one terminated mid-encode.
      if ((done / wave) % 25 === 5) {
        const wk = encodingWorker();
        const first = new Promise<void>((resolve, reject) => {
          wk.once('message', () => resolve());
          wk.once('error', reject);
        });
        wk.on('message', () => ticks++);
        workers.push(wk);
        firstTicks.set(wk, first);
      }
      if ((done / wave) % 25 === 17 && workers.length > 0) {
        // Terminated once it has encoded (its next encodes are in flight then).
        const wk = workers.shift()!;
        await firstTicks.get(wk);
        await wk.terminate();
        counts.workersTerminated++;
      }
      await Promise.all(calls);
      done += wave;
      if (done % (wave * 25) === 0) {
        global.gc?.();
        const rss = process.memoryUsage().rss / 2 ** 20;
        baseline ??= { rss, fds: openFds() };
        samples.push({ calls: done, rssMiB: Math.round(rss), fds: openFds() });
      }
    }
    await Promise.all(workers.map((wk) => wk.terminate()));
    for (const c of cases) c.sae.dispose();
    global.gc?.();
    samples.push({ calls: done, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20), fds: openFds() });
    console.log(`soak: ${done} calls ${JSON.stringify(counts)}, worker ticks ${ticks}; RSS MiB / fds by calls: ${samples.map((s) => `${s.calls}:${s.rssMiB}/${s.fds}`).join(' ')}`);
    expect(counts.disposedInFlight).toBeGreaterThan(0);
    expect(counts.workersTerminated).toBeGreaterThan(0);
    expect(ticks).toBeGreaterThan(0);
    const last = samples[samples.length - 1]!;
    // Flat: bounded growth after the first sample (allocator and V8 settle; no per-call leak).
    // Under AddressSanitizer (scripts/sanitize.sh) freed memory sits in ASan's quarantine (up
    // to 256 MiB by design), so RSS says nothing there; the result and descriptor checks stay.
    if (process.env['SAEKIT_SANITIZED'] !== '1') expect(last.rssMiB - baseline!.rss, 'RSS growth, MiB').toBeLessThan(96);
    expect(last.fds - baseline!.fds, 'open file descriptors growth').toBeLessThanOrEqual(4);
  });
});
