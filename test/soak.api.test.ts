// A soak of the embedded API (issue 17, item 5): one process runs thousands of encode/decode
// calls on several SAEs at once, with bad arguments mixed in, SAEs disposed while their calls
// are in flight, calls aborted through their AbortSignal (at once, after a microtask, on a
// timer), and worker threads that load the addon and are terminated mid-call. Every
// result is checked against a float64 reference; RSS and open file descriptors must stay flat.
// The workload is test/helpers/soakWorkload.js (bench/soak.js runs it longer, on dist/).
// SAEKIT_SOAK_CALLS sets the number of calls (default 10,000).
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors.js';
import { createSae } from '../src/sae.js';
import { Rng, syntheticSae } from '../src/synthetic.js';
import { runSoak } from './helpers/soakWorkload.js';
import { freshSeed } from './helpers/testData.js';

const CALLS = Number(process.env['SAEKIT_SOAK_CALLS'] ?? 10_000);
const addonPath = process.env['SAEKIT_ADDON'] ?? fileURLToPath(new URL('../build/Release/saekit.node', import.meta.url));

describe('soak of the embedded API', () => {
  it(`${CALLS} mixed calls on 3 SAEs, disposals in flight, worker threads, bad arguments: every result right, RSS and fds flat`, { timeout: 600_000 }, async () => {
    const seed = freshSeed('soak.api.test');
    // Rejects at the first wrong result, or a bad call that succeeds.
    const { calls, counts, samples, end } = await runSoak({ createSae, ValidationError, syntheticSae, Rng }, { seed, addonPath, calls: CALLS });
    console.log(
      `soak: ${calls} calls ${JSON.stringify(counts)}; RSS MiB / fds by calls: ` +
        [...samples, end].map((s) => `${s.calls}:${Math.round(s.rssMiB)}/${s.fds}`).join(' '),
    );
    expect(counts.disposedInFlight).toBeGreaterThan(0);
    expect(counts.aborted).toBeGreaterThan(0);
    expect(counts.abortedStopped).toBeGreaterThan(0);
    expect(counts.workersTerminated).toBeGreaterThan(0);
    expect(counts.workerEncodes).toBeGreaterThan(0);
    const baseline = samples[0]!;
    // Flat: bounded growth after the first sample (allocator and V8 settle; no per-call leak).
    // Under AddressSanitizer (scripts/sanitize.sh) freed memory sits in ASan's quarantine (up
    // to 256 MiB by design), so RSS says nothing there; the result and descriptor checks stay.
    if (process.env['SAEKIT_SANITIZED'] !== '1') expect(end.rssMiB - baseline.rssMiB, 'RSS growth, MiB').toBeLessThan(96);
    expect(end.fds - baseline.fds, 'open file descriptors growth').toBeLessThanOrEqual(4);
  });
});
