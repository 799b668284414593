// Long soak of the embedded API: `npm run bench:soak [-- --calls N | --minutes M]` (after `npm run build`).
//
// Runs the workload of test/soak.api.test.ts (test/helpers/soakWorkload.js: waves of 24
// concurrent encode/decode calls on 3 SAEs, bad arguments mixed in, SAEs disposed with calls in
// flight, worker threads loading the addon and terminated mid-encode; every result checked
// against float64) on dist/ for much longer than the test's 10,000 calls, and prints the memory
// curve: RSS, V8 heap (used / total), external and arrayBuffers memory and open descriptors
// every N calls (after a GC: the script runs under --expose-gc), then the calls by kind and the
// RSS trend (least squares over the samples after the first, which V8 and the allocator need
// to settle, and over the second half: a leak keeps rising there, a settling curve does not).
// A wrong result or a bad call that succeeds stops it with exit status 1.
//
// Flags: --calls N (default 200000)  --minutes M (instead of --calls; both: whichever ends first)
//        --sample-every N (calls between rows, in whole worker cycles of 600 calls; default
//        calls / 20, or 30000 with --minutes)
//        --seed N (default: fresh, printed)  --threads N
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Rng, ValidationError, createSae, setThreads, syntheticSae, threads } from '../dist/index.js';
import { runSoak } from '../test/helpers/soakWorkload.js';

const { values: flags } = parseArgs({
  options: {
    calls: { type: 'string' },
    minutes: { type: 'string' },
    'sample-every': { type: 'string' },
    seed: { type: 'string' },
    threads: { type: 'string' },
  },
});
const positive = (name) => {
  const v = Number(flags[name]);
  if (!(v > 0) || !Number.isFinite(v)) throw new Error(`--${name} must be a positive number but got ${flags[name]}`);
  return v;
};
const minutes = flags.minutes !== undefined ? positive('minutes') : undefined;
const calls = flags.calls !== undefined ? Math.round(positive('calls')) : minutes === undefined ? 200_000 : undefined;
const sampleEvery = flags['sample-every'] !== undefined ? positive('sample-every') : calls !== undefined ? calls / 20 : 30_000;
const seed = flags.seed !== undefined ? Math.round(positive('seed')) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
if (flags.threads) setThreads(Number(flags.threads));
const addonPath = process.env.SAEKIT_ADDON ?? fileURLToPath(new URL('../build/Release/saekit.node', import.meta.url));

const gc = typeof globalThis.gc === 'function';
const until = [calls !== undefined && `${calls} calls`, minutes !== undefined && `${minutes} min`].filter(Boolean).join(' or ');
console.log(`soak of the embedded API on dist/: ${until}, seed ${seed}`);
console.log(
  `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} (${cpus().length} cores), kernel threads ${threads()}` +
    (gc ? ', GC before each sample' : ', no --expose-gc: samples without a GC'),
);
console.log('');
console.log('| calls | s | calls/s | RSS MiB | heap used / total MiB | external MiB | arrayBuffers MiB | fds |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
let prev = { calls: 0, seconds: 0 };
const row = (s, label = String(s.calls)) => {
  const rate = s.calls > prev.calls ? String(Math.round((s.calls - prev.calls) / (s.seconds - prev.seconds))) : '';
  prev = s;
  const f = (v) => v.toFixed(1);
  console.log(`| ${label} | ${s.seconds.toFixed(1)} | ${rate} | ${f(s.rssMiB)} | ${f(s.heapUsedMiB)} / ${f(s.heapTotalMiB)} | ${f(s.externalMiB)} | ${f(s.arrayBuffersMiB)} | ${s.fds} |`);
};

let result;
try {
  result = await runSoak(
    { createSae, ValidationError, syntheticSae, Rng },
    { seed, addonPath, ...(calls !== undefined && { calls }), ...(minutes !== undefined && { seconds: 60 * minutes }), sampleEvery, onSample: (s) => row(s) },
  );
} catch (e) {
  console.error(`soak failed (seed ${seed}): ${e?.stack ?? e}`);
  process.exit(1);
}
const { samples, end, counts } = result;
row(end, `${end.calls} (workers ended, SAEs disposed)`);

console.log('');
console.log('| calls by kind | count |');
console.log('|---|---:|');
const kinds = {
  'encode (checked against float64)': counts.encode,
  'decode (checked against float64)': counts.decode,
  'bad arguments (must reject with ValidationError)': counts.bad,
  'calls with an AbortSignal fired at once / microtask / timer (AbortError or a right result)': counts.aborted,
  '  of which stopped with AbortError': counts.abortedStopped,
  'SAEs disposed with 2 encodes in flight (+1 call after, must reject)': counts.disposedInFlight,
  'worker threads started': counts.workersStarted,
  'worker threads terminated mid-encode': counts.workersTerminated,
  'encodes finished in worker threads (unchecked)': counts.workerEncodes,
};
for (const [k, v] of Object.entries(kinds)) console.log(`| ${k} | ${v} |`);

console.log('');
const first = samples[0];
if (!first) console.log(`${result.calls} calls in ${result.seconds.toFixed(0)} s: no sample taken (run longer, or lower --sample-every)`);
else {
  // MiB per 100k calls, least squares; NaN under 2 samples.
  const trend = (ss) => {
    if (ss.length < 2) return NaN;
    const mx = ss.reduce((a, s) => a + s.calls, 0) / ss.length;
    const my = ss.reduce((a, s) => a + s.rssMiB, 0) / ss.length;
    const sxy = ss.reduce((a, s) => a + (s.calls - mx) * (s.rssMiB - my), 0);
    const sxx = ss.reduce((a, s) => a + (s.calls - mx) ** 2, 0);
    return (sxy / sxx) * 1e5;
  };
  const said = (t) => (Number.isFinite(t) ? `${t >= 0 ? '+' : ''}${t.toFixed(2)} MiB per 100k calls (${((t * 2 ** 20) / 1e5).toFixed(1)} bytes per call)` : 'n/a (too few samples)');
  const slope = trend(samples.slice(1));
  const secondHalf = trend(samples.slice(Math.floor(samples.length / 2)));
  const maxRss = Math.max(...samples.map((s) => s.rssMiB));
  console.log(
    `${result.calls} calls in ${result.seconds.toFixed(0)} s (${Math.round(result.calls / result.seconds)} calls/s); RSS ${first.rssMiB.toFixed(1)} MiB at ${first.calls} calls, ` +
      `max ${maxRss.toFixed(1)}, ${end.rssMiB.toFixed(1)} at the end (${(end.rssMiB - first.rssMiB >= 0 ? '+' : '')}${(end.rssMiB - first.rssMiB).toFixed(1)} MiB; ` +
      `the test allows < 96); RSS trend after the first sample ${said(slope)}, over the second half ${said(secondHalf)}; ` +
      `fds ${first.fds} -> ${end.fds}; peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`,
  );
}
