// Environment switches read by the native side at first use: SAEKIT_ISA forces a CPU kernel
// variant (a bad value is a clear error, not a crash), SAEKIT_THREADS sizes the kernel pool,
// SAEKIT_CUDA=0 turns the CUDA backend off.
// Run in child processes because the addon reads them once per process.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cpuVariant } from '../src/system.js';

const addonPath = fileURLToPath(new URL('../build/Release/saekit.node', import.meta.url));

function child(env: Record<string, string>, code: string): { status: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(addonPath)}); ${code}`], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  return { status: r.status, out: r.stdout.trim(), err: r.stderr };
}

describe('environment switches', () => {
  it.each(cpuVariant().supported)('SAEKIT_ISA=%s forces that variant', (variant) => {
    const r = child({ SAEKIT_ISA: variant }, 'console.log(a.cpuVariant().current)');
    expect(r.status).toBe(0);
    expect(r.out).toBe(variant);
  });

  it('a bad SAEKIT_ISA is a clear error at first use, and the process survives', () => {
    const r = child(
      { SAEKIT_ISA: 'sse9' },
      "try { a.cpuVariant(); console.log('no error'); } catch (e) { console.log('caught: ' + e.message); }",
    );
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/caught: unknown CPU kernel variant 'sse9'/);
  });

  it('SAEKIT_CUDA=0 turns the CUDA backend off (where it is compiled), with that reason', () => {
    const r = child({ SAEKIT_CUDA: '0' }, 'console.log(JSON.stringify(a.backends()))');
    expect(r.status).toBe(0);
    const cuda = (JSON.parse(r.out) as Array<{ name: string; available: boolean; detail: string }>).find((b) => b.name === 'cuda');
    if (cuda) expect(cuda).toMatchObject({ available: false, detail: 'turned off by SAEKIT_CUDA=0' });
  });

  it('SAEKIT_THREADS sizes the kernel pool', () => {
    const r = child({ SAEKIT_THREADS: '3' }, 'console.log(a.threads())');
    expect(r.out).toBe('3');
  });
});

describe('worker threads', () => {
  it('the addon loads and encodes in a worker thread beside the main thread', async () => {
    const { Worker } = await import('node:worker_threads');
    const code = `
      const { parentPort } = require('node:worker_threads');
      const a = require(${JSON.stringify(addonPath)});
      const dIn = 8, dSae = 16;
      const W_enc = new Float32Array(dIn * dSae), W_dec = new Float32Array(dSae * dIn);
      for (let j = 0; j < dSae; j++) { W_enc[(j % dIn) * dSae + j] = 1; W_dec[j * dIn + (j % dIn)] = 1; }
      const spec = { dIn, dSae, k: 3, architecture: 'topk', normalizeActivations: 'none', applyBDecToInput: true };
      const weights = { W_enc, encTransposed: false, b_enc: new Float32Array(dSae), W_dec, b_dec: new Float32Array(dIn) };
      a.createSae(spec, weights, 'cpu').then(async (sae) => {
        const x = new Float32Array(dIn); x[3] = 5; x[6] = 2;
        const c = await sae.encode(x, 1);
        parentPort.postMessage({ indices: Array.from(c.indices), values: Array.from(c.values) });
      }, (e) => parentPort.postMessage({ error: e.message }));`;
    const workers = [0, 1].map(() => new Worker(code, { eval: true }));
    const results = await Promise.all(
      workers.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); })),
    );
    await Promise.all(workers.map((w) => w.terminate()));
    // Latent j reads x[j % 8]: 3 and 11 see 5, 6 and 14 tie at 2 for the third place, and
    // the tie goes to the lower index.
    for (const r of results) expect(r).toEqual({ indices: [3, 6, 11], values: [5, 2, 5] });
  });
});
