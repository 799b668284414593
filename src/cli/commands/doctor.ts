import { addon } from '../../addon.js';
import { backends, cpuVariant, threads } from '../../system.js';
import { parse } from '../args.js';

export const doctorUsage = 'saekit doctor';

/** What this installation can run: backends, CPU kernel variant, threads, CUDA or why not. */
export async function doctorCommand(argv: string[]): Promise<number> {
  parse(argv, {});
  addon();
  const v = cpuVariant();
  const lines = [
    `saekit doctor`,
    `  node ${process.version} (${process.platform}-${process.arch})`,
    `  kernel threads: ${threads()}${process.env.SAEKIT_THREADS ? ' (SAEKIT_THREADS)' : ''}`,
    `  CPU kernels: ${v.current} (best ${v.best}; supported ${v.supported.join(', ')})${process.env.SAEKIT_ISA ? ' (SAEKIT_ISA)' : ''}`,
  ];
  for (const b of backends()) lines.push(`  backend ${b.name}: ${b.available ? 'available' : 'unavailable'}: ${b.detail}`);
  if (!backends().some((b) => b.name === 'cuda')) lines.push('  backend cuda: not compiled (no nvcc at build time, or SAEKIT_CPU_ONLY=1)');
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
