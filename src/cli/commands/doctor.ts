import { addon, addonSource } from '../../addon.js';
import { backends, cachedKernelDecisions, cpuVariant, resolveDevice, resolveTrainingDevice, threads, trainingBackends, type CpuVariantInfo } from '../../system.js';
import { parse } from '../args.js';
import { loadTransformers } from '../../model/languageModel.js';
import { hubCacheDir } from '../../hub/hub.js';

export const doctorUsage = 'saekit doctor';

/** The encode kernel for SAEs encoded now: measured per SAE, or forced; what this CPU runs. */
function kernelLines(v: CpuVariantInfo): string[] {
  const runs = `this CPU runs: ${v.kernels.join(', ')}${v.kernels.length === 1 ? ' (no screen: needs AVX512-BF16, AVX512-VNNI, AVX-VNNI or AMX-BF16)' : ''}`;
  let choice: string;
  if (v.encodeKernelError) choice = `error: ${v.encodeKernelError}`;
  else if (v.encodeKernel !== 'auto') choice = `${v.encodeKernel}, forced (${v.encodeKernelSource})`;
  else if (v.kernels.length === 1) choice = 'fp32 (the only kernel here)';
  else choice = 'auto: each SAE times these kernels on its own weights at its first encode of a batch size class, and keeps the fastest (fp32 unless a screen is >= 3% faster)';
  const isa = v.encodeKernel === 'int8-256' || v.encodeKernel === 'amx-bf16-emu' ? v.current === 'avx512' || v.current === 'avx2' : v.current === 'avx512';
  if (v.encodeKernel !== 'auto' && v.encodeKernel !== 'fp32' && !isa) choice += `, but the ${v.current} CPU variant is forced, so it does not run`;
  if (process.env.SAEKIT_SCREEN_APPROX === '1') choice += '; APPROXIMATE mode (SAEKIT_SCREEN_APPROX=1): topk values unrescored';
  const lines = [`  encode kernel (topk/jumprelu): ${choice}`, `    ${runs}; AMX: ${v.amx}`, `    CPU: ${v.cpuModel}`];
  if (!v.kernelCache) {
    lines.push('    kernel choice cache: off (SAEKIT_KERNEL_CACHE=0 or no home directory): every process measures');
    return lines;
  }
  const cached = cachedKernelDecisions();
  lines.push(`    kernel choice cache: ${v.kernelCache} (${cached.length} decision${cached.length === 1 ? '' : 's'})`);
  for (const d of cached.slice(-8)) {
    const shape = d.key.split(' | ').slice(3).join(', ');
    const times = Object.entries(d.usPerRow).map(([k, us]) => `${k} ${us < 0 ? 'n/a' : `${us.toFixed(1)} us`}`).join(', ');
    lines.push(`      ${shape}: ${d.kernel} (${times}/row; ${d.why})`);
  }
  if (cached.length > 8) lines.push(`      ... and ${cached.length - 8} more`);
  return lines;
}

/** What this installation can run: backends, CPU kernel variant, threads, CUDA or why not. */
function addonLabel(from: string): string {
  if (from === 'source') return 'built from source in the package folder (build/)';
  if (from === 'SAEKIT_ADDON') return `${process.env.SAEKIT_ADDON} (SAEKIT_ADDON)`;
  return `prebuilt, from ${from}`;
}

export async function doctorCommand(argv: string[]): Promise<number> {
  parse(argv, {});
  addon();
  const v = cpuVariant();
  const lines = [
    `saekit doctor`,
    `  node ${process.version} (${process.platform}-${process.arch})`,
    `  native addon: ${addonLabel(addonSource())}`,
    `  kernel threads: ${threads()}${process.env.SAEKIT_THREADS ? ' (SAEKIT_THREADS)' : ''}`,
    `  CPU kernels: ${v.current} (best ${v.best}; supported ${v.supported.join(', ')})${process.env.SAEKIT_ISA ? ' (SAEKIT_ISA)' : ''}`,
    ...kernelLines(v),
  ];
  for (const b of backends()) lines.push(`  backend ${b.name}: ${b.available ? 'available' : 'unavailable'}: ${b.detail}`);
  if (!backends().some((b) => b.name === 'cuda')) lines.push('  backend cuda: not compiled (no nvcc at build time, or SAEKIT_CPU_ONLY=1)');
  const trainingCuda = trainingBackends().find((b) => b.name === 'cuda');
  lines.push(`  --device auto: ${resolveDevice('auto')} for encode/decode; ${resolveTrainingDevice('auto')} for training${trainingCuda ? ` (cuda: ${trainingCuda.detail})` : ''}`);
  try {
    const tf = await loadTransformers();
    lines.push(`  model side: @huggingface/transformers ${tf.env.version} (ONNX runtime, CPU)`);
  } catch {
    lines.push('  model side: unavailable (optional @huggingface/transformers not installed; needed by activations/features/eval/generate)');
  }
  lines.push(`  hub cache: ${hubCacheDir()}${process.env.HF_HUB_OFFLINE ? ' (offline)' : ''}; endpoint ${process.env.HF_ENDPOINT ?? 'https://huggingface.co'}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
