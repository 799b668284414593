// Environment switches read by the native side at first use: SAEKIT_ISA forces a CPU kernel
// variant (a bad value is a clear error, not a crash), SAEKIT_THREADS sizes the kernel pool.
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

  it('SAEKIT_THREADS sizes the kernel pool', () => {
    const r = child({ SAEKIT_THREADS: '3' }, 'console.log(a.threads())');
    expect(r.out).toBe('3');
  });
});
