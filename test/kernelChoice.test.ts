// The measured encode kernel choice (native/cpu/kernel_choice.h): with no kernel forced, an
// SAE times every kernel this CPU runs on its own weights at the first encode of each batch
// size class, keeps the fastest (fp32 unless a screen is >= 3% faster) and stores the decision
// in the kernel cache file, so the next SAE of that shape class (or the next process) skips
// the timing. Whatever it picks, the codes are the fp32 kernel's bit for bit.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { cachedKernelDecisions, createSae, cpuVariant, setCpuVariant, setThreads, type SparseCodes } from '../src/index.js';
import { syntheticActivations, syntheticSae } from '../src/synthetic.js';
import { withEnv } from './helpers/adversarial.js';
import { freshSeed } from './helpers/testData.js';

const FILE = 'kernelChoice.test';
const seed = freshSeed(FILE);
const ENV_KEYS = ['SAEKIT_SCREEN', 'SAEKIT_ENCODE_KERNEL', 'SAEKIT_KERNEL_CACHE'] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((key) => [key, process.env[key]]));
const dir = mkdtempSync(join(tmpdir(), 'saekit-kernel-choice-'));
let cacheFile = '';
let cases = 0;

beforeEach(() => {
  for (const key of ENV_KEYS) delete process.env[key];
  cacheFile = join(dir, `cache-${cases++}.tsv`);
  process.env.SAEKIT_KERNEL_CACHE = cacheFile;
  setCpuVariant('auto');
  setThreads(2);
});

afterAll(() => {
  for (const key of ENV_KEYS) {
    if (savedEnv[key] === undefined) delete process.env[key];
    else process.env[key] = savedEnv[key];
  }
  rmSync(dir, { recursive: true, force: true });
});

const info = cpuVariant();
const choosing = info.kernels.length > 1;
if (!choosing) console.log(`${FILE}: this CPU runs only the fp32 kernel: nothing to choose, the choice tests are skipped`);

function bits(c: SparseCodes): string {
  return `${c.indptr.join()}|${c.indices.join()}|${new Uint32Array(c.values.buffer, c.values.byteOffset, c.values.length).join()}`;
}

const shape = (s: number) => syntheticSae({ dIn: 96, dSae: 2000, architecture: 'topk', k: 16, seed: s });

describe.skipIf(!choosing)('measured encode kernel choice', () => {
  it('the first encode times every kernel this CPU runs, keeps one, and the codes equal fp32 bit for bit', async () => {
    const w = shape(seed);
    const x = syntheticActivations(w, 600, { seed: seed + 1, active: 6, noise: 0.05 });
    const sae = await createSae(w, { device: 'cpu' });
    try {
      expect(sae.kernelChoice).toEqual([]);
      const codes = await sae.encode(x);
      const [d, ...more] = sae.kernelChoice;
      expect(more).toEqual([]);
      expect(d!.how).toBe('measured');
      expect(Object.keys(d!.usPerRow).sort()).toEqual([...info.kernels].sort());
      for (const us of Object.values(d!.usPerRow)) expect(us === -1 || us > 0).toBe(true);
      expect(info.kernels).toContain(d!.kernel);
      // The rule: a screen only when it beat fp32 by >= 3% on the timings it reports.
      if (d!.kernel !== 'fp32') expect(d!.usPerRow[d!.kernel]!).toBeLessThanOrEqual(0.97 * d!.usPerRow.fp32!);
      else expect(d!.why).toMatch(/fp32/);
      expect(d!.key).toContain('d_in 96 d_sae 2000 topk k=16');
      expect(d!.key).toContain('rows>256');
      expect(d!.sampleRows).toBeGreaterThan(256);
      expect(d!.sampleRows).toBeLessThanOrEqual(600);
      const plain = await withEnv({ SAEKIT_ENCODE_KERNEL: 'fp32' }, () => sae.encode(x));
      expect(bits(codes)).toBe(bits(plain));
      // A small batch is its own class: a second decision.
      await sae.encode(x.subarray(0, 96 * 40));
      expect(sae.kernelChoice.map((c) => c.key.split(' | ').at(-2))).toEqual(['rows<=256', 'rows>256']);
    } finally {
      sae.dispose();
    }
  });

  it('the decision is stored in the cache file and the next SAE of the shape class uses it without timing', async () => {
    const w = shape(seed + 10);
    const x = syntheticActivations(w, 300, { seed: seed + 11, active: 6, noise: 0.05 });
    const first = await createSae(w, { device: 'cpu' });
    await first.encode(x);
    const [measured] = first.kernelChoice;
    first.dispose();
    const lines = readFileSync(cacheFile, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.split('\t')[0]).toBe(measured!.key);
    expect(cachedKernelDecisions().map((d) => [d.key, d.kernel])).toEqual([[measured!.key, measured!.kernel]]);
    expect(cpuVariant().kernelCache).toBe(cacheFile);

    const second = await createSae(shape(seed + 12), { device: 'cpu' });
    try {
      await second.encode(x);
      const [d] = second.kernelChoice;
      expect(d!.how).toBe(`cached (${cacheFile})`);
      expect(d!.kernel).toBe(measured!.kernel);
      // The file keeps 4 significant digits.
      expect(Object.keys(d!.usPerRow)).toEqual(Object.keys(measured!.usPerRow));
      for (const [k, v] of Object.entries(measured!.usPerRow)) expect(Math.abs(d!.usPerRow[k]! - v)).toBeLessThanOrEqual(1e-3 * Math.abs(v));
    } finally {
      second.dispose();
    }
  });

  it('a damaged cache file, or a cached kernel this CPU cannot run, is measured again and rewritten', async () => {
    const w = shape(seed + 20);
    const x = syntheticActivations(w, 300, { seed: seed + 21, active: 6, noise: 0.05 });
    const probe = await createSae(w, { device: 'cpu' });
    await probe.encode(x);
    const key = probe.kernelChoice[0]!.key;
    probe.dispose();
    const cannot = ['amx-bf16', 'bf16', 'int8', 'int8-256'].find((k) => !info.kernels.includes(k as never)) ?? 'no-such-kernel';
    writeFileSync(cacheFile, `garbage\n\t\t\t\n${key}\t${cannot}\t300\tfp32=1\tforged\n${'x'.repeat(5000)}\n`);
    const sae = await createSae(w, { device: 'cpu' });
    try {
      const codes = await sae.encode(x);
      expect(sae.kernelChoice[0]!.how).toBe('measured');
      const plain = await withEnv({ SAEKIT_ENCODE_KERNEL: 'fp32' }, () => sae.encode(x));
      expect(bits(codes)).toBe(bits(plain));
      const ours = readFileSync(cacheFile, 'utf8').split('\n').filter((l) => l.startsWith(`${key}\t`));
      expect(ours).toHaveLength(1);
      expect(ours[0]).not.toContain('forged');
    } finally {
      sae.dispose();
    }
  });

  it('SAEKIT_KERNEL_CACHE=0: measured in every process, nothing written', async () => {
    process.env.SAEKIT_KERNEL_CACHE = '0';
    expect(cpuVariant().kernelCache).toBe('');
    const w = shape(seed + 30);
    const sae = await createSae(w, { device: 'cpu' });
    try {
      await sae.encode(syntheticActivations(w, 64, { seed: seed + 31 }));
      expect(sae.kernelChoice[0]!.how).toBe('measured');
      expect(cachedKernelDecisions()).toEqual([]);
    } finally {
      sae.dispose();
    }
  });

  it('a jumprelu SAE is its own class; a standard (relu) SAE never screens', async () => {
    const j = syntheticSae({ dIn: 64, dSae: 1000, architecture: 'jumprelu', seed: seed + 40 });
    j.threshold!.fill(0.5);
    const sae = await createSae(j, { device: 'cpu' });
    const s = await createSae(syntheticSae({ dIn: 64, dSae: 1000, architecture: 'standard', seed: seed + 41 }), { device: 'cpu' });
    try {
      await sae.encode(syntheticActivations(j, 100, { seed: seed + 42 }));
      expect(sae.kernelChoice[0]!.key).toContain('jumprelu');
      await s.encode(syntheticActivations(j, 100, { seed: seed + 43 }));
      expect(s.kernelChoice).toEqual([]);
      expect(s.screenStats.rows).toBe(0);
    } finally {
      sae.dispose();
      s.dispose();
    }
  });
});

describe('forcing a kernel', () => {
  it('SAEKIT_ENCODE_KERNEL=fp32 times nothing and screens nothing', async () => {
    const w = shape(seed + 50);
    const sae = await withEnv({ SAEKIT_ENCODE_KERNEL: 'fp32' }, () => createSae(w, { device: 'cpu' }));
    try {
      await withEnv({ SAEKIT_ENCODE_KERNEL: 'fp32' }, () => sae.encode(syntheticActivations(w, 300, { seed: seed + 51 })));
      expect(sae.kernelChoice).toEqual([]);
      expect(sae.screenStats.rows).toBe(0);
    } finally {
      sae.dispose();
    }
  });

  it('an unknown kernel, or one this CPU cannot run, is an error naming the variable and the value', async () => {
    const w = shape(seed + 60);
    await expect(withEnv({ SAEKIT_ENCODE_KERNEL: 'tf32' }, () => createSae(w, { device: 'cpu' }))).rejects.toThrow(
      'SAEKIT_ENCODE_KERNEL=tf32: unknown encode kernel (expected auto, fp32, bf16, int8, int8-256, amx-bf16 or amx-bf16-emu)',
    );
    const missing = (['amx-bf16', 'bf16', 'int8', 'int8-256'] as const).filter((k) => !info.kernels.includes(k));
    for (const k of missing)
      await expect(withEnv({ SAEKIT_ENCODE_KERNEL: k }, () => createSae(w, { device: 'cpu' }))).rejects.toThrow(
        new RegExp(`SAEKIT_ENCODE_KERNEL=${k}: this CPU cannot run the ${k} kernel .*AMX: `),
      );
    expect(withEnvSyncInfo({ SAEKIT_ENCODE_KERNEL: 'tf32' }).encodeKernelError).toMatch(/SAEKIT_ENCODE_KERNEL=tf32/);
  });

  it('cpuVariant() reports the CPU, the AMX status with its reason, and the candidates', () => {
    expect(info.cpuModel).toMatch(/family \d+ model \d+ stepping \d+/);
    expect(info.amx).toMatch(/^(yes|no|off) \(.+\)$/);
    expect(info.kernels.includes('amx-bf16')).toBe(info.amx.startsWith('yes'));
    expect(withEnvSyncInfo({ SAEKIT_KERNEL_CACHE: '/some/where.tsv' }).kernelCache).toBe('/some/where.tsv');
  });
});

function withEnvSyncInfo(vars: Record<string, string>) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return cpuVariant();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
