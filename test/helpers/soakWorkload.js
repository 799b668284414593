// The soak workload of the embedded API (issue 17, item 5), shared by test/soak.api.test.ts
// (src/, 10,000 calls, the assertions) and bench/soak.js (dist/, as long as asked, the memory
// curve as a table). Waves of 24 concurrent encode/decode calls on 3 SAEs, aborted calls and bad arguments mixed
// in, an SAE disposed with calls in flight every tenth wave, and worker threads that load the
// addon and are terminated mid-encode. Every result is checked against the float64 reference
// (./reference.js): a wrong one, or a bad call that succeeds, rejects the soak with the call's
// problem. The API comes in as an argument (src/ for the test, dist/ for the bench), so this
// file imports nothing of saekit; it is plain JavaScript (typed by JSDoc, checked by
// `npm run typecheck`) so that plain node runs it.
import { existsSync, readdirSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { compareCodes, referenceDecode, referenceEncode } from './reference.js';

/**
 * @typedef {object} SoakApi
 * @property {typeof import('../../src/sae.js').createSae} createSae
 * @property {typeof import('../../src/errors.js').ValidationError} ValidationError
 * @property {typeof import('../../src/synthetic.js').syntheticSae} syntheticSae
 * @property {typeof import('../../src/synthetic.js').Rng} Rng
 */

/**
 * @typedef {object} SoakOptions
 * @property {number} seed
 * @property {string} addonPath The addon file the worker threads load.
 * @property {number} [calls] Stop after this many calls (whole waves of 24).
 * @property {number} [seconds] Stop after this long (at the end of a wave).
 * @property {number} [sampleEvery] Calls between memory samples, rounded to whole cycles of 25 waves (600
 *   calls; default one), so that every sample comes at the same point of the worker cycle (none alive).
 * @property {(s: SoakSample) => void} [onSample]
 */

/**
 * A memory sample, taken after a wave (after a GC where node runs with --expose-gc).
 * @typedef {object} SoakSample
 * @property {number} calls Calls finished.
 * @property {number} seconds Since the soak began.
 * @property {number} rssMiB
 * @property {number} heapUsedMiB
 * @property {number} heapTotalMiB
 * @property {number} externalMiB Memory of C++ objects bound to JS ones (typed arrays' buffers included).
 * @property {number} arrayBuffersMiB
 * @property {number} fds Open file descriptors (0 where /proc/self/fd does not exist).
 */

/**
 * @typedef {object} SoakCounts
 * @property {number} encode Checked encode calls in the waves.
 * @property {number} decode Checked decode calls in the waves.
 * @property {number} bad Calls with bad arguments (each must reject with a ValidationError).
 * @property {number} aborted Calls given an AbortSignal that fires at once, after a microtask or a timer (each must reject with AbortError or return the right result).
 * @property {number} abortedStopped Of those, the calls that rejected with AbortError.
 * @property {number} disposedInFlight SAEs disposed with 2 encodes in flight (both checked; a third call after the disposal must reject).
 * @property {number} workersStarted
 * @property {number} workersTerminated Terminated once they had encoded (their next encodes in flight).
 * @property {number} workerEncodes Encodes the worker threads finished (unchecked: their results stay in the thread).
 */

/**
 * @typedef {object} SoakResult
 * @property {number} calls
 * @property {number} seconds
 * @property {SoakCounts} counts
 * @property {SoakSample[]} samples Every sampleEvery calls.
 * @property {SoakSample} end After the workers are terminated and the SAEs disposed.
 */

export const WAVE = 24;

/** Open file descriptors; 0 where /proc/self/fd does not exist (the check reads nothing there). */
export const openFds = () => (existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : 0);

/**
 * @param {number} calls
 * @param {number} t0
 * @returns {SoakSample}
 */
function sample(calls, t0) {
  /** @type {undefined | (() => void)} */ (/** @type {{ gc?: () => void }} */ (globalThis).gc)?.();
  const m = process.memoryUsage();
  const mib = (/** @type {number} */ b) => b / 2 ** 20;
  return {
    calls,
    seconds: (performance.now() - t0) / 1000,
    rssMiB: mib(m.rss),
    heapUsedMiB: mib(m.heapUsed),
    heapTotalMiB: mib(m.heapTotal),
    externalMiB: mib(m.external),
    arrayBuffersMiB: mib(m.arrayBuffers),
    fds: openFds(),
  };
}

/**
 * A worker thread that loads the addon at ADDON and encodes in a loop until terminated.
 * @param {string} addon
 */
function encodingWorker(addon) {
  return new Worker(
    `const a = require(${JSON.stringify(addon)});
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

/**
 * Runs the soak until O.calls calls or O.seconds have passed (whichever comes first).
 * @param {SoakApi} api
 * @param {SoakOptions} o
 * @returns {Promise<SoakResult>}
 */
export async function runSoak(api, o) {
  if (o.calls === undefined && o.seconds === undefined) throw new Error('runSoak needs calls or seconds');
  const rng = new api.Rng(o.seed);
  const r = () => rng.uniform();
  const sampleWaves = 25 * Math.max(1, Math.round((o.sampleEvery ?? 25 * WAVE) / (25 * WAVE)));
  const cases = [];
  for (const [architecture, dIn, dSae, k] of /** @type {const} */ ([['topk', 48, 300, 5], ['jumprelu', 33, 129, 0], ['standard', 64, 256, 0]])) {
    const w = api.syntheticSae({ dIn, dSae, architecture, ...(k > 0 && { k }), seed: o.seed + dIn });
    const sae = await api.createSae(w, { device: 'cpu' });
    const x = rng.fillNormal(new Float32Array(17 * dIn));
    const ref = referenceEncode(w, x);
    const codes = await sae.encode(x);
    const first = compareCodes(w, ref, codes);
    if (first.length) throw new Error(`${architecture} first encode: ${first.join('; ')}`);
    cases.push({ w, sae, x, ref, codes, decoded: referenceDecode(w, codes) });
  }
  /** @param {(typeof cases)[number]} c @param {string} what @param {import('../../src/codes.js').SparseCodes} codes */
  const checkEncode = (c, what, codes) => {
    const p = compareCodes(c.w, c.ref, codes);
    if (p.length) throw new Error(`${what}: ${p[0]}`);
  };
  /** @param {(typeof cases)[number]} c @param {Float32Array} out */
  const checkDecode = (c, out) => {
    for (let i = 0; i < out.length; i++) {
      if (!(Math.abs(out[i] - c.decoded.x[i]) <= c.decoded.tol[i])) throw new Error(`decode element ${i}: ${out[i]} vs ${c.decoded.x[i]}`);
    }
  };

  /** @type {Worker[]} */
  const workers = [];
  /** @type {Map<Worker, Promise<void>>} */
  const firstTicks = new Map();
  /** @type {SoakCounts} */
  const counts = { encode: 0, decode: 0, bad: 0, aborted: 0, abortedStopped: 0, disposedInFlight: 0, workersStarted: 0, workersTerminated: 0, workerEncodes: 0 };
  /** @type {SoakSample[]} */
  const samples = [];
  const t0 = performance.now();
  const more = () => (o.calls === undefined || done < o.calls) && (o.seconds === undefined || performance.now() - t0 < 1000 * o.seconds);
  let done = 0;
  try {
    while (more()) {
      const wave = done / WAVE;
      /** @type {Promise<void>[]} */
      const calls = [];
      // Marked handled at once: a wave awaits other things (an SAE created, a worker terminated)
      // before Promise.all, and a wrong result meanwhile must reject the soak, not crash node.
      const track = (/** @type {Promise<void>} */ p) => {
        p.catch(() => undefined);
        calls.push(p);
      };
      for (let i = 0; i < WAVE; i++) {
        const c = cases[Math.floor(r() * cases.length)];
        const pick = r();
        if (pick < 0.45) {
          counts.encode++;
          track(c.sae.encode(c.x).then((codes) => checkEncode(c, 'encode', codes)));
        } else if (pick < 0.85) {
          counts.decode++;
          const out = new Float32Array(c.x.length).fill(Number.NaN);
          track(c.sae.decode(c.codes, out).then((y) => checkDecode(c, y)));
        } else if (pick < 0.92) {
          // Aborted at once, after a microtask, or on a timer: the call rejects with AbortError
          // or, when the work finished first, returns the right result.
          counts.aborted++;
          const ac = new AbortController();
          const decode = r() < 0.5;
          const call = decode
            ? c.sae.decode(c.codes, undefined, { signal: ac.signal }).then((y) => checkDecode(c, y))
            : c.sae.encode(c.x, { signal: ac.signal }).then((codes) => checkEncode(c, 'aborted encode', codes));
          const when = r();
          if (when < 0.34) ac.abort();
          else if (when < 0.67) queueMicrotask(() => ac.abort());
          else setTimeout(() => ac.abort(), 0);
          track(
            call.catch((e) => {
              if (!(e instanceof DOMException && e.name === 'AbortError')) throw e;
              counts.abortedStopped++;
            }),
          );
        } else {
          counts.bad++;
          const { dIn, dSae } = c.w.config;
          const bad = [
            () => c.sae.encode(new Float32Array(dIn + 1)),
            () => c.sae.encode(/** @type {never} */ (new Float64Array(4))),
            () => c.sae.decode({ ...c.codes, indices: Int32Array.from(c.codes.indices, (j) => j + dSae) }),
            () => c.sae.decode(c.codes, new Float32Array(3)),
          ][Math.floor(r() * 4)];
          track(
            /** @type {Promise<unknown>} */ (bad()).then(
              () => {
                throw new Error('a bad call succeeded');
              },
              (e) => {
                if (!(e instanceof api.ValidationError)) throw e;
              },
            ),
          );
        }
      }
      // Every tenth wave: an SAE created, given calls, and disposed before they finish (the
      // calls still complete correctly: the native model lives until its last call ends).
      if (wave % 10 === 0) {
        const c = cases[0];
        const tmp = await api.createSae(c.w, { device: 'cpu' });
        const inFlight = [tmp.encode(c.x), tmp.encode(c.x)];
        tmp.dispose();
        counts.disposedInFlight++;
        for (const p of inFlight) track(p.then((codes) => checkEncode(c, 'after dispose', codes)));
        track(
          tmp.encode(c.x).then(
            () => {
              throw new Error('encode after dispose succeeded');
            },
            (e) => {
              if (!String(e).includes('disposed')) throw new Error(`encode after dispose: ${e}`);
            },
          ),
        );
      }
      // Every 25th wave: a worker thread started, or the oldest one terminated mid-encode.
      if (wave % 25 === 5) {
        const wk = encodingWorker(o.addonPath);
        firstTicks.set(
          wk,
          new Promise((resolve, reject) => {
            wk.once('message', () => resolve());
            wk.once('error', reject);
          }),
        );
        wk.on('message', () => (counts.workerEncodes += 2));
        workers.push(wk);
        counts.workersStarted++;
      }
      if (wave % 25 === 17 && workers.length > 0) {
        // Terminated once it has encoded (its next encodes are in flight then).
        const wk = /** @type {Worker} */ (workers.shift());
        await firstTicks.get(wk);
        firstTicks.delete(wk);
        await wk.terminate();
        counts.workersTerminated++;
      }
      await Promise.all(calls);
      done += WAVE;
      if ((done / WAVE) % sampleWaves === 0) {
        const s = sample(done, t0);
        samples.push(s);
        o.onSample?.(s);
      }
    }
  } finally {
    // Also after a failure: live worker threads would keep node from exiting.
    await Promise.all(workers.map((wk) => wk.terminate()));
    for (const c of cases) c.sae.dispose();
  }
  const end = sample(done, t0);
  return { calls: done, seconds: end.seconds, counts, samples, end };
}
