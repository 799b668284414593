// `npm run bench:serve`: `saekit serve` under load against the in-process encode it wraps.
//
// The server runs in this process (createSaeServer on a synthetic SAE, GPT-2-small shape by
// default: d_in 768, d_sae 24576, k 32); the load comes from autocannon in a child process (so
// the client's event loop is not the server's) sending POST /encode with ROWS rows per request,
// as JSON ({rows: number[][]}) and as raw float32 (application/octet-stream), at 1, 10 and 100
// connections. Reported: requests/s, rows (tokens)/s, latency p50/p99, encode calls per request
// (the batching), and in the same run the in-process sae.encode's rows/s at ROWS rows per call
// and at 50 requests' rows (800: about what merged calls reach at 100 connections), measured
// before and after the load runs (the probe), with the ratios against their mean.
// Validated first: the server's codes for the bench body equal the in-process encode's. "main
// thread busy" is the server's event-loop utilization during the run (parsing, answering).
//
// The client shares the CPU with the server and the kernel: on a 2-core machine every figure is
// a lower bound of what a separate client machine would see.
//   flags: --d-in 768 --d-sae 24576 --k 32 --rows 16 --duration 5 (s per run) --connections 1,10,100
//          --batch-window-ms 1 --max-batch-rows 4096 --reps 3 (probe repetitions, median)
import { fork } from 'node:child_process';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';

const { values: flags } = parseArgs({
  options: {
    'd-in': { type: 'string', default: '768' },
    'd-sae': { type: 'string', default: '24576' },
    k: { type: 'string', default: '32' },
    rows: { type: 'string', default: '16' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '1,10,100' },
    'batch-window-ms': { type: 'string', default: '1' },
    'max-batch-rows': { type: 'string', default: '4096' },
    reps: { type: 'string', default: '3' },
    client: { type: 'boolean', default: false },
  },
});

if (flags.client) {
  // The load generator: runs what the parent sends, answers with autocannon's figures.
  const { default: autocannon } = await import('autocannon');
  process.on('message', async (job) => {
    const results = [];
    for (const run of job.runs) {
      const body = Buffer.from(run.body, 'base64');
      const r = await autocannon({ url: run.url, connections: run.connections, duration: run.duration, method: 'POST', headers: { 'content-type': run.contentType }, body });
      results.push({ ...run, body: undefined, requests: r.requests.average, total: r['2xx'], errors: r.errors + r.timeouts + r.non2xx, p50: r.latency.p50, p99: r.latency.p99 });
    }
    process.send(results, () => process.exit(0));
  });
} else {
  await serverSide();
}

async function serverSide() {
  const { createSae, createSaeServer, syntheticSae, threads } = await import('../dist/index.js');
  const dIn = Number(flags['d-in']);
  const dSae = Number(flags['d-sae']);
  const k = Number(flags.k);
  const rows = Number(flags.rows);
  const duration = Number(flags.duration);
  const reps = Number(flags.reps);
  const connections = flags.connections.split(',').map(Number);
  const maxBatchRows = Number(flags['max-batch-rows']);
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

  const sae = await createSae(syntheticSae({ dIn, dSae, k, seed: 7 }), { device: 'cpu' });
  const x = new Float32Array(rows * dIn);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 12.9898) * 0.7 + Math.cos(i * 0.37) * 0.3;
  const server = await createSaeServer({ sae, maxBatchRows, maxRowsPerRequest: Math.min(1024, maxBatchRows), batchWindowMs: Number(flags['batch-window-ms']), maxConcurrent: 1024 });

  // Validate: the server's codes equal the in-process encode's, for both bodies.
  const want = await sae.encode(x);
  const jsonBody = JSON.stringify({ rows: Array.from({ length: rows }, (_, r) => Array.from(x.subarray(r * dIn, (r + 1) * dIn))) });
  const binBody = Buffer.from(x.buffer);
  for (const [type, body, q] of [['application/json', jsonBody, ''], ['application/octet-stream', binBody, `?rows=${rows}`]]) {
    const r = await fetch(new URL(`encode${q}`, server.url), { method: 'POST', headers: { 'content-type': type }, body });
    const got = await r.json();
    const same = r.status === 200 && got.indices.join() === Array.from(want.indices).join() && Float32Array.from(got.values).join() === want.values.join();
    if (!same) throw new Error(`bench: the server's ${type} answer differs from the in-process encode`);
  }

  // The probe: in-process encode rows/s at ROWS rows per call and at a merged batch's size.
  const probe = async (n) => {
    const xs = new Float32Array(n * dIn);
    for (let i = 0; i < xs.length; i++) xs[i] = x[i % x.length] + ((i / x.length) | 0) * 1e-3;
    await sae.encode(xs); // warm-up (the first call of a size class measures the kernels)
    const rates = [];
    for (let r = 0; r < reps; r++) {
      let done = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < 1500) {
        await sae.encode(xs);
        done += n;
      }
      rates.push(done / ((performance.now() - t0) / 1000));
    }
    return median(rates);
  };

  const runs = [];
  for (const c of connections) {
    runs.push({ label: 'json', connections: c, url: new URL('encode', server.url).href, contentType: 'application/json', body: Buffer.from(jsonBody).toString('base64'), duration });
    runs.push({ label: 'binary', connections: c, url: new URL(`encode?rows=${rows}`, server.url).href, contentType: 'application/octet-stream', body: binBody.toString('base64'), duration });
  }
  // The probes bracket the load runs (before and after; the ratios use their mean): on a shared
  // machine the other work changes between the start and the end of a run.
  const batchRows = Math.min(maxBatchRows, rows * 50);
  const perCall0 = await probe(rows);
  const batch0 = await probe(batchRows);
  const results = [];
  for (const run of runs) {
    const before = server.stats();
    const elu0 = performance.eventLoopUtilization();
    const child = fork(new URL(import.meta.url).pathname, ['--client'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const [r] = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => code !== 0 && reject(new Error(`bench client exited ${code}`)));
      child.send({ runs: [run] });
    });
    const after = server.stats();
    r.elu = performance.eventLoopUtilization(elu0).utilization;
    r.callsPerRequest = (after.calls - before.calls) / Math.max(1, after.requests - before.requests);
    r.rowsPerCall = (after.rows - before.rows) / Math.max(1, after.calls - before.calls);
    results.push(r);
    process.stderr.write(`  ${r.label} x${r.connections}: ${r.requests.toFixed(0)} req/s, p50 ${r.p50} ms, ${r.errors} errors, ${r.rowsPerCall.toFixed(0)} rows/call, main thread ${(100 * r.elu).toFixed(0)}% busy\n`);
  }
  const perCall1 = await probe(rows);
  const batch1 = await probe(batchRows);
  const perCall = (perCall0 + perCall1) / 2;
  const batch = (batch0 + batch1) / 2;
  await server.close();
  sae.dispose();

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log(`\nsaekit serve under load: ${cpu}, ${threads()} kernel threads, SAE d_in ${dIn} d_sae ${dSae} k ${k}, ${rows} rows per request, ${duration} s per run`);
  console.log(`in-process encode (probe, before / after the load runs): ${perCall0.toFixed(0)} / ${perCall1.toFixed(0)} rows/s at ${rows} rows per call, ${batch0.toFixed(0)} / ${batch1.toFixed(0)} rows/s at ${batchRows} rows per call\n`);
  console.log('| body | connections | requests/s | rows (tokens)/s | p50 ms | p99 ms | rows per encode call | main thread busy | errors | vs in-process, same rows per call | vs in-process batch |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const rowsPerSec = r.requests * rows;
    console.log(`| ${r.label} | ${r.connections} | ${r.requests.toFixed(0)} | ${rowsPerSec.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.rowsPerCall.toFixed(1)} | ${(100 * r.elu).toFixed(0)}% | ${r.errors} | ${(rowsPerSec / perCall).toFixed(2)}x | ${(rowsPerSec / batch).toFixed(2)}x |`);
  }
}
