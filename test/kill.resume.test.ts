// Kill and rerun (issue 17, item 4): `saekit encode`, `decode`, `activations`, `analyze` and `train` run as real
// processes and are killed with SIGKILL at several moments. Each kill must leave either no
// output or the complete output under the final name (never a partial file there), and a
// plain rerun of the same command must finish with output byte-identical to an uninterrupted
// run and no temporary files left. The kills come at fractions of an uninterrupted run's time
// and right after the job reports its N-th unit of work done (first, middle, last) through
// SAEKIT_PROGRESS=jsonl: a streamed chunk for encode and decode, a shard for activations, a
// batch for analyze, a checkpoint for train. Ctrl-C (SIGINT) stops with one line and exit
// code 130. The processes run dist/ (built from src first when it is older).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveSaeLens, writeNpy } from '../src/formats/index.js';
import { syntheticText } from '../src/model/syntheticText.js';
import { syntheticActivations, syntheticSae } from '../src/synthetic.js';
import { ensureDist } from './helpers/dist.js';
import { tempDirs } from './helpers/formatsFixtures.js';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'saekit.js');
const dirs = tempDirs();
let work: string;
let sae: string;
let acts: string;
const killed: Record<string, number> = {};

beforeAll(async () => {
  ensureDist();
  work = await dirs.make();
  sae = join(work, 'sae');
  const w = syntheticSae({ dIn: 256, dSae: 8192, architecture: 'topk', k: 16, seed: 11 });
  await saveSaeLens(sae, w);
  acts = join(work, 'acts.npy');
  await writeNpy(acts, syntheticActivations(w, 60_000, { seed: 12 }), [60_000, 256]);
}, 120_000);
afterAll(async () => {
  console.log('kill.resume: processes killed mid-run, by job:', JSON.stringify(killed));
  await dirs.cleanup();
});

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** stderr without the progress lines. */
  stderr: string;
  /** Units of work the job reported done (progress lines), and what it counts. */
  units: number;
  unit: string | undefined;
  ms: number;
}

/**
 * Runs saekit ARGS with SAEKIT_PROGRESS=jsonl, sending SIGNAL after KILL.afterMs or as soon as
 * the KILL.afterUnits-th progress line is read.
 */
function run(args: string[], kill: { afterMs?: number; afterUnits?: number; signal?: NodeJS.Signals } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], { cwd: work, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, SAEKIT_THREADS: '1', SAEKIT_PROGRESS: 'jsonl' } });
    const signal = kill.signal ?? 'SIGKILL';
    let stderr = '';
    let partial = '';
    let units = 0;
    let unit: string | undefined;
    const take = (line: string) => {
      if (!line.startsWith('{"progress":')) {
        stderr += `${line}\n`;
        return;
      }
      unit = (JSON.parse(line) as { unit: string }).unit;
      if (++units === kill.afterUnits) child.kill(signal);
    };
    child.stderr.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      lines.forEach(take);
    });
    const timer = kill.afterMs === undefined ? undefined : setTimeout(() => child.kill(signal), kill.afterMs);
    child.on('error', reject);
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (partial) take(partial);
      resolve({ code, signal: sig, stderr, units, unit, ms: performance.now() - t0 });
    });
  });
}

const sha = async (f: string) => createHash('sha256').update(await readFile(f)).digest('hex');

async function shaDir(d: string): Promise<string> {
  const h = createHash('sha256');
  for (const f of (await readdir(d)).sort()) h.update(f).update(await readFile(join(d, f)));
  return h.digest('hex');
}

/** Every file under D, by relative path, with the index's finishing time masked. */
async function dashboardDigest(d: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    for (const e of (await readdir(join(d, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(rel, e.name);
      if (e.isDirectory()) await walk(p);
      else h.update(p).update((await readFile(join(d, p), 'utf8')).replace(/"created":"[^"]*"/g, '"created":""'));
    }
  };
  await walk('');
  return h.digest('hex');
}

const temporaries = (d: string) => readdirSync(d).filter((f) => f.includes('.tmp-'));

/**
 * Kills JOB at fractions of its uninterrupted run time and right after its first, middle and
 * last unit of work, checks what each kill left, reruns it to the end and compares the result
 * with the uninterrupted one.
 */
async function killAndRerun(
  job: string,
  args: (out: string) => string[],
  outName: string,
  digest: (p: string) => Promise<string>,
  outDir: (out: string) => string,
  finishedMarker = 'manifest.json',
): Promise<void> {
  const refOut = join(work, `${job}-ref`, outName);
  await mkdir(join(work, `${job}-ref`), { recursive: true });
  const ref = await run(args(refOut));
  expect(ref.code, ref.stderr).toBe(0);
  expect(ref.units, `${job} reports its units of work (SAEKIT_PROGRESS=jsonl)`).toBeGreaterThanOrEqual(3);
  const want = await digest(refOut);
  const finished = (out: string) => existsSync(out) && (outName.endsWith('/') ? existsSync(join(out, finishedMarker)) : true);
  const killThenRerun = async (label: string, kill: { afterMs?: number; afterUnits?: number }): Promise<RunResult & { leftFinished: boolean }> => {
    const dir = join(work, `${job}-${label.replace(/\W+/g, '-')}`);
    await mkdir(dir, { recursive: true });
    const out = join(dir, outName);
    const r = await run(args(out), kill);
    // Under the final name: nothing, or the whole output.
    const leftFinished = finished(out);
    if (leftFinished) expect(await digest(out), `${job} killed ${label}`).toBe(want);
    const again = await run(args(out));
    expect(again.code, `${job} rerun after a kill ${label}: ${again.stderr}`).toBe(0);
    expect(await digest(out), `${job} rerun after a kill ${label}`).toBe(want);
    expect(temporaries(outDir(out)), `${job} temporaries after the rerun in ${outDir(out)}: ${readdirSync(outDir(out)).join(', ')}`).toEqual([]);
    return { ...r, leftFinished };
  };
  // Three moments of the run time (0.95 came from CI: a kill after the manifest landed) and three
  // unit boundaries; the first unit stands in for an early kill.
  for (const frac of [0.35, 0.65, 0.95]) {
    const r = await killThenRerun(`at ${frac}`, { afterMs: Math.max(30, frac * ref.ms) });
    if (r.signal === 'SIGKILL') killed[job] = (killed[job] ?? 0) + 1;
  }
  // A run faster than the reference can finish before a timed kill; the unit kills below land for sure.
  expect(killed[job] ?? 0, `${job}: timed kills that landed`).toBeGreaterThanOrEqual(1);
  const byUnit = `${job} after a ${ref.unit}`;
  for (const n of [...new Set([1, Math.ceil(ref.units / 2), ref.units])]) {
    const r = await killThenRerun(`after ${ref.unit} ${n}`, { afterUnits: n });
    expect(r.units, `${job} killed after ${ref.unit} ${n} had reported it`).toBeGreaterThanOrEqual(n);
    if (r.signal === 'SIGKILL') killed[byUnit] = (killed[byUnit] ?? 0) + 1;
    // The first and middle units are far from the end: those kills land mid-job.
    if (n <= ref.units / 2) expect({ signal: r.signal, leftFinished: r.leftFinished }, `${job} killed after ${ref.unit} ${n}`).toEqual({ signal: 'SIGKILL', leftFinished: false });
  }
}

describe('SIGKILL at any moment, then a plain rerun: the output of an uninterrupted run', () => {
  it('saekit encode', async () => {
    await killAndRerun('encode', (out) => ['encode', '--sae', sae, '--input', acts, '--output', out], 'codes.safetensors', sha, (out) => join(out, '..'));
  }, 240_000);

  it('saekit decode', async () => {
    const codes = join(work, 'codes-for-decode.safetensors');
    const e = await run(['encode', '--sae', sae, '--input', acts, '--output', codes]);
    expect(e.code, e.stderr).toBe(0);
    await killAndRerun('decode', (out) => ['decode', '--sae', sae, '--codes', codes, '--output', out], 'recon.npy', sha, (out) => join(out, '..'));
  }, 240_000);

  it('saekit activations (an interrupted dump folder is cleared and redone)', async () => {
    const model = join(work, 'gpt2');
    await cp(join(ROOT, 'test', 'fixtures', 'hf', 'gpt2'), model, { recursive: true, filter: (src) => !/\/onnx\/(?!model\.onnx$)[^/]+$/.test(src) });
    const corpus = join(work, 'corpus.txt');
    await writeFile(corpus, syntheticText(20_000, 5));
    await killAndRerun(
      'activations',
      (out) => ['activations', '--model', model, '--hook', 'blocks.1.hook_resid_mid', '--text', corpus, '--tokens', '40000', '--context-size', '32', '--shard-windows', '40', '--output', out],
      'dump/',
      shaDir,
      (out) => out,
    );
    // A kill just after the manifest landed leaves a finished dump: the rerun keeps it as it is.
    const finished = join(work, 'activations-ref', 'dump/');
    const before = await shaDir(finished);
    const again = await run(['activations', '--model', model, '--hook', 'blocks.1.hook_resid_mid', '--text', corpus, '--tokens', '40000', '--context-size', '32', '--shard-windows', '40', '--output', finished]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain('already holds this dump, finished');
    expect(await shaDir(finished)).toBe(before);
  }, 240_000);

  it('saekit analyze (the dashboard lands whole, by rename; a finished one is kept)', async () => {
    // Over the dump the activations test made, with an SAE of the fixture model's width.
    const dump = join(work, 'activations-ref', 'dump');
    expect(existsSync(join(dump, 'manifest.json')), 'the activations test runs first').toBe(true);
    const narrow = join(work, 'sae-32');
    await saveSaeLens(narrow, syntheticSae({ dIn: 32, dSae: 4096, architecture: 'topk', k: 8, seed: 13 }));
    await killAndRerun(
      'analyze',
      (out) => ['analyze', '--activations', dump, '--sae', narrow, '--output', out, '--top-n', '8'],
      'dash/',
      dashboardDigest,
      (out) => join(out, '..'),
      'index.json',
    );
  }, 240_000);
});

describe('SIGKILL during training, then the same command (with --resume) again', () => {
  it('saekit train: the saved SAE equals the uninterrupted run bit for bit', async () => {
    // The SAE files only: metrics.jsonl and checkpoint.json carry wall-clock times.
    const saeDigest = async (d: string) => {
      const h = createHash('sha256');
      for (const f of ['cfg.json', 'sae_weights.safetensors', 'sparsity.safetensors']) h.update(f).update(await readFile(join(d, f)));
      return h.digest('hex');
    };
    const small = join(work, 'acts-64.npy');
    await writeNpy(small, syntheticActivations(syntheticSae({ dIn: 64, dSae: 1024, architecture: 'topk', k: 8, seed: 14 }), 30_000, { seed: 15 }), [30_000, 64]);
    await killAndRerun(
      'train',
      (out) => ['train', '--input', small, '--output', out, '--k', '8', '--d-sae', '1024', '--tokens', '300000', '--batch-size', '1024', '--checkpoint-every', '25', '--log-every', '50', '--resume'],
      'sae/',
      saeDigest,
      (out) => join(out, '..'),
      'cfg.json',
    );
  }, 240_000);
});

describe('Ctrl-C', () => {
  it('stops encode with one line and exit code 130; the output name stays free', async () => {
    const out = join(work, 'sigint', 'codes.safetensors');
    await mkdir(join(work, 'sigint'), { recursive: true });
    const whole = await run(['encode', '--sae', sae, '--input', acts, '--output', join(work, 'sigint', 'whole.safetensors')]);
    expect(whole.code, whole.stderr).toBe(0);
    // Past start-up (the handler is installed once the CLI runs), before the end.
    const r = await run(['encode', '--sae', sae, '--input', acts, '--output', out], { afterMs: 0.7 * whole.ms, signal: 'SIGINT' });
    if (r.code === 0) return; // finished before the signal (a fast machine): nothing to check
    expect(r.code).toBe(130);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('saekit encode: interrupted (SIGINT)');
    expect(existsSync(out)).toBe(false);
  }, 60_000);
});
